//! The compiler as a library: source text → checked HIR → tile IR → passes.
//!
//! [`compile`] is what `amlac compile` and `amlac run` call and what tests
//! and embedders use. It never panics on user input: a bad program comes
//! back as [`CompileError::Diagnostics`], a kernel the target cannot hold as
//! [`CompileError::Pass`] with a user-facing [`PassError`].
//!
//! Compiler options can also be given as `-D`: `-D PRELOAD=d` sets the
//! preload depth, `-D RESCALE=ceil|nearest` and `-D COMPENSATE=0|1` choose
//! the `mul-to-add` variant (see `docs/NUMERICS.md`). These names
//! ([`OPTION_DEFINES`]) are reserved: they never reach the kernel's dims
//! and consts.

use crate::check::{self, Defines, hir};
use crate::diag::{Diagnostic, SourceFile};
use crate::ir::Kernel;
use crate::lower;
use crate::passes::{
    self, ExplainNote, PassContext, PassError, PassOptions, PipelineConfig, PipelineReport,
};
use crate::target::Target;

/// Everything that shapes a compilation.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// `-D NAME=VALUE` bindings of dims and consts (and `PRELOAD`).
    pub defines: Defines,
    /// The chip the passes plan for.
    pub target: Target,
    /// Print-after, disabled passes, timing, verification.
    pub pipeline: PipelineConfig,
    /// Options the passes read (preload depth…).
    pub pass_options: PassOptions,
}

impl CompileOptions {
    /// Defaults: no defines, the built-in `ascend910b` target, the default
    /// pipeline.
    pub fn new() -> Result<CompileOptions, String> {
        Ok(CompileOptions {
            defines: Defines::new(),
            target: Target::builtin("ascend910b").map_err(|e| e.to_string())?,
            pipeline: PipelineConfig::default(),
            pass_options: PassOptions::default(),
        })
    }
}

/// The products of a compilation.
#[derive(Clone, Debug)]
pub struct Compilation {
    /// The checked program.
    pub hir: hir::Kernel,
    /// The IR as lowering produced it (before any pass).
    pub lowered: Kernel,
    /// The IR after the pipeline.
    pub ir: Kernel,
    /// IR dumps and timings the pipeline captured.
    pub report: PipelineReport,
    /// `--explain` notes of the passes (none unless
    /// [`PipelineConfig::explain`] is [`passes::Explain::Record`]).
    pub notes: Vec<ExplainNote>,
}

/// Why a compilation failed.
#[derive(Debug)]
pub enum CompileError {
    /// The source has errors.
    Diagnostics(Vec<Diagnostic>),
    /// A compiler option is malformed (e.g. `-D PRELOAD=x`).
    Option(String),
    /// A pass refused the kernel (user-facing) or failed (a compiler bug).
    Pass(PassError),
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CompileError::Diagnostics(d) => write!(f, "{} error(s) in the source", d.len()),
            CompileError::Option(m) => f.write_str(m),
            CompileError::Pass(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CompileError {}

/// Names of compiler options accepted as `-D`.
pub const OPTION_DEFINES: &[&str] = &["PRELOAD", "RESCALE", "COMPENSATE"];

/// Moves the compiler options given as `-D` out of `opts.defines` into the
/// pass options (`amlac check` calls it too, so every command takes them).
pub fn take_option_defines(opts: &mut CompileOptions) -> Result<(), CompileError> {
    if let Some(v) = opts.defines.map.remove("PRELOAD") {
        opts.pass_options.preload_depth = v.parse().ok().filter(|d| *d <= 8).ok_or_else(|| {
            CompileError::Option(format!("-D PRELOAD={v}: expected a preload depth in 0..=8"))
        })?;
    }
    if let Some(v) = opts.defines.map.remove("RESCALE") {
        opts.pass_options.rescale = crate::passes::mul_to_add::RescaleVariant::parse(&v)
            .ok_or_else(|| {
                CompileError::Option(format!(
                    "-D RESCALE={v}: expected one of {}",
                    crate::passes::mul_to_add::RescaleVariant::ALL
                        .map(|r| format!("`{}`", r.name()))
                        .join(", ")
                ))
            })?;
    }
    if let Some(v) = opts.defines.map.remove("COMPENSATE") {
        opts.pass_options.compensate = match v.as_str() {
            "0" => false,
            "1" => true,
            _ => {
                return Err(CompileError::Option(format!(
                    "-D COMPENSATE={v}: expected 0 or 1"
                )));
            }
        };
    }
    Ok(())
}

/// Checks the source only.
pub fn check_source(src: &SourceFile, defines: &Defines) -> Result<hir::Kernel, CompileError> {
    check::check(src, defines).map_err(CompileError::Diagnostics)
}

/// Checks `src` with the kernel's `-D` bindings (compiler options such as
/// `-D PRELOAD` are accepted and set aside): the stage `--emit hir` prints.
pub fn check_with_options(
    src: &SourceFile,
    opts: &CompileOptions,
) -> Result<hir::Kernel, CompileError> {
    let mut opts = opts.clone();
    take_option_defines(&mut opts)?;
    check_source(src, &opts.defines)
}

/// Checks and lowers `src`, running no pass: the stage `--emit lowered`
/// prints.
pub fn lower_source(
    src: &SourceFile,
    opts: &CompileOptions,
) -> Result<(hir::Kernel, Kernel), CompileError> {
    let hir = check_with_options(src, opts)?;
    let lowered = lower_hir(&hir, &opts.target)?;
    Ok((hir, lowered))
}

/// Lowers a checked kernel, refusing first a tile larger than any buffer
/// of the target (E0034, before any pass runs).
fn lower_hir(hir: &hir::Kernel, target: &Target) -> Result<Kernel, CompileError> {
    let lowered = lower::lower(hir).map_err(|e| {
        CompileError::Pass(PassError::Internal {
            pass: "lower".into(),
            message: e.0,
        })
    })?;
    lower::capacity::check_capacities(&lowered, target).map_err(CompileError::Pass)?;
    Ok(lowered)
}

/// Compiles `src` through lowering and the default pipeline.
pub fn compile(src: &SourceFile, opts: &CompileOptions) -> Result<Compilation, CompileError> {
    let mut opts = opts.clone();
    take_option_defines(&mut opts)?;
    let hir = check_source(src, &opts.defines)?;
    let lowered = lower_hir(&hir, &opts.target)?;
    let mut ir = lowered.clone();
    let mut pipeline = passes::default_pipeline();
    pipeline.config = opts.pipeline.clone();
    let mut cx = PassContext::new(&opts.target, opts.pass_options.clone());
    cx.explain = opts.pipeline.explain;
    let report = pipeline.run(&mut ir, &cx).map_err(CompileError::Pass)?;
    Ok(Compilation {
        hir,
        lowered,
        ir,
        report,
        notes: cx.notes(),
    })
}

/// A user-facing pass error as a diagnostic: code E0034 for a tile that does
/// not fit, E0035 otherwise, pointing at the source of the op when the IR
/// kept its span (else at the start of the file).
pub fn pass_diagnostic(src: &SourceFile, p: &crate::passes::PassError) -> crate::diag::Diagnostic {
    use crate::diag::{Code, Diagnostic};
    use crate::passes::PassError;
    let code = match p {
        PassError::DoesNotFit { .. } => Code::TileDoesNotFit,
        _ => Code::Unschedulable,
    };
    let len = src.text.len();
    let span = p
        .span()
        .map(|s| crate::syntax::Span::new((s.start as usize).min(len), (s.end as usize).min(len)))
        .unwrap_or_else(|| crate::syntax::Span::new(0, 0));
    let label = match p {
        PassError::DoesNotFit { buffer, .. } => format!("this tile does not fit {buffer}"),
        _ => String::new(),
    };
    Diagnostic::new(code, span, p.to_string()).label(label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::Explain;

    const MLA: &str = include_str!("../../dsl-examples/mla_decode.amla");

    /// Skipping the notes changes nothing but the notes: the same IR, and
    /// `--explain` still gets every pass's notes, those naming values too.
    #[test]
    fn notes_are_written_only_when_recorded_and_change_no_ir() {
        let src = SourceFile::new("mla_decode.amla", MLA);
        let mut opts = CompileOptions::new().unwrap();
        assert_eq!(opts.pipeline.explain, Explain::Skip);
        let skipped = compile(&src, &opts).unwrap();
        opts.pipeline.explain = Explain::Record;
        let recorded = compile(&src, &opts).unwrap();
        assert_eq!(
            crate::ir::print(&skipped.ir),
            crate::ir::print(&recorded.ir)
        );
        assert!(skipped.notes.is_empty(), "{:?}", skipped.notes);
        for pass in ["range-fold", "mul-to-add", "preload", "tile", "plan-memory"] {
            assert!(
                recorded.notes.iter().any(|n| n.pass == pass),
                "no note of {pass}: {:?}",
                recorded.notes
            );
        }
        assert!(
            recorded
                .notes
                .iter()
                .any(|n| n.pass == "tile" && n.text.contains("cube: matmul %")),
            "{:?}",
            recorded.notes
        );
    }
}
