//! Stand-alone JIT loops for checking the backend's SIMD code against its
//! definitions: the AMLA exponent add (the same emitter `atomic_exp_add`
//! uses) and the float unary functions.
//!
//! [`JitRescale::check_all`] runs the JIT'd exponent-add loop over all 2^32
//! f32 bit patterns for one `n` and compares every result bit for bit with
//! `amla_runtime::rescale::exp2_scale_bits` (see the `jit_rescale_exhaustive`
//! example of the `amla` crate).

use cranelift_codegen::Context;
use cranelift_codegen::ir::{AbiParam, InstBuilder, Signature, UserFuncName, types};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::JITModule;
use cranelift_module::{Linkage, Module};

use super::{CodegenError, Result, cl_err, host_isa, new_module, simd_math};
use crate::ir::{DType, UnaryOp};

/// A module holding one JIT function; frees it on drop.
struct OneFn {
    module: Option<JITModule>,
    ptr: *const u8,
}

impl Drop for OneFn {
    fn drop(&mut self) {
        if let Some(m) = self.module.take() {
            // SAFETY: the pointer is only used through `self`.
            unsafe { m.free_memory() };
        }
    }
}

// SAFETY: the JIT code is immutable once finalized and has no thread state.
unsafe impl Send for OneFn {}
// SAFETY: as above.
unsafe impl Sync for OneFn {}

/// Builds `fn(p0: i64, p1: i64, p2: <third>) ` with `body(builder, params)`.
fn build_one(
    third: types::Type,
    body: &dyn Fn(&mut FunctionBuilder, &[cranelift_codegen::ir::Value]),
) -> Result<OneFn> {
    let mut module = new_module(host_isa()?);
    let cc = module.isa().default_call_conv();
    let mut sig = Signature::new(cc);
    sig.params.push(AbiParam::new(types::I64));
    sig.params.push(AbiParam::new(types::I64));
    sig.params.push(AbiParam::new(third));
    let id = module
        .declare_function("amla_check", Linkage::Local, &sig)
        .map_err(cl_err)?;
    let mut ctx = Context::new();
    ctx.func.signature = sig;
    ctx.func.name = UserFuncName::user(1, 0);
    let mut fctx = FunctionBuilderContext::new();
    let fe = module.isa().frontend_config();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let e = b.create_block();
        b.append_block_params_for_function_params(e);
        b.switch_to_block(e);
        b.seal_block(e);
        let p = b.block_params(e).to_vec();
        body(&mut b, &p);
        b.ins().return_(&[]);
        b.seal_all_blocks();
        b.finalize(fe);
    }
    let r = module
        .define_function(id, &mut ctx)
        .map_err(|e| CodegenError::Cranelift(format!("{e:?}")))
        .and_then(|_| module.finalize_definitions().map_err(cl_err));
    if let Err(e) = r {
        // SAFETY: nothing handed out.
        unsafe { module.free_memory() };
        return Err(e);
    }
    let ptr = module.get_finalized_function(id);
    Ok(OneFn {
        module: Some(module),
        ptr,
    })
}

/// The JIT'd AMLA exponent-add loop: `data[i] = exp2_scale_bits(data[i], n)`.
pub struct JitRescale {
    f: OneFn,
}

impl std::fmt::Debug for JitRescale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JitRescale")
    }
}

impl JitRescale {
    /// Compiles the loop for the host.
    pub fn new() -> Result<JitRescale> {
        let f = build_one(types::I32, &|b, p| {
            simd_math::emit_exp2_scale_row(b, p[0], p[1], p[2]);
        })?;
        Ok(JitRescale { f })
    }

    /// Scales every f32 (given as its bits) of `data` by `2^n` in place.
    pub fn apply(&self, data: &mut [u32], n: i32) {
        // SAFETY: built by `new` with signature (ptr, len, i32) -> (); the
        // loop touches exactly `len` u32 at `ptr`.
        let f: extern "C" fn(*mut u32, u64, i32) = unsafe { std::mem::transmute(self.f.ptr) };
        f(data.as_mut_ptr(), data.len() as u64, n);
    }

    /// Runs the loop over the bit patterns `start..start+len` (wrapping) and
    /// returns how many differ from `exp2_scale_bits`, and the first one.
    pub fn check_range(&self, start: u32, len: u32, n: i32) -> (u64, Option<u32>) {
        let mut buf: Vec<u32> = (0..len).map(|i| start.wrapping_add(i)).collect();
        self.apply(&mut buf, n);
        let mut bad = 0u64;
        let mut first = None;
        for (i, &got) in buf.iter().enumerate() {
            let x = start.wrapping_add(i as u32);
            let want = amla_runtime::rescale::exp2_scale_bits(f32::from_bits(x), n).to_bits();
            if got != want {
                bad += 1;
                first.get_or_insert(x);
            }
        }
        (bad, first)
    }

    /// Checks all 2^32 bit patterns for `n` (in chunks of 2^24 elements);
    /// returns the number of mismatches and the first mismatching input.
    pub fn check_all(&self, n: i32, mut progress: impl FnMut(u32)) -> (u64, Option<u32>) {
        let chunk = 1u32 << 24;
        let mut bad = 0;
        let mut first = None;
        for c in 0..256u32 {
            let (b, f) = self.check_range(c * chunk, chunk, n);
            bad += b;
            if first.is_none() {
                first = f;
            }
            progress(c);
        }
        (bad, first)
    }
}

/// The JIT'd fractional exponent-add loop (the emitter `atomic_exp_add`
/// uses for f32 exponents): `data[i] = exp2_frac_bits(data[i],
/// frac_delta(x))`, the delta computed by the JIT from the f32 `x`.
pub struct JitFracRescale {
    f: OneFn,
}

impl std::fmt::Debug for JitFracRescale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JitFracRescale")
    }
}

impl JitFracRescale {
    /// Compiles the loop for the host.
    pub fn new() -> Result<JitFracRescale> {
        let f = build_one(types::F32, &|b, p| {
            let d = simd_math::emit_frac_delta(b, p[2]);
            simd_math::emit_exp2_frac_row(b, p[0], p[1], d);
        })?;
        Ok(JitFracRescale { f })
    }

    /// Applies the fractional step `x` to every f32 (as bits) of `data`.
    pub fn apply(&self, data: &mut [u32], x: f32) {
        // SAFETY: built by `new` with signature (ptr, len, f32) -> (); the
        // loop touches exactly `len` u32 at `ptr`.
        let f: extern "C" fn(*mut u32, u64, f32) = unsafe { std::mem::transmute(self.f.ptr) };
        f(data.as_mut_ptr(), data.len() as u64, x);
    }
}

/// A JIT'd float unary op over slices (for accuracy tests).
pub struct JitUnary {
    f: OneFn,
}

impl std::fmt::Debug for JitUnary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JitUnary")
    }
}

impl JitUnary {
    /// Compiles `out[i] = op(x[i])` over f32 (4 lanes, then a scalar tail).
    pub fn new(op: UnaryOp) -> Result<JitUnary> {
        if op == UnaryOp::Not {
            return Err(CodegenError::unsupported("not", "on floats"));
        }
        let f = build_one(types::I64, &|b, p| {
            let n4 = b.ins().sshr_imm_u(p[2], 2);
            let zero = b.ins().iconst(types::I64, 0);
            simd_math::range_loop(b, zero, n4, &mut |b, i| {
                let o = b.ins().ishl_imm_u(i, 4);
                let s = b.ins().iadd(p[0], o);
                let d = b.ins().iadd(p[1], o);
                let v = simd_math::load4(b, s, DType::F32).expect("f32");
                let r = simd_math::unary_f32x4(b, op, v).expect("float op");
                simd_math::store4(b, d, DType::F32, r).expect("f32");
            });
            let st = b.ins().ishl_imm_u(n4, 2);
            simd_math::range_loop(b, st, p[2], &mut |b, i| {
                let o = b.ins().ishl_imm_u(i, 2);
                let s = b.ins().iadd(p[0], o);
                let d = b.ins().iadd(p[1], o);
                let v = simd_math::load1(b, s, DType::F32).expect("f32");
                let r = simd_math::unary_f32x4(b, op, v).expect("float op");
                simd_math::store1(b, d, DType::F32, r).expect("f32");
            });
        })?;
        Ok(JitUnary { f })
    }

    /// `op` of every element of `x`.
    pub fn apply(&self, x: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; x.len()];
        // SAFETY: signature (src, dst, len); `out` has `len` elements.
        let f: extern "C" fn(*const f32, *mut f32, u64) =
            unsafe { std::mem::transmute(self.f.ptr) };
        f(x.as_ptr(), out.as_mut_ptr(), x.len() as u64);
        out
    }
}
