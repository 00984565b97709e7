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
    if let Some(h) = &target.host {
        return host(flat, target, h, cfg);
    }
    let clk = target.chip.clock_ghz;
    let rules = Rules {
        concurrent: target.model.pipes_concurrent,
        latency: target.flags.latency_cycles / clk,
        set_ns: target.flags.set_cycles / clk,
    };
    let (a, v, events) = run_units(flat, &rules, cfg)?;
    Ok(Schedule {
        end_ns: a.finish.max(v.finish) + target.model.launch_cycles / clk,
        busy_aic: a.busy,
        busy_aiv: v.busy,
        events,
        host_schedule: None,
        cpu_ns: None,
    })
}

/// How [`run_units`] treats pipes and flags.
#[derive(Clone, Copy)]
struct Rules {
    /// The pipes of a unit are separate queues (else one queue per unit).
    concurrent: bool,
    /// ns from a set to the wait on the other unit seeing it.
    latency: f64,
    /// ns a set holds its unit's queue (one queue only).
    set_ns: f64,
}

/// The host runtime's schedule of one launch (see the module doc of
/// `simulate`): the cooperative one when the launch has at least as many
/// cores as the host has CPUs, else one thread per unit.
fn host(
    flat: &Flat,
    target: &Target,
    h: &crate::target::Host,
    cfg: &super::SimConfig,
) -> Result<Schedule, SimError> {
    let cores = target.chip.ai_cores.max(1);
    let subs = f64::from(flat.vector_units.max(1));
    if cores < h.cpus {
        let rules = Rules {
            concurrent: false,
            latency: h.threads.wake_ns,
            set_ns: h.threads.set_ns,
        };
        // The cost tables are the cooperative schedule's: scale every op.
        let mut scaled = flat.clone();
        for p in [&mut scaled.cube, &mut scaled.vector] {
            for op in &mut p.ops {
                for part in &mut op.parts {
                    part.1 *= h.threads.work_scale;
                }
            }
        }
        let flat = &scaled;
        let (a, v, events) = run_units(flat, &rules, cfg)?;
        let mut end = a.finish.max(v.finish);
        // More unit threads than the host runs at once: they share its
        // capacity (`host.parallel` CPUs' worth), so the launch takes at
        // least all their work over that capacity.
        let threads = f64::from(flat.cores) * (1.0 + subs);
        if threads > h.parallel {
            let work: f64 = a.busy.iter().sum::<f64>() + subs * v.busy.iter().sum::<f64>();
            end = end.max(work * f64::from(flat.cores) / h.parallel);
        }
        // CPU time of the launch: every unit's work and sets, every core.
        let sets = |ops: &[super::Op]| {
            ops.iter()
                .filter(|o| matches!(o.flag, FlagAct::Set(_)))
                .count() as f64
        };
        let core_cpu = a.busy.iter().sum::<f64>()
            + subs * v.busy.iter().sum::<f64>()
            + (sets(&flat.cube.ops) + subs * sets(&flat.vector.ops)) * h.threads.set_ns;
        let cpu = core_cpu * flat.items as f64 / f64::from(flat.core_items.max(1));
        return Ok(Schedule {
            end_ns: end + h.threads.launch_ns,
            busy_aic: a.busy,
            busy_aiv: v.busy,
            events,
            host_schedule: Some("threads"),
            cpu_ns: Some(cpu),
        });
    }
    let (core_ns, busy_aic, busy_aiv, events) = cooperative(flat, h, cfg)?;
    // Worker 0 runs cores 0, W, 2W, … one after the other; core c runs
    // items c, c + C, … (the runtime's deal). Each core's time is taken
    // as proportional to its items.
    // The workers run at once but share the host's capacity
    // (`host.parallel` CPUs' worth): the launch takes the longest worker's
    // time or all their work over that capacity, whichever is longer.
    let workers = cores.min(h.cpus);
    let per_item = core_ns / f64::from(flat.core_items.max(1));
    let (mut longest, mut all) = (0.0f64, 0.0);
    for w in 0..workers {
        let mut worker_ns = 0.0;
        for c in (w..cores).step_by(workers as usize) {
            let items = flat
                .items
                .saturating_sub(u64::from(c))
                .div_ceil(u64::from(cores));
            worker_ns += per_item * items as f64;
        }
        longest = longest.max(worker_ns);
        all += worker_ns;
    }
    let worker_ns = longest.max(all / h.parallel.min(f64::from(workers)));
    Ok(Schedule {
        end_ns: worker_ns + h.cooperative.launch_ns,
        busy_aic,
        busy_aiv,
        events,
        host_schedule: Some("cooperative"),
        cpu_ns: Some(per_item * flat.items as f64),
    })
}

/// One core on the cooperative schedule: the Cube and Vector programs are
/// coroutines on one thread, resumed in turn (the Cube first); a unit runs
/// until a wait finds its flag not yet set, then the next one runs after a
/// switch. Every op's time adds up; a Vector function of `S` sub-blocks
/// runs `S` such coroutines, each the simulated unit's work. Returns the
/// core's time and busy times.
#[allow(clippy::type_complexity)]
fn cooperative(
    flat: &Flat,
    h: &crate::target::Host,
    cfg: &super::SimConfig,
) -> Result<(f64, [f64; 6], [f64; 6], Vec<Event>), SimError> {
    let subs = f64::from(flat.vector_units.max(1));
    let progs = [&flat.cube.ops, &flat.vector.ops];
    let sides = [Side::Aic, Side::Aiv];
    let mut pc = [0usize; 2];
    let mut sets: [HashMap<u32, usize>; 2] = Default::default();
    let mut waits: [HashMap<u32, usize>; 2] = Default::default();
    let mut busy = [[0.0f64; 6]; 2];
    let mut events = Vec::new();
    let mut t = 0.0;
    let mut cur = 0;
    let mut stuck = 0;
    loop {
        let start_pc = pc[cur];
        let scale = if cur == 1 { subs } else { 1.0 };
        while pc[cur] < progs[cur].len() {
            let op = &progs[cur][pc[cur]];
            match op.flag {
                FlagAct::Wait(id) => {
                    let k = waits[cur].get(&id).copied().unwrap_or(0);
                    if sets[1 - cur].get(&id).copied().unwrap_or(0) <= k {
                        break;
                    }
                    waits[cur].insert(id, k + 1);
                    t += h.cooperative.flag_ns * scale;
                }
                FlagAct::Set(id) => {
                    *sets[cur].entry(id).or_insert(0) += 1;
                    t += h.cooperative.flag_ns * scale;
                }
                FlagAct::None => {
                    for &(p, d) in &op.parts {
                        let d = d * scale;
                        if op.item < cfg.trace_items {
                            events.push(Event {
                                side: sides[cur],
                                pipe: p,
                                start_ns: t,
                                end_ns: t + d,
                                item: op.item,
                                label: op.label.clone(),
                            });
                        }
                        busy[cur][p.index()] += d;
                        t += d;
                    }
                }
            }
            pc[cur] += 1;
        }
        if pc.iter().zip(progs).all(|(&p, o)| p == o.len()) {
            break;
        }
        stuck = if pc[cur] == start_pc { stuck + 1 } else { 0 };
        if stuck >= 2 {
            let msg: Vec<String> = (0..2)
                .filter(|&u| pc[u] < progs[u].len())
                .map(|u| {
                    format!(
                        "{} waits at op {} ({:?})",
                        sides[u].name(),
                        pc[u],
                        progs[u][pc[u]].flag
                    )
                })
                .collect();
            return Err(SimError::Deadlock(msg.join("; ")));
        }
        // Blocked or done: the other unit resumes (each Vector sub-block
        // is a coroutine of its own).
        let other = 1 - cur;
        if pc[other] < progs[other].len() {
            t += h.cooperative.switch_ns * if other == 1 { subs } else { 1.0 };
            cur = other;
        }
    }
    Ok((t, busy[0], busy[1], events))
}

/// The event-driven schedule of both units under `rules`.
fn run_units<'a>(
    flat: &'a Flat,
    rules: &Rules,
    cfg: &super::SimConfig,
) -> Result<(UnitState<'a>, UnitState<'a>, Vec<Event>), SimError> {
    let Rules {
        concurrent,
        latency,
        set_ns,
    } = *rules;
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
    Ok((a, v, events))
}
