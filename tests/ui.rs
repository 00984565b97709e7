//! UI tests: every `tests/ui/*.amla` is a broken program. Its rendered
//! diagnostics (no colour, path relative to the repository) are snapshotted
//! under `snapshots/ui/`; each must report at least one error, name a
//! `file:line:col`, and carry the code its header comment names.
//!
//! Header lines: `// defines: NAME=VALUE …` passes `-D` bindings;
//! `// E0042…` names the code the file exists for.

use std::collections::BTreeSet;
use std::path::Path;

use amla::compiler::check::{Defines, check};
use amla::compiler::diag::{SourceFile, render_plain};

/// Checks one ui file; returns the rendered diagnostics and their codes.
fn check_ui(path: &Path) -> (String, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut defines = Defines::new();
    for line in text.lines().take_while(|l| l.starts_with("//")) {
        if let Some(rest) = line.strip_prefix("// defines:") {
            for arg in rest.split_whitespace() {
                let (n, v) =
                    Defines::parse_arg(arg).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                defines.insert(n, v);
            }
        }
    }
    let name = format!(
        "tests/ui/{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    );
    let src = SourceFile::new(name, text);
    match check(&src, &defines) {
        Ok(_) => (String::new(), Vec::new()),
        Err(diags) => (
            render_plain(&src, &diags),
            diags.iter().map(|d| d.code.to_string()).collect(),
        ),
    }
}

/// The codes a file's header comment promises (`// E0017…`).
fn promised(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .take_while(|l| l.starts_with("//"))
        .filter_map(|l| l.strip_prefix("// ").filter(|r| r.starts_with('E')))
        .map(|r| r.chars().take(5).collect())
        .collect()
}

#[test]
fn ui() {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../snapshots/ui");
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        insta::glob!("ui/*.amla", |path| {
            let (out, codes) = check_ui(path);
            assert!(!codes.is_empty(), "{} checks clean", path.display());
            let file = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            assert!(
                out.contains(&format!("tests/ui/{file}:")),
                "no file:line:col in\n{out}"
            );
            for code in promised(path) {
                assert!(
                    codes.contains(&code),
                    "{file}: expected {code}, got {codes:?}"
                );
            }
            insta::assert_snapshot!(out);
        });
    });
}

#[test]
fn ui_covers_the_error_codes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    let mut files = 0;
    let mut codes = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        if entry.path().extension().is_some_and(|e| e == "amla") {
            files += 1;
            codes.extend(check_ui(&entry.path()).1);
        }
    }
    assert!(files >= 24, "only {files} ui programs");
    assert!(
        codes.len() >= 20,
        "only {} distinct codes: {codes:?}",
        codes.len()
    );
    // Every code the checker reports has a ui program; the codes the passes
    // report (a well-formed kernel the target cannot hold) are covered by
    // tests/compile_errors.rs.
    use amla::compiler::diag::Code;
    for c in Code::ALL
        .into_iter()
        .filter(|c| !matches!(c, Code::TileDoesNotFit | Code::Unschedulable))
    {
        assert!(codes.contains(&c.to_string()), "no ui program yields {c}");
    }
}

#[test]
fn errors_md_documents_every_code() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ERRORS.md");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    for c in amla::compiler::diag::Code::ALL {
        assert!(
            text.contains(&format!("## {c}")),
            "docs/ERRORS.md lacks {c}"
        );
    }
}
