//! The float64 interpreter as the oracle of `--check`: kernels the examples
//! do not cover (`tests/kernels/*.amla`, none with a `// @reference:` line)
//! pass it, and a compiled kernel whose final IR has one op changed by hand
//! fails it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use amla::compiler::diag::SourceFile;
use amla::compiler::driver::{CompileOptions, compile};
use amla::compiler::interp::{self, Options};
use amla::compiler::ir;
use amla::compiler::run::compare::{NanRule, compare_with};
use amla::compiler::run::exec::{Executable, RunConfig};
use amla::compiler::run::inputs::{InputOptions, generate};
use amla::compiler::run::session::{Oracle, RunRequest, interpreter_tolerance, run_source};

fn kernels() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kernels");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "amla"))
        .collect();
    v.sort();
    v
}

fn source(path: &Path) -> SourceFile {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    SourceFile::new(path.display().to_string(), text)
}

fn request(cores: usize) -> RunRequest {
    RunRequest {
        compile: CompileOptions::new().expect("built-in target"),
        inputs: InputOptions::default(),
        given: Vec::new(),
        run: RunConfig {
            cores,
            wait_timeout: Duration::from_secs(20),
            // Checked code: no index of these kernels leaves its buffer.
            checked: true,
            ..RunConfig::default()
        },
        check: true,
    }
}

#[test]
fn kernels_without_a_reference_pass_the_interpreter_check() {
    let files = kernels();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "sliding_window",
        "additive_bias",
        "alibi_decode",
        "gqa_small_group",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    for path in &files {
        let src = source(path);
        assert!(
            !src.text.contains("@reference"),
            "{}: the interpreter must be the only oracle",
            src.name
        );
        for cores in [1, 3] {
            let s = run_source(&src, &request(cores), &mut |_| {})
                .unwrap_or_else(|e| panic!("{}: {e}", src.name));
            assert_eq!(s.checks.len(), 1, "{}", src.name);
            let c = &s.checks[0];
            assert_eq!(c.oracle, Oracle::Interpreter);
            assert_eq!(c.comparisons.len(), s.output.outputs.len());
            assert!(s.passed(), "{} on {cores} cores: {:#?}", src.name, c);
            for cmp in &c.comparisons {
                assert_eq!(cmp.nan_in_both, 0, "{}: {cmp:?}", src.name);
                assert!(cmp.finite_pairs == cmp.elements, "{}: {cmp:?}", src.name);
            }
        }
    }
}

#[test]
fn amlac_run_check_needs_no_reference_line() {
    for path in kernels() {
        let f = path.to_str().expect("utf-8 path");
        let code = amla::compiler::cli::run(["amlac", "run", f, "--check", "--json"]);
        assert_eq!(code, 0, "{f}");
    }
}

/// Runs the final IR of `file` after replacing `from` by `to` once in its
/// text; returns whether the interpreter's check passed.
fn run_edited(file: &str, from: &str, to: &str) -> bool {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let src = source(&path);
    let opts = CompileOptions::new().expect("target");
    let mut c = compile(&src, &opts).unwrap_or_else(|e| panic!("{file}: {e}"));
    let text = ir::print::print(&c.ir);
    assert_eq!(
        text.matches(from).count(),
        1,
        "`{from}` must occur once in the IR of {file}:\n{text}"
    );
    let edited = text.replace(from, to);
    let k = ir::parse::parse(&edited).unwrap_or_else(|e| panic!("{file}: {e:?}"));
    ir::verify::verify(&k).unwrap_or_else(|e| panic!("{file}: edited IR: {e:?}"));
    c.ir = k;
    let exe = Executable::new(&c, &opts.target).expect("JIT");
    let specs = exe.input_specs().expect("specs");
    let inputs: Vec<_> = specs
        .iter()
        .enumerate()
        .map(|(i, (n, d, s))| {
            generate(n, *d, s, None, &InputOptions::default(), i as u64).expect("input")
        })
        .collect();
    let cfg = RunConfig {
        cores: 2,
        ..RunConfig::default()
    };
    let out = exe.run(&inputs, &cfg).expect("run");
    let dims = exe.dims().expect("dims");
    let want = interp::interpret(&c.hir, &dims, &inputs, &Options::default()).expect("interp");
    out.outputs.iter().zip(&want).all(|(o, w)| {
        compare_with(
            &o.name,
            &o.data.to_f64(),
            &w.data,
            interpreter_tolerance(o.data.dtype()),
            NanRule::MatchesNan,
        )
        .passed
    })
}

#[test]
fn a_hand_edited_ir_is_caught_by_the_interpreter() {
    let f = "tests/kernels/gqa_small_group.amla";
    // The unchanged text round-trips and passes: the edits below are what
    // fails.
    assert!(run_edited(f, "%p = exp ", "%p = exp "));
    // exp → exp2 of the scores in natural-log units (the default rescale
    // keeps the kernel's own `p = exp(s - m_new)`).
    assert!(!run_edited(f, "%p = exp ", "%p = exp2 "));
    // s - m swapped into m - s, and the KV mask `key < N` turned into
    // `key <= N` (one extra key per row, past the end of the cache). The
    // value numbers depend on the passes, so the lines are found in the IR.
    let text = {
        let src = source(&Path::new(env!("CARGO_MANIFEST_DIR")).join(f));
        let opts = CompileOptions::new().expect("target");
        ir::print::print(&compile(&src, &opts).expect("compile").ir)
    };
    let (sub_from, sub_to) = edit_of(&text, " = sub %s, ", |lhs, ops| {
        format!("{lhs} = sub {}, {} ", ops[1], ops[0])
    });
    assert!(!run_edited(f, &sub_from, &sub_to));
    let (lt_from, lt_to) = edit_of(&text, " = lt ", |lhs, ops| {
        format!("{lhs} = le {}, {} ", ops[0], ops[1])
    });
    assert!(!run_edited(f, &lt_from, &lt_to));
}

/// The first instruction of `text` containing `marker` (`%v = op %a, %b`),
/// as the text to replace (`%v = op %a, %b `) and its replacement made by
/// `edit` from the result name and the two operands.
fn edit_of(text: &str, marker: &str, edit: impl Fn(&str, [&str; 2]) -> String) -> (String, String) {
    let line = text
        .lines()
        .find(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("no `{marker}` in the IR:\n{text}"));
    let line = line.trim_start();
    let (lhs, rhs) = line.split_once(" = ").expect("an instruction");
    let mut words = rhs.split_whitespace();
    let op = words.next().expect("an opcode");
    let a = words.next().expect("an operand").trim_end_matches(',');
    let b = words.next().expect("an operand");
    (format!("{lhs} = {op} {a}, {b} "), edit(lhs, [a, b]))
}
