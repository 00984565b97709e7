//! `amlac compile FILE [-D NAME=VALUE]… [--emit WHAT] [-o FILE]`: compile
//! through the pass pipeline and print a stage.
//!
//! `--emit` takes `ast` (the parsed program), `hir` (the checked program),
//! `lowered` (the IR before any pass), `ir` (the IR after the pipeline, the
//! default), `cube` or `vector` (one function of it), `clif` or `asm` (the
//! JIT backend's Cranelift IR or machine code, for a fixed x86-64 SSE4.2
//! target so the text is the same on every host). `--print-after PASS`
//! (or `all`) writes the IR after that pass to stdout before the emitted
//! stage; `--disable-pass PASS` skips a pass; `--time-passes` and
//! `--explain` report on stderr.
//!
//! `--emit ast`, `hir` and `lowered` stop at their stage (no pass runs for
//! `lowered` unless `--print-after`, `--time-passes` or `--explain` asks for
//! the pipeline), so a later stage's error never hides them.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::check::Defines;
use crate::diag::{SourceFile, emit_stderr};
use crate::driver::{self, CompileError, CompileOptions};
use crate::ir::{Kernel, Unit};
use crate::passes::PrintAfter;
use crate::target::Target;

/// What `--emit` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Emit {
    /// The parsed program (syntax tree).
    Ast,
    /// The checked, typed program.
    Hir,
    /// The tile IR as lowering produced it, before any pass.
    Lowered,
    /// The tile IR after the pass pipeline.
    Ir,
    /// The Cube function of the final IR.
    Cube,
    /// The Vector function of the final IR.
    Vector,
    /// The Cranelift IR of both functions (fixed x86-64 SSE4.2 target).
    Clif,
    /// The machine code of both functions (fixed x86-64 SSE4.2 target).
    Asm,
}

/// Arguments of `amlac compile`.
#[derive(Debug, Args)]
pub struct CompileArgs {
    /// The `.amla` file.
    pub file: PathBuf,
    /// Bind a dim or const (`-D N=4096`), or set a compiler option
    /// (`-D PRELOAD=2`).
    #[arg(short = 'D', value_name = "NAME=VALUE", value_parser = super::parse_define)]
    pub defines: Vec<(String, String)>,
    /// The stage to print.
    #[arg(long, value_enum, default_value = "ir")]
    pub emit: Emit,
    /// Write the emitted stage to FILE instead of stdout (`-o -`: stdout).
    #[arg(short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print the IR after PASS (or `all`) to stdout.
    #[arg(long, value_name = "PASS")]
    pub print_after: Option<String>,
    /// Skip PASS (repeatable).
    #[arg(long, value_name = "PASS")]
    pub disable_pass: Vec<String>,
    /// Report each pass's run time on stderr.
    #[arg(long)]
    pub time_passes: bool,
    /// Report what each pass did, and why a near miss did not match, on stderr.
    #[arg(long)]
    pub explain: bool,
    /// Target description: a built-in name or a `.toml` path.
    #[arg(long, default_value = "ascend910b")]
    pub target: String,
}

/// Runs the subcommand; returns the exit code.
pub fn run(args: &CompileArgs) -> u8 {
    let src = match super::read_source(&args.file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let mut opts = match CompileOptions::new() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    opts.target = match Target::load(&args.target) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: target `{}`: {e}", args.target);
            return 1;
        }
    };
    opts.defines = args.defines.iter().cloned().collect::<Defines>();
    opts.pipeline.disabled = args.disable_pass.clone();
    opts.pipeline.time_passes = args.time_passes;
    if args.explain {
        opts.pipeline.explain = crate::passes::Explain::Record;
    }
    opts.pipeline.print_after = match args.print_after.as_deref() {
        None => PrintAfter::None,
        Some("all") => PrintAfter::All,
        Some(p) => PrintAfter::Pass(p.to_string()),
    };
    if args.emit == Emit::Ast {
        return match crate::check::parse(&src) {
            Ok(ast) => write_out(args, &format!("{ast:#?}\n")),
            Err(d) => {
                emit_stderr(&src, &d);
                1
            }
        };
    }
    // `--emit hir` and `--emit lowered` stop at their stage: a later stage's
    // error does not hide them.
    if args.emit == Emit::Hir {
        return match driver::check_with_options(&src, &opts) {
            Ok(hir) => write_out(args, &hir.to_string()),
            Err(e) => report_error(&src, e),
        };
    }
    if args.emit == Emit::Lowered
        && args.print_after.is_none()
        && !args.time_passes
        && !args.explain
    {
        return match driver::lower_source(&src, &opts) {
            Ok((_, lowered)) => write_out(args, &lowered.to_string()),
            Err(e) => report_error(&src, e),
        };
    }
    let c = match driver::compile(&src, &opts) {
        Ok(c) => c,
        Err(e) => return report_error(&src, e),
    };
    if args.explain {
        for n in &c.notes {
            eprintln!("{}: {}", n.pass, n.text);
        }
    }
    if args.time_passes {
        eprint!("{}", c.report.timings_text());
    }
    if !c.report.dumps.is_empty() && !super::print_stdout(&c.report.dumps_text()) {
        return 1;
    }
    let text = match args.emit {
        Emit::Ast | Emit::Hir => unreachable!("handled above"),
        Emit::Lowered => c.lowered.to_string(),
        Emit::Ir => c.ir.to_string(),
        Emit::Cube => only_func(&c.ir, Unit::Cube),
        Emit::Vector => only_func(&c.ir, Unit::Vector),
        Emit::Clif | Emit::Asm => {
            let opts = crate::codegen::CodegenOptions::default();
            let r = if args.emit == Emit::Clif {
                crate::codegen::emit_clif(&c.ir, &opts)
            } else {
                crate::codegen::emit_asm(&c.ir, &opts)
            };
            match r {
                Ok(t) => t,
                Err(e) => {
                    eprintln!(
                        "internal compiler error in codegen: {e}\nthis is a bug in amlac: please report it with the input file"
                    );
                    return 1;
                }
            }
        }
    };
    write_out(args, &text)
}

/// The kernel text with only the function of `unit` (the whole IR when the
/// kernel is not split, e.g. with `--disable-pass split`).
fn only_func(k: &Kernel, unit: Unit) -> String {
    if k.func(unit).is_none() {
        return k.to_string();
    }
    let mut one = k.clone();
    one.funcs.retain(|f| f.unit == unit);
    one.to_string()
}

fn write_out(args: &CompileArgs, text: &str) -> u8 {
    match &args.output {
        None => u8::from(!super::print_stdout(text)),
        Some(path) if path.as_os_str() == "-" => u8::from(!super::print_stdout(text)),
        Some(path) => match std::fs::write(path, text) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: cannot write `{}`: {e}", path.display());
                1
            }
        },
    }
}

/// Prints a compile error on stderr and returns the exit code (1).
pub(crate) fn report_error(src: &SourceFile, e: CompileError) -> u8 {
    match e {
        CompileError::Diagnostics(d) => emit_stderr(src, &d),
        CompileError::Option(m) => eprintln!("error: {m}"),
        CompileError::Pass(p @ crate::passes::PassError::UnknownPass { .. }) => {
            eprintln!("error: {p}")
        }
        CompileError::Pass(p) if p.is_user() => {
            emit_stderr(src, &[driver::pass_diagnostic(src, &p)])
        }
        CompileError::Pass(p) => {
            eprintln!("{p}\nthis is a bug in amlac: please report it with the input file")
        }
    }
    1
}
