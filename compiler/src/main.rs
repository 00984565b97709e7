//! `amlac`: the amla command-line driver.

/// Counts heap allocations so `amlac bench` can report allocations per launch.
#[global_allocator]
static ALLOC: amla_compiler::run::bench::CountingAlloc = amla_compiler::run::bench::CountingAlloc;

fn main() -> std::process::ExitCode {
    amla_compiler::cli::main()
}
