//! `.npy` files for `amlac run --input NAME=FILE.npy` and `--output-dir`.
//!
//! Reading: f16 (`<f2`), f32, f64, i32, i64 and bfloat16 as ml_dtypes
//! writes it (descr `<V2`: NumPy has no bfloat16, so ml_dtypes stores the
//! raw two bytes, little-endian) are read and converted to the input's dtype
//! by [`FileData::convert`] (bf16 from any float, rounded to nearest even;
//! other dtypes only where every value converts exactly; i32 also from
//! floats holding exact integers). A file in Fortran (column-major) order is
//! reordered to row-major on read, never misread. Big-endian files are
//! converted by npyz. Anything else is an error that lists what works.
//!
//! Writing: every dtype in its own dtype, except bf16, written as f32 by
//! default (holds every bf16 exactly and loads in plain NumPy) or, with
//! [`Bf16Npy::MlDtypes`], as `<V2` bytes, which
//! `np.load(f).view(ml_dtypes.bfloat16)` reads back.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use half::{bf16, f16};
use npyz::WriterBuilder;

use super::tensor::{FILE_DTYPES, FileData, HostData, HostTensor};
use crate::ir::DType;

/// How bf16 tensors are written to `.npy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Bf16Npy {
    /// As f32 (exact; loads in plain NumPy).
    #[default]
    F32,
    /// As ml_dtypes writes bfloat16: descr `<V2`, the raw bf16 bits.
    MlDtypes,
}

/// Reads the raw elements and shape of a `.npy` file, in row-major order.
pub fn read_raw(path: &Path) -> Result<(Vec<usize>, FileData), String> {
    let what = || format!("`{}`", path.display());
    let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", what()))?;
    let npy = npyz::NpyFile::new(std::io::BufReader::new(file))
        .map_err(|e| format!("{} is not a .npy file: {e}", what()))?;
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let fortran = npy.order() == npyz::Order::Fortran;
    let descr = match npy.dtype() {
        npyz::DType::Plain(t) => t.to_string(),
        other => {
            return Err(format!(
                "{} holds structured records ({}); amlac reads .npy arrays of {FILE_DTYPES}",
                what(),
                other.descr()
            ));
        }
    };
    let kind = descr.trim_start_matches(['<', '>', '|', '=']).to_string();
    let bad = |e: std::io::Error| format!("cannot read {} (truncated or corrupt?): {e}", what());
    let data = match kind.as_str() {
        "f2" => FileData::F16(npy.into_vec::<f16>().map_err(bad)?),
        "f4" => FileData::F32(npy.into_vec::<f32>().map_err(bad)?),
        "f8" => FileData::F64(npy.into_vec::<f64>().map_err(bad)?),
        "i4" => FileData::I32(npy.into_vec::<i32>().map_err(bad)?),
        "i8" => FileData::I64(npy.into_vec::<i64>().map_err(bad)?),
        "V2" => FileData::Bf16(
            npy.into_vec::<npyz::FixedSizeBytes<2>>()
                .map_err(bad)?
                .into_iter()
                .map(|b| bf16::from_le_bytes(b.0))
                .collect(),
        ),
        _ => {
            return Err(format!(
                "{} holds {descr}; amlac reads .npy arrays of {FILE_DTYPES}",
                what()
            ));
        }
    };
    let n: usize = shape.iter().product();
    if data.len() != n {
        return Err(format!(
            "{} has {} elements, its shape {shape:?} needs {n}",
            what(),
            data.len()
        ));
    }
    let data = if fortran {
        data.from_fortran(&shape)
    } else {
        data
    };
    Ok((shape, data))
}

/// Reads `path` as the input `name` of `dtype` and `shape`.
pub fn read(path: &Path, name: &str, dtype: DType, shape: &[usize]) -> Result<HostTensor, String> {
    let what = format!("`{}`", path.display());
    let (got, raw) = read_raw(path)?;
    if got != shape {
        return Err(format!(
            "input `{name}`: {what} has shape {got:?}, expected {shape:?}"
        ));
    }
    let data = raw.convert(dtype, name, &what)?;
    Ok(HostTensor {
        name: name.to_string(),
        shape: shape.to_vec(),
        data,
    })
}

/// Writes `t` to `path`, bf16 as `bf16_as` says.
pub fn write(path: &Path, t: &HostTensor, bf16_as: Bf16Npy) -> Result<(), String> {
    use npyz::AutoSerialize;
    let shape: Vec<u64> = t.shape.iter().map(|&d| d as u64).collect();
    let r = match (&t.data, bf16_as) {
        (HostData::F32(v), _) => write_vec(path, &shape, f32::default_dtype(), v.iter().copied()),
        (HostData::Bf16(v), Bf16Npy::F32) => write_vec(
            path,
            &shape,
            f32::default_dtype(),
            v.iter().map(|x| x.to_f32()),
        ),
        (HostData::Bf16(v), Bf16Npy::MlDtypes) => write_vec(
            path,
            &shape,
            npyz::DType::Plain("<V2".parse().expect("a valid type string")),
            v.iter().map(|x| npyz::FixedSizeBytes(x.to_le_bytes())),
        ),
        (HostData::F16(v), _) => write_vec(path, &shape, f16::default_dtype(), v.iter().copied()),
        (HostData::I32(v), _) => write_vec(path, &shape, i32::default_dtype(), v.iter().copied()),
    };
    r.map_err(|e| format!("cannot write `{}`: {e}", path.display()))
}

fn write_vec<T: npyz::Serialize>(
    path: &Path,
    shape: &[u64],
    dtype: npyz::DType,
    items: impl Iterator<Item = T>,
) -> std::io::Result<()> {
    let file = BufWriter::new(File::create(path)?);
    let mut w = npyz::WriteOptions::<T>::new()
        .dtype(dtype)
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
        write(&p, &t, Bf16Npy::F32).unwrap();
        assert_eq!(read(&p, "q", DType::Bf16, &[2, 3]).unwrap(), t);
        let e = read(&p, "q", DType::Bf16, &[3, 2]).unwrap_err();
        assert!(e.contains("[2, 3]") && e.contains("[3, 2]"), "{e}");
        let e = read(&p, "q", DType::I32, &[2, 3]).unwrap_err();
        assert!(e.contains("i32"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
