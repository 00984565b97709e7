//! The pass manager: [`Pass`], [`PassContext`], [`Pipeline`].
//!
//! A pass rewrites a [`Kernel`] in place. The pipeline runs the passes in
//! order and, unless [`PipelineConfig::verify`] is off, runs the verifier
//! ([`crate::ir::verify_with`], with the target's capacities and flag count)
//! on the input and after every pass: a pass may assume verified input and
//! must leave verified output, so a verifier failure is a compiler bug,
//! reported as [`PassError::Internal`] naming the pass.
//!
//! The order ([`PASS_ORDER`]) and why:
//!
//! 1. `range-fold`: replaces a `select` whose integer comparison is decided
//!    for every element (the KV-block mask when N is a multiple of the block
//!    size) by the operand it takes (first: the rest sees the simpler
//!    kernel, and it must precede `plan-memory`, since the kept operand
//!    lives longer);
//! 2. `mul-to-add`: rewrites the online-softmax rescale into AMLA's integer
//!    exponent add (before split, while the whole kernel is one func);
//! 3. `split`: cuts the `any` func into a `cube` and a `vector` func joined
//!    by GM workspaces and flags;
//! 4. `preload`: software-pipelines the Cube's QK of block `j + d` ahead of
//!    PV of block `j` (needs the split funcs and their flags);
//! 5. `tile`: cuts Cube matmuls into L0-sized, double-buffered sub-tiles
//!    (before placement: a whole `[128, 576]` operand cannot fit L0A);
//! 6. `plan-memory`: places every tile in a buffer and gives it an offset
//!    (last, after preload multi-buffers and tile cuts).
//!
//! Each pass file (`passes/<name>.rs`) registers itself by adding one line
//! to [`registry`]; [`default_pipeline`] takes the registered passes in
//! [`PASS_ORDER`]. [`dce::remove_dead`] is a utility for passes, not a pass.
//!
//! User-facing problems (a tile that cannot fit any buffer…) are
//! [`PassError::DoesNotFit`] or [`PassError::User`], with a source span when
//! the IR has one; everything else a pass reports is [`PassError::Internal`].

pub mod dce;
pub mod mul_to_add;
pub mod plan_memory;
pub mod preload;
pub mod range_fold;
pub mod split;
#[cfg(test)]
pub(crate) mod testkit;
pub mod tile;

use std::cell::{Cell, RefCell};
use std::fmt;
use std::time::{Duration, Instant};

use crate::ir::{Kernel, Space, SrcSpan, VerifyConfig, print, verify_with};
use crate::target::Target;

/// The passes of the default pipeline, in order (see the module docs).
pub const PASS_ORDER: &[&str] = &[
    "range-fold",
    "mul-to-add",
    "split",
    "preload",
    "tile",
    "plan-memory",
];

/// The passes codegen needs: `split` (a `cube` and a `vector` func) and
/// `plan-memory` (every tile placed). A pipeline without them can print IR
/// but not run it; see [`codegen_ready`].
pub const CODEGEN_NEEDS: &[&str] = &["split", "plan-memory"];

/// Checks that `k` is what codegen takes: split into a `cube` and a
/// `vector` func, with every tile placed. The error is for the user (who
/// disabled a pass) and names the passes codegen needs.
pub fn codegen_ready(k: &Kernel) -> Result<(), String> {
    let need = || {
        format!(
            "a kernel runs only after the passes {}",
            CODEGEN_NEEDS
                .iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(" and ")
        )
    };
    if k.func(crate::ir::Unit::Cube).is_none() || k.func(crate::ir::Unit::Vector).is_none() {
        return Err(format!(
            "the kernel is not split into cube and vector functions (is `split` disabled?): {}",
            need()
        ));
    }
    let mut unplaced = false;
    for f in &k.funcs {
        k.walk(f.body, &mut |i| {
            unplaced |= k.insts[i]
                .results
                .iter()
                .any(|&r| k.ty(r).as_tile().is_some_and(|t| t.space == Space::Any));
        });
    }
    if unplaced {
        return Err(format!(
            "the kernel has tiles in no buffer (is `plan-memory` disabled?): {}",
            need()
        ));
    }
    Ok(())
}

/// The pass implementations that exist, by name. Each pass file adds one
/// line here, e.g. `"split" => Some(Box::new(split::Split)),`.
pub fn registry(name: &str) -> Option<Box<dyn Pass>> {
    match name {
        "range-fold" => Some(Box::new(range_fold::RangeFold)),
        "mul-to-add" => Some(Box::new(mul_to_add::MulToAdd)),
        "split" => Some(Box::new(split::Split)),
        "preload" => Some(Box::new(preload::Preload)),
        "tile" => Some(Box::new(tile::Tile::default())),
        "plan-memory" => Some(Box::new(plan_memory::PlanMemory::default())),
        _ => None,
    }
}

/// The default pipeline: every registered pass of [`PASS_ORDER`], in order,
/// with the default [`PipelineConfig`].
pub fn default_pipeline() -> Pipeline {
    Pipeline {
        passes: PASS_ORDER.iter().filter_map(|n| registry(n)).collect(),
        config: PipelineConfig::default(),
    }
}

/// A rewrite of the kernel.
pub trait Pass {
    /// The pass name used on the command line (`split`, `plan-memory`).
    fn name(&self) -> &'static str;
    /// Rewrites `k`; `k` is verified on entry and must be on exit.
    fn run(&self, k: &mut Kernel, cx: &PassContext) -> Result<(), PassError>;
    /// One paragraph saying what the pass does, for `--explain` and docs.
    fn explain(&self) -> &'static str {
        ""
    }
    /// Passes that must run before this one (a pipeline that disables one
    /// of them but runs this pass is refused with a usage error).
    fn requires(&self) -> &'static [&'static str] {
        &[]
    }
}

/// Options that change what passes do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassOptions {
    /// Preload depth `d`: the Cube issues QK of block `j + d` before PV of
    /// block `j` (0 = the plain schedule).
    pub preload_depth: u32,
    /// How `mul-to-add` rounds the running max (`-D RESCALE=ceil|nearest|cann|anchored`).
    pub rescale: mul_to_add::RescaleVariant,
    /// `mul-to-add` sums the normalising `l` from the bf16-rounded `P` the
    /// Cube multiplies (`-D COMPENSATE=1`; the default is `0`).
    pub compensate: bool,
}

impl Default for PassOptions {
    fn default() -> Self {
        PassOptions {
            preload_depth: 1,
            rescale: mul_to_add::RescaleVariant::default(),
            // Measured best (docs/NUMERICS.md): anchored, without
            // compensation (on a single block it is then FlashAttention).
            compensate: false,
        }
    }
}

/// A note a pass leaves for `--explain` (why it chose a tiling, a depth…).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExplainNote {
    /// The pass that wrote it.
    pub pass: &'static str,
    /// The note.
    pub text: String,
}

/// Whether passes write their `--explain` notes. A note that names values
/// prints them as the text form does, which names every value of the
/// kernel: rendered for nobody, `tile`'s and `plan-memory`'s notes cost
/// as much as those passes themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Explain {
    /// Render and keep every note (`amlac compile --explain`; what a pass's
    /// own function, such as [`tile::tile`], does with its default config).
    Record,
    /// Render no note ([`PipelineConfig`]'s default: compiling to run).
    Skip,
}

impl Explain {
    /// Pushes the note `note` renders onto `notes`, when notes are recorded.
    pub fn push(self, notes: &mut Vec<String>, note: impl FnOnce() -> String) {
        if self == Explain::Record {
            notes.push(note());
        }
    }
}

/// What every pass can see: the target, the options, and a place for
/// `--explain` notes.
pub struct PassContext<'t> {
    /// The target's capacities and rates.
    pub target: &'t Target,
    /// Pass options.
    pub options: PassOptions,
    /// Whether [`PassContext::note`] keeps notes ([`Explain::Record`] from
    /// [`PassContext::new`]); passes hand it to their own functions so they
    /// do not render notes nobody keeps.
    pub explain: Explain,
    notes: RefCell<Vec<ExplainNote>>,
    current: Cell<&'static str>,
}

impl<'t> PassContext<'t> {
    /// A context for `target` with `options`.
    pub fn new(target: &'t Target, options: PassOptions) -> Self {
        PassContext {
            target,
            options,
            explain: Explain::Record,
            notes: RefCell::new(Vec::new()),
            current: Cell::new(""),
        }
    }

    /// Records an `--explain` note from the running pass (dropped under
    /// [`Explain::Skip`]).
    pub fn note(&self, text: impl Into<String>) {
        if self.explain == Explain::Skip {
            return;
        }
        self.notes.borrow_mut().push(ExplainNote {
            pass: self.current.get(),
            text: text.into(),
        });
    }

    /// The notes recorded so far, in order.
    pub fn notes(&self) -> Vec<ExplainNote> {
        self.notes.borrow().clone()
    }
}

/// Why a pass (or the pipeline) failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PassError {
    /// User-facing: a tile cannot fit the buffer it must live in.
    DoesNotFit {
        /// The buffer.
        buffer: Space,
        /// The tile, as the text form prints its value and type.
        tile: String,
        /// Bytes the tile needs.
        bytes: u64,
        /// Bytes the buffer has.
        capacity: u64,
        /// Where the tile comes from in the source, if known.
        span: Option<SrcSpan>,
    },
    /// User-facing: another problem with the program or the options.
    User {
        /// What is wrong, for the user.
        message: String,
        /// Where, if known.
        span: Option<SrcSpan>,
    },
    /// The pipeline configuration names a pass that does not exist.
    UnknownPass {
        /// The name given.
        name: String,
        /// The valid names.
        valid: Vec<&'static str>,
    },
    /// A compiler bug: a pass failed or left IR the verifier rejects.
    Internal {
        /// The pass (or `input` for IR that failed before the first pass).
        pass: String,
        /// What went wrong (the verifier's message, when it is one).
        message: String,
    },
}

impl PassError {
    /// True for errors the user caused (and can fix), false for bugs.
    pub fn is_user(&self) -> bool {
        !matches!(self, PassError::Internal { .. })
    }

    /// The source span, when the error has one.
    pub fn span(&self) -> Option<SrcSpan> {
        match self {
            PassError::DoesNotFit { span, .. } | PassError::User { span, .. } => *span,
            _ => None,
        }
    }
}

impl fmt::Display for PassError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PassError::DoesNotFit {
                buffer,
                tile,
                bytes,
                capacity,
                ..
            } if *bytes == u64::MAX => write!(
                f,
                "tile {tile} needs more than 2^64 bytes but {buffer} holds {capacity}"
            ),
            PassError::DoesNotFit {
                buffer,
                tile,
                bytes,
                capacity,
                ..
            } => write!(
                f,
                "tile {tile} needs {bytes} bytes but {buffer} holds {capacity}"
            ),
            PassError::User { message, .. } => f.write_str(message),
            PassError::UnknownPass { name, valid } => write!(
                f,
                "unknown pass `{name}` (valid passes: {})",
                valid.join(", ")
            ),
            PassError::Internal { pass, message } => {
                write!(f, "internal compiler error in pass `{pass}`: {message}")
            }
        }
    }
}

impl std::error::Error for PassError {}

/// After which passes the pipeline captures the IR text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PrintAfter {
    /// None.
    #[default]
    None,
    /// After every pass that runs.
    All,
    /// After the pass with this name (nothing if it is disabled).
    Pass(String),
}

/// How the pipeline runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineConfig {
    /// IR dumps to capture into the report.
    pub print_after: PrintAfter,
    /// Names of passes to skip.
    pub disabled: Vec<String>,
    /// Record each pass's duration in the report.
    pub time_passes: bool,
    /// Verify the input and the IR after every pass (default true).
    pub verify: bool,
    /// Whether the passes write `--explain` notes (default
    /// [`Explain::Skip`]).
    pub explain: Explain,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            print_after: PrintAfter::None,
            disabled: Vec::new(),
            time_passes: false,
            verify: true,
            explain: Explain::Skip,
        }
    }
}

/// The IR text after one pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassDump {
    /// The pass.
    pub pass: &'static str,
    /// [`crate::ir::print()`] of the kernel after it.
    pub ir: String,
}

/// What a pipeline run produced besides the rewritten kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PipelineReport {
    /// IR dumps requested by [`PipelineConfig::print_after`], in order.
    pub dumps: Vec<PassDump>,
    /// Per-pass durations (only with [`PipelineConfig::time_passes`]).
    pub timings: Vec<(&'static str, Duration)>,
}

impl PipelineReport {
    /// The dumps as text, each under a `// after <pass>` line.
    pub fn dumps_text(&self) -> String {
        self.dumps
            .iter()
            .map(|d| format!("// after {}\n{}", d.pass, d.ir))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A `--time-passes` table: one line per pass, then the total.
    pub fn timings_text(&self) -> String {
        let mut out = String::new();
        let mut total = Duration::ZERO;
        for (pass, d) in &self.timings {
            total += *d;
            out.push_str(&format!("{:>10.3} ms  {pass}\n", d.as_secs_f64() * 1e3));
        }
        out.push_str(&format!("{:>10.3} ms  total\n", total.as_secs_f64() * 1e3));
        out
    }
}

/// Passes in order, and how to run them.
pub struct Pipeline {
    /// The passes, in run order.
    pub passes: Vec<Box<dyn Pass>>,
    /// Dumps, disabled passes, timing, verification.
    pub config: PipelineConfig,
}

impl Pipeline {
    /// Every name the configuration may use: [`PASS_ORDER`] and the names of
    /// this pipeline's passes.
    pub fn valid_names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = PASS_ORDER.to_vec();
        for p in &self.passes {
            if !names.contains(&p.name()) {
                names.push(p.name());
            }
        }
        names
    }

    /// Checks that the configuration only names known passes.
    pub fn validate(&self) -> Result<(), PassError> {
        let valid = self.valid_names();
        let named = self
            .config
            .disabled
            .iter()
            .chain(match &self.config.print_after {
                PrintAfter::Pass(p) => Some(p),
                _ => None,
            });
        for n in named {
            if !valid.contains(&n.as_str()) {
                return Err(PassError::UnknownPass {
                    name: n.clone(),
                    valid,
                });
            }
        }
        let disabled = |n: &str| self.config.disabled.iter().any(|d| d == n);
        for p in self.passes.iter().filter(|p| !disabled(p.name())) {
            if let Some(r) = p.requires().iter().find(|r| disabled(r)) {
                return Err(PassError::User {
                    message: format!(
                        "pass `{}` needs `{r}`, which is disabled: disable `{}` too, or keep `{r}` \
                         (to run a kernel, codegen needs {})",
                        p.name(),
                        p.name(),
                        CODEGEN_NEEDS.join(" and ")
                    ),
                    span: None,
                });
            }
        }
        Ok(())
    }

    /// Runs the enabled passes on `k` in order, verifying after each.
    pub fn run(&self, k: &mut Kernel, cx: &PassContext) -> Result<PipelineReport, PassError> {
        self.validate()?;
        let vcfg = VerifyConfig::for_target(cx.target);
        let check = |k: &Kernel, pass: &str| -> Result<(), PassError> {
            if !self.config.verify {
                return Ok(());
            }
            verify_with(k, &vcfg).map_err(|e| PassError::Internal {
                pass: pass.to_string(),
                message: format!("the verifier rejects the IR after it:\n{e}"),
            })
        };
        check(k, "input")?;
        let mut report = PipelineReport::default();
        for pass in &self.passes {
            let name = pass.name();
            if self.config.disabled.iter().any(|d| d == name) {
                continue;
            }
            // Ops earlier passes made without a span get one, so that this
            // pass's diagnostics point at the source.
            crate::ir::spans::fill_missing_spans(k);
            cx.current.set(name);
            let start = Instant::now();
            let result = pass.run(k, cx);
            let elapsed = start.elapsed();
            cx.current.set("");
            result?;
            if self.config.time_passes {
                report.timings.push((name, elapsed));
            }
            check(k, name)?;
            let dump = match &self.config.print_after {
                PrintAfter::None => false,
                PrintAfter::All => true,
                PrintAfter::Pass(p) => p == name,
            };
            if dump {
                report.dumps.push(PassDump {
                    pass: name,
                    ir: print(k),
                });
            }
        }
        crate::ir::spans::fill_missing_spans(k);
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{InstKind, parse};

    const TEXT: &str =
        "kernel k\n\nfunc any {\n  %a = iconst 1 : i32\n  %b = add %a, %a : i32\n}\n";

    /// Renames the kernel.
    struct Rename;
    impl Pass for Rename {
        fn name(&self) -> &'static str {
            "rename"
        }
        fn run(&self, k: &mut Kernel, cx: &PassContext) -> Result<(), PassError> {
            k.name = "renamed".into();
            cx.note("renamed the kernel");
            Ok(())
        }
    }

    /// Breaks the IR: uses a value before its definition.
    struct Break;
    impl Pass for Break {
        fn name(&self) -> &'static str {
            "break"
        }
        fn run(&self, k: &mut Kernel, _: &PassContext) -> Result<(), PassError> {
            let body = k.funcs[0].body;
            k.blocks[body].insts.reverse();
            Ok(())
        }
    }

    fn pipeline(passes: Vec<Box<dyn Pass>>, config: PipelineConfig) -> Pipeline {
        Pipeline { passes, config }
    }

    #[test]
    fn default_pipeline_follows_pass_order() {
        let p = default_pipeline();
        let names: Vec<_> = p.passes.iter().map(|p| p.name()).collect();
        let order: Vec<_> = PASS_ORDER
            .iter()
            .copied()
            .filter(|n| names.contains(n))
            .collect();
        assert_eq!(names, order);
    }

    #[test]
    fn dumps_notes_and_timings() {
        let target = Target::ascend910b();
        let cx = PassContext::new(&target, PassOptions::default());
        let mut k = parse(TEXT).unwrap();
        let p = pipeline(
            vec![Box::new(Rename)],
            PipelineConfig {
                print_after: PrintAfter::All,
                time_passes: true,
                ..Default::default()
            },
        );
        let r = p.run(&mut k, &cx).unwrap();
        assert_eq!(r.dumps.len(), 1);
        assert_eq!(r.dumps[0].pass, "rename");
        assert!(
            r.dumps_text()
                .starts_with("// after rename\nkernel renamed\n")
        );
        assert_eq!(r.timings.len(), 1);
        assert!(r.timings_text().contains("total"));
        assert_eq!(
            cx.notes(),
            vec![ExplainNote {
                pass: "rename",
                text: "renamed the kernel".into()
            }]
        );
    }

    #[test]
    fn verifier_failure_is_an_internal_error_naming_the_pass() {
        let target = Target::ascend910b();
        let cx = PassContext::new(&target, PassOptions::default());
        let mut k = parse(TEXT).unwrap();
        let p = pipeline(vec![Box::new(Break)], PipelineConfig::default());
        let e = p.run(&mut k, &cx).unwrap_err();
        assert!(!e.is_user());
        assert_eq!(
            e.to_string(),
            "internal compiler error in pass `break`: the verifier rejects the IR after it:\nfunc any: `%b = add %a, %a : i32`: %a is used before it is defined"
        );
        // Disabled, it does not run.
        let mut k = parse(TEXT).unwrap();
        let p = pipeline(
            vec![Box::new(Break)],
            PipelineConfig {
                disabled: vec!["break".into()],
                ..Default::default()
            },
        );
        p.run(&mut k, &cx).unwrap();
        assert!(matches!(
            k.kind(k.blocks[k.funcs[0].body].insts[0]),
            InstKind::IConst(1)
        ));
    }

    #[test]
    fn unknown_pass_names_list_the_valid_ones() {
        let target = Target::ascend910b();
        let cx = PassContext::new(&target, PassOptions::default());
        let mut k = parse(TEXT).unwrap();
        let p = pipeline(
            vec![Box::new(Rename)],
            PipelineConfig {
                print_after: PrintAfter::Pass("splt".into()),
                ..Default::default()
            },
        );
        assert_eq!(
            p.run(&mut k, &cx).unwrap_err().to_string(),
            "unknown pass `splt` (valid passes: range-fold, mul-to-add, split, preload, tile, plan-memory, rename)"
        );
    }

    #[test]
    fn user_errors_carry_buffer_tile_bytes() {
        let e = PassError::DoesNotFit {
            buffer: Space::L0A,
            tile: "%k: bf16[128, 576]".into(),
            bytes: 147456,
            capacity: 65536,
            span: Some(SrcSpan { start: 3, end: 9 }),
        };
        assert!(e.is_user());
        assert_eq!(e.span(), Some(SrcSpan { start: 3, end: 9 }));
        assert_eq!(
            e.to_string(),
            "tile %k: bf16[128, 576] needs 147456 bytes but l0a holds 65536"
        );
    }
}
