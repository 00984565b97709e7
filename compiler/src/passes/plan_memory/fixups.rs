//! Step 3 of `plan-memory`: inserting the copies coalescing asked for.

use super::coalesce::Fixup;
use super::live_ranges::Lin;
use super::*;

/// Applies fixups: each inserted copy takes the space of the slot it joins.
pub(super) fn apply_fixups(
    k: &mut Kernel,
    lin: &Lin,
    fixups: Vec<Fixup>,
    explain: Explain,
    notes: &mut Vec<String>,
) -> Result<()> {
    for f in fixups {
        match f {
            Fixup::Init(i, j) => {
                let InstKind::For { init, body, .. } = &k.insts[i].kind else {
                    continue;
                };
                let (v, p) = (init[j], k.blocks[*body].params[j + 1]);
                let to = space_of(k, p);
                let c = copy_before(k, lin.block_of[&i], i, v, to)?;
                if let InstKind::For { init, .. } = &mut k.insts[i].kind {
                    init[j] = c;
                }
                explain.push(notes, || format!(
                    "copy of {} inserted before its loop: the loop-carried slot needs its own storage",
                    value_label(k, v)
                ));
            }
            Fixup::Yield(y, j) => {
                let InstKind::Yield(vs) = &k.insts[y].kind else {
                    continue;
                };
                let v = vs[j];
                let block = lin.block_of[&y];
                let Some(&l) = lin.owner.get(&block) else {
                    continue;
                };
                let InstKind::For { body, .. } = &k.insts[l].kind else {
                    continue;
                };
                let to = space_of(k, k.blocks[*body].params[j + 1]);
                let c = copy_before(k, block, y, v, to)?;
                if let InstKind::Yield(vs) = &mut k.insts[y].kind {
                    vs[j] = c;
                }
                explain.push(notes, || format!(
                    "copy of {} inserted before `yield`: it is live together with the carried value it replaces",
                    value_label(k, v)
                ));
            }
            Fixup::Acc(m) => {
                let InstKind::Matmul { acc: Some(c), .. } = &k.insts[m].kind else {
                    continue;
                };
                let c = *c;
                let cp = copy_before(k, lin.block_of[&m], m, c, space_of(k, c))?;
                if let InstKind::Matmul { acc, .. } = &mut k.insts[m].kind {
                    *acc = Some(cp);
                }
                explain.push(notes, || format!(
                    "copy of accumulator {} inserted: it is still needed after the matmul that accumulates into it",
                    value_label(k, c)
                ));
            }
        }
    }
    Ok(())
}
