//! Parser unit tests: the examples parse, errors read as words, nested
//! big-stack calls share one thread.

use super::ast::{ExprKind, StmtKind};
use super::parse;
use crate::diag::Code;

fn err(src: &str) -> (Code, String) {
    match parse(src) {
        Ok(_) => panic!("expected a parse error for {src:?}"),
        Err(d) => (d[0].code, d[0].message.clone()),
    }
}

#[test]
fn examples_parse() {
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../dsl-examples"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let k = parse(&text);
        assert!(k.is_ok(), "{:?}: {:?}", entry.path(), k.err());
    }
}

#[test]
fn precedence_and_postfix() {
    let k = parse("kernel k() -> () { parallel b in 0..1 { let x = -a + b * c[1, ..]^T; } }");
    let Ok(k) = k else { panic!("{k:?}") };
    let StmtKind::Parallel { body, .. } = &k.body[0].kind else {
        panic!()
    };
    let StmtKind::Let { value, .. } = &body.stmts[0].kind else {
        panic!()
    };
    let ExprKind::Binary(op, lhs, _) = &value.kind else {
        panic!()
    };
    assert_eq!(op.symbol(), "+");
    assert!(matches!(lhs.kind, ExprKind::Unary(..)));
}

#[test]
fn errors_are_worded() {
    let (c, m) = err("kernel k() -> () { parallel b in 0..1 { let x = 1 } }");
    assert_eq!(c, Code::Syntax);
    assert!(m.contains("`;`"), "{m}");
    let (_, m) = err("kernel k() -> () { parallel b in 0..1 { let x = ; } }");
    assert!(m.contains("an expression"), "{m}");
    assert!(!m.contains("or_expr") && !m.contains("`(`"), "{m}");
    let (c, _) = err("kernel k() -> () { parallel b in 0..1 { let x = 99999999999999999999; } }");
    assert_eq!(c, Code::IntTooLarge);
}

#[test]
fn deep_nesting_is_refused() {
    let deep = format!(
        "kernel k() -> () {{ parallel b in 0..1 {{ let x = {}1{}; }} }}",
        "(".repeat(300),
        ")".repeat(300)
    );
    assert_eq!(err(&deep).0, Code::TooDeep);
    let ok = format!(
        "kernel k() -> () {{ parallel b in 0..1 {{ let x = {}1{}; }} }}",
        "(".repeat(250),
        ")".repeat(250)
    );
    assert!(parse(&ok).is_ok());
    let long = format!(
        "kernel k() -> () {{ parallel b in 0..1 {{ let x = 1{}; }} }}",
        "+1".repeat(5000)
    );
    assert_eq!(err(&long).0, Code::TooDeep);
    let neg = format!(
        "kernel k() -> () {{ parallel b in 0..1 {{ let x = {}1; }} }}",
        "-".repeat(5000)
    );
    assert_eq!(err(&neg).0, Code::TooDeep);
}

/// `check` parses inside its own big-stack call: a nested call runs where
/// it is instead of spawning a second thread.
#[test]
fn a_nested_big_stack_call_runs_on_the_same_thread() {
    let (outer, inner) = super::on_big_stack(|| {
        let outer = std::thread::current().id();
        (outer, super::on_big_stack(|| std::thread::current().id()))
    });
    assert_eq!(outer, inner);
    assert_ne!(outer, std::thread::current().id(), "spawned a thread");
}
