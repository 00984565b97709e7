//! The `extern "C"` entry points JIT-compiled kernels call, all listed in
//! [`jit_symbols`] (the compiler registers them with cranelift-jit by name).
//!
//! Common contract of every `amla_rt_*` function taking `ctx`:
//! - `ctx` is the `*const KernelCtx` the kernel entry received, used on the
//!   same thread during the same launch (null is rejected with
//!   `status::BAD_ARGUMENT`).
//! - Returns 0 on success or a non-zero [`crate::error::status`] code. On
//!   failure the runtime has already recorded a detailed error for the launch
//!   (first error wins) and raised the abort flag: the kernel should return
//!   the status at once; `launch` then returns the detailed error.
//! - Offsets and strides are in **elements** of the operand's dtype. Buffer
//!   codes: 1 = L1, 2 = L0A, 3 = L0B, 4 = L0C, 5 = UB (0 = GM where allowed).
//!   Dtype codes: 0 = f32, 1 = bf16, 2 = f16, 3 = i32. The GM side's dtype is
//!   always the GM buffer's own.
//! - Everything is bounds- and ownership-checked; no call panics or unwinds
//!   into JIT code.

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::ctx::KernelCtx;
use crate::dtype::DType;
use crate::error::{RuntimeError, status};
use crate::matmul::{AccumMode, BLayout, Gemm};
use crate::ops::{Env, Folded, FoldedStore, MatmulSrc, StoreMode, Tile};
use crate::rescale::exp2_scale_bits;
use crate::units::Buffer;

/// Runs `f` on the unit behind `ctx`, turning errors into status codes.
///
/// # Safety
/// `ctx` must satisfy the module's contract.
unsafe fn run(ctx: *const KernelCtx, f: impl FnOnce(&Env<'_>) -> Result<(), RuntimeError>) -> i32 {
    // SAFETY: caller's contract.
    let Some(env) = (unsafe { Env::from_raw(ctx) }) else {
        return status::BAD_ARGUMENT;
    };
    let r = catch_unwind(AssertUnwindSafe(|| f(&env)))
        .unwrap_or_else(|_| Err(RuntimeError::Internal("panic inside a runtime call".into())));
    match r {
        Ok(()) => status::OK,
        Err(e) => {
            let s = e.status();
            env.rt.shared.fail(e);
            s
        }
    }
}

fn size(v: u64, what: &str) -> Result<usize, RuntimeError> {
    usize::try_from(v)
        .map_err(|_| RuntimeError::BadArgument(format!("{what} = {v} does not fit usize")))
}

fn local(code: u32) -> Result<Buffer, RuntimeError> {
    match Buffer::from_code(code) {
        Some(Buffer::Gm) | None => Err(RuntimeError::BadArgument(format!(
            "buffer code {code} is not a local buffer"
        ))),
        Some(b) => Ok(b),
    }
}

fn dtype(code: u32) -> Result<DType, RuntimeError> {
    DType::from_code(code)
        .ok_or_else(|| RuntimeError::BadArgument(format!("unknown dtype code {code}")))
}

fn gm_tile(env: &Env<'_>, index: u32, off: u64, stride: u64) -> Result<Tile, RuntimeError> {
    let idx = u64::from(index);
    if idx >= env.ctx.gm_count || env.ctx.gm.is_null() {
        return Err(RuntimeError::UnknownGmBuffer {
            index: idx,
            count: env.ctx.gm_count,
        });
    }
    // SAFETY: gm points to gm_count descriptors (launcher); idx < gm_count.
    let d = unsafe { *env.ctx.gm.add(index as usize) };
    Ok(Tile {
        buffer: Buffer::Gm,
        gm_index: index,
        offset: size(off, "gm offset")?,
        stride: size(stride, "gm stride")?,
        dtype: dtype(d.dtype)?,
    })
}

/// A [`Gemm`] from the JIT ABI's codes.
#[allow(clippy::too_many_arguments)]
fn gemm(
    m: u64,
    n: u64,
    k: u64,
    lda: u64,
    ldb: u64,
    ldc: u64,
    b_layout: u32,
    mode: u32,
) -> Result<Gemm, RuntimeError> {
    let b_layout = match b_layout {
        0 => BLayout::KN,
        1 => BLayout::NK,
        x => return Err(RuntimeError::BadArgument(format!("unknown B layout {x}"))),
    };
    let mode = match mode {
        0 => AccumMode::Overwrite,
        1 => AccumMode::Accumulate,
        x => {
            return Err(RuntimeError::BadArgument(format!(
                "unknown accumulate mode {x}"
            )));
        }
    };
    Ok(Gemm {
        m: size(m, "m")?,
        n: size(n, "n")?,
        k: size(k, "k")?,
        lda: size(lda, "lda")?,
        ldb: size(ldb, "ldb")?,
        ldc: size(ldc, "ldc")?,
        b_layout,
        mode,
    })
}

fn local_tile(buf: u32, off: u64, stride: u64, dt: u32) -> Result<Tile, RuntimeError> {
    Ok(Tile::local(
        local(buf)?,
        size(off, "offset")?,
        size(stride, "stride")?,
        dtype(dt)?,
    ))
}

/// MTE2: copies `rows × cols` elements from GM buffer `gm_index` (at
/// `gm_off`, row stride `gm_stride`) into local buffer `dst_buf` (at
/// `dst_off`, stride `dst_stride`, dtype `dst_dtype`), converting float
/// types with round-to-nearest-even.
///
/// # Safety
/// See the module contract.
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn amla_rt_copy_gm_to_local(
    ctx: *const KernelCtx,
    gm_index: u32,
    gm_off: u64,
    gm_stride: u64,
    dst_buf: u32,
    dst_off: u64,
    dst_stride: u64,
    dst_dtype: u32,
    rows: u64,
    cols: u64,
) -> i32 {
    // SAFETY: module contract.
    unsafe {
        run(ctx, |env| {
            let src = gm_tile(env, gm_index, gm_off, gm_stride)?;
            let dst = local_tile(dst_buf, dst_off, dst_stride, dst_dtype)?;
            env.copy(
                &dst,
                &src,
                size(rows, "rows")?,
                size(cols, "cols")?,
                StoreMode::Overwrite,
            )
        })
    }
}

/// MTE1 (L1 → L0A/L0B), FixPipe (L0C → L1) or Vector (UB → UB) copy between
/// two local buffers of this unit, with float conversion. Source and
/// destination must not overlap.
///
/// # Safety
/// See the module contract.
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn amla_rt_copy_local_to_local(
    ctx: *const KernelCtx,
    dst_buf: u32,
    dst_off: u64,
    dst_stride: u64,
    dst_dtype: u32,
    src_buf: u32,
    src_off: u64,
    src_stride: u64,
    src_dtype: u32,
    rows: u64,
    cols: u64,
) -> i32 {
    // SAFETY: module contract.
    unsafe {
        run(ctx, |env| {
            let dst = local_tile(dst_buf, dst_off, dst_stride, dst_dtype)?;
            let src = local_tile(src_buf, src_off, src_stride, src_dtype)?;
            env.copy(
                &dst,
                &src,
                size(rows, "rows")?,
                size(cols, "cols")?,
                StoreMode::Overwrite,
            )
        })
    }
}

/// FixPipe (from L0C) or MTE3 (from UB/L1): copies a local region into GM
/// buffer `gm_index`, converting to the GM dtype (f32 → bf16 rounds to
/// nearest even). `mode` 0 stores, 1 atomically adds (f32, bf16, f16, i32).
///
/// # Safety
/// See the module contract.
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn amla_rt_copy_local_to_gm(
    ctx: *const KernelCtx,
    src_buf: u32,
    src_off: u64,
    src_stride: u64,
    src_dtype: u32,
    gm_index: u32,
    gm_off: u64,
    gm_stride: u64,
    rows: u64,
    cols: u64,
    mode: u32,
) -> i32 {
    // SAFETY: module contract.
    unsafe {
        run(ctx, |env| {
            let src = local_tile(src_buf, src_off, src_stride, src_dtype)?;
            let dst = gm_tile(env, gm_index, gm_off, gm_stride)?;
            let mode = StoreMode::from_code(mode)
                .ok_or_else(|| RuntimeError::BadArgument(format!("unknown store mode {mode}")))?;
            env.copy(&dst, &src, size(rows, "rows")?, size(cols, "cols")?, mode)
        })
    }
}

/// Cube matmul on local tiles: `C[m,n] (+)= A[m,k] · B`, A at element `a_off`
/// of L0A (row stride `lda`), B at `b_off` of L0B (`b_layout` 0 = `[k,n]`
/// stride `ldb >= n`; 1 = `[n,k]` stride `ldb >= k`), C f32 at `c_off` of L0C
/// (stride `ldc`). `dtype` 1 = bf16, 2 = f16 (A and B); `mode` 0 overwrite,
/// 1 accumulate. Cube only.
///
/// # Safety
/// See the module contract.
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn amla_rt_matmul(
    ctx: *const KernelCtx,
    a_off: u64,
    lda: u64,
    b_off: u64,
    ldb: u64,
    c_off: u64,
    ldc: u64,
    m: u64,
    n: u64,
    k: u64,
    b_layout: u32,
    dtype_code: u32,
    mode: u32,
) -> i32 {
    // SAFETY: module contract.
    unsafe {
        run(ctx, |env| {
            let g = gemm(m, n, k, lda, ldb, ldc, b_layout, mode)?;
            env.matmul(
                &g,
                dtype(dtype_code)?,
                size(a_off, "a_off")?,
                size(b_off, "b_off")?,
                size(c_off, "c_off")?,
            )
            .map(|_| ())
        })
    }
}

/// Cube: [`amla_rt_matmul`] with A in `a_buf` (L0A, L1 or GM buffer
/// `a_gm`) and B in `b_buf` (L0B, L1 or GM buffer `b_gm`), standing for
/// `parts` matmuls of the program over consecutive K ranges, `copies` L1 →
/// L0 copies (`copy_bytes` in all), `loads` GM → L1 loads (`load_bytes`)
/// and, when `store_gm` is not 0, the store of C to GM buffer
/// `store_gm - 1` (element `store_off`, row stride `store_ld`; `store_mode`
/// 0 a store, 1 an atomic add) the compiler folded into it (see
/// `Env::matmul_folded`). A GM operand must hold its bytes for the whole
/// call (nothing writes it meanwhile: the schedule's flags order it).
///
/// # Safety
/// See the module contract.
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn amla_rt_matmul_folded(
    ctx: *const KernelCtx,
    a_buf: u32,
    a_gm: u32,
    a_off: u64,
    lda: u64,
    b_buf: u32,
    b_gm: u32,
    b_off: u64,
    ldb: u64,
    c_off: u64,
    ldc: u64,
    m: u64,
    n: u64,
    k: u64,
    b_layout: u32,
    dtype_code: u32,
    mode: u32,
    parts: u32,
    copies: u32,
    copy_bytes: u64,
    loads: u32,
    load_bytes: u64,
    store_gm: u32,
    store_off: u64,
    store_ld: u64,
    store_mode: u32,
) -> i32 {
    let src = |buf: u32, gm: u32, off: u64, what: &str| -> Result<MatmulSrc, RuntimeError> {
        let buffer = Buffer::from_code(buf)
            .ok_or_else(|| RuntimeError::BadArgument(format!("unknown buffer code {buf}")))?;
        Ok(MatmulSrc {
            buffer,
            gm_index: gm,
            offset: size(off, what)?,
        })
    };
    // SAFETY: module contract.
    unsafe {
        run(ctx, |env| {
            let g = gemm(m, n, k, lda, ldb, ldc, b_layout, mode)?;
            env.matmul_folded(
                &g,
                dtype(dtype_code)?,
                src(a_buf, a_gm, a_off, "a_off")?,
                src(b_buf, b_gm, b_off, "b_off")?,
                size(c_off, "c_off")?,
                Folded {
                    parts,
                    copies,
                    copy_bytes,
                    loads,
                    load_bytes,
                    store: match store_gm {
                        0 => None,
                        g => Some(FoldedStore {
                            gm_index: g - 1,
                            offset: size(store_off, "store_off")?,
                            ld: size(store_ld, "store_ld")?,
                            mode: match store_mode {
                                0 => StoreMode::Overwrite,
                                1 => StoreMode::AtomicAdd,
                                m => {
                                    return Err(RuntimeError::BadArgument(format!(
                                        "folded store mode {m}"
                                    )));
                                }
                            },
                        }),
                    },
                },
            )
            .map(|_| ())
        })
    }
}

/// MTE2: a GM → UB load of `bytes` bytes that fused Vector code reads in
/// GM in place: recorded as the load would be (one call, its bytes, no
/// busy time; trace path [`crate::FUSED_READ_PATH`]), nothing copied.
///
/// # Safety
/// See the module contract.
pub unsafe extern "C" fn amla_rt_note_read_in_place(ctx: *const KernelCtx, bytes: u64) -> i32 {
    // SAFETY: module contract.
    unsafe {
        run(ctx, |env| {
            env.note_read_in_place(bytes);
            Ok(())
        })
    }
}

/// Sets cross-core flag `id` (Cube: releases every Vector unit; Vector:
/// counts toward the Cube's wait).
///
/// # Safety
/// See the module contract.
pub unsafe extern "C" fn amla_rt_set_flag(ctx: *const KernelCtx, id: u32) -> i32 {
    // SAFETY: module contract.
    unsafe { run(ctx, |env| env.set_flag(id)) }
}

/// Waits on cross-core flag `id` (at most the launch's wait timeout);
/// `block` is the caller's iteration number, reported in a timeout error.
/// Returns `status::TIMEOUT` or `status::ABORTED` on failure.
///
/// # Safety
/// See the module contract.
pub unsafe extern "C" fn amla_rt_wait_flag(ctx: *const KernelCtx, id: u32, block: u64) -> i32 {
    // SAFETY: module contract.
    unsafe { run(ctx, |env| env.wait_flag(id, block)) }
}

/// The atomic exponent add: multiplies row `r` of the f32 GM region
/// (`gm_index`, `gm_off`, `gm_stride`, `rows × cols`) by `2^n[r]` with
/// [`exp2_scale_bits`] semantics, atomically per element. The `rows` i32
/// exponents are contiguous at `n_off` of buffer `n_buf` (a local buffer,
/// or 0 = GM buffer `n_gm_index`).
///
/// # Safety
/// See the module contract.
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn amla_rt_exp2_scale_gm(
    ctx: *const KernelCtx,
    gm_index: u32,
    gm_off: u64,
    gm_stride: u64,
    rows: u64,
    cols: u64,
    n_buf: u32,
    n_gm_index: u32,
    n_off: u64,
) -> i32 {
    // SAFETY: module contract.
    unsafe {
        run(ctx, |env| {
            let dst = gm_tile(env, gm_index, gm_off, gm_stride)?;
            let n = if n_buf == Buffer::Gm as u32 {
                gm_tile(env, n_gm_index, n_off, 1)?
            } else {
                local_tile(n_buf, n_off, 1, DType::I32.code())?
            };
            env.exp2_scale_gm(&dst, size(rows, "rows")?, size(cols, "cols")?, &n)
        })
    }
}

/// This unit's private host scratch of at least `bytes` bytes (64-byte
/// aligned, zeroed when first allocated, kept and reused for the rest of the
/// launch; a larger request replaces it with a new zeroed one). Writes its
/// address to `*out`. JIT code keeps tiles there that do not fit the unit's
/// local buffers (the compiler's `gm`-placed tiles of the Vector program).
///
/// # Safety
/// See the module contract; `out` must be valid for one pointer write.
pub unsafe extern "C" fn amla_rt_scratch(
    ctx: *const KernelCtx,
    bytes: u64,
    out: *mut *mut u8,
) -> i32 {
    // SAFETY: module contract.
    unsafe {
        run(ctx, |env| {
            if out.is_null() {
                return Err(RuntimeError::BadArgument(
                    "scratch: null out pointer".into(),
                ));
            }
            let want = size(bytes, "scratch bytes")?.max(1);
            let mut slot = env.rt.scratch.borrow_mut();
            if slot.as_ref().is_none_or(|b| b.len() < want) {
                *slot = Some(crate::aligned::AlignedBytes::zeroed(want)?);
            }
            let p = slot.as_ref().map_or(std::ptr::null_mut(), |b| b.as_ptr());
            // SAFETY: `out` is valid for a write (caller's contract).
            *out = p;
            Ok(())
        })
    }
}

/// True when `[p, p + bytes)` lies inside one local buffer of this unit or
/// inside its scratch.
fn inside_unit_memory(env: &Env<'_>, p: usize, bytes: usize) -> bool {
    let Some(end) = p.checked_add(bytes) else {
        return false;
    };
    let within = |base: usize, len: usize| p >= base && end <= base.saturating_add(len);
    let locals = [
        Buffer::L1,
        Buffer::L0A,
        Buffer::L0B,
        Buffer::L0C,
        Buffer::Ub,
    ];
    if locals.iter().any(|&b| {
        env.local_base(b)
            .is_ok_and(|(base, len)| within(base as usize, len as usize))
    }) {
        return true;
    }
    env.rt
        .scratch
        .borrow()
        .as_ref()
        .is_some_and(|s| within(s.as_ptr() as usize, s.len()))
}

/// Vector: converts `n` contiguous float elements at `src` (dtype code
/// `src_dtype`) into `dst` (dtype code `dst_dtype`), rounding to nearest
/// even (through f32, which holds every bf16 and f16 value exactly). Both
/// ranges must lie inside this unit's local buffers or its scratch (the
/// `gm`-placed tiles of JIT code) and must not overlap.
///
/// # Safety
/// See the module contract; the pointers are checked against the unit's
/// memory before any access.
pub unsafe extern "C" fn amla_rt_convert(
    ctx: *const KernelCtx,
    dst: u64,
    dst_dtype: u32,
    src: u64,
    src_dtype: u32,
    n: u64,
) -> i32 {
    // SAFETY: module contract.
    unsafe {
        run(ctx, |env| {
            let (dd, sd) = (dtype(dst_dtype)?, dtype(src_dtype)?);
            if !dd.is_float() || !sd.is_float() {
                return Err(RuntimeError::BadArgument(format!(
                    "convert: {sd} -> {dd} is not a float conversion"
                )));
            }
            let n = size(n, "convert count")?;
            let bytes = |d: DType| {
                n.checked_mul(d.size_bytes())
                    .ok_or_else(|| RuntimeError::BadArgument("convert: count overflows".into()))
            };
            let (db, sb) = (bytes(dd)?, bytes(sd)?);
            let (dp, sp) = (size(dst, "dst")?, size(src, "src")?);
            if !inside_unit_memory(env, dp, db) || !inside_unit_memory(env, sp, sb) {
                return Err(RuntimeError::BadArgument(
                    "convert: a range is outside the unit's buffers".into(),
                ));
            }
            if dp < sp.saturating_add(sb) && sp < dp.saturating_add(db) {
                return Err(RuntimeError::BadArgument(
                    "convert: source and destination overlap".into(),
                ));
            }
            for i in 0..n {
                // SAFETY: both ranges were checked to lie in live unit
                // memory; unaligned accesses are allowed.
                let x = match sd {
                    DType::F32 => {
                        f32::from_bits(std::ptr::read_unaligned((sp + 4 * i) as *const u32))
                    }
                    DType::Bf16 => {
                        half::bf16::from_bits(std::ptr::read_unaligned((sp + 2 * i) as *const u16))
                            .to_f32()
                    }
                    _ => half::f16::from_bits(std::ptr::read_unaligned((sp + 2 * i) as *const u16))
                        .to_f32(),
                };
                match dd {
                    DType::F32 => std::ptr::write_unaligned((dp + 4 * i) as *mut u32, x.to_bits()),
                    DType::Bf16 => std::ptr::write_unaligned(
                        (dp + 2 * i) as *mut u16,
                        half::bf16::from_f32(x).to_bits(),
                    ),
                    _ => std::ptr::write_unaligned(
                        (dp + 2 * i) as *mut u16,
                        half::f16::from_f32(x).to_bits(),
                    ),
                }
            }
            Ok(())
        })
    }
}

/// Checked and race-checked code: registers the op about to run (`len`
/// bytes of UTF-8 IR text at `text`) for the reports of
/// [`amla_rt_check_fail`] and the race checker. `text` 0 clears it.
///
/// # Safety
/// See the module contract; the text must stay valid and unchanged for the
/// rest of the launch (the compiled kernel owns it).
pub unsafe extern "C" fn amla_rt_site(ctx: *const KernelCtx, text: u64, len: u64) -> i32 {
    // SAFETY: module contract.
    unsafe {
        run(ctx, |env| {
            env.rt
                .site
                .set((size(text, "site")?, size(len, "site length")?));
            Ok(())
        })
    }
}

/// Checked code: an index failed its bounds check (`index` outside
/// `0..bound`) in the op last registered with [`amla_rt_site`]. Records
/// [`RuntimeError::CheckedAccess`] and returns its status, always non-zero.
///
/// # Safety
/// See the module contract.
pub unsafe extern "C" fn amla_rt_check_fail(ctx: *const KernelCtx, index: u64, bound: u64) -> i32 {
    // SAFETY: module contract.
    let st = unsafe {
        run(ctx, |env| {
            Err(RuntimeError::CheckedAccess {
                kernel: env.rt.kernel.to_string(),
                core: env.rt.core,
                unit: env.rt.unit,
                op: env.rt.site_or("?").to_string(),
                index: index as i64,
                bound: bound as i64,
            })
        })
    };
    if st == status::OK {
        status::OUT_OF_BOUNDS
    } else {
        st
    }
}

/// Race-checked code: JIT code accessed `rows × cols` elements of GM buffer
/// `gm_index` itself (row `r` at `off + r · stride`); `kind` 0 read, 1
/// write, 2 read-modify-write. Recorded with the race checker when the
/// launch runs one (else nothing).
///
/// # Safety
/// See the module contract.
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn amla_rt_note_gm(
    ctx: *const KernelCtx,
    gm_index: u32,
    off: u64,
    stride: u64,
    rows: u64,
    cols: u64,
    kind: u32,
) -> i32 {
    // SAFETY: module contract.
    unsafe {
        run(ctx, |env| {
            let kind = crate::race::AccessKind::from_code(kind)
                .ok_or_else(|| RuntimeError::BadArgument(format!("note_gm: access kind {kind}")))?;
            let r = crate::race::Region {
                gm: gm_index,
                offset: off,
                stride,
                rows,
                cols,
            };
            env.note_gm(&r, kind, "JIT GM access")
        })
    }
}

/// Scalar `x · 2^n` by exponent addition ([`exp2_scale_bits`]); no context.
pub extern "C" fn amla_rt_exp2_scale_f32(x: f32, n: i32) -> f32 {
    exp2_scale_bits(x, n)
}

/// Every runtime symbol JIT code may call, by the name to register with
/// cranelift-jit, and its address.
pub fn jit_symbols() -> Vec<(&'static str, *const u8)> {
    vec![
        (
            "amla_rt_copy_gm_to_local",
            amla_rt_copy_gm_to_local as *const u8,
        ),
        (
            "amla_rt_copy_local_to_local",
            amla_rt_copy_local_to_local as *const u8,
        ),
        (
            "amla_rt_copy_local_to_gm",
            amla_rt_copy_local_to_gm as *const u8,
        ),
        ("amla_rt_matmul", amla_rt_matmul as *const u8),
        ("amla_rt_matmul_folded", amla_rt_matmul_folded as *const u8),
        (
            "amla_rt_note_read_in_place",
            amla_rt_note_read_in_place as *const u8,
        ),
        ("amla_rt_set_flag", amla_rt_set_flag as *const u8),
        ("amla_rt_wait_flag", amla_rt_wait_flag as *const u8),
        ("amla_rt_exp2_scale_gm", amla_rt_exp2_scale_gm as *const u8),
        ("amla_rt_scratch", amla_rt_scratch as *const u8),
        ("amla_rt_convert", amla_rt_convert as *const u8),
        ("amla_rt_site", amla_rt_site as *const u8),
        ("amla_rt_check_fail", amla_rt_check_fail as *const u8),
        ("amla_rt_note_gm", amla_rt_note_gm as *const u8),
        (
            "amla_rt_exp2_scale_f32",
            amla_rt_exp2_scale_f32 as *const u8,
        ),
        ("amla_rt_exp_f32", crate::vexp::amla_rt_exp_f32 as *const u8),
    ]
}
