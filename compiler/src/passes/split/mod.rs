//! `split`: the Cube/Vector split.
//!
//! Input: the single `any` function lowering produces (scalars, then one
//! `parallel` over the grid). Output: `funcs = [cube, vector]` (the Vector
//! function with `sub_blocks: 1`), every tile value that crosses between the
//! two units passing through a GM workspace with a flag pair, and every GM
//! tensor that both units touch ordered by flags.
//!
//! # Algorithm
//!
//! 1. **Homes.** Every value gets a home: `cube`, `vector` or `both`
//!    (duplicated), computed to a fixpoint:
//!    - `matmul` → Cube; element-wise ops, reductions, broadcasts, iotas,
//!      selects, bitcasts, `atomic_exp_add` → Vector;
//!    - pure scalar ops over `both` operands (`iconst`, `fconst`, `dim`,
//!      scalar arithmetic, scalar loads of inputs such as
//!      `block_table[b, j / 64]`) → `both`;
//!    - *data movement* (`load`, `extract`, `copy`, `reshape`,
//!      `transpose`, `cast`) follows its users: it goes to the Cube when every
//!      user is on the Cube and its operand is available there (so the K
//!      block `load` and its `extract` go to the Cube), a load of a kernel
//!      input used on both sides is duplicated, everything else stays on the
//!      Vector (so `cast %p bf16` of the Vector-computed `p` stays on the
//!      Vector and P crosses as bf16);
//!    - `store` / `atomic_add` run where their value lives; loops are
//!      replicated and a loop-carried value lives where its `yield` operand
//!      lives.
//! 2. **Crossings.** A value whose home is one unit and that is used on the
//!    other gets a workspace `ws_<name>: dtype[grid dims…, tile shape…]`
//!    (`<name>` is the value's source name, else its opcode, uniquified)
//!    indexed by the parallel ivs (every work item has its own slot) and a
//!    flag: right after its definition the producer does `store` + `set_flag`,
//!    and at the same program point the consumer does `wait_flag` + `load`.
//! 3. **GM order.** For every output/workspace tensor that both units access
//!    (e.g. AMLA's `acc_ws`, updated by the Vector's `atomic_exp_add` and the
//!    Cube's `atomic_add`, and read back by the Vector), accesses are ordered
//!    as in the sequential program by passing a *token* between the units:
//!    when the next access is on the other unit, the last accessor sets a
//!    flag (right after its last access) and the next one waits before its
//!    access. A loop whose body accesses the tensor from both units starts
//!    every iteration with the token *pending* for the unit of its first
//!    access: the other unit sets the loop's flag once before the loop (a
//!    credit) and again at the end of every iteration, and the first access
//!    of every iteration waits for it; after the loop one set is pending and
//!    is consumed by the next access or drained at the end of the work item.
//!    This stays balanced for any trip count, including 0, without `if`.
//! 4. **Replication.** Each unit gets a copy of the loop tree holding its own
//!    ops and carried values, plus the flag/workspace ops above; then
//!    `dce::remove_dead` drops what a unit does not need (empty `for`s go,
//!    the `parallel` stays).
//! 5. **Back-pressure.** A crossing inside a `for` reuses its slot every
//!    iteration, so the producer's store of iteration j+1 must wait until the
//!    consumer has loaded iteration j. The pass proves this from the flags
//!    already there: with an edge E' from consumer to producer in the same
//!    loop body (one set, one wait) the producer waits, between its two
//!    stores, for a set the consumer makes after its load when
//!    (credit 0) the producer's wait on E' precedes its store, or the wait
//!    follows the store and the consumer's set follows its load;
//!    (credit 1, e.g. a GM-order loop flag) the wait precedes the store and
//!    the set follows the load. In FlashAttention, `S` is protected by the
//!    `P` edge (the Cube waits for P_j, which the Vector sets after loading
//!    S_j, before storing S_{j+1}) and `P` by `S` (the Vector waits for
//!    S_{j+1} before storing P_{j+1}, and the Cube sets S_{j+1} after loading
//!    P_j). When no edge proves it, a "slot free" flag G is added: the
//!    consumer sets G after its load (and once before the loop, a credit),
//!    the producer waits G before its store (and once after the loop, to
//!    drain the credit).
//!
//! Flags are numbered 0.. in order of creation, one producer→consumer edge
//! per id; more than 16 is an error. Every set precedes its matching wait in
//! the original sequential order, which is a witness that the two programs
//! cannot deadlock. The pass is deterministic: it walks the IR in program
//! order and uses no hash-map iteration order.
//!
//! # Example
//!
//! Before:
//!
//! ```text
//! kernel tiny
//! dim B
//! input q: bf16[B, 128, 64]
//! input kv: bf16[B, 128, 64]
//! output out: f32[B, 128, 32]
//!
//! func any {
//!   %c0 = iconst 0 : i32
//!   %B = dim B : i32
//!   parallel %b in %c0..%B {
//!     %q = load q[%b, .., ..] : bf16[128, 64]
//!     %k = load kv[%b, .., ..] : bf16[128, 64]
//!     %s = matmul %q, %k nk : f32[128, 128]
//!     %p = exp %s : f32[128, 128]
//!     %pb = cast %p to bf16 : bf16[128, 128]
//!     %v = extract %k[.., %c0+:32] : bf16[128, 32]
//!     %o = matmul %pb, %v kn : f32[128, 32]
//!     store out[%b, .., ..], %o
//!   }
//! }
//! ```
//!
//! After (`ws_s` carries S to the Vector, `ws_pb` carries bf16 P back; the
//! K block load and its `extract` stay on the Cube):
//!
//! ```text
//! kernel tiny
//! dim B
//! input q: bf16[B, 128, 64]
//! input kv: bf16[B, 128, 64]
//! output out: f32[B, 128, 32]
//! workspace ws_s: f32[B, 128, 128]
//! workspace ws_pb: bf16[B, 128, 128]
//!
//! func cube {
//!   %c0 = iconst 0 : i32
//!   %B = dim B : i32
//!   parallel %b in %c0..%B {
//!     %q = load q[%b, .., ..] : bf16[128, 64]
//!     %k = load kv[%b, .., ..] : bf16[128, 64]
//!     %s = matmul %q, %k nk : f32[128, 128]
//!     store ws_s[%b, .., ..], %s
//!     set_flag 0
//!     wait_flag 1
//!     %pb = load ws_pb[%b, .., ..] : bf16[128, 128]
//!     %v = extract %k[.., %c0+:32] : bf16[128, 32]
//!     %o = matmul %pb, %v kn : f32[128, 32]
//!     store out[%b, .., ..], %o
//!   }
//! }
//!
//! func vector {
//!   %c0 = iconst 0 : i32
//!   %B = dim B : i32
//!   parallel %b in %c0..%B {
//!     wait_flag 0
//!     %s = load ws_s[%b, .., ..] : f32[128, 128]
//!     %p = exp %s : f32[128, 128]
//!     %pb = cast %p to bf16 : bf16[128, 128]
//!     store ws_pb[%b, .., ..], %pb
//!     set_flag 1
//!   }
//! }
//! ```

use rustc_hash::{FxHashMap, FxHashSet};

use crate::ir::{
    Block, DType, Dim, Func, Index, Inst, InstKind, Kernel, Tensor, Type, Unit, Value, inst::Axis,
};
use crate::ir::{Role, TensorData};

mod analysis;
mod back_pressure;
mod crossings;
mod gm_order;
mod homes;
mod replicate;

use analysis::Analysis;

/// The `split` pass (see the module docs).
#[derive(Copy, Clone, Debug, Default)]
pub struct Split;

impl super::Pass for Split {
    fn name(&self) -> &'static str {
        "split"
    }

    fn run(&self, k: &mut Kernel, cx: &super::PassContext) -> Result<(), super::PassError> {
        run_with(k, cx.target.flags.cross_core_ids).map_err(|e| match e {
            SplitError::TooManyFlags(message) => super::PassError::User {
                message,
                span: None,
            },
            SplitError::Internal(message) => super::PassError::Internal {
                pass: "split".into(),
                message,
            },
        })
    }

    fn explain(&self) -> &'static str {
        "assigns every op to the Cube or the Vector, making a cube and a vector func joined by GM workspaces and set/wait flags"
    }
}

/// Why `split` failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SplitError {
    /// The kernel needs more cross-unit flags than the target has.
    TooManyFlags(String),
    /// Unexpected input IR (a compiler bug upstream), described.
    Internal(String),
}

impl std::fmt::Display for SplitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SplitError::TooManyFlags(m) | SplitError::Internal(m) => f.write_str(m),
        }
    }
}

/// Splits the single `any` function of `k` into `[cube, vector]`, with the
/// flag ids of the default target; see [`run_with`].
pub fn run(k: &mut Kernel) -> Result<(), String> {
    let flags = crate::target::Target::ascend910b().flags.cross_core_ids;
    run_with(k, flags).map_err(|e| e.to_string())
}

/// Splits the single `any` function of `k` into `[cube, vector]` using at
/// most `max_flags` flag ids. On error `k` is left unchanged.
///
/// Errors (never panics) name what was unexpected: not exactly one `any`
/// function, no single top-level `parallel`, grid axes that do not start at
/// a non-negative `iconst` or a `dim`, flags already present, a value
/// crossing units outside the `parallel`, a `bool` value crossing units, or
/// more flags needed than `max_flags` ([`SplitError::TooManyFlags`]).
pub fn run_with(k: &mut Kernel, max_flags: u32) -> Result<(), SplitError> {
    let mut work = k.clone();
    split_kernel(&mut work, max_flags).map_err(|e| {
        if e.starts_with(TOO_MANY) {
            SplitError::TooManyFlags(e)
        } else {
            SplitError::Internal(e)
        }
    })?;
    *k = work;
    Ok(())
}

const TOO_MANY: &str = "split: the kernel needs more than";

fn split_kernel(k: &mut Kernel, max_flags: u32) -> Result<(), String> {
    let an = Analysis::new(k)?;
    let mut s = SplitState::new(an, max_flags);
    s.compute_homes(k)?;
    s.plan_crossings(k)?;
    s.plan_gm_order(k)?;
    let cube = s.build(k, Unit::Cube)?;
    let vector = s.build(k, Unit::Vector)?;
    k.funcs = vec![cube, vector];
    super::dce::remove_dead(k);
    s.add_back_pressure(k)?;
    Ok(())
}

/// Where a value lives after the split.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Home {
    Both,
    Cube,
    Vector,
}

impl Home {
    fn has(self, u: Unit) -> bool {
        match self {
            Home::Both => true,
            Home::Cube => u == Unit::Cube,
            Home::Vector => u == Unit::Vector,
        }
    }
    fn unit(self) -> Option<Unit> {
        match self {
            Home::Both => None,
            Home::Cube => Some(Unit::Cube),
            Home::Vector => Some(Unit::Vector),
        }
    }
    fn of(u: Unit) -> Home {
        if u == Unit::Cube {
            Home::Cube
        } else {
            Home::Vector
        }
    }
}

fn other(u: Unit) -> Unit {
    if u == Unit::Cube {
        Unit::Vector
    } else {
        Unit::Cube
    }
}

const NEED_CUBE: u8 = 1;
const NEED_VECTOR: u8 = 2;

fn need_bits(h: Home) -> u8 {
    match h {
        Home::Both => NEED_CUBE | NEED_VECTOR,
        Home::Cube => NEED_CUBE,
        Home::Vector => NEED_VECTOR,
    }
}

/// How an instruction uses a value.
#[derive(Copy, Clone, Debug)]
enum Use {
    /// An ordinary operand of `Inst`.
    Op(Inst),
    /// Initial value of carried value `usize` of the `for` `Inst`.
    Init(Inst, usize),
    /// Yielded as carried value `usize` of the `for` `Inst`.
    Yield(Inst, usize),
    /// A loop bound (needed by every unit that runs the loop).
    Bound,
}

/// A program point of the original function where the split inserts ops.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
enum Pos {
    Start(Block),
    Before(Inst),
    After(Inst),
    End(Block),
}

/// An op the split inserts at a [`Pos`] on one unit.
#[derive(Clone, Debug)]
enum Emit {
    Set(u32),
    Wait(u32),
    /// `store ws[ivs…, ..], value` (value of the original function).
    Store {
        ws: Tensor,
        value: Value,
    },
    /// `value' = load ws[ivs…, ..]`; `value'` replaces `value` on this unit.
    Load {
        ws: Tensor,
        value: Value,
    },
}

/// One value crossing between the units.
#[derive(Clone, Debug)]
struct Crossing {
    ws: Tensor,
    from: Unit,
    to: Unit,
    /// The innermost `for` of the original function around the crossing.
    in_for: Option<Inst>,
}

/// The pass's working state.
struct SplitState {
    an: Analysis,
    home: FxHashMap<Value, Home>,
    /// Unit of each `store` / `atomic_add` / `atomic_exp_add`.
    eff: FxHashMap<Inst, Unit>,
    parent: FxHashMap<Inst, Block>,
    emits: FxHashMap<(Pos, Unit), Vec<Emit>>,
    crossings: Vec<Crossing>,
    next_flag: u32,
    max_flags: u32,
    /// Carried values each unit keeps, per original `for` body.
    for_map: FxHashMap<(Inst, Unit), Inst>,
}

impl SplitState {
    fn new(an: Analysis, max_flags: u32) -> SplitState {
        SplitState {
            an,
            home: FxHashMap::default(),
            eff: FxHashMap::default(),
            parent: FxHashMap::default(),
            emits: FxHashMap::default(),
            crossings: Vec::new(),
            next_flag: 0,
            max_flags,
            for_map: FxHashMap::default(),
        }
    }

    fn new_flag(&mut self) -> Result<u32, String> {
        let f = self.next_flag;
        if f >= self.max_flags {
            return Err(format!("{TOO_MANY} {} cross-unit flags", self.max_flags));
        }
        self.next_flag += 1;
        Ok(f)
    }

    fn emit(&mut self, p: Pos, u: Unit, e: Emit) {
        self.emits.entry((p, u)).or_default().push(e);
    }
}

fn lookup(map: &FxHashMap<Value, Value>, v: Value, u: Unit) -> Result<Value, String> {
    map.get(&v)
        .copied()
        .ok_or_else(|| format!("split: internal: {v} is not available on the {}", u.name()))
}

fn copy_span(k: &mut Kernel, from: Inst, to: Inst) {
    let s = *k.spans.get(from);
    if s.is_some() {
        k.spans.set(to, s);
    }
}

/// Appends `kind` to `b` through the typing [`crate::ir::Builder`].
fn append(k: &mut Kernel, b: Block, kind: InstKind) -> Result<Inst, String> {
    crate::ir::Builder::at_end(k, b)
        .ins(kind)
        .map_err(|e| format!("split: internal: {}", e.0))
}

/// Inserts `kind` into `b` at `pos` (at the end when `pos` is past it)
/// through the typing [`crate::ir::Builder`].
fn insert(k: &mut Kernel, b: Block, pos: usize, kind: InstKind) -> Result<Inst, String> {
    let pos = pos.min(k.blocks[b].insts.len());
    crate::ir::Builder::at(k, b, pos)
        .ins(kind)
        .map_err(|e| format!("split: internal: {}", e.0))
}

fn fill_parents(k: &Kernel, b: Block, parent: &mut FxHashMap<Inst, Block>) {
    for &i in &k.blocks[b].insts {
        parent.insert(i, b);
        if let Some(body) = k.kind(i).body() {
            fill_parents(k, body, parent);
        }
    }
}

#[cfg(test)]
mod tests;
