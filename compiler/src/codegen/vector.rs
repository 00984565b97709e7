//! Vector ops on UB tiles as SIMD loops: element-wise maps (4 lanes per
//! step, then a scalar tail through the same lane code), broadcasts, row
//! reductions, iota, transpose, reshapes, and `atomic_exp_add` (the AMLA
//! integer exponent add, applied to GM in place).
//!
//! Row sums add four interleaved partial sums and then the tail, so their
//! rounding differs from a sequential sum by a few ulp.

use cranelift_codegen::ir::{self as cl, InstBuilder, types};
use cranelift_frontend::FunctionBuilder;

use super::func::{FnCx, TileRef};
use super::{CodegenError, Result, scalar::floatcc, scalar::intcc, simd_math as sm};
use crate::ir::{BinaryOp, DType, Index, Inst, InstKind, Kernel, ReduceOp, Space, Type, UnaryOp};

type LaneFn<'a> = &'a dyn Fn(&mut FunctionBuilder, &[cl::Value]) -> cl::Value;
pub(super) type BoxLaneFn = Box<dyn Fn(&mut FunctionBuilder, &[cl::Value]) -> cl::Value>;
type CarryBody<'a, 'b, 'c> =
    &'a mut dyn FnMut(&mut FnCx<'b, 'c>, cl::Value, &[cl::Value]) -> Result<Vec<cl::Value>>;

fn unsup(op: &str, d: DType) -> CodegenError {
    CodegenError::unsupported(op, format!("on {d} tiles (cast to f32 first)"))
}

/// The lane code of an element-wise op (`Unary`, `Binary`, `Cmp`, `Select`,
/// or a `Cast` not involving f16) on its operands' lane vectors, in operand
/// order: one definition for the op-per-loop code ([`FnCx::emit_vector`])
/// and the fused loops ([`super::fuse`]), so both compute the same bits.
pub(super) fn lane_fn(k: &Kernel, kind: &InstKind, op: &str) -> Result<BoxLaneFn> {
    let dt = |v: crate::ir::Value| k.ty(v).dtype();
    Ok(match *kind {
        InstKind::Unary(u, a) => match (u, dt(a)) {
            (UnaryOp::Not, DType::Bool) => Box::new(|b, v| b.ins().bnot(v[0])),
            (UnaryOp::Neg, DType::I32) => Box::new(|b, v| b.ins().ineg(v[0])),
            (UnaryOp::Abs, DType::I32) => Box::new(|b, v| b.ins().iabs(v[0])),
            (u, d) if d.is_float() && u != UnaryOp::Not => {
                Box::new(move |b, v| sm::unary_f32x4(b, u, v[0]).expect("float unary"))
            }
            (_, d) => return Err(unsup(op, d)),
        },
        InstKind::Binary(bop, a, _) => match (bop, dt(a)) {
            (BinaryOp::And, DType::Bool) => Box::new(|b, v| b.ins().band(v[0], v[1])),
            (BinaryOp::Or, DType::Bool) => Box::new(|b, v| b.ins().bor(v[0], v[1])),
            (BinaryOp::Add, DType::I32) => Box::new(|b, v| b.ins().iadd(v[0], v[1])),
            (BinaryOp::Sub, DType::I32) => Box::new(|b, v| b.ins().isub(v[0], v[1])),
            (BinaryOp::Mul, DType::I32) => Box::new(|b, v| b.ins().imul(v[0], v[1])),
            (BinaryOp::Max, DType::I32) => Box::new(|b, v| b.ins().smax(v[0], v[1])),
            (BinaryOp::Min, DType::I32) => Box::new(|b, v| b.ins().smin(v[0], v[1])),
            (BinaryOp::Div, DType::I32) => Box::new(|b, v| sm::int_divrem_x4(b, true, v[0], v[1])),
            (BinaryOp::Rem, DType::I32) => Box::new(|b, v| sm::int_divrem_x4(b, false, v[0], v[1])),
            (BinaryOp::Add, d) if d.is_float() => Box::new(|b, v| b.ins().fadd(v[0], v[1])),
            (BinaryOp::Sub, d) if d.is_float() => Box::new(|b, v| b.ins().fsub(v[0], v[1])),
            (BinaryOp::Mul, d) if d.is_float() => Box::new(|b, v| b.ins().fmul(v[0], v[1])),
            (BinaryOp::Div, d) if d.is_float() => Box::new(|b, v| b.ins().fdiv(v[0], v[1])),
            (BinaryOp::Max, d) if d.is_float() => Box::new(|b, v| b.ins().fmax(v[0], v[1])),
            (BinaryOp::Min, d) if d.is_float() => Box::new(|b, v| b.ins().fmin(v[0], v[1])),
            (_, d) => return Err(unsup(op, d)),
        },
        InstKind::Cmp(c, a, _) => {
            if dt(a).is_float() {
                Box::new(move |b, v| b.ins().fcmp(floatcc(c), v[0], v[1]))
            } else {
                Box::new(move |b, v| b.ins().icmp(intcc(c), v[0], v[1]))
            }
        }
        InstKind::Select(_, a, _) => {
            let float = sm::lane_type(dt(a)) == Some(types::F32X4);
            Box::new(move |b, v| {
                let m = if float {
                    b.ins().bitcast(types::F32X4, super::func::mf(), v[0])
                } else {
                    v[0]
                };
                b.ins().bitselect(m, v[1], v[2])
            })
        }
        InstKind::Cast(a, to) => match (dt(a), to) {
            (DType::F16, _) | (_, DType::F16) => return Err(unsup(op, DType::F16)),
            (f, t2) if f == t2 => Box::new(|_, v| v[0]),
            (DType::I32, _) => Box::new(|b, v| b.ins().fcvt_from_sint(types::F32X4, v[0])),
            (DType::Bool, DType::I32) => Box::new(|b, v| {
                let one = sm::isplat(b, 1);
                b.ins().band(v[0], one)
            }),
            (DType::Bool, _) => Box::new(|b, v| {
                let one = sm::isplat(b, 1);
                let w = b.ins().band(v[0], one);
                b.ins().fcvt_from_sint(types::F32X4, w)
            }),
            (_, DType::I32) => Box::new(|b, v| b.ins().fcvt_to_sint_sat(types::I32X4, v[0])),
            _ => Box::new(|_, v| v[0]),
        },
        ref other => {
            return Err(CodegenError::invalid(
                other.opcode(),
                "not an element-wise op",
            ));
        }
    })
}

impl<'a, 'f> FnCx<'a, 'f> {
    /// `for i in 0..count` carrying `init`; `f` returns the next values.
    pub(crate) fn counted_loop_carry(
        &mut self,
        count: cl::Value,
        init: &[cl::Value],
        f: CarryBody<'_, 'a, 'f>,
    ) -> Result<Vec<cl::Value>> {
        let header = self.b.create_block();
        let body = self.b.create_block();
        let exit = self.b.create_block();
        self.b.append_block_param(header, types::I64);
        for &v in init {
            let t = self.b.func.dfg.value_type(v);
            self.b.append_block_param(header, t);
        }
        let zero = self.i64c(0);
        let mut args: Vec<cl::BlockArg> = vec![zero.into()];
        args.extend(init.iter().map(|&v| cl::BlockArg::from(v)));
        self.b.ins().jump(header, &args);
        self.b.switch_to_block(header);
        let hp = self.b.block_params(header).to_vec();
        let c = self
            .b
            .ins()
            .icmp(cl::condcodes::IntCC::SignedLessThan, hp[0], count);
        self.b.ins().brif(c, body, &[], exit, &[]);
        self.b.switch_to_block(body);
        self.b.seal_block(body);
        let next = f(self, hp[0], &hp[1..])?;
        let i2 = self.b.ins().iadd_imm_s(hp[0], 1);
        let mut args: Vec<cl::BlockArg> = vec![i2.into()];
        args.extend(next.iter().map(|&v| cl::BlockArg::from(v)));
        self.b.ins().jump(header, &args);
        self.b.seal_block(header);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
        Ok(hp[1..].to_vec())
    }

    /// `out[i] = f(in_0[i], in_1[i], …)` over `n` elements.
    fn emit_map(
        &mut self,
        n: u64,
        ins: &[(cl::Value, DType)],
        out: (cl::Value, DType),
        op: &str,
        f: LaneFn<'_>,
    ) -> Result<()> {
        for &(_, d) in ins.iter().chain(std::iter::once(&out)) {
            if sm::lane_type(d).is_none() {
                return Err(unsup(op, d));
            }
        }
        let n4 = n / 4;
        if n4 > 0 {
            let cnt = self.i64c(n4 as i64);
            self.counted_loop(cnt, &mut |s, i| {
                let mut vs = Vec::new();
                for &(p, d) in ins {
                    let o = s.b.ins().imul_imm_s(i, 4 * d.bytes() as i64);
                    let a = s.b.ins().iadd(p, o);
                    vs.push(sm::load4(&mut s.b, a, d).expect("checked"));
                }
                let r = f(&mut s.b, &vs);
                let o = s.b.ins().imul_imm_s(i, 4 * out.1.bytes() as i64);
                let a = s.b.ins().iadd(out.0, o);
                sm::store4(&mut s.b, a, out.1, r).expect("checked");
                Ok(())
            })?;
        }
        for t in n4 * 4..n {
            let mut vs = Vec::new();
            for &(p, d) in ins {
                let a = self.b.ins().iadd_imm_s(p, (t * d.bytes()) as i64);
                vs.push(sm::load1(&mut self.b, a, d).expect("checked"));
            }
            let r = f(&mut self.b, &vs);
            let a = self.b.ins().iadd_imm_s(out.0, (t * out.1.bytes()) as i64);
            sm::store1(&mut self.b, a, out.1, r).expect("checked");
        }
        Ok(())
    }

    /// Stores the splatted vector `v` into `n` elements of `d` at `p`.
    fn emit_fill(&mut self, p: cl::Value, n: u64, d: DType, v: cl::Value) -> Result<()> {
        let n4 = n / 4;
        if n4 > 0 {
            let cnt = self.i64c(n4 as i64);
            self.counted_loop(cnt, &mut |s, i| {
                let o = s.b.ins().imul_imm_s(i, 4 * d.bytes() as i64);
                let a = s.b.ins().iadd(p, o);
                sm::store4(&mut s.b, a, d, v).ok_or_else(|| unsup("broadcast", d))
            })?;
        }
        for t in n4 * 4..n {
            let a = self.b.ins().iadd_imm_s(p, (t * d.bytes()) as i64);
            sm::store1(&mut self.b, a, d, v).ok_or_else(|| unsup("broadcast", d))?;
        }
        Ok(())
    }

    /// A scalar register value splatted to its lane type.
    pub(super) fn splat_scalar(&mut self, x: cl::Value, d: DType) -> cl::Value {
        match d {
            DType::I32 => self.b.ins().splat(types::I32X4, x),
            DType::Bool => {
                let w = self.b.ins().uextend(types::I32, x);
                let m = self.b.ins().ineg(w);
                self.b.ins().splat(types::I32X4, m)
            }
            _ => self.b.ins().splat(types::F32X4, x),
        }
    }

    pub(crate) fn emit_vector(&mut self, i: Inst) -> Result<()> {
        let k = self.k;
        let kind = k.kind(i).clone();
        let op = kind.opcode();
        let r = *k.insts[i]
            .results
            .first()
            .ok_or_else(|| CodegenError::invalid(op, "no result"))?;
        if let InstKind::Reduce(rop, a) = kind {
            return self.emit_reduce(rop, a, r);
        }
        let t = self.tile(r, op)?;
        let mut operands = vec![r];
        k.kind(i).for_each_operand(|v| operands.push(v));
        for &v in &operands {
            if k.ty(v).as_tile().is_some() && !self.tile(v, op)?.dense() {
                return Err(CodegenError::unsupported(
                    op,
                    format!("{v} is a strided view"),
                ));
            }
        }
        let out_p = self.tile_ptr(&t, op)?;
        let out = (out_p, t.ty.dtype);
        let n = t.ty.elems();
        let src = |s: &mut Self, v: crate::ir::Value| -> Result<(cl::Value, DType, TileRef)> {
            let tr = s.tile(v, op)?;
            let p = s.tile_ptr(&tr, op)?;
            Ok((p, tr.ty.dtype, tr))
        };
        match kind {
            InstKind::Unary(_, a) => {
                let (p, d, _) = src(self, a)?;
                let f = lane_fn(k, &kind, op)?;
                self.emit_map(n, &[(p, d)], out, op, &*f)
            }
            InstKind::Binary(_, a, b2) | InstKind::Cmp(_, a, b2) => {
                let (pa, d, _) = src(self, a)?;
                let (pb, _, _) = src(self, b2)?;
                let f = lane_fn(k, &kind, op)?;
                self.emit_map(n, &[(pa, d), (pb, d)], out, op, &*f)
            }
            InstKind::Select(c, a, b2) => {
                let (pc, dc, _) = src(self, c)?;
                let (pa, d, _) = src(self, a)?;
                let (pb, _, _) = src(self, b2)?;
                let f = lane_fn(k, &kind, op)?;
                self.emit_map(n, &[(pc, dc), (pa, d), (pb, d)], out, op, &*f)
            }
            InstKind::Cast(a, to) => {
                let (p, from, st) = src(self, a)?;
                if from == DType::F16 || to == DType::F16 {
                    return self.runtime_convert(&st, &t, op);
                }
                let f = lane_fn(k, &kind, op)?;
                self.emit_map(n, &[(p, from)], out, op, &*f)
            }
            InstKind::Bitcast(a, to) => {
                let (p, from, st) = src(self, a)?;
                if st.ty.space == t.ty.space && st.off == t.off {
                    return Ok(());
                }
                let ty = sm::lane_type(to).ok_or_else(|| unsup(op, to))?;
                let f = move |b: &mut FunctionBuilder, v: &[cl::Value]| {
                    b.ins().bitcast(ty, super::func::mf(), v[0])
                };
                self.emit_map(n, &[(p, from)], out, op, &f)
            }
            InstKind::Reshape(a, _) => {
                let st = self.tile(a, op)?;
                if st.ty.space == t.ty.space && st.off == t.off {
                    return Ok(());
                }
                let sp = self.tile_ptr(&st, op)?;
                sm::emit_memcpy(&mut self.b, out_p, sp, t.ty.bytes());
                Ok(())
            }
            InstKind::Broadcast { src: s, .. } => {
                let d = t.ty.dtype;
                if sm::lane_type(d).is_none() {
                    return Err(unsup(op, d));
                }
                match k.ty(s) {
                    Type::Scalar(sd) => {
                        let x = self.scalar(s, op)?;
                        let v = self.splat_scalar(x, *sd);
                        self.emit_fill(out_p, n, d, v)
                    }
                    Type::Tile(_) => {
                        let (sp, sd, st) = src(self, s)?;
                        let rows = st.ty.elems();
                        let cols = n / rows.max(1);
                        let cnt = self.i64c(rows as i64);
                        self.counted_loop(cnt, &mut |c, r| {
                            let o = c.b.ins().imul_imm_s(r, sd.bytes() as i64);
                            let a = c.b.ins().iadd(sp, o);
                            let v = sm::load1(&mut c.b, a, sd).ok_or_else(|| unsup(op, sd))?;
                            let o = c.b.ins().imul_imm_s(r, (cols * d.bytes()) as i64);
                            let a = c.b.ins().iadd(out_p, o);
                            c.emit_fill(a, cols, d, v)
                        })
                    }
                }
            }
            InstKind::Iota { shape, axis } => {
                let ax = axis as usize;
                let inner: u64 = shape[ax + 1..].iter().product();
                let dim = shape[ax];
                let cnt = self.i64c(n as i64);
                self.counted_loop(cnt, &mut |c, e| {
                    let q = c.b.ins().udiv_imm_u(e, inner as i64);
                    let v = c.b.ins().urem_imm_u(q, dim as i64);
                    let v = c.b.ins().ireduce(types::I32, v);
                    let o = c.b.ins().imul_imm_s(e, 4);
                    let a = c.b.ins().iadd(out_p, o);
                    c.b.ins().store(super::func::mf(), v, a, 0);
                    Ok(())
                })
            }
            InstKind::Transpose(a) => {
                let (sp, d, st) = src(self, a)?;
                let [rows, cols] = st.ty.shape[..] else {
                    return Err(CodegenError::invalid(op, "rank-2 tile"));
                };
                let esz = d.bytes() as i64;
                let ty = match esz {
                    4 => types::I32,
                    2 => types::I16,
                    _ => types::I8,
                };
                let rc = self.i64c(rows as i64);
                self.counted_loop(rc, &mut |c, r| {
                    let cc = c.i64c(cols as i64);
                    c.counted_loop(cc, &mut |c, col| {
                        let si = c.b.ins().imul_imm_s(r, cols as i64);
                        let si = c.b.ins().iadd(si, col);
                        let si = c.b.ins().imul_imm_s(si, esz);
                        let sa = c.b.ins().iadd(sp, si);
                        let di = c.b.ins().imul_imm_s(col, rows as i64);
                        let di = c.b.ins().iadd(di, r);
                        let di = c.b.ins().imul_imm_s(di, esz);
                        let da = c.b.ins().iadd(out_p, di);
                        let v = c.b.ins().load(ty, super::func::mf(), sa, 0);
                        c.b.ins().store(super::func::mf(), v, da, 0);
                        Ok(())
                    })
                })
            }
            other => Err(CodegenError::unsupported(
                other.opcode(),
                "as a Vector tile op",
            )),
        }
    }

    /// Float ↔ float conversion through the runtime (f16).
    fn runtime_convert(&mut self, s: &TileRef, d: &TileRef, op: &str) -> Result<()> {
        let code = |x| super::abi::dtype_code(x).ok_or_else(|| unsup(op, x));
        let buf = |sp| {
            super::abi::local_buffer(sp)
                .map(|x| x.2)
                .ok_or_else(|| CodegenError::invalid(op, "not a local buffer"))
        };
        if !(s.ty.dtype.is_float() && d.ty.dtype.is_float()) {
            return Err(unsup(op, DType::F16));
        }
        if s.ty.space == Space::Gm || d.ty.space == Space::Gm {
            // A tile in the Vector's GM scratch (too big for UB): the
            // runtime converts by address, checked against the unit's memory.
            if !s.dense() || !d.dense() {
                return Err(CodegenError::unsupported(op, "a strided view in gm"));
            }
            let dp = self.tile_ptr(d, op)?;
            let sp = self.tile_ptr(s, op)?;
            let dc = self.i32c(code(d.ty.dtype)? as i64);
            let sc = self.i32c(code(s.ty.dtype)? as i64);
            let n = self.i64c(d.ty.elems() as i64);
            return self.call("amla_rt_convert", &[dp, dc, sp, sc, n]);
        }
        let (rows, cols) = d.ty.rows_cols();
        let a = [
            (buf(d.ty.space)? as i64, true),
            (d.elem_off(op)? as i64, false),
            (cols as i64, false),
            (code(d.ty.dtype)? as i64, true),
            (buf(s.ty.space)? as i64, true),
            (s.elem_off(op)? as i64, false),
            (cols as i64, false),
            (code(s.ty.dtype)? as i64, true),
            (rows as i64, false),
            (cols as i64, false),
        ];
        let vals: Vec<cl::Value> = a
            .iter()
            .map(|&(x, w)| if w { self.i32c(x) } else { self.i64c(x) })
            .collect();
        self.call("amla_rt_copy_local_to_local", &vals)
    }

    pub(super) fn emit_reduce(
        &mut self,
        rop: ReduceOp,
        a: crate::ir::Value,
        r: crate::ir::Value,
    ) -> Result<()> {
        let op = match rop {
            ReduceOp::Max => "rowmax",
            ReduceOp::Sum => "rowsum",
        };
        let st = self.tile(a, op)?;
        let d = st.ty.dtype;
        if !st.dense() {
            return Err(CodegenError::unsupported(op, "of a strided view"));
        }
        if !matches!(d, DType::F32 | DType::Bf16) {
            return Err(unsup(op, d));
        }
        let (rows, cols) = st.ty.rows_cols();
        let sp = self.tile_ptr(&st, op)?;
        let ident = match rop {
            ReduceOp::Max => f32::NEG_INFINITY,
            ReduceOp::Sum => 0.0,
        };
        let comb = move |b: &mut FunctionBuilder, x: cl::Value, y: cl::Value| match rop {
            ReduceOp::Max => b.ins().fmax(x, y),
            ReduceOp::Sum => b.ins().fadd(x, y),
        };
        // One row: returns the scalar f32.
        let row = move |c: &mut Self, rp: cl::Value| -> Result<cl::Value> {
            let init = sm::fsplat(&mut c.b, ident);
            let n4 = cols / 4;
            let mut acc = init;
            if n4 > 0 {
                let cnt = c.i64c(n4 as i64);
                // A maximum also carries its NaN mask (`sm::running_max_step`).
                let carry = match rop {
                    ReduceOp::Max => vec![init, sm::running_max_no_nan(&mut c.b)],
                    ReduceOp::Sum => vec![init],
                };
                let out = c.counted_loop_carry(cnt, &carry, &mut |c, i, a| {
                    let o = c.b.ins().imul_imm_s(i, 4 * d.bytes() as i64);
                    let p = c.b.ins().iadd(rp, o);
                    let v = sm::load4(&mut c.b, p, d).expect("float");
                    Ok(match rop {
                        ReduceOp::Max => {
                            let (m, n) = sm::running_max_step(&mut c.b, a[0], a[1], v);
                            vec![m, n]
                        }
                        ReduceOp::Sum => vec![comb(&mut c.b, a[0], v)],
                    })
                })?;
                acc = match rop {
                    ReduceOp::Max => sm::running_max_finish(&mut c.b, out[0], out[1]),
                    ReduceOp::Sum => out[0],
                };
            }
            let l: Vec<cl::Value> = (0..4u8).map(|l| c.b.ins().extractlane(acc, l)).collect();
            let x = comb(&mut c.b, l[0], l[1]);
            let y = comb(&mut c.b, l[2], l[3]);
            let mut s = comb(&mut c.b, x, y);
            for t in n4 * 4..cols {
                let p = c.b.ins().iadd_imm_s(rp, (t * d.bytes()) as i64);
                let v = sm::load1(&mut c.b, p, d).expect("float");
                let v = c.b.ins().extractlane(v, 0);
                s = comb(&mut c.b, s, v);
            }
            Ok(s)
        };
        if self.k.ty(r).as_tile().is_none() {
            let s = row(self, sp)?;
            let s = if d == DType::Bf16 {
                let v = self.b.ins().splat(types::F32X4, s);
                let h = sm::f32x4_to_bf16_bits(&mut self.b, v);
                let w = sm::bf16_bits_to_f32x4(&mut self.b, h);
                self.b.ins().extractlane(w, 0)
            } else {
                s
            };
            self.scalars.insert(r, s);
            return Ok(());
        }
        let t = self.tile(r, op)?;
        let op_p = self.tile_ptr(&t, op)?;
        let od = t.ty.dtype;
        let cnt = self.i64c(rows as i64);
        self.counted_loop(cnt, &mut |c, i| {
            let o = c.b.ins().imul_imm_s(i, (cols * d.bytes()) as i64);
            let rp = c.b.ins().iadd(sp, o);
            let s = row(c, rp)?;
            let v = c.b.ins().splat(types::F32X4, s);
            let o = c.b.ins().imul_imm_s(i, od.bytes() as i64);
            let a = c.b.ins().iadd(op_p, o);
            sm::store1(&mut c.b, a, od, v).ok_or_else(|| unsup(op, od))
        })
    }

    pub(crate) fn emit_atomic_exp_add(&mut self, i: Inst) -> Result<()> {
        let op = "atomic_exp_add";
        let InstKind::AtomicExpAdd { tensor, index, n } = self.k.kind(i).clone() else {
            return Err(CodegenError::invalid(op, "not an atomic_exp_add"));
        };
        if self.k.tensors[tensor].dtype != DType::F32 {
            return Err(CodegenError::invalid(op, "needs an f32 tensor"));
        }
        let Some(last) = index.last() else {
            return Err(CodegenError::invalid(op, "no index"));
        };
        if matches!(last, Index::Point(_)) {
            return Err(CodegenError::unsupported(op, "a point as the last index"));
        }
        let cols_static = match last {
            Index::Range { len, .. } => *len,
            _ => match self.k.tensors[tensor].shape.last() {
                Some(crate::ir::Dim::Const(c)) => *c,
                Some(crate::ir::Dim::Sym(d)) => self.k.dims[*d]
                    .value
                    .ok_or_else(|| CodegenError::invalid(op, "`..` over a launch-time dim"))?,
                None => return Err(CodegenError::invalid(op, "scalar tensor")),
            },
        };
        // i32 exponents: the exact add of `n << 23`; f32 exponents: the
        // fractional add of `frac_delta(x)` (`amla_runtime::rescale`).
        let (n_ptr, n_scalar, frac) = match self.k.ty(n) {
            Type::Tile(tt) if matches!(tt.dtype, DType::I32 | DType::F32) => {
                let frac = tt.dtype == DType::F32;
                let nt = self.tile(n, op)?;
                (Some(self.tile_ptr(&nt, op)?), None, frac)
            }
            Type::Scalar(DType::I32) => (None, Some(self.scalar(n, op)?), false),
            Type::Scalar(DType::F32) => (None, Some(self.scalar(n, op)?), true),
            t => return Err(CodegenError::invalid(op, format!("exponents of type {t}"))),
        };
        let dims = {
            // Reuse the GM box of the access.
            self.gm_box(tensor, &index, op)?
        };
        let base = self.gm[&tensor].base;
        let gm_index = self.gm[&tensor].index;
        let zero = self.i64c(0);
        self.emit_box(&dims, zero, None, None, op, &mut |c, p| {
            c.note_gm(gm_index, p.big_off, p.big_stride, p.rows, p.cols, 2)?;
            let row0 = c.b.ins().udiv_imm_u(p.tile_off, cols_static as i64);
            c.counted_loop(p.rows, &mut |c, r| {
                let nv = match (n_ptr, n_scalar) {
                    (Some(np), _) => {
                        let idx = c.b.ins().iadd(row0, r);
                        let o = c.b.ins().imul_imm_s(idx, 4);
                        let a = c.b.ins().iadd(np, o);
                        let t = if frac { types::F32 } else { types::I32 };
                        c.b.ins().load(t, super::func::mf(), a, 0)
                    }
                    (None, Some(s)) => s,
                    _ => unreachable!("one of the two is set"),
                };
                let ro = c.b.ins().imul(r, p.big_stride);
                let eo = c.b.ins().iadd(p.big_off, ro);
                let bo = c.b.ins().imul_imm_s(eo, 4);
                let rp = c.b.ins().iadd(base, bo);
                if frac {
                    let d = sm::emit_frac_delta(&mut c.b, nv);
                    sm::emit_exp2_frac_row(&mut c.b, rp, p.cols, d);
                } else {
                    sm::emit_exp2_scale_row(&mut c.b, rp, p.cols, nv);
                }
                Ok(())
            })
        })
    }
}
