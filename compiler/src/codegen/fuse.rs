//! Fusion of element-wise Vector chains: one loop over a tile shape computes
//! a chain of element-wise ops in registers, loading each outside input once
//! and storing only the values something outside the chain reads, with the
//! row reductions (`rowmax`, `rowsum`) of chain values folded into the same
//! pass.
//!
//! Codegen still translates the IR it is given without rewriting it: fusion
//! only decides *where* an op's lane code is emitted. The op-per-loop code
//! (`CodegenOptions::unfused`) is the reference; the fused code computes the
//! same bits (`tests/fusion.rs`).
//!
//! # The rule
//!
//! Within one IR block, a **group** is a sequence of ops, in program order,
//! that all produce tiles of one `[rows, cols]` shape (`rows_cols`):
//! `unary`, `binary`, `cmp`, `select`, `cast` (no f16), `broadcast` of a
//! scalar or of a per-row `[rows]` tile, `iota` along the last axis (or the
//! rows of a rank-2 tile), a `load` of one contiguous GM run (points, then
//! `..`; uninstrumented code only), read in place instead of copied first
//! (and recorded on MTE2 as the copy it stands for,
//! `amla_rt_note_read_in_place`, so the statistics count the program's
//! loads), plus `rowmax`/`rowsum` of a group value. Between
//! two members may stand ops that are not members and do not read any
//! member's result ("passed-over" ops: smaller Vector ops, scalar ops,
//! flags, GM loads and stores, `atomic_exp_add`); they are emitted in their
//! place, and the whole group is emitted at its **last** member. A pure
//! op that reads a member's result (`l * alpha + rowsum(p)` between the
//! `rowsum` and a later member) is **deferred**: emitted right after the
//! group instead of in its place, and so is every pure op that reads a
//! deferred result. A group ends at another op that reads one of its
//! results, or at one it cannot pass (a loop, a matmul, an `extract`, a
//! copy, …); if deferring makes it invalid, it ends before the first
//! deferred op and planning resumes there.
//!
//! The fused loop runs over rows, then over 4-lane steps of a row, then the
//! row's scalar tail, exactly as the op-per-loop code does per op:
//! - a member's value is the lane code of its op ([`super::vector::lane_fn`])
//!   on its operands' values, then rounded to what a store and a reload of
//!   its dtype give (bf16: round to nearest even), so every element sees the
//!   same operations in the same order as unfused;
//! - a reduction keeps four interleaved partial results over the row's
//!   4-lane steps, combines them `(l0 ∘ l1) ∘ (l2 ∘ l3)`, then folds the
//!   tail: the order of `emit_reduce`, bit for bit (a maximum runs as
//!   `simd_math::running_max_step` in both);
//! - a bf16 member's value is stored as the bits its rounding produced
//!   (rounding an exact bf16 value again is the identity).
//!
//! # Outlined `exp`
//!
//! Cranelift's x86 SIMD is 128-bit, so an `exp` in the loop is the
//! polynomial 4 lanes at a time (~50 instructions, its constants reloaded
//! every step). A member `exp` whose input a member computes is instead
//! **outlined** when the rows have at least 32 columns (`OUTLINE_MIN_COLS`;
//! shorter rows keep it inline: the call and the buffer round trip cost
//! about what the wide polynomial saves — `tests/kernels/row_stats.amla` at
//! `B=64 R=128`, median kernel time of 3 alternated `amlac bench` runs,
//! inline → outlined: 16 columns 0.47 → 0.50 ms, 24: 0.77 → 0.71, 32:
//! 1.01 → 0.72, 64: 1.10 → 0.85): the row's loop is split into phases at
//! each outlined `exp`. Phase 0 computes every member that needs no
//! outlined `exp`'s result and stores each outlined `exp`'s input into a
//! per-row stack buffer (`cols × 4` bytes); then one call per buffer,
//! `amla_rt_exp_f32(buf, cols)` (`amla_runtime::vexp`: AVX-512, AVX2 or
//! scalar, chosen by the runtime, bit-identical to `simd_math::exp_f32x4`
//! on all 2^32 inputs), turns it into the `exp`'s results in place; phase 1
//! reads them from the buffer (rounded to the `exp`'s dtype as the inline
//! lane code would) and computes the members that depend on them, and so on
//! for chains of `exp`s. A value computed in one phase and read in a later
//! one goes through a row buffer of its own. Each reduction runs in the
//! phase its input is computed in, with the same four lane partials,
//! `(l0 ∘ l1) ∘ (l2 ∘ l3)` and tail as before; each stored value is stored
//! in its phase. Codegen always emits the call (no host CPU check: the
//! emitted code is the same on every machine). Not outlined (one phase):
//! row buffers of over 2^14 lanes in all (`OUTLINE_MAX_LANES`, on the
//! unit's stack), or a value stored in one phase in place over a tile a
//! later phase reads. The op-per-loop `exp` (`unfused`, the reference)
//! keeps `exp_f32x4`, so `tests/fusion.rs` compares the two.
//!
//! Before and after, per row of `mla_decode`'s `[128, 128]` group
//! (`p = exp(s - m_new)`, `pc = bf16(p * c)`, `rowsum(p)`):
//!
//! ```text
//! before: 32 steps: load s, sub m, exp (inline, 4 lanes), mul c, round
//!         to bf16, store pc, add p to the rowsum lanes; combine
//! after:  32 steps: load s, sub m, store to buf;
//!         call amla_rt_exp_f32(buf, 128) (8 AVX-512 vectors);
//!         32 steps: load p from buf, mul c, round to bf16, store pc, add p
//!         to the rowsum lanes; combine
//! ```
//!
//! # Invariant: the same memory effects
//!
//! Moving members to the end of the group and not storing values only
//! members read is safe when (checked when a group is formed, else the group
//! is cut short):
//! - every stored value (a member used outside the group, and every
//!   reduction result) is disjoint from every tile the group reads, or is
//!   written in place over an input at the same offset whose elements are
//!   at least as wide (bf16 over f32 too, both dense: element `e` covers bytes of
//!   input elements `≤ e`, and a step loads before it stores), so element
//!   `e` is read before it is overwritten (`FnCx::in_place_over`);
//! - stored values are pairwise disjoint;
//! - a passed-over op writes nothing the group reads or stores, and reads
//!   nothing a member before it stores — except a per-row `broadcast`
//!   source it overwrites later, which the group copies aside at the
//!   broadcast's own position (a few hundred bytes on the stack); so is a
//!   per-row source a stored value of the group overlaps;
//! - a group that reads GM in place passes no flag op and no GM write (the
//!   read happens where the group is emitted);
//! - a passed-over op writes nothing a member before it stores (a member
//!   after it stores later in both orders);
//! - nothing emitted between a deferred op's place and the group's end (a
//!   passed-over op after it, a store of a member after it) writes what the
//!   deferred op reads or writes, or reads what it writes.
//!
//! Before and after, for `s2 = (x * scale) …; m = rowmax(s2)`:
//!
//! ```text
//! %16 = broadcast %15 to [128, 128] : f32[128, 128] ub@0x800
//! %s0 = mul %14, %16 : f32[128, 128] gm
//! %s2 = mul %s0, %26 : f32[128, 128] gm      (%26 a broadcast too)
//! %27 = rowmax %s2 : f32[128] ub@0x800
//! ```
//!
//! unfused: four loops (two fills, two maps) and a reduction loop, five
//! passes over 64 KiB tiles; fused: one loop that loads `%14`, multiplies
//! twice, stores `%s2` (read later) and keeps the row maximum in a register
//! (`%16` and `%s0` are never stored).

use std::collections::{HashMap, HashSet};

use cranelift_codegen::ir::{self as cl, InstBuilder, types};

use super::func::FnCx;
use super::{CodegenError, Result, simd_math as sm};
use cranelift_codegen::ir::condcodes::IntCC;

use crate::ir::{
    Block, DType, Index, Inst, InstKind, ReduceOp, Space, TileType, Type, UnaryOp, Value,
};

/// One fused group.
#[derive(Clone, Debug)]
pub(crate) struct Group {
    /// Members in program order; the last is where the group is emitted.
    pub members: Vec<Inst>,
    /// The shape every member's result has (reductions: their input's).
    pub rows: u64,
    pub cols: u64,
    /// Member results something outside the group reads.
    pub stored: HashSet<Value>,
    /// Per-row broadcasts whose source is copied aside at their position.
    pub snapshot: HashSet<Inst>,
    /// Ops that read a member's result, moved to just after the group, in
    /// program order.
    pub deferred: Vec<Inst>,
}

/// Fusion decisions of a function: filled block by block before emission.
#[derive(Default)]
pub(crate) struct Fusion {
    /// Off: every op is its own loop.
    pub off: bool,
    /// Groups by their last member.
    pub at: HashMap<Inst, Group>,
    /// Members other than a group's last (emitted with their group).
    pub absorbed: HashSet<Inst>,
    /// Ops emitted right after their group instead of in their place.
    pub deferred: HashSet<Inst>,
    /// Per-row broadcasts whose source is copied aside: the copy's address.
    pub snapshot_ptr: HashMap<Inst, cl::Value>,
    /// Broadcasts to copy aside when reached.
    pub snapshot_at: HashSet<Inst>,
    /// Every value's users (anywhere in the function).
    pub uses: HashMap<Value, Vec<Inst>>,
}

/// How a member reads a tile defined outside the group.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Read {
    /// Element `e` of a tile of the group's shape.
    Full,
    /// Element `row` of a `[rows]` tile (a per-row broadcast).
    Row,
}

/// A group being formed.
struct Cand {
    members: Vec<Inst>,
    results: HashSet<Value>,
    rows: u64,
    cols: u64,
    /// Ops passed over, with the number of members before each.
    passed: Vec<(Inst, usize)>,
    snapshot: HashSet<Inst>,
    /// Results of the group's reductions (known only after the row).
    reduced: HashSet<Value>,
    /// Ops deferred to after the group, with the number of members and of
    /// passed-over ops before each, and the op's index in its block.
    deferred: Vec<(Inst, usize, usize, usize)>,
    /// Results of deferred ops.
    deferred_results: HashSet<Value>,
    /// A member reads a GM tensor in place.
    has_load: bool,
}

/// A byte range of one buffer.
type Range = (Space, u64, u64);

/// Rows shorter than this keep `exp` inline (the call and the buffer
/// round trip cost about what the wide polynomial saves; measured in the
/// module comment).
const OUTLINE_MIN_COLS: u64 = 32;
/// 4-lane steps per iteration of a fused row loop: fewer loop-counter,
/// address and spill-reload instructions per step (`mla_decode`'s score
/// loop spends about a third of its instructions on them at one step).
const STEP_UNROLL: u64 = 4;

/// At most this many 4-byte lanes of row buffers per group (they are on the
/// unit's stack).
const OUTLINE_MAX_LANES: u64 = 1 << 14;

/// The phases of a group's row loop ([`FnCx::plan_phases`]), by member
/// index.
#[derive(Clone)]
struct Phases {
    /// The phase each member is computed in.
    of: Vec<usize>,
    /// Number of phases (1: nothing outlined).
    count: usize,
    /// `exp` members computed by the runtime routine on a row buffer.
    outlined: Vec<bool>,
    /// Members a later phase reads (through a row buffer).
    carried: Vec<bool>,
}

fn overlap(a: &Range, b: &Range) -> bool {
    a.0 == b.0 && a.1 < b.2 && b.1 < a.2
}

impl FnCx<'_, '_> {
    /// Records every value's users in the function whose body is `body`.
    pub(crate) fn fusion_uses(&mut self, body: Block) {
        let k = self.k;
        let mut uses: HashMap<Value, Vec<Inst>> = HashMap::new();
        k.walk(body, &mut |i| {
            k.kind(i)
                .for_each_operand(|v| uses.entry(v).or_default().push(i));
        });
        self.fusion.uses = uses;
    }

    /// Where tile `v`'s bytes are, if it is placed.
    fn range(&self, v: Value) -> Option<Range> {
        let t = self.tile(v, "fuse").ok()?;
        let (rows, cols) = t.ty.rows_cols();
        let span = rows.saturating_sub(1) * t.stride + cols;
        Some((t.ty.space, t.off, t.off + span * t.ty.dtype.bytes()))
    }

    /// Whether the group may store `w` over its input `v` (their ranges
    /// overlap): both start at one offset and `w`'s elements are no wider
    /// than `v`'s, with `v` the same dtype width or both dense (row stride
    /// = columns). Element `e` of `w` then covers bytes of `v`'s elements
    /// `≤ e` only, and every step of the loop loads its inputs before it
    /// stores (rows, then steps, in increasing `e`): no element is
    /// overwritten before it is read. (MLA's `bf16(pc)` lands on the f32
    /// scores it is computed from.)
    fn in_place_over(&self, w: Value, v: Value) -> bool {
        let (Some(wr), Some(vr)) = (self.range(w), self.range(v)) else {
            return false;
        };
        let bytes = |x: Value| self.k.ty(x).dtype().bytes();
        let (wb, vb) = (bytes(w), bytes(v));
        if wr.1 != vr.1 || wb > vb {
            return false;
        }
        if wb == vb {
            return true;
        }
        let dense = |x: Value| {
            self.tile(x, "fuse")
                .is_ok_and(|t| t.stride == t.ty.rows_cols().1)
        };
        dense(w) && dense(v)
    }

    fn is_extract_result(&self, v: Value) -> bool {
        self.k
            .def_inst(v)
            .is_some_and(|i| matches!(self.k.kind(i), InstKind::Extract { .. }))
    }

    /// The `[rows, cols]` of `i` if it can be a group member (a reduction
    /// only of a value in `results`).
    fn member_shape(&self, i: Inst, results: Option<&HashSet<Value>>) -> Option<(u64, u64)> {
        let k = self.k;
        let [r] = k.insts[i].results[..] else {
            return None;
        };
        let tt = k.ty(r).as_tile()?;
        if tt.space == Space::Any || sm::lane_type(tt.dtype).is_none() || self.is_extract_result(r)
        {
            return None;
        }
        let rc = tt.rows_cols();
        let same = |v: Value| {
            k.ty(v).as_tile().is_some_and(|t| {
                t.rows_cols() == rc && t.space != Space::Any && sm::lane_type(t.dtype).is_some()
            }) && !self.is_extract_result(v)
        };
        let kind = k.kind(i);
        let ok = match *kind {
            InstKind::Unary(_, a) | InstKind::Cast(a, _) => same(a),
            InstKind::Binary(_, a, b) | InstKind::Cmp(_, a, b) => same(a) && same(b),
            InstKind::Select(c, a, b) => same(c) && same(a) && same(b),
            InstKind::Broadcast { src, .. } => match k.ty(src) {
                Type::Scalar(_) => true,
                // A per-row source is read from memory: never a member
                // (which a `[rows]` tile can be when `cols` is 1).
                Type::Tile(st) => {
                    !results.is_some_and(|s| s.contains(&src))
                        && st.elems() == rc.0
                        && st.space != Space::Any
                        && sm::lane_type(st.dtype).is_some()
                        && !self.is_extract_result(src)
                }
            },
            InstKind::Iota { ref shape, axis } => {
                axis as usize + 1 == shape.len() || (shape.len() == 2 && axis == 0)
            }
            InstKind::Load { tensor, ref index } => self.fusable_load(tensor, index, tt),
            InstKind::Reduce(_, a) => {
                let st = k.ty(a).as_tile()?;
                return (results.is_some_and(|s| s.contains(&a))
                    && matches!(st.dtype, DType::F32 | DType::Bf16)
                    && tt.elems() == st.rows_cols().0)
                    .then(|| st.rows_cols());
            }
            _ => false,
        };
        if !ok {
            return None;
        }
        if matches!(
            kind,
            InstKind::Unary(..) | InstKind::Binary(..) | InstKind::Cmp(..) | InstKind::Select(..)
        ) || matches!(kind, InstKind::Cast(_, to) if *to != DType::Bool)
        {
            let _ = super::vector::lane_fn(k, kind, "fuse").ok()?;
        } else if matches!(kind, InstKind::Cast(..)) {
            return None;
        }
        Some(rc)
    }

    /// True for an op a group may pass over (it only reads its operands and
    /// writes its results, a GM tensor or a flag).
    fn passable(&self, i: Inst) -> bool {
        let k = self.k;
        let kind = k.kind(i);
        let tile_operand_is_extract_result = {
            let mut any = false;
            kind.for_each_operand(|v| {
                any |= k.ty(v).as_tile().is_some() && self.is_extract_result(v)
            });
            any
        };
        !tile_operand_is_extract_result
            && matches!(
                kind,
                InstKind::SetFlag(_)
                    | InstKind::WaitFlag(_)
                    | InstKind::Store { .. }
                    | InstKind::AtomicAdd { .. }
                    | InstKind::AtomicExpAdd { .. }
                    | InstKind::Load { .. }
                    | InstKind::IConst(_)
                    | InstKind::FConst(..)
                    | InstKind::DimValue(_)
                    | InstKind::SubBlock
                    | InstKind::Unary(..)
                    | InstKind::Binary(..)
                    | InstKind::Cmp(..)
                    | InstKind::Select(..)
                    | InstKind::Cast(..)
                    | InstKind::Broadcast { .. }
                    | InstKind::Iota { .. }
                    | InstKind::Reduce(..)
            )
    }

    /// A load the group can read in place: uninstrumented code, the tile's
    /// dtype the tensor's, and an index of points then `..` only, so the
    /// box is one contiguous run of the (row-major) tensor.
    fn fusable_load(&self, tensor: crate::ir::Tensor, index: &[Index], tt: &TileType) -> bool {
        if self.instrument.any() || self.k.tensors[tensor].dtype != tt.dtype {
            return false;
        }
        let first_full = index
            .iter()
            .position(|ix| matches!(ix, Index::Full))
            .unwrap_or(index.len());
        first_full < index.len()
            && index[..first_full]
                .iter()
                .all(|ix| matches!(ix, Index::Point(_)))
            && index[first_full..]
                .iter()
                .all(|ix| matches!(ix, Index::Full))
    }

    /// Ops a group that reads a GM tensor in place cannot pass: the read
    /// happens where the group is emitted, so nothing that orders GM
    /// accesses or writes GM may come between.
    fn orders_gm(&self, i: Inst) -> bool {
        matches!(
            self.k.kind(i),
            InstKind::SetFlag(_)
                | InstKind::WaitFlag(_)
                | InstKind::Store { .. }
                | InstKind::AtomicAdd { .. }
                | InstKind::AtomicExpAdd { .. }
        )
    }

    /// True for an op that may be moved to just after its group when it
    /// reads a result of the group: a pure Vector op with a tile result
    /// (no memory effect besides writing that result, no flag).
    fn deferrable(&self, i: Inst) -> bool {
        let k = self.k;
        matches!(
            k.kind(i),
            InstKind::Unary(..)
                | InstKind::Binary(..)
                | InstKind::Cmp(..)
                | InstKind::Select(..)
                | InstKind::Cast(..)
                | InstKind::Broadcast { .. }
        ) && k.insts[i]
            .results
            .iter()
            .all(|&r| k.ty(r).as_tile().is_some())
    }

    /// Tiles member `m` reads from outside the group, and how.
    fn outside_reads(&self, m: Inst, results: &HashSet<Value>) -> Vec<(Value, Read)> {
        let k = self.k;
        let mut out = Vec::new();
        let row = matches!(k.kind(m), InstKind::Broadcast { .. });
        k.kind(m).for_each_operand(|v| {
            if k.ty(v).as_tile().is_some() && !results.contains(&v) {
                out.push((v, if row { Read::Row } else { Read::Full }));
            }
        });
        out
    }

    /// Decides the groups of `block` (not of blocks nested in it).
    pub(crate) fn plan_fusion(&mut self, block: Block) {
        if self.fusion.off {
            return;
        }
        self.plan_from(block, 0);
    }

    /// Plans the groups of `block` from its op at index `start` on.
    fn plan_from(&mut self, block: Block, start: usize) {
        let k = self.k;
        let insts = &k.blocks[block].insts;
        let mut cur: Option<Cand> = None;
        let mut at = start;
        while at < insts.len() {
            let i = insts[at];
            at += 1;
            if let Some(c) = cur.as_mut() {
                let shape = self.member_shape(i, Some(&c.results));
                let mut reads_member = false;
                let mut reads_reduced = false;
                let mut reads_deferred = false;
                k.kind(i).for_each_operand(|v| {
                    reads_member |= c.results.contains(&v);
                    reads_reduced |= c.reduced.contains(&v);
                    reads_deferred |= c.deferred_results.contains(&v);
                });
                if shape == Some((c.rows, c.cols)) && !reads_reduced && !reads_deferred {
                    c.has_load |= matches!(k.kind(i), InstKind::Load { .. });
                    c.members.push(i);
                    c.results.extend(k.insts[i].results.iter().copied());
                    if matches!(k.kind(i), InstKind::Reduce(..)) {
                        c.reduced.extend(k.insts[i].results.iter().copied());
                    }
                    continue;
                }
                let small = shape.is_none_or(|(r, cl)| r * cl <= c.rows * c.cols);
                if !reads_member
                    && !reads_deferred
                    && small
                    && self.passable(i)
                    && !(c.has_load && self.orders_gm(i))
                    && self.pass_over(c, i)
                {
                    c.passed.push((i, c.members.len()));
                    continue;
                }
                if small && self.deferrable(i) {
                    c.deferred
                        .push((i, c.members.len(), c.passed.len(), at - 1));
                    c.deferred_results
                        .extend(k.insts[i].results.iter().copied());
                    continue;
                }
                let c = cur.take().expect("open group");
                if let Some(resume) = self.close(c) {
                    // Ops scanned as deferred that stay in place: plan
                    // again from the first of them.
                    at = resume;
                    continue;
                }
            }
            if let Some((rows, cols)) = self.member_shape(i, None) {
                cur = Some(Cand {
                    members: vec![i],
                    results: k.insts[i].results.iter().copied().collect(),
                    rows,
                    cols,
                    passed: Vec::new(),
                    snapshot: HashSet::new(),
                    reduced: HashSet::new(),
                    deferred: Vec::new(),
                    deferred_results: HashSet::new(),
                    has_load: matches!(k.kind(i), InstKind::Load { .. }),
                });
            }
        }
        if let Some(c) = cur
            && let Some(resume) = self.close(c)
        {
            self.plan_from(block, resume);
        }
    }

    /// Checks passing over `x`: false when `x` overwrites a full-tile input
    /// of the group; a per-row input it overwrites is copied aside.
    fn pass_over(&self, c: &mut Cand, x: Inst) -> bool {
        let k = self.k;
        for &r in &k.insts[x].results {
            if k.ty(r).as_tile().is_none() {
                continue;
            }
            let Some(xr) = self.range(r) else {
                return false;
            };
            for &m in &c.members {
                for (v, how) in self.outside_reads(m, &c.results) {
                    let Some(vr) = self.range(v) else {
                        return false;
                    };
                    if overlap(&xr, &vr) {
                        if how == Read::Full {
                            return false;
                        }
                        c.snapshot.insert(m);
                    }
                }
            }
        }
        true
    }

    /// Validates `c`, cutting it short until it is valid, and records it.
    /// Returns the block index to plan again from when ops scanned as
    /// deferred stay in their place (they and what follows them were not
    /// considered as starts of groups).
    fn close(&mut self, mut c: Cand) -> Option<usize> {
        let mut resume: Option<usize> = None;
        loop {
            c.passed.retain(|&(_, before)| before < c.members.len());
            // Deferred ops after the last member stay in their place.
            let n = c.members.len();
            if let Some(&(.., idx)) = c.deferred.iter().find(|d| d.1 >= n) {
                resume = Some(resume.map_or(idx, |r| r.min(idx)));
            }
            c.deferred.retain(|&(_, before, ..)| before < n);
            if c.members.len() < 2 {
                return resume;
            }
            if let Some(g) = self.validate(&c) {
                for &m in &g.members[..g.members.len() - 1] {
                    self.fusion.absorbed.insert(m);
                }
                self.fusion.deferred.extend(g.deferred.iter().copied());
                self.fusion.snapshot_at.extend(g.snapshot.iter().copied());
                let last = *g.members.last().expect("members");
                self.fusion.at.insert(last, g);
                return resume;
            }
            if let Some(&(_, before, passed, idx)) = c.deferred.first() {
                resume = Some(resume.map_or(idx, |r| r.min(idx)));
                // Without deferring: the group ends before the first
                // deferred op.
                c.members.truncate(before);
                c.passed.truncate(passed);
                c.deferred.clear();
                c.deferred_results.clear();
                c.results = c
                    .members
                    .iter()
                    .flat_map(|&m| self.k.insts[m].results.iter().copied())
                    .collect();
                let members = &c.members;
                c.snapshot.retain(|m| members.contains(m));
                c.has_load = members
                    .iter()
                    .any(|&m| matches!(self.k.kind(m), InstKind::Load { .. }));
                continue;
            }
            let m = c.members.pop().expect("members");
            for r in &self.k.insts[m].results {
                c.results.remove(r);
            }
            c.snapshot.remove(&m);
        }
    }

    fn validate(&self, c: &Cand) -> Option<Group> {
        let k = self.k;
        let member_set: HashSet<Inst> = c.members.iter().copied().collect();
        let mut stored = HashSet::new();
        // (value, range, is a reduction result)
        let mut writes: Vec<(Value, Range, bool, usize)> = Vec::new();
        let mut reads: Vec<(Value, Range, Read, Inst)> = Vec::new();
        for (pos, &m) in c.members.iter().enumerate() {
            let r = k.insts[m].results[0];
            let reduce = matches!(k.kind(m), InstKind::Reduce(..));
            let outside = self
                .fusion
                .uses
                .get(&r)
                .is_some_and(|us| us.iter().any(|u| !member_set.contains(u)));
            if reduce || outside {
                stored.insert(r);
                writes.push((r, self.range(r)?, reduce, pos));
            }
            for (v, how) in self.outside_reads(m, &c.results) {
                reads.push((v, self.range(v)?, how, m));
            }
        }
        for (n, (_, a, _, _)) in writes.iter().enumerate() {
            if writes[n + 1..].iter().any(|(_, b, _, _)| overlap(a, b)) {
                return None;
            }
        }
        // A per-row broadcast source the group's own stores overwrite is
        // copied aside at the broadcast's place, as for a passed-over op
        // (MLA's `bf16(acc / l)` lands on `l`'s row).
        let mut snapshot = c.snapshot.clone();
        for (w, wr, reduce, _) in &writes {
            for (v, vr, how, m) in &reads {
                if *how == Read::Row && snapshot.contains(m) {
                    continue;
                }
                if !overlap(wr, vr) {
                    continue;
                }
                if *how == Read::Row {
                    snapshot.insert(*m);
                    continue;
                }
                let in_place = !reduce && *how == Read::Full && self.in_place_over(*w, *v);
                if !in_place {
                    return None;
                }
            }
        }
        for &(x, before) in &c.passed {
            for &r in &k.insts[x].results {
                if k.ty(r).as_tile().is_some() {
                    // A member after `x` writes after it in both orders.
                    let xr = self.range(r)?;
                    if writes
                        .iter()
                        .any(|(_, w, _, pos)| *pos < before && overlap(&xr, w))
                    {
                        return None;
                    }
                }
            }
            let mut bad = false;
            k.kind(x).for_each_operand(|v| {
                if k.ty(v).as_tile().is_some() {
                    match self.range(v) {
                        Some(vr) => {
                            bad |= writes
                                .iter()
                                .any(|(_, w, _, pos)| *pos < before && overlap(&vr, w))
                        }
                        None => bad = true,
                    }
                }
            });
            if bad {
                return None;
            }
        }
        // A deferred op `d` now runs after everything that followed it up
        // to the group's end: nothing there may write what `d` reads or
        // writes, or read what `d` writes.
        let tile_ranges = |i: Inst, results: bool| -> Option<Vec<Range>> {
            let mut out = Vec::new();
            let mut missing = false;
            let mut add = |v: Value| {
                if k.ty(v).as_tile().is_some() {
                    match self.range(v) {
                        Some(r) => out.push(r),
                        None => missing = true,
                    }
                }
            };
            if results {
                k.insts[i].results.iter().for_each(|&r| add(r));
            } else {
                k.kind(i).for_each_operand(&mut add);
            }
            (!missing).then_some(out)
        };
        let pos_of: HashMap<Inst, usize> =
            c.members.iter().enumerate().map(|(n, &m)| (m, n)).collect();
        for &(d, before, passed, _) in &c.deferred {
            let dw = tile_ranges(d, true)?;
            let dr = tile_ranges(d, false)?;
            let hits = |r: &Range, also_reads: bool| {
                dw.iter().any(|x| overlap(x, r)) || (also_reads && dr.iter().any(|x| overlap(x, r)))
            };
            for &(x, _) in &c.passed[passed..] {
                if tile_ranges(x, true)?.iter().any(|r| hits(r, true))
                    || tile_ranges(x, false)?.iter().any(|r| hits(r, false))
                {
                    return None;
                }
            }
            if writes
                .iter()
                .any(|(_, w, _, pos)| *pos >= before && hits(w, true))
            {
                return None;
            }
            if reads
                .iter()
                .any(|(_, vr, _, m)| pos_of[m] >= before && hits(vr, false))
            {
                return None;
            }
        }
        Some(Group {
            members: c.members.clone(),
            rows: c.rows,
            cols: c.cols,
            stored,
            snapshot,
            deferred: c.deferred.iter().map(|d| d.0).collect(),
        })
    }

    /// The address and dtype of dense tile `v` (a strided view: unsupported).
    fn dense_tile_ptr(&mut self, v: Value, op: &str) -> Result<(cl::Value, DType)> {
        let t = self.tile(v, op)?;
        if !t.dense() {
            return Err(CodegenError::unsupported(
                op,
                format!("{v} is a strided view"),
            ));
        }
        Ok((self.tile_ptr(&t, op)?, t.ty.dtype))
    }

    /// The address a load member's elements are read from: the GM box
    /// (contiguous, [`Self::fusable_load`]) when every point index is in
    /// range, else the result's own tile, zero-filled (what the load gives
    /// then).
    fn in_place_load(
        &mut self,
        tensor: crate::ir::Tensor,
        index: &[Index],
        r: Value,
    ) -> Result<cl::Value> {
        let op = "load";
        let dims = self.gm_box(tensor, index, op)?;
        let (gaddr, inb, _) = self.gm_point_addr(tensor, &dims);
        let (tp, _) = self.dense_tile_ptr(r, op)?;
        let tbytes = self.k.ty(r).as_tile().map_or(0, |t| t.bytes());
        let out = self.b.ins().icmp_imm_s(IntCC::Equal, inb, 0);
        self.if_then(out, &mut |s| {
            sm::emit_zero_fill(&mut s.b, tp, tbytes);
            Ok(())
        })?;
        // Counted as the op-per-loop load's MTE2 copy would be: one of a
        // box inside the tensor (out of range it copies nothing), into a
        // local buffer (a tile placed in `gm` is the JIT's own copy, which
        // no pipe counts).
        let local = self.k.ty(r).as_tile().is_some_and(|t| t.space != Space::Gm);
        if local {
            let inside = self.b.ins().icmp_imm_s(IntCC::NotEqual, inb, 0);
            self.if_then(inside, &mut |s| {
                let n = s.i64c(tbytes as i64);
                s.call("amla_rt_note_read_in_place", &[n])
            })?;
        }
        Ok(self.b.ins().select(inb, gaddr, tp))
    }

    /// At an absorbed per-row broadcast: copies its source aside.
    pub(crate) fn emit_snapshot(&mut self, m: Inst) -> Result<()> {
        let op = "broadcast";
        let InstKind::Broadcast { src, .. } = *self.k.kind(m) else {
            return Err(CodegenError::invalid(op, "snapshot of a non-broadcast"));
        };
        let st = self.tile(src, op)?;
        let bytes = st.ty.bytes();
        let slot = self.b.create_sized_stack_slot(cl::StackSlotData::new(
            cl::StackSlotKind::ExplicitSlot,
            bytes.max(1) as u32,
            4,
        ));
        let dst = self.b.ins().stack_addr(types::I64, slot, 0);
        let sp = self.tile_ptr(&st, op)?;
        sm::emit_memcpy(&mut self.b, dst, sp, bytes);
        self.fusion.snapshot_ptr.insert(m, dst);
        Ok(())
    }

    /// Emits group `g` as one loop nest.
    pub(crate) fn emit_group(&mut self, g: &Group) -> Result<()> {
        let k = self.k;
        let op = "fused";
        // Addresses and hoisted values.
        let mut ptr: HashMap<Value, (cl::Value, DType)> = HashMap::new();
        let mut hoisted: HashMap<Value, cl::Value> = HashMap::new();
        let mut row_src: Vec<(Value, cl::Value, DType)> = Vec::new();
        let mut row_iota: Vec<Value> = Vec::new();
        let mut col_iota: Vec<Value> = Vec::new();
        let results: HashSet<Value> = g.members.iter().map(|&m| k.insts[m].results[0]).collect();
        for &m in &g.members {
            let r = k.insts[m].results[0];
            match *k.kind(m) {
                InstKind::Broadcast { src, .. } => match k.ty(src) {
                    Type::Scalar(sd) => {
                        let x = self.scalar(src, op)?;
                        let v = self.splat_scalar(x, *sd);
                        let v = canonical(&mut self.b, v, k.ty(r).dtype());
                        hoisted.insert(r, v);
                    }
                    Type::Tile(st) => {
                        let d = st.dtype;
                        let p = match self.fusion.snapshot_ptr.get(&m) {
                            Some(&p) => p,
                            None => {
                                let t = self.tile(src, op)?;
                                self.tile_ptr(&t, op)?
                            }
                        };
                        row_src.push((r, p, d));
                    }
                },
                InstKind::Iota { ref shape, axis } => {
                    if axis as usize + 1 == shape.len() {
                        col_iota.push(r);
                    } else {
                        row_iota.push(r);
                    }
                }
                InstKind::Load { tensor, ref index } => {
                    let p = self.in_place_load(tensor, index, r)?;
                    ptr.insert(r, (p, k.ty(r).dtype()));
                }
                ref kind => {
                    let mut operands = Vec::new();
                    kind.for_each_operand(|v| operands.push(v));
                    for v in operands {
                        if k.ty(v).as_tile().is_none()
                            || results.contains(&v)
                            || ptr.contains_key(&v)
                        {
                            continue;
                        }
                        let p = self.dense_tile_ptr(v, op)?;
                        ptr.insert(v, p);
                    }
                }
            }
        }
        let mut outs: Vec<(Value, cl::Value, DType)> = Vec::new();
        let mut reduces: Vec<(Value, ReduceOp, Value, cl::Value, DType)> = Vec::new();
        for &m in &g.members {
            let r = k.insts[m].results[0];
            if let InstKind::Reduce(rop, a) = *k.kind(m) {
                let t = self.tile(r, op)?;
                let p = self.tile_ptr(&t, op)?;
                reduces.push((r, rop, a, p, t.ty.dtype));
            } else if g.stored.contains(&r) {
                let (p, d) = self.dense_tile_ptr(r, op)?;
                outs.push((r, p, d));
            }
        }
        let lanes = sm::lane_index(&mut self.b);
        let fns: Vec<Option<super::vector::BoxLaneFn>> = g
            .members
            .iter()
            .map(|&m| match k.kind(m) {
                InstKind::Unary(..)
                | InstKind::Binary(..)
                | InstKind::Cmp(..)
                | InstKind::Select(..)
                | InstKind::Cast(..) => super::vector::lane_fn(k, k.kind(m), op).map(Some),
                _ => Ok(None),
            })
            .collect::<Result<_>>()?;
        let (rows, cols) = (g.rows, g.cols);
        let ph = self.plan_phases(g, &fns);
        // Row buffers (stack, `cols` lanes of 4 bytes each): an outlined
        // `exp`'s (its input, then in place its result), by the exp's
        // result; a carried value's, by the value.
        let mut buf: HashMap<Value, cl::Value> = HashMap::new();
        for (n, &m) in g.members.iter().enumerate() {
            if ph.outlined[n] || ph.carried[n] {
                let slot = self.b.create_sized_stack_slot(cl::StackSlotData::new(
                    cl::StackSlotKind::ExplicitSlot,
                    (cols * 4) as u32,
                    4,
                ));
                let a = self.b.ins().stack_addr(types::I64, slot, 0);
                buf.insert(k.insts[m].results[0], a);
            }
        }
        let outlined: HashSet<Value> = g
            .members
            .iter()
            .enumerate()
            .filter(|&(n, _)| ph.outlined[n])
            .map(|(_, &m)| k.insts[m].results[0])
            .collect();
        let vphase: HashMap<Value, usize> = g
            .members
            .iter()
            .enumerate()
            .map(|(n, &m)| (k.insts[m].results[0], ph.of[n]))
            .collect();
        let phase_of = |v: Value| vphase.get(&v).copied().unwrap_or(0);
        let ident = |rop: ReduceOp| match rop {
            ReduceOp::Max => f32::NEG_INFINITY,
            ReduceOp::Sum => 0.0,
        };
        let comb = |b: &mut cranelift_frontend::FunctionBuilder, rop, x, y| match rop {
            ReduceOp::Max => b.ins().fmax(x, y),
            ReduceOp::Sum => b.ins().fadd(x, y),
        };
        let rc = self.i64c(rows as i64);
        self.counted_loop(rc, &mut |c, row| {
            let row_e = c.b.ins().imul_imm_s(row, cols as i64);
            // Per-row values.
            let mut per_row: HashMap<Value, cl::Value> = hoisted.clone();
            for &(r, p, d) in &row_src {
                let o = c.b.ins().imul_imm_s(row, d.bytes() as i64);
                let a = c.b.ins().iadd(p, o);
                let v = sm::load1(&mut c.b, a, d)
                    .ok_or_else(|| CodegenError::invalid(op, "row source"))?;
                let v = canonical(&mut c.b, v, k.ty(r).dtype());
                per_row.insert(r, v);
            }
            for &r in &row_iota {
                let x = c.b.ins().ireduce(types::I32, row);
                let v = c.b.ins().splat(types::I32X4, x);
                per_row.insert(r, v);
            }
            // One step of phase `q`: element `e + off` (`e` an i64 from the
            // tile start, `off` a constant, so that the steps of an unrolled
            // iteration share `e`'s address arithmetic), column `col + off`.
            let step = |c: &mut FnCx<'_, '_>,
                        e: cl::Value,
                        col: cl::Value,
                        off: i64,
                        wide: bool,
                        q: usize|
             -> Result<HashMap<Value, cl::Value>> {
                let mut vals = per_row.clone();
                // Column `col + off` of row buffer `bp`.
                let buf_at = |c: &mut FnCx<'_, '_>, bp: cl::Value| at(c, bp, col, off, 4);
                // An outlined `exp`'s result at `col`, as f32 lanes.
                let exp_result = |c: &mut FnCx<'_, '_>, bp: cl::Value| -> Result<cl::Value> {
                    let a = buf_at(c, bp);
                    if wide {
                        sm::load4(&mut c.b, a, DType::F32)
                    } else {
                        sm::load1(&mut c.b, a, DType::F32)
                    }
                    .ok_or_else(|| CodegenError::invalid(op, "exp buffer"))
                };
                // The value of `v` at element `e`: computed, or read from
                // its row buffer (an earlier phase's), or loaded from its
                // tile (or read in place) once.
                let value = |c: &mut FnCx<'_, '_>,
                             vals: &mut HashMap<Value, cl::Value>,
                             v: Value|
                 -> Result<cl::Value> {
                    if let Some(&x) = vals.get(&v) {
                        return Ok(x);
                    }
                    if let Some(&bp) = buf.get(&v) {
                        let d = k.ty(v).dtype();
                        let x = if outlined.contains(&v) {
                            let y = exp_result(c, bp)?;
                            canonical(&mut c.b, y, d)
                        } else {
                            let ty = sm::lane_type(d)
                                .ok_or_else(|| CodegenError::invalid(op, "lane type"))?;
                            let a = buf_at(c, bp);
                            if wide {
                                c.b.ins().load(ty, super::func::mf(), a, 0)
                            } else {
                                let x = c.b.ins().load(ty.lane_type(), super::func::mf(), a, 0);
                                c.b.ins().splat(ty, x)
                            }
                        };
                        vals.insert(v, x);
                        return Ok(x);
                    }
                    let &(p, d) = ptr
                        .get(&v)
                        .ok_or_else(|| CodegenError::invalid(op, format!("{v} has no value")))?;
                    let a = at(c, p, e, off, d.bytes() as i64);
                    let x = if wide {
                        sm::load4(&mut c.b, a, d)
                    } else {
                        sm::load1(&mut c.b, a, d)
                    }
                    .ok_or_else(|| CodegenError::invalid(op, "lane type"))?;
                    vals.insert(v, x);
                    Ok(x)
                };
                // bf16 members' values as the bf16 bits `canonical` rounded
                // them to: stored as they are (rounding again is the identity).
                let mut bf16_bits: HashMap<Value, cl::Value> = HashMap::new();
                for &r in &col_iota {
                    let ck = c.b.ins().iadd_imm_s(col, off);
                    let x = c.b.ins().ireduce(types::I32, ck);
                    let s = c.b.ins().splat(types::I32X4, x);
                    let v = if wide { c.b.ins().iadd(s, lanes) } else { s };
                    vals.insert(r, v);
                }
                for (n, &m) in g.members.iter().enumerate() {
                    let Some(f) = &fns[n] else { continue };
                    if ph.of[n] != q {
                        continue;
                    }
                    let r = k.insts[m].results[0];
                    let y = if ph.outlined[n] {
                        exp_result(c, buf[&r])?
                    } else {
                        let mut args = Vec::new();
                        k.kind(m).for_each_operand(|v| args.push(v));
                        let mut xs = Vec::new();
                        for v in args {
                            xs.push(value(c, &mut vals, v)?);
                        }
                        f(&mut c.b, &xs)
                    };
                    let (y, bits) = canonical_bits(&mut c.b, y, k.ty(r).dtype());
                    if let Some(h) = bits {
                        bf16_bits.insert(r, h);
                    }
                    vals.insert(r, y);
                }
                // What a later phase reads: an outlined exp's input, a
                // carried value.
                for (n, &m) in g.members.iter().enumerate() {
                    let r = k.insts[m].results[0];
                    let x = if ph.outlined[n] && ph.of[n] == q + 1 {
                        let InstKind::Unary(_, a) = *k.kind(m) else {
                            return Err(CodegenError::invalid(op, "outlined exp"));
                        };
                        value(c, &mut vals, a)?
                    } else if ph.carried[n] && ph.of[n] == q {
                        vals[&r]
                    } else {
                        continue;
                    };
                    let a = buf_at(c, buf[&r]);
                    if wide {
                        c.b.ins().store(super::func::mf(), x, a, 0);
                    } else {
                        let x = c.b.ins().extractlane(x, 0);
                        c.b.ins().store(super::func::mf(), x, a, 0);
                    }
                }
                // A value read in place that no member computed with.
                for v in outs
                    .iter()
                    .map(|o| o.0)
                    .chain(reduces.iter().map(|r| r.2))
                    .filter(|&v| phase_of(v) == q)
                {
                    value(c, &mut vals, v)?;
                }
                for &(r, p, d) in outs.iter().filter(|o| phase_of(o.0) == q) {
                    let a = at(c, p, e, off, d.bytes() as i64);
                    let x = vals[&r];
                    match bf16_bits.get(&r) {
                        Some(&h) if d == DType::Bf16 => sm::store_bf16_bits(&mut c.b, a, h, wide),
                        _ => if wide {
                            sm::store4(&mut c.b, a, d, x)
                        } else {
                            sm::store1(&mut c.b, a, d, x)
                        }
                        .ok_or_else(|| CodegenError::invalid(op, "lane type"))?,
                    }
                }
                Ok(vals)
            };
            let n4 = cols / 4;
            let mut sums: Vec<Option<cl::Value>> = vec![None; reduces.len()];
            for q in 0..ph.count {
                // The reductions of this phase's values, by index.
                let act: Vec<usize> = (0..reduces.len())
                    .filter(|&n| phase_of(reduces[n].2) == q)
                    .collect();
                let mut accs: Vec<cl::Value> = act
                    .iter()
                    .map(|&n| sm::fsplat(&mut c.b, ident(reduces[n].1)))
                    .collect();
                if n4 > 0 {
                    // Each reduction's accumulator, then the NaN mask of each
                    // maximum (`sm::running_max_step`), at `nan_at[j]`.
                    let mut init = accs.clone();
                    let mut nan_at = Vec::new();
                    for &n in &act {
                        let rop = reduces[n].1;
                        nan_at.push((rop == ReduceOp::Max).then_some(init.len()));
                        if rop == ReduceOp::Max {
                            init.push(sm::running_max_no_nan(&mut c.b));
                        }
                    }
                    // Folds one step's values into the accumulators `a`.
                    let advance =
                        |c: &mut FnCx<'_, '_>,
                         a: &[cl::Value],
                         vals: &HashMap<Value, cl::Value>| {
                            let mut next = a.to_vec();
                            for (j, &n) in act.iter().enumerate() {
                                let (_, rop, inp, ..) = reduces[n];
                                let v = vals[&inp];
                                match nan_at[j] {
                                    Some(t) => {
                                        let (m, nan) =
                                            sm::running_max_step(&mut c.b, a[j], a[t], v);
                                        next[j] = m;
                                        next[t] = nan;
                                    }
                                    None => next[j] = comb(&mut c.b, rop, a[j], v),
                                }
                            }
                            next
                        };
                    // `STEP_UNROLL` steps an iteration, then the steps left
                    // over straight: the steps run in the same order, so
                    // every lane's reduction folds its elements in the same
                    // order as one step an iteration would.
                    // (A group of one row runs its loop once a call: not
                    // worth the code, nor the compile time.)
                    let unroll = if rows > 1 { STEP_UNROLL.min(n4) } else { 1 };
                    let (iters, left) = (n4 / unroll, n4 % unroll);
                    let cnt = c.i64c(iters as i64);
                    let mut out = c.counted_loop_carry(cnt, &init, &mut |c, i, a| {
                        let col = c.b.ins().imul_imm_s(i, (unroll * 4) as i64);
                        let e = c.b.ins().iadd(row_e, col);
                        let mut a = a.to_vec();
                        for u in 0..unroll {
                            let vals = step(c, e, col, (u * 4) as i64, true, q)?;
                            a = advance(c, &a, &vals);
                        }
                        Ok(a)
                    })?;
                    for s in iters * unroll..iters * unroll + left {
                        let col = c.i64c((s * 4) as i64);
                        let e = c.b.ins().iadd(row_e, col);
                        let vals = step(c, e, col, 0, true, q)?;
                        out = advance(c, &out, &vals);
                    }
                    for (j, acc) in accs.iter_mut().enumerate() {
                        *acc = match nan_at[j] {
                            Some(t) => sm::running_max_finish(&mut c.b, out[j], out[t]),
                            None => out[j],
                        };
                    }
                }
                let mut part: Vec<cl::Value> = Vec::new();
                for (&n, &acc) in act.iter().zip(&accs) {
                    let rop = reduces[n].1;
                    let l: Vec<cl::Value> =
                        (0..4u8).map(|l| c.b.ins().extractlane(acc, l)).collect();
                    let x = comb(&mut c.b, rop, l[0], l[1]);
                    let y = comb(&mut c.b, rop, l[2], l[3]);
                    part.push(comb(&mut c.b, rop, x, y));
                }
                for t in n4 * 4..cols {
                    let col = c.i64c(t as i64);
                    let e = c.b.ins().iadd_imm_s(row_e, t as i64);
                    let vals = step(c, e, col, 0, false, q)?;
                    for (j, &n) in act.iter().enumerate() {
                        let (_, rop, inp, ..) = reduces[n];
                        let v = c.b.ins().extractlane(vals[&inp], 0);
                        part[j] = comb(&mut c.b, rop, part[j], v);
                    }
                }
                for (&n, s) in act.iter().zip(part) {
                    sums[n] = Some(s);
                }
                // The row's exps whose inputs this phase wrote.
                for (n, &m) in g.members.iter().enumerate() {
                    if ph.outlined[n] && ph.of[n] == q + 1 {
                        let len = c.i64c(cols as i64);
                        c.call_exp(buf[&k.insts[m].results[0]], len)?;
                    }
                }
            }
            for (&(_, _, _, p, od), s) in reduces.iter().zip(&sums) {
                let s = s.ok_or_else(|| CodegenError::invalid(op, "reduction phase"))?;
                let v = c.b.ins().splat(types::F32X4, s);
                let o = c.b.ins().imul_imm_s(row, od.bytes() as i64);
                let a = c.b.ins().iadd(p, o);
                sm::store1(&mut c.b, a, od, v)
                    .ok_or_else(|| CodegenError::invalid(op, "reduction result"))?;
            }
            Ok(())
        })
    }

    /// Splits group `g`'s row loop into phases at its outlined `exp`s (see
    /// the module comment): every member's phase, which members are
    /// outlined and which values a later phase reads from a row buffer.
    /// One phase (nothing outlined) when the rows are short, the buffers
    /// too big, or a phase would read a tile an earlier phase overwrote.
    fn plan_phases(&self, g: &Group, fns: &[Option<super::vector::BoxLaneFn>]) -> Phases {
        let k = self.k;
        let len = g.members.len();
        let flat = Phases {
            of: vec![0; len],
            count: 1,
            outlined: vec![false; len],
            carried: vec![false; len],
        };
        if g.cols < OUTLINE_MIN_COLS {
            return flat;
        }
        let idx: HashMap<Value, usize> = g
            .members
            .iter()
            .enumerate()
            .map(|(n, &m)| (k.insts[m].results[0], n))
            .collect();
        // The member computing `v` with lane code, if any.
        let computed = |v: Value| idx.get(&v).copied().filter(|&j| fns[j].is_some());
        let mut ph = flat.clone();
        for (n, &m) in g.members.iter().enumerate() {
            let mut p = 0;
            k.kind(m).for_each_operand(|v| {
                if let Some(&j) = idx.get(&v) {
                    p = p.max(ph.of[j]);
                }
            });
            if fns[n].is_some()
                && let InstKind::Unary(UnaryOp::Exp, a) = *k.kind(m)
                && computed(a).is_some()
            {
                ph.outlined[n] = true;
                p += 1;
            }
            ph.of[n] = p;
        }
        ph.count = ph.of.iter().max().map_or(1, |&p| p + 1);
        if ph.count == 1 {
            return flat;
        }
        // A value carried to a later phase (an outlined exp reads its
        // input from its own buffer).
        let mut reads: Vec<(Range, usize)> = Vec::new();
        for (n, &m) in g.members.iter().enumerate() {
            if fns[n].is_none() || ph.outlined[n] {
                continue;
            }
            let mut operands = Vec::new();
            k.kind(m).for_each_operand(|v| operands.push(v));
            for v in operands {
                match computed(v) {
                    Some(j) => {
                        if !ph.outlined[j] && ph.of[j] < ph.of[n] {
                            ph.carried[j] = true;
                        }
                    }
                    None => {
                        // Read from memory in this phase: an outside tile or
                        // an in-place load.
                        let in_memory = idx
                            .get(&v)
                            .is_none_or(|&j| matches!(k.kind(g.members[j]), InstKind::Load { .. }));
                        if in_memory && k.ty(v).as_tile().is_some() {
                            let Some(r) = self.range(v) else {
                                return flat;
                            };
                            reads.push((r, ph.of[n]));
                        }
                    }
                }
            }
        }
        let bufs = (0..len)
            .filter(|&n| ph.outlined[n] || ph.carried[n])
            .count() as u64;
        if bufs * g.cols > OUTLINE_MAX_LANES {
            return flat;
        }
        // A store in one phase over a tile a later phase reads (an in-place
        // result): element `e` would be read after it is overwritten.
        for (n, &m) in g.members.iter().enumerate() {
            let r = k.insts[m].results[0];
            if !g.stored.contains(&r) || matches!(k.kind(m), InstKind::Reduce(..)) {
                continue;
            }
            let Some(w) = self.range(r) else {
                return flat;
            };
            if reads.iter().any(|(v, q)| *q > ph.of[n] && overlap(&w, v)) {
                return flat;
            }
        }
        ph
    }
}

/// `v` as a store of dtype `d` and a reload give it (its lane type; bf16
/// rounded to nearest even).
/// The address of element `i + k` of a run of `bytes`-byte elements at `p`
/// (`k` a constant, folded into the access's displacement).
fn at(c: &mut FnCx<'_, '_>, p: cl::Value, i: cl::Value, k: i64, bytes: i64) -> cl::Value {
    let o = c.b.ins().imul_imm_s(i, bytes);
    let a = c.b.ins().iadd(p, o);
    if k == 0 {
        a
    } else {
        c.b.ins().iadd_imm_s(a, k * bytes)
    }
}

fn canonical(b: &mut cranelift_frontend::FunctionBuilder, v: cl::Value, d: DType) -> cl::Value {
    canonical_bits(b, v, d).0
}

/// [`canonical`], with the bf16 bits (one per i32 lane) when `d` is bf16.
fn canonical_bits(
    b: &mut cranelift_frontend::FunctionBuilder,
    v: cl::Value,
    d: DType,
) -> (cl::Value, Option<cl::Value>) {
    let ty = sm::lane_type(d).expect("member dtypes have a lane type");
    let v = if b.func.dfg.value_type(v) == ty {
        v
    } else {
        b.ins().bitcast(ty, super::func::mf(), v)
    };
    if d == DType::Bf16 {
        let h = sm::f32x4_to_bf16_bits(b, v);
        (sm::bf16_bits_to_f32x4(b, h), Some(h))
    } else {
        (v, None)
    }
}
