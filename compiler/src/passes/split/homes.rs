//! Step 1 of `split`: the home (`cube`, `vector` or `both`) of every
//! value, to a fixpoint.

use super::*;

impl SplitState {
    /// Units that need `v` given the current homes (unknown users ignored).
    pub(super) fn needs(&self, k: &Kernel, v: Value) -> u8 {
        let mut bits = 0;
        for u in self.an.uses.get(&v).map(Vec::as_slice).unwrap_or(&[]) {
            bits |= match *u {
                Use::Bound => NEED_CUBE | NEED_VECTOR,
                Use::Init(f, n) | Use::Yield(f, n) => {
                    let InstKind::For { body, .. } = k.kind(f) else {
                        continue;
                    };
                    match self.home.get(&k.blocks[*body].params[n + 1]) {
                        Some(h) => need_bits(*h),
                        None => 0,
                    }
                }
                Use::Op(i) => match k.kind(i) {
                    InstKind::Store { value, .. } | InstKind::AtomicAdd { value, .. }
                        if *value == v =>
                    {
                        0
                    }
                    InstKind::Store { .. }
                    | InstKind::AtomicAdd { .. }
                    | InstKind::AtomicExpAdd { .. } => match self.eff.get(&i) {
                        Some(u) => need_bits(Home::of(*u)),
                        None => 0,
                    },
                    _ => match k.insts[i].results.first().and_then(|r| self.home.get(r)) {
                        Some(h) => need_bits(*h),
                        None => 0,
                    },
                },
            };
        }
        bits
    }

    pub(super) fn set_home(&mut self, v: Value, h: Home, changed: &mut bool) {
        if self.home.get(&v) != Some(&h) {
            self.home.insert(v, h);
            *changed = true;
        }
    }

    /// Step 1: the home of every value, to a fixpoint.
    pub(super) fn compute_homes(&mut self, k: &Kernel) -> Result<(), String> {
        let limit = 4 * self.an.order.len() + 8;
        for _ in 0..limit {
            let mut changed = false;
            for n in 0..self.an.order.len() {
                let i = self.an.order[n];
                self.home_of_inst(k, i, &mut changed);
            }
            if !changed {
                return Ok(());
            }
        }
        Err("split: the unit assignment did not converge".into())
    }

    pub(super) fn home_of_inst(&mut self, k: &Kernel, i: Inst, changed: &mut bool) {
        let kind = k.kind(i);
        let results = &k.insts[i].results;
        match kind {
            InstKind::Parallel { body, .. } => {
                for &p in &k.blocks[*body].params {
                    self.set_home(p, Home::Both, changed);
                }
            }
            InstKind::For { init, body, .. } => {
                let params = &k.blocks[*body].params;
                self.set_home(params[0], Home::Both, changed);
                let Some(&y) = k.blocks[*body].insts.last() else {
                    return;
                };
                let InstKind::Yield(ys) = k.kind(y) else {
                    return;
                };
                for c in 0..init.len() {
                    let hi = self.home.get(&init[c]).copied();
                    let hy = self.home.get(&ys[c]).copied();
                    let h = match (hi, hy) {
                        (_, Some(h @ (Home::Cube | Home::Vector))) => h,
                        (Some(h @ (Home::Cube | Home::Vector)), _) => h,
                        (Some(Home::Both), _) => Home::Both,
                        (None, Some(Home::Both)) => Home::Both,
                        (None, None) => Home::Vector,
                    };
                    self.set_home(params[c + 1], h, changed);
                    self.set_home(results[c], h, changed);
                }
            }
            InstKind::Yield(_) => {}
            InstKind::Store { value, .. } | InstKind::AtomicAdd { value, .. } => {
                let u = self
                    .home
                    .get(value)
                    .and_then(|h| h.unit())
                    .unwrap_or(Unit::Vector);
                if self.eff.insert(i, u) != Some(u) {
                    *changed = true;
                }
            }
            InstKind::AtomicExpAdd { .. } => {
                if self.eff.insert(i, Unit::Vector) != Some(Unit::Vector) {
                    *changed = true;
                }
            }
            _ => {
                let h = self.pure_home(k, i);
                for &r in results {
                    self.set_home(r, h, changed);
                }
            }
        }
    }

    pub(super) fn pure_home(&self, k: &Kernel, i: Inst) -> Home {
        let kind = k.kind(i);
        let results = &k.insts[i].results;
        let scalar = results.iter().all(|&r| matches!(k.ty(r), Type::Scalar(_)));
        let mut ops = Vec::new();
        kind.for_each_operand(|v| ops.push(self.home.get(&v).copied()));
        let all_both = ops.iter().all(|h| *h == Some(Home::Both));
        let first_excl = ops
            .iter()
            .find_map(|h| h.filter(|h| *h != Home::Both))
            .unwrap_or(Home::Vector);
        let by_users = |dup: bool| {
            let need = results.iter().fold(0, |b, &r| b | self.needs(k, r));
            match need {
                NEED_CUBE => Home::Cube,
                x if x == NEED_CUBE | NEED_VECTOR && dup => Home::Both,
                _ => Home::Vector,
            }
        };
        match kind {
            InstKind::IConst(_)
            | InstKind::FConst(..)
            | InstKind::DimValue(_)
            | InstKind::SubBlock => Home::Both,
            InstKind::Matmul { .. } => Home::Cube,
            InstKind::Load { tensor, .. } => {
                let input = k.tensors[*tensor].role == Role::Input;
                if !all_both {
                    first_excl
                } else if scalar {
                    if input { Home::Both } else { Home::Vector }
                } else {
                    by_users(input)
                }
            }
            InstKind::Extract { .. }
            | InstKind::Copy { .. }
            | InstKind::Reshape(..)
            | InstKind::Transpose(_)
            | InstKind::Cast(..) => {
                if all_both {
                    if scalar { Home::Both } else { by_users(true) }
                } else if first_excl == Home::Cube
                    && ops
                        .iter()
                        .all(|h| matches!(h, Some(Home::Cube | Home::Both)))
                    && by_users(false) == Home::Cube
                {
                    Home::Cube
                } else {
                    Home::Vector
                }
            }
            _ => {
                if scalar && all_both {
                    Home::Both
                } else if scalar {
                    first_excl
                } else {
                    Home::Vector
                }
            }
        }
    }

    pub(super) fn placed(&self, k: &Kernel, i: Inst, u: Unit) -> bool {
        match k.kind(i) {
            InstKind::Store { .. } | InstKind::AtomicAdd { .. } | InstKind::AtomicExpAdd { .. } => {
                self.eff.get(&i) == Some(&u)
            }
            InstKind::Parallel { .. } | InstKind::For { .. } | InstKind::Yield(_) => true,
            _ => k.insts[i]
                .results
                .first()
                .and_then(|r| self.home.get(r))
                .is_some_and(|h| h.has(u)),
        }
    }

    /// Units that use `v`, given the final homes.
    pub(super) fn use_units(&self, k: &Kernel, v: Value) -> u8 {
        let mut bits = self.needs(k, v);
        // `needs` ignores the stored value of stores; those run at the
        // value's home by construction, so nothing is missing here.
        if let Some(us) = self.an.uses.get(&v) {
            for u in us {
                if let Use::Op(i) = *u
                    && let InstKind::Store { value, .. } | InstKind::AtomicAdd { value, .. } =
                        k.kind(i)
                    && *value == v
                    && let Some(eu) = self.eff.get(&i)
                {
                    bits |= need_bits(Home::of(*eu));
                }
            }
        }
        bits
    }
}
