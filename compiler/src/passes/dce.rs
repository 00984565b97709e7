//! Dead-code elimination for passes: [`remove_dead`].
//!
//! Not a pipeline pass: a utility passes call after a rewrite. It is a
//! mark-and-sweep over the whole kernel:
//!
//! - roots are the effects: stores, atomic adds, flags, and every
//!   `parallel` (the grid itself);
//! - a live instruction makes its operands live and keeps the loops
//!   enclosing it (and their bounds);
//! - a `for` carried slot `i` is live when result `i` or body parameter
//!   `1 + i` is used by something live; a live slot keeps its `init` and its
//!   `yield` operand;
//! - the sweep deletes dead instructions from their blocks (recursively into
//!   loop bodies) and removes dead carried slots (init, parameter, yield
//!   operand and result together), renumbering the `def` of the values that
//!   remain. Removed values stay in the arena, unreferenced.
//!
//! ```text
//! %m, %n = for %j in %c0..%N carry(%a: f32 = %z, %b: f32 = %z) : f32, f32 {
//!   %a2 = add %a, %a : f32
//!   %b2 = add %b, %b : f32          // feeds only its own carried slot
//!   yield %a2, %b2
//! }
//! store out[%c0], %m
//! ```
//! becomes
//! ```text
//! %m = for %j in %c0..%N carry(%a: f32 = %z) : f32 {
//!   %a2 = add %a, %a : f32
//!   yield %a2
//! }
//! store out[%c0], %m
//! ```

use rustc_hash::{FxHashMap, FxHashSet};

use crate::ir::{Block, Inst, InstKind, Kernel, Value, ValueDef};

enum Work {
    Inst(Inst),
    Value(Value),
    Slot(Inst, usize),
}

struct Marker<'k> {
    k: &'k Kernel,
    /// Loop body → the loop instruction owning it.
    owner: FxHashMap<Block, Inst>,
    /// Instruction → the block it sits in.
    parent: FxHashMap<Inst, Block>,
    insts: FxHashSet<Inst>,
    values: FxHashSet<Value>,
    slots: FxHashSet<(Inst, usize)>,
    work: Vec<Work>,
}

impl Marker<'_> {
    fn index(&mut self, block: Block) {
        let Some(bd) = self.k.blocks.get(block) else {
            return;
        };
        for &i in &bd.insts {
            self.parent.insert(i, block);
            if let Some(body) = self.k.insts.get(i).and_then(|d| d.kind.body())
                && self.owner.insert(body, i).is_none()
            {
                self.index(body);
            }
        }
    }

    fn run(&mut self) {
        while let Some(w) = self.work.pop() {
            match w {
                Work::Inst(i) => self.inst(i),
                Work::Value(v) => self.value(v),
                Work::Slot(f, s) => self.slot(f, s),
            }
        }
    }

    fn inst(&mut self, i: Inst) {
        if !self.insts.insert(i) {
            return;
        }
        let Some(data) = self.k.insts.get(i) else {
            return;
        };
        match &data.kind {
            // Carried values become live slot by slot; a yield only matters
            // through its slots.
            InstKind::For { lo, hi, .. } => {
                self.work.push(Work::Value(*lo));
                self.work.push(Work::Value(*hi));
            }
            InstKind::Yield(_) => {}
            kind => kind.for_each_operand(|v| self.work.push(Work::Value(v))),
        }
        // The loops around a live instruction stay, and so does the yield
        // of a live `for` (it closes the body).
        if let Some(&loop_inst) = self.parent.get(&i).and_then(|b| self.owner.get(b)) {
            self.work.push(Work::Inst(loop_inst));
        }
        if let InstKind::For { body, .. } = &data.kind
            && let Some(&y) = self.k.blocks.get(*body).and_then(|b| b.insts.last())
        {
            self.work.push(Work::Inst(y));
        }
    }

    fn value(&mut self, v: Value) {
        if !self.values.insert(v) {
            return;
        }
        let Some(vd) = self.k.values.get(v) else {
            return;
        };
        match vd.def {
            ValueDef::Result(i, n) => {
                if matches!(
                    self.k.insts.get(i).map(|d| &d.kind),
                    Some(InstKind::For { .. })
                ) {
                    self.work.push(Work::Slot(i, n as usize));
                }
                self.work.push(Work::Inst(i));
            }
            ValueDef::Param(b, n) => {
                if let Some(&l) = self.owner.get(&b) {
                    if n > 0
                        && matches!(
                            self.k.insts.get(l).map(|d| &d.kind),
                            Some(InstKind::For { .. })
                        )
                    {
                        self.work.push(Work::Slot(l, n as usize - 1));
                    }
                    self.work.push(Work::Inst(l));
                }
            }
        }
    }

    fn slot(&mut self, f: Inst, s: usize) {
        if !self.slots.insert((f, s)) {
            return;
        }
        let Some(InstKind::For { init, body, .. }) = self.k.insts.get(f).map(|d| &d.kind) else {
            return;
        };
        if let Some(&v) = init.get(s) {
            self.work.push(Work::Value(v));
        }
        let y = self.k.blocks.get(*body).and_then(|b| b.insts.last());
        if let Some(InstKind::Yield(vs)) = y.and_then(|y| self.k.insts.get(*y)).map(|d| &d.kind)
            && let Some(&v) = vs.get(s)
        {
            self.work.push(Work::Value(v));
        }
    }
}

/// Deletes side-effect-free instructions whose results are unused, and
/// loop-carried values nothing live uses, everywhere in `k` (see the module
/// docs). Expects verified IR; leaves verified IR.
pub fn remove_dead(k: &mut Kernel) {
    let kr: &Kernel = k;
    let mut m = Marker {
        k: kr,
        owner: FxHashMap::default(),
        parent: FxHashMap::default(),
        insts: FxHashSet::default(),
        values: FxHashSet::default(),
        slots: FxHashSet::default(),
        work: Vec::new(),
    };
    for f in &kr.funcs {
        m.index(f.body);
    }
    let roots: Vec<Inst> = m
        .parent
        .keys()
        .copied()
        .filter(|&i| {
            kr.insts.get(i).is_some_and(|d| {
                d.kind.has_effect() && !matches!(d.kind, InstKind::For { .. } | InstKind::Yield(_))
            })
        })
        .collect();
    m.work.extend(roots.into_iter().map(Work::Inst));
    m.run();
    let (live, slots) = (m.insts, m.slots);
    let bodies: Vec<Block> = k.funcs.iter().map(|f| f.body).collect();
    for b in bodies {
        sweep(k, b, &live, &slots);
    }
}

fn sweep(k: &mut Kernel, block: Block, live: &FxHashSet<Inst>, slots: &FxHashSet<(Inst, usize)>) {
    let Some(bd) = k.blocks.get(block) else {
        return;
    };
    let kept: Vec<Inst> = bd
        .insts
        .iter()
        .copied()
        .filter(|i| live.contains(i))
        .collect();
    k.blocks[block].insts = kept.clone();
    for i in kept {
        let Some(body) = k.insts.get(i).and_then(|d| d.kind.body()) else {
            continue;
        };
        if matches!(k.insts[i].kind, InstKind::For { .. }) {
            prune_slots(k, i, body, slots);
        }
        sweep(k, body, live, slots);
    }
}

/// Removes the dead carried slots of `for` instruction `f`.
fn prune_slots(k: &mut Kernel, f: Inst, body: Block, slots: &FxHashSet<(Inst, usize)>) {
    let n = k.insts[f].results.len();
    let keep: Vec<bool> = (0..n).map(|s| slots.contains(&(f, s))).collect();
    if keep.iter().all(|&x| x) {
        return;
    }
    let filter = |xs: &[Value]| -> Vec<Value> {
        xs.iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(v, _)| *v)
            .collect()
    };
    if let InstKind::For { init, .. } = &mut k.insts[f].kind
        && init.len() == n
    {
        *init = filter(init);
    }
    let results = filter(&k.insts[f].results);
    k.insts[f].results = results.clone();
    for (idx, r) in results.into_iter().enumerate() {
        k.values[r].def = ValueDef::Result(f, idx as u32);
    }
    if let Some(bd) = k.blocks.get(body)
        && bd.params.len() == n + 1
    {
        let mut params = vec![bd.params[0]];
        params.extend(filter(&bd.params[1..]));
        for (idx, &p) in params.iter().enumerate() {
            k.values[p].def = ValueDef::Param(body, idx as u32);
        }
        k.blocks[body].params = params;
    }
    let y = k.blocks.get(body).and_then(|b| b.insts.last().copied());
    if let Some(y) = y
        && let InstKind::Yield(vs) = &mut k.insts[y].kind
        && vs.len() == n
    {
        *vs = filter(vs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{parse, print, verify};

    fn dce(text: &str) -> String {
        let mut k = parse(text).unwrap();
        verify(&k).unwrap();
        remove_dead(&mut k);
        verify(&k).unwrap_or_else(|e| panic!("{e}\n{}", print(&k)));
        print(&k)
    }

    #[test]
    fn removes_dead_values_and_carried_slots() {
        let before = "kernel k
dim N
output out: f32[1]

func any {
  %c0 = iconst 0 : i32
  %N = dim N : i32
  %z = fconst f32 0.0 : f32
  %unused = add %z, %z : f32
  %m, %n = for %j in %c0..%N carry(%a: f32 = %z, %b: f32 = %z) : f32, f32 {
    %a2 = add %a, %a : f32
    %b2 = add %b, %b : f32
    %dead = mul %a2, %a2 : f32
    yield %a2, %b2
  }
  for %i in %c0..%N {
    %x = add %z, %z : f32
    yield
  }
  store out[%c0], %m
}
";
        assert_eq!(
            dce(before),
            "kernel k
dim N
output out: f32[1]

func any {
  %c0 = iconst 0 : i32
  %N = dim N : i32
  %z = fconst f32 0.0 : f32
  %m = for %j in %c0..%N carry(%a: f32 = %z) : f32 {
    %a2 = add %a, %a : f32
    yield %a2
  }
  store out[%c0], %m
}
"
        );
    }

    #[test]
    fn keeps_effects_inside_loops_and_slots_they_use() {
        let text = "kernel k
dim N
output out: f32[1]

func cube {
  %c0 = iconst 0 : i32
  %N = dim N : i32
  %z = fconst f32 0.0 : f32
  %m = for %j in %c0..%N carry(%a: f32 = %z) : f32 {
    %a2 = add %a, %a : f32
    store out[%c0], %a
    set_flag 1
    yield %a2
  }
}

func vector {
  wait_flag 1
}
";
        assert_eq!(dce(text), text);
    }
}
