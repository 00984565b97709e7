//! The ABI between JIT code and `amla-runtime`: `KernelCtx` field offsets,
//! `GmDesc` layout, buffer and dtype codes, the signatures of the runtime's
//! `extern "C"` symbols, and the status codes JIT code itself returns.
//!
//! Everything here mirrors `runtime/README.md`; the offsets come from the
//! runtime's own `KernelCtx::OFFSET_*` constants so a layout change there is
//! picked up here.

use amla_runtime::KernelCtx;
use cranelift_codegen::ir::{AbiParam, Signature, types};
use cranelift_codegen::isa::CallConv;

use crate::ir::{DType, Space};

/// Byte offset of `KernelCtx::gm` (`*const GmDesc`).
pub const CTX_GM: i32 = KernelCtx::OFFSET_GM as i32;
/// Byte offset of `KernelCtx::gm_count` (`u64`).
pub const CTX_GM_COUNT: i32 = KernelCtx::OFFSET_GM_COUNT as i32;
/// Byte offset of `KernelCtx::dims` (`*const i64`).
pub const CTX_DIMS: i32 = KernelCtx::OFFSET_DIMS as i32;
/// Byte offset of `KernelCtx::dim_count` (`u64`).
pub const CTX_DIM_COUNT: i32 = KernelCtx::OFFSET_DIM_COUNT as i32;

/// Size of one `GmDesc` record.
pub const GM_DESC_SIZE: i64 = 24;
/// Offset of `GmDesc::base`.
pub const GM_DESC_BASE: i32 = 0;
/// Offset of `GmDesc::len` (elements).
pub const GM_DESC_LEN: i32 = 8;
/// Offset of `GmDesc::dtype` (`u32` code).
pub const GM_DESC_DTYPE: i32 = 16;

/// Status JIT code returns when a GM buffer the kernel uses is missing, has
/// the wrong dtype, or is shorter than the tensor's shape at the launch's
/// dim values (checked once at entry, before any access).
pub const STATUS_BAD_GM: i32 = 100;
/// Status JIT code returns when `KernelCtx::dims` holds fewer values than the
/// kernel has dims (pass them with `LaunchConfig::with_dims`).
pub const STATUS_MISSING_DIM: i32 = 101;
/// Status JIT code returns when a local buffer is smaller than the
/// placements the compiler assumed.
pub const STATUS_LOCAL_TOO_SMALL: i32 = 102;
/// Status JIT code returns when a scalar `i32` division or remainder (index
/// math) has a zero divisor at run time.
pub const STATUS_DIVISION_BY_ZERO: i32 = 103;

/// What a status of JIT code means, for the launch error.
pub fn status_meaning(code: i32) -> Option<&'static str> {
    Some(match code {
        STATUS_BAD_GM => "a GM buffer is missing, of the wrong dtype or too short",
        STATUS_MISSING_DIM => "a dim has no value at launch",
        STATUS_LOCAL_TOO_SMALL => "a local buffer is smaller than the compiler planned",
        STATUS_DIVISION_BY_ZERO => "integer division or remainder by zero in index arithmetic",
        _ => return None,
    })
}

/// `(byte offset of the base pointer, byte offset of the size)` of a local
/// buffer in `KernelCtx`, and its runtime buffer code.
pub fn local_buffer(space: Space) -> Option<(i32, i32, u32)> {
    let (base, code) = match space {
        Space::L1 => (KernelCtx::OFFSET_L1, 1),
        Space::L0A => (KernelCtx::OFFSET_L0A, 2),
        Space::L0B => (KernelCtx::OFFSET_L0B, 3),
        Space::L0C => (KernelCtx::OFFSET_L0C, 4),
        Space::Ub => (KernelCtx::OFFSET_UB, 5),
        Space::Any | Space::Gm => return None,
    };
    Some((base as i32, base as i32 + 8, code))
}

/// The runtime dtype code of an element type (`bool` has none: masks never
/// leave JIT code).
pub fn dtype_code(d: DType) -> Option<u32> {
    match d {
        DType::F32 => Some(0),
        DType::Bf16 => Some(1),
        DType::F16 => Some(2),
        DType::I32 => Some(3),
        DType::Bool => None,
    }
}

/// Argument kinds of runtime symbols.
#[derive(Copy, Clone)]
enum A {
    Ptr,
    U32,
    U64,
}

/// Every runtime symbol JIT code calls, with its parameters after `ctx`
/// (all return an `i32` status).
pub const SYMBOLS: &[(&str, &[u8])] = &[
    // gm_index, gm_off, gm_stride, dst_buf, dst_off, dst_stride, dst_dtype, rows, cols
    ("amla_rt_copy_gm_to_local", b"wllwllwll"),
    // dst_buf, dst_off, dst_stride, dst_dtype, src_buf, src_off, src_stride, src_dtype, rows, cols
    ("amla_rt_copy_local_to_local", b"wllwwllwll"),
    // src_buf, src_off, src_stride, src_dtype, gm_index, gm_off, gm_stride, rows, cols, mode
    ("amla_rt_copy_local_to_gm", b"wllwwllllw"),
    // a_off, lda, b_off, ldb, c_off, ldc, m, n, k, b_layout, dtype, mode
    ("amla_rt_matmul", b"lllllllllwww"),
    // a_buf, a_gm, a_off, lda, b_buf, b_gm, b_off, ldb, c_off, ldc, m, n, k,
    // b_layout, dtype, mode, parts, copies, copy_bytes, loads, load_bytes,
    // store_gm (gm index + 1, 0: none), store_off, store_ld, store_mode (0
    // store, 1 atomic add)
    ("amla_rt_matmul_folded", b"wwllwwlllllllwwwwwlwlwllw"),
    // bytes
    ("amla_rt_note_read_in_place", b"l"),
    ("amla_rt_set_flag", b"w"),
    ("amla_rt_wait_flag", b"wl"),
    // bytes, out pointer
    ("amla_rt_scratch", b"ll"),
    // dst pointer, dst_dtype, src pointer, src_dtype, n
    ("amla_rt_convert", b"lwlwl"),
];

/// The runtime symbols only instrumented code (`CodegenOptions::instrument`)
/// declares and calls, so the default code's text does not change.
pub const INSTRUMENT_SYMBOLS: &[(&str, &[u8])] = &[
    // text pointer, length
    ("amla_rt_site", b"ll"),
    // index, bound
    ("amla_rt_check_fail", b"ll"),
    // gm_index, off, stride, rows, cols, kind (0 read, 1 write, 2 update)
    ("amla_rt_note_gm", b"wllllw"),
];

/// The runtime's in-place `exp` over f32 (`amla_runtime::vexp`), which
/// fused loops call once per row: `(ptr, len)`, no context, no status.
/// Declared in every module but imported into a function only when it is
/// called, so functions without an outlined `exp` keep their text.
pub const EXP_SYMBOL: &str = "amla_rt_exp_f32";

/// The signature of [`EXP_SYMBOL`].
pub fn exp_signature(call_conv: CallConv) -> Signature {
    let mut sig = Signature::new(call_conv);
    sig.params.push(AbiParam::new(types::I64));
    sig.params.push(AbiParam::new(types::I64));
    sig
}

/// The Cranelift signature of runtime symbol `params` (see [`SYMBOLS`]).
pub fn symbol_signature(params: &[u8], call_conv: CallConv) -> Signature {
    let mut sig = Signature::new(call_conv);
    let mut push = |a: A| {
        sig.params.push(AbiParam::new(match a {
            A::Ptr | A::U64 => types::I64,
            A::U32 => types::I32,
        }))
    };
    push(A::Ptr);
    for &p in params {
        push(if p == b'w' { A::U32 } else { A::U64 });
    }
    sig.returns.push(AbiParam::new(types::I32));
    sig
}

/// The signature of a kernel entry: `(ctx, work_item u64, sub_block u32) -> i32`.
pub fn entry_signature(call_conv: CallConv) -> Signature {
    let mut sig = Signature::new(call_conv);
    sig.params.push(AbiParam::new(types::I64));
    sig.params.push(AbiParam::new(types::I64));
    sig.params.push(AbiParam::new(types::I32));
    sig.returns.push(AbiParam::new(types::I32));
    sig
}
