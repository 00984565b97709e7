//! Target descriptions: the capacities and rates of an AI core.
//!
//! A target is a TOML file (see `targets/ascend910b.toml` at the top of the
//! repository, which carries the source of every figure). The compiler reads
//! buffer capacities from it when planning memory and tiling, and the cost
//! model reads rates from it. Facts about the chip live in those files, never
//! in code: this module only parses and validates them.
//!
//! Built-in targets: `ascend910b`, `ascend910c` (one die of a 910C, the chip
//! the AMLA paper measured) and `host` (this machine's measured costs, written
//! by `amlac simulate --probe-host`, for calibrating the cost model against
//! `amlac run`; its `[host]` section, [`Host`], is what makes the model
//! model the host runtime's schedule instead of an Ascend core's pipes).
//!
//! Invariant: a [`Target`] returned by [`Target::parse`] has every capacity and
//! rate strictly positive, and an alignment that is a power of two.

use serde::Deserialize;
use std::fmt;
use std::path::Path;

/// The built-in Ascend 910B description, embedded at build time.
const ASCEND910B: &str = include_str!("../../targets/ascend910b.toml");
/// One die of an Ascend 910C.
const ASCEND910C: &str = include_str!("../../targets/ascend910c.toml");
/// The host, as measured by `amlac simulate --probe-host`.
const HOST: &str = include_str!("../../targets/host.toml");

/// A parsed and validated target description.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Short name used on the command line (`--target ascend910b`).
    pub name: String,
    /// One line saying what the target is.
    pub description: String,
    /// Chip-wide figures.
    pub chip: Chip,
    /// Per-core buffer capacities in bytes.
    pub buffers: Buffers,
    /// Address alignment of local buffers.
    pub align: Align,
    /// The Cube unit.
    pub cube: Cube,
    /// The Vector unit.
    pub vector: Vector,
    /// The move engines (MTE1, MTE2, MTE3, FixPipe).
    pub moves: Moves,
    /// Cross-core synchronisation.
    pub flags: Flags,
    /// Atomic accumulation into GM.
    pub atomic: Atomic,
    /// How the cost model schedules the pipes.
    pub model: Model,
    /// The host runtime's schedule and per-op costs (the `host` target
    /// only; when present the cost model models `amlac run` on this
    /// machine instead of an Ascend core's pipes).
    #[serde(default)]
    pub host: Option<Host>,
}

/// The host runtime as the cost model sees it: how a launch maps the
/// emulated units onto host threads and what each op costs there. Every
/// figure is measured by `amlac simulate --probe-host`; times in ns.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// Host CPUs the runtime schedules on (`LaunchConfig::host_cpus`): a
    /// launch with at least this many cores runs the cooperative schedule.
    pub cpus: u32,
    /// CPUs' worth of work the host runs at once (`1..=cpus`): the FLOP/s
    /// of the runtime's matmul instruction on one thread per CPU over one
    /// thread's alone (`amla_runtime::peak::probe_peak`). Below `cpus`
    /// when the CPUs share execution units or host time (a VM's vCPUs);
    /// threads and workers that run at once share this capacity.
    pub parallel: f64,
    /// The threads schedule (cores < cpus): every unit a thread.
    pub threads: HostThreads,
    /// The cooperative schedule: a core's units are coroutines on one thread.
    pub cooperative: HostCooperative,
    /// The Cube unit's costs.
    pub cube: HostCube,
    /// The Vector unit's JIT code.
    pub vector: HostVector,
    /// Runtime copies by path (`gm->l1`, `l0c->gm (atomic add)`, … as the
    /// runtime's trace names them).
    pub copy: std::collections::BTreeMap<String, HostCopy>,
}

/// Costs of the threads schedule.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostThreads {
    /// Fixed ns of one launch (spawning and joining the unit threads).
    pub launch_ns: f64,
    /// ns a set holds its thread (waking the other).
    pub set_ns: f64,
    /// ns from a set to the return of the wait blocked on it.
    pub wake_ns: f64,
    /// Every op of a unit takes this many times its `[host]` cost (the
    /// tables are the cooperative schedule's; the same work costs a thread
    /// per unit more).
    pub work_scale: f64,
}

/// Costs of the cooperative schedule.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostCooperative {
    /// Fixed ns of one launch (handing the job to the workers, collecting).
    pub launch_ns: f64,
    /// ns of a flag op that does not block (a set, a wait on a set flag).
    pub flag_ns: f64,
    /// ns of one switch between the units of a core (a blocked wait
    /// suspends its coroutine and the next one resumes).
    pub switch_ns: f64,
}

/// Costs of the Cube unit.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostCube {
    /// ns of the Cube's JIT code per runtime call (address math, loops).
    pub call_ns: f64,
    /// Multiply-accumulates per ns of a matmul of a shape not in `matmul`.
    pub macs_per_ns: f64,
    /// ns of one matmul by shape `MxNxK` (the micro-kernel at that shape).
    pub matmul: std::collections::BTreeMap<String, f64>,
}

/// Costs of the Vector unit's JIT code (every Vector op outside runtime
/// calls: element-wise loops, reductions, broadcasts, the exponent add).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostVector {
    /// ns per op.
    pub op_ns: f64,
    /// ns per element of an op on UB tiles (its result, or a reduction's
    /// input).
    pub elem_ns: f64,
    /// ns per element of an op that reads or writes a tile in GM (the
    /// unit's scratch: tiles too large for UB) or GM itself (the exponent add).
    pub gm_elem_ns: f64,
}

/// Cost of one runtime copy path.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostCopy {
    /// Fixed ns per call.
    pub call_ns: f64,
    /// Bytes per ns.
    pub bytes_per_ns: f64,
}

/// Chip-wide figures.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Chip {
    /// Number of AI cores (each one Cube core paired with its Vector cores).
    pub ai_cores: u32,
    /// Vector cores (AIV) per Cube core (AIC).
    pub vector_per_core: u32,
    /// Core clock in GHz.
    pub clock_ghz: f64,
    /// HBM bandwidth in GB/s.
    pub hbm_gbps: f64,
    /// L2 cache size in bytes.
    pub l2_bytes: u64,
    /// L2 hit bandwidth in GB/s, chip-wide.
    pub l2_gbps: f64,
    /// HBM (global memory) size in bytes: the largest buffer a Vector tile
    /// that no local buffer holds can be given. Optional (the host
    /// calibration target has none): without it only tiles whose size
    /// overflows 64 bits are refused before the passes.
    #[serde(default)]
    pub hbm_bytes: Option<u64>,
}

/// Address alignment.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Align {
    /// Offsets of tiles in local buffers are multiples of this (bytes).
    pub bytes: u64,
}

/// Per-core buffer capacities in bytes (UB is per Vector core).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Buffers {
    /// L1: Cube-side staging of matmul operands.
    pub l1: u64,
    /// L0A: the Cube's left operand buffer.
    pub l0a: u64,
    /// L0B: the Cube's right operand buffer.
    pub l0b: u64,
    /// L0C: the Cube's f32 accumulator.
    pub l0c: u64,
    /// UB: a Vector core's unified buffer.
    pub ub: u64,
}

/// The Cube unit.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Cube {
    /// The M×N×K shape of one Cube step.
    pub fractal: [u32; 3],
    /// Multiply-accumulates per cycle, by operand dtype.
    pub macs_per_cycle: Macs,
}

/// Cube multiply-accumulates per cycle, by operand dtype.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Macs {
    /// bf16 operands, f32 accumulation.
    pub bf16: f64,
    /// f16 operands, f32 accumulation.
    pub f16: f64,
}

/// The Vector unit.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Vector {
    /// Bytes covered by one vector instruction repeat.
    pub repeat_bytes: u32,
    /// Repeats issued per cycle.
    pub repeats_per_cycle: u32,
    /// Fixed cycles of one vector instruction.
    pub issue_cycles: f64,
    /// Cycles per repeat, by op class.
    pub op_cycles: OpCycles,
}

/// Vector cycles per repeat, by op class.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OpCycles {
    /// add, sub, mul, max, min, cmp, select, broadcast, iota, copies.
    pub elementwise: f64,
    /// exp, exp2, log, log2, sqrt.
    pub transcendental: f64,
    /// div, rem.
    pub divide: f64,
    /// rowmax, rowsum (per repeat of the input).
    pub reduce: f64,
    /// dtype conversions.
    pub cast: f64,
}

/// Bytes per cycle of each move engine of one core.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Moves {
    /// MTE2: GM/L2 → L1 or UB.
    pub mte2_bytes_per_cycle: f64,
    /// MTE1: L1 → L0A/L0B.
    pub mte1_bytes_per_cycle: f64,
    /// FixPipe: L0C → GM.
    pub fixpipe_bytes_per_cycle: f64,
    /// MTE3: UB → GM.
    pub mte3_bytes_per_cycle: f64,
    /// Fixed cycles of one move instruction.
    pub issue_cycles: f64,
}

/// How the cost model schedules the pipes of one core.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// The pipes of one unit run concurrently (true on Ascend). False: every
    /// op of a unit runs in program order on one queue (the host emulation,
    /// where each unit is one thread).
    pub pipes_concurrent: bool,
    /// Fixed cycles of one launch, outside every unit's program (optional,
    /// default 0).
    #[serde(default)]
    pub launch_cycles: f64,
}

/// Cross-core synchronisation.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Flags {
    /// Flag IDs available between a Cube core and its Vector cores.
    pub cross_core_ids: u32,
    /// Cycles from a set on one unit to the wait on the other seeing it.
    pub latency_cycles: f64,
    /// Cycles a set holds the unit that sets, when its ops run on one queue
    /// (`model.pipes_concurrent = false`; optional, default 0).
    #[serde(default)]
    pub set_cycles: f64,
}

/// Atomic accumulation into GM.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Atomic {
    /// Element types that can be atomically added on the way into GM.
    pub dtypes: Vec<String>,
    /// Bytes per cycle of atomic read-modify-write into GM, per core.
    pub add_bytes_per_cycle: f64,
}

/// Why a target description could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// No built-in target has this name.
    #[error("unknown target `{name}` (built-in targets: {known})")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The built-in names, comma-separated.
        known: String,
    },
    /// The file could not be read.
    #[error("cannot read target file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has missing/unknown fields.
    #[error("invalid target description {origin}: {message}")]
    Syntax {
        /// The file or built-in name.
        origin: String,
        /// What the TOML parser said.
        message: String,
    },
    /// A figure is zero, negative or not finite (or an alignment is not a
    /// power of two).
    #[error(
        "invalid target description {origin}: `{field}` must be positive (alignments: a power of two)"
    )]
    NotPositive {
        /// The file or built-in name.
        origin: String,
        /// The offending field, dotted (`buffers.l0a`).
        field: &'static str,
    },
}

impl Target {
    /// Names of the targets built into the compiler.
    pub const BUILTIN: &'static [&'static str] = &["ascend910b", "ascend910c", "host"];

    /// The built-in target called `name`.
    pub fn builtin(name: &str) -> Result<Target, TargetError> {
        match name {
            "ascend910b" => Target::parse(ASCEND910B, "ascend910b"),
            "ascend910c" => Target::parse(ASCEND910C, "ascend910c"),
            "host" => Target::parse(HOST, "host"),
            _ => Err(TargetError::Unknown {
                name: name.to_string(),
                known: Self::BUILTIN.join(", "),
            }),
        }
    }

    /// The default target (Ascend 910B).
    pub fn ascend910b() -> Target {
        static PARSED: std::sync::OnceLock<Target> = std::sync::OnceLock::new();
        // The embedded file is validated by the test suite.
        PARSED
            .get_or_init(|| {
                Target::builtin("ascend910b").expect("embedded ascend910b.toml is valid")
            })
            .clone()
    }

    /// A built-in name, or else a path to a `.toml` file.
    pub fn load(name_or_path: &str) -> Result<Target, TargetError> {
        if Self::BUILTIN.contains(&name_or_path) {
            return Target::builtin(name_or_path);
        }
        let path = Path::new(name_or_path);
        if path.extension().is_some_and(|e| e == "toml") || path.exists() {
            let text = std::fs::read_to_string(path).map_err(|source| TargetError::Io {
                path: name_or_path.to_string(),
                source,
            })?;
            return Target::parse(&text, name_or_path);
        }
        Target::builtin(name_or_path)
    }

    /// Parse and validate a target description; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Target, TargetError> {
        let t: Target = toml::from_str(text).map_err(|e| TargetError::Syntax {
            origin: origin.to_string(),
            message: e.message().to_string(),
        })?;
        t.validate(origin)?;
        Ok(t)
    }

    fn validate(&self, origin: &str) -> Result<(), TargetError> {
        let pos = |x: f64| x > 0.0 && x.is_finite();
        let nonneg = |x: f64| x >= 0.0 && x.is_finite();
        let (m, v, o) = (&self.moves, &self.vector, &self.vector.op_cycles);
        let checks = [
            ("chip.ai_cores", self.chip.ai_cores > 0),
            ("chip.vector_per_core", self.chip.vector_per_core > 0),
            ("chip.clock_ghz", pos(self.chip.clock_ghz)),
            ("chip.hbm_gbps", pos(self.chip.hbm_gbps)),
            ("chip.l2_gbps", pos(self.chip.l2_gbps)),
            ("chip.hbm_bytes", self.chip.hbm_bytes != Some(0)),
            ("align.bytes", self.align.bytes.is_power_of_two()),
            (
                "cube.macs_per_cycle.bf16",
                pos(self.cube.macs_per_cycle.bf16),
            ),
            ("cube.macs_per_cycle.f16", pos(self.cube.macs_per_cycle.f16)),
            ("vector.repeats_per_cycle", v.repeats_per_cycle > 0),
            ("vector.issue_cycles", nonneg(v.issue_cycles)),
            ("vector.op_cycles.elementwise", pos(o.elementwise)),
            ("vector.op_cycles.transcendental", pos(o.transcendental)),
            ("vector.op_cycles.divide", pos(o.divide)),
            ("vector.op_cycles.reduce", pos(o.reduce)),
            ("vector.op_cycles.cast", pos(o.cast)),
            ("moves.mte2_bytes_per_cycle", pos(m.mte2_bytes_per_cycle)),
            ("moves.mte1_bytes_per_cycle", pos(m.mte1_bytes_per_cycle)),
            (
                "moves.fixpipe_bytes_per_cycle",
                pos(m.fixpipe_bytes_per_cycle),
            ),
            ("moves.mte3_bytes_per_cycle", pos(m.mte3_bytes_per_cycle)),
            ("moves.issue_cycles", nonneg(m.issue_cycles)),
            ("flags.latency_cycles", nonneg(self.flags.latency_cycles)),
            ("flags.set_cycles", nonneg(self.flags.set_cycles)),
            ("model.launch_cycles", nonneg(self.model.launch_cycles)),
            (
                "atomic.add_bytes_per_cycle",
                pos(self.atomic.add_bytes_per_cycle),
            ),
            ("buffers.l1", self.buffers.l1 > 0),
            ("buffers.l0a", self.buffers.l0a > 0),
            ("buffers.l0b", self.buffers.l0b > 0),
            ("buffers.l0c", self.buffers.l0c > 0),
            ("buffers.ub", self.buffers.ub > 0),
            ("cube.fractal", self.cube.fractal.iter().all(|&d| d > 0)),
            ("vector.repeat_bytes", self.vector.repeat_bytes > 0),
            ("flags.cross_core_ids", self.flags.cross_core_ids > 0),
        ];
        let host_ok = |h: &Host| -> Option<&'static str> {
            let (t, c, v) = (&h.threads, &h.cooperative, &h.vector);
            let checks = [
                ("host.cpus", h.cpus > 0),
                (
                    "host.parallel",
                    h.parallel >= 1.0 && h.parallel <= f64::from(h.cpus),
                ),
                ("host.threads.launch_ns", nonneg(t.launch_ns)),
                ("host.threads.set_ns", nonneg(t.set_ns)),
                ("host.threads.wake_ns", nonneg(t.wake_ns)),
                ("host.threads.work_scale", pos(t.work_scale)),
                ("host.cooperative.launch_ns", nonneg(c.launch_ns)),
                ("host.cooperative.flag_ns", nonneg(c.flag_ns)),
                ("host.cooperative.switch_ns", nonneg(c.switch_ns)),
                ("host.cube.call_ns", nonneg(h.cube.call_ns)),
                ("host.cube.macs_per_ns", pos(h.cube.macs_per_ns)),
                ("host.cube.matmul", h.cube.matmul.values().all(|&x| pos(x))),
                ("host.vector.op_ns", nonneg(v.op_ns)),
                ("host.vector.elem_ns", nonneg(v.elem_ns)),
                ("host.vector.gm_elem_ns", nonneg(v.gm_elem_ns)),
                (
                    "host.copy",
                    h.copy
                        .values()
                        .all(|c| nonneg(c.call_ns) && pos(c.bytes_per_ns)),
                ),
            ];
            checks.iter().find(|(_, ok)| !ok).map(|(f, _)| *f)
        };
        let bad = checks
            .iter()
            .find(|(_, ok): &&(&'static str, bool)| !ok)
            .map(|(f, _)| *f)
            .or_else(|| self.host.as_ref().and_then(host_ok));
        match bad {
            Some(field) => Err(TargetError::NotPositive {
                origin: origin.to_string(),
                field,
            }),
            None => Ok(()),
        }
    }

    /// Peak dense bf16 FLOP/s of the whole chip (2 FLOP per MAC).
    pub fn peak_flops(&self) -> f64 {
        2.0 * self.cube.macs_per_cycle.bf16
            * f64::from(self.chip.ai_cores)
            * self.chip.clock_ghz
            * 1e9
    }

    /// The runtime's core configuration for this target: its buffer
    /// capacities and flag count (the runtime never reads target files).
    pub fn core_config(&self) -> amla_runtime::config::CoreConfig {
        let b = &self.buffers;
        amla_runtime::config::CoreConfig {
            l1: b.l1 as usize,
            l0a: b.l0a as usize,
            l0b: b.l0b as usize,
            l0c: b.l0c as usize,
            ub: b.ub as usize,
            flag_ids: self.flags.cross_core_ids,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.description)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_parses_and_the_910b_peak_is_the_design_briefs() {
        for name in Target::BUILTIN {
            let t = Target::builtin(name).unwrap();
            assert_eq!(t.name, *name);
            // The runtime config carries the file's capacities.
            let c = t.core_config();
            assert_eq!(c.ub as u64, t.buffers.ub);
            assert_eq!(c.flag_ids, t.flags.cross_core_ids);
            assert!(c.validate().is_ok(), "{name}");
        }
        // ≈ 354 TFLOPS as the design brief says.
        let tf = Target::ascend910b().peak_flops() / 1e12;
        assert!((350.0..360.0).contains(&tf), "peak {tf} TFLOPS");
        // The AMLA paper's 614 TFLOPS at 86.8% is two 910C dies.
        let c = Target::builtin("ascend910c").unwrap().peak_flops() * 2.0 / 1e12;
        assert!((614.0 / c - 0.868).abs() < 0.005, "910C peak {c} TFLOPS");
    }

    #[test]
    fn non_power_of_two_alignment_is_rejected() {
        let bad = ASCEND910B.replace("bytes = 32 ", "bytes = 24 ");
        assert_ne!(bad, ASCEND910B);
        let e = Target::parse(&bad, "bad.toml").unwrap_err().to_string();
        assert!(e.contains("align.bytes"), "{e}");
    }

    #[test]
    fn unknown_builtin_names_the_known_ones() {
        let e = Target::builtin("h100").unwrap_err().to_string();
        assert!(
            e.contains("unknown target `h100`") && e.contains("ascend910b"),
            "{e}"
        );
    }

    #[test]
    fn zero_capacity_is_rejected_with_the_field_name() {
        let bad = ASCEND910B.replace(
            &format!("l0a = {}", Target::ascend910b().buffers.l0a),
            "l0a = 0",
        );
        assert_ne!(bad, ASCEND910B);
        let e = Target::parse(&bad, "bad.toml").unwrap_err().to_string();
        assert!(e.contains("buffers.l0a"), "{e}");
    }

    #[test]
    fn unknown_field_is_a_syntax_error() {
        let bad = format!("{ASCEND910B}\n[extra]\nx = 1\n");
        let e = Target::parse(&bad, "bad.toml").unwrap_err().to_string();
        assert!(e.contains("bad.toml"), "{e}");
    }
}
