//! The typed HIR: the checker's output and the lowering's input.
//!
//! A [`Kernel`] is a set of arenas (dims, consts, params, locals, exprs)
//! addressed by small copyable ids, plus the statement tree under the one
//! top-level [`Parallel`] grid.
//!
//! Invariants that hold for every `Kernel` returned by [`crate::check::check`]
//! (lowering may rely on them and need not re-check):
//!
//! - every id stored anywhere indexes its arena (`exprs[id.0]` exists);
//! - no [`ExprKind::Error`] is reachable from `grid` (the checker returns
//!   diagnostics instead of a kernel when anything is wrong);
//! - **every implicit conversion is explicit**: literals and constants carry
//!   the dtype of the operand they meet; every broadcast is a
//!   [`ExprKind::Broadcast`] node; the operands of [`ExprKind::Binary`] have
//!   *equal* types, those of [`ExprKind::Cmp`] too (the result is `Bool` of
//!   that shape); the two branches of `Where` and its condition have the
//!   result's shape;
//! - every tile shape (the `ty.shape` of every expr and local) contains only
//!   [`Dim::Const`]: dims bound at compile time (`dim` default or `-D`) are
//!   substituted. [`Dim::Sym`] appears only in [`Param::shape`], for dims
//!   left open until launch;
//! - every index list has exactly the rank of what it indexes (missing
//!   trailing indices are made explicit as [`IndexItem::Full`]);
//! - the arena may hold exprs that no statement reaches (e.g. the argument of
//!   `col_index`, of which only the shape is used); lowering walks the tree
//!   from `grid`, not the arena.

use std::fmt;

use crate::syntax::Span;

/// Index of a [`DimDecl`] in [`Kernel::dims`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DimId(pub u32);

/// Index of a [`ConstDecl`] in [`Kernel::consts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConstId(pub u32);

/// Index of a [`Param`] in [`Kernel::params`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(pub u32);

/// Index of a [`Local`] in [`Kernel::locals`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalId(pub u32);

/// Index of an [`Expr`] in [`Kernel::exprs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExprId(pub u32);

/// A checked kernel.
#[derive(Debug, Clone, PartialEq)]
pub struct Kernel {
    /// The kernel's name.
    pub name: String,
    /// Every symbolic dim of the signature, in order of first appearance in
    /// the parameter list (a `dim` declaration never introduces a new dim).
    pub dims: Vec<DimDecl>,
    /// Every `const`, in declaration order, with `-D` overrides applied.
    pub consts: Vec<ConstDecl>,
    /// Inputs first, then outputs, each in signature order.
    pub params: Vec<Param>,
    /// Every binding: `let`, `var`, `for` and `parallel` variables. Names
    /// may repeat (shadowing); ids never do.
    pub locals: Vec<Local>,
    /// The expression arena.
    pub exprs: Vec<Expr>,
    /// The one top-level grid; every statement lives in its body.
    pub grid: Parallel,
}

/// A symbolic dim of the signature.
#[derive(Debug, Clone, PartialEq)]
pub struct DimDecl {
    /// Its name (`N`).
    pub name: String,
    /// `Some(v)` (`v > 0`) when bound at compile time by a `dim` default or
    /// `-D`; `None` when it stays open until launch.
    pub value: Option<i64>,
    /// Its first appearance in the signature.
    pub span: Span,
}

/// A compile-time constant.
#[derive(Debug, Clone, PartialEq)]
pub struct ConstDecl {
    /// Its name.
    pub name: String,
    /// Its value after `-D` overrides.
    pub value: ConstValue,
    /// The declaration.
    pub span: Span,
}

/// The value of a `const`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ConstValue {
    /// An integer constant.
    Int(i64),
    /// A float constant (may be `inf`).
    Float(f64),
}

impl ConstValue {
    /// The value as f64 (ints convert exactly up to 2^53).
    pub fn as_f64(self) -> f64 {
        match self {
            ConstValue::Int(v) => v as f64,
            ConstValue::Float(v) => v,
        }
    }
}

/// Whether a parameter is read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Read-only: read with [`ExprKind::Load`].
    Input,
    /// Write-only: written with [`Stmt::Store`], never read.
    Output,
}

/// A kernel parameter: a tensor in global memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// Its name.
    pub name: String,
    /// Never `Bool`.
    pub dtype: DType,
    /// Its shape: bound dims as `Const`, open dims as `Sym`. Empty for a
    /// scalar parameter (`x: f32`, a single element in global memory).
    pub shape: Vec<Dim>,
    /// Input or output.
    pub role: Role,
    /// The parameter in the signature.
    pub span: Span,
}

/// What kind of binding a [`Local`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalKind {
    /// `let`: assigned once, by its [`Stmt::Let`].
    Let,
    /// `var`: initialised by [`Stmt::Var`], reassigned by [`Stmt::Assign`].
    Var,
    /// A `for` variable: `i32` scalar.
    LoopVar,
    /// A `parallel` axis variable: `i32` scalar.
    ParallelVar,
}

/// A binding.
#[derive(Debug, Clone, PartialEq)]
pub struct Local {
    /// The source name (not unique: shadowing reuses names).
    pub name: String,
    /// Its type; shape all [`Dim::Const`].
    pub ty: Type,
    /// Let, var, loop or parallel variable.
    pub kind: LocalKind,
    /// The binding's name in the source.
    pub span: Span,
}

/// Element types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// bfloat16.
    Bf16,
    /// IEEE half.
    F16,
    /// IEEE single.
    F32,
    /// 32-bit signed integer (indices, masks arithmetic).
    I32,
    /// Comparison results (masks); never a parameter.
    Bool,
}

impl DType {
    /// `bf16`, `f16` or `f32`.
    pub fn is_float(self) -> bool {
        matches!(self, DType::Bf16 | DType::F16 | DType::F32)
    }

    /// A float or `i32` (arithmetic is defined on it).
    pub fn is_numeric(self) -> bool {
        self != DType::Bool
    }

    /// The source spelling.
    pub fn name(self) -> &'static str {
        match self {
            DType::Bf16 => "bf16",
            DType::F16 => "f16",
            DType::F32 => "f32",
            DType::I32 => "i32",
            DType::Bool => "bool",
        }
    }

    /// The dtype spelled `s`, if any.
    pub fn from_name(s: &str) -> Option<DType> {
        Some(match s {
            "bf16" => DType::Bf16,
            "f16" => DType::F16,
            "f32" => DType::F32,
            "i32" => DType::I32,
            "bool" => DType::Bool,
            _ => return None,
        })
    }
}

/// One dimension of a shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dim {
    /// Known at compile time.
    Const(u64),
    /// A dim left open until launch ([`DimDecl::value`] is `None`). Only in
    /// [`Param::shape`].
    Sym(DimId),
}

/// A value's type: dtype and shape. An empty shape is a scalar.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Type {
    /// Element type.
    pub dtype: DType,
    /// Dims, outermost first; empty for a scalar.
    pub shape: Vec<Dim>,
}

impl Type {
    /// A scalar of `dtype`.
    pub fn scalar(dtype: DType) -> Type {
        Type {
            dtype,
            shape: Vec::new(),
        }
    }

    /// True for rank 0.
    pub fn is_scalar(&self) -> bool {
        self.shape.is_empty()
    }
}

/// An expression node.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    /// What it computes.
    pub kind: ExprKind,
    /// Its type (see the invariants of each kind).
    pub ty: Type,
    /// The source it came from (for an implicit node such as a
    /// `Broadcast`, the span of the expression it converts).
    pub span: Span,
}

/// Unary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    /// `-x`: numeric dtypes; result type = operand type.
    Neg,
    /// `!x`: `Bool` only; result type = operand type.
    Not,
}

/// Element-wise binary operators. After check both operands have equal
/// types and the result has that type too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `+`, numeric.
    Add,
    /// `-`, numeric.
    Sub,
    /// `*`, numeric.
    Mul,
    /// `/`, numeric; on `I32` it truncates toward zero.
    Div,
    /// `%`, `I32` only (remainder with the sign of the dividend).
    Rem,
    /// `max(a, b)`, numeric.
    Max,
    /// `min(a, b)`, numeric.
    Min,
    /// `&&`, `Bool` only.
    And,
    /// `||`, `Bool` only.
    Or,
}

/// Comparisons. Operands have equal numeric types; the result is `Bool` of
/// their shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Element-wise math functions: operand and result have the same float type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MathFn {
    /// e^x
    Exp,
    /// 2^x
    Exp2,
    /// natural log
    Log,
    /// log base 2
    Log2,
    /// square root
    Sqrt,
    /// absolute value
    Abs,
}

/// One entry of an index list.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexItem {
    /// Picks one index (an `I32` scalar expr) and drops the dim.
    Point(ExprId),
    /// Keeps `len` elements from `start` (an `I32` scalar expr); `len > 0`
    /// is a compile-time constant. Elements past the end of a parameter
    /// read as zero / are not stored.
    Range {
        /// First element.
        start: ExprId,
        /// Number of elements kept.
        len: u64,
    },
    /// Keeps the whole dim (`..`, or a missing trailing index).
    Full,
}

/// What an expression computes.
#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    /// A float literal (also `inf`, and folded constant float
    /// expressions); `ty` is a float scalar, the value is rounded to it.
    FloatLit(f64),
    /// An integer literal (or folded constant integer expression, or a
    /// bound dim); `ty` is an `I32` scalar and the value fits in `i32`. (An integer constant meeting a
    /// float operand becomes a `FloatLit`.)
    IntLit(i64),
    /// Reads a local; `ty` = the local's type.
    Local(LocalId),
    /// The value of an open dim (`dims[id].value == None`) as an `I32`
    /// scalar, known at launch. A bound dim used as a value is folded into
    /// an `IntLit` (or `FloatLit`, when it meets a float operand).
    DimValue(DimId),
    /// The value of a `const` as a scalar of `ty.dtype` (converted from the
    /// const's int or float value: constants, like literals, take the dtype
    /// of the operand they meet). Never `Bool`.
    ConstValue(ConstId),
    /// A read of a kernel input. `ty.shape` is the kept dims (Range → len,
    /// Full → the param dim, which is then always `Const`).
    Load {
        /// An input (`role == Input`).
        param: ParamId,
        /// Exactly `params[param].shape.len()` items.
        index: Vec<IndexItem>,
    },
    /// Indexing of a tile value: exactly `base`'s rank items.
    Slice {
        /// A non-scalar expr.
        base: ExprId,
        /// Exactly the rank of `base`.
        index: Vec<IndexItem>,
    },
    /// `-x`, `!x`.
    Unary {
        /// The operator.
        op: UnaryOp,
        /// Same type as the result.
        arg: ExprId,
    },
    /// Element-wise binary op; `lhs`, `rhs` and the result have equal types.
    Binary {
        /// The operator.
        op: BinOp,
        /// Left operand.
        lhs: ExprId,
        /// Right operand.
        rhs: ExprId,
    },
    /// Element-wise comparison; `lhs` and `rhs` have equal numeric types, the
    /// result is `Bool` of their shape.
    Cmp {
        /// The comparison.
        op: CmpOp,
        /// Left operand.
        lhs: ExprId,
        /// Right operand.
        rhs: ExprId,
    },
    /// `lhs @ rhs`: `[M, K]` by `[K, N]`, both `Bf16` or both `F16`; the
    /// result is `F32[M, N]`.
    Matmul {
        /// `[M, K]`.
        lhs: ExprId,
        /// `[K, N]`.
        rhs: ExprId,
    },
    /// `x^T` of a rank-2 tile: `[R, C]` → `[C, R]`, same dtype.
    Transpose(ExprId),
    /// Element-wise math on a float tile or scalar; same type as `arg`.
    Math {
        /// The function.
        f: MathFn,
        /// The operand.
        arg: ExprId,
    },
    /// Maximum along the last dim: `[R, C]` → `[R]`, same dtype.
    RowMax(ExprId),
    /// Sum along the last dim: `[R, C]` → `[R]`, same dtype.
    RowSum(ExprId),
    /// Element-wise select: `cond` is `Bool`, `then` and `else_` have the
    /// result's type, all three have the result's shape.
    Where {
        /// The mask.
        cond: ExprId,
        /// Taken where `cond` is true.
        then: ExprId,
        /// Taken where `cond` is false.
        else_: ExprId,
    },
    /// `I32` tile of `shape` (rank 2, = `ty.shape`) holding each element's
    /// row index.
    RowIndex {
        /// The result shape.
        shape: Vec<Dim>,
    },
    /// `I32` tile of `shape` (rank 2, = `ty.shape`) holding each element's
    /// column index.
    ColIndex {
        /// The result shape.
        shape: Vec<Dim>,
    },
    /// Same elements in row-major order, new shape (= `ty.shape`); element
    /// counts are equal; same dtype.
    Reshape {
        /// The operand.
        arg: ExprId,
        /// The result shape.
        shape: Vec<Dim>,
    },
    /// Dtype conversion; `to != arg`'s dtype, same shape; float → bf16/f16
    /// rounds to nearest even.
    Cast {
        /// The operand.
        arg: ExprId,
        /// = `ty.dtype`.
        to: DType,
    },
    /// Repeats `arg` to shape `to` (= `ty.shape`): `arg`'s shape is empty (a
    /// scalar is repeated everywhere) or a proper prefix of `to` (a per-row
    /// `[H]` against `[H, BN]` repeats along the trailing dims). Same dtype.
    Broadcast {
        /// The operand.
        arg: ExprId,
        /// The result shape.
        to: Vec<Dim>,
    },
    /// Placeholder for an expression that failed to check; never in a
    /// kernel returned by `check`.
    Error,
}

/// A block of statements (a scope).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Block {
    /// In order.
    pub stmts: Vec<Stmt>,
}

/// A statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Stmt {
    /// `let x = value;`: `value`'s type = `locals[local].ty`.
    Let {
        /// A `Let` local.
        local: LocalId,
        /// Its value.
        value: ExprId,
    },
    /// `var x: T = init;`: `init`'s type = `locals[local].ty` (broadcast
    /// made explicit).
    Var {
        /// A `Var` local.
        local: LocalId,
        /// The initial value.
        init: ExprId,
    },
    /// `x = value;`: `local` is a `Var`, `value` has its type.
    Assign {
        /// A `Var` local.
        local: LocalId,
        /// The new value.
        value: ExprId,
    },
    /// `out[index] = value;`: writes a region of an output. `value`'s shape
    /// is the region's shape (kept dims; broadcast made explicit) and its
    /// dtype is the output's dtype.
    Store {
        /// An output (`role == Output`).
        param: ParamId,
        /// Exactly `params[param].shape.len()` items.
        index: Vec<IndexItem>,
        /// The stored tile.
        value: ExprId,
    },
    /// `for var in lo..hi step step { body }`: `var` takes `lo, lo+step, …`
    /// while `var < hi`.
    For {
        /// A `LoopVar` local (`I32` scalar).
        var: LocalId,
        /// `I32` scalar.
        lo: ExprId,
        /// `I32` scalar; may be dynamic (read from a tensor).
        hi: ExprId,
        /// `> 0`.
        step: i64,
        /// The loop body.
        body: Block,
    },
}

/// The grid: `parallel v0 in lo0..hi0 step s0, … { body }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Parallel {
    /// At least one axis, outermost first.
    pub axes: Vec<Axis>,
    /// The per-work-item body.
    pub body: Block,
}

/// One grid axis: `var` takes `lo, lo+step, …` while `var < hi`.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// A `ParallelVar` local (`I32` scalar).
    pub var: LocalId,
    /// `I32` scalar; does not read any local.
    pub lo: ExprId,
    /// `I32` scalar; does not read any local.
    pub hi: ExprId,
    /// `> 0`.
    pub step: i64,
}

impl Kernel {
    /// The expr `id`.
    pub fn expr(&self, id: ExprId) -> &Expr {
        &self.exprs[id.0 as usize]
    }

    /// The local `id`.
    pub fn local(&self, id: LocalId) -> &Local {
        &self.locals[id.0 as usize]
    }

    /// The param `id`.
    pub fn param(&self, id: ParamId) -> &Param {
        &self.params[id.0 as usize]
    }

    /// The dim `id`.
    pub fn dim(&self, id: DimId) -> &DimDecl {
        &self.dims[id.0 as usize]
    }

    /// The const `id`.
    pub fn konst(&self, id: ConstId) -> &ConstDecl {
        &self.consts[id.0 as usize]
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
