//! Test support shared by the pass tests: a small FlashAttention kernel,
//! a two-unit flag simulator and a plain dump of a kernel (SSA and typing
//! are the verifier's, `ir::verify`).

use std::collections::{HashMap, HashSet};

use crate::ir::{
    Axis, BLayout, BinaryOp, Block, Builder, DType, Dim, DimData, DimId, Func, Index, InstKind,
    Kernel, ReduceOp, Role, Tensor, TensorData, Type, UnaryOp, Unit, Value,
};

fn tensor(k: &mut Kernel, name: &str, dtype: DType, shape: Vec<Dim>, role: Role) -> Tensor {
    k.tensors.push(TensorData {
        name: name.into(),
        dtype,
        shape,
        role,
    })
}

/// FlashAttention over `kv` blocks of 128 rows: `q: bf16[B, 128, 64]`,
/// `kv: bf16[B, N, 64]`, `out: f32[B, 128, 32]` (V = `k[.., 0..32]`).
/// With `amla`, the accumulator lives in the workspace `acc_ws`, rescaled
/// by `atomic_exp_add` and updated by `atomic_add` (the shape the
/// `mul-to-add` pass leaves); otherwise it is a carried value.
pub(crate) fn fa_kernel(amla: bool) -> Kernel {
    let mut k = Kernel::new("fa");
    let bd = k.dims.push(DimData {
        name: "B".into(),
        value: None,
    });
    let nd = k.dims.push(DimData {
        name: "N".into(),
        value: None,
    });
    let (c, s) = (Dim::Const, Dim::Sym);
    let q = tensor(
        &mut k,
        "q",
        DType::Bf16,
        vec![s(bd), c(128), c(64)],
        Role::Input,
    );
    let kv = tensor(
        &mut k,
        "kv",
        DType::Bf16,
        vec![s(bd), s(nd), c(64)],
        Role::Input,
    );
    let out = tensor(
        &mut k,
        "out",
        DType::F32,
        vec![s(bd), c(128), c(32)],
        Role::Output,
    );
    let acc_ws = tensor(
        &mut k,
        "acc_ws",
        DType::F32,
        vec![s(bd), c(128), c(32)],
        Role::Workspace,
    );
    let top = k.blocks.push(Default::default());
    k.funcs.push(Func {
        unit: Unit::Any,
        sub_blocks: 1,
        body: top,
    });
    let mut b = Builder::at_end(&mut k, top);
    let c0 = b.named(InstKind::IConst(0), "c0").unwrap();
    let bv = b.named(InstKind::DimValue(bd), "B").unwrap();
    let nv = b.named(InstKind::DimValue(nd), "N").unwrap();
    let ninf = b
        .value(InstKind::FConst(f64::NEG_INFINITY, DType::F32))
        .unwrap();
    let zero = b.value(InstKind::FConst(0.0, DType::F32)).unwrap();
    let pb = b
        .parallel(
            vec![Axis {
                lo: c0,
                hi: bv,
                step: 1,
            }],
            &["b"],
        )
        .unwrap();
    b.switch_to(pb);
    let bi = b.kernel.blocks[pb].params[0];
    let full3 = |bi| vec![Index::Point(bi), Index::Full, Index::Full];
    let qt = b
        .named(
            InstKind::Load {
                tensor: q,
                index: full3(bi),
            },
            "q",
        )
        .unwrap();
    let m0 = b
        .named(
            InstKind::Broadcast {
                src: ninf,
                shape: vec![128],
            },
            "m",
        )
        .unwrap();
    let l0 = b
        .named(
            InstKind::Broadcast {
                src: zero,
                shape: vec![128],
            },
            "l",
        )
        .unwrap();
    let a0 = b
        .named(
            InstKind::Broadcast {
                src: zero,
                shape: vec![128, 32],
            },
            "acc",
        )
        .unwrap();
    let init = if amla { vec![m0, l0] } else { vec![m0, l0, a0] };
    let (fi, fb) = b.for_loop(c0, nv, 128, init, "j").unwrap();
    b.switch_to(fb);
    let ps = b.kernel.blocks[fb].params.clone();
    let (j, m, l) = (ps[0], ps[1], ps[2]);
    let kt = b
        .named(
            InstKind::Load {
                tensor: kv,
                index: vec![
                    Index::Point(bi),
                    Index::Range { start: j, len: 128 },
                    Index::Full,
                ],
            },
            "k",
        )
        .unwrap();
    let st = b
        .named(
            InstKind::Matmul {
                a: qt,
                b: kt,
                b_layout: BLayout::NK,
                acc: None,
            },
            "s",
        )
        .unwrap();
    let mx = b.value(InstKind::Reduce(ReduceOp::Max, st)).unwrap();
    let mn = b
        .named(InstKind::Binary(BinaryOp::Max, m, mx), "m_new")
        .unwrap();
    let mb = b
        .value(InstKind::Broadcast {
            src: mn,
            shape: vec![128, 128],
        })
        .unwrap();
    let d = b.value(InstKind::Binary(BinaryOp::Sub, st, mb)).unwrap();
    let p = b.named(InstKind::Unary(UnaryOp::Exp, d), "p").unwrap();
    let dm = b.value(InstKind::Binary(BinaryOp::Sub, m, mn)).unwrap();
    let al = b.named(InstKind::Unary(UnaryOp::Exp, dm), "alpha").unwrap();
    let rs = b.value(InstKind::Reduce(ReduceOp::Sum, p)).unwrap();
    let l2 = b.value(InstKind::Binary(BinaryOp::Mul, l, al)).unwrap();
    let l3 = b
        .named(InstKind::Binary(BinaryOp::Add, l2, rs), "l")
        .unwrap();
    if amla {
        let n = b.named(InstKind::Cast(dm, DType::I32), "n").unwrap();
        b.ins(InstKind::AtomicExpAdd {
            tensor: acc_ws,
            index: full3(bi),
            n,
        })
        .unwrap();
    }
    let pbf = b.named(InstKind::Cast(p, DType::Bf16), "pb").unwrap();
    let v = b
        .named(
            InstKind::Extract {
                src: kt,
                index: vec![Index::Full, Index::Range { start: c0, len: 32 }],
            },
            "v",
        )
        .unwrap();
    let pv = b
        .named(
            InstKind::Matmul {
                a: pbf,
                b: v,
                b_layout: BLayout::KN,
                acc: None,
            },
            "pv",
        )
        .unwrap();
    if amla {
        b.ins(InstKind::AtomicAdd {
            tensor: acc_ws,
            index: full3(bi),
            value: pv,
        })
        .unwrap();
        b.ins(InstKind::Yield(vec![mn, l3])).unwrap();
    } else {
        let acc = ps[3];
        let ab = b
            .value(InstKind::Broadcast {
                src: al,
                shape: vec![128, 32],
            })
            .unwrap();
        let a2 = b.value(InstKind::Binary(BinaryOp::Mul, acc, ab)).unwrap();
        let a3 = b
            .named(InstKind::Binary(BinaryOp::Add, a2, pv), "acc")
            .unwrap();
        b.ins(InstKind::Yield(vec![mn, l3, a3])).unwrap();
    }
    b.switch_to(pb);
    let res = b.kernel.insts[fi].results.clone();
    let accv = if amla {
        b.named(
            InstKind::Load {
                tensor: acc_ws,
                index: full3(bi),
            },
            "acc",
        )
        .unwrap()
    } else {
        res[2]
    };
    let lb = b
        .value(InstKind::Broadcast {
            src: res[1],
            shape: vec![128, 32],
        })
        .unwrap();
    let o = b
        .named(InstKind::Binary(BinaryOp::Div, accv, lb), "o")
        .unwrap();
    b.ins(InstKind::Store {
        tensor: out,
        index: full3(bi),
        value: o,
    })
    .unwrap();
    k
}

/// What every scalar load of an input reads in [`trace`].
pub(crate) const SCALAR_INPUT: i64 = 192;

/// One event of a unit's run.
#[derive(Clone, Debug)]
pub(crate) enum Ev {
    Set(u32),
    Wait(u32),
    /// `dst` gets the block tag of the sources (checked equal for
    /// matmuls).
    Comb {
        dst: Value,
        srcs: Vec<Value>,
        matmul: bool,
    },
    /// A tile read from an input: tagged with the first range start.
    Input {
        dst: Value,
        tag: Option<i64>,
    },
    /// A GM access of a non-input tensor at the given point/range-start
    /// coordinates.
    Gm {
        t: Tensor,
        at: Vec<i64>,
        op: &'static str,
        src: Option<Value>,
        dst: Option<Value>,
    },
}

/// Runs the scalar part of function `f` for the dims `dims` (and the grid
/// point where every parallel iv is 0) and returns its events.
pub(crate) fn trace(k: &Kernel, f: usize, dims: &[(DimId, i64)]) -> Result<Vec<Ev>, String> {
    let mut env = HashMap::new();
    let mut out = Vec::new();
    // Block indices: every `for` iv, and every loop's lower bound (a
    // pass may compute a block's values at `lo`, outside the loop).
    let mut taint = HashSet::new();
    k.walk(k.funcs[f].body, &mut |i| {
        if let InstKind::For { lo, .. } = k.kind(i) {
            taint.insert(*lo);
        }
    });
    trace_block(k, k.funcs[f].body, dims, &mut env, &mut taint, &mut out)?;
    Ok(out)
}

fn ival(env: &HashMap<Value, i64>, v: Value) -> Result<i64, String> {
    env.get(&v)
        .copied()
        .ok_or_else(|| format!("scalar {v} unknown"))
}

fn trace_block(
    k: &Kernel,
    b: Block,
    dims: &[(DimId, i64)],
    env: &mut HashMap<Value, i64>,
    taint: &mut HashSet<Value>,
    out: &mut Vec<Ev>,
) -> Result<(), String> {
    for &i in &k.blocks[b].insts {
        // Scalars derived from a `for` iv are "tainted": an input tile
        // loaded at a tainted index is tagged with that index's value.
        let mut tainted = false;
        k.kind(i)
            .for_each_operand(|v| tainted |= taint.contains(&v));
        if tainted {
            for &r in &k.insts[i].results {
                if matches!(k.ty(r), Type::Scalar(_)) {
                    taint.insert(r);
                }
            }
        }
        let kind = k.kind(i);
        let res = &k.insts[i].results;
        let scalar = res
            .first()
            .is_some_and(|&r| matches!(k.ty(r), Type::Scalar(_)));
        let mut ops = Vec::new();
        kind.for_each_operand(|v| ops.push(v));
        match kind {
            InstKind::IConst(c) => {
                env.insert(res[0], *c);
            }
            InstKind::DimValue(d) => {
                let v = match k.dims[*d].value {
                    Some(n) => n as i64,
                    None => dims.iter().find(|x| x.0 == *d).map(|x| x.1).unwrap_or(1),
                };
                env.insert(res[0], v);
            }
            InstKind::Binary(op, a, c) if scalar && k.ty(*a).dtype() == DType::I32 => {
                let (x, y) = (ival(env, *a)?, ival(env, *c)?);
                let r = match op {
                    BinaryOp::Add => x + y,
                    BinaryOp::Sub => x - y,
                    BinaryOp::Mul => x * y,
                    BinaryOp::Div => {
                        if y == 0 {
                            0
                        } else {
                            x / y
                        }
                    }
                    BinaryOp::Rem => {
                        if y == 0 {
                            0
                        } else {
                            x % y
                        }
                    }
                    BinaryOp::Max => x.max(y),
                    BinaryOp::Min => x.min(y),
                    _ => return Err(format!("unsupported scalar op {}", kind.opcode())),
                };
                env.insert(res[0], r);
            }
            _ if scalar && !matches!(kind, InstKind::Load { .. }) => {
                env.insert(res[0], 0);
            }
            InstKind::SetFlag(f) => out.push(Ev::Set(*f)),
            InstKind::WaitFlag(f) => out.push(Ev::Wait(*f)),
            InstKind::Parallel { body, .. } => {
                for &p in &k.blocks[*body].params {
                    env.insert(p, 0);
                }
                trace_block(k, *body, dims, env, taint, out)?;
            }
            InstKind::For {
                lo,
                hi,
                step,
                init,
                body,
            } => {
                let (lo, hi) = (ival(env, *lo)?, ival(env, *hi)?);
                let ps = k.blocks[*body].params.clone();
                let carry = |out: &mut Vec<Ev>,
                             env: &mut HashMap<Value, i64>,
                             from: &[Value],
                             to: &[Value]| {
                    for (&s, &d) in from.iter().zip(to) {
                        if let Some(&x) = env.get(&s) {
                            env.insert(d, x);
                        } else {
                            out.push(Ev::Comb {
                                dst: d,
                                srcs: vec![s],
                                matmul: false,
                            });
                        }
                    }
                };
                carry(out, env, init, &ps[1..]);
                let mut j = lo;
                while j < hi {
                    env.insert(ps[0], j);
                    taint.insert(ps[0]);
                    trace_block(k, *body, dims, env, taint, out)?;
                    let Some(InstKind::Yield(ys)) =
                        k.blocks[*body].insts.last().map(|&y| k.kind(y))
                    else {
                        return Err("for without yield".into());
                    };
                    carry(out, env, &ys.clone(), &ps[1..]);
                    j += step;
                }
                carry(out, env, &ps[1..], res);
            }
            InstKind::Yield(_) => {}
            InstKind::Load { tensor, index }
            | InstKind::Store { tensor, index, .. }
            | InstKind::AtomicAdd { tensor, index, .. }
            | InstKind::AtomicExpAdd { tensor, index, .. } => {
                let mut at = Vec::new();
                let mut tag = None;
                for ix in index {
                    match ix {
                        Index::Point(v) | Index::Range { start: v, .. } => {
                            let x = ival(env, *v)?;
                            if taint.contains(v) {
                                tag.get_or_insert(x);
                            }
                            at.push(x);
                        }
                        Index::Full => {}
                    }
                }
                if k.tensors[*tensor].role == Role::Input {
                    if scalar {
                        // Sequence lengths, page ids…: a few blocks' worth.
                        env.insert(res[0], SCALAR_INPUT);
                    } else {
                        out.push(Ev::Input { dst: res[0], tag });
                    }
                    continue;
                }
                let (src, dst) = match kind {
                    InstKind::Load { .. } => (None, Some(res[0])),
                    InstKind::Store { value, .. } | InstKind::AtomicAdd { value, .. } => {
                        (Some(*value), None)
                    }
                    InstKind::AtomicExpAdd { n, .. } => (Some(*n), None),
                    _ => unreachable!(),
                };
                out.push(Ev::Gm {
                    t: *tensor,
                    at,
                    op: kind.opcode(),
                    src,
                    dst,
                });
            }
            _ => {
                let srcs = ops.into_iter().filter(|v| !env.contains_key(v)).collect();
                for &r in res {
                    out.push(Ev::Comb {
                        dst: r,
                        srcs: Vec::clone(&srcs),
                        matmul: matches!(kind, InstKind::Matmul { .. }),
                    });
                }
            }
        }
    }
    Ok(())
}

/// What a simulated run did.
#[derive(Debug, Default)]
pub(crate) struct Run {
    /// Accesses to non-`ws_` GM tensors in global order: (tensor name,
    /// op, block tag).
    pub gm_log: Vec<(String, &'static str, Option<i64>)>,
    /// Block tags of the Cube's matmuls, in issue order.
    pub cube_matmuls: Vec<Option<i64>>,
}

/// Runs the traces of `[cube, vector]` against each other with pair-mode
/// flag counters (one Vector sub-block). `cube_first`: the Cube runs
/// until it blocks before the Vector starts, and so on; otherwise the
/// Vector goes first. Fails on a deadlock, a matmul mixing blocks, a
/// `ws_` slot overwritten before it was read, or unbalanced counters.
pub(crate) fn simulate(k: &Kernel, dims: &[(DimId, i64)], cube_first: bool) -> Result<Run, String> {
    let tr = [trace(k, 0, dims)?, trace(k, 1, dims)?];
    let mut pc = [0usize; 2];
    let mut cnt = [[0i64; 32]; 2]; // cnt[consumer][flag]
    let mut tags: [HashMap<Value, Option<i64>>; 2] = [HashMap::new(), HashMap::new()];
    let mut gm: HashMap<(Tensor, Vec<i64>), (Option<i64>, bool)> = HashMap::new();
    let mut run = Run::default();
    let mut turn = if cube_first { 0 } else { 1 };
    let mut last_progress = true;
    loop {
        let mut progressed = false;
        while pc[turn] < tr[turn].len() {
            let ev = &tr[turn][pc[turn]];
            let tg = &mut tags[turn];
            match ev {
                Ev::Set(f) => cnt[1 - turn][*f as usize] += 1,
                Ev::Wait(f) => {
                    if cnt[turn][*f as usize] == 0 {
                        break;
                    }
                    cnt[turn][*f as usize] -= 1;
                }
                Ev::Input { dst, tag } => {
                    tg.insert(*dst, *tag);
                }
                Ev::Comb { dst, srcs, matmul } => {
                    let ts: Vec<i64> = srcs
                        .iter()
                        .filter_map(|s| tg.get(s).copied().flatten())
                        .collect();
                    if *matmul && ts.windows(2).any(|w| w[0] != w[1]) {
                        return Err(format!("a matmul mixes blocks {ts:?}"));
                    }
                    if *matmul && turn == 0 {
                        run.cube_matmuls.push(ts.first().copied());
                    }
                    tg.insert(*dst, ts.into_iter().max());
                }
                Ev::Gm {
                    t,
                    at,
                    op,
                    src,
                    dst,
                } => {
                    let name = k.tensors[*t].name.clone();
                    let key = (*t, at.clone());
                    let is_ws = name.starts_with("ws_");
                    let tag = src.and_then(|s| tg.get(&s).copied().flatten());
                    match *op {
                        "load" => {
                            let e = gm.entry(key).or_insert((None, false));
                            if is_ws && e.1 {
                                return Err(format!("{name}{at:?} read twice or before written"));
                            }
                            e.1 = true;
                            tg.insert(dst.unwrap(), e.0);
                            if !is_ws {
                                run.gm_log.push((name, op, e.0));
                            }
                        }
                        _ => {
                            if is_ws {
                                if let Some((_, false)) = gm.get(&key) {
                                    return Err(format!(
                                        "{name}{at:?} overwritten before it was read"
                                    ));
                                }
                                gm.insert(key, (tag, false));
                            } else {
                                run.gm_log.push((name, op, tag));
                            }
                        }
                    }
                }
            }
            pc[turn] += 1;
            progressed = true;
        }
        if pc[0] == tr[0].len() && pc[1] == tr[1].len() {
            break;
        }
        if !progressed && !last_progress {
            return Err(format!(
                "deadlock: cube at {:?}, vector at {:?}",
                tr[0].get(pc[0]),
                tr[1].get(pc[1])
            ));
        }
        last_progress = progressed;
        turn = 1 - turn;
    }
    if cnt.iter().flatten().any(|&c| c != 0) {
        return Err(format!("unbalanced flags at the end: {cnt:?}"));
    }
    Ok(run)
}

/// A plain dump of the functions for test failure messages (the real
/// printer lives in `ir::print`).
pub(crate) fn dump(k: &Kernel) -> String {
    fn block(k: &Kernel, b: Block, depth: usize, out: &mut String) {
        for &i in &k.blocks[b].insts {
            let kind = k.kind(i);
            let mut ops = Vec::new();
            kind.for_each_operand(|v| ops.push(format!("{v}")));
            let extra = match kind {
                InstKind::SetFlag(f) | InstKind::WaitFlag(f) => format!(" {f}"),
                InstKind::IConst(c) => format!(" {c}"),
                _ => match kind.tensor() {
                    Some(t) => format!(" {}", k.tensors[t].name),
                    None => String::new(),
                },
            };
            out.push_str(&format!(
                "{}{:?} = {}{} {}\n",
                "  ".repeat(depth),
                k.insts[i].results,
                kind.opcode(),
                extra,
                ops.join(", ")
            ));
            if let Some(body) = kind.body() {
                out.push_str(&format!(
                    "{}  params {:?}\n",
                    "  ".repeat(depth),
                    k.blocks[body].params
                ));
                block(k, body, depth + 1, out);
            }
        }
    }
    let mut out = String::new();
    for f in &k.funcs {
        out.push_str(&format!("func {}\n", f.unit.name()));
        block(k, f.body, 1, &mut out);
    }
    out
}
