//! Running kernels from the host: inputs, the float64 reference a run is
//! checked against, and the comparison.

pub mod inputs;
pub mod reference_kind;
pub mod tensor;

pub use reference_kind::{Expected, ReferenceKind};
pub use tensor::{HostData, HostTensor};
