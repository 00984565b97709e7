//! The text form of the tile IR: [`print()`] (also `impl Display for Kernel`).
//!
//! The form is what `amlac compile --print-after <pass>` shows, what
//! snapshots store and what [`super::parse()`] reads back. It is deterministic
//! and never shows arena indices:
//!
//! - values print as `%name` from their source name, uniquified in print
//!   order (`%m`, `%m.1`, `%m.2`…) within each func; unnamed values print
//!   as `%0`, `%1`… in print order; names that are not identifiers are
//!   sanitised (`[A-Za-z_][A-Za-z0-9_]*` plus `.N` suffixes);
//! - every op that produces values prints their types after `:`, with the
//!   buffer (`l1`, `ub`…, omitted for `any`) and the byte offset from
//!   [`super::Kernel::offsets`] as `@0x..` when plan-memory set one;
//! - floats print in Rust's shortest round-trip form (`0.1`, `1e-7`, `inf`,
//!   `-inf`, `NaN`), so print → parse → print is the identity;
//! - instruction spans are not printed; `//` starts a comment in the parser.
//!
//! ```text
//! kernel mla_decode
//! dim B = 4
//! dim N
//! input q: bf16[B, 128, 576]
//! input kv: bf16[B, N, 576]
//! output out: f32[B, 128, 576]
//!
//! func cube {
//!   %B = dim B : i32
//!   %N = dim N : i32
//!   %c0 = iconst 0 : i32
//!   %zero = fconst f32 0.0 : f32
//!   parallel %b in %c0..%B {
//!     %qt = load q[%b, .., ..] : bf16[128, 576] l1@0x0
//!     %acc = broadcast %zero to [128, 128] : f32[128, 128] l0c@0x0
//!     %acc.1 = for %j in %c0..%N step 128 carry(%a: f32[128, 128] l0c@0x0 = %acc) : f32[128, 128] l0c@0x0 {
//!       %k = load kv[%b, %j+:128, ..] : bf16[128, 576]
//!       %s = matmul %qt, %k nk acc %a : f32[128, 128]
//!       yield %s
//!     }
//!     wait_flag 1
//!   }
//! }
//! ```
//!
//! Op syntax, one per line (operands in [`super::InstKind`] field order):
//! `iconst 5`, `fconst f32 0.5`, `dim N`, `sub_block`, `load t[ix]`,
//! `store t[ix], %v`, `atomic_add t[ix], %v`, `atomic_exp_add t[ix], %n`,
//! `extract %t[ix]`, `copy %t to l0a`, `broadcast %s to [128, 64]`,
//! `iota [128, 64] axis 1`, `exp %x` (every unary op by name), `add %a, %b`
//! (every binary op and comparison by name), `select %c, %a, %b`,
//! `rowmax %x`, `rowsum %x`, `cast %x to bf16`, `bitcast %x to i32`,
//! `reshape %x to [64, 2]`, `transpose %x`, `matmul %a, %b kn|nk [acc %c]`,
//! `set_flag 3`, `wait_flag 3`, `parallel %i in %lo..%hi [step s], … {`,
//! `for %iv in %lo..%hi [step s] [carry(%p: type = %init, …)] {`,
//! `yield %a, …`. An index `ix` is a comma list of `%i` (a point),
//! `%i+:128` (a range of 128 from `%i`) and `..` (the whole dim).
//!
//! The printer never panics, even on IR the verifier would reject (it is
//! used to quote instructions in verifier messages): a value it cannot name
//! prints as `%?v12`, a missing entity as `?`.

use std::collections::{HashMap, HashSet};
use std::fmt::{self, Write};

use super::entity::EntityRef;
use super::inst::{BLayout, Index, InstKind};
use super::types::{Dim, Space, Type};
use super::{Block, Inst, Kernel, Value};

/// The printed names of a kernel's dims, tensors and values (without the
/// `%` sigil), assigned in print order; value names are unique within a
/// func (a value can only be used in the func defining it).
#[derive(Clone, Debug, Default)]
pub struct Names {
    dims: Vec<String>,
    tensors: Vec<String>,
    values: HashMap<Value, String>,
}

/// True when `s` is a name the text form can hold as is:
/// `[A-Za-z_][A-Za-z0-9_]*` followed by any number of `.digits`.
pub fn is_printable_name(s: &str) -> bool {
    let mut parts = s.split('.');
    let head = parts.next().unwrap_or("");
    let mut chars = head.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && parts.all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn sanitize(s: &str) -> String {
    if is_printable_name(s) {
        return s.to_string();
    }
    let mut out: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if !out.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        out.insert(0, '_');
    }
    out
}

/// Hands out unique names: `base`, then `base.1`, `base.2`…
#[derive(Default)]
struct Uniquifier {
    used: HashSet<String>,
    next: HashMap<String, u32>,
}

impl Uniquifier {
    fn claim(&mut self, base: &str) -> String {
        let base = sanitize(base);
        if self.used.insert(base.clone()) {
            return base;
        }
        let n = self.next.entry(base.clone()).or_insert(1);
        loop {
            let cand = format!("{base}.{n}");
            *n += 1;
            if self.used.insert(cand.clone()) {
                return cand;
            }
        }
    }
}

impl Names {
    /// Names every dim, tensor and value reachable from the kernel's
    /// functions, in print order.
    pub fn new(k: &Kernel) -> Names {
        let mut dims = Uniquifier::default();
        let mut tensors = Uniquifier::default();
        let mut n = Names {
            dims: k.dims.values().map(|d| dims.claim(&d.name)).collect(),
            tensors: k.tensors.values().map(|t| tensors.claim(&t.name)).collect(),
            values: HashMap::new(),
        };
        let mut seen = HashSet::new();
        for f in &k.funcs {
            // Each func is its own namespace: after split, the cube and the
            // vector func both start from the source names.
            let mut namer = ValueNamer::default();
            n.name_block(k, f.body, &mut namer, &mut seen);
        }
        n
    }

    fn name_block(
        &mut self,
        k: &Kernel,
        block: Block,
        namer: &mut ValueNamer,
        seen: &mut HashSet<Block>,
    ) {
        if !seen.insert(block) {
            return;
        }
        let Some(bd) = k.blocks.get(block) else {
            return;
        };
        for &i in &bd.insts {
            let Some(id) = k.insts.get(i) else { continue };
            for &r in &id.results {
                self.name_value(k, r, namer);
            }
            if let Some(body) = id.kind.body() {
                if let Some(b) = k.blocks.get(body) {
                    for &p in &b.params {
                        self.name_value(k, p, namer);
                    }
                }
                self.name_block(k, body, namer, seen);
            }
        }
    }

    fn name_value(&mut self, k: &Kernel, v: Value, namer: &mut ValueNamer) {
        if self.values.contains_key(&v) {
            return;
        }
        let name = match k.values.get(v).and_then(|d| d.name.as_deref()) {
            Some(s) => namer.names.claim(s),
            None => loop {
                let cand = namer.unnamed.to_string();
                namer.unnamed += 1;
                if namer.names.used.insert(cand.clone()) {
                    break cand;
                }
            },
        };
        self.values.insert(v, name);
    }

    /// The printed name of `v` without the `%`, if `v` is defined in the
    /// kernel's functions.
    pub fn get(&self, v: Value) -> Option<&str> {
        self.values.get(&v).map(String::as_str)
    }

    /// `%name`, or `%?v12` for a value not defined in any function.
    pub fn value(&self, v: Value) -> String {
        match self.get(v) {
            Some(s) => format!("%{s}"),
            None => format!("%?{v}"),
        }
    }

    /// The printed name of a dim (`?` for a foreign handle).
    pub fn dim(&self, d: super::DimId) -> &str {
        self.dims.get(d.index()).map_or("?", String::as_str)
    }

    /// The printed name of a tensor (`?` for a foreign handle).
    pub fn tensor(&self, t: super::Tensor) -> &str {
        self.tensors.get(t.index()).map_or("?", String::as_str)
    }
}

#[derive(Default)]
struct ValueNamer {
    names: Uniquifier,
    unnamed: u64,
}

/// The text form of `k`: header (name, dims, tensors), then each function.
pub fn print(k: &Kernel) -> String {
    let names = Names::new(k);
    let mut out = String::new();
    let _ = write_kernel(&mut out, k, &names);
    out
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&print(self))
    }
}

/// The type of `v` with its placement: `f32[128, 512] ub@0x400`.
pub fn value_type(k: &Kernel, v: Value) -> String {
    let Some(vd) = k.values.get(v) else {
        return "?".to_string();
    };
    let mut s = vd.ty.to_string();
    if let Some(off) = k.offsets.get(v) {
        let placed = matches!(&vd.ty, Type::Tile(t) if t.space != Space::Any);
        if !placed {
            s.push(' ');
        }
        let _ = write!(s, "@{off:#x}");
    }
    s
}

/// One instruction as a single line, without indentation; a loop prints as
/// its header, without the ` {` and body. Used by the verifier to quote
/// instructions.
pub fn print_inst(k: &Kernel, names: &Names, inst: Inst) -> String {
    let mut s = String::new();
    let _ = write_inst_line(&mut s, k, names, inst);
    s
}

fn write_kernel(out: &mut String, k: &Kernel, names: &Names) -> fmt::Result {
    writeln!(out, "kernel {}", sanitize(&k.name))?;
    for (id, d) in k.dims.iter() {
        write!(out, "dim {}", names.dim(id))?;
        if let Some(v) = d.value {
            write!(out, " = {v}")?;
        }
        out.push('\n');
    }
    for (id, t) in k.tensors.iter() {
        write!(out, "{} {}: {}[", t.role.name(), names.tensor(id), t.dtype)?;
        for (i, d) in t.shape.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            match d {
                Dim::Const(n) => write!(out, "{n}")?,
                Dim::Sym(s) => out.push_str(names.dim(*s)),
            }
        }
        out.push_str("]\n");
    }
    let mut seen = HashSet::new();
    for f in &k.funcs {
        write!(out, "\nfunc {}", f.unit.name())?;
        if f.sub_blocks != 1 {
            write!(out, " sub_blocks {}", f.sub_blocks)?;
        }
        out.push_str(" {\n");
        write_block(out, k, names, f.body, 1, &mut seen)?;
        out.push_str("}\n");
    }
    Ok(())
}

fn write_block(
    out: &mut String,
    k: &Kernel,
    names: &Names,
    block: Block,
    depth: usize,
    seen: &mut HashSet<Block>,
) -> fmt::Result {
    let indent = "  ".repeat(depth);
    if !seen.insert(block) {
        return writeln!(out, "{indent}// ?{block} is printed twice");
    }
    let Some(bd) = k.blocks.get(block) else {
        return writeln!(out, "{indent}// ?{block} does not exist");
    };
    for &i in &bd.insts {
        out.push_str(&indent);
        write_inst_line(out, k, names, i)?;
        match k.insts.get(i).and_then(|d| d.kind.body()) {
            Some(body) => {
                out.push_str(" {\n");
                write_block(out, k, names, body, depth + 1, seen)?;
                writeln!(out, "{indent}}}")?;
            }
            None => out.push('\n'),
        }
    }
    Ok(())
}

fn write_list<T>(
    out: &mut String,
    items: impl IntoIterator<Item = T>,
    mut f: impl FnMut(&mut String, T) -> fmt::Result,
) -> fmt::Result {
    for (n, it) in items.into_iter().enumerate() {
        if n > 0 {
            out.push_str(", ");
        }
        f(out, it)?;
    }
    Ok(())
}

fn write_index(out: &mut String, names: &Names, index: &[Index]) -> fmt::Result {
    out.push('[');
    write_list(out, index, |out, ix| {
        match ix {
            Index::Point(v) => out.push_str(&names.value(*v)),
            Index::Range { start, len } => write!(out, "{}+:{len}", names.value(*start))?,
            Index::Full => out.push_str(".."),
        }
        Ok(())
    })?;
    out.push(']');
    Ok(())
}

fn write_shape(out: &mut String, shape: &[u64]) -> fmt::Result {
    out.push('[');
    write_list(out, shape, |out, d| write!(out, "{d}"))?;
    out.push(']');
    Ok(())
}

fn write_inst_line(out: &mut String, k: &Kernel, names: &Names, inst: Inst) -> fmt::Result {
    let Some(id) = k.insts.get(inst) else {
        return write!(out, "?{inst} (no such instruction)");
    };
    if !id.results.is_empty() {
        write_list(out, &id.results, |out, r| {
            out.push_str(&names.value(*r));
            Ok(())
        })?;
        out.push_str(" = ");
    }
    let v = |x: &Value| names.value(*x);
    let op = id.kind.opcode();
    match &id.kind {
        InstKind::IConst(n) => write!(out, "{op} {n}")?,
        InstKind::FConst(x, d) => write!(out, "{op} {d} {x:?}")?,
        InstKind::DimValue(d) => write!(out, "{op} {}", names.dim(*d))?,
        InstKind::SubBlock => out.push_str(op),
        InstKind::Load { tensor, index } => {
            write!(out, "{op} {}", names.tensor(*tensor))?;
            write_index(out, names, index)?;
        }
        InstKind::Store {
            tensor,
            index,
            value: x,
        }
        | InstKind::AtomicAdd {
            tensor,
            index,
            value: x,
        }
        | InstKind::AtomicExpAdd {
            tensor,
            index,
            n: x,
        } => {
            write!(out, "{op} {}", names.tensor(*tensor))?;
            write_index(out, names, index)?;
            write!(out, ", {}", v(x))?;
        }
        InstKind::Extract { src, index } => {
            write!(out, "{op} {}", v(src))?;
            write_index(out, names, index)?;
        }
        InstKind::Copy { src, to } => write!(out, "{op} {} to {to}", v(src))?,
        InstKind::Broadcast { src, shape } => {
            write!(out, "{op} {} to ", v(src))?;
            write_shape(out, shape)?;
        }
        InstKind::Iota { shape, axis } => {
            write!(out, "{op} ")?;
            write_shape(out, shape)?;
            write!(out, " axis {axis}")?;
        }
        InstKind::Unary(_, a) | InstKind::Reduce(_, a) | InstKind::Transpose(a) => {
            write!(out, "{op} {}", v(a))?
        }
        InstKind::Binary(_, a, b) | InstKind::Cmp(_, a, b) => {
            write!(out, "{op} {}, {}", v(a), v(b))?
        }
        InstKind::Select(c, a, b) => write!(out, "{op} {}, {}, {}", v(c), v(a), v(b))?,
        InstKind::Cast(a, d) | InstKind::Bitcast(a, d) => write!(out, "{op} {} to {d}", v(a))?,
        InstKind::Reshape(a, shape) => {
            write!(out, "{op} {} to ", v(a))?;
            write_shape(out, shape)?;
        }
        InstKind::Matmul {
            a,
            b,
            b_layout,
            acc,
        } => {
            let layout = match b_layout {
                BLayout::KN => "kn",
                BLayout::NK => "nk",
            };
            write!(out, "{op} {}, {} {layout}", v(a), v(b))?;
            if let Some(c) = acc {
                write!(out, " acc {}", v(c))?;
            }
        }
        InstKind::SetFlag(f) | InstKind::WaitFlag(f) => write!(out, "{op} {f}")?,
        InstKind::Parallel { axes, body } => {
            let params = k.blocks.get(*body).map_or(&[][..], |b| &b.params[..]);
            write!(out, "{op} ")?;
            write_list(out, axes.iter().enumerate(), |out, (n, ax)| {
                let p = params.get(n).map_or("%?".to_string(), |p| names.value(*p));
                write!(out, "{p} in {}..{}", v(&ax.lo), v(&ax.hi))?;
                if ax.step != 1 {
                    write!(out, " step {}", ax.step)?;
                }
                Ok(())
            })?;
        }
        InstKind::For {
            lo,
            hi,
            step,
            init,
            body,
        } => {
            let params = k.blocks.get(*body).map_or(&[][..], |b| &b.params[..]);
            let p = |n: usize| params.get(n).map_or("%?".to_string(), |p| names.value(*p));
            write!(out, "{op} {} in {}..{}", p(0), v(lo), v(hi))?;
            if *step != 1 {
                write!(out, " step {step}")?;
            }
            if !init.is_empty() {
                out.push_str(" carry(");
                write_list(out, init.iter().enumerate(), |out, (n, x)| {
                    let ty = params
                        .get(n + 1)
                        .map_or("?".to_string(), |q| value_type(k, *q));
                    write!(out, "{}: {ty} = {}", p(n + 1), v(x))
                })?;
                out.push(')');
            }
        }
        InstKind::Yield(vs) => {
            out.push_str(op);
            if !vs.is_empty() {
                out.push(' ');
                write_list(out, vs, |out, x| {
                    out.push_str(&v(x));
                    Ok(())
                })?;
            }
        }
    }
    if !id.results.is_empty() {
        out.push_str(" : ");
        write_list(out, &id.results, |out, r| {
            out.push_str(&value_type(k, *r));
            Ok(())
        })?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ir::{Axis, Builder, DType, DimData, Role, TensorData};

    /// A small kernel built through the builder: a grid over B, a loop with
    /// two carried values, a placed tile.
    pub(crate) fn sample() -> Kernel {
        let mut k = Kernel::new("sample");
        let b = k.dims.push(DimData {
            name: "B".into(),
            value: Some(4),
        });
        let n = k.dims.push(DimData {
            name: "N".into(),
            value: None,
        });
        let x = k.tensors.push(TensorData {
            name: "x".into(),
            dtype: DType::F32,
            shape: vec![Dim::Sym(b), Dim::Sym(n), Dim::Const(64)],
            role: Role::Input,
        });
        let out = k.tensors.push(TensorData {
            name: "out".into(),
            dtype: DType::F32,
            shape: vec![Dim::Sym(b), Dim::Const(64)],
            role: Role::Output,
        });
        let body = k.blocks.push(Default::default());
        k.funcs.push(crate::ir::Func {
            unit: crate::ir::Unit::Any,
            sub_blocks: 1,
            body,
        });
        let mut bd = Builder::at_end(&mut k, body);
        let bv = bd.named(InstKind::DimValue(b), "B").unwrap();
        let nv = bd.named(InstKind::DimValue(n), "N").unwrap();
        let c0 = bd.named(InstKind::IConst(0), "c0").unwrap();
        let grid = bd
            .parallel(
                vec![Axis {
                    lo: c0,
                    hi: bv,
                    step: 1,
                }],
                &["b"],
            )
            .unwrap();
        bd.switch_to(grid);
        let bi = bd.kernel.blocks[grid].params[0];
        let ninf = bd
            .named(InstKind::FConst(f64::NEG_INFINITY, DType::F32), "m")
            .unwrap();
        let m0 = bd
            .named(
                InstKind::Broadcast {
                    src: ninf,
                    shape: vec![8],
                },
                "m",
            )
            .unwrap();
        let z = bd.value(InstKind::FConst(0.1, DType::F32)).unwrap();
        let acc0 = bd
            .named(
                InstKind::Broadcast {
                    src: z,
                    shape: vec![64],
                },
                "acc",
            )
            .unwrap();
        let (fi, fb) = bd.for_loop(c0, nv, 8, vec![m0, acc0], "j").unwrap();
        bd.switch_to(fb);
        let j = bd.kernel.blocks[fb].params[0];
        let m = bd.kernel.blocks[fb].params[1];
        let acc = bd.kernel.blocks[fb].params[2];
        let t = bd
            .named(
                InstKind::Load {
                    tensor: x,
                    index: vec![
                        Index::Point(bi),
                        Index::Range { start: j, len: 8 },
                        Index::Full,
                    ],
                },
                "t",
            )
            .unwrap();
        let rm = bd
            .value(InstKind::Reduce(crate::ir::ReduceOp::Max, t))
            .unwrap();
        let m2 = bd
            .named(InstKind::Binary(crate::ir::BinaryOp::Max, m, rm), "m")
            .unwrap();
        bd.ins(InstKind::Yield(vec![m2, acc])).unwrap();
        bd.switch_to(grid);
        let acc_final = bd.kernel.insts[fi].results[1];
        bd.ins(InstKind::Store {
            tensor: out,
            index: vec![Index::Point(bi), Index::Full],
            value: acc_final,
        })
        .unwrap();
        k.values[t].ty = k.values[t].ty.with_space(Space::Ub);
        k.offsets.set(t, Some(0x200));
        k
    }

    #[test]
    fn prints_sample() {
        let k = sample();
        let text = print(&k);
        assert_eq!(
            text,
            "kernel sample
dim B = 4
dim N
input x: f32[B, N, 64]
output out: f32[B, 64]

func any {
  %B = dim B : i32
  %N = dim N : i32
  %c0 = iconst 0 : i32
  parallel %b in %c0..%B {
    %m = fconst f32 -inf : f32
    %m.1 = broadcast %m to [8] : f32[8]
    %0 = fconst f32 0.1 : f32
    %acc = broadcast %0 to [64] : f32[64]
    %m.2, %acc.1 = for %j in %c0..%N step 8 carry(%m.3: f32[8] = %m.1, %acc.2: f32[64] = %acc) : f32[8], f32[64] {
      %t = load x[%b, %j+:8, ..] : f32[8, 64] ub@0x200
      %1 = rowmax %t : f32[8]
      %m.4 = max %m.3, %1 : f32[8]
      yield %m.4, %acc.2
    }
    store out[%b, ..], %acc.1
  }
}
"
        );
        assert_eq!(format!("{k}"), text);
    }

    #[test]
    fn names_are_sanitised_and_unique() {
        assert!(is_printable_name("m.1"));
        assert!(is_printable_name("_x9"));
        assert!(!is_printable_name("9x"));
        assert!(!is_printable_name("m."));
        assert!(!is_printable_name("a-b"));
        assert_eq!(sanitize("a-b"), "a_b");
        assert_eq!(sanitize("9x"), "_9x");
        assert_eq!(sanitize(""), "_");
        let mut u = Uniquifier::default();
        let got: Vec<String> = ["m.1", "m", "m", "m"].iter().map(|s| u.claim(s)).collect();
        assert_eq!(got, ["m.1", "m", "m.2", "m.3"]);
    }

    #[test]
    fn never_panics_on_broken_ir() {
        let mut k = sample();
        let inst = k.insts.keys().last().unwrap();
        k.insts[inst].kind.map_operands(|_| Value::new(10_000));
        let grid_body = k.funcs[0].body;
        k.blocks[grid_body].insts.push(Inst::new(99_999));
        let text = print(&k);
        assert!(text.contains("store out[%?v10000, ..], %?v10000"), "{text}");
        assert!(text.contains("?inst99999 (no such instruction)"), "{text}");
    }
}
