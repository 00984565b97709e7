//! Chip facts live in `targets/*.toml` only: no non-test Rust source states a
//! buffer capacity, the flag count or the alignment of any target file.
//!
//! The check reads every `.rs` file under `compiler/src`, `runtime/src` and
//! `src` up to its first `#[cfg(test)]` line (test modules may use any
//! numbers) and looks, on every line, for
//! - a capacity of `[buffers]` as a decimal number (`196608`) or as
//!   `KiB * 1024` / `KiB << 10`;
//! - the flag count as a number on a line that speaks of flags;
//! - the alignment as a number on a line that speaks of alignment;
//! - every other figure of the file (clock, core counts, bandwidths, Cube
//!   MACs and fractal, Vector repeat, move and atomic rates, flag latency,
//!   L2 and HBM sizes, the host target's measured `[host]` costs) as a
//!   number on a line that speaks of what it is
//!   (`clock` or `ghz` for the clock, `hbm`/`l2`/`bandwidth`/`gbps` for
//!   bandwidths, …; see [`figures`]).

use std::path::{Path, PathBuf};

use amla::compiler::target::Target;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs")
            && p.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(p);
        }
    }
}

fn tokens(line: &str) -> Vec<String> {
    line.to_lowercase()
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// Figures of `t` beyond capacities, flags and alignment: the number as
/// written in code (`1.8`, `1600`) and the words of which one must be on its
/// line for it to count as a statement (a bare `16`, `256` or `1048576` is
/// too common to refuse everywhere).
fn figures(t: &Target) -> Vec<(String, &'static [&'static str])> {
    let num = |x: f64| {
        if x.fract() == 0.0 {
            format!("{}", x as i64)
        } else {
            format!("{x}")
        }
    };
    let c = &t.chip;
    let mut v: Vec<(String, &'static [&'static str])> = vec![
        (num(c.clock_ghz), &["clock", "ghz", "freq"]),
        (c.ai_cores.to_string(), &["ai_cores", "cores"]),
        (c.vector_per_core.to_string(), &["vector_per_core", "aiv"]),
        (num(c.hbm_gbps), &["hbm", "gbps", "bandwidth"]),
        (num(c.hbm_gbps / 1000.0), &["hbm", "tbps", "bandwidth"]),
        (num(c.l2_gbps), &["l2", "gbps", "bandwidth"]),
        (c.l2_bytes.to_string(), &["l2", "cache"]),
        (
            num(t.cube.macs_per_cycle.bf16),
            &["mac", "macs", "cube", "peak"],
        ),
        (t.cube.fractal[0].to_string(), &["fractal"]),
        (
            t.vector.repeat_bytes.to_string(),
            &["repeat", "repeat_bytes"],
        ),
        (
            num(t.moves.mte2_bytes_per_cycle),
            &["mte2", "bytes_per_cycle"],
        ),
        (
            num(t.moves.mte1_bytes_per_cycle),
            &["mte1", "bytes_per_cycle"],
        ),
        (
            num(t.moves.fixpipe_bytes_per_cycle),
            &["fixpipe", "fixp", "bytes_per_cycle"],
        ),
        (
            num(t.moves.mte3_bytes_per_cycle),
            &["mte3", "bytes_per_cycle"],
        ),
        (num(t.atomic.add_bytes_per_cycle), &["atomic"]),
        (num(t.flags.latency_cycles), &["latency"]),
    ];
    if let Some(h) = c.hbm_bytes {
        v.push((h.to_string(), &["hbm", "memory"]));
    }
    // The host target's measured costs (`[host]`), on a line that speaks
    // of time or rates.
    if let Some(h) = &t.host {
        let ns: &'static [&'static str] = &["ns", "nanos", "host", "cost", "launch", "switch"];
        for x in [
            h.threads.launch_ns,
            h.threads.set_ns,
            h.threads.wake_ns,
            h.cooperative.launch_ns,
            h.cooperative.flag_ns,
            h.cooperative.switch_ns,
            h.cube.call_ns,
            h.cube.macs_per_ns,
            h.vector.op_ns,
            h.vector.elem_ns,
            h.vector.gm_elem_ns,
        ] {
            v.push((num(x), ns));
        }
        for x in h.cube.matmul.values() {
            v.push((num(*x), &["ns", "matmul"]));
        }
        for c in h.copy.values() {
            v.push((num(c.call_ns), ns));
            v.push((num(c.bytes_per_ns), &["bytes", "copy", "bandwidth"]));
        }
    }
    // Small integers (1, 2) are everywhere: only figures of two digits or more.
    v.retain(|(n, _)| n.len() >= 2 && n != "0");
    v
}

/// Every `(file:line, text)` of non-test code that states a fact of `t`.
fn statements(root: &Path, t: &Target) -> Vec<String> {
    let b = &t.buffers;
    let mut caps: Vec<String> = Vec::new();
    for v in [b.l1, b.l0a, b.l0b, b.l0c, b.ub] {
        caps.push(v.to_string());
    }
    let kib: Vec<u64> = [b.l1, b.l0a, b.l0b, b.l0c, b.ub]
        .iter()
        .filter(|v| *v % 1024 == 0)
        .map(|v| v / 1024)
        .collect();
    let flags = t.flags.cross_core_ids.to_string();
    let align = t.align.bytes.to_string();
    let figs = figures(t);
    let mut files = Vec::new();
    for d in ["compiler/src", "runtime/src", "src"] {
        rust_files(&root.join(d), &mut files);
    }
    let mut hits = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            if line.trim() == "#[cfg(test)]" {
                break;
            }
            let toks = tokens(line);
            let compact: String = line.split_whitespace().collect();
            let has = |x: &str| toks.iter().any(|t| t == x);
            let stated = caps.iter().any(|c| has(c))
                || kib.iter().any(|k| {
                    compact.contains(&format!("{k}*1024")) || compact.contains(&format!("{k}<<10"))
                })
                || (toks.iter().any(|t| t.contains("flag")) && has(&flags))
                || (toks.iter().any(|t| t.starts_with("align")) && has(&align))
                || figs.iter().any(|(n, words)| {
                    let stated = if n.contains('.') {
                        line.split(|c: char| !(c.is_ascii_digit() || c == '.'))
                            .any(|t| t == n)
                    } else {
                        has(n)
                    };
                    stated && words.iter().any(|w| toks.iter().any(|t| t.contains(w)))
                });
            if stated {
                hits.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
            }
        }
    }
    hits
}

#[test]
fn no_source_file_states_a_chip_fact() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in Target::BUILTIN {
        let t = Target::builtin(name).unwrap();
        let hits = statements(root, &t);
        assert!(
            hits.is_empty(),
            "chip facts of target `{name}` stated outside targets/:\n{}",
            hits.join("\n")
        );
    }
}

#[test]
fn the_check_finds_a_stated_fact() {
    // The scan sees what it must refuse: a temporary tree with one file
    // stating the 910B UB size, one the flag count, one the alignment.
    let t = Target::ascend910b();
    let dir = std::env::temp_dir().join(format!("amla-chip-facts-{}", std::process::id()));
    let src = dir.join("runtime/src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(dir.join("compiler/src")).unwrap();
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        src.join("a.rs"),
        format!(
            "pub const UB: usize = {} * 1024;\npub const MAX_FLAGS: u32 = {};\nlet align = {};\nconst CLOCK_GHZ: f64 = {};\nlet hbm_gbps = {:.1};\nconst CUBE_MACS: u32 = {};\n// {} bytes per repeat, 16 lanes\n#[cfg(test)]\nconst X: u64 = {};\n",
            t.buffers.ub / 1024,
            t.flags.cross_core_ids,
            t.align.bytes,
            t.chip.clock_ghz,
            t.chip.hbm_gbps,
            t.cube.macs_per_cycle.bf16,
            t.vector.repeat_bytes,
            t.buffers.l1
        ),
    )
    .unwrap();
    let hits = statements(&dir, &t);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(hits.len(), 7, "{hits:#?}");
}
