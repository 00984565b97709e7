//! The text parser: [`parse`] reads back what [`super::print()`] writes.
//!
//! A hand-written lexer and a recursive-descent parser (no pest: the form is
//! line-oriented and tiny). The grammar is the one documented in
//! [`super::print()`]; `//` starts a comment that runs to the end of the line.
//!
//! ```text
//! kernel tiny
//! input x: f32[64]
//! output y: f32[64]
//!
//! func any {
//!   %c0 = iconst 0 : i32
//!   %t = load x[%c0+:64] : f32[64]
//!   %e = exp %t : f32[64] ub@0x0
//!   store y[%c0+:64], %e
//! }
//! ```
//!
//! Guarantees:
//! - `print(parse(text)?) ` is canonical and `parse(print(k))` prints back
//!   to exactly `print(k)` for every kernel the verifier accepts;
//! - every printed result type is checked against
//!   [`super::typing::result_types`] (equal apart from the buffer; a `copy`
//!   result must be in its `to` buffer), then the printed buffer and offset
//!   are applied on top;
//! - names resolve textually: a value must be defined on an earlier line
//!   of the same func, and a name is defined once per func. Whether a definition dominates its uses is
//!   left to [`super::verify()`], so the verifier can be tested from text;
//! - malformed text is an error naming `line:col` and what was expected,
//!   never a panic (the parser is fed user files): nesting depth and tile
//!   sizes are bounded, every lookup is checked.

use std::collections::HashMap;
use std::fmt;

use super::inst::{Axis, BLayout, BinaryOp, CmpOp, Index, InstKind, ReduceOp, UnaryOp, Unit};
use super::types::{DType, Dim, Space, Type};
use super::typing::{result_types, same_modulo_space};
use super::{Block, DimData, DimId, Func, Kernel, Role, Tensor, TensorData, Value};

/// Deepest loop nesting the parser accepts.
pub const MAX_DEPTH: usize = 64;

/// Largest tile the parser accepts, in bytes (far above any buffer; it only
/// keeps size arithmetic from overflowing).
pub const MAX_TILE_BYTES: u64 = 1 << 48;

/// A syntax, name or typing error in IR text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line.
    pub line: u32,
    /// 1-based column (in characters).
    pub col: u32,
    /// What was wrong or expected.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.message)
    }
}

impl std::error::Error for ParseError {}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Value(String),
    Num(String),
    Punct(&'static str),
    Newline,
    Eof,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "`{s}`"),
            Tok::Value(s) => write!(f, "`%{s}`"),
            Tok::Num(s) => write!(f, "`{s}`"),
            Tok::Punct(p) => write!(f, "`{p}`"),
            Tok::Newline => f.write_str("end of line"),
            Tok::Eof => f.write_str("end of file"),
        }
    }
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    line: u32,
    col: u32,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn lex(text: &str) -> Result<Vec<Token>, ParseError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line, mut col) = (0usize, 1u32, 1u32);
    // Reads `[A-Za-z0-9_]*` then any `.digits` suffixes from `i`.
    let name_end = |mut j: usize| {
        while j < chars.len() && is_name_char(chars[j]) {
            j += 1;
        }
        while j + 1 < chars.len() && chars[j] == '.' && chars[j + 1].is_ascii_digit() {
            j += 1;
            while j < chars.len() && chars[j].is_ascii_digit() {
                j += 1;
            }
        }
        j
    };
    while i < chars.len() {
        let c = chars[i];
        let (tl, tc) = (line, col);
        let start = i;
        let tok = match c {
            '\n' => {
                i += 1;
                line += 1;
                col = 1;
                out.push(Token {
                    tok: Tok::Newline,
                    line: tl,
                    col: tc,
                });
                continue;
            }
            ' ' | '\t' | '\r' => {
                i += 1;
                col += 1;
                continue;
            }
            '/' if chars.get(i + 1) == Some(&'/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            '%' => {
                let end = name_end(i + 1);
                if end == i + 1 {
                    return Err(ParseError {
                        line: tl,
                        col: tc,
                        message: "expected a value name after `%`".into(),
                    });
                }
                i = end;
                Tok::Value(chars[start + 1..end].iter().collect())
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                i = name_end(i);
                Tok::Ident(chars[start..i].iter().collect())
            }
            c if c.is_ascii_digit() => {
                if c == '0' && matches!(chars.get(i + 1), Some('x' | 'X')) {
                    i += 2;
                    while i < chars.len() && chars[i].is_ascii_hexdigit() {
                        i += 1;
                    }
                } else {
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        i += 1;
                    }
                    if chars.get(i) == Some(&'.')
                        && chars.get(i + 1).is_some_and(char::is_ascii_digit)
                    {
                        i += 1;
                        while i < chars.len() && chars[i].is_ascii_digit() {
                            i += 1;
                        }
                    }
                    if matches!(chars.get(i), Some('e' | 'E')) {
                        let mut j = i + 1;
                        if matches!(chars.get(j), Some('+' | '-')) {
                            j += 1;
                        }
                        if chars.get(j).is_some_and(char::is_ascii_digit) {
                            i = j;
                            while i < chars.len() && chars[i].is_ascii_digit() {
                                i += 1;
                            }
                        }
                    }
                }
                Tok::Num(chars[start..i].iter().collect())
            }
            '.' if chars.get(i + 1) == Some(&'.') => {
                i += 2;
                Tok::Punct("..")
            }
            _ => {
                let p = match c {
                    '{' => "{",
                    '}' => "}",
                    '[' => "[",
                    ']' => "]",
                    '(' => "(",
                    ')' => ")",
                    ',' => ",",
                    ':' => ":",
                    '=' => "=",
                    '@' => "@",
                    '+' => "+",
                    '-' => "-",
                    _ => {
                        return Err(ParseError {
                            line: tl,
                            col: tc,
                            message: format!("unexpected character `{c}`"),
                        });
                    }
                };
                i += 1;
                Tok::Punct(p)
            }
        };
        col += (i - start) as u32;
        out.push(Token {
            tok,
            line: tl,
            col: tc,
        });
    }
    out.push(Token {
        tok: Tok::Eof,
        line,
        col,
    });
    Ok(out)
}

/// Parses the text form of a kernel.
pub fn parse(text: &str) -> Result<Kernel, ParseError> {
    let toks = lex(text)?;
    let mut p = Parser {
        toks,
        pos: 0,
        k: Kernel::default(),
        dims: HashMap::new(),
        tensors: HashMap::new(),
        values: HashMap::new(),
        depth: 0,
    };
    p.kernel()?;
    Ok(p.k)
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
    k: Kernel,
    dims: HashMap<String, DimId>,
    tensors: HashMap<String, Tensor>,
    /// Printed name → value and the line defining it.
    values: HashMap<String, (Value, u32)>,
    depth: usize,
}

type PResult<T> = Result<T, ParseError>;

/// A parsed type with its optional offset.
type Placed = (Type, Option<u64>);

fn unary_op(s: &str) -> Option<UnaryOp> {
    Some(match s {
        "neg" => UnaryOp::Neg,
        "not" => UnaryOp::Not,
        "exp" => UnaryOp::Exp,
        "exp2" => UnaryOp::Exp2,
        "log" => UnaryOp::Log,
        "log2" => UnaryOp::Log2,
        "sqrt" => UnaryOp::Sqrt,
        "abs" => UnaryOp::Abs,
        "ceil" => UnaryOp::Ceil,
        "floor" => UnaryOp::Floor,
        "round" => UnaryOp::Round,
        _ => return None,
    })
}

fn binary_op(s: &str) -> Option<BinaryOp> {
    Some(match s {
        "add" => BinaryOp::Add,
        "sub" => BinaryOp::Sub,
        "mul" => BinaryOp::Mul,
        "div" => BinaryOp::Div,
        "rem" => BinaryOp::Rem,
        "max" => BinaryOp::Max,
        "min" => BinaryOp::Min,
        "and" => BinaryOp::And,
        "or" => BinaryOp::Or,
        _ => return None,
    })
}

fn cmp_op(s: &str) -> Option<CmpOp> {
    Some(match s {
        "eq" => CmpOp::Eq,
        "ne" => CmpOp::Ne,
        "lt" => CmpOp::Lt,
        "le" => CmpOp::Le,
        "gt" => CmpOp::Gt,
        "ge" => CmpOp::Ge,
        _ => return None,
    })
}

fn space_names() -> String {
    Space::ALL
        .iter()
        .map(|s| s.name())
        .collect::<Vec<_>>()
        .join(", ")
}

fn dtype_names() -> String {
    DType::ALL
        .iter()
        .map(|s| s.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Size in bytes of a shape of `dtype`, if it stays under [`MAX_TILE_BYTES`].
fn bounded_bytes(dtype: DType, shape: &[u64]) -> Option<u64> {
    shape
        .iter()
        .try_fold(dtype.bytes(), |acc, &d| acc.checked_mul(d))
        .filter(|&b| b <= MAX_TILE_BYTES)
}

impl Parser {
    fn peek(&self) -> &Token {
        // The token list always ends with Eof and `pos` never passes it.
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }

    fn bump(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.toks.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn err_at(&self, t: &Token, message: impl Into<String>) -> ParseError {
        ParseError {
            line: t.line,
            col: t.col,
            message: message.into(),
        }
    }

    fn expected(&self, what: &str) -> ParseError {
        let t = self.peek();
        self.err_at(t, format!("expected {what}, found {}", t.tok))
    }

    fn is_punct(&self, p: &str) -> bool {
        matches!(&self.peek().tok, Tok::Punct(q) if *q == p)
    }

    fn is_ident(&self, s: &str) -> bool {
        matches!(&self.peek().tok, Tok::Ident(q) if q == s)
    }

    fn eat_punct(&mut self, p: &str) -> bool {
        let yes = self.is_punct(p);
        if yes {
            self.bump();
        }
        yes
    }

    fn eat_ident(&mut self, s: &str) -> bool {
        let yes = self.is_ident(s);
        if yes {
            self.bump();
        }
        yes
    }

    fn punct(&mut self, p: &str) -> PResult<()> {
        if self.eat_punct(p) {
            Ok(())
        } else {
            Err(self.expected(&format!("`{p}`")))
        }
    }

    fn keyword(&mut self, s: &str) -> PResult<()> {
        if self.eat_ident(s) {
            Ok(())
        } else {
            Err(self.expected(&format!("`{s}`")))
        }
    }

    fn ident(&mut self, what: &str) -> PResult<(String, Token)> {
        match &self.peek().tok {
            Tok::Ident(s) => {
                let s = s.clone();
                Ok((s, self.bump()))
            }
            _ => Err(self.expected(what)),
        }
    }

    fn skip_newlines(&mut self) {
        while self.peek().tok == Tok::Newline {
            self.bump();
        }
    }

    /// The end of a line (or of the file).
    fn end_of_line(&mut self) -> PResult<()> {
        match self.peek().tok {
            Tok::Newline => {
                self.skip_newlines();
                Ok(())
            }
            Tok::Eof => Ok(()),
            _ => Err(self.expected("end of line")),
        }
    }

    fn u64(&mut self, what: &str) -> PResult<u64> {
        let t = self.peek().clone();
        let Tok::Num(s) = &t.tok else {
            return Err(self.expected(what));
        };
        let v = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(h) => u64::from_str_radix(h, 16).ok(),
            None => s.parse::<u64>().ok(),
        };
        match v {
            Some(v) => {
                self.bump();
                Ok(v)
            }
            None => Err(self.err_at(&t, format!("expected {what}, found `{s}`"))),
        }
    }

    fn u32(&mut self, what: &str) -> PResult<u32> {
        let t = self.peek().clone();
        let v = self.u64(what)?;
        u32::try_from(v).map_err(|_| self.err_at(&t, format!("{what} `{v}` is too large")))
    }

    fn i64(&mut self, what: &str) -> PResult<i64> {
        let neg = self.eat_punct("-");
        let t = self.peek().clone();
        let v = self.u64(what)?;
        let v = if neg {
            0i64.checked_sub_unsigned(v)
        } else {
            i64::try_from(v).ok()
        };
        v.ok_or_else(|| self.err_at(&t, format!("{what} is out of range for i64")))
    }

    fn float(&mut self) -> PResult<f64> {
        let neg = self.eat_punct("-");
        let t = self.peek().clone();
        let s = match &t.tok {
            Tok::Num(s) if !s.starts_with("0x") && !s.starts_with("0X") => s.clone(),
            Tok::Ident(s) if s == "inf" || s == "NaN" => s.clone(),
            _ => return Err(self.expected("a float (`1.5`, `1e-7`, `inf`, `NaN`)")),
        };
        self.bump();
        let v: f64 = s
            .parse()
            .map_err(|_| self.err_at(&t, format!("bad float `{s}`")))?;
        Ok(if neg { -v } else { v })
    }

    fn dtype(&mut self) -> PResult<DType> {
        let t = self.peek().clone();
        let (s, _) = self.ident("a dtype")?;
        DType::from_name(&s).ok_or_else(|| {
            self.err_at(
                &t,
                format!("unknown dtype `{s}` (expected one of {})", dtype_names()),
            )
        })
    }

    fn space(&mut self) -> PResult<Space> {
        let t = self.peek().clone();
        let (s, _) = self.ident("a buffer")?;
        Space::from_name(&s).ok_or_else(|| {
            self.err_at(
                &t,
                format!("unknown buffer `{s}` (expected one of {})", space_names()),
            )
        })
    }

    /// `[d, d, …]` of static extents, bounded in size for `dtype`.
    fn shape(&mut self, dtype: DType) -> PResult<Vec<u64>> {
        let t = self.peek().clone();
        self.punct("[")?;
        let mut out = Vec::new();
        if !self.is_punct("]") {
            loop {
                out.push(self.u64("an extent")?);
                if !self.eat_punct(",") {
                    break;
                }
            }
        }
        self.punct("]")?;
        if bounded_bytes(dtype, &out).is_none() {
            return Err(self.err_at(&t, "tile is too large"));
        }
        Ok(out)
    }

    /// `dtype`, `dtype[shape]`, then an optional buffer and `@offset`.
    fn ty(&mut self) -> PResult<Placed> {
        let t = self.peek().clone();
        let dtype = self.dtype()?;
        let mut ty = if self.is_punct("[") {
            let shape = self.shape(dtype)?;
            if shape.is_empty() {
                return Err(self.err_at(&t, "a tile needs at least one dim"));
            }
            Type::tile(dtype, shape, Space::Any)
        } else {
            Type::Scalar(dtype)
        };
        if matches!(self.peek().tok, Tok::Ident(_)) {
            let st = self.peek().clone();
            let space = self.space()?;
            match &mut ty {
                Type::Tile(tt) => tt.space = space,
                Type::Scalar(_) => return Err(self.err_at(&st, "a scalar has no buffer")),
            }
        }
        let offset = if self.eat_punct("@") {
            Some(self.u64("a byte offset")?)
        } else {
            None
        };
        Ok((ty, offset))
    }

    fn value(&mut self) -> PResult<Value> {
        let t = self.peek().clone();
        let Tok::Value(name) = &t.tok else {
            return Err(self.expected("a value (`%name`)"));
        };
        match self.values.get(name) {
            Some(&(v, _)) => {
                self.bump();
                Ok(v)
            }
            None => Err(self.err_at(&t, format!("use of undefined value `%{name}`"))),
        }
    }

    /// A value name being defined (checked unique later, by `define`).
    fn new_value_name(&mut self) -> PResult<(String, Token)> {
        let t = self.peek().clone();
        match &t.tok {
            Tok::Value(name) => {
                let name = name.clone();
                self.bump();
                Ok((name, t))
            }
            _ => Err(self.expected("a value name (`%name`)")),
        }
    }

    fn define(&mut self, name: &str, at: &Token, v: Value) -> PResult<()> {
        if let Some(&(_, line)) = self.values.get(name) {
            return Err(self.err_at(
                at,
                format!("value `%{name}` is already defined on line {line}"),
            ));
        }
        self.values.insert(name.to_string(), (v, at.line));
        let src = (!name.starts_with(|c: char| c.is_ascii_digit())).then(|| name.to_string());
        self.k.values[v].name = src;
        Ok(())
    }

    fn kernel(&mut self) -> PResult<()> {
        self.skip_newlines();
        self.keyword("kernel")?;
        let (name, _) = self.ident("a kernel name")?;
        self.k.name = name;
        self.end_of_line()?;
        loop {
            let t = self.peek().clone();
            match &t.tok {
                Tok::Ident(s) if s == "dim" => {
                    self.bump();
                    let (name, nt) = self.ident("a dim name")?;
                    let value = if self.eat_punct("=") {
                        Some(self.u64("a dim value")?)
                    } else {
                        None
                    };
                    if self.dims.contains_key(&name) {
                        return Err(self.err_at(&nt, format!("dim `{name}` is declared twice")));
                    }
                    let id = self.k.dims.push(DimData {
                        name: name.clone(),
                        value,
                    });
                    self.dims.insert(name, id);
                    self.end_of_line()?;
                }
                Tok::Ident(s) if matches!(s.as_str(), "input" | "output" | "workspace") => {
                    let role = match s.as_str() {
                        "input" => Role::Input,
                        "output" => Role::Output,
                        _ => Role::Workspace,
                    };
                    self.bump();
                    let (name, nt) = self.ident("a tensor name")?;
                    self.punct(":")?;
                    let dtype = self.dtype()?;
                    self.punct("[")?;
                    let mut shape = Vec::new();
                    if !self.is_punct("]") {
                        loop {
                            let dt = self.peek().clone();
                            match &dt.tok {
                                Tok::Num(_) => shape.push(Dim::Const(self.u64("an extent")?)),
                                Tok::Ident(d) => match self.dims.get(d) {
                                    Some(&id) => {
                                        self.bump();
                                        shape.push(Dim::Sym(id));
                                    }
                                    None => {
                                        return Err(self.err_at(&dt, format!("unknown dim `{d}`")));
                                    }
                                },
                                _ => return Err(self.expected("an extent or a dim name")),
                            }
                            if !self.eat_punct(",") {
                                break;
                            }
                        }
                    }
                    self.punct("]")?;
                    if self.tensors.contains_key(&name) {
                        return Err(self.err_at(&nt, format!("tensor `{name}` is declared twice")));
                    }
                    let id = self.k.tensors.push(TensorData {
                        name: name.clone(),
                        dtype,
                        shape,
                        role,
                    });
                    self.tensors.insert(name, id);
                    self.end_of_line()?;
                }
                Tok::Ident(s) if s == "func" => self.func()?,
                Tok::Eof => return Ok(()),
                _ => {
                    return Err(self
                        .expected("`dim`, `input`, `output`, `workspace`, `func` or end of file"));
                }
            }
        }
    }

    fn func(&mut self) -> PResult<()> {
        self.keyword("func")?;
        let t = self.peek().clone();
        let (u, _) = self.ident("a unit (`any`, `cube`, `vector`)")?;
        let unit = match u.as_str() {
            "any" => Unit::Any,
            "cube" => Unit::Cube,
            "vector" => Unit::Vector,
            _ => {
                return Err(self.err_at(
                    &t,
                    format!("unknown unit `{u}` (expected `any`, `cube` or `vector`)"),
                ));
            }
        };
        let sub_blocks = if self.eat_ident("sub_blocks") {
            self.u32("a sub-block count")?
        } else {
            1
        };
        self.punct("{")?;
        // Value names are scoped to their func.
        self.values.clear();
        let body = self.k.blocks.push(Default::default());
        self.k.funcs.push(Func {
            unit,
            sub_blocks,
            body,
        });
        self.block(body)?;
        self.end_of_line()
    }

    /// Instructions up to and including the closing `}`.
    fn block(&mut self, block: Block) -> PResult<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            let t = self.peek().clone();
            return Err(self.err_at(&t, format!("blocks are nested deeper than {MAX_DEPTH}")));
        }
        self.end_of_line()?;
        loop {
            match self.peek().tok {
                Tok::Punct("}") => {
                    self.bump();
                    break;
                }
                Tok::Eof => return Err(self.expected("`}`")),
                _ => self.inst(block)?,
            }
        }
        self.depth -= 1;
        Ok(())
    }

    fn index(&mut self) -> PResult<Vec<Index>> {
        self.punct("[")?;
        let mut out = Vec::new();
        if !self.is_punct("]") {
            loop {
                if self.eat_punct("..") {
                    out.push(Index::Full);
                } else {
                    let v = self.value()?;
                    if self.eat_punct("+") {
                        self.punct(":")?;
                        let len = self.u64("a range length")?;
                        out.push(Index::Range { start: v, len });
                    } else {
                        out.push(Index::Point(v));
                    }
                }
                if !self.eat_punct(",") {
                    break;
                }
            }
        }
        self.punct("]")?;
        Ok(out)
    }

    fn tensor(&mut self) -> PResult<Tensor> {
        let t = self.peek().clone();
        let (name, _) = self.ident("a tensor name")?;
        self.tensors
            .get(&name)
            .copied()
            .ok_or_else(|| self.err_at(&t, format!("unknown tensor `{name}`")))
    }

    fn step(&mut self) -> PResult<i64> {
        if self.eat_ident("step") {
            self.i64("a step")
        } else {
            Ok(1)
        }
    }

    /// Checks printed result types against the typing rules and returns
    /// the types the results get.
    fn check_types(&self, at: &Token, kind: &InstKind, printed: &[Placed]) -> PResult<Vec<Type>> {
        let op = kind.opcode();
        let want = result_types(&self.k, kind).map_err(|e| {
            let msg = if e.0.starts_with(op) {
                e.0
            } else {
                format!("{op}: {}", e.0)
            };
            self.err_at(at, msg)
        })?;
        for t in &want {
            if let Type::Tile(tt) = t
                && bounded_bytes(tt.dtype, &tt.shape).is_none()
            {
                return Err(self.err_at(at, format!("{op}: result tile {t} is too large")));
            }
        }
        if want.len() != printed.len() {
            return Err(self.err_at(
                at,
                format!(
                    "{op} has {} results, but {} are written",
                    want.len(),
                    printed.len()
                ),
            ));
        }
        for (n, (w, (p, _))) in want.iter().zip(printed).enumerate() {
            if !same_modulo_space(w, p) {
                return Err(self.err_at(
                    at,
                    format!("result {n} of {op} is written as {p}, but its operands give {w}"),
                ));
            }
            if let InstKind::Copy { to, .. } = kind
                && p.as_tile().is_some_and(|t| t.space != *to)
            {
                return Err(self.err_at(
                    at,
                    format!("copy to {to} is written with result {p}, which is not in {to}"),
                ));
            }
        }
        Ok(printed.iter().map(|(t, _)| t.clone()).collect())
    }

    fn types(&mut self, n: usize) -> PResult<Vec<Placed>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        self.punct(":")?;
        let mut out = vec![self.ty()?];
        while self.eat_punct(",") {
            out.push(self.ty()?);
        }
        Ok(out)
    }

    fn inst(&mut self, block: Block) -> PResult<()> {
        let mut results = Vec::new();
        if matches!(self.peek().tok, Tok::Value(_)) {
            loop {
                results.push(self.new_value_name()?);
                if !self.eat_punct(",") {
                    break;
                }
            }
            self.punct("=")?;
        }
        let at = self.peek().clone();
        let (op, _) = self.ident("an op name")?;
        let kind = match op.as_str() {
            "iconst" => InstKind::IConst(self.i64("an integer")?),
            "fconst" => {
                let d = self.dtype()?;
                InstKind::FConst(self.float()?, d)
            }
            "dim" => {
                let t = self.peek().clone();
                let (name, _) = self.ident("a dim name")?;
                match self.dims.get(&name) {
                    Some(&d) => InstKind::DimValue(d),
                    None => return Err(self.err_at(&t, format!("unknown dim `{name}`"))),
                }
            }
            "sub_block" => InstKind::SubBlock,
            "load" => {
                let tensor = self.tensor()?;
                InstKind::Load {
                    tensor,
                    index: self.index()?,
                }
            }
            "store" | "atomic_add" | "atomic_exp_add" => {
                let tensor = self.tensor()?;
                let index = self.index()?;
                self.punct(",")?;
                let value = self.value()?;
                match op.as_str() {
                    "store" => InstKind::Store {
                        tensor,
                        index,
                        value,
                    },
                    "atomic_add" => InstKind::AtomicAdd {
                        tensor,
                        index,
                        value,
                    },
                    _ => InstKind::AtomicExpAdd {
                        tensor,
                        index,
                        n: value,
                    },
                }
            }
            "extract" => {
                let src = self.value()?;
                InstKind::Extract {
                    src,
                    index: self.index()?,
                }
            }
            "copy" => {
                let src = self.value()?;
                self.keyword("to")?;
                InstKind::Copy {
                    src,
                    to: self.space()?,
                }
            }
            "broadcast" => {
                let src = self.value()?;
                self.keyword("to")?;
                let d = self.k.values[src].ty.dtype();
                InstKind::Broadcast {
                    src,
                    shape: self.shape(d)?,
                }
            }
            "iota" => {
                let shape = self.shape(DType::I32)?;
                self.keyword("axis")?;
                InstKind::Iota {
                    shape,
                    axis: self.u32("an axis")?,
                }
            }
            "select" => {
                let c = self.value()?;
                self.punct(",")?;
                let a = self.value()?;
                self.punct(",")?;
                InstKind::Select(c, a, self.value()?)
            }
            "rowmax" | "rowsum" => {
                let r = if op == "rowmax" {
                    ReduceOp::Max
                } else {
                    ReduceOp::Sum
                };
                InstKind::Reduce(r, self.value()?)
            }
            "cast" | "bitcast" => {
                let a = self.value()?;
                self.keyword("to")?;
                let d = self.dtype()?;
                if op == "cast" {
                    InstKind::Cast(a, d)
                } else {
                    InstKind::Bitcast(a, d)
                }
            }
            "reshape" => {
                let a = self.value()?;
                self.keyword("to")?;
                let d = self.k.values[a].ty.dtype();
                InstKind::Reshape(a, self.shape(d)?)
            }
            "transpose" => InstKind::Transpose(self.value()?),
            "matmul" => {
                let a = self.value()?;
                self.punct(",")?;
                let b = self.value()?;
                let b_layout = if self.eat_ident("kn") {
                    BLayout::KN
                } else if self.eat_ident("nk") {
                    BLayout::NK
                } else {
                    return Err(self.expected("`kn` or `nk`"));
                };
                let acc = if self.eat_ident("acc") {
                    Some(self.value()?)
                } else {
                    None
                };
                InstKind::Matmul {
                    a,
                    b,
                    b_layout,
                    acc,
                }
            }
            "set_flag" => InstKind::SetFlag(self.u32("a flag id")?),
            "wait_flag" => InstKind::WaitFlag(self.u32("a flag id")?),
            "yield" => {
                let mut vs = Vec::new();
                if matches!(self.peek().tok, Tok::Value(_)) {
                    loop {
                        vs.push(self.value()?);
                        if !self.eat_punct(",") {
                            break;
                        }
                    }
                }
                InstKind::Yield(vs)
            }
            "parallel" => return self.parallel(block, &at, results),
            "for" => return self.for_loop(block, &at, results),
            s => {
                if let Some(u) = unary_op(s) {
                    InstKind::Unary(u, self.value()?)
                } else if let Some(b) = binary_op(s) {
                    let a = self.value()?;
                    self.punct(",")?;
                    InstKind::Binary(b, a, self.value()?)
                } else if let Some(c) = cmp_op(s) {
                    let a = self.value()?;
                    self.punct(",")?;
                    InstKind::Cmp(c, a, self.value()?)
                } else {
                    return Err(self.err_at(&at, format!("unknown op `{s}`")));
                }
            }
        };
        let printed = self.types(results.len())?;
        let types = self.check_types(&at, &kind, &printed)?;
        self.end_of_line()?;
        self.finish(block, kind, types, &printed, &results)?;
        Ok(())
    }

    /// Creates the instruction, names and places its results, appends it.
    fn finish(
        &mut self,
        block: Block,
        kind: InstKind,
        types: Vec<Type>,
        printed: &[Placed],
        results: &[(String, Token)],
    ) -> PResult<()> {
        let inst = self.k.make_inst(kind, types);
        let rs = self.k.insts[inst].results.clone();
        for ((r, (name, t)), (_, off)) in rs.into_iter().zip(results).zip(printed) {
            self.define(name, t, r)?;
            if off.is_some() {
                self.k.offsets.set(r, *off);
            }
        }
        self.k.blocks[block].insts.push(inst);
        Ok(())
    }

    fn parallel(&mut self, block: Block, at: &Token, results: Vec<(String, Token)>) -> PResult<()> {
        let mut axes = Vec::new();
        let mut params = Vec::new();
        loop {
            params.push(self.new_value_name()?);
            self.keyword("in")?;
            let lo = self.value()?;
            self.punct("..")?;
            let hi = self.value()?;
            let step = self.step()?;
            axes.push(Axis { lo, hi, step });
            if !self.eat_punct(",") {
                break;
            }
        }
        let printed = self.types(results.len())?;
        let body = self.k.blocks.push(Default::default());
        let kind = InstKind::Parallel { axes, body };
        let types = self.check_types(at, &kind, &printed)?;
        for (name, t) in &params {
            let p = self.k.add_block_param(body, Type::Scalar(DType::I32), None);
            self.define(name, t, p)?;
        }
        self.punct("{")?;
        self.block(body)?;
        self.end_of_line()?;
        self.finish(block, kind, types, &printed, &results)
    }

    fn for_loop(&mut self, block: Block, at: &Token, results: Vec<(String, Token)>) -> PResult<()> {
        let iv = self.new_value_name()?;
        self.keyword("in")?;
        let lo = self.value()?;
        self.punct("..")?;
        let hi = self.value()?;
        let step = self.step()?;
        let mut carried = Vec::new();
        let mut init = Vec::new();
        if self.eat_ident("carry") {
            self.punct("(")?;
            loop {
                let name = self.new_value_name()?;
                self.punct(":")?;
                let ty = self.ty()?;
                self.punct("=")?;
                let it = self.peek().clone();
                let v = self.value()?;
                if !same_modulo_space(&ty.0, &self.k.values[v].ty) {
                    return Err(self.err_at(
                        &it,
                        format!(
                            "carried `%{}: {}` is initialised with a {}",
                            name.0, ty.0, self.k.values[v].ty
                        ),
                    ));
                }
                carried.push((name, ty));
                init.push(v);
                if !self.eat_punct(",") {
                    break;
                }
            }
            self.punct(")")?;
        }
        let printed = self.types(results.len())?;
        let body = self.k.blocks.push(Default::default());
        let kind = InstKind::For {
            lo,
            hi,
            step,
            init,
            body,
        };
        let types = self.check_types(at, &kind, &printed)?;
        let p = self.k.add_block_param(body, Type::Scalar(DType::I32), None);
        self.define(&iv.0, &iv.1, p)?;
        for ((name, t), (ty, off)) in carried {
            let p = self.k.add_block_param(body, ty, None);
            self.define(&name, &t, p)?;
            if off.is_some() {
                self.k.offsets.set(p, off);
            }
        }
        self.punct("{")?;
        self.block(body)?;
        self.end_of_line()?;
        self.finish(block, kind, types, &printed, &results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::print::print;

    fn roundtrip(text: &str) -> String {
        let k = parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let p1 = print(&k);
        let k2 = parse(&p1).unwrap_or_else(|e| panic!("{e}\n{p1}"));
        assert_eq!(print(&k2), p1);
        p1
    }

    #[test]
    fn sample_round_trips() {
        let k = crate::ir::print::tests::sample();
        let text = print(&k);
        assert_eq!(roundtrip(&text), text);
    }

    #[test]
    fn module_doc_example_round_trips() {
        let text = "kernel tiny
input x: f32[64]
output y: f32[64]

func any {
  %c0 = iconst 0 : i32
  %t = load x[%c0+:64] : f32[64]
  %e = exp %t : f32[64] ub@0x0
  store y[%c0+:64], %e
}
";
        assert_eq!(roundtrip(text), text);
    }

    #[test]
    fn floats_round_trip_exactly() {
        for x in [
            0.1,
            -0.0,
            1e-7,
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.07216878364870322,
            (0.1f32) as f64,
        ] {
            let text = format!("kernel f\n\nfunc any {{\n  %x = fconst f32 {x:?} : f32\n}}\n");
            let k = parse(&text).unwrap();
            let i = k.blocks[k.funcs[0].body].insts[0];
            let InstKind::FConst(y, _) = k.insts[i].kind else {
                panic!()
            };
            assert_eq!(y.to_bits(), x.to_bits(), "{x:?}");
            assert_eq!(print(&k), text);
        }
    }

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(k) => panic!("parsed:\n{}", print(&k)),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn errors_name_line_col_and_expectation() {
        assert_eq!(err("kern x"), "1:1: expected `kernel`, found `kern`");
        assert_eq!(
            err("kernel k\nfunc any {\n  %a = iconst 1 : f32\n}\n"),
            "3:8: result 0 of iconst is written as f32, but its operands give i32"
        );
        assert_eq!(
            err("kernel k\nfunc any {\n  %a = add %b, %b : i32\n}\n"),
            "3:12: use of undefined value `%b`"
        );
        assert_eq!(
            err("kernel k\nfunc any {\n  %a = iconst 1 : i32\n  %a = iconst 2 : i32\n}\n"),
            "4:3: value `%a` is already defined on line 3"
        );
        assert_eq!(
            err("kernel k\nfunc any {\n  %a = iconst 1 : i32 l1\n}\n"),
            "3:23: a scalar has no buffer"
        );
        assert_eq!(
            err("kernel k\nfunc any {\n  %a = iconst 1 : i32\n"),
            "4:1: expected `}`, found end of file"
        );
        assert_eq!(
            err("kernel k\nfunc any {\n  %a = frob 1 : i32\n}"),
            "3:8: unknown op `frob`"
        );
        assert_eq!(err("kernel k\ninput x: f32[N]\n"), "2:14: unknown dim `N`");
        assert_eq!(
            err("kernel k\nfunc any {\n  %a = iconst 1 : i32 $\n}"),
            "3:23: unexpected character `$`"
        );
    }

    #[test]
    fn no_panics_on_hostile_input() {
        let deep = format!(
            "kernel k\nfunc any {{\n%c = iconst 0 : i32\n{}",
            (0..200)
                .map(|n| format!("for %i{n} in %c..%c {{\n"))
                .collect::<String>()
        );
        assert!(err(&deep).contains("nested deeper"), "{}", err(&deep));
        let big = "kernel k\ninput x: f32[4294967296, 4294967296, 16]\nfunc any {\n  %c = iconst 0 : i32\n  %t = load x[.., .., ..] : f32[4294967296, 4294967296, 16]\n}\n";
        assert!(err(big).contains("too large"), "{}", err(big));
        for text in [
            "",
            "kernel",
            "kernel k\nfunc",
            "kernel k\nfunc any {\n  %x = iconst 99999999999999999999 : i32\n}",
            "kernel k\nfunc any {\n  %x = fconst f32 0x10 : f32\n}",
            "kernel k\nfunc any {\n  %x = iconst -9223372036854775808 : i32\n  %y = reshape %x to [] : i32\n}",
            "kernel k\nfunc any {\n  %",
            "kernel k\nfunc vector sub_blocks 99999999999 {\n}",
        ] {
            let _ = parse(text);
        }
    }
}
