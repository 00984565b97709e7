//! The `amlac` command line. One file per subcommand: adding one is adding a
//! [`Command`] variant, its file, and a line in [`run`].
//!
//! Exit codes (all subcommands): 0 success; 1 the input has errors
//! (diagnostics on stderr) or a file cannot be read; 2 usage errors
//! (unknown flag, malformed `-D`), as clap reports them.

mod bench;
mod bench_flash_mla;
mod check;
mod compile;
mod flash_mla;
mod numerics;
mod progress;
mod run;
mod simulate;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `amlac`: the amla kernel compiler.
#[derive(Debug, Parser)]
#[command(name = "amlac", version, about = "The amla attention-kernel compiler")]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse and check `.amla` files; exit 1 with diagnostics on bad input.
    Check(check::CheckArgs),
    /// Compile through the pass pipeline and print a stage (IR by default).
    Compile(compile::CompileArgs),
    /// JIT-run a kernel on the emulated AI core; `--check` compares with float64.
    Run(run::RunArgs),
    /// Errors of FlashAttention and every AMLA rescale variant against float64.
    Numerics(numerics::NumericsArgs),
    /// Predict time, FLOPS utilisation and the bound pipe on a target (cost model).
    Simulate(simulate::SimulateArgs),
    /// Compile latency, kernel time, GFLOP/s and FLOPS utilisation against the machine's peak.
    Bench(bench::BenchArgs),
    /// FlashMLA's `flash_mla_with_kvcache` on `.npy` tensors, with split-KV (`--explain-schedule`).
    FlashMla(flash_mla::FlashMlaArgs),
}

/// Runs `amlac` with `args` (the first is the program name) and returns the
/// process exit code. Testable in-process.
pub fn run<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are "errors" that exit 0.
            let _ = e.print();
            return u8::try_from(e.exit_code()).unwrap_or(2);
        }
    };
    match cli.command {
        Command::Check(a) => check::run(&a),
        Command::Compile(a) => compile::run(&a),
        Command::Run(a) => run::run(&a),
        Command::Numerics(a) => numerics::run(&a),
        Command::Simulate(a) => simulate::run(&a),
        Command::Bench(a) => bench::run(&a),
        Command::FlashMla(a) => flash_mla::run(&a),
    }
}

/// Entry point of the `amlac` binary.
pub fn main() -> ExitCode {
    ExitCode::from(run(std::env::args_os()))
}

/// Writes `text` to stdout. A closed pipe (`amlac … | head`) is not an
/// error; any other write failure is reported. Returns false on failure.
pub(crate) fn print_stdout(text: &str) -> bool {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => true,
        Err(e) => {
            eprintln!("error: cannot write to stdout: {e}");
            false
        }
    }
}

/// Parses one `-D NAME=VALUE` (clap value parser shared by subcommands).
pub(crate) fn parse_define(s: &str) -> Result<(String, String), String> {
    crate::check::Defines::parse_arg(s)
}

/// Reads the `.amla` file a subcommand was given, named by its path as typed.
fn read_source(path: &std::path::Path) -> Result<crate::diag::SourceFile, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    Ok(crate::diag::SourceFile::new(
        path.display().to_string(),
        text,
    ))
}
