//! Seeded random inputs for a run.
//!
//! Float tensors get independent standard-normal elements (scaled by
//! [`InputOptions::scale`]) rounded to the tensor's dtype; i32 tensors get
//! values that make sense for the reference kind that names them (page ids
//! in `[0, pages)` for a block table, lengths in `[0, capacity]` for
//! sequence lengths). The generator is `XorShiftRng` seeded from
//! [`InputOptions::seed`] and the tensor's position, so a seed reproduces
//! the same inputs on every machine and version.

use rand::{RngExt, SeedableRng};
use rand_xorshift::XorShiftRng;

use super::tensor::{HostData, HostTensor};
use crate::ir::DType;

/// How inputs are drawn.
#[derive(Clone, Debug, PartialEq)]
pub struct InputOptions {
    /// Seed of the generator.
    pub seed: u64,
    /// Standard deviation of float elements.
    pub scale: f64,
}

impl Default for InputOptions {
    fn default() -> Self {
        InputOptions {
            seed: 0,
            scale: 1.0,
        }
    }
}

/// What an i32 input holds, which decides how it is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum IntRole {
    /// Indices into a dim of another tensor: uniform in `[0, bound)`.
    Index {
        /// Exclusive upper bound.
        bound: i64,
    },
    /// Lengths: uniform in `[0, max]`.
    Length {
        /// Inclusive upper bound.
        max: i64,
    },
}

/// A generator for one run.
pub struct InputGen {
    rng: XorShiftRng,
    scale: f64,
}

impl InputGen {
    /// A generator for `opts`, independent per `stream` (the tensor index).
    pub fn new(opts: &InputOptions, stream: u64) -> InputGen {
        let seed = opts.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ stream.wrapping_add(1).wrapping_mul(0xD1B5_4A32_D192_ED03);
        InputGen {
            rng: XorShiftRng::seed_from_u64(seed),
            scale: opts.scale,
        }
    }

    /// One standard-normal draw (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1: f64 = self.rng.random::<f64>().max(f64::MIN_POSITIVE);
        let u2: f64 = self.rng.random::<f64>();
        (-2.0_f64 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// A float tensor of `dtype` with `n` scaled normal elements.
    pub fn floats(&mut self, dtype: DType, n: usize) -> Option<HostData> {
        let vals: Vec<f64> = (0..n).map(|_| self.normal() * self.scale).collect();
        HostData::from_f64(dtype, &vals)
    }

    /// An i32 tensor of `n` elements drawn for `role`.
    pub fn ints(&mut self, role: IntRole, n: usize) -> HostData {
        HostData::I32(
            (0..n)
                .map(|_| match role {
                    IntRole::Index { bound } => self.rng.random_range(0..bound.max(1)) as i32,
                    IntRole::Length { max } => self.rng.random_range(0..=max.max(0)) as i32,
                })
                .collect(),
        )
    }
}

/// Draws one tensor: floats for float dtypes, `role` (default: zeros) for
/// i32.
pub fn generate(
    name: &str,
    dtype: DType,
    shape: &[usize],
    role: Option<IntRole>,
    opts: &InputOptions,
    stream: u64,
) -> Option<HostTensor> {
    let n = shape.iter().product();
    let mut g = InputGen::new(opts, stream);
    let data = match (dtype, role) {
        (DType::I32, Some(r)) => g.ints(r, n),
        (DType::I32, None) => HostData::zeros(DType::I32, n)?,
        (d, _) => g.floats(d, n)?,
    };
    Some(HostTensor {
        name: name.to_string(),
        shape: shape.to_vec(),
        data,
    })
}

/// Draws every input of a kernel (`specs` as `Executable::input_specs`
/// gives them), input `i` from stream `i`, an i32 input as `role` says.
pub fn generate_all(
    specs: &[(String, DType, Vec<usize>)],
    opts: &InputOptions,
    role: impl Fn(&str) -> Option<IntRole>,
) -> Result<Vec<HostTensor>, String> {
    specs
        .iter()
        .enumerate()
        .map(|(i, (name, dtype, shape))| {
            generate(name, *dtype, shape, role(name), opts, i as u64)
                .ok_or_else(|| format!("cannot make input `{name}` of dtype {dtype}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_inputs_and_streams_differ() {
        let o = InputOptions {
            seed: 7,
            scale: 1.0,
        };
        let a = generate("q", DType::Bf16, &[4, 8], None, &o, 0).unwrap();
        let b = generate("q", DType::Bf16, &[4, 8], None, &o, 0).unwrap();
        let c = generate("k", DType::Bf16, &[4, 8], None, &o, 1).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.data, c.data);
        let v = a.data.to_f64();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 1.0, "{mean}");
    }

    #[test]
    fn int_roles_stay_in_range() {
        let mut g = InputGen::new(&InputOptions::default(), 3);
        let HostData::I32(ix) = g.ints(IntRole::Index { bound: 5 }, 1000) else {
            panic!()
        };
        assert!(ix.iter().all(|&i| (0..5).contains(&i)));
        let HostData::I32(len) = g.ints(IntRole::Length { max: 64 }, 1000) else {
            panic!()
        };
        assert!(len.iter().all(|&i| (0..=64).contains(&i)));
        assert!(len.contains(&0) || len.contains(&64) || len.len() == 1000);
    }
}
