//! `plan-memory`: places every tile in a buffer of the target and gives every
//! tile of a local buffer (L1, L0A, L0B, L0C, UB) its byte offset in
//! [`Kernel::offsets`].
//!
//! **Pass order.** `tile` must run *before* `plan-memory`
//! (`mul-to-add → split → preload → tile → plan-memory`): `tile` cuts the
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
//! (32 bytes: the target file has no alignment entry; 32 B is the width of
//! an L1 fractal row and of a UB block), reusing the space of slots whose
//! live range ended strictly before. A Cube slot that does not fit is a
//! compile error naming buffer, tile and bytes; a UB slot that does not fit
//! sends a tile to GM (above) and the scan restarts.
//!
//! # Example
//!
//! Before (after `split` and `tile`, nothing placed):
//!
//! ```text
//! func cube {
//!   parallel %b in %c0..%B {
//!     %q = load q[%b, .., ..] : bf16[128, 64]
//!     %k = load kv[%b, .., ..] : bf16[128, 64]
//!     %q_l0a = copy %q to l0a : bf16[128, 64] l0a
//!     %k_l0b = copy %k to l0b : bf16[128, 64] l0b
//!     %s = matmul %q_l0a, %k_l0b nk : f32[128, 128]
//!     store ws_s[%b, .., ..], %s
//!   }
//! }
//! ```
//!
//! After:
//!
//! ```text
//! func cube {
//!   parallel %b in %c0..%B {
//!     %q = load q[%b, .., ..] : bf16[128, 64] l1@0x0
//!     %k = load kv[%b, .., ..] : bf16[128, 64] l1@0x4000
//!     %q_l0a = copy %q to l0a : bf16[128, 64] l0a@0x0
//!     %k_l0b = copy %k to l0b : bf16[128, 64] l0b@0x0
//!     %s = matmul %q_l0a, %k_l0b nk : f32[128, 128] l0c@0x0
//!     store ws_s[%b, .., ..], %s
//!   }
//! }
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;

use super::{Pass, PassContext, PassError};
use crate::ir::{
    Block, Builder, Index, Inst, InstKind, Kernel, Space, SrcSpan, Type, Unit, Value, ValueDef,
};
use crate::target::Target;

/// The pass name used on the command line (`--print-after plan-memory`).
pub const NAME: &str = "plan-memory";

/// Default alignment of a slot's offset, in bytes (see the module doc).
pub const DEFAULT_ALIGN: u64 = 32;

/// Default UB bytes kept free for streaming `gm` tiles of the vector
/// function through UB (only when there is such a tile).
pub const DEFAULT_UB_STREAM_RESERVE: u64 = 32 * 1024;

/// Settings of `plan-memory`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanMemoryConfig {
    /// Alignment of every slot offset, in bytes (a power of two).
    pub align: u64,
    /// UB bytes left free above the planned tiles when the vector function
    /// has `gm` tiles, for codegen to stream them through UB.
    pub ub_stream_reserve: u64,
}

impl Default for PlanMemoryConfig {
    fn default() -> Self {
        PlanMemoryConfig {
            align: DEFAULT_ALIGN,
            ub_stream_reserve: DEFAULT_UB_STREAM_RESERVE,
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
        let report = plan_memory(k, cx.target, &self.config)?;
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
// Structure: blocks, positions, live ranges.

/// Where each instruction of a function sits.
#[derive(Default)]
struct Lin {
    /// Execution pre-order position of each instruction.
    pos: HashMap<Inst, u32>,
    /// Position after the body of each loop.
    end: HashMap<Inst, u32>,
    /// The block holding each instruction.
    block_of: HashMap<Inst, Block>,
    /// The loop owning each body block.
    owner: HashMap<Block, Inst>,
    /// The instruction at each position (loop ends have none).
    at: HashMap<u32, Inst>,
    /// All instructions in pre-order.
    order: Vec<Inst>,
    /// Tile values defined in the function (loop parameters, results).
    tiles: Vec<Value>,
}

impl Lin {
    fn new(k: &Kernel, body: Block) -> Lin {
        let mut lin = Lin::default();
        let mut n = 0;
        lin.number(k, body, &mut n);
        lin
    }

    fn number(&mut self, k: &Kernel, block: Block, n: &mut u32) {
        for &i in &k.blocks[block].insts {
            self.pos.insert(i, *n);
            self.at.insert(*n, i);
            self.block_of.insert(i, block);
            self.order.push(i);
            *n += 1;
            if let Some(b) = k.insts[i].kind.body() {
                self.owner.insert(b, i);
                for &p in &k.blocks[b].params {
                    if k.ty(p).as_tile().is_some() {
                        self.tiles.push(p);
                    }
                }
                self.number(k, b, n);
                self.end.insert(i, *n);
                *n += 1;
            }
            for &r in &k.insts[i].results {
                if k.ty(r).as_tile().is_some() {
                    self.tiles.push(r);
                }
            }
        }
    }

    fn def_pos(&self, k: &Kernel, v: Value) -> u32 {
        match k.values[v].def {
            ValueDef::Result(i, _) => match k.insts[i].kind {
                InstKind::For { .. } => self.end.get(&i).copied().unwrap_or(0),
                _ => self.pos.get(&i).copied().unwrap_or(0),
            },
            ValueDef::Param(b, _) => self
                .owner
                .get(&b)
                .and_then(|l| self.pos.get(l))
                .copied()
                .unwrap_or(0),
        }
    }

    fn def_block(&self, k: &Kernel, v: Value) -> Option<Block> {
        match k.values[v].def {
            ValueDef::Result(i, _) => self.block_of.get(&i).copied(),
            ValueDef::Param(b, _) => Some(b),
        }
    }

    /// The position a use at `u` counts at for a value defined in block
    /// `def`: `u` itself, or the end of the outermost loop containing `u`
    /// but not the definition.
    fn lift(&self, u: Inst, def: Block) -> Option<u32> {
        let mut cur = u;
        let mut p = *self.pos.get(&u)?;
        while *self.block_of.get(&cur)? != def {
            let l = *self.owner.get(self.block_of.get(&cur)?)?;
            p = *self.end.get(&l)?;
            cur = l;
        }
        Some(p)
    }
}

/// A view: an `l1` extract that owns no storage.
#[derive(Clone, Debug)]
struct View {
    /// The storage-owning tile at the end of the extract chain.
    root: Value,
    /// For each dim of the view, the root dim it runs along.
    dims: Vec<usize>,
    /// Index of the view's first element in each root dim.
    start: Vec<u64>,
}

impl View {
    fn elem_offset(&self, root_shape: &[u64]) -> u64 {
        let mut off = 0;
        let mut stride = 1;
        for d in (0..root_shape.len()).rev() {
            off += self.start[d] * stride;
            stride *= root_shape[d];
        }
        off
    }
}

/// Live range `[start, end]` (inclusive) of every tile value, views
/// excluded (their uses count for their root).
fn live_ranges(
    k: &Kernel,
    lin: &Lin,
    views: &HashMap<Value, View>,
) -> Result<HashMap<Value, (u32, u32)>> {
    let mut ranges: HashMap<Value, (u32, u32)> = HashMap::new();
    for &v in &lin.tiles {
        if !views.contains_key(&v) {
            let d = lin.def_pos(k, v);
            ranges.insert(v, (d, d));
        }
    }
    for &u in &lin.order {
        let mut used = Vec::new();
        k.insts[u].kind.for_each_operand(|v| used.push(v));
        for v in used {
            let v = views.get(&v).map_or(v, |w| w.root);
            let Some(r) = ranges.get_mut(&v) else {
                continue;
            };
            let Some(p) = lin.def_block(k, v).and_then(|b| lin.lift(u, b)) else {
                return fail(format!(
                    "plan-memory: {} is used by `{}` outside the scope of its definition",
                    value_label(k, v),
                    k.insts[u].kind.opcode()
                ));
            };
            r.1 = r.1.max(p);
        }
    }
    Ok(ranges)
}

// ---------------------------------------------------------------------------
// Slots: values that share one offset.

#[derive(Default)]
struct Slots {
    parent: HashMap<Value, Value>,
}

impl Slots {
    fn find(&mut self, v: Value) -> Value {
        let mut r = v;
        while let Some(&p) = self.parent.get(&r) {
            if p == r {
                break;
            }
            r = p;
        }
        // Path compression.
        let mut c = v;
        while c != r {
            let next = self.parent.get(&c).copied().unwrap_or(r);
            self.parent.insert(c, r);
            c = next;
        }
        r
    }

    fn union(&mut self, a: Value, b: Value) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            // Keep the earlier-created value as representative.
            let (keep, other) = if ra < rb { (ra, rb) } else { (rb, ra) };
            self.parent.insert(other, keep);
        }
    }

    fn members(&mut self, vals: &[Value]) -> HashMap<Value, Vec<Value>> {
        let mut m: HashMap<Value, Vec<Value>> = HashMap::new();
        for &v in vals {
            let r = self.find(v);
            m.entry(r).or_default().push(v);
        }
        m
    }
}

/// A copy this pass must insert so that two values can share a slot.
enum Fixup {
    /// Copy init `idx` of a `for` before the loop.
    Init(Inst, usize),
    /// Copy yielded value `idx` of a `yield` before it.
    Yield(Inst, usize),
    /// Copy the accumulator of a matmul before it.
    Acc(Inst),
}

/// True when the instruction at `pos` may write its result over an operand
/// whose last use it is: loop entry, in-place accumulation, and element-wise
/// ops whose operand and result elements have one size.
fn handoff_ok(k: &Kernel, lin: &Lin, pos: u32) -> bool {
    let Some(&i) = lin.at.get(&pos) else {
        return false;
    };
    let kind = &k.insts[i].kind;
    match kind {
        InstKind::For { .. } | InstKind::Matmul { acc: Some(_), .. } => true,
        InstKind::Unary(..)
        | InstKind::Binary(..)
        | InstKind::Select(..)
        | InstKind::Bitcast(..) => {
            let Some(&r) = k.insts[i].results.first() else {
                return false;
            };
            let rt = k.ty(r);
            let mut ok = true;
            kind.for_each_operand(|v| {
                let t = k.ty(v);
                if t.as_tile().is_some()
                    && (t.shape() != rt.shape() || t.dtype().bytes() != rt.dtype().bytes())
                {
                    ok = false;
                }
            });
            ok
        }
        _ => false,
    }
}

struct SlotPlan {
    slots: Slots,
    /// Loops each slot is carried through: `(start, end)` positions.
    carried: Vec<(Value, u32, u32)>,
}

/// Tries to put `x` into the slot of `y`; false when their live ranges
/// conflict (or `x` is a view, or they are in different buffers).
fn try_join(
    k: &Kernel,
    lin: &Lin,
    ranges: &HashMap<Value, (u32, u32)>,
    views: &HashMap<Value, View>,
    slots: &mut Slots,
    x: Value,
    y: Value,
) -> bool {
    if views.contains_key(&x) || views.contains_key(&y) {
        return false;
    }
    let space = |v: Value| k.ty(v).as_tile().map(|t| t.space);
    if space(x) != space(y) || k.ty(x).with_space(Space::Any) != k.ty(y).with_space(Space::Any) {
        return false;
    }
    let (gx, gy) = (slots.find(x), slots.find(y));
    if gx == gy {
        return true;
    }
    let all: Vec<Value> = ranges.keys().copied().collect();
    let members = slots.members(&all);
    let empty = Vec::new();
    let mx = members.get(&gx).unwrap_or(&empty);
    let my = members.get(&gy).unwrap_or(&empty);
    for &a in mx {
        for &b in my {
            let (Some(&(a0, a1)), Some(&(b0, b1))) = (ranges.get(&a), ranges.get(&b)) else {
                return false;
            };
            let disjoint = a1 < b0 || b1 < a0;
            let touching =
                (a1 == b0 && handoff_ok(k, lin, a1)) || (b1 == a0 && handoff_ok(k, lin, b1));
            if !disjoint && !touching {
                return false;
            }
        }
    }
    slots.union(x, y);
    true
}

/// Groups values into slots, or lists the copies needed first.
fn coalesce(
    k: &Kernel,
    lin: &Lin,
    ranges: &HashMap<Value, (u32, u32)>,
    views: &HashMap<Value, View>,
) -> std::result::Result<SlotPlan, Vec<Fixup>> {
    let mut slots = Slots::default();
    let mut carried = Vec::new();
    let mut fixups = Vec::new();
    for &i in &lin.order {
        match &k.insts[i].kind {
            InstKind::For { init, body, .. } => {
                let params = &k.blocks[*body].params;
                let results = &k.insts[i].results;
                let yield_inst = k.blocks[*body].insts.last().copied();
                let yielded: Vec<Value> = match yield_inst.map(|y| &k.insts[y].kind) {
                    Some(InstKind::Yield(vs)) => vs.clone(),
                    _ => Vec::new(),
                };
                let (s, e) = (lin.pos[&i], lin.end[&i]);
                for (j, &iv) in init.iter().enumerate() {
                    let (Some(&p), Some(&r)) = (params.get(j + 1), results.get(j)) else {
                        continue;
                    };
                    if k.ty(p).as_tile().is_none() {
                        continue;
                    }
                    slots.union(p, r);
                    carried.push((p, s, e));
                    if !try_join(k, lin, ranges, views, &mut slots, iv, p) {
                        fixups.push(Fixup::Init(i, j));
                    }
                    if let (Some(&y), Some(yi)) = (yielded.get(j), yield_inst)
                        && !try_join(k, lin, ranges, views, &mut slots, y, p)
                    {
                        fixups.push(Fixup::Yield(yi, j));
                    }
                }
            }
            InstKind::Matmul { acc: Some(c), .. } => {
                let r = k.insts[i].results[0];
                if !try_join(k, lin, ranges, views, &mut slots, *c, r) {
                    fixups.push(Fixup::Acc(i));
                }
            }
            InstKind::Unary(..)
            | InstKind::Binary(..)
            | InstKind::Select(..)
            | InstKind::Bitcast(..) => {
                // In place: the result may take the slot of an operand
                // whose last use this is (same shape and element size, so
                // element i is read before it is overwritten).
                let Some(&r) = k.insts[i].results.first() else {
                    continue;
                };
                let pos = lin.pos[&i];
                let mut operands = Vec::new();
                k.insts[i].kind.for_each_operand(|v| operands.push(v));
                for x in operands {
                    let dies_here = ranges.get(&x).is_some_and(|&(_, end)| end == pos);
                    if dies_here && try_join(k, lin, ranges, views, &mut slots, r, x) {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    if fixups.is_empty() {
        Ok(SlotPlan { slots, carried })
    } else {
        Err(fixups)
    }
}

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

/// Applies fixups: each inserted copy takes the space of the slot it joins.
fn apply_fixups(
    k: &mut Kernel,
    lin: &Lin,
    fixups: Vec<Fixup>,
    notes: &mut Vec<String>,
) -> Result<()> {
    for f in fixups {
        match f {
            Fixup::Init(i, j) => {
                let InstKind::For { init, body, .. } = &k.insts[i].kind else {
                    continue;
                };
                let (v, p) = (init[j], k.blocks[*body].params[j + 1]);
                let to = space_of(k, p);
                let c = copy_before(k, lin.block_of[&i], i, v, to)?;
                if let InstKind::For { init, .. } = &mut k.insts[i].kind {
                    init[j] = c;
                }
                notes.push(format!(
                    "copy of {} inserted before its loop: the loop-carried slot needs its own storage",
                    value_label(k, v)
                ));
            }
            Fixup::Yield(y, j) => {
                let InstKind::Yield(vs) = &k.insts[y].kind else {
                    continue;
                };
                let v = vs[j];
                let block = lin.block_of[&y];
                let Some(&l) = lin.owner.get(&block) else {
                    continue;
                };
                let InstKind::For { body, .. } = &k.insts[l].kind else {
                    continue;
                };
                let to = space_of(k, k.blocks[*body].params[j + 1]);
                let c = copy_before(k, block, y, v, to)?;
                if let InstKind::Yield(vs) = &mut k.insts[y].kind {
                    vs[j] = c;
                }
                notes.push(format!(
                    "copy of {} inserted before `yield`: it is live together with the carried value it replaces",
                    value_label(k, v)
                ));
            }
            Fixup::Acc(m) => {
                let InstKind::Matmul { acc: Some(c), .. } = &k.insts[m].kind else {
                    continue;
                };
                let c = *c;
                let cp = copy_before(k, lin.block_of[&m], m, c, space_of(k, c))?;
                if let InstKind::Matmul { acc, .. } = &mut k.insts[m].kind {
                    *acc = Some(cp);
                }
                notes.push(format!(
                    "copy of accumulator {} inserted: it is still needed after the matmul that accumulates into it",
                    value_label(k, c)
                ));
            }
        }
    }
    Ok(())
}

/// A slot to allocate.
#[derive(Clone, Debug)]
struct SlotUnit {
    rep: Value,
    members: Vec<Value>,
    space: Space,
    start: u32,
    end: u32,
    bytes: u64,
}

/// Links up the structure, inserting copies until every carried tile and
/// accumulator can share a slot; returns the slots to allocate.
fn build_slots(
    k: &mut Kernel,
    body: Block,
    views: &HashMap<Value, View>,
    notes: &mut Vec<String>,
) -> Result<(Lin, Vec<SlotUnit>)> {
    for _round in 0..4 {
        let lin = Lin::new(k, body);
        let ranges = live_ranges(k, &lin, views)?;
        match coalesce(k, &lin, &ranges, views) {
            Ok(mut plan) => {
                let vals: Vec<Value> = lin
                    .tiles
                    .iter()
                    .copied()
                    .filter(|v| !views.contains_key(v))
                    .collect();
                let groups = plan.slots.members(&vals);
                let mut carried_by: HashMap<Value, Vec<(u32, u32)>> = HashMap::new();
                for (p, s, e) in &plan.carried {
                    let r = plan.slots.find(*p);
                    carried_by.entry(r).or_default().push((*s, *e));
                }
                let mut units = Vec::new();
                for (rep, members) in groups {
                    let mut start = u32::MAX;
                    let mut end = 0;
                    for m in &members {
                        let (a, b) = ranges[m];
                        start = start.min(a);
                        end = end.max(b);
                    }
                    for (s, e) in carried_by.get(&rep).into_iter().flatten() {
                        start = start.min(*s);
                        end = end.max(*e);
                    }
                    let space = space_of(k, rep);
                    if let Some(bad) = members.iter().find(|&&m| space_of(k, m) != space) {
                        return fail(format!(
                            "plan-memory: internal: {} and {} share a slot but live in {} and {}",
                            value_label(k, rep),
                            value_label(k, *bad),
                            space,
                            space_of(k, *bad)
                        ));
                    }
                    let bytes = k.ty(rep).as_tile().map_or(0, |t| t.bytes());
                    units.push(SlotUnit {
                        rep,
                        members,
                        space,
                        start,
                        end,
                        bytes,
                    });
                }
                units.sort_by_key(|u| (u.start, std::cmp::Reverse(u.bytes), u.rep));
                return Ok((lin, units));
            }
            Err(fixups) => apply_fixups(k, &lin, fixups, notes)?,
        }
    }
    fail(
        "plan-memory: cannot give loop-carried tiles one slot each \
         (tiles permuted at `yield`?): unsupported IR",
    )
}

fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

/// Why a slot could not be placed.
struct Overflow {
    /// Index into the unit list.
    unit: usize,
    /// Units live at the same time (indices).
    live: Vec<usize>,
}

/// Linear scan, first fit. Returns the offset of every unit of `space`
/// (indexed like `units`), or the first unit that does not fit.
fn linear_scan(
    units: &[SlotUnit],
    space: Space,
    cap: u64,
    align: u64,
) -> std::result::Result<HashMap<usize, u64>, Overflow> {
    let mut offs = HashMap::new();
    let mut active: Vec<(usize, u64, u64)> = Vec::new(); // unit, offset, size
    for (ui, u) in units.iter().enumerate() {
        if u.space != space {
            continue;
        }
        active.retain(|&(a, _, _)| units[a].end >= u.start);
        let size = align_up(u.bytes.max(1), align);
        let mut cands: Vec<u64> = vec![0];
        cands.extend(active.iter().map(|&(_, o, s)| align_up(o + s, align)));
        cands.sort_unstable();
        let fit = cands.into_iter().find(|&c| {
            c + size <= cap && active.iter().all(|&(_, o, s)| c + size <= o || o + s <= c)
        });
        match fit {
            Some(c) => {
                offs.insert(ui, c);
                active.push((ui, c, size));
            }
            None => {
                return Err(Overflow {
                    unit: ui,
                    live: active.iter().map(|&(a, _, _)| a).collect(),
                });
            }
        }
    }
    Ok(offs)
}

/// Writes offsets: slot members get the slot's, views their root's plus
/// their element offset, everything else `None`.
fn write_offsets(
    k: &mut Kernel,
    lin: &Lin,
    units: &[SlotUnit],
    offs: &HashMap<usize, u64>,
    views: &HashMap<Value, View>,
) {
    for &v in &lin.tiles {
        k.offsets.set(v, None);
    }
    for (ui, u) in units.iter().enumerate() {
        if let Some(&o) = offs.get(&ui) {
            for &m in &u.members {
                k.offsets.set(m, Some(o));
            }
        }
    }
    for (&v, view) in views {
        let (Some(root_off), Some(rt)) = (k.offsets[view.root], k.ty(view.root).as_tile()) else {
            continue;
        };
        let off = root_off + view.elem_offset(&rt.shape) * rt.dtype.bytes();
        k.offsets.set(v, Some(off));
    }
}

fn peak_note(k: &Kernel, unit: Unit, space: Space, target: &Target) -> String {
    let cap = capacity(target, space).unwrap_or(0);
    format!(
        "{}: {} peak {} of {} bytes",
        unit.name(),
        buffer_label(space),
        buffer_high_water(k, unit, space),
        cap
    )
}

// ---------------------------------------------------------------------------
// Cube.

/// The constant value of an `i32` scalar defined by `iconst`.
fn const_of(k: &Kernel, v: Value) -> Option<i64> {
    match k.def_inst(v).map(|i| &k.insts[i].kind) {
        Some(InstKind::IConst(c)) => Some(*c),
        _ => None,
    }
}

fn view_of(
    k: &Kernel,
    views: &HashMap<Value, View>,
    src: Value,
    index: &[Index],
    what: Value,
) -> Result<View> {
    let base = match views.get(&src) {
        Some(v) => v.clone(),
        None => {
            let rank = k.ty(src).shape().len();
            View {
                root: src,
                dims: (0..rank).collect(),
                start: vec![0; rank],
            }
        }
    };
    if index.len() != base.dims.len() {
        return fail(format!(
            "plan-memory: extract {} has {} indices for a rank-{} tile",
            value_label(k, what),
            index.len(),
            base.dims.len()
        ));
    }
    let mut out = View {
        root: base.root,
        dims: Vec::new(),
        start: base.start.clone(),
    };
    for (ix, &rd) in index.iter().zip(&base.dims) {
        let (start, keep) = match ix {
            Index::Point(s) => (Some(*s), false),
            Index::Range { start, .. } => (Some(*start), true),
            Index::Full => (None, true),
        };
        if let Some(s) = start {
            let Some(c) = const_of(k, s).and_then(|c| u64::try_from(c).ok()) else {
                return fail(format!(
                    "plan-memory: extract {} of l1 tile {} has a non-constant index {}: \
                     an l1 view needs a static offset",
                    value_label(k, what),
                    value_label(k, src),
                    value_label(k, s)
                ));
            };
            out.start[rd] += c;
        }
        if keep {
            out.dims.push(rd);
        }
    }
    Ok(out)
}

fn block_map(k: &Kernel, block: Block, out: &mut HashMap<Inst, Block>) {
    for &i in &k.blocks[block].insts {
        out.insert(i, block);
        if let Some(b) = k.insts[i].kind.body() {
            block_map(k, b, out);
        }
    }
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

fn plan_cube(
    k: &mut Kernel,
    body: Block,
    target: &Target,
    config: &PlanMemoryConfig,
    report: &mut PlanMemoryReport,
) -> Result<()> {
    // 1. Spaces and views, in pre-order (loop parameters take the space of
    //    their initial value, which comes earlier).
    let mut insts = Vec::new();
    k.walk(body, &mut |i| insts.push(i));
    let mut views: HashMap<Value, View> = HashMap::new();
    let mut matmuls = Vec::new();
    for &i in &insts {
        let kind = k.insts[i].kind.clone();
        let results = k.insts[i].results.clone();
        let tiles: Vec<Value> = results
            .iter()
            .copied()
            .filter(|&r| k.ty(r).as_tile().is_some())
            .collect();
        match &kind {
            InstKind::Load { .. } => tiles.iter().for_each(|&r| set_space(k, r, Space::L1)),
            InstKind::Extract { src, index } => {
                let s = space_of(k, *src);
                let Some(&r) = tiles.first() else { continue };
                if s != Space::L1 {
                    return fail(format!(
                        "plan-memory: extract {} from {}, which lives in {}: the cube \
                         extracts only from l1 tiles",
                        value_label(k, r),
                        tile_label(k, *src),
                        s
                    ));
                }
                let view = view_of(k, &views, *src, index, r)?;
                views.insert(r, view);
                set_space(k, r, Space::L1);
            }
            InstKind::Copy { src, to } => {
                if matches!(to, Space::Any | Space::Ub) {
                    return fail(format!(
                        "plan-memory: copy of {} to {} in the cube function",
                        tile_label(k, *src),
                        to
                    ));
                }
                tiles.iter().for_each(|&r| set_space(k, r, *to));
            }
            InstKind::Matmul { .. } => {
                tiles.iter().for_each(|&r| set_space(k, r, Space::L0C));
                matmuls.push(i);
            }
            InstKind::For { init, body: b, .. } => {
                let params = k.blocks[*b].params.clone();
                for (j, &iv) in init.iter().enumerate() {
                    if k.ty(iv).as_tile().is_none() {
                        continue;
                    }
                    let s = space_of(k, iv);
                    if s == Space::Any {
                        return fail(format!(
                            "plan-memory: loop-carried tile {} has no placed initial value",
                            tile_label(k, iv)
                        ));
                    }
                    if let Some(&p) = params.get(j + 1) {
                        set_space(k, p, s);
                    }
                    if let Some(&r) = results.get(j) {
                        set_space(k, r, s);
                    }
                }
            }
            InstKind::Store { value, .. } | InstKind::AtomicAdd { value, .. } => {
                let s = space_of(k, *value);
                if k.ty(*value).as_tile().is_some() && !matches!(s, Space::L1 | Space::L0C) {
                    return fail(format!(
                        "plan-memory: `{}` of {} from {}: the cube writes GM from l0c \
                         (FixPipe) or l1 only",
                        kind.opcode(),
                        tile_label(k, *value),
                        s
                    ));
                }
            }
            InstKind::IConst(_)
            | InstKind::FConst(..)
            | InstKind::DimValue(_)
            | InstKind::SubBlock
            | InstKind::SetFlag(_)
            | InstKind::WaitFlag(_)
            | InstKind::Parallel { .. }
            | InstKind::Yield(_) => {}
            _ => {
                if !tiles.is_empty() {
                    return Err(unexpected(k, Unit::Cube, i));
                }
            }
        }
    }

    // 2. Matmul operands go through L0A/L0B; the accumulator is in L0C.
    let mut blocks = HashMap::new();
    block_map(k, body, &mut blocks);
    for m in matmuls {
        let InstKind::Matmul { a, b, acc, .. } = k.insts[m].kind.clone() else {
            continue;
        };
        if let Some(c) = acc
            && space_of(k, c) != Space::L0C
        {
            return fail(format!(
                "plan-memory: matmul accumulator {} lives in {}, not l0c",
                tile_label(k, c),
                space_of(k, c)
            ));
        }
        for (operand, want) in [(a, Space::L0A), (b, Space::L0B)] {
            let s = space_of(k, operand);
            if s == want {
                continue;
            }
            if s != Space::L1 {
                return fail(format!(
                    "plan-memory: matmul operand {} lives in {}; only l1 tiles can be \
                     copied to {}",
                    tile_label(k, operand),
                    s,
                    buffer_label(want)
                ));
            }
            let c = copy_before(k, blocks[&m], m, operand, want)?;
            let base = k.values[operand].name.clone().unwrap_or_else(|| "t".into());
            k.values[c].name = Some(format!("{base}_{want}"));
            if let InstKind::Matmul { a, b, .. } = &mut k.insts[m].kind {
                if want == Space::L0A {
                    *a = c;
                } else {
                    *b = c;
                }
            }
            report.notes.push(format!(
                "cube: inserted `copy {} to {}` for an untiled matmul (run `tile` \
                 before plan-memory to chunk and double-buffer it)",
                value_label(k, operand),
                want
            ));
        }
    }

    // 3. Slots and allocation.
    let (lin, units) = build_slots(k, body, &views, &mut report.notes)?;
    let mut offs = HashMap::new();
    for space in [Space::L1, Space::L0A, Space::L0B, Space::L0C] {
        let cap = capacity(target, space).unwrap_or(0);
        match linear_scan(&units, space, cap, config.align) {
            Ok(o) => offs.extend(o),
            Err(ov) => return Err(cube_overflow(k, &units, &ov, space, cap, config.align)),
        }
    }
    write_offsets(k, &lin, &units, &offs, &views);
    for space in [Space::L1, Space::L0A, Space::L0B, Space::L0C] {
        report.notes.push(peak_note(k, Unit::Cube, space, target));
    }
    Ok(())
}

fn cube_overflow(
    k: &Kernel,
    units: &[SlotUnit],
    ov: &Overflow,
    space: Space,
    cap: u64,
    align: u64,
) -> PlanMemoryError {
    let u = &units[ov.unit];
    let buf = buffer_label(space);
    let hint = if matches!(space, Space::L0A | Space::L0B | Space::L0C) {
        " (run the `tile` pass before plan-memory to cut matmuls into L0-sized chunks)"
    } else {
        " (use smaller tiles, e.g. a smaller KV block)"
    };
    let span = k.def_inst(u.rep).and_then(|i| k.spans[i]);
    if align_up(u.bytes, align) > cap {
        return PlanMemoryError {
            message: format!(
                "tile {} needs {} bytes of {buf} but {buf} holds {cap} bytes{hint}",
                tile_label(k, u.rep),
                u.bytes
            ),
            kind: PlanErrorKind::DoesNotFit {
                buffer: space,
                tile: tile_label(k, u.rep),
                bytes: u.bytes,
                capacity: cap,
                span,
            },
        };
    }
    let used: u64 = ov
        .live
        .iter()
        .map(|&a| align_up(units[a].bytes, align))
        .sum();
    let live: Vec<String> = ov
        .live
        .iter()
        .map(|&a| format!("{} ({} bytes)", tile_label(k, units[a].rep), units[a].bytes))
        .collect();
    PlanMemoryError {
        message: format!(
            "tile {} needs {} bytes of {buf} but {buf} holds {cap} bytes and {used} are \
             taken by tiles live at the same time: {}{hint}",
            tile_label(k, u.rep),
            u.bytes,
            live.join(", ")
        ),
        kind: PlanErrorKind::User { span },
    }
}

// ---------------------------------------------------------------------------
// Vector.

fn plan_vector(
    k: &mut Kernel,
    body: Block,
    target: &Target,
    config: &PlanMemoryConfig,
    report: &mut PlanMemoryReport,
) -> Result<()> {
    let mut insts = Vec::new();
    k.walk(body, &mut |i| insts.push(i));
    for &i in &insts {
        let kind = k.insts[i].kind.clone();
        match &kind {
            InstKind::Matmul { .. } => return Err(unexpected(k, Unit::Vector, i)),
            InstKind::Copy { src, to } => match to {
                Space::Ub | Space::Gm => {}
                Space::Any => {
                    if let InstKind::Copy { to, .. } = &mut k.insts[i].kind {
                        *to = Space::Ub;
                    }
                }
                _ => {
                    return fail(format!(
                        "plan-memory: copy of {} to {} in the vector function",
                        tile_label(k, *src),
                        to
                    ));
                }
            },
            _ => {}
        }
        let results = k.insts[i].results.clone();
        for r in results {
            if k.ty(r).as_tile().is_some() {
                let s = match &k.insts[i].kind {
                    InstKind::Copy { to, .. } => *to,
                    _ => Space::Ub,
                };
                set_space(k, r, s);
            }
        }
        if let Some(b) = k.insts[i].kind.body() {
            let params = k.blocks[b].params.clone();
            for (j, p) in params.into_iter().enumerate() {
                if k.ty(p).as_tile().is_none() {
                    continue;
                }
                let s = match &k.insts[i].kind {
                    InstKind::For { init, .. } => init
                        .get(j.wrapping_sub(1))
                        .map_or(Space::Ub, |&v| space_of(k, v)),
                    _ => Space::Ub,
                };
                set_space(k, p, s);
            }
        }
    }
    let views = HashMap::new();
    let (lin, units) = build_slots(k, body, &views, &mut report.notes)?;

    let ub = target.buffers.ub;
    let usable = ub.saturating_sub(config.ub_stream_reserve);
    let mut in_gm: HashSet<usize> = HashSet::new();
    let mut units = units;
    // Slots already in GM (a copy to gm) stay there.
    for (ui, u) in units.iter().enumerate() {
        if u.space == Space::Gm {
            in_gm.insert(ui);
        }
    }
    for (ui, u) in units.iter_mut().enumerate() {
        if u.space == Space::Ub && align_up(u.bytes, config.align) > usable {
            u.space = Space::Gm;
            in_gm.insert(ui);
            report.notes.push(format!(
                "vector: {} ({} bytes) lives in gm: larger than the {usable} usable bytes of UB \
                 ({ub} minus {} kept free to stream gm tiles); codegen streams it through UB in \
                 row chunks",
                tile_label(k, u.rep),
                u.bytes,
                config.ub_stream_reserve
            ));
        }
    }
    let offs = loop {
        let cap = if in_gm.is_empty() { ub } else { usable };
        match linear_scan(&units, Space::Ub, cap, config.align) {
            Ok(o) => break o,
            Err(ov) => {
                // Send the largest tile live at the overflow to GM.
                let mut cands = ov.live.clone();
                cands.push(ov.unit);
                let victim = cands
                    .into_iter()
                    .max_by_key(|&a| {
                        (
                            units[a].bytes,
                            units[a].end - units[a].start,
                            std::cmp::Reverse(a),
                        )
                    })
                    .unwrap_or(ov.unit);
                let at = lin
                    .at
                    .get(&units[ov.unit].start)
                    .map_or("a loop".to_string(), |&i| {
                        format!("`{}`", k.insts[i].kind.opcode())
                    });
                report.notes.push(format!(
                    "vector: {} ({} bytes) lives in gm: UB ({cap} usable bytes) overflows \
                     where {} is defined by {at}, and it is the largest tile live there",
                    tile_label(k, units[victim].rep),
                    units[victim].bytes,
                    value_label(k, units[ov.unit].rep),
                ));
                units[victim].space = Space::Gm;
                in_gm.insert(victim);
            }
        }
    };
    // Write spaces (copies whose result went to GM now copy to gm).
    for u in &units {
        for &m in &u.members {
            set_space(k, m, u.space);
            if let ValueDef::Result(i, _) = k.values[m].def
                && let InstKind::Copy { to, .. } = &mut k.insts[i].kind
            {
                *to = u.space;
            }
        }
        if u.space == Space::Gm {
            report.vector_gm_tiles.push(u.rep);
        }
    }
    write_offsets(k, &lin, &units, &offs, &views);
    report
        .notes
        .push(peak_note(k, Unit::Vector, Space::Ub, target));
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ir::{
        Axis, BLayout, BinaryOp, DType, Dim, Func, ReduceOp, Role, TensorData, UnaryOp,
    };

    /// Shapes of the attention test kernels.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Shape {
        /// Query rows (heads) per work item.
        pub h: u64,
        /// QK channels (576 for MLA).
        pub d: u64,
        /// V channels, the first `dv` of the K channels (512 for MLA).
        pub dv: u64,
        /// KV tokens per block.
        pub bn: u64,
    }

    /// DeepSeek-V3 MLA decode.
    pub(crate) const MLA: Shape = Shape {
        h: 128,
        d: 576,
        dv: 512,
        bn: 128,
    };

    fn tensor(
        k: &mut Kernel,
        name: &str,
        dtype: DType,
        shape: &[u64],
        role: Role,
    ) -> crate::ir::Tensor {
        k.tensors.push(TensorData {
            name: name.into(),
            dtype,
            shape: shape.iter().map(|&n| Dim::Const(n)).collect(),
            role,
        })
    }

    fn v(b: &mut Builder, kind: InstKind, name: &str) -> Value {
        b.named(kind, name).unwrap()
    }

    /// An attention kernel as `split` leaves it (no mul-to-add, no preload):
    /// the Cube computes S = Q Kᵀ and PV = P V (V = K's first `dv`
    /// channels), the Vector does the online softmax with `acc` carried.
    pub(crate) fn attention(s: Shape) -> Kernel {
        let mut k = Kernel::new("attn");
        let q = tensor(&mut k, "q", DType::Bf16, &[4, s.h, s.d], Role::Input);
        let kv = tensor(&mut k, "kv", DType::Bf16, &[4, 1024, s.d], Role::Input);
        let out = tensor(&mut k, "out", DType::Bf16, &[4, s.h, s.dv], Role::Output);
        let lse = tensor(&mut k, "lse", DType::F32, &[4, s.h], Role::Output);
        let ws_s = tensor(&mut k, "ws_s", DType::F32, &[s.h, s.bn], Role::Workspace);
        let ws_p = tensor(&mut k, "ws_p", DType::Bf16, &[s.h, s.bn], Role::Workspace);
        let ws_o = tensor(&mut k, "ws_o", DType::F32, &[4, s.h, s.dv], Role::Workspace);

        // Cube.
        let cube = k.blocks.push(Default::default());
        k.funcs.push(Func {
            unit: Unit::Cube,
            sub_blocks: 1,
            body: cube,
        });
        let mut b = Builder::at_end(&mut k, cube);
        let c0 = v(&mut b, InstKind::IConst(0), "c0");
        let nb = v(&mut b, InstKind::IConst(4), "B");
        let n = v(&mut b, InstKind::IConst(1024), "N");
        let par = b
            .parallel(
                vec![Axis {
                    lo: c0,
                    hi: nb,
                    step: 1,
                }],
                &["b"],
            )
            .unwrap();
        let bi = b.kernel.blocks[par].params[0];
        b.switch_to(par);
        let qt = v(
            &mut b,
            InstKind::Load {
                tensor: q,
                index: vec![Index::Point(bi), Index::Full, Index::Full],
            },
            "qt",
        );
        let (_, lb) = b.for_loop(c0, n, s.bn as i64, vec![], "j").unwrap();
        let j = b.kernel.blocks[lb].params[0];
        b.switch_to(lb);
        let kt = v(
            &mut b,
            InstKind::Load {
                tensor: kv,
                index: vec![
                    Index::Point(bi),
                    Index::Range {
                        start: j,
                        len: s.bn,
                    },
                    Index::Full,
                ],
            },
            "k",
        );
        let st = v(
            &mut b,
            InstKind::Matmul {
                a: qt,
                b: kt,
                b_layout: BLayout::NK,
                acc: None,
            },
            "s",
        );
        b.ins(InstKind::Store {
            tensor: ws_s,
            index: vec![Index::Full, Index::Full],
            value: st,
        })
        .unwrap();
        b.ins(InstKind::SetFlag(0)).unwrap();
        b.ins(InstKind::WaitFlag(1)).unwrap();
        let p = v(
            &mut b,
            InstKind::Load {
                tensor: ws_p,
                index: vec![Index::Full, Index::Full],
            },
            "p",
        );
        let vt = v(
            &mut b,
            InstKind::Extract {
                src: kt,
                index: vec![
                    Index::Full,
                    Index::Range {
                        start: c0,
                        len: s.dv,
                    },
                ],
            },
            "v",
        );
        let o = v(
            &mut b,
            InstKind::Matmul {
                a: p,
                b: vt,
                b_layout: BLayout::KN,
                acc: None,
            },
            "pv",
        );
        b.ins(InstKind::AtomicAdd {
            tensor: ws_o,
            index: vec![Index::Point(bi), Index::Full, Index::Full],
            value: o,
        })
        .unwrap();
        b.ins(InstKind::SetFlag(2)).unwrap();
        b.ins(InstKind::Yield(vec![])).unwrap();

        // Vector.
        let vec_body = k.blocks.push(Default::default());
        k.funcs.push(Func {
            unit: Unit::Vector,
            sub_blocks: 2,
            body: vec_body,
        });
        let mut b = Builder::at_end(&mut k, vec_body);
        let c0 = v(&mut b, InstKind::IConst(0), "c0");
        let nb = v(&mut b, InstKind::IConst(4), "B");
        let n = v(&mut b, InstKind::IConst(1024), "N");
        let ninf = v(
            &mut b,
            InstKind::FConst(f64::NEG_INFINITY, DType::F32),
            "ninf",
        );
        let zero = v(&mut b, InstKind::FConst(0.0, DType::F32), "zero");
        let par = b
            .parallel(
                vec![Axis {
                    lo: c0,
                    hi: nb,
                    step: 1,
                }],
                &["b"],
            )
            .unwrap();
        let bi = b.kernel.blocks[par].params[0];
        b.switch_to(par);
        let bc = |b: &mut Builder, src: Value, shape: &[u64], name: &str| {
            v(
                b,
                InstKind::Broadcast {
                    src,
                    shape: shape.to_vec(),
                },
                name,
            )
        };
        let m0 = bc(&mut b, ninf, &[s.h], "m");
        let l0 = bc(&mut b, zero, &[s.h], "l");
        let acc0 = bc(&mut b, zero, &[s.h, s.dv], "acc");
        let (fi, lb) = b
            .for_loop(c0, n, s.bn as i64, vec![m0, l0, acc0], "j")
            .unwrap();
        let ps: Vec<Value> = b.kernel.blocks[lb].params.clone();
        let (m, l, acc) = (ps[1], ps[2], ps[3]);
        b.switch_to(lb);
        b.ins(InstKind::WaitFlag(0)).unwrap();
        let st = v(
            &mut b,
            InstKind::Load {
                tensor: ws_s,
                index: vec![Index::Full, Index::Full],
            },
            "s",
        );
        let mx = v(&mut b, InstKind::Reduce(ReduceOp::Max, st), "mx");
        let m_new = v(&mut b, InstKind::Binary(BinaryOp::Max, m, mx), "m_new");
        let mb = bc(&mut b, m_new, &[s.h, s.bn], "mb");
        let d = v(&mut b, InstKind::Binary(BinaryOp::Sub, st, mb), "d");
        let p = v(&mut b, InstKind::Unary(UnaryOp::Exp, d), "p");
        let dm = v(&mut b, InstKind::Binary(BinaryOp::Sub, m, m_new), "dm");
        let alpha = v(&mut b, InstKind::Unary(UnaryOp::Exp, dm), "alpha");
        let rs = v(&mut b, InstKind::Reduce(ReduceOp::Sum, p), "rs");
        let la = v(&mut b, InstKind::Binary(BinaryOp::Mul, l, alpha), "la");
        let l_new = v(&mut b, InstKind::Binary(BinaryOp::Add, la, rs), "l_new");
        let pb = v(&mut b, InstKind::Cast(p, DType::Bf16), "pb");
        b.ins(InstKind::Store {
            tensor: ws_p,
            index: vec![Index::Full, Index::Full],
            value: pb,
        })
        .unwrap();
        b.ins(InstKind::SetFlag(1)).unwrap();
        b.ins(InstKind::WaitFlag(2)).unwrap();
        let pv = v(
            &mut b,
            InstKind::Load {
                tensor: ws_o,
                index: vec![Index::Point(bi), Index::Full, Index::Full],
            },
            "pv",
        );
        let ab = bc(&mut b, alpha, &[s.h, s.dv], "ab");
        let acc_s = v(&mut b, InstKind::Binary(BinaryOp::Mul, acc, ab), "acc_s");
        let acc_new = v(
            &mut b,
            InstKind::Binary(BinaryOp::Add, acc_s, pv),
            "acc_new",
        );
        b.ins(InstKind::Yield(vec![m_new, l_new, acc_new])).unwrap();
        b.switch_to(par);
        let rs: Vec<Value> = b.kernel.insts[fi].results.clone();
        let (m, l, acc) = (rs[0], rs[1], rs[2]);
        let lbc = bc(&mut b, l, &[s.h, s.dv], "lb");
        let o = v(&mut b, InstKind::Binary(BinaryOp::Div, acc, lbc), "o");
        let ob = v(&mut b, InstKind::Cast(o, DType::Bf16), "ob");
        b.ins(InstKind::Store {
            tensor: out,
            index: vec![Index::Point(bi), Index::Full, Index::Full],
            value: ob,
        })
        .unwrap();
        let ll = v(&mut b, InstKind::Unary(UnaryOp::Log, l), "ll");
        let lv = v(&mut b, InstKind::Binary(BinaryOp::Add, m, ll), "lse_v");
        b.ins(InstKind::Store {
            tensor: lse,
            index: vec![Index::Point(bi), Index::Full],
            value: lv,
        })
        .unwrap();
        k
    }

    /// All tile values of the function run by `unit`.
    pub(crate) fn tiles(k: &Kernel, unit: Unit) -> Vec<Value> {
        let f = k.func(unit).expect("function");
        Lin::new(k, f.body).tiles
    }

    /// Checks the placement invariants: every tile placed; local tiles have
    /// offsets within capacity; tiles that share bytes are never live at
    /// the same time unless they are one slot (same offset and type, ranges
    /// touching at a handoff) or one is a view of the other.
    pub(crate) fn check_placement(k: &Kernel, target: &Target) {
        if let Err(e) =
            crate::ir::verify::verify_with(k, &crate::ir::verify::VerifyConfig::for_target(target))
        {
            panic!("{e}\n{}", crate::ir::print::print(k));
        }
        for f in &k.funcs {
            let lin = Lin::new(k, f.body);
            // Views: l1 extracts.
            let mut views = HashMap::new();
            for &v in &lin.tiles {
                if let Some(i) = k.def_inst(v)
                    && let InstKind::Extract { src, .. } = &k.insts[i].kind
                    && space_of(k, v) == Space::L1
                {
                    let root = views.get(src).map_or(*src, |w: &View| w.root);
                    views.insert(
                        v,
                        View {
                            root,
                            dims: vec![],
                            start: vec![],
                        },
                    );
                }
            }
            let ranges = live_ranges(k, &lin, &views).unwrap();
            let mut placed = Vec::new();
            for &v in &lin.tiles {
                let t = k.ty(v).as_tile().unwrap();
                assert_ne!(t.space, Space::Any, "{} unplaced", tile_label(k, v));
                match capacity(target, t.space) {
                    None => assert_eq!(k.offsets[v], None),
                    Some(cap) => {
                        let off = k.offsets[v]
                            .unwrap_or_else(|| panic!("{} has no offset", tile_label(k, v)));
                        assert!(
                            off + t.bytes() <= cap,
                            "{} out of {}",
                            tile_label(k, v),
                            t.space
                        );
                        if !views.contains_key(&v) {
                            assert_eq!(off % DEFAULT_ALIGN, 0);
                            placed.push((v, t.space, off, t.bytes()));
                        }
                    }
                }
            }
            for (i, &(a, sa, oa, ba)) in placed.iter().enumerate() {
                for &(b, sb, ob, bb) in &placed[i + 1..] {
                    if sa != sb || oa + ba <= ob || ob + bb <= oa {
                        continue;
                    }
                    let (ra, rb) = (ranges[&a], ranges[&b]);
                    let live_together = !(ra.1 < rb.0 || rb.1 < ra.0);
                    if live_together {
                        let same_slot = oa == ob && ba == bb && (ra.1 == rb.0 || rb.1 == ra.0);
                        assert!(
                            same_slot,
                            "{} {:?} @{oa} and {} {:?} @{ob} overlap while live",
                            tile_label(k, a),
                            ra,
                            tile_label(k, b),
                            rb
                        );
                    }
                }
            }
        }
    }

    fn find(k: &Kernel, unit: Unit, name: &str) -> Value {
        tiles(k, unit)
            .into_iter()
            .find(|&v| k.values[v].name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no tile %{name}"))
    }

    const SMALL: Shape = Shape {
        h: 64,
        d: 64,
        dv: 32,
        bn: 64,
    };

    #[test]
    fn small_kernel_is_placed_without_overlap() {
        let mut k = attention(SMALL);
        let t = Target::ascend910b();
        let rep = plan_memory(&mut k, &t, &PlanMemoryConfig::default()).unwrap();
        check_placement(&k, &t);
        let sp = |n: &str, u| space_of(&k, find(&k, u, n));
        assert_eq!(sp("qt", Unit::Cube), Space::L1);
        assert_eq!(sp("k", Unit::Cube), Space::L1);
        assert_eq!(sp("v", Unit::Cube), Space::L1);
        assert_eq!(sp("s", Unit::Cube), Space::L0C);
        assert_eq!(sp("pv", Unit::Cube), Space::L0C);
        assert_eq!(sp("acc", Unit::Vector), Space::Ub);
        // V is a view of K at K's offset (its first channels).
        let (kk, vv) = (find(&k, Unit::Cube, "k"), find(&k, Unit::Cube, "v"));
        assert_eq!(k.offsets[kk], k.offsets[vv]);
        // The untiled matmuls got their operand copies.
        let mut copies = Vec::new();
        k.walk(k.func(Unit::Cube).unwrap().body, &mut |i| {
            if let InstKind::Copy { to, .. } = k.insts[i].kind {
                copies.push(to);
            }
        });
        assert_eq!(copies, [Space::L0A, Space::L0B, Space::L0A, Space::L0B]);
        assert!(rep.vector_gm_tiles.is_empty(), "{:?}", rep.notes);
    }

    #[test]
    fn carried_tiles_share_one_slot() {
        let mut k = attention(SMALL);
        let t = Target::ascend910b();
        plan_memory(&mut k, &t, &PlanMemoryConfig::default()).unwrap();
        let f = k.func(Unit::Vector).unwrap().body;
        let mut fors = Vec::new();
        k.walk(f, &mut |i| {
            if matches!(k.insts[i].kind, InstKind::For { .. }) {
                fors.push(i);
            }
        });
        let InstKind::For { init, body, .. } = &k.insts[fors[0]].kind else {
            unreachable!()
        };
        let InstKind::Yield(ys) = &k.insts[*k.blocks[*body].insts.last().unwrap()].kind else {
            unreachable!()
        };
        for j in 0..3 {
            let p = k.blocks[*body].params[j + 1];
            let r = k.insts[fors[0]].results[j];
            let off = k.offsets[p];
            assert!(off.is_some());
            assert_eq!(k.offsets[init[j]], off, "init {j}");
            assert_eq!(k.offsets[ys[j]], off, "yield {j}");
            assert_eq!(k.offsets[r], off, "result {j}");
        }
        // m is read after m_new is computed: m_new is copied at the yield;
        // acc and l are updated in place.
        let y0 = k.def_inst(ys[0]).unwrap();
        assert!(matches!(k.insts[y0].kind, InstKind::Copy { .. }));
        let y2 = k.def_inst(ys[2]).unwrap();
        assert!(matches!(
            k.insts[y2].kind,
            InstKind::Binary(BinaryOp::Add, ..)
        ));
    }

    #[test]
    fn mla_vector_accumulator_goes_to_gm() {
        let mut k = attention(MLA);
        let t = Target::ascend910b();
        crate::passes::tile::tile(&mut k, &t, &Default::default()).unwrap();
        let rep = plan_memory(&mut k, &t, &PlanMemoryConfig::default()).unwrap();
        check_placement(&k, &t);
        for n in ["acc", "acc_new", "pv", "ab", "acc_s", "o", "lb"] {
            assert_eq!(
                space_of(&k, find(&k, Unit::Vector, n)),
                Space::Gm,
                "{n}: {:#?}",
                rep.notes
            );
        }
        for n in ["m", "l", "m_new", "mx", "alpha"] {
            assert_eq!(space_of(&k, find(&k, Unit::Vector, n)), Space::Ub, "{n}");
        }
        assert!(
            rep.notes
                .iter()
                .any(|n| n.contains("%acc: f32[128, 512]") && n.contains("gm")),
            "{:#?}",
            rep.notes
        );
        // The stream reserve stays free.
        assert!(
            buffer_high_water(&k, Unit::Vector, Space::Ub)
                <= t.buffers.ub - DEFAULT_UB_STREAM_RESERVE
        );
    }

    #[test]
    fn l1_overflow_names_buffer_tile_and_bytes() {
        let mut k = attention(Shape { bn: 1024, ..MLA });
        let e =
            plan_memory(&mut k, &Target::ascend910b(), &PlanMemoryConfig::default()).unwrap_err();
        assert_eq!(
            e.message,
            "tile %k: bf16[1024, 576] needs 1179648 bytes of L1 but L1 holds 524288 bytes \
             (use smaller tiles, e.g. a smaller KV block)"
        );
    }

    #[test]
    fn untiled_mla_matmul_overflows_l0a_and_suggests_tile() {
        let mut k = attention(MLA);
        let e =
            plan_memory(&mut k, &Target::ascend910b(), &PlanMemoryConfig::default()).unwrap_err();
        assert!(
            e.message
                .starts_with("tile %qt_l0a: bf16[128, 576] needs 147456 bytes of L0A"),
            "{e}"
        );
        assert!(e.message.contains("`tile` pass"), "{e}");
    }

    #[test]
    fn live_set_overflow_lists_the_live_tiles() {
        // Two 300 KiB loads live together overflow L1 though each fits.
        let mut k = Kernel::new("two");
        let a = tensor(&mut k, "a", DType::Bf16, &[512, 300], Role::Input);
        let o = tensor(&mut k, "o", DType::Bf16, &[512, 300], Role::Output);
        let body = k.blocks.push(Default::default());
        k.funcs.push(Func {
            unit: Unit::Cube,
            sub_blocks: 1,
            body,
        });
        let mut b = Builder::at_end(&mut k, body);
        let ld = |b: &mut Builder, n| {
            v(
                b,
                InstKind::Load {
                    tensor: a,
                    index: vec![Index::Full, Index::Full],
                },
                n,
            )
        };
        let x = ld(&mut b, "x");
        let y = ld(&mut b, "y");
        for val in [x, y] {
            b.ins(InstKind::Store {
                tensor: o,
                index: vec![Index::Full, Index::Full],
                value: val,
            })
            .unwrap();
        }
        let e =
            plan_memory(&mut k, &Target::ascend910b(), &PlanMemoryConfig::default()).unwrap_err();
        assert!(
            e.message.starts_with(
                "tile %y: bf16[512, 300] needs 307200 bytes of L1 but L1 holds 524288 bytes \
                 and 307200 are taken by tiles live at the same time: %x: bf16[512, 300]"
            ),
            "{e}"
        );
    }

    #[test]
    fn unexpected_ops_are_errors_not_panics() {
        let mut k = attention(SMALL);
        // An `exp` of a tile in the cube function.
        let body = k.func(Unit::Cube).unwrap().body;
        let mut loads = Vec::new();
        k.walk(body, &mut |i| {
            if matches!(k.insts[i].kind, InstKind::Load { .. }) {
                loads.push(k.insts[i].results[0]);
            }
        });
        let mut b = Builder::at_end(&mut k, body);
        b.ins(InstKind::Unary(UnaryOp::Exp, loads[0])).unwrap();
        let e =
            plan_memory(&mut k, &Target::ascend910b(), &PlanMemoryConfig::default()).unwrap_err();
        assert!(
            e.message.contains("unexpected `exp` in the cube function"),
            "{e}"
        );

        let mut k = attention(SMALL);
        k.funcs.truncate(1);
        k.funcs[0].unit = Unit::Any;
        let e =
            plan_memory(&mut k, &Target::ascend910b(), &PlanMemoryConfig::default()).unwrap_err();
        assert!(e.message.contains("`any`"), "{e}");
    }

    #[test]
    fn replanning_is_stable() {
        let mut k = attention(SMALL);
        let t = Target::ascend910b();
        plan_memory(&mut k, &t, &PlanMemoryConfig::default()).unwrap();
        let before: Vec<_> = tiles(&k, Unit::Vector)
            .iter()
            .map(|&v| (k.ty(v).clone(), k.offsets[v]))
            .collect();
        let n_insts = k.insts.len();
        plan_memory(&mut k, &t, &PlanMemoryConfig::default()).unwrap();
        let after: Vec<_> = tiles(&k, Unit::Vector)
            .iter()
            .map(|&v| (k.ty(v).clone(), k.offsets[v]))
            .collect();
        assert_eq!(before, after);
        assert_eq!(n_insts, k.insts.len(), "no new copies the second time");
        check_placement(&k, &t);
    }

    /// The front end and the passes before this one, on a `.amla` file.
    /// `None` when `split` does not support the kernel yet.
    pub(crate) fn compile_example(
        name: &str,
        defines: &[(&str, &str)],
        amla: bool,
    ) -> Option<Kernel> {
        use crate::check::{Defines, check};
        use crate::diag::{SourceFile, render_plain};
        let path = format!("{}/../dsl-examples/{name}", env!("CARGO_MANIFEST_DIR"));
        let src = SourceFile::new(name, std::fs::read_to_string(&path).unwrap());
        let mut d = Defines::new();
        for (n, v) in defines {
            d.insert(*n, *v);
        }
        let h = check(&src, &d).unwrap_or_else(|e| panic!("{}", render_plain(&src, &e)));
        let mut k = crate::lower::lower(&h).unwrap();
        if amla {
            crate::passes::mul_to_add::run(&mut k, &Default::default()).unwrap();
        }
        crate::passes::split::run(&mut k).ok()?;
        Some(k)
    }

    #[test]
    fn examples_tile_place_and_verify() {
        let t = Target::ascend910b();
        let mut seen = 0;
        let dir = format!("{}/../dsl-examples", env!("CARGO_MANIFEST_DIR"));
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".amla"))
            .collect();
        names.sort();
        for name in &names {
            for amla in [false, true] {
                let Some(mut k) = compile_example(name, &[], amla) else {
                    continue;
                };
                crate::passes::tile::tile(&mut k, &t, &Default::default())
                    .unwrap_or_else(|e| panic!("{name} (amla {amla}): {e}"));
                let rep =
                    plan_memory(&mut k, &t, &PlanMemoryConfig::default()).unwrap_or_else(|e| {
                        panic!("{name} (amla {amla}): {e}\n{}", crate::ir::print::print(&k))
                    });
                check_placement(&k, &t);
                let _ = rep;
                seen += 1;
            }
        }
        assert!(seen >= 6, "only {seen} kernels split");
    }

    #[test]
    fn mla_example_accumulator_lands_in_gm_without_mul_to_add() {
        let t = Target::ascend910b();
        let mut k = compile_example("mla_decode.amla", &[], false).unwrap();
        crate::passes::tile::tile(&mut k, &t, &Default::default()).unwrap();
        let rep = plan_memory(&mut k, &t, &PlanMemoryConfig::default()).unwrap();
        check_placement(&k, &t);
        let gm: Vec<String> = rep
            .vector_gm_tiles
            .iter()
            .map(|&v| tile_label(&k, v))
            .collect();
        assert!(
            gm.iter()
                .any(|g| g.starts_with("%acc") && g.ends_with("f32[128, 512]")),
            "{gm:?}\n{:#?}",
            rep.notes
        );
    }

    #[test]
    fn mla_example_bn_1024_overflows_l1() {
        let t = Target::ascend910b();
        let mut k = compile_example("mla_decode.amla", &[("BN", "1024")], true).unwrap();
        crate::passes::tile::tile(&mut k, &t, &Default::default()).unwrap();
        let e = plan_memory(&mut k, &t, &PlanMemoryConfig::default()).unwrap_err();
        assert!(
            e.message.starts_with(
                "tile %k: bf16[1024, 576] needs 1179648 bytes of L1 but L1 holds 524288 bytes"
            ),
            "{e}"
        );
    }

    #[test]
    fn pipeline_runs_tile_then_plan_memory_and_verifies() {
        use crate::passes::{Pass, PassContext, PassError, PassOptions, Pipeline, PipelineConfig};
        let t = Target::ascend910b();
        let pipeline = || Pipeline {
            passes: vec![
                Box::new(crate::passes::tile::Tile::default()) as Box<dyn Pass>,
                Box::new(PlanMemory::default()),
            ],
            config: PipelineConfig::default(),
        };
        let cx = PassContext::new(&t, PassOptions::default());
        let mut k = compile_example("mla_decode.amla", &[], true).unwrap();
        pipeline().run(&mut k, &cx).unwrap();
        check_placement(&k, &t);
        let notes = cx.notes();
        assert!(
            notes
                .iter()
                .any(|n| n.pass == "tile" && n.text.contains("K 96×6")),
            "{notes:?}"
        );
        assert!(
            notes
                .iter()
                .any(|n| n.pass == NAME && n.text.contains("L1 peak")),
            "{notes:?}"
        );

        // The too-big tile is a structured user error.
        let mut k = compile_example("mla_decode.amla", &[("BN", "1024")], true).unwrap();
        let e = pipeline().run(&mut k, &cx).unwrap_err();
        assert!(
            matches!(&e, PassError::DoesNotFit { buffer: Space::L1, bytes: 1179648, capacity: 524288, tile, .. } if tile == "%k: bf16[1024, 576]"),
            "{e:?}"
        );
        assert!(e.is_user());
    }
}
