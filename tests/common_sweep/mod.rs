//! The `--check` sweep of the MLA examples over the KV length `N` and the
//! input seed, shared by `tests/check_sweep.rs` (a sample, in the default
//! suite) and `examples/check_sweep.rs` (every `N` in 1..=300 at seeds
//! 0-3, the command in README's "Heavier runs").

use std::path::Path;

use amla::compiler::diag::SourceFile;
use amla::compiler::driver::CompileOptions;
use amla::compiler::run::exec::RunConfig;
use amla::compiler::run::inputs::InputOptions;
use amla::compiler::run::reference_kind::{ReferenceKind, expected};
use amla::compiler::run::session::Oracle;
use amla::compiler::run::session::{RunRequest, run_source};
use amla::compiler::run::{HostData, HostTensor};

/// How close a checked run came to its tolerances: the largest `error /
/// bound` of `out`, against the reference and against the interpreter, and
/// against the reference under the former tolerance `2^-8 + 2^-7·|ref|`
/// (before the magnitude part, `run/compare.rs`).
#[derive(Copy, Clone, Debug, Default)]
pub struct Margin {
    /// `out` against the reference.
    pub reference: f64,
    /// `out` against the reference, former tolerance.
    pub former: f64,
    /// `out` against the interpreter.
    pub interpreter: f64,
}

impl Margin {
    /// The larger of each.
    pub fn max(self, o: Margin) -> Margin {
        Margin {
            reference: self.reference.max(o.reference),
            former: self.former.max(o.former),
            interpreter: self.interpreter.max(o.interpreter),
        }
    }
}

/// The three kernels of the sweep.
pub const KERNELS: [&str; 3] = [
    "mla_decode.amla",
    "mla_decode_mtp.amla",
    "mla_decode_paged.amla",
];

/// Reads an example.
pub fn source(name: &str) -> SourceFile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("dsl-examples")
        .join(name);
    SourceFile::new(name, std::fs::read_to_string(path).unwrap())
}

/// Runs `kernel` with `--check` at KV length `n` and `seed`, with the
/// default pipeline and `defines` (e.g. `H=16`); `Err` names what failed.
/// The paged kernel gets `n` tokens in every sequence (`cache_seqlens`),
/// the others `-D N=n`.
pub fn check(
    kernel: &str,
    n: usize,
    seed: u64,
    defines: &[(&str, &str)],
) -> Result<Margin, String> {
    check_pipeline(kernel, n, seed, defines, false)
}

/// [`check`], with `mul-to-add` disabled when `flash` (FlashAttention as
/// the kernel is written: the float multiply of the accumulator).
pub fn check_pipeline(
    kernel: &str,
    n: usize,
    seed: u64,
    defines: &[(&str, &str)],
    flash: bool,
) -> Result<Margin, String> {
    let src = source(kernel);
    let mut compile = CompileOptions::new().map_err(|e| e.to_string())?;
    if flash {
        compile.pipeline.disabled.push("mul-to-add".into());
    }
    for (k, v) in defines {
        compile.defines.insert(*k, *v);
    }
    let mut given = Vec::new();
    if kernel.contains("paged") {
        let b: usize = defines
            .iter()
            .find(|(k, _)| *k == "B")
            .map_or(4, |(_, v)| v.parse().unwrap());
        given.push(HostTensor {
            name: "cache_seqlens".into(),
            shape: vec![b],
            data: HostData::I32(vec![n as i32; b]),
        });
    } else {
        compile.defines.insert("N", n.to_string());
    }
    let req = RunRequest {
        compile,
        inputs: InputOptions { seed, scale: 1.0 },
        given,
        // The paged kernel is given only its lengths; the rest is seeded.
        run: RunConfig {
            fill_missing: true,
            ..RunConfig::default()
        },
        check: true,
    };
    let s = run_source(&src, &req, &mut |_| {})
        .map_err(|e| format!("{kernel} N={n} seed={seed}: {e}"))?;
    if s.checks.is_empty() {
        return Err(format!("{kernel}: nothing was checked"));
    }
    let bad: Vec<String> = s
        .checks
        .iter()
        .flat_map(|k| k.comparisons.iter().map(move |c| (k.oracle, c)))
        .filter(|(_, c)| !c.passed)
        .map(|(o, c)| {
            let worst = c.worst.as_ref().map_or(String::new(), |w| {
                format!(
                    "; worst at {}: ref {:.3e}, mag {:.3e}, err {:.3e} = {:.2} × the bound {:.3e}",
                    w.index,
                    w.want,
                    w.mag,
                    (w.got - w.want).abs(),
                    c.max_ratio,
                    w.bound
                )
            });
            format!(
                "{kernel} N={n} seed={seed} {defines:?}{}: against {o:?}, `{}` {} of {} elements outside the tolerance (max abs err {:.3e}{worst})",
                if flash { " (FlashAttention)" } else { "" },
                c.name, c.mismatches, c.elements, c.max_abs_err
            )
        })
        .collect();
    if bad.is_empty() {
        Ok(margin(&s, &src.text))
    } else {
        Err(bad.join("\n"))
    }
}

/// The [`Margin`] of a checked run of one of [`KERNELS`].
fn margin(s: &amla::compiler::run::session::RunSummary, text: &str) -> Margin {
    let ratio = |o: Oracle| {
        s.check(o)
            .and_then(|c| c.comparisons.iter().find(|c| c.name == "out"))
            .map_or(0.0, |c| c.max_ratio)
    };
    let kind = ReferenceKind::from_source(text)
        .ok()
        .flatten()
        .expect("a reference line");
    // The three kernels' softmax scale (the reference takes it from the
    // kernel; asserted so an edit of the examples does not go unnoticed).
    assert!(text.contains("const scale = 1.0 / sqrt(576.0);"));
    let out = s
        .output
        .outputs
        .iter()
        .find(|o| o.name == "out")
        .expect("out");
    let want = expected(kind, &s.inputs, 1.0 / 576f64.sqrt(), 512).expect("reference");
    let former = out
        .data
        .to_f64()
        .iter()
        .zip(&want.out)
        .filter(|(g, w)| g.is_finite() && w.is_finite())
        .map(|(g, w)| (g - w).abs() / (2f64.powi(-8) + 2f64.powi(-7) * w.abs()))
        .fold(0.0, f64::max);
    Margin {
        reference: ratio(Oracle::Reference(kind)),
        former,
        interpreter: ratio(Oracle::Interpreter),
    }
}
