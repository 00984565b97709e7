//! The race checker (`LaunchConfig::race_check`, `amlac run --race-check`):
//! proves, for one launch, that every two GM accesses of different units
//! that touch the same element, at least one of them a write, are ordered
//! by a chain of flag `set` → `wait` edges (or are by the same unit).
//!
//! This is what makes [`crate::gm::GmAccess::Ordered`] (plain, non-atomic
//! GM accesses) sound for a schedule: the compiler's split pass claims that
//! every GM value crossing units goes store → `set_flag` → `wait_flag` →
//! load; a run under the race checker checks that claim on the accesses the
//! kernel really made.
//!
//! # Algorithm (vector clocks, as in FastTrack)
//!
//! Every unit `u` of the launch (global index `core · (1 + sub_blocks) +
//! unit code`) has a vector clock `C_u` over all units, starting at
//! `C_u[u] = 1`, everything else 0.
//! - `set_flag` by `u`: the clock `C_u` is queued on the flag (one queue per
//!   core, flag id, direction and Vector unit, in set order, matching the
//!   counters of [`crate::flags`]), then `C_u[u] += 1`. The clock is queued
//!   *before* the counter is raised, so the wait it releases finds it.
//! - `wait_flag` by `u` that returns: it consumes the oldest queued clock of
//!   its counter (the Cube one from every Vector unit) and joins it:
//!   `C_u = max(C_u, C_set)`.
//! - every GM element has a shadow cell: the last write (unit, epoch
//!   `C_w[w]` at the write, op) and, per unit, the last read (epoch, op).
//!   An access by `u` to an element races with a recorded access by `w ≠ u`
//!   when that access's epoch is `> C_u[w]` (`u` has not synchronised with
//!   `w` since) and one of the two is a write. Atomic adds count as writes.
//!
//! The first race stops the launch with [`RuntimeError::Race`], naming
//! both ops (the IR text JIT code registers with `amla_rt_site`), both
//! units, the element range, and the flag state (the epochs and the flag
//! counters still pending on the core).
//!
//! Only GM is tracked: no local buffer is shared between units (the Cube
//! owns L1/L0A/L0B/L0C, each Vector unit its UB, and every runtime call
//! checks ownership), so local accesses cannot race.
//!
//! Reports depend only on the flags' happens-before, not on how the host
//! happened to interleave the threads; a race whose accesses the host
//! ordered by luck is still reported. The cost: one lock per access and
//! `12 + 8 · units` bytes of shadow per GM element ([`shadow_bytes`]),
//! checked against [`SHADOW_LIMIT`] before anything runs.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use crate::error::RuntimeError;
use crate::gm::GmDesc;
use crate::units::UnitKind;

/// Most shadow memory a race-checked launch may use (bytes).
pub const SHADOW_LIMIT: u64 = 4 << 30;

/// What an access does to the elements it touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessKind {
    /// Reads them.
    Read,
    /// Overwrites them.
    Write,
    /// Reads and writes them (atomic add, in-place rescale).
    Update,
}

impl AccessKind {
    /// ABI code of `amla_rt_note_gm`: 0 read, 1 write, 2 update.
    pub fn from_code(c: u32) -> Option<AccessKind> {
        match c {
            0 => Some(AccessKind::Read),
            1 => Some(AccessKind::Write),
            2 => Some(AccessKind::Update),
            _ => None,
        }
    }

    fn writes(self) -> bool {
        self != AccessKind::Read
    }

    fn name(self) -> &'static str {
        match self {
            AccessKind::Read => "read",
            AccessKind::Write => "write",
            AccessKind::Update => "read-modify-write",
        }
    }
}

/// A 2-D GM region: `rows` rows of `cols` elements, row `r` at
/// `offset + r · stride` (elements of the buffer's dtype).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// GM buffer index.
    pub gm: u32,
    /// First element.
    pub offset: u64,
    /// Row stride in elements.
    pub stride: u64,
    /// Rows.
    pub rows: u64,
    /// Elements per row.
    pub cols: u64,
}

impl Region {
    /// One past the last element of a non-empty region (`None` on
    /// overflow); the region lies in a buffer of `len` elements when this is
    /// at most `len`.
    pub fn end(&self) -> Option<u64> {
        (self.rows - 1)
            .checked_mul(self.stride)
            .and_then(|x| x.checked_add(self.offset))
            .and_then(|x| x.checked_add(self.cols))
    }
}

/// Shadow bytes a race-checked launch over `descs` with `units` units needs.
pub fn shadow_bytes(descs: &[GmDesc], units: usize) -> u64 {
    let per = 12 + 8 * units as u64;
    descs
        .iter()
        .fold(0u64, |a, d| a.saturating_add(d.len.saturating_mul(per)))
}

#[derive(Clone, Copy, Default)]
struct WCell {
    /// Global unit + 1 (0: never written).
    unit: u32,
    epoch: u32,
    site: u32,
}

#[derive(Clone, Copy, Default)]
struct RCell {
    /// 0: never read by this unit.
    epoch: u32,
    site: u32,
}

struct Shadow {
    writes: Vec<WCell>,
    /// `[element * units + unit]`.
    reads: Vec<RCell>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Dir {
    ToVector,
    ToCube,
}

struct Inner {
    clocks: Vec<Vec<u32>>,
    queues: HashMap<(u32, u32, Dir, u32), VecDeque<Vec<u32>>>,
    shadow: Vec<Option<Shadow>>,
    sites: Vec<String>,
    site_ids: HashMap<String, u32>,
}

/// The race checker of one launch (shared by all units).
pub struct RaceState {
    units: usize,
    units_per_core: usize,
    sub_blocks: usize,
    gm_len: Vec<u64>,
    gm_names: Vec<String>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for RaceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaceState")
            .field("units_per_core", &self.units_per_core)
            .finish()
    }
}

/// One side of a race report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaceAccess {
    /// Core.
    pub core: u32,
    /// Unit.
    pub unit: UnitKind,
    /// The op (IR text when the kernel registered it, else the runtime
    /// operation's name).
    pub op: String,
    /// `read`, `write` or `read-modify-write`.
    pub kind: &'static str,
    /// The unit's flag epoch at the access.
    pub epoch: u32,
}

impl std::fmt::Display for RaceAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} by {} of core {} at its flag epoch {} in `{}`",
            self.kind, self.unit, self.core, self.epoch, self.op
        )
    }
}

impl RaceState {
    /// The checker for a launch of `cores` cores with `sub_blocks` Vector
    /// units each over GM `descs` (named `names`); an error naming the bytes
    /// when the shadow would exceed [`SHADOW_LIMIT`].
    pub fn new(
        cores: usize,
        sub_blocks: usize,
        descs: &[GmDesc],
        names: &[String],
    ) -> Result<RaceState, RuntimeError> {
        let upc = 1 + sub_blocks;
        let units = cores * upc;
        let need = shadow_bytes(descs, units);
        if need > SHADOW_LIMIT {
            return Err(RuntimeError::InvalidConfig(format!(
                "the race checker needs {need} bytes of shadow memory for {} GM elements \
                 and {units} units (limit {SHADOW_LIMIT}): use smaller dims or fewer cores",
                descs.iter().map(|d| d.len).sum::<u64>()
            )));
        }
        let clocks = (0..units)
            .map(|u| {
                let mut c = vec![0u32; units];
                c[u] = 1;
                c
            })
            .collect();
        Ok(RaceState {
            units,
            units_per_core: upc,
            sub_blocks,
            gm_len: descs.iter().map(|d| d.len).collect(),
            gm_names: names.to_vec(),
            inner: Mutex::new(Inner {
                clocks,
                queues: HashMap::new(),
                shadow: descs.iter().map(|_| None).collect(),
                sites: Vec::new(),
                site_ids: HashMap::new(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn global(&self, core: u32, unit: UnitKind) -> usize {
        core as usize * self.units_per_core + unit.code() as usize
    }

    fn local(&self, g: usize) -> (u32, UnitKind) {
        (
            (g / self.units_per_core) as u32,
            UnitKind::from_code((g % self.units_per_core) as u32),
        )
    }

    /// Called by `unit` just before it raises flag `id`'s counter.
    pub fn before_set(&self, core: u32, unit: UnitKind, id: u32) {
        let g = self.global(core, unit);
        let mut s = self.lock();
        let c = s.clocks[g].clone();
        match unit {
            UnitKind::Cube => {
                for v in 0..self.sub_blocks as u32 {
                    s.queues
                        .entry((core, id, Dir::ToVector, v))
                        .or_default()
                        .push_back(c.clone());
                }
            }
            UnitKind::Vector(v) => s
                .queues
                .entry((core, id, Dir::ToCube, v))
                .or_default()
                .push_back(c),
        }
        s.clocks[g][g] = s.clocks[g][g].saturating_add(1);
    }

    /// Called by `unit` when its wait on flag `id` returned: joins the clock
    /// of the set(s) it consumed.
    pub fn after_wait(&self, core: u32, unit: UnitKind, id: u32) {
        let g = self.global(core, unit);
        let mut s = self.lock();
        let keys: Vec<(u32, u32, Dir, u32)> = match unit {
            UnitKind::Cube => (0..self.sub_blocks as u32)
                .map(|v| (core, id, Dir::ToCube, v))
                .collect(),
            UnitKind::Vector(v) => vec![(core, id, Dir::ToVector, v)],
        };
        for k in keys {
            if let Some(c) = s.queues.get_mut(&k).and_then(VecDeque::pop_front) {
                for (mine, theirs) in s.clocks[g].iter_mut().zip(c) {
                    *mine = (*mine).max(theirs);
                }
            }
        }
    }

    fn site_id(s: &mut Inner, op: &str) -> u32 {
        if let Some(&i) = s.site_ids.get(op) {
            return i;
        }
        let i = s.sites.len() as u32;
        s.sites.push(op.to_string());
        s.site_ids.insert(op.to_string(), i);
        i
    }

    /// Records an access by `unit` of core `core` to `r`, done by `op`;
    /// the first unordered conflict is the error. `pending` describes the
    /// core's flag counters for the report.
    pub fn access(
        &self,
        core: u32,
        unit: UnitKind,
        r: &Region,
        kind: AccessKind,
        op: &str,
        pending: &dyn Fn() -> String,
    ) -> Result<(), RuntimeError> {
        if r.rows == 0 || r.cols == 0 {
            return Ok(());
        }
        let gi = r.gm as usize;
        let Some(&len) = self.gm_len.get(gi) else {
            return Err(RuntimeError::UnknownGmBuffer {
                index: r.gm as u64,
                count: self.gm_len.len() as u64,
            });
        };
        let end = r.end();
        if end.is_none_or(|e| e > len) {
            return Err(RuntimeError::OutOfBounds {
                what: format!("{op} (race checker)"),
                buffer: self.gm_name(gi),
                start: r.offset,
                end: end.unwrap_or(u64::MAX),
                capacity: len,
            });
        }
        let g = self.global(core, unit);
        let units = self.units;
        let mut guard = self.lock();
        let s = &mut *guard;
        let site = Self::site_id(s, op);
        let clock = &s.clocks[g];
        let epoch = clock[g];
        if s.shadow[gi].is_none() {
            let n = len as usize;
            let mut writes = Vec::new();
            let mut reads = Vec::new();
            if writes.try_reserve_exact(n).is_err()
                || reads.try_reserve_exact(n.saturating_mul(units)).is_err()
            {
                return Err(RuntimeError::AllocFailed {
                    bytes: n.saturating_mul(12 + 8 * units),
                });
            }
            writes.resize(n, WCell::default());
            reads.resize(n * units, RCell::default());
            s.shadow[gi] = Some(Shadow { writes, reads });
        }
        let sh = s.shadow[gi].as_mut().expect("allocated above");
        for row in 0..r.rows {
            let start = r.offset + row * r.stride;
            for e in start..start + r.cols {
                let ei = e as usize;
                let w = sh.writes[ei];
                // Write → this access.
                let mut conflict = None;
                if w.unit != 0 {
                    let wu = (w.unit - 1) as usize;
                    if wu != g && w.epoch > clock[wu] {
                        conflict = Some((wu, w.epoch, w.site, AccessKind::Write));
                    }
                }
                // Reads → this write.
                if conflict.is_none() && kind.writes() {
                    for (ru, rc) in sh.reads[ei * units..(ei + 1) * units].iter().enumerate() {
                        if ru != g && rc.epoch != 0 && rc.epoch > clock[ru] {
                            conflict = Some((ru, rc.epoch, rc.site, AccessKind::Read));
                            break;
                        }
                    }
                }
                if let Some((ou, oepoch, osite, okind)) = conflict {
                    // The run of conflicting elements in this row, for the report.
                    let run_end = (ei + 1..(start + r.cols) as usize)
                        .find(|&x| {
                            let w2 = sh.writes[x];
                            let same = match okind {
                                AccessKind::Read => {
                                    sh.reads[x * units + ou].epoch == oepoch
                                        && sh.reads[x * units + ou].site == osite
                                }
                                _ => w2.unit as usize == ou + 1 && w2.epoch == oepoch,
                            };
                            !same
                        })
                        .unwrap_or((start + r.cols) as usize);
                    let (oc, ounit) = self.local(ou);
                    let first = RaceAccess {
                        core: oc,
                        unit: ounit,
                        op: s.sites[osite as usize].clone(),
                        kind: okind.name(),
                        epoch: oepoch,
                    };
                    let second = RaceAccess {
                        core,
                        unit,
                        op: op.to_string(),
                        kind: kind.name(),
                        epoch,
                    };
                    let flags = format!(
                        "{unit} of core {core} has seen {ounit} of core {oc} only up to its \
                         epoch {} (no set_flag → wait_flag chain since that {}); pending flag \
                         counters of core {core}: {}",
                        clock[ou],
                        okind.name(),
                        pending()
                    );
                    return Err(RuntimeError::Race {
                        buffer: self.gm_name(gi),
                        start: e,
                        end: run_end as u64,
                        first: Box::new(first),
                        second: Box::new(second),
                        flags,
                    });
                }
            }
        }
        for row in 0..r.rows {
            let start = (r.offset + row * r.stride) as usize;
            for ei in start..start + r.cols as usize {
                if kind.writes() {
                    sh.writes[ei] = WCell {
                        unit: g as u32 + 1,
                        epoch,
                        site,
                    };
                }
                if kind != AccessKind::Write {
                    sh.reads[ei * units + g] = RCell { epoch, site };
                }
            }
        }
        Ok(())
    }

    fn gm_name(&self, i: usize) -> String {
        format!(
            "gm buffer {i} `{}`",
            self.gm_names.get(i).map_or("?", String::as_str)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(len: u64) -> GmDesc {
        GmDesc {
            base: std::ptr::null_mut(),
            len,
            dtype: 0,
            elem_bytes: 4,
        }
    }

    fn row(off: u64, cols: u64) -> Region {
        Region {
            gm: 0,
            offset: off,
            stride: cols,
            rows: 1,
            cols,
        }
    }

    const C: UnitKind = UnitKind::Cube;
    const V0: UnitKind = UnitKind::Vector(0);

    fn none() -> String {
        "none".into()
    }

    #[test]
    fn a_flag_orders_store_then_load() {
        let r = RaceState::new(1, 1, &[desc(64)], &["ws".into()]).unwrap();
        r.access(0, C, &row(0, 16), AccessKind::Write, "store", &none)
            .unwrap();
        r.before_set(0, C, 3);
        r.after_wait(0, V0, 3);
        r.access(0, V0, &row(0, 16), AccessKind::Read, "load", &none)
            .unwrap();
        // Disjoint elements never conflict.
        r.access(0, C, &row(32, 16), AccessKind::Write, "store2", &none)
            .unwrap();
    }

    #[test]
    fn a_missing_wait_is_a_race_naming_both_ops() {
        let r = RaceState::new(1, 1, &[desc(64)], &["ws".into()]).unwrap();
        r.access(0, C, &row(8, 16), AccessKind::Write, "store ws", &none)
            .unwrap();
        r.before_set(0, C, 3);
        // No wait: the load is not ordered after the store.
        let e = r
            .access(0, V0, &row(0, 16), AccessKind::Read, "load ws", &none)
            .unwrap_err();
        match &e {
            RuntimeError::Race {
                buffer,
                start,
                end,
                first,
                second,
                ..
            } => {
                assert_eq!(buffer, "gm buffer 0 `ws`");
                assert_eq!((*start, *end), (8, 16));
                assert_eq!((first.unit, first.op.as_str()), (C, "store ws"));
                assert_eq!((second.unit, second.op.as_str()), (V0, "load ws"));
            }
            other => panic!("{other}"),
        }
        let s = e.to_string();
        assert!(
            s.contains("write by cube") && s.contains("read by vector0"),
            "{s}"
        );
    }

    #[test]
    fn a_write_after_an_unordered_read_is_a_race() {
        let r = RaceState::new(1, 1, &[desc(64)], &["ws".into()]).unwrap();
        r.access(0, V0, &row(0, 4), AccessKind::Read, "load", &none)
            .unwrap();
        // The Cube overwrites without waiting for the Vector's "done" flag.
        let e = r
            .access(0, C, &row(0, 4), AccessKind::Write, "store", &none)
            .unwrap_err();
        assert!(matches!(e, RuntimeError::Race { .. }), "{e}");
        // With the flag (vector set → cube wait), it is ordered.
        let r = RaceState::new(1, 1, &[desc(64)], &["ws".into()]).unwrap();
        r.access(0, V0, &row(0, 4), AccessKind::Read, "load", &none)
            .unwrap();
        r.before_set(0, V0, 1);
        r.after_wait(0, C, 1);
        r.access(0, C, &row(0, 4), AccessKind::Write, "store", &none)
            .unwrap();
    }

    #[test]
    fn happens_before_is_transitive_and_reads_do_not_conflict() {
        let r = RaceState::new(1, 2, &[desc(64)], &["ws".into()]).unwrap();
        let v1 = UnitKind::Vector(1);
        r.access(0, V0, &row(0, 8), AccessKind::Write, "w", &none)
            .unwrap();
        // vector0 → cube (needs both vectors' sets) → vector1.
        r.before_set(0, V0, 0);
        r.before_set(0, v1, 0);
        r.after_wait(0, C, 0);
        r.before_set(0, C, 1);
        r.after_wait(0, v1, 1);
        r.access(0, v1, &row(0, 8), AccessKind::Update, "add", &none)
            .unwrap();
        r.access(0, C, &row(16, 8), AccessKind::Read, "r1", &none)
            .unwrap();
        r.access(0, V0, &row(16, 8), AccessKind::Read, "r2", &none)
            .unwrap();
    }

    #[test]
    fn the_shadow_limit_is_an_error_naming_the_bytes() {
        let e = RaceState::new(4, 2, &[desc(1 << 40)], &["kv".into()]).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains(&shadow_bytes(&[desc(1 << 40)], 12).to_string()),
            "{s}"
        );
    }
}
