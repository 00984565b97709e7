//! Which float64 reference a kernel is checked against.
//!
//! A kernel names its reference in a header comment line:
//!
//! ```text
//! // @reference: mla
//! ```
//!
//! Each kind is plain softmax attention ([`crate::reference::attention`])
//! over the kernel's tensors, found by name. All take the softmax scale from
//! the kernel's `scale` constant and produce `out` and `lse`; `v` has the
//! last dim of `out` (for MLA, the first 512 channels of the cache).
//!
//! | kind | tensors | rows see |
//! | --- | --- | --- |
//! | `mla` | `q[B,H,D]`, `kv[B,N,D]` | all `N` keys |
//! | `mla_mtp` | `q[B,S,H,D]`, `kv[B,N,D]` | row of token `s`: keys `< N - S + s + 1` |
//! | `mla_paged` | `q[B,H,D]` or `q[B,S,H,D]`, `kv[NB,P,D]`, `block_table[B,MAXB]`, `cache_seqlens[B]` | the `cache_seqlens[b]` keys of its pages; with `S` new tokens (the last `S` of the cache), token `s` sees those up to its own position |
//! | `gqa` | `q[B,HQ,D]`, `k[B,HK,N,D]`, `v[B,HK,N,DV]` | all keys of KV head `h / (HQ/HK)` |
//! | `mha_causal` | `q`, `k`, `v`: `[B,H,S,D]` | keys `<=` its own position |

use super::inputs::IntRole;
use super::tensor::HostTensor;
use crate::reference::{Problem, attention};

/// A reference kind (see the module doc).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ReferenceKind {
    /// MLA decode, one token.
    Mla,
    /// MLA decode, S tokens, causal among them.
    MlaMtp,
    /// MLA decode over a paged cache.
    MlaPaged,
    /// Grouped-query decode.
    Gqa,
    /// Causal multi-head attention (prefill).
    MhaCausal,
}

impl ReferenceKind {
    /// Every kind, in documentation order.
    pub const ALL: [ReferenceKind; 5] = [
        ReferenceKind::Mla,
        ReferenceKind::MlaMtp,
        ReferenceKind::MlaPaged,
        ReferenceKind::Gqa,
        ReferenceKind::MhaCausal,
    ];

    /// The name used after `@reference:`.
    pub fn name(self) -> &'static str {
        match self {
            ReferenceKind::Mla => "mla",
            ReferenceKind::MlaMtp => "mla_mtp",
            ReferenceKind::MlaPaged => "mla_paged",
            ReferenceKind::Gqa => "gqa",
            ReferenceKind::MhaCausal => "mha_causal",
        }
    }

    /// Finds the `// @reference: KIND` line of a source file: `Ok(None)` when
    /// there is none, `Err` naming the unknown kind.
    pub fn from_source(text: &str) -> Result<Option<ReferenceKind>, String> {
        for line in text.lines() {
            let Some(rest) = line.trim_start().strip_prefix("//") else {
                continue;
            };
            let Some(kind) = rest.trim_start().strip_prefix("@reference:") else {
                continue;
            };
            let kind = kind.trim();
            return ReferenceKind::ALL
                .into_iter()
                .find(|k| k.name() == kind)
                .map(Some)
                .ok_or_else(|| {
                    let known: Vec<&str> = ReferenceKind::ALL.iter().map(|k| k.name()).collect();
                    format!(
                        "unknown reference kind `{kind}` (known: {})",
                        known.join(", ")
                    )
                });
        }
        Ok(None)
    }

    /// How the i32 input `name` must be drawn, given the shapes of the
    /// kernel's tensors (`shape_of`).
    pub fn int_role(
        self,
        name: &str,
        shape_of: &dyn Fn(&str) -> Option<Vec<usize>>,
    ) -> Option<IntRole> {
        match (self, name) {
            (ReferenceKind::MlaPaged, "block_table") => Some(IntRole::Index {
                bound: shape_of("kv")?[0] as i64,
            }),
            (ReferenceKind::MlaPaged, "cache_seqlens") => {
                let bt = shape_of("block_table")?;
                let page = shape_of("kv")?[1];
                Some(IntRole::Length {
                    max: (bt[1] * page) as i64,
                })
            }
            _ => None,
        }
    }
}

/// The float64 `out` and `lse` of a kernel, row-major in the shapes of the
/// kernel's `out` and `lse` tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct Expected {
    /// Attention output.
    pub out: Vec<f64>,
    /// Natural-log sum-exp of the scaled scores (+inf for rows that see no key).
    pub lse: Vec<f64>,
    /// The magnitude of each element of `out` (`Σ_c w_c |v_c|`, see
    /// [`crate::reference`]), which bounds how far rounding the weights
    /// moves it (`run/compare.rs`).
    pub mag: Vec<f64>,
}

fn find<'a>(
    inputs: &'a [HostTensor],
    name: &str,
    rank: usize,
) -> Result<(&'a HostTensor, Vec<f64>), String> {
    let t = inputs
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| format!("the reference needs an input `{name}`"))?;
    if t.shape.len() != rank {
        return Err(format!(
            "the reference needs `{name}` of rank {rank}, it has shape {:?}",
            t.shape
        ));
    }
    Ok((t, t.data.to_f64()))
}

/// Rows `[lo, hi)` of the last-dim-major matrix `m` with `cols` columns,
/// keeping the first `keep` columns.
fn cols(m: &[f64], cols: usize, keep: usize) -> Vec<f64> {
    m.chunks(cols)
        .flat_map(|r| r[..keep].iter().copied())
        .collect()
}

/// Computes the reference for `kind` from the run's inputs; `dv` is the last
/// dim of `out`.
pub fn expected(
    kind: ReferenceKind,
    inputs: &[HostTensor],
    scale: f64,
    dv: usize,
) -> Result<Expected, String> {
    let mut out = Vec::new();
    let mut lse = Vec::new();
    let mut mag = Vec::new();
    let mut push = |q: &[f64],
                    k: &[f64],
                    v: &[f64],
                    rows: usize,
                    keys: usize,
                    d: usize,
                    vis: &dyn Fn(usize, usize) -> bool| {
        let p = Problem {
            q,
            k,
            v,
            rows,
            keys,
            d,
            dv,
            scale,
        };
        let o = attention(&p, vis).map_err(|e| e.to_string())?;
        out.extend(o.out);
        lse.extend(o.lse);
        mag.extend(o.mag);
        Ok::<(), String>(())
    };
    match kind {
        ReferenceKind::Mla | ReferenceKind::MlaMtp => {
            let rank = if kind == ReferenceKind::Mla { 3 } else { 4 };
            let (qt, q) = find(inputs, "q", rank)?;
            let (kt, kv) = find(inputs, "kv", 3)?;
            let (b, n, d) = (kt.shape[0], kt.shape[1], kt.shape[2]);
            let rows: usize = qt.shape[1..rank - 1].iter().product();
            let (s, h) = if rank == 4 {
                (qt.shape[1], qt.shape[2])
            } else {
                (1, rows)
            };
            if qt.shape[0] != b || qt.shape[rank - 1] != d || dv > d {
                return Err(format!(
                    "q {:?} and kv {:?} do not fit an MLA reference",
                    qt.shape, kt.shape
                ));
            }
            for bi in 0..b {
                let qb = &q[bi * rows * d..(bi + 1) * rows * d];
                let kb = &kv[bi * n * d..(bi + 1) * n * d];
                let vb = cols(kb, d, dv);
                let vis = move |r: usize, c: usize| c + s < n + r / h + 1;
                push(qb, kb, &vb, rows, n, d, &vis)?;
            }
        }
        ReferenceKind::MlaPaged => {
            // The same checks the run makes before launching (page ids and
            // lengths in range), so the indexing below cannot go wrong.
            super::validate::check_roles(kind, inputs)?;
            // q is [B, H, D], or [B, S, H, D] for S new tokens per
            // sequence, the last S of its cache, causal among them.
            let rank = match inputs.iter().find(|t| t.name == "q") {
                Some(t) if t.shape.len() == 4 => 4,
                _ => 3,
            };
            let (qt, q) = find(inputs, "q", rank)?;
            let (kt, kv) = find(inputs, "kv", 3)?;
            let (btt, bt) = find(inputs, "block_table", 2)?;
            let (_, lens) = find(inputs, "cache_seqlens", 1)?;
            let (b, d) = (qt.shape[0], qt.shape[rank - 1]);
            let (s, h) = match rank {
                4 => (qt.shape[1], qt.shape[2]),
                _ => (1, qt.shape[1]),
            };
            let h_rows = s * h;
            let (pages, page) = (kt.shape[0], kt.shape[1]);
            let maxb = btt.shape[1];
            for bi in 0..b {
                let len = (lens[bi].max(0.0) as usize).min(maxb * page);
                let mut keys = Vec::with_capacity(len * d);
                for i in 0..len {
                    let pid = bt[bi * maxb + i / page] as usize;
                    if pid >= pages {
                        return Err(format!(
                            "block_table[{bi}, {}] = {pid} is not a page of kv",
                            i / page
                        ));
                    }
                    let at = (pid * page + i % page) * d;
                    keys.extend_from_slice(&kv[at..at + d]);
                }
                let vb = cols(&keys, d, dv);
                // Row r is token r / h of the S new ones, at cache position
                // len - s + r / h: it sees the keys up to its own position.
                let vis = move |r: usize, c: usize| c + s < len + r / h + 1;
                push(
                    &q[bi * h_rows * d..(bi + 1) * h_rows * d],
                    &keys,
                    &vb,
                    h_rows,
                    len,
                    d,
                    &vis,
                )?;
            }
        }
        ReferenceKind::Gqa => {
            let (qt, q) = find(inputs, "q", 3)?;
            let (kt, k) = find(inputs, "k", 4)?;
            let (_, v) = find(inputs, "v", 4)?;
            let (b, hq, d) = (qt.shape[0], qt.shape[1], qt.shape[2]);
            let (hk, n) = (kt.shape[1], kt.shape[2]);
            if hk == 0 || hq % hk != 0 {
                return Err(format!("{hq} query heads do not group over {hk} KV heads"));
            }
            let g = hq / hk;
            for bi in 0..b {
                for hi in 0..hk {
                    let qa = (bi * hq + hi * g) * d;
                    let ka = (bi * hk + hi) * n;
                    push(
                        &q[qa..qa + g * d],
                        &k[ka * d..(ka + n) * d],
                        &v[ka * dv..(ka + n) * dv],
                        g,
                        n,
                        d,
                        &|_, _| true,
                    )?;
                }
            }
        }
        ReferenceKind::MhaCausal => {
            let (qt, q) = find(inputs, "q", 4)?;
            let (_, k) = find(inputs, "k", 4)?;
            let (_, v) = find(inputs, "v", 4)?;
            let (b, h, s, d) = (qt.shape[0], qt.shape[1], qt.shape[2], qt.shape[3]);
            for bh in 0..b * h {
                let a = bh * s;
                push(
                    &q[a * d..(a + s) * d],
                    &k[a * d..(a + s) * d],
                    &v[a * dv..(a + s) * dv],
                    s,
                    s,
                    d,
                    &|r, c| c <= r,
                )?;
            }
        }
    }
    Ok(Expected { out, lse, mag })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::tensor::HostData;

    fn t(name: &str, shape: &[usize], f: impl Fn(usize) -> f64) -> HostTensor {
        let n = shape.iter().product();
        HostTensor {
            name: name.into(),
            shape: shape.to_vec(),
            data: HostData::F32((0..n).map(|i| f(i) as f32).collect()),
        }
    }

    #[test]
    fn directive_is_found_and_unknown_kinds_named() {
        assert_eq!(
            ReferenceKind::from_source("// x\n// @reference: mla_paged\nkernel"),
            Ok(Some(ReferenceKind::MlaPaged))
        );
        assert_eq!(ReferenceKind::from_source("kernel k() {}"), Ok(None));
        assert!(
            ReferenceKind::from_source("// @reference: nope")
                .unwrap_err()
                .contains("nope")
        );
    }

    #[test]
    fn mtp_with_one_token_equals_mla() {
        let q = t("q", &[2, 3, 4], |i| (i as f64 * 0.37).sin());
        let kv = t("kv", &[2, 5, 4], |i| (i as f64 * 0.11).cos());
        let a = expected(ReferenceKind::Mla, &[q.clone(), kv.clone()], 0.5, 2).unwrap();
        let q4 = HostTensor {
            shape: vec![2, 1, 3, 4],
            ..q
        };
        let b = expected(ReferenceKind::MlaMtp, &[q4, kv], 0.5, 2).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.out.len(), 2 * 3 * 2);
    }

    #[test]
    fn paged_with_identity_table_equals_mla() {
        let q = t("q", &[1, 2, 4], |i| (i as f64 * 0.3).sin());
        let kv = t("kv", &[1, 8, 4], |i| (i as f64 * 0.7).cos());
        let pages = HostTensor {
            name: "kv".into(),
            shape: vec![4, 2, 4],
            data: kv.data.clone(),
        };
        let bt = HostTensor {
            name: "block_table".into(),
            shape: vec![1, 4],
            data: HostData::I32(vec![0, 1, 2, 3]),
        };
        let lens = HostTensor {
            name: "cache_seqlens".into(),
            shape: vec![1],
            data: HostData::I32(vec![8]),
        };
        let a = expected(ReferenceKind::Mla, &[q.clone(), kv], 1.0, 4).unwrap();
        let b = expected(ReferenceKind::MlaPaged, &[q, pages, bt, lens], 1.0, 4).unwrap();
        assert_eq!(a, b);
    }
}
