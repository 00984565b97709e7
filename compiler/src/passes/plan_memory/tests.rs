//! Unit tests of `plan-memory`, and the attention fixtures the `tile` tests
//! share.

use super::live_ranges::{Lin, View, live_ranges};
use super::*;
use crate::ir::{BinaryOp, UnaryOp};

/// DeepSeek-V3 MLA decode shapes (H = 128 heads, D = 576 QK channels,
/// DV = 512 V channels, 128-token KV blocks), after `split`, before `tile`.
pub(crate) const MLA: &str = include_str!("../../../../tests/filetests/tile/attention_mla.tir");

/// The same with 1024-token KV blocks.
const MLA_BN1024: &str =
    include_str!("../../../../tests/filetests/plan-memory/attention_mla_bn1024.tir");

/// Small shapes (H = 64, D = 64, DV = 32, 64-token KV blocks) whose matmuls
/// fit L0 whole.
pub(crate) const SMALL: &str =
    include_str!("../../../../tests/filetests/plan-memory/attention_small.tir");

/// An attention kernel after `split` (cube and vector funcs), from its
/// filetest text.
pub(crate) fn attention(text: &str) -> Kernel {
    crate::ir::parse(text).expect("the attention filetests parse")
}

/// All tile values of the function run by `unit`.
pub(crate) fn tiles(k: &Kernel, unit: Unit) -> Vec<Value> {
    let f = k.func(unit).expect("function");
    Lin::new(k, f.body).tiles
}

/// Checks the placement invariants: every tile placed; local tiles have
/// offsets within capacity; tiles that share bytes are never live at
/// the same time unless they are one slot (same offset and type, ranges
/// touching at a handoff) or one is a view of the other.
pub(crate) fn check_placement(k: &Kernel, target: &Target) {
    if let Err(e) =
        crate::ir::verify::verify_with(k, &crate::ir::verify::VerifyConfig::for_target(target))
    {
        panic!("{e}\n{}", crate::ir::print::print(k));
    }
    for f in &k.funcs {
        let lin = Lin::new(k, f.body);
        // Views: l1 extracts.
        let mut views = FxHashMap::default();
        for &v in &lin.tiles {
            if let Some(i) = k.def_inst(v)
                && let InstKind::Extract { src, .. } = &k.insts[i].kind
                && space_of(k, v) == Space::L1
            {
                let root = views.get(src).map_or(*src, |w: &View| w.root);
                views.insert(
                    v,
                    View {
                        root,
                        dims: vec![],
                        start: vec![],
                    },
                );
            }
        }
        let ranges = live_ranges(k, &lin, &views).unwrap();
        let mut placed = Vec::new();
        for &v in &lin.tiles {
            let t = k.ty(v).as_tile().unwrap();
            assert_ne!(t.space, Space::Any, "{} unplaced", tile_label(k, v));
            match capacity(target, t.space) {
                None => assert_eq!(k.offsets[v], None),
                Some(cap) => {
                    let off = k.offsets[v]
                        .unwrap_or_else(|| panic!("{} has no offset", tile_label(k, v)));
                    assert!(
                        off + t.bytes() <= cap,
                        "{} out of {}",
                        tile_label(k, v),
                        t.space
                    );
                    if !views.contains_key(&v) {
                        assert_eq!(off % Target::ascend910b().align.bytes, 0);
                        placed.push((v, t.space, off, t.bytes()));
                    }
                }
            }
        }
        for (i, &(a, sa, oa, ba)) in placed.iter().enumerate() {
            for &(b, sb, ob, bb) in &placed[i + 1..] {
                if sa != sb || oa + ba <= ob || ob + bb <= oa {
                    continue;
                }
                let (ra, rb) = (ranges[&a], ranges[&b]);
                let live_together = !(ra.1 < rb.0 || rb.1 < ra.0);
                if live_together {
                    let same_slot = oa == ob && ba == bb && (ra.1 == rb.0 || rb.1 == ra.0);
                    assert!(
                        same_slot,
                        "{} {:?} @{oa} and {} {:?} @{ob} overlap while live",
                        tile_label(k, a),
                        ra,
                        tile_label(k, b),
                        rb
                    );
                }
            }
        }
    }
}

fn find(k: &Kernel, unit: Unit, name: &str) -> Value {
    tiles(k, unit)
        .into_iter()
        .find(|&v| k.values[v].name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no tile %{name}"))
}

#[test]
fn small_kernel_is_placed_without_overlap() {
    let mut k = attention(SMALL);
    let t = Target::ascend910b();
    let rep = plan_memory(&mut k, &t, &PlanMemoryConfig::default()).unwrap();
    check_placement(&k, &t);
    let sp = |n: &str, u| space_of(&k, find(&k, u, n));
    assert_eq!(sp("qt", Unit::Cube), Space::L1);
    assert_eq!(sp("k", Unit::Cube), Space::L1);
    assert_eq!(sp("v", Unit::Cube), Space::L1);
    assert_eq!(sp("s", Unit::Cube), Space::L0C);
    assert_eq!(sp("pv", Unit::Cube), Space::L0C);
    assert_eq!(sp("acc", Unit::Vector), Space::Ub);
    // V is a view of K at K's offset (its first channels).
    let (kk, vv) = (find(&k, Unit::Cube, "k"), find(&k, Unit::Cube, "v"));
    assert_eq!(k.offsets[kk], k.offsets[vv]);
    // The untiled matmuls got their operand copies.
    let mut copies = Vec::new();
    k.walk(k.func(Unit::Cube).unwrap().body, &mut |i| {
        if let InstKind::Copy { to, .. } = k.insts[i].kind {
            copies.push(to);
        }
    });
    assert_eq!(copies, [Space::L0A, Space::L0B, Space::L0A, Space::L0B]);
    assert!(rep.vector_gm_tiles.is_empty(), "{:?}", rep.notes);
}

#[test]
fn carried_tiles_share_one_slot() {
    let mut k = attention(SMALL);
    let t = Target::ascend910b();
    plan_memory(&mut k, &t, &PlanMemoryConfig::default()).unwrap();
    let f = k.func(Unit::Vector).unwrap().body;
    let mut fors = Vec::new();
    k.walk(f, &mut |i| {
        if matches!(k.insts[i].kind, InstKind::For { .. }) {
            fors.push(i);
        }
    });
    let InstKind::For { init, body, .. } = &k.insts[fors[0]].kind else {
        unreachable!()
    };
    let InstKind::Yield(ys) = &k.insts[*k.blocks[*body].insts.last().unwrap()].kind else {
        unreachable!()
    };
    for j in 0..3 {
        let p = k.blocks[*body].params[j + 1];
        let r = k.insts[fors[0]].results[j];
        let off = k.offsets[p];
        assert!(off.is_some());
        assert_eq!(k.offsets[init[j]], off, "init {j}");
        assert_eq!(k.offsets[ys[j]], off, "yield {j}");
        assert_eq!(k.offsets[r], off, "result {j}");
    }
    // m is read after m_new is computed: m_new is copied at the yield;
    // acc and l are updated in place.
    let y0 = k.def_inst(ys[0]).unwrap();
    assert!(matches!(k.insts[y0].kind, InstKind::Copy { .. }));
    let y2 = k.def_inst(ys[2]).unwrap();
    assert!(matches!(
        k.insts[y2].kind,
        InstKind::Binary(BinaryOp::Add, ..)
    ));
}

#[test]
fn mla_vector_accumulator_goes_to_gm() {
    let mut k = attention(MLA);
    let t = Target::ascend910b();
    crate::passes::tile::tile(&mut k, &t, &Default::default()).unwrap();
    let rep = plan_memory(&mut k, &t, &PlanMemoryConfig::default()).unwrap();
    check_placement(&k, &t);
    for n in ["acc", "acc_new", "pv", "ab", "acc_s", "o", "lb"] {
        assert_eq!(
            space_of(&k, find(&k, Unit::Vector, n)),
            Space::Gm,
            "{n}: {:#?}",
            rep.notes
        );
    }
    for n in ["m", "l", "m_new", "mx", "alpha"] {
        assert_eq!(space_of(&k, find(&k, Unit::Vector, n)), Space::Ub, "{n}");
    }
    assert!(
        rep.notes
            .iter()
            .any(|n| n.contains("%acc: f32[128, 512]") && n.contains("gm")),
        "{:#?}",
        rep.notes
    );
    // The stream reserve stays free.
    assert!(
        buffer_high_water(&k, Unit::Vector, Space::Ub) <= t.buffers.ub - DEFAULT_UB_STREAM_RESERVE
    );
}

#[test]
fn l1_overflow_names_buffer_tile_and_bytes() {
    let mut k = attention(MLA_BN1024);
    let e = plan_memory(&mut k, &Target::ascend910b(), &PlanMemoryConfig::default()).unwrap_err();
    assert_eq!(
        e.message,
        "tile %k: bf16[1024, 576] needs 1179648 bytes of L1 but L1 holds 524288 bytes \
         (use smaller tiles, e.g. a smaller KV block)"
    );
}

#[test]
fn untiled_mla_matmul_overflows_l0a_and_suggests_tile() {
    let mut k = attention(MLA);
    let e = plan_memory(&mut k, &Target::ascend910b(), &PlanMemoryConfig::default()).unwrap_err();
    assert!(
        e.message
            .starts_with("tile %qt_l0a: bf16[128, 576] needs 147456 bytes of L0A"),
        "{e}"
    );
    assert!(e.message.contains("`tile` pass"), "{e}");
}

#[test]
fn live_set_overflow_lists_the_live_tiles() {
    // Two 300 KiB loads live together overflow L1 though each fits.
    let mut k = crate::ir::parse(
        "kernel two
input a: bf16[512, 300]
output o: bf16[512, 300]

func cube {
  %x = load a[.., ..] : bf16[512, 300]
  %y = load a[.., ..] : bf16[512, 300]
  store o[.., ..], %x
  store o[.., ..], %y
}
",
    )
    .unwrap();
    let e = plan_memory(&mut k, &Target::ascend910b(), &PlanMemoryConfig::default()).unwrap_err();
    assert!(
        e.message.starts_with(
            "tile %y: bf16[512, 300] needs 307200 bytes of L1 but L1 holds 524288 bytes \
             and 307200 are taken by tiles live at the same time: %x: bf16[512, 300]"
        ),
        "{e}"
    );
}

#[test]
fn unexpected_ops_are_errors_not_panics() {
    let mut k = attention(SMALL);
    // An `exp` of a tile in the cube function.
    let body = k.func(Unit::Cube).unwrap().body;
    let mut loads = Vec::new();
    k.walk(body, &mut |i| {
        if matches!(k.insts[i].kind, InstKind::Load { .. }) {
            loads.push(k.insts[i].results[0]);
        }
    });
    let mut b = Builder::at_end(&mut k, body);
    b.ins(InstKind::Unary(UnaryOp::Exp, loads[0])).unwrap();
    let e = plan_memory(&mut k, &Target::ascend910b(), &PlanMemoryConfig::default()).unwrap_err();
    assert!(
        e.message.contains("unexpected `exp` in the cube function"),
        "{e}"
    );

    let mut k = attention(SMALL);
    k.funcs.truncate(1);
    k.funcs[0].unit = Unit::Any;
    let e = plan_memory(&mut k, &Target::ascend910b(), &PlanMemoryConfig::default()).unwrap_err();
    assert!(e.message.contains("`any`"), "{e}");
}

#[test]
fn replanning_is_stable() {
    let mut k = attention(SMALL);
    let t = Target::ascend910b();
    plan_memory(&mut k, &t, &PlanMemoryConfig::default()).unwrap();
    let before: Vec<_> = tiles(&k, Unit::Vector)
        .iter()
        .map(|&v| (k.ty(v).clone(), k.offsets[v]))
        .collect();
    let n_insts = k.insts.len();
    plan_memory(&mut k, &t, &PlanMemoryConfig::default()).unwrap();
    let after: Vec<_> = tiles(&k, Unit::Vector)
        .iter()
        .map(|&v| (k.ty(v).clone(), k.offsets[v]))
        .collect();
    assert_eq!(before, after);
    assert_eq!(n_insts, k.insts.len(), "no new copies the second time");
    check_placement(&k, &t);
}

/// The front end and the passes before this one, on a `.amla` file.
/// `None` when `split` does not support the kernel yet.
pub(crate) fn compile_example(name: &str, defines: &[(&str, &str)], amla: bool) -> Option<Kernel> {
    use crate::check::{Defines, check};
    use crate::diag::{SourceFile, render_plain};
    let path = format!("{}/../dsl-examples/{name}", env!("CARGO_MANIFEST_DIR"));
    let src = SourceFile::new(name, std::fs::read_to_string(&path).unwrap());
    let mut d = Defines::new();
    for (n, v) in defines {
        d.insert(*n, *v);
    }
    let h = check(&src, &d).unwrap_or_else(|e| panic!("{}", render_plain(&src, &e)));
    let mut k = crate::lower::lower(&h).unwrap();
    if amla {
        crate::passes::mul_to_add::run(&mut k, &Default::default()).unwrap();
    }
    crate::passes::split::run(&mut k).ok()?;
    Some(k)
}

#[test]
fn examples_tile_place_and_verify() {
    let t = Target::ascend910b();
    let mut seen = 0;
    let dir = format!("{}/../dsl-examples", env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".amla"))
        .collect();
    names.sort();
    for name in &names {
        for amla in [false, true] {
            let Some(mut k) = compile_example(name, &[], amla) else {
                continue;
            };
            crate::passes::tile::tile(&mut k, &t, &Default::default())
                .unwrap_or_else(|e| panic!("{name} (amla {amla}): {e}"));
            let rep = plan_memory(&mut k, &t, &PlanMemoryConfig::default()).unwrap_or_else(|e| {
                panic!("{name} (amla {amla}): {e}\n{}", crate::ir::print::print(&k))
            });
            check_placement(&k, &t);
            let _ = rep;
            seen += 1;
        }
    }
    assert!(seen >= 6, "only {seen} kernels split");
}

#[test]
fn mla_example_accumulator_lands_in_gm_without_mul_to_add() {
    let t = Target::ascend910b();
    let mut k = compile_example("mla_decode.amla", &[], false).unwrap();
    crate::passes::tile::tile(&mut k, &t, &Default::default()).unwrap();
    let rep = plan_memory(&mut k, &t, &PlanMemoryConfig::default()).unwrap();
    check_placement(&k, &t);
    let gm: Vec<String> = rep
        .vector_gm_tiles
        .iter()
        .map(|&v| tile_label(&k, v))
        .collect();
    assert!(
        gm.iter()
            .any(|g| g.starts_with("%acc") && g.ends_with("f32[128, 512]")),
        "{gm:?}\n{:#?}",
        rep.notes
    );
}

#[test]
fn mla_example_bn_1024_overflows_l1() {
    let t = Target::ascend910b();
    let mut k = compile_example("mla_decode.amla", &[("BN", "1024")], true).unwrap();
    crate::passes::tile::tile(&mut k, &t, &Default::default()).unwrap();
    let e = plan_memory(&mut k, &t, &PlanMemoryConfig::default()).unwrap_err();
    assert!(
        e.message.starts_with(
            "tile %k: bf16[1024, 576] needs 1179648 bytes of L1 but L1 holds 524288 bytes"
        ),
        "{e}"
    );
}

#[test]
fn pipeline_runs_tile_then_plan_memory_and_verifies() {
    use crate::passes::{Pass, PassContext, PassError, PassOptions, Pipeline, PipelineConfig};
    let t = Target::ascend910b();
    let pipeline = || Pipeline {
        passes: vec![
            Box::new(crate::passes::tile::Tile::default()) as Box<dyn Pass>,
            Box::new(PlanMemory::default()),
        ],
        config: PipelineConfig::default(),
    };
    let cx = PassContext::new(&t, PassOptions::default());
    let mut k = compile_example("mla_decode.amla", &[], true).unwrap();
    pipeline().run(&mut k, &cx).unwrap();
    check_placement(&k, &t);
    let notes = cx.notes();
    assert!(
        notes
            .iter()
            .any(|n| n.pass == "tile" && n.text.contains("K 96×6")),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.pass == NAME && n.text.contains("L1 peak")),
        "{notes:?}"
    );

    // The too-big tile is a structured user error.
    let mut k = compile_example("mla_decode.amla", &[("BN", "1024")], true).unwrap();
    let e = pipeline().run(&mut k, &cx).unwrap_err();
    assert!(
        matches!(&e, PassError::DoesNotFit { buffer: Space::L1, bytes: 1179648, capacity: 524288, tile, .. } if tile == "%k: bf16[1024, 576]"),
        "{e:?}"
    );
    assert!(e.is_user());
}
