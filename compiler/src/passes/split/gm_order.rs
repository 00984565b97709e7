//! Step 3 of `split`: ordering the accesses to GM tensors both units touch
//! by passing a token (a flag) between the units.

use super::*;

impl SplitState {
    /// The unit accessing `t` at `i`, if `i` accesses `t`.
    pub(super) fn access_unit(&self, k: &Kernel, i: Inst, t: Tensor) -> Option<Unit> {
        let kind = k.kind(i);
        if kind.tensor() != Some(t) {
            return None;
        }
        match kind {
            InstKind::Load { .. } => {
                let r = k.insts[i].results[0];
                Some(
                    self.home
                        .get(&r)
                        .and_then(|h| h.unit())
                        .unwrap_or(Unit::Vector),
                )
            }
            _ => self.eff.get(&i).copied(),
        }
    }

    pub(super) fn access_bits(&self, k: &Kernel, b: Block, t: Tensor) -> u8 {
        let mut bits = 0;
        k.walk(b, &mut |i| {
            if let Some(u) = self.access_unit(k, i, t) {
                bits |= need_bits(Home::of(u));
            }
        });
        bits
    }

    pub(super) fn first_access(&self, k: &Kernel, b: Block, t: Tensor) -> Option<Unit> {
        let mut first = None;
        k.walk(b, &mut |i| {
            if first.is_none() {
                first = self.access_unit(k, i, t);
            }
        });
        first
    }

    /// Step 3: order accesses to GM tensors both units touch.
    pub(super) fn plan_gm_order(&mut self, k: &Kernel) -> Result<(), String> {
        let tensors: Vec<Tensor> = k.tensors.keys().collect();
        for t in tensors {
            if k.tensors[t].role == Role::Input || k.tensors[t].name.starts_with("ws_") {
                // Inputs are never written; the split's own workspaces are
                // ordered by their crossing flags.
                if k.tensors[t].role == Role::Input || self.crossings.iter().any(|c| c.ws == t) {
                    continue;
                }
            }
            if self.access_bits(k, self.an.top, t) != NEED_CUBE | NEED_VECTOR {
                continue;
            }
            if self.access_bits(k, self.an.par_body, t) != self.access_bits(k, self.an.top, t) {
                return Err(format!(
                    "split: tensor `{}` is accessed outside the `parallel`",
                    k.tensors[t].name
                ));
            }
            let st = self.tok_block(k, self.an.par_body, t, Tok::Free)?;
            self.normalize(st, Pos::End(self.an.par_body));
        }
        Ok(())
    }

    pub(super) fn tok_block(
        &mut self,
        k: &Kernel,
        b: Block,
        t: Tensor,
        mut st: Tok,
    ) -> Result<Tok, String> {
        for &i in &k.blocks[b].insts {
            if let Some(u) = self.access_unit(k, i, t) {
                self.acquire(st, u, Pos::Before(i))?;
                st = Tok::Owned(u, Some(i));
                continue;
            }
            let InstKind::For { body, .. } = k.kind(i) else {
                continue;
            };
            let body = *body;
            match self.access_bits(k, body, t) {
                0 => {}
                NEED_CUBE | NEED_VECTOR => {
                    let u = self.first_access(k, body, t).unwrap_or(Unit::Vector);
                    self.acquire(st, u, Pos::Before(i))?;
                    self.tok_block(k, body, t, Tok::Owned(u, None))?;
                    st = Tok::Owned(u, None);
                }
                _ => {
                    let f = self.first_access(k, body, t).unwrap_or(Unit::Vector);
                    let o = other(f);
                    let st0 = self.normalize(st, Pos::Before(i));
                    let flag = self.new_flag()?;
                    let pre = match st0 {
                        Tok::Owned(x, Some(last)) if x == o => Pos::After(last),
                        _ => Pos::Before(i),
                    };
                    self.emit(pre, o, Emit::Set(flag));
                    let end = self.tok_block(k, body, t, Tok::Pending(f, flag))?;
                    let end = self.normalize(end, Pos::End(body));
                    let post = match end {
                        Tok::Owned(x, Some(last)) if x == o => Pos::After(last),
                        _ => Pos::End(body),
                    };
                    self.emit(post, o, Emit::Set(flag));
                    st = Tok::Pending(f, flag);
                }
            }
        }
        Ok(st)
    }

    /// Makes `u` the owner of the token before the access at `pos`.
    pub(super) fn acquire(&mut self, st: Tok, u: Unit, pos: Pos) -> Result<(), String> {
        match st {
            Tok::Free => {}
            Tok::Owned(x, _) if x == u => {}
            Tok::Owned(x, last) => {
                let flag = self.new_flag()?;
                self.emit(last.map_or(pos, Pos::After), x, Emit::Set(flag));
                self.emit(pos, u, Emit::Wait(flag));
            }
            // The pending unit consumes the set; when it is not `u`, `u`
            // itself made that set after its last access, so it may go on.
            Tok::Pending(x, flag) => self.emit(pos, x, Emit::Wait(flag)),
        }
        Ok(())
    }

    pub(super) fn normalize(&mut self, st: Tok, pos: Pos) -> Tok {
        match st {
            Tok::Pending(x, flag) => {
                self.emit(pos, x, Emit::Wait(flag));
                Tok::Owned(x, None)
            }
            st => st,
        }
    }
}

/// Token state of the GM-order walk for one tensor.
#[derive(Copy, Clone, Debug)]
pub(super) enum Tok {
    /// Not accessed yet in this work item.
    Free,
    /// Last accessed by the unit (at the instruction, when it is in the
    /// current block).
    Owned(Unit, Option<Inst>),
    /// The other unit set the flag; this unit must wait for it before
    /// accessing (or just consume it).
    Pending(Unit, u32),
}
