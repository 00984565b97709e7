//! [`Builder`]: appends typed instructions to a block.
//!
//! Lowering and passes build IR through it so that every result is typed by
//! [`super::typing`] at creation; a typing error here is a compiler bug and
//! comes back as an `Err` naming the op, never a panic.

use super::inst::{Axis, InstKind};
use super::types::Type;
use super::typing::{TypeError, result_types};
use super::{Block, Inst, Kernel, SrcSpan, Value};

/// Appends instructions at the end of (or at a position in) a block.
pub struct Builder<'k> {
    /// The kernel being built.
    pub kernel: &'k mut Kernel,
    block: Block,
    /// Insert position in `block` (None = append).
    pos: Option<usize>,
    span: Option<SrcSpan>,
}

impl<'k> Builder<'k> {
    /// A builder appending to `block`.
    pub fn at_end(kernel: &'k mut Kernel, block: Block) -> Self {
        Builder {
            kernel,
            block,
            pos: None,
            span: None,
        }
    }

    /// A builder inserting before position `pos` of `block`.
    pub fn at(kernel: &'k mut Kernel, block: Block, pos: usize) -> Self {
        Builder {
            kernel,
            block,
            pos: Some(pos),
            span: None,
        }
    }

    /// The block being filled.
    pub fn block(&self) -> Block {
        self.block
    }

    /// Moves to the end of another block.
    pub fn switch_to(&mut self, block: Block) {
        self.block = block;
        self.pos = None;
    }

    /// The source span given to the next instructions.
    pub fn set_span(&mut self, span: Option<SrcSpan>) {
        self.span = span;
    }

    /// Appends `kind`, typing its results.
    pub fn ins(&mut self, kind: InstKind) -> Result<Inst, TypeError> {
        let types = result_types(self.kernel, &kind)
            .map_err(|e| TypeError(format!("{}: {}", kind.opcode(), e.0)))?;
        Ok(self.place(kind, types))
    }

    /// Appends `kind` with explicit result types (no typing check; the
    /// callers, [`Builder::ins`] and [`Builder::ins_like`], have checked
    /// them).
    pub(super) fn place(&mut self, kind: InstKind, types: Vec<Type>) -> Inst {
        let inst = self.kernel.make_inst(kind, types);
        if self.span.is_some() {
            self.kernel.spans.set(inst, self.span);
        }
        let insts = &mut self.kernel.blocks[self.block].insts;
        match &mut self.pos {
            None => insts.push(inst),
            Some(p) => {
                insts.insert(*p, inst);
                *p += 1;
            }
        }
        inst
    }

    /// Appends a single-result op and returns its value.
    pub fn value(&mut self, kind: InstKind) -> Result<Value, TypeError> {
        let i = self.ins(kind)?;
        match self.kernel.insts[i].results.as_slice() {
            [v] => Ok(*v),
            r => Err(TypeError(format!(
                "{} has {} results, expected 1",
                self.kernel.insts[i].kind.opcode(),
                r.len()
            ))),
        }
    }

    /// Like [`Builder::value`], naming the result.
    pub fn named(&mut self, kind: InstKind, name: &str) -> Result<Value, TypeError> {
        let v = self.value(kind)?;
        self.kernel.values[v].name = Some(name.to_string());
        Ok(v)
    }

    /// Creates a fresh empty block.
    pub fn new_block(&mut self) -> Block {
        self.kernel.blocks.push(Default::default())
    }

    /// Appends `parallel` over `axes`; returns the body block (whose
    /// parameters, one `i32` per axis, are added here and named `names`).
    pub fn parallel(&mut self, axes: Vec<Axis>, names: &[&str]) -> Result<Block, TypeError> {
        let body = self.new_block();
        for i in 0..axes.len() {
            let name = names.get(i).map(|s| s.to_string());
            self.kernel
                .add_block_param(body, Type::Scalar(super::DType::I32), name);
        }
        self.ins(InstKind::Parallel { axes, body })?;
        Ok(body)
    }

    /// Appends `for iv in lo..hi step` carrying `init`; returns the loop
    /// instruction and its body, whose parameters `[iv, carried…]` are added
    /// here (named after `iv_name` and the init values' names). The body is
    /// empty: the caller fills it and ends it with `yield`.
    pub fn for_loop(
        &mut self,
        lo: Value,
        hi: Value,
        step: i64,
        init: Vec<Value>,
        iv_name: &str,
    ) -> Result<(Inst, Block), TypeError> {
        let body = self.new_block();
        self.kernel.add_block_param(
            body,
            Type::Scalar(super::DType::I32),
            Some(iv_name.to_string()),
        );
        for &v in &init {
            let ty = self.kernel.ty(v).clone();
            let name = self.kernel.values[v].name.clone();
            self.kernel.add_block_param(body, ty, name);
        }
        let inst = self.ins(InstKind::For {
            lo,
            hi,
            step,
            init,
            body,
        })?;
        let names: Vec<Option<String>> = self.kernel.blocks[body].params[1..]
            .iter()
            .map(|&p| self.kernel.values[p].name.clone())
            .collect();
        for (r, n) in self.kernel.insts[inst]
            .results
            .clone()
            .into_iter()
            .zip(names)
        {
            self.kernel.values[r].name = n;
        }
        Ok((inst, body))
    }
}
