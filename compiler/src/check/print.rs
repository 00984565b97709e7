//! A readable text form of the HIR (`Display` for [`Kernel`]), for
//! `--emit ast`, debugging and snapshots. Every implicit conversion the
//! checker made explicit shows up (`broadcast`, typed literals), and every
//! let/var is printed with its type. Locals print as `name#id` so shadowed
//! names stay distinct.

use std::fmt::{self, Write};

use super::hir::*;

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "kernel {}", self.name)?;
        for d in &self.dims {
            match d.value {
                Some(v) => writeln!(f, "  dim {} = {v}", d.name)?,
                None => writeln!(f, "  dim {} (open)", d.name)?,
            }
        }
        for c in &self.consts {
            match c.value {
                ConstValue::Int(v) => writeln!(f, "  const {} = {v}", c.name)?,
                ConstValue::Float(v) => writeln!(f, "  const {} = {v:?}", c.name)?,
            }
        }
        for p in &self.params {
            let role = match p.role {
                Role::Input => "in",
                Role::Output => "out",
            };
            writeln!(
                f,
                "  {role} {}: {}",
                p.name,
                self.ty_str(&Type {
                    dtype: p.dtype,
                    shape: p.shape.clone()
                })
            )?;
        }
        let axes: Vec<String> = self
            .grid
            .axes
            .iter()
            .map(|a| {
                format!(
                    "{} in {}..{} step {}",
                    self.local_str(a.var),
                    self.e(a.lo),
                    self.e(a.hi),
                    a.step
                )
            })
            .collect();
        writeln!(f, "parallel {} {{", axes.join(", "))?;
        let mut out = String::new();
        self.block(&self.grid.body, 1, &mut out)?;
        f.write_str(&out)?;
        writeln!(f, "}}")
    }
}

impl Kernel {
    fn ty_str(&self, t: &Type) -> String {
        if t.shape.is_empty() {
            return t.dtype.to_string();
        }
        let dims: Vec<String> = t.shape.iter().map(|d| self.dim_str(*d)).collect();
        format!("{}[{}]", t.dtype, dims.join(", "))
    }

    fn dim_str(&self, d: Dim) -> String {
        match d {
            Dim::Const(v) => v.to_string(),
            Dim::Sym(id) => self
                .dims
                .get(id.0 as usize)
                .map_or("?".into(), |d| d.name.clone()),
        }
    }

    fn local_str(&self, l: LocalId) -> String {
        self.locals
            .get(l.0 as usize)
            .map_or("?".into(), |x| format!("{}#{}", x.name, l.0))
    }

    fn block(&self, b: &Block, depth: usize, out: &mut String) -> fmt::Result {
        let pad = "  ".repeat(depth);
        for s in &b.stmts {
            match s {
                Stmt::Let { local, value } => {
                    let ty = self
                        .locals
                        .get(local.0 as usize)
                        .map(|l| self.ty_str(&l.ty))
                        .unwrap_or_default();
                    writeln!(
                        out,
                        "{pad}let {}: {ty} = {};",
                        self.local_str(*local),
                        self.e(*value)
                    )?;
                }
                Stmt::Var { local, init } => {
                    let ty = self
                        .locals
                        .get(local.0 as usize)
                        .map(|l| self.ty_str(&l.ty))
                        .unwrap_or_default();
                    writeln!(
                        out,
                        "{pad}var {}: {ty} = {};",
                        self.local_str(*local),
                        self.e(*init)
                    )?;
                }
                Stmt::Assign { local, value } => {
                    writeln!(out, "{pad}{} = {};", self.local_str(*local), self.e(*value))?;
                }
                Stmt::Store {
                    param,
                    index,
                    value,
                } => {
                    let name = self
                        .params
                        .get(param.0 as usize)
                        .map_or("?", |p| p.name.as_str());
                    writeln!(
                        out,
                        "{pad}store {name}[{}] = {};",
                        self.index_str(index),
                        self.e(*value)
                    )?;
                }
                Stmt::For {
                    var,
                    lo,
                    hi,
                    step,
                    body,
                } => {
                    writeln!(
                        out,
                        "{pad}for {} in {}..{} step {step} {{",
                        self.local_str(*var),
                        self.e(*lo),
                        self.e(*hi)
                    )?;
                    self.block(body, depth + 1, out)?;
                    writeln!(out, "{pad}}}")?;
                }
            }
        }
        Ok(())
    }

    fn index_str(&self, index: &[IndexItem]) -> String {
        let items: Vec<String> = index
            .iter()
            .map(|i| match i {
                IndexItem::Point(e) => self.e(*e),
                IndexItem::Range { start, len } => format!("{} +: {len}", self.e(*start)),
                IndexItem::Full => "..".into(),
            })
            .collect();
        items.join(", ")
    }

    /// One expression, inline. Depth is bounded by the checker's limits.
    fn e(&self, id: ExprId) -> String {
        let Some(x) = self.exprs.get(id.0 as usize) else {
            return "?".into();
        };
        let shape = |s: &[Dim]| {
            s.iter()
                .map(|d| self.dim_str(*d))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match &x.kind {
            ExprKind::FloatLit(v) => format!("{v:?}:{}", x.ty.dtype),
            ExprKind::IntLit(v) => v.to_string(),
            ExprKind::Local(l) => self.local_str(*l),
            ExprKind::DimValue(d) => self.dim_str(Dim::Sym(*d)),
            ExprKind::ConstValue(c) => {
                let name = self
                    .consts
                    .get(c.0 as usize)
                    .map_or("?", |c| c.name.as_str());
                format!("{name}:{}", x.ty.dtype)
            }
            ExprKind::Load { param, index } => {
                let name = self
                    .params
                    .get(param.0 as usize)
                    .map_or("?", |p| p.name.as_str());
                format!("{name}[{}]", self.index_str(index))
            }
            ExprKind::Slice { base, index } => {
                format!("{}[{}]", self.e(*base), self.index_str(index))
            }
            ExprKind::Unary { op, arg } => {
                let sym = match op {
                    UnaryOp::Neg => "-",
                    UnaryOp::Not => "!",
                };
                format!("{sym}{}", self.e(*arg))
            }
            ExprKind::Binary { op, lhs, rhs } => {
                let sym = match op {
                    BinOp::Add => "+",
                    BinOp::Sub => "-",
                    BinOp::Mul => "*",
                    BinOp::Div => "/",
                    BinOp::Rem => "%",
                    BinOp::And => "&&",
                    BinOp::Or => "||",
                    BinOp::Max => return format!("max({}, {})", self.e(*lhs), self.e(*rhs)),
                    BinOp::Min => return format!("min({}, {})", self.e(*lhs), self.e(*rhs)),
                };
                format!("({} {sym} {})", self.e(*lhs), self.e(*rhs))
            }
            ExprKind::Cmp { op, lhs, rhs } => {
                let sym = match op {
                    CmpOp::Eq => "==",
                    CmpOp::Ne => "!=",
                    CmpOp::Lt => "<",
                    CmpOp::Le => "<=",
                    CmpOp::Gt => ">",
                    CmpOp::Ge => ">=",
                };
                format!("({} {sym} {})", self.e(*lhs), self.e(*rhs))
            }
            ExprKind::Matmul { lhs, rhs } => format!("({} @ {})", self.e(*lhs), self.e(*rhs)),
            ExprKind::Transpose(a) => format!("{}^T", self.e(*a)),
            ExprKind::Math { f, arg } => {
                let name = match f {
                    MathFn::Exp => "exp",
                    MathFn::Exp2 => "exp2",
                    MathFn::Log => "log",
                    MathFn::Log2 => "log2",
                    MathFn::Sqrt => "sqrt",
                    MathFn::Abs => "abs",
                };
                format!("{name}({})", self.e(*arg))
            }
            ExprKind::RowMax(a) => format!("rowmax({})", self.e(*a)),
            ExprKind::RowSum(a) => format!("rowsum({})", self.e(*a)),
            ExprKind::Where { cond, then, else_ } => {
                format!(
                    "where({}, {}, {})",
                    self.e(*cond),
                    self.e(*then),
                    self.e(*else_)
                )
            }
            ExprKind::RowIndex { shape: s } => format!("row_index[{}]", shape(s)),
            ExprKind::ColIndex { shape: s } => format!("col_index[{}]", shape(s)),
            ExprKind::Reshape { arg, shape: s } => {
                format!("reshape({}, [{}])", self.e(*arg), shape(s))
            }
            ExprKind::Cast { arg, to } => format!("{to}({})", self.e(*arg)),
            ExprKind::Broadcast { arg, to } => {
                format!("broadcast({}, [{}])", self.e(*arg), shape(to))
            }
            ExprKind::Error => "<error>".into(),
        }
    }
}
