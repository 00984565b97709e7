//! Host tensors: the typed arrays a run feeds a kernel and reads back.

use half::{bf16, f16};

use crate::ir::DType;

/// Elements of a host tensor, in the tensor's dtype.
#[derive(Clone, Debug, PartialEq)]
pub enum HostData {
    /// f32 elements.
    F32(Vec<f32>),
    /// bf16 elements.
    Bf16(Vec<bf16>),
    /// f16 elements.
    F16(Vec<f16>),
    /// i32 elements.
    I32(Vec<i32>),
}

/// A named, shaped, row-major host array.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// The kernel parameter it binds.
    pub name: String,
    /// Extents, outermost first.
    pub shape: Vec<usize>,
    /// Elements (`shape.iter().product()` of them).
    pub data: HostData,
}

impl HostData {
    /// `n` zeros of `dtype` (`bool` is not a tensor dtype and gives `None`).
    pub fn zeros(dtype: DType, n: usize) -> Option<HostData> {
        Some(match dtype {
            DType::F32 => HostData::F32(vec![0.0; n]),
            DType::Bf16 => HostData::Bf16(vec![bf16::ZERO; n]),
            DType::F16 => HostData::F16(vec![f16::ZERO; n]),
            DType::I32 => HostData::I32(vec![0; n]),
            DType::Bool => return None,
        })
    }

    /// Rounds `values` into `dtype` (round to nearest even; i32 truncates).
    pub fn from_f64(dtype: DType, values: &[f64]) -> Option<HostData> {
        Some(match dtype {
            DType::F32 => HostData::F32(values.iter().map(|&x| x as f32).collect()),
            DType::Bf16 => HostData::Bf16(values.iter().map(|&x| bf16::from_f64(x)).collect()),
            DType::F16 => HostData::F16(values.iter().map(|&x| f16::from_f64(x)).collect()),
            DType::I32 => HostData::I32(values.iter().map(|&x| x as i32).collect()),
            DType::Bool => return None,
        })
    }

    /// The dtype of the elements.
    pub fn dtype(&self) -> DType {
        match self {
            HostData::F32(_) => DType::F32,
            HostData::Bf16(_) => DType::Bf16,
            HostData::F16(_) => DType::F16,
            HostData::I32(_) => DType::I32,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            HostData::F32(v) => v.len(),
            HostData::Bf16(v) => v.len(),
            HostData::F16(v) => v.len(),
            HostData::I32(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every element widened exactly to f64.
    pub fn to_f64(&self) -> Vec<f64> {
        match self {
            HostData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            HostData::Bf16(v) => v.iter().map(|&x| x.to_f64()).collect(),
            HostData::F16(v) => v.iter().map(|&x| x.to_f64()).collect(),
            HostData::I32(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }
}

impl HostTensor {
    /// Number of elements the shape holds.
    pub fn elems(&self) -> usize {
        self.shape.iter().product()
    }
}
