//! The `amlac` command line.

use std::process::ExitCode;

/// Entry point of the `amlac` binary.
pub fn main() -> ExitCode {
    ExitCode::SUCCESS
}
