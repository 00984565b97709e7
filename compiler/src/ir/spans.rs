//! Source spans for instructions made without one.
//!
//! Lowering gives every op it makes the span of the expression it comes
//! from, but passes make new ops (split's clones and workspace loads,
//! preload's index math, plan-memory's copies…) and not all of them copy a
//! span. A diagnostic about such an op would point at the start of the file.
//! [`fill_missing_spans`] runs after lowering and before and after every
//! pass, and gives each op without a span the span of the op it was derived
//! from, the first rule that applies winning:
//!
//! 1. a result carries a source name (`%qt` cloned into the Cube function,
//!    `%k_k0` cut from `%k`): the span of the first op whose result has that
//!    name, or whose name it extends (`k_k0` extends `k`);
//! 2. a tile operand has a span (`copy %q to l0a` → `%q`'s op), or, for a
//!    `for` or `parallel`, a bound;
//! 3. a result is used by an op with a span (index math → the `load` it
//!    feeds);
//! 4. the enclosing `for` or `parallel`.
//!
//! Example: after `split`, the Cube's `%qt = load q[%b, .., ..]` made by
//! cloning has no span; rule 1 gives it the span of `q[b]` in `let qt =
//! q[b];`, so a capacity error about `%qt` points there.

use rustc_hash::FxHashMap;

use super::{Inst, Kernel, Type, ValueDef};
use crate::ir::SrcSpan;

/// Gives every instruction of `k` without a span one derived from its
/// neighbours (see the module doc). Instructions that keep `None` have no
/// spanned op anywhere near them (a kernel built without source).
pub fn fill_missing_spans(k: &mut Kernel) {
    // The common case between passes: every instruction, reachable or not,
    // has a span already (checked without walking the blocks).
    if k.insts.keys().all(|i| k.spans[i].is_some()) {
        return;
    }
    let mut order = Vec::new();
    let mut parent: FxHashMap<Inst, Inst> = FxHashMap::default();
    for f in &k.funcs {
        collect(k, f.body, None, &mut order, &mut parent);
    }
    if order.iter().all(|&i| k.spans[i].is_some()) {
        return;
    }
    // Rule 1: names.
    let mut by_name: FxHashMap<String, SrcSpan> = FxHashMap::default();
    for &i in &order {
        if let Some(s) = k.spans[i] {
            for &r in &k.insts[i].results {
                if let Some(n) = &k.values[r].name {
                    by_name.entry(n.clone()).or_insert(s);
                }
            }
        }
    }
    let named = |k: &Kernel, i: Inst| -> Option<SrcSpan> {
        for &r in &k.insts[i].results {
            let Some(n) = &k.values[r].name else {
                continue;
            };
            // The name itself, then shorter prefixes at `_`/`.` boundaries.
            let mut cut = n.as_str();
            loop {
                if let Some(s) = by_name.get(cut) {
                    return Some(*s);
                }
                match cut.rfind(['_', '.']) {
                    Some(p) if p > 0 => cut = &cut[..p],
                    _ => break,
                }
            }
        }
        None
    };
    for &i in &order {
        if k.spans[i].is_none()
            && let Some(s) = named(k, i)
        {
            k.spans.set(i, Some(s));
        }
    }
    // Rule 2: tile operands, in execution order (operands come first).
    for &i in &order {
        if k.spans[i].is_some() {
            continue;
        }
        let mut found = None;
        // A loop or grid takes its bounds' span (`0..B`), any other op
        // only a tile operand's.
        let bounds = k.insts[i].kind.body().is_some();
        k.insts[i].kind.for_each_operand(|v| {
            if found.is_some() || !(bounds || matches!(k.values[v].ty, Type::Tile(_))) {
                return;
            }
            if let ValueDef::Result(d, _) = k.values[v].def {
                found = k.spans[d];
            }
        });
        if found.is_some() {
            k.spans.set(i, found);
        }
    }
    // Rule 3: users, latest first so that chains of index math inherit the
    // span of the op they end in.
    let mut user_span: FxHashMap<super::Value, SrcSpan> = FxHashMap::default();
    for &i in order.iter().rev() {
        let s = match k.spans[i] {
            Some(s) => Some(s),
            None => {
                let s = k.insts[i]
                    .results
                    .iter()
                    .find_map(|r| user_span.get(r).copied());
                if s.is_some() {
                    k.spans.set(i, s);
                }
                s
            }
        };
        if let Some(s) = s {
            k.insts[i].kind.for_each_operand(|v| {
                user_span.entry(v).or_insert(s);
            });
        }
    }
    // Rule 4: the enclosing loop or grid.
    for &i in &order {
        if k.spans[i].is_none() {
            let mut p = parent.get(&i).copied();
            while let Some(pi) = p {
                if let Some(s) = k.spans[pi] {
                    k.spans.set(i, Some(s));
                    break;
                }
                p = parent.get(&pi).copied();
            }
        }
    }
}

fn collect(
    k: &Kernel,
    block: super::Block,
    up: Option<Inst>,
    order: &mut Vec<Inst>,
    parent: &mut FxHashMap<Inst, Inst>,
) {
    for &i in &k.blocks[block].insts {
        order.push(i);
        if let Some(p) = up {
            parent.insert(i, p);
        }
        if let Some(b) = k.insts[i].kind.body() {
            collect(k, b, Some(i), order, parent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::parse;

    #[test]
    fn clones_copies_and_index_math_get_the_span_of_their_origin() {
        let text = "kernel k\ninput q: bf16[4, 16]\n\nfunc any {\n  %c0 = iconst 0 : i32\n  %c1 = iconst 4 : i32\n  parallel %b in %c0..%c1 {\n    %q = load q[%b, ..] : bf16[16]\n    %q.1 = load q[%b, ..] : bf16[16]\n    %q_c = copy %q to ub : bf16[16] ub\n    %x = copy %q_c to ub : bf16[16] ub\n  }\n}\n";
        let mut k = parse(text).expect("parses");
        let names = crate::ir::print::Names::new(&k);
        let by = |n: &str| {
            k.insts
                .keys()
                .find(|&i| {
                    k.insts[i]
                        .results
                        .first()
                        .is_some_and(|&r| names.get(r) == Some(n))
                })
                .expect("named inst")
        };
        let (load, clone, copy, copy2, c0) = (by("q"), by("q.1"), by("q_c"), by("x"), by("c0"));
        let s = SrcSpan { start: 5, end: 9 };
        k.spans.set(load, Some(s));
        fill_missing_spans(&mut k);
        assert_eq!(k.spans[clone], Some(s), "same name `q`");
        assert_eq!(k.spans[copy], Some(s), "name `q_c` extends `q`");
        assert_eq!(k.spans[copy2], Some(s), "tile operand");
        // The grid bounds feed the parallel, which has no span: rule 4
        // cannot help, rule 3 finds no spanned user.
        assert_eq!(k.spans[c0], None);
    }
}
