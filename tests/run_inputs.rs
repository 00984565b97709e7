//! Bad inputs at launch and the tensor files users have.
//!
//! Every bad input is an error that names the argument, before anything
//! runs; the checked-in files under `tests/data/tensor_files/` were written
//! by NumPy, ml_dtypes and safetensors (`tests/python/tensor_files.py
//! make`), and the outputs written here load back in Rust and, when the
//! project's venv exists (`bash tests/python/setup-venv.sh`), in Python
//! (`tests/python/tensor_files.py check`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use amla::compiler::diag::SourceFile;
use amla::compiler::driver::{CompileOptions, compile};
use amla::compiler::ir::DType;
use amla::compiler::run::exec::{Executable, RunConfig};
use amla::compiler::run::npy::{self, Bf16Npy};
use amla::compiler::run::session::{RunRequest, RunSummary, run_source};
use amla::compiler::run::tensor::FileData;
use amla::compiler::run::{HostData, HostTensor, files, safetensors};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn source(example: &str) -> SourceFile {
    let path = root().join("dsl-examples").join(example);
    SourceFile::new(
        format!("dsl-examples/{example}"),
        std::fs::read_to_string(&path).unwrap(),
    )
}

fn request(defines: &[(&str, &str)], given: Vec<HostTensor>) -> RunRequest {
    let mut compile = CompileOptions::new().unwrap();
    for (n, v) in defines {
        compile.defines.insert(*n, *v);
    }
    RunRequest {
        compile,
        inputs: Default::default(),
        given,
        run: RunConfig {
            cores: 2,
            wait_timeout: Duration::from_secs(20),
            // Every launch here runs checked: no input may make the kernel
            // index outside a buffer.
            checked: true,
            ..RunConfig::default()
        },
        check: true,
    }
}

const SMALL: [(&str, &str); 3] = [("B", "1"), ("H", "16"), ("N", "64")];
const PAGED: [(&str, &str); 4] = [("B", "2"), ("H", "16"), ("NB", "4"), ("MAXB", "2")];

fn run(example: &str, req: &RunRequest) -> Result<RunSummary, String> {
    run_source(&source(example), req, &mut |_| {}).map_err(|e| e.to_string())
}

fn err(example: &str, req: &RunRequest) -> String {
    match run(example, req) {
        Ok(_) => panic!("{example}: expected an input error"),
        Err(e) => e,
    }
}

fn t(name: &str, shape: &[usize], data: HostData) -> HostTensor {
    HostTensor {
        name: name.into(),
        shape: shape.to_vec(),
        data,
    }
}

fn bf16s(n: usize) -> HostData {
    HostData::Bf16(vec![half::bf16::from_f32(0.5); n])
}

#[test]
fn bad_tensors_name_the_input_and_what_was_expected() {
    // A shape that contradicts -D: the message names the dim and the -D.
    let q = t("q", &[2, 16, 576], bf16s(2 * 16 * 576));
    let e = err("mla_decode.amla", &request(&SMALL, vec![q]));
    assert!(
        e.contains("input `q`") && e.contains("[2, 16, 576]") && e.contains("-D B=1"),
        "{e}"
    );
    // Wrong rank, wrong dtype, wrong length.
    let e = err(
        "mla_decode.amla",
        &request(&SMALL, vec![t("q", &[16, 576], bf16s(16 * 576))]),
    );
    assert!(
        e.contains("input `q`: rank 2") && e.contains("rank 3"),
        "{e}"
    );
    let e = err(
        "mla_decode.amla",
        &request(
            &SMALL,
            vec![t("q", &[1, 16, 576], HostData::F32(vec![0.0; 16 * 576]))],
        ),
    );
    assert!(e.contains("input `q`: dtype f32, expected bf16"), "{e}");
    let e = err(
        "mla_decode.amla",
        &request(&SMALL, vec![t("q", &[1, 16, 576], bf16s(7))]),
    );
    assert!(e.contains("input `q`: 7 elements"), "{e}");
    // Unknown and repeated names.
    let x = t("x", &[1], bf16s(1));
    let e = err("mla_decode.amla", &request(&SMALL, vec![x]));
    assert!(e.contains("`x` is not an input of `mla_decode`"), "{e}");
    let q = t("q", &[1, 16, 576], bf16s(16 * 576));
    let mut req = request(&SMALL, vec![q.clone(), q.clone()]);
    req.run.fill_missing = true;
    let e = err("mla_decode.amla", &req);
    assert!(e.contains("`q` is given twice"), "{e}");
}

#[test]
fn a_missing_input_is_an_error_unless_random_fill_is_asked_for() {
    let q = t("q", &[1, 16, 576], bf16s(16 * 576));
    let e = err("mla_decode.amla", &request(&SMALL, vec![q.clone()]));
    assert!(
        e.contains("`kv` not given") && e.contains("--fill-missing"),
        "{e}"
    );
    let mut req = request(&SMALL, vec![q.clone()]);
    req.run.fill_missing = true;
    let s = run("mla_decode.amla", &req).unwrap();
    assert!(s.passed(), "{:#?}", s.checks);
    assert_eq!(s.inputs.iter().find(|i| i.name == "q").unwrap(), &q);
}

fn paged_inputs(table: Vec<i32>, lens: Vec<i32>) -> Vec<HostTensor> {
    let q = t("q", &[2, 16, 576], bf16s(2 * 16 * 576));
    let kv: Vec<half::bf16> = (0..4 * 64 * 576)
        .map(|i| half::bf16::from_f32(((i % 97) as f32 - 48.0) / 64.0))
        .collect();
    vec![
        q,
        t("kv", &[4, 64, 576], HostData::Bf16(kv)),
        t("block_table", &[2, 2], HostData::I32(table)),
        t("cache_seqlens", &[2], HostData::I32(lens)),
    ]
}

#[test]
fn block_tables_and_lengths_out_of_range_are_input_errors() {
    // Used entries out of range or negative; the same check runs with and
    // without --check, so the run never reads a page that is not there.
    for check in [true, false] {
        let mut req = request(&PAGED, paged_inputs(vec![0, 4, 1, 2], vec![100, 10]));
        req.check = check;
        let e = err("mla_decode_paged.amla", &req);
        assert!(
            e.contains("input `block_table`") && e.contains("[0, 1] = 4") && e.contains("0..4"),
            "{e}"
        );
    }
    let req = request(&PAGED, paged_inputs(vec![0, 1, -1, 2], vec![100, 10]));
    let e = err("mla_decode_paged.amla", &req);
    assert!(e.contains("[1, 0] = -1"), "{e}");
    // Seqlens above MAXB·PAGE.
    let req = request(&PAGED, paged_inputs(vec![0, 1, 2, 3], vec![129, 10]));
    let e = err("mla_decode_paged.amla", &req);
    assert!(
        e.contains("input `cache_seqlens`") && e.contains("[0] = 129") && e.contains("128"),
        "{e}"
    );
    // An unused entry (past the length) may hold anything, e.g. -1 padding.
    let req = request(&PAGED, paged_inputs(vec![0, 1, 3, -1], vec![100, 10]));
    let s = run("mla_decode_paged.amla", &req).unwrap();
    assert!(s.passed(), "{:#?}", s.checks);
}

#[test]
fn nan_in_a_masked_page_tail_is_refused_and_unused_pages_do_not_matter() {
    // Sequence 1 has 10 tokens on page 2: rows 10..64 of page 2 are masked.
    let mut inputs = paged_inputs(vec![0, 1, 2, -1], vec![100, 10]);
    let HostData::Bf16(kv) = &mut inputs[1].data else {
        panic!()
    };
    // NaN in page 3, which no sequence uses: no effect.
    kv[3 * 64 * 576 + 5] = half::bf16::NAN;
    let s = run("mla_decode_paged.amla", &request(&PAGED, inputs.clone())).unwrap();
    assert!(s.passed(), "{:#?}", s.checks);
    // NaN in the masked tail of page 2: a named input error, not NaN output.
    let HostData::Bf16(kv) = &mut inputs[1].data else {
        panic!()
    };
    kv[(2 * 64 + 20) * 576 + 7] = half::bf16::INFINITY;
    let e = err("mla_decode_paged.amla", &request(&PAGED, inputs));
    assert!(
        e.contains("input `kv`") && e.contains("[2, 20, 7] = inf") && e.contains("masked tail"),
        "{e}"
    );
}

#[test]
fn sizes_that_cannot_be_allocated_are_an_error_naming_the_bytes() {
    for defines in [
        &[("N", "2147483647"), ("B", "1"), ("H", "16")][..],
        &[("B", "100000")][..],
    ] {
        let e = err("mla_decode.amla", &request(defines, Vec::new()));
        assert!(
            e.contains("bytes of host memory") && e.contains("largest tensor is `kv`"),
            "{defines:?}: {e}"
        );
    }
    // A limit set by the caller is honoured too.
    let mut req = request(&SMALL, Vec::new());
    req.run.memory_limit = Some(1000);
    let e = err("mla_decode.amla", &req);
    assert!(e.contains("more than the 1000 bytes available"), "{e}");
}

#[test]
fn integers_read_from_floats_only_when_exact() {
    let ok = FileData::F64(vec![64.0, -3.0]).convert(DType::I32, "len", "`f`");
    assert_eq!(ok, Ok(HostData::I32(vec![64, -3])));
    let e = FileData::F32(vec![1.0, 64.5])
        .convert(DType::I32, "len", "`f`")
        .unwrap_err();
    assert!(
        e.contains("element 1 = 64.5") && e.contains("input `len`"),
        "{e}"
    );
    let e = FileData::I64(vec![1 << 40])
        .convert(DType::I32, "len", "`f`")
        .unwrap_err();
    assert!(e.contains("element 0"), "{e}");
}

fn data(name: &str) -> PathBuf {
    root().join("tests/data/tensor_files").join(name)
}

#[test]
fn fortran_order_npy_is_reordered_not_misread() {
    let (shape, d) = npy::read_raw(&data("f_order.npy")).unwrap();
    assert_eq!(shape, vec![2, 3, 4]);
    let want: Vec<f32> = (0..24).map(|i| i as f32).collect();
    assert_eq!(d, FileData::F32(want));
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("amla-run-inputs-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn ml_dtypes_npy_and_safetensors_inputs_read_and_outputs_load_back() {
    let mut opts = CompileOptions::new().unwrap();
    for (n, v) in SMALL {
        opts.defines.insert(n, v);
    }
    let src = source("mla_decode.amla");
    let c = compile(&src, &opts).unwrap();
    let exe = Executable::new(&c, &opts.target).unwrap();
    let mut specs = exe.tensor_specs().unwrap();
    amla::compiler::run::validate::label_from_source(&mut specs, &src);
    let path = |p: PathBuf| p.to_str().unwrap().to_string();
    // bf16 .npy as ml_dtypes writes it ('<V2').
    let named = vec![
        ("q".to_string(), path(data("q_bf16.npy"))),
        ("kv".to_string(), path(data("kv_bf16.npy"))),
    ];
    let from_npy = files::read_inputs(&specs, &named, &[], &opts.defines, "mla_decode").unwrap();
    // The same tensors from a safetensors file (BF16).
    let from_st = files::read_inputs(
        &specs,
        &[],
        &[data("inputs.safetensors")],
        &opts.defines,
        "mla_decode",
    )
    .unwrap();
    let by_name = |v: &[HostTensor], n: &str| v.iter().find(|t| t.name == n).unwrap().clone();
    assert_eq!(by_name(&from_npy, "q"), by_name(&from_st, "q"));
    assert_eq!(by_name(&from_npy, "kv"), by_name(&from_st, "kv"));
    // Given twice (npy and safetensors) and wrong-shaped files name the argument.
    let e = files::read_inputs(
        &specs,
        &named[..1],
        &[data("inputs.safetensors")],
        &opts.defines,
        "mla_decode",
    )
    .unwrap_err();
    assert!(
        e.contains("`q` is given twice") && e.contains("--input q="),
        "{e}"
    );
    let wrong = vec![("q".to_string(), path(data("kv_bf16.npy")))];
    let e = files::read_inputs(&specs, &wrong, &[], &opts.defines, "mla_decode").unwrap_err();
    assert!(
        e.contains("--input q=")
            && e.contains("input `q`")
            && e.contains("`H` = 16 (from -D H=16)"),
        "{e}"
    );
    let e = files::read_inputs(
        &specs,
        &[("q".into(), path(data("f_order.npy")))],
        &[],
        &opts.defines,
        "mla_decode",
    )
    .unwrap_err();
    assert!(e.contains("shape [2, 3, 4]"), "{e}");

    let s = run("mla_decode.amla", &request(&SMALL, from_st)).unwrap();
    assert!(s.passed(), "{:#?}", s.checks);
    // Outputs: .npy (bf16 as ml_dtypes '<V2', and as f32) and safetensors.
    let dir = tmp("out");
    std::fs::create_dir_all(dir.join("npy")).unwrap();
    for o in &s.output.outputs {
        npy::write(
            &dir.join("npy").join(format!("{}.npy", o.name)),
            o,
            Bf16Npy::MlDtypes,
        )
        .unwrap();
        npy::write(&dir.join(format!("{}_f32.npy", o.name)), o, Bf16Npy::F32).unwrap();
        let (_, raw) = npy::read_raw(&dir.join("npy").join(format!("{}.npy", o.name))).unwrap();
        assert_eq!(raw.convert(o.data.dtype(), &o.name, "npy").unwrap(), o.data);
        let (_, raw) = npy::read_raw(&dir.join(format!("{}_f32.npy", o.name))).unwrap();
        assert_eq!(raw.convert(o.data.dtype(), &o.name, "npy").unwrap(), o.data);
    }
    safetensors::write(&dir.join("outputs.safetensors"), &s.output.outputs).unwrap();
    let back = safetensors::read_all(&dir.join("outputs.safetensors")).unwrap();
    for o in &s.output.outputs {
        let (_, shape, d) = back.iter().find(|b| b.0 == o.name).unwrap();
        assert_eq!(shape, &o.shape);
        assert_eq!(
            d.clone().convert(o.data.dtype(), &o.name, "st").unwrap(),
            o.data
        );
    }
    // The real Python packages load them back, when the venv is there.
    let py = root().join("tests/python/.venv/bin/python");
    if py.exists() {
        let out = std::process::Command::new(&py)
            .arg(root().join("tests/python/tensor_files.py"))
            .arg("check")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!(
            "note: no tests/python/.venv: run `bash tests/python/setup-venv.sh` for the Python load-back check"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cli_details_stdout_options_bom_and_line_ends() {
    let cli = |args: &[&str]| {
        amla::compiler::cli::run(std::iter::once("amlac").chain(args.iter().copied()))
    };
    let f = root().join("dsl-examples/mla_decode.amla");
    let f = f.to_str().unwrap();
    // `check` takes the compiler options every command takes.
    assert_eq!(cli(&["check", "-D", "PRELOAD=2", f]), 0);
    assert_eq!(
        cli(&["check", "-D", "RESCALE=nearest", "-D", "COMPENSATE=0", f]),
        0
    );
    assert_eq!(cli(&["check", "-D", "PRELOAD=x", f]), 1);
    // `-o -` is stdout, not a file named `-`.
    let dir = tmp("cli");
    let text = std::fs::read_to_string(f).unwrap();
    let bom_cr = format!("\u{feff}{}", text.replace('\n', "\r"));
    let p = dir.join("bom_cr.amla");
    std::fs::write(&p, bom_cr).unwrap();
    assert_eq!(cli(&["check", p.to_str().unwrap()]), 0);
    let p2 = dir.join("crlf.amla");
    std::fs::write(&p2, text.replace('\n', "\r\n")).unwrap();
    assert_eq!(cli(&["check", p2.to_str().unwrap()]), 0);
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(
        cli(&["compile", p.to_str().unwrap(), "--emit", "ast", "-o", "-"]),
        0
    );
    assert!(!cwd.join("-").exists());
    // --save needs a .safetensors path; --inputs a .safetensors file.
    assert_eq!(cli(&["run", f, "--save", "x.npy"]), 1);
    assert_eq!(
        cli(&["run", f, "--inputs", data("q_bf16.npy").to_str().unwrap()]),
        1
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
