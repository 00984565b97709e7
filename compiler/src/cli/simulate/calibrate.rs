//! Calibration of the cost model on the host.
//!
//! `--probe-host` measures this machine running the emulated core and prints
//! a `host` target file (`targets/host.toml` is one such output): its
//! `[host]` section is what the model needs to model `amlac run` as the
//! runtime runs it (the module doc of `simulate` says how). It runs MLA
//! decode at the probe shapes [`PROBES`] (none is a calibration shape),
//! with `--cores 1` (the threads schedule: a Cube and a Vector thread) and
//! with the default cores (the host's CPUs: the cooperative schedule, one
//! thread per core), one warm-up and [`LAUNCHES`] traced launches each, and
//! takes every figure from those launches. The model predicts a launch on
//! a machine where nothing else takes the CPUs, so within one launch every
//! class of events (a runtime call by its trace name; a stretch of JIT code
//! between two calls, by the names around it) counts as the sum of its
//! durations, except that an event longer than 4× the class's median (the
//! host scheduler preempted it) counts as the median; then the median over
//! launches:
//! - every runtime call of core 0: a matmul shape's time per call
//!   (`host.cube.matmul`); a copy path's `call_ns + bytes / bytes_per_ns`, a
//!   least-squares fit over the probes of its time to the calls and bytes
//!   the model counts (a mismatch between the calls the model counts and
//!   the runtime's fails the probe: the op streams must be the same);
//! - `cube.call_ns`: the Cube's JIT code between calls, per runtime call
//!   the model counts (least squares);
//! - `vector.op_ns`, `elem_ns`: a least-squares fit of the Vector unit's JIT
//!   code between calls to the ops and elements the model counts;
//! - the tables above come from the cooperative launches (the default
//!   run's); threads: `work_scale`, the ratio of every unit's calls and JIT
//!   code (robust totals, as above) of the `--cores 1` launches to the
//!   cooperative ones, over the probe shapes;
//! - threads: `wake_ns`, the median time from a set on one thread to the
//!   return of the other thread's wait blocked on it; `set_ns`, the median
//!   time a set holds its thread; `launch_ns`, the median of launch wall
//!   time minus the longest unit's entry time;
//! - cooperative: `flag_ns`, the median time of a set; `switch_ns`, the
//!   median time from the other unit's last call before a blocked wait
//!   returns to its return (that unit's JIT code up to its own wait, the
//!   suspend and the resume); `launch_ns` as for threads.
//!
//! The Ascend-named figures of the file (`cube.macs_per_cycle`, the move
//! rates, the Vector cycles) are the same measurements in the units those
//! fields have; the model uses them only for an op the `[host]` tables
//! lack. A cycle is 1 ns.
//!
//! `--calibrate` then predicts the calibration shapes [`SHAPES`] with that
//! target, at both core counts, and compares with the median wall time of
//! [`LAUNCHES`] warm launches (after one warm-up, as `amlac bench` times
//! them); it also prints the fastest launch, and compares the model's CPU
//! time of the launch ([`crate::simulate::Report::cpu_ns`]) with the
//! process's measured CPU time (median), which the load of other processes
//! does not inflate; and the load average before and after.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use super::predict;
use crate::check::Defines;
use crate::diag::SourceFile;
use crate::driver::{self, CompileOptions};
use crate::run::bench::{median, process_cpu_seconds};
use crate::run::exec::{Executable, RunConfig};
use crate::run::inputs::{InputOptions, generate_all};
use crate::simulate::SimConfig;
use crate::target::Target;
use amla_runtime::launch::LaunchReport;
use amla_runtime::units::UnitKind;

/// The probe shapes of `--probe-host` (none is a calibration shape; every
/// `H` of one is a probe's, so every matmul shape is measured).
const PROBES: [[(&str, &str); 3]; 4] = [
    [("B", "1"), ("N", "2048"), ("H", "128")],
    [("B", "1"), ("N", "4096"), ("H", "32")],
    [("B", "1"), ("N", "4096"), ("H", "64")],
    [("B", "2"), ("N", "1024"), ("H", "128")],
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
/// `cores` emulated cores: (wall seconds, report, process CPU seconds) of
/// each timed launch.
fn launches(
    src: &SourceFile,
    d: &[(String, String)],
    target: &Target,
    cores: usize,
    trace: bool,
) -> Result<Vec<(f64, LaunchReport, f64)>, String> {
    let mut compile = CompileOptions::new()?;
    compile.target = target.clone();
    compile.defines = d.iter().cloned().collect::<Defines>();
    let c = driver::compile(src, &compile).map_err(|e| format!("{}: {e}", src.name))?;
    let exe = Executable::new(&c, target).map_err(|e| e.to_string())?;
    let specs = exe.input_specs().map_err(|e| e.to_string())?;
    let inputs = generate_all(&specs, &InputOptions::default(), |_| None)?;
    let cfg = RunConfig {
        cores,
        trace,
        ..RunConfig::default()
    };
    let mut p = exe.prepare(&inputs, &cfg).map_err(|e| e.to_string())?;
    exe.launch_in_place(&mut p).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for _ in 0..LAUNCHES {
        let c0 = process_cpu_seconds().unwrap_or(0.0);
        let t = std::time::Instant::now();
        let r = exe.launch_in_place(&mut p).map_err(|e| e.to_string())?;
        let wall = t.elapsed().as_secs_f64();
        let cpu = process_cpu_seconds().unwrap_or(0.0) - c0;
        out.push((wall, r.clone(), cpu));
    }
    Ok(out)
}

/// The load average of the last minute (`/proc/loadavg`), if known.
pub(crate) fn load_average() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Which unit a trace event or a statistic belongs to, as the model names it.
fn side_name(u: UnitKind) -> &'static str {
    match u {
        UnitKind::Cube => "AIC",
        UnitKind::Vector(_) => "AIV",
    }
}

/// What one probe (a shape at a core count) measured, medians over launches.
#[derive(Default)]
struct Probe {
    /// Median ns of every runtime-call category of core 0 (`AIC copy gm->l1`).
    calls: BTreeMap<String, f64>,
    /// Calls of each category in one launch.
    counts: BTreeMap<String, u64>,
    /// Own time (JIT code) of the Cube and of the Vector unit of core 0.
    own: [f64; 2],
    /// Wall minus the longest unit entry.
    outside: f64,
    /// Mean set → blocked-wait-return latency, and their count.
    wake: Vec<f64>,
    /// Cooperative: switch samples ([`switches`]).
    switch: Vec<f64>,
    /// Median ns of a set.
    set: f64,
}

/// Measures one shape at `cores` with traced launches.
fn probe(
    src: &SourceFile,
    d: &[(String, String)],
    target: &Target,
    cores: usize,
) -> Result<Probe, String> {
    let runs = launches(src, d, target, cores, true)?;
    let mut per: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut own = [vec![], vec![]];
    let (mut outside, mut set) = (vec![], vec![]);
    let (mut wake, mut switch) = (Vec::new(), Vec::new());
    let mut counts = BTreeMap::new();
    for (w, r, _) in &runs {
        let Some(trace) = &r.trace else {
            return Err("the probe's launch recorded no trace".into());
        };
        // Per class of event (a call's name; a gap of JIT code between two
        // calls, by the names around it) every duration, per unit.
        let mut calls: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let mut gaps: [BTreeMap<(String, String), Vec<f64>>; 2] = Default::default();
        let mut last: [Option<(String, u64)>; 2] = [None, None];
        let mut sets_ns = Vec::new();
        for e in trace
            .events
            .iter()
            .filter(|e| e.core == 0 && e.category != "item")
        {
            let ns = (e.end_ns - e.start_ns) as f64;
            let u = usize::from(e.unit != UnitKind::Cube);
            let name = e
                .name
                .split(" (block")
                .next()
                .unwrap_or(&e.name)
                .to_string();
            match e.category {
                "flag_set" => sets_ns.push(ns),
                "flag_wait" => {}
                _ => calls
                    .entry(format!("{} {name}", side_name(e.unit)))
                    .or_default()
                    .push(ns),
            }
            if let Some((prev, end)) = last[u].take() {
                gaps[u]
                    .entry((prev, name.clone()))
                    .or_default()
                    .push(e.start_ns.saturating_sub(end) as f64);
            }
            last[u] = Some((name, e.end_ns));
        }
        // Robust totals of every class: each event as measured, except
        // one longer than 4× the class's median (the host scheduler
        // preempted it), which counts as the median.
        let robust = |v: &Vec<f64>| {
            let m = median(v);
            v.iter()
                .map(|&x| if x > 4.0 * m { m } else { x })
                .sum::<f64>()
        };
        counts = calls
            .iter()
            .map(|(k, v)| (k.clone(), v.len() as u64))
            .collect();
        for (k, v) in &calls {
            per.entry(k.clone()).or_default().push(robust(v));
        }
        for u in 0..2 {
            own[u].push(gaps[u].values().map(robust).sum::<f64>());
        }
        set.push(median(&sets_ns));
        let mut longest = 0u64;
        for u in &r.stats.units {
            longest = longest.max(u.entry_ns);
        }
        outside.push((w * 1e9 - longest as f64).max(0.0));
        wake_latencies(r, &mut wake);
        switches(r, &mut switch);
    }
    Ok(Probe {
        calls: per.into_iter().map(|(k, v)| (k, median(&v))).collect(),
        counts,
        own: [median(&own[0]), median(&own[1])],
        outside: median(&outside),
        wake,
        switch,
        set: median(&set),
    })
}

/// On the cooperative schedule: for every wait of core 0 that blocked, the
/// time from the other unit's last call before the wait returned to its
/// return (the other unit's JIT code up to its own blocked wait, the
/// suspend and the resume), ns.
fn switches(r: &LaunchReport, out: &mut Vec<f64>) {
    let Some(trace) = &r.trace else { return };
    let mut ends: [Vec<u64>; 2] = Default::default();
    for e in trace
        .events
        .iter()
        .filter(|e| e.core == 0 && e.category != "item")
    {
        if e.category != "flag_wait" {
            ends[usize::from(e.unit != UnitKind::Cube)].push(e.end_ns);
        }
    }
    for v in &mut ends {
        v.sort_unstable();
    }
    for e in trace
        .events
        .iter()
        .filter(|e| e.core == 0 && e.category == "flag_wait")
    {
        let other = &ends[usize::from(e.unit == UnitKind::Cube)];
        let i = other.partition_point(|&t| t <= e.end_ns);
        if i > 0 && other[i - 1] > e.start_ns {
            out.push((e.end_ns - other[i - 1]) as f64);
        }
    }
}

/// Times from a set on one thread to the return of the matching wait that
/// blocked on the other (ns), from one launch's trace (core 0).
fn wake_latencies(r: &LaunchReport, out: &mut Vec<f64>) {
    let Some(trace) = &r.trace else { return };
    let flag_id = |name: &str| name.split_whitespace().nth(1)?.parse::<u32>().ok();
    let mut sets: HashMap<(bool, u32), Vec<u64>> = HashMap::new();
    let mut waits: HashMap<(bool, u32), Vec<(u64, u64)>> = HashMap::new();
    for e in trace.events.iter().filter(|e| e.core == 0) {
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
    if det.abs() > 1e-9 * s11 * s22 {
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

/// Least squares of `y ≈ a·x1 + b·x2 + c·x3` with every coefficient ≥ 0:
/// the unconstrained solution if it has no negative one, else the best of
/// the fits with one coefficient fixed at 0.
fn fit3(rows: &[[f64; 4]]) -> [f64; 3] {
    let mut m = [[0.0f64; 4]; 3];
    for r in rows {
        for i in 0..3 {
            for j in 0..3 {
                m[i][j] += r[i] * r[j];
            }
            m[i][3] += r[i] * r[3];
        }
    }
    // Gaussian elimination with partial pivoting.
    let solve = |mut m: [[f64; 4]; 3]| -> Option<[f64; 3]> {
        for c in 0..3 {
            let p = (c..3).max_by(|&a, &b| m[a][c].abs().total_cmp(&m[b][c].abs()))?;
            m.swap(c, p);
            if m[c][c].abs() < 1e-12 * (1.0 + m[c][3].abs()) {
                return None;
            }
            let pivot = m[c];
            for (r, row) in m.iter_mut().enumerate() {
                if r != c {
                    let f = row[c] / pivot[c];
                    for (x, p) in row.iter_mut().zip(pivot).skip(c) {
                        *x -= f * p;
                    }
                }
            }
        }
        Some([m[0][3] / m[0][0], m[1][3] / m[1][1], m[2][3] / m[2][2]])
    };
    if let Some(x) = solve(m)
        && x.iter().all(|&v| v >= 0.0 && v.is_finite())
    {
        return x;
    }
    let err = |x: &[f64; 3]| {
        rows.iter()
            .map(|r| (x[0] * r[0] + x[1] * r[1] + x[2] * r[2] - r[3]).powi(2))
            .sum::<f64>()
    };
    let mut best = [0.0; 3];
    let mut best_err = f64::INFINITY;
    for drop in 0..3 {
        let keep: Vec<usize> = (0..3).filter(|&i| i != drop).collect();
        let sub: Vec<(f64, f64, f64)> = rows
            .iter()
            .map(|r| (r[keep[0]], r[keep[1]], r[3]))
            .collect();
        let (a, b) = fit2(&sub);
        let mut x = [0.0; 3];
        (x[keep[0]], x[keep[1]]) = (a, b);
        if err(&x) < best_err {
            (best, best_err) = (x, err(&x));
        }
    }
    best
}

/// The host's CPUs as the runtime counts them (its default `host_cpus`).
fn host_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A finite value or 0.
fn finite(x: f64) -> f64 {
    if x.is_finite() { x } else { 0.0 }
}

/// Measures the host; returns the text of a `host` target file.
pub(crate) fn probe_host(src: &SourceFile) -> Result<String, String> {
    let emulated = Target::ascend910b();
    let cpus = host_cpus();
    // The model's counts come from any host target (they do not depend on
    // its costs): the built-in one.
    let base = Target::builtin("host").map_err(|e| e.to_string())?;
    let mut probes = Vec::new(); // (shape, cores, measured, model report)
    for shape in PROBES {
        let d = defines(&shape);
        for cores in [1, cpus] {
            let m = probe(src, &d, &base, cores)?;
            let cfg = SimConfig {
                trace_items: 0,
                cores: Some(cores as u32),
                ..SimConfig::default()
            };
            let r = predict(src, &d, &[], &base, &cfg)?;
            probes.push((d.clone(), cores, m, r));
        }
    }
    // Runtime calls: matmuls by shape (ns per call), copies by path (fit).
    let mut matmul: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut copy_rows: BTreeMap<String, Vec<(f64, f64, f64)>> = BTreeMap::new();
    let mut mismatched = Vec::new();
    for (d, cores, m, r) in &probes {
        for (key, &ns) in &m.calls {
            let calls = m.counts.get(key).copied().unwrap_or(0);
            let (model_calls, qty) = r.work.get(key).copied().unwrap_or((0, 0));
            if model_calls != calls {
                mismatched.push(format!(
                    "{key}: {calls} measured, {model_calls} in the model ({d:?}, {cores} cores)"
                ));
            }
            // The tables are the cooperative schedule's (the default run's);
            // the threads schedule's work is a measured multiple of them.
            if *cores < cpus {
                continue;
            }
            if let Some(shape) = key.strip_prefix("AIC matmul ") {
                matmul
                    .entry(shape.to_string())
                    .or_default()
                    .push(ns / calls.max(1) as f64);
            } else if let Some(path) = key.split_once(" copy ").map(|(_, p)| p) {
                copy_rows
                    .entry(path.to_string())
                    .or_default()
                    .push((calls as f64, qty as f64, ns));
            }
        }
    }
    if !mismatched.is_empty() {
        return Err(format!(
            "the model's op streams do not match the runtime's calls:\n  {}",
            mismatched.join("\n  ")
        ));
    }
    let matmul: BTreeMap<String, f64> = matmul.into_iter().map(|(k, v)| (k, median(&v))).collect();
    let mut copies = BTreeMap::new();
    for (path, rows) in &copy_rows {
        let (call, per_byte) = fit2(rows);
        let bytes: f64 = rows.iter().map(|r| r.1).sum();
        let ns: f64 = rows.iter().map(|r| r.2).sum();
        // A path whose time is all per call still needs a rate: its mean.
        let per_byte = if per_byte > 0.0 {
            per_byte
        } else {
            (ns / bytes.max(1.0)).max(1e-6) * 1e-3
        };
        copies.insert(path.clone(), (call, 1.0 / per_byte));
    }
    // Own time of the units' JIT code.
    let (mut cube_rows, mut vec_rows) = (vec![], vec![]);
    for (_, _, m, r) in probes.iter().filter(|p| p.1 >= cpus) {
        let calls = r.work.get("AIC cube calls").map_or(0, |w| w.0) as f64;
        cube_rows.push((calls, 0.0, m.own[0]));
        let (ub_ops, ub) = r.work.get("AIV vector ub").copied().unwrap_or((0, 0));
        let (gm_ops, gm) = r.work.get("AIV vector gm").copied().unwrap_or((0, 0));
        vec_rows.push([(ub_ops + gm_ops) as f64, ub as f64, gm as f64, m.own[1]]);
    }
    let (cube_call, _) = fit2(&cube_rows);
    // The same work costs the threads schedule more (two threads on two
    // CPUs: colder caches, kernel round trips): the ratio of every unit's
    // calls and JIT code, threads over cooperative, over the probe shapes.
    let work = |threads: bool| -> f64 {
        probes
            .iter()
            .filter(|p| (p.1 < cpus) == threads)
            .map(|p| p.2.calls.values().sum::<f64>() + p.2.own[0] + p.2.own[1])
            .sum()
    };
    let work_scale = finite(work(true) / work(false));
    let work_scale = if work_scale > 0.0 { work_scale } else { 1.0 };
    let [vec_op, vec_elem, vec_gm] = fit3(&vec_rows);
    // Threads schedule: flag costs and launch overhead, straight from the
    // traces of the `--cores 1` launches.
    let threads: Vec<&Probe> = probes.iter().filter(|p| p.1 < cpus).map(|p| &p.2).collect();
    let coop: Vec<&Probe> = probes
        .iter()
        .filter(|p| p.1 >= cpus)
        .map(|p| &p.2)
        .collect();
    let wake: Vec<f64> = threads
        .iter()
        .flat_map(|p| p.wake.iter().copied())
        .collect();
    let t_set: Vec<f64> = threads.iter().map(|p| p.set).collect();
    let t_launch: Vec<f64> = threads.iter().map(|p| p.outside).collect();
    let c_flag: Vec<f64> = coop.iter().map(|p| p.set).collect();
    let mut costs = HostCosts {
        cpus,
        parallel: parallel(cpus),
        t_launch: finite(median(&t_launch)),
        t_scale: work_scale,
        t_set: finite(median(&t_set)),
        t_wake: finite(median(&wake)),
        c_launch: 0.0,
        c_flag: finite(median(&c_flag)),
        c_switch: 0.0,
        cube_call,
        vec_op,
        vec_elem,
        vec_gm,
        matmul,
        copies,
    };
    let c_launch: Vec<f64> = coop.iter().map(|p| p.outside).collect();
    let c_switch: Vec<f64> = coop.iter().flat_map(|p| p.switch.iter().copied()).collect();
    costs.c_launch = finite(median(&c_launch));
    costs.c_switch = finite(median(&c_switch));
    let load = load_average().map_or("unknown".into(), |l| format!("{l:.2}"));
    let text = costs.text(&emulated, &load);
    Target::parse(&text, "probe output")
        .map_err(|e| format!("the probe wrote an invalid target: {e}"))?;
    Ok(text)
}

/// CPUs' worth of work the host runs at once (`host.parallel`): the FLOP/s
/// of the runtime's matmul instruction on one thread per CPU over one
/// thread's alone (median of 7 samples of 20 ms each), within `1..=cpus`.
fn parallel(cpus: usize) -> f64 {
    let path = RunConfig::default().resolved_matmul_path();
    let d = std::time::Duration::from_millis(20);
    let peak = amla_runtime::peak::probe_peak(path, Some(cpus), d, 7).or_else(|| {
        amla_runtime::peak::probe_peak(amla_runtime::matmul::MatmulPath::Scalar, Some(cpus), d, 7)
    });
    let ratio = peak.map_or(1.0, |p| p.flops_per_s / p.flops_per_s_one);
    clamp_parallel(ratio, cpus)
}

/// `ratio` within `1..=cpus` (1 when it is not a number).
fn clamp_parallel(ratio: f64, cpus: usize) -> f64 {
    if ratio.is_finite() {
        ratio.clamp(1.0, cpus.max(1) as f64)
    } else {
        1.0
    }
}

/// The measured figures of a `host` target.
struct HostCosts {
    cpus: usize,
    parallel: f64,
    t_launch: f64,
    t_scale: f64,
    t_set: f64,
    t_wake: f64,
    c_launch: f64,
    c_flag: f64,
    c_switch: f64,
    cube_call: f64,
    vec_op: f64,
    vec_elem: f64,
    vec_gm: f64,
    matmul: BTreeMap<String, f64>,
    /// Path → (ns per call, bytes per ns).
    copies: BTreeMap<String, (f64, f64)>,
}

impl HostCosts {
    /// The rate of the copies on `paths` together (bytes per ns), for the
    /// Ascend-named fallback fields.
    fn rate(&self, paths: &[&str]) -> f64 {
        let r: Vec<f64> = paths
            .iter()
            .filter_map(|p| self.copies.get(*p).map(|c| c.1))
            .collect();
        if r.is_empty() {
            1.0
        } else {
            r.iter().sum::<f64>() / r.len() as f64
        }
    }

    /// The target file; `emulated` gives the emulated core's buffers,
    /// alignment and flag count (the host compiles the same IR).
    fn text(&self, emulated: &Target, load: &str) -> String {
        // Fallback MAC rate: every measured shape's MACs over its time.
        let (mut macs, mut ns) = (0.0, 0.0);
        for (shape, t) in &self.matmul {
            let m: f64 = shape
                .split('x')
                .filter_map(|x| x.parse::<f64>().ok())
                .product();
            macs += m;
            ns += t;
        }
        let macs_per_ns = if ns > 0.0 { macs / ns } else { 1.0 };
        let b = &emulated.buffers;
        let f = &emulated.cube.fractal;
        let probes = PROBES
            .iter()
            .map(|p| format!("({}, {}, {})", p[0].1, p[1].1, p[2].1))
            .collect::<Vec<_>>()
            .join(", ");
        let mut o = String::new();
        let _ = writeln!(
            o,
            "# The host machine as a target of the cost model, for calibration only
# (`amlac simulate --calibrate`). Written by `amlac simulate --probe-host`
# (the module doc of compiler/src/cli/simulate/calibrate.rs says how each
# figure is measured): MLA decode at (B, N, H) = {probes}, {LAUNCHES} warm
# traced launches each with --cores 1 and with the default cores ({cpus});
# load average {load} when measured. Times in ns; a cycle is 1 ns.
# Buffers, alignment and flag count are the emulated core's (ascend910b.toml),
# so the host compiles the same IR.
name = \"host\"
description = \"this machine running the emulated AI core (amlac run)\"

[chip]
ai_cores = {cpus}                  # the runtime's default cores: the host's CPUs
vector_per_core = 1           # the host runs the Vector function's sub-blocks, no row split
clock_ghz = 1.0               # 1 cycle = 1 ns
hbm_gbps = {gm:.1}          # the fastest measured copy from or to GM, GB/s (the host model uses the copy table)
l2_bytes = {l2}
l2_gbps = {gm:.1}           # as hbm_gbps

[buffers]                     # the emulated core's
l1 = {l1}
l0a = {l0a}
l0b = {l0b}
l0c = {l0c}
ub = {ub}

[align]
bytes = {align}

[cube]
fractal = [{f0}, {f1}, {f2}]
macs_per_cycle = {{ bf16 = {macs:.3}, f16 = {macs:.3} }}   # = host.cube.macs_per_ns

[vector]
repeat_bytes = {rb}
repeats_per_cycle = 1
issue_cycles = {vop:.1}            # = host.vector.op_ns
op_cycles = {{ elementwise = {vrep:.4}, transcendental = {vrep:.4}, divide = {vrep:.4}, reduce = {vrep:.4}, cast = {vrep:.4} }}   # host.vector.elem_ns per repeat of f32

[moves]                       # the measured copy rates of each pipe's paths
mte2_bytes_per_cycle = {mte2:.4}
mte1_bytes_per_cycle = {mte1:.4}
fixpipe_bytes_per_cycle = {fixp:.4}
mte3_bytes_per_cycle = {mte3:.4}
issue_cycles = {call:.1}            # = host.cube.call_ns

[flags]
cross_core_ids = {ids}
latency_cycles = {wake:.1}       # = host.threads.wake_ns

[atomic]
dtypes = [\"f32\"]
add_bytes_per_cycle = {atomic:.4}  # the measured rate of l0c->gm (atomic add)

[model]
pipes_concurrent = false      # each emulated unit runs its ops one after another

[host]
cpus = {cpus}                      # the runtime's host_cpus: cores >= cpus runs the cooperative schedule
parallel = {par:.3}               # measured: FLOP/s of the matmul instruction on {cpus} threads at once over one thread's (runtime peak probe)

[host.threads]                # --cores below cpus: one thread per unit
launch_ns = {tl:.0}             # measured: launch wall time minus the longest unit's entry time
set_ns = {ts:.1}               # measured: median ns a set holds its thread
wake_ns = {wake:.1}              # measured: set -> the blocked wait on the other thread returns (median)
work_scale = {tw:.4}            # measured: every unit's calls and JIT code, threads over cooperative, on the probes

[host.cooperative]            # a core's units are coroutines on one thread
launch_ns = {cl:.0}             # measured: launch wall time minus the longest unit's entry time
flag_ns = {cf:.1}               # measured: median ns of a set
switch_ns = {cs:.1}             # measured: the other unit's last call -> a blocked wait returns (median)

[host.cube]
call_ns = {call:.1}                # fitted: the Cube's own JIT time per runtime call
macs_per_ns = {macs:.3}          # a matmul shape not measured below: the measured shapes' MACs over their time

[host.cube.matmul]            # measured: median ns per call, by shape MxNxK",
            l2 = emulated.chip.l2_bytes,
            gm = self
                .copies
                .iter()
                .filter(|(p, _)| p.contains("gm"))
                .map(|(_, c)| c.1)
                .fold(1.0, f64::max),
            l1 = b.l1,
            l0a = b.l0a,
            l0b = b.l0b,
            l0c = b.l0c,
            ub = b.ub,
            align = emulated.align.bytes,
            f0 = f[0],
            f1 = f[1],
            f2 = f[2],
            rb = emulated.vector.repeat_bytes,
            ids = emulated.flags.cross_core_ids,
            cpus = self.cpus,
            par = self.parallel,
            macs = macs_per_ns.max(1e-4),
            vop = self.vec_op,
            vrep = (self.vec_elem * f64::from(emulated.vector.repeat_bytes) / 4.0).max(1e-4),
            mte2 = self.rate(&["gm->l1", "gm->ub"]).max(1e-4),
            mte1 = self.rate(&["l1->l0a", "l1->l0b"]).max(1e-4),
            fixp = self.rate(&["l0c->gm", "l0c->gm (atomic add)"]).max(1e-4),
            mte3 = self.rate(&["ub->gm"]).max(1e-4),
            atomic = self.rate(&["l0c->gm (atomic add)"]).max(1e-4),
            call = self.cube_call,
            wake = self.t_wake,
            tl = self.t_launch,
            tw = self.t_scale,
            ts = self.t_set,
            cl = self.c_launch,
            cf = self.c_flag,
            cs = self.c_switch,
        );
        for (shape, ns) in &self.matmul {
            let _ = writeln!(o, "\"{shape}\" = {ns:.1}");
        }
        let _ = writeln!(
            o,
            "\n[host.vector]                # fitted: the Vector unit's own JIT time = ops * op_ns + elements * (elem_ns on UB, gm_elem_ns in GM/scratch)
op_ns = {:.1}
elem_ns = {:.4}
gm_elem_ns = {:.4}

[host.copy]                  # fitted: ns of a runtime copy = call_ns + bytes / bytes_per_ns, by path",
            self.vec_op, self.vec_elem, self.vec_gm
        );
        for (path, (call, bw)) in &self.copies {
            let _ = writeln!(
                o,
                "\"{path}\" = {{ call_ns = {call:.1}, bytes_per_ns = {bw:.4} }}"
            );
        }
        o
    }
}

/// Predicted against measured, per shape and core count (`--cores 1` and
/// the default, the host's CPUs).
pub(crate) fn calibrate(src: &SourceFile, target: &Target, json: bool) -> Result<String, String> {
    let load0 = load_average();
    let mut text = String::new();
    let _ = writeln!(
        text,
        "MLA decode on target `{}`: model prediction vs measured (median of {LAUNCHES} warm launches; load average {} at the start)",
        target.name,
        load0.map_or("unknown".into(), |l| format!("{l:.2}"))
    );
    let _ = writeln!(
        text,
        "{:>3} {:>6} {:>4} {:>5} {:>11} | {:>9} {:>9} {:>7} | {:>8} | {:>9} {:>9} {:>7}",
        "B",
        "N",
        "H",
        "cores",
        "schedule",
        "predicted",
        "measured",
        "error",
        "fastest",
        "CPU pred",
        "CPU meas",
        "error"
    );
    let _ = writeln!(
        text,
        "{:>32} | {:>9} {:>9} {:>7} | {:>8} | {:>9} {:>9} {:>7}",
        "", "ms", "ms (med)", "", "ms", "ms", "ms (med)", ""
    );
    let mut worst_cpu: f64 = 0.0;
    let mut rows = Vec::new();
    let mut worst: f64 = 0.0;
    for cores in [1, host_cpus()] {
        for shape in SHAPES {
            let d = defines(&shape);
            let cfg = SimConfig {
                trace_items: 0,
                cores: Some(cores as u32),
                ..SimConfig::default()
            };
            let pred = predict(src, &d, &[], target, &cfg)?;
            let runs = launches(src, &d, target, cores, false)?;
            let times: Vec<f64> = runs.iter().map(|(w, _, _)| w * 1e3).collect();
            let cpu: Vec<f64> = runs.iter().map(|(_, _, c)| c * 1e3).collect();
            let meas = median(&times);
            let (best, cpu) = (
                times.iter().copied().fold(f64::INFINITY, f64::min),
                median(&cpu),
            );
            let p = pred.time_ns / 1e6;
            let err = (p - meas) / meas;
            worst = worst.max(err.abs());
            let pcpu = pred.cpu_ns.unwrap_or(f64::NAN) / 1e6;
            let err_cpu = (pcpu - cpu) / cpu;
            worst_cpu = worst_cpu.max(err_cpu.abs());
            let sched = pred.host_schedule.unwrap_or("pipes");
            let _ = writeln!(
                text,
                "{:>3} {:>6} {:>4} {:>5} {:>11} | {:>9.3} {:>9.3} {:>+6.1}% | {:>8.3} | {:>9.3} {:>9.3} {:>+6.1}%",
                shape[0].1,
                shape[1].1,
                shape[2].1,
                cores,
                sched,
                p,
                meas,
                err * 100.0,
                best,
                pcpu,
                cpu,
                err_cpu * 100.0
            );
            rows.push(serde_json::json!({
                "B": shape[0].1, "N": shape[1].1, "H": shape[2].1, "cores": cores,
                "schedule": sched, "predicted_ms": p, "measured_ms": meas, "error": err,
                "fastest_ms": best, "cpu_ms": cpu, "predicted_cpu_ms": pcpu, "cpu_error": err_cpu,
            }));
        }
    }
    let load1 = load_average();
    let _ = writeln!(
        text,
        "largest |error|: {:.1}% of the wall time, {:.1}% of the CPU time   (load average {} at the end)",
        worst * 100.0,
        worst_cpu * 100.0,
        load1.map_or("unknown".into(), |l| format!("{l:.2}"))
    );
    if json {
        Ok(format!(
            "{}\n",
            serde_json::json!({ "target": target.name, "rows": rows, "max_abs_error": worst, "max_abs_cpu_error": worst_cpu,
                "load_average": load0, "load_average_end": load1 })
        ))
    } else {
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::clamp_parallel;

    #[test]
    fn the_measured_parallel_capacity_stays_within_one_and_the_cpus() {
        assert_eq!(clamp_parallel(1.93, 2), 1.93);
        assert_eq!(clamp_parallel(0.8, 2), 1.0);
        assert_eq!(clamp_parallel(2.4, 2), 2.0);
        assert_eq!(clamp_parallel(f64::NAN, 2), 1.0);
        assert_eq!(clamp_parallel(f64::INFINITY, 4), 1.0);
    }
}
