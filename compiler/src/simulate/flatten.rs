//! IR → flat op lists with durations (see the module doc of `simulate`).

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::ir::Inst;

use super::{FlagAct, Flat, Op, Pipe, Side, SimConfig, SimError, UnitProgram};
use crate::ir::{
    BLayout, BinaryOp, Block, CmpOp, DType, Dim, Index, InstKind, Kernel, Role, Space, Tensor,
    TileType, Type, UnaryOp, Unit, Value,
};
use crate::target::Host;
use crate::target::Target;

/// Most ops one unit's flattened program may have.
const OP_LIMIT: usize = 4_000_000;

/// Flattens the Cube and Vector programs of the most loaded core.
pub fn flatten(k: &Kernel, t: &Target, cfg: &SimConfig) -> Result<Flat, SimError> {
    let cube = k.func(Unit::Cube).ok_or_else(|| {
        SimError::NotCompiled("the kernel has no `cube` function (run the whole pipeline)".into())
    })?;
    let vector = k.func(Unit::Vector).ok_or_else(|| {
        SimError::NotCompiled("the kernel has no `vector` function (run the whole pipeline)".into())
    })?;
    let mut unplaced = false;
    for f in [cube, vector] {
        k.walk(f.body, &mut |i| {
            for &r in &k.insts[i].results {
                if let Type::Tile(tt) = &k.values[r].ty {
                    unplaced |= tt.space == Space::Any;
                }
            }
        });
    }
    if unplaced {
        return Err(SimError::NotCompiled(
            "a tile is not placed in a buffer (run the whole pipeline, with plan-memory)".into(),
        ));
    }
    let dims = k
        .dims
        .values()
        .map(|d| {
            d.value
                .map(|v| v as i64)
                .ok_or(SimError::UnboundDim(d.name.clone()))
        })
        .collect::<Result<Vec<i64>, SimError>>()?;
    let v_per_core = u64::from(t.chip.vector_per_core);
    let s = u64::from(vector.sub_blocks.max(1));
    let split = if v_per_core > s && v_per_core % s == 0 {
        v_per_core / s
    } else {
        1
    };
    let vector_units = v_per_core.max(s) as u32;
    let mut notes = Vec::new();
    if split > 1 {
        notes.push(format!(
            "the Vector function runs {s} sub-block(s); the model splits the rows of every Vector \
             tile over {split} of the target's {v_per_core} Vector units per core"
        ));
    }
    // The grid: both units run the same items.
    let mut probe = Walker::new(k, t, Side::Aic, 1, cfg, &dims, 1);
    let items = probe.grid_items(cube.body)?;
    let cores = items.clamp(1, u64::from(t.chip.ai_cores)) as u32;
    let core_items = items.div_ceil(u64::from(cores)) as u32;
    let double_l1 = cfg.double_buffer_l1 && {
        let (room, biggest) = l1_room(k, cube.body);
        let fits = room + biggest <= t.buffers.l1;
        notes.push(if fits {
            format!(
                "what-if: GM->L1 loads double-buffered (L1 holds {room} bytes placed + a second \
                 {biggest}-byte tile of {} bytes)",
                t.buffers.l1
            )
        } else {
            format!(
                "what-if not applied: a second {biggest}-byte L1 tile does not fit next to the \
                 {room} bytes placed ({} bytes of L1)",
                t.buffers.l1
            )
        });
        fits
    };
    let mut out = Vec::new();
    for (side, f, sp) in [(Side::Aic, cube, 1), (Side::Aiv, vector, split)] {
        let mut w = Walker::new(k, t, side, sp, cfg, &dims, cores);
        w.double_l1 = double_l1;
        w.run_func(f.body, core_items)?;
        if w.gm_scalar_used {
            notes.push(format!(
                "{}: an i32 scalar read from GM (a length or an index) is assumed to be {} \
                 (--gm-scalar)",
                side.name(),
                cfg.gm_scalar
            ));
        }
        out.push(UnitProgram {
            ops: w.ops,
            bytes: w.bytes,
            flops: w.flops,
            work: w.work,
        });
    }
    let vector_prog = out.pop().unwrap_or_default();
    let cube_prog = out.pop().unwrap_or_default();
    Ok(Flat {
        cube: cube_prog,
        vector: vector_prog,
        items,
        cores,
        core_items,
        vector_units,
        notes,
    })
}

/// L1 bytes `plan-memory` placed (the high-water mark of the Cube
/// function's L1 tiles) and the largest tile a GM→L1 load writes.
fn l1_room(k: &Kernel, body: Block) -> (u64, u64) {
    let (mut room, mut biggest) = (0, 0);
    k.walk(body, &mut |i| {
        for &r in &k.insts[i].results {
            if let Type::Tile(tt) = &k.values[r].ty
                && tt.space == Space::L1
                && let Some(off) = *k.offsets.get(r)
            {
                room = room.max(off + tt.bytes());
                if matches!(k.insts[i].kind, InstKind::Load { .. }) {
                    biggest = biggest.max(tt.bytes());
                }
            }
        }
    });
    (room, biggest)
}

/// Where a GM access is served from.
#[derive(Copy, Clone, PartialEq, Eq)]
enum Mem {
    Hbm,
    L2,
}

/// Who last touched some bytes.
#[derive(Clone, Debug, Default)]
struct Access {
    writer: Option<u32>,
    /// Last reader per pipe (in-order pipes make earlier ones redundant).
    readers: Vec<u32>,
}

impl Access {
    fn read(&mut self, op: u32) {
        if self.readers.len() >= 8 {
            self.readers.remove(0);
        }
        self.readers.push(op);
    }
    fn write_deps(&self, out: &mut Vec<u32>) {
        out.extend(self.writer);
        out.extend(self.readers.iter().copied());
    }
}

struct Region {
    space: Space,
    lo: u64,
    hi: u64,
    acc: Access,
}

struct Walker<'a> {
    k: &'a Kernel,
    t: &'a Target,
    side: Side,
    split: u64,
    cfg: &'a SimConfig,
    dims: &'a [i64],
    cores: u32,
    scal: HashMap<Value, i64>,
    producer: HashMap<Value, u32>,
    root: HashMap<Value, Value>,
    regions: Vec<Region>,
    gm: HashMap<Tensor, Access>,
    seen: HashSet<(Tensor, Vec<i64>)>,
    ops: Vec<Op>,
    bytes: BTreeMap<String, u64>,
    flops: f64,
    item: u32,
    gm_scalar_used: bool,
    /// GM→L1 loads are double-buffered (see [`SimConfig::double_buffer_l1`]).
    double_l1: bool,
    /// With `double_l1`: the last two GM→L1 loads at each L1 offset
    /// (offset, tensor, index, op), the two slots' contents.
    l1_slots: Vec<(u64, Tensor, Vec<i64>, u32)>,
    /// The tile each of those loads produced.
    l1_values: HashMap<u32, Value>,
    /// With `double_l1`: the slot of each loaded L1 tile, as a virtual
    /// address range (the second slot lies past every real address).
    slot_of: HashMap<Value, (u64, u64)>,
    /// With `double_l1`: loads so far at each L1 offset.
    loads_at: HashMap<u64, u64>,
    /// The host runtime's costs (the `host` target), else Ascend pipes.
    host: Option<&'a Host>,
    /// Work per host cost category ([`UnitProgram::work`]).
    work: BTreeMap<String, (u64, u64)>,
    /// Host: the copies and chained matmuls codegen folds into matmul
    /// calls (`codegen::matmul_fold`): the copies cost nothing, a chain
    /// makes one runtime call.
    folded: HashSet<Inst>,
    chained: HashSet<Inst>,
    /// Host: GM → L1 loads codegen folds into matmul calls: free when the
    /// box lies inside the tensor (the matmuls read it in place).
    folded_loads: HashSet<Inst>,
    /// Stores done by their matmul's folded call (`matmul_fold`).
    folded_stores: HashSet<Inst>,
}

impl<'a> Walker<'a> {
    fn new(
        k: &'a Kernel,
        t: &'a Target,
        side: Side,
        split: u64,
        cfg: &'a SimConfig,
        dims: &'a [i64],
        cores: u32,
    ) -> Self {
        Walker {
            k,
            t,
            side,
            split,
            cfg,
            dims,
            cores,
            scal: HashMap::new(),
            producer: HashMap::new(),
            root: HashMap::new(),
            regions: Vec::new(),
            gm: HashMap::new(),
            seen: HashSet::new(),
            ops: Vec::new(),
            bytes: BTreeMap::new(),
            flops: 0.0,
            item: 0,
            gm_scalar_used: false,
            double_l1: false,
            l1_slots: Vec::new(),
            l1_values: HashMap::new(),
            slot_of: HashMap::new(),
            loads_at: HashMap::new(),
            host: t.host.as_ref(),
            work: BTreeMap::new(),
            folded: HashSet::new(),
            chained: HashSet::new(),
            folded_loads: HashSet::new(),
            folded_stores: HashSet::new(),
        }
        .with_folding()
    }

    /// Host: what `codegen::matmul_fold` folds (the default code's rule).
    fn with_folding(mut self) -> Self {
        if self.host.is_none() {
            return self;
        }
        let k = self.k;
        let mut uses: HashMap<Value, Vec<Inst>> = HashMap::new();
        for f in &k.funcs {
            k.walk(f.body, &mut |i| {
                k.kind(i)
                    .for_each_operand(|v| uses.entry(v).or_default().push(i));
            });
        }
        let planner = crate::codegen::matmul_fold::Planner { k, uses: &uses };
        for (block, _) in k.blocks.iter() {
            let plan = planner.plan(block);
            self.folded.extend(plan.copies);
            self.folded_loads.extend(plan.loads);
            self.folded_stores
                .extend(plan.stores.iter().map(|&(_, s)| s));
            for chain in plan.chains {
                self.chained.extend(chain[1..].iter().copied());
            }
        }
        self
    }

    /// Counts one op of host cost category `cat` with quantity `qty`.
    fn tally(&mut self, cat: String, qty: u64) {
        let e = self.work.entry(cat).or_insert((0, 0));
        e.0 += 1;
        e.1 += qty;
    }

    /// Host: ns of a runtime copy of `bytes` on `path` (`gm->l1`, …), the
    /// calling unit's JIT code included; tallied.
    fn host_copy(&mut self, h: &Host, path: String, bytes: u64, fallback: Pipe) -> f64 {
        let ns = match h.copy.get(&path) {
            Some(c) => c.call_ns + bytes as f64 / c.bytes_per_ns,
            None => bytes as f64 / self.engine(fallback),
        };
        self.tally(format!("copy {path}"), bytes);
        ns + self.host_call()
    }

    /// Host: the Cube's own JIT time around one runtime call; tallied.
    fn host_call(&mut self) -> f64 {
        match (self.side, self.host) {
            (Side::Aic, Some(h)) => {
                self.tally("cube calls".into(), 0);
                h.cube.call_ns
            }
            _ => 0.0,
        }
    }

    /// Host: ns of a Vector op over `elems` elements of JIT code, on UB
    /// tiles or (`gm`) on a tile in GM or the unit's scratch; tallied.
    fn host_vec(&mut self, h: &Host, elems: u64, gm: bool) -> f64 {
        let (cat, per) = match gm {
            true => ("vector gm", h.vector.gm_elem_ns),
            false => ("vector ub", h.vector.elem_ns),
        };
        self.tally(cat.into(), elems);
        h.vector.op_ns + elems as f64 * per
    }

    /// Number of grid items: evaluates the top-level scalars and the
    /// `parallel` axes of `body`.
    fn grid_items(&mut self, body: Block) -> Result<u64, SimError> {
        for &i in &self.k.blocks[body].insts.clone() {
            match &self.k.insts[i].kind {
                InstKind::Parallel { axes, .. } => {
                    let mut n: u64 = 1;
                    for ax in axes {
                        n = n.saturating_mul(self.trips(ax.lo, ax.hi, ax.step));
                    }
                    return Ok(n);
                }
                _ => self.inst(i)?,
            }
        }
        Ok(1)
    }

    fn trips(&self, lo: Value, hi: Value, step: i64) -> u64 {
        let (lo, hi) = (self.s(lo), self.s(hi));
        if hi <= lo || step <= 0 {
            0
        } else {
            ((hi - lo) as u64).div_ceil(step as u64)
        }
    }

    fn s(&self, v: Value) -> i64 {
        self.scal.get(&v).copied().unwrap_or(0)
    }

    fn run_func(&mut self, body: Block, core_items: u32) -> Result<(), SimError> {
        let insts = self.k.blocks[body].insts.clone();
        for &i in &insts {
            if let InstKind::Parallel { axes, body: pb } = &self.k.insts[i].kind {
                let extents: Vec<(i64, i64, u64)> = axes
                    .iter()
                    .map(|a| (self.s(a.lo), a.step, self.trips(a.lo, a.hi, a.step)))
                    .collect();
                let params = self.k.blocks[*pb].params.clone();
                for ord in 0..core_items {
                    self.item = ord;
                    self.seen.clear();
                    // Core 0 runs items 0, C, 2C, … (the runtime's deal).
                    let mut lin = u64::from(ord) * u64::from(self.cores);
                    for (ax, p) in extents.iter().zip(&params).rev() {
                        let n = ax.2.max(1);
                        self.scal.insert(*p, ax.0 + (lin % n) as i64 * ax.1);
                        lin /= n;
                    }
                    self.block(*pb)?;
                }
            } else {
                self.inst(i)?;
            }
        }
        Ok(())
    }

    fn block(&mut self, b: Block) -> Result<(), SimError> {
        let insts = self.k.blocks[b].insts.clone();
        for i in insts {
            self.inst(i)?;
        }
        Ok(())
    }

    fn tile(&self, v: Value) -> Option<&'a TileType> {
        self.k.values[v].ty.as_tile()
    }

    /// Elements of a tile as the simulated unit sees it (rows split on the
    /// Vector side).
    fn elems(&self, tt: &TileType) -> u64 {
        if self.side == Side::Aiv && self.split > 1 && !tt.shape.is_empty() {
            tt.shape[0].div_ceil(self.split) * tt.shape[1..].iter().product::<u64>()
        } else {
            tt.elems()
        }
    }

    fn tbytes(&self, tt: &TileType) -> u64 {
        self.elems(tt) * tt.dtype.bytes()
    }

    fn clock(&self) -> f64 {
        self.t.chip.clock_ghz
    }

    /// Bytes per ns of `pipe`'s engine.
    fn engine(&self, pipe: Pipe) -> f64 {
        let m = &self.t.moves;
        let bpc = match pipe {
            Pipe::Mte1 => m.mte1_bytes_per_cycle,
            Pipe::Mte2 => m.mte2_bytes_per_cycle,
            Pipe::Mte3 => m.mte3_bytes_per_cycle,
            Pipe::Fixp => m.fixpipe_bytes_per_cycle,
            Pipe::Cube | Pipe::Vector => f64::from(self.t.vector.repeat_bytes),
        };
        bpc * self.clock()
    }

    /// ns of a move of `bytes` on `pipe`, from/to `mem` (None: local only).
    fn move_ns(&self, bytes: u64, pipe: Pipe, mem: Option<Mem>, atomic: bool) -> f64 {
        let mut rate = self.engine(pipe);
        let cores = f64::from(self.cores.max(1));
        match mem {
            Some(Mem::Hbm) => rate = rate.min(self.t.chip.hbm_gbps / cores),
            Some(Mem::L2) => rate = rate.min(self.t.chip.l2_gbps / cores),
            None => {}
        }
        if atomic {
            rate = rate.min(self.t.atomic.add_bytes_per_cycle * self.clock());
        }
        self.t.moves.issue_cycles / self.clock() + bytes as f64 / rate
    }

    /// ns of a Vector op over `elems` elements of `width` bytes.
    fn vec_ns(&self, elems: u64, width: u64, cycles_per_repeat: f64) -> f64 {
        let v = &self.t.vector;
        let repeats = (elems * width).div_ceil(u64::from(v.repeat_bytes));
        (v.issue_cycles + repeats as f64 * cycles_per_repeat / f64::from(v.repeats_per_cycle))
            / self.clock()
    }

    /// Ascend: the pipes of a store or atomic add of a `space` tile.
    fn ascend_store(
        &mut self,
        space: Space,
        bytes: u64,
        mem: Mem,
        atomic: bool,
        suffix: &str,
    ) -> Vec<(Pipe, f64)> {
        match space {
            Space::L0C => {
                self.count(&format!("l0c->gm{suffix}"), bytes);
                vec![(
                    Pipe::Fixp,
                    self.move_ns(bytes, Pipe::Fixp, Some(mem), atomic),
                )]
            }
            Space::Gm => {
                self.count("gm->ub stream", bytes);
                self.count(&format!("ub->gm{suffix}"), bytes);
                vec![
                    (
                        Pipe::Mte2,
                        self.move_ns(bytes, Pipe::Mte2, Some(Mem::L2), false),
                    ),
                    (
                        Pipe::Mte3,
                        self.move_ns(bytes, Pipe::Mte3, Some(mem), atomic),
                    ),
                ]
            }
            sp => {
                self.count(&format!("{sp}->gm{suffix}"), bytes);
                vec![(
                    Pipe::Mte3,
                    self.move_ns(bytes, Pipe::Mte3, Some(mem), atomic),
                )]
            }
        }
    }

    /// An index as numbers (`-1` for a full dim), for matching GM ranges.
    fn index_key(&self, index: &[Index]) -> Vec<i64> {
        index
            .iter()
            .map(|i| match i {
                Index::Point(v) | Index::Range { start: v, .. } => self.s(*v),
                Index::Full => -1,
            })
            .collect()
    }

    /// The tile value a double-buffered load op produced.
    fn producer_value(&self, op: u32) -> Option<&Value> {
        self.l1_values.get(&op)
    }

    fn mem_of(&mut self, tensor: Tensor, index: &[Index], read: bool) -> Mem {
        if self.k.tensors[tensor].role == Role::Workspace {
            return Mem::L2;
        }
        if read {
            let key: Vec<i64> = index
                .iter()
                .map(|i| match i {
                    Index::Point(v) | Index::Range { start: v, .. } => self.s(*v),
                    Index::Full => -1,
                })
                .collect();
            if !self.seen.insert((tensor, key)) {
                return Mem::L2;
            }
        }
        Mem::Hbm
    }

    fn count(&mut self, path: &str, bytes: u64) {
        *self.bytes.entry(path.to_string()).or_insert(0) += bytes;
    }

    fn traced(&self) -> bool {
        self.item < self.cfg.trace_items
    }

    fn name(&self, v: Value) -> String {
        self.k.values[v].name.clone().unwrap_or_default()
    }

    fn root_of(&self, v: Value) -> Value {
        self.root.get(&v).copied().unwrap_or(v)
    }

    fn region_of(&self, v: Value) -> Option<(Space, u64, u64)> {
        let r = self.root_of(v);
        let tt = self.tile(r)?;
        if matches!(tt.space, Space::Gm | Space::Any) {
            return None;
        }
        if let Some(&(lo, hi)) = self.slot_of.get(&r) {
            return Some((tt.space, lo, hi));
        }
        let off = (*self.k.offsets.get(r))?;
        Some((tt.space, off, off + tt.bytes()))
    }

    /// Pushes an op; `reads` are its tile operands, `write` its tile result.
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        parts: Vec<(Pipe, f64)>,
        reads: &[Value],
        write: Option<Value>,
        gm: Option<(Tensor, bool)>,
        flag: FlagAct,
        label: impl FnOnce(&Self) -> String,
    ) -> Result<u32, SimError> {
        if self.ops.len() >= OP_LIMIT {
            return Err(SimError::TooLarge { limit: OP_LIMIT });
        }
        let id = self.ops.len() as u32;
        let mut deps: Vec<u32> = reads
            .iter()
            .filter_map(|v| self.producer.get(v).copied())
            .collect();
        for &r in reads {
            if let Some((sp, lo, hi)) = self.region_of(r) {
                for reg in &mut self.regions {
                    if reg.space == sp && reg.lo < hi && lo < reg.hi {
                        deps.extend(reg.acc.writer);
                        reg.acc.read(id);
                    }
                }
            }
        }
        if let Some(w) = write
            && let Some((sp, lo, hi)) = self.region_of(w)
        {
            let mut keep = Vec::new();
            for reg in std::mem::take(&mut self.regions) {
                if reg.space == sp && reg.lo < hi && lo < reg.hi {
                    reg.acc.write_deps(&mut deps);
                } else {
                    keep.push(reg);
                }
            }
            keep.push(Region {
                space: sp,
                lo,
                hi,
                acc: Access {
                    writer: Some(id),
                    readers: Vec::new(),
                },
            });
            self.regions = keep;
        }
        if let Some((tensor, is_write)) = gm {
            let acc = self.gm.entry(tensor).or_default();
            if is_write {
                acc.write_deps(&mut deps);
                *acc = Access {
                    writer: Some(id),
                    readers: Vec::new(),
                };
            } else {
                deps.extend(acc.writer);
                acc.read(id);
            }
        }
        deps.retain(|&d| d != id);
        deps.sort_unstable();
        deps.dedup();
        let label = if self.traced() {
            label(self)
        } else {
            String::new()
        };
        self.ops.push(Op {
            parts,
            deps,
            gm: gm.is_some(),
            flag,
            item: self.item,
            label,
        });
        if let Some(w) = write {
            self.producer.insert(w, id);
        }
        Ok(id)
    }

    fn alias(&mut self, result: Value, src: Value) {
        if let Some(&p) = self.producer.get(&src) {
            self.producer.insert(result, p);
        }
        let r = self.root_of(src);
        self.root.insert(result, r);
    }

    /// Whether every index of a GM access lies inside its tensor dim (a
    /// load copies nothing clamped or zero-filled).
    fn box_inside(&self, tensor: Tensor, index: &[Index]) -> bool {
        let shape = &self.k.tensors[tensor].shape;
        index.iter().zip(shape).all(|(ix, d)| {
            let dim = self.dim_value(d);
            match ix {
                Index::Point(v) => (0..dim).contains(&self.s(*v)),
                Index::Range { start, len } => {
                    let st = self.s(*start);
                    st >= 0 && st.saturating_add(*len as i64) <= dim
                }
                Index::Full => true,
            }
        })
    }

    fn dim_value(&self, d: &Dim) -> i64 {
        match d {
            Dim::Const(n) => *n as i64,
            Dim::Sym(id) => self.dims[crate::ir::EntityRef::index(*id)],
        }
    }

    fn inst(&mut self, i: crate::ir::Inst) -> Result<(), SimError> {
        let k = self.k;
        let data = &k.insts[i];
        let res = data.results.first().copied();
        match &data.kind {
            InstKind::IConst(v) => {
                if let Some(r) = res {
                    self.scal.insert(r, *v);
                }
            }
            InstKind::FConst(..) | InstKind::Yield(_) => {}
            InstKind::DimValue(d) => {
                if let Some(r) = res {
                    self.scal
                        .insert(r, self.dims[crate::ir::EntityRef::index(*d)]);
                }
            }
            InstKind::SubBlock => {
                if let Some(r) = res {
                    self.scal.insert(r, 0);
                }
            }
            InstKind::Load { tensor, index } => {
                let r = res.expect("load has a result");
                let Some(tt) = self.tile(r) else {
                    if k.tensors[*tensor].dtype == DType::I32 {
                        self.scal.insert(r, self.cfg.gm_scalar);
                        self.gm_scalar_used = true;
                    }
                    return Ok(());
                };
                if tt.space == Space::Gm {
                    // A Vector tile left in GM: streamed by its users. The
                    // zero-length op carries the flag gate to them.
                    self.emit(
                        vec![],
                        &[],
                        Some(r),
                        Some((*tensor, false)),
                        FlagAct::None,
                        |w| format!("view {}", w.k.tensor_name(*tensor)),
                    )?;
                    return Ok(());
                }
                let bytes = self.tbytes(tt);
                let off = *k.offsets.get(r);
                if self.double_l1
                    && tt.space == Space::L1
                    && let Some(off) = off
                {
                    let key = self.index_key(index);
                    if let Some(&(_, _, _, op)) = self
                        .l1_slots
                        .iter()
                        .find(|(o, t, kk, _)| *o == off && t == tensor && *kk == key)
                    {
                        // Still in the other slot: no second load.
                        self.producer.insert(r, op);
                        if let Some(&src) = self.producer_value(op) {
                            self.alias(r, src);
                        }
                        return Ok(());
                    }
                }
                if self.double_l1
                    && tt.space == Space::L1
                    && let Some(off) = *self.k.offsets.get(r)
                {
                    // Two slots in turn: the second lies past every real address.
                    let n = self.loads_at.entry(off).or_insert(0);
                    let lo = off + (*n % 2) * (1 << 40);
                    *n += 1;
                    self.slot_of.insert(r, (lo, lo + tt.bytes()));
                }
                let mem = self.mem_of(*tensor, index, true);
                let ns = match self.host {
                    Some(_)
                        if self.folded_loads.contains(&i) && self.box_inside(*tensor, index) =>
                    {
                        // Read in place by its matmuls: no call, no time.
                        self.tally(format!("copy {}", amla_runtime::FOLDED_LOAD_PATH), bytes);
                        0.0
                    }
                    Some(h) => self.host_copy(h, format!("gm->{}", tt.space), bytes, Pipe::Mte2),
                    None => self.move_ns(bytes, Pipe::Mte2, Some(mem), false),
                };
                let path = format!("gm->{}", tt.space);
                self.count(&path, bytes);
                self.count(
                    if mem == Mem::Hbm {
                        "hbm read"
                    } else {
                        "l2 read"
                    },
                    bytes,
                );
                let id = self.emit(
                    vec![(Pipe::Mte2, ns)],
                    &[],
                    Some(r),
                    Some((*tensor, false)),
                    FlagAct::None,
                    |w| {
                        format!(
                            "load {} → {} {} KiB",
                            w.k.tensor_name(*tensor),
                            w.name(r),
                            bytes / 1024
                        )
                    },
                )?;
                if self.double_l1
                    && tt.space == Space::L1
                    && let Some(off) = off
                {
                    let key = self.index_key(index);
                    self.l1_slots.push((off, *tensor, key, id));
                    self.l1_values.insert(id, r);
                    // The two slots at this offset hold its last two loads.
                    if let Some(first) = self
                        .l1_slots
                        .iter()
                        .position(|e| e.0 == off)
                        .filter(|_| self.l1_slots.iter().filter(|e| e.0 == off).count() > 2)
                    {
                        self.l1_slots.remove(first);
                    }
                }
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
                let atomic = matches!(data.kind, InstKind::AtomicAdd { .. });
                let Some(tt) = self.tile(*value) else {
                    return Ok(());
                };
                let bytes = self.tbytes(tt);
                let mem = self.mem_of(*tensor, index, false);
                let suffix = if atomic { " atomic" } else { "" };
                let parts = match (self.host, tt.space) {
                    (Some(_), _)
                        if self.folded_stores.contains(&i) && self.box_inside(*tensor, index) =>
                    {
                        // Done by its matmul's call (C computed in GM).
                        self.tally(format!("copy {}", amla_runtime::FOLDED_STORE_PATH), bytes);
                        vec![(Pipe::Fixp, 0.0)]
                    }
                    (Some(h), sp) => {
                        self.count(&format!("{sp}->gm{suffix}"), bytes);
                        let path = format!("{sp}->gm{}", if atomic { " (atomic add)" } else { "" });
                        let pipe = match sp {
                            Space::L0C => Pipe::Fixp,
                            _ => Pipe::Mte3,
                        };
                        vec![(pipe, self.host_copy(h, path, bytes, pipe))]
                    }
                    (None, sp) => self.ascend_store(sp, bytes, mem, atomic, suffix),
                };
                let what = if atomic { "atomic_add" } else { "store" };
                let v = *value;
                self.emit(
                    parts,
                    &[v],
                    None,
                    Some((*tensor, true)),
                    FlagAct::None,
                    |w| {
                        format!(
                            "{what} {} → {} {} KiB",
                            w.name(v),
                            w.k.tensor_name(*tensor),
                            bytes / 1024
                        )
                    },
                )?;
            }
            InstKind::AtomicExpAdd { tensor, index, n } => {
                let shape = &k.tensors[*tensor].shape;
                let mut elems: u64 = 1;
                let mut first = true;
                for (ix, d) in index.iter().zip(shape) {
                    let e = match ix {
                        Index::Point(_) => continue,
                        Index::Range { len, .. } => *len,
                        Index::Full => self.dim_value(d).max(0) as u64,
                    };
                    // Rows (the first kept dim) split over the Vector units.
                    let e = if first && self.side == Side::Aiv {
                        e.div_ceil(self.split)
                    } else {
                        e
                    };
                    first = false;
                    elems = elems.saturating_mul(e);
                }
                let bytes = elems * 4;
                let mem = self.mem_of(*tensor, index, false);
                self.count("ub->gm atomic (exp add)", bytes);
                let parts = if let Some(h) = self.host {
                    // JIT code: the exponent add in place, element by element.
                    vec![(Pipe::Vector, self.host_vec(h, elems, true))]
                } else {
                    vec![
                        (
                            Pipe::Vector,
                            self.vec_ns(elems, 4, self.t.vector.op_cycles.elementwise),
                        ),
                        (Pipe::Mte3, self.move_ns(bytes, Pipe::Mte3, Some(mem), true)),
                    ]
                };
                let nv = *n;
                self.emit(
                    parts,
                    &[nv],
                    None,
                    Some((*tensor, true)),
                    FlagAct::None,
                    |w| {
                        format!(
                            "atomic_exp_add {} {} KiB",
                            w.k.tensor_name(*tensor),
                            bytes / 1024
                        )
                    },
                )?;
            }
            InstKind::Extract { src, .. } => {
                let r = res.expect("extract has a result");
                let (Some(st), Some(rt)) = (self.tile(*src), self.tile(r)) else {
                    return Ok(());
                };
                if st.space == Space::L1 || rt.space == Space::L1 {
                    self.alias(r, *src);
                } else {
                    self.vector_op(i, &[*src], r, self.t.vector.op_cycles.elementwise)?;
                }
            }
            InstKind::Copy { src, to } => {
                let r = res.expect("copy has a result");
                let Some(st) = self.tile(*src) else {
                    return Ok(());
                };
                let bytes = self.tbytes(st);
                let from = st.space;
                let (pipe, mem) = match (from, *to) {
                    (Space::L0C, _) => (Pipe::Fixp, None),
                    (Space::Ub, Space::Ub) => {
                        return self.vector_op(i, &[*src], r, self.t.vector.op_cycles.elementwise);
                    }
                    (Space::Gm, _) => (Pipe::Mte2, Some(Mem::L2)),
                    (_, Space::Gm) => (Pipe::Mte3, Some(Mem::L2)),
                    _ => (Pipe::Mte1, None),
                };
                self.count(&format!("{from}->{to}"), bytes);
                let ns = match self.host {
                    Some(_) if self.folded.contains(&i) => {
                        // Read in place by its matmuls: no call, no time.
                        self.tally(format!("copy {}", amla_runtime::FOLDED_COPY_PATH), bytes);
                        0.0
                    }
                    Some(h) => self.host_copy(h, format!("{from}->{to}"), bytes, pipe),
                    None => self.move_ns(bytes, pipe, mem, false),
                };
                let s = *src;
                self.emit(vec![(pipe, ns)], &[s], Some(r), None, FlagAct::None, |w| {
                    format!("copy {} {from}→{to} {} KiB", w.name(s), bytes / 1024)
                })?;
            }
            InstKind::Bitcast(a, _) | InstKind::Reshape(a, _) => {
                if let Some(r) = res {
                    if self.tile(r).is_some() {
                        self.alias(r, *a);
                    } else if let Some(&v) = self.scal.get(a) {
                        self.scal.insert(r, v);
                    }
                }
            }
            InstKind::Matmul {
                a,
                b,
                b_layout,
                acc,
            } => {
                let r = res.expect("matmul has a result");
                let (Some(at), Some(bt)) = (self.tile(*a), self.tile(*b)) else {
                    return Ok(());
                };
                let (m, kk) = (at.shape[0], at.shape[1]);
                let n = match b_layout {
                    BLayout::KN => bt.shape[1],
                    BLayout::NK => bt.shape[0],
                };
                let [fm, fnn, fk] = self.t.cube.fractal.map(u64::from);
                let padded =
                    (m.div_ceil(fm) * fm) * (n.div_ceil(fnn) * fnn) * (kk.div_ceil(fk) * fk);
                let macs = match at.dtype {
                    DType::F16 => self.t.cube.macs_per_cycle.f16,
                    _ => self.t.cube.macs_per_cycle.bf16,
                };
                let ns = match self.host {
                    Some(h) => {
                        let shape = format!("{m}x{n}x{kk}");
                        let macs = m * n * kk;
                        let ns = match h.cube.matmul.get(&shape) {
                            Some(&ns) => ns,
                            None => macs as f64 / h.cube.macs_per_ns,
                        };
                        self.tally(format!("matmul {shape}"), macs);
                        // A chain's later matmuls run in its first's call.
                        match self.chained.contains(&i) {
                            true => ns,
                            false => ns + self.host_call(),
                        }
                    }
                    None => padded as f64 / macs / self.clock(),
                };
                self.flops += 2.0 * (m * n * kk) as f64;
                let mut reads = vec![*a, *b];
                reads.extend(*acc);
                self.emit(
                    vec![(Pipe::Cube, ns)],
                    &reads,
                    Some(r),
                    None,
                    FlagAct::None,
                    |w| format!("matmul {m}×{n}×{kk} → {}", w.name(r)),
                )?;
            }
            InstKind::SetFlag(id) => {
                self.emit(vec![], &[], None, None, FlagAct::Set(*id), |_| {
                    format!("set_flag {id}")
                })?;
            }
            InstKind::WaitFlag(id) => {
                self.emit(vec![], &[], None, None, FlagAct::Wait(*id), |_| {
                    format!("wait_flag {id}")
                })?;
            }
            InstKind::Parallel { .. } => {
                return Err(SimError::NotCompiled(
                    "a `parallel` grid inside another is not modelled".into(),
                ));
            }
            InstKind::For {
                lo,
                hi,
                step,
                init,
                body,
            } => {
                let trips = self.trips(*lo, *hi, *step);
                let start = self.s(*lo);
                let params = k.blocks[*body].params.clone();
                let last = k.blocks[*body].insts.last().copied();
                let mut carried: Vec<Value> = init.clone();
                for it in 0..trips {
                    self.scal.insert(params[0], start + it as i64 * step);
                    for (p, c) in params[1..].iter().zip(&carried) {
                        self.carry(*p, *c);
                    }
                    self.block(*body)?;
                    if let Some(l) = last
                        && let InstKind::Yield(vs) = &k.insts[l].kind
                    {
                        carried = vs.clone();
                    }
                }
                for (r, c) in data.results.iter().zip(&carried) {
                    self.carry(*r, *c);
                }
            }
            kind => {
                // Element-wise, reductions, casts, broadcasts, iota, select,
                // transpose: scalars are evaluated, tiles are Vector work.
                let Some(r) = res else { return Ok(()) };
                if self.tile(r).is_none() {
                    self.scalar(kind, r);
                    return Ok(());
                }
                let oc = &self.t.vector.op_cycles;
                let cycles = match kind {
                    InstKind::Unary(
                        UnaryOp::Exp | UnaryOp::Exp2 | UnaryOp::Log | UnaryOp::Log2 | UnaryOp::Sqrt,
                        _,
                    ) => oc.transcendental,
                    InstKind::Binary(BinaryOp::Div | BinaryOp::Rem, ..) => oc.divide,
                    InstKind::Reduce(..) => oc.reduce,
                    InstKind::Cast(..) => oc.cast,
                    _ => oc.elementwise,
                };
                let mut reads = Vec::new();
                kind.for_each_operand(|v| reads.push(v));
                reads.retain(|v| self.k.values[*v].ty.as_tile().is_some());
                self.vector_op(i, &reads, r, cycles)?;
            }
        }
        Ok(())
    }

    /// The values of `src` (a loop init or yielded value) flow into `dst`.
    fn carry(&mut self, dst: Value, src: Value) {
        if let Some(&v) = self.scal.get(&src) {
            self.scal.insert(dst, v);
        }
        match self.producer.get(&src).copied() {
            Some(p) => {
                self.producer.insert(dst, p);
            }
            None => {
                self.producer.remove(&dst);
            }
        }
        let r = self.root_of(src);
        if r != dst {
            self.root.insert(dst, r);
        }
    }

    fn scalar(&mut self, kind: &InstKind, r: Value) {
        let v = match kind {
            InstKind::Binary(op, a, b) => {
                let (a, b) = (self.s(*a), self.s(*b));
                match op {
                    BinaryOp::Add => a.wrapping_add(b),
                    BinaryOp::Sub => a.wrapping_sub(b),
                    BinaryOp::Mul => a.wrapping_mul(b),
                    BinaryOp::Div => a.checked_div(b).unwrap_or(0),
                    BinaryOp::Rem => a.checked_rem(b).unwrap_or(0),
                    BinaryOp::Max => a.max(b),
                    BinaryOp::Min => a.min(b),
                    BinaryOp::And => i64::from(a != 0 && b != 0),
                    BinaryOp::Or => i64::from(a != 0 || b != 0),
                }
            }
            InstKind::Cmp(op, a, b) => {
                let (a, b) = (self.s(*a), self.s(*b));
                i64::from(match op {
                    CmpOp::Eq => a == b,
                    CmpOp::Ne => a != b,
                    CmpOp::Lt => a < b,
                    CmpOp::Le => a <= b,
                    CmpOp::Gt => a > b,
                    CmpOp::Ge => a >= b,
                })
            }
            InstKind::Select(c, a, b) => {
                if self.s(*c) != 0 {
                    self.s(*a)
                } else {
                    self.s(*b)
                }
            }
            InstKind::Unary(UnaryOp::Neg, a) => self.s(*a).wrapping_neg(),
            InstKind::Unary(UnaryOp::Abs, a) => self.s(*a).wrapping_abs(),
            InstKind::Unary(UnaryOp::Not, a) => i64::from(self.s(*a) == 0),
            InstKind::Unary(_, a) | InstKind::Cast(a, _) => self.s(*a),
            _ => return,
        };
        self.scal.insert(r, v);
    }

    /// A Vector op producing tile `r` from tile operands `reads`.
    fn vector_op(
        &mut self,
        i: crate::ir::Inst,
        reads: &[Value],
        r: Value,
        cycles: f64,
    ) -> Result<(), SimError> {
        let rt = self.tile(r).expect("vector op result is a tile");
        // Reductions cost by their input; everything else by its result.
        let (elems, mut width) = match &self.k.insts[i].kind {
            InstKind::Reduce(_, a) => {
                let at = self.tile(*a).expect("reduce operand is a tile");
                (self.elems(at), at.dtype.bytes())
            }
            _ => (self.elems(rt), rt.dtype.bytes()),
        };
        for &v in reads {
            if let Some(tt) = self.tile(v)
                && tt.elems() == rt.elems()
            {
                width = width.max(tt.dtype.bytes());
            }
        }
        let width = width.max(2);
        if let Some(h) = self.host {
            // JIT code on the tile wherever it lives (a `gm` tile is the
            // unit's scratch memory: no streaming).
            let gm = std::iter::once(&r)
                .chain(reads)
                .any(|&v| self.tile(v).is_some_and(|t| t.space == Space::Gm));
            let ns = self.host_vec(h, elems, gm);
            let op = self.k.insts[i].kind.opcode();
            self.emit(
                vec![(Pipe::Vector, ns)],
                reads,
                Some(r),
                None,
                FlagAct::None,
                |w| {
                    let shape: Vec<String> = rt.shape.iter().map(u64::to_string).collect();
                    format!("{op} {} [{}]", w.name(r), shape.join("×"))
                },
            )?;
            return Ok(());
        }
        let mut parts = vec![(Pipe::Vector, self.vec_ns(elems, width, cycles))];
        let mut in_bytes = 0;
        for &v in reads {
            if let Some(tt) = self.tile(v)
                && tt.space == Space::Gm
            {
                in_bytes += self.tbytes(tt);
            }
        }
        if in_bytes > 0 {
            self.count("gm->ub stream", in_bytes);
            parts.push((
                Pipe::Mte2,
                self.move_ns(in_bytes, Pipe::Mte2, Some(Mem::L2), false),
            ));
        }
        if rt.space == Space::Gm {
            let b = self.tbytes(rt);
            self.count("ub->gm stream", b);
            parts.push((
                Pipe::Mte3,
                self.move_ns(b, Pipe::Mte3, Some(Mem::L2), false),
            ));
        }
        let op = self.k.insts[i].kind.opcode();
        self.emit(parts, reads, Some(r), None, FlagAct::None, |w| {
            let shape: Vec<String> = rt.shape.iter().map(u64::to_string).collect();
            format!("{op} {} [{}]", w.name(r), shape.join("×"))
        })?;
        Ok(())
    }
}
