//! The launcher: runs a grid of work items over emulated cores.
//!
//! Each core is one Cube thread and `vector_sub_blocks` Vector threads
//! (`std::thread::scope`). Work item `i` runs on core `i % cores`; every unit
//! of that core calls its entry for it, in increasing item order. Entries are
//! either JIT code (`extern "C"`, [`EntryFn`]) or Rust closures
//! ([`RustEntry`], with a safe [`Unit`] API).
//!
//! Invariants:
//! - Each unit thread allocates its own local arenas, so local memory is
//!   never shared; GM is borrowed mutably for the whole launch.
//! - The first error wins and is returned; recording it raises the
//!   launch-wide abort flag and wakes all flag waits, which then fail with
//!   `Aborted`; units stop before their next work item. So a failing launch
//!   ends promptly and never hangs (waits also have a timeout).
//! - A panic in a Rust entry is caught and reported as
//!   [`RuntimeError::KernelPanicked`].

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use crate::arena::{Arena, CubeArenas};
use crate::config::{CoreConfig, LaunchConfig, Schedule};
use crate::ctx::{KernelCtx, LaunchShared, UnitRt};
use crate::dtype::{DType, Element};
use crate::error::RuntimeError;
use crate::flags::{CoreFlags, PendingFlag};
use crate::gm::{Gm, GmDesc};
use crate::matmul::{Gemm, MatmulPath};
use crate::ops::{Env, StoreMode, Tile};
use crate::stats::{LaunchStats, UnitStats};
use crate::trace::{Trace, TraceEvent};
use crate::units::{Buffer, Pipe, UnitKind};

/// A JIT kernel entry: `(ctx, work_item, sub_block) -> status` (0 = ok).
/// The Cube gets `sub_block = 0`; Vector unit `n` gets `n`.
pub type EntryFn = extern "C" fn(ctx: *const KernelCtx, work_item: u64, sub_block: u32) -> i32;

/// A Rust kernel entry: called with the unit's safe API and the work item.
pub type RustEntry<'a> = dyn Fn(&mut Unit<'_>, u64) -> Result<(), RuntimeError> + Sync + 'a;

/// What a unit runs.
#[derive(Clone, Copy)]
pub enum Entry<'a> {
    /// JIT-compiled code.
    Extern(EntryFn),
    /// A Rust closure.
    Rust(&'a RustEntry<'a>),
    /// Nothing: the unit idles (e.g. a Vector-only kernel's Cube).
    Idle,
}

impl std::fmt::Debug for Entry<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Entry::Extern(p) => write!(f, "Extern({:p})", *p as *const ()),
            Entry::Rust(_) => f.write_str("Rust(..)"),
            Entry::Idle => f.write_str("Idle"),
        }
    }
}

/// A kernel: a name (used in errors) and the Cube and Vector programs.
#[derive(Clone, Copy, Debug)]
pub struct Kernel<'a> {
    /// Kernel name.
    pub name: &'a str,
    /// The Cube program.
    pub cube: Entry<'a>,
    /// The Vector program (run by every Vector unit).
    pub vector: Entry<'a>,
}

/// What a successful launch reports.
#[derive(Clone, Debug)]
pub struct LaunchReport {
    /// Per-unit and total statistics.
    pub stats: LaunchStats,
    /// The trace, when `LaunchConfig::trace` was set.
    pub trace: Option<Trace>,
    /// Flag counters left non-zero (sets never waited for): usually a sync bug.
    pub pending_flags: Vec<PendingFlag>,
    /// The matmul path in force.
    pub matmul_path: MatmulPath,
}

/// The safe API a Rust kernel entry uses on its unit.
pub struct Unit<'a> {
    env: Env<'a>,
    work_item: u64,
}

impl Unit<'_> {
    /// This unit.
    pub fn kind(&self) -> UnitKind {
        self.env.unit()
    }
    /// Core index.
    pub fn core(&self) -> u32 {
        self.env.rt.core
    }
    /// Cores in the launch.
    pub fn cores(&self) -> u32 {
        self.env.ctx.cores
    }
    /// Vector units per core.
    pub fn sub_blocks(&self) -> u32 {
        self.env.ctx.sub_blocks
    }
    /// The sub-block (0 for the Cube, `n` for Vector `n`).
    pub fn sub_block(&self) -> u32 {
        match self.kind() {
            UnitKind::Cube => 0,
            UnitKind::Vector(n) => n,
        }
    }
    /// The work item being run.
    pub fn work_item(&self) -> u64 {
        self.work_item
    }
    /// Copies a `rows × cols` region (see [`crate::ops`] for the rules).
    pub fn copy(
        &mut self,
        dst: &Tile,
        src: &Tile,
        rows: usize,
        cols: usize,
        mode: StoreMode,
    ) -> Result<(), RuntimeError> {
        self.env.copy(dst, src, rows, cols, mode)
    }
    /// `C (+)= A·B` on L0A/L0B/L0C at element offsets (Cube only).
    pub fn matmul(
        &mut self,
        g: &Gemm,
        dtype: DType,
        a_off: usize,
        b_off: usize,
        c_off: usize,
    ) -> Result<MatmulPath, RuntimeError> {
        self.env.matmul(g, dtype, a_off, b_off, c_off)
    }
    /// `C (+)= A·B` with A and B read where they are (L0A/L0B, L1, or a GM
    /// tensor no unit writes during the call), standing for what `fold`
    /// says (see `Env::matmul_folded`; Cube only).
    pub fn matmul_folded(
        &mut self,
        g: &Gemm,
        dtype: DType,
        a: crate::ops::MatmulSrc,
        b: crate::ops::MatmulSrc,
        c_off: usize,
        fold: crate::ops::Folded,
    ) -> Result<MatmulPath, RuntimeError> {
        self.env.matmul_folded(g, dtype, a, b, c_off, fold)
    }
    /// Sets cross-core flag `id`.
    pub fn set_flag(&mut self, id: u32) -> Result<(), RuntimeError> {
        self.env.set_flag(id)
    }
    /// Waits on cross-core flag `id`; `block` identifies the iteration in errors.
    pub fn wait_flag(&mut self, id: u32, block: u64) -> Result<(), RuntimeError> {
        self.env.wait_flag(id, block)
    }
    /// Scales f32 GM rows by `2^n[r]` (see [`crate::rescale`]).
    pub fn exp2_scale_gm(
        &mut self,
        dst: &Tile,
        rows: usize,
        cols: usize,
        n: &Tile,
    ) -> Result<(), RuntimeError> {
        self.env.exp2_scale_gm(dst, rows, cols, n)
    }
    /// Typed view of `len` elements at element `offset` of a local buffer this
    /// unit owns. Work done through it counts as Vector (or Cube) code time.
    pub fn local<T: Element>(
        &mut self,
        buffer: Buffer,
        offset: usize,
        len: usize,
    ) -> Result<&mut [T], RuntimeError> {
        let (base, bytes) = self.env.local_base(buffer)?;
        let cap = bytes / std::mem::size_of::<T>() as u64;
        match (offset as u64).checked_add(len as u64) {
            Some(end) if end <= cap => {
                // SAFETY: in bounds; the arena is 64-byte aligned and owned by
                // this thread; every bit pattern is a valid T; the borrow of
                // `self` keeps any other access through this Unit out.
                Ok(unsafe { std::slice::from_raw_parts_mut((base as *mut T).add(offset), len) })
            }
            end => Err(RuntimeError::OutOfBounds {
                what: "local view".into(),
                buffer: buffer.name().into(),
                start: offset as u64,
                end: end.unwrap_or(u64::MAX),
                capacity: cap,
            }),
        }
    }
}

struct UnitOutcome {
    stats: UnitStats,
    events: Vec<TraceEvent>,
}

/// Runs `kernel` over `work_items` items. See the module docs. Under the
/// cooperative schedule this is a one-shot [`crate::pool::Launcher`] (its
/// workers start and stop with the call); keep a `Launcher` to launch
/// repeatedly without that.
pub fn launch(
    kernel: &Kernel<'_>,
    gm: &mut Gm,
    work_items: u64,
    core_cfg: &CoreConfig,
    cfg: &LaunchConfig,
) -> Result<LaunchReport, RuntimeError> {
    core_cfg.validate()?;
    cfg.validate()?;
    if cfg.schedule.resolve(cfg.cores, cfg.host_cpus) == Schedule::Threads {
        return launch_threads(kernel, gm, work_items, core_cfg, cfg);
    }
    let mut l = crate::pool::Launcher::new();
    l.launch(kernel, gm, work_items, core_cfg, cfg)?;
    l.take_report()
        .ok_or_else(|| RuntimeError::Internal("a launch left no report".into()))
}

/// The threaded schedule: one thread per unit, spawned for this launch.
pub(crate) fn launch_threads(
    kernel: &Kernel<'_>,
    gm: &mut Gm,
    work_items: u64,
    core_cfg: &CoreConfig,
    cfg: &LaunchConfig,
) -> Result<LaunchReport, RuntimeError> {
    let cores = cfg.cores;
    let sbs = cfg.vector_sub_blocks;
    let descs: Vec<GmDesc> = gm.descs();
    let names: Vec<String> = gm.names();
    let race = match cfg.race_check {
        true => Some(crate::race::RaceState::new(cores, sbs, &descs, &names)?),
        false => None,
    };
    let shared = LaunchShared::new(
        (0..cores)
            .map(|_| CoreFlags::new(core_cfg.flag_ids, sbs))
            .collect(),
        cfg.host_cpus,
    )
    .with_race(race);
    let epoch = Instant::now();
    let outcomes: Vec<UnitOutcome> = std::thread::scope(|scope| {
        let mut handles = Vec::new();
        'spawn: for core in 0..cores {
            for unit in std::iter::once(UnitKind::Cube).chain((0..sbs as u32).map(UnitKind::Vector))
            {
                let entry = if unit == UnitKind::Cube {
                    kernel.cube
                } else {
                    kernel.vector
                };
                let job = UnitJob {
                    kernel: kernel.name,
                    core: core as u32,
                    unit,
                    entry,
                    work_items,
                    core_cfg,
                    cfg,
                    descs: &descs,
                    names: &names,
                    shared: &shared,
                    epoch,
                };
                let spawned = std::thread::Builder::new()
                    .name(format!("amla-c{core}-{unit}"))
                    .spawn_scoped(scope, move || job.run());
                match spawned {
                    Ok(h) => handles.push(h),
                    Err(e) => {
                        shared.fail(RuntimeError::Internal(format!(
                            "cannot spawn a unit thread: {e}"
                        )));
                        break 'spawn;
                    }
                }
            }
        }
        handles
            .into_iter()
            .filter_map(|h| match h.join() {
                Ok(o) => Some(o),
                Err(_) => {
                    shared.fail(RuntimeError::Internal("a unit thread panicked".into()));
                    None
                }
            })
            .collect()
    });
    let wall_ns = epoch.elapsed().as_nanos() as u64;
    if let Some(e) = shared.take_error() {
        return Err(e);
    }
    let mut events = Vec::new();
    let mut units = Vec::new();
    for o in outcomes {
        events.extend(o.events);
        units.push(o.stats);
    }
    let pending_flags = shared
        .flags
        .iter()
        .enumerate()
        .flat_map(|(c, f)| f.pending(c as u32))
        .collect();
    Ok(LaunchReport {
        stats: LaunchStats::from_units(units, wall_ns),
        trace: cfg.trace.then(|| Trace::new(events)),
        pending_flags,
        matmul_path: cfg.resolved_matmul_path(),
    })
}

pub(crate) struct UnitJob<'s> {
    pub kernel: &'s str,
    pub core: u32,
    pub unit: UnitKind,
    pub entry: Entry<'s>,
    pub work_items: u64,
    pub core_cfg: &'s CoreConfig,
    pub cfg: &'s LaunchConfig,
    pub descs: &'s [GmDesc],
    pub names: &'s [String],
    pub shared: &'s LaunchShared,
    pub epoch: Instant,
}

// SAFETY: GmDesc holds raw pointers into GM, which the launch borrows mutably
// for its whole duration; every runtime access through them is atomic or
// ordered by flags (`GmAccess`), so sending the descriptors to unit threads
// is sound.
unsafe impl Send for UnitJob<'_> {}

impl UnitJob<'_> {
    /// Fresh statistics of this unit.
    pub(crate) fn stats(&self) -> UnitStats {
        UnitStats {
            core: self.core,
            unit: self.unit,
            items: 0,
            entry_ns: 0,
            pipes: Default::default(),
        }
    }

    /// The unit's context with no local buffers (the caller points them at
    /// its arenas) and a null `rt`.
    pub(crate) fn ctx(&self) -> KernelCtx {
        let null = std::ptr::null_mut();
        KernelCtx {
            gm: self.descs.as_ptr(),
            gm_count: self.descs.len() as u64,
            l1: null,
            l1_bytes: 0,
            l0a: null,
            l0a_bytes: 0,
            l0b: null,
            l0b_bytes: 0,
            l0c: null,
            l0c_bytes: 0,
            ub: null,
            ub_bytes: 0,
            abort: &self.shared.abort,
            core: self.core,
            unit: self.unit.code(),
            cores: self.cfg.cores as u32,
            sub_blocks: self.cfg.vector_sub_blocks as u32,
            rt: std::ptr::null(),
            dims: self.cfg.dims.as_ptr(),
            dim_count: self.cfg.dims.len() as u64,
        }
    }

    /// The runtime-private state of this unit.
    pub(crate) fn rt<'r>(
        &'r self,
        flags: &'r CoreFlags,
        scratch: &'r RefCell<Option<crate::aligned::AlignedBytes>>,
        coop: Option<&'r corosensei::Yielder<(), ()>>,
    ) -> UnitRt<'r> {
        UnitRt {
            kernel: self.kernel,
            core: self.core,
            unit: self.unit,
            flags,
            shared: self.shared,
            timeout: self.cfg.wait_timeout,
            gm_names: self.names,
            stats: RefCell::new(Default::default()),
            trace: self.cfg.trace.then(|| RefCell::new(Vec::new())),
            epoch: self.epoch,
            runtime_ns: Cell::new(0),
            scratch,
            coop,
            gm_access: self.cfg.gm_access,
            matmul_path: self.cfg.resolved_matmul_path(),
            site: Cell::new((0, 0)),
        }
    }

    /// Runs on a thread of its own: allocates the unit's arenas, holds a host
    /// CPU permit while it runs.
    fn run(self) -> UnitOutcome {
        let mut stats = self.stats();
        let fill = if self.cfg.poison_local { 0xFF } else { 0 };
        let mut ctx = self.ctx();
        // Arenas live on this thread for the whole launch.
        let arenas: Result<(Option<CubeArenas>, Option<Arena>), RuntimeError> = match self.unit {
            UnitKind::Cube => CubeArenas::new(self.core_cfg, fill).map(|a| (Some(a), None)),
            UnitKind::Vector(_) => {
                Arena::new(Buffer::Ub, self.core_cfg.ub, fill).map(|a| (None, Some(a)))
            }
        };
        let (cube, ub) = match arenas {
            Ok(a) => a,
            Err(e) => {
                self.shared.fail(e);
                return UnitOutcome {
                    stats,
                    events: Vec::new(),
                };
            }
        };
        if let Some(c) = &cube {
            set_cube_buffers(&mut ctx, c);
        }
        if let Some(u) = &ub {
            (ctx.ub, ctx.ub_bytes) = (u.as_ptr(), u.capacity() as u64);
        }
        let scratch = RefCell::new(None);
        let rt = self.rt(&self.shared.flags[self.core as usize], &scratch, None);
        ctx.rt = &rt as *const UnitRt<'_> as *const std::ffi::c_void;
        let is_cube = self.unit == UnitKind::Cube;
        // A host CPU for this unit while it runs (given up in flag waits).
        self.shared.cpus.acquire(is_cube, &self.shared.abort);
        self.run_items(&ctx, &rt, &mut stats);
        self.shared.cpus.release();
        stats.pipes = rt.stats.take();
        let events = rt.trace.map(RefCell::into_inner).unwrap_or_default();
        drop(cube);
        drop(ub);
        UnitOutcome { stats, events }
    }

    /// Runs this unit's work items (`core`, `core + cores`, …) on `ctx`.
    /// Errors are recorded in the launch's shared state.
    pub(crate) fn run_items(&self, ctx: &KernelCtx, rt: &UnitRt<'_>, stats: &mut UnitStats) {
        let sub_block = match self.unit {
            UnitKind::Cube => 0,
            UnitKind::Vector(n) => n,
        };
        let cores = self.cfg.cores as u64;
        let mut item = u64::from(self.core);
        while item < self.work_items {
            if self.shared.aborted() || matches!(self.entry, Entry::Idle) {
                break;
            }
            let t0 = rt.now_ns();
            let rt0 = rt.runtime_ns.get();
            let result = match self.entry {
                Entry::Extern(f) => match f(ctx, item, sub_block) {
                    0 => Ok(()),
                    code => Err(RuntimeError::KernelStatus {
                        kernel: self.kernel.to_string(),
                        core: self.core,
                        unit: self.unit,
                        work_item: item,
                        code,
                    }),
                },
                Entry::Rust(f) => {
                    let mut u = Unit {
                        env: Env { ctx, rt },
                        work_item: item,
                    };
                    match catch_unwind(AssertUnwindSafe(|| f(&mut u, item))) {
                        Ok(r) => r,
                        Err(p) => Err(RuntimeError::KernelPanicked {
                            kernel: self.kernel.to_string(),
                            core: self.core,
                            unit: self.unit,
                            work_item: item,
                            message: p
                                .downcast_ref::<&str>()
                                .map(|s| s.to_string())
                                .or_else(|| p.downcast_ref::<String>().cloned())
                                .unwrap_or_else(|| "non-string panic".into()),
                        }),
                    }
                }
                Entry::Idle => Ok(()),
            };
            let t1 = rt.now_ns();
            let dur = t1.saturating_sub(t0);
            stats.items += 1;
            stats.entry_ns += dur;
            if let UnitKind::Vector(_) = self.unit {
                // Vector compute = entry time not spent in runtime calls.
                let own = dur.saturating_sub(rt.runtime_ns.get().saturating_sub(rt0));
                rt.stats.borrow_mut().record(Pipe::Vector, 0, 0, own);
            }
            if let Some(t) = &rt.trace {
                t.borrow_mut().push(TraceEvent {
                    core: self.core,
                    unit: self.unit,
                    name: format!("item {item}"),
                    category: "item",
                    start_ns: t0,
                    end_ns: t1,
                });
            }
            if let Err(e) = result {
                self.shared.fail(e);
                break;
            }
            item = match item.checked_add(cores) {
                Some(i) => i,
                None => break,
            };
        }
        // The watchdog: a partner's wait only this unit could satisfy fails now.
        rt.flags.finish(self.unit);
    }
}

/// Points `ctx`'s Cube buffers at `c`.
pub(crate) fn set_cube_buffers(ctx: &mut KernelCtx, c: &CubeArenas) {
    (ctx.l1, ctx.l1_bytes) = (c.l1.as_ptr(), c.l1.capacity() as u64);
    (ctx.l0a, ctx.l0a_bytes) = (c.l0a.as_ptr(), c.l0a.capacity() as u64);
    (ctx.l0b, ctx.l0b_bytes) = (c.l0b.as_ptr(), c.l0b.capacity() as u64);
    (ctx.l0c, ctx.l0c_bytes) = (c.l0c.as_ptr(), c.l0c.capacity() as u64);
}
