//! Statements, blocks and scopes; the kernel body and its one `parallel`.

use super::Checker;
use super::expr::V;
use super::hir::{self, Dim, LocalId, LocalKind, Role, Type};
use crate::diag::{Code, Diagnostic};
use crate::syntax::Span;
use crate::syntax::ast;

impl Checker<'_> {
    /// The innermost local named `n`.
    pub(crate) fn lookup_local(&self, n: &str) -> Option<LocalId> {
        self.scopes
            .iter()
            .rev()
            .flat_map(|s| s.iter().rev())
            .find(|(name, _)| name == n)
            .map(|&(_, id)| id)
    }

    /// Declares a local in the innermost scope; `failed` marks one whose
    /// value did not check (reading it is then silent).
    fn bind(&mut self, name: &ast::Ident, ty: Option<Type>, kind: LocalKind) -> LocalId {
        let id = LocalId(self.locals.len() as u32);
        self.local_err.push(ty.is_none());
        self.locals.push(hir::Local {
            name: name.name.clone(),
            ty: ty.unwrap_or(Type::scalar(hir::DType::I32)),
            kind,
            span: name.span,
        });
        if self.scopes.is_empty() {
            self.scopes.push(Vec::new());
        }
        if let Some(s) = self.scopes.last_mut() {
            s.push((name.name.clone(), id));
        }
        id
    }

    /// The kernel body: exactly one top-level `parallel`.
    pub(crate) fn body(&mut self, k: &ast::Kernel) -> Option<hir::Parallel> {
        let mut grid = None;
        let mut first: Option<Span> = None;
        for s in &k.body {
            match &s.kind {
                ast::StmtKind::Parallel { axes, body } => {
                    if let Some(f) = first {
                        self.error(
                            Diagnostic::new(Code::MisplacedParallel, head(s.span), "a kernel has exactly one `parallel`")
                                .label("second `parallel`")
                                .secondary(head(f), "first `parallel` here")
                                .note("use one `parallel` with several axes: `parallel b in 0..B, h in 0..H { … }`"),
                        );
                        continue;
                    }
                    first = Some(s.span);
                    grid = self.parallel(axes, body);
                }
                _ => self.error(
                    Diagnostic::new(
                        Code::OutsideParallel,
                        s.span,
                        "statement outside the `parallel`",
                    )
                    .label("move this into the `parallel` body")
                    .note("only `dim` and `const` declarations may precede the `parallel`"),
                ),
            }
        }
        if first.is_none() {
            self.error(
                Diagnostic::new(
                    Code::MissingParallel,
                    k.name.span,
                    format!("kernel `{}` has no `parallel`", k.name.name),
                )
                .label("needs a grid")
                .note("wrap the body in `parallel b in 0..B { … }`"),
            );
        }
        grid
    }

    fn parallel(&mut self, axes: &[ast::Axis], body: &ast::Block) -> Option<hir::Parallel> {
        let mut out = Vec::new();
        let mut ok = true;
        let mut bounds = Vec::new();
        for a in axes {
            bounds.push(self.axis_bounds(a));
        }
        self.scopes.push(Vec::new());
        for (i, (a, b)) in axes.iter().zip(bounds).enumerate() {
            if let Some(prev) = axes[..i].iter().find(|p| p.var.name == a.var.name) {
                self.error(
                    Diagnostic::new(
                        Code::DuplicateName,
                        a.var.span,
                        format!("grid axis `{}` declared twice", a.var.name),
                    )
                    .label("second axis")
                    .secondary(prev.var.span, "first axis"),
                );
                ok = false;
            }
            let var = self.bind(
                &a.var,
                Some(Type::scalar(hir::DType::I32)),
                LocalKind::ParallelVar,
            );
            match b {
                Some((lo, hi, step)) => {
                    self.note_min(var, lo);
                    out.push(hir::Axis { var, lo, hi, step });
                }
                None => ok = false,
            }
        }
        let body = self.block(body);
        self.scopes.pop();
        ok.then_some(hir::Parallel { axes: out, body })
    }

    fn note_min(&mut self, var: LocalId, lo: hir::ExprId) {
        if let Some(m) = self.poly(lo, 0).and_then(|p| p.as_constant()) {
            self.var_min.insert(var, m);
        }
    }

    fn axis_bounds(&mut self, a: &ast::Axis) -> Option<(hir::ExprId, hir::ExprId, i64)> {
        let lo = self.index_scalar(&a.lo);
        let hi = self.index_scalar(&a.hi);
        let step = match &a.step {
            None => Some(1),
            Some(e) => {
                let v = self.const_eval(e, Code::BadStep);
                match v {
                    Some(hir::ConstValue::Int(s)) if s > 0 => Some(s),
                    Some(v) => {
                        let shown = match v {
                            hir::ConstValue::Int(i) => i.to_string(),
                            hir::ConstValue::Float(f) => format!("{f:?}"),
                        };
                        self.error(
                            Diagnostic::new(
                                Code::BadStep,
                                e.span,
                                "step must be a positive compile-time integer",
                            )
                            .label(format!("this is {shown}")),
                        );
                        None
                    }
                    None => None,
                }
            }
        };
        Some((lo?, hi?, step?))
    }

    fn block(&mut self, b: &ast::Block) -> hir::Block {
        self.scopes.push(Vec::new());
        let stmts = b.stmts.iter().filter_map(|s| self.stmt(s)).collect();
        self.scopes.pop();
        hir::Block { stmts }
    }

    fn stmt(&mut self, s: &ast::Stmt) -> Option<hir::Stmt> {
        match &s.kind {
            ast::StmtKind::Parallel { axes, body } => {
                self.error(
                    Diagnostic::new(
                        Code::MisplacedParallel,
                        head(s.span),
                        "`parallel` must be at the top level of the kernel",
                    )
                    .label("nested `parallel`")
                    .note("use `for` for sequential loops inside the grid"),
                );
                // Check the body anyway, with its axes bound, so that the
                // one mistake gives one diagnostic.
                self.scopes.push(Vec::new());
                for a in axes {
                    let i32 = Some(Type::scalar(hir::DType::I32));
                    self.bind(&a.var, i32, LocalKind::ParallelVar);
                }
                self.block(body);
                self.scopes.pop();
                None
            }
            ast::StmtKind::For { axis, body } => {
                let bounds = self.axis_bounds(axis);
                self.scopes.push(Vec::new());
                let var = self.bind(
                    &axis.var,
                    Some(Type::scalar(hir::DType::I32)),
                    LocalKind::LoopVar,
                );
                if let Some((lo, _, step)) = bounds {
                    self.note_min(var, lo);
                    self.var_step.insert(var, step);
                }
                let body = self.block(body);
                self.scopes.pop();
                let (lo, hi, step) = bounds?;
                Some(hir::Stmt::For {
                    var,
                    lo,
                    hi,
                    step,
                    body,
                })
            }
            ast::StmtKind::Let { name, ty, value } => {
                let v = self.expr(value);
                let id = self.bound_value(v, ty.as_ref(), name);
                let local = self.bind(name, id.map(|i| self.ty(i).clone()), LocalKind::Let);
                let value = id?;
                self.let_value.insert(local, value);
                Some(hir::Stmt::Let { local, value })
            }
            ast::StmtKind::Var { name, ty, init } => {
                let v = self.expr(init);
                let id = self.bound_value(v, ty.as_ref(), name);
                let local = self.bind(name, id.map(|i| self.ty(i).clone()), LocalKind::Var);
                Some(hir::Stmt::Var { local, init: id? })
            }
            ast::StmtKind::Assign {
                target,
                index,
                value,
            } => self.assign(target, index.as_deref(), value),
        }
    }

    /// The value of a `let`/`var`, converted to its annotation if any.
    fn bound_value(
        &mut self,
        v: V,
        ty: Option<&ast::TypeExpr>,
        name: &ast::Ident,
    ) -> Option<hir::ExprId> {
        match ty {
            Some(te) => {
                let want = self.resolve_type(te);
                self.coerce(v, &want?, te.span, &format!("the value of `{}`", name.name))
            }
            None => self.strong(v),
        }
    }

    /// A written type `dtype[d, …]`: dims are positive constants.
    fn resolve_type(&mut self, te: &ast::TypeExpr) -> Option<Type> {
        let mut shape = Vec::new();
        let mut ok = true;
        for d in &te.shape {
            match self.const_positive(d, Code::UnboundTileDim, "a tile dim") {
                Some(v) => shape.push(Dim::Const(v)),
                None => ok = false,
            }
        }
        ok.then_some(Type {
            dtype: te.dtype,
            shape,
        })
    }

    fn assign(
        &mut self,
        target: &ast::Ident,
        index: Option<&[ast::IndexItem]>,
        value: &ast::Expr,
    ) -> Option<hir::Stmt> {
        let v = self.expr(value);
        let name = &target.name;
        if let Some(local) = self.lookup_local(name) {
            let l = self.locals[local.0 as usize].clone();
            if index.is_some() {
                self.error(
                    Diagnostic::new(
                        Code::StoreToNonOutput,
                        target.span,
                        format!("cannot store into part of `{name}`"),
                    )
                    .label("a local, not an output")
                    .secondary(l.span, "declared here")
                    .note(
                        "indexed assignment stores into kernel outputs; build a new tile instead",
                    ),
                );
                return None;
            }
            if l.kind != LocalKind::Var {
                let what = match l.kind {
                    LocalKind::Let => "a `let` binding",
                    _ => "a loop variable",
                };
                self.error(
                    Diagnostic::new(
                        Code::AssignToImmutable,
                        target.span,
                        format!("cannot assign to `{name}`: it is {what}"),
                    )
                    .label("assigned here")
                    .secondary(l.span, "declared here")
                    .note("declare it with `var` to update it"),
                );
                return None;
            }
            if self.local_err[local.0 as usize] {
                return None;
            }
            let value =
                self.coerce(v, &l.ty, l.span, &format!("the value assigned to `{name}`"))?;
            return Some(hir::Stmt::Assign { local, value });
        }
        if let Some(&pid) = self.param_names.get(name) {
            let p = self.params[pid.0 as usize].clone();
            if p.role == Role::Input {
                self.error(
                    Diagnostic::new(
                        Code::StoreToNonOutput,
                        target.span,
                        format!("cannot store into input `{name}`"),
                    )
                    .label("inputs are read-only")
                    .secondary(p.span, "declared as an input here"),
                );
                return None;
            }
            let span = target.span;
            let (index, region) = self.index_items(index.unwrap_or(&[]), &p.shape, span, true)?;
            if !self.tile_known(&region, span) {
                return None;
            }
            let want = Type {
                dtype: p.dtype,
                shape: region,
            };
            let value = self.coerce(v, &want, span, &format!("the value stored into `{name}`"))?;
            return Some(hir::Stmt::Store {
                param: pid,
                index,
                value,
            });
        }
        if self.const_names.contains_key(name) || self.dim_names.contains_key(name) {
            self.error(
                Diagnostic::new(
                    Code::AssignToImmutable,
                    target.span,
                    format!("cannot assign to `{name}`: it is a compile-time constant"),
                )
                .label("assigned here"),
            );
            return None;
        }
        self.error(
            Diagnostic::new(
                Code::UnknownName,
                target.span,
                format!("unknown name `{name}`"),
            )
            .label("not found in this scope"),
        );
        None
    }
}

/// The first line of a statement's span (its keyword line), so a label on a
/// whole `parallel` does not draw the entire body.
fn head(s: Span) -> Span {
    Span::new(s.start, s.start.saturating_add(8).min(s.end))
}
