//! Typing rules: the result types of an instruction from its operands.
//!
//! One function, [`result_types`], used by the [`super::Builder`] (to type
//! new results), the text parser and the verifier (to check them). Spaces
//! are not part of these rules: results are typed in [`Space::Any`] except
//! for `copy`, whose result is in its destination; `plan-memory` then places
//! tiles, and the verifier checks placements separately.

use super::inst::{BLayout, BinaryOp, Index, InstKind, UnaryOp};
use super::types::{DType, Dim, Space, TileType, Type};
use super::{Kernel, Value};

/// A typing rule violation, described for a compiler engineer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeError(pub String);

impl std::fmt::Display for TypeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, TypeError> {
    Err(TypeError(msg.into()))
}

/// Builds a scalar (empty shape) or a tile type.
pub fn shaped(dtype: DType, shape: Vec<u64>, space: Space) -> Type {
    if shape.is_empty() {
        Type::Scalar(dtype)
    } else {
        Type::tile(dtype, shape, space)
    }
}

/// Types equal apart from the space of tiles.
pub fn same_modulo_space(a: &Type, b: &Type) -> bool {
    a.with_space(Space::Any) == b.with_space(Space::Any)
}

fn expect_i32_scalar(k: &Kernel, v: Value, what: &str) -> Result<(), TypeError> {
    match k.ty(v) {
        Type::Scalar(DType::I32) => Ok(()),
        t => err(format!("{what} must be an i32 scalar, {v} is {t}")),
    }
}

/// The shape selected by `index` from a dim list; `dims` are the extents
/// (None = symbolic, allowed only under a point or range).
fn indexed_shape(k: &Kernel, dims: &[Option<u64>], index: &[Index]) -> Result<Vec<u64>, TypeError> {
    if dims.len() != index.len() {
        return err(format!("{} indices for {} dims", index.len(), dims.len()));
    }
    let mut out = Vec::new();
    for (d, ix) in dims.iter().zip(index) {
        match ix {
            Index::Point(v) => expect_i32_scalar(k, *v, "an index")?,
            Index::Range { start, len } => {
                expect_i32_scalar(k, *start, "a range start")?;
                if *len == 0 {
                    return err("a range must not be empty");
                }
                out.push(*len);
            }
            Index::Full => match d {
                Some(n) => out.push(*n),
                None => return err("`..` over a symbolic dim has no static length"),
            },
        }
    }
    Ok(out)
}

fn tensor_dims(k: &Kernel, t: super::Tensor) -> Vec<Option<u64>> {
    k.tensors[t]
        .shape
        .iter()
        .map(|d| match d {
            Dim::Const(n) => Some(*n),
            Dim::Sym(id) => k.dims[*id].value,
        })
        .collect()
}

fn float_tile_or_scalar(t: &Type, what: &str) -> Result<(), TypeError> {
    if t.dtype().is_float() {
        Ok(())
    } else {
        err(format!("{what} needs a float operand, got {t}"))
    }
}

/// The result types of `kind` in kernel `k` (whose operand values must
/// exist), or what is wrong with it.
pub fn result_types(k: &Kernel, kind: &InstKind) -> Result<Vec<Type>, TypeError> {
    let mut bad = None;
    kind.for_each_operand(|v| {
        if !k.values.is_valid(v) && bad.is_none() {
            bad = Some(v);
        }
    });
    if let Some(v) = bad {
        return err(format!("operand {v} does not exist"));
    }
    let ty = |v: Value| k.ty(v).clone();
    Ok(match kind {
        InstKind::IConst(_) | InstKind::DimValue(_) | InstKind::SubBlock => {
            if let InstKind::DimValue(d) = kind
                && !k.dims.is_valid(*d)
            {
                return err(format!("dim {d} does not exist"));
            }
            vec![Type::Scalar(DType::I32)]
        }
        InstKind::FConst(_, d) => {
            if !d.is_float() {
                return err(format!("fconst of non-float dtype {d}"));
            }
            vec![Type::Scalar(*d)]
        }
        InstKind::Load { tensor, index } => {
            if !k.tensors.is_valid(*tensor) {
                return err(format!("tensor {tensor} does not exist"));
            }
            let shape = indexed_shape(k, &tensor_dims(k, *tensor), index)?;
            vec![shaped(k.tensors[*tensor].dtype, shape, Space::Any)]
        }
        InstKind::Store {
            tensor,
            index,
            value,
        }
        | InstKind::AtomicAdd {
            tensor,
            index,
            value,
        } => {
            if !k.tensors.is_valid(*tensor) {
                return err(format!("tensor {tensor} does not exist"));
            }
            let shape = indexed_shape(k, &tensor_dims(k, *tensor), index)?;
            let t = ty(*value);
            let want = k.tensors[*tensor].dtype;
            if t.shape() != shape.as_slice() || t.dtype() != want {
                return err(format!(
                    "{} of {t} into {}{:?} of {want}",
                    kind.opcode(),
                    k.tensors[*tensor].name,
                    shape
                ));
            }
            if matches!(kind, InstKind::AtomicAdd { .. }) && want != DType::F32 {
                return err("atomic_add needs an f32 tensor");
            }
            vec![]
        }
        InstKind::AtomicExpAdd { tensor, index, n } => {
            if !k.tensors.is_valid(*tensor) {
                return err(format!("tensor {tensor} does not exist"));
            }
            if k.tensors[*tensor].dtype != DType::F32 {
                return err("atomic_exp_add needs an f32 tensor");
            }
            let shape = indexed_shape(k, &tensor_dims(k, *tensor), index)?;
            let t = ty(*n);
            let rows = &shape[..shape.len().saturating_sub(1)];
            // i32: the exact add of `n << 23`; f32: the fractional add of
            // `round(x · 2^23)` to the bits (`amla_runtime::rescale`).
            if !matches!(t.dtype(), DType::I32 | DType::F32) || t.shape() != rows {
                return err(format!(
                    "atomic_exp_add needs an i32 or f32 exponent per row {rows:?}, got {t}"
                ));
            }
            vec![]
        }
        InstKind::Extract { src, index } => {
            let t = ty(*src);
            let Type::Tile(tt) = &t else {
                return err("extract from a scalar");
            };
            let dims: Vec<Option<u64>> = tt.shape.iter().map(|&n| Some(n)).collect();
            let shape = indexed_shape(k, &dims, index)?;
            vec![shaped(tt.dtype, shape, Space::Any)]
        }
        InstKind::Copy { src, to } => {
            let t = ty(*src);
            if t.as_tile().is_none() {
                return err("copy of a scalar");
            }
            vec![t.with_space(*to)]
        }
        InstKind::Broadcast { src, shape } => {
            let t = ty(*src);
            if !shape.starts_with(t.shape()) || shape.len() <= t.shape().len() {
                return err(format!(
                    "cannot broadcast {t} to {shape:?}: its shape must be a proper prefix"
                ));
            }
            vec![Type::tile(t.dtype(), shape.clone(), Space::Any)]
        }
        InstKind::Iota { shape, axis } => {
            if shape.is_empty() || *axis as usize >= shape.len() {
                return err(format!("iota axis {axis} out of range for {shape:?}"));
            }
            vec![Type::tile(DType::I32, shape.clone(), Space::Any)]
        }
        InstKind::Unary(op, a) => {
            let t = ty(*a);
            match op {
                UnaryOp::Not if t.dtype() != DType::Bool => return err("not needs a bool operand"),
                UnaryOp::Not => {}
                UnaryOp::Neg | UnaryOp::Abs if t.dtype() == DType::Bool => {
                    return err("neg/abs of a bool");
                }
                UnaryOp::Neg | UnaryOp::Abs => {}
                _ => float_tile_or_scalar(&t, kind.opcode())?,
            }
            vec![t.with_space(Space::Any)]
        }
        InstKind::Binary(op, a, b) => {
            let (ta, tb) = (ty(*a), ty(*b));
            if !same_modulo_space(&ta, &tb) {
                return err(format!("{} operands differ: {ta} vs {tb}", kind.opcode()));
            }
            match op {
                BinaryOp::And | BinaryOp::Or if ta.dtype() != DType::Bool => {
                    return err(format!("{} needs bool operands", kind.opcode()));
                }
                BinaryOp::Rem if ta.dtype() != DType::I32 => return err("rem needs i32 operands"),
                BinaryOp::Add
                | BinaryOp::Sub
                | BinaryOp::Mul
                | BinaryOp::Div
                | BinaryOp::Max
                | BinaryOp::Min
                    if ta.dtype() == DType::Bool =>
                {
                    return err(format!("{} of bool operands", kind.opcode()));
                }
                _ => {}
            }
            vec![ta.with_space(Space::Any)]
        }
        InstKind::Cmp(_, a, b) => {
            let (ta, tb) = (ty(*a), ty(*b));
            if !same_modulo_space(&ta, &tb) {
                return err(format!("{} operands differ: {ta} vs {tb}", kind.opcode()));
            }
            vec![ta.with_dtype(DType::Bool).with_space(Space::Any)]
        }
        InstKind::Select(c, a, b) => {
            let (tc, ta, tb) = (ty(*c), ty(*a), ty(*b));
            if tc.dtype() != DType::Bool || tc.shape() != ta.shape() || !same_modulo_space(&ta, &tb)
            {
                return err(format!(
                    "select needs a bool mask and equal arms: {tc}, {ta}, {tb}"
                ));
            }
            vec![ta.with_space(Space::Any)]
        }
        InstKind::Reduce(_, a) => {
            let t = ty(*a);
            let Type::Tile(tt) = &t else {
                return err("reduction of a scalar");
            };
            if !tt.dtype.is_float() {
                return err("reductions need a float tile");
            }
            vec![shaped(
                tt.dtype,
                tt.shape[..tt.shape.len() - 1].to_vec(),
                Space::Any,
            )]
        }
        InstKind::Cast(a, d) => {
            if *d == DType::Bool {
                return err("cast to bool");
            }
            vec![ty(*a).with_dtype(*d).with_space(Space::Any)]
        }
        InstKind::Bitcast(a, d) => {
            let t = ty(*a);
            let ok = matches!(
                (t.dtype(), d),
                (DType::F32, DType::I32) | (DType::I32, DType::F32)
            );
            if !ok {
                return err(format!("bitcast {t} to {d}: only f32 <-> i32"));
            }
            vec![t.with_dtype(*d).with_space(Space::Any)]
        }
        InstKind::Reshape(a, shape) => {
            let t = ty(*a);
            let Type::Tile(tt) = &t else {
                return err("reshape of a scalar");
            };
            if shape.is_empty() || shape.iter().product::<u64>() != tt.elems() {
                return err(format!("reshape {t} to {shape:?}: element counts differ"));
            }
            vec![Type::tile(tt.dtype, shape.clone(), Space::Any)]
        }
        InstKind::Transpose(a) => {
            let t = ty(*a);
            match t.shape() {
                [r, c] => vec![Type::tile(t.dtype(), vec![*c, *r], Space::Any)],
                _ => return err(format!("transpose needs a rank-2 tile, got {t}")),
            }
        }
        InstKind::Matmul {
            a,
            b,
            b_layout,
            acc,
        } => {
            let (ta, tb) = (ty(*a), ty(*b));
            let (Some(x), Some(y)) = (ta.as_tile(), tb.as_tile()) else {
                return err("matmul of a scalar");
            };
            if !matches!(x.dtype, DType::Bf16 | DType::F16) || x.dtype != y.dtype {
                return err(format!(
                    "matmul needs two bf16 or two f16 tiles, got {ta} and {tb}"
                ));
            }
            let ([m, ka], [r0, r1]) = (x.shape.as_slice(), y.shape.as_slice()) else {
                return err(format!("matmul needs rank-2 tiles, got {ta} and {tb}"));
            };
            let (kb, n) = match b_layout {
                BLayout::KN => (*r0, *r1),
                BLayout::NK => (*r1, *r0),
            };
            if *ka != kb {
                return err(format!("matmul inner dims differ: {ka} vs {kb}"));
            }
            let out = TileType {
                dtype: DType::F32,
                shape: vec![*m, n],
                space: Space::Any,
            };
            if let Some(c) = acc
                && !same_modulo_space(&ty(*c), &Type::Tile(out.clone()))
            {
                return err(format!("matmul accumulator must be {}", Type::Tile(out)));
            }
            vec![Type::Tile(out)]
        }
        InstKind::SetFlag(_) | InstKind::WaitFlag(_) | InstKind::Yield(_) => vec![],
        InstKind::Parallel { axes, .. } => {
            for ax in axes {
                expect_i32_scalar(k, ax.lo, "a parallel bound")?;
                expect_i32_scalar(k, ax.hi, "a parallel bound")?;
                if ax.step <= 0 {
                    return err("a parallel step must be positive");
                }
            }
            vec![]
        }
        InstKind::For {
            lo, hi, step, init, ..
        } => {
            expect_i32_scalar(k, *lo, "a loop bound")?;
            expect_i32_scalar(k, *hi, "a loop bound")?;
            if *step <= 0 {
                return err("a loop step must be positive");
            }
            init.iter().map(|v| ty(*v)).collect()
        }
    })
}
