//! Every `dsl-examples/*.amla` checks clean (the folder is globbed, so a new
//! example is covered automatically), and `amlac check` exits 0 / 1 / 2.

use std::path::{Path, PathBuf};

use amla::compiler::check::{Defines, check};
use amla::compiler::cli;
use amla::compiler::diag::{SourceFile, render_plain};

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dsl-examples");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "amla"))
        .collect();
    out.sort();
    out
}

#[test]
fn every_example_checks_clean() {
    let files = examples();
    assert!(files.len() >= 5, "examples missing: {files:?}");
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let src = SourceFile::new(path.display().to_string(), text);
        if let Err(d) = check(&src, &Defines::new()) {
            panic!("{}", render_plain(&src, &d));
        }
    }
}

#[test]
fn examples_accept_overrides() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("dsl-examples/mla_decode.amla");
    let src = SourceFile::new(
        "mla_decode.amla",
        std::fs::read_to_string(path).unwrap_or_default(),
    );
    let mut d = Defines::new();
    d.insert("H", "64");
    d.insert("BN", "64");
    d.insert("N", "4096");
    let k = check(&src, &d).unwrap_or_else(|e| panic!("{}", render_plain(&src, &e)));
    assert_eq!(
        k.dims.iter().find(|x| x.name == "H").and_then(|x| x.value),
        Some(64)
    );
}

fn amlac(args: &[&str]) -> u8 {
    cli::run(std::iter::once("amlac").chain(args.iter().copied()))
}

#[test]
fn amlac_check_exit_codes() {
    let files: Vec<String> = examples().iter().map(|p| p.display().to_string()).collect();
    let mut args = vec!["check"];
    args.extend(files.iter().map(String::as_str));
    assert_eq!(amlac(&args), 0, "clean examples");
    let bad = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/unknown_name.amla");
    let bad = bad.display().to_string();
    assert_eq!(amlac(&["check", &files[0], &bad]), 1, "one bad file");
    assert_eq!(
        amlac(&["check", "-D", "B=abc", &files[0]]),
        1,
        "bad -D value"
    );
    assert_eq!(
        amlac(&["check", "/nonexistent/x.amla"]),
        1,
        "unreadable file"
    );
    assert_eq!(amlac(&["check"]), 2, "no files");
    assert_eq!(
        amlac(&["check", "-D", "novalue", &files[0]]),
        2,
        "malformed -D"
    );
    assert_eq!(amlac(&["frobnicate"]), 2, "unknown subcommand");
}

/// The checked HIR of every example, printed: shows every implicit
/// conversion the checker made explicit (the lowering's input).
#[test]
fn example_hir_snapshots() {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../snapshots/hir");
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        insta::glob!("../dsl-examples", "*.amla", |path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let src = SourceFile::new("example.amla", text);
            let k = check(&src, &Defines::new())
                .unwrap_or_else(|e| panic!("{}", render_plain(&src, &e)));
            assert_eq!(k.verify(), Ok(()));
            let printed = k.to_string();
            assert!(printed.starts_with(&format!("kernel {}", k.name)));
            assert!(printed.contains("parallel "));
            insta::assert_snapshot!(printed);
        });
    });
}
