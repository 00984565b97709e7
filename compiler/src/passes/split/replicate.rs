//! Step 4 of `split`: the program of each unit, a copy of the loop tree
//! holding its own ops and carried values plus the flag and workspace ops
//! planned by steps 2 and 3.

use super::*;
use crate::ir::Builder;
use crate::ir::edit::Unmapped;

impl SplitState {
    /// Step 4: the program of unit `u`.
    pub(super) fn build(&mut self, k: &mut Kernel, u: Unit) -> Result<Func, String> {
        let body = k.blocks.push(Default::default());
        let mut map = FxHashMap::default();
        let top = self.an.top;
        self.clone_block(k, u, top, body, &mut map, &[])?;
        Ok(Func {
            unit: u,
            sub_blocks: 1,
            body,
        })
    }

    pub(super) fn do_emits(
        &self,
        k: &mut Kernel,
        u: Unit,
        p: Pos,
        dst: Block,
        map: &mut FxHashMap<Value, Value>,
    ) -> Result<(), String> {
        let Some(list) = self.emits.get(&(p, u)) else {
            return Ok(());
        };
        for e in list {
            match e {
                Emit::Set(f) => {
                    append(k, dst, InstKind::SetFlag(*f))?;
                }
                Emit::Wait(f) => {
                    append(k, dst, InstKind::WaitFlag(*f))?;
                }
                Emit::Store { ws, value } => {
                    let index = self.ws_index(k, *value, map, u, dst)?;
                    let value = lookup(map, *value, u)?;
                    append(
                        k,
                        dst,
                        InstKind::Store {
                            tensor: *ws,
                            index,
                            value,
                        },
                    )?;
                }
                Emit::Load { ws, value } => {
                    let index = self.ws_index(k, *value, map, u, dst)?;
                    let i = append(k, dst, InstKind::Load { tensor: *ws, index })?;
                    let r = k.insts[i].results[0];
                    k.values[r].name = k.values[*value].name.clone();
                    map.insert(*value, r);
                }
            }
        }
        Ok(())
    }

    pub(super) fn ws_index(
        &self,
        k: &mut Kernel,
        v: Value,
        map: &FxHashMap<Value, Value>,
        u: Unit,
        dst: Block,
    ) -> Result<Vec<Index>, String> {
        let mut index = Vec::new();
        for (n, &iv) in self.an.ivs.iter().enumerate() {
            let mut x = lookup(map, iv, u)?;
            let div = self.an.grid_div[n];
            if div > 1 {
                let c = append(k, dst, InstKind::IConst(div))?;
                let c = k.insts[c].results[0];
                let q = append(k, dst, InstKind::Binary(crate::ir::BinaryOp::Div, x, c))?;
                x = k.insts[q].results[0];
            }
            index.push(Index::Point(x));
        }
        index.extend(k.ty(v).shape().iter().map(|_| Index::Full));
        Ok(index)
    }

    pub(super) fn clone_block(
        &mut self,
        k: &mut Kernel,
        u: Unit,
        src: Block,
        dst: Block,
        map: &mut FxHashMap<Value, Value>,
        kept: &[usize],
    ) -> Result<(), String> {
        self.do_emits(k, u, Pos::Start(src), dst, map)?;
        let insts = k.blocks[src].insts.clone();
        let mut ended = false;
        for i in insts {
            if let InstKind::Yield(vs) = k.kind(i) {
                let vs = vs.clone();
                self.do_emits(k, u, Pos::End(src), dst, map)?;
                ended = true;
                let mut out = Vec::new();
                for &c in kept {
                    out.push(lookup(map, vs[c], u)?);
                }
                append(k, dst, InstKind::Yield(out))?;
                continue;
            }
            self.do_emits(k, u, Pos::Before(i), dst, map)?;
            if self.placed(k, i, u) {
                self.clone_inst(k, u, i, dst, map)?;
            }
            self.do_emits(k, u, Pos::After(i), dst, map)?;
        }
        if !ended {
            self.do_emits(k, u, Pos::End(src), dst, map)?;
        }
        Ok(())
    }

    pub(super) fn clone_inst(
        &mut self,
        k: &mut Kernel,
        u: Unit,
        i: Inst,
        dst: Block,
        map: &mut FxHashMap<Value, Value>,
    ) -> Result<(), String> {
        match k.kind(i).clone() {
            InstKind::Parallel { axes, body } => {
                let nb = k.blocks.push(Default::default());
                for p in k.blocks[body].params.clone() {
                    let np = k.add_block_param(nb, k.ty(p).clone(), k.values[p].name.clone());
                    map.insert(p, np);
                }
                let mut naxes = Vec::new();
                for ax in axes {
                    naxes.push(Axis {
                        lo: lookup(map, ax.lo, u)?,
                        hi: lookup(map, ax.hi, u)?,
                        step: ax.step,
                    });
                }
                append(
                    k,
                    dst,
                    InstKind::Parallel {
                        axes: naxes,
                        body: nb,
                    },
                )?;
                self.clone_block(k, u, body, nb, map, &[])?;
            }
            InstKind::For {
                lo,
                hi,
                step,
                init,
                body,
            } => {
                let params = k.blocks[body].params.clone();
                let kept: Vec<usize> = (0..init.len())
                    .filter(|&c| self.home.get(&params[c + 1]).is_some_and(|h| h.has(u)))
                    .collect();
                let nb = k.blocks.push(Default::default());
                let iv = k.add_block_param(
                    nb,
                    k.ty(params[0]).clone(),
                    k.values[params[0]].name.clone(),
                );
                map.insert(params[0], iv);
                let mut ninit = Vec::new();
                for &c in &kept {
                    let p = params[c + 1];
                    let np = k.add_block_param(nb, k.ty(p).clone(), k.values[p].name.clone());
                    map.insert(p, np);
                    ninit.push(lookup(map, init[c], u)?);
                }
                let kind = InstKind::For {
                    lo: lookup(map, lo, u)?,
                    hi: lookup(map, hi, u)?,
                    step,
                    init: ninit,
                    body: nb,
                };
                let ni = append(k, dst, kind)?;
                copy_span(k, i, ni);
                let results = k.insts[i].results.clone();
                for (n, &c) in kept.iter().enumerate() {
                    let r = k.insts[ni].results[n];
                    k.values[r].name = k.values[results[c]].name.clone();
                    map.insert(results[c], r);
                }
                self.for_map.insert((i, u), ni);
                self.clone_block(k, u, body, nb, map, &kept)?;
            }
            _ => {
                Builder::at_end(k, dst)
                    .clone_inst(i, map, Unmapped::Error)
                    .map_err(|e| format!("split: internal: {e} on the {}", u.name()))?;
            }
        }
        Ok(())
    }
}
