//! `mul-to-add`: AMLA's rewrite of the online-softmax rescale.
//!
//! FlashAttention keeps, per query row, a running max `m`, a running sum `l`
//! and an unnormalised output `acc`, and rescales `acc` by
//! `alpha = exp(m_old - m_new)` every block: a float multiply of the whole
//! `[rows, 512]` accumulator. AMLA works in base 2 with the running max
//! rounded up to an integer `M`, so that `alpha = 2^n` with an integer
//! `n = M_old - M_new <= 0`, and multiplying an f32 by `2^n` is adding
//! `n << 23` to its bits. The accumulator then never leaves GM: the Vector
//! applies `2^n` with a guarded integer exponent add in place
//! (`atomic_exp_add`), and the Cube adds `P·V` into it atomically
//! (`atomic_add`).
//!
//! **Pattern** (inside a `for` whose carried values include `m`, `acc`):
//!
//! ```text
//! %r     = rowmax %s
//! %m_new = max %m, %r                      // yielded as the next m
//! %p     = exp (sub %s, broadcast %m_new)
//! %alpha = exp (sub %m, %m_new)
//! %acc'  = add (mul %acc, broadcast %alpha), %pv   // %pv = matmul …; yielded
//! ```
//!
//! with `m` starting at `-inf`, `acc` at `0`, `m_new` used only there,
//! `acc` used only by the multiply, and `p` only by the P·V matmul (through
//! a 16-bit cast) and by `l = l * alpha + rowsum(p)` (the rewrite keeps
//! only the ratio `acc / l`, not `p` itself). Every check that fails is reported by
//! `--explain` for each carried accumulator-shaped tile, so a near miss
//! says why it did not match.
//!
//! **Rewrite** (`M` is the carried max, now in base-2 units):
//!
//! ```text
//! %s2    = mul %s, broadcast 1.4426950408889634     // s · log2 e
//! %M_new = max %M, ceil (rowmax %s2)
//! %p     = exp2 (sub %s2, broadcast %M_new)         // in [0, 1]
//! %nf    = max (select (eq %M, -inf), 0, %M - %M_new), -255
//! %n     = cast %nf i32
//! %alpha = exp2 %nf                                 // l still rescales by it
//! atomic_exp_add acc_ws[%b, .., ..], %n             // acc *= 2^n, in GM
//! atomic_add acc_ws[%b, .., ..], %pv                // acc += P·V, in GM
//! ```
//!
//! `acc` stops being carried; after the loop it is `load acc_ws[%b, .., ..]`
//! and the final max is converted back to natural-log units
//! (`%m = mul %M, broadcast 0.6931471805599453`) for `lse`.
//!
//! **Variants** ([`MulToAddOptions`], `-D RESCALE=ceil|nearest|cann|anchored|exact`,
//! `-D COMPENSATE=0|1`; `docs/NUMERICS.md` measures them and explains the
//! default, `anchored` without compensation):
//!
//! - `ceil` (above): `P` in `(0, 1]`; its largest `P` is rounded to bf16,
//!   the main source of error on few keys.
//! - `nearest` (Huawei's): the carried max is the real base-2 max `m`,
//!   `M = round(m)`, `P = exp2(s2 - m)`, the Cube multiplies
//!   `bf16(P · f32(bf16(c)))` with `c = exp2(m - round(m))` in
//!   `[2^-1/2, 2^1/2]`; `n = round(m_old) - round(m_new)`; `l` keeps
//!   FlashAttention's real factor `exp2(m_old - m_new)`; the final
//!   normalisation divides by `l · bf16(c_last)`.
//! - `cann` (CANN's released kernel): `nearest`'s split,
//!   steps clamped at -30, and the per-block rounding of `c` corrected in
//!   the accumulator: `atomic_exp_add` with the **f32** step
//!   `x = n + eps`, `eps = 1.5 · (cof_prev / cof - 1) + 1e-6`,
//!   `cof = c / bf16(c)` carried (the fractional exponent add, which adds
//!   `round(x · 2^23)` to the bits; not an exact multiply):
//!
//! ```text
//! %cof = div %c, %cb                        // %cb = f32(bf16(%c))
//! %eps = select %first, 0, 1.5 * (%cof.1 / %cof - 1) + 1e-6
//! %x   = add %nf, %eps                      // %nf clamped at -30
//! atomic_exp_add acc_ws[%b, .., ..], %x     // f32 step
//! ```
//!
//!   with compensation `lc` is rescaled by `2^n · cof_prev / cof` exactly.
//! - `anchored` (the default): `cann` with the integer grid anchored at
//!   the row's first max `mu` instead of at 0, and no `1e-6` bias. It
//!   keeps the kernel's own natural-log `m_new`, `p = exp(s - m_new)`,
//!   `alpha` (for `l`) and `lse`, and takes the base-2 max `m2 = m · log2 e`
//!   (an `[H]` multiply; the max of the rounded `s · log2 e`, a positive
//!   factor keeping the order) only for the grid. The integer part is
//!   `round(m2 - mu)`, so on the first block `c = 2^0 = 1` and the Cube
//!   multiplies FlashAttention's own `bf16(p)`, bit for bit; `c` (and the
//!   fractional step) appear only once the max has moved by a fraction:
//!
//! ```text
//! %m2_new = mul %m_new, %log2e              // %m_new, %p: the kernel's
//! %mu     = select %first, %m2_new, %mu.1   // carried, from 0
//! %c      = exp2 ((%m2_new - %mu) - round (%m2_new - %mu))
//! %nf     = round (%m2 - %mu) - round (%m2_new - %mu)   // %m2 = %m.1 · log2e
//! %pc     = mul %p, broadcast f32(bf16(%c))
//! ```
//!
//! - `exact`: `anchored`'s grid with `c` kept in f32, so nothing is left to
//!   correct: no `cof`, no `eps`, every step a whole integer add (exact,
//!   clamped at -255); the Cube multiplies `bf16(P · c)` and the kernel's
//!   `acc / l` becomes `acc / (l · c_last)`:
//!
//! ```text
//! %c   = exp2 %36 : f32[128]                // 2^frac(m_new - mu), unrounded
//! %pc  = mul %p, %37 : f32[128, 128]        // %37 = broadcast %c
//! %n   = cast %nf to i32 : i32[128]
//! atomic_exp_add acc_ws[%b, .., ..], %n     // whole step
//! ```
//!
//! - compensation (every variant, `-D COMPENSATE=1`; off by default): a carried
//!   `%lc = 2^n · lc + rowsum(cast (cast %p_cube bf16) f32)` sums exactly
//!   the values the Cube multiplies; the kernel's `div %acc, broadcast %l`
//!   becomes `div %acc, broadcast %lc` (`l` still gives `lse`).
//!
//! Why the guards: on the first block `M = -inf` and `n` would be `-inf`
//! (`acc` is still 0, so `n = 0` is right); and clamping
//! `n` at -255 is exact because every finite f32 times `2^-255` flushes to
//! zero. The exponent add itself keeps ±0 and flushes underflow (see
//! `amla_runtime::rescale`). `P` is *not* guarded: a row whose scores are
//! all `-inf` so far gets `exp2(-inf - -inf) = NaN`, the NaN the kernel's
//! own `exp(s - m_new)` computes, and it stays in `l`, `lc` and `acc` as in
//! FlashAttention (the exponent add passes NaN through); a kernel guards
//! such rows itself (`where(l > 0.0, acc / l, 0.0)` sees the NaN too).
//! Only the accumulator takes the guarded step: `l` is rescaled by
//! `2^(m_old - m_new)` unguarded, as the kernel's `exp(m_old - m_new)` is (0
//! on the first block whatever `l` starts at, NaN where the kernel's is
//! NaN), and `lc` starts where `l` does (a loop that runs no block leaves
//! `acc / l` at `0 / l`) and drops its start on the first block.

use crate::ir::{
    BinaryOp, Block, CmpOp, DType, Dim, Index, Inst, InstKind, Kernel, ReduceOp, Role, TensorData,
    UnaryOp, Unit, Value,
};

const LOG2_E: f64 = std::f64::consts::LOG2_E;
const LN_2: f64 = std::f64::consts::LN_2;

/// How the running max is rounded to an integer in base 2 (see
/// `docs/NUMERICS.md`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RescaleVariant {
    /// `M = ceil(max)`: `P = 2^(s2 - M)` lies in `(0, 1]` and needs no
    /// correction.
    Ceil,
    /// Huawei's: `M = round(max)`; the Vector keeps the real max `m`,
    /// computes `P = 2^(s2 - m)` in `(0, 1]` and the leftover
    /// `c = 2^(m - M)` in `[2^-1/2, 2^1/2]`, and the Cube multiplies
    /// `P · bf16(c)`; the accumulator is divided by `bf16(c)` of the last
    /// block at the end.
    Nearest,
    /// CANN's released kernel: `nearest`'s split, each exponent step
    /// clamped at -30, and the rounding of `c` corrected in the
    /// accumulator by a fractional exponent add of
    /// `eps = 1.5 · (cof_prev / cof - 1) + 1e-6` (`cof = c / bf16(c)`);
    /// normalised by `l · bf16(c_last)`. With `COMPENSATE=1` the
    /// normaliser is instead `lc`, rescaled every block by the same factor
    /// `2^n · cof_prev / cof` in f32.
    Cann,
    /// `cann` with the integer grid anchored at the row's first max `mu`
    /// (the base-2 max of the first block that has a visible key):
    /// `M = mu + round(m2 - mu)`, so `c = 2^(m2 - M)` is exactly 1 until the
    /// max moves by a fraction. `p`, `alpha`, `l` and the carried max stay
    /// the kernel's own (natural log), so until then the Cube's operand is
    /// FlashAttention's `bf16(p)` bit for bit; the correction is
    /// `eps = 1.5 · (cof_prev / cof - 1)` (no bias: a step whose `c` did not
    /// change is a whole, exact step). The default.
    #[default]
    Anchored,
    /// `anchored`'s grid (and its natural-log `p`) with `c` kept in f32:
    /// the Cube multiplies `bf16(p · c)`, one rounding, so there is no rounding
    /// of `c` to correct, no `cof`, no fractional step: every step is a
    /// whole, exact integer add (clamped at -255), and the normaliser is
    /// `l · c_last` (f32).
    Exact,
}

impl RescaleVariant {
    /// Every variant, in documentation order.
    pub const ALL: [RescaleVariant; 5] = [
        RescaleVariant::Ceil,
        RescaleVariant::Nearest,
        RescaleVariant::Cann,
        RescaleVariant::Anchored,
        RescaleVariant::Exact,
    ];

    /// The name used in `-D RESCALE=NAME`.
    pub fn name(self) -> &'static str {
        match self {
            RescaleVariant::Ceil => "ceil",
            RescaleVariant::Nearest => "nearest",
            RescaleVariant::Cann => "cann",
            RescaleVariant::Anchored => "anchored",
            RescaleVariant::Exact => "exact",
        }
    }

    /// Parses a `-D RESCALE=` value (`None` for anything else).
    pub fn parse(s: &str) -> Option<RescaleVariant> {
        RescaleVariant::ALL.into_iter().find(|v| v.name() == s)
    }

    /// The integer grid is anchored at the row's first max `mu`
    /// (`anchored`, `exact`).
    pub fn anchors_grid(self) -> bool {
        matches!(self, RescaleVariant::Anchored | RescaleVariant::Exact)
    }

    /// `c` is rounded to bf16 before the Cube multiplies `P · c` (every
    /// variant but `exact`).
    pub fn rounds_c(self) -> bool {
        self != RescaleVariant::Exact
    }

    /// The rounding of `c` is corrected in the accumulator by a fractional
    /// step `eps` from a carried `cof = c / bf16(c)`, and steps are clamped
    /// at -30 (`cann`, `anchored`).
    pub fn corrects_c(self) -> bool {
        matches!(self, RescaleVariant::Cann | RescaleVariant::Anchored)
    }

    /// The constant added to a correcting variant's `eps`: CANN's 1e-6, or
    /// 0 for `anchored` (a block whose `c` did not change gets an exact
    /// whole step).
    pub fn eps_bias(self) -> f64 {
        if self == RescaleVariant::Cann {
            1e-6
        } else {
            0.0
        }
    }

    /// The clamp of an exponent step: -30 where `c` is corrected (CANN's),
    /// else -255 (every finite f32 times 2^-255 flushes to ±0).
    pub fn step_floor(self) -> f64 {
        if self.corrects_c() { -30.0 } else { -255.0 }
    }
}

/// Options of the rewrite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MulToAddOptions {
    /// How the running max is rounded.
    pub variant: RescaleVariant,
    /// Normalise by an `lc` summed from the bf16-rounded `P` the Cube
    /// actually multiplies (`rowsum(f32(bf16(p)))`), carried next to `l`;
    /// `l` itself stays exact and gives `lse`.
    pub compensation: bool,
}

impl Default for MulToAddOptions {
    /// The pipeline's default: anchored, without compensation.
    fn default() -> Self {
        MulToAddOptions::from_pass_options(&super::PassOptions::default())
    }
}

impl MulToAddOptions {
    /// The options the pipeline's [`super::PassOptions`] select.
    pub fn from_pass_options(o: &super::PassOptions) -> MulToAddOptions {
        MulToAddOptions {
            variant: o.rescale,
            compensation: o.compensate,
        }
    }
}

/// The `mul-to-add` pass; it reads its options from
/// [`super::PassContext::options`] (`rescale`, `compensate`).
#[derive(Clone, Debug, Default)]
pub struct MulToAdd;

impl super::Pass for MulToAdd {
    fn name(&self) -> &'static str {
        "mul-to-add"
    }

    fn run(&self, k: &mut Kernel, cx: &super::PassContext) -> Result<(), super::PassError> {
        let opts = MulToAddOptions::from_pass_options(&cx.options);
        let report = run(k, &opts).map_err(|message| super::PassError::Internal {
            pass: "mul-to-add".into(),
            message,
        })?;
        for n in report.notes {
            cx.note(n);
        }
        Ok(())
    }

    fn explain(&self) -> &'static str {
        "rewrites the online-softmax rescale of the accumulator into AMLA's integer exponent add in GM"
    }
}

/// What the pass did: one line per rewritten loop and per near miss.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MulToAddReport {
    /// Human-readable notes (shown by `--explain`).
    pub notes: Vec<String>,
    /// Number of rescales rewritten.
    pub rewritten: usize,
}

/// A matched rescale.
struct Match {
    for_inst: Inst,
    body: Block,
    /// Carried index of the accumulator and of the max.
    ia: usize,
    im: usize,
    /// The scores `s` and the new max `m_new`.
    s: Value,
    m_new: Value,
    /// `p`, `alpha` and the added term `pv`.
    p: Value,
    alpha: Value,
    pv: Value,
    /// The accumulator update `add` instruction.
    acc_add: Inst,
}

/// Runs the rewrite on the single `any` function of `k`.
pub fn run(k: &mut Kernel, opts: &MulToAddOptions) -> Result<MulToAddReport, String> {
    let mut report = MulToAddReport::default();
    let Some(func) = k.funcs.iter().find(|f| f.unit == Unit::Any) else {
        report
            .notes
            .push("the kernel is already split; nothing to do".into());
        return Ok(report);
    };
    let top = func.body;
    let Some((par, ivs)) = grid(k, top) else {
        return Ok(report);
    };
    let mut loops = Vec::new();
    k.walk(top, &mut |i| {
        if matches!(k.insts[i].kind, InstKind::For { .. }) {
            loops.push(i);
        }
    });
    for f in loops {
        let InstKind::For { init, body, .. } = &k.insts[f].kind else {
            continue;
        };
        let (n, body) = (init.len(), *body);
        // Try every carried rank-2 f32 tile as the accumulator.
        let mut done = false;
        for ia in 0..n {
            let param = k.blocks[body].params[ia + 1];
            let ty = k.ty(param);
            if ty.dtype() != DType::F32 || ty.shape().len() != 2 || done {
                continue;
            }
            let name = k.values[param]
                .name
                .clone()
                .unwrap_or_else(|| format!("#{ia}"));
            match match_rescale(k, f, ia).and_then(|m| workspace_shape(k, par).map(|_| m)) {
                Ok(m) => {
                    let extra = rewrite(k, top, par, &ivs, m, opts)?;
                    report.notes.extend(extra);
                    report.rewritten += 1;
                    report.notes.push(format!(
                        "rewrote the rescale of `{name}` into an integer exponent add in GM"
                    ));
                    done = true;
                }
                Err(why) => report.notes.push(format!(
                    "mul-to-add: `{name}` is not an online-softmax accumulator: {why}"
                )),
            }
        }
    }
    if report.rewritten > 0 {
        super::dce::remove_dead(k);
    }
    Ok(report)
}

/// The top-level `parallel` of a function and its grid variables.
fn grid(k: &Kernel, top: Block) -> Option<(Inst, Vec<Value>)> {
    k.blocks[top]
        .insts
        .iter()
        .find_map(|&i| match &k.insts[i].kind {
            InstKind::Parallel { body, .. } => Some((i, k.blocks[*body].params.clone())),
            _ => None,
        })
}

/// The grid part of the accumulator's workspace shape: one slot per value
/// of each grid variable, indexed by the variable itself. An axis
/// `lo..hi` gets `hi` slots (those below `lo` stay unused), so `lo` must be
/// a non-negative constant or a dim, and `hi` a constant or a dim; any
/// other grid is a near miss (the loop is left as FlashAttention).
fn workspace_shape(k: &Kernel, par: Inst) -> Result<Vec<Dim>, String> {
    let InstKind::Parallel { axes, .. } = &k.insts[par].kind else {
        return Err("no grid".into());
    };
    let mut shape = Vec::new();
    for (i, ax) in axes.iter().enumerate() {
        match def(k, ax.lo) {
            Some(InstKind::IConst(n)) if *n >= 0 => {}
            Some(InstKind::DimValue(_)) => {}
            _ => {
                return Err(format!(
                    "grid axis {i} does not start at a non-negative constant or a dim"
                ));
            }
        }
        shape.push(match def(k, ax.hi) {
            Some(InstKind::IConst(n)) if *n >= 0 => Dim::Const(*n as u64),
            Some(InstKind::DimValue(d)) => Dim::Sym(*d),
            _ => {
                return Err(format!(
                    "grid axis {i} does not end at a non-negative constant or a dim"
                ));
            }
        });
    }
    Ok(shape)
}

fn def(k: &Kernel, v: Value) -> Option<&InstKind> {
    k.def_inst(v).map(|i| &k.insts[i].kind)
}

fn through_broadcast(k: &Kernel, v: Value) -> Value {
    match def(k, v) {
        Some(InstKind::Broadcast { src, .. }) => *src,
        _ => v,
    }
}

/// The float constant a value is (through broadcasts), if any.
fn constant(k: &Kernel, v: Value) -> Option<f64> {
    match def(k, through_broadcast(k, v)) {
        Some(InstKind::FConst(x, _)) => Some(*x),
        _ => None,
    }
}

/// Every instruction in `body` (not nested) that uses `v`.
fn users(k: &Kernel, body: Block, v: Value) -> Vec<Inst> {
    let mut out = Vec::new();
    k.walk(body, &mut |i| {
        let mut uses = false;
        k.insts[i].kind.for_each_operand(|o| uses |= o == v);
        if uses {
            out.push(i);
        }
    });
    out
}

fn match_rescale(k: &Kernel, f: Inst, ia: usize) -> Result<Match, String> {
    let InstKind::For { init, body, .. } = &k.insts[f].kind else {
        return Err("not a loop".into());
    };
    let body = *body;
    let params = &k.blocks[body].params;
    let acc = params[ia + 1];
    let Some(&last) = k.blocks[body].insts.last() else {
        return Err("empty loop".into());
    };
    let InstKind::Yield(ys) = &k.insts[last].kind else {
        return Err("loop body does not end in yield".into());
    };
    let Some(InstKind::Binary(BinaryOp::Add, x1, x2)) = def(k, ys[ia]) else {
        return Err("its next value is not `acc * alpha + X`".into());
    };
    let acc_add = k.def_inst(ys[ia]).ok_or("no defining op")?;
    let is_scaled = |x: Value| match def(k, x) {
        Some(InstKind::Binary(BinaryOp::Mul, a, b)) if *a == acc => Some(through_broadcast(k, *b)),
        Some(InstKind::Binary(BinaryOp::Mul, a, b)) if *b == acc => Some(through_broadcast(k, *a)),
        _ => None,
    };
    let (alpha, pv) = match (is_scaled(*x1), is_scaled(*x2)) {
        (Some(a), _) => (a, *x2),
        (_, Some(a)) => (a, *x1),
        _ => {
            return Err(
                "its next value does not multiply the accumulator by a per-row factor".into(),
            );
        }
    };
    if !matches!(def(k, pv), Some(InstKind::Matmul { .. })) {
        return Err("the term added to the rescaled accumulator is not a matmul (P·V)".into());
    }
    if users(k, body, acc).len() != 1 {
        return Err("the accumulator is used by more than its rescale".into());
    }
    // The updated accumulator lives in GM after the rewrite; a read of it
    // inside the loop (a store of `acc / l` per block) would need a load
    // ordered after the Cube's atomic add, which the rewrite does not make.
    if users(k, body, ys[ia]).len() != 1 {
        return Err("the updated accumulator is read inside the loop (e.g. stored every block); only its final value may be used".into());
    }
    let Some(InstKind::Unary(UnaryOp::Exp, d)) = def(k, alpha) else {
        return Err("the rescale factor is not `exp(m_old - m_new)`".into());
    };
    let Some(InstKind::Binary(BinaryOp::Sub, m_old, m_new)) = def(k, *d) else {
        return Err("the rescale factor is not `exp(m_old - m_new)`".into());
    };
    let (m_old, m_new) = (*m_old, *m_new);
    let Some(im) = params.iter().skip(1).position(|&p| p == m_old) else {
        return Err("`m_old` in the rescale factor is not a loop-carried max".into());
    };
    if ys[im] != m_new {
        return Err("the loop does not carry `m_new` as the next max".into());
    }
    let s = match def(k, m_new) {
        Some(InstKind::Binary(BinaryOp::Max, a, r))
        | Some(InstKind::Binary(BinaryOp::Max, r, a))
            if *a == m_old && matches!(def(k, *r), Some(InstKind::Reduce(ReduceOp::Max, _))) =>
        {
            match def(k, *r) {
                Some(InstKind::Reduce(ReduceOp::Max, s)) => *s,
                _ => unreachable!("checked by the guard"),
            }
        }
        _ => return Err("`m_new` is not `max(m_old, rowmax(s))`".into()),
    };
    // p = exp(s - broadcast(m_new))
    let mut p = None;
    k.walk(body, &mut |i| {
        if let InstKind::Unary(UnaryOp::Exp, d) = k.insts[i].kind
            && let Some(InstKind::Binary(BinaryOp::Sub, a, b)) = def(k, d)
            && *a == s
            && through_broadcast(k, *b) == m_new
        {
            p = Some(k.insts[i].results[0]);
        }
    });
    let p = p.ok_or("no `p = exp(s - m_new)` in the loop")?;
    // The rewrite changes p's values (base 2, another max, and for
    // `nearest` and `cann` a factor the Cube multiplies in), keeping only
    // the ratio `acc / l`: p may feed only the P·V matmul (through a 16-bit
    // cast) and the running sum `l = l * alpha + rowsum(p)`.
    let l_add = find_l(k, body, alpha, &[ia, im]).map(|il| k.def_inst(ys[il]));
    for u in users(k, body, p) {
        let r = k.insts[u].results.first().copied();
        let ok = match &k.insts[u].kind {
            InstKind::Cast(_, DType::Bf16 | DType::F16) => r.is_some_and(|c| {
                users(k, body, c).iter().all(|&w| {
                    matches!(&k.insts[w].kind, InstKind::Matmul { a, acc: None, .. } if Some(*a) == r)
                        && k.insts[w].results.first() == Some(&pv)
                })
            }),
            InstKind::Reduce(ReduceOp::Sum, _) => r.is_some_and(|s| {
                users(k, body, s)
                    .iter()
                    .all(|&w| l_add.is_some_and(|a| a == Some(w)))
            }),
            _ => false,
        };
        if !ok {
            return Err(format!(
                "`p` has a use the rewrite cannot keep (`{}`; only `bf16(p) @ v` and `l = l * alpha + rowsum(p)`)",
                k.insts[u].kind.opcode()
            ));
        }
    }
    // m_new may feed only: the rescale factor, p's broadcast, the yield.
    for u in users(k, body, m_new) {
        let ok = match &k.insts[u].kind {
            InstKind::Yield(_) => true,
            InstKind::Binary(BinaryOp::Sub, _, _) => k.insts[u].results[0] == *d,
            InstKind::Broadcast { .. } => {
                let b = k.insts[u].results[0];
                users(k, body, b).iter().all(|&w| matches!(&k.insts[w].kind, InstKind::Binary(BinaryOp::Sub, a, _) if *a == s))
            }
            _ => false,
        };
        if !ok {
            return Err(format!(
                "`m_new` has a use the rewrite cannot keep (`{}`)",
                k.insts[u].kind.opcode()
            ));
        }
    }
    if constant(k, init[ia]) != Some(0.0) {
        return Err("the accumulator does not start at 0".into());
    }
    if constant(k, init[im]) != Some(f64::NEG_INFINITY) {
        return Err("the running max does not start at -inf".into());
    }
    Ok(Match {
        for_inst: f,
        body,
        ia,
        im,
        s,
        m_new,
        p,
        alpha,
        pv,
        acc_add,
    })
}

/// Adds a carried value to the `for` `f`, starting at `init`: returns its
/// body parameter and its result. The caller sets its `yield` operand.
fn add_carried(k: &mut Kernel, f: Inst, init: Value, name: &str) -> Result<(Value, Value), String> {
    let ty = k.ty(init).clone();
    let InstKind::For {
        init: inits, body, ..
    } = &mut k.insts[f].kind
    else {
        return Err("not a loop".into());
    };
    inits.push(init);
    let body = *body;
    let param = k.add_block_param(body, ty.clone(), Some(name.to_string()));
    let idx = k.insts[f].results.len() as u32;
    let result = k.values.push(crate::ir::ValueData {
        ty,
        def: crate::ir::ValueDef::Result(f, idx),
        name: Some(name.to_string()),
    });
    k.insts[f].results.push(result);
    let last = *k.blocks[body].insts.last().ok_or("empty loop")?;
    if let InstKind::Yield(ys) = &mut k.insts[last].kind {
        ys.push(param);
    }
    Ok((param, result))
}

/// The carried index of `l`: the value whose next value is
/// `l * alpha + X` (either operand order).
fn find_l(k: &Kernel, body: Block, alpha: Value, skip: &[usize]) -> Option<usize> {
    let last = *k.blocks[body].insts.last()?;
    let InstKind::Yield(ys) = &k.insts[last].kind else {
        return None;
    };
    let params = &k.blocks[body].params;
    (0..ys.len()).filter(|i| !skip.contains(i)).find(|&i| {
        let l = params[i + 1];
        let scaled = |x: Value| {
            matches!(def(k, x), Some(InstKind::Binary(BinaryOp::Mul, a, b))
                if (*a == l && through_broadcast(k, *b) == alpha)
                    || (*b == l && through_broadcast(k, *a) == alpha))
        };
        matches!(def(k, ys[i]), Some(InstKind::Binary(BinaryOp::Add, x, y)) if scaled(*x) || scaled(*y))
    })
}

fn rewrite(
    k: &mut Kernel,
    top: Block,
    par: Inst,
    ivs: &[Value],
    m: Match,
    opts: &MulToAddOptions,
) -> Result<Vec<String>, String> {
    let e = |e: crate::ir::typing::TypeError| format!("mul-to-add: {e}");
    // Every variant but ceil carries the real max and splits it into an
    // integer part (rounded by `int_op`) and a leftover `c`.
    let nearest = opts.variant != RescaleVariant::Ceil;
    let anchored = opts.variant.anchors_grid();
    let cann = opts.variant.corrects_c();
    let int_op = UnaryOp::Round;
    // The accumulator's workspace: one slot per grid point.
    let acc_ty = k.ty(k.blocks[m.body].params[m.ia + 1]).clone();
    let mut shape = workspace_shape(k, par)?;
    shape.extend(acc_ty.shape().iter().map(|&n| Dim::Const(n)));
    let acc_name = k.values[k.blocks[m.body].params[m.ia + 1]]
        .name
        .clone()
        .unwrap_or_else(|| "acc".into());
    let ws = k.tensors.push(TensorData {
        name: format!("{acc_name}_ws"),
        dtype: DType::F32,
        shape,
        role: Role::Workspace,
    });
    let mut index: Vec<Index> = ivs.iter().map(|&v| Index::Point(v)).collect();
    index.extend(acc_ty.shape().iter().map(|_| Index::Full));

    let m_old = k.blocks[m.body].params[m.im + 1];
    let row_ty = k.ty(m_old).clone();
    let rows = row_ty.shape().to_vec();
    let s_shape = k.ty(m.s).shape().to_vec();
    let acc_shape = acc_ty.shape().to_vec();
    // The compensated `lc` needs `l`; found before the body changes.
    let mut notes = Vec::new();
    let il = find_l(k, m.body, m.alpha, &[m.ia, m.im]);
    let compensate = opts.compensation && il.is_some();
    // CANN's correction needs last block's `cof = c / bf16(c)`, carried.
    let cof = if cann {
        let (outer, fpos) = k.position(top, m.for_inst).ok_or("loop not found")?;
        let shape = k.ty(k.blocks[m.body].params[m.im + 1]).shape().to_vec();
        let mut b = crate::ir::Builder::at(k, outer, fpos);
        let one = b.value(InstKind::FConst(1.0, DType::F32)).map_err(e)?;
        let one = b
            .value(InstKind::Broadcast { src: one, shape })
            .map_err(e)?;
        Some(add_carried(k, m.for_inst, one, "cof")?.0)
    } else {
        None
    };
    // The anchor `mu` of the integer grid (anchored): 0 until the row's
    // first visible key, then that block's max.
    let mu = if anchored {
        let (outer, fpos) = k.position(top, m.for_inst).ok_or("loop not found")?;
        let shape = k.ty(k.blocks[m.body].params[m.im + 1]).shape().to_vec();
        let mut b = crate::ir::Builder::at(k, outer, fpos);
        let z = b.value(InstKind::FConst(0.0, DType::F32)).map_err(e)?;
        let z = b.value(InstKind::Broadcast { src: z, shape }).map_err(e)?;
        Some(add_carried(k, m.for_inst, z, "mu")?)
    } else {
        None
    };
    let mut mu_new = None;
    if opts.compensation && il.is_none() {
        notes.push(
            "compensation skipped: no carried `l = l * alpha + rowsum(p)` to pair `lc` with".into(),
        );
    }
    // `anchored` and `exact` keep the kernel's own natural-log max, `p` and
    // `alpha` (so the Cube multiplies FlashAttention's `bf16(p)` bit for
    // bit until the max moves by a fraction) and take the base-2 max only
    // for the grid: `m · log2 e` rounded to f32 is the max of the rounded
    // `s · log2 e` (a positive factor keeps the order), so the grid is the
    // base-2 form's. Their new code goes after `p`, which it scales.
    let natural = anchored;
    let after = if natural { m.p } else { m.m_new };
    let (_, pos) = k
        .position(m.body, k.def_inst(after).ok_or("m_new has no op")?)
        .ok_or("m_new not in the loop")?;
    let mut b = crate::ir::Builder::at(k, m.body, pos + 1);
    let fc = |b: &mut crate::ir::Builder, x: f64, shape: &[u64]| -> Result<Value, String> {
        let c = b.value(InstKind::FConst(x, DType::F32)).map_err(e)?;
        b.value(InstKind::Broadcast {
            src: c,
            shape: shape.to_vec(),
        })
        .map_err(e)
    };
    let bin = |b: &mut crate::ir::Builder, op, x, y| b.value(InstKind::Binary(op, x, y)).map_err(e);
    // The factor of every other carried value (`l`): `2^(m_old - m_new)`
    // unguarded, as the kernel's `exp(m_old - m_new)` is: 0 on the first
    // block (whatever `l` starts at), NaN where the kernel's is NaN (a row
    // with no finite score yet). Only the accumulator, known to be 0
    // then, takes the guarded step.
    let exact_alpha = |b: &mut crate::ir::Builder, m_old, m_new| -> Result<Value, String> {
        let dm = b
            .value(InstKind::Binary(BinaryOp::Sub, m_old, m_new))
            .map_err(e)?;
        b.named(InstKind::Unary(UnaryOp::Exp2, dm), "alpha")
            .map_err(e)
    };
    // The carried max, the Cube's `p` before its factor, and the base-2
    // max before and after this block (for the grid).
    let (big_m, p2, m2_old, m2_new, ninf, zero) = if natural {
        let log2e = fc(&mut b, LOG2_E, &rows)?;
        let mo2 = bin(&mut b, BinaryOp::Mul, m_old, log2e)?;
        let mn2 = b
            .named(InstKind::Binary(BinaryOp::Mul, m.m_new, log2e), "m2_new")
            .map_err(e)?;
        let ninf = fc(&mut b, f64::NEG_INFINITY, &rows)?;
        let zero = fc(&mut b, 0.0, &rows)?;
        (m.m_new, m.p, mo2, mn2, ninf, zero)
    } else {
        let log2e = fc(&mut b, LOG2_E, &s_shape)?;
        let s2 = b
            .named(InstKind::Binary(BinaryOp::Mul, m.s, log2e), "s2")
            .map_err(e)?;
        let r2 = b.value(InstKind::Reduce(ReduceOp::Max, s2)).map_err(e)?;
        // Ceil: the carried max is the integer M. Nearest: it is the real
        // base-2 max m, and M = round(m) (monotone, so M never decreases).
        let cr = if nearest {
            r2
        } else {
            b.value(InstKind::Unary(UnaryOp::Ceil, r2)).map_err(e)?
        };
        let big_m = b
            .named(
                InstKind::Binary(BinaryOp::Max, m_old, cr),
                if nearest { "m_new" } else { "M_new" },
            )
            .map_err(e)?;
        let ninf = fc(&mut b, f64::NEG_INFINITY, &rows)?;
        let zero = fc(&mut b, 0.0, &rows)?;
        // P is taken against the unguarded max, as the kernel wrote it: a
        // row whose scores are all -inf so far gets `exp2(-inf - -inf) =
        // NaN`, the NaN of the kernel's own `exp(s - m_new)`, which then
        // stays in `l` and `acc` as it does in FlashAttention (a compiler
        // must not turn it into a finite value; the kernel guards such rows
        // itself, e.g. with `where(l > 0.0, …)`, and that guard still sees
        // the NaN).
        let mb = b
            .value(InstKind::Broadcast {
                src: big_m,
                shape: s_shape.clone(),
            })
            .map_err(e)?;
        let d = bin(&mut b, BinaryOp::Sub, s2, mb)?;
        let p2 = b.named(InstKind::Unary(UnaryOp::Exp2, d), "p").map_err(e)?;
        (big_m, p2, m_old, big_m, ninf, zero)
    };
    let first = b.value(InstKind::Cmp(CmpOp::Eq, m_old, ninf)).map_err(e)?;
    let mut cof_new = None;
    let (step, alpha_l, p_mm) = if nearest {
        // n = int(m_old) - int(m_new); l keeps FlashAttention's real
        // factor 2^(m_old - m_new); the Cube multiplies P · bf16(c).
        // Anchored: both relative to mu (set on the first block).
        let (m_o, m_n) = if let Some((mu_param, _)) = mu {
            let mn = b
                .named(InstKind::Select(first, m2_new, mu_param), "mu")
                .map_err(e)?;
            mu_new = Some(mn);
            (
                bin(&mut b, BinaryOp::Sub, m2_old, mn)?,
                bin(&mut b, BinaryOp::Sub, m2_new, mn)?,
            )
        } else {
            (m_old, big_m)
        };
        let ro = b.value(InstKind::Unary(int_op, m_o)).map_err(e)?;
        let rn = b.value(InstKind::Unary(int_op, m_n)).map_err(e)?;
        let step = bin(&mut b, BinaryOp::Sub, ro, rn)?;
        // `l` keeps the kernel's own `alpha` where `p` is the kernel's.
        let alpha_l = if natural {
            m.alpha
        } else {
            exact_alpha(&mut b, m_old, big_m)?
        };
        let (c, cb) = leftover(&mut b, m_n, int_op, opts.variant)?;
        if cann {
            let q = b
                .named(InstKind::Binary(BinaryOp::Div, c, cb), "cof")
                .map_err(e)?;
            cof_new = Some(q);
        }
        let cbb = b
            .value(InstKind::Broadcast {
                src: cb,
                shape: s_shape.clone(),
            })
            .map_err(e)?;
        let p_mm = b
            .named(InstKind::Binary(BinaryOp::Mul, p2, cbb), "pc")
            .map_err(e)?;
        (step, Some(alpha_l), p_mm)
    } else {
        let step = bin(&mut b, BinaryOp::Sub, m_old, big_m)?;
        let alpha_l = exact_alpha(&mut b, m_old, big_m)?;
        (step, Some(alpha_l), p2)
    };
    let nf0 = b.value(InstKind::Select(first, zero, step)).map_err(e)?;
    let floor = fc(&mut b, opts.variant.step_floor(), &rows)?;
    let nf = b
        .named(InstKind::Binary(BinaryOp::Max, nf0, floor), "nf")
        .map_err(e)?;
    let mut cof_ratio = None;
    let n = if let (Some(prev), Some(cof)) = (cof, cof_new) {
        // x = n + eps, eps = 1.5 · (cof_prev / cof - 1) + 1e-6 (0 on the
        // first block, when the accumulator is still 0).
        let r = bin(&mut b, BinaryOp::Div, prev, cof)?;
        cof_ratio = Some(b.value(InstKind::Select(first, zero, r)).map_err(e)?);
        let one = fc(&mut b, 1.0, &rows)?;
        let r1 = bin(&mut b, BinaryOp::Sub, r, one)?;
        let k15 = fc(&mut b, 1.5, &rows)?;
        let r15 = bin(&mut b, BinaryOp::Mul, r1, k15)?;
        let tiny = fc(&mut b, opts.variant.eps_bias(), &rows)?;
        let eps = bin(&mut b, BinaryOp::Add, r15, tiny)?;
        let eps = b
            .named(InstKind::Select(first, zero, eps), "eps")
            .map_err(e)?;
        b.named(InstKind::Binary(BinaryOp::Add, nf, eps), "x")
            .map_err(e)?
    } else {
        b.named(InstKind::Cast(nf, DType::I32), "n").map_err(e)?
    };
    let alpha2 = b
        .named(InstKind::Unary(UnaryOp::Exp2, nf), "alpha")
        .map_err(e)?;
    let alpha_l = alpha_l.unwrap_or(alpha2);
    b.ins(InstKind::AtomicExpAdd {
        tensor: ws,
        index: index.clone(),
        n,
    })
    .map_err(e)?;

    // Uses of the old p and alpha take the new ones; the Cube's bf16 cast
    // of p takes P · bf16(c) (nearest); the max is M_new (or m_new).
    k.replace_uses_in(m.body, m.p, p2);
    k.replace_uses_in(m.body, m.alpha, alpha_l);
    let mut casts = Vec::new();
    k.walk(m.body, &mut |i| {
        if let InstKind::Cast(x, DType::Bf16 | DType::F16) = &k.insts[i].kind
            && *x == p2
        {
            casts.push(i);
        }
    });
    for &c in &casts {
        if let InstKind::Cast(x, _) = &mut k.insts[c].kind {
            *x = p_mm;
        }
    }
    let last = *k.blocks[m.body].insts.last().ok_or("empty loop")?;
    if let InstKind::Yield(ys) = &mut k.insts[last].kind {
        ys[m.im] = big_m;
        if let (Some(prev), Some(new)) = (cof, cof_new)
            && let Some(y) = ys.iter_mut().find(|y| **y == prev)
        {
            *y = new;
        }
        if let (Some((prev, _)), Some(new)) = (mu, mu_new)
            && let Some(y) = ys.iter_mut().find(|y| **y == prev)
        {
            *y = new;
        }
    }
    // acc' = acc * alpha + pv  →  atomic_add acc_ws[...], pv
    let (_, apos) = k
        .position(m.body, m.acc_add)
        .ok_or("accumulator update not in the loop")?;
    let mut b = crate::ir::Builder::at(k, m.body, apos + 1);
    b.ins(InstKind::AtomicAdd {
        tensor: ws,
        index: index.clone(),
        value: m.pv,
    })
    .map_err(e)?;

    // Compensation: lc = 2^n · lc + rowsum(f32(bf16(P the Cube multiplies))).
    if compensate && casts.is_empty() {
        notes.push("compensation skipped: `p` is not cast to bf16/f16 for the Cube".into());
    }
    let lc = if compensate && !casts.is_empty() {
        // `lc` starts where `l` does: a loop that runs no block leaves the
        // kernel's `acc / l` at `0 / l`.
        let InstKind::For { init, .. } = &k.insts[m.for_inst].kind else {
            return Err("not a loop".into());
        };
        let lc0 = init[il.ok_or("no l")?];
        let (lc_param, lc_out) = add_carried(k, m.for_inst, lc0, "lc")?;
        let cast = *casts.first().ok_or("no cast of p")?;
        let pb = k.insts[cast].results[0];
        let last = *k.blocks[m.body].insts.last().ok_or("empty loop")?;
        let (_, ypos) = k.position(m.body, last).ok_or("no yield")?;
        let mut b = crate::ir::Builder::at(k, m.body, ypos);
        let pr = b.value(InstKind::Cast(pb, DType::F32)).map_err(e)?;
        let rs = b.value(InstKind::Reduce(ReduceOp::Sum, pr)).map_err(e)?;
        let sc = bin(&mut b, BinaryOp::Mul, lc_param, alpha2)?;
        // CANN: the accumulator's fractional correction, exactly, in f32.
        let sc = match cof_ratio {
            Some(r) => bin(&mut b, BinaryOp::Mul, sc, r)?,
            None => sc,
        };
        // The first block drops lc's start, as `exp(-inf - m_new) = 0`
        // drops l's.
        let sc = b.value(InstKind::Select(first, zero, sc)).map_err(e)?;
        let lc_new = b
            .named(InstKind::Binary(BinaryOp::Add, sc, rs), "lc")
            .map_err(e)?;
        if let InstKind::Yield(ys) = &mut k.insts[last].kind
            && let Some(y) = ys.last_mut()
        {
            *y = lc_new;
        }
        Some(lc_out)
    } else {
        None
    };

    // After the loop: the accumulator is read back from GM, the max
    // converted to natural-log units.
    let results = k.insts[m.for_inst].results.clone();
    let (acc_out, m_out) = (results[m.ia], results[m.im]);
    let (outer, fpos) = k.position(top, m.for_inst).ok_or("loop not found")?;
    let mut b = crate::ir::Builder::at(k, outer, fpos + 1);
    let acc_final = b
        .named(InstKind::Load { tensor: ws, index }, &acc_name)
        .map_err(e)?;
    // The kernel normalises with `acc / l`. With compensation the
    // denominator must be `lc`; for nearest without it, `l · bf16(c_last)`
    // (acc carries the last block's bf16(c)). Folded into the kernel's own
    // division when it is `div acc, broadcast l`; else acc is scaled once.
    let l_out = il.map(|i| results[i]);
    let (denom, g) = if let (Some(lc), Some(l)) = (lc, l_out) {
        let zero = fc(&mut b, 0.0, &rows)?;
        let q = bin(&mut b, BinaryOp::Div, l, lc)?;
        let none = b.value(InstKind::Cmp(CmpOp::Eq, lc, zero)).map_err(e)?;
        let g = b.value(InstKind::Select(none, zero, q)).map_err(e)?;
        (Some(lc), Some(g))
    } else if nearest {
        let ninf = fc(&mut b, f64::NEG_INFINITY, &rows)?;
        let zero = fc(&mut b, 0.0, &rows)?;
        let empty = b.value(InstKind::Cmp(CmpOp::Eq, m_out, ninf)).map_err(e)?;
        let ms = b.value(InstKind::Select(empty, zero, m_out)).map_err(e)?;
        let ms = match mu {
            Some((_, mu_out)) => {
                let m2 = if natural {
                    let log2e = fc(&mut b, LOG2_E, &rows)?;
                    bin(&mut b, BinaryOp::Mul, m_out, log2e)?
                } else {
                    m_out
                };
                let d = bin(&mut b, BinaryOp::Sub, m2, mu_out)?;
                b.value(InstKind::Select(empty, zero, d)).map_err(e)?
            }
            None => ms,
        };
        let (_, cb) = leftover(&mut b, ms, int_op, opts.variant)?;
        let one = fc(&mut b, 1.0, &rows)?;
        let g = bin(&mut b, BinaryOp::Div, one, cb)?;
        let d = match l_out {
            Some(l) => Some(bin(&mut b, BinaryOp::Mul, l, cb)?),
            None => None,
        };
        (d, Some(g))
    } else {
        (None, None)
    };
    let divs: Vec<Inst> = {
        let mut v = Vec::new();
        let mut other = false;
        for &i in &b.kernel.blocks[outer].insts[fpos + 1..] {
            let mut uses = false;
            b.kernel.insts[i]
                .kind
                .for_each_operand(|o| uses |= o == acc_out);
            if !uses {
                continue;
            }
            match &b.kernel.insts[i].kind {
                InstKind::Binary(BinaryOp::Div, x, d)
                    if *x == acc_out
                        && l_out.is_some()
                        && matches!(def(b.kernel, *d), Some(InstKind::Broadcast { src, .. }) if Some(*src) == l_out) =>
                {
                    v.push(i)
                }
                _ => other = true,
            }
        }
        if other || v.is_empty() { Vec::new() } else { v }
    };
    let acc_final = match (g, denom) {
        (Some(g), denom) if divs.is_empty() || denom.is_none() => {
            let gb = b
                .value(InstKind::Broadcast {
                    src: g,
                    shape: acc_shape.clone(),
                })
                .map_err(e)?;
            b.named(InstKind::Binary(BinaryOp::Mul, gb, acc_final), &acc_name)
                .map_err(e)?
        }
        _ => acc_final,
    };
    let fold = if divs.is_empty() { None } else { denom };
    // The carried max of `anchored` and `exact` is the kernel's own
    // (natural log); the others' is base 2, converted back for the code
    // after the loop.
    if !natural {
        let ln2 = fc(&mut b, LN_2, &rows)?;
        let m_name = b.kernel.values[m_out]
            .name
            .clone()
            .unwrap_or_else(|| "m".into());
        let m_nat = b
            .named(InstKind::Binary(BinaryOp::Mul, m_out, ln2), &m_name)
            .map_err(e)?;
        let mul_inst = k.def_inst(m_nat).ok_or("no op")?;
        // The rewrite's own instructions after the loop (up to the
        // conversion) read m_out and must keep reading it after the uses
        // are replaced.
        let (_, mpos) = k.position(outer, mul_inst).ok_or("no conversion")?;
        let own: Vec<Inst> = k.blocks[outer].insts[fpos + 1..=mpos].to_vec();
        k.replace_uses_in(outer, m_out, m_nat);
        for i in own {
            let swap = |o: &mut Value| {
                if *o == m_nat {
                    *o = m_out;
                }
            };
            match &mut k.insts[i].kind {
                InstKind::Binary(_, a, c) | InstKind::Cmp(_, a, c) => {
                    swap(a);
                    swap(c);
                }
                InstKind::Select(c, a, d) => {
                    swap(c);
                    swap(a);
                    swap(d);
                }
                _ => {}
            }
        }
    }
    k.replace_uses_in(outer, acc_out, acc_final);
    if let Some(d) = fold {
        for div in divs {
            let (blk, dpos) = k.position(outer, div).ok_or("division not found")?;
            let mut b = crate::ir::Builder::at(k, blk, dpos);
            let db = b
                .value(InstKind::Broadcast {
                    src: d,
                    shape: acc_shape.clone(),
                })
                .map_err(e)?;
            if let InstKind::Binary(_, _, y) = &mut k.insts[div].kind {
                *y = db;
            }
        }
    }
    // The accumulator is no longer carried.
    k.remove_carried(m.for_inst, m.ia);
    Ok(notes)
}

/// `c = 2^(x - int(x))` (`int` is round or ceil) and `f32(bf16(c))`: the
/// leftover factor of the split max, and its rounding to bf16 as the
/// Cube's operand is (`c` itself where the variant does not round it).
fn leftover(
    b: &mut crate::ir::Builder,
    x: Value,
    int_op: UnaryOp,
    variant: RescaleVariant,
) -> Result<(Value, Value), String> {
    let e = |e: crate::ir::typing::TypeError| format!("mul-to-add: {e}");
    let r = b.value(InstKind::Unary(int_op, x)).map_err(e)?;
    let f = b.value(InstKind::Binary(BinaryOp::Sub, x, r)).map_err(e)?;
    let c = b.named(InstKind::Unary(UnaryOp::Exp2, f), "c").map_err(e)?;
    if !variant.rounds_c() {
        return Ok((c, c));
    }
    let cb = b.value(InstKind::Cast(c, DType::Bf16)).map_err(e)?;
    Ok((c, b.value(InstKind::Cast(cb, DType::F32)).map_err(e)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Type;

    /// FlashAttention decode at toy shapes, as lowering builds it; `acc0`
    /// is the accumulator's initial value (0.0, or 1.0 for the near miss).
    /// The kernels are the `mul-to-add` filetests `flash.tir` and
    /// `accumulator_not_zero.tir`.
    fn flash(acc0: f64) -> Kernel {
        let text = if acc0 == 0.0 {
            include_str!("../../../tests/filetests/mul-to-add/flash.tir")
        } else {
            include_str!("../../../tests/filetests/mul-to-add/accumulator_not_zero.tir")
        };
        crate::ir::parse(text).expect("the mul-to-add filetests parse")
    }
    fn count(k: &Kernel, pred: impl Fn(&Kernel, &InstKind) -> bool) -> usize {
        let mut n = 0;
        k.walk(k.funcs[0].body, &mut |i| {
            n += pred(k, &k.insts[i].kind) as usize
        });
        n
    }

    fn acc_multiplies(k: &Kernel) -> usize {
        count(k, |k, op| {
            matches!(op, InstKind::Binary(BinaryOp::Mul, a, _)
                if k.ty(*a) == &Type::tile(DType::F32, vec![16, 16], crate::ir::Space::Any))
        })
    }

    fn carried(k: &Kernel) -> Vec<usize> {
        let mut carried = vec![];
        k.walk(k.funcs[0].body, &mut |i| {
            if let InstKind::For { init, .. } = &k.insts[i].kind {
                carried.push(init.len());
            }
        });
        carried
    }

    #[test]
    fn every_variant_rewrites_and_verifies() {
        for variant in RescaleVariant::ALL {
            for compensation in [false, true] {
                let opts = MulToAddOptions {
                    variant,
                    compensation,
                };
                let mut k = flash(0.0);
                let r = run(&mut k, &opts).unwrap();
                assert_eq!(r.rewritten, 1, "{opts:?}: {:?}", r.notes);
                crate::ir::verify(&k).unwrap_or_else(|e| panic!("{opts:?}: {e}"));
                assert_eq!(acc_multiplies(&k), 0, "{opts:?}");
                // m and l, or m and lc with compensation (the plain l is then
                // dead and `dce::remove_dead` drops its slot); and cof for cann.
                // And mu for anchored.
                let cof = matches!(variant, RescaleVariant::Cann | RescaleVariant::Anchored);
                let mu = matches!(variant, RescaleVariant::Anchored | RescaleVariant::Exact);
                assert_eq!(
                    carried(&k),
                    vec![2 + cof as usize + mu as usize],
                    "{opts:?}"
                );
                let op = |u| count(&k, |_, op| matches!(op, InstKind::Unary(x, _) if *x == u));
                match variant {
                    RescaleVariant::Ceil => {
                        assert_eq!((op(UnaryOp::Ceil), op(UnaryOp::Round)), (1, 0))
                    }
                    // round(m_old), round(m_new), round in c, round in the final c.
                    RescaleVariant::Nearest
                    | RescaleVariant::Cann
                    | RescaleVariant::Anchored
                    | RescaleVariant::Exact => {
                        assert_eq!(op(UnaryOp::Ceil), 0);
                        assert!(op(UnaryOp::Round) >= 3, "{opts:?}");
                    }
                }
            }
        }
        assert_eq!(
            RescaleVariant::parse("nearest"),
            Some(RescaleVariant::Nearest)
        );
        assert_eq!(RescaleVariant::parse("Ceil"), None);
    }

    #[test]
    fn rewrites_the_rescale_into_exponent_add_in_gm() {
        let mut k = flash(0.0);
        assert_eq!(acc_multiplies(&k), 1);
        // The ceil variant's form (one `ceil` of the row max); the other
        // variants are checked by `every_variant_rewrites_and_verifies`.
        let opts = MulToAddOptions {
            variant: RescaleVariant::Ceil,
            compensation: true,
        };
        let r = run(&mut k, &opts).unwrap();
        assert_eq!(r.rewritten, 1, "{:?}", r.notes);
        assert_eq!(
            acc_multiplies(&k),
            0,
            "the float multiply of the accumulator must be gone"
        );
        assert_eq!(
            count(&k, |_, op| matches!(op, InstKind::AtomicExpAdd { .. })),
            1
        );
        assert_eq!(
            count(&k, |_, op| matches!(op, InstKind::AtomicAdd { .. })),
            1
        );
        assert_eq!(
            count(&k, |_, op| matches!(op, InstKind::Unary(UnaryOp::Ceil, _))),
            1
        );
        let ws = k
            .tensors
            .values()
            .filter(|t| t.role == Role::Workspace)
            .count();
        assert_eq!(ws, 1);
        // The loop now carries m and the compensated lc; the
        // plain l it replaces is dead and `dce::remove_dead` drops its slot.
        assert_eq!(carried(&k), vec![2]);
    }

    #[test]
    fn near_miss_is_explained_and_left_alone() {
        let mut k = flash(1.0);
        let r = run(&mut k, &MulToAddOptions::default()).unwrap();
        assert_eq!(r.rewritten, 0);
        assert!(
            r.notes.iter().any(|n| n.contains("does not start at 0")),
            "{:?}",
            r.notes
        );
        assert_eq!(acc_multiplies(&k), 1);
    }
}
