//! `KernelCtx`: what a kernel entry (JIT or Rust) sees of its unit, and the
//! runtime-private state behind it.
//!
//! Invariants:
//! - One `KernelCtx` per unit thread, built by the launcher on that thread and
//!   valid for the whole launch; JIT code receives `*const KernelCtx`.
//! - Its layout is `repr(C)` and fixed (checked at compile time below); JIT
//!   code reads fields at the `KernelCtx::OFFSET_*` offsets.
//! - Buffer pointers of buffers the unit does not own are null with size 0:
//!   the Cube sees L1/L0A/L0B/L0C, a Vector unit sees its own UB.
//! - `rt` points to a `UnitRt` owned by the same thread; it is opaque to
//!   JIT code and only dereferenced by the runtime's entry points.

use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::error::RuntimeError;
use crate::flags::CoreFlags;
use crate::gm::GmDesc;
use crate::stats::PipeStats;
use crate::trace::TraceEvent;
use crate::units::{Pipe, UnitKind};

/// The context of one unit (Cube or Vector) of one emulated core.
///
/// Layout (`repr(C)`, 144 bytes, 8-byte aligned):
///
/// | offset | field | type | meaning |
/// | --- | --- | --- | --- |
/// | 0 | `gm` | `*const GmDesc` | GM buffer descriptors, `gm_count` of them |
/// | 8 | `gm_count` | `u64` | |
/// | 16 | `l1` | `*mut u8` | L1 base (Cube only, else null) |
/// | 24 | `l1_bytes` | `u64` | |
/// | 32 | `l0a` | `*mut u8` | L0A base (Cube only) |
/// | 40 | `l0a_bytes` | `u64` | |
/// | 48 | `l0b` | `*mut u8` | L0B base (Cube only) |
/// | 56 | `l0b_bytes` | `u64` | |
/// | 64 | `l0c` | `*mut u8` | L0C base (Cube only) |
/// | 72 | `l0c_bytes` | `u64` | |
/// | 80 | `ub` | `*mut u8` | this Vector unit's UB (Vector only) |
/// | 88 | `ub_bytes` | `u64` | |
/// | 96 | `abort` | `*const AtomicU32` | non-zero once the launch is aborting |
/// | 104 | `core` | `u32` | core index |
/// | 108 | `unit` | `u32` | 0 = Cube, 1 + n = Vector n |
/// | 112 | `cores` | `u32` | cores in the launch |
/// | 116 | `sub_blocks` | `u32` | Vector units per core |
/// | 120 | `rt` | `*const c_void` | runtime-private, opaque |
/// | 128 | `dims` | `*const i64` | launch-time kernel dim values ([`crate::LaunchConfig::dims`]) |
/// | 136 | `dim_count` | `u64` | number of entries at `dims` (may be 0, then `dims` may be null) |
///
/// All local bases are 64-byte aligned.
#[repr(C)]
#[derive(Debug)]
pub struct KernelCtx {
    /// GM buffer descriptors.
    pub gm: *const GmDesc,
    /// Number of GM descriptors.
    pub gm_count: u64,
    /// L1 base (null unless Cube).
    pub l1: *mut u8,
    /// L1 size in bytes.
    pub l1_bytes: u64,
    /// L0A base (null unless Cube).
    pub l0a: *mut u8,
    /// L0A size in bytes.
    pub l0a_bytes: u64,
    /// L0B base (null unless Cube).
    pub l0b: *mut u8,
    /// L0B size in bytes.
    pub l0b_bytes: u64,
    /// L0C base (null unless Cube).
    pub l0c: *mut u8,
    /// L0C size in bytes.
    pub l0c_bytes: u64,
    /// UB base (null unless Vector).
    pub ub: *mut u8,
    /// UB size in bytes.
    pub ub_bytes: u64,
    /// Launch-wide abort flag (non-zero = aborting); JIT loops may poll it.
    pub abort: *const AtomicU32,
    /// Core index.
    pub core: u32,
    /// Unit code: 0 = Cube, 1 + n = Vector n.
    pub unit: u32,
    /// Cores in the launch.
    pub cores: u32,
    /// Vector units per core.
    pub sub_blocks: u32,
    /// Runtime-private state (opaque).
    pub rt: *const c_void,
    /// Launch-time values of the kernel's symbolic dims, in the order the
    /// compiler numbers them (see [`crate::LaunchConfig::dims`]).
    pub dims: *const i64,
    /// Number of values at `dims`.
    pub dim_count: u64,
}

impl KernelCtx {
    /// Offset of `gm`.
    pub const OFFSET_GM: usize = std::mem::offset_of!(KernelCtx, gm);
    /// Offset of `gm_count`.
    pub const OFFSET_GM_COUNT: usize = std::mem::offset_of!(KernelCtx, gm_count);
    /// Offset of `l1`.
    pub const OFFSET_L1: usize = std::mem::offset_of!(KernelCtx, l1);
    /// Offset of `l0a`.
    pub const OFFSET_L0A: usize = std::mem::offset_of!(KernelCtx, l0a);
    /// Offset of `l0b`.
    pub const OFFSET_L0B: usize = std::mem::offset_of!(KernelCtx, l0b);
    /// Offset of `l0c`.
    pub const OFFSET_L0C: usize = std::mem::offset_of!(KernelCtx, l0c);
    /// Offset of `ub`.
    pub const OFFSET_UB: usize = std::mem::offset_of!(KernelCtx, ub);
    /// Offset of `abort`.
    pub const OFFSET_ABORT: usize = std::mem::offset_of!(KernelCtx, abort);
    /// Offset of `core`.
    pub const OFFSET_CORE: usize = std::mem::offset_of!(KernelCtx, core);
    /// Offset of `unit`.
    pub const OFFSET_UNIT: usize = std::mem::offset_of!(KernelCtx, unit);
    /// Offset of `cores`.
    pub const OFFSET_CORES: usize = std::mem::offset_of!(KernelCtx, cores);
    /// Offset of `sub_blocks`.
    pub const OFFSET_SUB_BLOCKS: usize = std::mem::offset_of!(KernelCtx, sub_blocks);
    /// Offset of `rt`.
    pub const OFFSET_RT: usize = std::mem::offset_of!(KernelCtx, rt);
    /// Offset of `dims`.
    pub const OFFSET_DIMS: usize = std::mem::offset_of!(KernelCtx, dims);
    /// Offset of `dim_count`.
    pub const OFFSET_DIM_COUNT: usize = std::mem::offset_of!(KernelCtx, dim_count);
    /// Size of the struct.
    pub const SIZE: usize = std::mem::size_of::<KernelCtx>();
}

const _: () = {
    assert!(KernelCtx::OFFSET_GM == 0);
    assert!(KernelCtx::OFFSET_GM_COUNT == 8);
    assert!(KernelCtx::OFFSET_L1 == 16);
    assert!(std::mem::offset_of!(KernelCtx, l1_bytes) == 24);
    assert!(KernelCtx::OFFSET_L0A == 32);
    assert!(KernelCtx::OFFSET_L0B == 48);
    assert!(KernelCtx::OFFSET_L0C == 64);
    assert!(KernelCtx::OFFSET_UB == 80);
    assert!(std::mem::offset_of!(KernelCtx, ub_bytes) == 88);
    assert!(KernelCtx::OFFSET_ABORT == 96);
    assert!(KernelCtx::OFFSET_CORE == 104);
    assert!(KernelCtx::OFFSET_UNIT == 108);
    assert!(KernelCtx::OFFSET_CORES == 112);
    assert!(KernelCtx::OFFSET_SUB_BLOCKS == 116);
    assert!(KernelCtx::OFFSET_RT == 120);
    assert!(KernelCtx::OFFSET_DIMS == 128);
    assert!(KernelCtx::OFFSET_DIM_COUNT == 136);
    assert!(KernelCtx::SIZE == 144);
};

/// Launch-wide shared state: the abort flag, the first error, all flags.
#[derive(Debug)]
pub(crate) struct LaunchShared {
    pub abort: AtomicU32,
    pub error: Mutex<Option<RuntimeError>>,
    pub flags: Vec<CoreFlags>,
    /// Host CPUs as permits ([`crate::cpus`]).
    pub cpus: crate::cpus::CpuPermits,
    /// The race checker, when the launch runs one.
    pub race: Option<crate::race::RaceState>,
}

impl LaunchShared {
    pub fn new(flags: Vec<CoreFlags>, host_cpus: Option<usize>) -> Self {
        LaunchShared {
            abort: AtomicU32::new(0),
            error: Mutex::new(None),
            flags,
            cpus: crate::cpus::CpuPermits::new(host_cpus),
            race: None,
        }
    }

    /// Adds the race checker of the launch.
    pub fn with_race(mut self, race: Option<crate::race::RaceState>) -> Self {
        self.race = race;
        self
    }

    pub fn aborted(&self) -> bool {
        self.abort.load(Ordering::Acquire) != 0
    }

    /// Records `err` (the first non-abort error wins), raises the abort flag
    /// and wakes every waiter.
    pub fn fail(&self, err: RuntimeError) {
        {
            let mut slot = self.error.lock().unwrap_or_else(PoisonError::into_inner);
            let replace = match &*slot {
                None => true,
                Some(old) => old.is_aborted() && !err.is_aborted(),
            };
            if replace {
                *slot = Some(err);
            }
        }
        self.abort.store(1, Ordering::Release);
        for f in &self.flags {
            f.wake_all();
        }
        self.cpus.wake_all();
    }

    pub fn take_error(&self) -> Option<RuntimeError> {
        self.error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// Runtime-private state of one unit thread (behind `KernelCtx::rt`).
pub(crate) struct UnitRt<'a> {
    pub kernel: &'a str,
    pub core: u32,
    pub unit: UnitKind,
    pub flags: &'a CoreFlags,
    pub shared: &'a LaunchShared,
    pub timeout: Duration,
    pub gm_names: &'a [String],
    pub stats: RefCell<PipeStats>,
    pub trace: Option<RefCell<Vec<TraceEvent>>>,
    pub epoch: Instant,
    /// Nanoseconds spent inside runtime calls (to derive Vector busy time).
    pub runtime_ns: Cell<u64>,
    /// Private host scratch of this unit (`amla_rt_scratch`), kept for the
    /// whole launch (and, on a persistent worker, across launches).
    pub scratch: &'a RefCell<Option<crate::aligned::AlignedBytes>>,
    /// The cooperative schedule ([`crate::pool`]): a flag wait that would
    /// block suspends this unit's coroutine instead, so the core's other
    /// units run on the same thread. `None`: the unit has a thread of its own.
    pub coop: Option<&'a corosensei::Yielder<(), ()>>,
    /// Plain or atomic GM accesses (the launch's `LaunchConfig::gm_access`).
    pub gm_access: crate::gm::GmAccess,
    /// The launch's matmul path (`LaunchConfig::resolved_matmul_path`).
    pub matmul_path: crate::matmul::MatmulPath,
    /// The op being run, as JIT code registered it with `amla_rt_site`
    /// (pointer and length of UTF-8 text that outlives the launch; `(0, 0)`
    /// when none), for checked-mode and race reports.
    pub site: Cell<(usize, usize)>,
}

impl UnitRt<'_> {
    /// Waits until flag `id` (at `block`, for the reports) is set for this
    /// unit (after a `try_wait` found it unset). On a thread of its own the
    /// unit gives its host CPU up meanwhile ([`crate::cpus`]) and takes one
    /// back before it returns; under the cooperative schedule it suspends its
    /// coroutine, and the core's scheduler resumes it to look again after
    /// another unit ran. Either way the flags' watchdog fails a wait nobody
    /// can satisfy at once, a wait fails with a timeout after `self.timeout`,
    /// and returns at once when the launch aborts.
    pub fn block_on_flag(&self, id: u32, block: u64) -> Result<(), crate::flags::FlagError> {
        let Some(y) = self.coop else {
            self.shared.cpus.release();
            let r = self
                .flags
                .wait(self.unit, id, block, self.timeout, &self.shared.abort);
            self.shared
                .cpus
                .acquire(self.unit == UnitKind::Cube, &self.shared.abort);
            return r;
        };
        let deadline = Instant::now().checked_add(self.timeout);
        while !self
            .flags
            .wait_step(self.unit, id, block, deadline, &self.shared.abort)?
        {
            y.suspend(());
        }
        Ok(())
    }

    /// The op JIT code registered last, or `fallback`.
    pub fn site_or<'s>(&'s self, fallback: &'s str) -> &'s str {
        let (p, n) = self.site.get();
        if p == 0 {
            return fallback;
        }
        // SAFETY: `amla_rt_site`'s contract: `p` points to `n` bytes of UTF-8
        // that live for the whole launch (the compiled kernel owns them).
        unsafe {
            std::str::from_utf8(std::slice::from_raw_parts(p as *const u8, n)).unwrap_or(fallback)
        }
    }

    /// Nanoseconds since the launch started.
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Records `parts` operations of `pipe` that ran as one call from
    /// `start_ns` to `end_ns`: the calls, bytes and flops are the sums of
    /// the parts, the time is shared out evenly, and a trace gets one event
    /// per part, one after the other (`name` is only called when tracing).
    #[allow(clippy::too_many_arguments)]
    pub fn record_parts(
        &self,
        pipe: Pipe,
        name: impl FnOnce() -> String,
        start_ns: u64,
        end_ns: u64,
        parts: u32,
        bytes: u64,
        flops: u64,
    ) {
        let dur = end_ns.saturating_sub(start_ns);
        let n = u64::from(parts.max(1));
        {
            let mut st = self.stats.borrow_mut();
            for p in 0..n {
                let share = |x: u64| x / n + u64::from(p < x % n);
                st.record(pipe, share(bytes), share(flops), share(dur));
            }
        }
        self.runtime_ns
            .set(self.runtime_ns.get().saturating_add(dur));
        if let Some(t) = &self.trace {
            let name = name();
            let mut t = t.borrow_mut();
            for p in 0..n {
                t.push(TraceEvent {
                    core: self.core,
                    unit: self.unit,
                    name: name.clone(),
                    category: pipe.name(),
                    start_ns: start_ns + dur * p / n,
                    end_ns: start_ns + dur * (p + 1) / n,
                });
            }
        }
    }

    /// Records one operation in the stats and, if tracing, the trace.
    pub fn record(
        &self,
        pipe: Pipe,
        name: impl FnOnce() -> String,
        start_ns: u64,
        bytes: u64,
        flops: u64,
    ) {
        self.record_parts(pipe, name, start_ns, self.now_ns(), 1, bytes, flops);
    }
}
