//! Indexing: loads from inputs, slices of tiles, store regions. Checks that
//! every index is an `i32` scalar, that every slice length simplifies to a
//! constant (through [`Poly`]), and refuses indices that are out of bounds
//! for every value of their loop variables.

use super::Checker;
use super::expr::{V, Weak, show};
use super::hir::{
    ConstValue, DType, Dim, ExprId, ExprKind, IndexItem, LocalKind, ParamId, Role, Type, UnaryOp,
};
use super::poly::{Atom, Poly};
use crate::diag::{Code, Diagnostic};
use crate::syntax::Span;
use crate::syntax::ast;

/// How many `let`s deep [`Checker::poly`] follows a binding.
const POLY_DEPTH: u32 = 64;

impl Checker<'_> {
    /// `base[items]`: a load when `base` names an input, else a slice.
    pub(crate) fn index_expr(
        &mut self,
        base: &ast::Expr,
        items: &[ast::IndexItem],
        span: Span,
    ) -> V {
        if let ast::ExprKind::Name(n) = &base.kind
            && self.lookup_local(n).is_none()
            && let Some(&pid) = self.param_names.get(n)
        {
            return self.load(pid, items, span, base.span);
        }
        let b = self.expr(base);
        let base_id = match b {
            V::Err => {
                // Still check the indices for their own errors.
                self.index_items(items, &[], span, false);
                return V::Err;
            }
            V::Weak(w) => {
                self.error(
                    Diagnostic::new(Code::BadRank, w.span, "cannot index a scalar constant")
                        .label("scalar"),
                );
                return V::Err;
            }
            V::Strong(id) => id,
        };
        let ty = self.ty(base_id).clone();
        let Some((index, shape)) = self.index_items(items, &ty.shape, span, true) else {
            return V::Err;
        };
        let out = Type {
            dtype: ty.dtype,
            shape,
        };
        V::Strong(self.push(
            ExprKind::Slice {
                base: base_id,
                index,
            },
            out,
            span,
        ))
    }

    /// A read of the param `pid`, `name_span` naming it.
    pub(crate) fn load(
        &mut self,
        pid: ParamId,
        items: &[ast::IndexItem],
        span: Span,
        name_span: Span,
    ) -> V {
        let p = self.params[pid.0 as usize].clone();
        if p.role == Role::Output {
            self.error(
                Diagnostic::new(
                    Code::ReadOutput,
                    name_span,
                    format!("cannot read output `{}`", p.name),
                )
                .label("outputs are write-only")
                .secondary(p.span, "declared as an output here")
                .note("keep the value in a `var` and store it at the end"),
            );
            self.index_items(items, &p.shape, span, false);
            return V::Err;
        }
        let (index, shape) = match self.index_items(items, &p.shape, span, true) {
            Some(r) => r,
            None => return V::Err,
        };
        if !self.tile_known(&shape, span) {
            return V::Err;
        }
        if !self.page_index_fits(&p.shape, &index, items) {
            return V::Err;
        }
        let ty = Type {
            dtype: p.dtype,
            shape,
        };
        V::Strong(self.push(ExprKind::Load { param: pid, index }, ty, span))
    }

    /// A paged-cache read `kv[table[.., j / D]]`: the first index picks a
    /// page of `P = dims[1]` tokens through another tensor, and token `j`
    /// lives on page `j / D`. Reports E0036 where the arithmetic provably
    /// contradicts the page dim: `D != P` (token `j` is on page `j / P`),
    /// or, when the whole page is read, a `for` step `S != P` over `j`
    /// (blocks of `S` tokens over pages of `P`).
    fn page_index_fits(
        &mut self,
        dims: &[Dim],
        index: &[IndexItem],
        items: &[ast::IndexItem],
    ) -> bool {
        let (Some(IndexItem::Point(first)), Some(Dim::Const(page))) = (index.first(), dims.get(1))
        else {
            return true;
        };
        let page = *page as i64;
        let mut id = *first;
        // Follow `let`s to the indirect load.
        for _ in 0..POLY_DEPTH {
            match &self.exprs[id.0 as usize].kind {
                ExprKind::Local(l) if self.locals[l.0 as usize].kind == LocalKind::Let => {
                    match self.let_value.get(l) {
                        Some(v) => id = *v,
                        None => return true,
                    }
                }
                _ => break,
            }
        }
        let ExprKind::Load { index: inner, .. } = &self.exprs[id.0 as usize].kind else {
            return true;
        };
        let Some(IndexItem::Point(last)) = inner.last() else {
            return true;
        };
        let ExprKind::Binary {
            op: super::hir::BinOp::Div,
            lhs,
            rhs,
        } = self.exprs[last.0 as usize].kind
        else {
            return true;
        };
        let Some(d) = self.poly(rhs, 0).and_then(|p| p.as_constant()) else {
            return true;
        };
        let span = self.exprs[last.0 as usize].span;
        if d != page {
            self.error(
                Diagnostic::new(
                    Code::PageIndex,
                    span,
                    format!("page index divides by {d}, but the cache's pages hold {page} tokens"),
                )
                .label(format!("token `j` is on page `j / {page}`"))
                .note("write the page size once, as the cache's dim (`kv: bf16[NB, PAGE, D]`), and divide by it"),
            );
            return false;
        }
        let whole_page = items.len() < 2 || matches!(items[1], ast::IndexItem::Full(_));
        let step = match self.exprs[lhs.0 as usize].kind {
            ExprKind::Local(l) => self.var_step.get(&l).copied(),
            _ => None,
        };
        if let Some(s) = step
            && whole_page
            && s != page
        {
            self.error(
                Diagnostic::new(
                    Code::PageIndex,
                    span,
                    format!("the loop steps by {s} tokens, but each block reads a whole page of {page}"),
                )
                .label(format!("blocks of {s} tokens over pages of {page}"))
                .note("step the loop by the page size, or slice the page (`kv[table[b, j / P], j % P..j % P + S]`)"),
            );
            return false;
        }
        true
    }

    /// Reports E0028 if `shape` holds an open dim.
    pub(crate) fn tile_known(&mut self, shape: &[Dim], span: Span) -> bool {
        if let Some(Dim::Sym(id)) = shape.iter().find(|d| matches!(d, Dim::Sym(_))) {
            let name = self.dims[id.0 as usize].name.clone();
            self.error(super::unbound_dim(&name, span));
            return false;
        }
        true
    }

    /// Checks `items` against `dims`; returns the HIR items (padded with
    /// `Full`) and the kept shape. With `report_rank == false` only the
    /// items' own errors are reported (the base already failed).
    pub(crate) fn index_items(
        &mut self,
        items: &[ast::IndexItem],
        dims: &[Dim],
        span: Span,
        report_rank: bool,
    ) -> Option<(Vec<IndexItem>, Vec<Dim>)> {
        let mut ok = true;
        if items.len() > dims.len() && report_rank {
            self.error(
                Diagnostic::new(
                    Code::BadRank,
                    span,
                    format!(
                        "{} indices into a value of rank {}",
                        items.len(),
                        dims.len()
                    ),
                )
                .label("too many indices"),
            );
            ok = false;
        }
        let mut out = Vec::new();
        let mut kept = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let dim = dims.get(i).copied();
            let size = match dim {
                Some(Dim::Const(n)) if report_rank => Some(n as i64),
                _ => None,
            };
            match item {
                ast::IndexItem::Full(_) => {
                    out.push(IndexItem::Full);
                    kept.extend(dim);
                }
                ast::IndexItem::Point(e) => {
                    let Some(id) = self.index_scalar(e) else {
                        ok = false;
                        continue;
                    };
                    if let (Some(n), Some(p)) = (size, self.poly(id, 0)) {
                        let min = self.min_of(&p);
                        let bad = matches!(p.as_constant(), Some(c) if c < 0)
                            || matches!(min, Some(m) if m >= n);
                        if bad {
                            self.error(
                                Diagnostic::new(Code::OutOfBounds, e.span, "index out of bounds")
                                    .label(format!("always outside 0..{n}")),
                            );
                            ok = false;
                        }
                    }
                    out.push(IndexItem::Point(id));
                }
                ast::IndexItem::Range(a, b) => {
                    let (ia, ib) = (self.index_scalar(a), self.index_scalar(b));
                    let (Some(ia), Some(ib)) = (ia, ib) else {
                        ok = false;
                        continue;
                    };
                    let sp = a.span.join(b.span);
                    let len = match (self.poly(ia, 0), self.poly(ib, 0)) {
                        (Some(pa), Some(pb)) => pb.sub(&pa).and_then(|d| d.as_constant()),
                        _ => None,
                    };
                    let len = match len {
                        Some(l) if l > 0 => l,
                        Some(l) => {
                            self.error(
                                Diagnostic::new(
                                    Code::SliceLength,
                                    sp,
                                    "slice is empty or reversed",
                                )
                                .label(format!("length {l}")),
                            );
                            ok = false;
                            continue;
                        }
                        None => {
                            self.error(
                                Diagnostic::new(
                                    Code::SliceLength,
                                    sp,
                                    "slice length is not a compile-time constant",
                                )
                                .label("`end - start` does not simplify to a number")
                                .note("write slices as `i..i+LEN` with LEN a constant"),
                            );
                            ok = false;
                            continue;
                        }
                    };
                    if let Some(n) = size {
                        let start = self.poly(ia, 0);
                        let start_c = start.as_ref().and_then(|p| p.as_constant());
                        let min = start.as_ref().and_then(|p| self.min_of(p));
                        // A slice with a variable start may run past the end
                        // (those elements read as 0): `kv[b, j..j+BN]` with
                        // N < BN is a short sequence, not an error. Only a
                        // slice that no start value can bring in bounds is.
                        let why = if matches!(start_c, Some(c) if c < 0 || c + len > n) {
                            Some(format!(
                                "elements {}..{} of a dim of {n}",
                                start_c.unwrap_or(0),
                                start_c.unwrap_or(0) + len
                            ))
                        } else if matches!(min, Some(m) if m >= n) {
                            Some(format!(
                                "starts at {} or later, past the dim of {n}",
                                min.unwrap_or(0)
                            ))
                        } else {
                            None
                        };
                        if let Some(why) = why {
                            self.error(
                                Diagnostic::new(Code::OutOfBounds, sp, "slice out of bounds")
                                    .label(why),
                            );
                            ok = false;
                        }
                    }
                    out.push(IndexItem::Range {
                        start: ia,
                        len: len as u64,
                    });
                    kept.push(Dim::Const(len as u64));
                }
            }
        }
        for d in dims.iter().skip(items.len()) {
            out.push(IndexItem::Full);
            kept.push(*d);
        }
        ok.then_some((out, kept))
    }

    /// An `i32` scalar index.
    pub(crate) fn index_scalar(&mut self, e: &ast::Expr) -> Option<ExprId> {
        let v = self.expr(e);
        let id = match v {
            V::Err => return None,
            V::Weak(
                w @ Weak {
                    num: ConstValue::Int(_),
                    ..
                },
            ) => self.materialize(w, DType::I32)?,
            V::Weak(w) => self.materialize(w, DType::F32)?,
            V::Strong(id) => id,
        };
        let ty = self.ty(id).clone();
        if ty.dtype != DType::I32 || !ty.shape.is_empty() {
            self.error(
                Diagnostic::new(
                    Code::NotIndex,
                    e.span,
                    format!("expected an `i32` scalar, found `{}`", show(&ty, self)),
                )
                .label("indices and loop bounds are `i32` scalars"),
            );
            return None;
        }
        Some(id)
    }

    /// The least value of `p` given what is known of loop variables (≥ lo)
    /// and open dims (≥ 1).
    fn min_of(&self, p: &Poly) -> Option<i64> {
        p.min_value(|a| match a {
            Atom::Var(l) => self.var_min.get(&l).copied(),
            Atom::Dim(_) => Some(1),
        })
    }

    /// `id` as a linear polynomial, when it is one. Follows `let`s up to
    /// [`POLY_DEPTH`] deep.
    pub(crate) fn poly(&self, id: ExprId, depth: u32) -> Option<Poly> {
        if depth > POLY_DEPTH {
            return None;
        }
        let e = &self.exprs[id.0 as usize];
        match &e.kind {
            ExprKind::IntLit(v) => Some(Poly::constant(*v)),
            ExprKind::ConstValue(c) => match self.consts[c.0 as usize].value {
                ConstValue::Int(v) if e.ty.dtype == DType::I32 => Some(Poly::constant(v)),
                _ => None,
            },
            ExprKind::DimValue(d) => Some(Poly::atom(Atom::Dim(*d))),
            ExprKind::Local(l) => match self.locals[l.0 as usize].kind {
                LocalKind::LoopVar | LocalKind::ParallelVar => Some(Poly::atom(Atom::Var(*l))),
                LocalKind::Let => self.let_value.get(l).and_then(|v| self.poly(*v, depth + 1)),
                LocalKind::Var => None,
            },
            ExprKind::Unary {
                op: UnaryOp::Neg,
                arg,
            } => self.poly(*arg, depth)?.scale(-1),
            ExprKind::Binary { op, lhs, rhs } => {
                use super::hir::BinOp as B;
                let (a, b) = (self.poly(*lhs, depth)?, self.poly(*rhs, depth)?);
                match op {
                    B::Add => a.add(&b),
                    B::Sub => a.sub(&b),
                    B::Mul => a.mul(&b),
                    B::Div => a.div(&b),
                    B::Rem => a.rem(&b),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}
