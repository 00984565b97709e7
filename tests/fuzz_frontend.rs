//! Fuzzing the front end: random bytes, random token soups drawn from the
//! grammar's vocabulary, and random mutations of the example kernels go
//! through parse + check. The front end must never panic and never hang:
//! each case runs on its own thread and must finish within [`LIMIT`].
//!
//! The default case count keeps a debug `cargo test` at a few seconds; the
//! heavy run is
//! `PROPTEST_CASES=250000 cargo test --release --test fuzz_frontend`
//! (4 properties: 1,000,000 inputs; `docs/TESTING.md` records its runs).

use std::sync::mpsc;
use std::time::Duration;

use amla::compiler::check::{Defines, check};
use amla::compiler::diag::{SourceFile, render_plain};
use proptest::prelude::*;

/// The longest any single case may take.
const LIMIT: Duration = Duration::from_secs(20);

/// Parses, checks and renders `text`; fails on a panic or a hang. Returns
/// whether it checked clean.
fn run(text: String) -> Result<bool, TestCaseError> {
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let src = SourceFile::new("fuzz.amla", text);
        let ok = match check(&src, &Defines::new()) {
            Ok(k) => {
                // A clean kernel must satisfy every documented HIR invariant.
                if let Err(e) = k.verify() {
                    panic!("HIR invariant broken: {e}\n{}", src.text);
                }
                true
            }
            Err(d) => {
                // Rendering must not panic either, and must say something.
                assert!(!d.is_empty() && !render_plain(&src, &d).is_empty());
                false
            }
        };
        let _ = tx.send(ok);
    });
    match rx.recv_timeout(LIMIT) {
        Ok(ok) => {
            let _ = worker.join();
            Ok(ok)
        }
        Err(mpsc::RecvTimeoutError::Timeout) => Err(TestCaseError::fail("front end hung")),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(TestCaseError::fail("front end panicked")),
    }
}

const TOKENS: &[&str] = &[
    "kernel",
    "dim",
    "const",
    "let",
    "var",
    "parallel",
    "for",
    "in",
    "step",
    "where",
    "inf",
    "bf16",
    "f16",
    "f32",
    "i32",
    "bool",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ";",
    ":",
    "->",
    "..",
    "=",
    "+",
    "-",
    "*",
    "/",
    "%",
    "@",
    "^T",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "&&",
    "||",
    "!",
    "exp",
    "log",
    "sqrt",
    "max",
    "min",
    "rowmax",
    "rowsum",
    "row_index",
    "col_index",
    "reshape",
    "q",
    "k",
    "kv",
    "out",
    "lse",
    "b",
    "j",
    "x",
    "B",
    "H",
    "N",
    "BN",
    "0",
    "1",
    "64",
    "128",
    "576",
    "1.0",
    "0.5e-3",
    "99999999999999999999",
    "// c\n",
    "/* c */",
    "\n",
];

fn examples() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dsl-examples");
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .collect();
    v.sort();
    v
}

/// One edit of a text, positions taken modulo its length.
#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Duplicate(usize, usize),
    Insert(usize, &'static str),
    Replace(usize, &'static str),
}

fn edit() -> impl Strategy<Value = Edit> {
    let tok = proptest::sample::select(TOKENS);
    prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(a, n)| Edit::Delete(a, n)),
        (any::<usize>(), 1usize..80).prop_map(|(a, n)| Edit::Duplicate(a, n)),
        (any::<usize>(), tok.clone()).prop_map(|(a, t)| Edit::Insert(a, t)),
        (any::<usize>(), tok).prop_map(|(a, t)| Edit::Replace(a, t)),
    ]
}

/// Applies `edits` to `text` on char boundaries.
fn mutate(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        let len = chars.len().max(1);
        match *e {
            Edit::Delete(a, n) => {
                let a = a % len;
                let b = (a + n).min(chars.len());
                chars.drain(a.min(chars.len())..b);
            }
            Edit::Duplicate(a, n) => {
                let a = (a % len).min(chars.len());
                let b = (a + n).min(chars.len());
                let copy: Vec<char> = chars[a..b].to_vec();
                chars.splice(b..b, copy);
            }
            Edit::Insert(a, t) => {
                let a = (a % len).min(chars.len());
                chars.splice(a..a, format!(" {t} ").chars());
            }
            Edit::Replace(a, t) => {
                let a = (a % len).min(chars.len());
                // Replace the word at `a`.
                let b = chars[a..]
                    .iter()
                    .position(|c| !c.is_alphanumeric())
                    .map_or(chars.len(), |i| a + i.max(1));
                chars.splice(a..b.min(chars.len()), t.chars());
            }
        }
    }
    chars.into_iter().collect()
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        run(String::from_utf8_lossy(&bytes).into_owned())?;
    }

    #[test]
    fn token_soup(toks in proptest::collection::vec(proptest::sample::select(TOKENS), 0..200)) {
        run(toks.join(" "))?;
    }

    #[test]
    fn soup_inside_a_kernel(toks in proptest::collection::vec(proptest::sample::select(TOKENS), 0..60)) {
        let text = format!(
            "kernel t(q: bf16[B, H, 64], kv: bf16[B, N, 64]) -> (out: f32[B, H, 64]) {{ dim B = 2, H = 16; const BN = 64; parallel b in 0..B {{ let x = {}; }} }}",
            toks.join(" ")
        );
        run(text)?;
    }

    #[test]
    fn mutated_examples(which in 0usize..16, edits in proptest::collection::vec(edit(), 1..6)) {
        let all = examples();
        prop_assert!(!all.is_empty());
        run(mutate(&all[which % all.len()], &edits))?;
    }
}

#[test]
fn unmutated_examples_check_clean() {
    for text in examples() {
        assert_eq!(run(text).ok(), Some(true));
    }
}

#[test]
fn pathological_inputs_finish() {
    for text in [
        "(".repeat(100_000),
        "[".repeat(100_000),
        format!(
            "kernel t() -> () {{ parallel b in 0..1 {{ let x = {}1; }} }}",
            "-".repeat(100_000)
        ),
        format!(
            "kernel t() -> () {{ parallel b in 0..1 {{ let x = 1{}; }} }}",
            " + 1".repeat(50_000)
        ),
        format!(
            "kernel t() -> () {{ parallel b in 0..1 {{ {} }} }}",
            "let x = 1; ".repeat(20_000)
        ),
        "/*".repeat(10_000),
        "\u{0}\u{FFFF}é".repeat(1000),
    ] {
        // Only the 20,000 shadowing `let`s are a valid kernel.
        let valid = text.contains("let x = 1; let");
        assert_eq!(run(text).ok(), Some(valid));
    }
}
