//! A FlashMLA-shaped API: paged MLA decode with split-KV, as one call.
//!
//! ```
//! use amla_compiler::driver::CompileOptions;
//! use amla_compiler::flash_mla::{FlashMlaPlan, PlanRequest, flash_mla_with_kvcache};
//! use amla_compiler::run::{HostData, HostTensor};
//! # fn main() -> Result<(), String> {
//! let t = |name: &str, shape: Vec<usize>, data| HostTensor { name: name.into(), shape, data };
//! let bf16 = |n: usize| HostData::Bf16(
//!     (0..n).map(|i| half::bf16::from_f32((i % 7) as f32 / 8.0 - 0.4)).collect());
//! // Two sequences of 5 and 70 tokens over pages of 64 tokens, 4 heads.
//! let (heads, page, pool_pages, max_pages) = (4, 64, 3, 2);
//! let cache_seqlens = vec![5, 70];
//! let plan = FlashMlaPlan::new(&PlanRequest {       // once per shape set
//!     heads, q_tokens: 1, page, pool_pages, max_pages, cache_seqlens: cache_seqlens.clone(),
//!     num_splits: None, softmax_scale: None,
//!     compile: CompileOptions::new()?, run: Default::default(),
//! })?;
//! let q = t("q", vec![2, 1, heads, 576], bf16(2 * heads * 576));
//! let k_cache = t("k_cache", vec![pool_pages, page, 1, 576], bf16(pool_pages * page * 576));
//! // Sequence 0 uses page 2; sequence 1 pages 0 and 1; -1 pads the unused slot.
//! let block_table = t("block_table", vec![2, max_pages], HostData::I32(vec![2, -1, 0, 1]));
//! let lens = t("cache_seqlens", vec![2], HostData::I32(cache_seqlens));
//! let (out, lse) = flash_mla_with_kvcache(&q, &k_cache, &block_table, &lens,  // every step
//!     512, &plan, plan.metadata.splits, None, false)?;
//! assert_eq!(out.shape, [2, 1, heads, 512]);
//! assert_eq!(lse.shape, [2, 1, heads]);
//! # Ok(()) }
//! ```
//!
//! The plan is FlashMLA's `get_mla_metadata` and FlashInfer's `plan`: the
//! scheduler ([`get_mla_metadata`]) picks how many chunks each sequence's
//! pages are cut into, and the plan holds the kernels compiled and JIT-ed for
//! those shapes, so launches reuse them.
//!
//! With one split the plan runs `dsl-examples/mla_decode_paged.amla`. With
//! `n > 1` it runs `dsl-examples/mla_decode_split.amla` (one work item per
//! sequence and chunk, plain FlashAttention over the chunk's pages, writing
//! a normalised partial output and its LSE) and then
//! `dsl-examples/mla_combine.amla`, which merges the chunks of each sequence
//! by their LSEs in chunk order. Both are `.amla` kernels, so the combine is
//! visible in the IR (`amlac compile dsl-examples/mla_combine.amla`). No step
//! depends on which core runs a work item, so for one plan the output is
//! bit-identical run to run and for any number of emulated cores.
//!
//! The scheduler never looks at the emulated core count: it reads the
//! target's AI-core count (`targets/*.toml`), the batch and the lengths.

use std::fmt;

use crate::diag::SourceFile;
use crate::driver::{CompileOptions, compile};
use crate::run::exec::{Executable, RunConfig};
use crate::run::{HostData, HostTensor};

const PAGED: &str = include_str!("../../dsl-examples/mla_decode_paged.amla");
const SPLIT: &str = include_str!("../../dsl-examples/mla_decode_split.amla");
const COMBINE: &str = include_str!("../../dsl-examples/mla_combine.amla");
const PAGED_MTP: &str = include_str!("../../dsl-examples/mla_decode_paged_mtp.amla");

/// The least number of KV tokens a chunk gets before the scheduler splits
/// further (a chunk shorter than this costs more in the combine than it
/// wins in parallelism).
pub const MIN_CHUNK_TOKENS: usize = 512;

/// FlashMLA's `tile_scheduler_metadata`: how the KV of each sequence is cut.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TileSchedulerMetadata {
    /// Chunks per sequence (1: no split-KV).
    pub splits: usize,
    /// Pages per chunk: chunk `c` covers pages `c * chunk_pages ..`.
    pub chunk_pages: usize,
    /// Work items of the first launch (`batch * splits`).
    pub work_items: usize,
    /// Why this plan (`--explain-schedule`).
    pub why: String,
}

impl fmt::Display for TileSchedulerMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "split-KV plan: {} split(s) of {} page(s) per sequence, {} work item(s)",
            self.splits, self.chunk_pages, self.work_items
        )?;
        write!(f, "  {}", self.why)
    }
}

/// FlashMLA's `get_mla_metadata`: the split plan for `cache_seqlens` over
/// pages of `page` tokens with `max_pages` block-table columns, on a chip of
/// `chip_cores` AI cores; `num_splits` overrides the choice.
pub fn get_mla_metadata(
    cache_seqlens: &[i32],
    page: usize,
    max_pages: usize,
    chip_cores: usize,
    num_splits: Option<usize>,
) -> TileSchedulerMetadata {
    let batch = cache_seqlens.len().max(1);
    let max_pages = max_pages.max(1);
    let page = page.max(1);
    let longest = cache_seqlens
        .iter()
        .map(|&l| (l.max(0) as usize).div_ceil(page))
        .max()
        .unwrap_or(0);
    let (splits, why) = match num_splits {
        Some(n) => {
            let n = n.clamp(1, max_pages);
            (
                n,
                format!("{n} split(s) asked for (-D SPLITS / num_splits)"),
            )
        }
        None => {
            let fill = chip_cores.div_ceil(batch).max(1);
            let min_chunk = MIN_CHUNK_TOKENS.div_ceil(page).max(1);
            let by_length = longest.div_ceil(min_chunk).max(1);
            let n = fill.min(by_length).min(max_pages);
            (
                n,
                format!(
                    "{batch} sequence(s) on {chip_cores} chip cores want {fill} split(s) each; \
                     the longest sequence ({longest} page(s) of {page}) allows {by_length} \
                     chunk(s) of at least {MIN_CHUNK_TOKENS} tokens"
                ),
            )
        }
    };
    TileSchedulerMetadata {
        splits,
        chunk_pages: max_pages.div_ceil(splits),
        work_items: batch * splits,
        why,
    }
}

/// The shapes a plan is made for.
#[derive(Clone, Debug)]
pub struct PlanRequest {
    /// Query heads (1 to 128).
    pub heads: usize,
    /// New tokens per sequence (FlashMLA's `s_q`; 1 for plain decode, more
    /// for multi-token prediction, causal among them).
    pub q_tokens: usize,
    /// Tokens per page.
    pub page: usize,
    /// Pages in the pool (`k_cache`'s first dim).
    pub pool_pages: usize,
    /// Block-table columns.
    pub max_pages: usize,
    /// Sequence lengths (the batch is their count).
    pub cache_seqlens: Vec<i32>,
    /// `Some(n)` forces `n` splits.
    pub num_splits: Option<usize>,
    /// Softmax scale; `None`: 1 / sqrt(576).
    pub softmax_scale: Option<f64>,
    /// Compilation options (target, pipeline); the dims are set by the plan.
    pub compile: CompileOptions,
    /// Launch settings (emulated cores, timeout).
    pub run: RunConfig,
}

enum Kernels {
    /// One split: `mla_decode_paged.amla`, or `mla_decode_paged_mtp.amla`
    /// for more than one new token.
    Paged(Box<Executable>),
    Split {
        split: Box<Executable>,
        combine: Box<Executable>,
    },
}

/// A plan: the scheduler's metadata and the kernels compiled for it.
pub struct FlashMlaPlan {
    /// The split plan.
    pub metadata: TileSchedulerMetadata,
    /// The softmax scale compiled in.
    pub softmax_scale: f64,
    batch: usize,
    heads: usize,
    q_tokens: usize,
    page: usize,
    pool_pages: usize,
    max_pages: usize,
    run: RunConfig,
    kernels: Kernels,
}

fn build(name: &str, text: &str, opts: &CompileOptions) -> Result<Executable, String> {
    let src = SourceFile::new(format!("dsl-examples/{name}"), text.to_string());
    let c = compile(&src, opts).map_err(|e| format!("{name}: {e}"))?;
    Executable::new(&c, &opts.target).map_err(|e| format!("{name}: {e}"))
}

impl FlashMlaPlan {
    /// Schedules and compiles.
    pub fn new(req: &PlanRequest) -> Result<FlashMlaPlan, String> {
        if !(1..=128).contains(&req.heads) {
            return Err(format!("{} heads: MLA decode takes 1 to 128", req.heads));
        }
        if req.page == 0 || req.pool_pages == 0 || req.max_pages == 0 {
            return Err("page size, pool pages and block-table columns must be positive".into());
        }
        let batch = req.cache_seqlens.len();
        if batch == 0 {
            return Err("an empty batch".into());
        }
        if req.q_tokens == 0 {
            return Err("0 query tokens per sequence: decode takes at least 1".into());
        }
        let mtp = req.q_tokens > 1;
        if mtp && req.num_splits.is_some_and(|n| n > 1) {
            return Err(format!(
                "{} splits with {} query tokens: split-KV takes one query token per sequence",
                req.num_splits.unwrap_or(1),
                req.q_tokens
            ));
        }
        let mut metadata = if mtp {
            TileSchedulerMetadata {
                splits: 1,
                chunk_pages: req.max_pages,
                work_items: batch, // set from the compiled kernel below
                why: format!(
                    "{} query tokens per sequence: no split-KV (the split kernel takes one token); \
                     the S·H rows are the work",
                    req.q_tokens
                ),
            }
        } else {
            get_mla_metadata(
                &req.cache_seqlens,
                req.page,
                req.max_pages,
                req.compile.target.chip.ai_cores as usize,
                req.num_splits,
            )
        };
        let scale = req.softmax_scale.unwrap_or(1.0 / 576f64.sqrt());
        if !(scale.is_finite() && scale > 0.0) {
            return Err(format!("softmax scale {scale} is not a positive number"));
        }
        let mut o = req.compile.clone();
        for (n, v) in [
            ("B", batch),
            ("H", req.heads),
            ("PAGE", req.page),
            ("NB", req.pool_pages),
            ("MAXB", req.max_pages),
        ] {
            o.defines.insert(n, v.to_string());
        }
        o.defines.insert("scale", format!("{scale:e}"));
        let kernels = if mtp {
            o.defines.insert("S", req.q_tokens.to_string());
            let e = build("mla_decode_paged_mtp.amla", PAGED_MTP, &o)?;
            // One work item per sequence and Cube pass of new tokens.
            metadata.work_items = e.work_items().map_err(|e| e.to_string())? as usize;
            Kernels::Paged(Box::new(e))
        } else if metadata.splits == 1 {
            Kernels::Paged(Box::new(build("mla_decode_paged.amla", PAGED, &o)?))
        } else {
            o.defines.insert("SPLITS", metadata.splits.to_string());
            let split = build("mla_decode_split.amla", SPLIT, &o)?;
            let mut oc = req.compile.clone();
            oc.defines.insert("B", batch.to_string());
            oc.defines.insert("H", req.heads.to_string());
            oc.defines.insert("SPLITS", metadata.splits.to_string());
            let combine = build("mla_combine.amla", COMBINE, &oc)?;
            Kernels::Split {
                split: Box::new(split),
                combine: Box::new(combine),
            }
        };
        Ok(FlashMlaPlan {
            metadata,
            softmax_scale: scale,
            batch,
            heads: req.heads,
            q_tokens: req.q_tokens,
            page: req.page,
            pool_pages: req.pool_pages,
            max_pages: req.max_pages,
            run: req.run.clone(),
            kernels,
        })
    }

    /// The plan with a different launch setting (e.g. another emulated core
    /// count); the kernels are shared.
    pub fn set_run(&mut self, run: RunConfig) {
        self.run = run;
    }

    /// The plan's kernels in launch order, with their example names: the
    /// paged kernel alone, or the split kernel then the combine.
    pub fn executables(&self) -> Vec<(&'static str, &Executable)> {
        match &self.kernels {
            Kernels::Paged(e) if self.q_tokens > 1 => vec![("mla_decode_paged_mtp", e)],
            Kernels::Paged(e) => vec![("mla_decode_paged", e)],
            Kernels::Split { split, combine } => {
                vec![("mla_decode_split", split), ("mla_combine", combine)]
            }
        }
    }

    /// The launch settings.
    pub fn run_config(&self) -> &RunConfig {
        &self.run
    }
}

/// What [`bench_plan`] measures: `batch` sequences of `seqlen` tokens each,
/// over pages of `page` tokens (block tables in page order).
#[derive(Clone, Debug)]
pub struct PlanBench {
    /// Sequences.
    pub batch: usize,
    /// Tokens per sequence.
    pub seqlen: usize,
    /// Query heads.
    pub heads: usize,
    /// Tokens per page.
    pub page: usize,
    /// `Some(n)` forces `n` splits.
    pub num_splits: Option<usize>,
    /// Untimed launches of the whole plan first.
    pub warmup: usize,
    /// Timed launches of the whole plan.
    pub launches: usize,
    /// Compilation options (target, pipeline).
    pub compile: CompileOptions,
    /// Launch settings.
    pub run: RunConfig,
}

/// The timings of one plan: every launch runs every kernel of the plan.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PlanTimes {
    /// The scheduler's split plan.
    pub splits: usize,
    /// Pages per chunk.
    pub chunk_pages: usize,
    /// Why (the scheduler's text).
    pub why: String,
    /// The kernels, in launch order, with their work items.
    pub kernels: Vec<(String, u64)>,
    /// Seconds of each timed launch of the whole plan.
    pub plan_s: Vec<f64>,
    /// Seconds of each kernel in each timed launch (`[launch][kernel]`).
    pub kernel_s: Vec<Vec<f64>>,
}

/// `n` standard-normal bf16 elements, stream `stream` of seed 0: the same
/// draws `amlac run` gives an input (`run::inputs`).
fn seeded_bf16(n: usize, stream: u64) -> HostData {
    crate::run::inputs::InputGen::new(&crate::run::inputs::InputOptions::default(), stream)
        .floats(crate::ir::DType::Bf16, n)
        .expect("bf16 is a float dtype")
}

/// Benchmarks a plan the way `amlac bench` benchmarks one kernel: plan and
/// compile once, GM laid out once per kernel (the combine's inputs are the
/// split kernel's outputs of the first launch, which every later launch
/// reproduces bit for bit), `warmup` untimed launches, then `launches`
/// timed launches of every kernel of the plan in order. The host copy of the
/// partial results from one kernel's GM to the next is not timed: on a chip
/// both kernels share GM. `before` runs before every timed launch (e.g. a peak sample).
pub fn bench_plan(b: &PlanBench, before: &mut dyn FnMut()) -> Result<PlanTimes, String> {
    if b.batch == 0 || b.seqlen == 0 || b.page == 0 || b.launches == 0 {
        return Err("batch, sequence length, page size and launches must be positive".into());
    }
    let max_pages = b.seqlen.div_ceil(b.page);
    let pool = b.batch * max_pages;
    let seqlen = i32::try_from(b.seqlen).map_err(|_| format!("N={} is too long", b.seqlen))?;
    let plan = FlashMlaPlan::new(&PlanRequest {
        heads: b.heads,
        q_tokens: 1,
        page: b.page,
        pool_pages: pool,
        max_pages,
        cache_seqlens: vec![seqlen; b.batch],
        num_splits: b.num_splits,
        softmax_scale: None,
        compile: b.compile.clone(),
        run: b.run.clone(),
    })?;
    let t = |name: &str, shape: Vec<usize>, data: HostData| HostTensor {
        name: name.into(),
        shape,
        data,
    };
    let mut inputs = vec![
        t(
            "q",
            vec![b.batch, b.heads, 576],
            seeded_bf16(b.batch * b.heads * 576, 1),
        ),
        t(
            "kv",
            vec![pool, b.page, 576],
            seeded_bf16(pool * b.page * 576, 2),
        ),
        t(
            "block_table",
            vec![b.batch, max_pages],
            HostData::I32((0..pool as i32).collect()),
        ),
        t(
            "cache_seqlens",
            vec![b.batch],
            HostData::I32(vec![seqlen; b.batch]),
        ),
    ];
    let err = |e: crate::run::exec::RunError| e.to_string();
    let exes = plan.executables();
    let mut prepared = Vec::new();
    let mut kernels = Vec::new();
    for (name, exe) in &exes {
        let mut p = exe.prepare(&inputs, &plan.run).map_err(err)?;
        exe.launch(&mut p).map_err(err)?;
        kernels.push((name.to_string(), p.work_items()));
        inputs = p.outputs().map_err(err)?;
        prepared.push(p);
    }
    let mut launch_all = |times: &mut Vec<f64>| -> Result<(), String> {
        for ((_, exe), p) in exes.iter().zip(prepared.iter_mut()) {
            let t0 = std::time::Instant::now();
            exe.launch(p).map_err(err)?;
            times.push(t0.elapsed().as_secs_f64());
        }
        Ok(())
    };
    for _ in 0..b.warmup {
        launch_all(&mut Vec::new())?;
    }
    let mut kernel_s = Vec::new();
    for _ in 0..b.launches {
        before();
        let mut v = Vec::new();
        launch_all(&mut v)?;
        kernel_s.push(v);
    }
    Ok(PlanTimes {
        splits: plan.metadata.splits,
        chunk_pages: plan.metadata.chunk_pages,
        why: plan.metadata.why.clone(),
        kernels,
        plan_s: kernel_s.iter().map(|v| v.iter().sum()).collect(),
        kernel_s,
    })
}

fn expect_shape(t: &HostTensor, what: &str, want: &[usize]) -> Result<(), String> {
    if t.shape != want {
        return Err(format!(
            "{what} has shape {:?}, the plan expects {want:?}",
            t.shape
        ));
    }
    Ok(())
}

fn named(t: &HostTensor, name: &str, shape: Vec<usize>) -> HostTensor {
    HostTensor {
        name: name.into(),
        shape,
        data: t.data.clone(),
    }
}

/// FlashMLA's `flash_mla_with_kvcache`: `q` `[B, s_q, H, 576]` (bf16, `s_q`
/// the plan's `q_tokens`; `[B, H, 576]` also taken for one token),
/// `k_cache` `[NB, PAGE, 1, 576]` or `[NB, PAGE, 576]` (bf16), `block_table`
/// `[B, MAXB]` and `cache_seqlens` `[B]` (i32); returns `out`
/// `[B, s_q, H, head_dim_v]` (bf16) and `lse` `[B, s_q, H]` (f32, natural
/// log; +inf for a token that sees no key). `num_splits` and `softmax_scale`
/// must match the plan (the kernels are compiled for them). With one query
/// token `causal` changes nothing; with more the new tokens are the last
/// `s_q` of each sequence and each sees the cache up to its own position, so
/// `causal` must be true.
#[allow(clippy::too_many_arguments)]
pub fn flash_mla_with_kvcache(
    q: &HostTensor,
    k_cache: &HostTensor,
    block_table: &HostTensor,
    cache_seqlens: &HostTensor,
    head_dim_v: usize,
    tile_scheduler_metadata: &FlashMlaPlan,
    num_splits: usize,
    softmax_scale: Option<f64>,
    causal: bool,
) -> Result<(HostTensor, HostTensor), String> {
    let plan = tile_scheduler_metadata;
    let sq = plan.q_tokens;
    if sq > 1 && !causal {
        return Err(format!(
            "causal = false with {sq} query tokens: multi-token decode here is causal among the new tokens (FlashMLA's MTP)"
        ));
    }
    if head_dim_v != 512 {
        return Err(format!(
            "head_dim_v {head_dim_v}: MLA's V is the cache's first 512 channels"
        ));
    }
    if num_splits != plan.metadata.splits {
        return Err(format!(
            "num_splits {num_splits} differs from the plan's {}",
            plan.metadata.splits
        ));
    }
    if let Some(s) = softmax_scale
        && s != plan.softmax_scale
    {
        return Err(format!(
            "softmax_scale {s} differs from the plan's {}; make a plan with it",
            plan.softmax_scale
        ));
    }
    let (b, h) = (plan.batch, plan.heads);
    let want_q = [b, sq, h, 576];
    let q_ok = q.shape == want_q || (sq == 1 && q.shape == [b, h, 576]);
    if !q_ok {
        return Err(format!(
            "q has shape {:?}, the plan expects {want_q:?} ([B, s_q, H, 576])",
            q.shape
        ));
    }
    // The kernel's q: [B, H, 576] for one token, [B, S, H, 576] for more.
    let q_in = match sq {
        1 => named(q, "q", vec![b, h, 576]),
        _ => named(q, "q", want_q.to_vec()),
    };
    let kv_shape = vec![plan.pool_pages, plan.page, 576];
    let kv = match k_cache.shape.as_slice() {
        [nb, p, 1, 576] | [nb, p, 576] if *nb == plan.pool_pages && *p == plan.page => {
            named(k_cache, "kv", kv_shape)
        }
        s => {
            return Err(format!(
                "k_cache has shape {s:?}, the plan expects [{}, {}, 1, 576]",
                plan.pool_pages, plan.page
            ));
        }
    };
    expect_shape(block_table, "block_table", &[b, plan.max_pages])?;
    expect_shape(cache_seqlens, "cache_seqlens", &[b])?;
    let inputs = vec![
        q_in,
        kv,
        named(block_table, "block_table", block_table.shape.clone()),
        named(cache_seqlens, "cache_seqlens", cache_seqlens.shape.clone()),
    ];
    // What `amlac run` checks for the paged kernel: lengths within a row's
    // capacity, the block-table entries a sequence uses (only those: `-1`
    // padding past its length is fine) pages of the pool, finite tails.
    crate::run::validate::check_roles(
        crate::run::reference_kind::ReferenceKind::MlaPaged,
        &inputs,
    )?;
    let err = |e: crate::run::exec::RunError| e.to_string();
    let outs = match &plan.kernels {
        Kernels::Paged(exe) => exe.run(&inputs, &plan.run).map_err(err)?.outputs,
        Kernels::Split { split, combine } => {
            let parts = split.run(&inputs, &plan.run).map_err(err)?.outputs;
            combine.run(&parts, &plan.run).map_err(err)?.outputs
        }
    };
    let get = |name: &str, shape: Vec<usize>| {
        outs.iter()
            .find(|o| o.name == name)
            .map(|o| named(o, name, shape))
            .ok_or_else(|| format!("the kernel returned no `{name}`"))
    };
    Ok((
        get("out", vec![b, sq, h, 512])?,
        get("lse", vec![b, sq, h])?,
    ))
}
