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
use crate::driver::CompileOptions;
use crate::numerics::fidelity::{Distribution, Request, Variant, measure, table};
use crate::run::exec::RunConfig;

/// `N` of `--grid`.
pub const GRID_N: [u64; 11] = [1, 2, 3, 5, 9, 16, 127, 128, 129, 1000, 4096];
/// `H` of `--grid`.
pub const GRID_H: [u64; 2] = [16, 128];

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
    /// A grid of `N` values (comma-separated, `--n 1,2,3,5`): one group of
    /// rows per value (crossed with `--h`).
    #[arg(long = "n", value_name = "LIST", value_delimiter = ',')]
    pub n: Vec<u64>,
    /// A grid of `H` values (comma-separated).
    #[arg(long = "h", value_name = "LIST", value_delimiter = ',')]
    pub h: Vec<u64>,
    /// The grid: N in {1, 2, 3, 5, 9, 16, 127, 128, 129, 1000,
    /// 4096} crossed with H in {16, 128} (unless `--n`/`--h` are given).
    #[arg(long)]
    pub grid: bool,
    /// Only these variants (repeatable): flash, ceil, ceil+comp, nearest…
    #[arg(long, value_name = "LABEL")]
    pub variant: Vec<String>,
    /// Emulated AI cores (default: the machine's CPUs).
    #[arg(long)]
    pub cores: Option<usize>,
}

/// Runs the subcommand; returns the exit code.
pub fn run(args: &NumericsArgs) -> u8 {
    let src = match super::read_source(&args.file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
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
    let mut variants = Variant::all();
    if !args.variant.is_empty() {
        for v in &args.variant {
            if !variants.iter().any(|x| &x.label() == v) {
                let known: Vec<String> = variants.iter().map(|x| x.label()).collect();
                eprintln!(
                    "error: --variant {v}: unknown variant (known: {})",
                    known.join(", ")
                );
                return 2;
            }
        }
        variants.retain(|x| args.variant.contains(&x.label()));
    }
    let (mut ns, mut hs) = (args.n.clone(), args.h.clone());
    if args.grid {
        if ns.is_empty() {
            ns = GRID_N.to_vec();
        }
        if hs.is_empty() {
            hs = GRID_H.to_vec();
        }
    }
    let mut grid = Vec::new();
    for h in hs
        .iter()
        .copied()
        .map(Some)
        .chain(hs.is_empty().then_some(None))
    {
        for n in ns
            .iter()
            .copied()
            .map(Some)
            .chain(ns.is_empty().then_some(None))
        {
            let mut point = Vec::new();
            if let Some(h) = h {
                point.push(("H".to_string(), h.to_string()));
            }
            if let Some(n) = n {
                point.push(("N".to_string(), n.to_string()));
            }
            grid.push(point);
        }
    }
    if args
        .defines
        .iter()
        .any(|(k, _)| (k == "N" && !ns.is_empty()) || (k == "H" && !hs.is_empty()))
    {
        eprintln!("error: `-D N`/`-D H` and the `--n`/`--h`/`--grid` lists both set the same dim");
        return 2;
    }
    let req = Request {
        compile,
        seed: args.seed,
        distributions,
        variants,
        long_n: args.long_n,
        grid,
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
