//! Running kernels from the host: inputs, the float64 reference a run is
//! checked against, and the comparison.

pub mod bench;
pub mod compare;
pub mod exec;
pub mod inputs;
pub mod npy;
pub mod reference_kind;
pub mod session;
pub mod tensor;

pub use reference_kind::{Expected, ReferenceKind};
pub use tensor::{HostData, HostTensor};
