//! Step 5 of `split`: "slot free" flags for crossings inside loops that the
//! flags already there do not protect.

use super::*;

impl SplitState {
    /// Step 5: "slot free" flags for crossings inside loops that the
    /// existing flags do not already protect (see the module docs).
    pub(super) fn add_back_pressure(&mut self, k: &mut Kernel) -> Result<(), String> {
        let mut parents = FxHashMap::default();
        for f in &k.funcs {
            fill_parents(k, f.body, &mut parents);
        }
        for c in self.crossings.clone() {
            let Some(of) = c.in_for else { continue };
            let (Some(&xf), Some(&yf)) = (
                self.for_map.get(&(of, c.from)),
                self.for_map.get(&(of, c.to)),
            ) else {
                continue;
            };
            let (Some(&xp), Some(&yp)) = (parents.get(&xf), parents.get(&yf)) else {
                continue;
            };
            let (Some(xb), Some(yb)) = (k.kind(xf).body(), k.kind(yf).body()) else {
                continue;
            };
            let find = |b: Block, store: bool| {
                k.blocks[b].insts.iter().position(|&i| match k.kind(i) {
                    InstKind::Store { tensor, .. } => store && *tensor == c.ws,
                    InstKind::Load { tensor, .. } => !store && *tensor == c.ws,
                    _ => false,
                })
            };
            let (Some(s_e), Some(l_e)) = (find(xb, true), find(yb, false)) else {
                // The consumer's load died (its value was unused): nothing
                // reads the slot, so nothing to protect.
                continue;
            };
            if proven(k, (xb, s_e), (yp, yf, yb, l_e)) {
                continue;
            }
            let g = self.new_flag()?;
            // Consumer: credit before the loop, "free" after each load.
            insert(k, yb, l_e + 1, InstKind::SetFlag(g))?;
            let ypos = k.blocks[yp]
                .insts
                .iter()
                .position(|&i| i == yf)
                .unwrap_or(0);
            insert(k, yp, ypos, InstKind::SetFlag(g))?;
            // Producer: wait before each store, drain the credit after.
            insert(k, xb, s_e, InstKind::WaitFlag(g))?;
            let xpos = k.blocks[xp]
                .insts
                .iter()
                .position(|&i| i == xf)
                .unwrap_or(0);
            insert(k, xp, xpos + 1, InstKind::WaitFlag(g))?;
        }
        Ok(())
    }
}

/// True when the flags already in the loop bodies make the producer's next
/// store wait for the consumer's load (see the module docs).
fn proven(
    k: &Kernel,
    (xb, s_e): (Block, usize),
    (yp, yf, yb, l_e): (Block, Inst, Block, usize),
) -> bool {
    // Candidate edges: flags set in the consumer's body and waited in the
    // producer's body, exactly once each (counting nested blocks).
    let direct = |b: Block, set: bool| -> Vec<(u32, usize)> {
        k.blocks[b]
            .insts
            .iter()
            .enumerate()
            .filter_map(|(n, &i)| match (k.kind(i), set) {
                (InstKind::SetFlag(f), true) | (InstKind::WaitFlag(f), false) => Some((*f, n)),
                _ => None,
            })
            .collect()
    };
    let count = |b: Block, f: u32, set: bool| {
        let mut n = 0;
        k.walk(b, &mut |i| match (k.kind(i), set) {
            (InstKind::SetFlag(g), true) | (InstKind::WaitFlag(g), false) if *g == f => n += 1,
            _ => {}
        });
        n
    };
    let ypos = k.blocks[yp]
        .insts
        .iter()
        .position(|&i| i == yf)
        .unwrap_or(0);
    for (f, set_at) in direct(yb, true) {
        let Some(&(_, wait_at)) = direct(xb, false).iter().find(|(g, _)| *g == f) else {
            continue;
        };
        if count(yb, f, true) != 1 || count(xb, f, false) != 1 {
            continue;
        }
        let credit = k.blocks[yp].insts[..ypos]
            .iter()
            .filter(|&&i| matches!(k.kind(i), InstKind::SetFlag(g) if *g == f))
            .count();
        let ok = match credit {
            0 => wait_at < s_e || (wait_at > s_e && set_at > l_e),
            1 => wait_at < s_e && set_at > l_e,
            _ => false,
        };
        if ok {
            return true;
        }
    }
    false
}
