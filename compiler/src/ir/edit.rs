//! Structural edits shared by passes: finding an instruction's position,
//! removing a carried value from a `for`, and copying instructions (with
//! their loop bodies) through a [`ValueMap`]. Dead code is removed by
//! `passes::dce::remove_dead`, the one dead-code eliminator.
//!
//! Every edit keeps the kernel's invariants (SSA, block ownership, the
//! result/parameter numbering in [`super::ValueDef`]); copies are placed
//! through the [`Builder`], so every copied result is typed again by the
//! typing rules.

use rustc_hash::FxHashMap;

use super::typing::{result_types, same_modulo_space};
use super::{Block, Builder, Inst, InstKind, Kernel, Value, ValueDef};

/// Values of a source region mapped to their copies.
pub type ValueMap = FxHashMap<Value, Value>;

/// What a copy does with an operand that is not in its [`ValueMap`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Unmapped {
    /// Keep it: it is defined outside the copied region and visible where
    /// the copy goes.
    Keep,
    /// Refuse the copy: every operand must have been mapped (e.g. copying
    /// into another function, where no value of the source is visible).
    Error,
}

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
}

impl Builder<'_> {
    /// Places a copy of `src` (with its loop body, recursively) at the
    /// builder's position and returns it. Operands are renamed through
    /// `map`; the copy's results (and the parameters of a copied body) are
    /// added to it. Value names and the source span are kept.
    ///
    /// The copy is typed by the typing rules and must get `src`'s result
    /// types up to the buffer space (which is `src`'s, kept); an operand not
    /// in `map` is kept or refused as `unmapped` says. Errors name the op.
    pub fn clone_inst(
        &mut self,
        src: Inst,
        map: &mut ValueMap,
        unmapped: Unmapped,
    ) -> Result<Inst, String> {
        let mut kind = self.kernel.kind(src).clone();
        let mut missing = None;
        kind.map_operands(|v| match map.get(&v) {
            Some(&n) => n,
            None => {
                missing.get_or_insert(v);
                v
            }
        });
        if let (Some(v), Unmapped::Error) = (missing, unmapped) {
            return Err(format!("{v} used by `{}` has no copy here", kind.opcode()));
        }
        if let Some(ob) = kind.body() {
            let nb = self.new_block();
            for p in self.kernel.blocks[ob].params.clone() {
                let ty = self.kernel.ty(p).clone();
                let name = self.kernel.values[p].name.clone();
                let np = self.kernel.add_block_param(nb, ty, name);
                map.insert(p, np);
            }
            match &mut kind {
                InstKind::For { body, .. } | InstKind::Parallel { body, .. } => *body = nb,
                _ => {}
            }
            let inner = self.kernel.blocks[ob].insts.clone();
            let mut b = Builder::at_end(self.kernel, nb);
            b.clone_insts(&inner, map, unmapped)?;
        }
        let ni = self.ins_like(src, kind)?;
        let span = *self.kernel.spans.get(src);
        if span.is_some() {
            self.kernel.spans.set(ni, span);
        }
        let results = self.kernel.insts[src].results.clone();
        for (n, &r) in results.iter().enumerate() {
            let nr = self.kernel.insts[ni].results[n];
            self.kernel.values[nr].name = self.kernel.values[r].name.clone();
            map.insert(r, nr);
        }
        Ok(ni)
    }

    /// [`Builder::clone_inst`] of every instruction of `insts`, in order.
    pub fn clone_insts(
        &mut self,
        insts: &[Inst],
        map: &mut ValueMap,
        unmapped: Unmapped,
    ) -> Result<(), String> {
        for &i in insts {
            self.clone_inst(i, map, unmapped)?;
        }
        Ok(())
    }

    /// Places `kind`, a rewrite of `src`, typed by the typing rules; its
    /// results must have `src`'s types up to the buffer space, and take
    /// `src`'s types (spaces and offsets included).
    pub fn ins_like(&mut self, src: Inst, kind: InstKind) -> Result<Inst, String> {
        let want =
            result_types(self.kernel, &kind).map_err(|e| format!("{}: {}", kind.opcode(), e.0))?;
        let had: Vec<_> = self.kernel.insts[src]
            .results
            .iter()
            .map(|&r| self.kernel.ty(r).clone())
            .collect();
        if want.len() != had.len() || want.iter().zip(&had).any(|(w, h)| !same_modulo_space(w, h)) {
            return Err(format!(
                "`{}` copied from {src} would change its result types",
                kind.opcode()
            ));
        }
        Ok(self.place(kind, had))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Index, parse, print, verify};

    const LOOP: &str = "\
kernel t
dim N
input x: f32[N, 8]
output out: f32[8]

func any {
  %c0 = iconst 0 : i32
  %N = dim N : i32
  parallel %b in %c0..%N {
    %z = fconst f32 0.0 : f32
    %acc0 = broadcast %z to [8] : f32[8]
    %acc = for %j in %c0..%N carry(%a: f32[8] = %acc0) : f32[8] {
      %r = load x[%j, ..] : f32[8]
      %a2 = add %a, %r : f32[8]
      yield %a2
    }
    store out[..], %acc
  }
}
";

    /// The parallel body, its `for` and its `store`.
    fn parts(k: &Kernel) -> (Block, Inst, Inst) {
        let par = k.blocks[k.funcs[0].body].insts[2];
        let body = k.kind(par).body().unwrap();
        let insts = &k.blocks[body].insts;
        (body, insts[2], insts[3])
    }

    #[test]
    fn a_loop_is_copied_with_its_body_and_the_copy_verifies() {
        let mut k = parse(LOOP).unwrap();
        let (body, f, store) = parts(&k);
        let pos = k.blocks[body].insts.len() - 1;
        let mut map = ValueMap::default();
        let copy = Builder::at(&mut k, body, pos)
            .clone_inst(f, &mut map, Unmapped::Keep)
            .unwrap();
        // The store now reads the copy's result; the original loop is dead.
        let old = k.insts[f].results[0];
        let new = k.insts[copy].results[0];
        k.insts[store]
            .kind
            .map_operands(|v| if v == old { new } else { v });
        k.blocks[body].insts.retain(|&i| i != f);
        verify(&k).unwrap();
        assert_eq!(print(&parse(LOOP).unwrap()), print(&k).replace(".1", ""));
        assert_ne!(k.kind(copy).body(), k.kind(f).body(), "a new body block");
    }

    #[test]
    fn an_unmapped_operand_is_refused_when_asked() {
        let mut k = parse(LOOP).unwrap();
        let (body, f, _) = parts(&k);
        let e = Builder::at_end(&mut k, body)
            .clone_inst(f, &mut ValueMap::default(), Unmapped::Error)
            .unwrap_err();
        assert!(e.contains("has no copy here"), "{e}");
    }

    #[test]
    fn a_copy_that_would_change_its_types_is_refused() {
        let mut k = parse(LOOP).unwrap();
        let (body, f, _) = parts(&k);
        let fb = k.kind(f).body().unwrap();
        let (load, j) = (k.blocks[fb].insts[0], k.blocks[fb].params[0]);
        // `load x[%j, ..]` rewritten as `load x[%j, %j]`: a scalar, not a tile.
        let InstKind::Load { tensor, .. } = k.kind(load).clone() else {
            unreachable!("the loop body starts with a load")
        };
        let index = vec![Index::Point(j), Index::Point(j)];
        let e = Builder::at_end(&mut k, body)
            .ins_like(load, InstKind::Load { tensor, index })
            .unwrap_err();
        assert!(e.contains("would change its result types"), "{e}");
    }
}
