//! Cross-core flags between a Cube (AIC) and its Vector units (AIVs).
//!
//! Model (910B pair mode): each core has `ids` flag IDs. Every ID holds one
//! counter per Vector unit in each direction:
//! - a Cube `set(id)` increments the Cube→Vector counter of *every* Vector
//!   unit (one set releases both AIVs); a Vector `wait(id)` blocks while its
//!   own counter is 0, then decrements it;
//! - a Vector `set(id)` increments its Vector→Cube counter; a Cube
//!   `wait(id)` blocks until *all* Vector→Cube counters are non-zero, then
//!   decrements each (released only when both AIVs have set).
//!
//! Invariants:
//! - A wait never blocks longer than its timeout, and returns promptly once
//!   the launch-wide abort flag is raised and [`CoreFlags::wake_all`] is
//!   called (the abort flag is checked under the same lock the waiter sleeps
//!   on, so no wake-up is lost).
//! - Counters never wrap: a set that would overflow is an error.
//! - The mutex gives set → wait a happens-before edge, so GM writes made
//!   before a set are visible after the matching wait.
//!
//! # Watchdog
//!
//! The flags also know what each unit of the core is doing ([`UnitState`]:
//! running, blocked in a wait on flag `f` at block `b`, or finished its work
//! items). A wait that cannot be satisfied fails at once instead of timing
//! out, with [`FlagError::NeverSet`]:
//! - the unit that would have to set the flag has finished (a Vector wait
//!   needs the Cube; a Cube wait needs every Vector unit whose counter is 0);
//! - every other unit of the core is finished or itself blocked on a flag
//!   that is not set (a deadlock: nobody is left to set anything).
//!
//! Both are decided under the state lock, so a set that races with the
//! check is seen. Only a partner that keeps running without ever setting
//! the flag is left to the timeout, whose error says what each other unit of
//! the core was doing ([`FlagError::Timeout`]).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::units::UnitKind;

/// Why a flag operation failed (the caller adds kernel/core/block context).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlagError {
    /// The wait was not satisfied within the timeout; what every other unit
    /// of the core was doing then.
    Timeout(String),
    /// The wait can never be satisfied (see the module's watchdog section):
    /// why, and what every other unit of the core is doing.
    NeverSet(String),
    /// The launch-wide abort flag was raised.
    Aborted,
    /// The flag id is not below the configured number of IDs.
    BadId,
    /// A Vector unit index is not below the number of sub-blocks.
    BadUnit,
    /// The counter would overflow `u32`.
    Overflow,
}

/// A counter left non-zero at the end of a launch (a set without a wait).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingFlag {
    /// The core.
    pub core: u32,
    /// The unit whose wait would consume it.
    pub waiter: UnitKind,
    /// Flag id.
    pub flag: u32,
    /// Count left.
    pub count: u32,
}

/// What a unit of a core is doing, as the watchdog sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitState {
    /// Running (between waits, or not started yet).
    Running,
    /// Blocked in a wait on `flag` at block (iteration) `block`.
    Waiting {
        /// Flag id.
        flag: u32,
        /// The block number the wait was given.
        block: u64,
    },
    /// Done with all its work items (or stopped by an error).
    Finished,
}

impl std::fmt::Display for UnitState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnitState::Running => f.write_str("is running"),
            UnitState::Waiting { flag, block } => {
                write!(f, "waits on flag {flag} (block {block})")
            }
            UnitState::Finished => f.write_str("has finished its work items"),
        }
    }
}

#[derive(Debug)]
struct State {
    /// `[id * sub_blocks + v]`: sets from the Cube not yet consumed by Vector `v`.
    to_vector: Vec<u32>,
    /// `[id * sub_blocks + v]`: sets from Vector `v` not yet consumed by the Cube.
    to_cube: Vec<u32>,
    /// `[unit.code()]`: what each unit is doing.
    units: Vec<UnitState>,
}

impl State {
    /// Whether `unit`'s wait on the flag at `base` would be released now.
    fn ready(&self, unit: UnitKind, base: usize, sub_blocks: usize) -> bool {
        match unit {
            UnitKind::Cube => self.to_cube[base..base + sub_blocks].iter().all(|&c| c > 0),
            UnitKind::Vector(v) => self.to_vector[base + v as usize] > 0,
        }
    }

    /// "cube is running; vector1 waits on flag 3 (block 2)": every unit but `me`.
    fn peers(&self, me: UnitKind) -> String {
        let v: Vec<String> = self
            .units
            .iter()
            .enumerate()
            .filter(|&(c, _)| c as u32 != me.code())
            .map(|(c, st)| format!("{} {st}", UnitKind::from_code(c as u32)))
            .collect();
        if v.is_empty() {
            "no other unit".into()
        } else {
            v.join("; ")
        }
    }
}

/// The flags of one emulated core.
#[derive(Debug)]
pub struct CoreFlags {
    ids: u32,
    sub_blocks: usize,
    state: Mutex<State>,
    cv: Condvar,
    /// Successful sets so far: the cooperative scheduler's progress measure
    /// (a round of its units in which this does not move cannot unblock anyone).
    sets: AtomicU64,
}

impl CoreFlags {
    /// Flags for a core with `ids` flag IDs and `sub_blocks` Vector units.
    pub fn new(ids: u32, sub_blocks: usize) -> Self {
        let n = ids as usize * sub_blocks;
        CoreFlags {
            ids,
            sub_blocks,
            state: Mutex::new(State {
                to_vector: vec![0; n],
                to_cube: vec![0; n],
                units: vec![UnitState::Running; 1 + sub_blocks],
            }),
            cv: Condvar::new(),
            sets: AtomicU64::new(0),
        }
    }

    /// Flag IDs and Vector units of this core's flags.
    pub fn shape(&self) -> (u32, usize) {
        (self.ids, self.sub_blocks)
    }

    /// Clears every counter (for a reused core; no allocation).
    pub fn reset(&self) {
        let mut s = self.lock();
        s.to_vector.iter_mut().for_each(|c| *c = 0);
        s.to_cube.iter_mut().for_each(|c| *c = 0);
        s.units.iter_mut().for_each(|u| *u = UnitState::Running);
    }

    /// Successful sets so far.
    pub fn set_count(&self) -> u64 {
        self.sets.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn check(&self, unit: UnitKind, id: u32) -> Result<(), FlagError> {
        if id >= self.ids {
            return Err(FlagError::BadId);
        }
        if let UnitKind::Vector(v) = unit
            && v as usize >= self.sub_blocks
        {
            return Err(FlagError::BadUnit);
        }
        Ok(())
    }

    /// `unit` sets flag `id`.
    pub fn set(&self, unit: UnitKind, id: u32) -> Result<(), FlagError> {
        self.check(unit, id)?;
        let base = id as usize * self.sub_blocks;
        let mut s = self.lock();
        match unit {
            UnitKind::Cube => {
                let slots = &mut s.to_vector[base..base + self.sub_blocks];
                if slots.contains(&u32::MAX) {
                    return Err(FlagError::Overflow);
                }
                slots.iter_mut().for_each(|c| *c += 1);
            }
            UnitKind::Vector(v) => {
                let c = &mut s.to_cube[base + v as usize];
                *c = c.checked_add(1).ok_or(FlagError::Overflow)?;
            }
        }
        drop(s);
        self.sets.fetch_add(1, Ordering::Relaxed);
        self.cv.notify_all();
        Ok(())
    }

    /// Consumes flag `id` for `unit` if it is set; never blocks.
    pub fn try_wait(&self, unit: UnitKind, id: u32) -> Result<bool, FlagError> {
        self.check(unit, id)?;
        let base = id as usize * self.sub_blocks;
        let mut s = self.lock();
        Ok(match unit {
            UnitKind::Cube => {
                let slots = &mut s.to_cube[base..base + self.sub_blocks];
                let ready = slots.iter().all(|&c| c > 0);
                if ready {
                    slots.iter_mut().for_each(|c| *c -= 1);
                }
                ready
            }
            UnitKind::Vector(v) => {
                let c = &mut s.to_vector[base + v as usize];
                let ready = *c > 0;
                if ready {
                    *c -= 1;
                }
                ready
            }
        })
    }

    /// `unit` waits on flag `id` (at block `block`, for the reports) for at
    /// most `timeout`, giving up with [`FlagError::Aborted`] once `abort` is
    /// non-zero and with [`FlagError::NeverSet`] as soon as the watchdog
    /// sees that no unit can set it.
    pub fn wait(
        &self,
        unit: UnitKind,
        id: u32,
        block: u64,
        timeout: Duration,
        abort: &AtomicU32,
    ) -> Result<(), FlagError> {
        self.check(unit, id)?;
        let base = id as usize * self.sub_blocks;
        let deadline = Instant::now().checked_add(timeout);
        let mut s = self.lock();
        let me = unit.code() as usize;
        s.units[me] = UnitState::Waiting { flag: id, block };
        let r = loop {
            if abort.load(Ordering::Acquire) != 0 {
                break Err(FlagError::Aborted);
            }
            if s.ready(unit, base, self.sub_blocks) {
                match unit {
                    UnitKind::Cube => s.to_cube[base..base + self.sub_blocks]
                        .iter_mut()
                        .for_each(|c| *c -= 1),
                    UnitKind::Vector(v) => s.to_vector[base + v as usize] -= 1,
                }
                break Ok(());
            }
            if let Some(why) = self.never_set(&s, unit, base) {
                break Err(FlagError::NeverSet(format!("{why}; {}", s.peers(unit))));
            }
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(3600),
            };
            if left.is_zero() {
                break Err(FlagError::Timeout(s.peers(unit)));
            }
            s = self
                .cv
                .wait_timeout(s, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        };
        s.units[me] = UnitState::Running;
        r
    }

    /// One look of a wait that must not block (the cooperative schedule,
    /// [`crate::pool`]): `Ok(true)` consumed the flag; `Ok(false)` it is not
    /// set yet and `unit` is recorded as waiting on it (the caller suspends
    /// and looks again later); errors as [`CoreFlags::wait`], the timeout
    /// once `deadline` has passed.
    pub fn wait_step(
        &self,
        unit: UnitKind,
        id: u32,
        block: u64,
        deadline: Option<Instant>,
        abort: &AtomicU32,
    ) -> Result<bool, FlagError> {
        self.check(unit, id)?;
        let base = id as usize * self.sub_blocks;
        let mut s = self.lock();
        let me = unit.code() as usize;
        let r = if abort.load(Ordering::Acquire) != 0 {
            Err(FlagError::Aborted)
        } else if s.ready(unit, base, self.sub_blocks) {
            match unit {
                UnitKind::Cube => s.to_cube[base..base + self.sub_blocks]
                    .iter_mut()
                    .for_each(|c| *c -= 1),
                UnitKind::Vector(v) => s.to_vector[base + v as usize] -= 1,
            }
            Ok(true)
        } else if let Some(why) = self.never_set(&s, unit, base) {
            Err(FlagError::NeverSet(format!("{why}; {}", s.peers(unit))))
        } else if deadline.is_some_and(|d| Instant::now() >= d) {
            Err(FlagError::Timeout(s.peers(unit)))
        } else {
            s.units[me] = UnitState::Waiting { flag: id, block };
            return Ok(false);
        };
        s.units[me] = UnitState::Running;
        r
    }

    /// Why `unit`'s unsatisfied wait on the flag at `base` can never be
    /// released, if it cannot: a unit that must set it has finished, or no
    /// unit of the core is left running (all others finished or blocked on
    /// flags that are not set).
    fn never_set(&self, s: &State, unit: UnitKind, base: usize) -> Option<String> {
        // No allocation here: the cooperative schedule asks on every look.
        let finished = |u: &UnitKind| s.units[u.code() as usize] == UnitState::Finished;
        let finished_setter = match unit {
            UnitKind::Cube => (0..self.sub_blocks)
                .filter(|&v| s.to_cube[base + v] == 0)
                .map(|v| UnitKind::Vector(v as u32))
                .find(finished),
            UnitKind::Vector(_) => Some(UnitKind::Cube).filter(finished),
        };
        if let Some(f) = finished_setter {
            return Some(format!("{f}, which must set it, has finished"));
        }
        let stuck = s.units.iter().enumerate().all(|(c, st)| {
            let u = UnitKind::from_code(c as u32);
            u == unit
                || match *st {
                    UnitState::Running => false,
                    UnitState::Finished => true,
                    UnitState::Waiting { flag, .. } => {
                        !s.ready(u, flag as usize * self.sub_blocks, self.sub_blocks)
                    }
                }
        });
        stuck.then(|| "deadlock: no unit of the core is left to set it".to_string())
    }

    /// Marks `unit` as done with its work items and wakes every waiter, so a
    /// wait only `unit` could satisfy fails at once.
    pub fn finish(&self, unit: UnitKind) {
        let mut s = self.lock();
        if let Some(st) = s.units.get_mut(unit.code() as usize) {
            *st = UnitState::Finished;
        }
        drop(s);
        self.cv.notify_all();
    }

    /// Wakes every waiter so it re-checks the abort flag.
    pub fn wake_all(&self) {
        drop(self.lock());
        self.cv.notify_all();
    }

    /// Counters left non-zero (sets not consumed by a wait), for core `core`.
    pub fn pending(&self, core: u32) -> Vec<PendingFlag> {
        let s = self.lock();
        let mut out = Vec::new();
        for id in 0..self.ids {
            for v in 0..self.sub_blocks {
                let i = id as usize * self.sub_blocks + v;
                if s.to_vector[i] > 0 {
                    out.push(PendingFlag {
                        core,
                        waiter: UnitKind::Vector(v as u32),
                        flag: id,
                        count: s.to_vector[i],
                    });
                }
                if s.to_cube[i] > 0 {
                    out.push(PendingFlag {
                        core,
                        waiter: UnitKind::Cube,
                        flag: id,
                        count: s.to_cube[i],
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const T: Duration = Duration::from_secs(5);

    #[test]
    fn cube_set_releases_both_vectors_once() {
        let f = CoreFlags::new(16, 2);
        let ab = AtomicU32::new(0);
        f.set(UnitKind::Cube, 3).unwrap();
        f.wait(UnitKind::Vector(0), 3, 0, T, &ab).unwrap();
        f.wait(UnitKind::Vector(1), 3, 0, T, &ab).unwrap();
        // Consumed: a second wait times out.
        assert!(matches!(
            f.wait(UnitKind::Vector(0), 3, 0, Duration::from_millis(5), &ab),
            Err(FlagError::Timeout(_))
        ));
        assert!(f.pending(0).is_empty());
    }

    #[test]
    fn cube_wait_needs_both_vectors() {
        let f = CoreFlags::new(16, 2);
        let ab = AtomicU32::new(0);
        f.set(UnitKind::Vector(0), 1).unwrap();
        f.set(UnitKind::Vector(0), 1).unwrap();
        // The timeout says what the other units are doing.
        assert_eq!(
            f.wait(UnitKind::Cube, 1, 0, Duration::from_millis(5), &ab),
            Err(FlagError::Timeout(
                "vector0 is running; vector1 is running".into()
            ))
        );
        f.set(UnitKind::Vector(1), 1).unwrap();
        f.wait(UnitKind::Cube, 1, 0, T, &ab).unwrap();
        // One Vector-0 set remains.
        let p = f.pending(2);
        assert_eq!(
            p,
            vec![PendingFlag {
                core: 2,
                waiter: UnitKind::Cube,
                flag: 1,
                count: 1
            }]
        );
    }

    #[test]
    fn counters_count() {
        let f = CoreFlags::new(4, 1);
        let ab = AtomicU32::new(0);
        for _ in 0..3 {
            f.set(UnitKind::Cube, 0).unwrap();
        }
        for _ in 0..3 {
            f.wait(UnitKind::Vector(0), 0, 0, T, &ab).unwrap();
        }
        assert!(matches!(
            f.wait(UnitKind::Vector(0), 0, 0, Duration::ZERO, &ab),
            Err(FlagError::Timeout(_))
        ));
        assert_eq!(f.set(UnitKind::Cube, 4), Err(FlagError::BadId));
        assert_eq!(f.set(UnitKind::Vector(1), 0), Err(FlagError::BadUnit));
    }

    #[test]
    fn blocked_wait_wakes_on_set_and_on_abort() {
        let f = Arc::new(CoreFlags::new(16, 2));
        let ab = Arc::new(AtomicU32::new(0));
        let (f2, ab2) = (f.clone(), ab.clone());
        let h = std::thread::spawn(move || f2.wait(UnitKind::Vector(1), 7, 0, T, &ab2));
        std::thread::sleep(Duration::from_millis(20));
        f.set(UnitKind::Cube, 7).unwrap();
        assert_eq!(h.join().unwrap(), Ok(()));

        let (f2, ab2) = (f.clone(), ab.clone());
        let start = Instant::now();
        let h = std::thread::spawn(move || {
            f2.wait(UnitKind::Cube, 2, 0, Duration::from_secs(30), &ab2)
        });
        std::thread::sleep(Duration::from_millis(20));
        ab.store(1, Ordering::Release);
        f.wake_all();
        assert_eq!(h.join().unwrap(), Err(FlagError::Aborted));
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_finished_setter_fails_the_wait_at_once() {
        let f = CoreFlags::new(8, 2);
        let ab = AtomicU32::new(0);
        f.finish(UnitKind::Cube);
        let start = Instant::now();
        let e = f
            .wait(UnitKind::Vector(1), 4, 9, Duration::from_secs(30), &ab)
            .unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(
            e,
            FlagError::NeverSet(
                "cube, which must set it, has finished; cube has finished its work items; \
                 vector0 is running"
                    .into()
            )
        );
        // A Cube wait needs only the Vector units that have not set yet.
        let g = CoreFlags::new(8, 2);
        g.set(UnitKind::Vector(0), 2).unwrap();
        g.finish(UnitKind::Vector(0));
        let h = std::sync::Arc::new(g);
        let (h2, ab2) = (h.clone(), std::sync::Arc::new(AtomicU32::new(0)));
        let t = std::thread::spawn(move || {
            h2.wait(UnitKind::Cube, 2, 5, Duration::from_secs(30), &ab2)
        });
        std::thread::sleep(Duration::from_millis(20));
        h.finish(UnitKind::Vector(1));
        match t.join().unwrap() {
            Err(FlagError::NeverSet(m)) => assert!(m.starts_with("vector1, which"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn two_units_waiting_on_each_other_is_a_deadlock() {
        let f = Arc::new(CoreFlags::new(8, 1));
        let (f2, ab) = (f.clone(), Arc::new(AtomicU32::new(0)));
        let ab2 = ab.clone();
        let start = Instant::now();
        let t = std::thread::spawn(move || {
            f2.wait(UnitKind::Vector(0), 1, 7, Duration::from_secs(30), &ab2)
        });
        std::thread::sleep(Duration::from_millis(20));
        let e = f
            .wait(UnitKind::Cube, 2, 3, Duration::from_secs(30), &ab)
            .unwrap_err();
        assert_eq!(
            e,
            FlagError::NeverSet(
                "deadlock: no unit of the core is left to set it; vector0 waits on flag 1 (block 7)"
                    .into()
            )
        );
        // The other waiter is released by the abort the launcher raises.
        ab.store(1, Ordering::Release);
        f.wake_all();
        assert_eq!(t.join().unwrap(), Err(FlagError::Aborted));
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
