//! `tile`: hierarchical tiling of the Cube's matmuls.
//!
//! **Pass order.** `tile` runs *before* `plan-memory`
//! (`range-fold → mul-to-add → split → preload → tile → plan-memory`): it works on
//! unplaced IR and emits `copy … to l0a|l0b` chunks that `plan-memory` then
//! places; run after `plan-memory` it refuses untiled matmuls (their
//! operands would already have been placed whole, which for MLA does not
//! fit L0A). Running it twice is harmless: a matmul whose operands are
//! already `l0a`/`l0b` copies is left alone.
//!
//! # Choosing the chunks
//!
//! A matmul `a[M, K] @ b → c[M, N]` (bf16/f16 in, f32 out) is cut into
//! chunks `mc × kc` of `a`, `kc × nc` of `b` and `mc × nc` of `c` such that
//! each fits *half* of L0A, L0B and L0C respectively (the halves are the
//! ping-pong buffers: MTE1 fills one while the Cube reads the other; with
//! [`TileConfig::double_buffer`] off, the whole buffer). Capacities come
//! from the target file, chunk sizes are multiples of the Cube fractal
//! (`cube.fractal` of the target file) unless a whole dim fits. In order:
//!
//! 1. `mc`: all of M if a `mc × 16` a-chunk and a `mc × 16` c-chunk fit;
//! 2. `nc`: the largest that fits L0C's half beside `mc` (and L0B's with a
//!    16-deep K);
//! 3. `kc`: the largest that fits both L0A's and L0B's halves.
//!
//! Each is the largest fractal multiple that fits, unless a fractal
//! multiple that *divides* the dim is at least half as large: uniform
//! chunks keep the ping-pong steady and need no tail code. For MLA's QK
//! (`[128, 576] × [128, 576]ᵀ`) this gives K chunks of 96 (6 steps, a- and
//! b-chunks 24 KiB ≤ 32 KiB; 128 fits too but leaves a 64 tail) — the same
//! 96 CANN's kernel uses at L0; for P·V (`[128, 128] × [128, 512]`) it
//! gives N chunks of 128 (4 steps, c-chunk 64 KiB = half of L0C). A matmul
//! that fits whole is not cut, but still gets its L0 copies.
//!
//! # Emitted code
//!
//! The steps `(m, n, k)` run k innermost. Each step's operand chunks are
//! `extract`ed from the L1 tile (a view, see `plan-memory`) and copied to
//! L0A/L0B; a chunk equal to the previous step's is reused. The copies for
//! step s + 1 are issued before the matmul of step s, so that two chunks
//! of each operand are live at once and `plan-memory`'s allocator puts them
//! in alternate places (double buffering). The k-steps of one output chunk
//! accumulate (`matmul … acc`). When c is cut in M or N, its consumers (only
//! `store`/`atomic_add` exist on the Cube after `split`; anything else is an
//! error) are rewritten into one write per chunk (FixPipe), each issued
//! after the *next* chunk's first matmul so that two L0C chunks are live
//! (ping-pong in L0C too). The chunk sequence is emitted where the first
//! consumer was; when c is not cut, where the matmul was, and c's uses take
//! the last chunk's result.
//!
//! # Example
//!
//! Before (`[128, 64] × [64, 512]`, c-chunks must be ≤ 64 KiB):
//!
//! ```text
//! kernel tiny
//! dim B
//! input kv: bf16[B, 64, 512]
//! workspace ws_p: bf16[128, 64]
//! workspace ws_o: f32[B, 128, 512]
//!
//! func cube {
//!   %c0 = iconst 0 : i32
//!   %B = dim B : i32
//!   parallel %b in %c0..%B {
//!     %p = load ws_p[.., ..] : bf16[128, 64]
//!     %v = load kv[%b, .., ..] : bf16[64, 512]
//!     %pv = matmul %p, %v kn : f32[128, 512]
//!     atomic_add ws_o[%b, .., ..], %pv
//!   }
//! }
//!
//! func vector {
//!   %c0 = iconst 0 : i32
//!   %B = dim B : i32
//!   parallel %b in %c0..%B {
//!   }
//! }
//! ```
//!
//! After (4 N chunks of 128; `%p` fits whole):
//!
//! ```text
//! kernel tiny
//! dim B
//! input kv: bf16[B, 64, 512]
//! workspace ws_p: bf16[128, 64]
//! workspace ws_o: f32[B, 128, 512]
//!
//! func cube {
//!   %c0 = iconst 0 : i32
//!   %B = dim B : i32
//!   parallel %b in %c0..%B {
//!     %p = load ws_p[.., ..] : bf16[128, 64]
//!     %v = load kv[%b, .., ..] : bf16[64, 512]
//!     %p_l0a = copy %p to l0a : bf16[128, 64] l0a
//!     %c0.1 = iconst 0 : i32
//!     %v_n0 = extract %v[.., %c0.1+:128] : bf16[64, 128]
//!     %v_n0_l0b = copy %v_n0 to l0b : bf16[64, 128] l0b
//!     %c128 = iconst 128 : i32
//!     %v_n1 = extract %v[.., %c128+:128] : bf16[64, 128]
//!     %v_n1_l0b = copy %v_n1 to l0b : bf16[64, 128] l0b
//!     %pv_n0 = matmul %p_l0a, %v_n0_l0b kn : f32[128, 128]
//!     %c256 = iconst 256 : i32
//!     %v_n2 = extract %v[.., %c256+:128] : bf16[64, 128]
//!     %v_n2_l0b = copy %v_n2 to l0b : bf16[64, 128] l0b
//!     %pv_n1 = matmul %p_l0a, %v_n1_l0b kn : f32[128, 128]
//!     atomic_add ws_o[%b, .., %c0.1+:128], %pv_n0
//!     %c384 = iconst 384 : i32
//!     %v_n3 = extract %v[.., %c384+:128] : bf16[64, 128]
//!     %v_n3_l0b = copy %v_n3 to l0b : bf16[64, 128] l0b
//!     %pv_n2 = matmul %p_l0a, %v_n2_l0b kn : f32[128, 128]
//!     atomic_add ws_o[%b, .., %c128+:128], %pv_n1
//!     %pv_n3 = matmul %p_l0a, %v_n3_l0b kn : f32[128, 128]
//!     atomic_add ws_o[%b, .., %c256+:128], %pv_n2
//!     atomic_add ws_o[%b, .., %c384+:128], %pv_n3
//!   }
//! }
//!
//! func vector {
//!   %c0 = iconst 0 : i32
//!   %B = dim B : i32
//!   parallel %b in %c0..%B {
//!   }
//! }
//! ```

use rustc_hash::FxHashMap;
use std::fmt;

use crate::ir::{
    BLayout, BinaryOp, Block, Builder, Index, Inst, InstKind, Kernel, Space, Unit, Value,
};
use crate::target::Target;

use super::plan_memory::{buffer_label, tile_label, value_label};
use super::{Explain, Pass, PassContext, PassError};

/// The pass name used on the command line (`--print-after tile`).
pub const NAME: &str = "tile";

/// Settings of `tile`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TileConfig {
    /// Size chunks for half of each L0 buffer (ping-pong); when false, for
    /// the whole buffer (no overlap of MTE1 and Cube).
    pub double_buffer: bool,
    /// Whether the report's notes are written ([`Explain::Record`] by
    /// default; the pass takes [`PassContext::explain`]).
    pub explain: Explain,
}

impl Default for TileConfig {
    fn default() -> Self {
        TileConfig {
            double_buffer: true,
            explain: Explain::Record,
        }
    }
}

/// How one matmul is cut: the dims and the chunk sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tiling {
    /// Rows of `a` and `c`.
    pub m: u64,
    /// Columns of `c`.
    pub n: u64,
    /// The reduced dim.
    pub k: u64,
    /// Rows per chunk.
    pub mc: u64,
    /// Columns of `c` per chunk.
    pub nc: u64,
    /// Reduced-dim length per chunk.
    pub kc: u64,
    /// Bytes per operand element (bf16/f16: 2).
    pub in_bytes: u64,
    /// Bytes per result element (f32: 4).
    pub out_bytes: u64,
}

impl Tiling {
    /// Chunks along M, N and K (the last chunk may be shorter).
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.m.div_ceil(self.mc),
            self.n.div_ceil(self.nc),
            self.k.div_ceil(self.kc),
        )
    }
    /// Number of matmul steps.
    pub fn steps(&self) -> u64 {
        let (a, b, c) = self.counts();
        a * b * c
    }
    /// Bytes of the largest `a` chunk (in L0A).
    pub fn a_chunk_bytes(&self) -> u64 {
        self.mc * self.kc * self.in_bytes
    }
    /// Bytes of the largest `b` chunk (in L0B).
    pub fn b_chunk_bytes(&self) -> u64 {
        self.kc * self.nc * self.in_bytes
    }
    /// Bytes of the largest `c` chunk (in L0C).
    pub fn c_chunk_bytes(&self) -> u64 {
        self.mc * self.nc * self.out_bytes
    }
}

/// What `tile` did, for `--explain`-style output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TileReport {
    /// One line per matmul.
    pub notes: Vec<String>,
    /// The tiling chosen for each matmul, in program order.
    pub tilings: Vec<Tiling>,
}

/// Why tiling failed: no chunking fits (naming the buffer, the tile and the
/// bytes), or IR the pass does not expect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TileError {
    /// The full message.
    pub message: String,
    /// True for a problem of the user's program (no chunking fits), false
    /// for IR an earlier pass should not have produced.
    pub user: bool,
}

impl fmt::Display for TileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TileError {}

impl From<TileError> for PassError {
    fn from(e: TileError) -> PassError {
        if e.user {
            PassError::User {
                message: e.message,
                span: None,
            }
        } else {
            PassError::Internal {
                pass: NAME.into(),
                message: e.message,
            }
        }
    }
}

type Result<T> = std::result::Result<T, TileError>;

fn fail<T>(message: impl Into<String>) -> Result<T> {
    Err(internal(message))
}

fn internal(message: impl Into<String>) -> TileError {
    TileError {
        message: message.into(),
        user: false,
    }
}

/// The `tile` pass: [`tile`] with its notes sent to `--explain`.
#[derive(Clone, Debug, Default)]
pub struct Tile {
    /// Its settings.
    pub config: TileConfig,
}

impl Pass for Tile {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(&self, k: &mut Kernel, cx: &PassContext) -> std::result::Result<(), PassError> {
        let config = TileConfig {
            explain: cx.explain,
            ..self.config.clone()
        };
        let report = tile(k, cx.target, &config)?;
        for n in report.notes {
            cx.note(n);
        }
        Ok(())
    }

    fn explain(&self) -> &'static str {
        "Cuts every Cube matmul into chunks that fit half of L0A, L0B and L0C (ping-pong \
         buffers), fractal-aligned, and emits the chunk sequence with each next chunk's \
         L1-to-L0 copies issued before the current chunk's matmul; cut results are written to \
         GM chunk by chunk. Runs before `plan-memory`."
    }

    fn requires(&self) -> &'static [&'static str] {
        &["split"]
    }
}

/// The chunk length for a dim of length `d` whose chunk may be at most
/// `limit` long: all of `d` if it fits, else a multiple of the fractal `f`
/// (a divisor of `d` when one is at least half the largest fit).
fn pick(d: u64, f: u64, limit: u64) -> Option<u64> {
    if d <= limit {
        return Some(d);
    }
    let largest = (limit / f) * f;
    if largest == 0 {
        return None;
    }
    let divisor = (1..=largest / f)
        .rev()
        .map(|i| i * f)
        .find(|c| d.is_multiple_of(*c));
    match divisor {
        Some(c) if 2 * c >= largest => Some(c),
        _ => Some(largest),
    }
}

/// Names the operand or buffer that does not fit, for [`choose_tiling`]'s
/// error: `(buffer, which operand, bytes needed, bytes available)`.
pub type NoFit = (Space, &'static str, u64, u64);

/// Chooses the chunks of an `[m, k] × [k, n]` matmul (see the module doc).
/// `Err` names the buffer that cannot hold even the smallest chunk.
pub fn choose_tiling(
    target: &Target,
    (m, n, k): (u64, u64, u64),
    in_bytes: u64,
    out_bytes: u64,
    double_buffer: bool,
) -> std::result::Result<Tiling, NoFit> {
    let div = if double_buffer { 2 } else { 1 };
    let b = &target.buffers;
    let (ha, hb, hc) = (b.l0a / div, b.l0b / div, b.l0c / div);
    let [fm, fnn, fk] = target.cube.fractal.map(u64::from);
    let (min_m, min_n, min_k) = (m.min(fm), n.min(fnn), k.min(fk));
    // The smallest chunks must fit, else name the culprit.
    let checks = [
        (Space::L0A, "a", min_m * min_k * in_bytes, ha),
        (Space::L0B, "b", min_k * min_n * in_bytes, hb),
        (Space::L0C, "c", min_m * min_n * out_bytes, hc),
    ];
    if let Some(&bad) = checks.iter().find(|c| c.2 > c.3) {
        return Err(bad);
    }
    let limit_m = (ha / (min_k * in_bytes)).min(hc / (min_n * out_bytes));
    let mc = pick(m, fm, limit_m).unwrap_or(min_m);
    let limit_n = (hc / (mc * out_bytes)).min(hb / (min_k * in_bytes));
    let nc = pick(n, fnn, limit_n).unwrap_or(min_n);
    let limit_k = (ha / (mc * in_bytes)).min(hb / (nc * in_bytes));
    let kc = pick(k, fk, limit_k).unwrap_or(min_k);
    Ok(Tiling {
        m,
        n,
        k,
        mc,
        nc,
        kc,
        in_bytes,
        out_bytes,
    })
}

/// Cuts every matmul of the Cube function into L0-sized, double-buffered
/// chunks (see the module doc). Fails when no chunking fits, on unexpected
/// consumers of a cut matmul, and on placed (post-`plan-memory`) input.
pub fn tile(kernel: &mut Kernel, target: &Target, config: &TileConfig) -> Result<TileReport> {
    let mut report = TileReport::default();
    for fi in 0..kernel.funcs.len() {
        match kernel.funcs[fi].unit {
            Unit::Any => {
                config.explain.push(&mut report.notes, || {
                    "tile: the kernel is not split; nothing to do".into()
                });
            }
            Unit::Vector => {}
            Unit::Cube => {
                let body = kernel.funcs[fi].body;
                tile_func(kernel, body, target, config, &mut report)?;
            }
        }
    }
    Ok(report)
}

fn block_map(k: &Kernel, block: Block, out: &mut FxHashMap<Inst, Block>) {
    for &i in &k.blocks[block].insts {
        out.insert(i, block);
        if let Some(b) = k.insts[i].kind.body() {
            block_map(k, b, out);
        }
    }
}

fn is_copy_to(k: &Kernel, v: Value, space: Space) -> bool {
    matches!(
        k.def_inst(v).map(|i| &k.insts[i].kind),
        Some(InstKind::Copy { to, .. }) if *to == space
    )
}

fn tile_func(
    k: &mut Kernel,
    body: Block,
    target: &Target,
    config: &TileConfig,
    report: &mut TileReport,
) -> Result<()> {
    let mut matmuls = Vec::new();
    k.walk(body, &mut |i| {
        if matches!(k.insts[i].kind, InstKind::Matmul { .. }) {
            matmuls.push(i);
        }
    });
    for m in matmuls {
        let InstKind::Matmul { a, b, b_layout, .. } = k.insts[m].kind.clone() else {
            continue;
        };
        if is_copy_to(k, a, Space::L0A) && is_copy_to(k, b, Space::L0B) {
            continue; // already tiled
        }
        let Some(&c) = k.insts[m].results.first() else {
            return fail("tile: a matmul without a result");
        };
        let placed = [a, b, c]
            .iter()
            .any(|&v| k.ty(v).as_tile().is_some_and(|t| t.space != Space::Any));
        if placed {
            return fail(format!(
                "tile must run before plan-memory: matmul {} has placed operands",
                value_label(k, c)
            ));
        }
        let (Some(ta), Some(_), Some(tc)) = (
            k.ty(a).as_tile().cloned(),
            k.ty(b).as_tile().cloned(),
            k.ty(c).as_tile().cloned(),
        ) else {
            return fail(format!(
                "tile: matmul {} has a scalar operand",
                value_label(k, c)
            ));
        };
        let ([mm, kk], [_, nn]) = (ta.shape.as_slice(), tc.shape.as_slice()) else {
            return fail(format!(
                "tile: matmul {} needs rank-2 tiles, got {} and {}",
                value_label(k, c),
                tile_label(k, a),
                tile_label(k, c)
            ));
        };
        let dims = (*mm, *nn, *kk);
        let tiling = choose_tiling(
            target,
            dims,
            ta.dtype.bytes(),
            tc.dtype.bytes(),
            config.double_buffer,
        )
        .map_err(|(space, which, need, have)| {
            let operand = match which {
                "a" => a,
                "b" => b,
                _ => c,
            };
            let half = if config.double_buffer { "half of " } else { "" };
            TileError {
                user: true,
                message: format!(
                    "matmul {}: no L0 tiling fits: even the smallest chunk of tile {} needs \
                     {need} bytes of {} but {half}{} holds {have} bytes",
                    value_label(k, c),
                    tile_label(k, operand),
                    buffer_label(space),
                    buffer_label(space)
                ),
            }
        })?;
        let (cm, cn, ck) = tiling.counts();
        let half = |s: u64| if config.double_buffer { s / 2 } else { s };
        config.explain.push(&mut report.notes, || format!(
            "cube: matmul {} {} x {}{}: M {}×{cm}, N {}×{cn}, K {}×{ck} = {} steps; chunks a {} B \
             (L0A half {}), b {} B (L0B half {}), c {} B (L0C half {})",
            value_label(k, c),
            tile_label(k, a),
            tile_label(k, b),
            if b_layout == BLayout::NK { "ᵀ" } else { "" },
            tiling.mc,
            tiling.nc,
            tiling.kc,
            tiling.steps(),
            tiling.a_chunk_bytes(),
            half(target.buffers.l0a),
            tiling.b_chunk_bytes(),
            half(target.buffers.l0b),
            tiling.c_chunk_bytes(),
            half(target.buffers.l0c),
        ));
        rewrite(k, body, m, &tiling)?;
        report.tilings.push(tiling);
    }
    Ok(())
}

/// Emits instructions at one place, with a cache of `iconst`s.
struct Emit<'k> {
    b: Builder<'k>,
    consts: FxHashMap<i64, Value>,
}

impl Emit<'_> {
    fn ins(&mut self, kind: InstKind) -> Result<Inst> {
        self.b
            .ins(kind)
            .map_err(|e| internal(format!("tile: internal: {e}")))
    }

    fn value(&mut self, kind: InstKind, name: Option<String>) -> Result<Value> {
        let v = self
            .b
            .value(kind)
            .map_err(|e| internal(format!("tile: internal: {e}")))?;
        self.b.kernel.values[v].name = name;
        Ok(v)
    }

    fn iconst(&mut self, c: u64) -> Result<Value> {
        let c = c as i64;
        if let Some(&v) = self.consts.get(&c) {
            return Ok(v);
        }
        let v = self.value(InstKind::IConst(c), Some(format!("c{c}")))?;
        self.consts.insert(c, v);
        Ok(v)
    }

    /// `src[ranges]`, or `src` itself when the ranges cover it.
    fn extract(&mut self, src: Value, ranges: &[(u64, u64, u64)], name: String) -> Result<Value> {
        if ranges.iter().all(|&(o, len, dim)| o == 0 && len == dim) {
            return Ok(src);
        }
        let mut index = Vec::new();
        for &(o, len, dim) in ranges {
            index.push(if o == 0 && len == dim {
                Index::Full
            } else {
                Index::Range {
                    start: self.iconst(o)?,
                    len,
                }
            });
        }
        self.value(InstKind::Extract { src, index }, Some(name))
    }
}

/// `v`'s source name, or `role` (`a`, `b`, `c`) for an unnamed value.
fn base_name(k: &Kernel, v: Value, role: &str) -> String {
    k.values[v].name.clone().unwrap_or_else(|| role.into())
}

/// A chunk label: `k2`, `n1`, `m0k2`… (only the dims that are cut).
fn label(parts: &[(char, u64, u64)]) -> String {
    parts
        .iter()
        .filter(|p| p.2 > 1)
        .map(|p| format!("{}{}", p.0, p.1))
        .collect()
}

fn with_label(base: &str, l: &str) -> String {
    if l.is_empty() {
        base.to_string()
    } else {
        format!("{base}_{l}")
    }
}

fn rewrite(k: &mut Kernel, func_body: Block, m: Inst, t: &Tiling) -> Result<()> {
    let InstKind::Matmul {
        a,
        b,
        b_layout,
        acc,
    } = k.insts[m].kind.clone()
    else {
        return Ok(());
    };
    let c = k.insts[m].results[0];
    let mut blocks = FxHashMap::default();
    block_map(k, func_body, &mut blocks);
    let block = blocks[&m];
    let (nm, nn, nk) = t.counts();
    let cut_out = nm > 1 || nn > 1;

    // Consumers of c.
    let mut consumers = Vec::new();
    k.walk(func_body, &mut |i| {
        let mut uses = false;
        k.insts[i].kind.for_each_operand(|v| uses |= v == c);
        if uses {
            consumers.push(i);
        }
    });
    let insts = k.blocks[block].insts.clone();
    let idx_of = |i: Inst| insts.iter().position(|&x| x == i);
    let Some(mpos) = idx_of(m) else {
        return fail("tile: internal: matmul not in its block");
    };
    let mut cons_pos = Vec::new();
    if cut_out {
        if acc.is_some() {
            return fail(format!(
                "tile: matmul {} accumulates into {} and must be cut in M or N: unsupported",
                value_label(k, c),
                tile_label(k, acc.unwrap_or(c))
            ));
        }
        for &u in &consumers {
            let ok = match &k.insts[u].kind {
                InstKind::Store { value, index, .. } | InstKind::AtomicAdd { value, index, .. } => {
                    *value == c
                        && !index.iter().any(|ix| {
                            matches!(ix, Index::Point(v) | Index::Range { start: v, .. } if *v == c)
                        })
                }
                _ => false,
            };
            let pos = idx_of(u).filter(|_| blocks.get(&u) == Some(&block));
            match (ok, pos) {
                (true, Some(p)) => cons_pos.push(p),
                _ => {
                    return fail(format!(
                        "tile: matmul {} must be cut into L0C chunks, but it is used by `{}`{}; \
                         only `store`/`atomic_add` in the matmul's block can take chunks",
                        tile_label(k, c),
                        k.insts[u].kind.opcode(),
                        if pos.is_none() {
                            " in another block"
                        } else {
                            ""
                        }
                    ));
                }
            }
        }
        cons_pos.sort_unstable();
        if let (Some(&first), Some(&last)) = (cons_pos.first(), cons_pos.last()) {
            for &i in insts.iter().take(last).skip(first + 1) {
                if cons_pos.contains(&idx_of(i).unwrap_or(usize::MAX)) {
                    continue;
                }
                if k.insts[i].kind.has_effect() {
                    return fail(format!(
                        "tile: cannot write matmul {} chunk by chunk: `{}` sits between its stores",
                        value_label(k, c),
                        k.insts[i].kind.opcode()
                    ));
                }
            }
            // Index operands of every consumer must exist at the first one.
            for &p in &cons_pos {
                let mut late = None;
                k.insts[insts[p]].kind.for_each_operand(|v| {
                    if let Some(d) = k.def_inst(v)
                        && blocks.get(&d) == Some(&block)
                        && idx_of(d).is_some_and(|dp| dp >= first)
                    {
                        late = Some(v);
                    }
                });
                if let Some(v) = late {
                    return fail(format!(
                        "tile: cannot write matmul {} chunk by chunk: store index {} is defined \
                         after its first store",
                        value_label(k, c),
                        value_label(k, v)
                    ));
                }
            }
        }
    }

    // Remove the matmul (and, when cut, its consumers); find the insertion
    // point.
    let removed: Vec<Inst> = if cut_out {
        cons_pos.iter().map(|&p| insts[p]).collect()
    } else {
        Vec::new()
    };
    let at = if cut_out {
        match cons_pos.first() {
            Some(&f) => f - 1,
            None => mpos, // dead matmul: nothing to emit but its chunks
        }
    } else {
        mpos
    };
    let stores: Vec<InstKind> = removed.iter().map(|&i| k.insts[i].kind.clone()).collect();
    k.blocks[block]
        .insts
        .retain(|i| *i != m && !removed.contains(i));

    let (an, bn, cname) = (
        base_name(k, a, "a"),
        base_name(k, b, "b"),
        base_name(k, c, "c"),
    );
    let mut e = Emit {
        b: Builder::at(k, block, at),
        consts: FxHashMap::default(),
    };

    // The steps.
    let mut steps = Vec::new();
    for mi in 0..nm {
        for ni in 0..nn {
            for ki in 0..nk {
                steps.push((mi, ni, ki));
            }
        }
    }
    let mut ch = Chunks {
        t,
        steps,
        counts: (nm, nn, nk),
        a,
        b,
        b_layout,
        an,
        bn,
        a_chunks: Vec::new(),
        b_chunks: Vec::new(),
    };
    ch.prefetch(&mut e, 0)?;
    let mut cur: Option<Value> = None;
    let mut pending: Option<(Value, u64, u64)> = None;
    for s in 0..ch.steps.len() {
        let (mi, ni, ki) = ch.steps[s];
        if s + 1 < ch.steps.len() {
            ch.prefetch(&mut e, s + 1)?;
        }
        let acc_in = if ki == 0 { acc } else { cur };
        let name = with_label(&cname, &label(&[('m', mi, nm), ('n', ni, nn)]));
        let r = e.value(
            InstKind::Matmul {
                a: ch.a_chunks[s],
                b: ch.b_chunks[s],
                b_layout,
                acc: acc_in,
            },
            Some(name),
        )?;
        cur = Some(r);
        if ki == 0
            && let Some((pv, pm, pn)) = pending.take()
        {
            emit_stores(&mut e, t, &stores, pv, pm, pn)?;
        }
        if ki == nk - 1 && cut_out {
            pending = Some((r, mi, ni));
        }
    }
    if let Some((pv, pm, pn)) = pending.take() {
        emit_stores(&mut e, t, &stores, pv, pm, pn)?;
    }
    drop(e);
    if !cut_out && let Some(last) = cur {
        k.replace_uses_in(func_body, c, last);
    }
    Ok(())
}

/// `(offset, length, dim)` of chunk `i` of length `c` along a dim `d`.
fn span(i: u64, c: u64, d: u64) -> (u64, u64, u64) {
    (i * c, c.min(d - i * c), d)
}

/// The operand chunks of one matmul's steps.
struct Chunks<'t> {
    t: &'t Tiling,
    steps: Vec<(u64, u64, u64)>,
    counts: (u64, u64, u64),
    a: Value,
    b: Value,
    b_layout: BLayout,
    an: String,
    bn: String,
    /// The L0A copy each step reads (one per step, repeated when reused).
    a_chunks: Vec<Value>,
    /// The L0B copy each step reads.
    b_chunks: Vec<Value>,
}

impl Chunks<'_> {
    /// Emits the L0 copies step `s` needs (reusing the previous step's
    /// chunk when it is the same).
    fn prefetch(&mut self, e: &mut Emit, s: usize) -> Result<()> {
        let t = self.t;
        let (nm, nn, nk) = self.counts;
        let (mi, ni, ki) = self.steps[s];
        let prev = s.checked_sub(1).map(|p| self.steps[p]);
        let a_new = prev.is_none_or(|p| (p.0, p.2) != (mi, ki));
        let b_new = prev.is_none_or(|p| (p.2, p.1) != (ki, ni));
        let a_chunk = match self.a_chunks.last() {
            Some(&last) if !a_new => last,
            _ => {
                let name = with_label(&self.an, &label(&[('m', mi, nm), ('k', ki, nk)]));
                let ranges = [span(mi, t.mc, t.m), span(ki, t.kc, t.k)];
                let x = e.extract(self.a, &ranges, name.clone())?;
                e.value(
                    InstKind::Copy {
                        src: x,
                        to: Space::L0A,
                    },
                    Some(format!("{name}_l0a")),
                )?
            }
        };
        self.a_chunks.push(a_chunk);
        let b_chunk = match self.b_chunks.last() {
            Some(&last) if !b_new => last,
            _ => {
                let name = with_label(&self.bn, &label(&[('k', ki, nk), ('n', ni, nn)]));
                let (kr, nr) = (span(ki, t.kc, t.k), span(ni, t.nc, t.n));
                let ranges = match self.b_layout {
                    BLayout::KN => [kr, nr],
                    BLayout::NK => [nr, kr],
                };
                let x = e.extract(self.b, &ranges, name.clone())?;
                e.value(
                    InstKind::Copy {
                        src: x,
                        to: Space::L0B,
                    },
                    Some(format!("{name}_l0b")),
                )?
            }
        };
        self.b_chunks.push(b_chunk);
        Ok(())
    }
}

/// Emits one write per original consumer for output chunk `(mi, ni)`.
fn emit_stores(
    e: &mut Emit,
    t: &Tiling,
    stores: &[InstKind],
    cv: Value,
    mi: u64,
    ni: u64,
) -> Result<()> {
    let chunks = [span(mi, t.mc, t.m), span(ni, t.nc, t.n)];
    for st in stores {
        let (InstKind::Store { tensor, index, .. } | InstKind::AtomicAdd { tensor, index, .. }) =
            st
        else {
            continue;
        };
        let mut dim = 0;
        let mut new_index = Vec::new();
        for ix in index {
            let start = match ix {
                Index::Point(_) => {
                    new_index.push(ix.clone());
                    continue;
                }
                Index::Range { start, .. } => Some(*start),
                Index::Full => None,
            };
            let Some(&(o, len, full)) = chunks.get(dim) else {
                return fail(format!(
                    "tile: a `{}` of matmul chunks needs exactly two non-point indices",
                    st.opcode()
                ));
            };
            dim += 1;
            new_index.push(match start {
                None if o == 0 && len == full => Index::Full,
                None => Index::Range {
                    start: e.iconst(o)?,
                    len,
                },
                Some(s0) if o == 0 => Index::Range { start: s0, len },
                Some(s0) => {
                    let off = e.iconst(o)?;
                    let s = e.value(InstKind::Binary(BinaryOp::Add, s0, off), None)?;
                    Index::Range { start: s, len }
                }
            });
        }
        let kind = match st {
            InstKind::Store { .. } => InstKind::Store {
                tensor: *tensor,
                index: new_index,
                value: cv,
            },
            _ => InstKind::AtomicAdd {
                tensor: *tensor,
                index: new_index,
                value: cv,
            },
        };
        e.ins(kind)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::plan_memory::tests::{MLA, SMALL, attention, check_placement};
    use crate::passes::plan_memory::{PlanMemoryConfig, plan_memory};

    fn cube_insts(k: &Kernel) -> Vec<Inst> {
        let mut out = Vec::new();
        k.walk(k.func(Unit::Cube).unwrap().body, &mut |i| out.push(i));
        out
    }

    #[test]
    fn mla_qk_cuts_k_into_96s() {
        let t = Target::ascend910b();
        let qk = choose_tiling(&t, (128, 128, 576), 2, 4, true).unwrap();
        assert_eq!((qk.mc, qk.nc, qk.kc), (128, 128, 96));
        assert_eq!(qk.steps(), 6);
        assert!(qk.a_chunk_bytes() <= t.buffers.l0a / 2);
        assert!(qk.b_chunk_bytes() <= t.buffers.l0b / 2);
        assert!(qk.c_chunk_bytes() <= t.buffers.l0c / 2);
    }

    #[test]
    fn mla_pv_cuts_n_into_4_x_128() {
        let t = Target::ascend910b();
        let pv = choose_tiling(&t, (128, 512, 128), 2, 4, true).unwrap();
        assert_eq!((pv.mc, pv.nc, pv.kc), (128, 128, 128));
        assert_eq!(pv.counts(), (1, 4, 1));
        assert_eq!(pv.c_chunk_bytes(), t.buffers.l0c / 2);
        assert!(pv.a_chunk_bytes() <= t.buffers.l0a / 2);
        assert!(pv.b_chunk_bytes() <= t.buffers.l0b / 2);
    }

    #[test]
    fn odd_dims_get_a_tail_or_a_divisor() {
        assert_eq!(pick(576, 16, 128), Some(96));
        assert_eq!(pick(600, 16, 128), Some(128)); // no fractal divisor: tail of 88
        assert_eq!(pick(100, 16, 128), Some(100)); // fits whole
        assert_eq!(pick(100, 16, 8), None);
        // Big M must be cut too.
        let t = Target::ascend910b();
        let big = choose_tiling(&t, (512, 512, 512), 2, 4, true).unwrap();
        assert!(big.c_chunk_bytes() <= t.buffers.l0c / 2, "{big:?}");
        assert!(big.a_chunk_bytes() <= t.buffers.l0a / 2, "{big:?}");
        assert!(big.b_chunk_bytes() <= t.buffers.l0b / 2, "{big:?}");
    }

    #[test]
    fn mla_is_tiled_double_buffered_and_placed() {
        let t = Target::ascend910b();
        let mut k = attention(MLA);
        let rep = tile(&mut k, &t, &TileConfig::default()).unwrap();
        assert_eq!(rep.tilings.len(), 2, "{:#?}", rep.notes);
        assert_eq!(rep.tilings[0].steps(), 6);
        assert_eq!(rep.tilings[1].steps(), 4);
        let insts = cube_insts(&k);
        let count =
            |f: &dyn Fn(&InstKind) -> bool| insts.iter().filter(|&&i| f(&k.insts[i].kind)).count();
        assert_eq!(count(&|x| matches!(x, InstKind::Matmul { .. })), 10);
        assert_eq!(
            count(&|x| matches!(x, InstKind::Copy { to: Space::L0A, .. })),
            6 + 1
        );
        assert_eq!(
            count(&|x| matches!(x, InstKind::Copy { to: Space::L0B, .. })),
            6 + 4
        );
        assert_eq!(count(&|x| matches!(x, InstKind::AtomicAdd { .. })), 4);
        assert_eq!(count(&|x| matches!(x, InstKind::Store { .. })), 1);
        assert_eq!(
            count(&|x| matches!(x, InstKind::Matmul { acc: Some(_), .. })),
            5
        );

        // Double buffering: the copies of step s + 1 come before matmul s.
        let pos = |v: Value| {
            insts
                .iter()
                .position(|&i| k.insts[i].results.contains(&v))
                .unwrap()
        };
        let mms: Vec<Inst> = insts
            .iter()
            .copied()
            .filter(|&i| matches!(k.insts[i].kind, InstKind::Matmul { .. }))
            .collect();
        for w in mms[..6].windows(2) {
            let InstKind::Matmul { a, b, .. } = k.insts[w[1]].kind else {
                unreachable!()
            };
            let mm0 = insts.iter().position(|&i| i == w[0]).unwrap();
            assert!(pos(a) < mm0 && pos(b) < mm0);
        }

        plan_memory(&mut k, &t, &PlanMemoryConfig::default()).unwrap();
        check_placement(&k, &t);
        // Consecutive K chunks sit in different places of L0A and L0B,
        // every chunk within half of its buffer.
        let mut prev: Option<(u64, u64)> = None;
        for &mm in &mms[..6] {
            let InstKind::Matmul { a, b, .. } = k.insts[mm].kind else {
                unreachable!()
            };
            let (oa, ob) = (k.offsets[a].unwrap(), k.offsets[b].unwrap());
            for v in [a, b] {
                assert!(k.ty(v).as_tile().unwrap().bytes() <= t.buffers.l0a / 2);
            }
            if let Some((pa, pb)) = prev {
                assert_ne!(oa, pa);
                assert_ne!(ob, pb);
            }
            prev = Some((oa, ob));
        }
        // The PV c-chunks ping-pong in L0C.
        let pv_offs: Vec<u64> = mms[6..]
            .iter()
            .map(|&m| k.offsets[k.insts[m].results[0]].unwrap())
            .collect();
        assert_eq!(pv_offs[0], pv_offs[2]);
        assert_ne!(pv_offs[0], pv_offs[1]);
        // K-chunk partial sums accumulate in place.
        let qk: Vec<u64> = mms[..6]
            .iter()
            .map(|&m| k.offsets[k.insts[m].results[0]].unwrap())
            .collect();
        assert!(qk.iter().all(|&o| o == qk[0]), "{qk:?}");
    }

    #[test]
    fn chunk_stores_cover_the_output() {
        let t = Target::ascend910b();
        let mut k = attention(MLA);
        tile(&mut k, &t, &TileConfig::default()).unwrap();
        let mut cols = Vec::new();
        for i in cube_insts(&k) {
            if let InstKind::AtomicAdd { index, value, .. } = &k.insts[i].kind {
                assert_eq!(k.ty(*value).shape(), [128, 128]);
                let Index::Range { start, len: 128 } = index[2] else {
                    panic!("{index:?}")
                };
                let InstKind::IConst(c) = k.insts[k.def_inst(start).unwrap()].kind else {
                    panic!()
                };
                cols.push(c);
            }
        }
        assert_eq!(cols, [0, 128, 256, 384]);
    }

    #[test]
    fn tiling_twice_changes_nothing() {
        let t = Target::ascend910b();
        let mut k = attention(MLA);
        tile(&mut k, &t, &TileConfig::default()).unwrap();
        let n = k.insts.len();
        let rep = tile(&mut k, &t, &TileConfig::default()).unwrap();
        assert!(rep.tilings.is_empty());
        assert_eq!(k.insts.len(), n);
    }

    #[test]
    fn no_fitting_chunk_names_buffer_tile_and_bytes() {
        let mut t = Target::ascend910b();
        t.buffers.l0a = 512; // half = 256 < one 16 x 16 bf16 fractal
        let mut k = attention(MLA);
        let e = tile(&mut k, &t, &TileConfig::default()).unwrap_err();
        assert_eq!(
            e.message,
            "matmul %s: no L0 tiling fits: even the smallest chunk of tile %qt: bf16[128, 576] \
             needs 512 bytes of L0A but half of L0A holds 256 bytes"
        );
    }

    #[test]
    fn cut_matmul_with_other_consumer_is_an_error() {
        let t = Target::ascend910b();
        let mut k = attention(MLA);
        // A second use of the PV result that cannot take chunks.
        let insts = cube_insts(&k);
        let pv = insts
            .iter()
            .filter(|&&i| matches!(k.insts[i].kind, InstKind::Matmul { .. }))
            .nth(1)
            .map(|&i| k.insts[i].results[0])
            .unwrap();
        let body = k.func(Unit::Cube).unwrap().body;
        let par = k.blocks[body].insts.last().copied().unwrap();
        let lb = k.insts[par].kind.body().unwrap();
        let fl = k.blocks[lb].insts.last().copied().unwrap();
        let fb = k.insts[fl].kind.body().unwrap();
        let at = k.blocks[fb].insts.len() - 1;
        Builder::at(&mut k, fb, at)
            .ins(InstKind::Copy {
                src: pv,
                to: Space::L1,
            })
            .unwrap();
        let e = tile(&mut k, &t, &TileConfig::default()).unwrap_err();
        assert!(e.message.contains("used by `copy`"), "{e}");
    }

    #[test]
    fn small_matmul_is_not_cut_but_gets_l0_copies() {
        let t = Target::ascend910b();
        let mut k = attention(SMALL);
        let rep = tile(&mut k, &t, &TileConfig::default()).unwrap();
        assert!(rep.tilings.iter().all(|x| x.steps() == 1));
        let insts = cube_insts(&k);
        assert!(!insts.iter().any(|&i| matches!(k.insts[i].kind, InstKind::Extract { .. } if k.insts[i].results.iter().any(|&r| k.values[r].name.as_deref() != Some("v")))));
        plan_memory(&mut k, &t, &PlanMemoryConfig::default()).unwrap();
        check_placement(&k, &t);
    }
}
