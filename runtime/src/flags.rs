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

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::units::UnitKind;

/// Why a flag operation failed (the caller adds kernel/core/block context).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagError {
    /// The wait was not satisfied within the timeout.
    Timeout,
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

#[derive(Debug)]
struct State {
    /// `[id * sub_blocks + v]`: sets from the Cube not yet consumed by Vector `v`.
    to_vector: Vec<u32>,
    /// `[id * sub_blocks + v]`: sets from Vector `v` not yet consumed by the Cube.
    to_cube: Vec<u32>,
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

    /// `unit` waits on flag `id` for at most `timeout`, giving up with
    /// [`FlagError::Aborted`] once `abort` is non-zero.
    pub fn wait(
        &self,
        unit: UnitKind,
        id: u32,
        timeout: Duration,
        abort: &AtomicU32,
    ) -> Result<(), FlagError> {
        self.check(unit, id)?;
        let base = id as usize * self.sub_blocks;
        let deadline = Instant::now().checked_add(timeout);
        let mut s = self.lock();
        loop {
            if abort.load(Ordering::Acquire) != 0 {
                return Err(FlagError::Aborted);
            }
            let ready = match unit {
                UnitKind::Cube => s.to_cube[base..base + self.sub_blocks]
                    .iter()
                    .all(|&c| c > 0),
                UnitKind::Vector(v) => s.to_vector[base + v as usize] > 0,
            };
            if ready {
                match unit {
                    UnitKind::Cube => s.to_cube[base..base + self.sub_blocks]
                        .iter_mut()
                        .for_each(|c| *c -= 1),
                    UnitKind::Vector(v) => s.to_vector[base + v as usize] -= 1,
                }
                return Ok(());
            }
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(3600),
            };
            if left.is_zero() {
                return Err(FlagError::Timeout);
            }
            s = self
                .cv
                .wait_timeout(s, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
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
        f.wait(UnitKind::Vector(0), 3, T, &ab).unwrap();
        f.wait(UnitKind::Vector(1), 3, T, &ab).unwrap();
        // Consumed: a second wait times out.
        assert_eq!(
            f.wait(UnitKind::Vector(0), 3, Duration::from_millis(5), &ab),
            Err(FlagError::Timeout)
        );
        assert!(f.pending(0).is_empty());
    }

    #[test]
    fn cube_wait_needs_both_vectors() {
        let f = CoreFlags::new(16, 2);
        let ab = AtomicU32::new(0);
        f.set(UnitKind::Vector(0), 1).unwrap();
        f.set(UnitKind::Vector(0), 1).unwrap();
        assert_eq!(
            f.wait(UnitKind::Cube, 1, Duration::from_millis(5), &ab),
            Err(FlagError::Timeout)
        );
        f.set(UnitKind::Vector(1), 1).unwrap();
        f.wait(UnitKind::Cube, 1, T, &ab).unwrap();
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
            f.wait(UnitKind::Vector(0), 0, T, &ab).unwrap();
        }
        assert_eq!(
            f.wait(UnitKind::Vector(0), 0, Duration::ZERO, &ab),
            Err(FlagError::Timeout)
        );
        assert_eq!(f.set(UnitKind::Cube, 4), Err(FlagError::BadId));
        assert_eq!(f.set(UnitKind::Vector(1), 0), Err(FlagError::BadUnit));
    }

    #[test]
    fn blocked_wait_wakes_on_set_and_on_abort() {
        let f = Arc::new(CoreFlags::new(16, 2));
        let ab = Arc::new(AtomicU32::new(0));
        let (f2, ab2) = (f.clone(), ab.clone());
        let h = std::thread::spawn(move || f2.wait(UnitKind::Vector(1), 7, T, &ab2));
        std::thread::sleep(Duration::from_millis(20));
        f.set(UnitKind::Cube, 7).unwrap();
        assert_eq!(h.join().unwrap(), Ok(()));

        let (f2, ab2) = (f.clone(), ab.clone());
        let start = Instant::now();
        let h =
            std::thread::spawn(move || f2.wait(UnitKind::Cube, 2, Duration::from_secs(30), &ab2));
        std::thread::sleep(Duration::from_millis(20));
        ab.store(1, Ordering::Release);
        f.wake_all();
        assert_eq!(h.join().unwrap(), Err(FlagError::Aborted));
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
