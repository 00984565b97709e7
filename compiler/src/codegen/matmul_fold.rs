//! Folding the Cube's L1 → L0 operand copies into the matmuls that read
//! them, and a chain of matmuls accumulating one C over consecutive K
//! ranges into one call of the micro-kernel.
//!
//! On the chip, MTE1 copies an operand from L1 into L0A/L0B, changing its
//! layout to the fractal one the Cube reads; in the emulation that layout
//! change is the micro-kernel's packing, which reads any row-major tile.
//! So a copy whose only readers are matmuls is not emitted: the matmuls
//! read its source in L1 (`amla_rt_matmul_folded`). And the K split of the
//! tiling pass (`%c.1 = matmul … acc %c`, one per K tile) is, on the
//! emulation's micro-kernel, the same sums in the same order as one matmul
//! over the whole K: each C element is accumulated in f32 in K order, pair
//! by pair, and storing C between parts and reloading it is exact. So a
//! chain of matmuls whose operands are adjacent K windows of the same L1
//! tiles runs as one call, with the chain's K. Codegen still translates the
//! IR it is given: folding only decides which runtime call does the work.
//!
//! Before (the first two K tiles of MLA's `Q·Kᵀ`, after `plan-memory`):
//!
//! ```text
//! %qt_k0 = extract %qt[.., %c0+:96] : bf16[128, 96] l1@0x0
//! %qt_k0_l0a = copy %qt_k0 to l0a : bf16[128, 96] l0a@0x0
//! %k_k0 = extract %k[.., %c0+:96] : bf16[128, 96] l1@0x24000
//! %k_k0_l0b = copy %k_k0 to l0b : bf16[128, 96] l0b@0x0
//! %qt_k1 = extract %qt[.., %c96+:96] : bf16[128, 96] l1@0xc0
//! %qt_k1_l0a = copy %qt_k1 to l0a : bf16[128, 96] l0a@0x6000
//! %k_k1 = extract %k[.., %c96+:96] : bf16[128, 96] l1@0x240c0
//! %k_k1_l0b = copy %k_k1 to l0b : bf16[128, 96] l0b@0x6000
//! %c = matmul %qt_k0_l0a, %k_k0_l0b nk : f32[128, 128] l0c@0x0
//! %c.1 = matmul %qt_k1_l0a, %k_k1_l0b nk acc %c : f32[128, 128] l0c@0x0
//! ```
//!
//! unfolded: four `amla_rt_copy_local_to_local` and two `amla_rt_matmul`
//! calls of K = 96; folded: one `amla_rt_matmul_folded` of K = 192 reading
//! `%qt` and `%k` in L1 (row stride 576), which records two matmuls and
//! four MTE1 copies in the per-pipe statistics, as the program has.
//!
//! # When
//!
//! Never in instrumented code or under `CodegenOptions::unfused`; else:
//!
//! - A **copy** folds when its result is in L0A (L0B), its source is a
//!   rank-2 L1 tile of the same dtype and shape, every reader is a matmul
//!   of the same block reading it as A (B), and nothing from the copy to
//!   the last reader's call writes L1 (see [`Planner::writes_no_l1`]): the
//!   source still holds what the copy would have read when the call reads
//!   it.
//! - A matmul **chains** onto the one before it when it accumulates that
//!   one's result, which nothing else reads, at the same L0C offset, both
//!   read only folded copies, and the chain's first matmul does not
//!   accumulate (nothing is read from L0C before the call). The chain is
//!   emitted at its last matmul; its parts whose operands are adjacent K
//!   windows (each of even K: the pair path's pairs must not straddle
//!   parts) run as one call, the others as calls of their own, in order.

use std::collections::{HashMap, HashSet};

use crate::ir::{Block, Inst, InstKind, Kernel, Space, Value};

use super::func::FnCx;

/// Folding decisions of a function: filled block by block before emission.
#[derive(Default)]
pub(crate) struct MatmulFold {
    /// Off: every copy and matmul is its own call.
    pub off: bool,
    /// Copies whose readers read their source in place.
    pub copies: HashSet<Inst>,
    /// Folded copies the statistics have not counted yet (the first call
    /// that reads one counts it).
    pub uncounted: HashSet<Inst>,
    /// Matmuls emitted by the last matmul of their chain.
    pub deferred: HashSet<Inst>,
    /// A chain's last matmul → the chain's matmuls, in program order.
    pub chains: HashMap<Inst, Vec<Inst>>,
}

impl FnCx<'_, '_> {
    /// Plans the folded copies and matmul chains of `block`.
    pub(crate) fn plan_matmul_fold(&mut self, block: Block) {
        if self.matmul_fold.off {
            return;
        }
        let plan = Planner {
            k: self.k,
            uses: &self.fusion.uses,
        }
        .plan(block);
        self.matmul_fold
            .uncounted
            .extend(plan.copies.iter().copied());
        self.matmul_fold.copies.extend(plan.copies);
        for chain in plan.chains {
            let (&last, rest) = chain.split_last().expect("non-empty chain");
            self.matmul_fold.deferred.extend(rest.iter().copied());
            self.matmul_fold.chains.insert(last, chain);
        }
    }
}

/// What [`Planner::plan`] decided for one block.
#[derive(Default)]
pub(crate) struct BlockPlan {
    /// Copies whose readers read their source in place.
    pub copies: Vec<Inst>,
    /// Chains of two or more matmuls, each in program order.
    pub chains: Vec<Vec<Inst>>,
}

/// The folding rule on IR alone (codegen and the host cost model share it).
pub(crate) struct Planner<'a> {
    pub k: &'a Kernel,
    /// Every value's users (anywhere in the function).
    pub uses: &'a HashMap<Value, Vec<Inst>>,
}

impl Planner<'_> {
    /// The folded copies and matmul chains of `block`.
    pub(crate) fn plan(&self, block: Block) -> BlockPlan {
        let k = self.k;
        let insts = &k.blocks[block].insts;
        let pos: HashMap<Inst, usize> = insts.iter().enumerate().map(|(p, &i)| (i, p)).collect();
        // Candidate copies: the readers, all matmuls of this block.
        let mut cands: HashMap<Value, (Inst, Vec<Inst>)> = HashMap::new();
        for &i in insts {
            if let Some((r, readers)) = self.foldable_copy(i, &pos) {
                cands.insert(r, (i, readers));
            }
        }
        loop {
            let chains = self.link_chains(insts, &cands);
            let end_of: HashMap<Inst, Inst> = chains
                .iter()
                .flat_map(|c| c.iter().map(|&m| (m, *c.last().expect("non-empty chain"))))
                .collect();
            // A copy's source is read when its readers' chains are emitted.
            let unsafe_copy = cands.iter().find_map(|(&r, (c, readers))| {
                let last = readers
                    .iter()
                    .map(|m| pos[end_of.get(m).unwrap_or(m)])
                    .max()?;
                let clean = insts[pos[c] + 1..last]
                    .iter()
                    .all(|&j| self.writes_no_l1(j));
                (!clean).then_some(r)
            });
            match unsafe_copy {
                Some(r) => {
                    cands.remove(&r);
                }
                None => {
                    let mut copies: Vec<Inst> = cands.values().map(|(c, _)| *c).collect();
                    copies.sort_by_key(|c| pos[c]);
                    return BlockPlan {
                        copies,
                        chains: chains.into_iter().filter(|c| c.len() > 1).collect(),
                    };
                }
            }
        }
    }

    /// The result and readers of `i` if it is a copy that can fold.
    fn foldable_copy(&self, i: Inst, pos: &HashMap<Inst, usize>) -> Option<(Value, Vec<Inst>)> {
        let k = self.k;
        let InstKind::Copy { src, .. } = k.kind(i) else {
            return None;
        };
        let r = *k.insts[i].results.first()?;
        let (rt, st) = (k.ty(r).as_tile()?, k.ty(*src).as_tile()?);
        let as_a = match rt.space {
            Space::L0A => true,
            Space::L0B => false,
            _ => return None,
        };
        if st.space != Space::L1
            || st.dtype != rt.dtype
            || st.shape != rt.shape
            || rt.shape.len() != 2
        {
            return None;
        }
        let readers = self.uses.get(&r)?.clone();
        let ok = !readers.is_empty()
            && readers.iter().all(|&m| {
                pos.get(&m).is_some_and(|&p| p > pos[&i])
                    && matches!(k.kind(m), InstKind::Matmul { a, b, acc, .. }
                        if (if as_a { *a == r && *b != r } else { *b == r && *a != r })
                            && *acc != Some(r))
            });
        ok.then_some((r, readers))
    }

    /// Maximal chains of matmuls of `insts` (a matmul alone is a chain of
    /// one), each reading only copies in `cands`.
    fn link_chains(
        &self,
        insts: &[Inst],
        cands: &HashMap<Value, (Inst, Vec<Inst>)>,
    ) -> Vec<Vec<Inst>> {
        let k = self.k;
        let folded = |m: Inst| {
            matches!(k.kind(m), InstKind::Matmul { a, b, .. }
                if cands.contains_key(a) && cands.contains_key(b))
        };
        let mut chains: Vec<Vec<Inst>> = Vec::new();
        let mut chain_of: HashMap<Value, usize> = HashMap::new();
        for &m in insts {
            let InstKind::Matmul { acc, b_layout, .. } = k.kind(m) else {
                continue;
            };
            let r = k.insts[m].results[0];
            let onto = acc.and_then(|c| {
                let &n = chain_of.get(&c)?;
                let prev = *chains[n].last()?;
                let InstKind::Matmul { b_layout: pl, .. } = k.kind(prev) else {
                    return None;
                };
                let only_reader = self.uses.get(&c).is_some_and(|u| u == &[m]);
                (only_reader
                    && pl == b_layout
                    && folded(m)
                    && folded(prev)
                    && k.offsets[c] == k.offsets[r]
                    && k.ty(c) == k.ty(r))
                .then_some(n)
            });
            let n = match onto {
                Some(n) => n,
                None if acc.is_none() || !folded(m) => {
                    chains.push(Vec::new());
                    chains.len() - 1
                }
                // A chain's first matmul must not accumulate: it runs late.
                None => {
                    chains.push(vec![m]);
                    continue;
                }
            };
            chains[n].push(m);
            chain_of.insert(r, n);
        }
        chains
    }

    /// Whether `i` writes nothing in L1 and holds no nested block: scalar
    /// ops, flags, extract views, copies into L0A/L0B, matmuls, stores to
    /// GM.
    fn writes_no_l1(&self, i: Inst) -> bool {
        let k = self.k;
        match k.kind(i) {
            InstKind::Parallel { .. } | InstKind::For { .. } | InstKind::Yield(_) => false,
            InstKind::Extract { src, .. } => {
                let Some(r) = k.insts[i].results.first() else {
                    return true;
                };
                match k.ty(*r).as_tile() {
                    Some(t) if t.space == Space::L1 => self.placed_inside(*r, *src),
                    _ => true,
                }
            }
            _ => k.insts[i].results.iter().all(|&r| {
                k.ty(r)
                    .as_tile()
                    .is_none_or(|t| !matches!(t.space, Space::L1 | Space::Any))
            }),
        }
    }

    /// Whether `v` is placed inside `src`'s bytes (a view: plan-memory
    /// places an `extract` inside its source only when it reads it in
    /// place).
    fn placed_inside(&self, v: Value, src: Value) -> bool {
        let k = self.k;
        let (Some(vo), Some(so)) = (k.offsets[v], k.offsets[src]) else {
            return false;
        };
        let Some(st) = k.ty(src).as_tile() else {
            return false;
        };
        vo >= so && vo < so + st.bytes()
    }
}
