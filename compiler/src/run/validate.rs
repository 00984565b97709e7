//! Validation of a run's inputs, before anything is allocated or launched.
//!
//! Every check here returns an error that names the argument (the input's
//! name, the `-D` binding, the file) and the expected against the actual
//! value. [`crate::run::session::run_source`] runs them all before it makes
//! inputs; [`crate::run::exec::Executable::run`] runs the per-tensor checks
//! again (it is public), and the float64 reference
//! ([`crate::run::reference_kind::expected`]) runs the same
//! [`check_roles`] before it reads a single index, so the kernel and the
//! reference never disagree on what an input means.
//!
//! | check | what it rejects |
//! | --- | --- |
//! | [`check_given`] | an unknown name, a name given twice, a missing input when others are given (unless random fill is asked for), and each tensor through [`check_tensor`] |
//! | [`check_tensor`] | wrong rank, shape, dtype, or an element count that does not match the shape; a shape mismatch on a symbolic dim names the dim and its binding (`-D B=2`) |
//! | [`check_roles`] | a used `block_table` entry outside `[0, NB)` (negative included), a `cache_seqlens` entry outside `[0, MAXB·PAGE]`, a NaN or inf in the masked tail of a sequence's last page |
//! | [`check_memory`] | tensors whose bytes overflow or exceed the memory budget: the error names the bytes needed and the largest tensor, before any allocation |
//! | [`check_memory_with`] | the same with the launch's own memory (unit scratch for tiles placed in `gm`, local arenas, the race checker's shadow), each part named |

use super::exec::TensorSpec;
use super::reference_kind::ReferenceKind;
use super::tensor::{HostData, HostTensor};
use crate::check::Defines;
use crate::ir::Role;

/// Replaces each spec's axis labels with the source text of the signature
/// (`B`, `H`, `576`): dims bound at compile time are constants in the IR,
/// and messages should still say which dim (and which `-D`) an axis is.
pub fn label_from_source(specs: &mut [TensorSpec], src: &crate::diag::SourceFile) {
    let Ok(ast) = crate::syntax::parse(&src.text) else {
        return;
    };
    for p in ast.inputs.iter().chain(&ast.outputs) {
        let Some(spec) = specs.iter_mut().find(|s| s.name == p.name.name) else {
            continue;
        };
        if p.ty.shape.len() != spec.dims.len() {
            continue;
        }
        for (label, e) in spec.dims.iter_mut().zip(&p.ty.shape) {
            if let Some(text) = src.text.get(e.span.start..e.span.end) {
                *label = text.trim().to_string();
            }
        }
    }
}

/// Describes axis labels and values of a spec: `[B, H, 576] = [2, 16, 576]`.
fn describe(spec: &TensorSpec) -> String {
    if spec.dims.iter().all(|d| d.parse::<u64>().is_ok()) {
        format!("{:?}", spec.shape)
    } else {
        format!("[{}] = {:?}", spec.dims.join(", "), spec.shape)
    }
}

/// Where a dim's value came from, for messages.
fn binding(dim: &str, value: usize, defines: &Defines) -> String {
    match defines.map.get(dim) {
        Some(v) => format!("`{dim}` = {value} (from -D {dim}={v})"),
        None => format!("`{dim}` = {value} (the kernel's default; bind it with -D {dim}=…)"),
    }
}

/// Checks one tensor against the kernel's spec of that input.
pub fn check_tensor(spec: &TensorSpec, t: &HostTensor, defines: &Defines) -> Result<(), String> {
    let name = &spec.name;
    if t.data.dtype() != spec.dtype {
        return Err(format!(
            "input `{name}`: dtype {}, expected {}",
            t.data.dtype(),
            spec.dtype
        ));
    }
    if t.shape.len() != spec.shape.len() {
        return Err(format!(
            "input `{name}`: rank {} (shape {:?}), expected rank {} ({})",
            t.shape.len(),
            t.shape,
            spec.shape.len(),
            describe(spec)
        ));
    }
    if t.shape != spec.shape {
        let axis = (0..t.shape.len())
            .find(|&i| t.shape[i] != spec.shape[i])
            .unwrap_or(0);
        let label = &spec.dims[axis];
        let why = if label.parse::<u64>().is_ok() {
            format!("axis {axis} is fixed at {label}")
        } else {
            format!(
                "axis {axis} is {}",
                binding(label, spec.shape[axis], defines)
            )
        };
        return Err(format!(
            "input `{name}`: shape {:?}, expected {}: {why}, the tensor has {}",
            t.shape,
            describe(spec),
            t.shape[axis]
        ));
    }
    let want = spec.elems();
    if t.data.len() as u128 != want {
        return Err(format!(
            "input `{name}`: {} elements, shape {:?} needs {want}",
            t.data.len(),
            t.shape
        ));
    }
    Ok(())
}

/// Checks the tensors a caller gives against the kernel's inputs: every name
/// is an input, none is given twice, each matches its spec, and (unless
/// `fill_missing`) either none or all inputs are given.
pub fn check_given(
    specs: &[TensorSpec],
    given: &[HostTensor],
    fill_missing: bool,
    defines: &Defines,
    kernel: &str,
) -> Result<(), String> {
    let inputs: Vec<&TensorSpec> = specs.iter().filter(|s| s.role == Role::Input).collect();
    for (i, g) in given.iter().enumerate() {
        if given[..i].iter().any(|h| h.name == g.name) {
            return Err(format!(
                "input `{}` is given twice; give each input once",
                g.name
            ));
        }
        let Some(spec) = inputs.iter().find(|s| s.name == g.name) else {
            let names: Vec<&str> = inputs.iter().map(|s| s.name.as_str()).collect();
            return Err(format!(
                "`{}` is not an input of `{kernel}` (its inputs: {})",
                g.name,
                names.join(", ")
            ));
        };
        check_tensor(spec, g, defines)?;
    }
    if !given.is_empty() && !fill_missing {
        let missing: Vec<&str> = inputs
            .iter()
            .filter(|s| !given.iter().any(|g| g.name == s.name))
            .map(|s| s.name.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "input{} {} not given: give every input (--input NAME=FILE or --inputs FILE.safetensors), or ask for seeded random data for the rest with --fill-missing",
                if missing.len() > 1 { "s" } else { "" },
                missing
                    .iter()
                    .map(|m| format!("`{m}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(())
}

fn find<'a>(inputs: &'a [HostTensor], name: &str, rank: usize) -> Result<&'a HostTensor, String> {
    let t = inputs
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| format!("the reference needs an input `{name}`"))?;
    if t.shape.len() != rank {
        return Err(format!(
            "input `{name}`: rank {} (shape {:?}), the reference needs rank {rank}",
            t.shape.len(),
            t.shape
        ));
    }
    Ok(t)
}

fn element(d: &HostData, i: usize) -> f64 {
    match d {
        HostData::F32(v) => v.get(i).map_or(0.0, |&x| f64::from(x)),
        HostData::Bf16(v) => v.get(i).map_or(0.0, |x| x.to_f64()),
        HostData::F16(v) => v.get(i).map_or(0.0, |x| x.to_f64()),
        HostData::I32(v) => v.get(i).map_or(0.0, |&x| f64::from(x)),
    }
}

fn ints(t: &HostTensor) -> Result<&[i32], String> {
    match &t.data {
        HostData::I32(v) if v.len() == t.elems() => Ok(v),
        HostData::I32(v) => Err(format!(
            "input `{}`: {} elements, shape {:?} needs {}",
            t.name,
            v.len(),
            t.shape,
            t.elems()
        )),
        d => Err(format!(
            "input `{}`: dtype {}, expected i32",
            t.name,
            d.dtype()
        )),
    }
}

/// Checks what the integer inputs of `kind` mean: for `mla_paged`, every
/// `cache_seqlens[b]` lies in `[0, MAXB·PAGE]` and every block-table entry a
/// sequence uses (the first `ceil(len / PAGE)` of its row) is a page of
/// `kv`. Entries past a sequence's length are never read and may hold
/// anything (`-1` padding is common). The masked tail of a partly filled
/// last page must be finite (see `docs/LANGUAGE.md`, non-finite inputs).
pub fn check_roles(kind: ReferenceKind, inputs: &[HostTensor]) -> Result<(), String> {
    if kind != ReferenceKind::MlaPaged {
        return Ok(());
    }
    let kv = find(inputs, "kv", 3)?;
    let bt = find(inputs, "block_table", 2)?;
    let lens_t = find(inputs, "cache_seqlens", 1)?;
    let (table, lens) = (ints(bt)?, ints(lens_t)?);
    let (pages, page) = (kv.shape[0], kv.shape[1]);
    let (b, maxb) = (bt.shape[0], bt.shape[1]);
    if lens_t.shape[0] != b {
        return Err(format!(
            "input `cache_seqlens`: shape {:?}, expected [{b}] (one length per row of `block_table` {:?})",
            lens_t.shape, bt.shape
        ));
    }
    let cap = maxb * page;
    for (bi, &len) in lens.iter().enumerate() {
        if len < 0 || len as usize > cap {
            return Err(format!(
                "input `cache_seqlens`: entry [{bi}] = {len}, expected 0 ≤ len ≤ MAXB·PAGE = {maxb}·{page} = {cap} (the capacity of a `block_table` row)"
            ));
        }
        let used = (len as usize).div_ceil(page.max(1));
        for (j, &pid) in table[bi * maxb..bi * maxb + used].iter().enumerate() {
            if pid < 0 || pid as usize >= pages {
                return Err(format!(
                    "input `block_table`: entry [{bi}, {j}] = {pid}, expected a page of `kv` in 0..{pages} (sequence {bi} has {len} tokens, so it uses entries 0..{used} of its row)"
                ));
            }
        }
    }
    // The masked tail of a partly filled last page is read by the kernel
    // (the whole page is one block) and multiplied by P = 0: a NaN or inf
    // there would turn the sequence's output into NaN, so it is refused.
    let d = kv.shape[2];
    let row_len = d;
    for (bi, &len) in lens.iter().enumerate() {
        let len = len as usize;
        if len.is_multiple_of(page) {
            continue;
        }
        let pid = table[bi * maxb + len / page] as usize;
        for r in len % page..page {
            let at = (pid * page + r) * row_len;
            if let Some(c) = (0..d).find(|&c| !element(&kv.data, at + c).is_finite()) {
                return Err(format!(
                    "input `kv`: element [{pid}, {r}, {c}] = {} lies in the masked tail of the last page of sequence {bi} ({len} tokens) and is not finite; the kernel reads whole pages and 0 · NaN is NaN, so masked positions must hold finite values (zeros are usual)",
                    element(&kv.data, at + c)
                ));
            }
        }
    }
    Ok(())
}

/// The memory a run needs for `specs`, checked against `budget` bytes.
///
/// Counts GM (every tensor once) plus the host copies a run keeps (inputs
/// and outputs once more, and `f64` working copies when `reference` is
/// set), in `u128` so no product overflows. Returns the bytes needed.
pub fn check_memory(specs: &[TensorSpec], reference: bool, budget: u64) -> Result<u128, String> {
    check_memory_with(specs, reference, budget, &[])
}

/// [`check_memory`] with the launch's own host memory added (`extra`: what
/// and how many bytes: unit scratch, local arenas, the race checker's
/// shadow); the error names each part that is not small.
pub fn check_memory_with(
    specs: &[TensorSpec],
    reference: bool,
    budget: u64,
    extra: &[(String, u128)],
) -> Result<u128, String> {
    // Tensors alone too big: that error, naming the largest tensor.
    let tensors = check_tensors(specs, reference, budget)?;
    let launch: u128 = extra.iter().map(|e| e.1).sum();
    let total = tensors.saturating_add(launch);
    if total > u128::from(budget) {
        let parts: Vec<String> = extra
            .iter()
            .filter(|e| e.1 > 0)
            .map(|(what, b)| format!("{what}: {b} bytes"))
            .collect();
        return Err(format!(
            "the launch at these dims needs {total} bytes of host memory, more than the {budget} \
             bytes available: the tensors {tensors} bytes, {}; make the dims smaller with -D{}",
            parts.join(", "),
            if extra.len() > 1 {
                " or use fewer --cores"
            } else {
                ""
            }
        ));
    }
    Ok(total)
}

fn check_tensors(specs: &[TensorSpec], reference: bool, budget: u64) -> Result<u128, String> {
    let mut total: u128 = 0;
    let mut largest: Option<(&TensorSpec, u128)> = None;
    for s in specs {
        let gm = s.elems() * u128::from(s.dtype.bytes());
        let host = match s.role {
            Role::Input | Role::Output => gm + s.elems() * 8,
            Role::Workspace => 0,
        };
        let f64s = if reference && s.role != Role::Workspace {
            s.elems() * 8
        } else {
            0
        };
        total += gm + host + f64s;
        if largest.is_none_or(|(_, b)| gm > b) {
            largest = Some((s, gm));
        }
    }
    if total > u128::from(budget) {
        let big = largest.map_or(String::new(), |(s, b)| {
            format!(
                "; the largest tensor is `{}`: {}{} = {b} bytes",
                s.name,
                s.dtype,
                describe(s)
            )
        });
        return Err(format!(
            "the kernel's tensors at these dims need {total} bytes of host memory, more than the {budget} bytes available{big}; make the dims smaller with -D"
        ));
    }
    Ok(total)
}

/// The memory budget of a run on this machine: `MemAvailable` (else
/// `MemTotal`) of `/proc/meminfo`, or `u64::MAX` where it cannot be read.
pub fn host_memory() -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/meminfo") else {
        return u64::MAX;
    };
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kb| kb.saturating_mul(1024))
    };
    field("MemAvailable:")
        .or_else(|| field("MemTotal:"))
        .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::DType;

    fn spec(name: &str, dtype: DType, dims: &[(&str, usize)]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            dtype,
            role: Role::Input,
            shape: dims.iter().map(|d| d.1).collect(),
            dims: dims.iter().map(|d| d.0.to_string()).collect(),
        }
    }

    fn t(name: &str, shape: &[usize], data: HostData) -> HostTensor {
        HostTensor {
            name: name.into(),
            shape: shape.to_vec(),
            data,
        }
    }

    #[test]
    fn shape_errors_name_the_input_the_dim_and_its_binding() {
        let s = spec("q", DType::F32, &[("B", 2), ("H", 3), ("4", 4)]);
        let mut d = Defines::new();
        d.insert("B", "2");
        let e =
            check_tensor(&s, &t("q", &[5, 3, 4], HostData::F32(vec![0.0; 60])), &d).unwrap_err();
        assert!(
            e.contains("`q`") && e.contains("[5, 3, 4]") && e.contains("-D B=2"),
            "{e}"
        );
        let e =
            check_tensor(&s, &t("q", &[2, 3, 5], HostData::F32(vec![0.0; 30])), &d).unwrap_err();
        assert!(e.contains("fixed at 4"), "{e}");
        let e = check_tensor(&s, &t("q", &[6, 4], HostData::F32(vec![0.0; 24])), &d).unwrap_err();
        assert!(e.contains("rank 2") && e.contains("rank 3"), "{e}");
        let e = check_tensor(&s, &t("q", &[2, 3, 4], HostData::I32(vec![0; 24])), &d).unwrap_err();
        assert!(e.contains("dtype i32, expected f32"), "{e}");
        let e =
            check_tensor(&s, &t("q", &[2, 3, 4], HostData::F32(vec![0.0; 23])), &d).unwrap_err();
        assert!(e.contains("23 elements") && e.contains("24"), "{e}");
    }

    #[test]
    fn given_inputs_are_complete_unique_and_known() {
        let specs = [
            spec("q", DType::F32, &[("2", 2)]),
            spec("kv", DType::F32, &[("2", 2)]),
        ];
        let q = t("q", &[2], HostData::F32(vec![0.0; 2]));
        let d = Defines::new();
        let e = check_given(&specs, std::slice::from_ref(&q), false, &d, "k").unwrap_err();
        assert!(e.contains("`kv`") && e.contains("--fill-missing"), "{e}");
        check_given(&specs, std::slice::from_ref(&q), true, &d, "k").unwrap();
        let e = check_given(&specs, &[q.clone(), q.clone()], true, &d, "k").unwrap_err();
        assert!(e.contains("`q` is given twice"), "{e}");
        let x = t("x", &[2], HostData::F32(vec![0.0; 2]));
        let e = check_given(&specs, &[x], true, &d, "k").unwrap_err();
        assert!(
            e.contains("`x` is not an input of `k`") && e.contains("q, kv"),
            "{e}"
        );
        check_given(&specs, &[], false, &d, "k").unwrap();
    }

    fn paged(table: Vec<i32>, lens: Vec<i32>) -> Vec<HostTensor> {
        vec![
            t("kv", &[3, 4, 2], HostData::F32(vec![0.0; 24])),
            t("block_table", &[2, 2], HostData::I32(table)),
            t("cache_seqlens", &[2], HostData::I32(lens)),
        ]
    }

    #[test]
    fn block_tables_and_lengths_are_checked_where_used() {
        let k = ReferenceKind::MlaPaged;
        // Unused entries (past the length) may hold anything.
        check_roles(k, &paged(vec![0, -1, 2, 1], vec![3, 8])).unwrap();
        let e = check_roles(k, &paged(vec![0, 1, 2, 3], vec![3, 8])).unwrap_err();
        assert!(
            e.contains("`block_table`") && e.contains("[1, 1] = 3"),
            "{e}"
        );
        let e = check_roles(k, &paged(vec![-1, 1, 2, 1], vec![3, 8])).unwrap_err();
        assert!(e.contains("[0, 0] = -1"), "{e}");
        let e = check_roles(k, &paged(vec![0, 1, 2, 1], vec![3, 9])).unwrap_err();
        assert!(
            e.contains("`cache_seqlens`") && e.contains("[1] = 9") && e.contains("= 8"),
            "{e}"
        );
        let e = check_roles(k, &paged(vec![0, 1, 2, 1], vec![-2, 0])).unwrap_err();
        assert!(e.contains("[0] = -2"), "{e}");
        check_roles(ReferenceKind::Mla, &[]).unwrap();
    }

    #[test]
    fn memory_is_counted_without_overflow() {
        let s = [spec(
            "kv",
            DType::Bf16,
            &[("B", 100_000), ("N", 1 << 31), ("576", 576)],
        )];
        let e = check_memory(&s, true, 1 << 34).unwrap_err();
        assert!(
            e.contains("bytes") && e.contains("`kv`") && e.contains("-D"),
            "{e}"
        );
        assert_eq!(check_memory(&s[..0], true, 0).unwrap(), 0);
        assert!(host_memory() > 0);
    }
}
