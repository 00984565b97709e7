//! Stable error codes. A code, once published, keeps its meaning forever;
//! new kinds of error get new codes at the end. `docs/ERRORS.md` lists them
//! all with an example, and `tests/ui/` holds a broken program for each.

use std::fmt;

/// Every error the front end reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Code {
    /// E0001: the text does not follow the grammar.
    Syntax,
    /// E0002: brackets or expressions nested deeper than the limit.
    TooDeep,
    /// E0003: an integer literal does not fit in 64 bits.
    IntTooLarge,
    /// E0004: a name that no scope defines.
    UnknownName,
    /// E0005: a name declared twice where that is not allowed.
    DuplicateName,
    /// E0006: a call to a function that does not exist.
    UnknownFunction,
    /// E0007: a built-in called with the wrong number of arguments.
    WrongArity,
    /// E0008: a `-D NAME=VALUE` whose value is not valid for NAME.
    BadDefineValue,
    /// E0009: a `-D NAME=VALUE` naming neither a dim nor a const.
    UnknownDefine,
    /// E0010: a value that must be known at compile time is not.
    NotConstant,
    /// E0011: a `dim` declaration for a name that is no dim of the signature.
    DimNotInSignature,
    /// E0012: constant arithmetic failed (overflow, division by zero, a
    /// dim that is not positive).
    ConstEval,
    /// E0013: the body has no `parallel`.
    MissingParallel,
    /// E0014: more than one `parallel`, or one nested inside another statement.
    MisplacedParallel,
    /// E0015: a statement at the top level, outside the `parallel`.
    OutsideParallel,
    /// E0016: a loop `step` that is not a positive compile-time integer.
    BadStep,
    /// E0017: operands of different dtypes.
    DtypeMismatch,
    /// E0018: shapes that do not broadcast together or do not match.
    ShapeMismatch,
    /// E0019: matmul inner dims differ.
    MatmulInnerDim,
    /// E0020: matmul operands that are not rank-2 bf16/f16 tiles of one dtype.
    MatmulOperand,
    /// E0021: an operator or function applied to a dtype it is not defined on.
    BadOperandDtype,
    /// E0022: `where` with a condition that is not `bool`.
    WhereCondition,
    /// E0023: `reshape` to a different number of elements.
    ReshapeCount,
    /// E0024: an operation on a value of the wrong rank (too many indices,
    /// transpose of a non-matrix, ...).
    BadRank,
    /// E0025: an index or loop bound that is not an `i32` scalar.
    NotIndex,
    /// E0026: a slice `a..b` whose length is not a compile-time constant.
    SliceLength,
    /// E0027: an index or slice out of bounds for every value of its
    /// loop variables.
    OutOfBounds,
    /// E0028: a tile whose size depends on a dim open until launch.
    UnboundTileDim,
    /// E0029: assignment to something that is not a `var`.
    AssignToImmutable,
    /// E0030: an output read in an expression.
    ReadOutput,
    /// E0031: a store into something that is not an output.
    StoreToNonOutput,
    /// E0032: a parameter type that is not allowed (a `bool` tensor).
    BadParamType,
    /// E0033: a parameter dim that is neither an integer nor a name.
    BadParamDim,
    /// E0034: a tile does not fit the buffer the target gives it.
    TileDoesNotFit,
    /// E0035: the passes cannot schedule the kernel as written.
    Unschedulable,
    /// E0036: a paged-cache read whose page index contradicts the page dim.
    PageIndex,
}

impl Code {
    /// Every code, in numeric order.
    pub const ALL: [Code; 36] = [
        Code::Syntax,
        Code::TooDeep,
        Code::IntTooLarge,
        Code::UnknownName,
        Code::DuplicateName,
        Code::UnknownFunction,
        Code::WrongArity,
        Code::BadDefineValue,
        Code::UnknownDefine,
        Code::NotConstant,
        Code::DimNotInSignature,
        Code::ConstEval,
        Code::MissingParallel,
        Code::MisplacedParallel,
        Code::OutsideParallel,
        Code::BadStep,
        Code::DtypeMismatch,
        Code::ShapeMismatch,
        Code::MatmulInnerDim,
        Code::MatmulOperand,
        Code::BadOperandDtype,
        Code::WhereCondition,
        Code::ReshapeCount,
        Code::BadRank,
        Code::NotIndex,
        Code::SliceLength,
        Code::OutOfBounds,
        Code::UnboundTileDim,
        Code::AssignToImmutable,
        Code::ReadOutput,
        Code::StoreToNonOutput,
        Code::BadParamType,
        Code::BadParamDim,
        Code::TileDoesNotFit,
        Code::Unschedulable,
        Code::PageIndex,
    ];

    /// The stable number: `E0001` is 1.
    pub fn number(self) -> u32 {
        // `ALL` is in declaration order, so the position is the number.
        Code::ALL
            .iter()
            .position(|&c| c == self)
            .map_or(0, |i| i as u32 + 1)
    }

    /// A one-line description.
    pub fn description(self) -> &'static str {
        match self {
            Code::Syntax => "syntax error",
            Code::TooDeep => "nesting too deep",
            Code::IntTooLarge => "integer literal too large",
            Code::UnknownName => "unknown name",
            Code::DuplicateName => "duplicate name",
            Code::UnknownFunction => "unknown function",
            Code::WrongArity => "wrong number of arguments",
            Code::BadDefineValue => "invalid -D value",
            Code::UnknownDefine => "-D names neither a dim nor a const",
            Code::NotConstant => "not a compile-time constant",
            Code::DimNotInSignature => "dim is not in the signature",
            Code::ConstEval => "constant evaluation failed",
            Code::MissingParallel => "missing `parallel`",
            Code::MisplacedParallel => "misplaced `parallel`",
            Code::OutsideParallel => "statement outside `parallel`",
            Code::BadStep => "step is not a positive compile-time integer",
            Code::DtypeMismatch => "dtype mismatch",
            Code::ShapeMismatch => "shape mismatch",
            Code::MatmulInnerDim => "matmul inner dims differ",
            Code::MatmulOperand => "bad matmul operand",
            Code::BadOperandDtype => "operation not defined on this dtype",
            Code::WhereCondition => "`where` condition is not bool",
            Code::ReshapeCount => "reshape changes the element count",
            Code::BadRank => "wrong rank",
            Code::NotIndex => "expected an i32 scalar",
            Code::SliceLength => "slice length is not a compile-time constant",
            Code::OutOfBounds => "index out of bounds",
            Code::UnboundTileDim => "tile size not known at compile time",
            Code::AssignToImmutable => "assignment to a non-`var`",
            Code::ReadOutput => "read of an output",
            Code::StoreToNonOutput => "store to a non-output",
            Code::BadParamType => "invalid parameter type",
            Code::BadParamDim => "invalid parameter dim",
            Code::TileDoesNotFit => "tile does not fit its buffer",
            Code::Unschedulable => "kernel cannot be scheduled",
            Code::PageIndex => "page index contradicts the cache's page size",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "E{:04}", self.number())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_dense_and_stable() {
        assert_eq!(Code::Syntax.to_string(), "E0001");
        assert_eq!(Code::BadParamDim.to_string(), "E0033");
        for (i, c) in Code::ALL.iter().enumerate() {
            assert_eq!(c.number(), i as u32 + 1);
        }
    }
}
