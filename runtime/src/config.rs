//! Core and launch configuration.
//!
//! Invariants:
//! - The runtime never reads a target file and states no chip fact: the
//!   compiler reads capacities and the flag count from `targets/*.toml` and
//!   passes them in as a [`CoreConfig`] (`Target::core_config`). The default
//!   [`CoreConfig`] is no chip: a generous configuration (1 MiB per buffer,
//!   [`MAX_FLAG_IDS`] flags) for the runtime's own tests.
//! - [`CoreConfig::validate`] and [`LaunchConfig::validate`] are called by the
//!   launcher before anything runs; an invalid config is an error, never a panic.

use std::time::Duration;

use crate::error::RuntimeError;

/// Largest number of cross-core flag IDs per core the runtime accepts.
pub const MAX_FLAG_IDS: u32 = 64;

/// Largest number of Vector sub-blocks (AIVs) per core the runtime accepts.
pub const MAX_SUB_BLOCKS: usize = 8;

/// Capacities of one emulated AI core's local buffers, in bytes.
///
/// `ub` is per Vector unit (AIV): a core with two AIVs has two UBs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreConfig {
    /// L1 (Cube side, matmul operand staging), bytes.
    pub l1: usize,
    /// L0A (Cube left operand), bytes.
    pub l0a: usize,
    /// L0B (Cube right operand), bytes.
    pub l0b: usize,
    /// L0C (Cube f32 accumulator), bytes.
    pub l0c: usize,
    /// UB (Vector unit buffer), bytes per AIV.
    pub ub: usize,
    /// Cross-core flag IDs per core (`1..=MAX_FLAG_IDS`).
    pub flag_ids: u32,
}

impl CoreConfig {
    /// The configuration of the runtime's own tests: every buffer 1 MiB,
    /// [`MAX_FLAG_IDS`] flags. Not a chip: real capacities come from the
    /// compiler's target files.
    pub fn for_tests() -> Self {
        const MIB: usize = 1 << 20;
        CoreConfig {
            l1: MIB,
            l0a: MIB,
            l0b: MIB,
            l0c: MIB,
            ub: MIB,
            flag_ids: MAX_FLAG_IDS,
        }
    }

    /// Checks that every capacity is non-zero and at most 1 GiB, and that there
    /// is at least one flag ID (at most [`MAX_FLAG_IDS`]).
    pub fn validate(&self) -> Result<(), RuntimeError> {
        const MAX: usize = 1 << 30;
        for (name, v) in [
            ("l1", self.l1),
            ("l0a", self.l0a),
            ("l0b", self.l0b),
            ("l0c", self.l0c),
            ("ub", self.ub),
        ] {
            if v == 0 || v > MAX {
                return Err(RuntimeError::InvalidConfig(format!(
                    "core buffer {name} capacity {v} bytes is outside 1..={MAX}"
                )));
            }
        }
        if self.flag_ids == 0 || self.flag_ids > MAX_FLAG_IDS {
            return Err(RuntimeError::InvalidConfig(format!(
                "flag_ids = {} is outside 1..={MAX_FLAG_IDS}",
                self.flag_ids
            )));
        }
        Ok(())
    }
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self::for_tests()
    }
}

/// How a launch runs on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchConfig {
    /// Emulated AI cores (each = 1 Cube thread + `vector_sub_blocks` Vector
    /// threads). Default: the host's available parallelism. May exceed it.
    pub cores: usize,
    /// Vector units (AIVs) per core; 2 on a 910B. `1..=MAX_SUB_BLOCKS`.
    pub vector_sub_blocks: usize,
    /// How long a flag wait may block before it fails with a timeout error.
    pub wait_timeout: Duration,
    /// Record a trace of (unit, name, start, end) events.
    pub trace: bool,
    /// Fill local arenas with the byte 0xFF (f32/bf16 NaN) instead of zeros,
    /// so kernels that read uninitialised local memory show it.
    pub poison_local: bool,
    /// Launch-time values of the kernel's symbolic dims, handed to JIT code
    /// through `KernelCtx::dims` (the compiler defines their order: one entry
    /// per kernel dim, in declaration order). Empty by default.
    pub dims: Vec<i64>,
    /// Plain or atomic GM accesses ([`crate::gm::GmAccess`]; default atomic).
    pub gm_access: crate::gm::GmAccess,
    /// Unit threads that may run at once (default: the host's CPUs; `None`:
    /// no limit). A unit gives its CPU up while it blocks in a flag wait, and
    /// a Cube waiting for a CPU gets it before any Vector unit, so the launch
    /// never has more runnable threads than CPUs and a Vector unit never
    /// preempts a Cube.
    pub host_cpus: Option<usize>,
    /// How the units of a core share host threads ([`Schedule`]).
    pub schedule: Schedule,
    /// Run the race checker ([`crate::race`]): every GM access is recorded
    /// and the first two conflicting accesses of different units that no
    /// flag orders fail the launch. Slow; off by default.
    pub race_check: bool,
    /// The Cube's matmul micro-kernel for this launch (`None`: the fastest
    /// the CPU supports, [`crate::matmul::detected_path`]). Per launch, not
    /// process-wide: the paths sum in different orders, so a launch's bits
    /// depend on it. [`LaunchConfig::validate`] refuses a path the CPU lacks.
    pub matmul_path: Option<crate::matmul::MatmulPath>,
}

/// How a launch maps its emulated units onto host threads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Schedule {
    /// [`Schedule::Cooperative`] when there are at least as many cores as
    /// host CPUs (`host_cpus`; every CPU already has a core to run), else
    /// [`Schedule::Threads`] (spare CPUs let a core's units overlap).
    #[default]
    Auto,
    /// A core's Cube and Vector units are coroutines on one host thread
    /// (`min(cores, host_cpus)` persistent workers, [`crate::pool`]): a
    /// flag wait switches to another unit of the core in user space, no
    /// thread ever blocks, nothing is allocated per launch after warm-up.
    Cooperative,
    /// Every unit is a thread of its own, spawned for the launch; a blocked
    /// flag wait parks the thread ([`crate::cpus`] bounds how many run).
    Threads,
}

impl Schedule {
    /// `Auto` resolved for `cores` emulated cores under `host_cpus`.
    pub fn resolve(self, cores: usize, host_cpus: Option<usize>) -> Schedule {
        match self {
            Schedule::Auto if host_cpus.is_some_and(|n| cores >= n) => Schedule::Cooperative,
            Schedule::Auto => Schedule::Threads,
            s => s,
        }
    }
}

impl LaunchConfig {
    /// Turns the race checker on or off.
    pub fn with_race_check(mut self, on: bool) -> Self {
        self.race_check = on;
        self
    }

    /// Sets how GM is accessed.
    pub fn with_gm_access(mut self, a: crate::gm::GmAccess) -> Self {
        self.gm_access = a;
        self
    }

    /// Sets the number of unit threads that may run at once.
    pub fn with_host_cpus(mut self, n: Option<usize>) -> Self {
        self.host_cpus = n;
        self
    }

    /// Sets how units map onto host threads.
    pub fn with_schedule(mut self, s: Schedule) -> Self {
        self.schedule = s;
        self
    }

    /// Sets the number of emulated cores.
    pub fn with_cores(mut self, cores: usize) -> Self {
        self.cores = cores;
        self
    }

    /// Sets the flag wait timeout.
    pub fn with_wait_timeout(mut self, t: Duration) -> Self {
        self.wait_timeout = t;
        self
    }

    /// Enables or disables the trace recorder.
    pub fn with_trace(mut self, on: bool) -> Self {
        self.trace = on;
        self
    }

    /// Sets the launch-time dim values (see [`LaunchConfig::dims`]).
    pub fn with_dims(mut self, dims: Vec<i64>) -> Self {
        self.dims = dims;
        self
    }

    /// Sets the matmul path (`None`: the detected one).
    pub fn with_matmul_path(mut self, p: Option<crate::matmul::MatmulPath>) -> Self {
        self.matmul_path = p;
        self
    }

    /// The matmul path this launch runs: the configured one, else the
    /// detected one.
    pub fn resolved_matmul_path(&self) -> crate::matmul::MatmulPath {
        self.matmul_path
            .unwrap_or_else(crate::matmul::detected_path)
    }

    /// Sets the number of Vector units per core.
    pub fn with_vector_sub_blocks(mut self, n: usize) -> Self {
        self.vector_sub_blocks = n;
        self
    }

    /// Checks `cores` in `1..=4096`, `vector_sub_blocks` in
    /// `1..=MAX_SUB_BLOCKS` and that the CPU supports `matmul_path`.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        if self.cores == 0 || self.cores > 4096 {
            return Err(RuntimeError::InvalidConfig(format!(
                "cores = {} is outside 1..=4096",
                self.cores
            )));
        }
        if self.host_cpus == Some(0) {
            return Err(RuntimeError::InvalidConfig(
                "host_cpus = 0: at least one unit must be able to run".into(),
            ));
        }
        if self.vector_sub_blocks == 0 || self.vector_sub_blocks > MAX_SUB_BLOCKS {
            return Err(RuntimeError::InvalidConfig(format!(
                "vector_sub_blocks = {} is outside 1..={MAX_SUB_BLOCKS}",
                self.vector_sub_blocks
            )));
        }
        if let Some(p) = self.matmul_path.filter(|p| !p.is_supported()) {
            return Err(RuntimeError::InvalidConfig(format!(
                "matmul path {p} is not supported by this CPU"
            )));
        }
        Ok(())
    }
}

impl Default for LaunchConfig {
    fn default() -> Self {
        LaunchConfig {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            vector_sub_blocks: 2,
            wait_timeout: Duration::from_secs(10),
            trace: false,
            poison_local: false,
            dims: Vec::new(),
            gm_access: crate::gm::GmAccess::Atomic,
            host_cpus: Some(std::thread::available_parallelism().map_or(1, |n| n.get())),
            schedule: Schedule::Auto,
            race_check: false,
            matmul_path: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = CoreConfig::default();
        assert_eq!(c, CoreConfig::for_tests());
        assert!(c.validate().is_ok());
        let too_many = CoreConfig {
            flag_ids: MAX_FLAG_IDS + 1,
            ..c
        };
        assert!(too_many.validate().is_err());
        let l = LaunchConfig::default();
        assert_eq!(l.vector_sub_blocks, 2);
        assert!(l.cores >= 1);
        assert!(l.validate().is_ok());
    }

    #[test]
    fn invalid_configs_are_errors() {
        let c = CoreConfig {
            l0a: 0,
            ..CoreConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("l0a"));
        assert!(LaunchConfig::default().with_cores(0).validate().is_err());
        assert!(
            LaunchConfig::default()
                .with_vector_sub_blocks(MAX_SUB_BLOCKS + 1)
                .validate()
                .is_err()
        );
    }
}
