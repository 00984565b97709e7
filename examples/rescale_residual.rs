//! `cargo run --release --example rescale_residual [-- SEEDS]`: where the
//! default rescale's remaining error against FlashAttention comes from, on
//! the multi-block rows of `amlac numerics --grid` (docs/NUMERICS.md, "Where
//! AMLA's extra error came from", item 8).
//!
//! The inputs are `amlac numerics`' own (`fidelity::draw`, seeds `0..SEEDS`,
//! default 4; `B = 4`, MLA's d = 576, dv = 512, scale 1/√576); each query row
//! goes through the scalar model of `numerics::model` (the formulas the pass
//! emits) as FlashAttention, as `anchored` and `exact`, and as the same two
//! with the what-if operand [`Operand::FlashRounding`]: FlashAttention's
//! `bf16(P)` times the variant's per-block factor, in f32 — a value the
//! Cube cannot take (its operands are bf16), kept only to measure how much
//! of the gap is where `P · c` is rounded. Outputs are rounded to bf16, as
//! the kernel stores them, and compared with float64 under FlashMLA's
//! per-element rule (`fails`) and by mean abs error; totals over the seeds.

use amla::compiler::ir::DType;
use amla::compiler::numerics::fidelity::{Distribution, FLASHMLA_ATOL, FLASHMLA_RTOL, draw};
use amla::compiler::numerics::model::{Operand, RowTrace, flash_row, run_row_with};
use amla::compiler::passes::mul_to_add::RescaleVariant;

const D: usize = 576;
const DV: usize = 512;
const B: usize = 4;
const BLOCK: usize = 128;

/// One column: a name, and the variant and Cube operand of the model
/// (`None`: FlashAttention).
struct Column {
    name: &'static str,
    model: Option<(RescaleVariant, Operand)>,
}

impl Column {
    fn run(&self, scores: &[f32], v: &[f32]) -> RowTrace {
        match self.model {
            None => flash_row(scores, v, DV, BLOCK),
            Some((variant, op)) => run_row_with(scores, v, DV, BLOCK, variant, false, op),
        }
    }
}

fn columns() -> Vec<Column> {
    let col = |name, model| Column { name, model };
    use Operand::{FlashRounding, Kernel};
    use RescaleVariant::{Anchored, Exact};
    vec![
        col("flash", None),
        col("anchored", Some((Anchored, Kernel))),
        col("anchored@bf16(P)", Some((Anchored, FlashRounding))),
        col("exact", Some((Exact, Kernel))),
        col("exact@bf16(P)", Some((Exact, FlashRounding))),
    ]
}

#[derive(Default, Clone, Copy)]
struct Tally {
    fails: u64,
    abs_sum: f64,
    elems: u64,
}

fn main() {
    let seeds: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(4);
    let cols = columns();
    print!("{:<14} {:>4} {:>5} |", "distribution", "H", "N");
    for c in &cols {
        print!(" {:>22} |", c.name);
    }
    println!();
    print!("{:<14} {:>4} {:>5} |", "", "", "");
    for _ in &cols {
        print!(" {:>10} {:>11} |", "fails", "mean");
    }
    println!();
    let dists = [
        Distribution::LargeRange,
        Distribution::Outliers,
        Distribution::Normal,
        Distribution::NearConstant,
    ];
    for dist in dists {
        for h in [16usize, 128] {
            for n in [129usize, 1000, 4096] {
                let mut tally = vec![Tally::default(); cols.len()];
                for seed in 0..seeds {
                    group(dist, h, n, seed, &cols, &mut tally);
                }
                print!("{:<14} {:>4} {:>5} |", dist.name(), h, n);
                for t in &tally {
                    print!(
                        " {:>10} {:>11.4e} |",
                        t.fails,
                        t.abs_sum / t.elems.max(1) as f64
                    );
                }
                println!();
            }
        }
    }
}

/// Runs every row of one (distribution, H, N, seed) through every column.
fn group(dist: Distribution, h: usize, n: usize, seed: u64, cols: &[Column], tally: &mut [Tally]) {
    let specs = vec![
        ("q".to_string(), DType::Bf16, vec![B, h, D]),
        ("kv".to_string(), DType::Bf16, vec![B, n, D]),
    ];
    let t = draw(&specs, dist, seed);
    let (q, kv) = (t[0].data.to_f64(), t[1].data.to_f64());
    let scale = 1.0 / (D as f64).sqrt();
    for b in 0..B {
        let kvb = &kv[b * n * D..(b + 1) * n * D];
        let v: Vec<f32> = (0..n)
            .flat_map(|j| kvb[j * D..j * D + DV].iter().map(|&x| x as f32))
            .collect();
        for hh in 0..h {
            let qr = &q[(b * h + hh) * D..(b * h + hh + 1) * D];
            let s64: Vec<f64> = (0..n)
                .map(|j| {
                    let k = &kvb[j * D..(j + 1) * D];
                    qr.iter().zip(k).map(|(a, b)| a * b).sum::<f64>() * scale
                })
                .collect();
            // The Cube's f32 scores (bf16 products summed in f32, then scaled).
            let s32: Vec<f32> = s64.iter().map(|&s| s as f32).collect();
            let want = reference(&s64, kvb, n);
            for (c, t) in cols.iter().zip(tally.iter_mut()) {
                let got = c.run(&s32, &v);
                for (g, w) in got.out.iter().zip(&want) {
                    let g = f64::from(half::bf16::from_f32(*g).to_f32());
                    let d = (g - w).abs();
                    if d > FLASHMLA_ATOL && d > FLASHMLA_RTOL * w.abs() {
                        t.fails += 1;
                    }
                    t.abs_sum += d;
                    t.elems += 1;
                }
            }
        }
    }
}

/// The float64 softmax-weighted sum of the value rows.
fn reference(s: &[f64], kvb: &[f64], n: usize) -> Vec<f64> {
    let mx = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = s.iter().map(|&x| (x - mx).exp()).collect();
    let sum: f64 = w.iter().sum();
    let mut out = vec![0f64; DV];
    for j in 0..n {
        for (o, x) in out.iter_mut().zip(&kvb[j * D..j * D + DV]) {
            *o += w[j] / sum * x;
        }
    }
    out
}
