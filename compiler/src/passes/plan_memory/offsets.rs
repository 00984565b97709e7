//! Step 5 of `plan-memory`: writing the offsets of slots and views into
//! `Kernel::offsets`, and the peak-usage note of an overflow.

use super::live_ranges::{Lin, View};
use super::slots::SlotUnit;
use super::*;

/// Writes offsets: slot members get the slot's, views their root's plus
/// their element offset, everything else `None`.
pub(super) fn write_offsets(
    k: &mut Kernel,
    lin: &Lin,
    units: &[SlotUnit],
    offs: &FxHashMap<usize, u64>,
    views: &FxHashMap<Value, View>,
) {
    for &v in &lin.tiles {
        k.offsets.set(v, None);
    }
    for (ui, u) in units.iter().enumerate() {
        if let Some(&o) = offs.get(&ui) {
            for &m in &u.members {
                k.offsets.set(m, Some(o));
            }
        }
    }
    for (&v, view) in views {
        let (Some(root_off), Some(rt)) = (k.offsets[view.root], k.ty(view.root).as_tile()) else {
            continue;
        };
        let off = root_off + view.elem_offset(&rt.shape) * rt.dtype.bytes();
        k.offsets.set(v, Some(off));
    }
}

pub(super) fn peak_note(k: &Kernel, unit: Unit, space: Space, target: &Target) -> String {
    let cap = capacity(target, space).unwrap_or(0);
    format!(
        "{}: {} peak {} of {} bytes",
        unit.name(),
        buffer_label(space),
        buffer_high_water(k, unit, space),
        cap
    )
}
