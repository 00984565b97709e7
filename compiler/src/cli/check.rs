//! `amlac check FILE… [-D NAME=VALUE]…`: parse and check each file, print
//! every diagnostic to stderr; exit 0 when all files are clean, 1 otherwise
//! (including a file that cannot be read).

use std::path::PathBuf;

use clap::Args;

use crate::check::{Defines, check};
use crate::diag::{SourceFile, emit_stderr};

/// Arguments of `amlac check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The `.amla` files to check.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Bind a dim or const: `-D N=4096` (repeatable).
    #[arg(short = 'D', value_name = "NAME=VALUE", value_parser = super::parse_define)]
    pub defines: Vec<(String, String)>,
}

/// Runs the subcommand; returns the exit code.
pub fn run(args: &CheckArgs) -> u8 {
    let defines: Defines = args.defines.iter().cloned().collect();
    let mut failed = false;
    for path in &args.files {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: cannot read `{}`: {e}", path.display());
                failed = true;
                continue;
            }
        };
        let src = SourceFile::new(path.display().to_string(), text);
        if let Err(diags) = check(&src, &defines) {
            emit_stderr(&src, &diags);
            failed = true;
        }
    }
    u8::from(failed)
}
