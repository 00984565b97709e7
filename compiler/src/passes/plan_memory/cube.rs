//! Placement in the Cube function: loads to `l1`, `extract` views, matmul
//! operands copied to `l0a`/`l0b`, results in `l0c`; then the steps above
//! per buffer, and the error naming buffer, tile and bytes on an overflow.

use super::linear_scan::{Overflow, align_up, linear_scan};
use super::live_ranges::View;
use super::offsets::{peak_note, write_offsets};
use super::slots::{SlotUnit, build_slots};
use super::*;

/// The constant value of an `i32` scalar defined by `iconst`.
pub(super) fn const_of(k: &Kernel, v: Value) -> Option<i64> {
    match k.def_inst(v).map(|i| &k.insts[i].kind) {
        Some(InstKind::IConst(c)) => Some(*c),
        _ => None,
    }
}

pub(super) fn view_of(
    k: &Kernel,
    views: &FxHashMap<Value, View>,
    src: Value,
    index: &[Index],
    what: Value,
) -> Result<View> {
    let base = match views.get(&src) {
        Some(v) => v.clone(),
        None => {
            let rank = k.ty(src).shape().len();
            View {
                root: src,
                dims: (0..rank).collect(),
                start: vec![0; rank],
            }
        }
    };
    if index.len() != base.dims.len() {
        return fail(format!(
            "plan-memory: extract {} has {} indices for a rank-{} tile",
            value_label(k, what),
            index.len(),
            base.dims.len()
        ));
    }
    let mut out = View {
        root: base.root,
        dims: Vec::new(),
        start: base.start.clone(),
    };
    for (ix, &rd) in index.iter().zip(&base.dims) {
        let (start, keep) = match ix {
            Index::Point(s) => (Some(*s), false),
            Index::Range { start, .. } => (Some(*start), true),
            Index::Full => (None, true),
        };
        if let Some(s) = start {
            let Some(c) = const_of(k, s).and_then(|c| u64::try_from(c).ok()) else {
                return fail(format!(
                    "plan-memory: extract {} of l1 tile {} has a non-constant index {}: \
                     an l1 view needs a static offset",
                    value_label(k, what),
                    value_label(k, src),
                    value_label(k, s)
                ));
            };
            out.start[rd] += c;
        }
        if keep {
            out.dims.push(rd);
        }
    }
    Ok(out)
}

pub(super) fn block_map(k: &Kernel, block: Block, out: &mut FxHashMap<Inst, Block>) {
    for &i in &k.blocks[block].insts {
        out.insert(i, block);
        if let Some(b) = k.insts[i].kind.body() {
            block_map(k, b, out);
        }
    }
}

pub(super) fn plan_cube(
    k: &mut Kernel,
    body: Block,
    target: &Target,
    config: &PlanMemoryConfig,
    report: &mut PlanMemoryReport,
) -> Result<()> {
    // 1. Spaces and views, in pre-order (loop parameters take the space of
    //    their initial value, which comes earlier).
    let mut insts = Vec::new();
    k.walk(body, &mut |i| insts.push(i));
    let mut views: FxHashMap<Value, View> = FxHashMap::default();
    let mut matmuls = Vec::new();
    for &i in &insts {
        let kind = k.insts[i].kind.clone();
        let results = k.insts[i].results.clone();
        let tiles: Vec<Value> = results
            .iter()
            .copied()
            .filter(|&r| k.ty(r).as_tile().is_some())
            .collect();
        match &kind {
            InstKind::Load { .. } => tiles.iter().for_each(|&r| set_space(k, r, Space::L1)),
            InstKind::Extract { src, index } => {
                let s = space_of(k, *src);
                let Some(&r) = tiles.first() else { continue };
                if s != Space::L1 {
                    return fail(format!(
                        "plan-memory: extract {} from {}, which lives in {}: the cube \
                         extracts only from l1 tiles",
                        value_label(k, r),
                        tile_label(k, *src),
                        s
                    ));
                }
                let view = view_of(k, &views, *src, index, r)?;
                views.insert(r, view);
                set_space(k, r, Space::L1);
            }
            InstKind::Copy { src, to } => {
                if matches!(to, Space::Any | Space::Ub) {
                    return fail(format!(
                        "plan-memory: copy of {} to {} in the cube function",
                        tile_label(k, *src),
                        to
                    ));
                }
                tiles.iter().for_each(|&r| set_space(k, r, *to));
            }
            InstKind::Matmul { .. } => {
                tiles.iter().for_each(|&r| set_space(k, r, Space::L0C));
                matmuls.push(i);
            }
            InstKind::For { init, body: b, .. } => {
                let params = k.blocks[*b].params.clone();
                for (j, &iv) in init.iter().enumerate() {
                    if k.ty(iv).as_tile().is_none() {
                        continue;
                    }
                    let s = space_of(k, iv);
                    if s == Space::Any {
                        return fail(format!(
                            "plan-memory: loop-carried tile {} has no placed initial value",
                            tile_label(k, iv)
                        ));
                    }
                    if let Some(&p) = params.get(j + 1) {
                        set_space(k, p, s);
                    }
                    if let Some(&r) = results.get(j) {
                        set_space(k, r, s);
                    }
                }
            }
            InstKind::Store { value, .. } | InstKind::AtomicAdd { value, .. } => {
                let s = space_of(k, *value);
                if k.ty(*value).as_tile().is_some() && !matches!(s, Space::L1 | Space::L0C) {
                    return fail(format!(
                        "plan-memory: `{}` of {} from {}: the cube writes GM from l0c \
                         (FixPipe) or l1 only",
                        kind.opcode(),
                        tile_label(k, *value),
                        s
                    ));
                }
            }
            InstKind::IConst(_)
            | InstKind::FConst(..)
            | InstKind::DimValue(_)
            | InstKind::SubBlock
            | InstKind::SetFlag(_)
            | InstKind::WaitFlag(_)
            | InstKind::Parallel { .. }
            | InstKind::Yield(_) => {}
            _ => {
                if !tiles.is_empty() {
                    return Err(unexpected(k, Unit::Cube, i));
                }
            }
        }
    }

    // 2. Matmul operands go through L0A/L0B; the accumulator is in L0C.
    let mut blocks = FxHashMap::default();
    block_map(k, body, &mut blocks);
    for m in matmuls {
        let InstKind::Matmul { a, b, acc, .. } = k.insts[m].kind.clone() else {
            continue;
        };
        if let Some(c) = acc
            && space_of(k, c) != Space::L0C
        {
            return fail(format!(
                "plan-memory: matmul accumulator {} lives in {}, not l0c",
                tile_label(k, c),
                space_of(k, c)
            ));
        }
        for (operand, want) in [(a, Space::L0A), (b, Space::L0B)] {
            let s = space_of(k, operand);
            if s == want {
                continue;
            }
            if s != Space::L1 {
                return fail(format!(
                    "plan-memory: matmul operand {} lives in {}; only l1 tiles can be \
                     copied to {}",
                    tile_label(k, operand),
                    s,
                    buffer_label(want)
                ));
            }
            let c = copy_before(k, blocks[&m], m, operand, want)?;
            let base = k.values[operand].name.clone().unwrap_or_else(|| "t".into());
            k.values[c].name = Some(format!("{base}_{want}"));
            if let InstKind::Matmul { a, b, .. } = &mut k.insts[m].kind {
                if want == Space::L0A {
                    *a = c;
                } else {
                    *b = c;
                }
            }
            config.explain.push(&mut report.notes, || {
                format!(
                    "cube: inserted `copy {} to {}` for an untiled matmul (run `tile` \
                 before plan-memory to chunk and double-buffer it)",
                    value_label(k, operand),
                    want
                )
            });
        }
    }

    // 3. Slots and allocation.
    let (lin, units) = build_slots(k, body, &views, config.explain, &mut report.notes)?;
    let mut offs = FxHashMap::default();
    for space in [Space::L1, Space::L0A, Space::L0B, Space::L0C] {
        let cap = capacity(target, space).unwrap_or(0);
        match linear_scan(&units, space, cap, config.align) {
            Ok(o) => offs.extend(o),
            Err(ov) => return Err(cube_overflow(k, &units, &ov, space, cap, config.align)),
        }
    }
    write_offsets(k, &lin, &units, &offs, &views);
    for space in [Space::L1, Space::L0A, Space::L0B, Space::L0C] {
        config.explain.push(&mut report.notes, || {
            peak_note(k, Unit::Cube, space, target)
        });
    }
    Ok(())
}

pub(super) fn cube_overflow(
    k: &Kernel,
    units: &[SlotUnit],
    ov: &Overflow,
    space: Space,
    cap: u64,
    align: u64,
) -> PlanMemoryError {
    let u = &units[ov.unit];
    let buf = buffer_label(space);
    let hint = if matches!(space, Space::L0A | Space::L0B | Space::L0C) {
        " (run the `tile` pass before plan-memory to cut matmuls into L0-sized chunks)"
    } else {
        " (use smaller tiles, e.g. a smaller KV block)"
    };
    let span = k.def_inst(u.rep).and_then(|i| k.spans[i]);
    if align_up(u.bytes, align) > cap {
        return PlanMemoryError {
            message: format!(
                "tile {} needs {} bytes of {buf} but {buf} holds {cap} bytes{hint}",
                tile_label(k, u.rep),
                u.bytes
            ),
            kind: PlanErrorKind::DoesNotFit {
                buffer: space,
                tile: tile_label(k, u.rep),
                bytes: u.bytes,
                capacity: cap,
                span,
            },
        };
    }
    let used: u64 = ov
        .live
        .iter()
        .map(|&a| align_up(units[a].bytes, align))
        .sum();
    let live: Vec<String> = ov
        .live
        .iter()
        .map(|&a| format!("{} ({} bytes)", tile_label(k, units[a].rep), units[a].bytes))
        .collect();
    PlanMemoryError {
        message: format!(
            "tile {} needs {} bytes of {buf} but {buf} holds {cap} bytes and {used} are \
             taken by tiles live at the same time: {}{hint}",
            tile_label(k, u.rep),
            u.bytes,
            live.join(", ")
        ),
        kind: PlanErrorKind::User { span },
    }
}
