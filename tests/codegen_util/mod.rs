//! Helpers for the codegen tests: building placed kernels by hand.

#![allow(dead_code)]

use amla::compiler::ir::{
    Builder, DType, Dim, DimData, DimId, Func, InstKind, Kernel, Space, Tensor, Type, Unit, Value,
};
use amla::compiler::ir::{Role, TensorData};

/// Places tile `v` in `space` at byte `off`.
pub fn place(k: &mut Kernel, v: Value, space: Space, off: u64) {
    let ty = k.values[v].ty.with_space(space);
    k.values[v].ty = ty;
    k.offsets.set(v, Some(off));
}

/// Adds a GM tensor.
pub fn tensor(k: &mut Kernel, name: &str, dtype: DType, shape: Vec<Dim>, role: Role) -> Tensor {
    k.tensors.push(TensorData {
        name: name.into(),
        dtype,
        shape,
        role,
    })
}

/// Adds a launch-time dim.
pub fn dim(k: &mut Kernel, name: &str) -> DimId {
    k.dims.push(DimData {
        name: name.into(),
        value: None,
    })
}

/// Adds a function for `unit` and returns its top block.
pub fn func(k: &mut Kernel, unit: Unit, sub_blocks: u32) -> amla::compiler::ir::Block {
    let top = k.blocks.push(Default::default());
    k.funcs.push(Func {
        unit,
        sub_blocks,
        body: top,
    });
    top
}

/// `b.value(kind)` then place the result.
pub fn placed(b: &mut Builder, kind: InstKind, space: Space, off: u64) -> Value {
    let v = b.value(kind).unwrap();
    place(b.kernel, v, space, off);
    v
}

/// An i32 constant.
pub fn iconst(b: &mut Builder, x: i64) -> Value {
    b.value(InstKind::IConst(x)).unwrap()
}

/// An f32 constant.
pub fn fconst(b: &mut Builder, x: f64) -> Value {
    b.value(InstKind::FConst(x, DType::F32)).unwrap()
}

/// True when `v` is a tile.
pub fn is_tile(k: &Kernel, v: Value) -> bool {
    matches!(k.ty(v), Type::Tile(_))
}

/// Deterministic pseudo-random numbers.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u32(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 16) as u32
    }
    /// Uniform in [lo, hi).
    pub fn f32(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * (self.next_u32() as f32 / 4294967296.0)
    }
}
