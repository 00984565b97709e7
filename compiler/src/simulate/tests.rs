use super::*;
use crate::diag::SourceFile;
use crate::driver::{self, CompileOptions};

const MLA: &str = include_str!("../../../dsl-examples/mla_decode.amla");

fn compile(defines: &[(&str, &str)], disabled: &[&str], t: &Target) -> Kernel {
    let mut o = CompileOptions::new().unwrap();
    o.target = t.clone();
    o.defines = defines
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    o.pipeline.disabled = disabled.iter().map(|s| s.to_string()).collect();
    driver::compile(&SourceFile::new("mla.amla", MLA), &o)
        .unwrap()
        .ir
}

fn busy(r: &Report, side: Side, pipe: Pipe) -> f64 {
    r.pipes
        .iter()
        .find(|p| p.side == side && p.pipe == pipe)
        .map_or(0.0, |p| p.busy_ns)
}

#[test]
fn cube_time_is_the_matmul_cycles_at_the_targets_rate() {
    let t = Target::ascend910b();
    let k = compile(&[("B", "2"), ("N", "512")], &[], &t);
    let r = simulate(&k, &t, &SimConfig::default()).unwrap();
    // One block per core; N / 128 = 4 KV blocks, each QK (128×128×576) and
    // P·V (128×512×128), fractal-aligned, at 4096 MAC per cycle.
    let macs = 4.0 * (128.0 * 128.0 * 576.0 + 128.0 * 512.0 * 128.0);
    let want = macs / t.cube.macs_per_cycle.bf16 / t.chip.clock_ghz;
    let got = busy(&r, Side::Aic, Pipe::Cube);
    assert!(
        (got - want).abs() < 1e-6 * want,
        "cube busy {got} ns, want {want}"
    );
    assert_eq!((r.items, r.cores, r.core_items), (2, 2, 1));
    assert!(
        (r.flops - 2.0 * 2.0 * macs).abs() < 1.0,
        "flops {}",
        r.flops
    );
    // Twice the MAC rate halves the Cube's busy time.
    let mut fast = t.clone();
    fast.cube.macs_per_cycle.bf16 *= 2.0;
    let r2 = simulate(&k, &fast, &SimConfig::default()).unwrap();
    let got2 = busy(&r2, Side::Aic, Pipe::Cube);
    assert!((got2 * 2.0 - got).abs() < 1e-6 * got, "{got2} vs {got}");
    assert!(r.time_ns >= got, "the kernel cannot end before its matmuls");
}

#[test]
fn the_two_vector_units_split_the_rows() {
    let t = Target::ascend910b();
    let k = compile(&[("B", "1"), ("N", "256")], &[], &t);
    let two = simulate(&k, &t, &SimConfig::default()).unwrap();
    let mut one_t = t.clone();
    one_t.chip.vector_per_core = 1;
    let one = simulate(&k, &one_t, &SimConfig::default()).unwrap();
    let (v2, v1) = (
        busy(&two, Side::Aiv, Pipe::Vector),
        busy(&one, Side::Aiv, Pipe::Vector),
    );
    // Half the rows per unit: about half the Vector time (issue costs and
    // per-row vectors round up, so not exactly).
    assert!(v2 < 0.6 * v1 && v2 > 0.4 * v1, "{v2} vs {v1}");
    assert_eq!((two.vector_units, one.vector_units), (2, 1));
    assert!(two.notes.iter().any(|n| n.contains("splits the rows")));
}

#[test]
fn preload_overlaps_cube_and_vector_and_both_rewrites_raise_fu() {
    let t = Target::ascend910b();
    let cfg = SimConfig {
        trace_items: 1,
        ..SimConfig::default()
    };
    let sim = |d: &[(&str, &str)], off: &[&str]| {
        let mut defs = vec![("B", "24"), ("N", "2048")];
        defs.extend_from_slice(d);
        simulate(&compile(&defs, off, &t), &t, &cfg).unwrap()
    };
    let plain = sim(&[("PRELOAD", "0")], &["mul-to-add"]);
    let both = sim(&[], &[]);
    let o_plain = output::cube_vector_overlap_ns(&plain.events);
    let o_both = output::cube_vector_overlap_ns(&both.events);
    assert!(
        o_both > 2.0 * o_plain.max(1.0),
        "overlap {o_both} ns with preload, {o_plain} ns without"
    );
    assert!(both.fu > plain.fu * 1.3, "FU {} vs {}", both.fu, plain.fu);
    assert!(both.time_ns < plain.time_ns);
}

fn op(parts: Vec<(Pipe, f64)>, deps: Vec<u32>, gm: bool, flag: FlagAct) -> Op {
    Op {
        parts,
        deps,
        gm,
        flag,
        item: 0,
        label: String::new(),
    }
}

fn flat(cube: Vec<Op>, vector: Vec<Op>) -> Flat {
    Flat {
        cube: UnitProgram {
            ops: cube,
            ..UnitProgram::default()
        },
        vector: UnitProgram {
            ops: vector,
            ..UnitProgram::default()
        },
        items: 1,
        cores: 1,
        core_items: 1,
        vector_units: 1,
        notes: vec![],
    }
}

#[test]
fn a_wait_holds_gm_work_until_the_set_plus_latency_and_local_work_goes_on() {
    let t = Target::ascend910b();
    let lat = t.flags.latency_cycles / t.chip.clock_ghz;
    let f = flat(
        vec![
            op(vec![(Pipe::Fixp, 100.0)], vec![], true, FlagAct::None),
            op(vec![], vec![], false, FlagAct::Set(0)),
        ],
        vec![
            op(vec![], vec![], false, FlagAct::Wait(0)),
            op(vec![(Pipe::Mte2, 10.0)], vec![], true, FlagAct::None),
            op(vec![(Pipe::Vector, 30.0)], vec![], false, FlagAct::None),
        ],
    );
    let s = schedule(&f, &t, &SimConfig::default()).unwrap();
    // The GM read starts at 100 + latency; the local Vector op at 0.
    assert!(
        (s.end_ns - (100.0 + lat + 10.0)).abs() < 1e-9,
        "{}",
        s.end_ns
    );
    assert!((s.busy_aiv[Pipe::Vector.index()] - 30.0).abs() < 1e-9);
    // Pipes of one unit in order, but concurrent with each other; serial on
    // a target whose pipes are not concurrent.
    let g = flat(
        vec![
            op(vec![(Pipe::Mte2, 50.0)], vec![], true, FlagAct::None),
            op(vec![(Pipe::Cube, 40.0)], vec![], false, FlagAct::None),
            op(vec![(Pipe::Cube, 40.0)], vec![0], false, FlagAct::None),
        ],
        vec![],
    );
    assert!((schedule(&g, &t, &SimConfig::default()).unwrap().end_ns - 90.0).abs() < 1e-9);
    let mut serial = t.clone();
    serial.model.pipes_concurrent = false;
    let e = schedule(&g, &serial, &SimConfig::default()).unwrap().end_ns;
    assert!((e - 130.0).abs() < 1e-9, "{e}");
}

#[test]
fn a_wait_nobody_sets_is_a_deadlock_error() {
    let t = Target::ascend910b();
    let f = flat(
        vec![op(vec![], vec![], false, FlagAct::Wait(1))],
        vec![op(vec![], vec![], false, FlagAct::Wait(2))],
    );
    let e = schedule(&f, &t, &SimConfig::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("deadlock") && e.contains("AIC") && e.contains("AIV"),
        "{e}"
    );
}

#[test]
fn an_unsplit_kernel_is_refused() {
    let t = Target::ascend910b();
    let all = crate::passes::PASS_ORDER;
    let k = compile(&[("B", "1"), ("N", "128")], all, &t);
    let e = simulate(&k, &t, &SimConfig::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("cube") && e.contains("pipeline"), "{e}");
}

#[test]
fn cli_writes_json_svg_and_trace() {
    let dir = std::env::temp_dir().join(format!("amla-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("t.svg");
    let trace = dir.join("t.json");
    let code = crate::cli::run([
        "amlac",
        "simulate",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../dsl-examples/mla_decode.amla"
        ),
        "-D",
        "N=512",
        "-D",
        "B=48",
        "--svg",
        svg.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0);
    let s = std::fs::read_to_string(&svg).unwrap();
    for lane in ["CUBE", "MTE2", "FIXP", "VECTOR", "overlap", "block 1"] {
        assert!(s.contains(lane), "svg lacks {lane}");
    }
    let tr: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    let evs = tr["traceEvents"].as_array().unwrap();
    assert!(evs.iter().any(|e| e["args"]["name"] == "FIXP"));
    assert!(evs.iter().filter(|e| e["ph"] == "X").count() > 20);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn on_one_thread_a_wait_blocks_everything_after_it_and_a_set_costs_its_cycles() {
    let mut t = Target::ascend910b();
    t.model.pipes_concurrent = false;
    t.flags.set_cycles = 18.0;
    t.model.launch_cycles = 90.0;
    let (clk, lat) = (t.chip.clock_ghz, t.flags.latency_cycles / t.chip.clock_ghz);
    let f = flat(
        vec![
            op(vec![(Pipe::Cube, 100.0)], vec![], false, FlagAct::None),
            op(vec![], vec![], false, FlagAct::Set(0)),
            op(vec![(Pipe::Cube, 5.0)], vec![], false, FlagAct::None),
        ],
        vec![
            op(vec![], vec![], false, FlagAct::Wait(0)),
            op(vec![(Pipe::Vector, 30.0)], vec![], false, FlagAct::None),
        ],
    );
    let s = schedule(&f, &t, &SimConfig::default()).unwrap();
    // The set comes after the (local) Cube op on its thread; the Vector op,
    // local too, still waits for the wait on its thread; then the launch cost.
    let want = 100.0 + lat + 30.0 + 90.0 / clk;
    assert!((s.end_ns - want).abs() < 1e-9, "{} vs {want}", s.end_ns);
    // The set holds the Cube thread: its last op ends at 100 + set + 5.
    let f2 = flat(
        vec![
            op(vec![(Pipe::Cube, 100.0)], vec![], false, FlagAct::None),
            op(vec![], vec![], false, FlagAct::Set(0)),
            op(vec![(Pipe::Cube, 500.0)], vec![], false, FlagAct::None),
        ],
        vec![op(vec![], vec![], false, FlagAct::Wait(0))],
    );
    let e = schedule(&f2, &t, &SimConfig::default()).unwrap().end_ns;
    let want = 100.0 + 18.0 / clk + 500.0 + 90.0 / clk;
    assert!((e - want).abs() < 1e-9, "{e} vs {want}");
    // The Ascend files leave both at 0: concurrent pipes ignore set_cycles.
    let a = Target::ascend910b();
    assert_eq!((a.flags.set_cycles, a.model.launch_cycles), (0.0, 0.0));
}

#[test]
fn double_buffered_l1_removes_the_kv_reload_and_only_where_l1_has_room() {
    let t = Target::ascend910b();
    let k = compile(&[("B", "24"), ("N", "2048")], &[], &t);
    let one = simulate(&k, &t, &SimConfig::default()).unwrap();
    let cfg = SimConfig {
        double_buffer_l1: true,
        ..SimConfig::default()
    };
    let two = simulate(&k, &t, &cfg).unwrap();
    // The compiled program loads each KV block twice (QK of block j+1
    // overwrites block j's slot before its P·V): the what-if loads it once.
    let gm_l1 = |r: &Report| r.bytes["aic gm->l1"];
    let kv = 24 * 2048 * 576 * 2;
    assert!(
        gm_l1(&one) > gm_l1(&two) + kv / 2,
        "{} vs {}",
        gm_l1(&one),
        gm_l1(&two)
    );
    assert!(busy(&two, Side::Aic, Pipe::Mte2) < busy(&one, Side::Aic, Pipe::Mte2));
    assert!(two.time_ns < one.time_ns);
    assert!(
        two.notes.iter().any(|n| n.starts_with("what-if: GM->L1")),
        "{:?}",
        two.notes
    );
    // Same Cube work either way.
    assert_eq!(
        busy(&one, Side::Aic, Pipe::Cube),
        busy(&two, Side::Aic, Pipe::Cube)
    );
    // With a smaller L1 the second slot does not fit: nothing changes.
    let mut small = t.clone();
    small.buffers.l1 = t.buffers.l1 * 7 / 8;
    let k2 = compile(&[("B", "24"), ("N", "2048")], &[], &small);
    let a = simulate(&k2, &small, &SimConfig::default()).unwrap();
    let b = simulate(&k2, &small, &cfg).unwrap();
    assert!(
        b.notes.iter().any(|n| n.starts_with("what-if not applied")),
        "{:?}",
        b.notes
    );
    assert_eq!(a.time_ns, b.time_ns);
}

/// The built-in host target with round costs.
fn host_target() -> Target {
    let mut t = Target::builtin("host").unwrap();
    let h = t.host.as_mut().unwrap();
    h.cpus = 2;
    h.parallel = 2.0;
    h.threads.launch_ns = 1000.0;
    h.threads.set_ns = 10.0;
    h.threads.wake_ns = 50.0;
    h.threads.work_scale = 1.0;
    h.cooperative.launch_ns = 2000.0;
    h.cooperative.flag_ns = 1.0;
    h.cooperative.switch_ns = 7.0;
    t
}

#[test]
fn cooperative_units_take_turns_on_one_thread_and_threads_overlap() {
    let t = host_target();
    // Cube: 100 ns, set 0, wait 1, 5 ns. Vector: wait 0, 30 ns, set 1.
    let progs = || {
        flat(
            vec![
                op(vec![(Pipe::Cube, 100.0)], vec![], false, FlagAct::None),
                op(vec![], vec![], false, FlagAct::Set(0)),
                op(vec![], vec![], false, FlagAct::Wait(1)),
                op(vec![(Pipe::Cube, 5.0)], vec![], false, FlagAct::None),
            ],
            vec![
                op(vec![], vec![], false, FlagAct::Wait(0)),
                op(vec![(Pipe::Vector, 30.0)], vec![], false, FlagAct::None),
                op(vec![], vec![], false, FlagAct::Set(1)),
            ],
        )
    };
    // cores >= cpus: cooperative. The Cube runs 100, sets (1), blocks on
    // flag 1: switch (7); the Vector waits on a set flag (1), runs 30, sets
    // (1), ends: switch (7); the Cube's wait passes (1), 5. Then the launch.
    let mut tc = t.clone();
    tc.chip.ai_cores = 2;
    let s = schedule(&progs(), &tc, &SimConfig::default()).unwrap();
    let want = 100.0 + 1.0 + 7.0 + 1.0 + 30.0 + 1.0 + 7.0 + 1.0 + 5.0 + 2000.0;
    assert!((s.end_ns - want).abs() < 1e-9, "{} vs {want}", s.end_ns);
    assert_eq!(s.host_schedule, Some("cooperative"));
    // The CPU time is the core's whole time (one thread).
    assert!((s.cpu_ns.unwrap() - (want - 2000.0)).abs() < 1e-9);
    // cores < cpus: a thread per unit. The set holds the Cube 10; the
    // Vector's wait returns 50 after the set; its set wakes the Cube 50 later.
    let mut tt = t.clone();
    tt.chip.ai_cores = 1;
    let s = schedule(&progs(), &tt, &SimConfig::default()).unwrap();
    let want = 100.0 + 50.0 + 30.0 + 50.0 + 5.0 + 1000.0;
    assert!((s.end_ns - want).abs() < 1e-9, "{} vs {want}", s.end_ns);
    assert_eq!(s.host_schedule, Some("threads"));
    assert!((s.cpu_ns.unwrap() - (135.0 + 2.0 * 10.0)).abs() < 1e-9);
    // work_scale multiplies every op (not the flag costs) on threads only.
    tt.host.as_mut().unwrap().threads.work_scale = 2.0;
    let s = schedule(&progs(), &tt, &SimConfig::default()).unwrap();
    let want = 200.0 + 50.0 + 60.0 + 50.0 + 10.0 + 1000.0;
    assert!((s.end_ns - want).abs() < 1e-9, "{} vs {want}", s.end_ns);
    tc.host.as_mut().unwrap().threads.work_scale = 2.0;
    let s = schedule(&progs(), &tc, &SimConfig::default()).unwrap();
    assert!((s.end_ns - (153.0 + 2000.0)).abs() < 1e-9, "{}", s.end_ns);
    // A program whose waits nobody satisfies deadlocks in both.
    let stuck = flat(
        vec![op(vec![], vec![], false, FlagAct::Wait(1))],
        vec![op(vec![], vec![], false, FlagAct::Wait(0))],
    );
    assert!(matches!(
        schedule(&stuck, &tc, &SimConfig::default()),
        Err(SimError::Deadlock(_))
    ));
    assert!(matches!(
        schedule(&stuck, &tt, &SimConfig::default()),
        Err(SimError::Deadlock(_))
    ));
}

#[test]
fn host_costs_come_from_the_host_tables_and_workers_run_their_cores_in_turn() {
    let mut t = host_target();
    let k = compile(&[("B", "3"), ("N", "512"), ("H", "128")], &[], &t);
    let h = t.host.as_mut().unwrap();
    h.cube.matmul.clear();
    h.cube.matmul.insert("128x128x96".into(), 1000.0);
    h.cube.macs_per_ns = 128.0 * 128.0 * 128.0 / 3000.0;
    h.cube.call_ns = 0.0;
    let cfg = |cores| SimConfig {
        trace_items: 0,
        cores: Some(cores),
        ..SimConfig::default()
    };
    let r = simulate(&k, &t, &cfg(3)).unwrap();
    // 4 KV blocks × 6 K-chunks of QK at the table's 1000 ns, 4 × 4 P·V
    // matmuls of an unlisted shape at the fallback rate (3000 ns each).
    let want = 4.0 * 6.0 * 1000.0 + 4.0 * 4.0 * 3000.0;
    let got = busy(&r, Side::Aic, Pipe::Cube);
    assert!((got - want).abs() < 1e-6 * want, "{got} vs {want}");
    assert_eq!(r.work["AIC matmul 128x128x96"].0, 24);
    assert_eq!(r.work["AIC matmul 128x128x128"].0, 16);
    // 3 items on 3 cores and 2 CPUs: worker 0 runs cores 0 and 2 (one item
    // each); on 2 cores, core 0 runs items 0 and 2: the same worker time.
    let launch = t.host.as_ref().unwrap().cooperative.launch_ns;
    let six = simulate(&k, &t, &cfg(6)).unwrap().time_ns - launch;
    let three = simulate(&k, &t, &cfg(3)).unwrap().time_ns - launch;
    let two = simulate(&k, &t, &cfg(2)).unwrap().time_ns - launch;
    // (Two items on one core switch a little differently at the item
    // boundary than two cores of one item each: within 1%.)
    assert!((three - two).abs() < 1e-2 * two, "{three} vs {two}");
    // 6 cores on 2 CPUs: worker 0 runs cores 0, 2, 4 (items 0 and 2; core
    // 4 has none): two items as well.
    assert!((six - three).abs() < 1e-9 * three, "{six} vs {three}");
    let r2 = simulate(&k, &t, &cfg(2)).unwrap();
    assert_eq!(r2.host_schedule, Some("cooperative"));
    assert_eq!(r2.core_items, 2);
}

#[test]
fn units_and_workers_at_once_share_the_hosts_measured_capacity() {
    // Threads: a Cube and a Vector thread of 100 ns each, no flags: on two
    // CPUs' worth they overlap; on one (`parallel = 1`) they take turns.
    let mut t = host_target();
    t.chip.ai_cores = 1;
    let progs = flat(
        vec![op(vec![(Pipe::Cube, 100.0)], vec![], false, FlagAct::None)],
        vec![op(
            vec![(Pipe::Vector, 100.0)],
            vec![],
            false,
            FlagAct::None,
        )],
    );
    let s = schedule(&progs, &t, &SimConfig::default()).unwrap();
    assert!((s.end_ns - 1100.0).abs() < 1e-9, "{}", s.end_ns);
    t.host.as_mut().unwrap().parallel = 1.0;
    let s1 = schedule(&progs, &t, &SimConfig::default()).unwrap();
    assert!((s1.end_ns - 1200.0).abs() < 1e-9, "{}", s1.end_ns);
    // The work (CPU time) is the same.
    assert_eq!(s.cpu_ns, s1.cpu_ns);

    // Cooperative: 3 items on 2 cores, 2 workers: worker 0 runs 2 items,
    // worker 1 one. On 2 CPUs' worth the launch is worker 0's 2 items; on
    // 1.5 still (3 items / 1.5); on 1, all 3 items one after the other.
    let mut t = host_target();
    let k = compile(&[("B", "3"), ("N", "512"), ("H", "128")], &[], &t);
    let cfg = SimConfig {
        trace_items: 0,
        cores: Some(2),
        ..SimConfig::default()
    };
    let launch = t.host.as_ref().unwrap().cooperative.launch_ns;
    let at = |t: &Target| simulate(&k, t, &cfg).unwrap();
    let two = at(&t);
    t.host.as_mut().unwrap().parallel = 1.5;
    let half = at(&t);
    t.host.as_mut().unwrap().parallel = 1.0;
    let one = at(&t);
    let (w2, w15, w1) = (
        two.time_ns - launch,
        half.time_ns - launch,
        one.time_ns - launch,
    );
    assert!((w15 - w2).abs() < 1e-9 * w2, "{w15} vs {w2}");
    assert!((w1 - 1.5 * w2).abs() < 1e-9 * w1, "{w1} vs {w2}");
    assert_eq!(two.cpu_ns, one.cpu_ns);
}

#[test]
fn a_host_parallel_outside_one_to_cpus_is_refused() {
    let text = include_str!("../../../targets/host.toml");
    for bad in ["0.5", "3.0", "nan"] {
        let t = text.replace(
            &format!("\nparallel = {}", host_parallel_text(text)),
            &format!("\nparallel = {bad}"),
        );
        let e = Target::parse(&t, "test").unwrap_err().to_string();
        assert!(e.contains("host.parallel"), "{bad}: {e}");
    }
}

/// The `parallel = …` value as written in a host target file.
fn host_parallel_text(text: &str) -> &str {
    text.lines()
        .find_map(|l| l.strip_prefix("parallel = "))
        .and_then(|v| v.split_whitespace().next())
        .unwrap()
}
