//! SIMD building blocks emitted as CLIF on 128-bit vectors: element loads
//! and stores per dtype (4 lanes or one splatted lane), bf16 rounding,
//! `exp`/`exp2`/`log`/`log2` polynomials, the AMLA exponent add, and byte
//! fills/copies.
//!
//! Lane types: f32 and bf16 elements compute as `f32x4`; i32 and bool as
//! `i32x4` (a bool lane is an all-ones or all-zeros mask; in memory a bool is
//! one byte, `0x00` or `0xFF`). bf16 values are rounded to nearest even
//! when stored (NaN stays a quiet NaN with the top payload bits), exactly as
//! `half::bf16::from_f32` and the runtime's FixPipe do.
//!
//! # Transcendentals
//!
//! Polynomial approximations with Cody–Waite range reduction (Cephes
//! constants), evaluated without FMA so every target gives the same bits:
//!
//! | function | method | max error vs f64 over the test sweeps (`codegen::tests`) |
//! | --- | --- | --- |
//! | `exp` | `n = round(x·log2 e)`, `r = x − n·ln2` (two-part), degree-6 poly, `·2^n` in two steps | 0.97 ulp (bound tested: 2) |
//! | `exp2` | `n = round(x)`, `r = (x − n)·ln2`, same poly | 0.97 ulp (bound tested: 2) |
//! | `log` | mantissa in `[√½, √2)`, degree-9 poly | 0.77 ulp (bound tested: 2) |
//! | `log2` | as `log`, combined in base 2 (Cephes `log2f`) | 1.26 ulp (bound tested: 2) |
//!
//! Results below the smallest subnormal are 0; subnormal results are
//! rounded by the hardware multiply. `exp(-inf) = 0`, `exp(+inf) = inf`,
//! `log(0) = -inf`, `log(x<0) = NaN`, NaN in → NaN out.
//!
//! # The AMLA exponent add
//!
//! [`exp2_scale_i32x4`] is `amla_runtime::rescale::exp2_scale_bits` lane by
//! lane in integer SIMD for `n ≠ 0`: `bits + (n << 23)` with the guards
//! (exponent 255 kept, zero/subnormal input or underflow → signed zero,
//! overflow → signed inf). No float operation is involved. A zero step is the
//! identity: the row emitters skip such a row without reading it.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{self as cl, InstBuilder, MemFlagsData, types};
use cranelift_frontend::FunctionBuilder;

use crate::ir::{DType, UnaryOp};

fn mf() -> MemFlagsData {
    MemFlagsData::new()
}

fn le() -> MemFlagsData {
    MemFlagsData::new().with_endianness(cl::Endianness::Little)
}

/// `splat(f32 c)`.
pub fn fsplat(b: &mut FunctionBuilder, c: f32) -> cl::Value {
    let s = b.ins().f32const(c);
    b.ins().splat(types::F32X4, s)
}

/// `splat(i32 c)`.
pub fn isplat(b: &mut FunctionBuilder, c: i64) -> cl::Value {
    let s = b.ins().iconst(types::I32, c);
    b.ins().splat(types::I32X4, s)
}

fn bc(b: &mut FunctionBuilder, ty: cl::Type, v: cl::Value) -> cl::Value {
    if b.func.dfg.value_type(v) == ty {
        v
    } else {
        b.ins().bitcast(ty, le(), v)
    }
}

/// The vector type an element type computes in, if any.
pub fn lane_type(d: DType) -> Option<cl::Type> {
    match d {
        DType::F32 | DType::Bf16 => Some(types::F32X4),
        DType::I32 | DType::Bool => Some(types::I32X4),
        DType::F16 => None,
    }
}

/// The i32x4 `[0, 1, 2, 3]` (one constant-pool load).
pub fn lane_index(b: &mut FunctionBuilder) -> cl::Value {
    let bytes: Vec<u8> = (0..4i32).flat_map(|l| l.to_le_bytes()).collect();
    let c = b.func.dfg.constants.insert(cl::ConstantData::from(bytes));
    b.ins().vconst(types::I32X4, c)
}

/// One step of a lane-wise running maximum: `(acc, nan)` → the maximum of
/// `acc` and `v` and the lanes where some `v` so far was NaN (an i32x4
/// mask). Two `maxps` and an `and` on the loop-carried chain instead of
/// Cranelift's NaN- and zero-exact `fmax` sequence: for non-NaN lanes
/// `maxps(a, b) & maxps(b, a)` is IEEE `maximum` (equal values give the
/// same bits, and `+0 & -0` is `+0`), so the result is that of any order of
/// `fmax`; a NaN lane's junk is replaced by [`running_max_finish`].
pub fn running_max_step(
    b: &mut FunctionBuilder,
    acc: cl::Value,
    nan: cl::Value,
    v: cl::Value,
) -> (cl::Value, cl::Value) {
    let pmax = |b: &mut FunctionBuilder, x: cl::Value, y: cl::Value| {
        // `y < x ? x : y` lane-wise: x86 `maxps x, y`.
        let lt = b.ins().fcmp(FloatCC::LessThan, y, x);
        let m = bc(b, types::F32X4, lt);
        b.ins().bitselect(m, x, y)
    };
    let m1 = pmax(b, acc, v);
    let m2 = pmax(b, v, acc);
    let acc = b.ins().band(m1, m2);
    let uno = b.ins().fcmp(FloatCC::Unordered, v, v);
    let nan = b.ins().bor(nan, uno);
    (acc, nan)
}

/// The initial NaN mask of [`running_max_step`] (no NaN seen).
pub fn running_max_no_nan(b: &mut FunctionBuilder) -> cl::Value {
    isplat(b, 0)
}

/// The running maximum's lanes, a NaN lane as the canonical quiet NaN.
pub fn running_max_finish(b: &mut FunctionBuilder, acc: cl::Value, nan: cl::Value) -> cl::Value {
    let q = fsplat(b, f32::from_bits(0x7FC0_0000));
    let m = bc(b, types::F32X4, nan);
    b.ins().bitselect(m, q, acc)
}

/// f32x4 → bf16 bit patterns (round to nearest even; NaN → quiet NaN), one
/// per i32 lane in `0..=0xFFFF`.
pub fn f32x4_to_bf16_bits(b: &mut FunctionBuilder, v: cl::Value) -> cl::Value {
    let bits = bc(b, types::I32X4, v);
    let hi = b.ins().ushr_imm_u(bits, 16);
    let one = isplat(b, 1);
    let lsb = b.ins().band(hi, one);
    let bias = isplat(b, 0x7FFF);
    let bias = b.ins().iadd(bias, lsb);
    let r = b.ins().iadd(bits, bias);
    let h = b.ins().ushr_imm_u(r, 16);
    let q = isplat(b, 0x40);
    let qn = b.ins().bor(hi, q);
    let nan = b.ins().fcmp(FloatCC::Unordered, v, v);
    b.ins().bitselect(nan, qn, h)
}

/// bf16 bit patterns (one per i32 lane) → f32x4.
pub fn bf16_bits_to_f32x4(b: &mut FunctionBuilder, h: cl::Value) -> cl::Value {
    let w = b.ins().ishl_imm_u(h, 16);
    bc(b, types::F32X4, w)
}

/// Loads 4 elements of `d` at `p` into its lane type.
pub fn load4(b: &mut FunctionBuilder, p: cl::Value, d: DType) -> Option<cl::Value> {
    Some(match d {
        DType::F32 => b.ins().load(types::F32X4, mf(), p, 0),
        DType::I32 => b.ins().load(types::I32X4, mf(), p, 0),
        DType::Bf16 => {
            let h = b.ins().uload16x4(mf(), p, 0);
            bf16_bits_to_f32x4(b, h)
        }
        DType::Bool => {
            let w = b.ins().load(types::I32, mf(), p, 0);
            let v = b.ins().scalar_to_vector(types::I32X4, w);
            let v = bc(b, types::I8X16, v);
            let v = b.ins().swiden_low(v);
            b.ins().swiden_low(v)
        }
        DType::F16 => return None,
    })
}

/// Loads one element of `d` at `p`, splatted to all lanes.
pub fn load1(b: &mut FunctionBuilder, p: cl::Value, d: DType) -> Option<cl::Value> {
    Some(match d {
        DType::F32 => {
            let x = b.ins().load(types::F32, mf(), p, 0);
            b.ins().splat(types::F32X4, x)
        }
        DType::I32 => {
            let x = b.ins().load(types::I32, mf(), p, 0);
            b.ins().splat(types::I32X4, x)
        }
        DType::Bf16 => {
            let x = b.ins().uload16(types::I32, mf(), p, 0);
            let v = b.ins().splat(types::I32X4, x);
            bf16_bits_to_f32x4(b, v)
        }
        DType::Bool => {
            let x = b.ins().sload8(types::I32, mf(), p, 0);
            b.ins().splat(types::I32X4, x)
        }
        DType::F16 => return None,
    })
}

/// A scalar of `d` at `p` in its register type (f32, i32, i8 0/1).
pub fn load_scalar(b: &mut FunctionBuilder, p: cl::Value, d: DType) -> Option<cl::Value> {
    let v = load1(b, p, d)?;
    let x = b.ins().extractlane(v, 0);
    Some(if d == DType::Bool {
        b.ins().icmp_imm_s(IntCC::NotEqual, x, 0)
    } else {
        x
    })
}

/// Stores the 4 lanes of `v` as elements of `d` at `p`.
pub fn store4(b: &mut FunctionBuilder, p: cl::Value, d: DType, v: cl::Value) -> Option<()> {
    match d {
        DType::F32 => {
            let v = bc(b, types::F32X4, v);
            b.ins().store(mf(), v, p, 0);
        }
        DType::I32 => {
            let v = bc(b, types::I32X4, v);
            b.ins().store(mf(), v, p, 0);
        }
        DType::Bf16 => {
            let h = f32x4_to_bf16_bits(b, v);
            store_bf16_bits(b, p, h, true);
        }
        DType::Bool => {
            let m = bc(b, types::I32X4, v);
            let h = b.ins().snarrow(m, m);
            let y = b.ins().snarrow(h, h);
            let w = bc(b, types::I32X4, y);
            let x = b.ins().extractlane(w, 0);
            b.ins().store(mf(), x, p, 0);
        }
        DType::F16 => return None,
    }
    Some(())
}

/// Stores bf16 bit patterns (one per i32 lane, as [`f32x4_to_bf16_bits`]
/// gives them): all 4 lanes when `wide`, else lane 0.
pub fn store_bf16_bits(b: &mut FunctionBuilder, p: cl::Value, h: cl::Value, wide: bool) {
    if wide {
        let n = b.ins().unarrow(h, h);
        let q = bc(b, types::I64X2, n);
        let x = b.ins().extractlane(q, 0);
        b.ins().store(mf(), x, p, 0);
    } else {
        let x = b.ins().extractlane(h, 0);
        b.ins().istore16(mf(), x, p, 0);
    }
}

/// Stores lane 0 of `v` as one element of `d` at `p`.
pub fn store1(b: &mut FunctionBuilder, p: cl::Value, d: DType, v: cl::Value) -> Option<()> {
    match d {
        DType::F32 => {
            let v = bc(b, types::F32X4, v);
            let x = b.ins().extractlane(v, 0);
            b.ins().store(mf(), x, p, 0);
        }
        DType::I32 => {
            let v = bc(b, types::I32X4, v);
            let x = b.ins().extractlane(v, 0);
            b.ins().store(mf(), x, p, 0);
        }
        DType::Bf16 => {
            let h = f32x4_to_bf16_bits(b, v);
            store_bf16_bits(b, p, h, false);
        }
        DType::Bool => {
            let v = bc(b, types::I32X4, v);
            let x = b.ins().extractlane(v, 0);
            b.ins().istore8(mf(), x, p, 0);
        }
        DType::F16 => return None,
    }
    Some(())
}

/// `for i in start..end` (i64 values), body emitted by `f`.
pub fn range_loop(
    b: &mut FunctionBuilder,
    start: cl::Value,
    end: cl::Value,
    f: &mut dyn FnMut(&mut FunctionBuilder, cl::Value),
) {
    let header = b.create_block();
    let body = b.create_block();
    let exit = b.create_block();
    b.append_block_param(header, types::I64);
    b.ins().jump(header, &[start.into()]);
    b.switch_to_block(header);
    let i = b.block_params(header)[0];
    let c = b.ins().icmp(IntCC::SignedLessThan, i, end);
    b.ins().brif(c, body, &[], exit, &[]);
    b.switch_to_block(body);
    b.seal_block(body);
    f(b, i);
    let i2 = b.ins().iadd_imm_s(i, 1);
    b.ins().jump(header, &[i2.into()]);
    b.seal_block(header);
    b.switch_to_block(exit);
    b.seal_block(exit);
}

/// Writes `bytes` zero bytes at `p` (16 at a time, then single bytes).
pub fn emit_zero_fill(b: &mut FunctionBuilder, p: cl::Value, bytes: u64) {
    let z = isplat(b, 0);
    let n16 = (bytes / 16) as i64;
    if n16 > 0 {
        let s = b.ins().iconst(types::I64, 0);
        let e = b.ins().iconst(types::I64, n16);
        range_loop(b, s, e, &mut |b, i| {
            let o = b.ins().imul_imm_s(i, 16);
            let a = b.ins().iadd(p, o);
            b.ins().store(mf(), z, a, 0);
        });
    }
    let zb = b.ins().iconst(types::I8, 0);
    for t in (n16 as u64 * 16)..bytes {
        b.ins().store(mf(), zb, p, t as i32);
    }
}

/// Copies `bytes` bytes from `src` to `dst` (non-overlapping).
pub fn emit_memcpy(b: &mut FunctionBuilder, dst: cl::Value, src: cl::Value, bytes: u64) {
    let n16 = (bytes / 16) as i64;
    if n16 > 0 {
        let s = b.ins().iconst(types::I64, 0);
        let e = b.ins().iconst(types::I64, n16);
        range_loop(b, s, e, &mut |b, i| {
            let o = b.ins().imul_imm_s(i, 16);
            let sa = b.ins().iadd(src, o);
            let da = b.ins().iadd(dst, o);
            let v = b.ins().load(types::I8X16, mf(), sa, 0);
            b.ins().store(mf(), v, da, 0);
        });
    }
    for t in (n16 as u64 * 16)..bytes {
        let v = b.ins().load(types::I8, mf(), src, t as i32);
        b.ins().store(mf(), v, dst, t as i32);
    }
}

/// Copies `bytes` (an i64 value) bytes from `src` to `dst`
/// (non-overlapping): 64 at a time, then 16, then single bytes.
pub fn emit_memcpy_dyn(b: &mut FunctionBuilder, dst: cl::Value, src: cl::Value, bytes: cl::Value) {
    let n64 = b.ins().sshr_imm_u(bytes, 6);
    let zero = b.ins().iconst(types::I64, 0);
    range_loop(b, zero, n64, &mut |b, i| {
        let o = b.ins().ishl_imm_u(i, 6);
        let sa = b.ins().iadd(src, o);
        let da = b.ins().iadd(dst, o);
        let v: Vec<cl::Value> = (0..4)
            .map(|k| b.ins().load(types::I8X16, mf(), sa, 16 * k))
            .collect();
        for (k, v) in v.into_iter().enumerate() {
            b.ins().store(mf(), v, da, 16 * k as i32);
        }
    });
    let n16 = b.ins().sshr_imm_u(bytes, 4);
    let start16 = b.ins().ishl_imm_u(n64, 2);
    range_loop(b, start16, n16, &mut |b, i| {
        let o = b.ins().ishl_imm_u(i, 4);
        let sa = b.ins().iadd(src, o);
        let da = b.ins().iadd(dst, o);
        let v = b.ins().load(types::I8X16, mf(), sa, 0);
        b.ins().store(mf(), v, da, 0);
    });
    let start = b.ins().ishl_imm_u(n16, 4);
    range_loop(b, start, bytes, &mut |b, i| {
        let sa = b.ins().iadd(src, i);
        let da = b.ins().iadd(dst, i);
        let v = b.ins().load(types::I8, mf(), sa, 0);
        b.ins().store(mf(), v, da, 0);
    });
}

/// Guarded `a / b` or `a % b` on i32 scalars: a zero divisor gives 0,
/// `i32::MIN / -1` wraps, never traps.
pub fn int_divrem(b: &mut FunctionBuilder, div: bool, x: cl::Value, y: cl::Value) -> cl::Value {
    let zero = b.ins().iconst(types::I32, 0);
    let one = b.ins().iconst(types::I32, 1);
    let is0 = b.ins().icmp_imm_s(IntCC::Equal, y, 0);
    let ism1 = b.ins().icmp_imm_s(IntCC::Equal, y, -1);
    let bad = b.ins().bor(is0, ism1);
    let safe = b.ins().select(bad, one, y);
    if div {
        let q = b.ins().sdiv(x, safe);
        let neg = b.ins().ineg(x);
        let q = b.ins().select(ism1, neg, q);
        b.ins().select(is0, zero, q)
    } else {
        let r = b.ins().srem(x, safe);
        b.ins().select(bad, zero, r)
    }
}

/// [`int_divrem`] lane by lane on i32x4.
pub fn int_divrem_x4(b: &mut FunctionBuilder, div: bool, x: cl::Value, y: cl::Value) -> cl::Value {
    let mut out = x;
    for l in 0..4u8 {
        let a = b.ins().extractlane(x, l);
        let c = b.ins().extractlane(y, l);
        let r = int_divrem(b, div, a, c);
        out = b.ins().insertlane(out, r, l);
    }
    out
}

/// `2^n` as f32x4 for integer lanes `n` in `[-126, 127]`.
fn pow2i(b: &mut FunctionBuilder, n: cl::Value) -> cl::Value {
    let bias = isplat(b, 127);
    let e = b.ins().iadd(n, bias);
    let e = b.ins().ishl_imm_u(e, 23);
    bc(b, types::F32X4, e)
}

/// `y · 2^n` for i32x4 `n` in `[-152, 128]`, in two exact-range steps.
fn scale2(b: &mut FunctionBuilder, y: cl::Value, n: cl::Value) -> cl::Value {
    let n1 = b.ins().sshr_imm_u(n, 1);
    let n2 = b.ins().isub(n, n1);
    let s1 = pow2i(b, n1);
    let s2 = pow2i(b, n2);
    let y = b.ins().fmul(y, s1);
    b.ins().fmul(y, s2)
}

/// Horner evaluation `((c0·x + c1)·x + …)`.
fn horner(b: &mut FunctionBuilder, x: cl::Value, cs: &[f32]) -> cl::Value {
    let mut p = fsplat(b, cs[0]);
    for &c in &cs[1..] {
        let t = b.ins().fmul(p, x);
        let c = fsplat(b, c);
        p = b.ins().fadd(t, c);
    }
    p
}

/// `e^r` for `|r| <= ln2/2` (Cephes `expf` polynomial).
fn exp_poly(b: &mut FunctionBuilder, r: cl::Value) -> cl::Value {
    let p = horner(
        b,
        r,
        &[
            1.987_569_1e-4,
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            0.5,
        ],
    );
    let rr = b.ins().fmul(r, r);
    let t = b.ins().fmul(p, rr);
    let t = b.ins().fadd(t, r);
    let one = fsplat(b, 1.0);
    b.ins().fadd(t, one)
}

/// Keeps NaN lanes of `x` in `y`.
fn keep_nan(b: &mut FunctionBuilder, x: cl::Value, y: cl::Value) -> cl::Value {
    let nan = b.ins().fcmp(FloatCC::Unordered, x, x);
    let nan = bc(b, types::F32X4, nan);
    b.ins().bitselect(nan, x, y)
}

/// `e^x` on f32x4.
pub fn exp_f32x4(b: &mut FunctionBuilder, x: cl::Value) -> cl::Value {
    // Only the lower clamp matters: above 88.72… the result is replaced by
    // inf below (NaN lanes by `x`), whatever the polynomial gave.
    let xc = clamp_below(b, x, -104.0);
    let l2e = fsplat(b, std::f32::consts::LOG2_E);
    let t = b.ins().fmul(xc, l2e);
    let (nf, n) = round_to_int(b, t);
    let c1 = fsplat(b, 0.693_359_4);
    let c2 = fsplat(b, -2.121_944_4e-4);
    let t1 = b.ins().fmul(nf, c1);
    let r = b.ins().fsub(xc, t1);
    let t2 = b.ins().fmul(nf, c2);
    let r = b.ins().fsub(r, t2);
    let y = exp_poly(b, r);
    let y = scale2(b, y, n);
    let big = fsplat(b, 88.722_84);
    let over = b.ins().fcmp(FloatCC::GreaterThan, x, big);
    let over = bc(b, types::F32X4, over);
    let inf = fsplat(b, f32::INFINITY);
    let y = b.ins().bitselect(over, inf, y);
    keep_nan(b, x, y)
}

/// `2^x` on f32x4.
pub fn exp2_f32x4(b: &mut FunctionBuilder, x: cl::Value) -> cl::Value {
    // As in `exp_f32x4`: lanes from 128 up become inf, NaN lanes `x`.
    let xc = clamp_below(b, x, -151.0);
    let (nf, n) = round_to_int(b, xc);
    let f = b.ins().fsub(xc, nf);
    let ln2 = fsplat(b, std::f32::consts::LN_2);
    let r = b.ins().fmul(f, ln2);
    let y = exp_poly(b, r);
    let y = scale2(b, y, n);
    let big = fsplat(b, 128.0);
    let over = b.ins().fcmp(FloatCC::GreaterThanOrEqual, x, big);
    let over = bc(b, types::F32X4, over);
    let inf = fsplat(b, f32::INFINITY);
    let y = b.ins().bitselect(over, inf, y);
    keep_nan(b, x, y)
}

/// `max(x, lo)` for the non-NaN lanes of `x` (a compare and a blend; NaN
/// lanes stay NaN, which the callers replace by `x` at the end). Cranelift's
/// `fmax` is ~8 instructions on x86 (it orders ±0 and canonicalises NaN).
fn clamp_below(b: &mut FunctionBuilder, x: cl::Value, lo: f32) -> cl::Value {
    let lo = fsplat(b, lo);
    let below = b.ins().fcmp(FloatCC::LessThan, x, lo);
    let below = bc(b, types::F32X4, below);
    b.ins().bitselect(below, lo, x)
}

/// `(nearest(t), nearest(t) as i32)` for lanes with `|t| <= 2^22` (other
/// lanes: garbage, no trap) by the 1.5·2^23 shifter: `t + 1.5·2^23` rounds
/// `t` to an integer, nearest even, as `nearest` does; that integer is then
/// the low bits of the sum. Three instructions instead of a `roundps` and
/// Cranelift's saturating conversion (seven).
fn round_to_int(b: &mut FunctionBuilder, t: cl::Value) -> (cl::Value, cl::Value) {
    const SHIFTER: f32 = 12_582_912.0; // 1.5 * 2^23
    let k = fsplat(b, SHIFTER);
    let s = b.ins().fadd(t, k);
    let nf = b.ins().fsub(s, k);
    let bits = bc(b, types::I32X4, s);
    let kb = isplat(b, SHIFTER.to_bits() as i64);
    (nf, b.ins().isub(bits, kb))
}

/// Shared part of `log`/`log2`: returns `(m, y, e)` with `x = 2^e · (1+m)`,
/// `m` in `[√½−1, √2−1)`, `y` the polynomial part (without `e` terms).
fn log_core(b: &mut FunctionBuilder, x: cl::Value) -> (cl::Value, cl::Value, cl::Value) {
    // Subnormals: scale by 2^23 first.
    let tiny = fsplat(b, f32::MIN_POSITIVE);
    let is_sub = b.ins().fcmp(FloatCC::LessThan, x, tiny);
    let k23 = fsplat(b, 8_388_608.0);
    let xs = b.ins().fmul(x, k23);
    let is_sub_f = bc(b, types::F32X4, is_sub);
    let x = b.ins().bitselect(is_sub_f, xs, x);
    let adj = isplat(b, 23);
    let zero = isplat(b, 0);
    let adj = b.ins().bitselect(is_sub, adj, zero);
    let bits = bc(b, types::I32X4, x);
    let e = b.ins().ushr_imm_u(bits, 23);
    let ff = isplat(b, 0xFF);
    let e = b.ins().band(e, ff);
    let k126 = isplat(b, 126);
    let e = b.ins().isub(e, k126);
    let e = b.ins().isub(e, adj);
    let mm = isplat(b, 0x007F_FFFF);
    let m = b.ins().band(bits, mm);
    let half = isplat(b, 0x3F00_0000);
    let m = b.ins().bor(m, half);
    let m = bc(b, types::F32X4, m);
    // m in [0.5, 1): if m < sqrt(1/2) { e -= 1; m = 2m - 1 } else { m = m - 1 }
    let sqrthf = fsplat(b, std::f32::consts::FRAC_1_SQRT_2);
    let small = b.ins().fcmp(FloatCC::LessThan, m, sqrthf);
    let one = fsplat(b, 1.0);
    let m2 = b.ins().fadd(m, m);
    let m2 = b.ins().fsub(m2, one);
    let m1 = b.ins().fsub(m, one);
    let small_f = bc(b, types::F32X4, small);
    let m = b.ins().bitselect(small_f, m2, m1);
    let e = b.ins().iadd(e, small); // small is all-ones (-1) where true
    let z = b.ins().fmul(m, m);
    let p = horner(
        b,
        m,
        &[
            7.037_683_6e-2,
            -1.151_461e-1,
            1.167_699_9e-1,
            -1.242_014_1e-1,
            1.424_932_3e-1,
            -1.666_805_8e-1,
            2.000_071_4e-1,
            -2.499_999_4e-1,
            3.333_333e-1,
        ],
    );
    let p = b.ins().fmul(p, m);
    let y = b.ins().fmul(p, z);
    let mhalf = fsplat(b, -0.5);
    let hz = b.ins().fmul(z, mhalf);
    let y = b.ins().fadd(y, hz);
    let ef = b.ins().fcvt_from_sint(types::F32X4, e);
    (m, y, ef)
}

/// Special cases of logs: x < 0 or NaN → NaN, 0 → -inf, +inf → +inf.
fn log_specials(b: &mut FunctionBuilder, x: cl::Value, r: cl::Value) -> cl::Value {
    let zero = fsplat(b, 0.0);
    let inf = fsplat(b, f32::INFINITY);
    let ninf = fsplat(b, f32::NEG_INFINITY);
    let nan = fsplat(b, f32::NAN);
    let is_inf = b.ins().fcmp(FloatCC::Equal, x, inf);
    let is_inf = bc(b, types::F32X4, is_inf);
    let r = b.ins().bitselect(is_inf, inf, r);
    let is_zero = b.ins().fcmp(FloatCC::Equal, x, zero);
    let is_zero = bc(b, types::F32X4, is_zero);
    let r = b.ins().bitselect(is_zero, ninf, r);
    let neg = b.ins().fcmp(FloatCC::LessThan, x, zero);
    let neg = bc(b, types::F32X4, neg);
    let r = b.ins().bitselect(neg, nan, r);
    keep_nan(b, x, r)
}

/// Natural log on f32x4.
pub fn log_f32x4(b: &mut FunctionBuilder, x: cl::Value) -> cl::Value {
    let (m, y, ef) = log_core(b, x);
    let c2 = fsplat(b, -2.121_944_4e-4);
    let t = b.ins().fmul(ef, c2);
    let y = b.ins().fadd(y, t);
    let r = b.ins().fadd(m, y);
    let c1 = fsplat(b, 0.693_359_4);
    let t = b.ins().fmul(ef, c1);
    let r = b.ins().fadd(r, t);
    log_specials(b, x, r)
}

/// Base-2 log on f32x4.
pub fn log2_f32x4(b: &mut FunctionBuilder, x: cl::Value) -> cl::Value {
    let (m, y, ef) = log_core(b, x);
    let a = fsplat(b, 0.442_695_04);
    let z = b.ins().fmul(y, a);
    let t = b.ins().fmul(m, a);
    let z = b.ins().fadd(z, t);
    let z = b.ins().fadd(z, y);
    let z = b.ins().fadd(z, m);
    let r = b.ins().fadd(z, ef);
    log_specials(b, x, r)
}

/// A float unary op on f32x4 (`None` for `not`).
pub fn unary_f32x4(b: &mut FunctionBuilder, op: UnaryOp, x: cl::Value) -> Option<cl::Value> {
    Some(match op {
        UnaryOp::Neg => b.ins().fneg(x),
        UnaryOp::Abs => b.ins().fabs(x),
        UnaryOp::Sqrt => b.ins().sqrt(x),
        UnaryOp::Ceil => b.ins().ceil(x),
        UnaryOp::Floor => b.ins().floor(x),
        UnaryOp::Round => b.ins().nearest(x),
        UnaryOp::Exp => exp_f32x4(b, x),
        UnaryOp::Exp2 => exp2_f32x4(b, x),
        UnaryOp::Log => log_f32x4(b, x),
        UnaryOp::Log2 => log2_f32x4(b, x),
        UnaryOp::Not => return None,
    })
}

/// AMLA's `x · 2^n` on the bits of 4 f32 lanes: `bits` and `n` are i32x4,
/// `n` already clamped to `[-512, 512]` and non-zero. Bit-identical to
/// `amla_runtime::rescale::exp2_scale_bits` lane by lane for such `n` (a
/// zero `n` would flush subnormals, which `exp2_scale_bits` does not: the
/// row emitters skip zero steps); integer ops only.
pub fn exp2_scale_i32x4(b: &mut FunctionBuilder, bits: cl::Value, n: cl::Value) -> cl::Value {
    let e = b.ins().ushr_imm_u(bits, 23);
    let ff = isplat(b, 0xFF);
    let e = b.ins().band(e, ff);
    let sign_m = isplat(b, 0x8000_0000u32 as i32 as i64);
    let sign = b.ins().band(bits, sign_m);
    let ne = b.ins().iadd(e, n);
    let sh = b.ins().ishl_imm_u(n, 23);
    let scaled = b.ins().iadd(bits, sh);
    let is_special = b.ins().icmp(IntCC::Equal, e, ff);
    let zero = isplat(b, 0);
    let e0 = b.ins().icmp(IntCC::Equal, e, zero);
    let under = b.ins().icmp(IntCC::SignedLessThanOrEqual, ne, zero);
    let is_zero = b.ins().bor(e0, under);
    let over = b.ins().icmp(IntCC::SignedGreaterThanOrEqual, ne, ff);
    let expm = isplat(b, 0x7F80_0000);
    let inf = b.ins().bor(sign, expm);
    let out = b.ins().bitselect(over, inf, scaled);
    let out = b.ins().bitselect(is_zero, sign, out);
    b.ins().bitselect(is_special, bits, out)
}

/// The fractional exponent add on 4 lanes of f32 bits: `delta` (i32x4, in
/// `[-255·2^23, 2^23]`, non-zero: see [`exp2_scale_i32x4`]) added to each
/// magnitude, with the guards of `amla_runtime::rescale::exp2_frac_bits`.
pub fn exp2_frac_i32x4(b: &mut FunctionBuilder, bits: cl::Value, delta: cl::Value) -> cl::Value {
    let sign_m = isplat(b, 0x8000_0000u32 as i32 as i64);
    let sign = b.ins().band(bits, sign_m);
    let mag_m = isplat(b, 0x7FFF_FFFF);
    let mag = b.ins().band(bits, mag_m);
    let e = b.ins().ushr_imm_u(mag, 23);
    let m = b.ins().iadd(mag, delta);
    let ff = isplat(b, 0xFF);
    let is_special = b.ins().icmp(IntCC::Equal, e, ff);
    let zero = isplat(b, 0);
    let e0 = b.ins().icmp(IntCC::Equal, e, zero);
    let min_normal = isplat(b, 0x0080_0000);
    let under = b.ins().icmp(IntCC::SignedLessThan, m, min_normal);
    let is_zero = b.ins().bor(e0, under);
    let expm = isplat(b, 0x7F80_0000);
    let over = b.ins().icmp(IntCC::SignedGreaterThanOrEqual, m, expm);
    let inf = b.ins().bor(sign, expm);
    let scaled = b.ins().bor(sign, m);
    let out = b.ins().bitselect(over, inf, scaled);
    let out = b.ins().bitselect(is_zero, sign, out);
    b.ins().bitselect(is_special, bits, out)
}

/// `amla_runtime::rescale::frac_delta` of an f32 scalar: NaN as 0, clamped
/// to `[-255, 1]`, times 2^23, rounded to nearest even, as i32.
pub fn emit_frac_delta(b: &mut FunctionBuilder, x: cl::Value) -> cl::Value {
    let z = b.ins().f32const(0.0);
    let nan = b.ins().fcmp(FloatCC::Unordered, x, x);
    let x = b.ins().select(nan, z, x);
    let lo = b.ins().f32const(amla_runtime::rescale::FRAC_STEP_RANGE.0);
    let hi = b.ins().f32const(amla_runtime::rescale::FRAC_STEP_RANGE.1);
    let x = b.ins().fmax(x, lo);
    let x = b.ins().fmin(x, hi);
    let s = b.ins().f32const(8_388_608.0);
    let y = b.ins().fmul(x, s);
    let y = b.ins().nearest(y);
    b.ins().fcvt_to_sint_sat(types::I32, y)
}

/// Rewrites `len` (i64) 32-bit values at `p` in place with the lane-wise
/// `op`: 4 lanes at a time, then the tail one value at a time (splatted, lane
/// 0 kept).
fn emit_row_map_i32x4(
    b: &mut FunctionBuilder,
    p: cl::Value,
    len: cl::Value,
    op: &mut dyn FnMut(&mut FunctionBuilder, cl::Value) -> cl::Value,
) {
    // Four 4-lane steps an iteration (one address computation and one loop
    // test for 16 values), then the 4-lane steps left over, then the tail.
    let n16 = b.ins().sshr_imm_u(len, 4);
    let zero = b.ins().iconst(types::I64, 0);
    range_loop(b, zero, n16, &mut |b, i| {
        let o = b.ins().ishl_imm_u(i, 6);
        let a = b.ins().iadd(p, o);
        for k in 0..4 {
            let v = b.ins().load(types::I32X4, mf(), a, 16 * k);
            let r = op(b, v);
            b.ins().store(mf(), r, a, 16 * k);
        }
    });
    let n4 = b.ins().sshr_imm_u(len, 2);
    let first4 = b.ins().ishl_imm_u(n16, 2);
    range_loop(b, first4, n4, &mut |b, i| {
        let o = b.ins().ishl_imm_u(i, 4);
        let a = b.ins().iadd(p, o);
        let v = b.ins().load(types::I32X4, mf(), a, 0);
        let r = op(b, v);
        b.ins().store(mf(), r, a, 0);
    });
    let start = b.ins().ishl_imm_u(n4, 2);
    range_loop(b, start, len, &mut |b, j| {
        let o = b.ins().ishl_imm_u(j, 2);
        let a = b.ins().iadd(p, o);
        let x = b.ins().load(types::I32, mf(), a, 0);
        let v = b.ins().splat(types::I32X4, x);
        let r = op(b, v);
        let y = b.ins().extractlane(r, 0);
        b.ins().store(mf(), y, a, 0);
    });
}

/// Applies [`exp2_frac_i32x4`] in place to `len` (i64) f32 values at `p`
/// with one bit delta `delta` (i32 scalar from [`emit_frac_delta`]).
///
/// `delta == 0` (the running max did not move) is the identity: such a row
/// is skipped, as in [`emit_exp2_scale_row`]. The splatted delta goes
/// through a stack slot: Cranelift's elaboration otherwise recomputes the whole scalar chain of
/// [`emit_frac_delta`] (clamps, rounding, conversion: ~40 instructions) next
/// to every 4-lane step of the loop.
pub fn emit_exp2_frac_row(b: &mut FunctionBuilder, p: cl::Value, len: cl::Value, delta: cl::Value) {
    let lo = b.ins().iconst(types::I32, -(255i64 << 23));
    let hi = b.ins().iconst(types::I32, 1i64 << 23);
    let d = b.ins().smax(delta, lo);
    let d = b.ins().smin(d, hi);
    emit_row_unless_zero_step(b, d, &mut |b| {
        let ds = b.ins().splat(types::I32X4, d);
        let slot = b.create_sized_stack_slot(cl::StackSlotData::new(
            cl::StackSlotKind::ExplicitSlot,
            16,
            4,
        ));
        b.ins().stack_store(types::I64, ds, slot, 0);
        emit_row_map_i32x4(b, p, len, &mut |b, v| {
            let ds = b.ins().stack_load(types::I64, types::I32X4, slot, 0);
            exp2_frac_i32x4(b, v, ds)
        });
    });
}

/// Emits `rewrite` (which maps the `len` f32 values at `p` in place) unless
/// `step` (i32) is 0: a zero step is the identity
/// (`amla_runtime::rescale`), so such a row is not even read.
fn emit_row_unless_zero_step(
    b: &mut FunctionBuilder,
    step: cl::Value,
    rewrite: &mut dyn FnMut(&mut FunctionBuilder),
) {
    let full = b.create_block();
    let done = b.create_block();
    let is0 = b.ins().icmp_imm_s(IntCC::Equal, step, 0);
    b.ins().brif(is0, done, &[], full, &[]);
    b.switch_to_block(full);
    b.seal_block(full);
    rewrite(b);
    b.ins().jump(done, &[]);
    b.switch_to_block(done);
    b.seal_block(done);
}

/// Applies [`exp2_scale_i32x4`] in place to `len` (i64) f32 values at `p`
/// with one exponent `n` (i32 scalar, any value; clamped to `[-512, 512]`
/// like the runtime): 4 lanes at a time, then one at a time.
///
/// `n == 0` (the running max did not move: most rows of most blocks) is the
/// identity: such a row is skipped without being read.
pub fn emit_exp2_scale_row(b: &mut FunctionBuilder, p: cl::Value, len: cl::Value, n: cl::Value) {
    let lo = b.ins().iconst(types::I32, -512);
    let hi = b.ins().iconst(types::I32, 512);
    let n = b.ins().smax(n, lo);
    let n = b.ins().smin(n, hi);
    emit_row_unless_zero_step(b, n, &mut |b| {
        let ns = b.ins().splat(types::I32X4, n);
        emit_row_map_i32x4(b, p, len, &mut |b, v| exp2_scale_i32x4(b, v, ns));
    });
}
