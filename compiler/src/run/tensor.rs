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
            DType::Bf16 => HostData::Bf16(
                values
                    .iter()
                    .map(|&x| crate::round16::bf16_from_f64(x))
                    .collect(),
            ),
            DType::F16 => HostData::F16(
                values
                    .iter()
                    .map(|&x| crate::round16::f16_from_f64(x))
                    .collect(),
            ),
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

/// Elements as a tensor file stores them, before conversion to the dtype of
/// the input they bind (`.npy` and `.safetensors` readers produce these).
#[derive(Clone, Debug, PartialEq)]
pub enum FileData {
    /// bfloat16 (safetensors `BF16`, `.npy` `<V2` as ml_dtypes writes it).
    Bf16(Vec<bf16>),
    /// IEEE half.
    F16(Vec<f16>),
    /// IEEE single.
    F32(Vec<f32>),
    /// IEEE double.
    F64(Vec<f64>),
    /// 32-bit integers.
    I32(Vec<i32>),
    /// 64-bit integers.
    I64(Vec<i64>),
}

/// What the tensor-file readers accept, for error messages.
pub const FILE_DTYPES: &str =
    "bf16 (safetensors BF16; .npy `<V2` as ml_dtypes writes bfloat16), f16, f32, f64, i32, i64";

impl FileData {
    /// The file dtype's name.
    pub fn name(&self) -> &'static str {
        match self {
            FileData::Bf16(_) => "bf16",
            FileData::F16(_) => "f16",
            FileData::F32(_) => "f32",
            FileData::F64(_) => "f64",
            FileData::I32(_) => "i32",
            FileData::I64(_) => "i64",
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            FileData::Bf16(v) => v.len(),
            FileData::F16(v) => v.len(),
            FileData::F32(v) => v.len(),
            FileData::F64(v) => v.len(),
            FileData::I32(v) => v.len(),
            FileData::I64(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn floats(&self) -> Option<Vec<f64>> {
        Some(match self {
            FileData::Bf16(v) => v.iter().map(|x| x.to_f64()).collect(),
            FileData::F16(v) => v.iter().map(|x| x.to_f64()).collect(),
            FileData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            FileData::F64(v) => v.clone(),
            FileData::I32(_) | FileData::I64(_) => return None,
        })
    }

    /// Reorders elements stored in Fortran (column-major) order for `shape`
    /// into row-major order.
    pub fn from_fortran(self, shape: &[usize]) -> FileData {
        fn perm<T: Copy>(v: Vec<T>, shape: &[usize]) -> Vec<T> {
            let n = v.len();
            if shape.len() < 2 || n == 0 {
                return v;
            }
            // Column-major strides of each axis.
            let mut strides = vec![1usize; shape.len()];
            for k in 1..shape.len() {
                strides[k] = strides[k - 1] * shape[k - 1];
            }
            let mut idx = vec![0usize; shape.len()];
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                let at: usize = idx.iter().zip(&strides).map(|(i, s)| i * s).sum();
                out.push(v[at]);
                // Advance the row-major multi-index (last axis fastest).
                for k in (0..shape.len()).rev() {
                    idx[k] += 1;
                    if idx[k] < shape[k] {
                        break;
                    }
                    idx[k] = 0;
                }
            }
            out
        }
        match self {
            FileData::Bf16(v) => FileData::Bf16(perm(v, shape)),
            FileData::F16(v) => FileData::F16(perm(v, shape)),
            FileData::F32(v) => FileData::F32(perm(v, shape)),
            FileData::F64(v) => FileData::F64(perm(v, shape)),
            FileData::I32(v) => FileData::I32(perm(v, shape)),
            FileData::I64(v) => FileData::I64(perm(v, shape)),
        }
    }

    /// Converts to `dtype` for the input `name` (`what` names the file in
    /// errors). bf16 takes any float, rounded to nearest even; f32 and f16
    /// take floats that convert exactly; i32 takes integers in range and
    /// floats holding exact integers (`64.0`). Errors name the first element
    /// that does not convert.
    pub fn convert(self, dtype: DType, name: &str, what: &str) -> Result<HostData, String> {
        let from = self.name();
        let refuse = |i: usize, v: String| {
            format!(
                "{what}: element {i} = {v} ({from}) does not convert exactly to {dtype} for input `{name}`"
            )
        };
        let first_bad = |vals: &[f64], ok: &dyn Fn(f64) -> bool| {
            vals.iter().position(|&x| !ok(x)).map(|i| (i, vals[i]))
        };
        match (dtype, self) {
            (DType::Bf16, FileData::Bf16(v)) => Ok(HostData::Bf16(v)),
            (DType::F16, FileData::F16(v)) => Ok(HostData::F16(v)),
            (DType::F32, FileData::F32(v)) => Ok(HostData::F32(v)),
            (DType::I32, FileData::I32(v)) => Ok(HostData::I32(v)),
            (DType::I32, FileData::I64(v)) => {
                match v.iter().position(|&x| i32::try_from(x).is_err()) {
                    Some(i) => Err(refuse(i, v[i].to_string())),
                    None => Ok(HostData::I32(v.into_iter().map(|x| x as i32).collect())),
                }
            }
            (DType::I32, f) => {
                let vals = f.floats().unwrap_or_default();
                let fits =
                    |x: f64| x.fract() == 0.0 && x >= i32::MIN as f64 && x <= i32::MAX as f64;
                match first_bad(&vals, &fits) {
                    Some((i, x)) => Err(refuse(i, format!("{x}"))),
                    None => Ok(HostData::I32(vals.into_iter().map(|x| x as i32).collect())),
                }
            }
            (DType::Bf16, f) => match f.floats() {
                Some(vals) => Ok(HostData::Bf16(
                    vals.into_iter()
                        .map(crate::round16::bf16_from_f64)
                        .collect(),
                )),
                None => Err(format!(
                    "{what} holds {from} integers, input `{name}` is bf16 and needs floats"
                )),
            },
            (DType::F32, f) => match f.floats() {
                Some(vals) => match first_bad(&vals, &|x| f64::from(x as f32) == x || x.is_nan()) {
                    Some((i, x)) => Err(refuse(i, format!("{x}"))),
                    None => Ok(HostData::F32(vals.into_iter().map(|x| x as f32).collect())),
                },
                None => Err(format!(
                    "{what} holds {from} integers, input `{name}` is f32 and needs floats"
                )),
            },
            (DType::F16, f) => match f.floats() {
                Some(vals) => {
                    match first_bad(&vals, &|x| f16::from_f64(x).to_f64() == x || x.is_nan()) {
                        Some((i, x)) => Err(refuse(i, format!("{x}"))),
                        None => Ok(HostData::F16(vals.into_iter().map(f16::from_f64).collect())),
                    }
                }
                None => Err(format!(
                    "{what} holds {from} integers, input `{name}` is f16 and needs floats"
                )),
            },
            (DType::Bool, _) => Err(format!(
                "input `{name}` is bool, which no tensor file holds"
            )),
        }
    }
}
