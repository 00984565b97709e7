//! `amlac`: the amla command-line driver.

fn main() -> std::process::ExitCode {
    amla_compiler::cli::main()
}
