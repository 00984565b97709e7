//! `split`: the Cube/Vector split (DESIGN.md §1).
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

use std::collections::{HashMap, HashSet};

use crate::ir::{
    Block, DType, Dim, Func, Index, Inst, InstKind, Kernel, Tensor, Type, Unit, Value, inst::Axis,
};
use crate::ir::{Role, TensorData};

/// Number of cross-unit flag ids of the Ascend 910B (the pass takes the
/// real count from the target; this is the default of [`run`]).
pub const MAX_FLAGS: u32 = 16;

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
/// default [`MAX_FLAGS`] flag ids; see [`run_with`].
pub fn run(k: &mut Kernel) -> Result<(), String> {
    run_with(k, MAX_FLAGS).map_err(|e| e.to_string())
}

/// Splits the single `any` function of `k` into `[cube, vector]` using at
/// most `max_flags` flag ids. On error `k` is left unchanged.
///
/// Errors (never panics) name what was unexpected: not exactly one `any`
/// function, no single top-level `parallel`, grid axes that do not start at
/// `iconst 0`, flags already present, a value crossing units outside the
/// `parallel`, a `bool` value crossing units, or more flags needed than
/// `max_flags` ([`SplitError::TooManyFlags`]).
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

/// Facts about the `any` function.
struct Analysis {
    top: Block,
    par: Inst,
    par_body: Block,
    ivs: Vec<Value>,
    grid: Vec<Dim>,
    /// Per grid axis, what its iv is divided by to index a workspace.
    grid_div: Vec<i64>,
    /// Every instruction in pre-order.
    order: Vec<Inst>,
    /// The loop that owns a block.
    owner: HashMap<Block, Inst>,
    /// Uses of each value.
    uses: HashMap<Value, Vec<Use>>,
}

impl Analysis {
    fn new(k: &Kernel) -> Result<Analysis, String> {
        let [f] = k.funcs.as_slice() else {
            return Err(format!(
                "split: expected one `any` function, found {}",
                k.funcs.len()
            ));
        };
        if f.unit != Unit::Any {
            return Err(format!(
                "split: expected an `any` function, found `{}` (already split?)",
                f.unit.name()
            ));
        }
        let top = f.body;
        let pars: Vec<Inst> = k.blocks[top]
            .insts
            .iter()
            .copied()
            .filter(|&i| matches!(k.kind(i), InstKind::Parallel { .. }))
            .collect();
        let [par] = pars.as_slice() else {
            return Err(format!(
                "split: expected exactly one top-level `parallel`, found {}",
                pars.len()
            ));
        };
        let par = *par;
        let InstKind::Parallel { axes, body } = k.kind(par) else {
            unreachable!("filtered on Parallel")
        };
        let par_body = *body;
        let mut grid = Vec::new();
        let mut grid_div = Vec::new();
        for (n, ax) in axes.iter().enumerate() {
            let (d, div) = grid_dim(k, ax).map_err(|e| format!("split: grid axis {n}: {e}"))?;
            grid.push(d);
            grid_div.push(div);
        }
        let ivs = k.blocks[par_body].params.clone();
        let mut an = Analysis {
            top,
            par,
            par_body,
            ivs,
            grid,
            grid_div,
            order: Vec::new(),
            owner: HashMap::new(),
            uses: HashMap::new(),
        };
        an.scan(k, top)?;
        Ok(an)
    }

    fn scan(&mut self, k: &Kernel, b: Block) -> Result<(), String> {
        for &i in &k.blocks[b].insts {
            self.order.push(i);
            let kind = k.kind(i);
            match kind {
                InstKind::SetFlag(_) | InstKind::WaitFlag(_) => {
                    return Err(format!(
                        "split: unexpected `{}` in the input (flags are the split's to add)",
                        kind.opcode()
                    ));
                }
                InstKind::Parallel { axes, body } => {
                    if i != self.par {
                        return Err("split: nested `parallel`".into());
                    }
                    for ax in axes {
                        self.add_use(ax.lo, Use::Bound);
                        self.add_use(ax.hi, Use::Bound);
                    }
                    self.owner.insert(*body, i);
                    self.scan(k, *body)?;
                }
                InstKind::For {
                    lo, hi, init, body, ..
                } => {
                    self.add_use(*lo, Use::Bound);
                    self.add_use(*hi, Use::Bound);
                    for (n, &v) in init.iter().enumerate() {
                        self.add_use(v, Use::Init(i, n));
                    }
                    let params = &k.blocks[*body].params;
                    if params.len() != init.len() + 1 {
                        return Err(format!(
                            "split: `for` {i} has {} body params for {} carried values",
                            params.len(),
                            init.len()
                        ));
                    }
                    match k.blocks[*body].insts.last().map(|&y| k.kind(y)) {
                        Some(InstKind::Yield(vs)) if vs.len() == init.len() => {}
                        _ => {
                            return Err(format!(
                                "split: the body of `for` {i} does not end in a `yield` of {} values",
                                init.len()
                            ));
                        }
                    }
                    self.owner.insert(*body, i);
                    self.scan(k, *body)?;
                }
                InstKind::Yield(vs) => {
                    let Some(&f) = self.owner.get(&b) else {
                        return Err("split: `yield` outside a `for`".into());
                    };
                    for (n, &v) in vs.iter().enumerate() {
                        self.add_use(v, Use::Yield(f, n));
                    }
                }
                _ => kind.for_each_operand(|v| self.add_use(v, Use::Op(i))),
            }
        }
        Ok(())
    }

    fn add_use(&mut self, v: Value, u: Use) {
        self.uses.entry(v).or_default().push(u);
    }
}

/// The workspace extent of a grid axis and the divisor that turns its iv
/// into a slot index: `0..hi step s` has `ceil(hi / s)` points when `hi` is
/// known at compile time; for a launch-time `hi` and `s > 1` the workspace
/// is indexed by the iv itself (extent `hi`, sparse but correct).
fn grid_dim(k: &Kernel, ax: &Axis) -> Result<(Dim, i64), String> {
    let lo = k.def_inst(ax.lo).map(|i| k.kind(i));
    if !matches!(lo, Some(InstKind::IConst(0))) {
        return Err(format!("lower bound {} is not `iconst 0`", ax.lo));
    }
    let s = ax.step;
    let known = |n: u64| (Dim::Const(n.div_ceil(s as u64).max(1)), s);
    match k.def_inst(ax.hi).map(|i| k.kind(i)) {
        Some(InstKind::IConst(n)) if *n > 0 => Ok(known(*n as u64)),
        Some(InstKind::DimValue(d)) => match k.dims[*d].value {
            Some(n) => Ok(known(n)),
            None => Ok((Dim::Sym(*d), 1)),
        },
        _ => Err(format!(
            "upper bound {} is neither a `dim` nor a positive `iconst`",
            ax.hi
        )),
    }
}

/// The pass's working state.
struct SplitState {
    an: Analysis,
    home: HashMap<Value, Home>,
    /// Unit of each `store` / `atomic_add` / `atomic_exp_add`.
    eff: HashMap<Inst, Unit>,
    parent: HashMap<Inst, Block>,
    emits: HashMap<(Pos, Unit), Vec<Emit>>,
    crossings: Vec<Crossing>,
    next_flag: u32,
    max_flags: u32,
    /// Carried values each unit keeps, per original `for` body.
    for_map: HashMap<(Inst, Unit), Inst>,
}

impl SplitState {
    fn new(an: Analysis, max_flags: u32) -> SplitState {
        SplitState {
            an,
            home: HashMap::new(),
            eff: HashMap::new(),
            parent: HashMap::new(),
            emits: HashMap::new(),
            crossings: Vec::new(),
            next_flag: 0,
            max_flags,
            for_map: HashMap::new(),
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

    /// Units that need `v` given the current homes (unknown users ignored).
    fn needs(&self, k: &Kernel, v: Value) -> u8 {
        let mut bits = 0;
        for u in self.an.uses.get(&v).map(Vec::as_slice).unwrap_or(&[]) {
            bits |= match *u {
                Use::Bound => NEED_CUBE | NEED_VECTOR,
                Use::Init(f, n) | Use::Yield(f, n) => {
                    let InstKind::For { body, .. } = k.kind(f) else {
                        continue;
                    };
                    match self.home.get(&k.blocks[*body].params[n + 1]) {
                        Some(h) => need_bits(*h),
                        None => 0,
                    }
                }
                Use::Op(i) => match k.kind(i) {
                    InstKind::Store { value, .. } | InstKind::AtomicAdd { value, .. }
                        if *value == v =>
                    {
                        0
                    }
                    InstKind::Store { .. }
                    | InstKind::AtomicAdd { .. }
                    | InstKind::AtomicExpAdd { .. } => match self.eff.get(&i) {
                        Some(u) => need_bits(Home::of(*u)),
                        None => 0,
                    },
                    _ => match k.insts[i].results.first().and_then(|r| self.home.get(r)) {
                        Some(h) => need_bits(*h),
                        None => 0,
                    },
                },
            };
        }
        bits
    }

    fn set_home(&mut self, v: Value, h: Home, changed: &mut bool) {
        if self.home.get(&v) != Some(&h) {
            self.home.insert(v, h);
            *changed = true;
        }
    }

    /// Step 1: the home of every value, to a fixpoint.
    fn compute_homes(&mut self, k: &Kernel) -> Result<(), String> {
        let limit = 4 * self.an.order.len() + 8;
        for _ in 0..limit {
            let mut changed = false;
            for n in 0..self.an.order.len() {
                let i = self.an.order[n];
                self.home_of_inst(k, i, &mut changed);
            }
            if !changed {
                return Ok(());
            }
        }
        Err("split: the unit assignment did not converge".into())
    }

    fn home_of_inst(&mut self, k: &Kernel, i: Inst, changed: &mut bool) {
        let kind = k.kind(i);
        let results = &k.insts[i].results;
        match kind {
            InstKind::Parallel { body, .. } => {
                for &p in &k.blocks[*body].params {
                    self.set_home(p, Home::Both, changed);
                }
            }
            InstKind::For { init, body, .. } => {
                let params = &k.blocks[*body].params;
                self.set_home(params[0], Home::Both, changed);
                let Some(&y) = k.blocks[*body].insts.last() else {
                    return;
                };
                let InstKind::Yield(ys) = k.kind(y) else {
                    return;
                };
                for c in 0..init.len() {
                    let hi = self.home.get(&init[c]).copied();
                    let hy = self.home.get(&ys[c]).copied();
                    let h = match (hi, hy) {
                        (_, Some(h @ (Home::Cube | Home::Vector))) => h,
                        (Some(h @ (Home::Cube | Home::Vector)), _) => h,
                        (Some(Home::Both), _) => Home::Both,
                        (None, Some(Home::Both)) => Home::Both,
                        (None, None) => Home::Vector,
                    };
                    self.set_home(params[c + 1], h, changed);
                    self.set_home(results[c], h, changed);
                }
            }
            InstKind::Yield(_) => {}
            InstKind::Store { value, .. } | InstKind::AtomicAdd { value, .. } => {
                let u = self
                    .home
                    .get(value)
                    .and_then(|h| h.unit())
                    .unwrap_or(Unit::Vector);
                if self.eff.insert(i, u) != Some(u) {
                    *changed = true;
                }
            }
            InstKind::AtomicExpAdd { .. } => {
                if self.eff.insert(i, Unit::Vector) != Some(Unit::Vector) {
                    *changed = true;
                }
            }
            _ => {
                let h = self.pure_home(k, i);
                for &r in results {
                    self.set_home(r, h, changed);
                }
            }
        }
    }

    fn pure_home(&self, k: &Kernel, i: Inst) -> Home {
        let kind = k.kind(i);
        let results = &k.insts[i].results;
        let scalar = results.iter().all(|&r| matches!(k.ty(r), Type::Scalar(_)));
        let mut ops = Vec::new();
        kind.for_each_operand(|v| ops.push(self.home.get(&v).copied()));
        let all_both = ops.iter().all(|h| *h == Some(Home::Both));
        let first_excl = ops
            .iter()
            .find_map(|h| h.filter(|h| *h != Home::Both))
            .unwrap_or(Home::Vector);
        let by_users = |dup: bool| {
            let need = results.iter().fold(0, |b, &r| b | self.needs(k, r));
            match need {
                NEED_CUBE => Home::Cube,
                x if x == NEED_CUBE | NEED_VECTOR && dup => Home::Both,
                _ => Home::Vector,
            }
        };
        match kind {
            InstKind::IConst(_)
            | InstKind::FConst(..)
            | InstKind::DimValue(_)
            | InstKind::SubBlock => Home::Both,
            InstKind::Matmul { .. } => Home::Cube,
            InstKind::Load { tensor, .. } => {
                let input = k.tensors[*tensor].role == Role::Input;
                if !all_both {
                    first_excl
                } else if scalar {
                    if input { Home::Both } else { Home::Vector }
                } else {
                    by_users(input)
                }
            }
            InstKind::Extract { .. }
            | InstKind::Copy { .. }
            | InstKind::Reshape(..)
            | InstKind::Transpose(_)
            | InstKind::Cast(..) => {
                if all_both {
                    if scalar { Home::Both } else { by_users(true) }
                } else if first_excl == Home::Cube
                    && ops
                        .iter()
                        .all(|h| matches!(h, Some(Home::Cube | Home::Both)))
                    && by_users(false) == Home::Cube
                {
                    Home::Cube
                } else {
                    Home::Vector
                }
            }
            _ => {
                if scalar && all_both {
                    Home::Both
                } else if scalar {
                    first_excl
                } else {
                    Home::Vector
                }
            }
        }
    }

    fn placed(&self, k: &Kernel, i: Inst, u: Unit) -> bool {
        match k.kind(i) {
            InstKind::Store { .. } | InstKind::AtomicAdd { .. } | InstKind::AtomicExpAdd { .. } => {
                self.eff.get(&i) == Some(&u)
            }
            InstKind::Parallel { .. } | InstKind::For { .. } | InstKind::Yield(_) => true,
            _ => k.insts[i]
                .results
                .first()
                .and_then(|r| self.home.get(r))
                .is_some_and(|h| h.has(u)),
        }
    }

    /// Units that use `v`, given the final homes.
    fn use_units(&self, k: &Kernel, v: Value) -> u8 {
        let mut bits = self.needs(k, v);
        // `needs` ignores the stored value of stores; those run at the
        // value's home by construction, so nothing is missing here.
        if let Some(us) = self.an.uses.get(&v) {
            for u in us {
                if let Use::Op(i) = *u
                    && let InstKind::Store { value, .. } | InstKind::AtomicAdd { value, .. } =
                        k.kind(i)
                    && *value == v
                    && let Some(eu) = self.eff.get(&i)
                {
                    bits |= need_bits(Home::of(*eu));
                }
            }
        }
        bits
    }

    /// Step 2: workspaces and flags for values used on the other unit.
    fn plan_crossings(&mut self, k: &mut Kernel) -> Result<(), String> {
        // Parents of every instruction.
        let mut parent = HashMap::new();
        fill_parents(k, self.an.top, &mut parent);
        self.parent = parent;
        let mut defs: Vec<(Value, Pos, Block)> = Vec::new();
        for n in 0..self.an.order.len() {
            let i = self.an.order[n];
            let b = self.parent[&i];
            if let InstKind::For { body, .. } = k.kind(i) {
                for &p in &k.blocks[*body].params[1..] {
                    defs.push((p, Pos::Start(*body), *body));
                }
            }
            for &r in &k.insts[i].results {
                defs.push((r, Pos::After(i), b));
            }
        }
        let mut names: HashSet<String> = k.tensors.values().map(|t| t.name.clone()).collect();
        for (v, pos, b) in defs {
            let Some(from) = self.home.get(&v).and_then(|h| h.unit()) else {
                continue;
            };
            let to = other(from);
            let need = if to == Unit::Cube {
                NEED_CUBE
            } else {
                NEED_VECTOR
            };
            if self.use_units(k, v) & need == 0 {
                continue;
            }
            if b == self.an.top {
                return Err(format!(
                    "split: value {v} is computed on the {} outside the `parallel` and used on the {}",
                    from.name(),
                    to.name()
                ));
            }
            let ty = k.ty(v).clone();
            if ty.dtype() == DType::Bool {
                return Err(format!(
                    "split: bool value {v} would cross from the {} to the {} (masks cannot go through GM)",
                    from.name(),
                    to.name()
                ));
            }
            // Unnamed values are named after their op (`ws_matmul`).
            let base = k.values[v].name.clone().unwrap_or_else(|| {
                k.def_inst(v)
                    .map_or("param", |i| k.kind(i).opcode())
                    .to_string()
            });
            let mut name = format!("ws_{base}");
            let mut n = 2;
            while names.contains(&name) {
                name = format!("ws_{base}_{n}");
                n += 1;
            }
            names.insert(name.clone());
            let mut shape = self.an.grid.clone();
            shape.extend(ty.shape().iter().map(|&d| Dim::Const(d)));
            let ws = k.tensors.push(TensorData {
                name,
                dtype: ty.dtype(),
                shape,
                role: Role::Workspace,
            });
            let flag = self.new_flag()?;
            self.emit(pos, from, Emit::Store { ws, value: v });
            self.emit(pos, from, Emit::Set(flag));
            self.emit(pos, to, Emit::Wait(flag));
            self.emit(pos, to, Emit::Load { ws, value: v });
            let in_for = self
                .an
                .owner
                .get(&b)
                .copied()
                .filter(|&f| matches!(k.kind(f), InstKind::For { .. }));
            self.crossings.push(Crossing {
                ws,
                from,
                to,
                in_for,
            });
        }
        Ok(())
    }

    /// The unit accessing `t` at `i`, if `i` accesses `t`.
    fn access_unit(&self, k: &Kernel, i: Inst, t: Tensor) -> Option<Unit> {
        let kind = k.kind(i);
        if kind.tensor() != Some(t) {
            return None;
        }
        match kind {
            InstKind::Load { .. } => {
                let r = k.insts[i].results[0];
                Some(
                    self.home
                        .get(&r)
                        .and_then(|h| h.unit())
                        .unwrap_or(Unit::Vector),
                )
            }
            _ => self.eff.get(&i).copied(),
        }
    }

    fn access_bits(&self, k: &Kernel, b: Block, t: Tensor) -> u8 {
        let mut bits = 0;
        k.walk(b, &mut |i| {
            if let Some(u) = self.access_unit(k, i, t) {
                bits |= need_bits(Home::of(u));
            }
        });
        bits
    }

    fn first_access(&self, k: &Kernel, b: Block, t: Tensor) -> Option<Unit> {
        let mut first = None;
        k.walk(b, &mut |i| {
            if first.is_none() {
                first = self.access_unit(k, i, t);
            }
        });
        first
    }

    /// Step 3: order accesses to GM tensors both units touch.
    fn plan_gm_order(&mut self, k: &Kernel) -> Result<(), String> {
        let tensors: Vec<Tensor> = k.tensors.keys().collect();
        for t in tensors {
            if k.tensors[t].role == Role::Input || k.tensors[t].name.starts_with("ws_") {
                // Inputs are never written; the split's own workspaces are
                // ordered by their crossing flags.
                if k.tensors[t].role == Role::Input || self.crossings.iter().any(|c| c.ws == t) {
                    continue;
                }
            }
            if self.access_bits(k, self.an.top, t) != NEED_CUBE | NEED_VECTOR {
                continue;
            }
            if self.access_bits(k, self.an.par_body, t) != self.access_bits(k, self.an.top, t) {
                return Err(format!(
                    "split: tensor `{}` is accessed outside the `parallel`",
                    k.tensors[t].name
                ));
            }
            let st = self.tok_block(k, self.an.par_body, t, Tok::Free)?;
            self.normalize(st, Pos::End(self.an.par_body));
        }
        Ok(())
    }

    fn tok_block(&mut self, k: &Kernel, b: Block, t: Tensor, mut st: Tok) -> Result<Tok, String> {
        for &i in &k.blocks[b].insts {
            if let Some(u) = self.access_unit(k, i, t) {
                self.acquire(st, u, Pos::Before(i))?;
                st = Tok::Owned(u, Some(i));
                continue;
            }
            let InstKind::For { body, .. } = k.kind(i) else {
                continue;
            };
            let body = *body;
            match self.access_bits(k, body, t) {
                0 => {}
                NEED_CUBE | NEED_VECTOR => {
                    let u = self.first_access(k, body, t).unwrap_or(Unit::Vector);
                    self.acquire(st, u, Pos::Before(i))?;
                    self.tok_block(k, body, t, Tok::Owned(u, None))?;
                    st = Tok::Owned(u, None);
                }
                _ => {
                    let f = self.first_access(k, body, t).unwrap_or(Unit::Vector);
                    let o = other(f);
                    let st0 = self.normalize(st, Pos::Before(i));
                    let flag = self.new_flag()?;
                    let pre = match st0 {
                        Tok::Owned(x, Some(last)) if x == o => Pos::After(last),
                        _ => Pos::Before(i),
                    };
                    self.emit(pre, o, Emit::Set(flag));
                    let end = self.tok_block(k, body, t, Tok::Pending(f, flag))?;
                    let end = self.normalize(end, Pos::End(body));
                    let post = match end {
                        Tok::Owned(x, Some(last)) if x == o => Pos::After(last),
                        _ => Pos::End(body),
                    };
                    self.emit(post, o, Emit::Set(flag));
                    st = Tok::Pending(f, flag);
                }
            }
        }
        Ok(st)
    }

    /// Makes `u` the owner of the token before the access at `pos`.
    fn acquire(&mut self, st: Tok, u: Unit, pos: Pos) -> Result<(), String> {
        match st {
            Tok::Free => {}
            Tok::Owned(x, _) if x == u => {}
            Tok::Owned(x, last) => {
                let flag = self.new_flag()?;
                self.emit(last.map_or(pos, Pos::After), x, Emit::Set(flag));
                self.emit(pos, u, Emit::Wait(flag));
            }
            // The pending unit consumes the set; when it is not `u`, `u`
            // itself made that set after its last access, so it may go on.
            Tok::Pending(x, flag) => self.emit(pos, x, Emit::Wait(flag)),
        }
        Ok(())
    }

    fn normalize(&mut self, st: Tok, pos: Pos) -> Tok {
        match st {
            Tok::Pending(x, flag) => {
                self.emit(pos, x, Emit::Wait(flag));
                Tok::Owned(x, None)
            }
            st => st,
        }
    }

    /// Step 4: the program of unit `u`.
    fn build(&mut self, k: &mut Kernel, u: Unit) -> Result<Func, String> {
        let body = k.blocks.push(Default::default());
        let mut map = HashMap::new();
        let top = self.an.top;
        self.clone_block(k, u, top, body, &mut map, &[])?;
        Ok(Func {
            unit: u,
            sub_blocks: 1,
            body,
        })
    }

    fn do_emits(
        &self,
        k: &mut Kernel,
        u: Unit,
        p: Pos,
        dst: Block,
        map: &mut HashMap<Value, Value>,
    ) -> Result<(), String> {
        let Some(list) = self.emits.get(&(p, u)) else {
            return Ok(());
        };
        for e in list {
            match e {
                Emit::Set(f) => {
                    push(k, dst, InstKind::SetFlag(*f), vec![]);
                }
                Emit::Wait(f) => {
                    push(k, dst, InstKind::WaitFlag(*f), vec![]);
                }
                Emit::Store { ws, value } => {
                    let index = self.ws_index(k, *value, map, u, dst)?;
                    let value = lookup(map, *value, u)?;
                    push(
                        k,
                        dst,
                        InstKind::Store {
                            tensor: *ws,
                            index,
                            value,
                        },
                        vec![],
                    );
                }
                Emit::Load { ws, value } => {
                    let index = self.ws_index(k, *value, map, u, dst)?;
                    let ty = k.ty(*value).clone();
                    let i = push(k, dst, InstKind::Load { tensor: *ws, index }, vec![ty]);
                    let r = k.insts[i].results[0];
                    k.values[r].name = k.values[*value].name.clone();
                    map.insert(*value, r);
                }
            }
        }
        Ok(())
    }

    fn ws_index(
        &self,
        k: &mut Kernel,
        v: Value,
        map: &HashMap<Value, Value>,
        u: Unit,
        dst: Block,
    ) -> Result<Vec<Index>, String> {
        let mut index = Vec::new();
        for (n, &iv) in self.an.ivs.iter().enumerate() {
            let mut x = lookup(map, iv, u)?;
            let div = self.an.grid_div[n];
            if div > 1 {
                let i32t = Type::Scalar(DType::I32);
                let c = push(k, dst, InstKind::IConst(div), vec![i32t.clone()]);
                let c = k.insts[c].results[0];
                let q = push(
                    k,
                    dst,
                    InstKind::Binary(crate::ir::BinaryOp::Div, x, c),
                    vec![i32t],
                );
                x = k.insts[q].results[0];
            }
            index.push(Index::Point(x));
        }
        index.extend(k.ty(v).shape().iter().map(|_| Index::Full));
        Ok(index)
    }

    fn clone_block(
        &mut self,
        k: &mut Kernel,
        u: Unit,
        src: Block,
        dst: Block,
        map: &mut HashMap<Value, Value>,
        kept: &[usize],
    ) -> Result<(), String> {
        self.do_emits(k, u, Pos::Start(src), dst, map)?;
        let insts = k.blocks[src].insts.clone();
        let mut ended = false;
        for i in insts {
            if let InstKind::Yield(vs) = k.kind(i) {
                let vs = vs.clone();
                self.do_emits(k, u, Pos::End(src), dst, map)?;
                ended = true;
                let mut out = Vec::new();
                for &c in kept {
                    out.push(lookup(map, vs[c], u)?);
                }
                push(k, dst, InstKind::Yield(out), vec![]);
                continue;
            }
            self.do_emits(k, u, Pos::Before(i), dst, map)?;
            if self.placed(k, i, u) {
                self.clone_inst(k, u, i, dst, map)?;
            }
            self.do_emits(k, u, Pos::After(i), dst, map)?;
        }
        if !ended {
            self.do_emits(k, u, Pos::End(src), dst, map)?;
        }
        Ok(())
    }

    fn clone_inst(
        &mut self,
        k: &mut Kernel,
        u: Unit,
        i: Inst,
        dst: Block,
        map: &mut HashMap<Value, Value>,
    ) -> Result<(), String> {
        match k.kind(i).clone() {
            InstKind::Parallel { axes, body } => {
                let nb = k.blocks.push(Default::default());
                for p in k.blocks[body].params.clone() {
                    let np = k.add_block_param(nb, k.ty(p).clone(), k.values[p].name.clone());
                    map.insert(p, np);
                }
                let mut naxes = Vec::new();
                for ax in axes {
                    naxes.push(Axis {
                        lo: lookup(map, ax.lo, u)?,
                        hi: lookup(map, ax.hi, u)?,
                        step: ax.step,
                    });
                }
                push(
                    k,
                    dst,
                    InstKind::Parallel {
                        axes: naxes,
                        body: nb,
                    },
                    vec![],
                );
                self.clone_block(k, u, body, nb, map, &[])?;
            }
            InstKind::For {
                lo,
                hi,
                step,
                init,
                body,
            } => {
                let params = k.blocks[body].params.clone();
                let kept: Vec<usize> = (0..init.len())
                    .filter(|&c| self.home.get(&params[c + 1]).is_some_and(|h| h.has(u)))
                    .collect();
                let nb = k.blocks.push(Default::default());
                let iv = k.add_block_param(
                    nb,
                    k.ty(params[0]).clone(),
                    k.values[params[0]].name.clone(),
                );
                map.insert(params[0], iv);
                let mut ninit = Vec::new();
                let mut tys = Vec::new();
                for &c in &kept {
                    let p = params[c + 1];
                    let np = k.add_block_param(nb, k.ty(p).clone(), k.values[p].name.clone());
                    map.insert(p, np);
                    ninit.push(lookup(map, init[c], u)?);
                    tys.push(k.ty(p).clone());
                }
                let kind = InstKind::For {
                    lo: lookup(map, lo, u)?,
                    hi: lookup(map, hi, u)?,
                    step,
                    init: ninit,
                    body: nb,
                };
                let ni = push(k, dst, kind, tys);
                copy_span(k, i, ni);
                let results = k.insts[i].results.clone();
                for (n, &c) in kept.iter().enumerate() {
                    let r = k.insts[ni].results[n];
                    k.values[r].name = k.values[results[c]].name.clone();
                    map.insert(results[c], r);
                }
                self.for_map.insert((i, u), ni);
                self.clone_block(k, u, body, nb, map, &kept)?;
            }
            mut kind => {
                let mut missing = None;
                kind.map_operands(|v| match map.get(&v) {
                    Some(&n) => n,
                    None => {
                        missing.get_or_insert(v);
                        v
                    }
                });
                if let Some(v) = missing {
                    return Err(format!(
                        "split: internal: {v} used by `{}` is not available on the {}",
                        kind.opcode(),
                        u.name()
                    ));
                }
                let results = k.insts[i].results.clone();
                let tys = results.iter().map(|&r| k.ty(r).clone()).collect();
                let ni = push(k, dst, kind, tys);
                copy_span(k, i, ni);
                for (n, &r) in results.iter().enumerate() {
                    let nr = k.insts[ni].results[n];
                    k.values[nr].name = k.values[r].name.clone();
                    map.insert(r, nr);
                }
            }
        }
        Ok(())
    }

    /// Step 5: "slot free" flags for crossings inside loops that the
    /// existing flags do not already protect (see the module docs).
    fn add_back_pressure(&mut self, k: &mut Kernel) -> Result<(), String> {
        let mut parents = HashMap::new();
        for f in &k.funcs {
            fill_parents(k, f.body, &mut parents);
        }
        for c in self.crossings.clone() {
            let Some(of) = c.in_for else { continue };
            let (Some(&xf), Some(&yf)) = (
                self.for_map.get(&(of, c.from)),
                self.for_map.get(&(of, c.to)),
            ) else {
                continue;
            };
            let (Some(&xp), Some(&yp)) = (parents.get(&xf), parents.get(&yf)) else {
                continue;
            };
            let (Some(xb), Some(yb)) = (k.kind(xf).body(), k.kind(yf).body()) else {
                continue;
            };
            let find = |b: Block, store: bool| {
                k.blocks[b].insts.iter().position(|&i| match k.kind(i) {
                    InstKind::Store { tensor, .. } => store && *tensor == c.ws,
                    InstKind::Load { tensor, .. } => !store && *tensor == c.ws,
                    _ => false,
                })
            };
            let (Some(s_e), Some(l_e)) = (find(xb, true), find(yb, false)) else {
                // The consumer's load died (its value was unused): nothing
                // reads the slot, so nothing to protect.
                continue;
            };
            if proven(k, (xb, s_e), (yp, yf, yb, l_e)) {
                continue;
            }
            let g = self.new_flag()?;
            // Consumer: credit before the loop, "free" after each load.
            insert(k, yb, l_e + 1, InstKind::SetFlag(g));
            let ypos = k.blocks[yp]
                .insts
                .iter()
                .position(|&i| i == yf)
                .unwrap_or(0);
            insert(k, yp, ypos, InstKind::SetFlag(g));
            // Producer: wait before each store, drain the credit after.
            insert(k, xb, s_e, InstKind::WaitFlag(g));
            let xpos = k.blocks[xp]
                .insts
                .iter()
                .position(|&i| i == xf)
                .unwrap_or(0);
            insert(k, xp, xpos + 1, InstKind::WaitFlag(g));
        }
        Ok(())
    }
}

/// True when the flags already in the loop bodies make the producer's next
/// store wait for the consumer's load (see the module docs).
fn proven(
    k: &Kernel,
    (xb, s_e): (Block, usize),
    (yp, yf, yb, l_e): (Block, Inst, Block, usize),
) -> bool {
    // Candidate edges: flags set in the consumer's body and waited in the
    // producer's body, exactly once each (counting nested blocks).
    let direct = |b: Block, set: bool| -> Vec<(u32, usize)> {
        k.blocks[b]
            .insts
            .iter()
            .enumerate()
            .filter_map(|(n, &i)| match (k.kind(i), set) {
                (InstKind::SetFlag(f), true) | (InstKind::WaitFlag(f), false) => Some((*f, n)),
                _ => None,
            })
            .collect()
    };
    let count = |b: Block, f: u32, set: bool| {
        let mut n = 0;
        k.walk(b, &mut |i| match (k.kind(i), set) {
            (InstKind::SetFlag(g), true) | (InstKind::WaitFlag(g), false) if *g == f => n += 1,
            _ => {}
        });
        n
    };
    let ypos = k.blocks[yp]
        .insts
        .iter()
        .position(|&i| i == yf)
        .unwrap_or(0);
    for (f, set_at) in direct(yb, true) {
        let Some(&(_, wait_at)) = direct(xb, false).iter().find(|(g, _)| *g == f) else {
            continue;
        };
        if count(yb, f, true) != 1 || count(xb, f, false) != 1 {
            continue;
        }
        let credit = k.blocks[yp].insts[..ypos]
            .iter()
            .filter(|&&i| matches!(k.kind(i), InstKind::SetFlag(g) if *g == f))
            .count();
        let ok = match credit {
            0 => wait_at < s_e || (wait_at > s_e && set_at > l_e),
            1 => wait_at < s_e && set_at > l_e,
            _ => false,
        };
        if ok {
            return true;
        }
    }
    false
}

/// Token state of the GM-order walk for one tensor.
#[derive(Copy, Clone, Debug)]
enum Tok {
    /// Not accessed yet in this work item.
    Free,
    /// Last accessed by the unit (at the instruction, when it is in the
    /// current block).
    Owned(Unit, Option<Inst>),
    /// The other unit set the flag; this unit must wait for it before
    /// accessing (or just consume it).
    Pending(Unit, u32),
}

fn lookup(map: &HashMap<Value, Value>, v: Value, u: Unit) -> Result<Value, String> {
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

/// Appends an instruction to `b`.
fn push(k: &mut Kernel, b: Block, kind: InstKind, tys: Vec<Type>) -> Inst {
    let i = k.make_inst(kind, tys);
    k.blocks[b].insts.push(i);
    i
}

/// Inserts a result-less instruction into `b` at `pos`.
fn insert(k: &mut Kernel, b: Block, pos: usize, kind: InstKind) -> Inst {
    let i = k.make_inst(kind, vec![]);
    let insts = &mut k.blocks[b].insts;
    insts.insert(pos.min(insts.len()), i);
    i
}

fn fill_parents(k: &Kernel, b: Block, parent: &mut HashMap<Inst, Block>) {
    for &i in &k.blocks[b].insts {
        parent.insert(i, b);
        if let Some(body) = k.kind(i).body() {
            fill_parents(k, body, parent);
        }
    }
}

/// Test support shared by the `split` and `preload` tests: a small
/// FlashAttention kernel, an SSA check, and a two-unit flag simulator.
#[cfg(test)]
pub(crate) mod testkit {
    use std::collections::{HashMap, HashSet};

    use crate::ir::{
        Axis, BLayout, BinaryOp, Block, Builder, DType, Dim, DimData, DimId, Func, Index, InstKind,
        Kernel, ReduceOp, Role, Tensor, TensorData, Type, UnaryOp, Unit, Value,
    };

    fn tensor(k: &mut Kernel, name: &str, dtype: DType, shape: Vec<Dim>, role: Role) -> Tensor {
        k.tensors.push(TensorData {
            name: name.into(),
            dtype,
            shape,
            role,
        })
    }

    /// FlashAttention over `kv` blocks of 128 rows: `q: bf16[B, 128, 64]`,
    /// `kv: bf16[B, N, 64]`, `out: f32[B, 128, 32]` (V = `k[.., 0..32]`).
    /// With `amla`, the accumulator lives in the workspace `acc_ws`, rescaled
    /// by `atomic_exp_add` and updated by `atomic_add` (the shape the
    /// `mul-to-add` pass leaves); otherwise it is a carried value.
    pub(crate) fn fa_kernel(amla: bool) -> Kernel {
        let mut k = Kernel::new("fa");
        let bd = k.dims.push(DimData {
            name: "B".into(),
            value: None,
        });
        let nd = k.dims.push(DimData {
            name: "N".into(),
            value: None,
        });
        let (c, s) = (Dim::Const, Dim::Sym);
        let q = tensor(
            &mut k,
            "q",
            DType::Bf16,
            vec![s(bd), c(128), c(64)],
            Role::Input,
        );
        let kv = tensor(
            &mut k,
            "kv",
            DType::Bf16,
            vec![s(bd), s(nd), c(64)],
            Role::Input,
        );
        let out = tensor(
            &mut k,
            "out",
            DType::F32,
            vec![s(bd), c(128), c(32)],
            Role::Output,
        );
        let acc_ws = tensor(
            &mut k,
            "acc_ws",
            DType::F32,
            vec![s(bd), c(128), c(32)],
            Role::Workspace,
        );
        let top = k.blocks.push(Default::default());
        k.funcs.push(Func {
            unit: Unit::Any,
            sub_blocks: 1,
            body: top,
        });
        let mut b = Builder::at_end(&mut k, top);
        let c0 = b.named(InstKind::IConst(0), "c0").unwrap();
        let bv = b.named(InstKind::DimValue(bd), "B").unwrap();
        let nv = b.named(InstKind::DimValue(nd), "N").unwrap();
        let ninf = b
            .value(InstKind::FConst(f64::NEG_INFINITY, DType::F32))
            .unwrap();
        let zero = b.value(InstKind::FConst(0.0, DType::F32)).unwrap();
        let pb = b
            .parallel(
                vec![Axis {
                    lo: c0,
                    hi: bv,
                    step: 1,
                }],
                &["b"],
            )
            .unwrap();
        b.switch_to(pb);
        let bi = b.kernel.blocks[pb].params[0];
        let full3 = |bi| vec![Index::Point(bi), Index::Full, Index::Full];
        let qt = b
            .named(
                InstKind::Load {
                    tensor: q,
                    index: full3(bi),
                },
                "q",
            )
            .unwrap();
        let m0 = b
            .named(
                InstKind::Broadcast {
                    src: ninf,
                    shape: vec![128],
                },
                "m",
            )
            .unwrap();
        let l0 = b
            .named(
                InstKind::Broadcast {
                    src: zero,
                    shape: vec![128],
                },
                "l",
            )
            .unwrap();
        let a0 = b
            .named(
                InstKind::Broadcast {
                    src: zero,
                    shape: vec![128, 32],
                },
                "acc",
            )
            .unwrap();
        let init = if amla { vec![m0, l0] } else { vec![m0, l0, a0] };
        let (fi, fb) = b.for_loop(c0, nv, 128, init, "j").unwrap();
        b.switch_to(fb);
        let ps = b.kernel.blocks[fb].params.clone();
        let (j, m, l) = (ps[0], ps[1], ps[2]);
        let kt = b
            .named(
                InstKind::Load {
                    tensor: kv,
                    index: vec![
                        Index::Point(bi),
                        Index::Range { start: j, len: 128 },
                        Index::Full,
                    ],
                },
                "k",
            )
            .unwrap();
        let st = b
            .named(
                InstKind::Matmul {
                    a: qt,
                    b: kt,
                    b_layout: BLayout::NK,
                    acc: None,
                },
                "s",
            )
            .unwrap();
        let mx = b.value(InstKind::Reduce(ReduceOp::Max, st)).unwrap();
        let mn = b
            .named(InstKind::Binary(BinaryOp::Max, m, mx), "m_new")
            .unwrap();
        let mb = b
            .value(InstKind::Broadcast {
                src: mn,
                shape: vec![128, 128],
            })
            .unwrap();
        let d = b.value(InstKind::Binary(BinaryOp::Sub, st, mb)).unwrap();
        let p = b.named(InstKind::Unary(UnaryOp::Exp, d), "p").unwrap();
        let dm = b.value(InstKind::Binary(BinaryOp::Sub, m, mn)).unwrap();
        let al = b.named(InstKind::Unary(UnaryOp::Exp, dm), "alpha").unwrap();
        let rs = b.value(InstKind::Reduce(ReduceOp::Sum, p)).unwrap();
        let l2 = b.value(InstKind::Binary(BinaryOp::Mul, l, al)).unwrap();
        let l3 = b
            .named(InstKind::Binary(BinaryOp::Add, l2, rs), "l")
            .unwrap();
        if amla {
            let n = b.named(InstKind::Cast(dm, DType::I32), "n").unwrap();
            b.ins(InstKind::AtomicExpAdd {
                tensor: acc_ws,
                index: full3(bi),
                n,
            })
            .unwrap();
        }
        let pbf = b.named(InstKind::Cast(p, DType::Bf16), "pb").unwrap();
        let v = b
            .named(
                InstKind::Extract {
                    src: kt,
                    index: vec![Index::Full, Index::Range { start: c0, len: 32 }],
                },
                "v",
            )
            .unwrap();
        let pv = b
            .named(
                InstKind::Matmul {
                    a: pbf,
                    b: v,
                    b_layout: BLayout::KN,
                    acc: None,
                },
                "pv",
            )
            .unwrap();
        if amla {
            b.ins(InstKind::AtomicAdd {
                tensor: acc_ws,
                index: full3(bi),
                value: pv,
            })
            .unwrap();
            b.ins(InstKind::Yield(vec![mn, l3])).unwrap();
        } else {
            let acc = ps[3];
            let ab = b
                .value(InstKind::Broadcast {
                    src: al,
                    shape: vec![128, 32],
                })
                .unwrap();
            let a2 = b.value(InstKind::Binary(BinaryOp::Mul, acc, ab)).unwrap();
            let a3 = b
                .named(InstKind::Binary(BinaryOp::Add, a2, pv), "acc")
                .unwrap();
            b.ins(InstKind::Yield(vec![mn, l3, a3])).unwrap();
        }
        b.switch_to(pb);
        let res = b.kernel.insts[fi].results.clone();
        let accv = if amla {
            b.named(
                InstKind::Load {
                    tensor: acc_ws,
                    index: full3(bi),
                },
                "acc",
            )
            .unwrap()
        } else {
            res[2]
        };
        let lb = b
            .value(InstKind::Broadcast {
                src: res[1],
                shape: vec![128, 32],
            })
            .unwrap();
        let o = b
            .named(InstKind::Binary(BinaryOp::Div, accv, lb), "o")
            .unwrap();
        b.ins(InstKind::Store {
            tensor: out,
            index: full3(bi),
            value: o,
        })
        .unwrap();
        k
    }

    /// Checks SSA dominance and block ownership of every function.
    pub(crate) fn check_ssa(k: &Kernel) -> Result<(), String> {
        let mut seen_blocks = HashSet::new();
        for f in &k.funcs {
            let mut scope = HashSet::new();
            ssa_block(k, f.body, &mut scope, &mut seen_blocks)?;
        }
        Ok(())
    }

    fn ssa_block(
        k: &Kernel,
        b: Block,
        scope: &mut HashSet<Value>,
        seen: &mut HashSet<Block>,
    ) -> Result<(), String> {
        if !seen.insert(b) {
            return Err(format!("{b} has two owners"));
        }
        let mut local = scope.clone();
        local.extend(k.blocks[b].params.iter().copied());
        for &i in &k.blocks[b].insts {
            let mut bad = None;
            k.kind(i).for_each_operand(|v| {
                if !local.contains(&v) {
                    bad.get_or_insert(v);
                }
            });
            if let Some(v) = bad {
                return Err(format!(
                    "{v} used by {} {i} is not in scope",
                    k.kind(i).opcode()
                ));
            }
            crate::ir::typing::result_types(k, k.kind(i))
                .map_err(|e| format!("{} {i}: {e}", k.kind(i).opcode()))?;
            if let Some(body) = k.kind(i).body() {
                ssa_block(k, body, &mut local, seen)?;
            }
            local.extend(k.insts[i].results.iter().copied());
        }
        Ok(())
    }

    /// What every scalar load of an input reads in [`trace`].
    pub(crate) const SCALAR_INPUT: i64 = 192;

    /// One event of a unit's run.
    #[derive(Clone, Debug)]
    pub(crate) enum Ev {
        Set(u32),
        Wait(u32),
        /// `dst` gets the block tag of the sources (checked equal for
        /// matmuls).
        Comb {
            dst: Value,
            srcs: Vec<Value>,
            matmul: bool,
        },
        /// A tile read from an input: tagged with the first range start.
        Input {
            dst: Value,
            tag: Option<i64>,
        },
        /// A GM access of a non-input tensor at the given point/range-start
        /// coordinates.
        Gm {
            t: Tensor,
            at: Vec<i64>,
            op: &'static str,
            src: Option<Value>,
            dst: Option<Value>,
        },
    }

    /// Runs the scalar part of function `f` for the dims `dims` (and the grid
    /// point where every parallel iv is 0) and returns its events.
    pub(crate) fn trace(k: &Kernel, f: usize, dims: &[(DimId, i64)]) -> Result<Vec<Ev>, String> {
        let mut env = HashMap::new();
        let mut out = Vec::new();
        // Block indices: every `for` iv, and every loop's lower bound (a
        // pass may compute a block's values at `lo`, outside the loop).
        let mut taint = HashSet::new();
        k.walk(k.funcs[f].body, &mut |i| {
            if let InstKind::For { lo, .. } = k.kind(i) {
                taint.insert(*lo);
            }
        });
        trace_block(k, k.funcs[f].body, dims, &mut env, &mut taint, &mut out)?;
        Ok(out)
    }

    fn ival(env: &HashMap<Value, i64>, v: Value) -> Result<i64, String> {
        env.get(&v)
            .copied()
            .ok_or_else(|| format!("scalar {v} unknown"))
    }

    fn trace_block(
        k: &Kernel,
        b: Block,
        dims: &[(DimId, i64)],
        env: &mut HashMap<Value, i64>,
        taint: &mut HashSet<Value>,
        out: &mut Vec<Ev>,
    ) -> Result<(), String> {
        for &i in &k.blocks[b].insts {
            // Scalars derived from a `for` iv are "tainted": an input tile
            // loaded at a tainted index is tagged with that index's value.
            let mut tainted = false;
            k.kind(i)
                .for_each_operand(|v| tainted |= taint.contains(&v));
            if tainted {
                for &r in &k.insts[i].results {
                    if matches!(k.ty(r), Type::Scalar(_)) {
                        taint.insert(r);
                    }
                }
            }
            let kind = k.kind(i);
            let res = &k.insts[i].results;
            let scalar = res
                .first()
                .is_some_and(|&r| matches!(k.ty(r), Type::Scalar(_)));
            let mut ops = Vec::new();
            kind.for_each_operand(|v| ops.push(v));
            match kind {
                InstKind::IConst(c) => {
                    env.insert(res[0], *c);
                }
                InstKind::DimValue(d) => {
                    let v = match k.dims[*d].value {
                        Some(n) => n as i64,
                        None => dims.iter().find(|x| x.0 == *d).map(|x| x.1).unwrap_or(1),
                    };
                    env.insert(res[0], v);
                }
                InstKind::Binary(op, a, c) if scalar && k.ty(*a).dtype() == DType::I32 => {
                    let (x, y) = (ival(env, *a)?, ival(env, *c)?);
                    let r = match op {
                        BinaryOp::Add => x + y,
                        BinaryOp::Sub => x - y,
                        BinaryOp::Mul => x * y,
                        BinaryOp::Div => {
                            if y == 0 {
                                0
                            } else {
                                x / y
                            }
                        }
                        BinaryOp::Rem => {
                            if y == 0 {
                                0
                            } else {
                                x % y
                            }
                        }
                        BinaryOp::Max => x.max(y),
                        BinaryOp::Min => x.min(y),
                        _ => return Err(format!("unsupported scalar op {}", kind.opcode())),
                    };
                    env.insert(res[0], r);
                }
                _ if scalar && !matches!(kind, InstKind::Load { .. }) => {
                    env.insert(res[0], 0);
                }
                InstKind::SetFlag(f) => out.push(Ev::Set(*f)),
                InstKind::WaitFlag(f) => out.push(Ev::Wait(*f)),
                InstKind::Parallel { body, .. } => {
                    for &p in &k.blocks[*body].params {
                        env.insert(p, 0);
                    }
                    trace_block(k, *body, dims, env, taint, out)?;
                }
                InstKind::For {
                    lo,
                    hi,
                    step,
                    init,
                    body,
                } => {
                    let (lo, hi) = (ival(env, *lo)?, ival(env, *hi)?);
                    let ps = k.blocks[*body].params.clone();
                    let carry = |out: &mut Vec<Ev>,
                                 env: &mut HashMap<Value, i64>,
                                 from: &[Value],
                                 to: &[Value]| {
                        for (&s, &d) in from.iter().zip(to) {
                            if let Some(&x) = env.get(&s) {
                                env.insert(d, x);
                            } else {
                                out.push(Ev::Comb {
                                    dst: d,
                                    srcs: vec![s],
                                    matmul: false,
                                });
                            }
                        }
                    };
                    carry(out, env, init, &ps[1..]);
                    let mut j = lo;
                    while j < hi {
                        env.insert(ps[0], j);
                        taint.insert(ps[0]);
                        trace_block(k, *body, dims, env, taint, out)?;
                        let Some(InstKind::Yield(ys)) =
                            k.blocks[*body].insts.last().map(|&y| k.kind(y))
                        else {
                            return Err("for without yield".into());
                        };
                        carry(out, env, &ys.clone(), &ps[1..]);
                        j += step;
                    }
                    carry(out, env, &ps[1..], res);
                }
                InstKind::Yield(_) => {}
                InstKind::Load { tensor, index }
                | InstKind::Store { tensor, index, .. }
                | InstKind::AtomicAdd { tensor, index, .. }
                | InstKind::AtomicExpAdd { tensor, index, .. } => {
                    let mut at = Vec::new();
                    let mut tag = None;
                    for ix in index {
                        match ix {
                            Index::Point(v) | Index::Range { start: v, .. } => {
                                let x = ival(env, *v)?;
                                if taint.contains(v) {
                                    tag.get_or_insert(x);
                                }
                                at.push(x);
                            }
                            Index::Full => {}
                        }
                    }
                    if k.tensors[*tensor].role == Role::Input {
                        if scalar {
                            // Sequence lengths, page ids…: a few blocks' worth.
                            env.insert(res[0], SCALAR_INPUT);
                        } else {
                            out.push(Ev::Input { dst: res[0], tag });
                        }
                        continue;
                    }
                    let (src, dst) = match kind {
                        InstKind::Load { .. } => (None, Some(res[0])),
                        InstKind::Store { value, .. } | InstKind::AtomicAdd { value, .. } => {
                            (Some(*value), None)
                        }
                        InstKind::AtomicExpAdd { n, .. } => (Some(*n), None),
                        _ => unreachable!(),
                    };
                    out.push(Ev::Gm {
                        t: *tensor,
                        at,
                        op: kind.opcode(),
                        src,
                        dst,
                    });
                }
                _ => {
                    let srcs = ops.into_iter().filter(|v| !env.contains_key(v)).collect();
                    for &r in res {
                        out.push(Ev::Comb {
                            dst: r,
                            srcs: Vec::clone(&srcs),
                            matmul: matches!(kind, InstKind::Matmul { .. }),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// What a simulated run did.
    #[derive(Debug, Default)]
    pub(crate) struct Run {
        /// Accesses to non-`ws_` GM tensors in global order: (tensor name,
        /// op, block tag).
        pub gm_log: Vec<(String, &'static str, Option<i64>)>,
        /// Block tags of the Cube's matmuls, in issue order.
        pub cube_matmuls: Vec<Option<i64>>,
    }

    /// Runs the traces of `[cube, vector]` against each other with pair-mode
    /// flag counters (one Vector sub-block). `cube_first`: the Cube runs
    /// until it blocks before the Vector starts, and so on; otherwise the
    /// Vector goes first. Fails on a deadlock, a matmul mixing blocks, a
    /// `ws_` slot overwritten before it was read, or unbalanced counters.
    pub(crate) fn simulate(
        k: &Kernel,
        dims: &[(DimId, i64)],
        cube_first: bool,
    ) -> Result<Run, String> {
        let tr = [trace(k, 0, dims)?, trace(k, 1, dims)?];
        let mut pc = [0usize; 2];
        let mut cnt = [[0i64; 32]; 2]; // cnt[consumer][flag]
        let mut tags: [HashMap<Value, Option<i64>>; 2] = [HashMap::new(), HashMap::new()];
        let mut gm: HashMap<(Tensor, Vec<i64>), (Option<i64>, bool)> = HashMap::new();
        let mut run = Run::default();
        let mut turn = if cube_first { 0 } else { 1 };
        let mut last_progress = true;
        loop {
            let mut progressed = false;
            while pc[turn] < tr[turn].len() {
                let ev = &tr[turn][pc[turn]];
                let tg = &mut tags[turn];
                match ev {
                    Ev::Set(f) => cnt[1 - turn][*f as usize] += 1,
                    Ev::Wait(f) => {
                        if cnt[turn][*f as usize] == 0 {
                            break;
                        }
                        cnt[turn][*f as usize] -= 1;
                    }
                    Ev::Input { dst, tag } => {
                        tg.insert(*dst, *tag);
                    }
                    Ev::Comb { dst, srcs, matmul } => {
                        let ts: Vec<i64> = srcs
                            .iter()
                            .filter_map(|s| tg.get(s).copied().flatten())
                            .collect();
                        if *matmul && ts.windows(2).any(|w| w[0] != w[1]) {
                            return Err(format!("a matmul mixes blocks {ts:?}"));
                        }
                        if *matmul && turn == 0 {
                            run.cube_matmuls.push(ts.first().copied());
                        }
                        tg.insert(*dst, ts.into_iter().max());
                    }
                    Ev::Gm {
                        t,
                        at,
                        op,
                        src,
                        dst,
                    } => {
                        let name = k.tensors[*t].name.clone();
                        let key = (*t, at.clone());
                        let is_ws = name.starts_with("ws_");
                        let tag = src.and_then(|s| tg.get(&s).copied().flatten());
                        match *op {
                            "load" => {
                                let e = gm.entry(key).or_insert((None, false));
                                if is_ws && e.1 {
                                    return Err(format!(
                                        "{name}{at:?} read twice or before written"
                                    ));
                                }
                                e.1 = true;
                                tg.insert(dst.unwrap(), e.0);
                                if !is_ws {
                                    run.gm_log.push((name, op, e.0));
                                }
                            }
                            _ => {
                                if is_ws {
                                    if let Some((_, false)) = gm.get(&key) {
                                        return Err(format!(
                                            "{name}{at:?} overwritten before it was read"
                                        ));
                                    }
                                    gm.insert(key, (tag, false));
                                } else {
                                    run.gm_log.push((name, op, tag));
                                }
                            }
                        }
                    }
                }
                pc[turn] += 1;
                progressed = true;
            }
            if pc[0] == tr[0].len() && pc[1] == tr[1].len() {
                break;
            }
            if !progressed && !last_progress {
                return Err(format!(
                    "deadlock: cube at {:?}, vector at {:?}",
                    tr[0].get(pc[0]),
                    tr[1].get(pc[1])
                ));
            }
            last_progress = progressed;
            turn = 1 - turn;
        }
        if cnt.iter().flatten().any(|&c| c != 0) {
            return Err(format!("unbalanced flags at the end: {cnt:?}"));
        }
        Ok(run)
    }
}

/// A plain dump of the functions for test failure messages (the real
/// printer lives in `ir::print`).
#[cfg(test)]
pub(crate) fn dump(k: &Kernel) -> String {
    fn block(k: &Kernel, b: Block, depth: usize, out: &mut String) {
        for &i in &k.blocks[b].insts {
            let kind = k.kind(i);
            let mut ops = Vec::new();
            kind.for_each_operand(|v| ops.push(format!("{v}")));
            let extra = match kind {
                InstKind::SetFlag(f) | InstKind::WaitFlag(f) => format!(" {f}"),
                InstKind::IConst(c) => format!(" {c}"),
                _ => match kind.tensor() {
                    Some(t) => format!(" {}", k.tensors[t].name),
                    None => String::new(),
                },
            };
            out.push_str(&format!(
                "{}{:?} = {}{} {}\n",
                "  ".repeat(depth),
                k.insts[i].results,
                kind.opcode(),
                extra,
                ops.join(", ")
            ));
            if let Some(body) = kind.body() {
                out.push_str(&format!(
                    "{}  params {:?}\n",
                    "  ".repeat(depth),
                    k.blocks[body].params
                ));
                block(k, body, depth + 1, out);
            }
        }
    }
    let mut out = String::new();
    for f in &k.funcs {
        out.push_str(&format!("func {}\n", f.unit.name()));
        block(k, f.body, 1, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::testkit::*;
    use super::*;

    fn ops(k: &Kernel, f: usize) -> Vec<String> {
        let mut v = Vec::new();
        k.walk(k.funcs[f].body, &mut |i| {
            let kind = k.kind(i);
            v.push(match kind {
                InstKind::SetFlag(f) => format!("set {f}"),
                InstKind::WaitFlag(f) => format!("wait {f}"),
                _ => match kind.tensor() {
                    Some(t) => format!("{} {}", kind.opcode(), k.tensors[t].name),
                    None => kind.opcode().to_string(),
                },
            })
        });
        v
    }

    fn dims(k: &Kernel, n: i64) -> Vec<(crate::ir::DimId, i64)> {
        k.dims
            .keys()
            .map(|d| (d, if k.dims[d].name == "N" { n } else { 2 }))
            .collect()
    }

    /// The module docs' example, exactly.
    #[test]
    fn doc_example() {
        let docs = include_str!("split.rs");
        let block = |n: usize| -> String {
            let body = docs.split("//! ```text\n").nth(n).unwrap();
            let body = &body[..body.find("//! ```\n").unwrap()];
            body.lines()
                .map(|l| {
                    l.strip_prefix("//! ")
                        .unwrap_or(l.strip_prefix("//!").unwrap_or(l))
                })
                .map(|l| format!("{l}\n"))
                .collect()
        };
        let (before, after) = (block(1), block(2));
        let mut k = crate::ir::parse::parse(&before).unwrap();
        run(&mut k).unwrap();
        crate::ir::verify::verify(&k).unwrap();
        assert_eq!(crate::ir::print::print(&k), after);
    }

    #[test]
    fn fa_plain_split() {
        let mut k = fa_kernel(false);
        run(&mut k).unwrap();
        let d = dump(&k);
        check_ssa(&k).map_err(|e| format!("{e}\n{d}")).unwrap();
        crate::ir::verify::verify(&k)
            .map_err(|e| format!("{e}\n{d}"))
            .unwrap();
        assert_eq!(k.funcs.len(), 2);
        assert_eq!(
            (k.funcs[0].unit, k.funcs[1].unit),
            (Unit::Cube, Unit::Vector)
        );
        assert_eq!(k.funcs[1].sub_blocks, 1);
        let cube = ops(&k, 0);
        let vec = ops(&k, 1);
        // Matmuls and the operand loads on the Cube only.
        assert_eq!(cube.iter().filter(|o| *o == "matmul").count(), 2, "{d}");
        assert!(
            !vec.iter()
                .any(|o| o == "matmul" || o == "load kv" || o == "extract"),
            "{d}"
        );
        assert!(
            cube.contains(&"load kv".to_string()) && cube.contains(&"extract".to_string()),
            "{d}"
        );
        for o in ["exp", "rowmax", "rowsum", "cast", "broadcast", "store out"] {
            assert!(vec.iter().any(|x| x == o), "{o} missing on the vector\n{d}");
            assert!(!cube.iter().any(|x| x == o), "{o} on the cube\n{d}");
        }
        // Workspaces: S (f32), P (bf16, the cast stays on the Vector), PV.
        let ws: Vec<(String, DType, Vec<Dim>)> = k
            .tensors
            .values()
            .filter(|t| t.name.starts_with("ws_"))
            .map(|t| (t.name.clone(), t.dtype, t.shape.clone()))
            .collect();
        let bdim = Dim::Sym(k.dims.keys().next().unwrap());
        assert_eq!(
            ws,
            vec![
                (
                    "ws_s".into(),
                    DType::F32,
                    vec![bdim, Dim::Const(128), Dim::Const(128)]
                ),
                (
                    "ws_pb".into(),
                    DType::Bf16,
                    vec![bdim, Dim::Const(128), Dim::Const(128)]
                ),
                (
                    "ws_pv".into(),
                    DType::F32,
                    vec![bdim, Dim::Const(128), Dim::Const(32)]
                ),
            ],
            "{d}"
        );
        // Flag pairs: each id set on one unit and waited on the other; the
        // loop body of the cube: QK, store S, set, wait P, load P, PV.
        assert_eq!(
            cube,
            [
                "iconst",
                "dim",
                "dim",
                "parallel",
                "load q",
                "for",
                "load kv",
                "matmul",
                "store ws_s",
                "set 0",
                "wait 1",
                "load ws_pb",
                "extract",
                "matmul",
                "store ws_pv",
                "set 2",
                "yield"
            ],
            "{d}"
        );
        // No back-pressure flags were needed: ids 0..3 only.
        assert!(!d.contains("flag 3"), "{d}");
        for n in [0, 1, 2, 3, 5] {
            for cube_first in [true, false] {
                simulate(&k, &dims(&k, 128 * n), cube_first)
                    .map_err(|e| format!("n={n}: {e}\n{d}"))
                    .unwrap();
            }
        }
    }

    #[test]
    fn fa_amla_split_orders_the_accumulator() {
        let mut k = fa_kernel(true);
        run(&mut k).unwrap();
        let d = dump(&k);
        check_ssa(&k).map_err(|e| format!("{e}\n{d}")).unwrap();
        crate::ir::verify::verify(&k)
            .map_err(|e| format!("{e}\n{d}"))
            .unwrap();
        let cube = ops(&k, 0);
        let vec = ops(&k, 1);
        assert!(cube.contains(&"atomic_add acc_ws".to_string()), "{d}");
        assert!(vec.contains(&"atomic_exp_add acc_ws".to_string()), "{d}");
        assert!(vec.contains(&"load acc_ws".to_string()), "{d}");
        // The atomic add waits for the Vector's exp-add of the same block.
        let at = cube.iter().position(|o| o == "atomic_add acc_ws").unwrap();
        assert!(cube[at - 1].starts_with("wait"), "{d}");
        let ld = vec.iter().position(|o| o == "load acc_ws").unwrap();
        assert!(vec[ld - 1].starts_with("wait"), "{d}");
        for n in [0, 1, 2, 3, 5] {
            for cube_first in [true, false] {
                let r = simulate(&k, &dims(&k, 128 * n), cube_first)
                    .map_err(|e| format!("n={n}: {e}\n{d}"))
                    .unwrap();
                let mut want = Vec::new();
                for j in 0..n {
                    want.push(("acc_ws".to_string(), "atomic_exp_add", Some(128 * j)));
                    want.push(("acc_ws".to_string(), "atomic_add", Some(128 * j)));
                }
                want.push(("acc_ws".to_string(), "load", None));
                let log: Vec<_> = r.gm_log.into_iter().filter(|e| e.0 == "acc_ws").collect();
                assert_eq!(log, want, "n={n} cube_first={cube_first}\n{d}");
            }
        }
    }

    fn parse(text: &str) -> Kernel {
        crate::ir::parse::parse(text).unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn kernels_without_matmul_run_on_the_vector() {
        let mut k = parse(
            "kernel vec_only
dim B = 2
input x: f32[B, 64]
output y: f32[B, 64]

func any {
  %c0 = iconst 0 : i32
  %B = dim B : i32
  parallel %b in %c0..%B {
    %x = load x[%b, ..] : f32[64]
    %e = exp %x : f32[64]
    store y[%b, ..], %e
  }
}
",
        );
        run(&mut k).unwrap();
        crate::ir::verify::verify(&k).unwrap();
        let d = dump(&k);
        assert_eq!(ops(&k, 0), ["iconst", "dim", "parallel"], "{d}");
        assert_eq!(
            ops(&k, 1),
            ["iconst", "dim", "parallel", "load x", "exp", "store y"],
            "{d}"
        );
        assert!(
            k.tensors.values().all(|t| !t.name.starts_with("ws_")),
            "{d}"
        );
    }

    const NO_REPLY: &str = "kernel bp
dim B = 2
dim N
input q: bf16[B, 64, 32]
input kv: bf16[B, N, 32]
output out: f32[B, 64]

func any {
  %c0 = iconst 0 : i32
  %B = dim B : i32
  %N = dim N : i32
  %zero = fconst f32 0.0 : f32
  parallel %b in %c0..%B {
    %q = load q[%b, .., ..] : bf16[64, 32]
    %a0 = broadcast %zero to [64] : f32[64]
    %a = for %j in %c0..%N step 64 carry(%acc: f32[64] = %a0) : f32[64] {
      %k = load kv[%b, %j+:64, ..] : bf16[64, 32]
      %s = matmul %q, %k nk : f32[64, 64]
      %r = rowmax %s : f32[64]
      %acc.1 = add %acc, %r : f32[64]
      yield %acc.1
    }
    store out[%b, ..], %a
  }
}
";

    /// Nothing flows back from the Vector, so nothing stops the Cube from
    /// overwriting `ws_s` before the Vector read it: a "slot free" flag is
    /// added, with a credit before the loop and a drain after it.
    #[test]
    fn back_pressure_when_no_flag_protects_the_slot() {
        let mut k = parse(NO_REPLY);
        run(&mut k).unwrap();
        crate::ir::verify::verify(&k).unwrap();
        let d = dump(&k);
        assert_eq!(
            ops(&k, 0),
            [
                "iconst",
                "dim",
                "dim",
                "parallel",
                "load q",
                "for",
                "load kv",
                "matmul",
                "wait 1",
                "store ws_s",
                "set 0",
                "yield",
                "wait 1"
            ],
            "{d}"
        );
        let v = ops(&k, 1);
        let at = v.iter().position(|o| o == "for").unwrap();
        assert_eq!(v[at - 1], "set 1", "{d}");
        let ld = v.iter().position(|o| o == "load ws_s").unwrap();
        assert_eq!(
            (v[ld - 1].as_str(), v[ld + 1].as_str()),
            ("wait 0", "set 1"),
            "{d}"
        );
        for n in [0, 1, 2, 5] {
            for cube_first in [true, false] {
                simulate(&k, &dims(&k, 64 * n), cube_first)
                    .map_err(|e| format!("n={n}: {e}\n{d}"))
                    .unwrap();
            }
        }
        // Without the "slot free" wait the eager Cube overwrites S.
        let cube = k.funcs[0].body;
        let mut waits = Vec::new();
        k.walk(cube, &mut |i| {
            if matches!(k.kind(i), InstKind::WaitFlag(1)) {
                waits.push(i);
            }
        });
        for i in waits {
            k.insts[i].kind = InstKind::SetFlag(15);
        }
        let e = simulate(&k, &dims(&k, 64 * 3), true).unwrap_err();
        assert!(e.contains("overwritten"), "{e}");
    }

    #[test]
    fn unexpected_input_is_an_error_not_a_panic() {
        let mut k = fa_kernel(true);
        run(&mut k).unwrap();
        let e = run(&mut k).unwrap_err();
        assert!(e.contains("expected one `any` function, found 2"), "{e}");

        let mut k = parse(
            "kernel noparallel
input x: f32[4]
output y: f32[4]

func any {
  %c0 = iconst 0 : i32
  %x = load x[..] : f32[4]
  store y[..], %x
}
",
        );
        let e = run(&mut k).unwrap_err();
        assert!(e.contains("exactly one top-level `parallel`"), "{e}");
    }

    #[test]
    fn too_many_flags_is_a_user_error_and_leaves_the_kernel_alone() {
        let mut k = fa_kernel(true);
        let before = dump(&k);
        match run_with(&mut k, 3) {
            Err(SplitError::TooManyFlags(m)) => assert!(m.contains("more than 3"), "{m}"),
            r => panic!("{r:?}"),
        }
        assert_eq!(dump(&k), before);
    }

    #[test]
    fn deterministic() {
        let mut a = fa_kernel(true);
        let mut b = fa_kernel(true);
        run(&mut a).unwrap();
        run(&mut b).unwrap();
        assert_eq!(crate::ir::print::print(&a), crate::ir::print::print(&b));
    }
}
