//! Checker unit tests: examples are clean, HIR invariants hold, errors
//! carry the expected codes.

use super::hir::{Dim, ExprKind, Stmt};
use super::{Defines, check};
use crate::diag::{Code, SourceFile, render_plain};

fn examples() -> Vec<SourceFile> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../dsl-examples");
    let mut out: Vec<SourceFile> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            SourceFile::new(
                e.path().display().to_string(),
                std::fs::read_to_string(e.path()).unwrap_or_default(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn codes(body: &str) -> Vec<Code> {
    let src = SourceFile::new("t.amla", body);
    match check(&src, &Defines::new()) {
        Ok(_) => Vec::new(),
        Err(d) => d.iter().map(|d| d.code).collect(),
    }
}

/// A kernel around `stmts` (inside the parallel over `b`).
fn k(stmts: &str) -> String {
    format!(
        "kernel t(q: bf16[B, H, 64], n: i32[B]) -> (o: f32[B, H]) {{ dim B = 2, H = 16, N = 8; const BN = 4; parallel b in 0..B {{ {stmts} }} }}"
    )
    .replace("dim B = 2, H = 16, N = 8", "dim B = 2, H = 16")
}

#[test]
fn examples_check_clean() {
    let all = examples();
    assert!(all.len() >= 5);
    for f in &all {
        match check(f, &Defines::new()) {
            Err(d) => panic!("{}", render_plain(f, &d)),
            Ok(k) => assert_eq!(k.verify(), Ok(()), "{}", f.name),
        }
    }
}

#[test]
fn binary_operands_have_equal_types_and_tiles_are_const() {
    for f in examples() {
        let Ok(kernel) = check(&f, &Defines::new()) else {
            continue;
        };
        for e in &kernel.exprs {
            assert!(
                e.ty.shape.iter().all(|d| matches!(d, Dim::Const(_))),
                "{}: {e:?}",
                f.name
            );
            match &e.kind {
                ExprKind::Binary { lhs, rhs, .. } | ExprKind::Cmp { lhs, rhs, .. } => {
                    assert_eq!(kernel.expr(*lhs).ty, kernel.expr(*rhs).ty, "{}", f.name);
                }
                ExprKind::Broadcast { arg, to } => {
                    let s = &kernel.expr(*arg).ty.shape;
                    assert!(s.len() < to.len() && to[..s.len()] == s[..], "{}", f.name);
                }
                ExprKind::Error => panic!("error node in {}", f.name),
                _ => {}
            }
        }
    }
}

#[test]
fn open_dims_stay_symbolic_in_params_only() {
    let src = SourceFile::new("t.amla", k("let x = q[b]; o[b] = rowsum(f32(x));"));
    let mut d = Defines::new();
    d.insert("B", "3");
    let kernel = check(&src, &d).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(kernel.dims[0].value, Some(3));
    assert_eq!(
        kernel.params[0].shape,
        vec![Dim::Const(3), Dim::Const(16), Dim::Const(64)]
    );
    assert!(matches!(kernel.grid.body.stmts[0], Stmt::Let { .. }));
}

#[test]
fn error_codes() {
    assert_eq!(codes(&k("let x = y;")), vec![Code::UnknownName]);
    assert_eq!(
        codes(&k("let x = q[b]; x = q[b];")),
        vec![Code::AssignToImmutable]
    );
    assert_eq!(
        codes(&k("let x = q[b] @ q[b];")),
        vec![Code::MatmulInnerDim]
    );
    assert_eq!(codes(&k("let x = o[b];")), vec![Code::ReadOutput]);
    assert_eq!(
        codes(&k("let x = q[b, 0..BN+1, 0..65];")),
        vec![Code::OutOfBounds]
    );
    assert_eq!(
        codes(&k("for j in 0..n[b] step 0 { }")),
        vec![Code::BadStep]
    );
    assert_eq!(
        codes(&k("for j in 0..n[b] { let x = q[b, 0..j]; }")),
        vec![Code::SliceLength]
    );
    // One root cause, one diagnostic: `y` is unknown, the rest is silent.
    assert_eq!(
        codes(&k("let x = exp(y) + q[b]; let z = x @ x; o[b] = z;")),
        vec![Code::UnknownName]
    );
    // Several independent errors are all reported.
    assert_eq!(
        codes(&k("let x = y; let z = w;")),
        vec![Code::UnknownName, Code::UnknownName]
    );
}

#[test]
fn defines_are_validated() {
    let src = SourceFile::new("t.amla", k(""));
    let run = |n: &str, v: &str| {
        let mut d = Defines::new();
        d.insert(n, v);
        check(&src, &d).err().map(|d| d[0].code)
    };
    assert_eq!(run("H", "abc"), Some(Code::BadDefineValue));
    assert_eq!(run("H", "0"), Some(Code::BadDefineValue));
    assert_eq!(run("BN", "1.5"), Some(Code::BadDefineValue));
    assert_eq!(run("ZZ", "1"), Some(Code::UnknownDefine));
    assert_eq!(run("BN", "8"), None);
}

#[test]
fn shadowing_lets_and_folding() {
    // `base` is followed through its `let`; the shadowed `x` is a new local.
    let src = SourceFile::new(
        "t.amla",
        k(
            "let x = 2 * BN; let x = q[b, 0..x * 2, ..]; for j in 0..4 { let base = j * 2; let y = x[base..base + 2]; } o[b] = rowsum(f32(x)) * 0.5;",
        ),
    );
    let kernel =
        check(&src, &Defines::new()).unwrap_or_else(|e| panic!("{}", render_plain(&src, &e)));
    assert_eq!(kernel.verify(), Ok(()));
    let xs: Vec<_> = kernel.locals.iter().filter(|l| l.name == "x").collect();
    assert_eq!(xs.len(), 2);
    assert_eq!(xs[1].ty.shape, vec![Dim::Const(16), Dim::Const(64)]);
    // `2 * BN` folded to one literal.
    assert!(kernel.exprs.iter().any(|e| e.kind == ExprKind::IntLit(8)));
}

#[test]
fn verify_catches_a_broken_kernel() {
    let src = SourceFile::new("t.amla", k("o[b] = rowsum(f32(q[b]));"));
    let mut kernel = check(&src, &Defines::new()).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(kernel.verify(), Ok(()));
    // Break the stored value's type: verify must notice.
    for e in &mut kernel.exprs {
        if matches!(e.kind, ExprKind::RowSum(_)) {
            e.ty.dtype = super::hir::DType::Bf16;
        }
    }
    assert!(kernel.verify().is_err());
}
