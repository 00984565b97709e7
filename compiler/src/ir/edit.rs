//! Structural edits shared by passes: finding an instruction's position,
//! removing a carried value from a `for`, deleting dead instructions.
//!
//! Every edit keeps the kernel's invariants (SSA, block ownership, the
//! result/parameter numbering in [`super::ValueDef`]).

use super::{Block, Inst, InstKind, Kernel, Value, ValueDef};

impl Kernel {
    /// The block holding `inst` and its position there, searching the
    /// blocks nested in `root`.
    pub fn position(&self, root: Block, inst: Inst) -> Option<(Block, usize)> {
        for (pos, &i) in self.blocks[root].insts.iter().enumerate() {
            if i == inst {
                return Some((root, pos));
            }
            if let Some(b) = self.insts[i].kind.body()
                && let Some(found) = self.position(b, inst)
            {
                return Some(found);
            }
        }
        None
    }

    /// Removes carried value `i` from the `for` instruction `for_inst`: its
    /// init operand, its body parameter, its `yield` operand and its result.
    /// The caller must first have replaced every use of that parameter and
    /// result.
    pub fn remove_carried(&mut self, for_inst: Inst, i: usize) {
        let InstKind::For { init, body, .. } = &mut self.insts[for_inst].kind else {
            return;
        };
        let body = *body;
        if i >= init.len() {
            return;
        }
        init.remove(i);
        self.blocks[body].params.remove(i + 1);
        for (n, &p) in self.blocks[body].params.iter().enumerate() {
            self.values[p].def = ValueDef::Param(body, n as u32);
        }
        if let Some(&last) = self.blocks[body].insts.last()
            && let InstKind::Yield(vs) = &mut self.insts[last].kind
            && i < vs.len()
        {
            vs.remove(i);
        }
        self.insts[for_inst].results.remove(i);
        for (n, &r) in self.insts[for_inst].results.clone().iter().enumerate() {
            self.values[r].def = ValueDef::Result(for_inst, n as u32);
        }
    }

    /// Counts the uses of every value in the instructions nested in `root`.
    pub fn use_counts(&self, root: Block) -> Vec<u32> {
        let mut counts = vec![0u32; self.values.len()];
        self.walk(root, &mut |i| {
            self.insts[i]
                .kind
                .for_each_operand(|v| counts[v_index(v)] += 1);
        });
        counts
    }

    /// Deletes, repeatedly, every instruction under `root` without effects
    /// whose results are all unused; `for` loops are kept (their carried
    /// values are not pruned here).
    pub fn remove_dead_insts(&mut self, root: Block) {
        loop {
            let counts = self.use_counts(root);
            let mut removed = false;
            let mut blocks = vec![root];
            while let Some(b) = blocks.pop() {
                let insts = self.blocks[b].insts.clone();
                let keep: Vec<Inst> = insts
                    .iter()
                    .copied()
                    .filter(|&i| {
                        let d = &self.insts[i];
                        d.kind.has_effect() || d.results.iter().any(|&r| counts[v_index(r)] > 0)
                    })
                    .collect();
                removed |= keep.len() != insts.len();
                for &i in &keep {
                    if let Some(body) = self.insts[i].kind.body() {
                        blocks.push(body);
                    }
                }
                self.blocks[b].insts = keep;
            }
            if !removed {
                return;
            }
        }
    }
}

fn v_index(v: Value) -> usize {
    use super::EntityRef;
    v.index()
}
