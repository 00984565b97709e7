//! The untyped AST, as parsed. Every node owns the byte [`Span`] of the
//! source it came from. Names are not resolved and nothing is typed here; that
//! is the checker's job.

use super::Span;
use crate::check::hir::DType;

/// A name and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    /// The text.
    pub name: String,
    /// Where.
    pub span: Span,
}

/// `kernel NAME(inputs) -> (outputs) { decls stmts }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Kernel {
    /// The kernel's name.
    pub name: Ident,
    /// Read-only parameters.
    pub inputs: Vec<Param>,
    /// Write-only parameters.
    pub outputs: Vec<Param>,
    /// `dim` and `const` declarations, in order.
    pub decls: Vec<Decl>,
    /// The body's statements (the checker wants exactly one `parallel`).
    pub body: Vec<Stmt>,
    /// The whole kernel.
    pub span: Span,
}

/// `name: dtype[dims]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// Its name.
    pub name: Ident,
    /// Its type.
    pub ty: TypeExpr,
    /// The whole parameter.
    pub span: Span,
}

/// `dtype` or `dtype[e, …]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeExpr {
    /// The element type.
    pub dtype: DType,
    /// The dims (empty when no brackets: a scalar).
    pub shape: Vec<Expr>,
    /// The whole type.
    pub span: Span,
}

/// Which declaration keyword.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeclKind {
    /// `dim`
    Dim,
    /// `const`
    Const,
}

/// `dim A = e, …;` or `const A = e, …;`.
#[derive(Debug, Clone, PartialEq)]
pub struct Decl {
    /// The keyword.
    pub kind: DeclKind,
    /// The bindings, at least one.
    pub items: Vec<DeclItem>,
    /// The whole declaration.
    pub span: Span,
}

/// `NAME = e` in a declaration.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclItem {
    /// The declared name.
    pub name: Ident,
    /// Its value.
    pub value: Expr,
    /// `NAME = e`.
    pub span: Span,
}

/// A statement.
#[derive(Debug, Clone, PartialEq)]
pub struct Stmt {
    /// What kind.
    pub kind: StmtKind,
    /// The whole statement.
    pub span: Span,
}

/// The statement forms.
#[derive(Debug, Clone, PartialEq)]
pub enum StmtKind {
    /// `parallel a in lo..hi, … { … }`.
    Parallel {
        /// At least one axis.
        axes: Vec<Axis>,
        /// The body.
        body: Block,
    },
    /// `for a in lo..hi step s { … }`.
    For {
        /// The loop axis.
        axis: Axis,
        /// The body.
        body: Block,
    },
    /// `let x[: T] = e;`.
    Let {
        /// The bound name.
        name: Ident,
        /// The annotation, if any.
        ty: Option<TypeExpr>,
        /// The value.
        value: Expr,
    },
    /// `var x[: T] = e;`.
    Var {
        /// The bound name.
        name: Ident,
        /// The annotation, if any.
        ty: Option<TypeExpr>,
        /// The initial value.
        init: Expr,
    },
    /// `x = e;` or `x[idx] = e;`.
    Assign {
        /// The assigned name.
        target: Ident,
        /// `Some` for `x[idx] = e` (a store).
        index: Option<Vec<IndexItem>>,
        /// The value.
        value: Expr,
    },
}

/// `v in lo..hi [step s]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// The variable.
    pub var: Ident,
    /// Lower bound (inclusive).
    pub lo: Expr,
    /// Upper bound (exclusive).
    pub hi: Expr,
    /// The step, if written.
    pub step: Option<Expr>,
    /// The whole axis.
    pub span: Span,
}

/// `{ stmts }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// In order.
    pub stmts: Vec<Stmt>,
    /// From `{` to `}`.
    pub span: Span,
}

/// One entry of `x[…]`.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexItem {
    /// `e`: one index.
    Point(Expr),
    /// `a..b`: a slice.
    Range(Expr, Expr),
    /// `..`: the whole dim.
    Full(Span),
}

/// An expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    /// What kind.
    pub kind: ExprKind,
    /// The whole expression.
    pub span: Span,
    /// Height of this tree (a leaf is 1). The parser refuses trees higher
    /// than [`super::MAX_DEPTH`], so recursive walks are bounded.
    pub depth: u32,
}

/// Unary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    /// `-`
    Neg,
    /// `!`
    Not,
}

/// Binary operators, including `@`, comparisons and `&&`/`||`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Rem,
    /// `@`
    Matmul,
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
    /// `&&`
    And,
    /// `||`
    Or,
}

impl BinOp {
    /// The source spelling.
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
            BinOp::Matmul => "@",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::And => "&&",
            BinOp::Or => "||",
        }
    }
}

/// The expression forms.
#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    /// An integer literal (fits in i64).
    Int(i64),
    /// A float literal; `inf` is `f64::INFINITY`.
    Float(f64),
    /// A name.
    Name(String),
    /// `-e`, `!e`.
    Unary(UnaryOp, Box<Expr>),
    /// `a op b`.
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `e[items]`.
    Index(Box<Expr>, Vec<IndexItem>),
    /// `e^T`.
    Transpose(Box<Expr>),
    /// `f(args)`; `f` may be a dtype name (a conversion) or `where`.
    Call(Ident, Vec<Expr>),
}
