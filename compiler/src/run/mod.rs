//! Running kernels from the host: inputs, the float64 reference a run is
//! checked against, and the comparison.

pub mod bench;
pub mod compare;
pub mod exec;
pub mod files;
pub mod inputs;
pub mod npy;
pub mod reference_kind;
pub mod safetensors;
pub mod session;
pub mod tensor;
pub mod validate;

pub use reference_kind::{Expected, ReferenceKind};
pub use tensor::{HostData, HostTensor};
