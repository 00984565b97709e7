//! The differential fuzzer of the whole compiler (`amla::compiler::fuzz`):
//!
//! ```text
//! cargo run --release --example fuzz_compiler -- [CASES] [FIRST_SEED] [OPTIONS]
//!   --jobs N        worker processes (default 1; 2 only on an idle machine)
//!   --configs N     configurations per case, rotating over the 20 of the
//!                   full matrix (default 2; `all` or 20 for the full matrix)
//!   --limit SECS    deadline of one case (default 120)
//!   --findings FILE where the findings go (default target/fuzz-findings.txt)
//!   --no-grid-offset  leave grids starting above 0 out of the generator
//!   --print         print the program of FIRST_SEED and exit
//!   --explain       judge FIRST_SEED under each configuration of the full
//!                   matrix in turn, in this process, and print each verdict
//!   --file PATH     with --explain: judge the kernel in PATH instead (a
//!                   finding's source, minimised by hand)
//! ```
//!
//! Runs CASES (default 1000) programs from FIRST_SEED (default 0):
//! generated kernels and, every fourth case, mutated examples; each either
//! rejected by the checker or compiled, run and matched against the float64
//! interpreter. Every case runs in a worker process (this binary with the
//! hidden `--worker` option): a case past its deadline has its worker
//! killed and is recorded as a hang, a worker that dies (segfault, abort)
//! has its case recorded as a signal, and the run goes on at the next seed.
//! Prints every finding with its seed and a reproducer command, writes
//! them with their sources to the findings file, prints the summary, and
//! exits 1 when there was a finding.

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use amla::compiler::fuzz::workers::{DriveOptions, WorkerOptions, drive, worker};
use amla::compiler::fuzz::{Config, Features, Verdict, program, run_caught};

struct Args {
    cases: u64,
    first: u64,
    jobs: usize,
    per_case: usize,
    limit: u64,
    findings: std::path::PathBuf,
    features: Features,
    worker: bool,
    print: bool,
    explain: bool,
    file: Option<std::path::PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut a = Args {
        cases: 1000,
        first: 0,
        jobs: 1,
        per_case: 2,
        limit: 120,
        findings: root.join("target/fuzz-findings.txt"),
        features: Features::ALL,
        worker: false,
        print: false,
        explain: false,
        file: None,
    };
    let mut positional = 0;
    let mut it = std::env::args().skip(1);
    let num = |v: Option<String>, what: &str| -> Result<u64, String> {
        v.as_deref()
            .and_then(|s| s.parse().ok())
            .ok_or(format!("{what} takes a number"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--jobs" => a.jobs = num(it.next(), "--jobs")? as usize,
            "--configs" => {
                let v = it.next();
                a.per_case = if v.as_deref() == Some("all") {
                    usize::MAX
                } else {
                    num(v, "--configs")? as usize
                }
            }
            "--limit" => a.limit = num(it.next(), "--limit")?,
            "--findings" => a.findings = it.next().ok_or("--findings takes a path")?.into(),
            "--no-grid-offset" => a.features.grid_offset = false,
            "--worker" => a.worker = true,
            "--print" => a.print = true,
            "--explain" => a.explain = true,
            "--file" => a.file = Some(it.next().ok_or("--file takes a path")?.into()),
            s if !s.starts_with('-') && positional < 2 => {
                let v: u64 = s.parse().map_err(|_| format!("not a number: {s}"))?;
                if positional == 0 {
                    a.cases = v;
                } else {
                    a.first = v;
                }
                positional += 1;
            }
            s => return Err(format!("unknown argument `{s}`")),
        }
    }
    Ok(a)
}

fn examples() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dsl-examples");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("dsl-examples")
        .map(|e| e.expect("entry").path())
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("example"))
        .collect()
}

fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fuzz_compiler: {e}");
            std::process::exit(2);
        }
    };
    let examples = examples();
    if a.worker {
        let opts = WorkerOptions {
            examples,
            per_case: a.per_case,
            features: a.features,
        };
        worker(&opts, std::io::stdin().lock(), std::io::stdout().lock());
        return;
    }
    if a.print {
        let p = program(a.first, &examples, a.features);
        let d: Vec<String> = p
            .defines
            .iter()
            .map(|(n, v)| format!("-D {n}={v}"))
            .collect();
        println!("// seed {}  {}\n{}", a.first, d.join(" "), p.source);
        return;
    }
    if a.explain {
        let p = match &a.file {
            Some(f) => amla::compiler::fuzz::Program {
                source: std::fs::read_to_string(f)
                    .unwrap_or_else(|e| panic!("{}: {e}", f.display())),
                defines: Vec::new(),
                rounds_inside: false,
            },
            None => program(a.first, &examples, a.features),
        };
        for cfg in Config::all() {
            println!("{cfg}: {:?}", run_caught(&p, &[cfg], a.first));
        }
        return;
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut worker_args = vec![
        "--worker".to_string(),
        "--configs".into(),
        a.per_case.min(1000).to_string(),
    ];
    if !a.features.grid_offset {
        worker_args.push("--no-grid-offset".into());
    }
    let spawn = || {
        let mut c = Command::new(&exe);
        c.args(&worker_args);
        c
    };
    let mut file = std::fs::File::create(&a.findings)
        .unwrap_or_else(|e| panic!("{}: {e}", a.findings.display()));
    let configs = if a.per_case >= 1000 {
        "all".to_string()
    } else {
        a.per_case.to_string()
    };
    let mut on_verdict = |seed: u64, v: &Verdict, s: &amla::compiler::fuzz::workers::Summary| {
        if let Verdict::Finding(k, m) = v {
            let p = program(seed, &examples, a.features);
            let d: Vec<String> = p
                .defines
                .iter()
                .map(|(n, v)| format!("-D {n}={v}"))
                .collect();
            let repro = format!(
                "cargo run --release --example fuzz_compiler -- 1 {seed} --configs {configs}{}",
                if a.features.grid_offset {
                    ""
                } else {
                    " --no-grid-offset"
                }
            );
            println!(
                "FINDING seed {seed} [{}]: {m}\n  reproduce: {repro}",
                k.name()
            );
            let _ = writeln!(
                file,
                "== seed {seed} [{}]\n{m}\nreproduce: {repro}\nprint: {repro} --print\ndefines: {}\n{}\n",
                k.name(),
                d.join(" "),
                p.source
            );
            let _ = file.flush();
        }
        if s.judged.is_multiple_of(250) {
            eprintln!("{s}");
        }
    };
    let opts = DriveOptions {
        first: a.first,
        cases: a.cases,
        jobs: a.jobs,
        limit: Duration::from_secs(a.limit),
    };
    let summary = drive(&opts, &spawn, &mut on_verdict).expect("worker processes");
    println!(
        "seeds {}..{} ({} configurations per case, {} jobs): {summary}",
        a.first,
        a.first + a.cases,
        configs,
        a.jobs
    );
    println!("findings: {}", a.findings.display());
    std::process::exit(i32::from(summary.finding_count() > 0));
}
