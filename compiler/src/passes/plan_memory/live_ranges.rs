//! Step 1 of `plan-memory`: the body linearised in execution pre-order
//! (a position per instruction, a second one after each loop body), the
//! `l1` views, and the live range of every tile.

use super::*;

/// Where each instruction of a function sits.
#[derive(Default)]
pub(super) struct Lin {
    /// Execution pre-order position of each instruction.
    pub(super) pos: FxHashMap<Inst, u32>,
    /// Position after the body of each loop.
    pub(super) end: FxHashMap<Inst, u32>,
    /// The block holding each instruction.
    pub(super) block_of: FxHashMap<Inst, Block>,
    /// The loop owning each body block.
    pub(super) owner: FxHashMap<Block, Inst>,
    /// The instruction at each position (loop ends have none).
    pub(super) at: FxHashMap<u32, Inst>,
    /// All instructions in pre-order.
    pub(super) order: Vec<Inst>,
    /// Tile values defined in the function (loop parameters, results).
    pub(super) tiles: Vec<Value>,
}

impl Lin {
    pub(super) fn new(k: &Kernel, body: Block) -> Lin {
        let mut lin = Lin::default();
        let mut n = 0;
        lin.number(k, body, &mut n);
        lin
    }

    pub(super) fn number(&mut self, k: &Kernel, block: Block, n: &mut u32) {
        for &i in &k.blocks[block].insts {
            self.pos.insert(i, *n);
            self.at.insert(*n, i);
            self.block_of.insert(i, block);
            self.order.push(i);
            *n += 1;
            if let Some(b) = k.insts[i].kind.body() {
                self.owner.insert(b, i);
                for &p in &k.blocks[b].params {
                    if k.ty(p).as_tile().is_some() {
                        self.tiles.push(p);
                    }
                }
                self.number(k, b, n);
                self.end.insert(i, *n);
                *n += 1;
            }
            for &r in &k.insts[i].results {
                if k.ty(r).as_tile().is_some() {
                    self.tiles.push(r);
                }
            }
        }
    }

    pub(super) fn def_pos(&self, k: &Kernel, v: Value) -> u32 {
        match k.values[v].def {
            ValueDef::Result(i, _) => match k.insts[i].kind {
                InstKind::For { .. } => self.end.get(&i).copied().unwrap_or(0),
                _ => self.pos.get(&i).copied().unwrap_or(0),
            },
            ValueDef::Param(b, _) => self
                .owner
                .get(&b)
                .and_then(|l| self.pos.get(l))
                .copied()
                .unwrap_or(0),
        }
    }

    pub(super) fn def_block(&self, k: &Kernel, v: Value) -> Option<Block> {
        match k.values[v].def {
            ValueDef::Result(i, _) => self.block_of.get(&i).copied(),
            ValueDef::Param(b, _) => Some(b),
        }
    }

    /// The position a use at `u` counts at for a value defined in block
    /// `def`: `u` itself, or the end of the outermost loop containing `u`
    /// but not the definition.
    pub(super) fn lift(&self, u: Inst, def: Block) -> Option<u32> {
        let mut cur = u;
        let mut p = *self.pos.get(&u)?;
        while *self.block_of.get(&cur)? != def {
            let l = *self.owner.get(self.block_of.get(&cur)?)?;
            p = *self.end.get(&l)?;
            cur = l;
        }
        Some(p)
    }
}

/// A view: an `l1` extract that owns no storage.
#[derive(Clone, Debug)]
pub(super) struct View {
    /// The storage-owning tile at the end of the extract chain.
    pub(super) root: Value,
    /// For each dim of the view, the root dim it runs along.
    pub(super) dims: Vec<usize>,
    /// Index of the view's first element in each root dim.
    pub(super) start: Vec<u64>,
}

impl View {
    pub(super) fn elem_offset(&self, root_shape: &[u64]) -> u64 {
        let mut off = 0;
        let mut stride = 1;
        for d in (0..root_shape.len()).rev() {
            off += self.start[d] * stride;
            stride *= root_shape[d];
        }
        off
    }
}

/// Live range `[start, end]` (inclusive) of every tile value, views
/// excluded (their uses count for their root).
pub(super) fn live_ranges(
    k: &Kernel,
    lin: &Lin,
    views: &FxHashMap<Value, View>,
) -> Result<FxHashMap<Value, (u32, u32)>> {
    let mut ranges: FxHashMap<Value, (u32, u32)> = FxHashMap::default();
    for &v in &lin.tiles {
        if !views.contains_key(&v) {
            let d = lin.def_pos(k, v);
            ranges.insert(v, (d, d));
        }
    }
    for &u in &lin.order {
        let mut used = Vec::new();
        k.insts[u].kind.for_each_operand(|v| used.push(v));
        for v in used {
            let v = views.get(&v).map_or(v, |w| w.root);
            let Some(r) = ranges.get_mut(&v) else {
                continue;
            };
            let Some(p) = lin.def_block(k, v).and_then(|b| lin.lift(u, b)) else {
                return fail(format!(
                    "plan-memory: {} is used by `{}` outside the scope of its definition",
                    value_label(k, v),
                    k.insts[u].kind.opcode()
                ));
            };
            r.1 = r.1.max(p);
        }
    }
    Ok(ranges)
}
