//! Names of the emulated hardware: execution units, local buffers and pipes.
//!
//! Invariants: the `repr(u32)` codes of [`Buffer`] are part of the JIT ABI
//! (0 = GM, 1 = L1, 2 = L0A, 3 = L0B, 4 = L0C, 5 = UB) and never change.
//! Unit codes in `KernelCtx::unit` are 0 = Cube, 1 + s = Vector sub-block s.

use std::fmt;

/// One thread of an emulated core: the Cube (AIC) or a Vector unit (AIV).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnitKind {
    /// The Cube core (AIC).
    Cube,
    /// Vector core (AIV) number `n` (the sub-block) of the pair.
    Vector(u32),
}

impl UnitKind {
    /// The ABI code: 0 for the Cube, `1 + n` for Vector `n`.
    pub const fn code(self) -> u32 {
        match self {
            UnitKind::Cube => 0,
            UnitKind::Vector(n) => 1 + n,
        }
    }

    /// Decodes an ABI code.
    pub const fn from_code(code: u32) -> UnitKind {
        match code {
            0 => UnitKind::Cube,
            n => UnitKind::Vector(n - 1),
        }
    }
}

impl fmt::Display for UnitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnitKind::Cube => f.write_str("cube"),
            UnitKind::Vector(n) => write!(f, "vector{n}"),
        }
    }
}

/// A memory of the emulated core. GM is shared; the others are per core
/// (L1/L0A/L0B/L0C owned by the Cube, one UB per Vector unit).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Buffer {
    /// Global memory (host buffers), shared by all units.
    Gm = 0,
    /// L1: the Cube's operand staging buffer.
    L1 = 1,
    /// L0A: the Cube's left operand buffer.
    L0A = 2,
    /// L0B: the Cube's right operand buffer.
    L0B = 3,
    /// L0C: the Cube's f32 accumulator.
    L0C = 4,
    /// UB: a Vector unit's unified buffer.
    Ub = 5,
}

impl Buffer {
    /// Decodes a JIT ABI buffer code.
    pub const fn from_code(code: u32) -> Option<Buffer> {
        match code {
            0 => Some(Buffer::Gm),
            1 => Some(Buffer::L1),
            2 => Some(Buffer::L0A),
            3 => Some(Buffer::L0B),
            4 => Some(Buffer::L0C),
            5 => Some(Buffer::Ub),
            _ => None,
        }
    }

    /// Lower-case name (`gm`, `l1`, `l0a`, `l0b`, `l0c`, `ub`).
    pub const fn name(self) -> &'static str {
        match self {
            Buffer::Gm => "gm",
            Buffer::L1 => "l1",
            Buffer::L0A => "l0a",
            Buffer::L0B => "l0b",
            Buffer::L0C => "l0c",
            Buffer::Ub => "ub",
        }
    }

    /// Whether `unit` may access this buffer: GM by all, UB by Vector units,
    /// L1/L0A/L0B/L0C by the Cube.
    pub const fn owned_by(self, unit: UnitKind) -> bool {
        match self {
            Buffer::Gm => true,
            Buffer::Ub => matches!(unit, UnitKind::Vector(_)),
            _ => matches!(unit, UnitKind::Cube),
        }
    }
}

impl fmt::Display for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A pipe whose work the statistics count (msprof's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pipe {
    /// Matmuls on the Cube.
    Cube,
    /// L1 → L0A/L0B and other Cube-local copies.
    Mte1,
    /// GM → L1/L0/UB copies.
    Mte2,
    /// UB/L1 → GM copies (store or atomic add).
    Mte3,
    /// L0C → GM/L1 copies (dtype conversion, atomic add).
    FixPipe,
    /// Vector work: time in Vector entry code outside runtime calls, plus
    /// UB → UB copies and exponent rescales.
    Vector,
    /// Time blocked in flag waits (any unit).
    FlagWait,
    /// Flag sets (any unit).
    FlagSet,
}

impl Pipe {
    /// Every pipe, in a fixed order (the index order of statistics tables).
    pub const ALL: [Pipe; 8] = [
        Pipe::Cube,
        Pipe::Mte1,
        Pipe::Mte2,
        Pipe::Mte3,
        Pipe::FixPipe,
        Pipe::Vector,
        Pipe::FlagWait,
        Pipe::FlagSet,
    ];

    /// Position in [`Pipe::ALL`].
    pub const fn index(self) -> usize {
        match self {
            Pipe::Cube => 0,
            Pipe::Mte1 => 1,
            Pipe::Mte2 => 2,
            Pipe::Mte3 => 3,
            Pipe::FixPipe => 4,
            Pipe::Vector => 5,
            Pipe::FlagWait => 6,
            Pipe::FlagSet => 7,
        }
    }

    /// Lower-case name (`cube`, `mte1`, …, `flag_wait`, `flag_set`).
    pub const fn name(self) -> &'static str {
        match self {
            Pipe::Cube => "cube",
            Pipe::Mte1 => "mte1",
            Pipe::Mte2 => "mte2",
            Pipe::Mte3 => "mte3",
            Pipe::FixPipe => "fixpipe",
            Pipe::Vector => "vector",
            Pipe::FlagWait => "flag_wait",
            Pipe::FlagSet => "flag_set",
        }
    }

    /// The pipe a copy from `src` to `dst` runs on.
    pub const fn for_copy(src: Buffer, dst: Buffer) -> Pipe {
        match (src, dst) {
            (Buffer::Gm, _) => Pipe::Mte2,
            (Buffer::L0C, _) => Pipe::FixPipe,
            (Buffer::Ub, Buffer::Ub) => Pipe::Vector,
            (_, Buffer::Gm) => Pipe::Mte3,
            _ => Pipe::Mte1,
        }
    }
}

impl fmt::Display for Pipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_ownership() {
        for code in 0..6 {
            assert_eq!(Buffer::from_code(code).map(|b| b as u32), Some(code));
        }
        assert_eq!(Buffer::from_code(6), None);
        assert!(Buffer::L0A.owned_by(UnitKind::Cube));
        assert!(!Buffer::L0A.owned_by(UnitKind::Vector(0)));
        assert!(Buffer::Ub.owned_by(UnitKind::Vector(1)));
        assert!(!Buffer::Ub.owned_by(UnitKind::Cube));
        assert_eq!(
            UnitKind::from_code(UnitKind::Vector(1).code()),
            UnitKind::Vector(1)
        );
        assert_eq!(UnitKind::Vector(1).to_string(), "vector1");
        assert_eq!(Pipe::for_copy(Buffer::L0C, Buffer::Gm), Pipe::FixPipe);
        assert_eq!(Pipe::for_copy(Buffer::Gm, Buffer::L1), Pipe::Mte2);
        assert_eq!(Pipe::for_copy(Buffer::Ub, Buffer::Gm), Pipe::Mte3);
        assert_eq!(Pipe::for_copy(Buffer::L1, Buffer::L0A), Pipe::Mte1);
        for (i, p) in Pipe::ALL.iter().enumerate() {
            assert_eq!(p.index(), i);
        }
    }
}
