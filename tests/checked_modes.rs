//! The checked mode (`--checked`), the race checker (`--race-check`) and
//! the flag watchdog on kernels broken on purpose: an index pushed out of
//! bounds in a hand-edited IR text, a block table entry past the page pool,
//! and seeded synchronisation bugs in the final IR of `mla_decode` (a
//! dropped `wait_flag`, two flag ids swapped, a `set_flag` moved before the
//! store it publishes). Each is reported by name; none hangs.

use std::path::Path;
use std::time::{Duration, Instant};

use amla::compiler::diag::SourceFile;
use amla::compiler::driver::{Compilation, CompileOptions, compile};
use amla::compiler::ir;
use amla::compiler::run::exec::{Executable, RunConfig, RunError, RunOutput};
use amla::compiler::run::inputs::{InputOptions, IntRole, generate};
use amla::compiler::run::{HostData, HostTensor};

fn source(example: &str) -> SourceFile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("dsl-examples")
        .join(example);
    SourceFile::new(
        format!("dsl-examples/{example}"),
        std::fs::read_to_string(&path).unwrap(),
    )
}

fn options(defines: &[(&str, &str)]) -> CompileOptions {
    let mut o = CompileOptions::new().unwrap();
    for (n, v) in defines {
        o.defines.insert(*n, *v);
    }
    o
}

/// mla_decode at small dims: two work items, two KV blocks each.
const MLA: [(&str, &str); 3] = [("B", "2"), ("H", "16"), ("N", "256")];

/// The final IR of `example` with `edit` applied to its text, parsed back
/// and verified.
fn edited(example: &str, defines: &[(&str, &str)], edit: &dyn Fn(&str) -> String) -> Compilation {
    let opts = options(defines);
    let mut c = compile(&source(example), &opts).unwrap_or_else(|e| panic!("{example}: {e}"));
    let text = ir::print::print(&c.ir);
    let new = edit(&text);
    let k = ir::parse::parse(&new).unwrap_or_else(|e| panic!("{e:?}\n{new}"));
    ir::verify::verify(&k).unwrap_or_else(|e| panic!("{e:?}\n{new}"));
    c.ir = k;
    c
}

fn inputs(exe: &Executable) -> Vec<HostTensor> {
    exe.input_specs()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, (n, d, s))| {
            let role = match n.as_str() {
                "cache_seqlens" => Some(IntRole::Length { max: 128 }),
                "block_table" => Some(IntRole::Index { bound: 4 }),
                _ => None,
            };
            generate(n, *d, s, role, &InputOptions::default(), i as u64).unwrap()
        })
        .collect()
}

fn config(checked: bool, race_check: bool) -> RunConfig {
    RunConfig {
        cores: 2,
        // A backstop only: the watchdog reports stuck waits at once.
        wait_timeout: Duration::from_secs(10),
        checked,
        race_check,
        ..RunConfig::default()
    }
}

fn target() -> amla::compiler::target::Target {
    CompileOptions::new().unwrap().target
}

fn run(
    c: &Compilation,
    given: Option<Vec<HostTensor>>,
    cfg: &RunConfig,
) -> Result<RunOutput, RunError> {
    let exe = Executable::for_run(c, &target(), cfg).expect("JIT");
    let inputs = given.unwrap_or_else(|| inputs(&exe));
    let t = Instant::now();
    let r = exe.run(&inputs, cfg);
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "took {:?}",
        t.elapsed()
    );
    r
}

/// The line of `text` containing `marker`, whole.
fn line<'t>(text: &'t str, marker: &str) -> &'t str {
    text.lines()
        .find(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("no `{marker}` in:\n{text}"))
}

#[test]
fn an_index_pushed_out_of_bounds_is_stopped_by_the_checked_mode() {
    // `kv[%b, %j+:128, ..]` → `kv[%B, %j+:128, ..]`: the batch index is B,
    // one past the cache. The IR reads such a point as zeros, so the
    // default run succeeds (with a wrong output); the checked run names
    // the op, the unit and the index.
    let c = edited("mla_decode.amla", &MLA, &|t| {
        let l = line(t, "= load kv[%b, %j+:128, ..]");
        let b = line(t, "= iconst 2 : i32")
            .split(" = ")
            .next()
            .unwrap()
            .trim()
            .to_string();
        t.replacen(l, &l.replace("kv[%b,", &format!("kv[{b},")), 1)
    });
    run(&c, None, &config(false, false)).expect("the default run reads zeros");
    let e = run(&c, None, &config(true, false)).unwrap_err().to_string();
    for needle in [
        "checked access failed on cube of core",
        "index 2 is outside 0..2",
        "cube: %k = load kv[%",
    ] {
        assert!(e.contains(needle), "`{needle}` missing from: {e}");
    }
}

#[test]
fn a_block_table_entry_past_the_pool_is_stopped_by_the_checked_mode() {
    // Executable::run does not know what a block table means; the checked
    // code does know that a page id indexes `kv`'s first dim.
    let dims = [("B", "2"), ("H", "16"), ("NB", "4"), ("MAXB", "2")];
    let c = compile(&source("mla_decode_paged.amla"), &options(&dims)).unwrap();
    let cfg = config(true, false);
    let exe = Executable::for_run(&c, &target(), &cfg).unwrap();
    let mut given = inputs(&exe);
    let bt = given.iter_mut().find(|t| t.name == "block_table").unwrap();
    let HostData::I32(v) = &mut bt.data else {
        panic!("block_table is i32")
    };
    v[0] = 7; // NB = 4 pages
    let lens = given
        .iter_mut()
        .find(|t| t.name == "cache_seqlens")
        .unwrap();
    let HostData::I32(l) = &mut lens.data else {
        panic!("cache_seqlens is i32")
    };
    l[0] = 10; // sequence 0 uses its first page
    let e = exe.run(&given, &cfg).unwrap_err().to_string();
    for needle in ["index 7 is outside 0..4", "load kv["] {
        assert!(e.contains(needle), "`{needle}` missing from: {e}");
    }
}

#[test]
fn the_unedited_schedule_passes_the_race_checker_and_the_checked_mode() {
    let c = edited("mla_decode.amla", &MLA, &|t| t.to_string());
    let o = run(&c, None, &config(true, true)).expect("ordered schedule");
    assert!(
        o.report.pending_flags.is_empty(),
        "{:?}",
        o.report.pending_flags
    );
    // And gives the same outputs as the uninstrumented code.
    let plain = run(&c, None, &config(false, false)).unwrap();
    for (a, b) in o.outputs.iter().zip(&plain.outputs) {
        assert_eq!(a.data, b.data, "{}", a.name);
    }
}

/// Runs a seeded sync bug under the race checker and returns its error,
/// which must be a race or the watchdog's, never a hang or a success.
fn seeded(edit: &dyn Fn(&str) -> String) -> String {
    let c = edited("mla_decode.amla", &MLA, edit);
    let e = run(&c, None, &config(false, true))
        .expect_err("a seeded sync bug must be reported")
        .to_string();
    assert!(
        e.contains("data race") || e.contains("will never be set") || e.contains("timed out"),
        "{e}"
    );
    e
}

/// The text of the vector function (after `func vector`), for edits there.
fn split_vector(t: &str) -> (&str, &str) {
    let at = t.find("\nfunc vector").expect("a vector function");
    t.split_at(at)
}

#[test]
fn a_dropped_wait_is_reported_as_a_race_naming_both_ops() {
    // The Vector's `wait_flag 0` (ws_matmul is ready) removed: it loads the
    // scores before the Cube's store is known to be done.
    let e = seeded(&|t| {
        let (cube, vector) = split_vector(t);
        let l = line(vector, "wait_flag 0");
        format!("{cube}{}", vector.replacen(&format!("{l}\n"), "", 1))
    });
    for needle in [
        "data race",
        "`ws_matmul`",
        "write by cube",
        "cube: store ws_matmul[",
        "read by vector",
        "vector: %",
        "= load ws_matmul[",
        "not ordered by a flag",
        "pending flag counters",
    ] {
        assert!(e.contains(needle), "`{needle}` missing from: {e}");
    }
}

#[test]
fn two_swapped_flag_ids_are_reported() {
    // The Vector waits on 2 where it should wait on 0 and on 0 where it
    // should wait on 2.
    let e = seeded(&|t| {
        let (cube, vector) = split_vector(t);
        let (a, b) = (line(vector, "wait_flag 0"), line(vector, "wait_flag 2"));
        let v = vector
            .replacen(a, "@A@", 1)
            .replacen(b, &b.replace("wait_flag 2", "wait_flag 0"), 1)
            .replacen("@A@", &a.replace("wait_flag 0", "wait_flag 2"), 1);
        assert_ne!(v, vector);
        format!("{cube}{v}")
    });
    eprintln!("{e}");
    assert!(e.contains("vector"), "{e}");
}

#[test]
fn a_set_moved_before_its_store_is_reported_as_a_race() {
    // `store ws_cast[…]; set_flag 1` → `set_flag 1; store ws_cast[…]`: the
    // Cube may read the probabilities before they are written.
    let e = seeded(&|t| {
        let (cube, vector) = split_vector(t);
        let store = line(vector, "store ws_cast[");
        let set = line(vector, "set_flag 1");
        let pair = format!("{store}\n{set}\n");
        assert!(vector.contains(&pair), "the store is followed by its set");
        format!(
            "{cube}{}",
            vector.replacen(&pair, &format!("{set}\n{store}\n"), 1)
        )
    });
    for needle in [
        "data race",
        "`ws_cast`",
        "vector: store ws_cast[",
        "cube: %",
    ] {
        assert!(e.contains(needle), "`{needle}` missing from: {e}");
    }
}

#[test]
fn a_wait_on_a_flag_nobody_sets_is_reported_by_the_watchdog_at_once() {
    // The Cube waits on flag 1 (probabilities ready) where it should wait
    // on 3 (accumulator rescaled): it blocks until the next block's
    // probabilities, while the Vector blocks on flag 2, which only the
    // stuck Cube sets. The watchdog sees every unit of the core blocked and
    // says so, long before the 10 s timeout.
    let c = edited("mla_decode.amla", &MLA, &|t| {
        let (cube, vector) = split_vector(t);
        let l = line(cube, "wait_flag 3");
        format!(
            "{}{vector}",
            cube.replacen(l, &l.replace("wait_flag 3", "wait_flag 1"), 1)
        )
    });
    let e = run(&c, None, &config(false, false))
        .unwrap_err()
        .to_string();
    for needle in [
        "cube of core",
        "waits on flag 1",
        "will never be set",
        "deadlock",
        "vector0 waits on flag 2 (block",
    ] {
        assert!(e.contains(needle), "`{needle}` missing from: {e}");
    }
}

#[test]
fn the_launch_s_own_memory_counts_against_the_budget_by_part() {
    // mla_decode at H = 128 keeps its f32[128, 512] accumulator in the
    // Vector units' host scratch (it does not fit UB): a budget that holds
    // the tensors but not the scratch is refused before anything is
    // allocated, naming the part and its bytes.
    let c = compile(
        &source("mla_decode.amla"),
        &options(&[("B", "2"), ("N", "256")]),
    )
    .unwrap();
    let base = config(false, false);
    let exe = Executable::for_run(&c, &target(), &base).unwrap();
    let parts = exe.launch_memory(&base);
    let scratch = parts
        .iter()
        .find(|p| p.0.starts_with("unit scratch"))
        .expect("a scratch part");
    assert!(scratch.1 >= 2 * 128 * 512 * 4, "{parts:?}");
    let tensors: u128 = exe
        .tensor_specs()
        .unwrap()
        .iter()
        .map(|s| s.elems() * (u128::from(s.dtype.bytes()) + 8))
        .sum();
    let cfg = RunConfig {
        memory_limit: Some((tensors + scratch.1 / 2) as u64),
        ..base.clone()
    };
    let e = exe.run(&inputs(&exe), &cfg).unwrap_err().to_string();
    for needle in [
        "the launch at these dims needs",
        "unit scratch for tiles placed in gm",
        &format!("{} bytes", scratch.1),
        "use fewer --cores",
    ] {
        assert!(e.contains(needle), "`{needle}` missing from: {e}");
    }
    // The race checker's shadow is a part of its own.
    let rc = config(false, true);
    let exe = Executable::for_run(&c, &target(), &rc).unwrap();
    let cfg = RunConfig {
        memory_limit: Some((tensors * 2) as u64),
        ..rc
    };
    let e = exe.run(&inputs(&exe), &cfg).unwrap_err().to_string();
    assert!(e.contains("race checker shadow ("), "{e}");
    assert!(e.contains("the launch at these dims needs"), "{e}");
}

#[test]
fn amlac_run_checked_and_race_check_pass_on_mla_decode() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("dsl-examples/mla_decode.amla");
    let f = file.to_str().unwrap();
    let run = |args: &[&str]| amla::compiler::cli::run(["amlac", "run"].iter().chain(args));
    let small = ["-D", "B=2", "-D", "H=16", "-D", "N=300"];
    for mode in ["--checked", "--race-check"] {
        let mut args = vec![f, "--check", mode];
        args.extend(small);
        assert_eq!(run(&args), 0, "amlac run {mode} --check");
    }
}

#[test]
fn a_scalar_index_past_a_tile_reads_zero_and_checked_names_it() {
    // `t[i]` with `i` read from an input: out of range it reads 0, as the
    // IR and the interpreter define (it used to read memory outside the
    // tile, a segfault for a large index); `--checked` stops it by name.
    let src = SourceFile::new(
        "sx.amla".to_string(),
        "kernel sx(x: f32[N, 16], idx: i32[N]) -> (out: f32[N]) {
           dim N = 4;
           parallel b in 0..N {
             let t = x[b];
             let i = idx[b];
             out[b] = t[i];
           }
         }"
        .to_string(),
    );
    let given = vec![
        HostTensor {
            name: "x".into(),
            shape: vec![4, 16],
            data: HostData::F32((0..64).map(|v| v as f32 + 1.0).collect()),
        },
        HostTensor {
            name: "idx".into(),
            shape: vec![4],
            data: HostData::I32(vec![0, 3, 100_000_000, -5]),
        },
    ];
    let mut req = amla::compiler::run::session::RunRequest {
        compile: options(&[]),
        inputs: Default::default(),
        given,
        run: config(false, false),
        check: true,
    };
    let s = amla::compiler::run::session::run_source(&src, &req, &mut |_| {}).unwrap();
    assert!(s.passed(), "{:#?}", s.checks);
    assert_eq!(
        s.output.outputs[0].data,
        HostData::F32(vec![1.0, 20.0, 0.0, 0.0])
    );
    req.run.checked = true;
    let e = amla::compiler::run::session::run_source(&src, &req, &mut |_| {})
        .unwrap_err()
        .to_string();
    // Rows 2 and 3 both index out of range and may run on different
    // emulated cores, so either can be the first one reported.
    assert!(
        e.contains("index 100000000 is outside 0..16") || e.contains("index -5 is outside 0..16"),
        "{e}"
    );
    assert!(e.contains("vector: %2 = extract %t[%i]"), "{e}");
}
