//! Unit tests of `split`.

use super::*;
use crate::passes::testkit::*;

fn ops(k: &Kernel, f: usize) -> Vec<String> {
    let mut v = Vec::new();
    k.walk(k.funcs[f].body, &mut |i| {
        let kind = k.kind(i);
        v.push(match kind {
            InstKind::SetFlag(f) => format!("set {f}"),
            InstKind::WaitFlag(f) => format!("wait {f}"),
            _ => match kind.tensor() {
                Some(t) => format!("{} {}", kind.opcode(), k.tensors[t].name),
                None => kind.opcode().to_string(),
            },
        })
    });
    v
}

fn dims(k: &Kernel, n: i64) -> Vec<(crate::ir::DimId, i64)> {
    k.dims
        .keys()
        .map(|d| (d, if k.dims[d].name == "N" { n } else { 2 }))
        .collect()
}

/// The module docs' example, exactly.
#[test]
fn doc_example() {
    let docs = include_str!("mod.rs");
    let block = |n: usize| -> String {
        let body = docs.split("//! ```text\n").nth(n).unwrap();
        let body = &body[..body.find("//! ```\n").unwrap()];
        body.lines()
            .map(|l| {
                l.strip_prefix("//! ")
                    .unwrap_or(l.strip_prefix("//!").unwrap_or(l))
            })
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let (before, after) = (block(1), block(2));
    let mut k = crate::ir::parse::parse(&before).unwrap();
    run(&mut k).unwrap();
    crate::ir::verify::verify(&k).unwrap();
    assert_eq!(crate::ir::print::print(&k), after);
}

#[test]
fn fa_plain_split() {
    let mut k = fa_kernel(false);
    run(&mut k).unwrap();
    let d = dump(&k);
    crate::ir::verify::verify(&k)
        .map_err(|e| format!("{e}\n{d}"))
        .unwrap();
    assert_eq!(k.funcs.len(), 2);
    assert_eq!(
        (k.funcs[0].unit, k.funcs[1].unit),
        (Unit::Cube, Unit::Vector)
    );
    assert_eq!(k.funcs[1].sub_blocks, 1);
    let cube = ops(&k, 0);
    let vec = ops(&k, 1);
    // Matmuls and the operand loads on the Cube only.
    assert_eq!(cube.iter().filter(|o| *o == "matmul").count(), 2, "{d}");
    assert!(
        !vec.iter()
            .any(|o| o == "matmul" || o == "load kv" || o == "extract"),
        "{d}"
    );
    assert!(
        cube.contains(&"load kv".to_string()) && cube.contains(&"extract".to_string()),
        "{d}"
    );
    for o in ["exp", "rowmax", "rowsum", "cast", "broadcast", "store out"] {
        assert!(vec.iter().any(|x| x == o), "{o} missing on the vector\n{d}");
        assert!(!cube.iter().any(|x| x == o), "{o} on the cube\n{d}");
    }
    // Workspaces: S (f32), P (bf16, the cast stays on the Vector), PV.
    let ws: Vec<(String, DType, Vec<Dim>)> = k
        .tensors
        .values()
        .filter(|t| t.name.starts_with("ws_"))
        .map(|t| (t.name.clone(), t.dtype, t.shape.clone()))
        .collect();
    let bdim = Dim::Sym(k.dims.keys().next().unwrap());
    assert_eq!(
        ws,
        vec![
            (
                "ws_s".into(),
                DType::F32,
                vec![bdim, Dim::Const(128), Dim::Const(128)]
            ),
            (
                "ws_pb".into(),
                DType::Bf16,
                vec![bdim, Dim::Const(128), Dim::Const(128)]
            ),
            (
                "ws_pv".into(),
                DType::F32,
                vec![bdim, Dim::Const(128), Dim::Const(32)]
            ),
        ],
        "{d}"
    );
    // Flag pairs: each id set on one unit and waited on the other; the
    // loop body of the cube: QK, store S, set, wait P, load P, PV.
    assert_eq!(
        cube,
        [
            "iconst",
            "dim",
            "dim",
            "parallel",
            "load q",
            "for",
            "load kv",
            "matmul",
            "store ws_s",
            "set 0",
            "wait 1",
            "load ws_pb",
            "extract",
            "matmul",
            "store ws_pv",
            "set 2",
            "yield"
        ],
        "{d}"
    );
    // No back-pressure flags were needed: ids 0..3 only.
    assert!(!d.contains("flag 3"), "{d}");
    for n in [0, 1, 2, 3, 5] {
        for cube_first in [true, false] {
            simulate(&k, &dims(&k, 128 * n), cube_first)
                .map_err(|e| format!("n={n}: {e}\n{d}"))
                .unwrap();
        }
    }
}

#[test]
fn fa_amla_split_orders_the_accumulator() {
    let mut k = fa_kernel(true);
    run(&mut k).unwrap();
    let d = dump(&k);
    crate::ir::verify::verify(&k)
        .map_err(|e| format!("{e}\n{d}"))
        .unwrap();
    let cube = ops(&k, 0);
    let vec = ops(&k, 1);
    assert!(cube.contains(&"atomic_add acc_ws".to_string()), "{d}");
    assert!(vec.contains(&"atomic_exp_add acc_ws".to_string()), "{d}");
    assert!(vec.contains(&"load acc_ws".to_string()), "{d}");
    // The atomic add waits for the Vector's exp-add of the same block.
    let at = cube.iter().position(|o| o == "atomic_add acc_ws").unwrap();
    assert!(cube[at - 1].starts_with("wait"), "{d}");
    let ld = vec.iter().position(|o| o == "load acc_ws").unwrap();
    assert!(vec[ld - 1].starts_with("wait"), "{d}");
    for n in [0, 1, 2, 3, 5] {
        for cube_first in [true, false] {
            let r = simulate(&k, &dims(&k, 128 * n), cube_first)
                .map_err(|e| format!("n={n}: {e}\n{d}"))
                .unwrap();
            let mut want = Vec::new();
            for j in 0..n {
                want.push(("acc_ws".to_string(), "atomic_exp_add", Some(128 * j)));
                want.push(("acc_ws".to_string(), "atomic_add", Some(128 * j)));
            }
            want.push(("acc_ws".to_string(), "load", None));
            let log: Vec<_> = r.gm_log.into_iter().filter(|e| e.0 == "acc_ws").collect();
            assert_eq!(log, want, "n={n} cube_first={cube_first}\n{d}");
        }
    }
}

fn parse(text: &str) -> Kernel {
    crate::ir::parse::parse(text).unwrap_or_else(|e| panic!("{e:?}"))
}

#[test]
fn kernels_without_matmul_run_on_the_vector() {
    let mut k = parse(
        "kernel vec_only
dim B = 2
input x: f32[B, 64]
output y: f32[B, 64]

func any {
  %c0 = iconst 0 : i32
  %B = dim B : i32
  parallel %b in %c0..%B {
%x = load x[%b, ..] : f32[64]
%e = exp %x : f32[64]
store y[%b, ..], %e
  }
}
",
    );
    run(&mut k).unwrap();
    crate::ir::verify::verify(&k).unwrap();
    let d = dump(&k);
    assert_eq!(ops(&k, 0), ["iconst", "dim", "parallel"], "{d}");
    assert_eq!(
        ops(&k, 1),
        ["iconst", "dim", "parallel", "load x", "exp", "store y"],
        "{d}"
    );
    assert!(
        k.tensors.values().all(|t| !t.name.starts_with("ws_")),
        "{d}"
    );
}

const NO_REPLY: &str = "kernel bp
dim B = 2
dim N
input q: bf16[B, 64, 32]
input kv: bf16[B, N, 32]
output out: f32[B, 64]

func any {
  %c0 = iconst 0 : i32
  %B = dim B : i32
  %N = dim N : i32
  %zero = fconst f32 0.0 : f32
  parallel %b in %c0..%B {
%q = load q[%b, .., ..] : bf16[64, 32]
%a0 = broadcast %zero to [64] : f32[64]
%a = for %j in %c0..%N step 64 carry(%acc: f32[64] = %a0) : f32[64] {
  %k = load kv[%b, %j+:64, ..] : bf16[64, 32]
  %s = matmul %q, %k nk : f32[64, 64]
  %r = rowmax %s : f32[64]
  %acc.1 = add %acc, %r : f32[64]
  yield %acc.1
}
store out[%b, ..], %a
  }
}
";

/// Nothing flows back from the Vector, so nothing stops the Cube from
/// overwriting `ws_s` before the Vector read it: a "slot free" flag is
/// added, with a credit before the loop and a drain after it.
#[test]
fn back_pressure_when_no_flag_protects_the_slot() {
    let mut k = parse(NO_REPLY);
    run(&mut k).unwrap();
    crate::ir::verify::verify(&k).unwrap();
    let d = dump(&k);
    assert_eq!(
        ops(&k, 0),
        [
            "iconst",
            "dim",
            "dim",
            "parallel",
            "load q",
            "for",
            "load kv",
            "matmul",
            "wait 1",
            "store ws_s",
            "set 0",
            "yield",
            "wait 1"
        ],
        "{d}"
    );
    let v = ops(&k, 1);
    let at = v.iter().position(|o| o == "for").unwrap();
    assert_eq!(v[at - 1], "set 1", "{d}");
    let ld = v.iter().position(|o| o == "load ws_s").unwrap();
    assert_eq!(
        (v[ld - 1].as_str(), v[ld + 1].as_str()),
        ("wait 0", "set 1"),
        "{d}"
    );
    for n in [0, 1, 2, 5] {
        for cube_first in [true, false] {
            simulate(&k, &dims(&k, 64 * n), cube_first)
                .map_err(|e| format!("n={n}: {e}\n{d}"))
                .unwrap();
        }
    }
    // Without the "slot free" wait the eager Cube overwrites S.
    let cube = k.funcs[0].body;
    let mut waits = Vec::new();
    k.walk(cube, &mut |i| {
        if matches!(k.kind(i), InstKind::WaitFlag(1)) {
            waits.push(i);
        }
    });
    for i in waits {
        k.insts[i].kind = InstKind::SetFlag(15);
    }
    let e = simulate(&k, &dims(&k, 64 * 3), true).unwrap_err();
    assert!(e.contains("overwritten"), "{e}");
}

#[test]
fn unexpected_input_is_an_error_not_a_panic() {
    let mut k = fa_kernel(true);
    run(&mut k).unwrap();
    let e = run(&mut k).unwrap_err();
    assert!(e.contains("expected one `any` function, found 2"), "{e}");

    let mut k = parse(
        "kernel noparallel
input x: f32[4]
output y: f32[4]

func any {
  %c0 = iconst 0 : i32
  %x = load x[..] : f32[4]
  store y[..], %x
}
",
    );
    let e = run(&mut k).unwrap_err();
    assert!(e.contains("exactly one top-level `parallel`"), "{e}");
}

#[test]
fn too_many_flags_is_a_user_error_and_leaves_the_kernel_alone() {
    let mut k = fa_kernel(true);
    let before = dump(&k);
    match run_with(&mut k, 3) {
        Err(SplitError::TooManyFlags(m)) => assert!(m.contains("more than 3"), "{m}"),
        r => panic!("{r:?}"),
    }
    assert_eq!(dump(&k), before);
}

#[test]
fn deterministic() {
    let mut a = fa_kernel(true);
    let mut b = fa_kernel(true);
    run(&mut a).unwrap();
    run(&mut b).unwrap();
    assert_eq!(crate::ir::print::print(&a), crate::ir::print::print(&b));
}
