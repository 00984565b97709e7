//! Per-unit, per-pipe statistics: calls, bytes, flops and busy nanoseconds.
//!
//! Invariants: every unit thread owns its own [`PipeStats`] during a launch
//! (no sharing, no atomics); the launcher merges them into [`LaunchStats`]
//! after all threads joined. `busy_ns` is wall time spent in the operation on
//! that unit's thread.

use std::fmt::Write as _;

use crate::units::{Pipe, UnitKind};

/// Counters of one pipe.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Operations.
    pub calls: u64,
    /// Bytes moved (copies: elements × source element size; matmul: operand bytes read).
    pub bytes: u64,
    /// Floating-point operations (matmul: 2·m·n·k).
    pub flops: u64,
    /// Wall nanoseconds spent.
    pub busy_ns: u64,
}

impl Counters {
    /// Adds `o` field by field (saturating).
    pub fn add(&mut self, o: &Counters) {
        self.calls = self.calls.saturating_add(o.calls);
        self.bytes = self.bytes.saturating_add(o.bytes);
        self.flops = self.flops.saturating_add(o.flops);
        self.busy_ns = self.busy_ns.saturating_add(o.busy_ns);
    }
}

/// Counters for every [`Pipe`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PipeStats {
    counters: [Counters; Pipe::ALL.len()],
}

impl PipeStats {
    /// The counters of `pipe`.
    pub fn get(&self, pipe: Pipe) -> Counters {
        self.counters[pipe.index()]
    }

    /// Records one operation on `pipe`.
    pub fn record(&mut self, pipe: Pipe, bytes: u64, flops: u64, busy_ns: u64) {
        self.counters[pipe.index()].add(&Counters {
            calls: 1,
            bytes,
            flops,
            busy_ns,
        });
    }

    /// Adds every counter of `o`.
    pub fn merge(&mut self, o: &PipeStats) {
        for (a, b) in self.counters.iter_mut().zip(&o.counters) {
            a.add(b);
        }
    }

    /// `(pipe, counters)` for every pipe, in [`Pipe::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (Pipe, Counters)> + '_ {
        Pipe::ALL.iter().map(|&p| (p, self.get(p)))
    }
}

/// The statistics of one unit thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitStats {
    /// Core index.
    pub core: u32,
    /// The unit.
    pub unit: UnitKind,
    /// Work items run.
    pub items: u64,
    /// Wall nanoseconds inside kernel entries.
    pub entry_ns: u64,
    /// Per-pipe counters.
    pub pipes: PipeStats,
}

/// The statistics of a launch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LaunchStats {
    /// Sum over all units.
    pub total: PipeStats,
    /// Each unit, ordered by core then unit.
    pub units: Vec<UnitStats>,
    /// Wall time of the launch, nanoseconds.
    pub wall_ns: u64,
}

impl LaunchStats {
    /// Builds the totals from per-unit stats.
    pub fn from_units(mut units: Vec<UnitStats>, wall_ns: u64) -> Self {
        // Unstable: (core, unit) is unique, and it sorts in place (no buffer).
        units.sort_unstable_by_key(|u| (u.core, u.unit.code()));
        let mut total = PipeStats::default();
        for u in &units {
            total.merge(&u.pipes);
        }
        LaunchStats {
            total,
            units,
            wall_ns,
        }
    }

    /// A human-readable table of the totals, one pipe a line.
    pub fn table(&self) -> String {
        let mut s = String::from("pipe        calls        bytes        flops      busy_ms\n");
        for (p, c) in self.total.iter() {
            let _ = writeln!(
                s,
                "{:<9} {:>7} {:>12} {:>12} {:>12.3}",
                p.name(),
                c.calls,
                c.bytes,
                c.flops,
                c.busy_ns as f64 / 1e6
            );
        }
        let _ = writeln!(s, "wall_ms {:.3}", self.wall_ns as f64 / 1e6);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregation() {
        let mut a = PipeStats::default();
        a.record(Pipe::Cube, 10, 100, 5);
        a.record(Pipe::Cube, 10, 100, 5);
        let mut b = PipeStats::default();
        b.record(Pipe::Mte2, 64, 0, 7);
        let units = vec![
            UnitStats {
                core: 1,
                unit: UnitKind::Cube,
                items: 1,
                entry_ns: 9,
                pipes: b,
            },
            UnitStats {
                core: 0,
                unit: UnitKind::Cube,
                items: 2,
                entry_ns: 9,
                pipes: a,
            },
        ];
        let l = LaunchStats::from_units(units, 1000);
        assert_eq!(l.units[0].core, 0);
        assert_eq!(
            l.total.get(Pipe::Cube),
            Counters {
                calls: 2,
                bytes: 20,
                flops: 200,
                busy_ns: 10
            }
        );
        assert_eq!(l.total.get(Pipe::Mte2).bytes, 64);
        assert!(l.table().contains("mte2"));
    }
}
