//! `range-fold`: a `select` whose integer comparison every element decides
//! the same way is replaced by the operand it always takes.
//!
//! The mask of a partial last KV block, `where(j + col_index(s0) < N, s0,
//! -inf)` inside `for j in 0..N step BN`, lowers to `broadcast %j`, `iota
//! axis 1`, `add`, `broadcast N`, `lt` and `select` over the whole score
//! tile. When N is a multiple of BN the comparison holds for every element
//! of every block, yet the Vector unit computes all six ops every block.
//!
//! # Algorithm
//!
//! 1. **Intervals.** One walk of each function in program order (SSA: an
//!    operand's fact is known before its user) gives `i32` values, scalars
//!    and tiles alike, a closed interval `[lo, hi]` that holds every element:
//!    - `iconst c` → `[c, c]`;
//!    - the variable of `for %j in %lo..%hi step s` (and of each `parallel`
//!      axis) with constant bounds: `[lo, lo + s·(trip − 1)]`, the exact
//!      last value, `trip = ⌈(hi − lo) / s⌉`; with interval bounds
//!      `[lo.lo, hi.hi − 1]` (every value is `≥ lo` and `< hi`); an empty
//!      loop's variable has no interval (its body never runs);
//!    - `broadcast` → its source's; `iota` → `[0, extent − 1]` of its axis;
//!    - `add`, `sub`, `mul`, `min`, `max`, `neg` of known intervals, computed
//!      exactly in `i64`: a result that may leave the `i32` range has no
//!      interval (the IR's `i32` arithmetic wraps; the pass assumes no
//!      wrapping anywhere, it proves there is none);
//!    - a `select` → the arm it always takes, else the union of its arms.
//!
//!    Anything else (`dim`, loads, casts, `div`, `rem`, carried values, …)
//!    has no interval.
//! 2. **Decisions.** `lt`, `le`, `gt`, `ge`, `eq`, `ne` of two `i32` values
//!    with intervals are decided when the intervals alone fix the answer for
//!    every pair of elements (`a < b` everywhere when `a.hi < b.lo`, nowhere
//!    when `a.lo >= b.hi`; `eq` when both are the same single value, `ne`
//!    when they are disjoint…). A decided mask stays decided through `not`,
//!    `and`, `or` (`and` with a false mask is false whatever the other) and
//!    `broadcast`. The IR has no `bool` constant, so comparisons are not
//!    rewritten themselves.
//! 3. **Folds.** A `select %c, %a, %b` with `%c` true everywhere is `%a`,
//!    false everywhere `%b`: every use of its result in the function is
//!    replaced by that operand (`Kernel::replace_uses_in`; an operand that
//!    is itself a folded select is followed to what replaced it), and
//!    `dce::remove_dead` then deletes the comparison and its inputs when
//!    nothing else reads them. The result is bit-exact by construction: a
//!    select with a decided condition is its operand. Only unplaced selects
//!    (a scalar, or a tile in space `any`) are folded, because the operand
//!    then lives longer: the pass runs first, before `plan-memory` gives
//!    tiles their lifetimes.
//!
//! `--explain` notes each fold with the intervals that decided it, and each
//! select on an integer comparison left alone with the intervals that did
//! not (e.g. `N = 4000` with `BN = 128`: the last block is partial).
//!
//! # Example
//!
//! Before (`%pos` is `[0, 128] + [0, 127] = [0, 255]`, always below 256):
//!
//! ```text
//! kernel mask
//! input x: f32[8, 256]
//! output out: f32[8, 256]
//!
//! func any {
//!   %c0 = iconst 0 : i32
//!   %N = iconst 256 : i32
//!   for %j in %c0..%N step 128 {
//!     %x = load x[.., %j+:128] : f32[8, 128]
//!     %jb = broadcast %j to [8, 128] : i32[8, 128]
//!     %col = iota [8, 128] axis 1 : i32[8, 128]
//!     %pos = add %jb, %col : i32[8, 128]
//!     %Nb = broadcast %N to [8, 128] : i32[8, 128]
//!     %in = lt %pos, %Nb : bool[8, 128]
//!     %ninf = fconst f32 -inf : f32
//!     %fill = broadcast %ninf to [8, 128] : f32[8, 128]
//!     %s = select %in, %x, %fill : f32[8, 128]
//!     store out[.., %j+:128], %s
//!     yield
//!   }
//! }
//! ```
//!
//! After:
//!
//! ```text
//! kernel mask
//! input x: f32[8, 256]
//! output out: f32[8, 256]
//!
//! func any {
//!   %c0 = iconst 0 : i32
//!   %N = iconst 256 : i32
//!   for %j in %c0..%N step 128 {
//!     %x = load x[.., %j+:128] : f32[8, 128]
//!     store out[.., %j+:128], %x
//!     yield
//!   }
//! }
//! ```

use std::fmt;

use rustc_hash::FxHashMap;

use super::{Explain, PassContext, PassError, dce};
use crate::ir::{
    BinaryOp, Block, CmpOp, DType, Inst, InstKind, Kernel, Names, Space, Type, UnaryOp, Value,
};

/// A closed interval `[lo, hi]` (`lo <= hi`) of `i32` values, held in `i64`
/// so that sums and products of two of them are exact.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Interval {
    /// Least value.
    pub lo: i64,
    /// Greatest value.
    pub hi: i64,
}

impl Interval {
    /// `[lo, hi]` when it is not empty and lies in the `i32` range.
    pub fn new(lo: i64, hi: i64) -> Option<Interval> {
        (lo <= hi && lo >= i64::from(i32::MIN) && hi <= i64::from(i32::MAX))
            .then_some(Interval { lo, hi })
    }

    /// `[c, c]`.
    pub fn point(c: i64) -> Option<Interval> {
        Interval::new(c, c)
    }

    /// The interval of the element-wise op `op` of two values in `self`
    /// and `o`, if `op` is one the pass knows and no result leaves `i32`.
    pub fn binary(self, op: BinaryOp, o: Interval) -> Option<Interval> {
        // Operands are within i32, so every sum and product is exact in i64.
        match op {
            BinaryOp::Add => Interval::new(self.lo + o.lo, self.hi + o.hi),
            BinaryOp::Sub => Interval::new(self.lo - o.hi, self.hi - o.lo),
            BinaryOp::Mul => {
                let p = [
                    self.lo * o.lo,
                    self.lo * o.hi,
                    self.hi * o.lo,
                    self.hi * o.hi,
                ];
                Interval::new(*p.iter().min()?, *p.iter().max()?)
            }
            BinaryOp::Min => Interval::new(self.lo.min(o.lo), self.hi.min(o.hi)),
            BinaryOp::Max => Interval::new(self.lo.max(o.lo), self.hi.max(o.hi)),
            _ => None,
        }
    }

    /// `-x` for `x` in `self` (`-i32::MIN` wraps: no interval).
    pub fn negated(self) -> Option<Interval> {
        Interval::new(-self.hi, -self.lo)
    }

    /// The smallest interval holding both.
    pub fn union(self, o: Interval) -> Interval {
        Interval {
            lo: self.lo.min(o.lo),
            hi: self.hi.max(o.hi),
        }
    }

    /// The values of the variable of `for %j in lo..hi step step` (or a
    /// `parallel` axis): the exact `[lo, last]` for constant bounds, else
    /// `[lo.lo, hi.hi - 1]`; `None` when the loop may be empty for every
    /// bound (its body never runs) or `step` is not positive.
    pub fn loop_var(lo: Interval, hi: Interval, step: i64) -> Option<Interval> {
        if step <= 0 {
            return None;
        }
        if lo.lo == lo.hi && hi.lo == hi.hi {
            let (lo, hi) = (lo.lo, hi.lo);
            if hi <= lo {
                return None;
            }
            let trip = (hi - lo + step - 1) / step;
            return Interval::new(lo, lo + step * (trip - 1));
        }
        Interval::new(lo.lo, hi.hi - 1)
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {}]", self.lo, self.hi)
    }
}

/// Whether `a op b` holds for every pair of elements of `a` and `b`
/// (`Some(true)`), for none (`Some(false)`), or the intervals cannot say.
pub fn decide(op: CmpOp, a: Interval, b: Interval) -> Option<bool> {
    match op {
        CmpOp::Lt if a.hi < b.lo => Some(true),
        CmpOp::Lt if a.lo >= b.hi => Some(false),
        CmpOp::Le if a.hi <= b.lo => Some(true),
        CmpOp::Le if a.lo > b.hi => Some(false),
        CmpOp::Gt => decide(CmpOp::Lt, b, a),
        CmpOp::Ge => decide(CmpOp::Le, b, a),
        CmpOp::Eq if a.lo == a.hi && b.lo == b.hi && a.lo == b.lo => Some(true),
        CmpOp::Eq if a.hi < b.lo || b.hi < a.lo => Some(false),
        CmpOp::Ne => decide(CmpOp::Eq, a, b).map(|x| !x),
        _ => None,
    }
}

/// What the analysis knows of a value, for every element.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Fact {
    /// An `i32` value in this interval.
    Int(Interval),
    /// A `bool` value that is this everywhere.
    Bool(bool),
}

/// One select to fold.
struct Fold {
    /// The body of the function holding it.
    func: Block,
    /// The select's result.
    result: Value,
    /// The operand it always takes.
    to: Value,
}

/// What [`run`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Selects replaced by one of their operands.
    pub folded: usize,
    /// `--explain` notes: each fold and each near miss.
    pub notes: Vec<String>,
}

struct Analysis<'k> {
    k: &'k Kernel,
    facts: FxHashMap<Value, Fact>,
    folds: Vec<Fold>,
    notes: Vec<String>,
    explain: Explain,
    /// Names of the input kernel, for notes (only when they are recorded).
    names: Option<Names>,
}

impl Analysis<'_> {
    fn int(&self, v: Value) -> Option<Interval> {
        match self.facts.get(&v) {
            Some(Fact::Int(i)) => Some(*i),
            _ => None,
        }
    }

    fn boolean(&self, v: Value) -> Option<bool> {
        match self.facts.get(&v) {
            Some(Fact::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    fn block(&mut self, func: Block, b: Block) {
        let k = self.k;
        for &i in &k.blocks[b].insts {
            self.inst(func, i);
            match k.kind(i) {
                InstKind::For {
                    lo, hi, step, body, ..
                } => {
                    self.loop_var(*lo, *hi, *step, k.blocks[*body].params[0]);
                    self.block(func, *body);
                }
                InstKind::Parallel { axes, body } => {
                    for (ax, &p) in axes.iter().zip(&k.blocks[*body].params) {
                        self.loop_var(ax.lo, ax.hi, ax.step, p);
                    }
                    self.block(func, *body);
                }
                _ => {}
            }
        }
    }

    fn loop_var(&mut self, lo: Value, hi: Value, step: i64, var: Value) {
        if let (Some(lo), Some(hi)) = (self.int(lo), self.int(hi))
            && let Some(iv) = Interval::loop_var(lo, hi, step)
        {
            self.facts.insert(var, Fact::Int(iv));
        }
    }

    fn inst(&mut self, func: Block, i: Inst) {
        let k = self.k;
        let Some(&r) = k.insts[i].results.first() else {
            return;
        };
        let fact = match k.kind(i) {
            InstKind::IConst(c) => Interval::point(*c).map(Fact::Int),
            InstKind::Broadcast { src, .. } => self.facts.get(src).copied(),
            InstKind::Iota { shape, axis } => shape
                .get(*axis as usize)
                .and_then(|&n| Interval::new(0, i64::try_from(n).ok()? - 1))
                .map(Fact::Int),
            InstKind::Binary(op @ (BinaryOp::And | BinaryOp::Or), a, b) => {
                let (a, b) = (self.boolean(*a), self.boolean(*b));
                let absorbing = *op == BinaryOp::Or;
                match (a, b) {
                    (Some(x), _) | (_, Some(x)) if x == absorbing => Some(Fact::Bool(absorbing)),
                    (Some(_), Some(_)) => Some(Fact::Bool(!absorbing)),
                    _ => None,
                }
            }
            InstKind::Binary(op, a, b) => {
                let (a, b) = (self.int(*a), self.int(*b));
                a.zip(b).and_then(|(a, b)| a.binary(*op, b)).map(Fact::Int)
            }
            InstKind::Unary(UnaryOp::Neg, a) => {
                self.int(*a).and_then(Interval::negated).map(Fact::Int)
            }
            InstKind::Unary(UnaryOp::Not, a) => self.boolean(*a).map(|x| Fact::Bool(!x)),
            InstKind::Cmp(op, a, b) => {
                let (a, b) = (self.int(*a), self.int(*b));
                a.zip(b)
                    .and_then(|(a, b)| decide(*op, a, b))
                    .map(Fact::Bool)
            }
            InstKind::Select(c, a, b) => self.select(func, r, *c, *a, *b),
            _ => None,
        };
        // Intervals are for i32 values only, masks for bool ones.
        if let Some(f) = fact
            && matches!(
                (f, k.ty(r).dtype()),
                (Fact::Int(_), DType::I32) | (Fact::Bool(_), DType::Bool)
            )
        {
            self.facts.insert(r, f);
        }
    }

    fn select(&mut self, func: Block, r: Value, c: Value, a: Value, b: Value) -> Option<Fact> {
        let Some(taken) = self.boolean(c) else {
            self.near_miss(r, c);
            return match (self.facts.get(&a), self.facts.get(&b)) {
                (Some(Fact::Int(x)), Some(Fact::Int(y))) => Some(Fact::Int(x.union(*y))),
                (Some(Fact::Bool(x)), Some(Fact::Bool(y))) if x == y => Some(Fact::Bool(*x)),
                _ => None,
            };
        };
        let to = if taken { a } else { b };
        let unplaced = match self.k.ty(r) {
            Type::Scalar(_) => true,
            Type::Tile(t) => t.space == Space::Any,
        };
        if unplaced {
            self.folds.push(Fold {
                func,
                result: r,
                to,
            });
        }
        let (k, facts, names) = (self.k, &self.facts, &self.names);
        self.explain.push(&mut self.notes, || {
            let n = names.as_ref().expect("names are kept when notes are");
            let why = why(k, facts, n, c);
            if unplaced {
                format!(
                    "{} = select: {} is {taken} everywhere{why}, so it is {}",
                    n.value(r),
                    n.value(c),
                    n.value(to)
                )
            } else {
                format!(
                    "{} = select: {} is {taken} everywhere{why}, but the select is placed in {} \
                     (run range-fold before plan-memory): left alone",
                    n.value(r),
                    n.value(c),
                    k.ty(r).as_tile().map_or(Space::Any, |t| t.space)
                )
            }
        });
        self.facts.get(&to).copied()
    }

    /// Notes a select on an undecided integer comparison.
    fn near_miss(&mut self, r: Value, c: Value) {
        let Some(InstKind::Cmp(_, a, _)) = self.k.def_inst(c).map(|i| self.k.kind(i)) else {
            return;
        };
        if self.k.ty(*a).dtype() != DType::I32 {
            return;
        }
        let (k, facts, names) = (self.k, &self.facts, &self.names);
        self.explain.push(&mut self.notes, || {
            let n = names.as_ref().expect("names are kept when notes are");
            format!(
                "{} = select: {} is not decided for every element{}: left alone",
                n.value(r),
                n.value(c),
                why(k, facts, n, c)
            )
        });
    }
}

/// `` (`lt` of [0, 4095] and [4096, 4096])`` when `c` is a comparison, with
/// each operand's interval or `unknown`; else nothing.
fn why(k: &Kernel, facts: &FxHashMap<Value, Fact>, n: &Names, c: Value) -> String {
    let Some(InstKind::Cmp(op, a, b)) = k.def_inst(c).map(|i| k.kind(i)) else {
        return String::new();
    };
    let show = |v: Value| match facts.get(&v) {
        Some(Fact::Int(i)) => i.to_string(),
        _ => format!("{} unknown", n.value(v)),
    };
    format!(
        " (`{}` of {} and {})",
        InstKind::Cmp(*op, *a, *b).opcode(),
        show(*a),
        show(*b)
    )
}

/// Folds every select of `k` whose condition is decided (see the module
/// docs); notes are rendered only under [`Explain::Record`]. Expects
/// verified IR; leaves verified IR.
pub fn run(k: &mut Kernel, explain: Explain) -> Report {
    let mut a = Analysis {
        k,
        facts: FxHashMap::default(),
        folds: Vec::new(),
        notes: Vec::new(),
        explain,
        names: (explain == Explain::Record).then(|| Names::new(k)),
    };
    for f in &k.funcs {
        a.block(f.body, f.body);
    }
    let (folds, notes) = (a.folds, a.notes);
    // Folds are in program order: an operand that is an earlier folded
    // select has been replaced by what that select folded to.
    let mut replaced: FxHashMap<Value, Value> = FxHashMap::default();
    for f in &folds {
        let mut to = f.to;
        while let Some(&t) = replaced.get(&to) {
            to = t;
        }
        k.replace_uses_in(f.func, f.result, to);
        replaced.insert(f.result, to);
    }
    if !folds.is_empty() {
        dce::remove_dead(k);
    }
    Report {
        folded: folds.len(),
        notes,
    }
}

/// The `range-fold` pass (see the module docs).
#[derive(Copy, Clone, Debug, Default)]
pub struct RangeFold;

impl super::Pass for RangeFold {
    fn name(&self) -> &'static str {
        "range-fold"
    }

    fn run(&self, k: &mut Kernel, cx: &PassContext) -> Result<(), PassError> {
        let report = run(k, cx.explain);
        if report.folded > 0 {
            cx.note(format!(
                "folded {} select(s) whose integer comparison is decided everywhere",
                report.folded
            ));
        }
        for n in report.notes {
            cx.note(n);
        }
        Ok(())
    }

    fn explain(&self) -> &'static str {
        "replaces a select whose integer comparison is decided for every element by conservative \
         intervals (constants, loop variables, iota, broadcast, add/sub/mul/min/max/neg that \
         cannot overflow i32) by the operand it always takes: the KV-block mask when N is a \
         multiple of the block size"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(lo: i64, hi: i64) -> Interval {
        Interval::new(lo, hi).unwrap()
    }

    #[test]
    fn arithmetic_that_may_leave_i32_has_no_interval() {
        let max = i64::from(i32::MAX);
        let min = i64::from(i32::MIN);
        assert_eq!(
            iv(0, 4095).binary(BinaryOp::Add, iv(0, 127)),
            Some(iv(0, 4222))
        );
        assert_eq!(iv(max, max).binary(BinaryOp::Add, iv(0, 1)), None);
        assert_eq!(iv(min, min).binary(BinaryOp::Sub, iv(0, 1)), None);
        assert_eq!(
            iv(-3, 2).binary(BinaryOp::Mul, iv(-5, 4)),
            Some(iv(-12, 15))
        );
        assert_eq!(
            iv(1 << 16, 1 << 16).binary(BinaryOp::Mul, iv(1 << 15, 1 << 15)),
            None
        );
        assert_eq!(iv(min, 0).negated(), None);
        assert_eq!(iv(-4, 7).binary(BinaryOp::Min, iv(0, 3)), Some(iv(-4, 3)));
        assert_eq!(iv(-4, 7).binary(BinaryOp::Max, iv(0, 3)), Some(iv(0, 7)));
        assert_eq!(iv(1, 2).binary(BinaryOp::Div, iv(1, 2)), None);
    }

    #[test]
    fn a_loop_variable_ends_at_its_exact_last_value() {
        let s = 128;
        assert_eq!(
            Interval::loop_var(iv(0, 0), iv(4096, 4096), s),
            Some(iv(0, 3968))
        );
        assert_eq!(
            Interval::loop_var(iv(0, 0), iv(4000, 4000), s),
            Some(iv(0, 3968))
        );
        assert_eq!(
            Interval::loop_var(iv(0, 0), iv(3969, 3969), s),
            Some(iv(0, 3968))
        );
        assert_eq!(
            Interval::loop_var(iv(0, 0), iv(3968, 3968), s),
            Some(iv(0, 3840))
        );
        assert_eq!(Interval::loop_var(iv(5, 5), iv(6, 6), s), Some(iv(5, 5)));
        // Empty loops: the body never runs.
        assert_eq!(Interval::loop_var(iv(5, 5), iv(5, 5), s), None);
        assert_eq!(Interval::loop_var(iv(5, 5), iv(-1, -1), s), None);
        // Bounds known only as intervals.
        assert_eq!(Interval::loop_var(iv(0, 4), iv(10, 20), s), Some(iv(0, 19)));
        // The last value is below `hi`, so it fits even next to i32::MAX.
        let max = i64::from(i32::MAX);
        assert_eq!(
            Interval::loop_var(iv(0, 0), iv(max, max), 1 << 30),
            Some(iv(0, 1 << 30))
        );
    }

    #[test]
    fn comparisons_are_decided_only_when_the_intervals_fix_them() {
        let (j_col, n) = (iv(0, 3968 + 127), iv(4096, 4096));
        assert_eq!(decide(CmpOp::Lt, j_col, n), Some(true));
        assert_eq!(decide(CmpOp::Ge, j_col, n), Some(false));
        assert_eq!(decide(CmpOp::Lt, j_col, iv(4000, 4000)), None);
        assert_eq!(decide(CmpOp::Le, iv(0, 5), iv(5, 9)), Some(true));
        assert_eq!(decide(CmpOp::Lt, iv(0, 5), iv(5, 9)), None);
        assert_eq!(decide(CmpOp::Gt, iv(6, 9), iv(0, 5)), Some(true));
        assert_eq!(decide(CmpOp::Le, iv(6, 9), iv(0, 5)), Some(false));
        assert_eq!(decide(CmpOp::Eq, iv(3, 3), iv(3, 3)), Some(true));
        assert_eq!(decide(CmpOp::Eq, iv(3, 4), iv(3, 4)), None);
        assert_eq!(decide(CmpOp::Ne, iv(0, 2), iv(3, 4)), Some(true));
        assert_eq!(decide(CmpOp::Ne, iv(0, 3), iv(3, 4)), None);
    }
}
