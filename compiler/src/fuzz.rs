//! The differential fuzzer of the whole compiler: random well-formed
//! kernels and mutations of the examples, each either rejected with a
//! diagnostic or compiled, JIT-run and matched against the float64
//! interpreter ([`crate::interp`]).
//!
//! [`generate`] draws a kernel from a seed: a grid over `G` work items
//! starting at 0 or 1, a KV-style loop over `K` in blocks of `BK` (bound
//! static or read from an `i32` tensor), a matmul of 16-bit casts of slices
//! of `x` and `y`, carried `var`s of shape `[R, C]` and `[R]`, optionally a
//! nested loop and a store inside the loop, and random expression trees over
//! every element-wise built-in, masks (`where`, `row_index`, `col_index`),
//! row reductions and their broadcasts, transposes (square tiles), 16-bit
//! round trips. Dims are drawn from 1, odd, prime, below and above a block;
//! input and output dtypes from bf16, f16 and f32. [`mutate_example`] takes
//! an example kernel, swaps one operator or function for another
//! (token-level) and binds its dims to small odd or prime values
//! (`-D`-level).
//!
//! [`run_case`] judges one program under a few compile configurations
//! (preload depth, `mul-to-add` on or off, core count). The verdicts that are
//! findings: an internal compiler error, a codegen or launch error, a
//! mismatch with the interpreter; the caller adds panics and hangs (the
//! `fuzz_compiler` example and `tests/fuzz_compiler.rs` run each case on its
//! own thread under a deadline).
//!
//! The comparison is norm-wise, per output: an element passes when
//! `|got - want| <= rtol * (max |want| + |want|)`, `rtol` being `1e-4` for
//! f32 outputs and `2^-7` for 16-bit ones, or `2^-5` when the kernel rounds
//! a computed value to 16 bits inside (a rounding that f32 noise moves
//! across a boundary changes that element by an ulp, and later ops may
//! amplify it). A miscompile — a wrong op, index or mask — moves outputs by
//! far more.

use rand::{RngExt, SeedableRng};
use rand_xorshift::XorShiftRng;

use crate::check::Defines;
use crate::diag::SourceFile;
use crate::driver::{self, CompileError};
use crate::passes::PassError;
use crate::run::exec::{Executable, RunConfig};
use crate::run::inputs::{InputGen, InputOptions};
use crate::run::tensor::{HostData, HostTensor};

/// One program to judge: its source and `-D` bindings.
#[derive(Clone, Debug)]
pub struct Program {
    /// The `.amla` text.
    pub source: String,
    /// `-D NAME=VALUE` bindings.
    pub defines: Vec<(String, String)>,
    /// The kernel rounds a computed value to 16 bits (looser tolerance).
    pub rounds_inside: bool,
}

/// What became of one program.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// `amlac check` rejected it with diagnostics.
    Rejected,
    /// A pass refused it with a user-facing error (does not fit, …).
    Refused(String),
    /// Every configuration compiled, ran and matched the interpreter.
    Passed,
    /// A finding: what went wrong, in which configuration.
    Finding(String),
}

/// One compile-and-run configuration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Config {
    /// `-D PRELOAD`.
    pub preload: u8,
    /// Run without `mul-to-add`.
    pub no_mul_to_add: bool,
    /// Emulated cores.
    pub cores: usize,
}

impl Config {
    /// Every configuration the fuzzer draws from.
    pub fn all() -> Vec<Config> {
        let mut v = Vec::new();
        for preload in 0..3 {
            for no_mul_to_add in [false, true] {
                for cores in [1, 3] {
                    v.push(Config {
                        preload,
                        no_mul_to_add,
                        cores,
                    });
                }
            }
        }
        v
    }
}

struct G {
    rng: XorShiftRng,
}

impl G {
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.rng.random_range(0..xs.len())]
    }
    fn pick_u(&mut self, xs: &[u64]) -> u64 {
        xs[self.rng.random_range(0..xs.len())]
    }
    fn chance(&mut self, p: f64) -> bool {
        self.rng.random::<f64>() < p
    }
}

/// Which constructs [`generate_with`] may draw (a switch per construct a
/// known open finding breaks, so the sampled test can leave it out until the
/// fix lands; docs/TESTING.md lists them).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Features {
    /// Grids starting at 1 (`parallel i in 1..G`).
    pub grid_offset: bool,
}

impl Features {
    /// Everything.
    pub const ALL: Features = Features { grid_offset: true };
}

/// Draws a random kernel from `seed` with every construct.
pub fn generate(seed: u64) -> Program {
    generate_with(seed, Features::ALL)
}

/// Draws a random kernel from `seed` (see the module doc).
pub fn generate_with(seed: u64, features: Features) -> Program {
    let mut g = G {
        rng: XorShiftRng::seed_from_u64(seed ^ 0x5DEE_CE66_D1CE_4E5B),
    };
    let dims = [1u64, 2, 3, 5, 7, 8, 13, 16, 17, 31, 32, 64];
    let r = g.pick_u(&dims);
    let c = g.pick_u(&dims);
    let k = g.pick_u(&[1, 3, 8, 16, 17, 64, 97, 130]);
    let bk = g.pick_u(&[1, 4, 16, 32, 64]);
    let gg = g.pick_u(&[1, 2, 3, 5]);
    let lo = if g.chance(0.3) && gg > 1 && features.grid_offset {
        1
    } else {
        0
    };
    let d16 = g.pick(&["bf16", "bf16", "f16"]);
    let dx = g.pick(&["bf16", "f16", "f32"]);
    let dy = g.pick(&["bf16", "f16", "f32"]);
    let dout = g.pick(&["bf16", "f16", "f32", "f32"]);
    let dynamic = g.chance(0.4);
    let nested = g.chance(0.25);
    let store_in_loop = g.chance(0.15);
    let mut rounds_inside = dout != "f32";
    let cast = |d: &str, e: String| {
        if d == d16 { e } else { format!("{d16}({e})") }
    };
    let hi = if dynamic {
        "n[i]".to_string()
    } else {
        "K".into()
    };
    let mut b = String::new();
    use std::fmt::Write;
    let _ = writeln!(
        b,
        "kernel fz(x: {dx}[G, R, K], y: {dy}[G, C, K], z: f32[G, R, C], n: i32[G])\n    -> (o: {dout}[G, R, C], p: f32[G, R])\n{{"
    );
    let _ = writeln!(b, "  dim G = {gg}, R = {r}, C = {c}, K = {k};");
    let _ = writeln!(b, "  const BK = {bk};");
    let _ = writeln!(b, "  parallel i in {lo}..G {{");
    let _ = writeln!(b, "    let zt = z[i];");
    let _ = writeln!(b, "    var acc: f32[R, C] = 0.0;");
    let _ = writeln!(b, "    var m: f32[R] = -inf;");
    let _ = writeln!(b, "    for j in 0..{hi} step BK {{");
    let _ = writeln!(
        b,
        "      let xa = {};",
        cast(dx, "x[i, .., j..j+BK]".into())
    );
    let _ = writeln!(
        b,
        "      let yb = {};",
        cast(dy, "y[i, .., j..j+BK]".into())
    );
    let _ = writeln!(b, "      let s = xa @ yb^T;");
    let square = r == c;
    let e1 = expr(&mut g, 3, square, &mut rounds_inside).replace("SCORES", "s");
    let e2 = expr(&mut g, 2, square, &mut rounds_inside).replace("SCORES", "s");
    let _ = writeln!(b, "      let e = {e1};");
    let _ = writeln!(b, "      acc = acc * 0.5 + e;");
    let _ = writeln!(b, "      m = max(m, rowmax({e2}));");
    if nested {
        let t = g.pick(&["2", "3"]);
        let e3 = expr(&mut g, 2, square, &mut rounds_inside).replace("SCORES", "s");
        let _ = writeln!(b, "      for t in 0..{t} {{");
        let _ = writeln!(b, "        acc = acc + {e3} * 0.25;");
        let _ = writeln!(b, "      }}");
    }
    if store_in_loop {
        let _ = writeln!(b, "      o[i] = {dout}(acc);");
    }
    let _ = writeln!(b, "    }}");
    let fin = expr(&mut g, 2, square, &mut rounds_inside);
    // Outside the loop the scores `s` are out of scope: `zt` stands in.
    let fin = fin.replace("SCORES", "zt");
    let _ = writeln!(
        b,
        "    o[i] = {dout}(acc + where(m > -inf, m, 0.0) + {fin});"
    );
    let _ = writeln!(b, "    p[i] = m;");
    let _ = writeln!(b, "  }}\n}}");
    Program {
        source: b,
        defines: Vec::new(),
        rounds_inside,
    }
}

/// A random f32 `[R, C]` expression over the leaves `SCORES` (the caller
/// names the scores tile), `zt`, `acc`.
fn expr(g: &mut G, depth: u32, square: bool, rounds: &mut bool) -> String {
    if depth == 0 || g.chance(0.25) {
        return match g.rng.random_range(0..6) {
            0 | 1 => "SCORES".into(),
            2 => "zt".into(),
            3 => "acc".into(),
            4 => "f32(col_index(zt))".into(),
            _ => "f32(row_index(zt) - 1)".into(),
        };
    }
    let op = g.rng.random_range(0..20);
    if matches!(op, 15 | 16) {
        *rounds = true;
    }
    let mut sub = |g: &mut G| expr(g, depth - 1, square, rounds);
    match op {
        0 => format!("({} + {})", sub(g), sub(g)),
        1 => format!("({} - {})", sub(g), sub(g)),
        2 => format!("({} * {})", sub(g), sub(g)),
        3 => format!("max({}, {})", sub(g), sub(g)),
        4 => format!("min({}, {})", sub(g), sub(g)),
        5 => format!("abs({})", sub(g)),
        6 => format!("exp(min({}, 2.0))", sub(g)),
        7 => format!("exp2(min({}, 2.0))", sub(g)),
        8 => format!("log(abs({}) + 1.0)", sub(g)),
        9 => format!("log2(abs({}) + 0.5)", sub(g)),
        10 => format!("sqrt(abs({}))", sub(g)),
        11 => {
            let (a, b2, c2, d) = (sub(g), sub(g), sub(g), sub(g));
            format!("where({a} < {b2}, {c2}, {d})")
        }
        12 => format!(
            "where(col_index(zt) <= row_index(zt) + {}, {}, -1.5)",
            g.rng.random_range(-2..3),
            sub(g)
        ),
        13 => {
            let a = sub(g);
            format!("({a} - rowmax({a}))")
        }
        14 => {
            let (a, b2) = (sub(g), sub(g));
            format!("({a} / (rowsum(abs({b2})) + 1.0))")
        }
        15 => format!("f32(bf16({}))", sub(g)),
        16 => format!("f32(f16(min(max({}, -1000.0), 1000.0)))", sub(g)),
        17 if square => format!("({})^T", sub(g)),
        18 => format!("({} * {})", sub(g), g.pick(&["0.5", "-1.25", "3.0"])),
        _ => format!("(-{})", sub(g)),
    }
}

/// Token-level substitutions of [`mutate_example`].
const SWAPS: &[(&str, &str)] = &[
    (" + ", " - "),
    (" - ", " + "),
    (" * ", " + "),
    (" < ", " <= "),
    (" <= ", " < "),
    ("exp(", "exp2("),
    ("max(", "min("),
    ("rowsum(", "rowmax("),
    ("bf16(p)", "bf16(p * 0.5)"),
    ("0.0;", "1.0;"),
];

/// Mutates example `text` from `seed`: one token-level swap (or none) and
/// small `-D` bindings for its dims (see the module doc).
pub fn mutate_example(text: &str, seed: u64) -> Program {
    let mut g = G {
        rng: XorShiftRng::seed_from_u64(seed ^ 0xA5A5_5A5A_1234_8765),
    };
    let mut source = text.to_string();
    if g.chance(0.7) {
        let (from, to) = SWAPS[g.rng.random_range(0..SWAPS.len())];
        let hits: Vec<usize> = source.match_indices(from).map(|(i, _)| i).collect();
        if !hits.is_empty() {
            let at = hits[g.rng.random_range(0..hits.len())];
            source.replace_range(at..at + from.len(), to);
        }
    }
    let mut defines = Vec::new();
    for (name, vals) in [
        ("B", &[1u64, 2, 3][..]),
        ("H", &[1, 2, 3, 16, 17]),
        ("HQ", &[4, 8]),
        ("HK", &[1, 2, 4]),
        ("N", &[1, 2, 7, 97, 129, 200]),
        ("S", &[1, 2, 3, 65, 128]),
        ("NB", &[4, 8]),
        ("MAXB", &[1, 2, 4]),
    ] {
        if source.contains(&format!(" {name} = ")) && g.chance(0.9) {
            let v = vals[g.rng.random_range(0..vals.len())];
            defines.push((name.to_string(), v.to_string()));
        }
    }
    Program {
        source,
        defines,
        rounds_inside: true,
    }
}

/// Inputs for `exe`: normal floats, `i32` tensors uniform in `[0, K]` (loop
/// bounds) or `[0, 4)` elsewhere.
fn inputs(exe: &Executable, seed: u64) -> Result<Vec<HostTensor>, String> {
    let specs = exe.input_specs().map_err(|e| e.to_string())?;
    let dims = exe.dims().map_err(|e| e.to_string())?;
    let kdim = exe
        .ir()
        .dims
        .values()
        .zip(&dims)
        .find(|(d, _)| d.name == "K")
        .map_or(4, |(_, v)| *v);
    let opts = InputOptions { seed, scale: 1.0 };
    specs
        .iter()
        .enumerate()
        .map(|(i, (name, dtype, shape))| {
            let n: usize = shape.iter().product();
            let mut g = InputGen::new(&opts, i as u64);
            let data = match dtype {
                crate::ir::DType::I32 => {
                    let role = if name == "n" {
                        crate::run::inputs::IntRole::Length { max: kdim }
                    } else {
                        crate::run::inputs::IntRole::Index { bound: 4 }
                    };
                    g.ints(role, n)
                }
                d => g.floats(*d, n).ok_or("no float input")?,
            };
            Ok(HostTensor {
                name: name.clone(),
                shape: shape.clone(),
                data,
            })
        })
        .collect()
}

/// Judges `p` under each of `configs` (see the module doc).
pub fn run_case(p: &Program, configs: &[Config], seed: u64) -> Verdict {
    let src = SourceFile::new("fuzz.amla", p.source.clone());
    let mut defines = Defines::new();
    for (n, v) in &p.defines {
        defines.insert(n, v);
    }
    let hir = match driver::check_source(&src, &defines) {
        Ok(h) => h,
        Err(_) => return Verdict::Rejected,
    };
    for cfg in configs {
        let mut opts = match driver::CompileOptions::new() {
            Ok(o) => o,
            Err(e) => return Verdict::Finding(e),
        };
        opts.defines = defines.clone();
        opts.defines.insert("PRELOAD", cfg.preload.to_string());
        if cfg.no_mul_to_add {
            opts.pipeline.disabled.push("mul-to-add".into());
        }
        let c = match driver::compile(&src, &opts) {
            Ok(c) => c,
            Err(CompileError::Pass(PassError::Internal { pass, message })) => {
                return Verdict::Finding(format!("{cfg:?}: internal error in {pass}: {message}"));
            }
            Err(CompileError::Pass(e)) => return Verdict::Refused(e.to_string()),
            Err(CompileError::Diagnostics(_)) => {
                return Verdict::Finding(format!(
                    "{cfg:?}: diagnostics at compile after a clean check"
                ));
            }
            Err(e) => return Verdict::Finding(format!("{cfg:?}: {e}")),
        };
        let exe = match Executable::new(&c, &opts.target) {
            Ok(e) => e,
            Err(e) => return Verdict::Finding(format!("{cfg:?}: {e}")),
        };
        let ins = match inputs(&exe, seed) {
            Ok(i) => i,
            Err(e) => return Verdict::Finding(format!("{cfg:?}: inputs: {e}")),
        };
        let run = RunConfig {
            cores: cfg.cores,
            wait_timeout: std::time::Duration::from_secs(20),
            ..RunConfig::default()
        };
        let out = match exe.run(&ins, &run) {
            Ok(o) => o,
            Err(e) => return Verdict::Finding(format!("{cfg:?}: {e}")),
        };
        let dims = match exe.dims() {
            Ok(d) => d,
            Err(e) => return Verdict::Finding(format!("{cfg:?}: {e}")),
        };
        let opts_i = crate::interp::Options {
            budget: 2_000_000_000,
        };
        let want = match crate::interp::interpret(&hir, &dims, &ins, &opts_i) {
            Ok(w) => w,
            Err(e) => return Verdict::Refused(e.to_string()),
        };
        for (o, w) in out.outputs.iter().zip(&want) {
            if let Some(m) = mismatch(&o.data, &w.data, p.rounds_inside) {
                return Verdict::Finding(format!("{cfg:?}: output `{}`: {m}", o.name));
            }
        }
    }
    Verdict::Passed
}

/// The first element outside the fuzzer's norm-wise tolerance, described.
pub fn mismatch(got: &HostData, want: &[f64], rounds_inside: bool) -> Option<String> {
    let g = got.to_f64();
    if g.len() != want.len() {
        return Some(format!(
            "{} elements, the interpreter has {}",
            g.len(),
            want.len()
        ));
    }
    let rtol = match (got.dtype(), rounds_inside) {
        (_, true) => 2f64.powi(-5),
        (crate::ir::DType::F32, false) => 1e-4,
        (crate::ir::DType::I32, false) => 0.0,
        _ => 2f64.powi(-7),
    };
    let scale = want
        .iter()
        .filter(|x| x.is_finite())
        .fold(0.0f64, |a, x| a.max(x.abs()));
    for (i, (&x, &w)) in g.iter().zip(want).enumerate() {
        let ok = if x.is_nan() || w.is_nan() {
            x.is_nan() && w.is_nan()
        } else if x.is_infinite() || w.is_infinite() {
            // A value at the edge of the 16-bit range may round to inf on
            // one side only.
            x == w || (rounds_inside && (x.abs() > 6.0e4 || w.abs() > 6.0e4))
        } else {
            (x - w).abs() <= rtol * (scale + w.abs())
        };
        if !ok {
            return Some(format!(
                "element {i}: got {x}, the interpreter {w} (max |want| {scale:e})"
            ));
        }
    }
    None
}

/// [`run_case`] on its own thread: a panic becomes a finding, and so does a
/// case that takes longer than `limit` (the thread is then left behind, so
/// the caller should stop).
pub fn judge(p: &Program, configs: &[Config], seed: u64, limit: std::time::Duration) -> Verdict {
    let (tx, rx) = std::sync::mpsc::channel();
    let (p2, c2) = (p.clone(), configs.to_vec());
    let worker = std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_case(&p2, &c2, seed)));
        let v = match r {
            Ok(v) => v,
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Verdict::Finding(format!("panic: {msg}"))
            }
        };
        let _ = tx.send(v);
    });
    match rx.recv_timeout(limit) {
        Ok(v) => {
            let _ = worker.join();
            v
        }
        Err(_) => Verdict::Finding(format!("hang: no verdict within {limit:?}")),
    }
}

/// The configurations case `seed` runs: `per_case` of [`Config::all`],
/// rotating so that consecutive cases cover all of them.
pub fn configs_for(seed: u64, per_case: usize) -> Vec<Config> {
    let all = Config::all();
    (0..per_case)
        .map(|i| all[(seed as usize * per_case + i * 5) % all.len()])
        .collect()
}

/// Case `seed` of a fuzz run: a generated kernel for most seeds, a mutated
/// example for every fourth (`examples` are their texts).
pub fn program(seed: u64, examples: &[String], features: Features) -> Program {
    if seed % 4 == 3 && !examples.is_empty() {
        let e = &examples[(seed / 4) as usize % examples.len()];
        mutate_example(e, seed)
    } else {
        generate_with(seed, features)
    }
}
