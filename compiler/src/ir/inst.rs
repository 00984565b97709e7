//! Instructions: what each op reads, what it means, and which unit runs it.
//!
//! Every instruction has zero or more result values ([`super::ValueDef`]);
//! loops own a body [`super::Block`]. Operand order in the text form is the
//! field order here.

use super::types::{DType, Space};
use super::{Block, DimId, Tensor, Value};

/// Element-wise unary operations.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    /// `-x`.
    Neg,
    /// Logical not of a mask.
    Not,
    /// `e^x`.
    Exp,
    /// `2^x`.
    Exp2,
    /// Natural log.
    Log,
    /// Base-2 log.
    Log2,
    /// Square root.
    Sqrt,
    /// Absolute value.
    Abs,
    /// Round toward +inf (float in, float out).
    Ceil,
    /// Round toward -inf.
    Floor,
    /// Round to nearest, ties to even.
    Round,
}

/// Element-wise binary operations (operands have equal types).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `a + b` (wrapping for i32).
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
    /// `a / b` (i32: truncating; a zero divisor yields 0).
    Div,
    /// `a % b` (i32 only; a zero divisor yields 0).
    Rem,
    /// Larger of the two (float: IEEE maxNum, −inf is the identity).
    Max,
    /// Smaller of the two.
    Min,
    /// Logical and of masks.
    And,
    /// Logical or of masks.
    Or,
}

/// Comparisons (result dtype `bool`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum CmpOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// Row reductions over the last dim: `[.., C]` → `[..]`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// Row maximum (−inf for a row of −inf).
    Max,
    /// Row sum.
    Sum,
}

/// One index of a [`InstKind::Load`], [`InstKind::Store`] or
/// [`InstKind::Extract`], one per dim of the indexed tensor or tile.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Index {
    /// One position (an `i32` scalar value); the dim is dropped.
    Point(Value),
    /// `len` positions from `start` (an `i32` scalar); positions past the end
    /// read as 0 and are dropped on store.
    Range {
        /// First position.
        start: Value,
        /// Number of positions (static).
        len: u64,
    },
    /// The whole dim (must be static for tiles).
    Full,
}

/// How the right operand of a matmul is laid out.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum BLayout {
    /// `b` is `[K, N]`.
    KN,
    /// `b` is `[N, K]` (the matmul reads it transposed: `a @ b^T`).
    NK,
}

/// Which side of the core runs a function (`Any` before `split`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Unit {
    /// Unassigned: the single function lowering produces.
    Any,
    /// The Cube core (AIC).
    Cube,
    /// The Vector cores (AIV).
    Vector,
}

impl Unit {
    /// Text name.
    pub fn name(self) -> &'static str {
        match self {
            Unit::Any => "any",
            Unit::Cube => "cube",
            Unit::Vector => "vector",
        }
    }
}

/// An instruction's operation and operands.
#[derive(Clone, Debug, PartialEq)]
pub enum InstKind {
    /// An `i32` scalar constant.
    IConst(i64),
    /// A float scalar constant of the given dtype (`-inf`, `inf` allowed).
    FConst(f64, DType),
    /// The launch-time value of a kernel dim, as an `i32` scalar.
    DimValue(DimId),
    /// This Vector unit's sub-block index (0 on the Cube), an `i32` scalar.
    SubBlock,
    /// Reads `tensor[index]` from GM into a tile of the result's space (or a
    /// scalar when every index is a point). Out-of-range elements read 0.
    Load {
        /// GM tensor read.
        tensor: Tensor,
        /// One entry per tensor dim.
        index: Vec<Index>,
    },
    /// Writes `value` to `tensor[index]`; out-of-range elements are dropped.
    Store {
        /// GM tensor written.
        tensor: Tensor,
        /// One entry per tensor dim.
        index: Vec<Index>,
        /// The tile written (its shape is the non-point dims of `index`).
        value: Value,
    },
    /// `tensor[index] += value`, f32, atomically (FixPipe / MTE3 atomic add).
    AtomicAdd {
        /// GM tensor updated.
        tensor: Tensor,
        /// One entry per tensor dim.
        index: Vec<Index>,
        /// The f32 tile added.
        value: Value,
    },
    /// `tensor[index] *= 2^n` row by row, done as AMLA's guarded integer add
    /// of `n << 23` to the f32 bits in GM (exact, flushing underflow to ±0;
    /// ±0 stays ±0). `n` is an `i32` tile with one entry per row, each in
    /// `[-255, 0]`.
    AtomicExpAdd {
        /// GM tensor updated (f32).
        tensor: Tensor,
        /// One entry per tensor dim.
        index: Vec<Index>,
        /// Per-row exponent steps.
        n: Value,
    },
    /// A static sub-tile of a tile value: `src[index]` with constant ranges.
    Extract {
        /// The tile sliced.
        src: Value,
        /// One entry per dim of `src`.
        index: Vec<Index>,
    },
    /// Moves a tile to another buffer (same dtype and shape).
    Copy {
        /// The tile moved.
        src: Value,
        /// The destination buffer.
        to: Space,
    },
    /// A scalar or a shorter-ranked tile repeated to `shape`: the input's
    /// shape is a prefix of `shape` (per-row vectors repeat along the last
    /// dims).
    Broadcast {
        /// The value repeated.
        src: Value,
        /// Result shape.
        shape: Vec<u64>,
    },
    /// An `i32` tile of `shape` holding each element's index along `axis`.
    Iota {
        /// Result shape.
        shape: Vec<u64>,
        /// The dim whose index is taken.
        axis: u32,
    },
    /// Element-wise unary op.
    Unary(UnaryOp, Value),
    /// Element-wise binary op (equal operand types).
    Binary(BinaryOp, Value, Value),
    /// Element-wise comparison → `bool`.
    Cmp(CmpOp, Value, Value),
    /// `cond ? a : b` element-wise (all three of one shape).
    Select(Value, Value, Value),
    /// Row reduction over the last dim.
    Reduce(ReduceOp, Value),
    /// Value conversion (float→bf16/f16 rounds to nearest even; float→i32
    /// truncates toward zero, saturating).
    Cast(Value, DType),
    /// Reinterprets bits between f32 and i32.
    Bitcast(Value, DType),
    /// Same elements, new static shape.
    Reshape(Value, Vec<u64>),
    /// Swaps the two dims of a rank-2 tile.
    Transpose(Value),
    /// `a @ b` (bf16/f16 in, f32 out), optionally added to `acc`.
    Matmul {
        /// `[M, K]`.
        a: Value,
        /// `[K, N]` or `[N, K]` per `b_layout`.
        b: Value,
        /// How `b` is laid out.
        b_layout: BLayout,
        /// When present, the result is `acc + a @ b` (L0C accumulate).
        acc: Option<Value>,
    },
    /// Raises cross-unit flag `id` (Cube→Vector or Vector→Cube by unit).
    SetFlag(u32),
    /// Blocks until flag `id` is raised by the other unit, then lowers it.
    WaitFlag(u32),
    /// The grid: runs `body` once per point of the axes, spread over cores.
    /// The body's parameters are the axis variables.
    Parallel {
        /// `lo..hi step` per axis (`i32` scalars; step static).
        axes: Vec<Axis>,
        /// Loop body.
        body: Block,
    },
    /// A sequential loop `for iv in lo..hi step`, carrying `init` through
    /// the body's parameters `[iv, carried…]`; the body ends in `Yield` of
    /// the next carried values; the results are the final carried values.
    For {
        /// First iteration value.
        lo: Value,
        /// Exclusive bound.
        hi: Value,
        /// Positive static step.
        step: i64,
        /// Initial carried values.
        init: Vec<Value>,
        /// Loop body.
        body: Block,
    },
    /// Ends a `For` body with the next carried values.
    Yield(Vec<Value>),
}

/// One axis of a [`InstKind::Parallel`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Axis {
    /// First value (`i32` scalar).
    pub lo: Value,
    /// Exclusive bound (`i32` scalar).
    pub hi: Value,
    /// Positive static step.
    pub step: i64,
}

impl InstKind {
    /// The op's name in the text form.
    pub fn opcode(&self) -> &'static str {
        match self {
            InstKind::IConst(_) => "iconst",
            InstKind::FConst(..) => "fconst",
            InstKind::DimValue(_) => "dim",
            InstKind::SubBlock => "sub_block",
            InstKind::Load { .. } => "load",
            InstKind::Store { .. } => "store",
            InstKind::AtomicAdd { .. } => "atomic_add",
            InstKind::AtomicExpAdd { .. } => "atomic_exp_add",
            InstKind::Extract { .. } => "extract",
            InstKind::Copy { .. } => "copy",
            InstKind::Broadcast { .. } => "broadcast",
            InstKind::Iota { .. } => "iota",
            InstKind::Unary(op, _) => match op {
                UnaryOp::Neg => "neg",
                UnaryOp::Not => "not",
                UnaryOp::Exp => "exp",
                UnaryOp::Exp2 => "exp2",
                UnaryOp::Log => "log",
                UnaryOp::Log2 => "log2",
                UnaryOp::Sqrt => "sqrt",
                UnaryOp::Abs => "abs",
                UnaryOp::Ceil => "ceil",
                UnaryOp::Floor => "floor",
                UnaryOp::Round => "round",
            },
            InstKind::Binary(op, ..) => match op {
                BinaryOp::Add => "add",
                BinaryOp::Sub => "sub",
                BinaryOp::Mul => "mul",
                BinaryOp::Div => "div",
                BinaryOp::Rem => "rem",
                BinaryOp::Max => "max",
                BinaryOp::Min => "min",
                BinaryOp::And => "and",
                BinaryOp::Or => "or",
            },
            InstKind::Cmp(op, ..) => match op {
                CmpOp::Eq => "eq",
                CmpOp::Ne => "ne",
                CmpOp::Lt => "lt",
                CmpOp::Le => "le",
                CmpOp::Gt => "gt",
                CmpOp::Ge => "ge",
            },
            InstKind::Select(..) => "select",
            InstKind::Reduce(op, _) => match op {
                ReduceOp::Max => "rowmax",
                ReduceOp::Sum => "rowsum",
            },
            InstKind::Cast(..) => "cast",
            InstKind::Bitcast(..) => "bitcast",
            InstKind::Reshape(..) => "reshape",
            InstKind::Transpose(_) => "transpose",
            InstKind::Matmul { .. } => "matmul",
            InstKind::SetFlag(_) => "set_flag",
            InstKind::WaitFlag(_) => "wait_flag",
            InstKind::Parallel { .. } => "parallel",
            InstKind::For { .. } => "for",
            InstKind::Yield(_) => "yield",
        }
    }

    /// Calls `f` on every value operand, in text order (loop bodies are not
    /// entered).
    pub fn for_each_operand(&self, mut f: impl FnMut(Value)) {
        let index = |ix: &[Index], f: &mut dyn FnMut(Value)| {
            for i in ix {
                match i {
                    Index::Point(v) | Index::Range { start: v, .. } => f(*v),
                    Index::Full => {}
                }
            }
        };
        match self {
            InstKind::IConst(_)
            | InstKind::FConst(..)
            | InstKind::DimValue(_)
            | InstKind::SubBlock
            | InstKind::Iota { .. }
            | InstKind::SetFlag(_)
            | InstKind::WaitFlag(_) => {}
            InstKind::Load { index: ix, .. } => index(ix, &mut f),
            InstKind::Store {
                index: ix, value, ..
            }
            | InstKind::AtomicAdd {
                index: ix, value, ..
            } => {
                index(ix, &mut f);
                f(*value);
            }
            InstKind::AtomicExpAdd { index: ix, n, .. } => {
                index(ix, &mut f);
                f(*n);
            }
            InstKind::Extract { src, index: ix } => {
                f(*src);
                index(ix, &mut f);
            }
            InstKind::Copy { src, .. } | InstKind::Broadcast { src, .. } => f(*src),
            InstKind::Unary(_, a)
            | InstKind::Reduce(_, a)
            | InstKind::Cast(a, _)
            | InstKind::Bitcast(a, _)
            | InstKind::Reshape(a, _)
            | InstKind::Transpose(a) => f(*a),
            InstKind::Binary(_, a, b) | InstKind::Cmp(_, a, b) => {
                f(*a);
                f(*b);
            }
            InstKind::Select(c, a, b) => {
                f(*c);
                f(*a);
                f(*b);
            }
            InstKind::Matmul { a, b, acc, .. } => {
                f(*a);
                f(*b);
                if let Some(c) = acc {
                    f(*c);
                }
            }
            InstKind::Parallel { axes, .. } => {
                for ax in axes {
                    f(ax.lo);
                    f(ax.hi);
                }
            }
            InstKind::For { lo, hi, init, .. } => {
                f(*lo);
                f(*hi);
                init.iter().copied().for_each(f);
            }
            InstKind::Yield(vs) => vs.iter().copied().for_each(f),
        }
    }

    /// Rewrites every value operand in place through `f` (loop bodies are
    /// not entered).
    pub fn map_operands(&mut self, mut f: impl FnMut(Value) -> Value) {
        fn index(ix: &mut [Index], f: &mut dyn FnMut(Value) -> Value) {
            for i in ix {
                match i {
                    Index::Point(v) | Index::Range { start: v, .. } => *v = f(*v),
                    Index::Full => {}
                }
            }
        }
        match self {
            InstKind::IConst(_)
            | InstKind::FConst(..)
            | InstKind::DimValue(_)
            | InstKind::SubBlock
            | InstKind::Iota { .. }
            | InstKind::SetFlag(_)
            | InstKind::WaitFlag(_) => {}
            InstKind::Load { index: ix, .. } => index(ix, &mut f),
            InstKind::Store {
                index: ix, value, ..
            }
            | InstKind::AtomicAdd {
                index: ix, value, ..
            } => {
                index(ix, &mut f);
                *value = f(*value);
            }
            InstKind::AtomicExpAdd { index: ix, n, .. } => {
                index(ix, &mut f);
                *n = f(*n);
            }
            InstKind::Extract { src, index: ix } => {
                *src = f(*src);
                index(ix, &mut f);
            }
            InstKind::Copy { src, .. } | InstKind::Broadcast { src, .. } => *src = f(*src),
            InstKind::Unary(_, a)
            | InstKind::Reduce(_, a)
            | InstKind::Cast(a, _)
            | InstKind::Bitcast(a, _)
            | InstKind::Reshape(a, _)
            | InstKind::Transpose(a) => *a = f(*a),
            InstKind::Binary(_, a, b) | InstKind::Cmp(_, a, b) => {
                *a = f(*a);
                *b = f(*b);
            }
            InstKind::Select(c, a, b) => {
                *c = f(*c);
                *a = f(*a);
                *b = f(*b);
            }
            InstKind::Matmul { a, b, acc, .. } => {
                *a = f(*a);
                *b = f(*b);
                if let Some(c) = acc {
                    *c = f(*c);
                }
            }
            InstKind::Parallel { axes, .. } => {
                for ax in axes {
                    ax.lo = f(ax.lo);
                    ax.hi = f(ax.hi);
                }
            }
            InstKind::For { lo, hi, init, .. } => {
                *lo = f(*lo);
                *hi = f(*hi);
                for v in init {
                    *v = f(*v);
                }
            }
            InstKind::Yield(vs) => {
                for v in vs {
                    *v = f(*v);
                }
            }
        }
    }

    /// The body block of a loop.
    pub fn body(&self) -> Option<Block> {
        match self {
            InstKind::Parallel { body, .. } | InstKind::For { body, .. } => Some(*body),
            _ => None,
        }
    }

    /// The GM tensor this op reads or writes.
    pub fn tensor(&self) -> Option<Tensor> {
        match self {
            InstKind::Load { tensor, .. }
            | InstKind::Store { tensor, .. }
            | InstKind::AtomicAdd { tensor, .. }
            | InstKind::AtomicExpAdd { tensor, .. } => Some(*tensor),
            _ => None,
        }
    }

    /// True for ops with an effect beyond their results (stores, flags,
    /// loops, yields): dead-code elimination keeps them.
    pub fn has_effect(&self) -> bool {
        matches!(
            self,
            InstKind::Store { .. }
                | InstKind::AtomicAdd { .. }
                | InstKind::AtomicExpAdd { .. }
                | InstKind::SetFlag(_)
                | InstKind::WaitFlag(_)
                | InstKind::Parallel { .. }
                | InstKind::For { .. }
                | InstKind::Yield(_)
        )
    }
}
