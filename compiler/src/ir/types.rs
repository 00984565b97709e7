//! Types of IR values: scalars and tiles, with the buffer a tile lives in.
//!
//! Invariants:
//! - a tile's shape is fully known at compile time (the checker refuses tiles
//!   sized by unbound dims); only GM tensors ([`super::Tensor`]) may have
//!   symbolic dims;
//! - `Space::Any` means "not placed yet": it is legal only before
//!   `plan-memory`; after it every tile names a buffer of the target.

use std::fmt;

/// Element types.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// bfloat16.
    Bf16,
    /// IEEE half.
    F16,
    /// IEEE single.
    F32,
    /// 32-bit signed integer (indices, bit patterns).
    I32,
    /// Predicate (masks); never stored in GM.
    Bool,
}

impl DType {
    /// All dtypes, in text order.
    pub const ALL: [DType; 5] = [DType::Bf16, DType::F16, DType::F32, DType::I32, DType::Bool];

    /// The name used in the textual IR and the language.
    pub fn name(self) -> &'static str {
        match self {
            DType::Bf16 => "bf16",
            DType::F16 => "f16",
            DType::F32 => "f32",
            DType::I32 => "i32",
            DType::Bool => "bool",
        }
    }
    /// Parses a dtype name.
    pub fn from_name(s: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == s)
    }
    /// Bytes per element in a buffer (`bool` masks take one byte).
    pub fn bytes(self) -> u64 {
        match self {
            DType::Bf16 | DType::F16 => 2,
            DType::F32 | DType::I32 => 4,
            DType::Bool => 1,
        }
    }
    /// True for bf16, f16 and f32.
    pub fn is_float(self) -> bool {
        matches!(self, DType::Bf16 | DType::F16 | DType::F32)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a tile lives. Names follow the Ascend AI core (see
/// `targets/ascend910b.toml`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Space {
    /// Not placed yet (before `plan-memory`).
    Any,
    /// Global memory, shared by all cores.
    Gm,
    /// The Cube's L1 staging buffer.
    L1,
    /// The Cube's left-operand buffer.
    L0A,
    /// The Cube's right-operand buffer.
    L0B,
    /// The Cube's f32 accumulator.
    L0C,
    /// A Vector unit's unified buffer.
    Ub,
}

impl Space {
    /// All spaces, in text order.
    pub const ALL: [Space; 7] = [
        Space::Any,
        Space::Gm,
        Space::L1,
        Space::L0A,
        Space::L0B,
        Space::L0C,
        Space::Ub,
    ];

    /// The name used in the textual IR.
    pub fn name(self) -> &'static str {
        match self {
            Space::Any => "any",
            Space::Gm => "gm",
            Space::L1 => "l1",
            Space::L0A => "l0a",
            Space::L0B => "l0b",
            Space::L0C => "l0c",
            Space::Ub => "ub",
        }
    }
    /// Parses a space name.
    pub fn from_name(s: &str) -> Option<Space> {
        Space::ALL.into_iter().find(|x| x.name() == s)
    }
}

impl fmt::Display for Space {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The type of a tile value: dtype, static shape, buffer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TileType {
    /// Element type.
    pub dtype: DType,
    /// Extent of each dim, outermost first; never empty (a scalar is
    /// [`Type::Scalar`]).
    pub shape: Vec<u64>,
    /// The buffer the tile lives in.
    pub space: Space,
}

impl TileType {
    /// Number of elements.
    pub fn elems(&self) -> u64 {
        self.shape.iter().product()
    }
    /// Size in bytes.
    pub fn bytes(&self) -> u64 {
        self.elems() * self.dtype.bytes()
    }
    /// Size in bytes, `None` when it does not fit in `u64` (lowering checks
    /// every tile with this before any pass computes [`TileType::bytes`]).
    pub fn checked_bytes(&self) -> Option<u64> {
        self.shape
            .iter()
            .try_fold(self.dtype.bytes(), |acc, &d| acc.checked_mul(d))
    }
    /// Rows and columns when viewed as a matrix: the last dim is the columns,
    /// all others fold into rows.
    pub fn rows_cols(&self) -> (u64, u64) {
        let cols = *self.shape.last().unwrap_or(&1);
        let rows = self.shape[..self.shape.len().saturating_sub(1)]
            .iter()
            .product();
        (rows, cols)
    }
}

/// The type of an IR value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Type {
    /// A scalar held in a register (index math, loop variables, constants).
    Scalar(DType),
    /// A tile.
    Tile(TileType),
}

impl Type {
    /// A tile type.
    pub fn tile(dtype: DType, shape: Vec<u64>, space: Space) -> Type {
        Type::Tile(TileType {
            dtype,
            shape,
            space,
        })
    }
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Type::Scalar(d) => *d,
            Type::Tile(t) => t.dtype,
        }
    }
    /// The tile type, if this is a tile.
    pub fn as_tile(&self) -> Option<&TileType> {
        match self {
            Type::Tile(t) => Some(t),
            Type::Scalar(_) => None,
        }
    }
    /// The shape: empty for a scalar.
    pub fn shape(&self) -> &[u64] {
        match self {
            Type::Scalar(_) => &[],
            Type::Tile(t) => &t.shape,
        }
    }
    /// The same type with another dtype.
    pub fn with_dtype(&self, dtype: DType) -> Type {
        match self {
            Type::Scalar(_) => Type::Scalar(dtype),
            Type::Tile(t) => Type::Tile(TileType { dtype, ..t.clone() }),
        }
    }
    /// The same type in another space (scalars are unchanged).
    pub fn with_space(&self, space: Space) -> Type {
        match self {
            Type::Scalar(d) => Type::Scalar(*d),
            Type::Tile(t) => Type::Tile(TileType { space, ..t.clone() }),
        }
    }
}

/// Text form: `i32`, `f32[128, 512] gm`. Unplaced tiles omit the space.
impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::Scalar(d) => write!(f, "{d}"),
            Type::Tile(t) => {
                write!(f, "{}[", t.dtype)?;
                for (i, d) in t.shape.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{d}")?;
                }
                f.write_str("]")?;
                if t.space != Space::Any {
                    write!(f, " {}", t.space)?;
                }
                Ok(())
            }
        }
    }
}

/// A dim of a GM tensor: a constant or a symbolic kernel dim.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    /// Known extent.
    Const(u64),
    /// A kernel dim ([`super::DimId`]) bound at launch.
    Sym(super::DimId),
}
