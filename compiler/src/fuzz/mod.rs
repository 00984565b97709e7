//! The differential fuzzer of the whole compiler: random well-formed
//! kernels and mutations of the examples, each either rejected with a
//! diagnostic or compiled, JIT-run and matched against the float64
//! interpreter ([`crate::interp`]).
//!
//! [`generate`] draws a kernel from a seed: a grid of one or two axes
//! (`parallel i in LO..G, h in LO2..H2`), each starting at 0 or 1; a
//! KV-style loop over `K` in blocks of `BK` (bound static or read from an
//! `i32` tensor); scores that are a matmul of 16-bit casts of slices of `x`
//! and `y`, a slice of a computed (scaled) matmul of a wider `y`, or a
//! thrice-transposed operand; carried `var`s of every shape (`[R, C]`,
//! `[R]`, a scalar, an `i32[R]` counter); optionally a nested loop and a
//! store inside the loop; and random expression trees over every built-in
//! (element-wise functions, `max`/`min`, `where`, `row_index`/`col_index`,
//! `reshape`, the four conversions), every comparison and logical operator,
//! `%` and `/`, row reductions and their broadcasts, slices of computed
//! tiles, transposes (square tiles, or after a reshape), 16-bit
//! round trips. Dims are drawn from 1, odd, prime, below and above a block;
//! input and output dtypes from bf16, f16 and f32. [`mutate_example`] takes
//! an example kernel, swaps one operator or function for another
//! (token-level) and binds its dims to small odd or prime values
//! (`-D`-level).
//!
//! [`run_case`] judges one program under a few compile configurations
//! ([`Config`]: preload depth, an optional pass disabled, core count; the
//! full matrix is [`Config::all`]). The verdicts that are findings
//! ([`Kind`]): an internal compiler error, a verifier failure, a codegen or
//! launch error, a mismatch with the interpreter; [`run_caught`] adds
//! panics, and [`workers`] runs cases in worker processes that it kills on a
//! hang and restarts after a signal (the `fuzz_compiler` example).
//!
//! The comparison is norm-wise, per output: an element passes when
//! `|got - want| <= rtol * (max |want| + |want|)`, `rtol` being `1e-4` for
//! f32 outputs and `2^-7` for 16-bit ones, or `2^-5` when the kernel rounds
//! a computed value to 16 bits inside (a rounding that f32 noise moves
//! across a boundary changes that element by an ulp, and later ops may
//! amplify it). A miscompile — a wrong op, index or mask — moves outputs by
//! far more.

pub mod workers;

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
    /// A pass refused it with a user-facing error (does not fit, …) in
    /// every configuration.
    Refused(String),
    /// Every configuration compiled, ran and matched the interpreter, but
    /// for those a pass refused with a user-facing error (at least one ran).
    Passed,
    /// A finding: its class and what went wrong, in which configuration.
    Finding(Kind, String),
}

/// The class of a finding (the fuzz summary counts each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// An internal compiler error: a pass failed, codegen or the launch
    /// rejected compiled IR, diagnostics after a clean check.
    Internal,
    /// The IR verifier rejected a pass's output.
    Verifier,
    /// A panic (caught in the worker).
    Panic,
    /// An output differs from the interpreter's.
    Mismatch,
    /// No verdict within the deadline (the worker process was killed).
    Hang,
    /// The worker process died: a signal (segfault, abort) or an exit.
    Signal,
}

impl Kind {
    /// Every class, in summary order.
    pub const ALL: [Kind; 6] = [
        Kind::Internal,
        Kind::Verifier,
        Kind::Panic,
        Kind::Mismatch,
        Kind::Hang,
        Kind::Signal,
    ];

    /// The name used in summaries and in the worker protocol.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Internal => "internal",
            Kind::Verifier => "verifier",
            Kind::Panic => "panic",
            Kind::Mismatch => "mismatch",
            Kind::Hang => "hang",
            Kind::Signal => "signal",
        }
    }

    /// The class named `s` ([`Kind::name`]).
    pub fn from_name(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// The passes that may be disabled with the kernel still running
/// ([`crate::passes::CODEGEN_NEEDS`] are the others).
pub const OPTIONAL_PASSES: &[&str] = &["range-fold", "mul-to-add", "preload", "tile"];

/// One compile-and-run configuration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Config {
    /// `-D PRELOAD`.
    pub preload: u8,
    /// An optional pass run without (one of [`OPTIONAL_PASSES`]).
    pub disabled: Option<&'static str>,
    /// Emulated cores.
    pub cores: usize,
}

impl std::fmt::Display for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "-D PRELOAD={}", self.preload)?;
        if let Some(d) = self.disabled {
            write!(f, " --disable-pass {d}")?;
        }
        write!(f, " --cores {}", self.cores)
    }
}

impl Config {
    /// The full matrix: every preload depth (0-2) with every optional pass
    /// on, and without `mul-to-add`, `tile` or `preload` in turn (without
    /// `preload` the depth is moot, so once; `range-fold` always runs), each
    /// on 1 and 3 cores: 20 configurations.
    pub fn all() -> Vec<Config> {
        let mut v = Vec::new();
        for preload in 0..3 {
            for disabled in [None, Some("mul-to-add"), Some("tile")] {
                for cores in [1, 3] {
                    v.push(Config {
                        preload,
                        disabled,
                        cores,
                    });
                }
            }
        }
        for cores in [1, 3] {
            v.push(Config {
                preload: 0,
                disabled: Some("preload"),
                cores,
            });
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
    // A second grid axis over `h in lo2..H2`, its own start above 0 or not.
    let two_axes = g.chance(0.35);
    let h2 = g.pick_u(&[2, 3]);
    let lo2 = if two_axes && g.chance(0.5) && features.grid_offset {
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
    // The scores: a matmul, a slice of a computed (scaled) matmul of a wider
    // `y`, or a transposed-thrice operand.
    let scores = g.rng.random_range(0..4);
    let extra = if matches!(scores, 1 | 2) {
        g.pick_u(&[0, 1, 3])
    } else {
        0
    };
    let off = if extra > 0 {
        g.rng.random_range(0..=extra)
    } else {
        0
    };
    let scalar_var = g.chance(0.3);
    let count_var = g.chance(0.3);
    let mut rounds_inside = dout != "f32";
    let cast = |d: &str, e: String| {
        if d == d16 { e } else { format!("{d16}({e})") }
    };
    let hi = if dynamic {
        "n[i]".to_string()
    } else {
        "K".into()
    };
    let (gdims, gidx) = if two_axes {
        ("G, H2, ", "i, h")
    } else {
        ("G, ", "i")
    };
    let mut b = String::new();
    use std::fmt::Write;
    let _ = writeln!(
        b,
        "kernel fz(x: {dx}[G, R, K], y: {dy}[G, CY, K], z: f32[G, R, C], n: i32[G])\n    -> (o: {dout}[{gdims}R, C], p: f32[{gdims}R])\n{{"
    );
    let _ = writeln!(
        b,
        "  dim G = {gg}, R = {r}, C = {c}, CY = {}, K = {k}{};",
        c + extra,
        if two_axes {
            format!(", H2 = {h2}")
        } else {
            String::new()
        }
    );
    let _ = writeln!(b, "  const BK = {bk};");
    if two_axes {
        let _ = writeln!(b, "  parallel i in {lo}..G, h in {lo2}..H2 {{");
    } else {
        let _ = writeln!(b, "  parallel i in {lo}..G {{");
    }
    let _ = writeln!(b, "    let zt = z[i];");
    let _ = writeln!(b, "    var acc: f32[R, C] = 0.0;");
    let _ = writeln!(b, "    var m: f32[R] = -inf;");
    if scalar_var {
        let _ = writeln!(b, "    var t: f32 = 0.5;");
    }
    if count_var {
        let _ = writeln!(b, "    var cnt: i32[R] = 0;");
    }
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
    let end = off + c;
    match scores {
        0 => {
            let _ = writeln!(b, "      let s = xa @ yb^T;");
        }
        1 => {
            let _ = writeln!(b, "      let s = (xa @ yb^T)[.., {off}..{end}];");
        }
        2 => {
            let _ = writeln!(b, "      let s = ((xa @ yb^T) * 0.5)[.., {off}..{end}];");
        }
        _ => {
            let _ = writeln!(b, "      let s = xa @ yb^T^T^T;");
        }
    }
    let square = r == c;
    // `acc`'s next value must not depend on `acc` through `e` (or the
    // nested loop's term): a step map with a slope above 1
    // (`-log2(abs(acc) + 0.5)`) amplifies f32 rounding exponentially, so
    // the JIT and the float64 interpreter part for no fault of either.
    let e1 = no_acc(expr(&mut g, 3, square, &mut rounds_inside)).replace("SCORES", "s");
    let e2 = expr(&mut g, 2, square, &mut rounds_inside).replace("SCORES", "s");
    let _ = writeln!(b, "      let e = {e1};");
    let _ = writeln!(b, "      acc = acc * 0.5 + e;");
    let _ = writeln!(b, "      m = max(m, rowmax({e2}));");
    if scalar_var {
        let _ = writeln!(b, "      t = t * 0.5 + 0.25;");
    }
    if count_var {
        let _ = writeln!(b, "      cnt = cnt + 1;");
    }
    if nested {
        let t = g.pick(&["2", "3"]);
        let e3 = no_acc(expr(&mut g, 2, square, &mut rounds_inside)).replace("SCORES", "s");
        let _ = writeln!(b, "      for t in 0..{t} {{");
        let _ = writeln!(b, "        acc = acc + {e3} * 0.25;");
        let _ = writeln!(b, "      }}");
    }
    if store_in_loop {
        let _ = writeln!(b, "      o[{gidx}] = {dout}(acc);");
    }
    let _ = writeln!(b, "    }}");
    let fin = expr(&mut g, 2, square, &mut rounds_inside);
    // Outside the loop the scores `s` are out of scope: `zt` stands in.
    let mut fin = fin.replace("SCORES", "zt");
    if scalar_var {
        fin = format!("{fin} + t");
    }
    if count_var {
        fin = format!("{fin} + f32(cnt)");
    }
    if two_axes {
        fin = format!("{fin} + f32(h)");
    }
    let _ = writeln!(
        b,
        "    o[{gidx}] = {dout}(acc + where(m > -inf, m, 0.0) + {fin});"
    );
    let _ = writeln!(b, "    p[{gidx}] = m;");
    let _ = writeln!(b, "  }}\n}}");
    Program {
        source: b,
        defines: Vec::new(),
        rounds_inside,
    }
}

/// `e` with its `acc` leaves read as `zt` (see [`generate_with`]).
fn no_acc(e: String) -> String {
    e.replace("acc[.., 0..C]", "zt[.., 0..C]")
        .replace("acc", "zt")
}

/// A random f32 `[R, C]` expression over the leaves `SCORES` (the caller
/// names the scores tile), `zt`, `acc`.
fn expr(g: &mut G, depth: u32, square: bool, rounds: &mut bool) -> String {
    if depth == 0 || g.chance(0.25) {
        return match g.rng.random_range(0..6) {
            0 | 1 => "SCORES".into(),
            2 => "zt".into(),
            3 if g.chance(0.5) => "acc[.., 0..C]".into(),
            3 => "acc".into(),
            4 => "f32(col_index(zt))".into(),
            _ => "f32(row_index(zt) - 1)".into(),
        };
    }
    let op = g.rng.random_range(0..25);
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
            // Not `a < b`: two computed values that are equal in exact
            // arithmetic (`log(abs(s) + 1.0) < abs(s)` for a tiny `s`)
            // compare differently after f32 and f64 rounding; an offset
            // no expression of the generator hits exactly keeps them apart.
            format!("where({a} < {b2} + 0.3173, {c2}, {d})")
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
        // Masks over exact integers: every comparison and logical operator.
        20 => {
            let (a, b2) = (sub(g), sub(g));
            let cmp = g.pick(&["<", "<=", ">", ">=", "==", "!="]);
            let cmp2 = g.pick(&["<", "<=", ">", ">=", "==", "!="]);
            let join = g.pick(&["&&", "||"]);
            format!(
                "where((col_index(zt) {cmp} row_index(zt)) {join} !(col_index(zt) % 3 {cmp2} 1), {a}, {b2})"
            )
        }
        // A computed tile reshaped (a real permutation through `[C, R]`, or
        // a round trip through rank 1) and sliced whole.
        21 => {
            let a = sub(g);
            if g.chance(0.5) {
                format!("(reshape({a}, C, R))^T")
            } else {
                format!("reshape(reshape({a}, R * C), R, C)")
            }
        }
        22 => format!("({})[.., 0..C]", sub(g)),
        23 => format!("({} / (abs({}) + 1.0))", sub(g), sub(g)),
        // `i32` of exact values only: a truncation of a rounded value may
        // differ between f32 and f64.
        24 => format!("({} + f32(i32(f32(col_index(zt)) * 0.5)))", sub(g)),
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

/// Judges `p` under each of `configs` (see the module doc). The checker
/// and the interpreter run once; each distinct (preload depth, disabled
/// pass) compiles once and runs at each of its core counts.
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
    let internal = |cfg: &Config, e: &dyn std::fmt::Display| {
        Verdict::Finding(Kind::Internal, format!("{cfg}: {e}"))
    };
    // The interpreter's outputs, from the first configuration's inputs
    // (every configuration has the same inputs).
    let mut oracle: Option<(Vec<HostTensor>, Vec<crate::interp::Output>)> = None;
    let mut compiled: Option<(u8, Option<&str>, Executable)> = None;
    let mut refused: Option<String> = None;
    let mut ran = false;
    for cfg in configs {
        if !matches!(&compiled, Some((d, x, _)) if *d == cfg.preload && *x == cfg.disabled) {
            let mut opts = match driver::CompileOptions::new() {
                Ok(o) => o,
                Err(e) => return internal(cfg, &e),
            };
            opts.defines = defines.clone();
            opts.defines.insert("PRELOAD", cfg.preload.to_string());
            if let Some(d) = cfg.disabled {
                opts.pipeline.disabled.push(d.into());
            }
            let c = match driver::compile(&src, &opts) {
                Ok(c) => c,
                Err(CompileError::Pass(PassError::Internal { pass, message })) => {
                    let kind = if message.starts_with("the verifier rejects") {
                        Kind::Verifier
                    } else {
                        Kind::Internal
                    };
                    return Verdict::Finding(
                        kind,
                        format!("{cfg}: internal error in {pass}: {message}"),
                    );
                }
                Err(CompileError::Pass(e)) => {
                    // Another configuration may still fit (`tile` disabled
                    // leaves whole tiles in L0).
                    refused.get_or_insert(e.to_string());
                    continue;
                }
                Err(CompileError::Diagnostics(_)) => {
                    return internal(cfg, &"diagnostics at compile after a clean check");
                }
                Err(e) => return internal(cfg, &e),
            };
            match Executable::new(&c, &opts.target) {
                Ok(e) => compiled = Some((cfg.preload, cfg.disabled, e)),
                Err(e) => return internal(cfg, &e),
            }
        }
        let Some((_, _, exe)) = &compiled else {
            unreachable!("compiled above")
        };
        if oracle.is_none() {
            let ins = match inputs(exe, seed) {
                Ok(i) => i,
                Err(e) => return internal(cfg, &format!("inputs: {e}")),
            };
            let dims = match exe.dims() {
                Ok(d) => d,
                Err(e) => return internal(cfg, &e),
            };
            let opts_i = crate::interp::Options {
                budget: 2_000_000_000,
            };
            match crate::interp::interpret(&hir, &dims, &ins, &opts_i) {
                Ok(w) => oracle = Some((ins, w)),
                Err(e) => return Verdict::Refused(e.to_string()),
            }
        }
        let Some((ins, want)) = &oracle else {
            unreachable!("interpreted above")
        };
        let run = RunConfig {
            cores: cfg.cores,
            wait_timeout: std::time::Duration::from_secs(20),
            ..RunConfig::default()
        };
        let out = match exe.run(ins, &run) {
            Ok(o) => o,
            Err(e) => return internal(cfg, &e),
        };
        for (o, w) in out.outputs.iter().zip(want) {
            if let Some(m) = mismatch(&o.data, &w.data, p.rounds_inside) {
                return Verdict::Finding(
                    Kind::Mismatch,
                    format!("{cfg}: output `{}`: {m}", o.name),
                );
            }
        }
        ran = true;
    }
    match refused {
        Some(r) if !ran => Verdict::Refused(r),
        _ => Verdict::Passed,
    }
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

/// [`run_case`] with a panic caught and made a [`Kind::Panic`] finding.
pub fn run_caught(p: &Program, configs: &[Config], seed: u64) -> Verdict {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_case(p, configs, seed)));
    r.unwrap_or_else(|e| {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Verdict::Finding(Kind::Panic, format!("panic: {msg}"))
    })
}

/// [`run_caught`] on its own thread: a case that takes longer than `limit`
/// is a [`Kind::Hang`] finding (the thread is then left behind, so the
/// caller should stop; [`workers`] runs cases in worker processes instead).
pub fn judge(p: &Program, configs: &[Config], seed: u64, limit: std::time::Duration) -> Verdict {
    let (tx, rx) = std::sync::mpsc::channel();
    let (p2, c2) = (p.clone(), configs.to_vec());
    let worker = std::thread::spawn(move || {
        let _ = tx.send(run_caught(&p2, &c2, seed));
    });
    match rx.recv_timeout(limit) {
        Ok(v) => {
            let _ = worker.join();
            v
        }
        Err(_) => Verdict::Finding(Kind::Hang, format!("no verdict within {limit:?}")),
    }
}

/// The configurations case `seed` runs: `per_case` of [`Config::all`],
/// rotating so that consecutive cases cover all of them.
/// (A stride coprime to their count spreads one case's configurations
/// over the matrix.) `per_case` at or above the count gives all of them.
pub fn configs_for(seed: u64, per_case: usize) -> Vec<Config> {
    let all = Config::all();
    if per_case >= all.len() {
        return all;
    }
    (0..per_case)
        .map(|i| all[((seed as usize * per_case + i) * 7) % all.len()])
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
