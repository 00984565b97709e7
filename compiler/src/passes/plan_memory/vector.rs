//! Placement in the Vector function: every tile in `ub`, except those that
//! do not fit, which go to `gm` (streamed through UB by codegen).

use super::linear_scan::{align_up, linear_scan};
use super::offsets::{peak_note, write_offsets};
use super::slots::build_slots;
use super::*;

pub(super) fn plan_vector(
    k: &mut Kernel,
    body: Block,
    target: &Target,
    config: &PlanMemoryConfig,
    report: &mut PlanMemoryReport,
) -> Result<()> {
    let mut insts = Vec::new();
    k.walk(body, &mut |i| insts.push(i));
    for &i in &insts {
        let kind = k.insts[i].kind.clone();
        match &kind {
            InstKind::Matmul { .. } => return Err(unexpected(k, Unit::Vector, i)),
            InstKind::Copy { src, to } => match to {
                Space::Ub | Space::Gm => {}
                Space::Any => {
                    if let InstKind::Copy { to, .. } = &mut k.insts[i].kind {
                        *to = Space::Ub;
                    }
                }
                _ => {
                    return fail(format!(
                        "plan-memory: copy of {} to {} in the vector function",
                        tile_label(k, *src),
                        to
                    ));
                }
            },
            _ => {}
        }
        let results = k.insts[i].results.clone();
        for r in results {
            if k.ty(r).as_tile().is_some() {
                let s = match &k.insts[i].kind {
                    InstKind::Copy { to, .. } => *to,
                    _ => Space::Ub,
                };
                set_space(k, r, s);
            }
        }
        if let Some(b) = k.insts[i].kind.body() {
            let params = k.blocks[b].params.clone();
            for (j, p) in params.into_iter().enumerate() {
                if k.ty(p).as_tile().is_none() {
                    continue;
                }
                let s = match &k.insts[i].kind {
                    InstKind::For { init, .. } => init
                        .get(j.wrapping_sub(1))
                        .map_or(Space::Ub, |&v| space_of(k, v)),
                    _ => Space::Ub,
                };
                set_space(k, p, s);
            }
        }
    }
    let views = FxHashMap::default();
    let (lin, units) = build_slots(k, body, &views, config.explain, &mut report.notes)?;

    let ub = target.buffers.ub;
    let usable = ub.saturating_sub(config.ub_stream_reserve);
    let mut in_gm: FxHashSet<usize> = FxHashSet::default();
    let mut units = units;
    // Slots already in GM (a copy to gm) stay there.
    for (ui, u) in units.iter().enumerate() {
        if u.space == Space::Gm {
            in_gm.insert(ui);
        }
    }
    for (ui, u) in units.iter_mut().enumerate() {
        if u.space == Space::Ub && align_up(u.bytes, config.align) > usable {
            u.space = Space::Gm;
            in_gm.insert(ui);
            config.explain.push(&mut report.notes, || format!(
                "vector: {} ({} bytes) lives in gm: larger than the {usable} usable bytes of UB \
                 ({ub} minus {} kept free to stream gm tiles); codegen streams it through UB in \
                 row chunks",
                tile_label(k, u.rep),
                u.bytes,
                config.ub_stream_reserve
            ));
        }
    }
    let offs = loop {
        let cap = if in_gm.is_empty() { ub } else { usable };
        match linear_scan(&units, Space::Ub, cap, config.align) {
            Ok(o) => break o,
            Err(ov) => {
                // Send the largest tile live at the overflow to GM.
                let mut cands = ov.live.clone();
                cands.push(ov.unit);
                let victim = cands
                    .into_iter()
                    .max_by_key(|&a| {
                        (
                            units[a].bytes,
                            units[a].end - units[a].start,
                            std::cmp::Reverse(a),
                        )
                    })
                    .unwrap_or(ov.unit);
                let at = lin
                    .at
                    .get(&units[ov.unit].start)
                    .map_or("a loop".to_string(), |&i| {
                        format!("`{}`", k.insts[i].kind.opcode())
                    });
                config.explain.push(&mut report.notes, || {
                    format!(
                        "vector: {} ({} bytes) lives in gm: UB ({cap} usable bytes) overflows \
                     where {} is defined by {at}, and it is the largest tile live there",
                        tile_label(k, units[victim].rep),
                        units[victim].bytes,
                        value_label(k, units[ov.unit].rep),
                    )
                });
                units[victim].space = Space::Gm;
                in_gm.insert(victim);
            }
        }
    };
    // Write spaces (copies whose result went to GM now copy to gm).
    for u in &units {
        for &m in &u.members {
            set_space(k, m, u.space);
            if let ValueDef::Result(i, _) = k.values[m].def
                && let InstKind::Copy { to, .. } = &mut k.insts[i].kind
            {
                *to = u.space;
            }
        }
        if u.space == Space::Gm {
            report.vector_gm_tiles.push(u.rep);
        }
    }
    write_offsets(k, &lin, &units, &offs, &views);
    config.explain.push(&mut report.notes, || {
        peak_note(k, Unit::Vector, Space::Ub, target)
    });
    Ok(())
}
