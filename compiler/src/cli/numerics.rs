//! `amlac numerics FILE [-D NAME=VALUE]… [--json]`: the fidelity report.
//! Runs the kernel over several input distributions with FlashAttention
//! (`mul-to-add` disabled) and every AMLA rescale variant, and prints the
//! errors of each against float64 (see `amla_compiler::numerics::fidelity`
//! and `docs/NUMERICS.md`).
//!
//! Exit codes: 0 the report was made (a variant that fails to compile or
//! run is a line of the report, not an exit code); 1 the file cannot be
//! read or the kernel has no reference; 2 usage errors.

use std::path::PathBuf;

use clap::Args;

use crate::check::Defines;
use crate::diag::SourceFile;
use crate::driver::CompileOptions;
use crate::numerics::fidelity::{Distribution, Request, Variant, measure, table};
use crate::run::exec::RunConfig;

/// Arguments of `amlac numerics`.
#[derive(Debug, Args)]
pub struct NumericsArgs {
    /// The `.amla` file (needs a `// @reference:` line).
    pub file: PathBuf,
    /// Bind a dim or const (`-D H=16`); `RESCALE`/`COMPENSATE` are set per column.
    #[arg(short = 'D', value_name = "NAME=VALUE", value_parser = super::parse_define)]
    pub defines: Vec<(String, String)>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Seed of the inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Only these distributions (repeatable): normal, large_range, outliers,
    /// near_constant, long.
    #[arg(long, value_name = "NAME")]
    pub only: Vec<String>,
    /// `N` of the `long` distribution.
    #[arg(long, default_value_t = 32768)]
    pub long_n: u64,
    /// Emulated AI cores (default: the machine's CPUs).
    #[arg(long)]
    pub cores: Option<usize>,
}

/// Runs the subcommand; returns the exit code.
pub fn run(args: &NumericsArgs) -> u8 {
    let text = match std::fs::read_to_string(&args.file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read `{}`: {e}", args.file.display());
            return 1;
        }
    };
    let src = SourceFile::new(args.file.display().to_string(), text);
    let mut distributions = Vec::new();
    for name in &args.only {
        match Distribution::parse(name) {
            Some(d) => distributions.push(d),
            None => {
                let known: Vec<&str> = Distribution::ALL.iter().map(|d| d.name()).collect();
                eprintln!(
                    "error: --only {name}: unknown distribution (known: {})",
                    known.join(", ")
                );
                return 2;
            }
        }
    }
    if distributions.is_empty() {
        distributions = Distribution::ALL.to_vec();
    }
    if args
        .defines
        .iter()
        .any(|(n, _)| n == "RESCALE" || n == "COMPENSATE")
    {
        eprintln!("error: `amlac numerics` sets RESCALE and COMPENSATE itself, one column each");
        return 2;
    }
    let mut compile = match CompileOptions::new() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    compile.defines = args.defines.iter().cloned().collect::<Defines>();
    let mut run = RunConfig::default();
    if let Some(c) = args.cores {
        if c == 0 {
            eprintln!("error: --cores 0: need at least one core");
            return 2;
        }
        run.cores = c;
    }
    let req = Request {
        compile,
        seed: args.seed,
        distributions,
        variants: Variant::all(),
        long_n: args.long_n,
        run,
    };
    let rows = match measure(&src, &req, &mut |s| eprintln!("{s}")) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {}: {e}", src.name);
            return 1;
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&rows) {
            Ok(j) => println!("{j}"),
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        }
    } else {
        print!("{}", table(&rows));
    }
    0
}
