//! The capacity check that runs on the lowered IR before any pass.
//!
//! Every tile's size is computed with checked arithmetic, and compared with
//! the largest buffer its unit can give it:
//!
//! - a `matmul` operand is staged whole in the Cube's L1 (plan-memory loads
//!   or copies it there, and `tile` cuts its L0 chunks out of it), so it must
//!   fit L1;
//! - any other tile may end up in a local buffer or, on the Vector side, in
//!   global memory (plan-memory sends a tile UB cannot hold to `gm`), so it
//!   must fit the chip's HBM (`chip.hbm_bytes` of the target; a target
//!   without it only refuses sizes that overflow 64 bits).
//!
//! A tile that breaks either rule is [`PassError::DoesNotFit`] (E0034)
//! pointing at the expression that makes it: the passes never see a tile
//! whose byte count overflows `u64`, and a kernel that cannot fit fails in
//! microseconds instead of after the whole pipeline.
//!
//! Example: with `dim H = 4096`, `let qt = q[b];` makes `%qt: bf16[4096,
//! 576]`, a matmul operand of 4096 · 576 · 2 bytes, more than the target's
//! L1: the check reports `tile %qt: bf16[4096, 576] needs … bytes but l1
//! holds …` at `q[b]`.

use crate::ir::{InstKind, Kernel, Space, Type, Value};
use crate::passes::PassError;
use crate::passes::plan_memory::tile_label;
use crate::target::Target;

/// Checks every tile of `k` (lowered, before any pass) against the buffers
/// of `target`; the first tile that cannot fit is the error.
pub fn check_capacities(k: &Kernel, target: &Target) -> Result<(), PassError> {
    let mut operands = rustc_hash::FxHashSet::default();
    for f in &k.funcs {
        k.walk(f.body, &mut |i| {
            if let InstKind::Matmul { a, b, .. } = k.kind(i) {
                operands.insert(*a);
                operands.insert(*b);
            }
        });
    }
    let mut first = None;
    for f in &k.funcs {
        k.walk(f.body, &mut |i| {
            if first.is_some() {
                return;
            }
            for &v in &k.insts[i].results {
                let (space, cap) = if operands.contains(&v) {
                    (Space::L1, target.buffers.l1)
                } else {
                    (Space::Gm, target.chip.hbm_bytes.unwrap_or(u64::MAX))
                };
                if let Some(e) = check_value(k, v, space, cap) {
                    first = Some(e);
                    return;
                }
            }
        });
    }
    first.map_or(Ok(()), Err)
}

fn check_value(k: &Kernel, v: Value, space: Space, capacity: u64) -> Option<PassError> {
    let Type::Tile(t) = k.ty(v) else {
        return None;
    };
    let bytes = t.checked_bytes().unwrap_or(u64::MAX);
    if bytes <= capacity {
        return None;
    }
    Some(PassError::DoesNotFit {
        buffer: space,
        tile: tile_label(k, v),
        bytes,
        capacity,
        span: k.def_inst(v).and_then(|i| k.spans[i]),
    })
}
