//! Step 2 of `plan-memory`: coalescing, grouping tiles into slots that
//! share one offset (loop-carried tiles, accumulators, in-place element-wise
//! ops), or listing the copies needed first.

use super::live_ranges::{Lin, View};
use super::*;

#[derive(Default)]
pub(super) struct Slots {
    pub(super) parent: FxHashMap<Value, Value>,
    /// Every value unioned into a representative's slot (representative
    /// included), so that [`try_join`] compares two slots' members without
    /// scanning every value (which made coalescing quadratic in the kernel).
    group: FxHashMap<Value, Vec<Value>>,
}

impl Slots {
    pub(super) fn find(&mut self, v: Value) -> Value {
        let mut r = v;
        while let Some(&p) = self.parent.get(&r) {
            if p == r {
                break;
            }
            r = p;
        }
        // Path compression.
        let mut c = v;
        while c != r {
            let next = self.parent.get(&c).copied().unwrap_or(r);
            self.parent.insert(c, r);
            c = next;
        }
        r
    }

    pub(super) fn union(&mut self, a: Value, b: Value) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            // Keep the earlier-created value as representative.
            let (keep, other) = if ra < rb { (ra, rb) } else { (rb, ra) };
            self.parent.insert(other, keep);
            let moved = self.group.remove(&other).unwrap_or_else(|| vec![other]);
            self.group
                .entry(keep)
                .or_insert_with(|| vec![keep])
                .extend(moved);
        }
    }

    /// The members of the slot whose representative is `root`.
    fn group_of(&self, root: Value) -> Vec<Value> {
        self.group.get(&root).cloned().unwrap_or_else(|| vec![root])
    }

    pub(super) fn members(&mut self, vals: &[Value]) -> FxHashMap<Value, Vec<Value>> {
        let mut m: FxHashMap<Value, Vec<Value>> = FxHashMap::default();
        for &v in vals {
            let r = self.find(v);
            m.entry(r).or_default().push(v);
        }
        m
    }
}

/// A copy this pass must insert so that two values can share a slot.
pub(super) enum Fixup {
    /// Copy init `idx` of a `for` before the loop.
    Init(Inst, usize),
    /// Copy yielded value `idx` of a `yield` before it.
    Yield(Inst, usize),
    /// Copy the accumulator of a matmul before it.
    Acc(Inst),
}

/// True when the instruction at `pos` may write its result over an operand
/// whose last use it is: loop entry, in-place accumulation, and element-wise
/// ops whose operand and result elements have one size.
pub(super) fn handoff_ok(k: &Kernel, lin: &Lin, pos: u32) -> bool {
    let Some(&i) = lin.at.get(&pos) else {
        return false;
    };
    let kind = &k.insts[i].kind;
    match kind {
        InstKind::For { .. } | InstKind::Matmul { acc: Some(_), .. } => true,
        InstKind::Unary(..)
        | InstKind::Binary(..)
        | InstKind::Select(..)
        | InstKind::Bitcast(..) => {
            let Some(&r) = k.insts[i].results.first() else {
                return false;
            };
            let rt = k.ty(r);
            let mut ok = true;
            kind.for_each_operand(|v| {
                let t = k.ty(v);
                if t.as_tile().is_some()
                    && (t.shape() != rt.shape() || t.dtype().bytes() != rt.dtype().bytes())
                {
                    ok = false;
                }
            });
            ok
        }
        _ => false,
    }
}

pub(super) struct SlotPlan {
    pub(super) slots: Slots,
    /// Loops each slot is carried through: `(start, end)` positions.
    pub(super) carried: Vec<(Value, u32, u32)>,
}

/// Tries to put `x` into the slot of `y`; false when their live ranges
/// conflict (or `x` is a view, or they are in different buffers).
pub(super) fn try_join(
    k: &Kernel,
    lin: &Lin,
    ranges: &FxHashMap<Value, (u32, u32)>,
    views: &FxHashMap<Value, View>,
    slots: &mut Slots,
    x: Value,
    y: Value,
) -> bool {
    if views.contains_key(&x) || views.contains_key(&y) {
        return false;
    }
    let space = |v: Value| k.ty(v).as_tile().map(|t| t.space);
    if space(x) != space(y) || k.ty(x).with_space(Space::Any) != k.ty(y).with_space(Space::Any) {
        return false;
    }
    let (gx, gy) = (slots.find(x), slots.find(y));
    if gx == gy {
        return true;
    }
    let ranged = |g: Vec<Value>| -> Vec<Value> {
        g.into_iter().filter(|v| ranges.contains_key(v)).collect()
    };
    let mx = ranged(slots.group_of(gx));
    let my = ranged(slots.group_of(gy));
    for &a in &mx {
        for &b in &my {
            let (Some(&(a0, a1)), Some(&(b0, b1))) = (ranges.get(&a), ranges.get(&b)) else {
                return false;
            };
            let disjoint = a1 < b0 || b1 < a0;
            let touching =
                (a1 == b0 && handoff_ok(k, lin, a1)) || (b1 == a0 && handoff_ok(k, lin, b1));
            if !disjoint && !touching {
                return false;
            }
        }
    }
    slots.union(x, y);
    true
}

/// Groups values into slots, or lists the copies needed first.
pub(super) fn coalesce(
    k: &Kernel,
    lin: &Lin,
    ranges: &FxHashMap<Value, (u32, u32)>,
    views: &FxHashMap<Value, View>,
) -> std::result::Result<SlotPlan, Vec<Fixup>> {
    let mut slots = Slots::default();
    let mut carried = Vec::new();
    let mut fixups = Vec::new();
    for &i in &lin.order {
        match &k.insts[i].kind {
            InstKind::For { init, body, .. } => {
                let params = &k.blocks[*body].params;
                let results = &k.insts[i].results;
                let yield_inst = k.blocks[*body].insts.last().copied();
                let yielded: Vec<Value> = match yield_inst.map(|y| &k.insts[y].kind) {
                    Some(InstKind::Yield(vs)) => vs.clone(),
                    _ => Vec::new(),
                };
                let (s, e) = (lin.pos[&i], lin.end[&i]);
                for (j, &iv) in init.iter().enumerate() {
                    let (Some(&p), Some(&r)) = (params.get(j + 1), results.get(j)) else {
                        continue;
                    };
                    if k.ty(p).as_tile().is_none() {
                        continue;
                    }
                    slots.union(p, r);
                    carried.push((p, s, e));
                    if !try_join(k, lin, ranges, views, &mut slots, iv, p) {
                        fixups.push(Fixup::Init(i, j));
                    }
                    if let (Some(&y), Some(yi)) = (yielded.get(j), yield_inst)
                        && !try_join(k, lin, ranges, views, &mut slots, y, p)
                    {
                        fixups.push(Fixup::Yield(yi, j));
                    }
                }
            }
            InstKind::Matmul { acc: Some(c), .. } => {
                let r = k.insts[i].results[0];
                if !try_join(k, lin, ranges, views, &mut slots, *c, r) {
                    fixups.push(Fixup::Acc(i));
                }
            }
            InstKind::Unary(..)
            | InstKind::Binary(..)
            | InstKind::Select(..)
            | InstKind::Bitcast(..) => {
                // In place: the result may take the slot of an operand
                // whose last use this is (same shape and element size, so
                // element i is read before it is overwritten).
                let Some(&r) = k.insts[i].results.first() else {
                    continue;
                };
                let pos = lin.pos[&i];
                let mut operands = Vec::new();
                k.insts[i].kind.for_each_operand(|v| operands.push(v));
                for x in operands {
                    let dies_here = ranges.get(&x).is_some_and(|&(_, end)| end == pos);
                    if dies_here && try_join(k, lin, ranges, views, &mut slots, r, x) {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    if fixups.is_empty() {
        Ok(SlotPlan { slots, carried })
    } else {
        Err(fixups)
    }
}
