//! Target descriptions: the capacities and rates of an AI core.
//!
//! A target is a TOML file (see `targets/ascend910b.toml` at the top of the
//! repository, which carries the source of every figure). The compiler reads
//! buffer capacities from it when planning memory and tiling, and the cost
//! model reads rates from it. Facts about the chip live in those files, never
//! in code: this module only parses and validates them.
//!
//! Invariant: a [`Target`] returned by [`Target::parse`] has every capacity and
//! rate strictly positive.

use serde::Deserialize;
use std::fmt;
use std::path::Path;

/// The built-in Ascend 910B description, embedded at build time.
const ASCEND910B: &str = include_str!("../../targets/ascend910b.toml");

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
    /// The Cube unit.
    pub cube: Cube,
    /// The Vector unit.
    pub vector: Vector,
    /// Cross-core synchronisation.
    pub flags: Flags,
    /// Atomic accumulation into GM.
    pub atomic: Atomic,
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
    /// HBM (global memory) size in bytes: the largest buffer a tile that no
    /// local buffer holds can be given.
    pub hbm_bytes: u64,
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
    /// Multiply-accumulates per cycle (fp16/bf16).
    pub macs_per_cycle: u32,
}

/// The Vector unit.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Vector {
    /// Bytes covered by one vector instruction repeat.
    pub repeat_bytes: u32,
    /// Repeats issued per cycle.
    pub repeats_per_cycle: u32,
}

/// Cross-core synchronisation.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Flags {
    /// Flag IDs available between a Cube core and its Vector cores.
    pub cross_core_ids: u32,
}

/// Atomic accumulation into GM.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Atomic {
    /// Element types that can be atomically added on the way into GM.
    pub dtypes: Vec<String>,
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
    /// A figure is zero or negative.
    #[error("invalid target description {origin}: `{field}` must be positive")]
    NotPositive {
        /// The file or built-in name.
        origin: String,
        /// The offending field, dotted (`buffers.l0a`).
        field: &'static str,
    },
}

impl Target {
    /// Names of the targets built into the compiler.
    pub const BUILTIN: &'static [&'static str] = &["ascend910b"];

    /// The built-in target called `name`.
    pub fn builtin(name: &str) -> Result<Target, TargetError> {
        match name {
            "ascend910b" => Target::parse(ASCEND910B, "ascend910b"),
            _ => Err(TargetError::Unknown {
                name: name.to_string(),
                known: Self::BUILTIN.join(", "),
            }),
        }
    }

    /// The default target (Ascend 910B).
    pub fn ascend910b() -> Target {
        // The embedded file is validated by the test suite.
        Target::builtin("ascend910b").expect("embedded ascend910b.toml is valid")
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
        let checks: [(&'static str, bool); 14] = [
            ("chip.ai_cores", self.chip.ai_cores > 0),
            ("chip.vector_per_core", self.chip.vector_per_core > 0),
            ("chip.clock_ghz", self.chip.clock_ghz > 0.0),
            ("chip.hbm_gbps", self.chip.hbm_gbps > 0.0),
            ("chip.hbm_bytes", self.chip.hbm_bytes > 0),
            ("buffers.l1", self.buffers.l1 > 0),
            ("buffers.l0a", self.buffers.l0a > 0),
            ("buffers.l0b", self.buffers.l0b > 0),
            ("buffers.l0c", self.buffers.l0c > 0),
            ("buffers.ub", self.buffers.ub > 0),
            ("cube.fractal", self.cube.fractal.iter().all(|&d| d > 0)),
            ("cube.macs_per_cycle", self.cube.macs_per_cycle > 0),
            ("vector.repeat_bytes", self.vector.repeat_bytes > 0),
            ("flags.cross_core_ids", self.flags.cross_core_ids > 0),
        ];
        match checks.iter().find(|(_, ok)| !ok) {
            Some((field, _)) => Err(TargetError::NotPositive {
                origin: origin.to_string(),
                field,
            }),
            None => Ok(()),
        }
    }

    /// Peak dense bf16/f16 FLOP/s of the whole chip (2 FLOP per MAC).
    pub fn peak_flops(&self) -> f64 {
        2.0 * f64::from(self.cube.macs_per_cycle)
            * f64::from(self.chip.ai_cores)
            * self.chip.clock_ghz
            * 1e9
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
    fn builtin_ascend910b_parses_with_documented_capacities() {
        let t = Target::ascend910b();
        assert_eq!(t.buffers.l0a, 64 * 1024);
        assert_eq!(t.buffers.l0c, 128 * 1024);
        assert_eq!(t.buffers.ub, 192 * 1024);
        assert_eq!(t.buffers.l1, 512 * 1024);
        // ≈ 354 TFLOPS as the design brief says.
        let tf = t.peak_flops() / 1e12;
        assert!((350.0..360.0).contains(&tf), "peak {tf} TFLOPS");
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
        let bad = ASCEND910B.replace("l0a = 65536", "l0a = 0");
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
