//! Steps 1 to 3 of `plan-memory` for one function: links up the structure,
//! coalesces and applies fixups until every carried tile and accumulator
//! shares a slot, and returns the slots to allocate.

use super::coalesce::coalesce;
use super::fixups::apply_fixups;
use super::live_ranges::{Lin, View, live_ranges};
use super::*;

/// A slot to allocate.
#[derive(Clone, Debug)]
pub(super) struct SlotUnit {
    pub(super) rep: Value,
    pub(super) members: Vec<Value>,
    pub(super) space: Space,
    pub(super) start: u32,
    pub(super) end: u32,
    pub(super) bytes: u64,
}

/// Links up the structure, inserting copies until every carried tile and
/// accumulator can share a slot; returns the slots to allocate.
pub(super) fn build_slots(
    k: &mut Kernel,
    body: Block,
    views: &FxHashMap<Value, View>,
    explain: Explain,
    notes: &mut Vec<String>,
) -> Result<(Lin, Vec<SlotUnit>)> {
    for _round in 0..4 {
        let lin = Lin::new(k, body);
        let ranges = live_ranges(k, &lin, views)?;
        match coalesce(k, &lin, &ranges, views) {
            Ok(mut plan) => {
                let vals: Vec<Value> = lin
                    .tiles
                    .iter()
                    .copied()
                    .filter(|v| !views.contains_key(v))
                    .collect();
                let groups = plan.slots.members(&vals);
                let mut carried_by: FxHashMap<Value, Vec<(u32, u32)>> = FxHashMap::default();
                for (p, s, e) in &plan.carried {
                    let r = plan.slots.find(*p);
                    carried_by.entry(r).or_default().push((*s, *e));
                }
                let mut units = Vec::new();
                for (rep, members) in groups {
                    let mut start = u32::MAX;
                    let mut end = 0;
                    for m in &members {
                        let (a, b) = ranges[m];
                        start = start.min(a);
                        end = end.max(b);
                    }
                    for (s, e) in carried_by.get(&rep).into_iter().flatten() {
                        start = start.min(*s);
                        end = end.max(*e);
                    }
                    let space = space_of(k, rep);
                    if let Some(bad) = members.iter().find(|&&m| space_of(k, m) != space) {
                        return fail(format!(
                            "plan-memory: internal: {} and {} share a slot but live in {} and {}",
                            value_label(k, rep),
                            value_label(k, *bad),
                            space,
                            space_of(k, *bad)
                        ));
                    }
                    let bytes = k.ty(rep).as_tile().map_or(0, |t| t.bytes());
                    units.push(SlotUnit {
                        rep,
                        members,
                        space,
                        start,
                        end,
                        bytes,
                    });
                }
                units.sort_by_key(|u| (u.start, std::cmp::Reverse(u.bytes), u.rep));
                return Ok((lin, units));
            }
            Err(fixups) => apply_fixups(k, &lin, fixups, explain, notes)?,
        }
    }
    fail(
        "plan-memory: cannot give loop-carried tiles one slot each \
         (tiles permuted at `yield`?): unsupported IR",
    )
}
