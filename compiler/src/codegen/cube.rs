//! Ops done by runtime calls: GM ↔ local copies (`load`, `store`,
//! `atomic_add`), local ↔ local moves (`copy`, `extract`, loop-carried tile
//! moves), `matmul`, and scalar GM accesses.
//!
//! A GM (or tile) access is a box: per dim a start, a static length, or a
//! point. The box is clamped to the tensor (`[start, start+len) ∩ [0,
//! dim)`); the innermost dim is the copy's columns, the innermost other
//! non-unit dim its rows, and any remaining non-unit dims are unrolled into
//! one call each (at most [`MAX_UNROLLED_COPIES`]). Loads zero-fill the whole
//! tile first when the box is clamped, so elements past the end read 0;
//! stores just drop them.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{self as cl, InstBuilder, types};

use super::func::{FnCx, TileRef, mf};
use super::{CodegenError, Result, abi, simd_math};
use crate::ir::{BLayout, DType, Index, Inst, InstKind, Space, Value};

/// Most runtime copies one access may unroll into (outer box dims).
pub const MAX_UNROLLED_COPIES: u64 = 4096;

/// One dim of a box access, on the "big" side (GM tensor or source tile).
#[derive(Clone, Copy)]
pub(crate) struct BoxDim {
    pub start: cl::Value,
    pub len: u64,
    pub point: bool,
    pub dim: cl::Value,
    pub stride: cl::Value,
}

/// One rectangular piece of a box access, in elements.
#[derive(Clone, Copy)]
pub(crate) struct Piece {
    /// Offset on the big side (GM tensor or source tile base included).
    pub big_off: cl::Value,
    /// Row stride on the big side.
    pub big_stride: cl::Value,
    /// Offset inside the dense tile (relative to the tile's start).
    pub tile_off: cl::Value,
    /// Row stride of the dense tile.
    pub tile_stride: u64,
    pub rows: cl::Value,
    pub cols: cl::Value,
}

fn buf_code(space: Space, op: &str) -> Result<u32> {
    abi::local_buffer(space)
        .map(|x| x.2)
        .ok_or_else(|| CodegenError::invalid(op, format!("{space} is not a local buffer")))
}

fn dt_code(d: DType, op: &str) -> Result<u32> {
    abi::dtype_code(d).ok_or_else(|| {
        CodegenError::unsupported(op, "bool tiles cannot go through the runtime's copies")
    })
}

impl FnCx<'_, '_> {
    /// The box dims of an access to a GM tensor.
    pub(crate) fn gm_box(
        &mut self,
        t: crate::ir::Tensor,
        index: &[Index],
        op: &str,
    ) -> Result<Vec<BoxDim>> {
        let g = self
            .gm
            .get(&t)
            .cloned()
            .ok_or_else(|| CodegenError::invalid(op, "tensor not set up"))?;
        let td = &self.k.tensors[t];
        if index.len() != td.shape.len() {
            return Err(CodegenError::invalid(op, "one index per tensor dim"));
        }
        let mut out = Vec::new();
        for (n, ix) in index.iter().enumerate() {
            let stat = match td.shape[n] {
                crate::ir::Dim::Const(c) => Some(c),
                crate::ir::Dim::Sym(d) => self.k.dims[d].value,
            };
            out.push(self.box_dim(ix, stat, g.dims[n], g.strides[n], op)?);
        }
        Ok(out)
    }

    fn box_dim(
        &mut self,
        ix: &Index,
        stat: Option<u64>,
        dim: cl::Value,
        stride: cl::Value,
        op: &str,
    ) -> Result<BoxDim> {
        Ok(match ix {
            Index::Point(v) => {
                let start = self.index_start(*v, op)?;
                self.check_index(start, dim)?;
                BoxDim {
                    start,
                    len: 1,
                    point: true,
                    dim,
                    stride,
                }
            }
            Index::Range { start, len } => {
                // Not checked: a window is clamped to the dim as the IR
                // defines, and may even start past the end (the last block
                // of a causal or sliding-window loop reads zeros, masked).
                let start = self.index_start(*start, op)?;
                BoxDim {
                    start,
                    len: *len,
                    point: false,
                    dim,
                    stride,
                }
            }
            Index::Full => BoxDim {
                start: self.i64c(0),
                len: stat.ok_or_else(|| {
                    CodegenError::invalid(op, "`..` over a dim with no static extent")
                })?,
                point: false,
                dim,
                stride,
            },
        })
    }

    /// Emits the pieces of a box access: `body` runs once per non-empty
    /// piece; `fill` (a tile) is zero-filled first when the box is clamped.
    pub(crate) fn emit_box(
        &mut self,
        dims: &[BoxDim],
        big_base: cl::Value,
        fill: Option<&TileRef>,
        tile_row_stride: Option<u64>,
        op: &str,
        body: &mut dyn FnMut(&mut Self, Piece) -> Result<()>,
    ) -> Result<()> {
        let n = dims.len();
        if n == 0 {
            return Err(CodegenError::invalid(op, "a box needs a dim"));
        }
        let mut lo = Vec::new();
        let mut skip = Vec::new();
        let mut ext = Vec::new();
        for d in dims {
            let (l, s, e) = self.clamp_dim(d.start, d.len, d.dim);
            lo.push(l);
            skip.push(s);
            ext.push(e);
        }
        // Dense tile strides over the non-point dims.
        let mut tstride = vec![0u64; n];
        let mut acc = 1u64;
        for i in (0..n).rev() {
            if !dims[i].point {
                tstride[i] = acc;
                acc = acc.saturating_mul(dims[i].len);
            }
        }
        let np: Vec<usize> = (0..n).filter(|&i| !dims[i].point).collect();
        if let (Some(rs), [r, _]) = (tile_row_stride, np.as_slice()) {
            tstride[*r] = rs;
        } else if tile_row_stride.is_some_and(|rs| np.len() == 1 && rs != dims[np[0]].len) {
            return Err(CodegenError::unsupported(op, "a strided view of this rank"));
        }
        if let Some(t) = fill {
            if !t.dense() {
                return Err(CodegenError::unsupported(op, "zero-filling a strided view"));
            }
            let mut partial = self.b.ins().iconst(types::I8, 0);
            for i in 0..n {
                let c = self
                    .b
                    .ins()
                    .icmp_imm_s(IntCC::NotEqual, ext[i], dims[i].len as i64);
                partial = self.b.ins().bor(partial, c);
            }
            let t = t.clone();
            self.if_then(partial, &mut |s| {
                let p = s.tile_ptr(&t, op)?;
                simd_math::emit_zero_fill(&mut s.b, p, t.ty.bytes());
                Ok(())
            })?;
        }
        let c = n - 1;
        let r = (0..c).rev().find(|&i| dims[i].len > 1);
        let outer: Vec<usize> = (0..c)
            .filter(|&i| dims[i].len > 1 && Some(i) != r)
            .collect();
        let combos: u64 = outer.iter().map(|&i| dims[i].len).product();
        if combos > MAX_UNROLLED_COPIES {
            return Err(CodegenError::unsupported(
                op,
                format!("an access of {combos} separate rows-by-cols pieces"),
            ));
        }
        let mut o = vec![0u64; n];
        for combo in 0..combos {
            let mut rem = combo;
            for &i in outer.iter().rev() {
                o[i] = rem % dims[i].len;
                rem /= dims[i].len;
            }
            // Non-empty condition.
            let mut ok = self.b.ins().iconst(types::I8, 1);
            for i in 0..n {
                let need = if outer.contains(&i) { o[i] as i64 } else { 0 };
                let cnd = self
                    .b
                    .ins()
                    .icmp_imm_s(IntCC::SignedGreaterThan, ext[i], need);
                ok = self.b.ins().band(ok, cnd);
            }
            let mut big_off = big_base;
            let mut tile_off = self.i64c(0);
            for i in 0..n {
                let pos = self.b.ins().iadd_imm_s(lo[i], o[i] as i64);
                let t = self.b.ins().imul(pos, dims[i].stride);
                big_off = self.b.ins().iadd(big_off, t);
                if !dims[i].point {
                    let p = self.b.ins().iadd_imm_s(skip[i], o[i] as i64);
                    let t = self.b.ins().imul_imm_s(p, tstride[i] as i64);
                    tile_off = self.b.ins().iadd(tile_off, t);
                }
            }
            let cols = ext[c];
            let (rows, big_stride, tile_stride) = match r {
                Some(r) => (ext[r], dims[r].stride, tstride[r]),
                None => (self.i64c(1), cols, dims[c].len),
            };
            let piece = Piece {
                big_off,
                big_stride,
                tile_off,
                tile_stride,
                rows,
                cols,
            };
            self.if_then(ok, &mut |s| body(s, piece))?;
        }
        Ok(())
    }

    pub(crate) fn emit_load(&mut self, i: Inst) -> Result<()> {
        if self.matmul_fold.loads.contains(&i) {
            return self.emit_folded_load(i);
        }
        self.emit_load_copy(i)
    }

    /// A load whose matmuls read GM in place (`matmul_fold`): when the box
    /// lies inside the tensor, nothing is copied (its matmul calls get the
    /// tensor's address); else it is copied into L1 (zero-filled) as any
    /// load, and they read L1.
    fn emit_folded_load(&mut self, i: Inst) -> Result<()> {
        let InstKind::Load { tensor, index } = self.k.kind(i) else {
            return Err(CodegenError::invalid("load", "not a load"));
        };
        let (tensor, index) = (*tensor, index.clone());
        let r = self.k.insts[i].results[0];
        let t = self.tile(r, "load")?;
        let (full, gm_off, row_stride) = self.gm_target(tensor, &index, "load")?;
        let src = super::matmul_fold::GmSrc {
            full,
            gm_off,
            row_stride,
            gm_index: self.gm[&tensor].index,
            l1_off: t.elem_off("load")?,
            l1_stride: t.stride,
            bytes: t.ty.bytes(),
        };
        let partial = self.b.ins().icmp_imm_s(IntCC::Equal, full, 0);
        self.if_then(partial, &mut |s| s.emit_load_copy(i))?;
        self.matmul_fold.gm_src.insert(r, src);
        self.matmul_fold.uncounted_loads.insert(r);
        Ok(())
    }

    /// Where the box `index` of `tensor` (two ranges) lies in GM at run
    /// time: whether it lies inside the tensor (i8 0/1), the element
    /// offset of its first element, the tensor's stride between its rows.
    fn gm_target(
        &mut self,
        tensor: crate::ir::Tensor,
        index: &[crate::ir::Index],
        op: &str,
    ) -> Result<(cl::Value, cl::Value, cl::Value)> {
        let dims = self.gm_box(tensor, index, op)?;
        let mut full = self.b.ins().iconst(types::I8, 1);
        let mut gm_off = self.i64c(0);
        for d in &dims {
            let (lo, _, ext) = self.clamp_dim(d.start, d.len, d.dim);
            let whole = self.b.ins().icmp_imm_s(IntCC::Equal, ext, d.len as i64);
            full = self.b.ins().band(full, whole);
            let o = self.b.ins().imul(lo, d.stride);
            gm_off = self.b.ins().iadd(gm_off, o);
        }
        let row = dims
            .iter()
            .find(|d| !d.point)
            .ok_or_else(|| CodegenError::invalid(op, "a folded GM box needs two ranges"))?;
        Ok((full, gm_off, row.stride))
    }

    fn emit_load_copy(&mut self, i: Inst) -> Result<()> {
        let InstKind::Load { tensor, index } = self.k.kind(i) else {
            return Err(CodegenError::invalid("load", "not a load"));
        };
        let r = self.k.insts[i].results[0];
        let t = self.tile(r, "load")?;
        let dims = self.gm_box(*tensor, index, "load")?;
        if t.ty.space == Space::Gm {
            return self.jit_gm_copy(*tensor, &dims, &t, true, "load");
        }
        let gm_index = self.gm[tensor].index;
        let (buf, dt, eoff) = (
            buf_code(t.ty.space, "load")?,
            dt_code(t.ty.dtype, "load")?,
            t.elem_off("load")?,
        );
        let zero = self.i64c(0);
        let trs = Some(t.stride);
        self.emit_box(&dims, zero, Some(&t), trs, "load", &mut |s, p| {
            let gi = s.i32c(gm_index as i64);
            let bufv = s.i32c(buf as i64);
            let dtv = s.i32c(dt as i64);
            let doff = s.b.ins().iadd_imm_s(p.tile_off, eoff as i64);
            let ds = s.i64c(p.tile_stride as i64);
            s.call(
                "amla_rt_copy_gm_to_local",
                &[
                    gi,
                    p.big_off,
                    p.big_stride,
                    bufv,
                    doff,
                    ds,
                    dtv,
                    p.rows,
                    p.cols,
                ],
            )
        })
    }

    pub(crate) fn emit_store(&mut self, i: Inst) -> Result<()> {
        // Done by its matmul's call when the box lies inside the tensor
        // (`matmul_fold`): only the partial box is stored here.
        if let Some(&full) = self.matmul_fold.store_full.get(&i) {
            let partial = self.b.ins().icmp_imm_s(IntCC::Equal, full, 0);
            return self.if_then(partial, &mut |s| s.emit_store_copy(i));
        }
        self.emit_store_copy(i)
    }

    fn emit_store_copy(&mut self, i: Inst) -> Result<()> {
        let (tensor, index, value, mode, op) = match self.k.kind(i) {
            InstKind::Store {
                tensor,
                index,
                value,
            } => (tensor, index, value, 0, "store"),
            InstKind::AtomicAdd {
                tensor,
                index,
                value,
            } => (tensor, index, value, 1, "atomic_add"),
            _ => return Err(CodegenError::invalid("store", "not a store")),
        };
        let t = self.tile(*value, op)?;
        let dims = self.gm_box(*tensor, index, op)?;
        if t.ty.space == Space::Gm {
            if mode != 0 {
                return Err(CodegenError::unsupported(op, "from a tile placed in gm"));
            }
            return self.jit_gm_copy(*tensor, &dims, &t, false, op);
        }
        let gm_index = self.gm[tensor].index;
        let (buf, dt, eoff) = (
            buf_code(t.ty.space, op)?,
            dt_code(t.ty.dtype, op)?,
            t.elem_off(op)?,
        );
        let zero = self.i64c(0);
        let trs = Some(t.stride);
        self.emit_box(&dims, zero, None, trs, op, &mut |s, p| {
            let gi = s.i32c(gm_index as i64);
            let bufv = s.i32c(buf as i64);
            let dtv = s.i32c(dt as i64);
            let soff = s.b.ins().iadd_imm_s(p.tile_off, eoff as i64);
            let ss = s.i64c(p.tile_stride as i64);
            let m = s.i32c(mode);
            s.call(
                "amla_rt_copy_local_to_gm",
                &[
                    bufv,
                    soff,
                    ss,
                    dtv,
                    gi,
                    p.big_off,
                    p.big_stride,
                    p.rows,
                    p.cols,
                    m,
                ],
            )
        })
    }

    /// A box copy between a GM tensor and a `gm`-placed (scratch) tile done
    /// by JIT code (`load`: tensor → tile, zero-filling; else tile → tensor).
    fn jit_gm_copy(
        &mut self,
        tensor: crate::ir::Tensor,
        dims: &[BoxDim],
        t: &TileRef,
        load: bool,
        op: &str,
    ) -> Result<()> {
        let esz = t.ty.dtype.bytes() as i64;
        let gbase = self.gm[&tensor].base;
        let tp = self.tile_ptr(t, op)?;
        let zero = self.i64c(0);
        let fill = if load { Some(t) } else { None };
        if !t.dense() {
            return Err(CodegenError::unsupported(op, "a strided view in gm"));
        }
        let gm_index = self.gm[&tensor].index;
        self.emit_box(dims, zero, fill, None, op, &mut |c, p| {
            c.note_gm(
                gm_index,
                p.big_off,
                p.big_stride,
                p.rows,
                p.cols,
                if load { 0 } else { 1 },
            )?;
            c.counted_loop(p.rows, &mut |c, r| {
                let go = c.b.ins().imul(r, p.big_stride);
                let go = c.b.ins().iadd(go, p.big_off);
                let go = c.b.ins().imul_imm_s(go, esz);
                let ga = c.b.ins().iadd(gbase, go);
                let to = c.b.ins().imul_imm_s(r, p.tile_stride as i64);
                let to = c.b.ins().iadd(to, p.tile_off);
                let to = c.b.ins().imul_imm_s(to, esz);
                let ta = c.b.ins().iadd(tp, to);
                let bytes = c.b.ins().imul_imm_s(p.cols, esz);
                let (d, s) = if load { (ta, ga) } else { (ga, ta) };
                simd_math::emit_memcpy_dyn(&mut c.b, d, s, bytes);
                Ok(())
            })
        })
    }

    /// Element address, in-range flag and element offset of a scalar GM access.
    fn scalar_gm_addr(
        &mut self,
        t: crate::ir::Tensor,
        index: &[Index],
        op: &str,
    ) -> Result<(cl::Value, cl::Value, cl::Value)> {
        let dims = self.gm_box(t, index, op)?;
        if dims.iter().any(|d| !d.point || d.len != 1) {
            return Err(CodegenError::invalid(op, "a scalar access needs points"));
        }
        Ok(self.gm_point_addr(t, &dims))
    }

    /// Address, in-range flag and element offset of the first element of
    /// a box whose point dims are its only offset (the other dims start at
    /// 0): the points' offset, and whether every point is inside its dim.
    pub(crate) fn gm_point_addr(
        &mut self,
        t: crate::ir::Tensor,
        dims: &[BoxDim],
    ) -> (cl::Value, cl::Value, cl::Value) {
        let mut ok = self.b.ins().iconst(types::I8, 1);
        let mut off = self.i64c(0);
        for d in dims.iter().filter(|d| d.point) {
            let ge = self
                .b
                .ins()
                .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, d.start, 0);
            let lt = self.b.ins().icmp(IntCC::SignedLessThan, d.start, d.dim);
            let both = self.b.ins().band(ge, lt);
            ok = self.b.ins().band(ok, both);
            let t = self.b.ins().imul(d.start, d.stride);
            off = self.b.ins().iadd(off, t);
        }
        let esz = self.k.tensors[t].dtype.bytes() as i64;
        let bytes = self.b.ins().imul_imm_s(off, esz);
        let addr = self.b.ins().iadd(self.gm[&t].base, bytes);
        (addr, ok, off)
    }

    pub(crate) fn emit_scalar_load(&mut self, i: Inst) -> Result<()> {
        let InstKind::Load { tensor, index } = self.k.kind(i) else {
            return Err(CodegenError::invalid("load", "not a load"));
        };
        let r = self.k.insts[i].results[0];
        let d = self.k.tensors[*tensor].dtype;
        let (addr, ok, off) = self.scalar_gm_addr(*tensor, index, "load")?;
        let ty = super::scalar_type(d);
        let then = self.b.create_block();
        let join = self.b.create_block();
        self.b.append_block_param(join, ty);
        let z = match d {
            DType::I32 => self.i32c(0),
            _ => self.b.ins().f32const(0.0),
        };
        self.b.ins().brif(ok, then, &[], join, &[z.into()]);
        self.b.switch_to_block(then);
        self.b.seal_block(then);
        if self.instrument.any() {
            let one = self.i64c(1);
            let gi = self.gm[tensor].index;
            self.note_gm(gi, off, one, one, one, 0)?;
        }
        let v = match d {
            DType::I32 => self.b.ins().load(types::I32, mf(), addr, 0),
            DType::F32 => self.b.ins().load(types::F32, mf(), addr, 0),
            DType::Bf16 => {
                let h = self.b.ins().uload16(types::I32, mf(), addr, 0);
                let w = self.b.ins().ishl_imm_u(h, 16);
                self.b.ins().bitcast(types::F32, mf(), w)
            }
            _ => {
                return Err(CodegenError::unsupported(
                    "load",
                    format!("a scalar of {d}"),
                ));
            }
        };
        self.b.ins().jump(join, &[v.into()]);
        self.b.switch_to_block(join);
        self.b.seal_block(join);
        let v = self.b.block_params(join)[0];
        self.scalars.insert(r, v);
        Ok(())
    }

    pub(crate) fn emit_scalar_store(&mut self, i: Inst) -> Result<()> {
        let InstKind::Store {
            tensor,
            index,
            value,
        } = self.k.kind(i)
        else {
            return Err(CodegenError::unsupported(
                self.k.kind(i).opcode(),
                "of a scalar (only `store` is)",
            ));
        };
        let d = self.k.tensors[*tensor].dtype;
        let x = self.scalar(*value, "store")?;
        let (addr, ok, off) = self.scalar_gm_addr(*tensor, index, "store")?;
        let gi = self.gm[tensor].index;
        if !matches!(d, DType::F32 | DType::I32 | DType::Bf16) {
            return Err(CodegenError::unsupported(
                "store",
                format!("a scalar of {d}"),
            ));
        }
        self.if_then(ok, &mut |s| {
            if s.instrument.any() {
                let one = s.i64c(1);
                s.note_gm(gi, off, one, one, one, 1)?;
            }
            match d {
                DType::Bf16 => {
                    let v = s.b.ins().splat(types::F32X4, x);
                    let h = simd_math::f32x4_to_bf16_bits(&mut s.b, v);
                    let h = s.b.ins().extractlane(h, 0);
                    s.b.ins().istore16(mf(), h, addr, 0);
                }
                _ => {
                    s.b.ins().store(mf(), x, addr, 0);
                }
            }
            Ok(())
        })
    }

    /// Makes the bytes of tile `dst` hold tile `src` (same shape and dtype):
    /// nothing when they share a placement.
    pub(crate) fn move_tile(&mut self, src: Value, dst: Value, op: &str) -> Result<()> {
        let s = self.tile(src, op)?;
        let d = self.tile(dst, op)?;
        if s.ty.space == d.ty.space && s.off == d.off {
            return Ok(());
        }
        if s.ty.elems() != d.ty.elems() || s.ty.dtype != d.ty.dtype {
            return Err(CodegenError::invalid(
                op,
                "moving between tiles of different types",
            ));
        }
        self.copy_dense(&s, &d, op)
    }

    /// A dense copy of `s` into `d` (same element count).
    fn copy_dense(&mut self, s: &TileRef, d: &TileRef, op: &str) -> Result<()> {
        let vector_side = |sp: Space| matches!(sp, Space::Ub | Space::Gm);
        if s.ty.dtype == DType::Bool
            || (vector_side(s.ty.space) && vector_side(d.ty.space) && s.ty.dtype == d.ty.dtype)
        {
            // Same-dtype moves between UB and the Vector's GM scratch (where
            // plan-memory's `gm` tiles live), and masks, are JIT byte copies.
            if s.ty.dtype == DType::Bool && s.ty.space != d.ty.space {
                return Err(CodegenError::unsupported(
                    op,
                    "moving a mask between buffers",
                ));
            }
            let sp = self.tile_ptr(s, op)?;
            let dp = self.tile_ptr(d, op)?;
            simd_math::emit_memcpy(&mut self.b, dp, sp, s.ty.bytes());
            return Ok(());
        }
        let (rows, cols) = d.ty.rows_cols();
        let args = [
            buf_code(d.ty.space, op)? as i64,
            d.elem_off(op)? as i64,
            d.stride as i64,
            dt_code(d.ty.dtype, op)? as i64,
            buf_code(s.ty.space, op)? as i64,
            s.elem_off(op)? as i64,
            s.stride as i64,
            dt_code(s.ty.dtype, op)? as i64,
            rows as i64,
            cols as i64,
        ];
        let kinds = [
            true, false, false, true, true, false, false, true, false, false,
        ];
        let vals: Vec<cl::Value> = args
            .iter()
            .zip(kinds)
            .map(|(&a, w)| if w { self.i32c(a) } else { self.i64c(a) })
            .collect();
        self.call("amla_rt_copy_local_to_local", &vals)
    }

    pub(crate) fn emit_copy(&mut self, i: Inst) -> Result<()> {
        if self.matmul_fold.copies.contains(&i) {
            // Its matmuls read the source in place (`matmul_fold`).
            return Ok(());
        }
        let InstKind::Copy { src, .. } = self.k.kind(i) else {
            return Err(CodegenError::invalid("copy", "not a copy"));
        };
        let r = self.k.insts[i].results[0];
        self.move_tile(*src, r, "copy")
    }

    pub(crate) fn emit_extract(&mut self, i: Inst) -> Result<()> {
        let InstKind::Extract { src, index } = self.k.kind(i) else {
            return Err(CodegenError::invalid("extract", "not an extract"));
        };
        let op = "extract";
        let r = self.k.insts[i].results[0];
        let s = self.tile(*src, op)?;
        let shape = s.ty.shape.clone();
        if index.len() != shape.len() {
            return Err(CodegenError::invalid(op, "one index per dim"));
        }
        // A view that the planner placed in place: nothing to do but
        // remember its row stride.
        if let Some(off) = self.static_view_offset(&s, index)
            && let Some(rt) = self.k.ty(r).as_tile()
            && rt.space == s.ty.space
            && self.k.offsets[r] == Some(s.off + off * s.ty.dtype.bytes())
        {
            if rt.shape.len() == 2 || !s.dense() {
                self.views.insert(r, s.stride);
            }
            return Ok(());
        }
        let mut strides = vec![1u64; shape.len()];
        for j in (0..shape.len().saturating_sub(1)).rev() {
            strides[j] = strides[j + 1] * shape[j + 1];
        }
        if !s.dense() {
            if shape.len() != 2 {
                return Err(CodegenError::unsupported(
                    op,
                    "from a strided view of rank != 2",
                ));
            }
            strides[0] = s.stride;
        }
        let mut dims = Vec::new();
        for (j, ix) in index.iter().enumerate() {
            let dim = self.i64c(shape[j] as i64);
            let st = self.i64c(strides[j] as i64);
            dims.push(self.box_dim(ix, Some(shape[j]), dim, st, op)?);
        }
        let base = self.i64c(s.elem_off(op)? as i64);
        if self.k.ty(r).as_tile().is_none() {
            // A scalar read from a local tile. An index out of range reads 0,
            // as the IR defines (never memory outside the tile).
            let d = s.ty.dtype;
            let mut off = base;
            let mut ok = self.b.ins().iconst(types::I8, 1);
            for bd in &dims {
                let inside = self.b.ins().icmp(IntCC::UnsignedLessThan, bd.start, bd.dim);
                ok = self.b.ins().band(ok, inside);
                let t = self.b.ins().imul(bd.start, bd.stride);
                off = self.b.ins().iadd(off, t);
            }
            let sb = *self
                .bases
                .get(&s.ty.space)
                .ok_or_else(|| CodegenError::invalid(op, "buffer not available"))?;
            let ty = super::scalar_type(d);
            let then = self.b.create_block();
            let join = self.b.create_block();
            self.b.append_block_param(join, ty);
            let zero = match ty {
                types::F32 => self.b.ins().f32const(0.0),
                t => self.b.ins().iconst(t, 0),
            };
            self.b.ins().brif(ok, then, &[], join, &[zero.into()]);
            self.b.switch_to_block(then);
            self.b.seal_block(then);
            let bytes = self.b.ins().imul_imm_s(off, d.bytes() as i64);
            let addr = self.b.ins().iadd(sb, bytes);
            let v = simd_math::load_scalar(&mut self.b, addr, d)
                .ok_or_else(|| CodegenError::unsupported(op, format!("a scalar of {d}")))?;
            self.b.ins().jump(join, &[v.into()]);
            self.b.switch_to_block(join);
            self.b.seal_block(join);
            let v = self.b.block_params(join)[0];
            self.scalars.insert(r, v);
            return Ok(());
        }
        let t = self.tile(r, op)?;
        if (s.ty.space == Space::Gm || t.ty.space == Space::Gm) && s.ty.dtype == t.ty.dtype {
            // A slice of (or into) a tile plan-memory sent to the Vector's
            // GM scratch: JIT row copies, as for other `gm` tile moves.
            return self.jit_extract(&s, &t, &dims, base, op);
        }
        let (sbuf, dbuf) = (buf_code(s.ty.space, op)?, buf_code(t.ty.space, op)?);
        let (sdt, ddt) = (dt_code(s.ty.dtype, op)?, dt_code(t.ty.dtype, op)?);
        let toff = t.elem_off(op)?;
        self.emit_box(&dims, base, Some(&t), None, op, &mut |c, p| {
            let a = [
                c.i32c(dbuf as i64),
                c.b.ins().iadd_imm_s(p.tile_off, toff as i64),
                c.i64c(p.tile_stride as i64),
                c.i32c(ddt as i64),
                c.i32c(sbuf as i64),
                p.big_off,
                p.big_stride,
                c.i32c(sdt as i64),
                p.rows,
                p.cols,
            ];
            c.call("amla_rt_copy_local_to_local", &a)
        })
    }

    /// An `extract` between Vector-side tiles (UB or the `gm` scratch) of
    /// one dtype, one JIT memcpy per row; elements past the source read 0.
    fn jit_extract(
        &mut self,
        s: &TileRef,
        t: &TileRef,
        dims: &[BoxDim],
        base: cl::Value,
        op: &str,
    ) -> Result<()> {
        let vector_side = |sp: Space| matches!(sp, Space::Ub | Space::Gm);
        if !vector_side(s.ty.space) || !vector_side(t.ty.space) {
            return Err(CodegenError::unsupported(
                op,
                format!("from {} to {}", s.ty.space, t.ty.space),
            ));
        }
        if !t.dense() {
            return Err(CodegenError::unsupported(op, "into a strided view in gm"));
        }
        let esz = s.ty.dtype.bytes() as i64;
        let sb = *self
            .bases
            .get(&s.ty.space)
            .ok_or_else(|| CodegenError::invalid(op, "buffer not available"))?;
        let tp = self.tile_ptr(t, op)?;
        self.emit_box(dims, base, Some(t), None, op, &mut |c, p| {
            c.counted_loop(p.rows, &mut |c, r| {
                let so = c.b.ins().imul(r, p.big_stride);
                let so = c.b.ins().iadd(so, p.big_off);
                let so = c.b.ins().imul_imm_s(so, esz);
                let sa = c.b.ins().iadd(sb, so);
                let to = c.b.ins().imul_imm_s(r, p.tile_stride as i64);
                let to = c.b.ins().iadd(to, p.tile_off);
                let to = c.b.ins().imul_imm_s(to, esz);
                let ta = c.b.ins().iadd(tp, to);
                let bytes = c.b.ins().imul_imm_s(p.cols, esz);
                simd_math::emit_memcpy_dyn(&mut c.b, ta, sa, bytes);
                Ok(())
            })
        })
    }

    /// The element offset of an extract with constant starts that is either
    /// contiguous or a rank-2 row-strided window (the result then keeps the
    /// source's row stride).
    fn static_view_offset(&self, s: &TileRef, index: &[Index]) -> Option<u64> {
        let k = self.k;
        let konst = |v: Value| match k.def_inst(v).map(|i| k.kind(i)) {
            Some(InstKind::IConst(c)) if *c >= 0 => Some(*c as u64),
            _ => None,
        };
        let shape = &s.ty.shape;
        let mut starts = Vec::new();
        for (j, ix) in index.iter().enumerate() {
            let (start, len, point) = match ix {
                Index::Full => (0, shape[j], false),
                Index::Range { start, len } => (konst(*start)?, *len, false),
                Index::Point(v) => (konst(*v)?, 1, true),
            };
            if start + len > shape[j] {
                return None;
            }
            starts.push((start, len, point));
        }
        if shape.len() == 2 {
            // Rank 2: any window of rows and columns, or a single row.
            let (r0, _, rp) = starts[0];
            let (c0, clen, cp) = starts[1];
            if cp && !rp {
                return None; // a column: not a row-major view
            }
            let _ = clen;
            return Some(r0 * s.stride + c0);
        }
        if !s.dense() {
            return None;
        }
        let mut off = 0u64;
        let mut stride = 1u64;
        let mut must_be_full = false;
        for j in (0..shape.len()).rev() {
            let (start, len, _) = starts[j];
            if must_be_full && len > 1 {
                return None;
            }
            if len != shape[j] {
                must_be_full = true;
            }
            off += start * stride;
            stride *= shape[j];
        }
        Some(off)
    }

    pub(crate) fn emit_matmul(&mut self, i: Inst) -> Result<()> {
        if self.matmul_fold.deferred.contains(&i) {
            // Run by the last matmul of its chain (`matmul_fold`).
            return Ok(());
        }
        let chain = match self.matmul_fold.chains.get(&i) {
            Some(c) => c.clone(),
            None => vec![i],
        };
        let parts = chain
            .iter()
            .map(|&m| self.matmul_part(m))
            .collect::<Result<Vec<_>>>()?;
        let mut runs = Vec::new();
        let mut start = 0;
        for j in 1..=parts.len() {
            if j < parts.len() && parts[j - 1].continues_into(&parts[j]) {
                continue;
            }
            runs.push(start..j);
            start = j;
        }
        // The store of C, done by the call when the chain is one call.
        let store = match self.matmul_fold.stores.get(&i) {
            Some(&s) if runs.len() == 1 => {
                let (tensor, index, mode) = match self.k.kind(s) {
                    InstKind::Store { tensor, index, .. } => (*tensor, index.clone(), 0),
                    InstKind::AtomicAdd { tensor, index, .. } => (*tensor, index.clone(), 1),
                    _ => {
                        return Err(CodegenError::invalid(
                            "matmul",
                            "a folded store is not a store",
                        ));
                    }
                };
                let (full, off, ld) = self.gm_target(tensor, &index, "store")?;
                self.matmul_fold.store_full.insert(s, full);
                Some(FoldedStoreArgs {
                    full,
                    gm_index: self.gm[&tensor].index,
                    off,
                    ld,
                    mode,
                })
            }
            _ => None,
        };
        for r in runs {
            let first = r.start == 0;
            self.emit_matmul_run(&parts[r], first, store)?;
        }
        Ok(())
    }

    /// One matmul's operands, shapes and codes: A and B where they are read
    /// (a folded copy's source in L1, else the operand in L0A/L0B).
    fn matmul_part(&mut self, i: Inst) -> Result<MatmulPart> {
        let InstKind::Matmul {
            a,
            b,
            b_layout,
            acc,
        } = self.k.kind(i)
        else {
            return Err(CodegenError::invalid("matmul", "not a matmul"));
        };
        let op = "matmul";
        let r = self.k.insts[i].results[0];
        let (ta, tb, tc) = (self.tile(*a, op)?, self.tile(*b, op)?, self.tile(r, op)?);
        if ta.ty.space != Space::L0A || tb.ty.space != Space::L0B || tc.ty.space != Space::L0C {
            return Err(CodegenError::unsupported(
                op,
                format!(
                    "operands in {}, {} -> {} (needs l0a, l0b -> l0c)",
                    ta.ty.space, tb.ty.space, tc.ty.space
                ),
            ));
        }
        let ([m, kk], [b0, b1]) = (ta.ty.shape.as_slice(), tb.ty.shape.as_slice()) else {
            return Err(CodegenError::invalid(op, "rank-2 operands"));
        };
        let (n, layout) = match b_layout {
            BLayout::KN => (*b1, 0),
            BLayout::NK => (*b0, 1),
        };
        let dtype = match ta.ty.dtype {
            DType::Bf16 => 1,
            DType::F16 => 2,
            d => return Err(CodegenError::invalid(op, format!("{d} operands"))),
        };
        let mut copies = Vec::new();
        let mut operand = |cx: &mut Self, v: Value, t: TileRef| -> Result<Operand> {
            let folded =
                cx.k.def_inst(v)
                    .filter(|c| cx.matmul_fold.copies.contains(c));
            let (t, gm) = match folded {
                Some(c) => {
                    let InstKind::Copy { src, .. } = cx.k.kind(c) else {
                        return Err(CodegenError::invalid(op, "a folded operand is not a copy"));
                    };
                    copies.push(c);
                    // A folded load's tile, or a view of one.
                    let mut root = *src;
                    while let Some(InstKind::Extract { src: l, .. }) =
                        cx.k.def_inst(root).map(|d| cx.k.kind(d))
                    {
                        root = *l;
                    }
                    let gm = cx.matmul_fold.gm_src.contains_key(&root).then_some(root);
                    (cx.tile(*src, op)?, gm)
                }
                None => (t, None),
            };
            Ok(Operand {
                buf: buf_code(t.ty.space, op)?,
                off: t.elem_off(op)?,
                stride: t.stride,
                gm,
            })
        };
        let a_op = operand(self, *a, ta.clone())?;
        let b_op = operand(self, *b, tb.clone())?;
        Ok(MatmulPart {
            a: a_op,
            b: b_op,
            c_off: tc.elem_off(op)?,
            c_stride: tc.stride,
            result: r,
            acc: *acc,
            m: *m,
            n,
            k: *kk,
            layout,
            dtype,
            copies,
        })
    }

    /// Emits `parts` (consecutive K ranges of one C, or one matmul) as one
    /// call; `first`: the run starts its chain (its `acc` decides the mode).
    fn emit_matmul_run(
        &mut self,
        parts: &[MatmulPart],
        first: bool,
        store: Option<FoldedStoreArgs>,
    ) -> Result<()> {
        let op = "matmul";
        let (p0, last) = (&parts[0], &parts[parts.len() - 1]);
        let mode = match (first, p0.acc) {
            (true, Some(c)) => {
                self.move_tile(c, p0.result, op)?;
                1
            }
            (true, None) => 0,
            (false, _) => 1,
        };
        let k_total: u64 = parts.iter().map(|p| p.k).sum();
        let (mut copies, mut copy_bytes) = (0u32, 0u64);
        for p in parts {
            for c in &p.copies {
                if self.matmul_fold.uncounted.remove(c) {
                    let r = self.k.insts[*c].results[0];
                    let t = self.tile(r, op)?;
                    copies += 1;
                    copy_bytes += t.ty.bytes();
                }
            }
        }
        if parts.len() == 1 && p0.copies.is_empty() && store.is_none() {
            let vals = [
                p0.a.off,
                p0.a.stride,
                p0.b.off,
                p0.b.stride,
                p0.c_off,
                p0.c_stride,
                p0.m,
                p0.n,
                p0.k,
            ];
            let mut args: Vec<cl::Value> = vals.iter().map(|&v| self.i64c(v as i64)).collect();
            for w in [p0.layout, p0.dtype, mode] {
                args.push(self.i32c(w));
            }
            return self.call("amla_rt_matmul", &args);
        }
        // Folded loads this call reads first: counted when they read GM.
        let mut loads = self.i32c(0);
        let mut load_bytes = self.i64c(0);
        for o in [&p0.a, &p0.b] {
            let Some(root) = o.gm else { continue };
            if self.matmul_fold.uncounted_loads.remove(&root) {
                let g = self.matmul_fold.gm_src[&root];
                let one = self.b.ins().uextend(types::I32, g.full);
                loads = self.b.ins().iadd(loads, one);
                let (zero, n) = (self.i64c(0), self.i64c(g.bytes as i64));
                let bytes = self.b.ins().select(g.full, n, zero);
                load_bytes = self.b.ins().iadd(load_bytes, bytes);
            }
        }
        // The folded store's GM buffer (index + 1; 0: none), offset, stride
        // and mode (0 a store, 1 an atomic add).
        let [store_gm, store_off, store_ld, store_mode] = match store {
            Some(s) => {
                let (none, code) = (self.i32c(0), self.i32c(i64::from(s.gm_index) + 1));
                let mode = self.i32c(s.mode);
                [self.b.ins().select(s.full, code, none), s.off, s.ld, mode]
            }
            None => [self.i32c(0), self.i64c(0), self.i64c(0), self.i32c(0)],
        };
        let w = |cx: &mut Self, x: u32| cx.i32c(i64::from(x));
        let l = |cx: &mut Self, x: u64| cx.i64c(x as i64);
        let [a_buf, a_gm, a_off, a_stride] = self.operand_args(&p0.a)?;
        let [b_buf, b_gm, b_off, b_stride] = self.operand_args(&p0.b)?;
        let args = [
            a_buf,
            a_gm,
            a_off,
            a_stride,
            b_buf,
            b_gm,
            b_off,
            b_stride,
            l(self, last.c_off),
            l(self, last.c_stride),
            l(self, p0.m),
            l(self, p0.n),
            l(self, k_total),
            w(self, p0.layout as u32),
            w(self, p0.dtype as u32),
            w(self, mode as u32),
            w(self, parts.len() as u32),
            w(self, copies),
            l(self, copy_bytes),
            loads,
            load_bytes,
            store_gm,
            store_off,
            store_ld,
            store_mode,
        ];
        self.call("amla_rt_matmul_folded", &args)
    }

    /// An operand's `(buffer code, gm index, element offset, row stride)`
    /// arguments: static, or, for a view of a folded load, the tensor in GM
    /// when the load's box lay inside it and its L1 tile otherwise.
    fn operand_args(&mut self, o: &Operand) -> Result<[cl::Value; 4]> {
        let Some(root) = o.gm else {
            return Ok([
                self.i32c(i64::from(o.buf)),
                self.i32c(0),
                self.i64c(o.off as i64),
                self.i64c(o.stride as i64),
            ]);
        };
        let g = self.matmul_fold.gm_src[&root];
        if o.stride != g.l1_stride || o.off < g.l1_off {
            return Err(CodegenError::invalid(
                "matmul",
                "a folded load's view is not inside its tile",
            ));
        }
        let rel = o.off - g.l1_off;
        let (r0, c0) = (rel / g.l1_stride, rel % g.l1_stride);
        let t = self.b.ins().imul_imm_s(g.row_stride, r0 as i64);
        let t = self.b.ins().iadd(g.gm_off, t);
        let goff = self.b.ins().iadd_imm_s(t, c0 as i64);
        let (gm_code, l1_code) = (self.i32c(0), self.i32c(i64::from(o.buf)));
        let buf = self.b.ins().select(g.full, gm_code, l1_code);
        let l1_off = self.i64c(o.off as i64);
        let off = self.b.ins().select(g.full, goff, l1_off);
        let l1_stride = self.i64c(o.stride as i64);
        let stride = self.b.ins().select(g.full, g.row_stride, l1_stride);
        Ok([buf, self.i32c(i64::from(g.gm_index)), off, stride])
    }
}

/// The GM target of a store a matmul call does (`matmul_fold`): whether
/// the box lies inside the tensor (i8), the GM buffer, the element offset
/// and row stride there.
#[derive(Clone, Copy)]
struct FoldedStoreArgs {
    full: cl::Value,
    gm_index: u32,
    off: cl::Value,
    ld: cl::Value,
    /// 0 a store, 1 an atomic add.
    mode: i64,
}

/// Where a matmul reads an operand: buffer code, element offset, row stride
/// (in L1 when it is a view of a folded load, `gm`: that load's tile).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Operand {
    buf: u32,
    off: u64,
    stride: u64,
    gm: Option<Value>,
}

/// One matmul of a chain ([`super::matmul_fold`]).
struct MatmulPart {
    a: Operand,
    b: Operand,
    c_off: u64,
    c_stride: u64,
    result: Value,
    acc: Option<Value>,
    m: u64,
    n: u64,
    k: u64,
    layout: i64,
    dtype: i64,
    /// The folded copies whose sources it reads.
    copies: Vec<Inst>,
}

impl MatmulPart {
    /// Whether `next` continues this part's K range: the same C, shapes,
    /// codes and strides, both operands folded, A's and B's K windows
    /// adjacent, and this part's K even (a bf16 pair never straddles two
    /// parts, so one call sums exactly what the parts do).
    fn continues_into(&self, next: &MatmulPart) -> bool {
        let b_step = if self.layout == 0 {
            self.k * self.b.stride
        } else {
            self.k
        };
        self.copies.len() == 2
            && next.copies.len() == 2
            && self.k.is_multiple_of(2)
            && (self.m, self.n, self.layout, self.dtype)
                == (next.m, next.n, next.layout, next.dtype)
            && (self.c_off, self.c_stride) == (next.c_off, next.c_stride)
            && (
                self.a.buf,
                self.a.stride,
                self.a.gm,
                self.b.buf,
                self.b.stride,
                self.b.gm,
            ) == (
                next.a.buf,
                next.a.stride,
                next.a.gm,
                next.b.buf,
                next.b.stride,
                next.b.gm,
            )
            && next.a.off == self.a.off + self.k
            && next.b.off == self.b.off + b_step
    }
}
