//! `.safetensors` files (the format of PyTorch and Hugging Face checkpoints)
//! for `amlac run --inputs FILE.safetensors` and `--save FILE.safetensors`.
//!
//! A file is an 8-byte little-endian header length, a JSON header naming
//! each tensor's dtype, shape and byte range, then the row-major,
//! little-endian data ([`safetensors`] crate). Reading accepts `BF16`,
//! `F16`, `F32`, `F64`, `I32` and `I64`, converted to the input's dtype as
//! for `.npy` ([`FileData::convert`]); writing stores each output in its
//! own dtype (bf16 as native `BF16`).

use std::path::Path;

use half::{bf16, f16};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::tensor::{FILE_DTYPES, FileData, HostData, HostTensor};

/// True when `path` names a safetensors file (by its extension).
pub fn is_safetensors(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "safetensors")
}

fn le<const N: usize, T>(bytes: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|c| f(c.try_into().expect("chunks of N bytes")))
        .collect()
}

/// Every tensor of `path`: name, shape and elements, in file order.
pub fn read_all(path: &Path) -> Result<Vec<(String, Vec<usize>, FileData)>, String> {
    let what = format!("`{}`", path.display());
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {what}: {e}"))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("{what} is not a safetensors file: {e}"))?;
    let mut out = Vec::new();
    for (name, view) in st.iter() {
        let d = view.data();
        let data = match view.dtype() {
            Dtype::BF16 => FileData::Bf16(le(d, bf16::from_le_bytes)),
            Dtype::F16 => FileData::F16(le(d, f16::from_le_bytes)),
            Dtype::F32 => FileData::F32(le(d, f32::from_le_bytes)),
            Dtype::F64 => FileData::F64(le(d, f64::from_le_bytes)),
            Dtype::I32 => FileData::I32(le(d, i32::from_le_bytes)),
            Dtype::I64 => FileData::I64(le(d, i64::from_le_bytes)),
            other => {
                return Err(format!(
                    "{what}: tensor `{name}` is {other:?}; amlac reads tensors of {FILE_DTYPES}"
                ));
            }
        };
        out.push((name.to_string(), view.shape().to_vec(), data));
    }
    Ok(out)
}

/// Writes `tensors` to `path`, each in its own dtype.
pub fn write(path: &Path, tensors: &[HostTensor]) -> Result<(), String> {
    fn bytes<T: Copy, const N: usize>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
        v.iter().flat_map(|&x| f(x)).collect()
    }
    let encoded: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|t| {
            let (dt, b) = match &t.data {
                HostData::F32(v) => (Dtype::F32, bytes(v, f32::to_le_bytes)),
                HostData::Bf16(v) => (Dtype::BF16, bytes(v, bf16::to_le_bytes)),
                HostData::F16(v) => (Dtype::F16, bytes(v, f16::to_le_bytes)),
                HostData::I32(v) => (Dtype::I32, bytes(v, i32::to_le_bytes)),
            };
            (t.name.clone(), dt, t.shape.clone(), b)
        })
        .collect();
    let views = encoded
        .iter()
        .map(|(n, dt, shape, b)| {
            TensorView::new(*dt, shape.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| format!("tensor `{n}`: {e}"))
        })
        .collect::<Result<Vec<_>, String>>()?;
    safetensors::tensor::serialize_to_file(views, None, path)
        .map_err(|e| format!("cannot write `{}`: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dtype_round_trips_and_converts() {
        let dir = std::env::temp_dir().join(format!("amla-st-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.safetensors");
        let ts = vec![
            HostTensor {
                name: "out".into(),
                shape: vec![2, 3],
                data: HostData::Bf16((0..6).map(|i| bf16::from_f32(i as f32 - 2.5)).collect()),
            },
            HostTensor {
                name: "lse".into(),
                shape: vec![2],
                data: HostData::F32(vec![1.5, f32::INFINITY]),
            },
            HostTensor {
                name: "ids".into(),
                shape: vec![3],
                data: HostData::I32(vec![0, -1, 7]),
            },
        ];
        write(&p, &ts).unwrap();
        let back = read_all(&p).unwrap();
        assert_eq!(back.len(), 3);
        for t in &ts {
            let (_, shape, data) = back.iter().find(|b| b.0 == t.name).unwrap();
            assert_eq!(shape, &t.shape);
            let h = data.clone().convert(t.data.dtype(), &t.name, "t").unwrap();
            assert_eq!(h, t.data, "{}", t.name);
        }
        std::fs::write(&p, b"nonsense").unwrap();
        let e = read_all(&p).unwrap_err();
        assert!(e.contains("not a safetensors file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
