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
//! A GM → L1 load whose tile only folded copies read goes the same way:
//! the tile's bytes are the GM tensor's, so the matmuls read the tensor in
//! place (`%k = load kv[%b, %j+:128, ..]` above is a view of `kv` with row
//! stride 576, which is also its L1 stride). Whether the box lies inside
//! the tensor is only known at run time: when it does, the load copies
//! nothing and the call gets the tensor's address (buffer code 0, the GM
//! index, the element offset); when it does not (the partial last KV
//! block), the load is the zero-filling copy into L1 it always was and the
//! call reads L1. The call records the folded load on MTE2 (its bytes, no
//! busy time, trace path `amla_runtime::FOLDED_LOAD_PATH`), so the
//! per-pipe statistics still count the program's loads.
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
//! - A **load** folds when its result is a rank-2 L1 tile of the tensor's
//!   dtype whose columns are the tensor's last dim, every reader is a
//!   folded copy of the same block or an `extract` view placed inside the
//!   tile whose readers are such (views of views too), nothing from the
//!   load to the last of those copies' calls writes L1 over the tile
//!   ([`Planner::writes_l1_outside`]), and no op of this function writes
//!   the tensor (a `store`, `atomic_add` or `atomic_exp_add`). Then GM
//!   holds what the load would have copied whenever a matmul reads it: a
//!   tensor nothing writes holds the same bytes all launch long; one only
//!   the other unit writes (`ws_cast`, MLA's P tile, which the Vector
//!   stores and the Cube loads for P·V) folds only when this function
//!   raises no flag from the load to the last call. The schedule orders
//!   every write of the other unit against the load (`split` inserts the
//!   flags): a write before the load is before the calls too, and a write
//!   after it waits on a flag this function raises after the load, which
//!   is then after the calls as well.
//! - A **store** or **atomic add** of a chain's C (MLA's S after `Q·Kᵀ`,
//!   the four P·V column blocks added into `acc_ws`) is done by the
//!   chain's call when every matmul of the chain reads folded copies, the
//!   first does not accumulate, the store (to an f32 tensor, a rank-2 box
//!   whose columns are the tensor's last dim) is the only reader of C, its
//!   index is computed before the call, and from the call to the store no
//!   flag op, no op holding a block and no access of the tensor comes
//!   between (an access of a box provably disjoint from the store's — a
//!   dim where both start at constants and do not meet — may): C is then
//!   computed in GM (`amla_rt_matmul_folded`'s `store_*` arguments; an
//!   atomic add as `AccumMode::AddAfter`, the product summed on its own
//!   and added, the bits of the add), the store done early where nothing
//!   can tell.
//!   Like a folded load it is decided at run time: a box not inside the
//!   tensor is computed in L0C and stored as before; so is a chain that
//!   runs as more than one call. The call records the store on FixPipe
//!   (its bytes, no time, trace path `amla_runtime::FOLDED_STORE_PATH`);
//!   under atomic GM accesses the runtime computes C in L0C and stores it
//!   itself.

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
    /// GM → L1 loads whose folded copies' matmuls read GM in place when the
    /// load's box lies inside the tensor.
    pub loads: HashSet<Inst>,
    /// Each folded load's result → where its tile lies in GM (filled when
    /// the load is emitted).
    pub gm_src: HashMap<Value, GmSrc>,
    /// Folded loads the statistics have not counted yet.
    pub uncounted_loads: HashSet<Value>,
    /// A chain's last matmul → the store of its C the call may do.
    pub stores: HashMap<Inst, Inst>,
    /// Stores a call does when its box lies inside the tensor: the store's
    /// run-time "inside" flag (i8 0/1; filled when the chain is emitted as
    /// one call).
    pub store_full: HashMap<Inst, cranelift_codegen::ir::Value>,
}

/// Where a folded load's tile lies in GM, as JIT values of its block.
#[derive(Clone, Copy)]
pub(crate) struct GmSrc {
    /// The box lies inside the tensor (i8 0/1): else the load ran as a
    /// copy into L1 and the matmuls read L1.
    pub full: cranelift_codegen::ir::Value,
    /// Element offset of the tile's first element in the tensor.
    pub gm_off: cranelift_codegen::ir::Value,
    /// The tensor's stride between the tile's rows (elements).
    pub row_stride: cranelift_codegen::ir::Value,
    /// The GM buffer index.
    pub gm_index: u32,
    /// The tile's element offset and row stride in L1.
    pub l1_off: u64,
    pub l1_stride: u64,
    /// The tile's bytes.
    pub bytes: u64,
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
        self.matmul_fold.loads.extend(plan.loads);
        self.matmul_fold.stores.extend(plan.stores);
        for chain in plan.chains {
            let (&last, rest) = chain.split_last().expect("non-empty chain");
            self.matmul_fold.deferred.extend(rest.iter().copied());
            self.matmul_fold.chains.insert(last, chain);
        }
    }
}

/// Who writes a tensor, seen from the function a block is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Writer {
    /// That function (perhaps others too).
    ThisFunction,
    /// Only other functions (the other unit: a workspace between them).
    OtherFunctions,
}

/// What [`Planner::plan`] decided for one block.
#[derive(Default)]
pub(crate) struct BlockPlan {
    /// Copies whose readers read their source in place.
    pub copies: Vec<Inst>,
    /// Chains of two or more matmuls, each in program order.
    pub chains: Vec<Vec<Inst>>,
    /// GM → L1 loads read in place by the matmuls of their folded copies.
    pub loads: Vec<Inst>,
    /// (a chain's last matmul, the store of its C to GM the call does).
    pub stores: Vec<(Inst, Inst)>,
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
                    // Each folded copy → the position of its last reader's call.
                    let read_until: HashMap<Inst, usize> = cands
                        .values()
                        .map(|(c, readers)| {
                            let last = readers
                                .iter()
                                .map(|m| pos[end_of.get(m).unwrap_or(m)])
                                .max()
                                .unwrap_or(pos[c]);
                            (*c, last)
                        })
                        .collect();
                    let written = self.written_tensors(block);
                    let loads = insts
                        .iter()
                        .copied()
                        .filter(|&i| self.foldable_load(i, insts, &read_until, &written, &pos))
                        .collect();
                    let stores = chains
                        .iter()
                        .filter_map(|c| {
                            let s = self.foldable_store(c, insts, &pos, &cands)?;
                            Some((*c.last()?, s))
                        })
                        .collect();
                    return BlockPlan {
                        copies,
                        chains: chains.into_iter().filter(|c| c.len() > 1).collect(),
                        loads,
                        stores,
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

    /// Whether `i` is a GM → L1 load whose tile only folded copies of this
    /// block read (directly or through `extract` views placed inside it), of a
    /// rank-2 box whose columns are the tensor's last dim, from a tensor
    /// this function does not write (and, when another does, raising no
    /// flag from the load to the last call; see the module docs), and
    /// nothing from the load to the last of those copies' matmul calls
    /// writes L1 over the tile: its matmuls can read the tensor in place
    /// whenever they would have read the tile.
    fn foldable_load(
        &self,
        i: Inst,
        insts: &[Inst],
        read_until: &HashMap<Inst, usize>,
        written: &HashMap<crate::ir::Tensor, Writer>,
        pos: &HashMap<Inst, usize>,
    ) -> bool {
        let k = self.k;
        let InstKind::Load { tensor, index } = k.kind(i) else {
            return false;
        };
        let Some(&r) = k.insts[i].results.first() else {
            return false;
        };
        let Some(rt) = k.ty(r).as_tile() else {
            return false;
        };
        if rt.space != Space::L1
            || rt.shape.len() != 2
            || rt.dtype != k.tensors[*tensor].dtype
            || written.get(tensor) == Some(&Writer::ThisFunction)
            || !rows_of_last_dim(index)
        {
            return false;
        }
        let mut copies: Vec<Inst> = Vec::new();
        if !self.read_by_folded_copies(r, r, i, read_until, pos, &mut copies) {
            return false;
        }
        let (Some(lo), bytes) = (k.offsets[r], rt.bytes()) else {
            return false;
        };
        let until = copies
            .iter()
            .map(|c| read_until[c])
            .max()
            .unwrap_or(pos[&i]);
        let window = &insts[pos[&i] + 1..until];
        // Written by another unit: that unit's writes are ordered against
        // the load by flags, and the writes after the load wait on a flag
        // this function raises after it. With no `set_flag` from the load
        // to the last call, that flag is raised after the calls too, so
        // they read what the load would have.
        if written.get(tensor) == Some(&Writer::OtherFunctions)
            && window
                .iter()
                .any(|&j| matches!(k.kind(j), InstKind::SetFlag(_)))
        {
            return false;
        }
        window
            .iter()
            .all(|&j| self.writes_no_l1(j) || self.writes_l1_outside(j, lo, lo + bytes))
    }

    /// The store of `chain`'s C its call can do itself (C computed in GM
    /// instead of L0C): every matmul of the chain reads folded copies, the
    /// first does not accumulate, the only reader of the last's result is
    /// a `store` of it to an f32 tensor (a rank-2 box whose columns are the
    /// tensor's last dim) later in the block, whose index is known where
    /// the chain's call is emitted (its last matmul), and from that call
    /// to the store no flag op and no access of the tensor (nor any op
    /// holding a block) comes between: writing C in GM at the call is then
    /// the store, done early, where nothing can tell.
    fn foldable_store(
        &self,
        chain: &[Inst],
        insts: &[Inst],
        pos: &HashMap<Inst, usize>,
        cands: &HashMap<Value, (Inst, Vec<Inst>)>,
    ) -> Option<Inst> {
        let k = self.k;
        let (&first, &last) = (chain.first()?, chain.last()?);
        let folded = |m: Inst| reads_folded_copies(k, m, cands);
        if !chain.iter().all(|&m| folded(m))
            || !matches!(k.kind(first), InstKind::Matmul { acc: None, .. })
        {
            return None;
        }
        let r = *k.insts[last].results.first()?;
        let [s] = self.uses.get(&r)?.as_slice() else {
            return None;
        };
        let (InstKind::Store {
            tensor,
            index,
            value,
        }
        | InstKind::AtomicAdd {
            tensor,
            index,
            value,
        }) = k.kind(*s)
        else {
            return None;
        };
        let (&ps, &pl) = (pos.get(s)?, pos.get(&last)?);
        if *value != r
            || ps <= pl
            || k.tensors[*tensor].dtype != crate::ir::DType::F32
            || k.ty(r).as_tile().is_none_or(|t| t.shape.len() != 2)
            || !rows_of_last_dim(index)
        {
            return None;
        }
        // The index is computed before the call.
        let mut known = true;
        k.insts[*s].kind.for_each_operand(|v| {
            if let Some(d) = k.def_inst(v).and_then(|d| pos.get(&d))
                && v != r
            {
                known &= *d < pl;
            }
        });
        let touches = |j: Inst| match k.kind(j) {
            InstKind::SetFlag(_) | InstKind::WaitFlag(_) => true,
            InstKind::Load {
                tensor: t,
                index: ix,
            }
            | InstKind::Store {
                tensor: t,
                index: ix,
                ..
            }
            | InstKind::AtomicAdd {
                tensor: t,
                index: ix,
                ..
            } => t == tensor && !self.disjoint(ix, index),
            InstKind::AtomicExpAdd { tensor: t, .. } => t == tensor,
            kind => kind.body().is_some() || matches!(kind, InstKind::Yield(_)),
        };
        (known && !insts[pl + 1..ps].iter().any(|&j| touches(j))).then_some(*s)
    }

    /// Whether boxes `a` and `b` of one tensor are disjoint: in some dim
    /// both are points or ranges with constant starts whose element
    /// intervals do not meet (MLA's four P·V column blocks of `acc_ws`).
    fn disjoint(&self, a: &[crate::ir::Index], b: &[crate::ir::Index]) -> bool {
        use crate::ir::Index;
        let k = self.k;
        let konst = |v: Value| match k.def_inst(v).map(|d| k.kind(d)) {
            Some(InstKind::IConst(c)) => Some(*c),
            _ => None,
        };
        let span = |x: &Index| match x {
            Index::Point(v) => Some((konst(*v)?, 1)),
            Index::Range { start, len } => Some((konst(*start)?, i64::try_from(*len).ok()?)),
            Index::Full => None,
        };
        a.len() == b.len()
            && a.iter().zip(b).any(|(x, y)| match (span(x), span(y)) {
                (Some((s1, l1)), Some((s2, l2))) => {
                    s1.saturating_add(l1) <= s2 || s2.saturating_add(l2) <= s1
                }
                _ => false,
            })
    }

    /// Whether every L1 tile `i` writes is placed outside bytes `lo..hi`
    /// (an op with a nested block: no).
    fn writes_l1_outside(&self, i: Inst, lo: u64, hi: u64) -> bool {
        let k = self.k;
        if k.kind(i).body().is_some() || matches!(k.kind(i), InstKind::Yield(_)) {
            return false;
        }
        k.insts[i].results.iter().all(|&r| match k.ty(r).as_tile() {
            Some(t) if matches!(t.space, Space::L1 | Space::Any) => {
                t.space == Space::L1 && k.offsets[r].is_some_and(|o| o + t.bytes() <= lo || o >= hi)
            }
            _ => true,
        })
    }

    /// Whether every reader of `v` (the load `load`'s tile `root`, or a view
    /// of it) is a folded copy after the load, or an `extract` view placed
    /// inside `root` whose readers are such too; collects the copies.
    fn read_by_folded_copies(
        &self,
        v: Value,
        root: Value,
        load: Inst,
        read_until: &HashMap<Inst, usize>,
        pos: &HashMap<Inst, usize>,
        copies: &mut Vec<Inst>,
    ) -> bool {
        let k = self.k;
        let Some(users) = self.uses.get(&v).filter(|u| !u.is_empty()) else {
            return false;
        };
        users.iter().all(|&u| {
            if pos.get(&u).is_none_or(|&p| p <= pos[&load]) {
                return false;
            }
            if read_until.contains_key(&u) {
                copies.push(u);
                return true;
            }
            let (InstKind::Extract { src, .. }, Some(&e)) = (k.kind(u), k.insts[u].results.first())
            else {
                return false;
            };
            *src == v
                && k.ty(e).as_tile().is_some_and(|t| t.space == Space::L1)
                && self.placed_inside(e, root)
                && self.read_by_folded_copies(e, root, load, read_until, pos, copies)
        })
    }

    /// The tensors some op of the kernel writes (a `store`, `atomic_add`
    /// or `atomic_exp_add`), and whether the function holding `block` is
    /// one of their writers.
    fn written_tensors(&self, block: Block) -> HashMap<crate::ir::Tensor, Writer> {
        let k = self.k;
        let mut out = HashMap::new();
        for f in &k.funcs {
            let mut here = f.body == block;
            let mut writes = Vec::new();
            k.walk(f.body, &mut |i| {
                here |= k.kind(i).body() == Some(block);
                match k.kind(i) {
                    InstKind::Store { tensor, .. }
                    | InstKind::AtomicAdd { tensor, .. }
                    | InstKind::AtomicExpAdd { tensor, .. } => writes.push(*tensor),
                    _ => {}
                }
            });
            for t in writes {
                let w = if here {
                    Writer::ThisFunction
                } else {
                    Writer::OtherFunctions
                };
                let e = out.entry(t).or_insert(w);
                if w == Writer::ThisFunction {
                    *e = w;
                }
            }
        }
        out
    }

    /// Maximal chains of matmuls of `insts` (a matmul alone is a chain of
    /// one), each reading only copies in `cands`.
    fn link_chains(
        &self,
        insts: &[Inst],
        cands: &HashMap<Value, (Inst, Vec<Inst>)>,
    ) -> Vec<Vec<Inst>> {
        let k = self.k;
        let folded = |m: Inst| reads_folded_copies(k, m, cands);
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

/// Whether matmul `m` reads both operands through candidate folded copies.
fn reads_folded_copies(k: &Kernel, m: Inst, cands: &HashMap<Value, (Inst, Vec<Inst>)>) -> bool {
    matches!(k.kind(m), InstKind::Matmul { a, b, .. }
        if cands.contains_key(a) && cands.contains_key(b))
}

/// Whether a GM box is rank 2 with the tensor's last dim as its columns
/// (two ranges, the last index not a point): rows at the tensor's stride,
/// what a matmul operand or C in GM can be.
fn rows_of_last_dim(index: &[crate::ir::Index]) -> bool {
    let point = |x: &crate::ir::Index| matches!(x, crate::ir::Index::Point(_));
    index.iter().filter(|x| !point(x)).count() == 2 && index.last().is_some_and(|x| !point(x))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::SourceFile;
    use crate::driver::{CompileOptions, compile};
    use crate::ir::Unit;

    const MLA: &str = include_str!("../../../dsl-examples/mla_decode.amla");

    /// MLA decode's IR after the pipeline, as text.
    fn mla_ir() -> String {
        let src = SourceFile::new("mla_decode.amla", MLA);
        let c = compile(&src, &CompileOptions::new().unwrap()).unwrap();
        crate::ir::print(&c.ir)
    }

    /// Of the Cube's ops on workspace `tensor` that `is_op` picks, how many
    /// the planner folds (`folded` picks them from a block's plan) and how
    /// many there are, in the kernel `text`.
    fn planned(
        text: &str,
        tensor: &str,
        is_op: fn(&InstKind, crate::ir::Tensor) -> bool,
        folded: fn(&BlockPlan) -> Vec<Inst>,
    ) -> (usize, usize) {
        let k = crate::ir::parse(text).expect("the printed IR parses");
        let f = k.func(Unit::Cube).expect("a cube func");
        let mut uses: HashMap<Value, Vec<Inst>> = HashMap::new();
        let mut blocks = vec![f.body];
        k.walk(f.body, &mut |i| {
            k.kind(i)
                .for_each_operand(|v| uses.entry(v).or_default().push(i));
            blocks.extend(k.kind(i).body());
        });
        let ws = k
            .tensors
            .iter()
            .find(|(_, t)| t.name == tensor)
            .map(|(id, _)| id)
            .expect("the workspace");
        let planner = Planner { k: &k, uses: &uses };
        let (mut n_folded, mut all) = (0, 0);
        for b in blocks {
            let picked = |i: &Inst| is_op(k.kind(*i), ws);
            all += k.blocks[b].insts.iter().filter(|i| picked(i)).count();
            n_folded += folded(&planner.plan(b))
                .iter()
                .filter(|i| picked(i))
                .count();
        }
        (n_folded, all)
    }

    /// The Cube's `load ws_cast[…]` ops the planner reads in GM, and all of
    /// them, of the kernel `text`.
    fn ws_cast_loads(text: &str) -> (usize, usize) {
        planned(
            text,
            "ws_cast",
            |kind, ws| matches!(kind, InstKind::Load { tensor, .. } if *tensor == ws),
            |p| p.loads.clone(),
        )
    }

    /// The Cube's `store ws_matmul[…]` ops (S, after the `Q·Kᵀ` chain) the
    /// planner lets the chain's call do, and all of them.
    fn ws_matmul_stores(text: &str) -> (usize, usize) {
        planned(
            text,
            "ws_matmul",
            |kind, ws| matches!(kind, InstKind::Store { tensor, .. } if *tensor == ws),
            |p| p.stores.iter().map(|&(_, s)| s).collect(),
        )
    }

    /// MLA's four P·V matmuls (one per 128-column block of `acc_ws`) each
    /// have their atomic add done by their call, though the adds of the
    /// other blocks come between (the boxes are disjoint); the `Q·Kᵀ`
    /// store too.
    #[test]
    fn the_atomic_adds_of_disjoint_column_blocks_are_done_by_their_calls() {
        let k = crate::ir::parse(&mla_ir()).expect("the printed IR parses");
        let f = k.func(Unit::Cube).expect("a cube func");
        let mut uses: HashMap<Value, Vec<Inst>> = HashMap::new();
        let mut blocks = vec![f.body];
        k.walk(f.body, &mut |i| {
            k.kind(i)
                .for_each_operand(|v| uses.entry(v).or_default().push(i));
            blocks.extend(k.kind(i).body());
        });
        let planner = Planner { k: &k, uses: &uses };
        let (mut folded, mut all) = (0, 0);
        for b in blocks {
            let adds = |i: &Inst| matches!(k.kind(*i), InstKind::AtomicAdd { .. });
            all += k.blocks[b].insts.iter().filter(|i| adds(i)).count();
            folded += planner
                .plan(b)
                .stores
                .iter()
                .filter(|(_, s)| adds(s))
                .count();
        }
        assert!(all >= 8, "atomic adds: {all}");
        assert_eq!(folded, all);
    }

    /// The store of S after MLA's `Q·Kᵀ` chain is done by the chain's call
    /// (C computed in GM); with a `wait_flag` between the chain and the
    /// store, writing GM at the call could overtake what the wait orders,
    /// so it stays a store.
    #[test]
    fn a_store_of_a_chains_c_is_done_by_its_call_only_with_no_flag_between() {
        let text = mla_ir();
        let (folded, all) = ws_matmul_stores(&text);
        assert!(all >= 2, "ws_matmul stores: {all}");
        assert_eq!(folded, all);
        let mut edited = String::new();
        for line in text.lines() {
            if line.contains("store ws_matmul[") {
                edited.push_str("      wait_flag 1\n");
            }
            edited.push_str(line);
            edited.push('\n');
        }
        assert_eq!(ws_matmul_stores(&edited), (0, all));
    }

    /// The P tile the Vector writes into `ws_cast` and the Cube loads for
    /// P·V is read in GM by the matmuls (the Cube raises no flag between
    /// the load and them); with a `set_flag` right after the load, the
    /// Vector could overwrite the slot before the matmuls read it, so the
    /// load stays a copy.
    #[test]
    fn a_tile_the_other_unit_writes_is_read_in_gm_only_with_no_flag_raised_before_its_matmuls() {
        let text = mla_ir();
        let (folded, all) = ws_cast_loads(&text);
        assert!(all >= 2, "ws_cast loads: {all}");
        assert_eq!(folded, all);
        let mut edited = String::new();
        for line in text.lines() {
            edited.push_str(line);
            edited.push('\n');
            if line.contains("= load ws_cast[") {
                edited.push_str("      set_flag 0\n");
            }
        }
        assert_eq!(ws_cast_loads(&edited), (0, all));
    }
}
