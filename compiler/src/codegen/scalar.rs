//! Scalars and control flow: constants, dims, i32 index math (wrapping;
//! a scalar `div`/`rem` by 0 ends the launch with
//! [`super::abi::STATUS_DIVISION_BY_ZERO`], `i32::MIN / -1` wraps), f32 scalar math, the
//! `parallel` grid (work item → axis values, row-major, last axis fastest)
//! and `for` loops with scalar and tile block parameters.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{self as cl, InstBuilder, types};

use super::func::FnCx;
use super::{CodegenError, Result, scalar_type, simd_math};
use crate::ir::{BinaryOp, CmpOp, DType, EntityRef, Inst, InstKind, Type, UnaryOp};

/// `a / b` as the IR defines it for i32 (0 for a zero divisor, wrapping).
pub(crate) fn host_div(a: i32, b: i32) -> i32 {
    if b == 0 { 0 } else { a.wrapping_div(b) }
}

/// `a % b` as the IR defines it for i32 (0 for a zero divisor).
pub(crate) fn host_rem(a: i32, b: i32) -> i32 {
    if b == 0 { 0 } else { a.wrapping_rem(b) }
}

/// `ceil((hi - lo) / step)`, 0 when `hi <= lo`.
pub(crate) fn trip_count(lo: i32, hi: i32, step: i64) -> u64 {
    let d = i64::from(hi) - i64::from(lo);
    if d <= 0 || step <= 0 {
        0
    } else {
        ((d + step - 1) / step) as u64
    }
}

pub(crate) fn intcc(op: CmpOp) -> IntCC {
    match op {
        CmpOp::Eq => IntCC::Equal,
        CmpOp::Ne => IntCC::NotEqual,
        CmpOp::Lt => IntCC::SignedLessThan,
        CmpOp::Le => IntCC::SignedLessThanOrEqual,
        CmpOp::Gt => IntCC::SignedGreaterThan,
        CmpOp::Ge => IntCC::SignedGreaterThanOrEqual,
    }
}

pub(crate) fn floatcc(op: CmpOp) -> FloatCC {
    match op {
        CmpOp::Eq => FloatCC::Equal,
        CmpOp::Ne => FloatCC::NotEqual,
        CmpOp::Lt => FloatCC::LessThan,
        CmpOp::Le => FloatCC::LessThanOrEqual,
        CmpOp::Gt => FloatCC::GreaterThan,
        CmpOp::Ge => FloatCC::GreaterThanOrEqual,
    }
}

impl FnCx<'_, '_> {
    /// f32 scalar → rounded to `d`'s precision (bf16: nearest even), still f32.
    fn round_scalar_to(&mut self, x: cl::Value, d: DType, op: &str) -> Result<cl::Value> {
        match d {
            DType::F32 => Ok(x),
            DType::Bf16 => {
                let v = self.b.ins().splat(types::F32X4, x);
                let h = simd_math::f32x4_to_bf16_bits(&mut self.b, v);
                let w = simd_math::bf16_bits_to_f32x4(&mut self.b, h);
                Ok(self.b.ins().extractlane(w, 0))
            }
            _ => Err(CodegenError::unsupported(
                op,
                format!("scalar rounding to {d}"),
            )),
        }
    }

    pub(crate) fn emit_scalar(&mut self, i: Inst) -> Result<()> {
        let k = self.k;
        let kind = k.kind(i);
        let op = kind.opcode();
        let Some(&r) = k.insts[i].results.first() else {
            return Err(CodegenError::invalid(op, "no result"));
        };
        let rd = k.ty(r).dtype();
        let v = match kind {
            InstKind::IConst(c) => self.i32c(*c as i32 as i64),
            InstKind::FConst(x, d) => {
                let f = match d {
                    DType::Bf16 => crate::round16::bf16_from_f64(*x).to_f32(),
                    DType::F16 => crate::round16::f16_from_f64(*x).to_f32(),
                    _ => *x as f32,
                };
                self.b.ins().f32const(f)
            }
            InstKind::DimValue(d) => {
                let v = self.dims[d.index()]
                    .ok_or_else(|| CodegenError::invalid(op, format!("dim {d} has no value")))?;
                self.b.ins().ireduce(types::I32, v)
            }
            InstKind::SubBlock => self.sub_block,
            InstKind::Unary(u, a) => {
                let x = self.scalar(*a, op)?;
                let ad = k.ty(*a).dtype();
                match (u, ad) {
                    (UnaryOp::Not, DType::Bool) => self.b.ins().bxor_imm_u(x, 1),
                    (UnaryOp::Neg, DType::I32) => self.b.ins().ineg(x),
                    (UnaryOp::Abs, DType::I32) => self.b.ins().iabs(x),
                    (_, d) if d.is_float() => {
                        let v = self.b.ins().splat(types::F32X4, x);
                        let y = simd_math::unary_f32x4(&mut self.b, *u, v)
                            .ok_or_else(|| CodegenError::unsupported(op, "on a float scalar"))?;
                        let y = self.b.ins().extractlane(y, 0);
                        self.round_scalar_to(y, d, op)?
                    }
                    _ => return Err(CodegenError::unsupported(op, format!("on {ad}"))),
                }
            }
            InstKind::Binary(bop, a, b) => {
                let (x, y) = (self.scalar(*a, op)?, self.scalar(*b, op)?);
                let ad = k.ty(*a).dtype();
                match ad {
                    DType::I32 => match bop {
                        BinaryOp::Add => self.b.ins().iadd(x, y),
                        BinaryOp::Sub => self.b.ins().isub(x, y),
                        BinaryOp::Mul => self.b.ins().imul(x, y),
                        BinaryOp::Div | BinaryOp::Rem => {
                            self.fail_on_zero_divisor(*b, y);
                            simd_math::int_divrem(&mut self.b, *bop == BinaryOp::Div, x, y)
                        }
                        BinaryOp::Max => self.b.ins().smax(x, y),
                        BinaryOp::Min => self.b.ins().smin(x, y),
                        _ => return Err(CodegenError::invalid(op, "on i32")),
                    },
                    DType::Bool => match bop {
                        BinaryOp::And => self.b.ins().band(x, y),
                        BinaryOp::Or => self.b.ins().bor(x, y),
                        _ => return Err(CodegenError::invalid(op, "on bool")),
                    },
                    d => {
                        let v = match bop {
                            BinaryOp::Add => self.b.ins().fadd(x, y),
                            BinaryOp::Sub => self.b.ins().fsub(x, y),
                            BinaryOp::Mul => self.b.ins().fmul(x, y),
                            BinaryOp::Div => self.b.ins().fdiv(x, y),
                            BinaryOp::Max => self.b.ins().fmax(x, y),
                            BinaryOp::Min => self.b.ins().fmin(x, y),
                            _ => return Err(CodegenError::invalid(op, "on floats")),
                        };
                        self.round_scalar_to(v, d, op)?
                    }
                }
            }
            InstKind::Cmp(c, a, b) => {
                let (x, y) = (self.scalar(*a, op)?, self.scalar(*b, op)?);
                if k.ty(*a).dtype().is_float() {
                    self.b.ins().fcmp(floatcc(*c), x, y)
                } else {
                    self.b.ins().icmp(intcc(*c), x, y)
                }
            }
            InstKind::Select(c, a, b) => {
                let c = self.scalar(*c, op)?;
                let (x, y) = (self.scalar(*a, op)?, self.scalar(*b, op)?);
                self.b.ins().select(c, x, y)
            }
            InstKind::Cast(a, d) => {
                let x = self.scalar(*a, op)?;
                let sd = k.ty(*a).dtype();
                match (sd, *d) {
                    (s, t) if s == t => x,
                    (DType::I32, t) => {
                        let f = self.b.ins().fcvt_from_sint(types::F32, x);
                        self.round_scalar_to(f, t, op)?
                    }
                    (DType::Bool, DType::I32) => self.b.ins().uextend(types::I32, x),
                    (DType::Bool, t) => {
                        let w = self.b.ins().uextend(types::I32, x);
                        let f = self.b.ins().fcvt_from_sint(types::F32, w);
                        self.round_scalar_to(f, t, op)?
                    }
                    (s, DType::I32) if s.is_float() => self.b.ins().fcvt_to_sint_sat(types::I32, x),
                    (_, t) => self.round_scalar_to(x, t, op)?,
                }
            }
            InstKind::Bitcast(a, d) => {
                let x = self.scalar(*a, op)?;
                self.b.ins().bitcast(scalar_type(*d), super::func::mf(), x)
            }
            InstKind::Reduce(..) => return self.emit_vector(i),
            _ => {
                return Err(CodegenError::unsupported(op, "with a scalar result"));
            }
        };
        debug_assert_eq!(self.b.func.dfg.value_type(v), scalar_type(rd));
        self.scalars.insert(r, v);
        Ok(())
    }

    /// Ends the function with [`super::abi::STATUS_DIVISION_BY_ZERO`] when
    /// the divisor `y` (IR value `v`) is 0, unless `v` is a non-zero
    /// constant.
    fn fail_on_zero_divisor(&mut self, v: crate::ir::Value, y: cl::Value) {
        let k = self.k;
        if let Some(InstKind::IConst(c)) = k.def_inst(v).map(|i| k.kind(i))
            && *c as i32 != 0
        {
            return;
        }
        let is0 = self.b.ins().icmp_imm_s(IntCC::Equal, y, 0);
        let st = self.i32c(super::abi::STATUS_DIVISION_BY_ZERO as i64);
        self.fail_if(is0, st);
    }

    pub(crate) fn emit_parallel(&mut self, i: Inst) -> Result<()> {
        let k = self.k;
        let InstKind::Parallel { axes, body } = k.kind(i) else {
            return Err(CodegenError::invalid("parallel", "not a parallel"));
        };
        let mut los = Vec::new();
        let mut trips = Vec::new();
        let mut total = self.i64c(1);
        for ax in axes {
            let lo = self.index_start(ax.lo, "parallel")?;
            let hi = self.index_start(ax.hi, "parallel")?;
            let d = self.b.ins().isub(hi, lo);
            let d = self.b.ins().iadd_imm_s(d, ax.step - 1);
            let zero = self.i64c(0);
            let d = self.b.ins().smax(d, zero);
            let t = self.b.ins().udiv_imm_u(d, ax.step);
            total = self.b.ins().imul(total, t);
            los.push(lo);
            trips.push(t);
        }
        let done = self
            .b
            .ins()
            .icmp(IntCC::UnsignedGreaterThanOrEqual, self.work_item, total);
        let zero = self.i32c(0);
        self.fail_if(done, zero);
        let mut idx = self.work_item;
        let mut vals = vec![self.i32c(0); axes.len()];
        for a in (0..axes.len()).rev() {
            let r = self.b.ins().urem(idx, trips[a]);
            idx = self.b.ins().udiv(idx, trips[a]);
            let off = self.b.ins().imul_imm_s(r, axes[a].step);
            let v = self.b.ins().iadd(los[a], off);
            vals[a] = self.b.ins().ireduce(types::I32, v);
        }
        let params = &k.blocks[*body].params;
        if params.len() != axes.len() {
            return Err(CodegenError::invalid("parallel", "one parameter per axis"));
        }
        for (p, v) in params.iter().zip(vals) {
            self.scalars.insert(*p, v);
        }
        let ys = self.emit_block(*body)?;
        if !ys.is_empty() {
            return Err(CodegenError::invalid("parallel", "a grid body yields"));
        }
        Ok(())
    }

    pub(crate) fn emit_for(&mut self, i: Inst) -> Result<()> {
        let k = self.k;
        let InstKind::For {
            lo,
            hi,
            step,
            init,
            body,
        } = k.kind(i)
        else {
            return Err(CodegenError::invalid("for", "not a for"));
        };
        let params = k.blocks[*body].params.clone();
        let results = k.insts[i].results.clone();
        if params.len() != init.len() + 1 || results.len() != init.len() {
            return Err(CodegenError::invalid("for", "carried values mismatch"));
        }
        let lo = self.scalar(*lo, "for")?;
        let hi = self.scalar(*hi, "for")?;
        // Tiles: init → param placement.
        let mut scalar_init = Vec::new();
        let mut scalar_idx = Vec::new();
        for (j, &v) in init.iter().enumerate() {
            let p = params[j + 1];
            match k.ty(p) {
                Type::Tile(_) => self.move_tile(v, p, "for")?,
                Type::Scalar(_) => {
                    scalar_init.push(self.scalar(v, "for")?);
                    scalar_idx.push(j);
                }
            }
        }
        let header = self.b.create_block();
        let bb = self.b.create_block();
        let exit = self.b.create_block();
        self.b.append_block_param(header, types::I32);
        for &j in &scalar_idx {
            let t = scalar_type(k.ty(params[j + 1]).dtype());
            self.b.append_block_param(header, t);
        }
        let mut args: Vec<cl::BlockArg> = vec![lo.into()];
        args.extend(scalar_init.iter().map(|&v| cl::BlockArg::from(v)));
        self.b.ins().jump(header, &args);
        self.b.switch_to_block(header);
        let hp = self.b.block_params(header).to_vec();
        let c = self.b.ins().icmp(IntCC::SignedLessThan, hp[0], hi);
        self.b.ins().brif(c, bb, &[], exit, &[]);
        self.b.switch_to_block(bb);
        self.b.seal_block(bb);
        self.scalars.insert(params[0], hp[0]);
        for (n, &j) in scalar_idx.iter().enumerate() {
            self.scalars.insert(params[j + 1], hp[n + 1]);
        }
        let saved = self.block_no;
        self.block_no = self.b.ins().sextend(types::I64, hp[0]);
        let ys = self.emit_block(*body)?;
        if ys.len() != init.len() {
            return Err(CodegenError::invalid(
                "for",
                "the body must end in a yield of every carried value",
            ));
        }
        let mut next: Vec<cl::BlockArg> = Vec::new();
        // The next value in i64, so that `j + step` past `i32::MAX` ends the
        // loop instead of wrapping to a value below `hi` (a loop that never
        // ends) or truncating the step.
        let iv64 = self.b.ins().sextend(types::I64, hp[0]);
        let iv2 = self.b.ins().iadd_imm_s(iv64, *step);
        let hi64 = self.b.ins().sextend(types::I64, hi);
        let more = self.b.ins().icmp(IntCC::SignedLessThan, iv2, hi64);
        let iv2 = self.b.ins().ireduce(types::I32, iv2);
        let iv2 = self.b.ins().select(more, iv2, hi);
        next.push(iv2.into());
        for (j, &y) in ys.iter().enumerate() {
            if k.ty(params[j + 1]).as_tile().is_some() {
                self.move_tile(y, params[j + 1], "yield")?;
            }
        }
        for &j in &scalar_idx {
            next.push(self.scalar(ys[j], "yield")?.into());
        }
        self.b.ins().jump(header, &next);
        self.b.seal_block(header);
        self.block_no = saved;
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
        for (n, &j) in scalar_idx.iter().enumerate() {
            self.scalars.insert(results[j], hp[n + 1]);
        }
        for (j, &r) in results.iter().enumerate() {
            if k.ty(r).as_tile().is_some() {
                self.move_tile(params[j + 1], r, "for")?;
            }
        }
        Ok(())
    }
}
