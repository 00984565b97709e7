//! JIT-runs the examples through the public API and checks them against the
//! float64 reference: partial last blocks, more work items than cores, the
//! head counts tensor parallelism uses, preload depths, core counts, and a
//! deliberately broken synchronisation.

use std::path::Path;
use std::time::{Duration, Instant};

use amla::compiler::diag::SourceFile;
use amla::compiler::driver::{Compilation, CompileOptions, compile};
use amla::compiler::ir::{InstKind, Unit};
use amla::compiler::run::exec::{Executable, RunConfig};
use amla::compiler::run::session::{RunRequest, RunSummary, run_source};
use amla::compiler::run::{HostData, HostTensor};

fn source(example: &str) -> SourceFile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("dsl-examples")
        .join(example);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    SourceFile::new(format!("dsl-examples/{example}"), text)
}

fn request(defines: &[(&str, &str)], cores: usize) -> RunRequest {
    let mut compile = CompileOptions::new().expect("built-in target");
    for (n, v) in defines {
        compile.defines.insert(*n, *v);
    }
    RunRequest {
        compile,
        inputs: Default::default(),
        given: Vec::new(),
        run: RunConfig {
            cores,
            wait_timeout: Duration::from_secs(20),
            ..RunConfig::default()
        },
        check: true,
    }
}

/// Runs and checks one configuration; panics with the comparison on failure.
fn run_checked(example: &str, defines: &[(&str, &str)], cores: usize) -> RunSummary {
    let src = source(example);
    let s = run_source(&src, &request(defines, cores), &mut |_| {})
        .unwrap_or_else(|e| panic!("{example} {defines:?}: {e}"));
    assert_eq!(s.checks.len(), 2, "the interpreter and the @reference");
    for c in &s.checks {
        assert_eq!(c.comparisons.len(), 2, "out and lse are checked");
    }
    assert!(
        s.passed(),
        "{example} {defines:?} on {cores} cores: {:#?}",
        s.checks
    );
    s
}

fn output(s: &RunSummary, name: &str) -> HostData {
    s.output
        .outputs
        .iter()
        .find(|o| o.name == name)
        .expect("output")
        .data
        .clone()
}

#[test]
fn every_example_passes_at_its_default_shapes() {
    for ex in ALL {
        run_checked(ex, &[], 2);
    }
}

const ALL: [&str; 5] = [
    "mla_decode.amla",
    "mla_decode_mtp.amla",
    "mla_decode_paged.amla",
    "gqa_decode.amla",
    "flash_prefill.amla",
];

#[test]
fn no_example_reads_local_memory_it_did_not_write() {
    // Local buffers start as NaN: any read of unwritten memory reaches the
    // outputs and fails the check.
    let small: [(&str, &[(&str, &str)]); 5] = [
        ("mla_decode.amla", &[("B", "2"), ("N", "300")]),
        ("mla_decode_mtp.amla", &[("B", "2"), ("N", "300")]),
        ("mla_decode_paged.amla", &[("B", "2")]),
        ("gqa_decode.amla", &[("B", "2"), ("N", "300")]),
        ("flash_prefill.amla", &[("B", "1"), ("S", "128")]),
    ];
    for (ex, defines) in small {
        let src = source(ex);
        let mut req = request(defines, 2);
        req.run.poison_local = true;
        let s = run_source(&src, &req, &mut |_| {}).unwrap_or_else(|e| panic!("{ex}: {e}"));
        assert!(
            s.passed(),
            "{ex} with poisoned local buffers: {:#?}",
            s.checks
        );
        assert!(
            s.output.report.pending_flags.is_empty(),
            "{ex}: {:?}",
            s.output.report.pending_flags
        );
    }
}

#[test]
fn every_example_passes_checked_and_race_checked_at_small_dims() {
    // `--checked --race-check`: no index leaves its buffer and every
    // cross-unit GM access is ordered by a flag. Partial last blocks
    // (N = 300 with 128-token blocks) included; the interpreter-only
    // examples too.
    let small: [(&str, &[(&str, &str)]); 7] = [
        ("mla_decode.amla", &[("B", "2"), ("H", "16"), ("N", "300")]),
        (
            "mla_decode_mtp.amla",
            &[("B", "1"), ("H", "16"), ("N", "300")],
        ),
        (
            "mla_decode_paged.amla",
            &[("B", "2"), ("H", "16"), ("NB", "8"), ("MAXB", "4")],
        ),
        ("gqa_decode.amla", &[("B", "1"), ("N", "300")]),
        (
            "flash_prefill.amla",
            &[("B", "1"), ("H", "1"), ("S", "200")],
        ),
        ("mla_combine.amla", &[]),
        ("mla_decode_split.amla", &[("B", "1"), ("H", "16")]),
    ];
    for (ex, defines) in small {
        let src = source(ex);
        let mut req = request(defines, 2);
        req.run.checked = true;
        req.run.race_check = true;
        let s = run_source(&src, &req, &mut |_| {}).unwrap_or_else(|e| panic!("{ex}: {e}"));
        assert!(s.passed(), "{ex} checked: {:#?}", s.checks);
        assert!(
            s.output.report.pending_flags.is_empty(),
            "{ex}: {:?}",
            s.output.report.pending_flags
        );
    }
}

#[test]
fn mla_partial_last_block_more_items_than_cores_and_tp_head_counts() {
    // N = 1000 with BN = 128: the last block holds 104 tokens.
    for h in ["128", "64", "16"] {
        run_checked("mla_decode.amla", &[("N", "1000"), ("B", "5"), ("H", h)], 2);
    }
    run_checked(
        "mla_decode_mtp.amla",
        &[("N", "1000"), ("B", "3"), ("H", "64")],
        2,
    );
    run_checked("gqa_decode.amla", &[("N", "1000"), ("B", "3")], 2);
    run_checked(
        "flash_prefill.amla",
        &[("S", "200"), ("B", "1"), ("H", "3")],
        2,
    );
}

#[test]
fn preload_depths_give_bit_identical_outputs() {
    let base = run_checked("mla_decode.amla", &[("N", "1000"), ("PRELOAD", "0")], 2);
    for d in ["1", "2"] {
        let s = run_checked("mla_decode.amla", &[("N", "1000"), ("PRELOAD", d)], 2);
        assert_eq!(
            output(&s, "out"),
            output(&base, "out"),
            "PRELOAD={d} changed the arithmetic"
        );
        assert_eq!(
            output(&s, "lse"),
            output(&base, "lse"),
            "PRELOAD={d} changed the arithmetic"
        );
    }
    // Fewer blocks than the preload depth: N = 100 is one block.
    run_checked("mla_decode.amla", &[("N", "100"), ("PRELOAD", "2")], 2);
}

#[test]
fn one_core_and_more_cores_than_cpus_agree() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let one = run_checked("mla_decode_paged.amla", &[], 1);
    let many = run_checked("mla_decode_paged.amla", &[], cpus * 2 + 1);
    assert_eq!(output(&one, "out"), output(&many, "out"));
    assert_eq!(output(&one, "lse"), output(&many, "lse"));
}

/// Compiles `example` and removes the first `op` (`wait_flag`/`set_flag`)
/// of `unit` from the final IR: a test hook for broken synchronisation.
fn broken(example: &str, unit: Unit, wait: bool) -> (Compilation, Executable) {
    let src = source(example);
    let opts = CompileOptions::new().expect("target");
    let mut c = compile(&src, &opts).expect("compiles");
    let body = c.ir.func(unit).expect("unit").body;
    let mut victim = None;
    c.ir.walk(body, &mut |i| {
        let hit = matches!(c.ir.insts[i].kind, InstKind::WaitFlag(_) if wait)
            || matches!(c.ir.insts[i].kind, InstKind::SetFlag(_) if !wait);
        if hit && victim.is_none() {
            victim = Some(i);
        }
    });
    let victim = victim.expect("a flag op to drop");
    let (block, pos) = c.ir.position(body, victim).expect("placed");
    c.ir.blocks[block].insts.remove(pos);
    let exe = Executable::new(&c, &opts.target).expect("JIT");
    (c, exe)
}

fn inputs(exe: &Executable) -> Vec<HostTensor> {
    exe.input_specs()
        .expect("specs")
        .iter()
        .enumerate()
        .map(|(i, (n, d, s))| {
            amla::compiler::run::inputs::generate(n, *d, s, None, &Default::default(), i as u64)
                .expect("input")
        })
        .collect()
}

#[test]
fn a_dropped_set_is_reported_by_the_watchdog_naming_kernel_unit_flag_and_block() {
    let (_, exe) = broken("gqa_decode.amla", Unit::Cube, false);
    // A timeout far longer than the test takes: the watchdog sees the
    // deadlock (every unit of the core blocked) without it.
    let cfg = RunConfig {
        cores: 2,
        wait_timeout: Duration::from_secs(120),
        ..RunConfig::default()
    };
    let t = Instant::now();
    let err = exe
        .run(&inputs(&exe), &cfg)
        .expect_err("a unit must be reported stuck")
        .to_string();
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "took {:?}",
        t.elapsed()
    );
    for needle in [
        "gqa_decode",
        "will never be set",
        "deadlock",
        "waits on flag",
        "(block 0)",
    ] {
        assert!(err.contains(needle), "`{needle}` missing from: {err}");
    }
}

#[test]
fn a_dropped_wait_is_caught_never_a_hang() {
    let (c, exe) = broken("mla_decode.amla", Unit::Vector, true);
    let good = run_checked("mla_decode.amla", &[], 2);
    let cfg = RunConfig {
        cores: 2,
        wait_timeout: Duration::from_millis(300),
        ..RunConfig::default()
    };
    let t = Instant::now();
    let r = exe.run(&inputs(&exe), &cfg);
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t.elapsed()
    );
    let caught = match r {
        Err(_) => true,
        Ok(o) => {
            let out = o
                .outputs
                .iter()
                .find(|t| t.name == "out")
                .expect("out")
                .data
                .clone();
            !o.report.pending_flags.is_empty() || out != output(&good, "out")
        }
    };
    assert!(caught, "dropping a wait of `{}` went unnoticed", c.ir.name);
}

#[test]
fn amlac_run_exit_codes() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("dsl-examples/gqa_decode.amla");
    let f = file.to_str().expect("utf-8 path");
    let run = |args: &[&str]| amla::compiler::cli::run(["amlac", "run"].iter().chain(args));
    assert_eq!(run(&[f, "--check", "-D", "N=200", "--json"]), 0);
    assert_eq!(
        run(&[f, "-D", "N=200", "--disable-pass", "nope"]),
        1,
        "unknown pass"
    );
    assert_eq!(run(&[f, "-D", "N=abc"]), 1, "bad dim value is a diagnostic");
    assert_eq!(run(&[f, "-D", "PRELOAD=9"]), 1, "bad compiler option");
    assert_eq!(run(&[f, "--cores", "0"]), 1);
    assert_eq!(run(&[f, "--input", "q=/nonexistent.npy"]), 1);
    assert_eq!(run(&["/nonexistent.amla"]), 1);
    assert_eq!(run(&[f, "--no-such-flag"]), 2, "usage error");
}

#[test]
fn mul_to_add_on_and_off_agree_within_bf16_rounding() {
    let n1000: &[(&str, &str)] = &[("N", "1000")];
    for (ex, defines) in [
        ("mla_decode.amla", n1000),
        ("mla_decode_paged.amla", &[]),
        ("gqa_decode.amla", n1000),
    ] {
        let on = run_checked(ex, defines, 2);
        let src = source(ex);
        let mut req = request(defines, 2);
        req.compile.pipeline.disabled.push("mul-to-add".into());
        let off = run_source(&src, &req, &mut |_| {})
            .unwrap_or_else(|e| panic!("{ex} without mul-to-add: {e}"));
        assert!(off.passed(), "{ex} without mul-to-add: {:#?}", off.checks);
        let (a, b) = (output(&on, "out").to_f64(), output(&off, "out").to_f64());
        // Two bf16 roundings apart at most: the output's and P's.
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs() / (2f64.powi(-8) + 2f64.powi(-7) * x.abs().max(y.abs())))
            .fold(0.0, f64::max);
        assert!(
            worst <= 1.0,
            "{ex}: AMLA and FlashAttention differ by {worst} bf16 tolerances"
        );
    }
}

/// Every matmul path this CPU supports runs the kernel right, chosen per
/// launch: the report names the path that ran, and a path the CPU lacks is
/// refused by name.
#[test]
fn every_supported_matmul_path_runs_and_checks() {
    use amla::runtime::matmul::MatmulPath;
    let src = source("mla_decode.amla");
    for path in MatmulPath::ALL {
        let mut req = request(&[("B", "2"), ("N", "200"), ("H", "16")], 2);
        req.run.matmul_path = Some(path);
        let r = run_source(&src, &req, &mut |_| {});
        if !path.is_supported() {
            let e = r
                .expect_err("an unsupported path must be refused")
                .to_string();
            assert!(e.contains(path.name()), "{e}");
            continue;
        }
        let s = r.unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(s.passed(), "{path}: {:#?}", s.checks);
        assert_eq!(s.output.report.matmul_path, path);
    }
}
