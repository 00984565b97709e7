//! Benchmarking a kernel in one process: what `amlac bench` measures.
//!
//! [`bench_source`] measures, in this order:
//! 1. **compile latency**: source → JIT-ready kernel ([`driver::compile`]
//!    then [`Executable::new`]), repeated; median and spread, and per pass
//!    with [`BenchRequest::time_passes`];
//! 2. **kernel time**: one compiled kernel, GM prepared once, `warmup`
//!    launches, then `launches` timed launches (each re-zeroes the outputs
//!    and workspaces, inside the timed region); median and spread;
//! 3. **the machine's peak** for the matmul path the runtime uses
//!    ([`amla_runtime::peak`]), on every CPU, one short sample right before
//!    every timed launch, so kernel and peak see the same machine load (the
//!    machines these benchmarks run on are shared and drift);
//! 4. per-unit figures from the launch statistics, peak resident memory, and
//!    heap allocations per launch after warm-up (when the process counts
//!    them, see [`CountingAlloc`]; they are counted only during the timed
//!    launches, so compiles and everything else pay nothing for it).
//!
//! FLOPs are the model's useful work, from the kernel's `// @reference:`
//! kind and tensor shapes (MLA: `2·B·Sq·H·N·(576+512)`; see [`model_flops`]);
//! a kernel without one is counted by its Cube matmuls as the runtime ran
//! them. `fu` is GFLOP/s ÷ peak GFLOP/s: the median over launches of the
//! ratio of each launch to the peak sample taken just before it.
//!
//! Nothing here asserts a time: tests check the report's shape only.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use amla_runtime::matmul::MatmulPath;
use amla_runtime::peak::probe_peak;
use amla_runtime::stats::LaunchStats;
use amla_runtime::units::{Pipe, UnitKind};
use serde::Serialize;

use super::exec::{Executable, RunConfig};
use super::inputs::{InputOptions, generate_all};
use super::reference_kind::ReferenceKind;
use super::tensor::HostTensor;
use crate::diag::SourceFile;
use crate::driver::{self, CompileError, CompileOptions};

/// A global allocator that counts allocations while an [`AllocationWindow`]
/// is open: install it in a binary (`#[global_allocator] static A:
/// CountingAlloc = CountingAlloc;`, as `amlac` does) and [`allocations`]
/// reports how many were counted. Outside a window an allocation costs one
/// relaxed load more than the system allocator's.
pub struct CountingAlloc;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// Open [`AllocationWindow`]s.
static WINDOWS: AtomicUsize = AtomicUsize::new(0);

fn count() {
    if WINDOWS.load(Ordering::Relaxed) != 0 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

/// While one is alive, [`CountingAlloc`] counts the allocations of every
/// thread.
pub struct AllocationWindow(());

impl AllocationWindow {
    /// Starts counting (windows nest).
    pub fn open() -> AllocationWindow {
        WINDOWS.fetch_add(1, Ordering::Relaxed);
        AllocationWindow(())
    }
}

impl Drop for AllocationWindow {
    fn drop(&mut self) {
        WINDOWS.fetch_sub(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards to the system allocator; the counter has no effect on
// the memory handed out.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Heap allocations counted so far, in [`AllocationWindow`]s (this call's
/// own probe allocation included), when [`CountingAlloc`] is the global
/// allocator (`None` otherwise).
pub fn allocations() -> Option<u64> {
    let _window = AllocationWindow::open();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let probe = std::hint::black_box(Box::new(0u64));
    drop(probe);
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    (after > before).then_some(after)
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchRequest {
    /// Compilation options (`-D`, target, pipeline).
    pub compile: CompileOptions,
    /// Launch settings (cores…).
    pub run: RunConfig,
    /// Seed of the random inputs.
    pub seed: u64,
    /// Source → JIT-ready compiles to time.
    pub compile_repeats: usize,
    /// Untimed launches first.
    pub warmup: usize,
    /// Timed launches.
    pub launches: usize,
    /// Time each pass too.
    pub time_passes: bool,
    /// Length of one peak sample.
    pub peak_sample: Duration,
}

impl BenchRequest {
    /// Defaults: 15 compiles, 2 warm-up and 10 timed launches, 20 ms peak samples.
    pub fn new(compile: CompileOptions) -> BenchRequest {
        BenchRequest {
            compile,
            run: RunConfig::default(),
            seed: 0,
            compile_repeats: 15,
            warmup: 2,
            launches: 10,
            time_passes: false,
            peak_sample: Duration::from_millis(20),
        }
    }
}

/// Median and spread of a set of durations, milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Spread {
    /// Samples.
    pub n: usize,
    /// Median.
    pub median_ms: f64,
    /// Fastest.
    pub min_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// 10th percentile.
    pub p10_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
}

impl Spread {
    /// Of `samples` (seconds), which must not be empty.
    pub fn of(samples: &[f64]) -> Spread {
        let mut v = samples.to_vec();
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize] * 1e3;
        Spread {
            n: v.len(),
            median_ms: median(&v) * 1e3,
            min_ms: v[0] * 1e3,
            max_ms: v[v.len() - 1] * 1e3,
            p10_ms: at(0.1),
            p90_ms: at(0.9),
        }
    }
}

/// The median of `v` (mean of the two middle values for an even count).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// CPU time of the calling thread, seconds (`None` where unknown). Unlike
/// wall time it does not grow when other processes take the CPU.
fn thread_cpu_seconds() -> Option<f64> {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec to a valid pointer.
        let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        (r == 0).then_some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// CPU time of the whole process (every thread), seconds (`None` where unknown).
pub(crate) fn process_cpu_seconds() -> Option<f64> {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec to a valid pointer.
        let r = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
        (r == 0).then_some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Compile latency.
#[derive(Clone, Debug, Serialize)]
pub struct CompileLatency {
    /// Source → JIT-ready.
    pub total: Spread,
    /// Source → JIT-ready, CPU time of the process (every thread: the JIT
    /// compiles the Cube and Vector functions on threads of their own);
    /// robust against other load on the machine; `None` where unknown.
    pub total_cpu: Option<Spread>,
    /// Front end and passes (`driver::compile`).
    pub front_and_passes: Spread,
    /// Cranelift JIT (`Executable::new`).
    pub jit: Spread,
    /// Median per pass, in pipeline order (with `time_passes`).
    pub passes_ms: Vec<(String, f64)>,
}

/// The peak the FLOPS utilisation is measured against.
#[derive(Clone, Debug, Serialize)]
pub struct PeakReport {
    /// The matmul path the runtime uses (`avx512bf16`, `avx2fma`, `scalar`).
    pub path: String,
    /// The instruction probed.
    pub instruction: String,
    /// Threads of the probe (one per CPU).
    pub threads: usize,
    /// Median of the samples, all threads, GFLOP/s.
    pub gflops: f64,
    /// The samples, GFLOP/s (one before each timed launch).
    pub samples_gflops: Vec<f64>,
    /// One thread alone, GFLOP/s.
    pub gflops_one_thread: f64,
}

/// One pipe of one kind of unit, summed over its units (medians are not
/// needed: these are counts of the median launch).
#[derive(Clone, Debug, Serialize)]
pub struct PipeFigure {
    /// Pipe name.
    pub pipe: String,
    /// Operations.
    pub calls: u64,
    /// Bytes moved.
    pub bytes: u64,
    /// FLOPs (matmuls).
    pub flops: u64,
    /// Wall milliseconds, summed over the units.
    pub busy_ms: f64,
    /// `busy_ms` ÷ (units × launch wall time).
    pub fraction: f64,
}

/// The figures of one kind of unit (Cube or Vector) in one launch.
#[derive(Clone, Debug, Serialize)]
pub struct UnitFigures {
    /// Units of this kind in the launch.
    pub units: usize,
    /// Fraction of the launch wall time the units spent computing (Cube:
    /// matmuls; Vector: their own code and UB work).
    pub busy: f64,
    /// Fraction of the launch wall time blocked in flag waits.
    pub flag_wait: f64,
    /// Flag-wait milliseconds, summed over the units.
    pub flag_wait_ms: f64,
    /// Every pipe with at least one call.
    pub pipes: Vec<PipeFigure>,
}

/// Bytes moved per memory level in one launch (all units).
#[derive(Clone, Debug, Serialize)]
pub struct MemoryLevels {
    /// GM → L1 / L0 / UB (MTE2).
    pub gm_read: u64,
    /// UB / L1 → GM (MTE3) and L0C → GM / L1 (FixPipe).
    pub to_gm_or_l1: u64,
    /// L1 → L0A / L0B (MTE1).
    pub l1_to_l0: u64,
    /// L0A + L0B operand bytes the matmuls read.
    pub l0_to_cube: u64,
}

/// Everything `amlac bench` reports.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// Kernel name.
    pub kernel: String,
    /// Every dim and its value.
    pub dims: Vec<(String, i64)>,
    /// Emulated cores.
    pub cores: usize,
    /// Work items of the launch.
    pub work_items: u64,
    /// The matmul path the runtime used.
    pub matmul_path: String,
    /// Median source → JIT-ready milliseconds (wall time).
    pub compile_ms: f64,
    /// Median source → JIT-ready milliseconds of the process's CPU time,
    /// every thread (what the wall time would be on one idle CPU).
    pub compile_cpu_ms: Option<f64>,
    /// Compile latency in detail.
    pub compile: CompileLatency,
    /// Kernel time over the timed launches.
    pub kernel_time: Spread,
    /// Useful FLOPs of one launch.
    pub flops: f64,
    /// Where `flops` comes from (`mla formula`, …, or `cube matmuls`).
    pub flops_source: String,
    /// FLOPs the Cube matmuls ran (tiles as computed, padding included).
    pub cube_flops: u64,
    /// `flops` ÷ median kernel time, GFLOP/s.
    pub gflops: f64,
    /// The peak.
    pub peak: PeakReport,
    /// FLOPS utilisation: median over launches of (launch GFLOP/s ÷ the
    /// peak sample before it).
    pub fu: f64,
    /// CPU time the process spent in each timed launch (all its threads;
    /// `None` where unknown).
    pub kernel_cpu: Option<Spread>,
    /// FLOPs per CPU-second of the launches ÷ the probe's FLOPs per
    /// CPU-second on one thread: the utilisation of the CPU time the kernel
    /// got. Other load on the machine lowers `fu` but hardly this one; on an
    /// idle machine where every worker has a CPU of its own, `fu` ≈ this.
    pub fu_cpu: Option<f64>,
    /// The probe's FLOPs per CPU-second on one thread, GFLOP/s.
    pub peak_cpu_gflops: Option<f64>,
    /// Cube units' figures (median launch).
    pub cube: UnitFigures,
    /// Vector units' figures (median launch).
    pub vector: UnitFigures,
    /// Bytes per memory level (median launch).
    pub bytes: MemoryLevels,
    /// Peak resident set of the process, bytes (`VmHWM`; `None` where unknown).
    pub peak_rss_bytes: Option<u64>,
    /// Heap allocations of the median timed launch (`None` when the process
    /// does not count allocations).
    pub allocs_per_launch: Option<u64>,
}

/// Why a benchmark failed.
#[derive(Debug)]
pub enum BenchFailure {
    /// The kernel did not compile.
    Compile(CompileError),
    /// Anything after compilation.
    Run(String),
}

/// Useful FLOPs of one launch from the reference kind and the input shapes:
/// `2 · Σ over query rows of (keys the row sees) · (Dk + Dv)`. `None` for a
/// kind without a closed form here (or shapes that do not match it).
pub fn model_flops(kind: ReferenceKind, inputs: &[HostTensor], dv: usize) -> Option<(f64, String)> {
    let shape = |n: &str| inputs.iter().find(|t| t.name == n).map(|t| t.shape.clone());
    let f = |x: usize| x as f64;
    match kind {
        ReferenceKind::Mla => {
            let (q, kv) = (shape("q")?, shape("kv")?);
            let [b, h, dk] = q[..] else { return None };
            let [_, n, _] = kv[..] else { return None };
            Some((
                2.0 * f(b) * f(h) * f(n) * f(dk + dv),
                "mla formula 2*B*Sq*H*N*(Dk+Dv)".into(),
            ))
        }
        ReferenceKind::MlaMtp => {
            let (q, kv) = (shape("q")?, shape("kv")?);
            let [b, s, h, dk] = q[..] else { return None };
            let [_, n, _] = kv[..] else { return None };
            let keys: f64 = (0..s).map(|t| f((n + t + 1).saturating_sub(s))).sum();
            Some((
                2.0 * f(b) * f(h) * keys * f(dk + dv),
                "mla_mtp formula 2*B*H*sum_s(N-S+s+1)*(Dk+Dv)".into(),
            ))
        }
        ReferenceKind::Gqa => {
            let (q, k) = (shape("q")?, shape("k")?);
            let [b, hq, dk] = q[..] else { return None };
            let [_, _, n, _] = k[..] else { return None };
            Some((
                2.0 * f(b) * f(hq) * f(n) * f(dk + dv),
                "gqa formula 2*B*HQ*N*(Dk+Dv)".into(),
            ))
        }
        ReferenceKind::MhaCausal => {
            let q = shape("q")?;
            let [b, h, s, dk] = q[..] else { return None };
            Some((
                2.0 * f(b) * f(h) * (f(s) * f(s + 1) / 2.0) * f(dk + dv),
                "mha_causal formula 2*B*H*S(S+1)/2*(Dk+Dv)".into(),
            ))
        }
        ReferenceKind::MlaPaged => None,
    }
}

fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn unit_figures(stats: &LaunchStats, cube: bool) -> UnitFigures {
    let units: Vec<_> = stats
        .units
        .iter()
        .filter(|u| (u.unit == UnitKind::Cube) == cube)
        .collect();
    let wall = stats.wall_ns.max(1) as f64 * units.len().max(1) as f64;
    let mut pipes = Vec::new();
    for p in Pipe::ALL {
        let mut c = amla_runtime::stats::Counters::default();
        for u in &units {
            c.add(&u.pipes.get(p));
        }
        if c.calls > 0 {
            pipes.push(PipeFigure {
                pipe: p.name().into(),
                calls: c.calls,
                bytes: c.bytes,
                flops: c.flops,
                busy_ms: c.busy_ns as f64 / 1e6,
                fraction: c.busy_ns as f64 / wall,
            });
        }
    }
    let frac = |name: &str| {
        pipes
            .iter()
            .find(|p| p.pipe == name)
            .map_or(0.0, |p| p.fraction)
    };
    let busy = if cube { frac("cube") } else { frac("vector") };
    UnitFigures {
        units: units.len(),
        busy,
        flag_wait: frac("flag_wait"),
        flag_wait_ms: pipes
            .iter()
            .find(|p| p.pipe == "flag_wait")
            .map_or(0.0, |p| p.busy_ms),
        pipes,
    }
}

/// Benchmarks `src` as `req` says; `stage` is told what is happening.
pub fn bench_source(
    src: &SourceFile,
    req: &BenchRequest,
    stage: &mut dyn FnMut(&str),
) -> Result<BenchReport, BenchFailure> {
    let run_err = |e: super::exec::RunError| BenchFailure::Run(e.to_string());
    // 1. Compile latency.
    stage("compiling");
    let mut opts = req.compile.clone();
    opts.pipeline.time_passes = req.time_passes;
    let (mut total, mut front, mut jit) = (Vec::new(), Vec::new(), Vec::new());
    let mut cpu = Vec::new();
    let mut passes: Vec<(String, Vec<f64>)> = Vec::new();
    let mut kept = None;
    for _ in 0..req.compile_repeats.max(1) {
        let c0 = process_cpu_seconds();
        let t0 = Instant::now();
        let c = driver::compile(src, &opts).map_err(BenchFailure::Compile)?;
        let t1 = Instant::now();
        let exe = Executable::new(&c, &opts.target).map_err(run_err)?;
        let t2 = Instant::now();
        if let (Some(a), Some(b)) = (c0, process_cpu_seconds()) {
            cpu.push(b - a);
        }
        total.push((t2 - t0).as_secs_f64());
        front.push((t1 - t0).as_secs_f64());
        jit.push((t2 - t1).as_secs_f64());
        for (i, (name, d)) in c.report.timings.iter().enumerate() {
            if passes.len() <= i {
                passes.push((name.to_string(), Vec::new()));
            }
            passes[i].1.push(d.as_secs_f64() * 1e3);
        }
        kept = Some((c, exe));
    }
    let Some((c, exe)) = kept else {
        return Err(BenchFailure::Run("no compile ran".into()));
    };
    let compile = CompileLatency {
        total: Spread::of(&total),
        total_cpu: (!cpu.is_empty()).then(|| Spread::of(&cpu)),
        front_and_passes: Spread::of(&front),
        jit: Spread::of(&jit),
        passes_ms: passes.into_iter().map(|(n, v)| (n, median(&v))).collect(),
    };
    // 2. Inputs and GM, once.
    stage("making inputs");
    let reference = ReferenceKind::from_source(&src.text).map_err(BenchFailure::Run)?;
    let specs = exe.input_specs().map_err(run_err)?;
    let shape_of = |name: &str| specs.iter().find(|s| s.0 == name).map(|s| s.2.clone());
    let iopts = InputOptions {
        seed: req.seed,
        ..InputOptions::default()
    };
    let inputs = generate_all(&specs, &iopts, |name| {
        reference.and_then(|k| k.int_role(name, &shape_of))
    })
    .map_err(BenchFailure::Run)?;
    let dims: Vec<(String, i64)> = exe
        .ir()
        .dims
        .values()
        .map(|d| d.name.clone())
        .zip(exe.dims().map_err(run_err)?)
        .collect();
    let run_cfg = RunConfig {
        trace: false,
        ..req.run.clone()
    };
    let mut prepared = exe.prepare(&inputs, &run_cfg).map_err(run_err)?;
    let path = run_cfg.resolved_matmul_path();
    // 3. Warm-up, then timed launches, each after a peak sample.
    stage("warming up");
    for _ in 0..req.warmup {
        exe.launch(&mut prepared).map_err(run_err)?;
    }
    stage("timing launches");
    let probe = |sample: Duration| {
        probe_peak(path, None, sample, 1)
            .or_else(|| probe_peak(MatmulPath::Scalar, None, sample, 1))
    };
    let first = probe(req.peak_sample)
        .ok_or_else(|| BenchFailure::Run("the peak probe did not run".into()))?;
    let mut times = Vec::new();
    let mut cpu_times = Vec::new();
    let mut peaks = Vec::new();
    let mut reports = Vec::new();
    // The peak per CPU-second, on this thread.
    let peak_cpu = {
        let c0 = thread_cpu_seconds();
        let f = amla_runtime::peak::probe_here(path, req.peak_sample.max(Duration::from_millis(5)));
        match (c0, f, thread_cpu_seconds()) {
            (Some(c0), Some(f), Some(c1)) if c1 > c0 => Some(f as f64 / (c1 - c0)),
            _ => None,
        }
    };
    for _ in 0..req.launches.max(1) {
        let p = probe(req.peak_sample).map_or(first.flops_per_s, |p| p.flops_per_s);
        let c0 = process_cpu_seconds();
        let window = AllocationWindow::open();
        let a0 = allocations();
        let t = Instant::now();
        let launched = exe.launch_in_place(&mut prepared).map_err(run_err)?;
        let dt = t.elapsed().as_secs_f64();
        let a1 = allocations();
        drop(window);
        if let (Some(c0), Some(c1)) = (c0, process_cpu_seconds()) {
            cpu_times.push(c1 - c0);
        }
        let report = launched.clone();
        times.push(dt);
        peaks.push(p);
        // The second count includes its own probe allocation.
        reports.push((
            dt,
            report,
            a0.zip(a1)
                .map(|(a, b)| b.saturating_sub(a).saturating_sub(1)),
        ));
    }
    // 4. Figures.
    let dv = prepared
        .outputs()
        .map_err(run_err)?
        .iter()
        .find(|o| o.name == "out")
        .and_then(|o| o.shape.last().copied())
        .unwrap_or(0);
    reports.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (_, mid, allocs) = &reports[reports.len() / 2];
    let cube_flops = mid.stats.total.get(Pipe::Cube).flops;
    let (flops, flops_source) = reference
        .and_then(|k| model_flops(k, &inputs, dv))
        .unwrap_or((cube_flops as f64, "cube matmuls".into()));
    let kernel_time = Spread::of(&times);
    let gflops = flops / (kernel_time.median_ms / 1e3) / 1e9;
    let ratios: Vec<f64> = times
        .iter()
        .zip(&peaks)
        .map(|(t, p)| flops / t / p)
        .collect();
    let peak_gflops: Vec<f64> = peaks.iter().map(|p| p / 1e9).collect();
    let stats = &mid.stats;
    let t = &stats.total;
    Ok(BenchReport {
        kernel: c.ir.name.clone(),
        dims,
        cores: run_cfg.cores,
        work_items: prepared.work_items(),
        matmul_path: mid.matmul_path.name().into(),
        compile_ms: compile.total.median_ms,
        compile_cpu_ms: compile.total_cpu.as_ref().map(|s| s.median_ms),
        compile,
        kernel_time,
        flops,
        flops_source,
        cube_flops,
        gflops,
        peak: PeakReport {
            path: first.path.name().into(),
            instruction: first.instruction().into(),
            threads: first.threads,
            gflops: median(&peak_gflops),
            samples_gflops: peak_gflops,
            gflops_one_thread: first.flops_per_s_one / 1e9,
        },
        fu: median(&ratios),
        kernel_cpu: (cpu_times.len() == times.len()).then(|| Spread::of(&cpu_times)),
        fu_cpu: peak_cpu
            .filter(|_| cpu_times.len() == times.len())
            .map(|p| flops / median(&cpu_times) / p),
        peak_cpu_gflops: peak_cpu.map(|p| p / 1e9),
        cube: unit_figures(stats, true),
        vector: unit_figures(stats, false),
        bytes: MemoryLevels {
            gm_read: t.get(Pipe::Mte2).bytes,
            to_gm_or_l1: t.get(Pipe::Mte3).bytes + t.get(Pipe::FixPipe).bytes,
            l1_to_l0: t.get(Pipe::Mte1).bytes,
            l0_to_cube: t.get(Pipe::Cube).bytes,
        },
        peak_rss_bytes: peak_rss_bytes(),
        allocs_per_launch: *allocs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_request() -> BenchRequest {
        let mut compile = CompileOptions::new().unwrap();
        for (k, v) in [("B", "1"), ("N", "256"), ("H", "16")] {
            compile.defines.map.insert(k.into(), v.into());
        }
        let mut req = BenchRequest::new(compile);
        req.compile_repeats = 2;
        req.warmup = 1;
        req.launches = 3;
        req.time_passes = true;
        req.peak_sample = Duration::from_millis(2);
        req.run.cores = 1;
        req
    }

    #[test]
    fn report_fields_exist_and_are_sane() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../dsl-examples/mla_decode.amla"
        );
        let src = SourceFile::new(path.to_string(), std::fs::read_to_string(path).unwrap());
        let r = bench_source(&src, &small_request(), &mut |_| {}).unwrap_or_else(|e| match e {
            BenchFailure::Compile(e) => panic!("{e}"),
            BenchFailure::Run(m) => panic!("{m}"),
        });
        let j = serde_json::to_value(&r).unwrap();
        let num = |p: &str| {
            j.pointer(p)
                .and_then(|v| v.as_f64())
                .unwrap_or_else(|| panic!("{p} missing in {j}"))
        };
        // The MLA formula at B=1, H=16, N=256.
        assert_eq!(num("/flops"), 2.0 * 16.0 * 256.0 * (576.0 + 512.0));
        assert_eq!(num("/cube_flops"), num("/flops"));
        assert!(j["flops_source"].as_str().unwrap().starts_with("mla"));
        for p in [
            "/compile_ms",
            "/kernel_time/median_ms",
            "/gflops",
            "/peak/gflops",
            "/fu",
        ] {
            let v = num(p);
            assert!(v.is_finite() && v > 0.0, "{p} = {v}");
        }
        assert!(num("/kernel_time/min_ms") <= num("/kernel_time/median_ms"));
        #[cfg(unix)]
        assert!(num("/compile_cpu_ms") > 0.0);
        assert!(num("/kernel_time/median_ms") <= num("/kernel_time/max_ms"));
        assert_eq!(num("/kernel_time/n"), 3.0);
        assert_eq!(
            j["peak"]["path"].as_str(),
            Some(amla_runtime::matmul::detected_path().name()),
            "the peak is of the path the runtime uses"
        );
        assert_eq!(j["matmul_path"], j["peak"]["path"]);
        assert_eq!(j["peak"]["samples_gflops"].as_array().unwrap().len(), 3);
        // fu is GFLOP/s over the peak, up to the per-launch pairing.
        let fu = num("/fu");
        assert!(fu < 10.0, "fu {fu}");
        for unit in ["cube", "vector"] {
            assert_eq!(num(&format!("/{unit}/units")), 1.0);
            let busy = num(&format!("/{unit}/busy"));
            let wait = num(&format!("/{unit}/flag_wait"));
            assert!((0.0..=1.0).contains(&busy), "{unit} busy {busy}");
            assert!((0.0..=1.0).contains(&wait), "{unit} wait {wait}");
        }
        assert!(num("/bytes/gm_read") > 0.0);
        assert!(num("/bytes/l0_to_cube") > 0.0);
        let passes: Vec<&str> = j["compile"]["passes_ms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[0].as_str().unwrap())
            .collect();
        assert!(passes.contains(&"split"), "{passes:?}");
        // CPU-time figures (unix).
        #[cfg(unix)]
        {
            assert!(num("/kernel_cpu/median_ms") > 0.0);
            assert!(num("/peak_cpu_gflops") > 0.0);
            let fc = num("/fu_cpu");
            assert!(fc > 0.0 && fc < 10.0, "fu_cpu {fc}");
        }
        // The fallback path, forced: the peak is that path's.
        if MatmulPath::Avx2Fma.is_supported() {
            let mut req = small_request();
            req.run.matmul_path = Some(MatmulPath::Avx2Fma);
            let r = bench_source(&src, &req, &mut |_| {});
            let r = r.unwrap_or_else(|_| panic!("bench on the forced avx2fma path failed"));
            assert_eq!(r.peak.path, "avx2fma");
            assert_eq!(r.matmul_path, "avx2fma");
            assert_eq!(r.peak.instruction, "vfmadd231ps ymm");
            assert!(r.peak.gflops > 0.0 && r.fu > 0.0);
        }
        // Not installed as the global allocator in unit tests.
        assert!(j["allocs_per_launch"].is_null());
        assert!(j.get("peak_rss_bytes").is_some());
    }

    /// Plain (ordered) and atomic GM accesses, with and without the CPU
    /// limit, compute the same bits.
    #[test]
    fn gm_access_modes_and_cpu_limits_agree_bit_for_bit() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../dsl-examples/mla_decode.amla"
        );
        let src = SourceFile::new(path.to_string(), std::fs::read_to_string(path).unwrap());
        let req = small_request();
        let c = driver::compile(&src, &req.compile).unwrap();
        let exe = Executable::new(&c, &req.compile.target).unwrap();
        let specs = exe.input_specs().unwrap();
        let inputs: Vec<HostTensor> =
            generate_all(&specs, &InputOptions::default(), |_| None).unwrap();
        let bits_under = |gm_access, host_cpus, cores, schedule| {
            let cfg = RunConfig {
                gm_access,
                host_cpus,
                cores,
                schedule,
                ..RunConfig::default()
            };
            let mut p = exe.prepare(&inputs, &cfg).unwrap();
            // Twice: the second launch re-zeroes outputs and workspaces.
            exe.launch(&mut p).unwrap();
            exe.launch(&mut p).unwrap();
            p.outputs()
                .unwrap()
                .iter()
                .map(|o| {
                    o.data
                        .to_f64()
                        .iter()
                        .map(|x| x.to_bits())
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        };
        use amla_runtime::Schedule;
        use amla_runtime::gm::GmAccess;
        let bits =
            |gm_access, host_cpus, cores| bits_under(gm_access, host_cpus, cores, Schedule::Auto);
        let want = bits(GmAccess::Atomic, None, 2);
        assert_eq!(bits(GmAccess::Ordered, Some(1), 2), want);
        assert_eq!(bits(GmAccess::Ordered, Some(2), 1), want);
        assert_eq!(bits(GmAccess::Ordered, None, 3), want);
        // Both schedules, whatever the core and CPU counts.
        for (cpus, cores) in [(Some(1), 1), (Some(1), 3), (Some(2), 2), (None, 2)] {
            for s in [Schedule::Cooperative, Schedule::Threads] {
                assert_eq!(
                    bits_under(GmAccess::Ordered, cpus, cores, s),
                    want,
                    "{s:?} with {cores} cores on {cpus:?} CPUs"
                );
            }
        }
    }

    #[test]
    fn model_flops_formulas() {
        let t = |name: &str, shape: &[usize]| HostTensor {
            name: name.into(),
            shape: shape.to_vec(),
            data: super::super::HostData::F32(vec![]),
        };
        let (f, _) = model_flops(ReferenceKind::MhaCausal, &[t("q", &[1, 2, 4, 8])], 8).unwrap();
        // Rows see 1 + 2 + 3 + 4 = 10 keys.
        assert_eq!(f, 2.0 * 2.0 * 10.0 * 16.0);
        let (f, _) = model_flops(
            ReferenceKind::MlaMtp,
            &[t("q", &[1, 2, 3, 5]), t("kv", &[1, 10, 5])],
            4,
        )
        .unwrap();
        // Token 0 sees 9 keys, token 1 sees 10.
        assert_eq!(f, 2.0 * 3.0 * 19.0 * 9.0);
        assert!(model_flops(ReferenceKind::MlaPaged, &[], 4).is_none());
        assert!(model_flops(ReferenceKind::Mla, &[t("q", &[1, 2])], 4).is_none());
    }
}
