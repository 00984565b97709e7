//! The checker: names, constants, symbolic dims, dtypes and shapes.
//!
//! Input: the AST of [`crate::syntax`]. Output: the typed [`hir::Kernel`]
//! whose invariants (documented in [`hir`]) make lowering mechanical, or
//! every diagnostic found. Checking continues after an error; an erroneous
//! expression gets an error value that silences follow-on errors, so one
//! mistake gives one diagnostic.
//!
//! Layout: this file (entry points, signature, `dim`/`const`, `-D`),
//! `stmt.rs` (statements, scopes, the one `parallel`), `expr.rs`
//! (expression typing and the implicit conversions it makes explicit),
//! `index.rs` (loads, slices, stores, bounds), [`poly`] (the linear
//! simplifier), `consts.rs` (constant evaluation), [`hir`] (the output),
//! `print.rs` (its text form), `verify.rs` ([`hir::Kernel::verify`]).
//!
//! Never panics; never recurses deeper than the parser's
//! [`crate::syntax::MAX_DEPTH`] limits allow; runs on a thread with a large
//! stack so that limit holds in every build profile.

mod consts;
mod defines;
mod expr;
pub mod hir;
mod index;
pub mod poly;
mod print;
mod stmt;
mod verify;

use rustc_hash::FxHashMap;

pub use crate::diag::SourceFile;
pub use defines::Defines;

use crate::diag::{Code, Diagnostic};
use crate::syntax::ast;
use crate::syntax::{Span, on_big_stack};
use hir::{ConstId, ConstValue, DType, Dim, DimId, ParamId, Role};

/// Parses `src` into its AST (for `--emit ast` and tools).
pub fn parse(src: &SourceFile) -> Result<ast::Kernel, Vec<Diagnostic>> {
    crate::syntax::parse(&src.text)
}

/// Parses and checks `src` with the `-D` bindings `defines`. On failure,
/// returns every diagnostic found, in source order.
pub fn check(src: &SourceFile, defines: &Defines) -> Result<hir::Kernel, Vec<Diagnostic>> {
    on_big_stack(|| {
        let k = parse(src)?;
        let mut c = Checker::new(defines);
        let kernel = c.kernel(&k);
        let mut diags = c.diags;
        diags.sort_by_key(|d| d.primary.span.start);
        match kernel {
            Some(kernel) if diags.is_empty() => Ok(kernel),
            _ if diags.is_empty() => Err(vec![Diagnostic::new(
                Code::Syntax,
                k.name.span,
                "internal error: the checker failed without a diagnostic",
            )]),
            _ => Err(diags),
        }
    })
}

/// A param dim before dims are bound.
#[derive(Clone, Copy)]
enum RawDim {
    Const(u64),
    Sym(DimId),
}

/// Checker state: the arenas being built and the scopes.
pub(crate) struct Checker<'d> {
    pub(crate) diags: Vec<Diagnostic>,
    defines: &'d Defines,
    dims: Vec<hir::DimDecl>,
    dim_names: FxHashMap<String, DimId>,
    /// Dims with a `dim` declaration (to refuse a second one).
    dim_declared: FxHashMap<DimId, Span>,
    consts: Vec<hir::ConstDecl>,
    /// `false` for a const whose value failed to evaluate.
    const_ok: Vec<bool>,
    const_names: FxHashMap<String, ConstId>,
    params: Vec<hir::Param>,
    param_names: FxHashMap<String, ParamId>,
    /// Where each parameter name was first declared.
    param_spans: FxHashMap<String, Span>,
    locals: Vec<hir::Local>,
    /// Locals whose value failed to check: reading them is silent `Err`.
    local_err: Vec<bool>,
    /// The value of each `let` (followed by the slice simplifier).
    let_value: FxHashMap<hir::LocalId, hir::ExprId>,
    /// Least value of each loop / parallel variable, when known.
    var_min: FxHashMap<hir::LocalId, i64>,
    /// The step of each `for` variable (the paged-cache check).
    var_step: FxHashMap<hir::LocalId, i64>,
    exprs: Vec<hir::Expr>,
    /// Innermost last: (name, local) bindings of each open block.
    scopes: Vec<Vec<(String, hir::LocalId)>>,
}

impl<'d> Checker<'d> {
    fn new(defines: &'d Defines) -> Checker<'d> {
        Checker {
            diags: Vec::new(),
            defines,
            dims: Vec::new(),
            dim_names: FxHashMap::default(),
            dim_declared: FxHashMap::default(),
            consts: Vec::new(),
            const_ok: Vec::new(),
            const_names: FxHashMap::default(),
            params: Vec::new(),
            param_names: FxHashMap::default(),
            param_spans: FxHashMap::default(),
            locals: Vec::new(),
            local_err: Vec::new(),
            var_min: FxHashMap::default(),
            var_step: FxHashMap::default(),
            let_value: FxHashMap::default(),
            exprs: Vec::new(),
            scopes: Vec::new(),
        }
    }

    /// How many diagnostics have been reported so far.
    fn diag_count(&self) -> usize {
        self.diags.len()
    }

    /// Adds "in constant `name`" to the constant-evaluation errors reported
    /// since `from` (a `const` whose value is NaN, overflows…).
    fn name_constant_in_new_errors(&mut self, from: usize, name: &str) {
        for d in &mut self.diags[from..] {
            if d.code == Code::ConstEval {
                d.message = format!("{} (in constant `{name}`)", d.message);
            }
        }
    }

    pub(crate) fn error(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn kernel(&mut self, k: &ast::Kernel) -> Option<hir::Kernel> {
        let raw = self.signature(k);
        for d in &k.decls {
            self.decl(d);
        }
        self.leftover_defines(k);
        self.params = raw
            .into_iter()
            .map(|(p, shape)| hir::Param {
                shape: shape
                    .into_iter()
                    .map(|d| match d {
                        RawDim::Const(v) => Dim::Const(v),
                        RawDim::Sym(id) => match self.dims[id.0 as usize].value {
                            Some(v) => Dim::Const(v as u64),
                            None => Dim::Sym(id),
                        },
                    })
                    .collect(),
                ..p
            })
            .collect();
        let grid = self.body(k);
        Some(hir::Kernel {
            name: k.name.name.clone(),
            dims: std::mem::take(&mut self.dims),
            consts: std::mem::take(&mut self.consts),
            params: std::mem::take(&mut self.params),
            locals: std::mem::take(&mut self.locals),
            exprs: std::mem::take(&mut self.exprs),
            grid: grid?,
        })
    }

    /// Params and their dims; returns each param with its unbound shape.
    fn signature(&mut self, k: &ast::Kernel) -> Vec<(hir::Param, Vec<RawDim>)> {
        let mut out = Vec::new();
        let all = k
            .inputs
            .iter()
            .map(|p| (p, Role::Input))
            .chain(k.outputs.iter().map(|p| (p, Role::Output)));
        for (p, role) in all {
            if let Some(&prev) = self.param_names.get(&p.name.name) {
                let prev_span = out
                    .get(prev.0 as usize)
                    .map_or(p.span, |(q, _): &(hir::Param, _)| q.span);
                self.error(
                    Diagnostic::new(
                        Code::DuplicateName,
                        p.name.span,
                        format!("parameter `{}` is declared twice", p.name.name),
                    )
                    .label("second declaration")
                    .secondary(prev_span, "first declared here"),
                );
            }
            if p.ty.dtype == DType::Bool {
                self.error(
                    Diagnostic::new(
                        Code::BadParamType,
                        p.ty.span,
                        format!("parameter `{}` has dtype `bool`", p.name.name),
                    )
                    .label("not allowed for a parameter")
                    .note("masks exist only inside a kernel; use `i32` for integer data"),
                );
            }
            let mut shape = Vec::new();
            for d in &p.ty.shape {
                match &d.kind {
                    ast::ExprKind::Int(v) if *v > 0 => shape.push(RawDim::Const(*v as u64)),
                    ast::ExprKind::Name(n) => {
                        let id = match self.dim_names.get(n) {
                            Some(&id) => id,
                            None => {
                                let id = DimId(self.dims.len() as u32);
                                self.dims.push(hir::DimDecl {
                                    name: n.clone(),
                                    value: None,
                                    span: d.span,
                                });
                                self.dim_names.insert(n.clone(), id);
                                id
                            }
                        };
                        shape.push(RawDim::Sym(id));
                    }
                    _ => {
                        self.error(
                            Diagnostic::new(
                                Code::BadParamDim,
                                d.span,
                                "a parameter dim must be a positive integer or a name",
                            )
                            .label("not a dim"),
                        );
                        shape.push(RawDim::Const(1));
                    }
                }
            }
            let id = ParamId(out.len() as u32);
            self.param_names.entry(p.name.name.clone()).or_insert(id);
            self.param_spans
                .entry(p.name.name.clone())
                .or_insert(p.name.span);
            out.push((
                hir::Param {
                    name: p.name.name.clone(),
                    dtype: p.ty.dtype,
                    shape: Vec::new(),
                    role,
                    span: p.span,
                },
                shape,
            ));
        }
        out
    }

    /// Resolves a name in a constant expression: consts, then bound dims.
    /// An open dim is an error with `open_code` (E0010 or E0028).
    fn const_lookup(
        &self,
        name: &str,
        span: Span,
        open_code: Code,
    ) -> Result<ConstValue, Diagnostic> {
        if let Some(&id) = self.const_names.get(name) {
            return if self.const_ok[id.0 as usize] {
                Ok(self.consts[id.0 as usize].value)
            } else {
                // Already reported; this marker is dropped by `const_eval`.
                Err(Diagnostic::new(Code::ConstEval, span, "").label(SILENT))
            };
        }
        if let Some(&id) = self.dim_names.get(name) {
            return match self.dims[id.0 as usize].value {
                Some(v) => Ok(ConstValue::Int(v)),
                None if open_code == Code::UnboundTileDim => Err(unbound_dim(name, span)),
                None => Err(Diagnostic::new(
                    open_code,
                    span,
                    format!("dim `{name}` is not known at compile time"),
                )
                .label("open until launch")
                .note(format!(
                    "bind it with `-D {name}=VALUE` or a `dim {name} = VALUE;` default"
                ))),
            };
        }
        Err(
            Diagnostic::new(Code::UnknownName, span, format!("unknown name `{name}`"))
                .label("no const or dim of this name"),
        )
    }

    /// Evaluates a constant expression; reports and returns `None` on error.
    pub(crate) fn const_eval(&mut self, e: &ast::Expr, open_code: Code) -> Option<ConstValue> {
        let r = {
            let lookup = |n: &str, sp: Span| self.const_lookup(n, sp, open_code);
            consts::eval(e, &lookup)
        };
        match r {
            Ok(v) => Some(v),
            Err(d) => {
                if d.primary.message != SILENT {
                    self.error(d);
                }
                None
            }
        }
    }

    /// A positive compile-time integer (a dim value, a tile size).
    pub(crate) fn const_positive(
        &mut self,
        e: &ast::Expr,
        open_code: Code,
        what: &str,
    ) -> Option<u64> {
        match self.const_eval(e, open_code)? {
            ConstValue::Int(v) if v > 0 => Some(v as u64),
            v => {
                let shown = match v {
                    ConstValue::Int(i) => i.to_string(),
                    ConstValue::Float(f) => format!("{f:?}"),
                };
                self.error(
                    Diagnostic::new(
                        Code::ConstEval,
                        e.span,
                        format!("{what} must be a positive integer"),
                    )
                    .label(format!("this is {shown}")),
                );
                None
            }
        }
    }

    fn decl(&mut self, d: &ast::Decl) {
        for item in &d.items {
            match d.kind {
                ast::DeclKind::Dim => self.dim_item(item),
                ast::DeclKind::Const => self.const_item(item),
            }
        }
    }

    fn dim_item(&mut self, item: &ast::DeclItem) {
        let name = &item.name.name;
        let Some(&id) = self.dim_names.get(name) else {
            self.error(
                Diagnostic::new(Code::DimNotInSignature, item.name.span, format!("`{name}` is not a dim of the signature"))
                    .label("declared here")
                    .note("`dim` gives defaults to names used in parameter shapes; use `const` for other constants"),
            );
            return;
        };
        if let Some(&prev) = self.dim_declared.get(&id) {
            self.error(
                Diagnostic::new(
                    Code::DuplicateName,
                    item.name.span,
                    format!("dim `{name}` is declared twice"),
                )
                .label("second declaration")
                .secondary(prev, "first declared here"),
            );
            return;
        }
        self.dim_declared.insert(id, item.name.span);
        self.dims[id.0 as usize].span = item.name.span;
        let default = self.const_positive(&item.value, Code::NotConstant, "a dim");
        // An invalid `-D` value is reported once; the checker goes on with
        // the declared default so that the error does not cascade into
        // "size not known" errors at every use of the dim.
        let value = match self.defines.map.get(name) {
            Some(text) => self
                .define_dim(name, text, item.name.span)
                .or(default.map(|v| v as i64)),
            None => default.map(|v| v as i64),
        };
        self.dims[id.0 as usize].value = value;
    }

    fn define_dim(&mut self, name: &str, text: &str, span: Span) -> Option<i64> {
        match text.parse::<i64>() {
            Ok(v) if v > 0 => Some(v),
            _ => {
                self.error(bad_define(name, text, span, "a positive integer"));
                None
            }
        }
    }

    fn const_item(&mut self, item: &ast::DeclItem) {
        let name = &item.name.name;
        if let Some(prev) = self.global_span(name) {
            self.error(
                Diagnostic::new(
                    Code::DuplicateName,
                    item.name.span,
                    format!("`{name}` is already defined"),
                )
                .label("second definition")
                .secondary(prev, "first defined here"),
            );
            return;
        }
        let n_errors = self.diag_count();
        let value = self.const_eval(&item.value, Code::NotConstant);
        self.name_constant_in_new_errors(n_errors, name);
        let value = match (self.defines.map.get(name), value) {
            (Some(text), Some(ConstValue::Int(_))) => match text.parse::<i64>() {
                Ok(v) => Some(ConstValue::Int(v)),
                Err(_) => {
                    self.error(bad_define(name, text, item.name.span, "an integer"));
                    None
                }
            },
            (Some(text), Some(ConstValue::Float(_))) => match text.parse::<f64>() {
                // `-D scale=inf` is written on purpose; `nan` or an
                // out-of-range number like `1e999` is not a usable value.
                Ok(v)
                    if v.is_finite()
                        || (v.is_infinite() && text.to_ascii_lowercase().contains("inf")) =>
                {
                    Some(ConstValue::Float(v))
                }
                Ok(_) => {
                    self.error(bad_define(
                        name,
                        text,
                        item.name.span,
                        "a finite number (or `inf`)",
                    ));
                    None
                }
                Err(_) => {
                    self.error(bad_define(name, text, item.name.span, "a number"));
                    None
                }
            },
            (_, v) => v,
        };
        let id = ConstId(self.consts.len() as u32);
        self.consts.push(hir::ConstDecl {
            name: name.clone(),
            value: value.unwrap_or(ConstValue::Int(0)),
            span: item.name.span,
        });
        self.const_ok.push(value.is_some());
        self.const_names.insert(name.clone(), id);
    }

    /// Where a kernel-level name (param, dim, const) was defined.
    fn global_span(&self, name: &str) -> Option<Span> {
        if let Some(&id) = self.const_names.get(name) {
            return Some(self.consts[id.0 as usize].span);
        }
        if let Some(&id) = self.dim_names.get(name) {
            return Some(self.dims[id.0 as usize].span);
        }
        self.param_spans.get(name).copied()
    }

    /// `-D` of dims without a `dim` declaration, and unknown `-D` names.
    fn leftover_defines(&mut self, k: &ast::Kernel) {
        let defines = self.defines;
        for (name, text) in &defines.map {
            if self.const_names.contains_key(name) {
                continue;
            }
            match self.dim_names.get(name) {
                Some(&id) if !self.dim_declared.contains_key(&id) => {
                    let span = self.dims[id.0 as usize].span;
                    self.dims[id.0 as usize].value = self.define_dim(name, text, span);
                }
                Some(_) => {}
                None => self.error(
                    Diagnostic::new(
                        Code::UnknownDefine,
                        k.name.span,
                        format!("`-D {name}={text}` names neither a dim nor a const"),
                    )
                    .label(format!(
                        "kernel `{}` has no dim or const `{name}`",
                        k.name.name
                    )),
                ),
            }
        }
    }
}

/// Label text of an error already reported elsewhere (never shown).
const SILENT: &str = "\u{0}silent";

fn bad_define(name: &str, text: &str, span: Span, want: &str) -> Diagnostic {
    Diagnostic::new(
        Code::BadDefineValue,
        span,
        format!("invalid value in `-D {name}={text}`"),
    )
    .label(format!("`{name}` needs {want}"))
}

/// E0028 for a tile sized by the open dim `name`.
pub(crate) fn unbound_dim(name: &str, span: Span) -> Diagnostic {
    Diagnostic::new(
        Code::UnboundTileDim,
        span,
        "tile size must be known at compile time",
    )
    .label(format!("dim `{name}` is open until launch"))
    .note(format!("bind {name} with -D or a `dim` default"))
}

#[cfg(test)]
mod tests;
