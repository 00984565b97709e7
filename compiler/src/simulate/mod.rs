//! A cost model of one AI core: a discrete-event simulation of the compiled
//! Cube and Vector programs (the IR after every pass), op by op, on the rates
//! of a target file (`targets/*.toml`).
//!
//! It predicts; it does not run the math. What it does:
//!
//! 1. **Flatten** ([`flatten`]): walk each unit's function the way the JIT
//!    runs it, for the grid items one core runs (items `0, C, 2C, …` of the
//!    `parallel` grid on `C = min(items, ai_cores)` cores, as the runtime
//!    deals them), evaluating the scalar code (loop bounds, indices) from the
//!    dims. Every tile op becomes one [`Op`]: the pipe(s) it occupies and for
//!    how long, the earlier ops it depends on, whether it touches GM, and
//!    flag sets and waits. Durations come from the target:
//!    - `matmul`: M·N·K, each dim rounded up to the Cube fractal, over
//!      `cube.macs_per_cycle` of the operand dtype (CUBE);
//!    - `load`/`store`/`copy`: bytes over the rate of the move engine the
//!      copy runs on (MTE2 GM→L1/UB, MTE1 L1→L0A/L0B, FIXP L0C→GM, MTE3
//!      UB→GM), plus `moves.issue_cycles`; a GM read or write is further
//!      capped by the core's share of HBM (`hbm_gbps / C`), or of L2
//!      (`l2_gbps / C`) for compiler workspaces and for a GM range the same
//!      grid item already read (the second read of a KV block for P·V);
//!    - `atomic_add`: bytes at the lower of the engine's and
//!      `atomic.add_bytes_per_cycle`; `atomic_exp_add`: the whole GM region
//!      at the atomic rate (MTE3) plus the Vector broadcast of `n << 23`;
//!    - Vector ops: repeats of `vector.repeat_bytes` (of the widest dtype
//!      the op touches) times the cycles of the op's class
//!      (`vector.op_cycles`), plus `vector.issue_cycles`. A Vector tile that
//!      `plan-memory` left in GM (too large for UB) is streamed through UB:
//!      an op reading one also occupies MTE2, one producing one MTE3;
//!    - views (`extract` of L1, `reshape`, `bitcast`) and scalar code: free.
//! 2. **Schedule** ([`schedule`]): every pipe of a unit (CUBE, MTE1, MTE2,
//!    FIXP, MTE3 on the Cube side; VECTOR, MTE2, MTE3 on a Vector unit) is
//!    an in-order queue; an op starts when its queues are free and the ops
//!    it depends on have ended. Dependencies: SSA operands (through loop
//!    carries); a write into a local buffer waits for the earlier readers
//!    and writers of the bytes it overwrites (the offsets `plan-memory`
//!    chose, so ping-pong buffers overlap and a single buffer serialises);
//!    GM tensors by name (a read waits for the unit's last write, a write
//!    for its last access). The `k`-th `wait_flag i` of a unit is released
//!    `flags.latency_cycles` after the other unit's `k`-th `set_flag i`
//!    (the runtime's counters); a wait holds back the later GM accesses of
//!    its unit (local work goes on), and a set fires once every earlier GM
//!    access of its unit has ended. With `model.pipes_concurrent = false`
//!    (the host target) every op of a unit runs on one queue, as on the
//!    emulator's one thread per unit: a wait then blocks every later op of
//!    the unit, a set comes after every earlier one and holds the unit for
//!    `flags.set_cycles`; `model.launch_cycles` is added to the end.
//!
//! **The host.** A target with a `[host]` section (`targets/host.toml`,
//!    written by `amlac simulate --probe-host`) models `amlac run` on this
//!    machine as the runtime runs it, not an Ascend core:
//!    - durations are the host's measured costs: a matmul its shape's
//!      measured time (`host.cube.matmul`, else `host.cube.macs_per_ns`), a
//!      runtime copy `call_ns + bytes / bytes_per_ns` of its path
//!      (`gm->l1`, `l0c->gm (atomic add)`, …), plus `host.cube.call_ns` of
//!      JIT code per Cube call; every Vector op (a `gm` tile is the unit's
//!      scratch memory, not streamed) `op_ns + elements · elem_ns`;
//!    - the schedule is the one the launch resolves to (`amla_runtime`'s
//!      `Schedule::Auto`): with `--cores` ≥ `host.cpus`, *cooperative* —
//!      a core's Cube and Vector units are coroutines on one thread, the
//!      Cube first, a unit running until a wait finds its flag unset, then
//!      the next after `switch_ns`; so a core's time is the sum of its units'
//!      work, and worker `w` of `min(cores, cpus)` runs cores `w, w + W, …`
//!      one after the other, the workers at once; with fewer cores,
//!      *threads* — every unit a thread, its ops on one queue (each at
//!      `work_scale` times its cooperative cost), units overlapping, a set
//!      holding its thread `set_ns` and waking the waiter `wake_ns` later;
//!    - threads or workers running at once share `host.parallel` CPUs'
//!      worth of capacity (the measured throughput of one thread per CPU
//!      over one thread's; below `cpus` where the CPUs share execution
//!      units or host time): a launch takes at least all their work over
//!      it;
//!    - plus the schedule's `launch_ns`; [`Report::cpu_ns`] is the launch's
//!      CPU time (every core's units).
//!
//! **What-if.** [`SimConfig::double_buffer_l1`] (`--double-buffer-l1`)
//!    gives each GM→L1 load two slots in turn where L1 has room, and a
//!    reload of a range still in the other slot costs nothing: what the
//!    program would do if `plan-memory` double-buffered the KV block.
//!
//! **Vector sub-blocks.** A target with `vector_per_core = V` runs `V`
//!    Vector units per core. When the compiled Vector function runs fewer
//!    sub-blocks (`sub_blocks = S < V`), the model assumes the rows of every
//!    Vector tile are split over `V / S` units (the 910B way), and simulates
//!    one of them on `1 / (V / S)` of the rows; by symmetry the others end at
//!    the same time, and the Cube's waits (which need every Vector unit)
//!    are released at that time.
//!
//! **Data-dependent scalars.** An `i32` read from GM (a sequence length, a
//!    page number) has no value without the data: the model uses
//!    [`SimConfig::gm_scalar`] for it and says so in [`Report::notes`].
//!
//! The predicted time of the kernel is the time of the most loaded core,
//! FLOPs count the matmuls of all grid items (2·M·N·K, unpadded), and FU is
//! achieved FLOP/s over the target's peak ([`Target::peak_flops`]).

mod flatten;
pub mod output;
mod schedule;

use std::collections::BTreeMap;

use crate::ir::Kernel;
use crate::target::Target;

pub use flatten::flatten;
pub use schedule::schedule;

/// A pipe of one unit, named as Ascend's profiler names them.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pipe {
    /// The Cube (matmuls).
    Cube,
    /// L1 → L0A/L0B.
    Mte1,
    /// GM → L1/UB.
    Mte2,
    /// UB/L1 → GM.
    Mte3,
    /// L0C → GM.
    Fixp,
    /// Vector compute.
    Vector,
}

impl Pipe {
    /// Every pipe, in lane order.
    pub const ALL: [Pipe; 6] = [
        Pipe::Cube,
        Pipe::Mte1,
        Pipe::Mte2,
        Pipe::Fixp,
        Pipe::Mte3,
        Pipe::Vector,
    ];

    /// The profiler's name (`CUBE`, `MTE1`, `MTE2`, `MTE3`, `FIXP`, `VECTOR`).
    pub fn name(self) -> &'static str {
        match self {
            Pipe::Cube => "CUBE",
            Pipe::Mte1 => "MTE1",
            Pipe::Mte2 => "MTE2",
            Pipe::Mte3 => "MTE3",
            Pipe::Fixp => "FIXP",
            Pipe::Vector => "VECTOR",
        }
    }

    fn index(self) -> usize {
        Pipe::ALL.iter().position(|&p| p == self).unwrap_or(0)
    }
}

/// Which unit of the core an op runs on.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    /// The Cube core (AIC).
    Aic,
    /// One Vector core (AIV), the one simulated.
    Aiv,
}

impl Side {
    /// `AIC` or `AIV`.
    pub fn name(self) -> &'static str {
        match self {
            Side::Aic => "AIC",
            Side::Aiv => "AIV",
        }
    }
}

/// A flag action of an op.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FlagAct {
    /// Not a flag op.
    None,
    /// `set_flag id`.
    Set(u32),
    /// `wait_flag id`.
    Wait(u32),
}

/// One op of a flattened unit program.
#[derive(Clone, Debug)]
pub struct Op {
    /// The pipes it occupies, each with its duration in ns (empty for flag
    /// ops and free ops).
    pub parts: Vec<(Pipe, f64)>,
    /// Indices of earlier ops of the same unit it waits for.
    pub deps: Vec<u32>,
    /// Reads or writes GM (held back by flag waits, awaited by flag sets).
    pub gm: bool,
    /// Flag set or wait.
    pub flag: FlagAct,
    /// Ordinal of the grid item (block) on this core.
    pub item: u32,
    /// What it is, for traces (filled for the first traced items only).
    pub label: String,
}

/// A unit's flattened program and its traffic.
#[derive(Clone, Debug, Default)]
pub struct UnitProgram {
    /// Ops in program order.
    pub ops: Vec<Op>,
    /// Bytes per data path (`gm->l1`, `l1->l0a`, `l0c->gm (atomic)`…).
    pub bytes: BTreeMap<String, u64>,
    /// Cube FLOPs of this core's items (2·M·N·K, unpadded).
    pub flops: f64,
    /// Host cost categories (`copy gm->l1`, `matmul 128x128x96`, `vector`,
    /// `cube calls`): (ops, quantity: bytes, MACs or elements) of this
    /// core, whatever the target (what `--probe-host` fits its costs to).
    pub work: BTreeMap<String, (u64, u64)>,
}

/// What the simulation is told beyond the IR and the target.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Value assumed for every `i32` scalar read from GM.
    pub gm_scalar: i64,
    /// Keep op events (for `--trace`/`--svg`) of this many first grid items.
    pub trace_items: u32,
    /// Read every GM→L1 load as if `plan-memory` had given it two L1 slots
    /// in turn (double buffering): the load of block j+1 waits for the
    /// readers of block j−1 only. Applied only when L1 has room for a second
    /// copy of the largest loaded tile next to everything placed there
    /// (else the report says it was not). A what-if of the model, not of
    /// the compiled program.
    pub double_buffer_l1: bool,
    /// Cores of the launch (`None`: the target's `chip.ai_cores`); on the
    /// host target, what `amlac run --cores` is given (it decides the
    /// runtime's schedule).
    pub cores: Option<u32>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            gm_scalar: 0,
            trace_items: 2,
            double_buffer_l1: false,
            cores: None,
        }
    }
}

/// One op on one pipe, placed in time.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The unit.
    pub side: Side,
    /// The pipe.
    pub pipe: Pipe,
    /// Start, ns from launch.
    pub start_ns: f64,
    /// End, ns.
    pub end_ns: f64,
    /// Grid item ordinal on the core.
    pub item: u32,
    /// What it is.
    pub label: String,
}

/// Busy time of one pipe of one unit.
#[derive(Clone, Debug, PartialEq)]
pub struct PipeBusy {
    /// The unit.
    pub side: Side,
    /// The pipe.
    pub pipe: Pipe,
    /// Sum of op durations, ns.
    pub busy_ns: f64,
    /// `busy_ns` over the predicted time.
    pub fraction: f64,
}

/// The prediction.
#[derive(Clone, Debug)]
pub struct Report {
    /// Kernel name.
    pub kernel: String,
    /// Target name.
    pub target: String,
    /// Grid items (blocks) of the whole launch.
    pub items: u64,
    /// Cores used (`min(items, ai_cores)`).
    pub cores: u32,
    /// Grid items the simulated (most loaded) core runs.
    pub core_items: u32,
    /// Vector units the rows are split over (see the module doc).
    pub vector_units: u32,
    /// Predicted kernel time, ns.
    pub time_ns: f64,
    /// Cube FLOPs of the whole launch.
    pub flops: f64,
    /// Achieved FLOP/s.
    pub flops_per_s: f64,
    /// Peak FLOP/s of the target.
    pub peak_flops_per_s: f64,
    /// FLOPS utilisation: achieved over peak.
    pub fu: f64,
    /// Busy time of every pipe of both units.
    pub pipes: Vec<PipeBusy>,
    /// The pipe with the largest busy fraction.
    pub bound: (Side, Pipe),
    /// Bytes per data path, whole launch.
    pub bytes: BTreeMap<String, u64>,
    /// Events of the first traced grid items.
    pub events: Vec<Event>,
    /// Assumptions the prediction rests on.
    pub notes: Vec<String>,
    /// Host cost categories of the simulated core, `AIC …`/`AIV …` (see
    /// [`UnitProgram::work`]).
    pub work: BTreeMap<String, (u64, u64)>,
    /// How the host runtime runs the launch (`cooperative`, `threads`;
    /// `None` on an Ascend target).
    pub host_schedule: Option<&'static str>,
    /// On the host target: the launch's CPU time, every core's units, ns
    /// (the launch overhead outside the units not included).
    pub cpu_ns: Option<f64>,
}

/// Why a simulation could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The IR is not the output of the whole pipeline.
    #[error("cannot simulate: {0}")]
    NotCompiled(String),
    /// A dim has no value.
    #[error("dim `{0}` is not bound: give it with -D {0}=…")]
    UnboundDim(String),
    /// The flag protocol deadlocks in the model.
    #[error("the Cube and Vector programs deadlock on flags: {0}")]
    Deadlock(String),
    /// The program is too large to simulate op by op.
    #[error("the simulated core would run more than {limit} ops; use smaller dims")]
    TooLarge {
        /// The op limit.
        limit: usize,
    },
}

/// Simulates `k` (the IR after all passes) on `target`.
pub fn simulate(k: &Kernel, target: &Target, cfg: &SimConfig) -> Result<Report, SimError> {
    let mut t = target.clone();
    if let Some(c) = cfg.cores {
        t.chip.ai_cores = c.max(1);
    }
    let target = &t;
    let flat = flatten(k, target, cfg)?;
    let sched = schedule(&flat, target, cfg)?;
    let mut work = BTreeMap::new();
    for (side, p) in [(Side::Aic, &flat.cube), (Side::Aiv, &flat.vector)] {
        for (cat, w) in &p.work {
            work.insert(format!("{} {cat}", side.name()), *w);
        }
    }
    let time_ns = sched.end_ns.max(1e-9);
    let scale = f64::from(flat.core_items).max(1.0);
    let per_item_flops = flat.cube.flops / scale;
    let flops = per_item_flops * flat.items as f64;
    let flops_per_s = flops / (time_ns * 1e-9);
    let peak = target.peak_flops();
    let mut pipes = Vec::new();
    for (side, busy) in [(Side::Aic, &sched.busy_aic), (Side::Aiv, &sched.busy_aiv)] {
        for p in Pipe::ALL {
            let b = busy[p.index()];
            if b > 0.0 {
                pipes.push(PipeBusy {
                    side,
                    pipe: p,
                    busy_ns: b,
                    fraction: b / time_ns,
                });
            }
        }
    }
    let bound = pipes
        .iter()
        .max_by(|a, b| a.fraction.total_cmp(&b.fraction))
        .map_or((Side::Aic, Pipe::Cube), |p| (p.side, p.pipe));
    // Bytes of the whole launch: this core's items scaled to every item;
    // Vector paths times the Vector units per core.
    let mut bytes = BTreeMap::new();
    let per_item = |b: u64| (b as f64 / scale * flat.items as f64).round() as u64;
    for (path, b) in &flat.cube.bytes {
        *bytes.entry(format!("aic {path}")).or_insert(0) += per_item(*b);
    }
    for (path, b) in &flat.vector.bytes {
        *bytes.entry(format!("aiv {path}")).or_insert(0) +=
            per_item(*b) * u64::from(flat.vector_units);
    }
    Ok(Report {
        kernel: k.name.clone(),
        target: target.name.clone(),
        items: flat.items,
        cores: flat.cores,
        core_items: flat.core_items,
        vector_units: flat.vector_units,
        time_ns,
        flops,
        flops_per_s,
        peak_flops_per_s: peak,
        fu: flops_per_s / peak,
        pipes,
        bound,
        bytes,
        events: sched.events,
        notes: flat.notes,
        work,
        host_schedule: sched.host_schedule,
        cpu_ns: sched.cpu_ns,
    })
}

/// Both units of one core, flattened.
#[derive(Clone, Debug)]
pub struct Flat {
    /// The Cube program.
    pub cube: UnitProgram,
    /// The (one simulated) Vector program.
    pub vector: UnitProgram,
    /// Grid items of the launch.
    pub items: u64,
    /// Cores used.
    pub cores: u32,
    /// Items of the simulated core.
    pub core_items: u32,
    /// Vector units the rows are split over.
    pub vector_units: u32,
    /// Assumptions made.
    pub notes: Vec<String>,
}

/// A schedule: when everything ran.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// When the last op ended, ns.
    pub end_ns: f64,
    /// Busy ns per pipe (in [`Pipe::ALL`] order) of the Cube.
    pub busy_aic: [f64; 6],
    /// Busy ns per pipe of the simulated Vector unit.
    pub busy_aiv: [f64; 6],
    /// Events of traced items.
    pub events: Vec<Event>,
    /// The host runtime's schedule, on the host target.
    pub host_schedule: Option<&'static str>,
    /// On the host target: CPU time of the launch, every core's units
    /// (the work the schedule spreads over the CPUs), ns.
    pub cpu_ns: Option<f64>,
}

#[cfg(test)]
mod tests;
