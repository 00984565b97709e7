//! Host CPUs as permits: at most `LaunchConfig::host_cpus` unit threads of a
//! launch run at once.
//!
//! A unit holds a permit while it runs and gives it up only while it is
//! blocked in a flag wait (and when it is done). When a permit comes free, a
//! Cube waiting for one gets it before any Vector unit. So the steady state
//! has no more runnable unit threads than CPUs (no time slicing between our
//! own threads), and a Vector unit never preempts a Cube: it runs on a CPU
//! a Cube gave up, or one no Cube wants.
//!
//! Invariants:
//! - Holding a permit, a unit blocks only in a flag wait, which releases the
//!   permit first, so permit holders always make progress and waiting for a
//!   permit cannot deadlock.
//! - Once the launch aborts, [`CpuPermits::acquire`] returns at once (units
//!   must be able to leave), and [`CpuPermits::wake_all`] wakes every waiter.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

#[derive(Debug)]
struct State {
    free: usize,
    cubes_waiting: usize,
}

/// The CPU permits of one launch (`None` limit: every acquire succeeds).
#[derive(Debug)]
pub(crate) struct CpuPermits {
    limited: bool,
    state: Mutex<State>,
    cube_cv: Condvar,
    vector_cv: Condvar,
}

impl CpuPermits {
    pub fn new(limit: Option<usize>) -> Self {
        CpuPermits {
            limited: limit.is_some(),
            state: Mutex::new(State {
                free: limit.unwrap_or(0),
                cubes_waiting: 0,
            }),
            cube_cv: Condvar::new(),
            vector_cv: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a permit (Cubes first); returns at once after an abort.
    pub fn acquire(&self, cube: bool, abort: &AtomicU32) {
        if !self.limited {
            return;
        }
        let mut s = self.lock();
        if cube {
            s.cubes_waiting += 1;
        }
        loop {
            if abort.load(Ordering::Acquire) != 0 {
                break;
            }
            if s.free > 0 && (cube || s.cubes_waiting == 0) {
                s.free -= 1;
                break;
            }
            let cv = if cube { &self.cube_cv } else { &self.vector_cv };
            s = cv.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        if cube {
            s.cubes_waiting -= 1;
        }
    }

    /// Gives a permit back and wakes a waiting Cube, else a waiting Vector unit.
    pub fn release(&self) {
        if !self.limited {
            return;
        }
        let mut s = self.lock();
        s.free += 1;
        let cube = s.cubes_waiting > 0;
        drop(s);
        if cube {
            self.cube_cv.notify_one();
        } else {
            self.vector_cv.notify_one();
        }
    }

    /// Wakes every waiter (after the abort flag was raised).
    pub fn wake_all(&self) {
        drop(self.lock());
        self.cube_cv.notify_all();
        self.vector_cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn cubes_come_first_and_abort_frees_everyone() {
        let p = Arc::new(CpuPermits::new(Some(1)));
        let ab = Arc::new(AtomicU32::new(0));
        p.acquire(false, &ab);
        let order = Arc::new(Mutex::new(Vec::new()));
        let spawn = |cube: bool| {
            let (p, ab, order) = (p.clone(), ab.clone(), order.clone());
            std::thread::spawn(move || {
                p.acquire(cube, &ab);
                order.lock().unwrap().push(cube);
                p.release();
            })
        };
        let v = spawn(false);
        std::thread::sleep(Duration::from_millis(20));
        let c = spawn(true);
        std::thread::sleep(Duration::from_millis(20));
        p.release();
        c.join().unwrap();
        v.join().unwrap();
        assert_eq!(*order.lock().unwrap(), vec![true, false]);

        // All permits held: an abort still lets a waiter through.
        p.acquire(true, &ab);
        let (p2, ab2) = (p.clone(), ab.clone());
        let h = std::thread::spawn(move || p2.acquire(false, &ab2));
        std::thread::sleep(Duration::from_millis(20));
        ab.store(1, Ordering::Release);
        p.wake_all();
        h.join().unwrap();
    }

    #[test]
    fn unlimited_never_blocks() {
        let p = CpuPermits::new(None);
        let ab = AtomicU32::new(0);
        for _ in 0..10 {
            p.acquire(true, &ab);
        }
    }
}
