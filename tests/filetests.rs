//! Pass filetests: every `tests/filetests/<pass>/*.tir` is a kernel in the
//! IR text form whose header comment lines name one pass and its options:
//!
//! ```text
//! // pass: preload
//! // options: preload=2
//! // A sentence saying what the file tests.
//! kernel …
//! ```
//!
//! The runner parses the file, verifies it, runs that one pass (looked up in
//! `passes::registry`, with a `PassContext` built from the options), runs the
//! verifier on the result and snapshots the printed IR, or the pass's error,
//! in `tests/filetests/<pass>/snapshots/<file>.snap`. A change to one pass
//! re-blesses that pass's files only:
//! `INSTA_UPDATE=always cargo test --test filetests`, then read the diff.
//!
//! Options (space-separated `key=value`, all optional): `preload=N` (the
//! preload depth, default 1), `rescale=ceil|nearest`, `compensate=0|1` (the
//! `mul-to-add` options), `target=NAME` (a `targets/*.toml` name, default
//! `ascend910b`), `flags=N` (the target's cross-unit flag count). The
//! folder must be the pass's name (`plan-memory` for `plan_memory`).

use std::path::Path;

use amla::compiler::ir::{VerifyConfig, parse, print, verify_with};
use amla::compiler::passes::mul_to_add::RescaleVariant;
use amla::compiler::passes::{PassContext, PassOptions, registry};
use amla::compiler::target::Target;

/// A filetest's header.
struct Header {
    pass: String,
    options: PassOptions,
    target: Target,
}

fn header(path: &Path, text: &str) -> Header {
    let what = path.display();
    let mut pass = None;
    let mut options = PassOptions::default();
    let mut target = Target::ascend910b();
    for line in text.lines().map_while(|l| l.strip_prefix("//")) {
        let line = line.trim();
        if let Some(p) = line.strip_prefix("pass:") {
            pass = Some(p.trim().to_string());
        } else if let Some(opts) = line.strip_prefix("options:") {
            for kv in opts.split_whitespace() {
                let (key, value) = kv
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{what}: option `{kv}` is not key=value"));
                fn val<T>(x: Option<T>, what: &impl std::fmt::Display, kv: &str) -> T {
                    x.unwrap_or_else(|| panic!("{what}: bad value in `{kv}`"))
                }
                match key {
                    "preload" => options.preload_depth = val(value.parse().ok(), &what, kv),
                    "rescale" => options.rescale = val(RescaleVariant::parse(value), &what, kv),
                    "compensate" => options.compensate = value == "1",
                    "target" => target = val(Target::builtin(value).ok(), &what, kv),
                    "flags" => target.flags.cross_core_ids = val(value.parse().ok(), &what, kv),
                    _ => panic!("{what}: unknown option `{key}`"),
                }
            }
        }
    }
    let pass = pass.unwrap_or_else(|| panic!("{what}: no `// pass:` line in the header"));
    let folder = path.parent().and_then(|p| p.file_name()).unwrap();
    assert_eq!(
        folder.to_str(),
        Some(pass.as_str()),
        "{what}: a filetest lives in the folder of its pass"
    );
    Header {
        pass,
        options,
        target,
    }
}

/// Runs one filetest; returns the text to snapshot.
fn run(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let h = header(path, &text);
    run_text(&path.display(), &text, h)
}

/// Runs the IR `text` through the pass of `h`; returns the printed result
/// (or the pass's error).
fn run_text(what: &dyn std::fmt::Display, text: &str, h: Header) -> String {
    let mut k = parse(text).unwrap_or_else(|e| panic!("{what}: {e}"));
    let vcfg = VerifyConfig::for_target(&h.target);
    verify_with(&k, &vcfg).unwrap_or_else(|e| panic!("{what}: the input does not verify:\n{e}"));
    let pass = registry(&h.pass).unwrap_or_else(|| panic!("{what}: no pass `{}`", h.pass));
    let cx = PassContext::new(&h.target, h.options);
    match pass.run(&mut k, &cx) {
        Ok(()) => {
            verify_with(&k, &vcfg)
                .unwrap_or_else(|e| panic!("{what}: the verifier rejects the output:\n{e}"));
            let out = print(&k);
            // The printed result parses back to the same text.
            let again = parse(&out).unwrap_or_else(|e| panic!("{what}: output: {e}"));
            assert_eq!(print(&again), out, "{what}: output does not round-trip");
            out
        }
        Err(e) => {
            assert!(
                e.is_user(),
                "{what}: an internal error is a compiler bug, not an expected outcome: {e}"
            );
            format!("error: {e}\n")
        }
    }
}

#[test]
fn filetests() {
    let mut count = 0;
    insta::glob!("filetests/*/*.tir", |path| {
        count += 1;
        let out = run(path);
        let mut s = insta::Settings::clone_current();
        s.set_snapshot_path(path.parent().unwrap().join("snapshots"));
        s.set_prepend_module_to_snapshot(false);
        s.remove_snapshot_suffix();
        s.set_omit_expression(true);
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        s.bind(|| insta::assert_snapshot!(name, out));
    });
    assert!(count >= 5, "found only {count} filetests");
}

/// The `# Example` of a pass's module doc: the first `text` block after a
/// line starting `Before` and the first after a line starting `After`,
/// without the `//! ` prefixes.
fn doc_example(doc: &str) -> Option<(String, String)> {
    let lines: Vec<&str> = doc
        .lines()
        .map_while(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect();
    let start = lines.iter().position(|l| *l == "# Example")?;
    let block = |from: usize, label: &str| -> Option<(String, usize)> {
        let at = from + lines[from..].iter().position(|l| l.starts_with(label))?;
        let open = at + lines[at..].iter().position(|l| *l == "```text")?;
        let close = open + lines[open..].iter().position(|l| *l == "```")?;
        let body: String = lines[open + 1..close]
            .iter()
            .map(|l| format!("{l}\n"))
            .collect();
        Some((body, close))
    };
    let (before, end) = block(start, "Before")?;
    let (after, _) = block(end, "After")?;
    Some((before, after))
}

#[test]
fn every_pass_doc_example_is_real_ir_and_what_the_pass_prints() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("compiler/src/passes");
    for (pass, file) in [
        ("range-fold", "range_fold.rs"),
        ("split", "split/mod.rs"),
        ("tile", "tile.rs"),
        ("plan-memory", "plan_memory/mod.rs"),
        ("preload", "preload.rs"),
    ] {
        let doc = std::fs::read_to_string(root.join(file)).unwrap();
        let (before, after) = doc_example(&doc)
            .unwrap_or_else(|| panic!("{file}: no `# Example` with a Before and an After block"));
        let h = Header {
            pass: pass.to_string(),
            options: PassOptions::default(),
            target: Target::ascend910b(),
        };
        let got = run_text(&format!("{file} (doc example)"), &before, h);
        assert_eq!(
            got, after,
            "{file}: the doc's After block is not what `{pass}` prints"
        );
    }
}
