//! Reading a run's inputs from tensor files: `.npy` ([`super::npy`]) and
//! `.safetensors` ([`super::safetensors`]), the two formats `amlac run`
//! takes (`--input NAME=FILE.npy|FILE.safetensors`, `--inputs
//! FILE.safetensors`).

use std::path::PathBuf;

use super::exec::TensorSpec;
use super::tensor::{FileData, HostData, HostTensor};
use super::{npy, safetensors, validate};
use crate::check::Defines;
use crate::ir::Role;

/// Reads the `--input NAME=FILE` (`named`) and `--inputs FILE.safetensors`
/// (`files`) arguments for a kernel with GM tensors `tensors`: each file is
/// converted to the dtype of its input; an unknown name, a name given twice
/// or a wrong shape is an error naming the argument.
pub fn read_inputs(
    tensors: &[TensorSpec],
    named: &[(String, String)],
    files: &[PathBuf],
    defines: &Defines,
    kernel: &str,
) -> Result<Vec<HostTensor>, String> {
    let specs: Vec<&TensorSpec> = tensors.iter().filter(|s| s.role == Role::Input).collect();
    let names = || {
        specs
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let spec = |name: &str, arg: &str| {
        specs
            .iter()
            .copied()
            .find(|s| s.name == name)
            .ok_or_else(|| {
                format!(
                    "{arg}: `{}` has no input `{name}` (its inputs: {})",
                    kernel,
                    names()
                )
            })
    };
    let mut out: Vec<HostTensor> = Vec::new();
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut note = |name: &str, arg: String| match seen.iter().find(|s| s.0 == name) {
        Some((_, first)) => Err(format!(
            "input `{name}` is given twice ({first} and {arg}); give each input once"
        )),
        None => {
            seen.push((name.to_string(), arg));
            Ok(())
        }
    };
    for (name, path) in named {
        let arg = format!("--input {name}={path}");
        note(name, arg.clone())?;
        let s = spec(name, &arg)?;
        let p = std::path::Path::new(path);
        let (got, raw) = if safetensors::is_safetensors(p) {
            let all = safetensors::read_all(p)?;
            let (_, got, raw) = all
                .into_iter()
                .find(|t| &t.0 == name)
                .ok_or_else(|| format!("{arg}: `{path}` has no tensor named `{name}`"))?;
            (got, raw)
        } else {
            npy::read_raw(p)?
        };
        out.push(tensor_from_file(s, got, raw, &arg, defines)?);
    }
    for path in files {
        if !safetensors::is_safetensors(path) {
            return Err(format!(
                "--inputs {}: expected a FILE.safetensors (use --input NAME=FILE.npy for .npy files)",
                path.display()
            ));
        }
        for (name, got, raw) in safetensors::read_all(path)? {
            let arg = format!("tensor `{name}` of --inputs {}", path.display());
            note(&name, arg.clone())?;
            let s = spec(&name, &arg)?;
            out.push(tensor_from_file(s, got, raw, &arg, defines)?);
        }
    }
    Ok(out)
}

/// Converts a file's tensor to the input `spec`, checking its shape first
/// (the error names the argument, and the `-D` binding of a wrong dim).
fn tensor_from_file(
    spec: &TensorSpec,
    got: Vec<usize>,
    raw: FileData,
    arg: &str,
    defines: &Defines,
) -> Result<HostTensor, String> {
    if got != spec.shape {
        let shaped = HostTensor {
            name: spec.name.clone(),
            shape: got,
            data: HostData::zeros(spec.dtype, 0).unwrap_or(HostData::I32(Vec::new())),
        };
        let e = validate::check_tensor(spec, &shaped, defines)
            .err()
            .unwrap_or_else(|| format!("input `{}`: wrong shape", spec.name));
        return Err(format!("{arg}: {e}"));
    }
    let data = raw
        .convert(spec.dtype, &spec.name, arg)
        .map_err(|e| e.to_string())?;
    Ok(HostTensor {
        name: spec.name.clone(),
        shape: got,
        data,
    })
}
