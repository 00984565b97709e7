//! The discrete-event schedule of two flattened unit programs (see the
//! module doc of `simulate`).

use std::collections::HashMap;

use super::{Event, FlagAct, Flat, Op, Schedule, Side, SimError};
use crate::target::Target;

/// The state of one unit while it is scheduled.
struct UnitState<'a> {
    side: Side,
    ops: &'a [Op],
    pc: usize,
    end: Vec<f64>,
    /// When each pipe's queue is free (one queue when pipes are serial).
    free: [f64; 6],
    busy: [f64; 6],
    /// Later GM accesses start no earlier (flag waits).
    gate: f64,
    /// End of every GM access issued so far.
    gm_done: f64,
    last_set: f64,
    sets: HashMap<u32, Vec<f64>>,
    waits: HashMap<u32, usize>,
    finish: f64,
}

impl<'a> UnitState<'a> {
    fn new(side: Side, ops: &'a [Op]) -> Self {
        UnitState {
            side,
            ops,
            pc: 0,
            end: Vec::with_capacity(ops.len()),
            free: [0.0; 6],
            busy: [0.0; 6],
            gate: 0.0,
            gm_done: 0.0,
            last_set: 0.0,
            sets: HashMap::new(),
            waits: HashMap::new(),
            finish: 0.0,
        }
    }
}

/// Schedules both programs of `flat` on `target`'s rules.
pub fn schedule(
    flat: &Flat,
    target: &Target,
    cfg: &super::SimConfig,
) -> Result<Schedule, SimError> {
    let concurrent = target.model.pipes_concurrent;
    let latency = target.flags.latency_cycles / target.chip.clock_ghz;
    let set_ns = target.flags.set_cycles / target.chip.clock_ghz;
    let mut units = [
        UnitState::new(Side::Aic, &flat.cube.ops),
        UnitState::new(Side::Aiv, &flat.vector.ops),
    ];
    let mut events = Vec::new();
    loop {
        let mut progress = false;
        for u in 0..2 {
            let other = 1 - u;
            while units[u].pc < units[u].ops.len() {
                let op = &units[u].ops[units[u].pc];
                let t_end = match op.flag {
                    FlagAct::Wait(id) => {
                        let k = units[u].waits.get(&id).copied().unwrap_or(0);
                        let Some(&t) = units[other].sets.get(&id).and_then(|v| v.get(k)) else {
                            break;
                        };
                        let st = &mut units[u];
                        st.waits.insert(id, k + 1);
                        st.gate = st.gate.max(t + latency);
                        if !concurrent {
                            // One thread: the wait blocks everything after it.
                            st.gate = st.gate.max(st.free[0]);
                            st.free[0] = st.gate;
                        }
                        st.gate
                    }
                    FlagAct::Set(id) => {
                        let st = &mut units[u];
                        let mut t = st.gm_done.max(st.gate).max(st.last_set);
                        if !concurrent {
                            // One thread: the set comes after every earlier op.
                            t = t.max(st.free[0]);
                            st.free[0] = t + set_ns;
                        }
                        st.last_set = t;
                        st.sets.entry(id).or_default().push(t);
                        t
                    }
                    FlagAct::None => {
                        let st = &mut units[u];
                        let mut start: f64 = 0.0;
                        for &d in &op.deps {
                            start = start.max(st.end[d as usize]);
                        }
                        if op.gm {
                            start = start.max(st.gate);
                        }
                        for &(p, _) in &op.parts {
                            let q = if concurrent { p.index() } else { 0 };
                            start = start.max(st.free[q]);
                        }
                        let mut end = start;
                        let mut serial = start;
                        for &(p, d) in &op.parts {
                            st.busy[p.index()] += d;
                            if concurrent {
                                st.free[p.index()] = start + d;
                                end = end.max(start + d);
                            } else {
                                serial += d;
                                end = serial;
                            }
                        }
                        if !concurrent && !op.parts.is_empty() {
                            st.free[0] = end;
                        }
                        if op.gm {
                            st.gm_done = st.gm_done.max(end);
                        }
                        if op.item < cfg.trace_items {
                            let mut t0 = start;
                            for &(p, d) in &op.parts {
                                let s = if concurrent { start } else { t0 };
                                events.push(Event {
                                    side: st.side,
                                    pipe: p,
                                    start_ns: s,
                                    end_ns: s + d,
                                    item: op.item,
                                    label: op.label.clone(),
                                });
                                t0 += d;
                            }
                        }
                        end
                    }
                };
                let st = &mut units[u];
                st.end.push(t_end);
                st.finish = st.finish.max(t_end);
                st.pc += 1;
                progress = true;
            }
        }
        if units.iter().all(|s| s.pc == s.ops.len()) {
            break;
        }
        if !progress {
            let stuck: Vec<String> = units
                .iter()
                .filter(|s| s.pc < s.ops.len())
                .map(|s| {
                    format!(
                        "{} waits at op {} ({:?})",
                        s.side.name(),
                        s.pc,
                        s.ops[s.pc].flag
                    )
                })
                .collect();
            return Err(SimError::Deadlock(stuck.join("; ")));
        }
    }
    let [a, v] = units;
    Ok(Schedule {
        end_ns: a.finish.max(v.finish) + target.model.launch_cycles / target.chip.clock_ghz,
        busy_aic: a.busy,
        busy_aiv: v.busy,
        events,
    })
}
