//! The tile IR.
//!
//! A [`Kernel`] owns every entity in typed arenas ([`entity::PrimaryMap`]):
//! values, instructions, blocks, GM tensors and dims. Control flow is
//! structured: a [`Func`] is a block of instructions, and loops
//! ([`InstKind::Parallel`], [`InstKind::For`]) own body blocks, so a pass
//! walks a tree, not a CFG. Source spans live in a side table.
//!
//! Invariants (checked by [`verify()`] after every pass):
//! - SSA: every value is defined once, by an instruction result or a block
//!   parameter, and used only where its definition dominates (earlier in the
//!   same block or in an enclosing block);
//! - every instruction's operand and result types satisfy [`typing`];
//! - a block belongs to exactly one owner (a function or one loop);
//! - after `split`, functions are `cube` and `vector` only and every flag a
//!   unit waits on is set by the other unit;
//! - after `plan-memory`, every tile names a buffer the owning unit can use.

pub mod builder;
pub mod edit;
pub mod entity;
pub mod inst;
pub mod parse;
pub mod print;
pub mod types;
pub mod typing;
pub mod verify;

pub use builder::Builder;
pub use entity::{EntityRef, PrimaryMap, SecondaryMap};
pub use inst::{Axis, BLayout, BinaryOp, CmpOp, Index, InstKind, ReduceOp, UnaryOp, Unit};
pub use parse::{ParseError, parse};
pub use print::{Names, print, print_inst};
pub use types::{DType, Dim, Space, TileType, Type};
pub use verify::{VerifyConfig, VerifyError, VerifyIssue, verify, verify_with};

crate::entity_ref!(
    /// An SSA value.
    Value,
    "v"
);
crate::entity_ref!(
    /// An instruction.
    Inst,
    "inst"
);
crate::entity_ref!(
    /// A block: an ordered list of instructions with parameters.
    Block,
    "block"
);
crate::entity_ref!(
    /// A GM tensor: a kernel input, output or compiler workspace.
    Tensor,
    "t"
);
crate::entity_ref!(
    /// A symbolic kernel dim.
    DimId,
    "d"
);

/// A byte range in the source file an instruction came from.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct SrcSpan {
    /// First byte.
    pub start: u32,
    /// One past the last byte.
    pub end: u32,
}

/// A symbolic dim of the kernel (`B`, `N`…).
#[derive(Clone, Debug, PartialEq)]
pub struct DimData {
    /// Source name.
    pub name: String,
    /// The value bound at compile time, if any; otherwise bound at launch.
    pub value: Option<u64>,
}

/// What a GM tensor is for.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Kernel input (read-only).
    Input,
    /// Kernel output (written; outputs are zero-initialised by the runtime).
    Output,
    /// Scratch the compiler added (zero-initialised, private to a launch).
    Workspace,
}

impl Role {
    /// Text name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Input => "input",
            Role::Output => "output",
            Role::Workspace => "workspace",
        }
    }
}

/// A GM tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorData {
    /// Source name (workspaces: a name the pass chose, unique in the kernel).
    pub name: String,
    /// Element type (never `bool`).
    pub dtype: DType,
    /// Row-major extents; symbolic dims are bound at launch.
    pub shape: Vec<Dim>,
    /// Input, output or workspace.
    pub role: Role,
}

/// Where a value comes from.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ValueDef {
    /// Result `index` of an instruction.
    Result(Inst, u32),
    /// Parameter `index` of a block.
    Param(Block, u32),
}

/// An SSA value.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueData {
    /// Its type (tiles carry their buffer).
    pub ty: Type,
    /// Its definition.
    pub def: ValueDef,
    /// The source name it carries, if any (the printer uniquifies names).
    pub name: Option<String>,
}

/// An instruction.
#[derive(Clone, Debug, PartialEq)]
pub struct InstData {
    /// The operation and operands.
    pub kind: InstKind,
    /// Result values, in order.
    pub results: Vec<Value>,
}

/// A block: parameters and an ordered list of instructions.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct BlockData {
    /// Parameters: loop variables, then loop-carried values.
    pub params: Vec<Value>,
    /// Instructions in execution order.
    pub insts: Vec<Inst>,
}

/// A program for one unit.
#[derive(Clone, Debug, PartialEq)]
pub struct Func {
    /// Which unit runs it.
    pub unit: Unit,
    /// How many Vector sub-blocks run it (1 for `any` and `cube`): each runs
    /// the whole function with its own [`InstKind::SubBlock`] index.
    pub sub_blocks: u32,
    /// The top-level block (no parameters).
    pub body: Block,
}

/// A kernel: GM tensors, dims, and one function per unit.
#[derive(Clone, Debug, Default)]
pub struct Kernel {
    /// Kernel name.
    pub name: String,
    /// Symbolic dims.
    pub dims: PrimaryMap<DimId, DimData>,
    /// GM tensors: inputs and outputs in signature order, then workspaces.
    pub tensors: PrimaryMap<Tensor, TensorData>,
    /// All values.
    pub values: PrimaryMap<Value, ValueData>,
    /// All instructions.
    pub insts: PrimaryMap<Inst, InstData>,
    /// All blocks.
    pub blocks: PrimaryMap<Block, BlockData>,
    /// The functions: one `any` before `split`, then `cube` and `vector`.
    pub funcs: Vec<Func>,
    /// Source span of each instruction, when it has one.
    pub spans: SecondaryMap<Inst, Option<SrcSpan>>,
    /// Byte offset of a tile value inside its local buffer (L1, L0A, L0B,
    /// L0C, UB), assigned by `plan-memory`; `None` before it and for GM
    /// tiles and scalars.
    pub offsets: SecondaryMap<Value, Option<u64>>,
}

impl Kernel {
    /// An empty kernel.
    pub fn new(name: impl Into<String>) -> Kernel {
        Kernel {
            name: name.into(),
            ..Kernel::default()
        }
    }

    /// The type of `v`.
    pub fn ty(&self, v: Value) -> &Type {
        &self.values[v].ty
    }

    /// The instruction defining `v`, if it is an instruction result.
    pub fn def_inst(&self, v: Value) -> Option<Inst> {
        match self.values[v].def {
            ValueDef::Result(i, _) => Some(i),
            ValueDef::Param(..) => None,
        }
    }

    /// The op of `i`.
    pub fn kind(&self, i: Inst) -> &InstKind {
        &self.insts[i].kind
    }

    /// The function for `unit`, if there is one.
    pub fn func(&self, unit: Unit) -> Option<&Func> {
        self.funcs.iter().find(|f| f.unit == unit)
    }

    /// Adds a block parameter of type `ty`.
    pub fn add_block_param(&mut self, block: Block, ty: Type, name: Option<String>) -> Value {
        let index = self.blocks[block].params.len() as u32;
        let v = self.values.push(ValueData {
            ty,
            def: ValueDef::Param(block, index),
            name,
        });
        self.blocks[block].params.push(v);
        v
    }

    /// Creates an instruction (not yet placed in a block) with results of
    /// the given types.
    pub(in crate::ir) fn make_inst(&mut self, kind: InstKind, result_types: Vec<Type>) -> Inst {
        let inst = self.insts.push(InstData {
            kind,
            results: Vec::new(),
        });
        let results = result_types
            .into_iter()
            .enumerate()
            .map(|(i, ty)| {
                self.values.push(ValueData {
                    ty,
                    def: ValueDef::Result(inst, i as u32),
                    name: None,
                })
            })
            .collect();
        self.insts[inst].results = results;
        inst
    }

    /// Calls `f` on every instruction of `block` and of the blocks nested in
    /// it, in execution (pre-)order.
    pub fn walk(&self, block: Block, f: &mut impl FnMut(Inst)) {
        for &i in &self.blocks[block].insts {
            f(i);
            if let Some(b) = self.insts[i].kind.body() {
                self.walk(b, f);
            }
        }
    }

    /// Every use of `old` in instructions nested in `block` becomes `new`.
    pub fn replace_uses_in(&mut self, block: Block, old: Value, new: Value) {
        let mut all = Vec::new();
        self.walk(block, &mut |i| all.push(i));
        for i in all {
            self.insts[i]
                .kind
                .map_operands(|v| if v == old { new } else { v });
        }
    }

    /// Name of a tensor.
    pub fn tensor_name(&self, t: Tensor) -> &str {
        &self.tensors[t].name
    }
}
