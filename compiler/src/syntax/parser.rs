//! pest pairs → AST: one `parse_<rule>` function per grammar rule that builds
//! a node (token rules such as operators and keywords are read by the
//! function of the rule that contains them).
//!
//! pest guarantees the shape of every pair sequence matched by the grammar,
//! so the `unreachable!`s below mark grammar invariants, never user input.
//! User-visible limits (integer range, tree depth) become diagnostics.

use pest::Parser as _;
use pest::iterators::Pair;

use super::ast::*;
use super::{MAX_DEPTH, Span};
use crate::check::hir::DType;
use crate::diag::{Code, Diagnostic};

#[derive(pest_derive::Parser)]
#[grammar = "syntax/amla.pest"]
struct AmlaParser;

/// Builds the AST, collecting diagnostics that do not stop parsing.
struct Builder {
    diags: Vec<Diagnostic>,
}

type P<'i> = Pair<'i, Rule>;

/// Parses `text` into a kernel. Errors: a syntax error (E0001) stops at the
/// first one; too-deep nesting (E0002) and oversized integers (E0003).
pub fn parse(text: &str) -> Result<Kernel, Vec<Diagnostic>> {
    super::on_big_stack(|| parse_here(text))
}

fn parse_here(text: &str) -> Result<Kernel, Vec<Diagnostic>> {
    if let Some(d) = check_nesting(text) {
        return Err(vec![d]);
    }
    // The first parse collects no error detail (tracking every attempt
    // costs more than the parse itself); a failed one is parsed again with
    // detail, see `detailed_error`.
    let mut pairs = match AmlaParser::parse(Rule::file, text) {
        Ok(p) => p,
        Err(e) => return Err(vec![syntax_error(text, &detailed_error(text, e))]),
    };
    let Some(file) = pairs.next() else {
        unreachable!("a successful parse of `file` yields one pair")
    };
    let mut b = Builder { diags: Vec::new() };
    match b.parse_file(file) {
        Ok(k) if b.diags.is_empty() => Ok(k),
        Ok(_) => Err(b.diags),
        Err(d) => {
            b.diags.push(d);
            Err(b.diags)
        }
    }
}

/// Parses `text`, which failed with `plain`, again with pest's error detail
/// on: the literal tokens tried at the error position, so that messages can
/// say "expected `;`". The switch is process-wide and read when a parse
/// starts, so detailed parses take a lock, and the switch is on only while
/// one runs (parses elsewhere meanwhile just collect detail they drop).
fn detailed_error(text: &str, plain: pest::error::Error<Rule>) -> pest::error::Error<Rule> {
    static DETAIL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _held = DETAIL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    pest::set_error_detail(true);
    let again = AmlaParser::parse(Rule::file, text);
    pest::set_error_detail(false);
    // The parse is deterministic: it fails again, at the same place.
    again.err().unwrap_or(plain)
}

/// Refuses bracket nesting deeper than [`MAX_DEPTH`] before pest sees it,
/// so no recursive descent below can exhaust the stack.
fn check_nesting(text: &str) -> Option<Diagnostic> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < bytes.len() && !(bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i += 1;
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH as usize {
                    return Some(
                        Diagnostic::new(
                            Code::TooDeep,
                            Span::new(i, i + 1),
                            "brackets nested too deeply",
                        )
                        .label(format!("more than {MAX_DEPTH} levels"))
                        .note("simplify the expression with `let` bindings"),
                    );
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Human words for a rule, used in "expected …" messages.
fn describe(rule: Rule) -> &'static str {
    match rule {
        Rule::EOI => "end of file",
        Rule::file | Rule::kernel | Rule::kw_kernel => "`kernel`",
        Rule::params | Rule::param => "a parameter",
        Rule::ty | Rule::dtype => "a dtype (`bf16`, `f16`, `f32`, `i32`)",
        Rule::shape => "a dim",
        Rule::dim_decl | Rule::kw_dim => "`dim`",
        Rule::const_decl | Rule::kw_const => "`const`",
        Rule::decl_item => "`NAME = value`",
        Rule::block => "`{`",
        Rule::parallel | Rule::kw_parallel => "`parallel`",
        Rule::for_stmt | Rule::kw_for => "`for`",
        Rule::axis => "`NAME in LO..HI`",
        Rule::let_stmt | Rule::kw_let => "`let`",
        Rule::var_stmt | Rule::kw_var => "`var`",
        Rule::assign => "an assignment",
        Rule::index_list | Rule::index_item | Rule::full_range => "an index",
        Rule::expr
        | Rule::or_expr
        | Rule::and_expr
        | Rule::cmp_expr
        | Rule::add_expr
        | Rule::mul_expr
        | Rule::unary
        | Rule::postfix
        | Rule::paren
        | Rule::call
        | Rule::callee
        | Rule::name
        | Rule::float
        | Rule::int
        | Rule::inf
        | Rule::unary_op => "an expression",
        Rule::or_op | Rule::and_op | Rule::cmp_op | Rule::add_op | Rule::mul_op => "an operator",
        Rule::index_suffix => "`[`",
        Rule::transpose => "`^T`",
        Rule::ident | Rule::keyword => "a name",
        Rule::kw_in => "`in`",
        Rule::kw_step => "`step`",
        Rule::decl => "a declaration",
        Rule::stmt => "a statement",
        Rule::atom => "an expression",
        Rule::WHITESPACE | Rule::COMMENT | Rule::exponent | Rule::ident_char => "whitespace",
    }
}

fn syntax_error(text: &str, e: &pest::error::Error<Rule>) -> Diagnostic {
    use pest::error::ErrorVariant;
    let mut pos = pos_of(e).min(text.len());
    while !text.is_char_boundary(pos) {
        pos -= 1; // never past 0: 0 is a boundary
    }
    let mut expected: Vec<String> = Vec::new();
    fn add(expected: &mut Vec<String>, s: String) {
        if !expected.contains(&s) {
            expected.push(s);
        }
    }
    // The detailed attempts know the farthest position reached and the
    // literal tokens tried there; prefer them to pest's rule summary.
    if let Some(att) = e.parse_attempts()
        && att.max_position >= pos
        && text.is_char_boundary(att.max_position)
    {
        pos = att.max_position;
        for t in att.expected_tokens() {
            let token = t.to_string();
            // Only punctuation: words and operators are covered by rule names.
            if PUNCTUATION.contains(&token.as_str()) {
                add(&mut expected, format!("`{token}`"));
            }
        }
        let same_pos = att.max_position == pos_of(e);
        if same_pos && let ErrorVariant::ParsingError { positives, .. } = &e.variant {
            for r in positives {
                add(&mut expected, describe(*r).to_string());
            }
        } else {
            for cs in &att.call_stacks {
                if let Some(r) = cs.deepest.get_rule() {
                    add(&mut expected, describe(*r).to_string());
                }
            }
        }
    }
    if expected.is_empty()
        && let ErrorVariant::ParsingError { positives, .. } = &e.variant
    {
        for r in positives {
            add(&mut expected, describe(*r).to_string());
        }
    }
    if let ErrorVariant::CustomError { message } = &e.variant {
        add(&mut expected, message.clone());
    }
    expected.retain(|s| s != "whitespace");
    // `(`, `[` start expressions too: "an expression" already says so.
    if expected.iter().any(|s| s == "an expression") {
        expected.retain(|s| s != "`(`" && s != "`[`");
    }
    // After an operand, `(` would only continue a call: say "an operator".
    if expected.iter().any(|s| s == "an operator") {
        expected.retain(|s| s != "`(`");
    }
    // Prefer rule words ("an expression") over the raw tokens they start with.
    let found = text[pos..].chars().next();
    let end = pos + found.map_or(0, char::len_utf8);
    let found_text = match found {
        None => "end of file".to_string(),
        Some(c) if c.is_whitespace() => "whitespace".to_string(),
        Some(_) => {
            let word: String = text[pos..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if word.is_empty() {
                format!("`{}`", &text[pos..end])
            } else {
                format!("`{word}`")
            }
        }
    };
    let chained =
        expected.iter().any(|s| s == "an operator") && matches!(found, Some('<' | '>' | '=' | '!'));
    let msg = match expected.len() {
        0 => format!("unexpected {found_text}"),
        _ => format!("expected {}, found {found_text}", join_or(&expected)),
    };
    // A missing `;` is best shown right after the previous token (unless a
    // comment sits in between).
    let mut at = Span::new(pos, end);
    if expected.iter().any(|s| s == "`;`") {
        let before = text.get(..pos).unwrap_or("").trim_end();
        if before.len() < pos && !text[before.len()..pos].contains('/') {
            at = Span::new(before.len(), before.len());
        }
    }
    let d = Diagnostic::new(Code::Syntax, at, msg).label(match expected.len() {
        0 => "unexpected here".to_string(),
        _ => format!("expected {}", join_or(&expected)),
    });
    if chained {
        d.note("comparisons do not chain: write `a < b && b < c`")
    } else {
        d
    }
}

fn pos_of(e: &pest::error::Error<Rule>) -> usize {
    match e.location {
        pest::error::InputLocation::Pos(p) => p,
        pest::error::InputLocation::Span((s, _)) => s,
    }
}

/// Tokens worth naming literally in "expected …".
const PUNCTUATION: [&str; 12] = [";", ",", "(", ")", "[", "]", "{", "}", "=", ":", "->", ".."];

fn join_or(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [a] => a.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

fn span(p: &P<'_>) -> Span {
    p.as_span().into()
}

impl Builder {
    fn parse_file(&mut self, p: P<'_>) -> Result<Kernel, Diagnostic> {
        for inner in p.into_inner() {
            if inner.as_rule() == Rule::kernel {
                return self.parse_kernel(inner);
            }
        }
        unreachable!("`file` holds a `kernel`")
    }

    fn parse_kernel(&mut self, p: P<'_>) -> Result<Kernel, Diagnostic> {
        let sp = span(&p);
        let mut it = p.into_inner();
        it.next(); // kw_kernel
        let name = self.parse_ident(it.next());
        let inputs = self.parse_params(it.next())?;
        let outputs = self.parse_params(it.next())?;
        let mut decls = Vec::new();
        let mut body = Vec::new();
        for q in it {
            match q.as_rule() {
                Rule::dim_decl => decls.push(self.parse_dim_decl(q)?),
                Rule::const_decl => decls.push(self.parse_const_decl(q)?),
                _ => body.push(self.parse_stmt(q)?),
            }
        }
        Ok(Kernel {
            name,
            inputs,
            outputs,
            decls,
            body,
            span: sp,
        })
    }

    fn parse_ident(&mut self, p: Option<P<'_>>) -> Ident {
        match p {
            Some(p) => Ident {
                name: p.as_str().to_string(),
                span: span(&p),
            },
            None => unreachable!("grammar requires an ident here"),
        }
    }

    fn parse_params(&mut self, p: Option<P<'_>>) -> Result<Vec<Param>, Diagnostic> {
        let Some(p) = p else {
            unreachable!("grammar requires `params`")
        };
        p.into_inner().map(|q| self.parse_param(q)).collect()
    }

    fn parse_param(&mut self, p: P<'_>) -> Result<Param, Diagnostic> {
        let sp = span(&p);
        let mut it = p.into_inner();
        let name = self.parse_ident(it.next());
        let Some(t) = it.next() else {
            unreachable!("param has a type")
        };
        Ok(Param {
            name,
            ty: self.parse_ty(t)?,
            span: sp,
        })
    }

    fn parse_ty(&mut self, p: P<'_>) -> Result<TypeExpr, Diagnostic> {
        let sp = span(&p);
        let mut it = p.into_inner();
        let Some(d) = it.next() else {
            unreachable!("ty starts with a dtype")
        };
        let dtype = self.parse_dtype(&d);
        let shape = match it.next() {
            Some(s) => self.parse_shape(s)?,
            None => Vec::new(),
        };
        Ok(TypeExpr {
            dtype,
            shape,
            span: sp,
        })
    }

    fn parse_dtype(&mut self, p: &P<'_>) -> DType {
        match DType::from_name(p.as_str()) {
            Some(d) => d,
            None => unreachable!("`dtype` matches only dtype names"),
        }
    }

    fn parse_shape(&mut self, p: P<'_>) -> Result<Vec<Expr>, Diagnostic> {
        p.into_inner().map(|q| self.parse_expr(q)).collect()
    }

    fn parse_dim_decl(&mut self, p: P<'_>) -> Result<Decl, Diagnostic> {
        self.parse_decl(p, DeclKind::Dim)
    }

    fn parse_const_decl(&mut self, p: P<'_>) -> Result<Decl, Diagnostic> {
        self.parse_decl(p, DeclKind::Const)
    }

    fn parse_decl(&mut self, p: P<'_>, kind: DeclKind) -> Result<Decl, Diagnostic> {
        let sp = span(&p);
        let items = p
            .into_inner()
            .skip(1) // the keyword
            .map(|q| self.parse_decl_item(q))
            .collect::<Result<_, _>>()?;
        Ok(Decl {
            kind,
            items,
            span: sp,
        })
    }

    fn parse_decl_item(&mut self, p: P<'_>) -> Result<DeclItem, Diagnostic> {
        let sp = span(&p);
        let mut it = p.into_inner();
        let name = self.parse_ident(it.next());
        let value = self.parse_expr_opt(it.next())?;
        Ok(DeclItem {
            name,
            value,
            span: sp,
        })
    }

    fn parse_stmt(&mut self, p: P<'_>) -> Result<Stmt, Diagnostic> {
        match p.as_rule() {
            Rule::parallel => self.parse_parallel(p),
            Rule::for_stmt => self.parse_for_stmt(p),
            Rule::let_stmt => self.parse_let_stmt(p),
            Rule::var_stmt => self.parse_var_stmt(p),
            Rule::assign => self.parse_assign(p),
            r => unreachable!("not a statement rule: {r:?}"),
        }
    }

    fn parse_block(&mut self, p: P<'_>) -> Result<Block, Diagnostic> {
        let sp = span(&p);
        let stmts = p
            .into_inner()
            .map(|q| self.parse_stmt(q))
            .collect::<Result<_, _>>()?;
        Ok(Block { stmts, span: sp })
    }

    fn parse_parallel(&mut self, p: P<'_>) -> Result<Stmt, Diagnostic> {
        let sp = span(&p);
        let mut axes = Vec::new();
        let mut body = None;
        for q in p.into_inner() {
            match q.as_rule() {
                Rule::axis => axes.push(self.parse_axis(q)?),
                Rule::block => body = Some(self.parse_block(q)?),
                _ => {}
            }
        }
        let Some(body) = body else {
            unreachable!("parallel has a block")
        };
        Ok(Stmt {
            kind: StmtKind::Parallel { axes, body },
            span: sp,
        })
    }

    fn parse_for_stmt(&mut self, p: P<'_>) -> Result<Stmt, Diagnostic> {
        let sp = span(&p);
        let mut axis = None;
        let mut body = None;
        for q in p.into_inner() {
            match q.as_rule() {
                Rule::axis => axis = Some(self.parse_axis(q)?),
                Rule::block => body = Some(self.parse_block(q)?),
                _ => {}
            }
        }
        let (Some(axis), Some(body)) = (axis, body) else {
            unreachable!("for has an axis and a block")
        };
        Ok(Stmt {
            kind: StmtKind::For { axis, body },
            span: sp,
        })
    }

    fn parse_axis(&mut self, p: P<'_>) -> Result<Axis, Diagnostic> {
        let sp = span(&p);
        let mut it = p
            .into_inner()
            .filter(|q| !matches!(q.as_rule(), Rule::kw_in | Rule::kw_step));
        let var = self.parse_ident(it.next());
        let lo = self.parse_expr_opt(it.next())?;
        let hi = self.parse_expr_opt(it.next())?;
        let step = match it.next() {
            Some(q) => Some(self.parse_expr(q)?),
            None => None,
        };
        Ok(Axis {
            var,
            lo,
            hi,
            step,
            span: sp,
        })
    }

    /// `let` and `var` share a shape: keyword, name, optional type, value.
    fn parse_binding(&mut self, p: P<'_>) -> Result<(Ident, Option<TypeExpr>, Expr), Diagnostic> {
        let mut it = p.into_inner().skip(1);
        let name = self.parse_ident(it.next());
        let mut ty = None;
        let mut value = None;
        for q in it {
            match q.as_rule() {
                Rule::ty => ty = Some(self.parse_ty(q)?),
                _ => value = Some(self.parse_expr(q)?),
            }
        }
        let Some(value) = value else {
            unreachable!("binding has a value")
        };
        Ok((name, ty, value))
    }

    fn parse_let_stmt(&mut self, p: P<'_>) -> Result<Stmt, Diagnostic> {
        let sp = span(&p);
        let (name, ty, value) = self.parse_binding(p)?;
        Ok(Stmt {
            kind: StmtKind::Let { name, ty, value },
            span: sp,
        })
    }

    fn parse_var_stmt(&mut self, p: P<'_>) -> Result<Stmt, Diagnostic> {
        let sp = span(&p);
        let (name, ty, init) = self.parse_binding(p)?;
        Ok(Stmt {
            kind: StmtKind::Var { name, ty, init },
            span: sp,
        })
    }

    fn parse_assign(&mut self, p: P<'_>) -> Result<Stmt, Diagnostic> {
        let sp = span(&p);
        let mut it = p.into_inner();
        let target = self.parse_ident(it.next());
        let mut index = None;
        let mut value = None;
        for q in it {
            match q.as_rule() {
                Rule::index_list => index = Some(self.parse_index_list(q)?),
                _ => value = Some(self.parse_expr(q)?),
            }
        }
        let Some(value) = value else {
            unreachable!("assignment has a value")
        };
        Ok(Stmt {
            kind: StmtKind::Assign {
                target,
                index,
                value,
            },
            span: sp,
        })
    }

    fn parse_index_list(&mut self, p: P<'_>) -> Result<Vec<IndexItem>, Diagnostic> {
        p.into_inner().map(|q| self.parse_index_item(q)).collect()
    }

    fn parse_index_item(&mut self, p: P<'_>) -> Result<IndexItem, Diagnostic> {
        let mut it = p.into_inner();
        match (it.next(), it.next()) {
            (Some(q), None) if q.as_rule() == Rule::full_range => Ok(self.parse_full_range(&q)),
            (Some(a), None) => Ok(IndexItem::Point(self.parse_expr(a)?)),
            (Some(a), Some(b)) => Ok(IndexItem::Range(self.parse_expr(a)?, self.parse_expr(b)?)),
            _ => unreachable!("index_item is `..`, `e` or `a..b`"),
        }
    }

    fn parse_full_range(&mut self, p: &P<'_>) -> IndexItem {
        IndexItem::Full(span(p))
    }

    fn parse_expr_opt(&mut self, p: Option<P<'_>>) -> Result<Expr, Diagnostic> {
        match p {
            Some(p) => self.parse_expr(p),
            None => unreachable!("grammar requires an expression here"),
        }
    }

    /// Dispatches on any expression-level rule.
    fn parse_expr(&mut self, p: P<'_>) -> Result<Expr, Diagnostic> {
        match p.as_rule() {
            Rule::expr => {
                let inner = p.into_inner().next();
                self.parse_expr_opt(inner)
            }
            Rule::or_expr => self.parse_or_expr(p),
            Rule::and_expr => self.parse_and_expr(p),
            Rule::cmp_expr => self.parse_cmp_expr(p),
            Rule::add_expr => self.parse_add_expr(p),
            Rule::mul_expr => self.parse_mul_expr(p),
            Rule::unary => self.parse_unary(p),
            Rule::postfix => self.parse_postfix(p),
            Rule::paren => self.parse_paren(p),
            Rule::call => self.parse_call(p),
            Rule::name => self.parse_name(p),
            Rule::float => self.parse_float(p),
            Rule::int => self.parse_int(p),
            Rule::inf => self.parse_inf(p),
            r => unreachable!("not an expression rule: {r:?}"),
        }
    }

    /// `a || b || …`
    fn parse_or_expr(&mut self, p: P<'_>) -> Result<Expr, Diagnostic> {
        self.parse_binary_level(p)
    }

    /// `a && b && …`
    fn parse_and_expr(&mut self, p: P<'_>) -> Result<Expr, Diagnostic> {
        self.parse_binary_level(p)
    }

    /// `a < b` (at most one comparison: the grammar makes them non-associative)
    fn parse_cmp_expr(&mut self, p: P<'_>) -> Result<Expr, Diagnostic> {
        self.parse_binary_level(p)
    }

    /// `a + b - …`
    fn parse_add_expr(&mut self, p: P<'_>) -> Result<Expr, Diagnostic> {
        self.parse_binary_level(p)
    }

    /// `a * b / c % d @ e …`
    fn parse_mul_expr(&mut self, p: P<'_>) -> Result<Expr, Diagnostic> {
        self.parse_binary_level(p)
    }

    /// The five binary levels share one shape: operands
    /// separated by operator tokens, folded left-associatively.
    fn parse_binary_level(&mut self, p: P<'_>) -> Result<Expr, Diagnostic> {
        let mut it = p.into_inner();
        let mut lhs = self.parse_expr_opt(it.next())?;
        while let Some(op) = it.next() {
            let op = binop(op.as_str());
            let rhs = self.parse_expr_opt(it.next())?;
            let sp = lhs.span.join(rhs.span);
            let depth = lhs.depth.max(rhs.depth);
            lhs = self.node(
                ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)),
                sp,
                depth,
            )?;
        }
        Ok(lhs)
    }

    fn parse_unary(&mut self, p: P<'_>) -> Result<Expr, Diagnostic> {
        let mut ops = Vec::new();
        let mut operand = None;
        for q in p.into_inner() {
            match q.as_rule() {
                Rule::unary_op => ops.push((q.as_str() == "-", span(&q))),
                _ => operand = Some(self.parse_expr(q)?),
            }
        }
        let Some(mut e) = operand else {
            unreachable!("unary ends with an operand")
        };
        for (neg, sp) in ops.into_iter().rev() {
            let op = if neg { UnaryOp::Neg } else { UnaryOp::Not };
            let sp = sp.join(e.span);
            let depth = e.depth;
            e = self.node(ExprKind::Unary(op, Box::new(e)), sp, depth)?;
        }
        Ok(e)
    }

    fn parse_postfix(&mut self, p: P<'_>) -> Result<Expr, Diagnostic> {
        let mut it = p.into_inner();
        let mut e = self.parse_expr_opt(it.next())?;
        for q in it {
            let sp = e.span.join(span(&q));
            match q.as_rule() {
                Rule::index_suffix => {
                    let items = self.parse_index_suffix(q)?;
                    let depth = items
                        .iter()
                        .map(|i| match i {
                            IndexItem::Point(a) => a.depth,
                            IndexItem::Range(a, b) => a.depth.max(b.depth),
                            IndexItem::Full(_) => 0,
                        })
                        .fold(e.depth, u32::max);
                    e = self.node(ExprKind::Index(Box::new(e), items), sp, depth)?;
                }
                _ => {
                    self.parse_transpose(&q);
                    let depth = e.depth;
                    e = self.node(ExprKind::Transpose(Box::new(e)), sp, depth)?;
                }
            }
        }
        Ok(e)
    }

    fn parse_index_suffix(&mut self, p: P<'_>) -> Result<Vec<IndexItem>, Diagnostic> {
        match p.into_inner().next() {
            Some(q) => self.parse_index_list(q),
            None => unreachable!("index_suffix holds an index_list"),
        }
    }

    fn parse_transpose(&mut self, p: &P<'_>) {
        debug_assert_eq!(p.as_rule(), Rule::transpose);
    }

    fn parse_paren(&mut self, p: P<'_>) -> Result<Expr, Diagnostic> {
        let sp = span(&p);
        let mut e = self.parse_expr_opt(p.into_inner().next())?;
        e.span = sp;
        Ok(e)
    }

    fn parse_call(&mut self, p: P<'_>) -> Result<Expr, Diagnostic> {
        let sp = span(&p);
        let mut it = p.into_inner();
        let callee = self.parse_callee(it.next());
        let args: Vec<Expr> = it.map(|q| self.parse_expr(q)).collect::<Result<_, _>>()?;
        let depth = args.iter().map(|a| a.depth).max().unwrap_or(0);
        self.node(ExprKind::Call(callee, args), sp, depth)
    }

    fn parse_callee(&mut self, p: Option<P<'_>>) -> Ident {
        self.parse_ident(p)
    }

    fn parse_name(&mut self, p: P<'_>) -> Result<Expr, Diagnostic> {
        let sp = span(&p);
        Ok(leaf(ExprKind::Name(p.as_str().to_string()), sp))
    }

    fn parse_float(&mut self, p: P<'_>) -> Result<Expr, Diagnostic> {
        let sp = span(&p);
        // The grammar admits only digit strings Rust's float parser accepts.
        let v = p.as_str().parse::<f64>().unwrap_or(f64::NAN);
        if !v.is_finite() {
            self.diags.push(
                Diagnostic::new(
                    Code::ConstEval,
                    sp,
                    format!("float literal `{}` is out of range", p.as_str()),
                )
                .label(format!("larger than the largest f64 ({:e})", f64::MAX))
                .note("write `inf` for an infinite value"),
            );
        }
        Ok(leaf(ExprKind::Float(v), sp))
    }

    fn parse_int(&mut self, p: P<'_>) -> Result<Expr, Diagnostic> {
        let sp = span(&p);
        let v = match p.as_str().parse::<i64>() {
            Ok(v) => v,
            Err(_) => {
                self.diags.push(
                    Diagnostic::new(Code::IntTooLarge, sp, "integer literal too large").label(
                        format!("does not fit in a 64-bit signed integer (max {})", i64::MAX),
                    ),
                );
                0
            }
        };
        Ok(leaf(ExprKind::Int(v), sp))
    }

    fn parse_inf(&mut self, p: P<'_>) -> Result<Expr, Diagnostic> {
        Ok(leaf(ExprKind::Float(f64::INFINITY), span(&p)))
    }

    /// A node over children of height `child_depth`; refuses trees higher
    /// than [`MAX_DEPTH`] (long operator chains, long prefix runs).
    fn node(&mut self, kind: ExprKind, sp: Span, child_depth: u32) -> Result<Expr, Diagnostic> {
        let depth = child_depth + 1;
        if depth > MAX_DEPTH {
            return Err(
                Diagnostic::new(Code::TooDeep, sp, "expression nested too deeply")
                    .label(format!("more than {MAX_DEPTH} levels of operators"))
                    .note("split it with `let` bindings"),
            );
        }
        Ok(Expr {
            kind,
            span: sp,
            depth,
        })
    }
}

fn leaf(kind: ExprKind, span: Span) -> Expr {
    Expr {
        kind,
        span,
        depth: 1,
    }
}

fn binop(s: &str) -> BinOp {
    match s {
        "+" => BinOp::Add,
        "-" => BinOp::Sub,
        "*" => BinOp::Mul,
        "/" => BinOp::Div,
        "%" => BinOp::Rem,
        "@" => BinOp::Matmul,
        "==" => BinOp::Eq,
        "!=" => BinOp::Ne,
        "<" => BinOp::Lt,
        "<=" => BinOp::Le,
        ">" => BinOp::Gt,
        ">=" => BinOp::Ge,
        "&&" => BinOp::And,
        "||" => BinOp::Or,
        other => unreachable!("not an operator token: {other}"),
    }
}
