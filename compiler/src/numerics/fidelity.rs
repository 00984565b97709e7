//! The fidelity report of `amlac numerics`: one kernel, several input
//! distributions, FlashAttention (`mul-to-add` disabled) and every AMLA
//! variant, each compared with the float64 reference.
//!
//! For each distribution the float inputs are drawn once (seeded, see
//! [`draw`]) and given to every variant, so all variants see the same
//! numbers; i32 inputs (a paged kernel's block table and lengths) are drawn
//! by [`crate::run::session::run_source`] from the same seed. The reference
//! is the kernel's `// @reference:` kind, computed once per distribution.
//!
//! Metrics of `out` against the reference (FlashMLA's test figures are
//! max abs 8e-4, relative 2.01/128, cosine difference 5e-6):
//!
//! - `max_abs`, `mean_abs`: of `|out - ref|`;
//! - `rel_l2`: `‖out - ref‖₂ / ‖ref‖₂`;
//! - `cos_diff`: `1 - cos(out, ref)` over the whole tensor;
//! - `flashmla_ok`: every element within `8e-4 + (2.01/128)·|ref|` and
//!   `cos_diff < 5e-6`;
//! - `lse_max_rel`: largest `|lse - ref| / |ref|` over finite references
//!   (rows with an infinite reference must match it exactly, else it is
//!   infinite).

use serde::Serialize;

use crate::diag::SourceFile;
use crate::driver::{self, CompileOptions};
use crate::ir::DType;
use crate::passes::mul_to_add::RescaleVariant;
use crate::run::exec::{Executable, RunConfig};
use crate::run::inputs::{InputGen, InputOptions};
use crate::run::reference_kind::{ReferenceKind, expected};
use crate::run::session::{RunRequest, run_source};
use crate::run::{HostData, HostTensor};

/// FlashMLA's absolute tolerance.
pub const FLASHMLA_ATOL: f64 = 8e-4;
/// FlashMLA's relative tolerance.
pub const FLASHMLA_RTOL: f64 = 2.01 / 128.0;
/// FlashMLA's cosine-difference bound.
pub const FLASHMLA_COS: f64 = 5e-6;

/// An input distribution of the report.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Distribution {
    /// q, k, v standard normal.
    Normal,
    /// q scaled by 5.4: scores have a standard deviation near 9.4 (for
    /// MLA's d = 576 and scale 1/√192), so the largest of 1024 is near 30.
    LargeRange,
    /// Standard normal, but 4 keys per sequence have 8× the norm.
    Outliers,
    /// q scaled by 0.01: every score within a few hundredths of 0.
    NearConstant,
    /// Standard normal with `N = 32768` (and `B = 1`).
    Long,
}

impl Distribution {
    /// Every distribution, in report order.
    pub const ALL: [Distribution; 5] = [
        Distribution::Normal,
        Distribution::LargeRange,
        Distribution::Outliers,
        Distribution::NearConstant,
        Distribution::Long,
    ];

    /// Its name in the report and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Normal => "normal",
            Distribution::LargeRange => "large_range",
            Distribution::Outliers => "outliers",
            Distribution::NearConstant => "near_constant",
            Distribution::Long => "long",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Distribution> {
        Distribution::ALL.into_iter().find(|d| d.name() == s)
    }

    fn q_scale(self) -> f64 {
        match self {
            Distribution::LargeRange => 5.4,
            Distribution::NearConstant => 0.01,
            _ => 1.0,
        }
    }

    /// Extra `-D` bindings this distribution needs.
    pub fn defines(self, long_n: u64) -> Vec<(String, String)> {
        match self {
            Distribution::Long => vec![("N".into(), long_n.to_string()), ("B".into(), "1".into())],
            _ => Vec::new(),
        }
    }
}

/// A column of the report: how the kernel is compiled.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Variant {
    /// `None`: FlashAttention (`--disable-pass mul-to-add`).
    pub rescale: Option<RescaleVariant>,
    /// `-D COMPENSATE=1`.
    pub compensate: bool,
}

impl Variant {
    /// FlashAttention, then every rescale without and with compensation.
    pub fn all() -> Vec<Variant> {
        let mut v = vec![Variant {
            rescale: None,
            compensate: false,
        }];
        for r in RescaleVariant::ALL {
            for compensate in [false, true] {
                v.push(Variant {
                    rescale: Some(r),
                    compensate,
                });
            }
        }
        v
    }

    /// A short label: `flash`, `ceil`, `ceil+comp`, `nearest`…
    pub fn label(self) -> String {
        match self.rescale {
            None => "flash".into(),
            Some(r) if self.compensate => format!("{}+comp", r.name()),
            Some(r) => r.name().into(),
        }
    }

    fn apply(self, opts: &mut CompileOptions) {
        match self.rescale {
            None => opts.pipeline.disabled.push("mul-to-add".into()),
            Some(r) => {
                opts.pass_options.rescale = r;
                opts.pass_options.compensate = self.compensate;
            }
        }
    }
}

/// Errors of one variant on one distribution.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Errors {
    /// Largest `|out - ref|`.
    pub max_abs: f64,
    /// Mean `|out - ref|`.
    pub mean_abs: f64,
    /// `‖out - ref‖₂ / ‖ref‖₂`.
    pub rel_l2: f64,
    /// `1 - cos(out, ref)`.
    pub cos_diff: f64,
    /// Within FlashMLA's tolerances.
    pub flashmla_ok: bool,
    /// Largest relative error of `lse`.
    pub lse_max_rel: f64,
    /// NaNs in `out` or `lse`.
    pub nans: usize,
    /// Elements of `out` failing FlashMLA's per-element rule: abs error
    /// above 8e-4 **and** relative error above 2.01/128 (NaNs count).
    pub fails: usize,
    /// Elements of `out` outside `amlac run --check`'s bf16 tolerance
    /// ([`crate::run::compare::Tolerance::for_dtype`]).
    pub check_fails: usize,
}

/// One cell of the report.
#[derive(Clone, Debug, Serialize)]
pub struct Cell {
    /// The column.
    pub variant: String,
    /// The errors, or why the variant could not run.
    pub result: Result<Errors, String>,
}

/// One row of the report.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// The distribution.
    pub distribution: Distribution,
    /// The kernel's dims for this row.
    pub dims: Vec<(String, i64)>,
    /// Largest finite reference `lse` (about the largest logit when the
    /// scores span a large range).
    pub max_lse: f64,
    /// One cell per variant.
    pub cells: Vec<Cell>,
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct Request {
    /// Base compile options (`-D`, target).
    pub compile: CompileOptions,
    /// Seed of the inputs.
    pub seed: u64,
    /// Distributions, in order.
    pub distributions: Vec<Distribution>,
    /// Variants, in order.
    pub variants: Vec<Variant>,
    /// `N` of [`Distribution::Long`].
    pub long_n: u64,
    /// Extra `-D` bindings, one set per group of rows (e.g. `N=5 H=16`);
    /// empty means one group with none. [`Distribution::Long`] sets its
    /// own `N`, so it runs once per distinct binding of the other names.
    pub grid: Vec<Vec<(String, String)>>,
    /// Launch settings.
    pub run: RunConfig,
}

/// Compares `got` with `want`, whose elements have the magnitudes `mag`
/// (see the module doc).
pub fn errors(out: &[f64], want: &[f64], mag: &[f64], lse: &[f64], want_lse: &[f64]) -> Errors {
    let mut e = Errors {
        flashmla_ok: out.len() == want.len(),
        ..Errors::default()
    };
    let (mut se, mut sr, mut dot, mut so) = (0.0, 0.0, 0.0, 0.0);
    let check = crate::run::compare::Tolerance::for_dtype(DType::Bf16);
    for ((&g, &w), &m) in out.iter().zip(want).zip(mag) {
        if g.is_nan() {
            e.nans += 1;
            e.fails += 1;
            e.check_fails += 1;
            e.flashmla_ok = false;
            continue;
        }
        let d = (g - w).abs();
        if d > FLASHMLA_ATOL && d > FLASHMLA_RTOL * w.abs() {
            e.fails += 1;
        }
        if d > check.bound(w, m) {
            e.check_fails += 1;
        }
        e.max_abs = e.max_abs.max(d);
        e.mean_abs += d;
        se += d * d;
        sr += w * w;
        so += g * g;
        dot += g * w;
        if d > FLASHMLA_ATOL + FLASHMLA_RTOL * w.abs() {
            e.flashmla_ok = false;
        }
    }
    e.mean_abs /= out.len().max(1) as f64;
    e.rel_l2 = if sr > 0.0 {
        (se / sr).sqrt()
    } else {
        se.sqrt()
    };
    e.cos_diff = if sr > 0.0 && so > 0.0 {
        1.0 - dot / (sr.sqrt() * so.sqrt())
    } else if sr == so {
        0.0
    } else {
        1.0
    };
    e.flashmla_ok &= e.cos_diff < FLASHMLA_COS;
    for (&g, &w) in lse.iter().zip(want_lse) {
        if g.is_nan() {
            e.nans += 1;
            e.lse_max_rel = f64::INFINITY;
        } else if w.is_infinite() || g.is_infinite() {
            if g != w {
                e.lse_max_rel = f64::INFINITY;
            }
        } else if w != 0.0 {
            e.lse_max_rel = e.lse_max_rel.max((g - w).abs() / w.abs());
        }
    }
    e
}

/// Draws the float inputs of `specs` for `dist`: standard normal, `q`
/// scaled by the distribution's factor, and for [`Distribution::Outliers`]
/// 4 rows per sequence of `k`/`kv` (the second-to-last dim) times 8.
pub fn draw(
    specs: &[(String, DType, Vec<usize>)],
    dist: Distribution,
    seed: u64,
) -> Vec<HostTensor> {
    let opts = InputOptions { seed, scale: 1.0 };
    let mut out = Vec::new();
    for (i, (name, dtype, shape)) in specs.iter().enumerate() {
        if *dtype == DType::I32 || *dtype == DType::Bool {
            continue;
        }
        let mut g = InputGen::new(&opts, i as u64);
        let n: usize = shape.iter().product();
        let mut vals: Vec<f64> = (0..n).map(|_| g.normal()).collect();
        if name == "q" {
            vals.iter_mut().for_each(|x| *x *= dist.q_scale());
        }
        if dist == Distribution::Outliers && (name == "k" || name == "kv") && shape.len() >= 2 {
            let d = shape[shape.len() - 1];
            let keys = shape[shape.len() - 2];
            let seqs = n / (d * keys).max(1);
            for s in 0..seqs {
                for j in 0..4usize {
                    let key = (j * 7919 + 13 + s * 31) % keys.max(1);
                    let base = (s * keys + key) * d;
                    vals[base..base + d].iter_mut().for_each(|x| *x *= 8.0);
                }
            }
        }
        if let Some(data) = HostData::from_f64(*dtype, &vals) {
            out.push(HostTensor {
                name: name.clone(),
                shape: shape.clone(),
                data,
            });
        }
    }
    out
}

/// Runs the report for `src`; `progress` is told what runs.
pub fn measure(
    src: &SourceFile,
    req: &Request,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Row>, String> {
    let kind = ReferenceKind::from_source(&src.text)?.ok_or_else(|| {
        format!(
            "{} has no `// @reference: KIND` line naming its float64 reference",
            src.name
        )
    })?;
    let mut rows = Vec::new();
    let grid = if req.grid.is_empty() {
        vec![Vec::new()]
    } else {
        req.grid.clone()
    };
    let mut long_done: Vec<Vec<(String, String)>> = Vec::new();
    for point in &grid {
        for &dist in &req.distributions {
            let mut base = req.compile.clone();
            for (k, v) in point {
                base.defines.insert(k.clone(), v.clone());
            }
            if dist == Distribution::Long {
                let others: Vec<(String, String)> =
                    point.iter().filter(|(k, _)| k != "N").cloned().collect();
                if long_done.contains(&others) {
                    continue;
                }
                long_done.push(others);
            }
            for (k, v) in dist.defines(req.long_n) {
                base.defines.insert(k, v);
            }
            progress(&format!("{}: compiling", dist.name()));
            let c = driver::compile(src, &base).map_err(|e| format!("{}: {e}", dist.name()))?;
            let scale = c
                .hir
                .consts
                .iter()
                .find(|k| k.name == "scale")
                .map(|k| k.value.as_f64())
                .ok_or("the reference needs the kernel's `scale` constant")?;
            let exe = Executable::new(&c, &base.target).map_err(|e| e.to_string())?;
            let specs = exe.input_specs().map_err(|e| e.to_string())?;
            let dims: Vec<(String, i64)> = exe
                .ir()
                .dims
                .values()
                .map(|d| d.name.clone())
                .zip(exe.dims().map_err(|e| e.to_string())?)
                .collect();
            let given = draw(&specs, dist, req.seed);
            let mut reference: Option<(Vec<f64>, Vec<f64>, Vec<f64>)> = None;
            let mut max_lse = f64::NEG_INFINITY;
            let mut cells = Vec::new();
            for &var in &req.variants {
                progress(&format!("{}: {}", dist.name(), var.label()));
                let mut compile = base.clone();
                var.apply(&mut compile);
                let rr = RunRequest {
                    compile,
                    inputs: InputOptions {
                        seed: req.seed,
                        scale: 1.0,
                    },
                    given: given.clone(),
                    // `draw` makes the float inputs; integer ones are drawn by the run.
                    run: crate::run::exec::RunConfig {
                        fill_missing: true,
                        ..req.run.clone()
                    },
                    check: false,
                };
                let result = match run_source(src, &rr, &mut |_| {}) {
                    Err(e) => Err(e.to_string()),
                    Ok(s) => {
                        let get = |n: &str| {
                            s.output
                                .outputs
                                .iter()
                                .find(|o| o.name == n)
                                .map(|o| o.data.to_f64())
                                .ok_or_else(|| format!("the kernel has no output `{n}`"))
                        };
                        let (out, lse) = (get("out")?, get("lse")?);
                        if reference.is_none() {
                            let dv = s
                                .output
                                .outputs
                                .iter()
                                .find(|o| o.name == "out")
                                .and_then(|o| o.shape.last().copied())
                                .unwrap_or(0);
                            let w = expected(kind, &s.inputs, scale, dv)?;
                            max_lse = w
                                .lse
                                .iter()
                                .copied()
                                .filter(|x| x.is_finite())
                                .fold(f64::NEG_INFINITY, f64::max);
                            reference = Some((w.out, w.mag, w.lse));
                        }
                        let (wo, wm, wl) = reference.as_ref().ok_or("no reference")?;
                        Ok(errors(&out, wo, wm, &lse, wl))
                    }
                };
                cells.push(Cell {
                    variant: var.label(),
                    result,
                });
            }
            rows.push(Row {
                distribution: dist,
                dims,
                max_lse,
                cells,
            });
        }
    }
    Ok(rows)
}

/// The report as a text table, one line per (distribution, variant), with
/// each error's ratio to FlashAttention's on the same distribution.
pub fn table(rows: &[Row]) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<14} {:<13} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6} {:>7} {:>6} {:>6} {:>8}",
        "distribution",
        "variant",
        "max abs",
        "mean abs",
        "rel l2",
        "1-cos",
        "lse rel",
        "max/FA",
        "mean/FA",
        "fails",
        "check",
        "FlashMLA"
    );
    for r in rows {
        let fa = r
            .cells
            .iter()
            .find(|c| c.variant == "flash")
            .and_then(|c| c.result.as_ref().ok());
        let dims: Vec<String> = r.dims.iter().map(|(n, v)| format!("{n}={v}")).collect();
        let _ = writeln!(
            o,
            "{} ({}; max lse {:.1})",
            r.distribution.name(),
            dims.join(" "),
            r.max_lse
        );
        for c in &r.cells {
            match &c.result {
                Ok(e) => {
                    let ratio = |x: f64, y: Option<f64>| match y {
                        Some(y) if y > 0.0 => format!("{:.2}", x / y),
                        _ => "-".into(),
                    };
                    let _ = writeln!(
                        o,
                        "{:<14} {:<13} {:>9.2e} {:>9.2e} {:>9.2e} {:>9.2e} {:>9.2e} {:>6} {:>7} {:>6} {:>6} {:>8}",
                        "",
                        c.variant,
                        e.max_abs,
                        e.mean_abs,
                        e.rel_l2,
                        e.cos_diff,
                        e.lse_max_rel,
                        ratio(e.max_abs, fa.map(|f| f.max_abs)),
                        ratio(e.mean_abs, fa.map(|f| f.mean_abs)),
                        e.fails,
                        e.check_fails,
                        if e.nans > 0 {
                            format!("{} NaN", e.nans)
                        } else if e.flashmla_ok {
                            "ok".into()
                        } else {
                            "over".into()
                        }
                    );
                }
                Err(m) => {
                    let first = m.lines().next().unwrap_or("");
                    let _ = writeln!(o, "{:<14} {:<13} failed: {first}", "", c.variant);
                }
            }
        }
    }
    let _ = writeln!(
        o,
        "FlashMLA's test figures: max abs {FLASHMLA_ATOL:.0e}, relative {:.4} (2.01/128), 1-cos {FLASHMLA_COS:.0e}",
        FLASHMLA_RTOL
    );
    let _ = writeln!(
        o,
        "fails: elements with abs err > {FLASHMLA_ATOL:.0e} and rel err > 2.01/128; check: elements outside `amlac run --check`'s bf16 tolerance"
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_measure_what_they_say() {
        let e = errors(
            &[1.0, 2.0],
            &[1.0, 2.5],
            &[1.0, 2.5],
            &[3.0, f64::INFINITY],
            &[3.0, f64::INFINITY],
        );
        assert_eq!(e.max_abs, 0.5);
        assert_eq!(e.mean_abs, 0.25);
        assert!(!e.flashmla_ok);
        assert_eq!(e.lse_max_rel, 0.0);
        let e = errors(
            &[f64::NAN],
            &[1.0],
            &[1.0],
            &[f64::NEG_INFINITY],
            &[f64::INFINITY],
        );
        assert_eq!(e.nans, 1);
        assert_eq!(e.lse_max_rel, f64::INFINITY);
        let e = errors(&[1.0, 0.0], &[1.0, 0.0], &[1.0, 0.0], &[1.0], &[1.0]);
        assert!(e.flashmla_ok && e.cos_diff == 0.0);
    }

    #[test]
    fn names_round_trip_and_outliers_are_large() {
        for d in Distribution::ALL {
            assert_eq!(Distribution::parse(d.name()), Some(d));
        }
        let specs = vec![("kv".to_string(), DType::F32, vec![2, 64, 8])];
        let t = draw(&specs, Distribution::Outliers, 3);
        let v = t[0].data.to_f64();
        let big = v
            .chunks(8)
            .filter(|r| r.iter().any(|x| x.abs() > 6.0))
            .count();
        assert!((4..=12).contains(&big), "{big}");
        assert_eq!(Variant::all().len(), 11);
        assert_eq!(Variant::all()[4].label(), "nearest+comp");
        assert_eq!(Variant::all()[6].label(), "cann+comp");
        assert_eq!(Variant::all()[8].label(), "anchored+comp");
        assert_eq!(Variant::all()[10].label(), "exact+comp");
    }
}
