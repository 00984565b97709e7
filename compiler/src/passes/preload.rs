//! `preload`: the AMLA Preload Pipeline, a software pipeline
//! of the Cube program with depth `d`.
//!
//! After `split`, the Cube's block loop is two stages separated by a wait:
//!
//! ```text
//! for %j in %lo..%hi step s {
//!   A: %k = load kv[..%j..]; %s = matmul %q, %k nk; store ws_s[..]; set_flag S
//!   B: wait_flag P; %p = load ws_pb[..]; %v = extract %k[..]; %o = matmul %p, %v kn; …
//! }
//! ```
//!
//! so the Cube idles while the Vector computes the softmax of block j.
//! Preload issues stage A of block t+d before stage B of block t:
//!
//! ```text
//! %ds = iconst d*s
//! %p_hi = min (add %lo, %ds), %hi
//! for %j in %lo..%p_hi step s { A(%j) }                 // prologue: min(d, n) blocks
//! %n = div (add (sub %hi, %lo), s-1), s                // block count
//! %e_lo = max %lo, (add %lo, (mul (sub %n, d), s))
//! for %j in %lo..%e_lo step s carry(…) {               // steady: max(0, n-d) blocks
//!   A(add %j, %ds)                                      //   QK of block t+d
//!   B(%j)                                               //   then PV of block t
//! }
//! for %j in %e_lo..%hi step s carry(…) { B(%j) }        // epilogue: min(d, n) blocks
//! ```
//!
//! Trip counts are computed with scalar `min`/`max`, so any block count,
//! including 0 and counts below `d`, runs every A and every B exactly once,
//! each stage in block order. Arithmetic is unchanged: the same ops run on
//! the same data, only the Cube's issue order changes (depth 0 leaves the IR
//! untouched).
//!
//! Values stage B takes from stage A ([`Reuse`]):
//! - by default, tiles (the K block, which P·V reuses as V) are
//!   *recomputed* (reloaded) in B from its own block index, so only one K
//!   block is live in L1 at a time;
//! - with [`Reuse::CarryAtDepth1`] at depth 1, they are *carried*:
//!   the steady loop yields the K it loaded for block t+1 and B of the next
//!   iteration uses it, so each block is loaded once. The carried slot
//!   starts with stage A's values at block `lo`, computed once before the
//!   prologue; the prologue (at most one block, `lo`) reuses them;
//!   this keeps two K blocks live in L1 (fits MLA decode's 144 KiB Q, not
//!   MTP's 288 KiB Q in 512 KiB), and deeper pipelines would need d+1;
//! - scalars (slot index, page ids…) are always recomputed.
//!
//! Recomputed values must be pure and load only kernel inputs; a matmul or
//! a workspace read in A that B needs makes the loop ineligible. Loop-carried
//! values may be used by B only.
//!
//! # Slots
//!
//! Every workspace `split` created for a value crossing inside the loop
//! (`ws_s`, `ws_pb`, …) gets an extra dim of `d+1` slots right after the
//! grid dims, indexed on both units by `((j - lo) / s) % (d+1)`; the Vector
//! program is otherwise unchanged.
//!
//! # Why this is safe
//!
//! - **No deadlock.** Stage A contains no `wait_flag` (the pass checks), so
//!   hoisting it only makes the Cube's sets earlier; it can never block a
//!   unit that was not blocked before. Stage B keeps its order relative to
//!   the Vector.
//! - **Flags pair per edge across slots.** Flags are counters and each id
//!   is one producer→consumer edge. The Cube still issues A(0), A(1), … and
//!   B(0), B(1), … in block order and the Vector consumes in block order, so
//!   the k-th set of an id still meets the k-th wait: one id per edge works
//!   for every slot.
//! - **No slot is overwritten before it is read.** For a workspace the Cube
//!   stores in A (S): A(t+d) writes the slot of block t-1; the Vector read
//!   S_{t-1} before it set a flag (P_{t-1}) that the Cube waits for in
//!   B(t-1), which precedes A(t+d) (checked: the Vector's load of every such
//!   workspace precedes a set the Cube waits on in B). For a workspace the
//!   Vector stores and the Cube loads in B (P): the Vector writes P_t' into
//!   the slot of block t'-d-1 after waiting for S_t', which A(t') sets;
//!   A(t') comes after B(t'-d-1), which read that slot (checked: the
//!   Vector's store of every such workspace follows a wait on a flag the
//!   Cube sets in A). Workspaces the Cube stores in B keep the order `split`
//!   proved safe. So d+1 slots need no extra "slot free" flag: the producer
//!   never runs more than d+1 blocks ahead.
//!
//! # Example
//!
//! Before (after `split`: one K block per iteration, S to the Vector in
//! `ws_s`, bf16 P back in `ws_pb`):
//!
//! ```text
//! kernel tiny
//! dim B
//! dim N
//! input q: bf16[B, 128, 64]
//! input kv: bf16[B, N, 64]
//! output out: f32[B, 128, 32]
//! workspace ws_s: f32[B, 128, 128]
//! workspace ws_pb: bf16[B, 128, 128]
//!
//! func cube {
//!   %c0 = iconst 0 : i32
//!   %B = dim B : i32
//!   %N = dim N : i32
//!   parallel %b in %c0..%B {
//!     %q = load q[%b, .., ..] : bf16[128, 64]
//!     for %j in %c0..%N step 128 {
//!       %k = load kv[%b, %j+:128, ..] : bf16[128, 64]
//!       %s = matmul %q, %k nk : f32[128, 128]
//!       store ws_s[%b, .., ..], %s
//!       set_flag 0
//!       wait_flag 1
//!       %pb = load ws_pb[%b, .., ..] : bf16[128, 128]
//!       %v = extract %k[.., %c0+:32] : bf16[128, 32]
//!       %pv = matmul %pb, %v kn : f32[128, 32]
//!       atomic_add out[%b, .., ..], %pv
//!       yield
//!     }
//!   }
//! }
//!
//! func vector {
//!   %c0 = iconst 0 : i32
//!   %B = dim B : i32
//!   %N = dim N : i32
//!   parallel %b in %c0..%B {
//!     for %j in %c0..%N step 128 {
//!       wait_flag 0
//!       %s = load ws_s[%b, .., ..] : f32[128, 128]
//!       %p = exp %s : f32[128, 128]
//!       %pb = cast %p to bf16 : bf16[128, 128]
//!       store ws_pb[%b, .., ..], %pb
//!       set_flag 1
//!       yield
//!     }
//!   }
//! }
//! ```
//!
//! After, at depth 1 (the prologue issues QK of the first block; the steady
//! loop issues QK of block t+1, then PV of block t, reloading K for it; the
//! epilogue issues the last PV; `ws_s` and `ws_pb` get 2 slots, indexed by
//! `%slot` on both units; `tests/filetests.rs` checks this example):
//!
//! ```text
//! kernel tiny
//! dim B
//! dim N
//! input q: bf16[B, 128, 64]
//! input kv: bf16[B, N, 64]
//! output out: f32[B, 128, 32]
//! workspace ws_s: f32[B, 2, 128, 128]
//! workspace ws_pb: bf16[B, 2, 128, 128]
//!
//! func cube {
//!   %c0 = iconst 0 : i32
//!   %B = dim B : i32
//!   %N = dim N : i32
//!   parallel %b in %c0..%B {
//!     %q = load q[%b, .., ..] : bf16[128, 64]
//!     %0 = iconst 128 : i32
//!     %1 = sub %N, %c0 : i32
//!     %2 = min %0, %1 : i32
//!     %3 = add %c0, %2 : i32
//!     for %j in %c0..%3 step 128 {
//!       %4 = sub %j, %c0 : i32
//!       %5 = iconst 128 : i32
//!       %6 = div %4, %5 : i32
//!       %7 = iconst 2 : i32
//!       %slot = rem %6, %7 : i32
//!       %k = load kv[%b, %j+:128, ..] : bf16[128, 64]
//!       %s = matmul %q, %k nk : f32[128, 128]
//!       store ws_s[%b, %slot, .., ..], %s
//!       set_flag 0
//!       yield
//!     }
//!     %8 = iconst 0 : i32
//!     %9 = iconst 1 : i32
//!     %10 = max %1, %8 : i32
//!     %11 = iconst 128 : i32
//!     %12 = div %10, %11 : i32
//!     %13 = rem %10, %11 : i32
//!     %14 = min %13, %9 : i32
//!     %nblocks = add %12, %14 : i32
//!     %15 = iconst 1 : i32
//!     %16 = sub %nblocks, %15 : i32
//!     %17 = max %16, %8 : i32
//!     %18 = mul %17, %11 : i32
//!     %19 = add %c0, %18 : i32
//!     %drain = max %c0, %19 : i32
//!     for %j.1 in %c0..%drain step 128 {
//!       %20 = add %j.1, %0 : i32
//!       %21 = sub %20, %c0 : i32
//!       %22 = iconst 128 : i32
//!       %23 = div %21, %22 : i32
//!       %24 = iconst 2 : i32
//!       %slot.1 = rem %23, %24 : i32
//!       %k.1 = load kv[%b, %20+:128, ..] : bf16[128, 64]
//!       %s.1 = matmul %q, %k.1 nk : f32[128, 128]
//!       store ws_s[%b, %slot.1, .., ..], %s.1
//!       set_flag 0
//!       %25 = sub %j.1, %c0 : i32
//!       %26 = iconst 128 : i32
//!       %27 = div %25, %26 : i32
//!       %28 = iconst 2 : i32
//!       %slot.2 = rem %27, %28 : i32
//!       %k.2 = load kv[%b, %j.1+:128, ..] : bf16[128, 64]
//!       wait_flag 1
//!       %pb = load ws_pb[%b, %slot.2, .., ..] : bf16[128, 128]
//!       %v = extract %k.2[.., %c0+:32] : bf16[128, 32]
//!       %pv = matmul %pb, %v kn : f32[128, 32]
//!       atomic_add out[%b, .., ..], %pv
//!       yield
//!     }
//!     for %j.2 in %drain..%N step 128 {
//!       %29 = sub %j.2, %c0 : i32
//!       %30 = iconst 128 : i32
//!       %31 = div %29, %30 : i32
//!       %32 = iconst 2 : i32
//!       %slot.3 = rem %31, %32 : i32
//!       %k.3 = load kv[%b, %j.2+:128, ..] : bf16[128, 64]
//!       wait_flag 1
//!       %pb.1 = load ws_pb[%b, %slot.3, .., ..] : bf16[128, 128]
//!       %v.1 = extract %k.3[.., %c0+:32] : bf16[128, 32]
//!       %pv.1 = matmul %pb.1, %v.1 kn : f32[128, 32]
//!       atomic_add out[%b, .., ..], %pv.1
//!       yield
//!     }
//!   }
//! }
//!
//! func vector {
//!   %c0 = iconst 0 : i32
//!   %B = dim B : i32
//!   %N = dim N : i32
//!   parallel %b in %c0..%B {
//!     for %j in %c0..%N step 128 {
//!       %0 = sub %j, %c0 : i32
//!       %1 = iconst 128 : i32
//!       %2 = div %0, %1 : i32
//!       %3 = iconst 2 : i32
//!       %slot = rem %2, %3 : i32
//!       wait_flag 0
//!       %s = load ws_s[%b, %slot, .., ..] : f32[128, 128]
//!       %p = exp %s : f32[128, 128]
//!       %pb = cast %p to bf16 : bf16[128, 128]
//!       store ws_pb[%b, %slot, .., ..], %pb
//!       set_flag 1
//!       yield
//!     }
//!   }
//! }
//! ```

use rustc_hash::{FxHashMap, FxHashSet};

use crate::ir::edit::{Unmapped, ValueMap};
use crate::ir::{
    BinaryOp, Block, Builder, DType, Dim, Index, Inst, InstKind, Kernel, Role, Tensor, Type, Unit,
    Value,
};

/// Options of the `preload` pass.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PreloadConfig {
    /// Pipeline depth: QK of block t+d is issued before PV of block t;
    /// 0 leaves the IR unchanged.
    pub depth: u32,
}

impl Default for PreloadConfig {
    fn default() -> Self {
        PreloadConfig { depth: 1 }
    }
}

/// The `preload` pass (see the module docs). In a pipeline the depth comes
/// from [`super::PassOptions::preload_depth`].
#[derive(Copy, Clone, Debug, Default)]
pub struct Preload;

impl super::Pass for Preload {
    fn name(&self) -> &'static str {
        "preload"
    }

    fn run(&self, k: &mut Kernel, cx: &super::PassContext) -> Result<(), super::PassError> {
        let cfg = PreloadConfig {
            depth: cx.options.preload_depth,
        };
        let report = run(k, &cfg).map_err(|message| super::PassError::Internal {
            pass: "preload".into(),
            message,
        })?;
        if report.pipelined > 0 {
            cx.note(format!(
                "pipelined {} cube loop(s) at depth {}",
                report.pipelined, cfg.depth
            ));
        }
        for n in report.notes {
            cx.note(n);
        }
        Ok(())
    }

    fn explain(&self) -> &'static str {
        "software-pipelines the Cube: QK of block j+d is issued before PV of block j, with d+1 workspace slots"
    }

    fn requires(&self) -> &'static [&'static str] {
        &["split"]
    }
}

/// What `preload` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PreloadReport {
    /// Number of Cube loops pipelined.
    pub pipelined: usize,
    /// Why each other two-stage loop was left alone (for `--explain`).
    pub notes: Vec<String>,
}

/// Pipelines every outermost Cube `for` loop that holds a matmul, then its
/// first `wait_flag`, then (possibly nested) another matmul (see the module
/// docs). A two-stage loop the pass cannot prove safe (a loop or an effect
/// other than workspace stores and sets in the first stage, a carried value
/// used by it, a value it hands to the second stage that cannot be
/// recomputed, a workspace whose Vector side does not match) is left alone
/// and the reason is recorded in the report. A kernel that was not split is
/// an error.
pub fn run(k: &mut Kernel, cfg: &PreloadConfig) -> Result<PreloadReport, String> {
    run_with(k, cfg, Reuse::Reload)
}

/// How stage B gets the tiles stage A computed for the same block.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Reuse {
    /// Recompute (reload) them in B: one K block live at a time, but every
    /// block is read from GM twice.
    Reload,
    /// At depth 1, carry them from the iteration that computed them: every
    /// block is read once, but two K blocks are live in L1 across stage A
    /// (too much next to MTP's `[256, 576]` Q in a 512 KiB L1). Deeper
    /// pipelines reload.
    CarryAtDepth1,
}

/// [`run`] with a choice of how stage B gets stage A's tiles.
pub fn run_with(
    k: &mut Kernel,
    cfg: &PreloadConfig,
    reuse: Reuse,
) -> Result<PreloadReport, String> {
    let mut report = PreloadReport::default();
    if cfg.depth == 0 {
        return Ok(report);
    }
    let d = i64::from(cfg.depth);
    let (Some(cube), Some(vector)) = (k.func(Unit::Cube), k.func(Unit::Vector)) else {
        return Err(
            "preload: the kernel has no cube and vector functions (run split first)".into(),
        );
    };
    let (cube, vector) = (cube.body, vector.body);
    let ngrid = match k.blocks[cube].insts.iter().find_map(|&i| match k.kind(i) {
        InstKind::Parallel { axes, .. } => Some(axes.len()),
        _ => None,
    }) {
        Some(n) => n,
        None => return Err("preload: the cube function has no `parallel`".into()),
    };
    let mut cands = Vec::new();
    find_candidates(k, cube, &mut cands);
    for f in cands {
        match analyze(k, cube, vector, f) {
            Ok(plan) => {
                pipeline(k, cube, ngrid, f, d, plan, reuse == Reuse::CarryAtDepth1)?;
                report.pipelined += 1;
            }
            Err(why) => report.notes.push(format!("loop {f} left alone: {why}")),
        }
    }
    Ok(report)
}

/// Loops whose body holds a matmul, then a `wait_flag` (the first wait of
/// the body), then a matmul.
fn find_candidates(k: &Kernel, b: Block, out: &mut Vec<Inst>) {
    for &i in &k.blocks[b].insts {
        let Some(body) = k.kind(i).body() else {
            continue;
        };
        if let InstKind::For { .. } = k.kind(i) {
            let insts = &k.blocks[body].insts;
            let is_mm = |&x: &Inst| matches!(k.kind(x), InstKind::Matmul { .. });
            if let Some(w) = insts
                .iter()
                .position(|&x| matches!(k.kind(x), InstKind::WaitFlag(_)))
                && insts[..w].iter().any(is_mm)
                && insts[w..].iter().any(|&x| {
                    let mut mm = false;
                    k.walk_one(x, &mut |y| {
                        mm |= matches!(k.kind(y), InstKind::Matmul { .. })
                    });
                    mm
                })
            {
                out.push(i);
                continue;
            }
        }
        find_candidates(k, body, out);
    }
}

/// The block holding `target` under `b`, and its position there.
fn locate(k: &Kernel, b: Block, target: Inst) -> Option<(Block, usize)> {
    for (n, &i) in k.blocks[b].insts.iter().enumerate() {
        if i == target {
            return Some((b, n));
        }
        if let Some(body) = k.kind(i).body()
            && let Some(r) = locate(k, body, target)
        {
            return Some(r);
        }
    }
    None
}

/// The innermost `for` under `b` whose body directly holds an access to `t`.
fn loops_accessing(
    k: &Kernel,
    b: Block,
    t: Tensor,
    owner: Option<Inst>,
    out: &mut Vec<Option<Inst>>,
) {
    for &i in &k.blocks[b].insts {
        if k.kind(i).tensor() == Some(t) && !out.contains(&owner) {
            out.push(owner);
        }
        if let Some(body) = k.kind(i).body() {
            let o = match k.kind(i) {
                InstKind::For { .. } => Some(i),
                _ => owner,
            };
            loops_accessing(k, body, t, o, out);
        }
    }
}

fn err_op(k: &Kernel, i: Inst, what: &str) -> String {
    format!("preload: `{}` ({i}) {what}", k.kind(i).opcode())
}

/// The stages of a candidate loop.
struct Stages {
    /// Stage A (QK): the body before the first `wait_flag`.
    a: Vec<Inst>,
    /// Stage B (PV): the rest of the body, without the `yield`.
    b: Vec<Inst>,
    /// The `yield`.
    y: Inst,
    /// The stage-A instructions B needs, in order (recomputed in B).
    recompute: Vec<Inst>,
    /// Stage-A tiles B uses, carried from the iteration that computed them
    /// (depth 1 only).
    carried_tiles: Vec<Value>,
    /// The stage-A instructions computing `carried_tiles`, recomputed once
    /// at the first block before the loops to give the carried slots an
    /// initial value.
    dummy: Vec<Inst>,
    /// Flags set in A.
    a_sets: FxHashSet<u32>,
    /// Flags waited on in B.
    b_waits: FxHashSet<u32>,
}

/// Splits the body of `f` into its stages and checks what the rewrite
/// needs; an `Err` says why the loop cannot be pipelined.
fn stages(k: &Kernel, f: Inst, ws: &[Tensor], carry: bool) -> Result<Stages, String> {
    let Some(body) = k.kind(f).body() else {
        return Err("preload: internal: not a loop".into());
    };
    let insts = k.blocks[body].insts.clone();
    let Some((&y, insts)) = insts.split_last() else {
        return Err("preload: internal: empty loop body".into());
    };
    if !matches!(k.kind(y), InstKind::Yield(_)) {
        return Err("preload: the loop body does not end in `yield`".into());
    }
    let Some(w) = insts
        .iter()
        .position(|&x| matches!(k.kind(x), InstKind::WaitFlag(_)))
    else {
        return Err("preload: internal: no wait in the candidate".into());
    };
    let (a, b) = (insts[..w].to_vec(), insts[w..].to_vec());
    let carried: FxHashSet<Value> = k.blocks[body].params[1..].iter().copied().collect();
    let mut a_sets = FxHashSet::default();
    for &i in &a {
        match k.kind(i) {
            InstKind::Parallel { .. } | InstKind::For { .. } => {
                return Err(err_op(k, i, "is a loop inside the first (QK) stage"));
            }
            InstKind::SetFlag(g) => {
                a_sets.insert(*g);
            }
            InstKind::Store { tensor, .. } if ws.contains(tensor) => {}
            kind if kind.has_effect() => {
                return Err(err_op(
                    k,
                    i,
                    "has an effect the first (QK) stage may not have",
                ));
            }
            _ => {}
        }
        let mut bad = false;
        k.kind(i).for_each_operand(|v| bad |= carried.contains(&v));
        if bad {
            return Err(err_op(
                k,
                i,
                "in the first (QK) stage uses a loop-carried value",
            ));
        }
    }
    let mut b_waits = FxHashSet::default();
    for &i in &b {
        k.walk_one(i, &mut |x| {
            if let InstKind::WaitFlag(g) = k.kind(x) {
                b_waits.insert(*g);
            }
        });
    }
    // Values B (and the yield) take from A: with `carry`, tiles travel
    // through the loops as carried values and only scalars are recomputed
    // in B; otherwise everything is recomputed.
    let mut a_def: FxHashMap<Value, Inst> = FxHashMap::default();
    for &i in &a {
        for &r in &k.insts[i].results {
            a_def.insert(r, i);
        }
    }
    let mut frontier: Vec<Value> = Vec::new();
    for &i in b.iter().chain(std::iter::once(&y)) {
        k.walk_one(i, &mut |x| {
            k.kind(x).for_each_operand(|v| {
                if a_def.contains_key(&v) && !frontier.contains(&v) {
                    frontier.push(v);
                }
            })
        });
    }
    // Deterministic order: by definition.
    let order: FxHashMap<Inst, usize> = a.iter().enumerate().map(|(n, &i)| (i, n)).collect();
    frontier.sort_by_key(|v| {
        let i = a_def[v];
        (order[&i], k.insts[i].results.iter().position(|r| r == v))
    });
    let (carried_tiles, scalars): (Vec<Value>, Vec<Value>) = frontier
        .into_iter()
        .partition(|&v| carry && k.ty(v).as_tile().is_some());
    let recompute = closure(k, &a, &a_def, scalars)?;
    let dummy = closure(k, &a, &a_def, carried_tiles.clone())?;
    Ok(Stages {
        a,
        b,
        y,
        recompute,
        carried_tiles,
        dummy,
        a_sets,
        b_waits,
    })
}

/// The stage-A instructions (in order) that compute `roots`; an `Err`
/// names one that cannot be recomputed (an effect, a matmul, a load of
/// anything but a kernel input).
fn closure(
    k: &Kernel,
    a: &[Inst],
    a_def: &FxHashMap<Value, Inst>,
    roots: Vec<Value>,
) -> Result<Vec<Inst>, String> {
    let mut need: FxHashSet<Inst> = FxHashSet::default();
    let mut work = roots;
    while let Some(v) = work.pop() {
        let Some(&i) = a_def.get(&v) else { continue };
        if !need.insert(i) {
            continue;
        }
        let kind = k.kind(i);
        let ok = match kind {
            InstKind::Matmul { .. } => false,
            InstKind::Load { tensor, .. } => k.tensors[*tensor].role == Role::Input,
            kind => !kind.has_effect(),
        };
        if !ok {
            return Err(err_op(
                k,
                i,
                "computes a value the second (PV) stage needs and cannot be recomputed there",
            ));
        }
        kind.for_each_operand(|v| work.push(v));
    }
    Ok(a.iter().copied().filter(|i| need.contains(i)).collect())
}

/// The Vector-side order the slot argument needs (module docs, "Why this
/// is safe"); an `Err` says what is missing.
fn check_vector_order(k: &Kernel, st: &Stages, vb: Block, ws: &[Tensor]) -> Result<(), String> {
    let vinsts = &k.blocks[vb].insts;
    let pos = |insts: &[Inst], load: bool, t: Tensor| {
        insts.iter().position(|&i| match k.kind(i) {
            InstKind::Load { tensor, .. } => load && *tensor == t,
            InstKind::Store { tensor, .. } => !load && *tensor == t,
            _ => false,
        })
    };
    for &t in ws {
        let name = &k.tensors[t].name;
        if pos(&st.a, false, t).is_some() {
            let ok = pos(vinsts, true, t).is_some_and(|li| {
                vinsts[li..]
                    .iter()
                    .any(|&i| matches!(k.kind(i), InstKind::SetFlag(g) if st.b_waits.contains(g)))
            });
            if !ok {
                return Err(format!(
                    "preload: the vector does not signal the cube's second stage after reading `{name}`; its slots could be overwritten"
                ));
            }
        }
        if pos(&st.b, true, t).is_some() {
            let ok = pos(vinsts, false, t).is_some_and(|si| {
                vinsts[..si]
                    .iter()
                    .any(|&i| matches!(k.kind(i), InstKind::WaitFlag(g) if st.a_sets.contains(g)))
            });
            if !ok {
                return Err(format!(
                    "preload: the vector stores `{name}` without waiting for the cube's first stage; its slots could be overwritten"
                ));
            }
        }
    }
    Ok(())
}

/// What the analysis of one candidate loop found.
struct Plan {
    /// The crossing workspaces to multi-buffer.
    ws: Vec<Tensor>,
    /// The Vector loop that mirrors the Cube loop (when there are any).
    vloop: Option<Inst>,
}

/// Checks that the candidate `f` can be pipelined (an `Err` is the reason
/// it is left alone).
fn analyze(k: &Kernel, cube: Block, vector: Block, f: Inst) -> Result<Plan, String> {
    let Some(body) = k.kind(f).body() else {
        return Err("preload: internal: not a loop".into());
    };
    // The crossing workspaces accessed directly in the body; those also
    // touched by atomics (an accumulator) are not crossings.
    let mut atomics = FxHashSet::default();
    for b in [cube, vector] {
        k.walk(b, &mut |i| {
            if let InstKind::AtomicAdd { tensor, .. } | InstKind::AtomicExpAdd { tensor, .. } =
                k.kind(i)
            {
                atomics.insert(*tensor);
            }
        });
    }
    let mut ws: Vec<Tensor> = Vec::new();
    for &i in &k.blocks[body].insts {
        if let InstKind::Load { tensor, .. } | InstKind::Store { tensor, .. } = k.kind(i)
            && k.tensors[*tensor].role == Role::Workspace
            && !atomics.contains(tensor)
            && !ws.contains(tensor)
        {
            ws.push(*tensor);
        }
    }
    let mut vloop = None;
    for &t in &ws {
        let mut cube_sites = Vec::new();
        loops_accessing(k, cube, t, None, &mut cube_sites);
        if cube_sites != [Some(f)] {
            return Err(format!(
                "preload: workspace `{}` is accessed outside the pipelined loop on the cube",
                k.tensors[t].name
            ));
        }
        let mut sites = Vec::new();
        loops_accessing(k, vector, t, None, &mut sites);
        match sites.as_slice() {
            [Some(v)] if vloop.is_none_or(|x| x == *v) => vloop = Some(*v),
            _ => {
                return Err(format!(
                    "preload: workspace `{}` is not accessed in one vector loop",
                    k.tensors[t].name
                ));
            }
        }
    }
    let st = stages(k, f, &ws, false)?;
    if let Some(v) = vloop
        && let Some(vb) = k.kind(v).body()
    {
        check_vector_order(k, &st, vb, &ws)?;
    }
    Ok(Plan { ws, vloop })
}

/// Multi-buffers the plan's workspaces and rewrites the Cube loop `f` into
/// prologue, steady state and epilogue.
fn pipeline(
    k: &mut Kernel,
    cube: Block,
    ngrid: usize,
    f: Inst,
    d: i64,
    plan: Plan,
    carry: bool,
) -> Result<(), String> {
    let internal = |e: String| format!("preload: internal: {e}");
    let InstKind::For { step: s, body, .. } = k.kind(f).clone() else {
        return Err(internal("not a for".into()));
    };
    let Plan { ws, vloop } = plan;
    // Slots: one more dim of d+1, indexed by the block number mod d+1.
    let slots = d + 1;
    let mut bodies = vec![(f, body)];
    if let Some(v) = vloop {
        let Some(vb) = k.kind(v).body() else {
            return Err(internal("vector loop without body".into()));
        };
        bodies.push((v, vb));
    }
    for &t in &ws {
        let td = &mut k.tensors[t];
        if td.shape.len() < ngrid {
            return Err(format!("preload: workspace `{}` has no grid dims", td.name));
        }
        td.shape.insert(ngrid, Dim::Const(slots as u64));
    }
    for &(l, lb) in &bodies {
        let InstKind::For { lo, step, .. } = k.kind(l).clone() else {
            return Err(internal("not a for".into()));
        };
        let iv = k.blocks[lb].params[0];
        let slot = {
            let mut b = Builder::at(k, lb, 0);
            let rel = bin(&mut b, BinaryOp::Sub, iv, lo)?;
            let sc = iconst(&mut b, step)?;
            let blk = bin(&mut b, BinaryOp::Div, rel, sc)?;
            let nc = iconst(&mut b, slots)?;
            let slot = bin(&mut b, BinaryOp::Rem, blk, nc)?;
            b.kernel.values[slot].name = Some("slot".into());
            slot
        };
        for &i in &k.blocks[lb].insts.clone() {
            if let InstKind::Load { tensor, index } | InstKind::Store { tensor, index, .. } =
                &mut k.insts[i].kind
                && ws.contains(tensor)
            {
                if index.len() < ngrid
                    || !index[..ngrid].iter().all(|x| matches!(x, Index::Point(_)))
                {
                    return Err(err_op(k, i, "does not index its workspace by the grid ivs"));
                }
                index.insert(ngrid, Index::Point(slot));
            }
        }
    }
    // The stages again, now with the slot computation at the head of A.
    let Stages {
        a,
        b,
        y,
        recompute,
        carried_tiles,
        dummy,
        ..
    } = stages(k, f, &ws, carry && d == 1).map_err(internal)?;

    // Rewrite.
    let InstKind::For { lo, hi, init, .. } = k.kind(f).clone() else {
        return Err(internal("not a for".into()));
    };
    let params = k.blocks[body].params.clone();
    let iv = params[0];
    let ncarry = init.len();
    let iv_name = k.values[iv].name.clone().unwrap_or_else(|| "j".into());
    let old_results = k.insts[f].results.clone();
    let Some((pb, pos)) = locate(k, cube, f) else {
        return Err(internal("loop not found".into()));
    };
    k.blocks[pb].insts.remove(pos);
    // Initial values of the carried tiles: stage A's values at block `lo`
    // (the prologue's block; never used when the loop runs no block).
    let mut dmap = FxHashMap::from_iter([(iv, lo)]);
    let tmp = k.blocks.push(Default::default());
    clone_insts(k, &dummy, tmp, &mut dmap)?;
    let moved = std::mem::take(&mut k.blocks[tmp].insts);
    let after_dummy = pos + moved.len();
    k.blocks[pb].insts.splice(pos..pos, moved);
    let tiles0: Vec<Value> = carried_tiles.iter().map(|v| dmap[v]).collect();

    let mut bld = Builder::at(k, pb, after_dummy);
    // Index math that cannot overflow i32 for any step up to i32::MAX and
    // any bounds: `lo + min(d*s, hi - lo)`, `nblocks = max(hi - lo, 0) / s
    // + min(max(hi - lo, 0) % s, 1)`, `drain = lo + max(nblocks - d, 0) * s`.
    let ds = iconst(&mut bld, d.saturating_mul(s).min(i64::from(i32::MAX)))?;
    let span = bin(&mut bld, BinaryOp::Sub, hi, lo)?;
    let pd = bin(&mut bld, BinaryOp::Min, ds, span)?;
    let p_hi = bin(&mut bld, BinaryOp::Add, lo, pd)?;
    let (_, pro) = bld
        .for_loop(lo, p_hi, s, vec![], &iv_name)
        .map_err(|e| format!("preload: {e}"))?;
    let zero = iconst(&mut bld, 0)?;
    let one = iconst(&mut bld, 1)?;
    let sp = bin(&mut bld, BinaryOp::Max, span, zero)?;
    let sc = iconst(&mut bld, s)?;
    let whole = bin(&mut bld, BinaryOp::Div, sp, sc)?;
    let part = bin(&mut bld, BinaryOp::Rem, sp, sc)?;
    let part = bin(&mut bld, BinaryOp::Min, part, one)?;
    let nb = bin(&mut bld, BinaryOp::Add, whole, part)?;
    bld.kernel.values[nb].name = Some("nblocks".into());
    let dc = iconst(&mut bld, d)?;
    let r = bin(&mut bld, BinaryOp::Sub, nb, dc)?;
    let r = bin(&mut bld, BinaryOp::Max, r, zero)?;
    let rs = bin(&mut bld, BinaryOp::Mul, r, sc)?;
    let e = bin(&mut bld, BinaryOp::Add, lo, rs)?;
    let e_lo = bin(&mut bld, BinaryOp::Max, lo, e)?;
    bld.kernel.values[e_lo].name = Some("drain".into());
    let sinit: Vec<Value> = init.iter().copied().chain(tiles0).collect();
    let (sf, steady) = bld
        .for_loop(lo, e_lo, s, sinit, &iv_name)
        .map_err(|e| format!("preload: {e}"))?;
    let steady_results = bld.kernel.insts[sf].results.clone();
    let (ef, epi) = bld
        .for_loop(e_lo, hi, s, steady_results, &iv_name)
        .map_err(|e| format!("preload: {e}"))?;
    let epi_results = k.insts[ef].results.clone();

    // Prologue: A(j). With carried tiles (depth 1) it runs at most once,
    // at `j = lo`, so it reuses the values computed above for that block.
    let mut map = dmap;
    map.insert(iv, k.blocks[pro].params[0]);
    let a_rest: Vec<Inst> = a.iter().copied().filter(|i| !dummy.contains(i)).collect();
    clone_insts(k, &a_rest, pro, &mut map)?;
    append(k, pro, InstKind::Yield(vec![]))?;
    // Steady: A(j + d*s), then B(j) on the tiles of the previous A.
    let sparams = k.blocks[steady].params.clone();
    let ja = {
        let mut b = Builder::at_end(k, steady);
        bin(&mut b, BinaryOp::Add, sparams[0], ds)?
    };
    let mut amap = FxHashMap::from_iter([(iv, ja)]);
    clone_insts(k, &a, steady, &mut amap)?;
    let next: Vec<Value> = carried_tiles.iter().map(|v| amap[v]).collect();
    second_stage(
        k,
        steady,
        &params,
        &sparams,
        &carried_tiles,
        &recompute,
        &b,
        y,
        next,
    )?;
    // Epilogue: B(j), the carried tiles passed through.
    let eparams = k.blocks[epi].params.clone();
    let same = eparams[1 + ncarry..].to_vec();
    second_stage(
        k,
        epi,
        &params,
        &eparams,
        &carried_tiles,
        &recompute,
        &b,
        y,
        same,
    )?;
    for (old, new) in old_results.into_iter().zip(epi_results) {
        k.replace_uses_in(cube, old, new);
    }
    Ok(())
}

/// Fills `dst` with stage B for the loop whose params are `new_params`
/// (`[iv, carried…, tiles…]`; the original params are `params`): the
/// recomputed A values, B, and the yield of B's carried values followed by
/// `tiles_out`.
#[allow(clippy::too_many_arguments)]
fn second_stage(
    k: &mut Kernel,
    dst: Block,
    params: &[Value],
    new_params: &[Value],
    tiles: &[Value],
    recompute: &[Inst],
    b: &[Inst],
    y: Inst,
    tiles_out: Vec<Value>,
) -> Result<(), String> {
    let mut map: FxHashMap<Value, Value> = params
        .iter()
        .copied()
        .zip(new_params.iter().copied())
        .collect();
    for (n, &t) in tiles.iter().enumerate() {
        map.insert(t, new_params[params.len() + n]);
    }
    clone_insts(k, recompute, dst, &mut map)?;
    clone_insts(k, b, dst, &mut map)?;
    let InstKind::Yield(ys) = k.kind(y).clone() else {
        return Err(format!("preload: internal: {y} is not a `yield`"));
    };
    let mut out: Vec<Value> = ys
        .iter()
        .map(|v| map.get(v).copied().unwrap_or(*v))
        .collect();
    out.extend(tiles_out);
    append(k, dst, InstKind::Yield(out))?;
    Ok(())
}

fn iconst(b: &mut Builder<'_>, c: i64) -> Result<Value, String> {
    b.value(InstKind::IConst(c))
        .map_err(|e| format!("preload: {e}"))
}

fn bin(b: &mut Builder<'_>, op: BinaryOp, x: Value, y: Value) -> Result<Value, String> {
    if b.kernel.ty(x) != &Type::Scalar(DType::I32) {
        return Err(format!("preload: loop bound {x} is not an i32 scalar"));
    }
    b.value(InstKind::Binary(op, x, y))
        .map_err(|e| format!("preload: {e}"))
}

/// Appends `kind` to `b` through the typing [`Builder`].
fn append(k: &mut Kernel, b: Block, kind: InstKind) -> Result<Inst, String> {
    Builder::at_end(k, b)
        .ins(kind)
        .map_err(|e| format!("preload: internal: {}", e.0))
}

/// Deep-copies `insts` (with their loop bodies) to the end of `dst`,
/// renaming operands through `map` (values not in it are kept) and adding
/// the new results to it.
fn clone_insts(
    k: &mut Kernel,
    insts: &[Inst],
    dst: Block,
    map: &mut ValueMap,
) -> Result<(), String> {
    Builder::at_end(k, dst)
        .clone_insts(insts, map, Unmapped::Keep)
        .map_err(|e| format!("preload: internal: {e}"))
}

/// `walk` starting at one instruction (itself, then its body).
trait WalkOne {
    fn walk_one(&self, i: Inst, f: &mut impl FnMut(Inst));
}

impl WalkOne for Kernel {
    fn walk_one(&self, i: Inst, f: &mut impl FnMut(Inst)) {
        f(i);
        if let Some(b) = self.kind(i).body() {
            self.walk(b, f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::split;
    use crate::passes::testkit::*;

    fn dims(k: &Kernel, n: i64) -> Vec<(crate::ir::DimId, i64)> {
        k.dims
            .keys()
            .map(|d| (d, if k.dims[d].name == "N" { n } else { 2 }))
            .collect()
    }

    fn split_and_preload(amla: bool, depth: u32) -> Kernel {
        split_and_preload_with(amla, depth, Reuse::Reload)
    }

    fn split_and_preload_with(amla: bool, depth: u32, reuse: Reuse) -> Kernel {
        let mut k = fa_kernel(amla);
        split::run(&mut k).unwrap();
        let r = run_with(&mut k, &PreloadConfig { depth }, reuse).unwrap();
        assert_eq!(r.pipelined, 1, "{r:?}");
        k
    }

    fn count_in_steady(k: &Kernel, op: &str) -> usize {
        let par = k.blocks[k.funcs[0].body]
            .insts
            .iter()
            .find_map(|&i| k.kind(i).body())
            .unwrap();
        let steady = k.blocks[par]
            .insts
            .iter()
            .filter_map(|&i| match k.kind(i) {
                InstKind::For { body, .. } => Some(*body),
                _ => None,
            })
            .nth(1)
            .unwrap();
        k.blocks[steady]
            .insts
            .iter()
            .filter(|&&i| {
                let kind = k.kind(i);
                let name = kind
                    .tensor()
                    .map(|t| k.tensors[t].name.as_str())
                    .unwrap_or("");
                format!("{} {name}", kind.opcode()).trim() == op
            })
            .count()
    }

    #[test]
    fn carrying_loads_each_block_once() {
        let reload = split_and_preload_with(true, 1, Reuse::Reload);
        let carry = split_and_preload_with(true, 1, Reuse::CarryAtDepth1);
        assert_eq!(count_in_steady(&reload, "load kv"), 2, "{}", dump(&reload));
        assert_eq!(count_in_steady(&carry, "load kv"), 1, "{}", dump(&carry));
        // Deeper pipelines reload even when asked to carry.
        let deep = split_and_preload_with(true, 2, Reuse::CarryAtDepth1);
        assert_eq!(count_in_steady(&deep, "load kv"), 2, "{}", dump(&deep));
    }

    /// The Cube's matmul order for `n` blocks at depth `d`: QK tags then PV
    /// tags as the pipeline issues them.
    fn expected_order(n: i64, d: i64) -> Vec<Option<i64>> {
        let mut v = Vec::new();
        for t in 0..n.min(d) {
            v.push(Some(128 * t)); // prologue QK
        }
        for t in 0..(n - d).max(0) {
            v.push(Some(128 * (t + d))); // QK_{t+d}
            v.push(Some(128 * t)); // PV_t
        }
        for t in (n - d).max(0)..n {
            v.push(Some(128 * t)); // epilogue PV
        }
        v
    }

    #[test]
    fn depth_zero_leaves_the_ir_unchanged() {
        let mut k = fa_kernel(true);
        split::run(&mut k).unwrap();
        let before = dump(&k);
        let shapes: Vec<_> = k.tensors.values().map(|t| t.shape.clone()).collect();
        run(&mut k, &PreloadConfig { depth: 0 }).unwrap();
        assert_eq!(dump(&k), before);
        let after: Vec<_> = k.tensors.values().map(|t| t.shape.clone()).collect();
        assert_eq!(shapes, after);
    }

    #[test]
    fn steady_state_issues_the_next_qk_before_waiting() {
        let k = split_and_preload(true, 1);
        let d = dump(&k);
        crate::ir::verify::verify(&k)
            .map_err(|e| format!("{e}\n{d}"))
            .unwrap();
        // The cube's parallel body holds three loops: prologue, steady, epilogue.
        let cube = k.funcs[0].body;
        let par = k.blocks[cube]
            .insts
            .iter()
            .find_map(|&i| k.kind(i).body())
            .unwrap();
        let loops: Vec<Block> = k.blocks[par]
            .insts
            .iter()
            .filter_map(|&i| match k.kind(i) {
                InstKind::For { body, .. } => Some(*body),
                _ => None,
            })
            .collect();
        assert_eq!(loops.len(), 3, "{d}");
        let pos = |b: Block, f: &dyn Fn(&InstKind) -> bool| {
            k.blocks[b].insts.iter().position(|&i| f(k.kind(i)))
        };
        let is_mm = |x: &InstKind| matches!(x, InstKind::Matmul { .. });
        let is_wait = |x: &InstKind| matches!(x, InstKind::WaitFlag(_));
        // Prologue: QK only, no waits.
        assert!(
            pos(loops[0], &is_mm).is_some() && pos(loops[0], &is_wait).is_none(),
            "{d}"
        );
        // Steady: QK_{t+1}, then the wait for P_t, then PV_t.
        let steady = loops[1];
        let qk = pos(steady, &is_mm).unwrap();
        let w = pos(steady, &is_wait).unwrap();
        let mms: Vec<usize> = k.blocks[steady]
            .insts
            .iter()
            .enumerate()
            .filter(|(_, i)| is_mm(k.kind(**i)))
            .map(|(n, _)| n)
            .collect();
        assert!(qk < w && mms.len() == 2 && mms[1] > w, "{d}");
        // Epilogue: PV only.
        let epi_mms = k.blocks[loops[2]]
            .insts
            .iter()
            .filter(|&&i| is_mm(k.kind(i)))
            .count();
        assert_eq!(epi_mms, 1, "{d}");
        // S and P have d+1 = 2 slots after the grid dim.
        for name in ["ws_s", "ws_pb"] {
            let t = k.tensors.values().find(|t| t.name == name).unwrap();
            assert_eq!(t.shape[1], Dim::Const(2), "{name}: {:?}", t.shape);
        }
        let acc = k.tensors.values().find(|t| t.name == "acc_ws").unwrap();
        assert_eq!(acc.shape.len(), 3);
    }

    #[test]
    fn every_depth_and_block_count_runs_in_order_without_races() {
        for (amla, reuse) in [
            (false, Reuse::Reload),
            (true, Reuse::Reload),
            (false, Reuse::CarryAtDepth1),
            (true, Reuse::CarryAtDepth1),
        ] {
            for depth in [1u32, 2, 3] {
                let k = split_and_preload_with(amla, depth, reuse);
                let d = dump(&k);
                crate::ir::verify::verify(&k)
                    .map_err(|e| format!("{e}\n{d}"))
                    .unwrap();
                for n in [0i64, 1, 2, 3, 4, 7] {
                    for cube_first in [true, false] {
                        let ctx =
                            format!("amla={amla} depth={depth} n={n} cube_first={cube_first}");
                        let r = simulate(&k, &dims(&k, 128 * n), cube_first)
                            .map_err(|e| format!("{ctx}: {e}\n{d}"))
                            .unwrap();
                        assert_eq!(
                            r.cube_matmuls,
                            expected_order(n, i64::from(depth)),
                            "{ctx}\n{d}"
                        );
                        if amla {
                            let log: Vec<_> =
                                r.gm_log.into_iter().filter(|e| e.0 == "acc_ws").collect();
                            let mut want = Vec::new();
                            for j in 0..n {
                                want.push(("acc_ws".to_string(), "atomic_exp_add", Some(128 * j)));
                                want.push(("acc_ws".to_string(), "atomic_add", Some(128 * j)));
                            }
                            want.push(("acc_ws".to_string(), "load", None));
                            assert_eq!(log, want, "{ctx}\n{d}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn single_slot_would_race() {
        // The simulator sees the hazard the extra slot removes: force every
        // block into slot 0 and the cube's early QK overwrites S (or the
        // vector's P) before it was read.
        let mut k = split_and_preload(false, 1);
        let rems: Vec<Value> = k
            .insts
            .values()
            .filter_map(|d| match d.kind {
                InstKind::Binary(BinaryOp::Rem, _, m) => Some(m),
                _ => None,
            })
            .collect();
        for m in rems {
            let i = k.def_inst(m).unwrap();
            k.insts[i].kind = InstKind::IConst(1);
        }
        let e = simulate(&k, &dims(&k, 128 * 3), true).unwrap_err();
        assert!(e.contains("overwritten"), "{e}");
    }

    fn lowered(file: &str) -> Kernel {
        let path = format!("{}/../dsl-examples/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        let src = crate::diag::SourceFile::new(file, text);
        let h = crate::check::check(&src, &crate::check::Defines::new())
            .unwrap_or_else(|e| panic!("{file}: {e:?}"));
        crate::lower::lower(&h).unwrap_or_else(|e| panic!("{file}: {e}"))
    }

    fn verified(k: &Kernel, what: &str) {
        if let Err(e) = crate::ir::verify::verify(k) {
            panic!("{what}: {e}\n{}", crate::ir::print::print(k));
        }
    }

    /// Every example kernel, with and without `mul-to-add`, through `split`
    /// and `preload` at depths 0..=2: verified, and simulated without
    /// deadlock, race or unbalanced flags for several block counts.
    #[test]
    fn examples_split_and_preload() {
        let files = [
            "mla_decode.amla",
            "mla_decode_mtp.amla",
            "mla_decode_paged.amla",
            "gqa_decode.amla",
            "flash_prefill.amla",
        ];
        for file in files {
            for (m2a, reuse) in [
                (false, Reuse::Reload),
                (true, Reuse::Reload),
                (true, Reuse::CarryAtDepth1),
            ] {
                for depth in 0..=2u32 {
                    let what = format!("{file} mul-to-add={m2a} {reuse:?} depth={depth}");
                    let mut k = lowered(file);
                    if m2a {
                        crate::passes::mul_to_add::run(&mut k, &Default::default())
                            .unwrap_or_else(|e| panic!("{what}: {e}"));
                    }
                    verified(&k, &format!("{what} (input)"));
                    split::run(&mut k).unwrap_or_else(|e| panic!("{what}: {e}"));
                    verified(&k, &format!("{what} after split"));
                    let rep = run_with(&mut k, &PreloadConfig { depth }, reuse)
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                    if depth > 0 {
                        assert_eq!(rep.pipelined, 1, "{what}: {rep:?}");
                    }
                    verified(&k, &format!("{what} after preload"));
                    let text = crate::ir::print::print(&k);
                    for n in [0i64, 1, 2, 5] {
                        for cube_first in [true, false] {
                            simulate(&k, &dims(&k, 128 * n), cube_first).unwrap_or_else(|e| {
                                panic!("{what} n={n} cube_first={cube_first}: {e}\n{text}")
                            });
                        }
                    }
                }
            }
        }
    }

    /// Every hand-written `any` sample of `tests/ir` through `split` and
    /// `preload`, verified and simulated.
    #[test]
    fn ir_samples_split_and_preload() {
        let dir = format!("{}/../tests/ir", env!("CARGO_MANIFEST_DIR"));
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "tir"))
            .collect();
        files.sort();
        let mut ran = 0;
        for path in files {
            let text = std::fs::read_to_string(&path).unwrap();
            let k0 = crate::ir::parse::parse(&text).unwrap();
            if k0.funcs.len() != 1 || k0.funcs[0].unit != Unit::Any {
                continue;
            }
            ran += 1;
            for depth in 0..=2u32 {
                let what = format!("{} depth={depth}", path.display());
                let mut k = k0.clone();
                split::run(&mut k).unwrap_or_else(|e| panic!("{what}: {e}"));
                verified(&k, &format!("{what} after split"));
                let rep =
                    run(&mut k, &PreloadConfig { depth }).unwrap_or_else(|e| panic!("{what}: {e}"));
                let _ = rep;
                verified(&k, &format!("{what} after preload"));
                let text = crate::ir::print::print(&k);
                for n in [0i64, 1, 2, 5] {
                    for cube_first in [true, false] {
                        simulate(&k, &dims(&k, 64 * n), cube_first).unwrap_or_else(|e| {
                            panic!("{what} n={n} cube_first={cube_first}: {e}\n{text}")
                        });
                    }
                }
            }
        }
        assert!(ran >= 2, "only {ran} samples ran");
    }

    #[test]
    fn unsplit_kernels_are_refused() {
        let mut k = fa_kernel(true);
        let e = run(&mut k, &PreloadConfig::default()).unwrap_err();
        assert!(e.contains("run split first"), "{e}");
    }
}
