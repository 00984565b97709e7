//! Launcher tests: Rust-closure kernels and JIT-style `extern "C"` kernels
//! doing Cube → Vector ping-pongs through GM with flags, timeouts, aborts,
//! atomics, statistics and traces. The tests run under the default
//! schedule, and the modules `threads` and `cooperative` at the end run the
//! same tests again under each schedule explicitly.

use std::cell::Cell;
use std::time::{Duration, Instant};

use amla_runtime::jit::*;
use amla_runtime::*;
use half::bf16;

const M: usize = 2; // rows: one per Vector sub-block
const K: usize = 40;
const N: usize = 24;

thread_local! {
    /// The schedule [`cfg`] asks for (each test runs on a thread of its own).
    static SCHEDULE: Cell<Schedule> = const { Cell::new(Schedule::Auto) };
}

fn cfg(cores: usize) -> LaunchConfig {
    LaunchConfig::default()
        .with_cores(cores)
        .with_wait_timeout(Duration::from_secs(20))
        .with_schedule(SCHEDULE.with(Cell::get))
}

/// Every listed test again under `Schedule::Threads` and
/// `Schedule::Cooperative`.
macro_rules! under_each_schedule {
    ($($t:ident),* $(,)?) => {
        mod threads {
            $(#[test]
            fn $t() {
                super::SCHEDULE.with(|s| s.set(amla_runtime::Schedule::Threads));
                super::$t();
            })*
        }
        mod cooperative {
            $(#[test]
            fn $t() {
                super::SCHEDULE.with(|s| s.set(amla_runtime::Schedule::Cooperative));
                super::$t();
            })*
        }
    };
}

under_each_schedule!(
    ping_pong_several_cores_uneven_items,
    ping_pong_one_core,
    ping_pong_more_cores_than_cpus,
    zero_work_items_is_fine,
    trace_is_chrome_json,
    cube_wait_needs_both_vectors_or_fails,
    a_wait_on_a_finished_partner_fails_at_once,
    units_waiting_on_each_other_deadlock_is_reported_at_once,
    an_error_aborts_blocked_waits_promptly,
    panics_and_bad_accesses_are_errors,
    atomic_adds_from_many_cores_all_land,
    pending_flags_are_reported,
    jit_style_kernel_through_extern_c_symbols,
    jit_errors_carry_details,
);

fn val(i: usize, salt: usize) -> bf16 {
    bf16::from_f32(((i * 7 + salt * 13) % 17) as f32 / 8.0 - 1.0)
}

struct PingPong {
    gm: Gm,
    a: GmId,
    b: GmId,
    s: GmId,
    out: GmId,
}

fn ping_pong_gm(items: usize) -> PingPong {
    let mut gm = Gm::new();
    let a: Vec<bf16> = (0..items * M * K).map(|i| val(i, 1)).collect();
    let b: Vec<bf16> = (0..items * K * N).map(|i| val(i, 2)).collect();
    let a = gm.add_from("a", &a).unwrap();
    let b = gm.add_from("b", &b).unwrap();
    let s = gm.add_zeroed("s", DType::F32, items * M * N).unwrap();
    let out = gm.add_zeroed("out", DType::F32, items * M * N).unwrap();
    PingPong { gm, a, b, s, out }
}

/// out[item] = 2 · (A[item] · B[item]) + 1, computed in f64.
fn expected(p: &PingPong, items: usize) -> Vec<f64> {
    let a = p.gm.slice::<bf16>(p.a).unwrap();
    let b = p.gm.slice::<bf16>(p.b).unwrap();
    let mut r = vec![0f64; items * M * N];
    for it in 0..items {
        for i in 0..M {
            for j in 0..N {
                let mut s = 0f64;
                for k in 0..K {
                    s += f64::from(a[it * M * K + i * K + k].to_f32())
                        * f64::from(b[it * K * N + k * N + j].to_f32());
                }
                r[it * M * N + i * N + j] = 2.0 * s + 1.0;
            }
        }
    }
    r
}

/// Cube: A, B → L1 → L0A/L0B, matmul, FixPipe to GM `s`, set 0, wait 1.
/// Vector n: wait 0, row n of `s` → UB, 2x+1, → GM `out`, set 1.
fn run_ping_pong(
    items: usize,
    cores: usize,
    trace: bool,
) -> (PingPong, Result<LaunchReport, RuntimeError>) {
    let mut p = ping_pong_gm(items);
    let (a, b, s, out) = (p.a, p.b, p.s, p.out);
    let cube = move |u: &mut Unit<'_>, item: u64| -> Result<(), RuntimeError> {
        let it = item as usize;
        u.copy(
            &Tile::local(Buffer::L1, 0, K, DType::Bf16),
            &Tile::gm(a, it * M * K, K, DType::Bf16),
            M,
            K,
            StoreMode::Overwrite,
        )?;
        u.copy(
            &Tile::local(Buffer::L1, 4096, N, DType::Bf16),
            &Tile::gm(b, it * K * N, N, DType::Bf16),
            K,
            N,
            StoreMode::Overwrite,
        )?;
        u.copy(
            &Tile::local(Buffer::L0A, 0, K, DType::Bf16),
            &Tile::local(Buffer::L1, 0, K, DType::Bf16),
            M,
            K,
            StoreMode::Overwrite,
        )?;
        u.copy(
            &Tile::local(Buffer::L0B, 0, N, DType::Bf16),
            &Tile::local(Buffer::L1, 4096, N, DType::Bf16),
            K,
            N,
            StoreMode::Overwrite,
        )?;
        u.matmul(
            &Gemm::dense(M, N, K, BLayout::KN, AccumMode::Overwrite),
            DType::Bf16,
            0,
            0,
            0,
        )?;
        u.copy(
            &Tile::gm(s, it * M * N, N, DType::F32),
            &Tile::local(Buffer::L0C, 0, N, DType::F32),
            M,
            N,
            StoreMode::Overwrite,
        )?;
        u.set_flag(0)?;
        u.wait_flag(1, item)
    };
    let vector = move |u: &mut Unit<'_>, item: u64| -> Result<(), RuntimeError> {
        let it = item as usize;
        let row = u.sub_block() as usize;
        u.wait_flag(0, item)?;
        u.copy(
            &Tile::local(Buffer::Ub, 0, N, DType::F32),
            &Tile::gm(s, it * M * N + row * N, N, DType::F32),
            1,
            N,
            StoreMode::Overwrite,
        )?;
        for v in u.local::<f32>(Buffer::Ub, 0, N)? {
            *v = 2.0 * *v + 1.0;
        }
        u.copy(
            &Tile::gm(out, it * M * N + row * N, N, DType::F32),
            &Tile::local(Buffer::Ub, 0, N, DType::F32),
            1,
            N,
            StoreMode::Overwrite,
        )?;
        u.set_flag(1)
    };
    let k = Kernel {
        name: "ping_pong",
        cube: Entry::Rust(&cube),
        vector: Entry::Rust(&vector),
    };
    let r = launch(
        &k,
        &mut p.gm,
        items as u64,
        &CoreConfig::default(),
        &cfg(cores).with_trace(trace),
    );
    (p, r)
}

fn check_ping_pong(items: usize, cores: usize) -> LaunchReport {
    let (p, r) = run_ping_pong(items, cores, false);
    let rep = r.unwrap();
    let want = expected(&p, items);
    let got = p.gm.slice::<f32>(p.out).unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (f64::from(*g) - w).abs() <= 1e-4 * (1.0 + w.abs()),
            "out[{i}] = {g}, want {w}"
        );
    }
    assert!(rep.pending_flags.is_empty(), "{:?}", rep.pending_flags);
    rep
}

#[test]
fn ping_pong_several_cores_uneven_items() {
    let rep = check_ping_pong(7, 3);
    let t = &rep.stats.total;
    assert_eq!(t.get(Pipe::Cube).calls, 7);
    assert_eq!(t.get(Pipe::Cube).flops, 7 * 2 * (M * N * K) as u64);
    assert_eq!(t.get(Pipe::Mte2).calls, 7 * 2 + 7 * 2); // cube A, B + vector rows
    assert_eq!(t.get(Pipe::Mte1).calls, 7 * 2);
    assert_eq!(t.get(Pipe::FixPipe).calls, 7);
    assert_eq!(t.get(Pipe::Mte3).calls, 7 * 2);
    assert_eq!(t.get(Pipe::FlagSet).calls, 7 * 3);
    assert_eq!(t.get(Pipe::FlagWait).calls, 7 * 3);
    assert_eq!(rep.stats.units.len(), 3 * 3);
    // Items 0,3,6 on core 0; 1,4 on core 1; 2,5 on core 2.
    let items: Vec<u64> = rep
        .stats
        .units
        .iter()
        .filter(|u| u.unit == UnitKind::Cube)
        .map(|u| u.items)
        .collect();
    assert_eq!(items, vec![3, 2, 2]);
}

#[test]
fn ping_pong_one_core() {
    check_ping_pong(4, 1);
}

#[test]
fn ping_pong_more_cores_than_cpus() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    check_ping_pong(3 * cpus + 5, 4 * cpus);
}

#[test]
fn zero_work_items_is_fine() {
    let rep = check_ping_pong(0, 2);
    assert_eq!(rep.stats.total.get(Pipe::Cube).calls, 0);
}

#[test]
fn trace_is_chrome_json() {
    let (_, r) = run_ping_pong(2, 2, true);
    let rep = r.unwrap();
    let trace = rep.trace.expect("trace requested");
    let j = trace.to_chrome_json();
    assert!(j.contains("\"name\":\"matmul 2x24x40\""), "{j}");
    assert!(j.contains("\"name\":\"wait_flag 0 (block 1)\""));
    assert!(j.contains("\"args\":{\"name\":\"vector1\"}"));
    assert!(
        trace
            .events
            .windows(2)
            .all(|w| w[0].start_ns <= w[1].start_ns)
    );
    assert!(trace.events.iter().all(|e| e.start_ns <= e.end_ns));
    let path = std::env::temp_dir().join(format!("amla_trace_{}.json", std::process::id()));
    trace.write_chrome_json(&path).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), j);
    let _ = std::fs::remove_file(path);
}

#[test]
fn never_satisfied_vector_wait_times_out() {
    let mut gm = Gm::new();
    // The Cube keeps running (it never sets the flag): only the timeout ends it.
    let cube = |_: &mut Unit<'_>, _: u64| {
        std::thread::sleep(Duration::from_millis(400));
        Ok(())
    };
    let vector = |u: &mut Unit<'_>, item: u64| u.wait_flag(5, item * 10 + 3);
    let k = Kernel {
        name: "stuck",
        cube: Entry::Rust(&cube),
        vector: Entry::Rust(&vector),
    };
    let start = Instant::now();
    let e = launch(
        &k,
        &mut gm,
        1,
        &CoreConfig::default(),
        &cfg(1)
            .with_wait_timeout(Duration::from_millis(50))
            // Threads: a cooperative core runs the sleeping Cube to its end
            // first, and the wait then fails at once as never set.
            .with_schedule(Schedule::Threads)
            .with_vector_sub_blocks(1),
    )
    .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
    match e {
        RuntimeError::FlagTimeout {
            kernel,
            core,
            unit,
            flag,
            block,
            peers,
            ..
        } => {
            assert_eq!(kernel, "stuck");
            assert_eq!(core, 0);
            assert_eq!(unit, UnitKind::Vector(0));
            assert_eq!(flag, 5);
            assert_eq!(block, 3);
            assert_eq!(peers, "cube is running");
        }
        other => panic!("expected a timeout, got {other}"),
    }
}

#[test]
fn a_wait_on_a_finished_partner_fails_at_once() {
    let mut gm = Gm::new();
    let cube = |_: &mut Unit<'_>, _: u64| Ok(());
    let vector = |u: &mut Unit<'_>, item: u64| u.wait_flag(5, item * 10 + 3);
    let k = Kernel {
        name: "stuck",
        cube: Entry::Rust(&cube),
        vector: Entry::Rust(&vector),
    };
    let start = Instant::now();
    // A timeout far longer than the test: the watchdog must not need it.
    let e = launch(
        &k,
        &mut gm,
        1,
        &CoreConfig::default(),
        &cfg(1).with_wait_timeout(Duration::from_secs(60)),
    )
    .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    match &e {
        RuntimeError::FlagNeverSet {
            kernel,
            core: 0,
            unit: UnitKind::Vector(_),
            flag: 5,
            block: 3,
            reason,
        } => {
            assert_eq!(kernel, "stuck");
            assert!(
                reason.contains("cube, which must set it, has finished"),
                "{e}"
            );
        }
        other => panic!("expected FlagNeverSet, got {other}"),
    }
}

#[test]
fn cube_wait_needs_both_vectors_or_fails() {
    let mut gm = Gm::new();
    let cube = |u: &mut Unit<'_>, item: u64| u.wait_flag(2, item);
    // Only vector 0 sets: the Cube's wait must not be released.
    let vector = |u: &mut Unit<'_>, _: u64| {
        if u.sub_block() == 0 {
            u.set_flag(2)
        } else {
            Ok(())
        }
    };
    let k = Kernel {
        name: "half",
        cube: Entry::Rust(&cube),
        vector: Entry::Rust(&vector),
    };
    let e = launch(
        &k,
        &mut gm,
        1,
        &CoreConfig::default(),
        &cfg(1).with_wait_timeout(Duration::from_secs(60)),
    )
    .unwrap_err();
    match &e {
        RuntimeError::FlagNeverSet {
            unit: UnitKind::Cube,
            flag: 2,
            block: 0,
            reason,
            ..
        } => assert!(reason.starts_with("vector1, which must set it"), "{e}"),
        other => panic!("expected FlagNeverSet, got {other}"),
    }
    // With a single Vector sub-block, that one set is enough.
    let ok = launch(
        &k,
        &mut gm,
        1,
        &CoreConfig::default(),
        &cfg(1).with_vector_sub_blocks(1),
    )
    .unwrap();
    assert!(ok.pending_flags.is_empty());
}

#[test]
fn units_waiting_on_each_other_deadlock_is_reported_at_once() {
    let mut gm = Gm::new();
    // Each side waits for the other before setting: a deadlock.
    let cube = |u: &mut Unit<'_>, item: u64| {
        u.wait_flag(1, item)?;
        u.set_flag(2)
    };
    let vector = |u: &mut Unit<'_>, item: u64| {
        u.wait_flag(2, item + 100)?;
        u.set_flag(1)
    };
    let k = Kernel {
        name: "cross",
        cube: Entry::Rust(&cube),
        vector: Entry::Rust(&vector),
    };
    let start = Instant::now();
    let e = launch(
        &k,
        &mut gm,
        1,
        &CoreConfig::default(),
        &cfg(1).with_wait_timeout(Duration::from_secs(60)),
    )
    .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    let s = e.to_string();
    assert!(matches!(e, RuntimeError::FlagNeverSet { .. }), "{s}");
    assert!(s.contains("deadlock"), "{s}");
    // The report names what the others wait on.
    assert!(
        s.contains("cube waits on flag 1 (block 0)") || s.contains("waits on flag 2 (block 100)"),
        "{s}"
    );
}

#[test]
fn an_error_aborts_blocked_waits_promptly() {
    let mut gm = Gm::new();
    let cube = |u: &mut Unit<'_>, item: u64| u.wait_flag(1, item);
    let vector = |u: &mut Unit<'_>, _: u64| {
        if u.sub_block() == 1 {
            std::thread::sleep(Duration::from_millis(20));
            return Err(RuntimeError::Kernel("boom".into()));
        }
        u.wait_flag(3, 0)
    };
    let k = Kernel {
        name: "abort",
        cube: Entry::Rust(&cube),
        vector: Entry::Rust(&vector),
    };
    let start = Instant::now();
    let e = launch(
        &k,
        &mut gm,
        100,
        &CoreConfig::default(),
        &cfg(2).with_wait_timeout(Duration::from_secs(30)),
    )
    .unwrap_err();
    assert_eq!(e, RuntimeError::Kernel("boom".into()));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn panics_and_bad_accesses_are_errors() {
    let mut gm = Gm::new();
    let x = gm.add_zeroed("x", DType::F32, 16).unwrap();
    let idle = |_: &mut Unit<'_>, _: u64| Ok(());
    let panicky = |_: &mut Unit<'_>, _: u64| -> Result<(), RuntimeError> { panic!("kernel bug") };
    let k = Kernel {
        name: "p",
        cube: Entry::Rust(&panicky),
        vector: Entry::Rust(&idle),
    };
    let e = launch(&k, &mut gm, 1, &CoreConfig::default(), &cfg(1)).unwrap_err();
    assert!(
        matches!(&e, RuntimeError::KernelPanicked { message, .. } if message == "kernel bug"),
        "{e}"
    );

    let oob = move |u: &mut Unit<'_>, _: u64| {
        u.copy(
            &Tile::local(Buffer::Ub, 0, 17, DType::F32),
            &Tile::gm(x, 0, 17, DType::F32),
            1,
            17,
            StoreMode::Overwrite,
        )
    };
    let k = Kernel {
        name: "oob",
        cube: Entry::Idle,
        vector: Entry::Rust(&oob),
    };
    let e = launch(&k, &mut gm, 1, &CoreConfig::default(), &cfg(1)).unwrap_err();
    assert!(
        matches!(&e, RuntimeError::OutOfBounds { buffer, end: 17, capacity: 16, .. } if buffer.contains("`x`")),
        "{e}"
    );

    // The Cube does not own UB; a Vector unit does not own L0A.
    let cube_ub = |u: &mut Unit<'_>, _: u64| u.local::<f32>(Buffer::Ub, 0, 1).map(|_| ());
    let k = Kernel {
        name: "own",
        cube: Entry::Rust(&cube_ub),
        vector: Entry::Idle,
    };
    let e = launch(&k, &mut gm, 1, &CoreConfig::default(), &cfg(1)).unwrap_err();
    assert_eq!(
        e,
        RuntimeError::NotOwned {
            unit: UnitKind::Cube,
            buffer: Buffer::Ub
        }
    );
    let vec_mm = |u: &mut Unit<'_>, _: u64| {
        u.matmul(
            &Gemm::dense(1, 1, 1, BLayout::KN, AccumMode::Overwrite),
            DType::Bf16,
            0,
            0,
            0,
        )
        .map(|_| ())
    };
    let k = Kernel {
        name: "own2",
        cube: Entry::Idle,
        vector: Entry::Rust(&vec_mm),
    };
    assert!(matches!(
        launch(&k, &mut gm, 1, &CoreConfig::default(), &cfg(1)),
        Err(RuntimeError::NotOwned { .. })
    ));

    // Local capacities come from the CoreConfig.
    let small = CoreConfig {
        ub: 32,
        ..CoreConfig::default()
    };
    let big_view = |u: &mut Unit<'_>, _: u64| u.local::<f32>(Buffer::Ub, 0, 9).map(|_| ());
    let k = Kernel {
        name: "cap",
        cube: Entry::Idle,
        vector: Entry::Rust(&big_view),
    };
    assert!(matches!(
        launch(&k, &mut gm, 1, &small, &cfg(1)),
        Err(RuntimeError::OutOfBounds { capacity: 8, .. })
    ));

    assert!(matches!(
        launch(&k, &mut gm, 1, &CoreConfig::default(), &cfg(0)),
        Err(RuntimeError::InvalidConfig(_))
    ));
}

#[test]
fn atomic_adds_from_many_cores_all_land() {
    let mut gm = Gm::new();
    let acc = gm.add_zeroed("acc", DType::F32, 64).unwrap();
    let hist = gm.add_zeroed("hist", DType::I32, 4).unwrap();
    let vector = move |u: &mut Unit<'_>, item: u64| {
        u.local::<f32>(Buffer::Ub, 0, 64)?.fill(1.0);
        u.local::<i32>(Buffer::Ub, 64, 1)?[0] = 1;
        u.copy(
            &Tile::gm(acc, 0, 64, DType::F32),
            &Tile::local(Buffer::Ub, 0, 64, DType::F32),
            1,
            64,
            StoreMode::AtomicAdd,
        )?;
        u.copy(
            &Tile::gm(hist, (item % 4) as usize, 1, DType::I32),
            &Tile::local(Buffer::Ub, 64, 1, DType::I32),
            1,
            1,
            StoreMode::AtomicAdd,
        )
    };
    let k = Kernel {
        name: "atomic",
        cube: Entry::Idle,
        vector: Entry::Rust(&vector),
    };
    launch(&k, &mut gm, 50, &CoreConfig::default(), &cfg(4)).unwrap();
    assert!(gm.slice::<f32>(acc).unwrap().iter().all(|&v| v == 100.0));
    assert_eq!(gm.slice::<i32>(hist).unwrap(), &[26, 26, 24, 24]);
}

#[test]
fn fixpipe_converts_f32_to_bf16_round_to_nearest_even() {
    let mut gm = Gm::new();
    let src: Vec<f32> = [0x3F80_8000u32, 0x3F81_8000, 0x3F80_8001, 0xC0A0_7FFF]
        .iter()
        .map(|&b| f32::from_bits(b))
        .collect();
    let x = gm.add_from("x", &src).unwrap();
    let y = gm.add_zeroed("y", DType::Bf16, 4).unwrap();
    let cube = move |u: &mut Unit<'_>, _: u64| {
        u.copy(
            &Tile::local(Buffer::L0C, 0, 4, DType::F32),
            &Tile::gm(x, 0, 4, DType::F32),
            1,
            4,
            StoreMode::Overwrite,
        )?;
        u.copy(
            &Tile::gm(y, 0, 4, DType::Bf16),
            &Tile::local(Buffer::L0C, 0, 4, DType::F32),
            1,
            4,
            StoreMode::Overwrite,
        )
    };
    let k = Kernel {
        name: "fixpipe",
        cube: Entry::Rust(&cube),
        vector: Entry::Idle,
    };
    let rep = launch(&k, &mut gm, 1, &CoreConfig::default(), &cfg(1)).unwrap();
    let bits: Vec<u16> = gm
        .slice::<bf16>(y)
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect();
    assert_eq!(bits, vec![0x3F80, 0x3F82, 0x3F81, 0xC0A0]);
    assert_eq!(rep.stats.total.get(Pipe::FixPipe).calls, 1);
    assert_eq!(rep.stats.total.get(Pipe::FixPipe).bytes, 16);
}

#[test]
fn exponent_rescale_in_gm() {
    let mut gm = Gm::new();
    let o = gm
        .add_from(
            "o",
            &[8.0f32, -4.0, 0.0, 1.0, 3.0, f32::MIN_POSITIVE, -0.0, 5.0],
        )
        .unwrap();
    let vector = move |u: &mut Unit<'_>, _: u64| {
        if u.sub_block() != 0 {
            return Ok(());
        }
        u.local::<i32>(Buffer::Ub, 0, 2)?.copy_from_slice(&[-2, -1]);
        u.exp2_scale_gm(
            &Tile::gm(o, 0, 4, DType::F32),
            2,
            3,
            &Tile::local(Buffer::Ub, 0, 1, DType::I32),
        )
    };
    let k = Kernel {
        name: "rescale",
        cube: Entry::Idle,
        vector: Entry::Rust(&vector),
    };
    launch(&k, &mut gm, 1, &CoreConfig::default(), &cfg(1)).unwrap();
    let got: Vec<u32> = gm
        .slice::<f32>(o)
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect();
    let want: Vec<u32> = [2.0f32, -1.0, 0.0, 1.0, 1.5, 0.0, -0.0, 5.0]
        .iter()
        .map(|v| v.to_bits())
        .collect();
    assert_eq!(got, want);
}

#[test]
fn pending_flags_are_reported() {
    let mut gm = Gm::new();
    let cube = |u: &mut Unit<'_>, _: u64| u.set_flag(4);
    let k = Kernel {
        name: "leak",
        cube: Entry::Rust(&cube),
        vector: Entry::Idle,
    };
    let rep = launch(&k, &mut gm, 3, &CoreConfig::default(), &cfg(1)).unwrap();
    assert_eq!(rep.pending_flags.len(), 2);
    assert!(
        rep.pending_flags
            .iter()
            .all(|p| p.flag == 4 && p.count == 3)
    );
}

// ---- JIT-style kernels: extern "C" entries calling the runtime symbols ----

const JM: u64 = 4;
const JK: u64 = 33;
const JN: u64 = 16;

/// Cube: Q (bf16 [JM,JK]) and K (bf16 [JN,JK], used transposed) → L0A/L0B,
/// S = Q·Kᵀ, FixPipe S to GM bf16 `s` (item slot), set flag 0, wait flag 1.
extern "C" fn jit_cube(ctx: *const KernelCtx, item: u64, _sb: u32) -> i32 {
    // SAFETY: ctx is the launcher's context for this thread.
    unsafe {
        let st = amla_rt_copy_gm_to_local(
            ctx,
            0,
            0,
            JK,
            Buffer::L0A as u32,
            0,
            JK,
            DType::Bf16.code(),
            JM,
            JK,
        );
        if st != 0 {
            return st;
        }
        let st = amla_rt_copy_gm_to_local(
            ctx,
            1,
            0,
            JK,
            Buffer::L0B as u32,
            0,
            JK,
            DType::Bf16.code(),
            JN,
            JK,
        );
        if st != 0 {
            return st;
        }
        let st = amla_rt_matmul(
            ctx,
            0,
            JK,
            0,
            JK,
            0,
            JN,
            JM,
            JN,
            JK,
            1,
            DType::Bf16.code(),
            0,
        );
        if st != 0 {
            return st;
        }
        let st = amla_rt_copy_local_to_gm(
            ctx,
            Buffer::L0C as u32,
            0,
            JN,
            DType::F32.code(),
            2,
            item * JM * JN,
            JN,
            JM,
            JN,
            0,
        );
        if st != 0 {
            return st;
        }
        let st = amla_rt_set_flag(ctx, 0);
        if st != 0 {
            return st;
        }
        amla_rt_wait_flag(ctx, 1, item)
    }
}

/// Vector n: wait 0; rows n*JM/2.. of `s` (bf16) → UB as f32; atomically
/// add them into GM f32 `acc`; set 1.
extern "C" fn jit_vector(ctx: *const KernelCtx, item: u64, sb: u32) -> i32 {
    let rows = JM / 2;
    let r0 = u64::from(sb) * rows;
    // SAFETY: ctx is the launcher's context for this thread.
    unsafe {
        let st = amla_rt_wait_flag(ctx, 0, item);
        if st != 0 {
            return st;
        }
        let st = amla_rt_copy_gm_to_local(
            ctx,
            2,
            item * JM * JN + r0 * JN,
            JN,
            Buffer::Ub as u32,
            0,
            JN,
            DType::F32.code(),
            rows,
            JN,
        );
        if st != 0 {
            return st;
        }
        let st = amla_rt_copy_local_to_gm(
            ctx,
            Buffer::Ub as u32,
            0,
            JN,
            DType::F32.code(),
            3,
            r0 * JN,
            JN,
            rows,
            JN,
            1,
        );
        if st != 0 {
            return st;
        }
        amla_rt_set_flag(ctx, 1)
    }
}

#[test]
fn jit_style_kernel_through_extern_c_symbols() {
    let items = 5u64;
    let mut gm = Gm::new();
    let q: Vec<bf16> = (0..(JM * JK) as usize).map(|i| val(i, 3)).collect();
    let kk: Vec<bf16> = (0..(JN * JK) as usize).map(|i| val(i, 4)).collect();
    gm.add_from("q", &q).unwrap();
    gm.add_from("k", &kk).unwrap();
    gm.add_zeroed("s", DType::Bf16, (items * JM * JN) as usize)
        .unwrap();
    let acc = gm
        .add_zeroed("acc", DType::F32, (JM * JN) as usize)
        .unwrap();
    let k = Kernel {
        name: "jit",
        cube: Entry::Extern(jit_cube),
        vector: Entry::Extern(jit_vector),
    };
    let rep = launch(&k, &mut gm, items, &CoreConfig::default(), &cfg(2)).unwrap();
    assert!(rep.pending_flags.is_empty());
    let got = gm.slice::<f32>(acc).unwrap();
    for i in 0..JM as usize {
        for j in 0..JN as usize {
            let mut s = 0f32;
            for t in 0..JK as usize {
                s += q[i * JK as usize + t].to_f32() * kk[j * JK as usize + t].to_f32();
            }
            let want = items as f32 * bf16::from_f32(s).to_f32();
            let g = got[i * JN as usize + j];
            assert!(
                (g - want).abs() <= 1e-5 * (1.0 + want.abs()),
                "acc[{i},{j}] = {g}, want {want}"
            );
        }
    }
    let names: Vec<&str> = jit_symbols().iter().map(|(n, _)| *n).collect();
    assert!(names.contains(&"amla_rt_matmul") && names.contains(&"amla_rt_wait_flag"));
    assert!(jit_symbols().iter().all(|(_, p)| !p.is_null()));
}

extern "C" fn jit_bad_copy(ctx: *const KernelCtx, _item: u64, _sb: u32) -> i32 {
    // The Cube copying into UB: not its buffer.
    // SAFETY: ctx is the launcher's context for this thread.
    unsafe {
        amla_rt_copy_gm_to_local(
            ctx,
            0,
            0,
            1,
            Buffer::Ub as u32,
            0,
            1,
            DType::F32.code(),
            1,
            1,
        )
    }
}

extern "C" fn jit_status_7(_ctx: *const KernelCtx, _item: u64, _sb: u32) -> i32 {
    7
}

extern "C" fn jit_idle(_ctx: *const KernelCtx, _item: u64, _sb: u32) -> i32 {
    0
}

#[test]
fn jit_errors_carry_details() {
    let mut gm = Gm::new();
    gm.add_zeroed("x", DType::F32, 4).unwrap();
    let k = Kernel {
        name: "bad",
        cube: Entry::Extern(jit_bad_copy),
        vector: Entry::Extern(jit_idle),
    };
    let e = launch(&k, &mut gm, 1, &CoreConfig::default(), &cfg(1)).unwrap_err();
    assert_eq!(
        e,
        RuntimeError::NotOwned {
            unit: UnitKind::Cube,
            buffer: Buffer::Ub
        }
    );
    let k = Kernel {
        name: "seven",
        cube: Entry::Extern(jit_idle),
        vector: Entry::Extern(jit_status_7),
    };
    let e = launch(&k, &mut gm, 3, &CoreConfig::default(), &cfg(1)).unwrap_err();
    assert!(
        matches!(
            e,
            RuntimeError::KernelStatus {
                code: 7,
                work_item: 0,
                ..
            }
        ),
        "{e}"
    );
    // A null context is rejected, not dereferenced.
    // SAFETY: null is explicitly allowed by the contract.
    assert_eq!(
        unsafe { amla_rt_set_flag(std::ptr::null(), 0) },
        status::BAD_ARGUMENT
    );
}

/// A matmul reading A and B in GM in place gives the bits of one reading
/// them in L0A/L0B after copies, records the folded loads on MTE2, and a
/// GM operand past its tensor's end is an out-of-bounds error naming it.
#[test]
fn a_matmul_reads_gm_operands_in_place() {
    let run = |in_place: bool, b_off: usize| {
        let mut p = ping_pong_gm(1);
        let (a, b, s) = (p.a, p.b, p.s);
        let cube = move |u: &mut Unit<'_>, _: u64| -> Result<(), RuntimeError> {
            let g = Gemm::dense(M, N, K, BLayout::KN, AccumMode::Overwrite);
            if in_place {
                let gm = |id: GmId, offset| MatmulSrc {
                    buffer: Buffer::Gm,
                    gm_index: id.0,
                    offset,
                };
                let fold = Folded {
                    loads: 2,
                    load_bytes: ((M * K + K * N) * 2) as u64,
                    ..Folded::NONE
                };
                u.matmul_folded(&g, DType::Bf16, gm(a, 0), gm(b, b_off), 0, fold)?;
            } else {
                for (dst, id, rows, cols) in [(Buffer::L0A, a, M, K), (Buffer::L0B, b, K, N)] {
                    u.copy(
                        &Tile::local(dst, 0, cols, DType::Bf16),
                        &Tile::gm(id, 0, cols, DType::Bf16),
                        rows,
                        cols,
                        StoreMode::Overwrite,
                    )?;
                }
                u.matmul(&g, DType::Bf16, 0, 0, 0)?;
            }
            u.copy(
                &Tile::gm(s, 0, N, DType::F32),
                &Tile::local(Buffer::L0C, 0, N, DType::F32),
                M,
                N,
                StoreMode::Overwrite,
            )
        };
        let k = Kernel {
            name: "gm_matmul",
            cube: Entry::Rust(&cube),
            vector: Entry::Idle,
        };
        let r = launch(&k, &mut p.gm, 1, &CoreConfig::default(), &cfg(1));
        let bits: Vec<u32> =
            p.gm.slice::<f32>(s)
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect();
        r.map(|rep| (bits, rep.stats.total.get(Pipe::Mte2)))
    };
    let (in_place, mte2_in_place) = run(true, 0).unwrap();
    let (copied, mte2_copied) = run(false, 0).unwrap();
    assert_eq!(in_place, copied);
    assert!(in_place.iter().any(|&b| b != 0));
    assert_eq!(
        (mte2_in_place.calls, mte2_in_place.bytes),
        (mte2_copied.calls, mte2_copied.bytes)
    );
    assert_eq!(mte2_in_place.busy_ns, 0);
    let e = run(true, 1).unwrap_err();
    assert!(
        matches!(&e, RuntimeError::OutOfBounds { buffer, .. } if buffer.contains("`b`")),
        "{e}"
    );
}
