//! Unit tests of the SIMD building blocks: the exponent add against the
//! runtime's definition, the transcendental polynomials against f64; and
//! the concurrent JIT against compiling one function at a time.

use super::rescale::{JitRescale, JitUnary};
use crate::ir::UnaryOp;
use amla_runtime::rescale::{CHECKED_N, exp2_scale_bits};

/// Bit patterns at every exponent edge: each exponent with mantissas 0, 1,
/// mid, all-ones, both signs.
fn edge_patterns() -> Vec<u32> {
    let mut v = Vec::new();
    for e in 0u32..=255 {
        for m in [0u32, 1, 2, 0x40_0000, 0x7F_FFFE, 0x7F_FFFF, 0x12_3457] {
            for s in [0u32, 0x8000_0000] {
                v.push(s | (e << 23) | m);
            }
        }
    }
    v
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn jit_exponent_add_is_bit_identical_to_the_runtime() {
    let j = JitRescale::new().unwrap();
    let mut ns: Vec<i32> = CHECKED_N.to_vec();
    ns.extend([5, 300, -300, 1000, -1000, i32::MIN, i32::MAX]);
    let edges = edge_patterns();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let random: Vec<u32> = (0..(1 << 21)).map(|_| xorshift(&mut seed) as u32).collect();
    for &n in &ns {
        // Odd lengths exercise the scalar tail.
        for data in [&edges, &random] {
            let mut got = data.clone();
            got.push(0x3F80_0001);
            got.push(0x8000_0000);
            got.push(0x0000_0001);
            j.apply(&mut got, n);
            let mut want: Vec<u32> = data.clone();
            want.extend([0x3F80_0001, 0x8000_0000, 0x0000_0001]);
            for (i, w) in want.iter_mut().enumerate() {
                let x = *w;
                *w = exp2_scale_bits(f32::from_bits(x), n).to_bits();
                assert_eq!(got[i], *w, "x = {x:#010x}, n = {n}");
            }
        }
    }
    // A contiguous range, through the checker used by the exhaustive run.
    for &n in &CHECKED_N {
        assert_eq!(j.check_range(0x7F00_0000, 1 << 20, n), (0, None));
        assert_eq!(j.check_range(0x0000_0000, 1 << 20, n), (0, None));
    }
}

fn ulp_err(got: f32, want: f64) -> f64 {
    if want.is_nan() {
        return if got.is_nan() { 0.0 } else { f64::INFINITY };
    }
    let w32 = want as f32;
    if w32.is_infinite() || got.is_infinite() {
        return if got == w32 { 0.0 } else { f64::INFINITY };
    }
    // One ulp of the f32 nearest to `want` (min subnormal spacing floor).
    let a = w32.abs();
    let ulp = if a < f32::MIN_POSITIVE {
        f64::from(f32::from_bits(1))
    } else {
        f64::from(f32::from_bits(a.to_bits() + 1) - a)
    };
    (f64::from(got) - want).abs() / ulp
}

/// Max ulp error of `op` over `xs`, against `f`.
fn max_ulp(op: UnaryOp, xs: &[f32], f: impl Fn(f64) -> f64) -> (f64, f32) {
    let j = JitUnary::new(op).unwrap();
    let got = j.apply(xs);
    let mut worst = (0.0, 0.0);
    for (&x, &g) in xs.iter().zip(&got) {
        let e = ulp_err(g, f(f64::from(x)));
        if e > worst.0 {
            worst = (e, x);
        }
    }
    worst
}

fn sweep(lo: f32, hi: f32, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| lo + (hi - lo) * (i as f32 / (n - 1) as f32))
        .collect()
}

#[test]
fn transcendentals_are_within_2_ulp() {
    let xs = sweep(-87.0, 88.0, 400_001);
    let (e, at) = max_ulp(UnaryOp::Exp, &xs, f64::exp);
    eprintln!("exp: max {e:.3} ulp at {at}");
    assert!(e <= 2.0, "exp: {e} ulp at {at}");
    let xs = sweep(-126.0, 127.9, 400_001);
    let (e, at) = max_ulp(UnaryOp::Exp2, &xs, f64::exp2);
    eprintln!("exp2: max {e:.3} ulp at {at}");
    assert!(e <= 2.0, "exp2: {e} ulp at {at}");
    // Logs over every binade incl. subnormals: random mantissas.
    let mut seed = 12345u64;
    let xs: Vec<f32> = (0..400_000)
        .map(|_| f32::from_bits((xorshift(&mut seed) as u32) & 0x7F7F_FFFF))
        .filter(|x| *x > 0.0)
        .collect();
    let (e, at) = max_ulp(UnaryOp::Log, &xs, f64::ln);
    eprintln!("log: max {e:.3} ulp at {at}");
    assert!(e <= 2.0, "log: {e} ulp at {at}");
    let (e, at) = max_ulp(UnaryOp::Log2, &xs, f64::log2);
    eprintln!("log2: max {e:.3} ulp at {at}");
    assert!(e <= 2.0, "log2: {e} ulp at {at}");
}

#[test]
fn transcendental_special_values() {
    let xs = [
        f32::NEG_INFINITY,
        f32::INFINITY,
        f32::NAN,
        0.0,
        -0.0,
        -200.0,
        200.0,
        -1.0,
    ];
    let exp = JitUnary::new(UnaryOp::Exp).unwrap().apply(&xs);
    assert_eq!(&exp[..2], &[0.0, f32::INFINITY]);
    assert!(exp[2].is_nan());
    assert_eq!(&exp[3..7], &[1.0, 1.0, 0.0, f32::INFINITY]);
    let exp2 = JitUnary::new(UnaryOp::Exp2).unwrap().apply(&xs);
    assert_eq!(&exp2[..2], &[0.0, f32::INFINITY]);
    assert!(exp2[2].is_nan());
    assert_eq!(&exp2[3..8], &[1.0, 1.0, 0.0, f32::INFINITY, 0.5]);
    let log = JitUnary::new(UnaryOp::Log).unwrap().apply(&xs);
    assert!(log[0].is_nan());
    assert_eq!(log[1], f32::INFINITY);
    assert!(log[2].is_nan());
    assert_eq!(&log[3..5], &[f32::NEG_INFINITY, f32::NEG_INFINITY]);
    assert!(log[7].is_nan());
    let e2 = JitUnary::new(UnaryOp::Exp2)
        .unwrap()
        .apply(&[-149.0, -150.5, -127.0]);
    assert_eq!(e2, vec![f32::from_bits(1), 0.0, 2f32.powi(-127)]);
}

/// `n == 0` rows are skipped: the zero step is the identity, subnormals
/// included, exactly as `exp2_scale_bits(x, 0)`, wherever the subnormal sits
/// and whatever the row's tail; a non-zero exponent still flushes them.
#[test]
fn exp2_scale_row_with_zero_exponent_is_the_identity() {
    use amla_runtime::rescale::exp2_scale_bits;
    let jit = super::rescale::JitRescale::new().unwrap();
    for len in [4usize, 8, 7, 13, 16, 20, 35, 64] {
        for (pos, data) in rows_with_one_subnormal(len) {
            for n in [0, -1] {
                let want: Vec<u32> = data
                    .iter()
                    .map(|&b| exp2_scale_bits(f32::from_bits(b), n).to_bits())
                    .collect();
                let mut got = data.clone();
                jit.apply(&mut got, n);
                assert_eq!(got, want, "n {n}, len {len}, subnormal at {pos:?}");
                assert_eq!(
                    n == 0,
                    got == data,
                    "n {n}, len {len}, subnormal at {pos:?}"
                );
            }
        }
    }
    // A non-zero exponent still scales.
    let mut d = vec![1.0f32.to_bits(); 8];
    jit.apply(&mut d, -1);
    assert!(d.iter().all(|&b| f32::from_bits(b) == 0.5));
}

/// Rows of `len` f32 bit patterns (normals, zeros, an infinity): one with no
/// subnormal, then one with a subnormal (positive or negative) at each
/// position, with that position.
fn rows_with_one_subnormal(len: usize) -> impl Iterator<Item = (Option<usize>, Vec<u32>)> {
    let normal = [1.5f32, -2.0, 0.0, -0.0, f32::INFINITY, 3.0e-38, -7.25, 1e30];
    std::iter::once(None)
        .chain((0..len).map(Some))
        .map(move |pos| {
            let mut data: Vec<u32> = (0..len).map(|i| normal[i % 8].to_bits()).collect();
            if let Some(p) = pos {
                data[p] = if p % 2 == 0 { 0x0000_0001 } else { 0x807F_FFFF };
            }
            (pos, data)
        })
}

/// The fractional add with a zero step (`x` in `[-2^-24, 2^-24]`: the
/// running max did not move) leaves a row as it is, subnormals included,
/// as `exp2_frac_bits(x, 0)` does; the smallest non-zero step flushes them,
/// and a larger one rewrites every value.
#[test]
fn exp2_frac_row_with_zero_step_is_the_identity() {
    use amla_runtime::rescale::{exp2_frac_bits, frac_delta};
    let jit = super::rescale::JitFracRescale::new().unwrap();
    let tiny = 1.0 / 8_388_608.0; // frac_delta 1
    for x in [0.0f32, -0.0, 1e-9, tiny, -tiny] {
        let d = frac_delta(x);
        for len in [4usize, 7, 16, 20, 35, 64] {
            for (pos, data) in rows_with_one_subnormal(len) {
                let want: Vec<u32> = data
                    .iter()
                    .map(|&b| exp2_frac_bits(f32::from_bits(b), d).to_bits())
                    .collect();
                let mut got = data.clone();
                jit.apply(&mut got, x);
                assert_eq!(got, want, "x {x}, len {len}, subnormal at {pos:?}");
                assert_eq!(
                    d == 0,
                    got == data,
                    "x {x}, len {len}, subnormal at {pos:?}"
                );
            }
        }
    }
    for x in [-1.0f32, 0.25] {
        let mut d: Vec<u32> = (0..20).map(|i| (1.0f32 + i as f32).to_bits()).collect();
        let want: Vec<u32> = d
            .iter()
            .map(|&b| exp2_frac_bits(f32::from_bits(b), frac_delta(x)).to_bits())
            .collect();
        jit.apply(&mut d, x);
        assert_eq!(d, want, "x {x}");
        assert_ne!(d[0], 1.0f32.to_bits());
    }
}

/// [`super::translate_and_compile`] (the Vector function translated first
/// and compiled on a thread of its own while the Cube is translated and
/// compiled) gives each function the machine code and relocations it gets
/// translated in function order and compiled alone on this thread with its
/// unit's ISA, and the kernel has both functions to overlap.
#[test]
fn concurrent_jit_emits_what_one_function_at_a_time_emits() {
    use super::{
        CodegenOptions, Isas, Text, declare_all, new_module, translate_and_compile, translate_one,
    };
    use cranelift_frontend::FunctionBuilderContext;
    let src = crate::diag::SourceFile::new(
        "mla_decode.amla",
        include_str!("../../../dsl-examples/mla_decode.amla"),
    );
    let opts = crate::driver::CompileOptions::new().unwrap();
    let k = crate::driver::compile(&src, &opts).unwrap().ir;
    let code = |p: &super::Pending| {
        let c = p.ctx.compiled_code().expect("compiled");
        let relocs: Vec<String> = c.buffer.relocs().iter().map(|r| format!("{r:?}")).collect();
        (c.code_buffer().to_vec(), relocs)
    };
    let opts = CodegenOptions::default();
    let isas = Isas::host().unwrap();
    let mut module = new_module(isas.vector.clone());
    let together = translate_and_compile(&k, &mut module, &isas, &opts, Text::None).unwrap();
    assert_eq!(together.len(), 2, "a cube and a vector function");
    let units: Vec<_> = together.iter().map(|p| p.unit).collect();
    let want: Vec<_> = k.funcs.iter().map(|f| f.unit).collect();
    assert_eq!(units, want, "function order");
    let mut alone_module = new_module(isas.vector.clone());
    let d = declare_all(&k, &mut alone_module, &opts).unwrap();
    let mut fctx = FunctionBuilderContext::new();
    for (n, t) in together.iter().enumerate() {
        let mut a =
            translate_one(&k, n, &d, &mut alone_module, &opts, Text::None, &mut fctx).unwrap();
        a.compile(isas.of(a.unit)).unwrap();
        assert_eq!(code(t), code(&a), "{}", t.name);
    }
    // SAFETY: nothing was defined or handed out.
    unsafe {
        module.free_memory();
        alone_module.free_memory();
    }
}

/// The runtime's `exp` routine (`amla_runtime::vexp`, which fused loops
/// call on a row's `exp` inputs) gives the JIT's `exp_f32x4` bits on every
/// supported path, on the sampled inputs (specials, thresholds ±2 ulp,
/// around every `k·ln2/2`, random patterns and values) and every edge
/// pattern. All 2^32 inputs: the `jit_exp_exhaustive` example.
#[test]
fn runtime_exp_is_bit_identical_to_the_jit() {
    use amla_runtime::vexp::{available_paths, exp_in_place_with, sample_inputs};
    let mut xs = sample_inputs(200_000);
    xs.extend(edge_patterns().into_iter().map(f32::from_bits));
    let want = JitUnary::new(UnaryOp::Exp).unwrap().apply(&xs);
    for p in available_paths() {
        let mut got = xs.clone();
        exp_in_place_with(p, &mut got);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "{}: exp({:#010x})",
                p.name(),
                xs[i].to_bits()
            );
        }
    }
}
