//! The verifier: [`verify`] / [`verify_with`] check every IR invariant and
//! report all violations at once.
//!
//! It runs after every pass (see `passes::Pipeline`); a failure there is a
//! compiler bug. Each [`VerifyIssue`] names the function, quotes the
//! instruction in the text form of [`super::print()`] and says what is wrong:
//!
//! ```text
//! func vector: `%s = exp %t : f32[64, 64] l0a@0x0`: tile %s is in l0a, which a vector func cannot use (ub, gm)
//! ```
//!
//! Checks:
//! - **SSA**: every value is defined once (an instruction result or a block
//!   parameter whose `def` points back at its definer) and used only where
//!   its definition dominates: earlier in the same block or in an enclosing
//!   block; a loop body's parameters are visible inside it only, a `for`'s
//!   results only after it;
//! - **ownership**: each block is the body of exactly one func or loop, each
//!   instruction sits in exactly one block;
//! - **types**: results as [`super::typing::result_types`] gives them,
//!   apart from the buffer (a `copy` result must be in its `to` buffer);
//! - **loops**: a `for` body has parameters `[i32 iv, carried…]` typed like
//!   its `init` and ends in a `yield` of values typed like the carried ones;
//!   `yield` appears nowhere else; `parallel` only at the top level of a
//!   func, at most one per func, with one `i32` parameter per axis;
//! - **units**: a lone `any` func (before split), or exactly one `cube` and
//!   one `vector` func (after); `sub_blocks` is 1 except for `vector`;
//! - **flags**: ids below [`VerifyConfig::flag_ids`]; flags only in `cube`
//!   and `vector` funcs; every `wait_flag id` has a `set_flag id` in the
//!   other unit;
//! - **buffers** (placed tiles only; `any` is always allowed): a `cube` func
//!   uses gm, l1, l0a, l0b, l0c, and a placed matmul reads `a` from l0a,
//!   `b` from l0b and writes (and accumulates) in l0c; a `vector` func uses
//!   ub and gm (a gm tile there is streamed through UB by codegen);
//! - **offsets**: only on tiles in a local buffer, and within
//!   [`VerifyConfig::capacity`] when one is given;
//! - **header**: dim and tensor names unique, tensor dims exist, no `bool`
//!   tensors.

use rustc_hash::{FxHashMap, FxHashSet};
use std::fmt;

use super::inst::{InstKind, Unit};
use super::print::{Names, print_inst};
use super::types::{DType, Dim, Space, Type};
use super::typing::{result_types, same_modulo_space};
use super::{Block, Inst, Kernel, Value, ValueDef};
use crate::target::{Buffers, Target};

/// What the verifier checks beyond the IR's own rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyConfig {
    /// Local buffer capacities in bytes; `None` skips the
    /// `offset + bytes <= capacity` check.
    pub capacity: Option<Buffers>,
    /// Number of cross-core flag ids: every id must be below it.
    pub flag_ids: u32,
}

impl Default for VerifyConfig {
    /// Unlimited buffers, the default target's flag count.
    fn default() -> Self {
        VerifyConfig {
            capacity: None,
            flag_ids: Target::ascend910b().flags.cross_core_ids,
        }
    }
}

impl VerifyConfig {
    /// The capacities and flag count of `target`.
    pub fn for_target(target: &Target) -> Self {
        VerifyConfig {
            capacity: Some(target.buffers),
            flag_ids: target.flags.cross_core_ids,
        }
    }
}

/// One violated invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyIssue {
    /// The function (`any`, `cube`, `vector`), or `kernel` for the header
    /// and the set of functions.
    pub func: String,
    /// The offending instruction in text form, when there is one.
    pub inst: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for VerifyIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.func == "kernel" {
            f.write_str("kernel")?;
        } else {
            write!(f, "func {}", self.func)?;
        }
        if let Some(i) = &self.inst {
            write!(f, ": `{i}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every invariant a kernel violates (never empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyError {
    /// The violations, in print order.
    pub errors: Vec<VerifyIssue>,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, e) in self.errors.iter().enumerate() {
            if n > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for VerifyError {}

/// Checks every invariant with the default [`VerifyConfig`].
pub fn verify(k: &Kernel) -> Result<(), VerifyError> {
    verify_with(k, &VerifyConfig::default())
}

/// Checks every invariant, with buffer capacities and the flag count from
/// `cfg`.
pub fn verify_with(k: &Kernel, cfg: &VerifyConfig) -> Result<(), VerifyError> {
    let mut v = Verifier {
        k,
        cfg,
        names: std::cell::OnceCell::new(),
        errors: Vec::new(),
        defined: FxHashSet::default(),
        visible: FxHashSet::default(),
        scope: Vec::new(),
        owned: FxHashSet::default(),
        placed_insts: FxHashSet::default(),
        func: String::new(),
        unit: Unit::Any,
        parallels: 0,
        sets: FxHashMap::default(),
        waits: Vec::new(),
    };
    v.header();
    v.funcs();
    if v.errors.is_empty() {
        Ok(())
    } else {
        Err(VerifyError { errors: v.errors })
    }
}

struct Verifier<'a> {
    k: &'a Kernel,
    cfg: &'a VerifyConfig,
    /// Value names for messages, built on the first message that needs one.
    names: std::cell::OnceCell<Names>,
    errors: Vec<VerifyIssue>,
    /// Values defined so far (anywhere).
    defined: FxHashSet<Value>,
    /// Values visible at the current point.
    visible: FxHashSet<Value>,
    /// Values made visible, in order, to pop when a block ends.
    scope: Vec<Value>,
    /// Blocks already claimed by a func or loop.
    owned: FxHashSet<Block>,
    /// Instructions already seen in some block.
    placed_insts: FxHashSet<Inst>,
    func: String,
    unit: Unit,
    parallels: u32,
    /// Flag ids set per unit.
    sets: FxHashMap<Unit, FxHashSet<u32>>,
    /// `(unit, id, func label, inst text)` of every wait.
    waits: Vec<(Unit, u32, String, Inst)>,
}

fn other(u: Unit) -> Unit {
    match u {
        Unit::Cube => Unit::Vector,
        Unit::Vector => Unit::Cube,
        Unit::Any => Unit::Any,
    }
}

impl Verifier<'_> {
    fn names(&self) -> &Names {
        self.names.get_or_init(|| Names::new(self.k))
    }

    fn kernel_error(&mut self, message: String) {
        self.errors.push(VerifyIssue {
            func: "kernel".into(),
            inst: None,
            message,
        });
    }

    fn error(&mut self, inst: Option<Inst>, message: String) {
        self.errors.push(VerifyIssue {
            func: self.func.clone(),
            inst: inst.map(|i| print_inst(self.k, self.names(), i)),
            message,
        });
    }

    fn header(&mut self) {
        let k = self.k;
        let mut seen = FxHashSet::default();
        for d in k.dims.values() {
            if !seen.insert(d.name.as_str()) {
                self.kernel_error(format!("dim `{}` is declared twice", d.name));
            }
        }
        let mut seen = FxHashSet::default();
        for t in k.tensors.values() {
            if !seen.insert(t.name.as_str()) {
                self.kernel_error(format!("tensor `{}` is declared twice", t.name));
            }
            if t.dtype == DType::Bool {
                self.kernel_error(format!("tensor `{}` has dtype bool", t.name));
            }
            for d in &t.shape {
                if let Dim::Sym(id) = d
                    && !k.dims.is_valid(*id)
                {
                    self.kernel_error(format!("tensor `{}` uses a missing dim {id}", t.name));
                }
            }
        }
    }

    fn funcs(&mut self) {
        let k = self.k;
        let count = |u: Unit| k.funcs.iter().filter(|f| f.unit == u).count();
        let (any, cube, vector) = (count(Unit::Any), count(Unit::Cube), count(Unit::Vector));
        if k.funcs.is_empty() {
            self.kernel_error("the kernel has no func".into());
        } else if any > 0 && k.funcs.len() > 1 {
            self.kernel_error("an `any` func must be the only func (before split)".into());
        } else if any == 0 && (cube != 1 || vector != 1) {
            self.kernel_error(format!(
                "after split there must be exactly one cube and one vector func, found {cube} cube and {vector} vector"
            ));
        }
        for (n, f) in k.funcs.iter().enumerate() {
            let dup = k.funcs[..n].iter().any(|g| g.unit == f.unit);
            self.func = if dup {
                format!("{}#{n}", f.unit.name())
            } else {
                f.unit.name().to_string()
            };
            self.unit = f.unit;
            self.parallels = 0;
            if f.unit == Unit::Vector {
                if f.sub_blocks == 0 {
                    self.error(None, "a vector func needs at least one sub-block".into());
                }
            } else if f.sub_blocks != 1 {
                self.error(
                    None,
                    format!(
                        "a {} func has exactly one sub-block, not {}",
                        f.unit.name(),
                        f.sub_blocks
                    ),
                );
            }
            if !self.claim(None, f.body) {
                continue;
            }
            if !k.blocks[f.body].params.is_empty() {
                self.error(None, "a func body has no parameters".into());
            }
            self.block(f.body, 0, None);
        }
        let waits = std::mem::take(&mut self.waits);
        for (unit, id, func, inst) in waits {
            let o = other(unit);
            if !self.sets.get(&o).is_some_and(|s| s.contains(&id)) {
                self.errors.push(VerifyIssue {
                    func,
                    inst: Some(print_inst(self.k, self.names(), inst)),
                    message: format!("no `set_flag {id}` in the {} func", o.name()),
                });
            }
        }
    }

    /// Claims `block` for one owner; false (with an error) when it does not
    /// exist or is owned already.
    fn claim(&mut self, by: Option<Inst>, block: Block) -> bool {
        if !self.k.blocks.is_valid(block) {
            self.error(by, format!("body {block} does not exist"));
            return false;
        }
        if !self.owned.insert(block) {
            self.error(by, format!("body {block} is owned by another func or loop"));
            return false;
        }
        true
    }

    /// Makes `v` visible, checking it is defined once, by `def`.
    fn define(&mut self, at: Option<Inst>, v: Value, def: ValueDef) {
        let Some(vd) = self.k.values.get(v) else {
            self.error(at, format!("defines {v}, which does not exist"));
            return;
        };
        if vd.def != def {
            self.error(
                at,
                format!(
                    "{} records its definition as {:?}, not {def:?}",
                    self.names().value(v),
                    vd.def
                ),
            );
        }
        if !self.defined.insert(v) {
            self.error(at, format!("{} is defined twice", self.names().value(v)));
        }
        self.placement(at, v);
        if self.visible.insert(v) {
            self.scope.push(v);
        }
    }

    /// Buffer and offset rules for a defined value.
    fn placement(&mut self, at: Option<Inst>, v: Value) {
        let k = self.k;
        let ty = &k.values[v].ty;
        if let Type::Tile(t) = ty {
            let ok = match self.unit {
                Unit::Any => true,
                Unit::Cube => !matches!(t.space, Space::Ub),
                Unit::Vector => matches!(t.space, Space::Any | Space::Ub | Space::Gm),
            };
            if !ok {
                let allowed = if self.unit == Unit::Cube {
                    "gm, l1, l0a, l0b, l0c"
                } else {
                    "ub, gm"
                };
                let name = self.names().value(v);
                self.error(
                    at,
                    format!(
                        "tile {name} is in {}, which a {} func cannot use ({allowed})",
                        t.space,
                        self.unit.name()
                    ),
                );
            }
        }
        let Some(off) = *k.offsets.get(v) else {
            return;
        };
        let t = match ty {
            Type::Tile(t) if !matches!(t.space, Space::Any | Space::Gm) => t,
            _ => {
                let name = self.names().value(v);
                self.error(
                    at,
                    format!("{name} has an offset but is not a tile in a local buffer ({ty})"),
                );
                return;
            }
        };
        let Some(cap) = self.cfg.capacity else { return };
        let cap = match t.space {
            Space::L1 => cap.l1,
            Space::L0A => cap.l0a,
            Space::L0B => cap.l0b,
            Space::L0C => cap.l0c,
            Space::Ub => cap.ub,
            Space::Any | Space::Gm => return,
        };
        let bytes = t
            .shape
            .iter()
            .try_fold(t.dtype.bytes(), |a, &d| a.checked_mul(d));
        let end = bytes.and_then(|b| b.checked_add(off));
        if end.is_none_or(|e| e > cap) {
            let bytes = bytes.map_or("too many".to_string(), |b| b.to_string());
            self.error(
                at,
                format!(
                    "tile {} ({bytes} bytes at {off:#x}) does not fit in {} ({cap} bytes)",
                    self.names().value(v),
                    t.space
                ),
            );
        }
    }

    /// Checks the instructions of `block`; `depth` is the loop nesting,
    /// `in_for` the `for` whose body this is.
    fn block(&mut self, block: Block, depth: usize, in_for: Option<Inst>) {
        let k = self.k;
        let mark = self.scope.len();
        let insts = &k.blocks[block].insts;
        for (pos, &i) in insts.iter().enumerate() {
            if !k.insts.is_valid(i) {
                self.error(None, format!("instruction {i} does not exist"));
                continue;
            }
            if !self.placed_insts.insert(i) {
                self.error(Some(i), "this instruction appears twice".into());
                continue;
            }
            self.inst(i, depth, in_for, pos + 1 == insts.len());
        }
        for v in self.scope.drain(mark..) {
            self.visible.remove(&v);
        }
    }

    fn operands_ok(&mut self, i: Inst) -> bool {
        let k = self.k;
        let mut ops = Vec::new();
        k.insts[i].kind.for_each_operand(|v| {
            if !ops.contains(&v) {
                ops.push(v);
            }
        });
        let mut ok = true;
        for v in ops {
            if !k.values.is_valid(v) {
                self.error(Some(i), format!("operand {v} does not exist"));
                ok = false;
            } else if !self.visible.contains(&v) {
                let why = if self.defined.contains(&v) {
                    "is used where its definition does not dominate (it is defined in a block that does not enclose this use)"
                } else {
                    "is used before it is defined"
                };
                self.error(Some(i), format!("{} {why}", self.names().value(v)));
            }
        }
        ok
    }

    fn inst(&mut self, i: Inst, depth: usize, in_for: Option<Inst>, last: bool) {
        let k = self.k;
        let data = &k.insts[i];
        let ops_ok = self.operands_ok(i);
        if ops_ok {
            self.types(i);
        }
        match &data.kind {
            InstKind::Yield(vs) => match in_for.map(|f| &k.insts[f].kind) {
                Some(InstKind::For { body, .. }) => {
                    if !last {
                        self.error(
                            Some(i),
                            "yield must be the last instruction of its for body".into(),
                        );
                    }
                    let carried = k.blocks[*body].params.get(1..).unwrap_or(&[]);
                    if carried.len() != vs.len() {
                        self.error(
                            Some(i),
                            format!("yields {} values for {} carried", vs.len(), carried.len()),
                        );
                    } else if ops_ok {
                        for (n, (&y, &p)) in vs.iter().zip(carried).enumerate() {
                            if !same_modulo_space(k.ty(y), k.ty(p)) {
                                self.error(
                                    Some(i),
                                    format!(
                                        "yielded value {n} is {}, but the carried {} is {}",
                                        k.ty(y),
                                        self.names().value(p),
                                        k.ty(p)
                                    ),
                                );
                            }
                        }
                    }
                }
                _ => self.error(Some(i), "yield outside a for body".into()),
            },
            InstKind::SetFlag(id) | InstKind::WaitFlag(id) => {
                if *id >= self.cfg.flag_ids {
                    self.error(
                        Some(i),
                        format!("flag id {id} is not below {}", self.cfg.flag_ids),
                    );
                }
                if self.unit == Unit::Any {
                    self.error(
                        Some(i),
                        "flags exist only between the cube and vector funcs (after split)".into(),
                    );
                } else if matches!(data.kind, InstKind::SetFlag(_)) {
                    self.sets.entry(self.unit).or_default().insert(*id);
                } else {
                    self.waits.push((self.unit, *id, self.func.clone(), i));
                }
            }
            InstKind::Matmul { a, b, acc, .. } if self.unit == Unit::Cube && ops_ok => {
                let mut want = vec![(*a, Space::L0A, "operand a"), (*b, Space::L0B, "operand b")];
                if let Some(c) = acc {
                    want.push((*c, Space::L0C, "accumulator"));
                }
                for &r in &data.results {
                    want.push((r, Space::L0C, "result"));
                }
                for (v, space, what) in want {
                    if let Some(t) = k.values.get(v).and_then(|d| d.ty.as_tile())
                        && t.space != Space::Any
                        && t.space != space
                    {
                        self.error(
                            Some(i),
                            format!(
                                "matmul {what} ({}) is in {}, not {space}",
                                self.names().value(v),
                                t.space
                            ),
                        );
                    }
                }
            }
            InstKind::Parallel { axes, body } => {
                if depth > 0 {
                    self.error(
                        Some(i),
                        "parallel must be at the top level of a func".into(),
                    );
                }
                self.parallels += 1;
                if self.parallels == 2 {
                    self.error(Some(i), "a func has at most one parallel".into());
                }
                if self.claim(Some(i), *body) {
                    let params = k.blocks[*body].params.clone();
                    if params.len() != axes.len() {
                        self.error(
                            Some(i),
                            format!("{} axes but {} body parameters", axes.len(), params.len()),
                        );
                    }
                    let mark = self.scope.len();
                    for (n, &p) in params.iter().enumerate() {
                        self.param(i, *body, n, p, &Type::Scalar(DType::I32));
                    }
                    self.block(*body, depth + 1, None);
                    for v in self.scope.drain(mark..) {
                        self.visible.remove(&v);
                    }
                }
            }
            InstKind::For { init, body, .. } => self.for_loop(i, init, *body, depth),
            _ => {}
        }
        for (n, &r) in data.results.iter().enumerate() {
            self.define(Some(i), r, ValueDef::Result(i, n as u32));
        }
    }

    /// A `for`: claims its body, checks and defines its parameters, checks
    /// the body ends in `yield`, then checks the body.
    fn for_loop(&mut self, i: Inst, init: &[Value], body: Block, depth: usize) {
        let k = self.k;
        if !self.claim(Some(i), body) {
            return;
        }
        let params = k.blocks[body].params.clone();
        if params.len() != init.len() + 1 {
            self.error(
                Some(i),
                format!(
                    "{} carried values but {} body parameters (expected iv + carried)",
                    init.len(),
                    params.len()
                ),
            );
        }
        let mark = self.scope.len();
        for (n, &p) in params.iter().enumerate() {
            let want = match n {
                0 => Type::Scalar(DType::I32),
                _ => match init.get(n - 1).and_then(|v| k.values.get(*v)) {
                    Some(d) => d.ty.clone(),
                    None => k
                        .values
                        .get(p)
                        .map_or(Type::Scalar(DType::I32), |d| d.ty.clone()),
                },
            };
            self.param(i, body, n, p, &want);
        }
        let ends_in_yield = k.blocks[body]
            .insts
            .last()
            .and_then(|l| k.insts.get(*l))
            .is_some_and(|d| matches!(d.kind, InstKind::Yield(_)));
        if !ends_in_yield {
            self.error(Some(i), "for body does not end in yield".into());
        }
        self.block(body, depth + 1, Some(i));
        for v in self.scope.drain(mark..) {
            self.visible.remove(&v);
        }
    }

    /// A loop body parameter: defined by the body, typed like `want`
    /// (modulo buffer).
    fn param(&mut self, i: Inst, body: Block, n: usize, p: Value, want: &Type) {
        if let Some(d) = self.k.values.get(p)
            && !same_modulo_space(&d.ty, want)
        {
            self.error(
                Some(i),
                format!(
                    "body parameter {} is {}, expected {want}",
                    self.names().value(p),
                    d.ty
                ),
            );
        }
        self.define(Some(i), p, ValueDef::Param(body, n as u32));
    }

    /// Result types against the typing rules.
    fn types(&mut self, i: Inst) {
        let k = self.k;
        let data = &k.insts[i];
        let want = match result_types(k, &data.kind) {
            Ok(w) => w,
            Err(e) => {
                self.error(Some(i), format!("type error: {e}"));
                return;
            }
        };
        if want.len() != data.results.len() {
            self.error(
                Some(i),
                format!(
                    "{} results, but the op produces {}",
                    data.results.len(),
                    want.len()
                ),
            );
            return;
        }
        for (r, w) in data.results.iter().zip(&want) {
            let Some(rd) = k.values.get(*r) else {
                continue;
            };
            let copy_to = match &data.kind {
                InstKind::Copy { to, .. } => Some(*to),
                _ => None,
            };
            let space_ok = match (copy_to, rd.ty.as_tile()) {
                (Some(to), Some(t)) => t.space == to,
                _ => true,
            };
            if !same_modulo_space(&rd.ty, w) || !space_ok {
                self.error(
                    Some(i),
                    format!(
                        "result {} is {}, but the typing rules give {w}",
                        self.names().value(*r),
                        rd.ty
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::parse::parse;

    fn errors(text: &str, cfg: &VerifyConfig) -> String {
        let k = parse(text).unwrap_or_else(|e| panic!("{e}"));
        match verify_with(&k, cfg) {
            Ok(()) => "ok".into(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn sample_verifies() {
        let k = crate::ir::print::tests::sample();
        verify(&k).unwrap();
    }

    #[test]
    fn offsets_checked_against_capacity() {
        let text = "kernel k\ninput x: f32[64]\n\nfunc any {\n  %c = iconst 0 : i32\n  %t = load x[%c+:64] : f32[64] ub@0x2ff80\n}\n";
        assert_eq!(errors(text, &VerifyConfig::default()), "ok");
        let cfg = VerifyConfig::for_target(&Target::ascend910b());
        let ub = cfg.capacity.unwrap().ub;
        assert_eq!(
            errors(text, &cfg),
            format!(
                "func any: `%t = load x[%c+:64] : f32[64] ub@0x2ff80`: tile %t (256 bytes at 0x2ff80) does not fit in ub ({ub} bytes)"
            )
        );
    }

    #[test]
    fn scope_and_ownership() {
        // The loop-body value used after the loop.
        let text = "kernel k\n\nfunc any {\n  %c = iconst 0 : i32\n  for %i in %c..%c {\n    %x = add %i, %i : i32\n    yield\n  }\n  %y = add %x, %x : i32\n}\n";
        assert_eq!(
            errors(text, &VerifyConfig::default()),
            "func any: `%y = add %x, %x : i32`: %x is used where its definition does not dominate (it is defined in a block that does not enclose this use)"
        );
        // A block shared by two loops.
        let mut k = parse("kernel k\n\nfunc any {\n  %c = iconst 0 : i32\n  for %i in %c..%c {\n    yield\n  }\n  for %j in %c..%c {\n    yield\n  }\n}\n").unwrap();
        let body = k.funcs[0].body;
        let (l1, l2) = (k.blocks[body].insts[1], k.blocks[body].insts[2]);
        let b1 = k.insts[l1].kind.body().unwrap();
        if let InstKind::For { body, .. } = &mut k.insts[l2].kind {
            *body = b1;
        }
        let e = verify(&k).unwrap_err().to_string();
        assert!(e.contains("is owned by another func or loop"), "{e}");
    }
}
