//! The operations kernels perform on their unit: copies between buffers (with
//! dtype conversion and atomic add), matmuls on local tiles, flags, and the
//! exponent rescale in GM. Both the `extern "C"` entry points ([`crate::jit`])
//! and the safe Rust API ([`crate::launch::Unit`]) call these.
//!
//! Invariants:
//! - Every operation validates buffer codes, ownership (the Cube owns
//!   L1/L0A/L0B/L0C, a Vector unit its UB), dtypes and bounds before touching
//!   memory, and returns an error otherwise.
//! - Offsets and row strides are in elements of the side's dtype; a region
//!   is `rows` rows of `cols` elements, row `r` starting at
//!   `offset + r * stride`. Destination strides must be `>= cols`; source
//!   strides may be anything (0 repeats one row).
//! - GM is accessed with atomic element operations (see [`crate::dtype`])
//!   under [`crate::gm::GmAccess::Atomic`], with plain ones under
//!   [`crate::gm::GmAccess::Ordered`]; [`Env::resolve`] is the one place
//!   that decides (the argument for plain accesses is at `GmAccess`).
//! - Every operation is counted in the unit's [`crate::stats::PipeStats`] and,
//!   when tracing, recorded as a trace event.

use half::{bf16, f16};

use crate::ctx::{KernelCtx, UnitRt};
use crate::dtype::{DType, Element, conversion_supported, convert};
use crate::error::RuntimeError;
use crate::flags::FlagError;
use crate::matmul::{self, AccumMode, Gemm, MatmulPath};
use crate::race::{AccessKind, Region};
use crate::rescale::exp2_scale_bits;
use crate::units::{Buffer, Pipe, UnitKind};

/// A 2-D region of a buffer: `rows × cols` elements (given per operation) of
/// `dtype`, starting at element `offset`, rows `stride` elements apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tile {
    /// The buffer.
    pub buffer: Buffer,
    /// For [`Buffer::Gm`]: the GM buffer index; ignored otherwise.
    pub gm_index: u32,
    /// First element, in elements of `dtype`.
    pub offset: usize,
    /// Row stride, in elements of `dtype`.
    pub stride: usize,
    /// Element type (for GM: must equal the buffer's dtype).
    pub dtype: DType,
}

impl Tile {
    /// A region of GM buffer `id`.
    pub fn gm(id: crate::gm::GmId, offset: usize, stride: usize, dtype: DType) -> Self {
        Tile {
            buffer: Buffer::Gm,
            gm_index: id.0,
            offset,
            stride,
            dtype,
        }
    }

    /// A region of a local buffer.
    pub fn local(buffer: Buffer, offset: usize, stride: usize, dtype: DType) -> Self {
        Tile {
            buffer,
            gm_index: 0,
            offset,
            stride,
            dtype,
        }
    }
}

/// The copy path name of L1 → L0 copies folded into a matmul call (trace
/// events `copy <path>`; the host cost model counts them under it).
pub const FOLDED_COPY_PATH: &str = "l1->l0 (folded into matmul)";

/// The copy path name of GM → L1 loads folded into a matmul call (the
/// matmul reads the GM tensor in place; trace events `copy <path>`).
pub const FOLDED_LOAD_PATH: &str = "gm->l1 (folded into matmul)";

/// The copy path name of GM → UB loads that fused Vector code reads in
/// GM in place (trace events `copy <path>`; [`Env::note_read_in_place`]).
pub const FUSED_READ_PATH: &str = "gm->ub (read in place by fused code)";

/// The copy path name of L0C → GM stores folded into a matmul call (the
/// matmul writes C in GM; trace events `copy <path>`).
pub const FOLDED_STORE_PATH: &str = "l0c->gm (folded into matmul)";

/// A store of a matmul's C to GM that the compiler folded into the call:
/// the program stores (or atomically adds) the `[m, n]` C to GM buffer
/// `gm_index` at element `offset`, row stride `ld`, right after the
/// matmul, and nothing reads C in L0C; the call finishes C (the compiler
/// folds a store only into a chain that is one call). With plain GM
/// accesses ([`crate::gm::GmAccess::Ordered`]) the call computes C in GM (an add:
/// [`crate::AccumMode::AddAfter`], the bits of the product added after);
/// with atomic ones it computes C in L0C and copies it as the store
/// would.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FoldedStore {
    /// The GM buffer.
    pub gm_index: u32,
    /// C's first element in it.
    pub offset: usize,
    /// Its row stride there (elements).
    pub ld: usize,
    /// A store or an atomic add.
    pub mode: StoreMode,
}

/// What a [`Env::matmul_folded`] call stands for: `parts` matmuls of the
/// program over consecutive K ranges of one C, `copies` L1 → L0 copies
/// of their operands (`copy_bytes` in all), `loads` GM → L1 loads
/// (`load_bytes`) that the call reads in place, and perhaps the store of
/// C after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Folded {
    /// Matmuls of the program (≥ 1).
    pub parts: u32,
    /// Folded operand copies.
    pub copies: u32,
    /// Their bytes (elements × element size).
    pub copy_bytes: u64,
    /// Folded GM → L1 loads.
    pub loads: u32,
    /// Their bytes.
    pub load_bytes: u64,
    /// The folded store of C.
    pub store: Option<FoldedStore>,
}

impl Folded {
    /// One matmul, nothing folded.
    pub const NONE: Folded = Folded {
        parts: 1,
        copies: 0,
        copy_bytes: 0,
        loads: 0,
        load_bytes: 0,
        store: None,
    };
}

/// Where a matmul reads an operand: element `offset` of a local buffer, or
/// of GM buffer `gm_index` when `buffer` is [`Buffer::Gm`] (a tensor no
/// unit writes during the call: the compiler folds only loads of tensors
/// nothing writes, or that the other unit writes with every write ordered
/// against the call by the flags, so the matmul reads it with plain loads
/// under any [`crate::gm::GmAccess`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulSrc {
    /// The buffer.
    pub buffer: Buffer,
    /// For [`Buffer::Gm`]: the GM buffer index; ignored otherwise.
    pub gm_index: u32,
    /// The operand's first element, in elements of its dtype.
    pub offset: usize,
}

impl MatmulSrc {
    /// Element `offset` of local buffer `buffer`.
    pub const fn local(buffer: Buffer, offset: usize) -> Self {
        MatmulSrc {
            buffer,
            gm_index: 0,
            offset,
        }
    }
}

/// `len` elements of `T` at `p` (empty when `len` is 0, whatever `p` is).
///
/// # Safety
/// With `len > 0`, `p` must be aligned and valid for reads of `len`
/// elements that nothing writes during `'s`.
unsafe fn ahead_slice<'s, T>(p: *const u8, len: usize) -> &'s [T] {
    match len {
        0 => &[],
        // SAFETY: the caller's contract.
        _ => unsafe { std::slice::from_raw_parts(p as *const T, len) },
    }
}

/// How a copy writes its destination.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoreMode {
    /// Plain store (ABI code 0).
    Overwrite = 0,
    /// Atomic add into GM (ABI code 1): FixPipe / MTE3 atomic mode.
    AtomicAdd = 1,
}

impl StoreMode {
    /// Decodes an ABI code.
    pub fn from_code(c: u32) -> Option<Self> {
        match c {
            0 => Some(StoreMode::Overwrite),
            1 => Some(StoreMode::AtomicAdd),
            _ => None,
        }
    }
}

/// A resolved side of an access.
struct Side {
    base: *mut u8,
    cap: u64,
    /// Accessed with atomic element operations (GM under
    /// [`crate::gm::GmAccess::Atomic`]); plain accesses otherwise.
    atomic: bool,
    offset: usize,
    stride: usize,
    dtype: DType,
    buffer: Buffer,
}

/// A unit's view for running operations.
pub(crate) struct Env<'a> {
    pub ctx: &'a KernelCtx,
    pub rt: &'a UnitRt<'a>,
}

impl<'a> Env<'a> {
    /// Builds the environment from a raw context pointer.
    ///
    /// # Safety
    /// `ctx` must be null or a `KernelCtx` built by the launcher for the
    /// calling thread, during its launch.
    pub unsafe fn from_raw(ctx: *const KernelCtx) -> Option<Env<'a>> {
        // SAFETY: caller's contract: null or valid for the launch.
        let ctx = unsafe { ctx.as_ref() }?;
        // SAFETY: the launcher sets `rt` to this thread's live UnitRt.
        let rt = unsafe { (ctx.rt as *const UnitRt<'a>).as_ref() }?;
        Some(Env { ctx, rt })
    }

    pub fn unit(&self) -> UnitKind {
        self.rt.unit
    }

    fn gm_name(&self, index: usize) -> String {
        self.rt
            .gm_names
            .get(index)
            .cloned()
            .unwrap_or_else(|| format!("gm#{index}"))
    }

    fn buffer_name(&self, side: &Side, t: &Tile) -> String {
        match side.buffer {
            Buffer::Gm => format!(
                "gm buffer {} `{}`",
                t.gm_index,
                self.gm_name(t.gm_index as usize)
            ),
            b => b.name().to_string(),
        }
    }

    /// `what`, with the op and unit when checked code registered the op.
    fn what_site(&self, what: &str) -> String {
        let rt = self.rt;
        match rt.site.get() {
            (0, _) => what.to_string(),
            _ => format!(
                "{what} in `{}` on {} of core {}",
                rt.site_or(""),
                rt.unit,
                rt.core
            ),
        }
    }

    /// Base pointer and byte size of a local buffer of this unit.
    pub fn local_base(&self, buffer: Buffer) -> Result<(*mut u8, u64), RuntimeError> {
        let c = self.ctx;
        let (p, n) = match buffer {
            Buffer::L1 => (c.l1, c.l1_bytes),
            Buffer::L0A => (c.l0a, c.l0a_bytes),
            Buffer::L0B => (c.l0b, c.l0b_bytes),
            Buffer::L0C => (c.l0c, c.l0c_bytes),
            Buffer::Ub => (c.ub, c.ub_bytes),
            Buffer::Gm => return Err(RuntimeError::BadArgument("gm is not a local buffer".into())),
        };
        if !buffer.owned_by(self.unit()) || p.is_null() {
            return Err(RuntimeError::NotOwned {
                unit: self.unit(),
                buffer,
            });
        }
        Ok((p, n))
    }

    fn resolve(&self, t: &Tile) -> Result<Side, RuntimeError> {
        if t.buffer == Buffer::Gm {
            let idx = t.gm_index as u64;
            if idx >= self.ctx.gm_count || self.ctx.gm.is_null() {
                return Err(RuntimeError::UnknownGmBuffer {
                    index: idx,
                    count: self.ctx.gm_count,
                });
            }
            // SAFETY: gm points to gm_count descriptors (launcher), idx < gm_count.
            let d = unsafe { *self.ctx.gm.add(idx as usize) };
            if d.dtype != t.dtype.code() {
                return Err(RuntimeError::DTypeMismatch {
                    buffer: self.gm_name(idx as usize),
                    expected: t.dtype,
                    actual: DType::from_code(d.dtype).unwrap_or(DType::F32),
                });
            }
            return Ok(Side {
                base: d.base,
                cap: d.len,
                // The switch point between plain and atomic GM accesses.
                atomic: self.rt.gm_access == crate::gm::GmAccess::Atomic,
                offset: t.offset,
                stride: t.stride,
                dtype: t.dtype,
                buffer: Buffer::Gm,
            });
        }
        let (base, bytes) = self.local_base(t.buffer)?;
        Ok(Side {
            base,
            cap: bytes / t.dtype.size_bytes() as u64,
            atomic: false,
            offset: t.offset,
            stride: t.stride,
            dtype: t.dtype,
            buffer: t.buffer,
        })
    }

    /// Checks that `rows × cols` at the side's offset/stride fits; returns the
    /// element range touched.
    fn bounds(
        &self,
        s: &Side,
        t: &Tile,
        rows: usize,
        cols: usize,
        what: &str,
    ) -> Result<(u64, u64), RuntimeError> {
        let start = s.offset as u64;
        let end = (rows as u64 - 1)
            .checked_mul(s.stride as u64)
            .and_then(|x| x.checked_add(start))
            .and_then(|x| x.checked_add(cols as u64));
        match end {
            Some(end) if end <= s.cap => Ok((start, end)),
            _ => Err(RuntimeError::OutOfBounds {
                what: self.what_site(what),
                buffer: self.buffer_name(s, t),
                start,
                end: end.unwrap_or(u64::MAX),
                capacity: s.cap,
            }),
        }
    }

    /// Tells the race checker (if the launch runs one) about an access to a
    /// GM side (already bounds-checked); other sides are private to the
    /// unit. Without the race checker: one branch.
    fn race_note(
        &self,
        s: &Side,
        t: &Tile,
        rows: usize,
        cols: usize,
        kind: AccessKind,
        what: &str,
    ) -> Result<(), RuntimeError> {
        let Some(race) = &self.rt.shared.race else {
            return Ok(());
        };
        if s.buffer != Buffer::Gm {
            return Ok(());
        }
        let r = Region {
            gm: t.gm_index,
            offset: s.offset as u64,
            stride: s.stride as u64,
            rows: rows as u64,
            cols: cols as u64,
        };
        self.race_access(race, &r, kind, what)
    }

    fn race_access(
        &self,
        race: &crate::race::RaceState,
        r: &Region,
        kind: AccessKind,
        what: &str,
    ) -> Result<(), RuntimeError> {
        let rt = self.rt;
        let pending = || {
            let p = rt.flags.pending(rt.core);
            if p.is_empty() {
                return "none".to_string();
            }
            p.iter()
                .map(|f| format!("flag {} ×{} for {}", f.flag, f.count, f.waiter))
                .collect::<Vec<_>>()
                .join(", ")
        };
        race.access(rt.core, rt.unit, r, kind, rt.site_or(what), &pending)
    }

    /// Records a GM access of this unit with the race checker, if the launch
    /// runs one (JIT code's own GM accesses come here through
    /// `amla_rt_note_gm`); the op is the registered site, else `what`.
    ///
    /// Also checks that the region lies inside the GM buffer, so a JIT GM
    /// access of checked code is verified by the runtime like its copies.
    pub fn note_gm(&self, r: &Region, kind: AccessKind, what: &str) -> Result<(), RuntimeError> {
        let rt = self.rt;
        let idx = u64::from(r.gm);
        if idx >= self.ctx.gm_count || self.ctx.gm.is_null() {
            return Err(RuntimeError::UnknownGmBuffer {
                index: idx,
                count: self.ctx.gm_count,
            });
        }
        // SAFETY: gm points to gm_count descriptors (launcher), idx < gm_count.
        let len = unsafe { (*self.ctx.gm.add(idx as usize)).len };
        if r.rows > 0 && r.cols > 0 {
            let end = r.end();
            if end.is_none_or(|e| e > len) {
                return Err(RuntimeError::OutOfBounds {
                    what: format!("{} on {} of core {}", rt.site_or(what), rt.unit, rt.core),
                    buffer: format!("gm buffer {idx} `{}`", self.gm_name(idx as usize)),
                    start: r.offset,
                    end: end.unwrap_or(u64::MAX),
                    capacity: len,
                });
            }
        }
        match &rt.shared.race {
            Some(race) => self.race_access(race, r, kind, what),
            None => Ok(()),
        }
    }

    /// Copies `rows × cols` elements from `src` to `dst`, converting dtypes
    /// (float ↔ float, round to nearest even) and storing or atomically adding.
    pub fn copy(
        &self,
        dst: &Tile,
        src: &Tile,
        rows: usize,
        cols: usize,
        mode: StoreMode,
    ) -> Result<(), RuntimeError> {
        let pipe = Pipe::for_copy(src.buffer, dst.buffer);
        let t0 = self.rt.now_ns();
        let d = self.resolve(dst)?;
        let s = self.resolve(src)?;
        if !conversion_supported(s.dtype, d.dtype) {
            return Err(RuntimeError::BadArgument(format!(
                "copy: no conversion from {} to {}",
                s.dtype, d.dtype
            )));
        }
        if mode == StoreMode::AtomicAdd && dst.buffer != Buffer::Gm {
            return Err(RuntimeError::BadArgument(format!(
                "copy: atomic add needs a GM destination, not {}",
                dst.buffer
            )));
        }
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        if d.stride < cols {
            return Err(RuntimeError::BadArgument(format!(
                "copy: destination stride {} < cols {cols} (rows would overlap)",
                d.stride
            )));
        }
        let (ds, de) = self.bounds(&d, dst, rows, cols, "copy destination")?;
        let (ss, se) = self.bounds(&s, src, rows, cols, "copy source")?;
        if !d.atomic && d.base == s.base {
            let esz = |x: u64, s: &Side| x * s.dtype.size_bytes() as u64;
            if esz(ds, &d) < esz(se, &s) && esz(ss, &s) < esz(de, &d) {
                return Err(RuntimeError::BadArgument(format!(
                    "copy: source and destination overlap in {}",
                    dst.buffer
                )));
            }
        }
        self.race_note(&s, src, rows, cols, AccessKind::Read, "copy source")?;
        let dkind = match mode {
            StoreMode::AtomicAdd => AccessKind::Update,
            StoreMode::Overwrite => AccessKind::Write,
        };
        self.race_note(&d, dst, rows, cols, dkind, "copy destination")?;
        // SAFETY: both regions were bounds-checked against their buffers;
        // local buffers belong to this thread; GM is accessed atomically or,
        // under GmAccess::Ordered, by a schedule that orders conflicting
        // accesses; plain source and destination do not overlap (checked above).
        unsafe { copy_dispatch(&s, &d, rows, cols, mode) };
        let bytes = (rows * cols * s.dtype.size_bytes()) as u64;
        self.rt.record(
            pipe,
            || {
                format!(
                    "copy {}->{}{}",
                    src.buffer,
                    dst.buffer,
                    if mode == StoreMode::AtomicAdd {
                        " (atomic add)"
                    } else {
                        ""
                    }
                )
            },
            t0,
            bytes,
            0,
        );
        Ok(())
    }

    /// `C (+)= A·B` with A at element `a_off` of L0A, B at `b_off` of L0B and
    /// C (f32) at `c_off` of L0C, shapes and strides from `g`.
    pub fn matmul(
        &self,
        g: &Gemm,
        dtype: DType,
        a_off: usize,
        b_off: usize,
        c_off: usize,
    ) -> Result<MatmulPath, RuntimeError> {
        self.matmul_folded(
            g,
            dtype,
            MatmulSrc::local(Buffer::L0A, a_off),
            MatmulSrc::local(Buffer::L0B, b_off),
            c_off,
            Folded::NONE,
        )
    }

    /// Records a GM → UB load of `bytes` bytes that fused Vector code
    /// reads in GM in place instead of copying (MTE2: one call, its bytes,
    /// no busy time), so the per-pipe statistics count the program's loads.
    pub fn note_read_in_place(&self, bytes: u64) {
        let t0 = self.rt.now_ns();
        self.rt.record_parts(
            Pipe::Mte2,
            || format!("copy {FUSED_READ_PATH}"),
            t0,
            t0,
            1,
            bytes,
            0,
        );
    }

    /// [`Env::matmul`] with A read from L0A, L1 or GM and B from L0B, L1 or
    /// GM, at the given element offsets: a matmul into which the compiler
    /// folded the L1 → L0 copies of its operands (and the GM → L1 loads
    /// before them), and possibly a chain of matmuls accumulating into one
    /// C over consecutive K ranges (`fold` says how many of each, so the
    /// per-pipe statistics count what the program did). The copies' bytes
    /// are recorded on MTE1, the loads' on MTE2, with no busy time (the
    /// packing of the micro-kernel does their work).
    pub fn matmul_folded(
        &self,
        g: &Gemm,
        dtype: DType,
        a_src: MatmulSrc,
        b_src: MatmulSrc,
        c_off: usize,
        fold: Folded,
    ) -> Result<MatmulPath, RuntimeError> {
        let t0 = self.rt.now_ns();
        if !matches!(dtype, DType::Bf16 | DType::F16) {
            return Err(RuntimeError::BadArgument(format!(
                "matmul inputs must be bf16 or f16, not {dtype}"
            )));
        }
        let (a_buf, b_buf) = (a_src.buffer, b_src.buffer);
        if !matches!(a_buf, Buffer::L0A | Buffer::L1 | Buffer::Gm)
            || !matches!(b_buf, Buffer::L0B | Buffer::L1 | Buffer::Gm)
        {
            return Err(RuntimeError::BadArgument(format!(
                "matmul operands in {a_buf} and {b_buf} (needs l0a, l1 or gm, l0b, l1 or gm)"
            )));
        }
        if fold.parts == 0 {
            return Err(RuntimeError::BadArgument("matmul of 0 parts".into()));
        }
        let (al, bl, cl) = g.required_lens()?;
        let region = |src: MatmulSrc,
                      len: usize,
                      dt: DType,
                      (rows, cols, ld): (usize, usize, usize),
                      what: &str|
         -> Result<*mut u8, RuntimeError> {
            let (buffer, off) = (src.buffer, src.offset);
            let (base, cap) = if buffer == Buffer::Gm {
                let t = Tile {
                    buffer,
                    gm_index: src.gm_index,
                    offset: off,
                    stride: ld,
                    dtype: dt,
                };
                let s = self.resolve(&t)?;
                if len > 0 {
                    let kind = if what == "C" {
                        AccessKind::Update
                    } else {
                        AccessKind::Read
                    };
                    self.race_note(&s, &t, rows, cols, kind, "matmul operand")?;
                }
                (s.base, s.cap)
            } else {
                let (base, bytes) = self.local_base(buffer)?;
                (base, bytes / dt.size_bytes() as u64)
            };
            let end = (off as u64).checked_add(len as u64);
            match end {
                Some(e) if e <= cap => {
                    // SAFETY: off + len <= cap elements of the buffer.
                    Ok(unsafe { base.add(off * dt.size_bytes()) })
                }
                _ => Err(RuntimeError::OutOfBounds {
                    what: format!("matmul {what}"),
                    buffer: match buffer {
                        Buffer::Gm => format!(
                            "gm buffer {} `{}`",
                            src.gm_index,
                            self.gm_name(src.gm_index as usize)
                        ),
                        b => b.name().into(),
                    },
                    start: off as u64,
                    end: end.unwrap_or(u64::MAX),
                    capacity: cap,
                }),
            }
        };
        let b_rc = match g.b_layout {
            matmul::BLayout::KN => (g.k, g.n, g.ldb),
            matmul::BLayout::NK => (g.n, g.k, g.ldb),
        };
        let a = region(a_src, al, dtype, (g.m, g.k, g.lda), "A")?;
        let b = region(b_src, bl, dtype, b_rc, "B")?;
        // A B read in GM in place is a stream (the next KV block follows
        // this one): the call asks the caches for the rows after it, as
        // many as it reads, inside the tensor.
        let ahead_len = if b_buf == Buffer::Gm {
            let t = Tile {
                buffer: Buffer::Gm,
                gm_index: b_src.gm_index,
                offset: b_src.offset,
                stride: g.ldb,
                dtype,
            };
            let cap = self.resolve(&t)?.cap as usize;
            let span = b_rc.0 * b_rc.2;
            span.min(cap.saturating_sub(b_src.offset + span))
        } else {
            0
        };
        // C in GM when the store is folded and GM accesses are plain (the
        // schedule orders them): the micro-kernel writes it there.
        let direct = fold.store.filter(|s| {
            self.rt.gm_access == crate::gm::GmAccess::Ordered
                && !(s.mode == StoreMode::AtomicAdd && g.mode == AccumMode::Accumulate)
        });
        let gd;
        let (g, cl, c_src) = match direct {
            Some(s) => {
                let mode = match s.mode {
                    StoreMode::Overwrite => g.mode,
                    StoreMode::AtomicAdd => AccumMode::AddAfter,
                };
                gd = Gemm {
                    ldc: s.ld,
                    mode,
                    ..*g
                };
                let c_src = MatmulSrc {
                    buffer: Buffer::Gm,
                    gm_index: s.gm_index,
                    offset: s.offset,
                };
                (&gd, gd.required_lens()?.2, c_src)
            }
            None => (g, cl, MatmulSrc::local(Buffer::L0C, c_off)),
        };
        let c = region(c_src, cl, DType::F32, (g.m, g.n, g.ldc), "C")?;
        if fold.loads > 0 {
            self.rt.record_parts(
                Pipe::Mte2,
                || format!("copy {FOLDED_LOAD_PATH}"),
                t0,
                t0,
                fold.loads,
                fold.load_bytes,
                0,
            );
        }
        if fold.copies > 0 {
            self.rt.record_parts(
                Pipe::Mte1,
                || format!("copy {FOLDED_COPY_PATH}"),
                t0,
                t0,
                fold.copies,
                fold.copy_bytes,
                0,
            );
        }
        // SAFETY: the three regions are in-bounds and suitably aligned
        // (64-byte bases, element offsets); C is in L0C, owned by this
        // thread, or (a folded store under plain GM accesses) in a GM
        // region the schedule gives this unit alone until its flags say
        // otherwise; A and B (only read) are in other local buffers of this
        // thread or in GM tensors nothing writes during the call
        // (`MatmulSrc`), and no mutable reference to them is live during
        // the call. The `ahead` rows follow B inside its GM tensor
        // (`ahead_len` is clamped to its capacity; 0, an empty slice, for a
        // local B).
        let path = unsafe {
            let c = std::slice::from_raw_parts_mut(c as *mut f32, cl);
            let after_b = b.wrapping_add(b_rc.0 * b_rc.2 * dtype.size_bytes());
            match dtype {
                DType::Bf16 => matmul::matmul_with_path_ahead(
                    self.rt.matmul_path,
                    g,
                    std::slice::from_raw_parts(a as *const bf16, al),
                    std::slice::from_raw_parts(b as *const bf16, bl),
                    c,
                    ahead_slice::<bf16>(after_b, ahead_len),
                ),
                _ => matmul::matmul_with_path_ahead(
                    self.rt.matmul_path,
                    g,
                    std::slice::from_raw_parts(a as *const f16, al),
                    std::slice::from_raw_parts(b as *const f16, bl),
                    c,
                    ahead_slice::<f16>(after_b, ahead_len),
                ),
            }
        }
        .map(|()| self.rt.matmul_path)?;
        let bytes = ((g.m * g.k + g.k * g.n) * dtype.size_bytes()) as u64;
        let part_k = g.k.div_ceil(fold.parts as usize);
        self.rt.record_parts(
            Pipe::Cube,
            || format!("matmul {}x{}x{part_k}", g.m, g.n),
            t0,
            self.rt.now_ns(),
            fold.parts,
            bytes,
            g.flops(),
        );
        match fold.store {
            Some(_) if direct.is_some() => {
                let t1 = self.rt.now_ns();
                let bytes = (g.m * g.n * DType::F32.size_bytes()) as u64;
                self.rt.record_parts(
                    Pipe::FixPipe,
                    || format!("copy {FOLDED_STORE_PATH}"),
                    t1,
                    t1,
                    1,
                    bytes,
                    0,
                );
            }
            Some(s) => {
                let dst = Tile {
                    buffer: Buffer::Gm,
                    gm_index: s.gm_index,
                    offset: s.offset,
                    stride: s.ld,
                    dtype: DType::F32,
                };
                let src = Tile {
                    buffer: Buffer::L0C,
                    gm_index: 0,
                    offset: c_off,
                    stride: g.ldc,
                    dtype: DType::F32,
                };
                self.copy(&dst, &src, g.m, g.n, s.mode)?;
            }
            None => {}
        }
        Ok(path)
    }

    fn flag_error(&self, e: FlagError, id: u32, block: u64) -> RuntimeError {
        let rt = self.rt;
        match e {
            FlagError::Timeout(peers) => RuntimeError::FlagTimeout {
                kernel: rt.kernel.to_string(),
                core: rt.core,
                unit: rt.unit,
                flag: id,
                block,
                timeout: rt.timeout,
                peers,
            },
            FlagError::NeverSet(reason) => RuntimeError::FlagNeverSet {
                kernel: rt.kernel.to_string(),
                core: rt.core,
                unit: rt.unit,
                flag: id,
                block,
                reason,
            },
            FlagError::Aborted => RuntimeError::Aborted {
                kernel: rt.kernel.to_string(),
                core: rt.core,
                unit: rt.unit,
            },
            FlagError::BadId => RuntimeError::BadArgument(format!("flag id {id} is out of range")),
            FlagError::BadUnit => {
                RuntimeError::Internal(format!("{} is not a unit of this core", rt.unit))
            }
            FlagError::Overflow => RuntimeError::BadArgument(format!("flag {id} counter overflow")),
        }
    }

    /// Sets cross-core flag `id` (see [`crate::flags`] for pair semantics).
    pub fn set_flag(&self, id: u32) -> Result<(), RuntimeError> {
        let t0 = self.rt.now_ns();
        if let Some(race) = &self.rt.shared.race {
            race.before_set(self.rt.core, self.unit(), id);
        }
        self.rt
            .flags
            .set(self.unit(), id)
            .map_err(|e| self.flag_error(e, id, 0))?;
        self.rt
            .record(Pipe::FlagSet, || format!("set_flag {id}"), t0, 0, 0);
        Ok(())
    }

    /// Waits on cross-core flag `id`; `block` names the iteration in errors.
    /// A wait that blocks gives the host CPU to other units meanwhile
    /// ([`crate::ctx::UnitRt::block_on_flag`]).
    pub fn wait_flag(&self, id: u32, block: u64) -> Result<(), RuntimeError> {
        let t0 = self.rt.now_ns();
        let rt = self.rt;
        let r = match rt.flags.try_wait(self.unit(), id) {
            Ok(true) => Ok(()),
            Ok(false) => rt.block_on_flag(id, block),
            Err(e) => Err(e),
        };
        if r.is_ok()
            && let Some(race) = &rt.shared.race
        {
            race.after_wait(rt.core, self.unit(), id);
        }
        self.rt.record(
            Pipe::FlagWait,
            || format!("wait_flag {id} (block {block})"),
            t0,
            0,
            0,
        );
        r.map_err(|e| self.flag_error(e, id, block))
    }

    /// Multiplies row `r` of the f32 GM region `dst` (`rows × cols`) by
    /// `2^n[r]` with [`exp2_scale_bits`], atomically per element; `n` is
    /// `rows` contiguous i32 values at `n_tile` (any readable buffer).
    pub fn exp2_scale_gm(
        &self,
        dst: &Tile,
        rows: usize,
        cols: usize,
        n_tile: &Tile,
    ) -> Result<(), RuntimeError> {
        let t0 = self.rt.now_ns();
        if dst.buffer != Buffer::Gm || dst.dtype != DType::F32 {
            return Err(RuntimeError::BadArgument(
                "exp2_scale_gm: destination must be an f32 GM region".into(),
            ));
        }
        if n_tile.dtype != DType::I32 {
            return Err(RuntimeError::BadArgument(
                "exp2_scale_gm: exponents must be i32".into(),
            ));
        }
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        if dst.stride < cols {
            return Err(RuntimeError::BadArgument(
                "exp2_scale_gm: stride < cols".into(),
            ));
        }
        let d = self.resolve(dst)?;
        self.bounds(&d, dst, rows, cols, "exp2_scale_gm destination")?;
        let n = self.resolve(&Tile {
            stride: 1,
            ..*n_tile
        })?;
        self.bounds(&n, n_tile, 1, rows, "exp2_scale_gm exponents")?;
        self.race_note(&n, n_tile, 1, rows, AccessKind::Read, "exp2_scale_gm")?;
        self.race_note(&d, dst, rows, cols, AccessKind::Update, "exp2_scale_gm")?;
        for r in 0..rows {
            // SAFETY: r < rows elements at n.offset were bounds-checked.
            let np = unsafe { (n.base as *const i32).add(n.offset + r) };
            // SAFETY: as above; GM is read atomically, local memory is ours.
            let nr = unsafe { if n.atomic { i32::load_shared(np) } else { *np } };
            if !d.atomic {
                // SAFETY: row r of the bounds-checked f32 region; plain GM
                // access under GmAccess::Ordered (see crate::gm::GmAccess).
                let row = unsafe {
                    std::slice::from_raw_parts_mut(
                        (d.base as *mut f32).add(d.offset + r * d.stride),
                        cols,
                    )
                };
                for x in row {
                    *x = exp2_scale_bits(*x, nr);
                }
                continue;
            }
            for c in 0..cols {
                // SAFETY: (r, c) is inside the bounds-checked f32 GM region;
                // the atomic CAS loop keeps concurrent GM access defined.
                unsafe {
                    let p = (d.base as *mut f32).add(d.offset + r * d.stride + c);
                    let a = std::sync::atomic::AtomicU32::from_ptr(p.cast());
                    let _ = a.fetch_update(
                        std::sync::atomic::Ordering::Relaxed,
                        std::sync::atomic::Ordering::Relaxed,
                        |b| Some(exp2_scale_bits(f32::from_bits(b), nr).to_bits()),
                    );
                }
            }
        }
        self.rt.record(
            Pipe::Mte3,
            || "exp2_scale_gm".into(),
            t0,
            (rows * cols * 4) as u64,
            0,
        );
        Ok(())
    }
}

/// # Safety
/// As [`copy_rows`].
unsafe fn copy_dispatch(s: &Side, d: &Side, rows: usize, cols: usize, mode: StoreMode) {
    // SAFETY: forwarded.
    unsafe {
        match s.dtype {
            DType::F32 => copy_to::<f32>(s, d, rows, cols, mode),
            DType::Bf16 => copy_to::<bf16>(s, d, rows, cols, mode),
            DType::F16 => copy_to::<f16>(s, d, rows, cols, mode),
            DType::I32 => copy_to::<i32>(s, d, rows, cols, mode),
        }
    }
}

/// # Safety
/// As [`copy_rows`].
unsafe fn copy_to<S: Element>(s: &Side, d: &Side, rows: usize, cols: usize, mode: StoreMode) {
    // SAFETY: forwarded.
    unsafe {
        match d.dtype {
            DType::F32 => copy_rows::<S, f32>(s, d, rows, cols, mode),
            DType::Bf16 => copy_rows::<S, bf16>(s, d, rows, cols, mode),
            DType::F16 => copy_rows::<S, f16>(s, d, rows, cols, mode),
            DType::I32 => copy_rows::<S, i32>(s, d, rows, cols, mode),
        }
    }
}

/// # Safety
/// Both regions must be in bounds of their buffers, `s.dtype == S::DTYPE`,
/// `d.dtype == D::DTYPE`; plain (non-atomic) regions must not be accessed by
/// another thread during the call and must not overlap each other; atomic
/// sides are only accessed atomically.
unsafe fn copy_rows<S: Element, D: Element>(
    s: &Side,
    d: &Side,
    rows: usize,
    cols: usize,
    mode: StoreMode,
) {
    if !s.atomic && !d.atomic {
        // SAFETY: forwarded.
        unsafe { copy_rows_plain::<S, D>(s, d, rows, cols, mode) };
        return;
    }
    for r in 0..rows {
        // SAFETY: row r of both regions is in bounds (caller).
        let (sp, dp) = unsafe {
            (
                (s.base as *const S).add(s.offset + r * s.stride),
                (d.base as *mut D).add(d.offset + r * d.stride),
            )
        };
        if !s.atomic && !d.atomic && S::DTYPE == D::DTYPE {
            // SAFETY: same type, in bounds, non-overlapping local regions.
            unsafe { std::ptr::copy_nonoverlapping(sp as *const D, dp, cols) };
            continue;
        }
        for c in 0..cols {
            // SAFETY: element c of row r is in bounds; GM accesses are atomic.
            unsafe {
                let v: S = if s.atomic {
                    S::load_shared(sp.add(c))
                } else {
                    *sp.add(c)
                };
                let v: D = convert(v);
                match mode {
                    StoreMode::AtomicAdd => D::atomic_add_shared(dp.add(c), v),
                    StoreMode::Overwrite if d.atomic => D::store_shared(dp.add(c), v),
                    StoreMode::Overwrite => *dp.add(c) = v,
                }
            }
        }
    }
}

/// Plain copy: `memcpy` for the same dtype, a converting loop otherwise, and
/// for [`StoreMode::AtomicAdd`] a plain read-add-write loop (f32 adds in f32,
/// the same operation the atomic path performs, element by element).
///
/// # Safety
/// As [`copy_rows`], with both sides plain.
unsafe fn copy_rows_plain<S: Element, D: Element>(
    s: &Side,
    d: &Side,
    rows: usize,
    cols: usize,
    mode: StoreMode,
) {
    for r in 0..rows {
        // SAFETY: row r of both regions is in bounds and not shared during
        // the call (caller); the regions do not overlap.
        let (src, dst) = unsafe {
            (
                std::slice::from_raw_parts((s.base as *const S).add(s.offset + r * s.stride), cols),
                std::slice::from_raw_parts_mut(
                    (d.base as *mut D).add(d.offset + r * d.stride),
                    cols,
                ),
            )
        };
        match mode {
            StoreMode::Overwrite if S::DTYPE == D::DTYPE => {
                // SAFETY: same type (checked), same length, no overlap.
                unsafe {
                    std::ptr::copy_nonoverlapping(src.as_ptr() as *const D, dst.as_mut_ptr(), cols)
                };
            }
            StoreMode::Overwrite => {
                for (o, &v) in dst.iter_mut().zip(src) {
                    *o = convert(v);
                }
            }
            StoreMode::AtomicAdd if S::DTYPE == DType::F32 && D::DTYPE == DType::F32 => {
                // SAFETY: both are f32 (checked); same lengths.
                let (dst, src) = unsafe {
                    (
                        std::slice::from_raw_parts_mut(dst.as_mut_ptr() as *mut f32, cols),
                        std::slice::from_raw_parts(src.as_ptr() as *const f32, cols),
                    )
                };
                add_f32(dst, src);
            }
            StoreMode::AtomicAdd => {
                for (o, &v) in dst.iter_mut().zip(src) {
                    *o = o.plain_add(convert(v));
                }
            }
        }
    }
}

/// `dst[i] += src[i]` in f32 (the same sums at any vector width), with
/// AVX-512 where the CPU has it.
fn add_f32(dst: &mut [f32], src: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: avx512f detected just above.
        unsafe { add_f32_avx512(dst, src) };
        return;
    }
    add_f32_portable(dst, src);
}

fn add_f32_portable(dst: &mut [f32], src: &[f32]) {
    for (o, &v) in dst.iter_mut().zip(src) {
        *o += v;
    }
}

/// # Safety
/// The CPU must support `avx512f`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn add_f32_avx512(dst: &mut [f32], src: &[f32]) {
    use std::arch::x86_64::*;
    let n = dst.len().min(src.len());
    let full = n / 16 * 16;
    for i in (0..full).step_by(16) {
        // SAFETY: i + 16 <= n elements of both slices; unaligned accesses.
        unsafe {
            let d = dst.as_mut_ptr().add(i);
            let v = _mm512_add_ps(_mm512_loadu_ps(d), _mm512_loadu_ps(src.as_ptr().add(i)));
            _mm512_storeu_ps(d, v);
        }
    }
    add_f32_portable(&mut dst[full..n], &src[full..n]);
}

#[cfg(test)]
mod add_tests {
    use super::*;

    /// The AVX-512 add gives the portable loop's bits, tails included.
    #[test]
    fn avx512_f32_add_matches_portable() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            for n in [0, 1, 15, 16, 17, 64, 100] {
                let src: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 1e3).collect();
                let base: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos() + 1e-3).collect();
                let mut want = base.clone();
                add_f32_portable(&mut want, &src);
                let mut got = base.clone();
                // SAFETY: avx512f detected above.
                unsafe { add_f32_avx512(&mut got, &src) };
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "n = {n}");
            }
            return;
        }
        eprintln!("avx512f not available: the AVX-512 add was not run");
    }
}
