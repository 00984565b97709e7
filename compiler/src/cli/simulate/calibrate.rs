//! Calibration of the cost model on the host.
//!
//! `--probe-host` measures this machine running the emulated core and prints
//! a `host` target file (`targets/host.toml` is one such output). It runs MLA
//! decode at three probe shapes (B = 1; (N, H) = (2048, 128), (4096, 32),
//! (4096, 128): launches as long as the calibration's, since on a loaded
//! machine the cost of a flag hand-off grows with the launch's length) with one emulated core (`--cores 1`: one Cube thread and
//! one Vector thread), one warm-up and [`LAUNCHES`] traced launches each, and
//! takes every number of the file from those launches (medians over
//! launches):
//! - `cube.macs_per_cycle`: the matmuls' FLOPs / 2 over their busy time;
//! - each move rate: the pipe's bytes over its busy time;
//! - `moves.issue_cycles`: the Cube thread's own time (its JIT code between
//!   runtime calls: entry time minus every recorded call) per Cube-side move;
//! - `vector.issue_cycles` and one `op_cycles` for every class: a least-squares
//!   fit of the Vector thread's own time to `issue · ops + cycles · repeats`,
//!   with the ops and repeats the model counts for each probe shape;
//! - `flags.latency_cycles`: from the trace, the median time from a set on
//!   one thread to the return of the other thread's wait that was blocked on
//!   it (the wake-up, including waiting for a CPU), the mean over every such
//!   pair (costs that add up: the mean, not the median, predicts the sum);
//! - `flags.set_cycles`: the mean time a set holds the thread that sets (on
//!   a loaded machine the woken thread can take the setter's CPU);
//! - `model.launch_cycles`: launch wall time minus the longest unit's entry
//!   time (waking the unit threads, zeroing outputs and workspaces).
//!
//! `--calibrate` then predicts other shapes with that target and compares
//! with the median time of [`LAUNCHES`] warm launches (`--cores 1`, after
//! one warm-up, as `amlac bench` times them), and prints the load average.

use std::fmt::Write as _;

use super::predict;
use crate::check::Defines;
use crate::diag::SourceFile;
use crate::driver::{self, CompileOptions};
use crate::run::bench::median;
use crate::run::exec::{Executable, RunConfig};
use crate::run::inputs::{InputOptions, generate_all};
use crate::simulate::{Pipe as SimPipe, SimConfig};
use crate::target::Target;
use amla_runtime::Pipe;
use amla_runtime::launch::LaunchReport;
use amla_runtime::units::UnitKind;

/// The probe shapes of `--probe-host` (none is a calibration shape).
const PROBES: [[(&str, &str); 3]; 3] = [
    [("B", "1"), ("N", "2048"), ("H", "128")],
    [("B", "1"), ("N", "4096"), ("H", "32")],
    [("B", "1"), ("N", "4096"), ("H", "128")],
];

/// Timed launches per shape (probe and calibration).
pub(crate) const LAUNCHES: usize = 7;

/// The shapes `--calibrate` reports (none is a probe's).
const SHAPES: [[(&str, &str); 3]; 5] = [
    [("B", "1"), ("N", "1024"), ("H", "128")],
    [("B", "1"), ("N", "8192"), ("H", "128")],
    [("B", "2"), ("N", "4096"), ("H", "128")],
    [("B", "3"), ("N", "2048"), ("H", "128")],
    [("B", "2"), ("N", "2048"), ("H", "64")],
];

fn defines(d: &[(&str, &str)]) -> Vec<(String, String)> {
    d.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Compiles `src` at `d` and times one warm-up and `LAUNCHES` launches on
/// one emulated core: (wall seconds, report) of each timed launch.
fn launches(
    src: &SourceFile,
    d: &[(String, String)],
    target: &Target,
    trace: bool,
) -> Result<Vec<(f64, LaunchReport)>, String> {
    let mut compile = CompileOptions::new()?;
    compile.target = target.clone();
    compile.defines = d.iter().cloned().collect::<Defines>();
    let c = driver::compile(src, &compile).map_err(|e| format!("{}: {e}", src.name))?;
    let exe = Executable::new(&c, target).map_err(|e| e.to_string())?;
    let specs = exe.input_specs().map_err(|e| e.to_string())?;
    let inputs = generate_all(&specs, &InputOptions::default(), |_| None)?;
    let cfg = RunConfig {
        cores: 1,
        trace,
        ..RunConfig::default()
    };
    let mut p = exe.prepare(&inputs, &cfg).map_err(|e| e.to_string())?;
    exe.launch(&mut p).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for _ in 0..LAUNCHES {
        let t = std::time::Instant::now();
        let r = exe.launch(&mut p).map_err(|e| e.to_string())?;
        out.push((t.elapsed().as_secs_f64(), r));
    }
    Ok(out)
}

/// The load average of the last minute (`/proc/loadavg`), if known.
pub(crate) fn load_average() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Times from a set on one thread to the return of the matching wait that
/// blocked on the other (ns), from one launch's trace.
fn wake_latencies(r: &LaunchReport, out: &mut Vec<f64>) {
    let Some(trace) = &r.trace else { return };
    let flag_id = |name: &str| name.split_whitespace().nth(1)?.parse::<u32>().ok();
    let mut sets: std::collections::HashMap<(bool, u32), Vec<u64>> = Default::default();
    let mut waits: std::collections::HashMap<(bool, u32), Vec<(u64, u64)>> = Default::default();
    for e in &trace.events {
        let cube = e.unit == UnitKind::Cube;
        let Some(id) = flag_id(&e.name) else { continue };
        match e.category {
            "flag_set" => sets.entry((cube, id)).or_default().push(e.start_ns),
            // The waiter is the other unit than the setter.
            "flag_wait" => waits
                .entry((!cube, id))
                .or_default()
                .push((e.start_ns, e.end_ns)),
            _ => {}
        }
    }
    for (key, s) in &sets {
        let Some(w) = waits.get(key) else { continue };
        for (set, (w0, w1)) in s.iter().zip(w) {
            if w0 < set && w1 >= set {
                out.push((w1 - set) as f64);
            }
        }
    }
}

/// Busy ns of the model's Vector pipe for `d` on `t`.
fn vector_work(src: &SourceFile, d: &[(String, String)], t: &Target) -> Result<f64, String> {
    let cfg = SimConfig {
        trace_items: 0,
        ..SimConfig::default()
    };
    let r = predict(src, d, &[], t, &cfg)?;
    Ok(r.pipes
        .iter()
        .filter(|p| p.pipe == SimPipe::Vector)
        .map(|p| p.busy_ns)
        .sum::<f64>())
}

/// Least squares of `y ≈ a·x1 + b·x2` with `a, b ≥ 0`.
fn fit2(rows: &[(f64, f64, f64)]) -> (f64, f64) {
    let (mut s11, mut s12, mut s22, mut s1y, mut s2y) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &(x1, x2, y) in rows {
        s11 += x1 * x1;
        s12 += x1 * x2;
        s22 += x2 * x2;
        s1y += x1 * y;
        s2y += x2 * y;
    }
    let det = s11 * s22 - s12 * s12;
    if det.abs() > 1e-12 * s11 * s22 {
        let a = (s1y * s22 - s2y * s12) / det;
        let b = (s2y * s11 - s1y * s12) / det;
        if a >= 0.0 && b >= 0.0 {
            return (a, b);
        }
    }
    // One coefficient alone (the better of the two).
    let (a, b) = (s1y / s11.max(1e-30), s2y / s22.max(1e-30));
    let err = |a: f64, b: f64| {
        rows.iter()
            .map(|&(x1, x2, y)| (a * x1 + b * x2 - y).powi(2))
            .sum::<f64>()
    };
    if err(a, 0.0) < err(0.0, b) {
        (a, 0.0)
    } else {
        (0.0, b)
    }
}

/// Measures the host; returns the text of a `host` target file.
pub(crate) fn probe_host(src: &SourceFile) -> Result<String, String> {
    let base = Target::builtin("host").map_err(|e| e.to_string())?;
    // Per launch of every probe shape: the figures below.
    let (mut macs, mut issue, mut set, mut launch) = (vec![], vec![], vec![], vec![]);
    let mut rates: [Vec<f64>; 4] = Default::default();
    let mut lat = Vec::new();
    let mut vec_rows = Vec::new();
    // The model's Vector ops (1 ns each) and repeats (1 ns each).
    let mut ops_t = base.clone();
    ops_t.vector.issue_cycles = 1.0;
    let mut reps_t = base.clone();
    reps_t.vector.issue_cycles = 0.0;
    for (t, c) in [(&mut ops_t, 1e-9), (&mut reps_t, 1.0)] {
        let oc = &mut t.vector.op_cycles;
        (
            oc.elementwise,
            oc.transcendental,
            oc.divide,
            oc.reduce,
            oc.cast,
        ) = (c, c, c, c, c);
    }
    for shape in PROBES {
        let d = defines(&shape);
        let runs = launches(src, &d, &base, true)?;
        let mut own_vec = Vec::new();
        for (wall, r) in &runs {
            let st = &r.stats;
            let t = &st.total;
            let cube = t.get(Pipe::Cube);
            macs.push(cube.flops as f64 / 2.0 / cube.busy_ns.max(1) as f64);
            for (i, p) in [Pipe::Mte2, Pipe::Mte1, Pipe::FixPipe, Pipe::Mte3]
                .into_iter()
                .enumerate()
            {
                let c = t.get(p);
                if c.busy_ns > 0 && c.bytes > 0 {
                    rates[i].push(c.bytes as f64 / c.busy_ns as f64);
                }
            }
            let fs = t.get(Pipe::FlagSet);
            set.push(fs.busy_ns as f64 / fs.calls.max(1) as f64);
            let mut longest = 0u64;
            for u in &st.units {
                longest = longest.max(u.entry_ns);
                let calls: u64 = Pipe::ALL.iter().map(|&p| u.pipes.get(p).busy_ns).sum();
                if u.unit == UnitKind::Cube {
                    let moves: u64 = [Pipe::Mte1, Pipe::Mte2, Pipe::FixPipe, Pipe::Mte3]
                        .iter()
                        .map(|&p| u.pipes.get(p).calls)
                        .sum();
                    let own = u.entry_ns.saturating_sub(calls) as f64;
                    issue.push(own / moves.max(1) as f64);
                } else {
                    own_vec.push(u.pipes.get(Pipe::Vector).busy_ns as f64);
                }
            }
            launch.push((wall * 1e9 - longest as f64).max(0.0));
            wake_latencies(r, &mut lat);
        }
        vec_rows.push((
            vector_work(src, &d, &ops_t)?,
            vector_work(src, &d, &reps_t)?,
            median(&own_vec),
        ));
    }
    let (vec_issue, vec_cycles) = fit2(&vec_rows);
    let m = |v: &[f64]| {
        let x = median(v);
        if x.is_finite() { x } else { 0.0 }
    };
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (mte2, mte1, fixp, mte3) = (m(&rates[0]), m(&rates[1]), m(&rates[2]), m(&rates[3]));
    let b = &base.buffers;
    let load = load_average().map_or("unknown".into(), |l| format!("{l:.2}"));
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# The host machine as a target of the cost model, for calibration only
# (`amlac simulate --calibrate`). Written by `amlac simulate --probe-host`
# (the module doc of compiler/src/cli/simulate/calibrate.rs says how each
# figure is measured): MLA decode at B = 1 and (N, H) = (2048, 128),
# (4096, 32), (4096, 128), {LAUNCHES} warm traced launches each with `--cores 1`,
# medians over launches; load average {load} when measured.
# A cycle is 1 ns (clock_ghz = 1). Buffers, alignment and flag count are the
# emulated core's (the 910B's), so the host compiles the same IR.
name = \"host\"
description = \"this machine running the emulated AI core with --cores 1 (1 Cube thread + 1 Vector thread)\"

[chip]
ai_cores = 1                  # amlac run --cores 1
vector_per_core = 1           # the runtime runs one Vector thread for a 1-sub-block Vector function
clock_ghz = 1.0               # 1 cycle = 1 ns
hbm_gbps = {hbm:.1}          # no separate limit: the measured move rates include host memory
l2_bytes = {l2}
l2_gbps = {l2bw:.1}           # as hbm_gbps

[buffers]                     # the emulated core's (ascend910b.toml)
l1 = {l1}
l0a = {l0a}
l0b = {l0b}
l0c = {l0c}
ub = {ub}

[align]
bytes = {align}

[cube]
fractal = [{f0}, {f1}, {f2}]
macs_per_cycle = {{ bf16 = {macs:.3}, f16 = {macs:.3} }}   # measured: matmul FLOPs / 2 / matmul busy ns

[vector]
repeat_bytes = {rb}
repeats_per_cycle = 1
issue_cycles = {vi:.1}          # fitted: Vector thread's own ns per op (with op_cycles per repeat)
op_cycles = {{ elementwise = {vc:.4}, transcendental = {vc:.4}, divide = {vc:.4}, reduce = {vc:.4}, cast = {vc:.4} }}

[moves]                       # measured bytes / busy ns of each pipe
mte2_bytes_per_cycle = {mte2:.4}
mte1_bytes_per_cycle = {mte1:.4}
fixpipe_bytes_per_cycle = {fixp:.4}
mte3_bytes_per_cycle = {mte3:.4}
issue_cycles = {mi:.1}          # measured: the Cube thread's own ns (JIT code between calls) per Cube-side move

[flags]
cross_core_ids = {ids}
latency_cycles = {flag:.1}       # measured: set on one thread -> the blocked wait on the other returns (mean)
set_cycles = {set:.1}           # measured: mean ns a set holds the setting thread

[atomic]
dtypes = [\"f32\"]
add_bytes_per_cycle = {atomic:.4}  # not a separate limit: atomic adds are inside the FixPipe/MTE3 rates

[model]
pipes_concurrent = false      # each emulated unit is one thread: its ops run one after another
launch_cycles = {launch:.0}        # measured: launch wall time minus the longest unit's entry time",
        l2 = base.chip.l2_bytes,
        hbm = base.chip.hbm_gbps,
        l2bw = base.chip.l2_gbps,
        l1 = b.l1,
        l0a = b.l0a,
        l0b = b.l0b,
        l0c = b.l0c,
        ub = b.ub,
        align = base.align.bytes,
        f0 = base.cube.fractal[0],
        f1 = base.cube.fractal[1],
        f2 = base.cube.fractal[2],
        rb = base.vector.repeat_bytes,
        vi = vec_issue,
        vc = vec_cycles.max(1e-4),
        mte2 = mte2.max(1e-4),
        mte1 = mte1.max(1e-4),
        fixp = fixp.max(1e-4),
        mte3 = mte3.max(1e-4),
        mi = m(&issue),
        ids = base.flags.cross_core_ids,
        flag = mean(&lat),
        set = mean(&set),
        atomic = fixp.max(mte3).max(1e-4),
        macs = m(&macs).max(1e-4),
        launch = m(&launch),
    );
    Target::parse(&o, "probe output")
        .map_err(|e| format!("the probe wrote an invalid target: {e}"))?;
    Ok(o)
}

/// Predicted against measured, per shape.
pub(crate) fn calibrate(src: &SourceFile, target: &Target, json: bool) -> Result<String, String> {
    let cfg = SimConfig {
        trace_items: 0,
        ..SimConfig::default()
    };
    let mut text = String::new();
    let _ = writeln!(
        text,
        "MLA decode on target `{}`: model prediction vs measured (`--cores 1`, median of {LAUNCHES} warm launches; load average {})",
        target.name,
        load_average().map_or("unknown".into(), |l| format!("{l:.2}"))
    );
    let _ = writeln!(
        text,
        "{:>3} {:>6} {:>4} | {:>12} {:>12} | {:>7}",
        "B", "N", "H", "predicted ms", "measured ms", "error"
    );
    let mut rows = Vec::new();
    let mut worst: f64 = 0.0;
    for shape in SHAPES {
        let d = defines(&shape);
        let pred = predict(src, &d, &[], target, &cfg)?;
        let times: Vec<f64> = launches(src, &d, target, false)?
            .iter()
            .map(|(w, _)| w * 1e3)
            .collect();
        let meas = median(&times);
        let p = pred.time_ns / 1e6;
        let err = (p - meas) / meas;
        worst = worst.max(err.abs());
        let _ = writeln!(
            text,
            "{:>3} {:>6} {:>4} | {:>12.3} {:>12.3} | {:>+6.1}%",
            shape[0].1,
            shape[1].1,
            shape[2].1,
            p,
            meas,
            err * 100.0
        );
        rows.push(serde_json::json!({
            "B": shape[0].1, "N": shape[1].1, "H": shape[2].1,
            "predicted_ms": p, "measured_ms": meas, "error": err,
        }));
    }
    let _ = writeln!(text, "largest |error|: {:.1}%", worst * 100.0);
    if json {
        Ok(format!(
            "{}\n",
            serde_json::json!({ "target": target.name, "rows": rows, "max_abs_error": worst, "load_average": load_average() })
        ))
    } else {
        Ok(text)
    }
}
