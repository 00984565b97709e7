//! The IR text form end to end: every `tests/ir/*.tir` parses, verifies,
//! is canonical (the printer gives back the file minus its `//` comment
//! lines) and round-trips (print → parse → print is the identity); every
//! `tests/ir/invalid/*.tir` is rejected by the parser or the verifier, with
//! its message snapshotted under `snapshots/ir/`.

use amla::compiler::ir::{VerifyConfig, parse, print, verify, verify_with};
use amla::compiler::target::Target;

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path("../snapshots/ir");
    s.set_prepend_module_to_snapshot(false);
    s
}

fn strip_comments(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn valid_ir_round_trips() {
    let cfg = VerifyConfig::for_target(&Target::ascend910b());
    let mut count = 0;
    insta::glob!("ir/*.tir", |path| {
        count += 1;
        let text = std::fs::read_to_string(path).unwrap();
        let name = path.display();
        let k = parse(&text).unwrap_or_else(|e| panic!("{name}:{e}"));
        if let Err(e) = verify_with(&k, &cfg) {
            panic!("{name} does not verify:\n{e}");
        }
        let printed = print(&k);
        assert_eq!(
            printed,
            strip_comments(&text),
            "{name} is not in canonical form"
        );
        let again = parse(&printed).unwrap_or_else(|e| panic!("{name} reprinted:{e}"));
        assert_eq!(
            print(&again),
            printed,
            "{name}: print -> parse -> print differs"
        );
    });
    assert!(count >= 4, "expected at least 4 IR samples, found {count}");
}

#[test]
fn invalid_ir_is_rejected() {
    let cfg = VerifyConfig::for_target(&Target::ascend910b());
    let mut count = 0;
    settings().bind(|| {
        insta::glob!("ir/invalid/*.tir", |path| {
            count += 1;
            let text = std::fs::read_to_string(path).unwrap();
            let msg = match parse(&text) {
                Err(e) => format!("parse error: {e}"),
                Ok(k) => match verify_with(&k, &cfg) {
                    Err(e) => format!("verify error:\n{e}"),
                    Ok(()) => {
                        let _ = verify(&k);
                        panic!("{} was accepted", path.display())
                    }
                },
            };
            insta::assert_snapshot!(msg);
        });
    });
    assert!(
        count >= 6,
        "expected at least 6 invalid IR samples, found {count}"
    );
}
