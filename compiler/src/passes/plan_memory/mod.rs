//! `plan-memory`: places every tile in a buffer of the target and gives every
//! tile of a local buffer (L1, L0A, L0B, L0C, UB) its byte offset in
//! [`Kernel::offsets`].
//!
//! **Pass order.** `tile` must run *before* `plan-memory`
//! (`range-fold → mul-to-add → split → preload → tile → plan-memory`): `tile` cuts the
//! Cube's matmuls into L0-sized chunks and inserts their `copy … to l0a|l0b`
//! operands, and this pass then places the chunks; the live-range allocator
//! below turns the chunk order `tile` emits (next chunk's copies before this
//! chunk's matmul) into ping-pong offsets. Run on an untiled matmul, this
//! pass still inserts whole-operand copies, which fit only for small
//! matmuls; otherwise it fails naming L0A/L0B/L0C and suggests `tile`.
//!
//! # Placement rules
//!
//! Cube function:
//! - `load` from GM → `l1` (MTE2);
//! - `extract` of an `l1` tile → `l1`, as a **view**: it owns no storage, its
//!   offset is its parent's offset plus the byte offset of its first element
//!   in the *root* tile (the non-view tile at the end of the extract chain),
//!   and its rows keep the root's row stride (codegen finds the root by
//!   following `extract` sources). View indices must be constants;
//! - a matmul operand `a` that is not already an `l0a` tile gets
//!   `copy a to l0a` inserted before the matmul (MTE1), `b` likewise to
//!   `l0b`; matmul results → `l0c`; `store`/`atomic_add` read `l0c` (FixPipe)
//!   or `l1` tiles directly;
//! - `copy … to X` results stay in `X`; loop-carried tiles live in the buffer
//!   of their initial value.
//!
//! Vector function: every tile → `ub`, except tiles that do not fit: a tile
//! larger than UB's usable part, and then, while the live set overflows UB,
//! the largest tile live at the overflow point, go to `gm`. A `gm` tile in
//! the vector function is streamed through UB in row chunks by codegen; when
//! there is one, [`PlanMemoryConfig::ub_stream_reserve`] bytes at the top of
//! UB stay free for that ([`buffer_high_water`] gives the first free byte).
//! Each such decision is reported in [`PlanMemoryReport::notes`].
//!
//! # Allocation
//!
//! The body is linearised in execution pre-order: every instruction gets a
//! position, and a loop gets a second position after its body. A tile is
//! live from its definition to its last use, where a use inside a loop that
//! the definition is outside of counts at that loop's end (it recurs every
//! iteration). Then tiles are grouped into *slots* that share one offset:
//!
//! - a loop-carried tile: the body parameter and the loop result always; the
//!   initial value and the yielded value when their live ranges only touch
//!   the parameter's; otherwise a `copy` is inserted (before the loop, or
//!   before the `yield`) and that copy joins the slot. A slot carried by a
//!   loop is live over the whole loop;
//! - a `matmul … acc %c`: its result and `%c` (accumulation is in place),
//!   again through an inserted `copy %c to l0c` when `%c` is still needed;
//! - an element-wise op (`exp`, `add`, `select`, `bitcast`…) and an operand
//!   of the same shape and element size whose last use it is: the op runs
//!   in place (codegen must read element i before writing it, which an
//!   in-order element loop does), when nothing else prevents it.
//!
//! So codegen never moves data at loop entry, at `yield` or for `acc`: after
//! this pass, init, body parameter, yielded value and result of a carried
//! tile have one offset, and a matmul's result has its accumulator's.
//!
//! Slots of each buffer are then assigned by linear scan in order of start
//! position, first fit, at offsets aligned to [`PlanMemoryConfig::align`]
//! (the target's `align.bytes`: the width of an L1 fractal row and of a UB
//! block), reusing the space of slots whose
//! live range ended strictly before. A Cube slot that does not fit is a
//! compile error naming buffer, tile and bytes; a UB slot that does not fit
//! sends a tile to GM (above) and the scan restarts.
//!
//! # Example
//!
//! Before (after `split` and `tile`, nothing placed):
//!
//! ```text
//! kernel tiny
//! dim B
//! input q: bf16[B, 128, 64]
//! input kv: bf16[B, 128, 64]
//! workspace ws_s: f32[B, 128, 128]
//!
//! func cube {
//!   %c0 = iconst 0 : i32
//!   %B = dim B : i32
//!   parallel %b in %c0..%B {
//!     %q = load q[%b, .., ..] : bf16[128, 64]
//!     %k = load kv[%b, .., ..] : bf16[128, 64]
//!     %q_l0a = copy %q to l0a : bf16[128, 64] l0a
//!     %k_l0b = copy %k to l0b : bf16[128, 64] l0b
//!     %s = matmul %q_l0a, %k_l0b nk : f32[128, 128]
//!     store ws_s[%b, .., ..], %s
//!   }
//! }
//!
//! func vector {
//!   %c0 = iconst 0 : i32
//!   %B = dim B : i32
//!   parallel %b in %c0..%B {
//!   }
//! }
//! ```
//!
//! After:
//!
//! ```text
//! kernel tiny
//! dim B
//! input q: bf16[B, 128, 64]
//! input kv: bf16[B, 128, 64]
//! workspace ws_s: f32[B, 128, 128]
//!
//! func cube {
//!   %c0 = iconst 0 : i32
//!   %B = dim B : i32
//!   parallel %b in %c0..%B {
//!     %q = load q[%b, .., ..] : bf16[128, 64] l1@0x0
//!     %k = load kv[%b, .., ..] : bf16[128, 64] l1@0x4000
//!     %q_l0a = copy %q to l0a : bf16[128, 64] l0a@0x0
//!     %k_l0b = copy %k to l0b : bf16[128, 64] l0b@0x0
//!     %s = matmul %q_l0a, %k_l0b nk : f32[128, 128] l0c@0x0
//!     store ws_s[%b, .., ..], %s
//!   }
//! }
//!
//! func vector {
//!   %c0 = iconst 0 : i32
//!   %B = dim B : i32
//!   parallel %b in %c0..%B {
//!   }
//! }
//! ```

use rustc_hash::{FxHashMap, FxHashSet};
use std::fmt;

use super::{Explain, Pass, PassContext, PassError};
use crate::ir::{
    Block, Builder, Index, Inst, InstKind, Kernel, Space, SrcSpan, Type, Unit, Value, ValueDef,
};
use crate::target::Target;

mod coalesce;
mod cube;
mod fixups;
mod linear_scan;
mod live_ranges;
mod offsets;
mod slots;
mod vector;

use cube::plan_cube;
use vector::plan_vector;

/// The pass name used on the command line (`--print-after plan-memory`).
pub const NAME: &str = "plan-memory";

/// Default UB bytes kept free for streaming `gm` tiles of the vector
/// function through UB (only when there is such a tile).
pub const DEFAULT_UB_STREAM_RESERVE: u64 = 32 * 1024;

/// Settings of `plan-memory`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanMemoryConfig {
    /// Alignment of every slot offset, in bytes (a power of two). The pass
    /// takes it from the target (`align.bytes`); the default is the default
    /// target's.
    pub align: u64,
    /// UB bytes left free above the planned tiles when the vector function
    /// has `gm` tiles, for codegen to stream them through UB.
    pub ub_stream_reserve: u64,
    /// Whether the report's notes are written ([`Explain::Record`] by
    /// default; the pass takes [`PassContext::explain`]).
    pub explain: Explain,
}

impl Default for PlanMemoryConfig {
    fn default() -> Self {
        PlanMemoryConfig {
            align: Target::ascend910b().align.bytes,
            ub_stream_reserve: DEFAULT_UB_STREAM_RESERVE,
            explain: Explain::Record,
        }
    }
}

/// What `plan-memory` decided, for `--explain`-style output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanMemoryReport {
    /// One line per noteworthy decision: vector tiles sent to GM and why,
    /// copies inserted, and the peak use of every local buffer.
    pub notes: Vec<String>,
    /// Vector-function tiles placed in GM because they did not fit UB.
    pub vector_gm_tiles: Vec<Value>,
}

/// Why memory planning failed: a user-facing capacity error (naming the
/// buffer, the tile and the bytes) or IR the pass does not expect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanMemoryError {
    /// The full message.
    pub message: String,
    /// What kind of failure it is (decides the [`PassError`] variant).
    pub kind: PlanErrorKind,
}

/// The kind of a [`PlanMemoryError`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanErrorKind {
    /// A Cube tile larger than its whole buffer.
    DoesNotFit {
        /// The buffer.
        buffer: Space,
        /// `%name: type` of the tile.
        tile: String,
        /// Bytes it needs.
        bytes: u64,
        /// Bytes the buffer holds.
        capacity: u64,
        /// Its source span, if known.
        span: Option<SrcSpan>,
    },
    /// Cube tiles live at the same time overflow their buffer.
    User {
        /// The span of the tile that did not fit, if known.
        span: Option<SrcSpan>,
    },
    /// IR this pass does not expect (a bug in an earlier pass).
    Internal,
}

impl fmt::Display for PlanMemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PlanMemoryError {}

impl From<PlanMemoryError> for PassError {
    fn from(e: PlanMemoryError) -> PassError {
        match e.kind {
            PlanErrorKind::DoesNotFit {
                buffer,
                tile,
                bytes,
                capacity,
                span,
            } => PassError::DoesNotFit {
                buffer,
                tile,
                bytes,
                capacity,
                span,
            },
            PlanErrorKind::User { span } => PassError::User {
                message: e.message,
                span,
            },
            PlanErrorKind::Internal => PassError::Internal {
                pass: NAME.into(),
                message: e.message,
            },
        }
    }
}

type Result<T> = std::result::Result<T, PlanMemoryError>;

fn fail<T>(message: impl Into<String>) -> Result<T> {
    Err(internal(message))
}

fn internal(message: impl Into<String>) -> PlanMemoryError {
    PlanMemoryError {
        message: message.into(),
        kind: PlanErrorKind::Internal,
    }
}

/// The `plan-memory` pass: [`plan_memory`] with its notes sent to
/// `--explain`.
#[derive(Clone, Debug, Default)]
pub struct PlanMemory {
    /// Its settings.
    pub config: PlanMemoryConfig,
}

impl Pass for PlanMemory {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(&self, k: &mut Kernel, cx: &PassContext) -> std::result::Result<(), PassError> {
        let config = PlanMemoryConfig {
            align: cx.target.align.bytes,
            explain: cx.explain,
            ..self.config.clone()
        };
        let report = plan_memory(k, cx.target, &config)?;
        for n in report.notes {
            cx.note(n);
        }
        Ok(())
    }

    fn explain(&self) -> &'static str {
        "Places every tile in a buffer (Cube: loads in L1, matmul operands copied to L0A/L0B, \
         results in L0C; Vector: UB, or GM for tiles that do not fit) and assigns offsets with \
         a live-range linear-scan allocator; a Cube tile that does not fit is an error naming \
         buffer, tile and bytes. Runs after `tile`."
    }

    fn requires(&self) -> &'static [&'static str] {
        &["split"]
    }
}

/// The capacity in bytes of a local buffer of `target`; `None` for `gm` and
/// `any`.
pub fn capacity(target: &Target, space: Space) -> Option<u64> {
    let b = &target.buffers;
    match space {
        Space::L1 => Some(b.l1),
        Space::L0A => Some(b.l0a),
        Space::L0B => Some(b.l0b),
        Space::L0C => Some(b.l0c),
        Space::Ub => Some(b.ub),
        Space::Gm | Space::Any => None,
    }
}

/// Upper-case buffer name for messages (`L1`, `UB`…).
pub fn buffer_label(space: Space) -> String {
    space.name().to_ascii_uppercase()
}

/// `%name` as the text form prints `v` now (source names uniquified, `%7`
/// for an unnamed value), as messages quote a value.
pub fn value_label(k: &Kernel, v: Value) -> String {
    match crate::ir::print::Names::new(k).get(v) {
        Some(n) => format!("%{n}"),
        None => match &k.values[v].name {
            Some(n) => format!("%{n}"),
            None => format!("%{v}"),
        },
    }
}

/// `%name: type` with the type shown unplaced (`bf16[128, 576]`).
pub fn tile_label(k: &Kernel, v: Value) -> String {
    format!("{}: {}", value_label(k, v), k.ty(v).with_space(Space::Any))
}

/// The first byte above every planned tile of `space` in the function run
/// by `unit` (0 when there is none): the high-water mark of that buffer.
pub fn buffer_high_water(k: &Kernel, unit: Unit, space: Space) -> u64 {
    let Some(f) = k.func(unit) else { return 0 };
    let mut top = 0;
    let mut visit = |v: Value| {
        if let (Type::Tile(t), Some(off)) = (k.ty(v), k.offsets[v])
            && t.space == space
        {
            top = top.max(off + t.bytes());
        }
    };
    let mut insts = Vec::new();
    k.walk(f.body, &mut |i| insts.push(i));
    for i in insts {
        if let Some(b) = k.insts[i].kind.body() {
            k.blocks[b].params.iter().for_each(|&p| visit(p));
        }
        k.insts[i].results.iter().for_each(|&r| visit(r));
    }
    top
}

/// Places every tile of `kernel` (after `split`: a `cube` and a `vector`
/// function) and assigns offsets; see the module doc. Inserts the copies
/// the placement needs. Fails on a Cube tile that does not fit its buffer
/// and on IR this pass does not expect.
pub fn plan_memory(
    kernel: &mut Kernel,
    target: &Target,
    config: &PlanMemoryConfig,
) -> Result<PlanMemoryReport> {
    if !config.align.is_power_of_two() {
        return fail(format!(
            "plan-memory: alignment {} is not a power of two",
            config.align
        ));
    }
    let mut report = PlanMemoryReport::default();
    for fi in 0..kernel.funcs.len() {
        let unit = kernel.funcs[fi].unit;
        let body = kernel.funcs[fi].body;
        match unit {
            Unit::Any => {
                return Err(PlanMemoryError {
                    message: "plan-memory needs the `cube` and `vector` functions of `split`, \
                              found an `any` function (is `split` disabled?)"
                        .into(),
                    kind: PlanErrorKind::User { span: None },
                });
            }
            Unit::Cube => plan_cube(kernel, body, target, config, &mut report)?,
            Unit::Vector => plan_vector(kernel, body, target, config, &mut report)?,
        }
    }
    Ok(report)
}

// ---------------------------------------------------------------------------
// Helpers shared by the steps.

/// Inserts `copy v to space(v)` before `inst` (in `block`), naming the copy
/// after `v`.
fn copy_before(k: &mut Kernel, block: Block, inst: Inst, v: Value, to: Space) -> Result<Value> {
    let Some(idx) = k.blocks[block].insts.iter().position(|&x| x == inst) else {
        return fail("plan-memory: internal: instruction not in its block");
    };
    let name = k.values[v].name.clone();
    let mut b = Builder::at(k, block, idx);
    let c = b
        .value(InstKind::Copy { src: v, to })
        .map_err(|e| internal(format!("plan-memory: internal: {e}")))?;
    k.values[c].name = name;
    Ok(c)
}

fn space_of(k: &Kernel, v: Value) -> Space {
    k.ty(v).as_tile().map_or(Space::Any, |t| t.space)
}

fn set_space(k: &mut Kernel, v: Value, s: Space) {
    let t = k.values[v].ty.with_space(s);
    k.values[v].ty = t;
}

fn unexpected(k: &Kernel, unit: Unit, i: Inst) -> PlanMemoryError {
    let r = k.insts[i]
        .results
        .first()
        .map(|&r| tile_label(k, r))
        .unwrap_or_default();
    internal(format!(
        "plan-memory: unexpected `{}` in the {} function{}",
        k.insts[i].kind.opcode(),
        unit.name(),
        if r.is_empty() {
            String::new()
        } else {
            format!(" (producing {r})")
        }
    ))
}

#[cfg(test)]
pub(crate) mod tests;
