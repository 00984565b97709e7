//! The runtime's error type and the status codes JIT code sees.
//!
//! Invariants:
//! - Every failure is a [`RuntimeError`] value; nothing in the runtime panics
//!   on bad input.
//! - [`RuntimeError::status`] maps each error to a non-zero `i32` status (the
//!   constants in [`status`]); 0 always means success.

use std::time::Duration;

use crate::dtype::DType;
use crate::units::{Buffer, UnitKind};

/// Status codes returned by the `extern "C"` entry points and expected from
/// kernel entries. 0 is success; kernels may return any other non-zero value
/// of their own, which the launcher reports as [`RuntimeError::KernelStatus`].
pub mod status {
    /// Success.
    pub const OK: i32 = 0;
    /// A flag wait timed out.
    pub const TIMEOUT: i32 = 1;
    /// The launch was aborted because another unit failed.
    pub const ABORTED: i32 = 2;
    /// An access was outside a buffer.
    pub const OUT_OF_BOUNDS: i32 = 3;
    /// An argument was invalid (bad code, shape, dtype, flag id, …).
    pub const BAD_ARGUMENT: i32 = 4;
    /// A unit touched a buffer it does not own (e.g. the Cube and UB).
    pub const NOT_OWNED: i32 = 5;
    /// Local memory or host memory exhausted.
    pub const OUT_OF_MEMORY: i32 = 6;
    /// Anything else (panic caught, thread spawn failure, …).
    pub const INTERNAL: i32 = 7;
    /// The race checker found two unordered conflicting GM accesses.
    pub const RACE: i32 = 8;
}

/// Everything that can go wrong in the runtime.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuntimeError {
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The host allocator refused an allocation.
    #[error("host allocation of {bytes} bytes failed")]
    AllocFailed {
        /// Requested bytes.
        bytes: usize,
    },
    /// A local arena allocation does not fit.
    #[error(
        "{buffer} allocation of {requested} bytes does not fit: capacity {capacity} bytes, {used} already used"
    )]
    OutOfLocalMemory {
        /// The local buffer.
        buffer: Buffer,
        /// Bytes asked for.
        requested: usize,
        /// The buffer's capacity in bytes.
        capacity: usize,
        /// Bytes already allocated.
        used: usize,
    },
    /// An access (offset, rows × stride) reaches outside a buffer.
    #[error("{what}: elements {start}..{end} are outside {buffer} ({capacity} elements)")]
    OutOfBounds {
        /// What was being accessed (operation and operand).
        what: String,
        /// The buffer (for GM: its name and index).
        buffer: String,
        /// First element index touched.
        start: u64,
        /// One past the last element index touched.
        end: u64,
        /// Capacity in elements.
        capacity: u64,
    },
    /// A GM buffer index is not bound.
    #[error("GM buffer index {index} is not bound ({count} buffers)")]
    UnknownGmBuffer {
        /// The index asked for.
        index: u64,
        /// Buffers bound.
        count: u64,
    },
    /// A typed access used the wrong element type.
    #[error("buffer {buffer} holds {actual}, not {expected}")]
    DTypeMismatch {
        /// The buffer name.
        buffer: String,
        /// The type asked for.
        expected: DType,
        /// The type it holds.
        actual: DType,
    },
    /// A unit used a buffer it does not own.
    #[error("{unit} cannot access {buffer}")]
    NotOwned {
        /// The unit.
        unit: UnitKind,
        /// The buffer.
        buffer: Buffer,
    },
    /// An argument is invalid.
    #[error("bad argument: {0}")]
    BadArgument(String),
    /// A flag wait was not satisfied in time.
    #[error(
        "kernel `{kernel}`: {unit} of core {core} timed out after {timeout:?} waiting on flag {flag} (block {block}); meanwhile {peers}"
    )]
    FlagTimeout {
        /// Kernel name.
        kernel: String,
        /// Core index.
        core: u32,
        /// The waiting unit.
        unit: UnitKind,
        /// Flag id.
        flag: u32,
        /// The caller-supplied block / iteration number.
        block: u64,
        /// The timeout in force.
        timeout: Duration,
        /// What every other unit of the core was doing ("cube is running;
        /// vector1 waits on flag 2 (block 0)").
        peers: String,
    },
    /// A flag wait that can never be satisfied (the watchdog of
    /// [`crate::flags`]): the unit that must set it has finished, or every
    /// unit of the core is blocked.
    #[error(
        "kernel `{kernel}`: {unit} of core {core} waits on flag {flag} (block {block}) that will never be set: {reason}"
    )]
    FlagNeverSet {
        /// Kernel name.
        kernel: String,
        /// Core index.
        core: u32,
        /// The waiting unit.
        unit: UnitKind,
        /// Flag id.
        flag: u32,
        /// The caller-supplied block / iteration number.
        block: u64,
        /// Why, and what every other unit of the core is doing.
        reason: String,
    },
    /// Two units accessed the same GM elements, one of them writing, with no
    /// flag `set` → `wait` chain ordering them ([`crate::race`]).
    #[error(
        "data race on elements {start}..{end} of {buffer}: {first}, then {second}, not ordered by a flag; {flags}"
    )]
    Race {
        /// The GM buffer (index and name).
        buffer: String,
        /// First conflicting element.
        start: u64,
        /// One past the last conflicting element of the run.
        end: u64,
        /// The earlier access.
        first: Box<crate::race::RaceAccess>,
        /// The access that found the conflict.
        second: Box<crate::race::RaceAccess>,
        /// The flag state: what the second unit had seen of the first, and
        /// the core's pending flag counters.
        flags: String,
    },
    /// An access the checked mode (`--checked`) stopped: an index outside
    /// the tensor, tile or buffer it addresses.
    #[error(
        "kernel `{kernel}`: checked access failed on {unit} of core {core}: index {index} is outside 0..{bound} in `{op}`"
    )]
    CheckedAccess {
        /// Kernel name.
        kernel: String,
        /// Core index.
        core: u32,
        /// The unit.
        unit: UnitKind,
        /// The op's IR text (with its value id).
        op: String,
        /// The offending index (element or byte, as the op addresses).
        index: i64,
        /// The bound it must stay below.
        bound: i64,
    },
    /// A wait or call ended because another unit failed first.
    #[error("kernel `{kernel}`: {unit} of core {core} aborted because another unit failed")]
    Aborted {
        /// Kernel name.
        kernel: String,
        /// Core index.
        core: u32,
        /// The unit.
        unit: UnitKind,
    },
    /// A kernel entry returned a non-zero status without a runtime error.
    #[error(
        "kernel `{kernel}`: {unit} of core {core} returned status {code} on work item {work_item}"
    )]
    KernelStatus {
        /// Kernel name.
        kernel: String,
        /// Core index.
        core: u32,
        /// The unit.
        unit: UnitKind,
        /// Work item being run.
        work_item: u64,
        /// The status returned.
        code: i32,
    },
    /// A Rust kernel closure panicked (the panic was caught).
    #[error(
        "kernel `{kernel}`: {unit} of core {core} panicked on work item {work_item}: {message}"
    )]
    KernelPanicked {
        /// Kernel name.
        kernel: String,
        /// Core index.
        core: u32,
        /// The unit.
        unit: UnitKind,
        /// Work item being run.
        work_item: u64,
        /// The panic message.
        message: String,
    },
    /// A kernel-level error raised by Rust kernel code.
    #[error("kernel error: {0}")]
    Kernel(String),
    /// Something the runtime could not do (e.g. spawn a thread).
    #[error("internal runtime error: {0}")]
    Internal(String),
}

impl RuntimeError {
    /// The non-zero status code for this error.
    pub fn status(&self) -> i32 {
        use RuntimeError::*;
        match self {
            FlagTimeout { .. } | FlagNeverSet { .. } => status::TIMEOUT,
            Aborted { .. } => status::ABORTED,
            OutOfBounds { .. } | UnknownGmBuffer { .. } | CheckedAccess { .. } => {
                status::OUT_OF_BOUNDS
            }
            Race { .. } => status::RACE,
            BadArgument(_) | DTypeMismatch { .. } | InvalidConfig(_) => status::BAD_ARGUMENT,
            NotOwned { .. } => status::NOT_OWNED,
            OutOfLocalMemory { .. } | AllocFailed { .. } => status::OUT_OF_MEMORY,
            KernelStatus { code, .. } => *code,
            KernelPanicked { .. } | Kernel(_) | Internal(_) => status::INTERNAL,
        }
    }

    /// True for [`RuntimeError::Aborted`].
    pub fn is_aborted(&self) -> bool {
        matches!(self, RuntimeError::Aborted { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_parts() {
        let e = RuntimeError::OutOfLocalMemory {
            buffer: Buffer::L0A,
            requested: 70000,
            capacity: 65536,
            used: 0,
        };
        let s = e.to_string();
        assert!(
            s.contains("l0a") && s.contains("70000") && s.contains("65536"),
            "{s}"
        );
        assert_eq!(e.status(), status::OUT_OF_MEMORY);
        let t = RuntimeError::FlagTimeout {
            kernel: "mla".into(),
            core: 3,
            unit: UnitKind::Vector(1),
            flag: 5,
            block: 42,
            timeout: Duration::from_millis(50),
            peers: "cube is running".into(),
        };
        let s = t.to_string();
        assert!(
            s.contains("mla")
                && s.contains("vector1")
                && s.contains("flag 5")
                && s.contains("block 42")
                && s.contains("cube is running"),
            "{s}"
        );
        assert_eq!(t.status(), status::TIMEOUT);
    }

    #[test]
    fn watchdog_checked_and_race_errors_name_the_parts() {
        let n = RuntimeError::FlagNeverSet {
            kernel: "mla".into(),
            core: 1,
            unit: UnitKind::Cube,
            flag: 3,
            block: 7,
            reason: "vector0, which must set it, has finished".into(),
        };
        let s = n.to_string();
        for part in [
            "mla",
            "cube of core 1",
            "flag 3",
            "block 7",
            "vector0, which",
        ] {
            assert!(s.contains(part), "{part}: {s}");
        }
        assert_eq!(n.status(), status::TIMEOUT);
        let c = RuntimeError::CheckedAccess {
            kernel: "mla".into(),
            core: 0,
            unit: UnitKind::Vector(1),
            op: "vector: %x = extract %t[%i] : f32".into(),
            index: -1,
            bound: 16,
        };
        let s = c.to_string();
        for part in [
            "vector1 of core 0",
            "index -1 is outside 0..16",
            "%x = extract",
        ] {
            assert!(s.contains(part), "{part}: {s}");
        }
        assert_eq!(c.status(), status::OUT_OF_BOUNDS);
        let side = |unit, op: &str, kind| crate::race::RaceAccess {
            core: 0,
            unit,
            op: op.into(),
            kind,
            epoch: 2,
        };
        let r = RuntimeError::Race {
            buffer: "gm buffer 4 `ws`".into(),
            start: 8,
            end: 16,
            first: Box::new(side(UnitKind::Cube, "cube: store ws[..]", "write")),
            second: Box::new(side(
                UnitKind::Vector(0),
                "vector: %l = load ws[..]",
                "read",
            )),
            flags: "pending: none".into(),
        };
        let s = r.to_string();
        for part in [
            "8..16",
            "`ws`",
            "write by cube",
            "read by vector0",
            "pending: none",
        ] {
            assert!(s.contains(part), "{part}: {s}");
        }
        assert_eq!(r.status(), status::RACE);
    }
}
