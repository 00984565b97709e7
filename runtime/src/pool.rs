//! The cooperative schedule: persistent workers that run each emulated
//! core's units as coroutines on one host thread ([`Launcher`]).
//!
//! A [`Launcher`] owns `min(cores, host_cpus)` worker threads, kept across
//! launches. Worker `w` runs cores `w`, `w + W`, `w + 2W`, … one after the
//! other (cores never wait on each other: flags are per core, so a core can
//! run to completion alone). A core's Cube and Vector units are coroutines
//! (`corosensei`, one reused stack each) driven round-robin by the worker,
//! the Cube first: a unit runs until a flag wait finds its flag unset
//! ([`crate::ctx::UnitRt::block_on_flag`] then suspends it) or its work items
//! are done, and the next unit of the core runs. So a flag hand-off between
//! the Cube and a Vector unit is a user-space stack switch (nanoseconds)
//! instead of a futex wake-up and a trip through the host scheduler, there
//! are never more runnable threads than CPUs, and a Vector unit never
//! preempts a Cube matmul.
//!
//! Before / after, one core's two units on one CPU of a loaded machine:
//! threads — Cube sets flag 0, wakes the Vector thread (syscall), blocks on
//! flag 1, the kernel schedules some other process first, then the Vector;
//! cooperative — Cube sets flag 0, waits on flag 1 (unset): switch to the
//! Vector coroutine, which finds flag 0 set and runs; same CPU, no syscall.
//!
//! Invariants:
//! - Everything a worker keeps between launches is its own: the core's local
//!   arenas (refilled with zeros, or 0xFF under `poison_local`, before each
//!   core runs, so every core starts as a freshly allocated one would), its
//!   flags (counters cleared), its coroutine stacks and unit scratch. After
//!   the first launch of a shape nothing is allocated per launch (the
//!   statistics vectors keep their capacity too).
//! - A launch returns only after every worker finished its share, so the
//!   borrowed job (kernel, GM descriptors, configs) outlives every use.
//! - Every coroutine is driven to completion (an aborted launch makes every
//!   wait return `Aborted`), so no suspended stack is ever dropped (which
//!   would unwind through JIT frames).
//! - A round in which every live unit of a core suspended and no flag was
//!   set cannot make progress by itself: the worker then sleeps 1 ms between
//!   rounds, and the waits fail with the usual timeout error after
//!   `wait_timeout` (the semantics of the threaded schedule).

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, CoroutineResult, Yielder};

use crate::aligned::AlignedBytes;
use crate::arena::{Arena, CubeArenas};
use crate::config::{CoreConfig, LaunchConfig, MAX_SUB_BLOCKS, Schedule};
use crate::ctx::LaunchShared;
use crate::error::RuntimeError;
use crate::flags::{CoreFlags, PendingFlag};
use crate::gm::{Gm, GmDesc};
use crate::launch::{Kernel, LaunchReport, UnitJob, launch_threads, set_cube_buffers};
use crate::stats::{LaunchStats, UnitStats};
use crate::trace::{Trace, TraceEvent};
use crate::units::{Buffer, UnitKind};

/// Stack of one unit coroutine (virtual memory; pages are touched on use).
const STACK_BYTES: usize = 2 << 20;

/// Launches kernels, keeping worker threads and their per-core state
/// between launches (see the module docs). [`crate::launch::launch`] is a
/// one-shot `Launcher`.
#[derive(Default)]
pub struct Launcher {
    pool: Option<Pool>,
    descs: Vec<GmDesc>,
    names: Vec<String>,
    events: Vec<TraceEvent>,
    report: Option<LaunchReport>,
}

impl std::fmt::Debug for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launcher")
            .field(
                "workers",
                &self.pool.as_ref().map_or(0, |p| p.threads.len()),
            )
            .finish()
    }
}

// SAFETY: the GM descriptors cached here are only dereferenced during a
// launch, which borrows the GM they point into.
unsafe impl Send for Launcher {}

impl Launcher {
    /// A launcher with no workers yet (they start on the first cooperative launch).
    pub fn new() -> Launcher {
        Launcher::default()
    }

    /// Runs `kernel` over `work_items` items, like [`crate::launch::launch`];
    /// the report stays owned by the launcher (reused by the next launch).
    pub fn launch(
        &mut self,
        kernel: &Kernel<'_>,
        gm: &mut Gm,
        work_items: u64,
        core_cfg: &CoreConfig,
        cfg: &LaunchConfig,
    ) -> Result<&LaunchReport, RuntimeError> {
        core_cfg.validate()?;
        cfg.validate()?;
        if cfg.schedule.resolve(cfg.cores, cfg.host_cpus) == Schedule::Threads {
            let r = launch_threads(kernel, gm, work_items, core_cfg, cfg)?;
            return Ok(self.report.insert(r));
        }
        let workers = cfg.host_cpus.map_or(cfg.cores, |n| n.min(cfg.cores));
        if self.pool.as_ref().is_none_or(|p| p.threads.len() < workers) {
            self.pool = None; // joins the old workers first
            self.pool = Some(Pool::new(workers)?);
        }
        let Some(pool) = &self.pool else {
            return Err(RuntimeError::Internal("no worker pool".into()));
        };
        self.descs.clear();
        self.descs.extend(gm.desc_iter());
        if !gm.name_iter().eq(self.names.iter().map(String::as_str)) {
            self.names.clear();
            self.names.extend(gm.name_iter().map(str::to_string));
        }
        let race = match cfg.race_check {
            true => Some(crate::race::RaceState::new(
                cfg.cores,
                cfg.vector_sub_blocks,
                &self.descs,
                &self.names,
            )?),
            false => None,
        };
        let shared = LaunchShared::new(Vec::new(), None).with_race(race);
        let epoch = Instant::now();
        let job = CoopJob {
            kernel,
            work_items,
            core_cfg,
            cfg,
            descs: &self.descs,
            names: &self.names,
            shared: &shared,
            epoch,
            workers,
        };
        pool.run(&job, workers);
        let wall_ns = epoch.elapsed().as_nanos() as u64;
        if let Some(e) = shared.take_error() {
            return Err(e);
        }
        let mut report = self.report.take().unwrap_or_else(|| LaunchReport {
            stats: LaunchStats::default(),
            trace: None,
            pending_flags: Vec::new(),
            matmul_path: cfg.resolved_matmul_path(),
        });
        let mut units = std::mem::take(&mut report.stats.units);
        units.clear();
        report.pending_flags.clear();
        self.events.clear();
        for out in &pool.shared.outs[..workers] {
            let mut o = lock(out);
            units.append(&mut o.units);
            report.pending_flags.append(&mut o.pending);
            self.events.append(&mut o.events);
        }
        report.stats = LaunchStats::from_units(units, wall_ns);
        report.trace = cfg
            .trace
            .then(|| Trace::new(std::mem::take(&mut self.events)));
        report.matmul_path = cfg.resolved_matmul_path();
        Ok(self.report.insert(report))
    }

    /// The report of the last launch, moved out.
    pub(crate) fn take_report(&mut self) -> Option<LaunchReport> {
        self.report.take()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What one launch asks of the workers (borrowed for the launch).
struct CoopJob<'a> {
    kernel: &'a Kernel<'a>,
    work_items: u64,
    core_cfg: &'a CoreConfig,
    cfg: &'a LaunchConfig,
    descs: &'a [GmDesc],
    names: &'a [String],
    shared: &'a LaunchShared,
    epoch: Instant,
    workers: usize,
}

/// A job pointer handed to the workers; valid until they report done.
#[derive(Clone, Copy)]
struct JobPtr(*const CoopJob<'static>);

// SAFETY: the pointee is only read, by workers, between `Pool::run`'s
// hand-out and their done report, while `Pool::run` keeps it alive.
unsafe impl Send for JobPtr {}

struct PoolState {
    generation: u64,
    job: JobPtr,
    active: usize,
    remaining: usize,
    shutdown: bool,
}

/// What a worker reports of one launch (capacity kept across launches).
#[derive(Default)]
struct WorkerOut {
    units: Vec<UnitStats>,
    events: Vec<TraceEvent>,
    pending: Vec<PendingFlag>,
}

struct PoolShared {
    state: Mutex<PoolState>,
    job_cv: Condvar,
    done_cv: Condvar,
    outs: Vec<Mutex<WorkerOut>>,
}

struct Pool {
    shared: Arc<PoolShared>,
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    fn new(n: usize) -> Result<Pool, RuntimeError> {
        let shared = Arc::new(PoolShared {
            state: Mutex::new(PoolState {
                generation: 0,
                job: JobPtr(std::ptr::null()),
                active: 0,
                remaining: 0,
                shutdown: false,
            }),
            job_cv: Condvar::new(),
            done_cv: Condvar::new(),
            outs: (0..n).map(|_| Mutex::new(WorkerOut::default())).collect(),
        });
        let mut pool = Pool {
            shared,
            threads: Vec::with_capacity(n),
        };
        for w in 0..n {
            let s = pool.shared.clone();
            let t = std::thread::Builder::new()
                .name(format!("amla-w{w}"))
                .spawn(move || worker(s, w))
                .map_err(|e| {
                    RuntimeError::Internal(format!("cannot spawn a worker thread: {e}"))
                })?;
            pool.threads.push(t);
        }
        Ok(pool)
    }

    /// Hands `job` to the first `active` workers and waits until all are done.
    fn run(&self, job: &CoopJob<'_>, active: usize) {
        let mut s = lock(&self.shared.state);
        s.generation += 1;
        s.job = JobPtr((job as *const CoopJob<'_>).cast());
        s.active = active;
        s.remaining = active;
        drop(s);
        self.shared.job_cv.notify_all();
        let mut s = lock(&self.shared.state);
        while s.remaining > 0 {
            s = self
                .shared
                .done_cv
                .wait(s)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        lock(&self.shared.state).shutdown = true;
        self.shared.job_cv.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn worker(shared: Arc<PoolShared>, index: usize) {
    let mut state = WorkerState::default();
    let mut seen = 0;
    loop {
        let (job, active) = {
            let mut s = lock(&shared.state);
            loop {
                if s.shutdown {
                    return;
                }
                if s.generation != seen {
                    seen = s.generation;
                    break (s.job, s.active);
                }
                s = shared
                    .job_cv
                    .wait(s)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        if index >= active {
            continue;
        }
        // SAFETY: `Pool::run` keeps the job alive until `remaining` is 0,
        // which needs this worker's decrement below.
        let job = unsafe { &*job.0 };
        {
            let mut out = lock(&shared.outs[index]);
            let r = catch_unwind(AssertUnwindSafe(|| state.run_share(job, index, &mut out)));
            if r.is_err() {
                job.shared
                    .fail(RuntimeError::Internal("a worker thread panicked".into()));
                state = WorkerState::default();
            }
        }
        let mut s = lock(&shared.state);
        s.remaining -= 1;
        if s.remaining == 0 {
            shared.done_cv.notify_all();
        }
    }
}

/// What a worker keeps between launches.
#[derive(Default)]
struct WorkerState {
    /// The core config the arenas were made for.
    core_cfg: Option<CoreConfig>,
    cube: Option<CubeArenas>,
    ubs: Vec<Arena>,
    /// `Some(b)`: every arena byte is `b` (untouched since it was filled).
    filled_with: Option<u8>,
    flags: Option<CoreFlags>,
    stacks: Vec<DefaultStack>,
    scratch: Vec<RefCell<Option<AlignedBytes>>>,
}

/// What a unit coroutine returns.
struct UnitDone {
    stats: UnitStats,
    events: Vec<TraceEvent>,
}

type UnitCoroutine<'s> = Coroutine<(), (), UnitDone, &'s mut DefaultStack>;

impl WorkerState {
    /// Makes the arenas, flags, stacks and scratch fit `cfg` (allocating
    /// only when they do not yet).
    fn fit(&mut self, core_cfg: &CoreConfig, cfg: &LaunchConfig) -> Result<(), RuntimeError> {
        let sbs = cfg.vector_sub_blocks;
        let fill = if cfg.poison_local { 0xFF } else { 0 };
        if self.core_cfg.as_ref() != Some(core_cfg) || self.ubs.len() < sbs {
            self.cube = None;
            self.ubs.clear();
            self.cube = Some(CubeArenas::new(core_cfg, fill)?);
            for _ in 0..sbs {
                self.ubs.push(Arena::new(Buffer::Ub, core_cfg.ub, fill)?);
            }
            self.core_cfg = Some(core_cfg.clone());
            self.filled_with = Some(fill);
        }
        let shape = (core_cfg.flag_ids, sbs);
        if self.flags.as_ref().is_none_or(|f| f.shape() != shape) {
            self.flags = Some(CoreFlags::new(shape.0, shape.1));
        }
        while self.stacks.len() < 1 + sbs {
            let s = DefaultStack::new(STACK_BYTES).map_err(|e| {
                RuntimeError::Internal(format!("cannot allocate a unit stack: {e}"))
            })?;
            self.stacks.push(s);
        }
        while self.scratch.len() < 1 + sbs {
            self.scratch.push(RefCell::new(None));
        }
        Ok(())
    }

    /// Restores the state a freshly allocated core has: arenas filled,
    /// counters cleared, scratch zeroed.
    fn reset_core(&mut self, fill: u8, sbs: usize) {
        if self.filled_with != Some(fill) {
            if let Some(c) = &mut self.cube {
                for a in [&mut c.l1, &mut c.l0a, &mut c.l0b, &mut c.l0c] {
                    a.bytes_mut().fill(fill);
                    a.reset();
                }
            }
            for u in &mut self.ubs[..sbs] {
                u.bytes_mut().fill(fill);
                u.reset();
            }
        }
        self.filled_with = None;
        if let Some(f) = &self.flags {
            f.reset();
        }
        for s in &self.scratch {
            if let Some(b) = s.borrow_mut().as_mut() {
                b.as_mut_slice().fill(0);
            }
        }
    }

    /// Runs cores `index`, `index + workers`, … of `job`.
    fn run_share(&mut self, job: &CoopJob<'_>, index: usize, out: &mut WorkerOut) {
        out.units.clear();
        out.events.clear();
        out.pending.clear();
        if let Err(e) = self.fit(job.core_cfg, job.cfg) {
            job.shared.fail(e);
            return;
        }
        let fill = if job.cfg.poison_local { 0xFF } else { 0 };
        let sbs = job.cfg.vector_sub_blocks;
        let mut core = index;
        while core < job.cfg.cores && !job.shared.aborted() {
            self.reset_core(fill, sbs);
            self.run_core(job, core as u32, out);
            if let Some(f) = &self.flags {
                out.pending.extend(f.pending(core as u32));
            }
            core += job.workers;
        }
    }

    /// Runs every unit of `core` as coroutines on this thread.
    fn run_core(&mut self, job: &CoopJob<'_>, core: u32, out: &mut WorkerOut) {
        let sbs = job.cfg.vector_sub_blocks;
        let (Some(cube), Some(flags)) = (&self.cube, &self.flags) else {
            return;
        };
        let ubs = &self.ubs;
        let mut cos: [Option<UnitCoroutine<'_>>; MAX_SUB_BLOCKS + 1] =
            std::array::from_fn(|_| None);
        let units = self.stacks.iter_mut().zip(&self.scratch).take(1 + sbs);
        for (i, (stack, scratch)) in units.enumerate() {
            let unit = match i {
                0 => UnitKind::Cube,
                n => UnitKind::Vector(n as u32 - 1),
            };
            let uj = UnitJob {
                kernel: job.kernel.name,
                core,
                unit,
                entry: if i == 0 {
                    job.kernel.cube
                } else {
                    job.kernel.vector
                },
                work_items: job.work_items,
                core_cfg: job.core_cfg,
                cfg: job.cfg,
                descs: job.descs,
                names: job.names,
                shared: job.shared,
                epoch: job.epoch,
            };
            let body = move |y: &Yielder<(), ()>, ()| {
                let mut stats = uj.stats();
                let mut ctx = uj.ctx();
                match uj.unit {
                    UnitKind::Cube => set_cube_buffers(&mut ctx, cube),
                    UnitKind::Vector(v) => {
                        let u = &ubs[v as usize];
                        (ctx.ub, ctx.ub_bytes) = (u.as_ptr(), u.capacity() as u64);
                    }
                }
                let rt = uj.rt(flags, scratch, Some(y));
                ctx.rt = &rt as *const crate::ctx::UnitRt<'_> as *const std::ffi::c_void;
                uj.run_items(&ctx, &rt, &mut stats);
                stats.pipes = rt.stats.take();
                let events = rt.trace.map(RefCell::into_inner).unwrap_or_default();
                UnitDone { stats, events }
            };
            // SAFETY: everything `body` borrows (this state, the job) outlives
            // the coroutine: the loop below drives every coroutine to
            // completion before this function returns.
            cos[i] = Some(unsafe { Coroutine::with_stack_unchecked(stack, body) });
        }
        loop {
            let sets = flags.set_count();
            let mut live = 0;
            let mut finished = false;
            for slot in cos.iter_mut() {
                let Some(co) = slot else { continue };
                match catch_unwind(AssertUnwindSafe(|| co.resume(()))) {
                    Ok(CoroutineResult::Yield(())) => live += 1,
                    Ok(CoroutineResult::Return(d)) => {
                        out.units.push(d.stats);
                        out.events.extend(d.events);
                        *slot = None;
                        finished = true;
                    }
                    Err(_) => {
                        job.shared
                            .fail(RuntimeError::Internal("a unit coroutine panicked".into()));
                        *slot = None;
                        finished = true;
                    }
                }
            }
            if live == 0 {
                break;
            }
            if !finished && flags.set_count() == sets {
                // Every live unit waits on a flag nobody set this round.
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}
