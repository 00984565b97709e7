//! The AMLA paper's ablation as one table: MLA decode at B = 96, H = 128,
//! Sq = 1 and 2, N = 1024…16384, predicted FU of
//! (a) the plain FlashAttention schedule (`--disable-pass mul-to-add
//! -D PRELOAD=0`), (b) + MUL-to-ADD (`-D PRELOAD=0`), (c) + preload
//! (`--disable-pass mul-to-add`), (d) both (the default pipeline), then the
//! default pipeline with the KV block closest to CANN's released tiling
//! that the compiler accepts (`-D BN=256`; see `docs/SIMULATION.md` for
//! what of CANN's tiling cannot be expressed), and (d) read as if the KV
//! loads into L1 were double-buffered (`--double-buffer-l1`, a what-if of
//! the model: `plan-memory` gives them one slot).

use std::fmt::Write as _;

use super::predict;
use crate::diag::SourceFile;
use crate::simulate::{Report, SimConfig};
use crate::target::Target;

/// MLA decode with two query tokens per sequence.
const MLA_DECODE_MTP: &str = include_str!("../../../../dsl-examples/mla_decode_mtp.amla");

/// KV lengths of the table.
pub(crate) const NS: [u32; 5] = [1024, 2048, 4096, 8192, 16384];

struct Variant {
    name: &'static str,
    disabled: &'static [&'static str],
    defines: &'static [(&'static str, &'static str)],
    double_l1: bool,
}

const VARIANTS: [Variant; 6] = [
    Variant {
        name: "(a) FA",
        disabled: &["mul-to-add"],
        defines: &[("PRELOAD", "0")],
        double_l1: false,
    },
    Variant {
        name: "(b) +M2A",
        disabled: &[],
        defines: &[("PRELOAD", "0")],
        double_l1: false,
    },
    Variant {
        name: "(c) +preload",
        disabled: &["mul-to-add"],
        defines: &[],
        double_l1: false,
    },
    Variant {
        name: "(d) both",
        disabled: &[],
        defines: &[],
        double_l1: false,
    },
    Variant {
        name: "(d) BN=256",
        disabled: &[],
        defines: &[("BN", "256")],
        double_l1: false,
    },
    Variant {
        name: "(d) 2xKV",
        disabled: &[],
        defines: &[],
        double_l1: true,
    },
];

/// The table (text, or JSON rows).
pub(crate) fn table(
    _src: &SourceFile,
    extra: &[(String, String)],
    target: &Target,
    json: bool,
) -> Result<String, String> {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "MLA decode, B = 96, H = 128 on {} — predicted FU (model, not a measurement); \
         bound pipe of (d) in brackets",
        target.name
    );
    let _ = writeln!(
        text,
        "{:>3} {:>6} | {:>8} {:>9} {:>13} {:>9} {:<13} | {:>11} {:<13} | {:>9} {:<13}",
        "Sq",
        "N",
        "(a) FA",
        "(b) +M2A",
        "(c) +preload",
        "(d) both",
        "[bound (d)]",
        "(d) BN=256",
        "[bound]",
        "(d) 2xKV",
        "[bound]"
    );
    let mut rows = Vec::new();
    let cfg = SimConfig {
        trace_items: 0,
        ..SimConfig::default()
    };
    for sq in [1u32, 2] {
        let src = if sq == 1 {
            SourceFile::new(
                "dsl-examples/mla_decode.amla".to_string(),
                super::MLA_DECODE.to_string(),
            )
        } else {
            SourceFile::new(
                "dsl-examples/mla_decode_mtp.amla".to_string(),
                MLA_DECODE_MTP.to_string(),
            )
        };
        for n in NS {
            let mut cells: Vec<Result<Report, String>> = Vec::new();
            for v in &VARIANTS {
                let mut defines: Vec<(String, String)> = vec![
                    ("B".into(), "96".into()),
                    ("H".into(), "128".into()),
                    ("N".into(), n.to_string()),
                ];
                defines.extend(
                    v.defines
                        .iter()
                        .map(|(a, b)| (a.to_string(), b.to_string())),
                );
                defines.extend(extra.iter().cloned());
                let disabled: Vec<String> = v.disabled.iter().map(|s| s.to_string()).collect();
                let cfg = SimConfig {
                    double_buffer_l1: v.double_l1,
                    ..cfg.clone()
                };
                cells.push(predict(&src, &defines, &disabled, target, &cfg));
            }
            let fu = |r: &Result<Report, String>| match r {
                Ok(r) if r.notes.iter().any(|n| n.starts_with("what-if not applied")) => {
                    "n/a".to_string()
                }
                Ok(r) => format!("{:.1}%", r.fu * 100.0),
                Err(_) => "—".to_string(),
            };
            let bound = |r: &Result<Report, String>| match r {
                Ok(r) if r.notes.iter().any(|n| n.starts_with("what-if not applied")) => {
                    "[no room in L1]".to_string()
                }
                Ok(r) => format!("[{} {}]", r.bound.0.name(), r.bound.1.name()),
                Err(_) => "[does not fit]".to_string(),
            };
            let _ = writeln!(
                text,
                "{:>3} {:>6} | {:>8} {:>9} {:>13} {:>9} {:<13} | {:>11} {:<13} | {:>9} {:<13}",
                sq,
                n,
                fu(&cells[0]),
                fu(&cells[1]),
                fu(&cells[2]),
                fu(&cells[3]),
                bound(&cells[3]),
                fu(&cells[4]),
                bound(&cells[4]),
                fu(&cells[5]),
                bound(&cells[5])
            );
            let mut row = serde_json::Map::new();
            row.insert("sq".into(), sq.into());
            row.insert("n".into(), n.into());
            for (v, c) in VARIANTS.iter().zip(&cells) {
                row.insert(
                    v.name.into(),
                    match c {
                        Ok(r) => serde_json::json!({
                            "fu": r.fu, "time_us": r.time_ns / 1e3,
                            "bound": format!("{} {}", r.bound.0.name(), r.bound.1.name()),
                        }),
                        Err(e) => serde_json::json!({ "error": e }),
                    },
                );
            }
            rows.push(serde_json::Value::Object(row));
        }
    }
    let _ = writeln!(
        text,
        "— : the compiler refuses the tiling (the KV block and the query block do not fit L1 together).\n\
         2xKV: (d) with every GM->L1 load read as double-buffered (a what-if of the model; n/a: L1 has no room for a second KV slot)."
    );
    if json {
        Ok(format!(
            "{}\n",
            serde_json::json!({ "target": target.name, "rows": rows })
        ))
    } else {
        Ok(text)
    }
}
