//! `.npy` files for `amlac run --input NAME=FILE.npy` and `--output-dir`.
//!
//! NumPy has no bfloat16, so a bf16 tensor is read from any float `.npy`
//! (f16, f32 or f64, rounded to nearest even) and written as f32, which
//! holds every bf16 value exactly. Other dtypes read from any `.npy` whose
//! values convert exactly (i32 from i32 or i64 within range; f32 from f32
//! or f16; f16 from f16) and are written in their own dtype.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use half::{bf16, f16};
use npyz::WriterBuilder;

use super::tensor::{HostData, HostTensor};
use crate::ir::DType;

/// Reads `path` as the input `name` of `dtype` and `shape`.
pub fn read(path: &Path, name: &str, dtype: DType, shape: &[usize]) -> Result<HostTensor, String> {
    let what = || format!("`{}`", path.display());
    let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", what()))?;
    let npy = npyz::NpyFile::new(std::io::BufReader::new(file))
        .map_err(|e| format!("{} is not a .npy file: {e}", what()))?;
    let got: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    if got != shape {
        return Err(format!(
            "{} has shape {got:?}, input `{name}` needs {shape:?}",
            what()
        ));
    }
    let descr = npy.dtype().descr();
    let kind = descr
        .trim_matches('\'')
        .trim_start_matches(['<', '>', '|', '='])
        .to_string();
    let bad = |e: std::io::Error| format!("cannot read {}: {e}", what());
    let floats = |npy: npyz::NpyFile<_>| -> Result<Vec<f64>, String> {
        match kind.as_str() {
            "f2" => Ok(npy
                .into_vec::<f16>()
                .map_err(bad)?
                .into_iter()
                .map(f64::from)
                .collect()),
            "f4" => Ok(npy
                .into_vec::<f32>()
                .map_err(bad)?
                .into_iter()
                .map(f64::from)
                .collect()),
            "f8" => npy.into_vec::<f64>().map_err(bad),
            _ => Err(format!(
                "{} holds {descr}, input `{name}` needs floats",
                what()
            )),
        }
    };
    let data = match dtype {
        DType::Bf16 => HostData::Bf16(floats(npy)?.into_iter().map(bf16::from_f64).collect()),
        DType::F16 if kind == "f2" => HostData::F16(npy.into_vec::<f16>().map_err(bad)?),
        DType::F32 if kind == "f4" || kind == "f2" => {
            HostData::F32(floats(npy)?.into_iter().map(|x| x as f32).collect())
        }
        DType::I32 if kind == "i4" => HostData::I32(npy.into_vec::<i32>().map_err(bad)?),
        DType::I32 if kind == "i8" => HostData::I32(
            npy.into_vec::<i64>()
                .map_err(bad)?
                .into_iter()
                .map(|v| i32::try_from(v).map_err(|_| format!("{}: {v} does not fit i32", what())))
                .collect::<Result<_, _>>()?,
        ),
        _ => {
            return Err(format!(
                "{} holds {descr}, which does not convert exactly to {dtype} for `{name}`",
                what()
            ));
        }
    };
    Ok(HostTensor {
        name: name.to_string(),
        shape: shape.to_vec(),
        data,
    })
}

/// Writes `t` to `path` (bf16 as f32).
pub fn write(path: &Path, t: &HostTensor) -> Result<(), String> {
    let shape: Vec<u64> = t.shape.iter().map(|&d| d as u64).collect();
    let r = match &t.data {
        HostData::F32(v) => write_vec(path, &shape, v.iter().copied()),
        HostData::Bf16(v) => write_vec(path, &shape, v.iter().map(|x| x.to_f32())),
        HostData::F16(v) => write_vec(path, &shape, v.iter().copied()),
        HostData::I32(v) => write_vec(path, &shape, v.iter().copied()),
    };
    r.map_err(|e| format!("cannot write `{}`: {e}", path.display()))
}

fn write_vec<T: npyz::AutoSerialize>(
    path: &Path,
    shape: &[u64],
    items: impl Iterator<Item = T>,
) -> std::io::Result<()> {
    let file = BufWriter::new(File::create(path)?);
    let mut w = npyz::WriteOptions::<T>::new()
        .default_dtype()
        .shape(shape)
        .writer(file)
        .begin_nd()?;
    w.extend(items)?;
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_round_trips_through_f32_npy_and_shapes_are_checked() {
        let dir = std::env::temp_dir().join(format!("amla-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("q.npy");
        let vals: Vec<bf16> = (0..6)
            .map(|i| bf16::from_f32(i as f32 * 0.3 - 1.0))
            .collect();
        let t = HostTensor {
            name: "q".into(),
            shape: vec![2, 3],
            data: HostData::Bf16(vals),
        };
        write(&p, &t).unwrap();
        assert_eq!(read(&p, "q", DType::Bf16, &[2, 3]).unwrap(), t);
        let e = read(&p, "q", DType::Bf16, &[3, 2]).unwrap_err();
        assert!(e.contains("[2, 3]") && e.contains("[3, 2]"), "{e}");
        let e = read(&p, "q", DType::I32, &[2, 3]).unwrap_err();
        assert!(e.contains("i32"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
