//! Calibration of the cost model on the host.
//!
//! `--probe-host` measures this machine running the emulated core and prints
//! a `host` target file (`targets/host.toml` is one such output): it runs MLA
//! decode once at the calibration shape (B = 1, N = 2048, H = 128) with one
//! emulated core (`amlac run --cores 1`: one Cube thread and one Vector
//! thread, each on its own CPU of a 2-CPU machine) and divides, per pipe, the
//! bytes (or FLOPs) the runtime counted by the busy time it measured; the
//! Vector rate is the measured Vector time over the Vector work the model
//! counts for the same run; the flag latency is a mutex/condvar ping-pong
//! between two threads (the runtime's flag mechanism).
//!
//! `--calibrate` then predicts other shapes with that target and compares
//! with the time `amlac run --cores 1` measures for them (the median of
//! three launches).

use std::fmt::Write as _;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use super::predict;
use crate::check::Defines;
use crate::diag::SourceFile;
use crate::driver::CompileOptions;
use crate::run::exec::RunConfig;
use crate::run::inputs::InputOptions;
use crate::run::session::{RunRequest, RunSummary, run_source};
use crate::simulate::{Pipe as SimPipe, SimConfig};
use crate::target::Target;
use amla_runtime::Pipe;

/// The calibration shape of `--probe-host`.
const PROBE: [(&str, &str); 3] = [("B", "1"), ("N", "2048"), ("H", "128")];

/// The shapes `--calibrate` reports (none is the probe's).
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

fn run_once(
    src: &SourceFile,
    d: &[(String, String)],
    target: &Target,
) -> Result<RunSummary, String> {
    let mut compile = CompileOptions::new()?;
    compile.target = target.clone();
    compile.defines = d.iter().cloned().collect::<Defines>();
    let req = RunRequest {
        compile,
        inputs: InputOptions::default(),
        given: Vec::new(),
        run: RunConfig {
            cores: 1,
            ..RunConfig::default()
        },
        check: false,
    };
    run_source(src, &req, &mut |_| {}).map_err(|e| format!("run failed: {e:?}"))
}

/// Half a mutex/condvar round trip between two threads, ns (median).
fn flag_latency_ns() -> f64 {
    let pair = Arc::new((Mutex::new(0u64), Condvar::new()));
    let p2 = Arc::clone(&pair);
    const ROUNDS: u64 = 2000;
    let h = std::thread::spawn(move || {
        let (m, c) = &*p2;
        for i in 0..ROUNDS {
            let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
            while *g != 2 * i + 1 {
                g = c.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            *g += 1;
            c.notify_all();
        }
    });
    let (m, c) = &*pair;
    let t = Instant::now();
    for i in 0..ROUNDS {
        let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
        *g = 2 * i + 1;
        c.notify_all();
        while *g != 2 * i + 2 {
            g = c.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
    let ns = t.elapsed().as_nanos() as f64 / (2 * ROUNDS) as f64;
    let _ = h.join();
    ns
}

/// Measures the host; returns the text of a `host` target file.
pub(crate) fn probe_host(src: &SourceFile) -> Result<String, String> {
    let base = Target::builtin("host").map_err(|e| e.to_string())?;
    let d = defines(&PROBE);
    let s = run_once(src, &d, &base)?;
    let st = &s.output.report.stats.total;
    let rate = |p: Pipe| {
        let c = st.get(p);
        if c.busy_ns == 0 {
            1.0
        } else {
            c.bytes as f64 / c.busy_ns as f64
        }
    };
    let cube = st.get(Pipe::Cube);
    let macs = cube.flops as f64 / 2.0 / (cube.busy_ns.max(1) as f64);
    let (mte1, mte2, mte3, fixp) = (
        rate(Pipe::Mte1),
        rate(Pipe::Mte2),
        rate(Pipe::Mte3),
        rate(Pipe::FixPipe),
    );
    // Vector work the model counts for this run at one cycle per repeat.
    let mut unit = base.clone();
    unit.vector.issue_cycles = 0.0;
    let oc = &mut unit.vector.op_cycles;
    (
        oc.elementwise,
        oc.transcendental,
        oc.divide,
        oc.reduce,
        oc.cast,
    ) = (1.0, 1.0, 1.0, 1.0, 1.0);
    let cfg = SimConfig {
        trace_items: 0,
        ..SimConfig::default()
    };
    let r = predict(src, &d, &[], &unit, &cfg)?;
    let work = r
        .pipes
        .iter()
        .filter(|p| p.pipe == SimPipe::Vector)
        .map(|p| p.busy_ns)
        .sum::<f64>()
        .max(1.0);
    let vec_cycles = st.get(Pipe::Vector).busy_ns as f64 / work;
    let flag = flag_latency_ns();
    let b = &base.buffers;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# The host machine as a target of the cost model, for calibration only
# (`amlac simulate --calibrate`). Written by `amlac simulate --probe-host`:
# MLA decode at B = 1, N = 2048, H = 128 run once with `--cores 1`, each rate
# = bytes (FLOPs) the runtime counted on that pipe / the busy time it measured.
# A cycle is 1 ns (clock_ghz = 1). Buffers, alignment and flag count are the
# emulated core's (the 910B's), so the host compiles the same IR.
name = \"host\"
description = \"this machine running the emulated AI core with --cores 1 (1 Cube thread + 1 Vector thread)\"

[chip]
ai_cores = 1                  # amlac run --cores 1
vector_per_core = 1           # the runtime runs one Vector thread for a 1-sub-block Vector function
clock_ghz = 1.0               # 1 cycle = 1 ns
hbm_gbps = 1000000.0          # no separate limit: the measured move rates include host memory
l2_bytes = {l2}
l2_gbps = 1000000.0           # as hbm_gbps

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
macs_per_cycle = {{ bf16 = {macs:.3}, f16 = {macs:.3} }}   # measured: cube FLOPs / 2 / cube busy ns

[vector]
repeat_bytes = {rb}
repeats_per_cycle = 1
issue_cycles = 0.0
# measured: Vector busy ns / the model's Vector repeats of the probe run (one class for all ops)
op_cycles = {{ elementwise = {vc:.4}, transcendental = {vc:.4}, divide = {vc:.4}, reduce = {vc:.4}, cast = {vc:.4} }}

[moves]                       # measured bytes / busy ns of each pipe
mte2_bytes_per_cycle = {mte2:.4}
mte1_bytes_per_cycle = {mte1:.4}
fixpipe_bytes_per_cycle = {fixp:.4}
mte3_bytes_per_cycle = {mte3:.4}
issue_cycles = 0.0

[flags]
cross_core_ids = {ids}
latency_cycles = {flag:.1}         # measured: half a mutex/condvar round trip between two threads

[atomic]
dtypes = [\"f32\"]
add_bytes_per_cycle = {atomic:.4}  # not a separate limit: atomic adds are inside the FixPipe/MTE3 rates

[model]
pipes_concurrent = false      # each emulated unit is one thread: its ops run one after another",
        l2 = base.chip.l2_bytes,
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
        vc = vec_cycles.max(1e-4),
        mte2 = mte2.max(1e-4),
        mte1 = mte1.max(1e-4),
        fixp = fixp.max(1e-4),
        mte3 = mte3.max(1e-4),
        ids = base.flags.cross_core_ids,
        atomic = fixp.max(mte3).max(1e-4),
        macs = macs.max(1e-4),
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
        "MLA decode on target `{}`: model prediction vs `amlac run --cores 1` (median of 3 launches)",
        target.name
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
        let mut times = Vec::new();
        for _ in 0..3 {
            let s = run_once(src, &d, target)?;
            times.push(s.timings.launch.as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        let meas = times[1];
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
            serde_json::json!({ "target": target.name, "rows": rows, "max_abs_error": worst })
        ))
    } else {
        Ok(text)
    }
}
