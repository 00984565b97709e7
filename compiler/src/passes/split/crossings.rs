//! Step 2 of `split`: a GM workspace and a flag for every value used on
//! the unit it does not live on.

use super::*;

impl SplitState {
    /// Step 2: workspaces and flags for values used on the other unit.
    pub(super) fn plan_crossings(&mut self, k: &mut Kernel) -> Result<(), String> {
        // Parents of every instruction.
        let mut parent = FxHashMap::default();
        fill_parents(k, self.an.top, &mut parent);
        self.parent = parent;
        let mut defs: Vec<(Value, Pos, Block)> = Vec::new();
        for n in 0..self.an.order.len() {
            let i = self.an.order[n];
            let b = self.parent[&i];
            if let InstKind::For { body, .. } = k.kind(i) {
                for &p in &k.blocks[*body].params[1..] {
                    defs.push((p, Pos::Start(*body), *body));
                }
            }
            for &r in &k.insts[i].results {
                defs.push((r, Pos::After(i), b));
            }
        }
        let mut names: FxHashSet<String> = k.tensors.values().map(|t| t.name.clone()).collect();
        for (v, pos, b) in defs {
            let Some(from) = self.home.get(&v).and_then(|h| h.unit()) else {
                continue;
            };
            let to = other(from);
            let need = if to == Unit::Cube {
                NEED_CUBE
            } else {
                NEED_VECTOR
            };
            if self.use_units(k, v) & need == 0 {
                continue;
            }
            if b == self.an.top {
                return Err(format!(
                    "split: value {v} is computed on the {} outside the `parallel` and used on the {}",
                    from.name(),
                    to.name()
                ));
            }
            let ty = k.ty(v).clone();
            if ty.dtype() == DType::Bool {
                return Err(format!(
                    "split: bool value {v} would cross from the {} to the {} (masks cannot go through GM)",
                    from.name(),
                    to.name()
                ));
            }
            // Unnamed values are named after their op (`ws_matmul`).
            let base = k.values[v].name.clone().unwrap_or_else(|| {
                k.def_inst(v)
                    .map_or("param", |i| k.kind(i).opcode())
                    .to_string()
            });
            let mut name = format!("ws_{base}");
            let mut n = 2;
            while names.contains(&name) {
                name = format!("ws_{base}_{n}");
                n += 1;
            }
            names.insert(name.clone());
            let mut shape = self.an.grid.clone();
            shape.extend(ty.shape().iter().map(|&d| Dim::Const(d)));
            let ws = k.tensors.push(TensorData {
                name,
                dtype: ty.dtype(),
                shape,
                role: Role::Workspace,
            });
            let flag = self.new_flag()?;
            self.emit(pos, from, Emit::Store { ws, value: v });
            self.emit(pos, from, Emit::Set(flag));
            self.emit(pos, to, Emit::Wait(flag));
            self.emit(pos, to, Emit::Load { ws, value: v });
            let in_for = self
                .an
                .owner
                .get(&b)
                .copied()
                .filter(|&f| matches!(k.kind(f), InstKind::For { .. }));
            self.crossings.push(Crossing {
                ws,
                from,
                to,
                in_for,
            });
        }
        Ok(())
    }
}
