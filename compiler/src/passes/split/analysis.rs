//! Step 0 of `split`: the analysis of the `any` function (its single
//! top-level `parallel`, the grid, every instruction in program order, the
//! loop owning each block and the uses of every value).

use super::*;

/// Facts about the `any` function.
pub(super) struct Analysis {
    pub(super) top: Block,
    pub(super) par: Inst,
    pub(super) par_body: Block,
    pub(super) ivs: Vec<Value>,
    pub(super) grid: Vec<Dim>,
    /// Per grid axis, what its iv is divided by to index a workspace.
    pub(super) grid_div: Vec<i64>,
    /// Every instruction in pre-order.
    pub(super) order: Vec<Inst>,
    /// The loop that owns a block.
    pub(super) owner: FxHashMap<Block, Inst>,
    /// Uses of each value.
    pub(super) uses: FxHashMap<Value, Vec<Use>>,
}

impl Analysis {
    pub(super) fn new(k: &Kernel) -> Result<Analysis, String> {
        let [f] = k.funcs.as_slice() else {
            return Err(format!(
                "split: expected one `any` function, found {}",
                k.funcs.len()
            ));
        };
        if f.unit != Unit::Any {
            return Err(format!(
                "split: expected an `any` function, found `{}` (already split?)",
                f.unit.name()
            ));
        }
        let top = f.body;
        let pars: Vec<Inst> = k.blocks[top]
            .insts
            .iter()
            .copied()
            .filter(|&i| matches!(k.kind(i), InstKind::Parallel { .. }))
            .collect();
        let [par] = pars.as_slice() else {
            return Err(format!(
                "split: expected exactly one top-level `parallel`, found {}",
                pars.len()
            ));
        };
        let par = *par;
        let InstKind::Parallel { axes, body } = k.kind(par) else {
            unreachable!("filtered on Parallel")
        };
        let par_body = *body;
        let mut grid = Vec::new();
        let mut grid_div = Vec::new();
        for (n, ax) in axes.iter().enumerate() {
            let (d, div) = grid_dim(k, ax).map_err(|e| format!("split: grid axis {n}: {e}"))?;
            grid.push(d);
            grid_div.push(div);
        }
        let ivs = k.blocks[par_body].params.clone();
        let mut an = Analysis {
            top,
            par,
            par_body,
            ivs,
            grid,
            grid_div,
            order: Vec::new(),
            owner: FxHashMap::default(),
            uses: FxHashMap::default(),
        };
        an.scan(k, top)?;
        Ok(an)
    }

    fn scan(&mut self, k: &Kernel, b: Block) -> Result<(), String> {
        for &i in &k.blocks[b].insts {
            self.order.push(i);
            let kind = k.kind(i);
            match kind {
                InstKind::SetFlag(_) | InstKind::WaitFlag(_) => {
                    return Err(format!(
                        "split: unexpected `{}` in the input (flags are the split's to add)",
                        kind.opcode()
                    ));
                }
                InstKind::Parallel { axes, body } => {
                    if i != self.par {
                        return Err("split: nested `parallel`".into());
                    }
                    for ax in axes {
                        self.add_use(ax.lo, Use::Bound);
                        self.add_use(ax.hi, Use::Bound);
                    }
                    self.owner.insert(*body, i);
                    self.scan(k, *body)?;
                }
                InstKind::For {
                    lo, hi, init, body, ..
                } => {
                    self.add_use(*lo, Use::Bound);
                    self.add_use(*hi, Use::Bound);
                    for (n, &v) in init.iter().enumerate() {
                        self.add_use(v, Use::Init(i, n));
                    }
                    let params = &k.blocks[*body].params;
                    if params.len() != init.len() + 1 {
                        return Err(format!(
                            "split: `for` {i} has {} body params for {} carried values",
                            params.len(),
                            init.len()
                        ));
                    }
                    match k.blocks[*body].insts.last().map(|&y| k.kind(y)) {
                        Some(InstKind::Yield(vs)) if vs.len() == init.len() => {}
                        _ => {
                            return Err(format!(
                                "split: the body of `for` {i} does not end in a `yield` of {} values",
                                init.len()
                            ));
                        }
                    }
                    self.owner.insert(*body, i);
                    self.scan(k, *body)?;
                }
                InstKind::Yield(vs) => {
                    let Some(&f) = self.owner.get(&b) else {
                        return Err("split: `yield` outside a `for`".into());
                    };
                    for (n, &v) in vs.iter().enumerate() {
                        self.add_use(v, Use::Yield(f, n));
                    }
                }
                _ => kind.for_each_operand(|v| self.add_use(v, Use::Op(i))),
            }
        }
        Ok(())
    }

    fn add_use(&mut self, v: Value, u: Use) {
        self.uses.entry(v).or_default().push(u);
    }
}

/// The workspace extent of a grid axis and the divisor that turns its iv
/// into a slot index: `lo..hi step s` has its ivs below `hi`, and for
/// `lo >= 0` the slots `iv / s` of successive ivs are distinct and below
/// `ceil(hi / s)`, which is the extent when `hi` is known at compile time
/// (for `lo > 0` the first `lo / s` slots go unused); for a launch-time `hi`
/// and `s > 1` the workspace is indexed by the iv itself (extent `hi`,
/// sparse but correct). The lower bound must be a non-negative `iconst` or
/// a `dim`.
fn grid_dim(k: &Kernel, ax: &Axis) -> Result<(Dim, i64), String> {
    match k.def_inst(ax.lo).map(|i| k.kind(i)) {
        Some(InstKind::IConst(n)) if *n >= 0 => {}
        Some(InstKind::DimValue(_)) => {}
        _ => {
            return Err(format!(
                "lower bound {} is neither a `dim` nor a non-negative `iconst`",
                ax.lo
            ));
        }
    }
    let s = ax.step;
    let known = |n: u64| (Dim::Const(n.div_ceil(s as u64).max(1)), s);
    match k.def_inst(ax.hi).map(|i| k.kind(i)) {
        Some(InstKind::IConst(n)) if *n > 0 => Ok(known(*n as u64)),
        Some(InstKind::DimValue(d)) => match k.dims[*d].value {
            Some(n) => Ok(known(n)),
            None => Ok((Dim::Sym(*d), 1)),
        },
        _ => Err(format!(
            "upper bound {} is neither a `dim` nor a positive `iconst`",
            ax.hi
        )),
    }
}
