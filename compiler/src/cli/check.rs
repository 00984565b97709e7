//! `amlac check FILE… [-D NAME=VALUE]…`: parse and check each file, print
//! every diagnostic to stderr; exit 0 when all files are clean, 1 otherwise
//! (including a file that cannot be read). Compiler options given as `-D`
//! (`PRELOAD`, `RESCALE`, `COMPENSATE`) are validated and accepted, as by
//! every other command.

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
    let mut opts = match crate::driver::CompileOptions::new() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    opts.defines = args.defines.iter().cloned().collect::<Defines>();
    if let Err(e) = crate::driver::take_option_defines(&mut opts) {
        eprintln!("error: {e}");
        return 1;
    }
    let defines = opts.defines;
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
