//! Step 4 of `plan-memory`: linear scan, first fit, of the slots of one
//! buffer.

use super::slots::SlotUnit;
use super::*;

pub(super) fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

/// Why a slot could not be placed.
pub(super) struct Overflow {
    /// Index into the unit list.
    pub(super) unit: usize,
    /// Units live at the same time (indices).
    pub(super) live: Vec<usize>,
}

/// Linear scan, first fit. Returns the offset of every unit of `space`
/// (indexed like `units`), or the first unit that does not fit.
pub(super) fn linear_scan(
    units: &[SlotUnit],
    space: Space,
    cap: u64,
    align: u64,
) -> std::result::Result<FxHashMap<usize, u64>, Overflow> {
    let mut offs = FxHashMap::default();
    let mut active: Vec<(usize, u64, u64)> = Vec::new(); // unit, offset, size
    for (ui, u) in units.iter().enumerate() {
        if u.space != space {
            continue;
        }
        active.retain(|&(a, _, _)| units[a].end >= u.start);
        let size = align_up(u.bytes.max(1), align);
        let mut cands: Vec<u64> = vec![0];
        cands.extend(active.iter().map(|&(_, o, s)| align_up(o + s, align)));
        cands.sort_unstable();
        let fit = cands.into_iter().find(|&c| {
            c + size <= cap && active.iter().all(|&(_, o, s)| c + size <= o || o + s <= c)
        });
        match fit {
            Some(c) => {
                offs.insert(ui, c);
                active.push((ui, c, size));
            }
            None => {
                return Err(Overflow {
                    unit: ui,
                    live: active.iter().map(|&(a, _, _)| a).collect(),
                });
            }
        }
    }
    Ok(offs)
}
