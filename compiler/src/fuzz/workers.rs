//! The fuzz driver: cases run in worker processes, so that a hang or a
//! crash costs one case, not the run.
//!
//! A worker ([`worker`]) reads seeds from its stdin, one a line, judges
//! each ([`super::run_caught`]) and writes one verdict line per seed to its
//! stdout:
//!
//! ```text
//! @@fuzz 42 passed
//! @@fuzz 43 refused tile v12: f32[4096, 64] needs 1048576 bytes but UB holds less
//! @@fuzz 44 finding mismatch -D PRELOAD=1 --cores 3: output `o`: element 3: …
//! ```
//!
//! (text before the `@@fuzz` prefix and lines without it are ignored, so a
//! worker may be a test binary that prints its own lines). The driver ([`drive`]) keeps
//! `jobs` workers busy, one case each, and gives every case a deadline.
//! A worker whose case passes it is killed and the case recorded as a
//! [`Kind::Hang`]; a worker that dies (a signal such as SIGSEGV or SIGABRT,
//! or an exit) has its case recorded as a [`Kind::Signal`]. Either way a
//! new worker starts at the next seed.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{Features, Kind, Verdict, configs_for, program, run_caught};

/// The prefix of a verdict line.
pub const PREFIX: &str = "@@fuzz ";

/// Test hooks of a worker: seeds at which it misbehaves on purpose, so that
/// the driver's handling of hangs and crashes can be tested.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Seeds whose case sleeps forever.
    pub hang: Vec<u64>,
    /// Seeds whose case aborts the process (SIGABRT).
    pub abort: Vec<u64>,
}

impl Faults {
    /// Reads `AMLA_FUZZ_FAULTS` (`hang=3,abort=5,abort=9`); empty when unset.
    pub fn from_env() -> Faults {
        let mut f = Faults::default();
        let v = std::env::var("AMLA_FUZZ_FAULTS").unwrap_or_default();
        for item in v.split(',').filter(|s| !s.is_empty()) {
            match item.split_once('=') {
                Some(("hang", s)) => f.hang.extend(s.parse::<u64>().ok()),
                Some(("abort", s)) => f.abort.extend(s.parse::<u64>().ok()),
                _ => {}
            }
        }
        f
    }
}

/// One line of the worker protocol for `seed`'s verdict `v`.
pub fn verdict_line(seed: u64, v: &Verdict) -> String {
    // A message is one line: newlines become `\n`.
    let one = |s: &str| s.replace('\\', "\\\\").replace('\n', "\\n");
    match v {
        Verdict::Passed => format!("{PREFIX}{seed} passed"),
        Verdict::Rejected => format!("{PREFIX}{seed} rejected"),
        Verdict::Refused(m) => format!("{PREFIX}{seed} refused {}", one(m)),
        Verdict::Finding(k, m) => format!("{PREFIX}{seed} finding {} {}", k.name(), one(m)),
    }
}

/// Parses a [`verdict_line`]: the seed and the verdict.
pub fn parse_verdict_line(line: &str) -> Option<(u64, Verdict)> {
    // The prefix may follow other output on the same line (a test
    // harness's `test NAME ... `).
    let rest = &line[line.find(PREFIX)? + PREFIX.len()..];
    let (seed, rest) = rest.split_once(' ')?;
    let seed = seed.parse().ok()?;
    let (tag, msg) = rest.split_once(' ').unwrap_or((rest, ""));
    let unone = |s: &str| {
        let mut out = String::new();
        let mut it = s.chars();
        while let Some(c) = it.next() {
            if c == '\\' {
                match it.next() {
                    Some('n') => out.push('\n'),
                    Some(o) => out.push(o),
                    None => {}
                }
            } else {
                out.push(c);
            }
        }
        out
    };
    let v = match tag {
        "passed" => Verdict::Passed,
        "rejected" => Verdict::Rejected,
        "refused" => Verdict::Refused(unone(msg)),
        "finding" => {
            let (k, m) = msg.split_once(' ').unwrap_or((msg, ""));
            Verdict::Finding(Kind::from_name(k)?, unone(m))
        }
        _ => return None,
    };
    Some((seed, v))
}

/// What a worker judges.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// The example texts the mutated cases start from.
    pub examples: Vec<String>,
    /// Configurations per case ([`configs_for`]).
    pub per_case: usize,
    /// Constructs the generator may draw.
    pub features: Features,
}

/// The worker loop: a seed per line of `input`, a verdict line per seed on
/// `output` (flushed at once).
pub fn worker(opts: &WorkerOptions, input: impl BufRead, mut output: impl Write) {
    let faults = Faults::from_env();
    // Panics are caught and reported as findings; their default message
    // on stderr would only repeat it.
    std::panic::set_hook(Box::new(|_| {}));
    for line in input.lines() {
        let Ok(line) = line else { break };
        let Ok(seed) = line.trim().parse::<u64>() else {
            continue;
        };
        if faults.hang.contains(&seed) {
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        if faults.abort.contains(&seed) {
            std::process::abort();
        }
        let p = program(seed, &opts.examples, opts.features);
        let v = run_caught(&p, &configs_for(seed, opts.per_case), seed);
        if writeln!(output, "{}", verdict_line(seed, &v))
            .and_then(|()| output.flush())
            .is_err()
        {
            break;
        }
    }
}

/// A run of the driver.
#[derive(Clone, Debug)]
pub struct DriveOptions {
    /// First seed.
    pub first: u64,
    /// Number of cases.
    pub cases: u64,
    /// Worker processes.
    pub jobs: usize,
    /// Deadline of one case.
    pub limit: Duration,
}

/// One finding of a run.
#[derive(Clone, Debug)]
pub struct Found {
    /// The case's seed.
    pub seed: u64,
    /// Its class.
    pub kind: Kind,
    /// What went wrong.
    pub message: String,
}

/// The counts of a run.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Cases that ended in a verdict.
    pub judged: u64,
    /// Compiled, ran and matched in every configuration.
    pub passed: u64,
    /// Rejected by the checker with a diagnostic.
    pub rejected: u64,
    /// Refused by a pass with a user-facing error.
    pub refused: u64,
    /// Findings by class.
    pub findings: BTreeMap<Kind, u64>,
    /// Wall time.
    pub elapsed: Duration,
}

impl Summary {
    /// Number of findings.
    pub fn finding_count(&self) -> u64 {
        self.findings.values().sum()
    }

    fn add(&mut self, v: &Verdict) {
        self.judged += 1;
        match v {
            Verdict::Passed => self.passed += 1,
            Verdict::Rejected => self.rejected += 1,
            Verdict::Refused(_) => self.refused += 1,
            Verdict::Finding(k, _) => *self.findings.entry(*k).or_default() += 1,
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} cases in {:.1} s ({:.2} cases/s): {} matched, {} rejected with a diagnostic, {} refused by a pass",
            self.judged,
            self.elapsed.as_secs_f64(),
            self.judged as f64 / self.elapsed.as_secs_f64().max(1e-9),
            self.passed,
            self.rejected,
            self.refused
        )?;
        for k in Kind::ALL {
            write!(
                f,
                ", {} {}",
                self.findings.get(&k).copied().unwrap_or(0),
                k.name()
            )?;
        }
        Ok(())
    }
}

struct Slot {
    child: Child,
    stdin: ChildStdin,
    /// Bumped at each restart, so that lines of a killed worker are dropped.
    generation: u64,
    busy: Option<(u64, Instant)>,
}

enum Event {
    Line(String),
    Eof,
}

/// Runs `opts.cases` seeds from `opts.first` in `opts.jobs` worker
/// processes made by `spawn` (a command whose process runs [`worker`]),
/// calling `on_verdict` for each case as it ends (in completion order).
pub fn drive(
    opts: &DriveOptions,
    spawn: &dyn Fn() -> Command,
    on_verdict: &mut dyn FnMut(u64, &Verdict, &Summary),
) -> std::io::Result<Summary> {
    let start = Instant::now();
    let (tx, rx) = mpsc::channel::<(usize, u64, Event)>();
    let start_worker = |slot: usize, generation: u64| -> std::io::Result<Slot> {
        let mut child = spawn()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((slot, generation, Event::Line(line))).is_err() {
                    return;
                }
            }
            let _ = tx.send((slot, generation, Event::Eof));
        });
        Ok(Slot {
            child,
            stdin,
            generation,
            busy: None,
        })
    };
    let jobs = opts.jobs.max(1);
    let mut slots = Vec::new();
    for i in 0..jobs {
        slots.push(start_worker(i, 0)?);
    }
    let mut summary = Summary::default();
    let end = opts.first + opts.cases;
    let mut next = opts.first;
    let mut record = |summary: &mut Summary, seed: u64, v: Verdict| {
        summary.add(&v);
        summary.elapsed = start.elapsed();
        on_verdict(seed, &v, summary);
    };
    loop {
        // Give every idle worker its next seed.
        for slot in slots.iter_mut() {
            if slot.busy.is_none() && next < end {
                // A failed write means the worker died; its EOF comes next
                // and the seed is judged there.
                let _ = writeln!(slot.stdin, "{next}").and_then(|()| slot.stdin.flush());
                slot.busy = Some((next, Instant::now()));
                next += 1;
            }
        }
        let Some(deadline) = slots
            .iter()
            .filter_map(|s| s.busy.map(|(_, t)| t + opts.limit))
            .min()
        else {
            break;
        };
        let wait = deadline.saturating_duration_since(Instant::now());
        let mut restart = Vec::new();
        match rx.recv_timeout(wait) {
            Ok((i, generation, ev)) => {
                let slot = &mut slots[i];
                if generation != slot.generation {
                    continue;
                }
                match ev {
                    Event::Line(line) => {
                        if let Some((seed, v)) = parse_verdict_line(&line)
                            && slot.busy.is_some_and(|(s, _)| s == seed)
                        {
                            slot.busy = None;
                            record(&mut summary, seed, v);
                        }
                    }
                    Event::Eof => {
                        let status = slot.child.wait()?;
                        let what = describe_exit(&status);
                        if let Some((seed, _)) = slot.busy.take() {
                            record(
                                &mut summary,
                                seed,
                                Verdict::Finding(Kind::Signal, format!("the worker {what}")),
                            );
                        }
                        restart.push(i);
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                for (i, slot) in slots.iter_mut().enumerate() {
                    if let Some((seed, t)) = slot.busy
                        && now >= t + opts.limit
                    {
                        let _ = slot.child.kill();
                        let _ = slot.child.wait();
                        slot.busy = None;
                        record(
                            &mut summary,
                            seed,
                            Verdict::Finding(
                                Kind::Hang,
                                format!("no verdict within {:?}; worker killed", opts.limit),
                            ),
                        );
                        restart.push(i);
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => unreachable!("the driver holds a sender"),
        }
        for i in restart {
            let generation = slots[i].generation + 1;
            slots[i] = start_worker(i, generation)?;
        }
    }
    for mut slot in slots {
        drop(slot.stdin);
        let _ = slot.child.wait();
    }
    summary.elapsed = start.elapsed();
    Ok(summary)
}

fn describe_exit(status: &std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            let name = match sig {
                libc::SIGSEGV => "SIGSEGV",
                libc::SIGABRT => "SIGABRT",
                libc::SIGBUS => "SIGBUS",
                libc::SIGILL => "SIGILL",
                libc::SIGFPE => "SIGFPE",
                libc::SIGKILL => "SIGKILL",
                _ => "",
            };
            return format!("died of signal {sig} {name}");
        }
    }
    format!("exited ({status}) before its verdict")
}
