//! The persistent `Launcher` under the cooperative schedule: repeated
//! launches reuse its workers and per-core state, allocate nothing after the
//! first, give every core freshly filled local memory, and compute what the
//! threaded schedule computes.
//!
//! One test only: it counts the process's heap allocations, which a test
//! running beside it would disturb.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use amla_runtime::*;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(p, l, n) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const COLS: usize = 16;

/// Cube: writes `item` into row `item` of `s`, sets 0, waits 1.
/// Vector 0: waits 0, checks that its UB held `fill` if this is its core's
/// first item (counting a miss in `bad`), dirties UB, writes
/// `s[item] * 2 + 1` into `out`, sets 1. Vector 1 only syncs.
#[test]
fn launcher_reuses_its_workers_without_allocating() {
    let items = 7u64;
    let mut gm = Gm::new();
    let s = gm
        .add_zeroed("s", DType::F32, items as usize * COLS)
        .unwrap();
    let out = gm
        .add_zeroed("out", DType::F32, items as usize * COLS)
        .unwrap();
    let bad = gm.add_zeroed("bad", DType::I32, 1).unwrap();
    let fill = std::sync::atomic::AtomicU32::new(0);
    let cube = move |u: &mut Unit<'_>, item: u64| -> Result<(), RuntimeError> {
        let row = u.local::<f32>(Buffer::L1, 0, COLS)?;
        for (c, v) in row.iter_mut().enumerate() {
            *v = (item as usize * COLS + c) as f32;
        }
        u.copy(
            &Tile::gm(s, item as usize * COLS, COLS, DType::F32),
            &Tile::local(Buffer::L1, 0, COLS, DType::F32),
            1,
            COLS,
            StoreMode::Overwrite,
        )?;
        u.set_flag(0)?;
        u.wait_flag(1, item)
    };
    let vector = |u: &mut Unit<'_>, item: u64| -> Result<(), RuntimeError> {
        u.wait_flag(0, item)?;
        if u.sub_block() == 0 {
            let want = if fill.load(Ordering::Relaxed) == 0 {
                0
            } else {
                -1
            };
            let first = item < u64::from(u.cores());
            let ub = u.local::<i32>(Buffer::Ub, 0, 1024)?;
            if first && ub.iter().any(|&w| w != want) {
                ub[0] = 1;
                u.copy(
                    &Tile::gm(bad, 0, 1, DType::I32),
                    &Tile::local(Buffer::Ub, 0, 1, DType::I32),
                    1,
                    1,
                    StoreMode::AtomicAdd,
                )?;
            }
            u.copy(
                &Tile::local(Buffer::Ub, 0, COLS, DType::F32),
                &Tile::gm(s, item as usize * COLS, COLS, DType::F32),
                1,
                COLS,
                StoreMode::Overwrite,
            )?;
            for v in u.local::<f32>(Buffer::Ub, 0, COLS)? {
                *v = 2.0 * *v + 1.0;
            }
            u.copy(
                &Tile::gm(out, item as usize * COLS, COLS, DType::F32),
                &Tile::local(Buffer::Ub, 0, COLS, DType::F32),
                1,
                COLS,
                StoreMode::Overwrite,
            )?;
        }
        u.set_flag(1)
    };
    let k = Kernel {
        name: "reuse",
        cube: Entry::Rust(&cube),
        vector: Entry::Rust(&vector),
    };
    let core_cfg = CoreConfig {
        l1: 4096,
        l0a: 4096,
        l0b: 4096,
        l0c: 4096,
        ub: 4096,
        flag_ids: 4,
    };
    // Three cores on one worker: the worker reuses its core state twice a
    // launch, and across launches.
    let base = LaunchConfig::default()
        .with_cores(3)
        .with_host_cpus(Some(1))
        .with_wait_timeout(Duration::from_secs(20));
    let mut l = Launcher::new();
    let mut counts = Vec::with_capacity(8);
    for (round, poison) in [false, true, true, false, false].into_iter().enumerate() {
        fill.store(if poison { 0xFF } else { 0 }, Ordering::Relaxed);
        let cfg = LaunchConfig {
            poison_local: poison,
            ..base.clone()
        }
        .with_schedule(Schedule::Cooperative);
        let a0 = ALLOCS.load(Ordering::Relaxed);
        let rep = l.launch(&k, &mut gm, items, &core_cfg, &cfg).unwrap();
        let a1 = ALLOCS.load(Ordering::Relaxed);
        assert!(rep.pending_flags.is_empty(), "round {round}");
        assert_eq!(rep.stats.units.len(), 9, "round {round}");
        assert_eq!(rep.stats.total.get(Pipe::FlagWait).calls, items * 3);
        counts.push(a1 - a0);
        let o = gm.slice::<f32>(out).unwrap();
        for (i, v) in o.iter().enumerate() {
            assert_eq!(*v, 2.0 * i as f32 + 1.0, "round {round}: out[{i}]");
        }
        assert_eq!(gm.slice::<i32>(bad).unwrap()[0], 0, "round {round}");
        gm.zero(out).unwrap();
    }
    // The last launches repeat the config of the one before them.
    assert_eq!(counts[2], 0, "allocations per launch: {counts:?}");
    assert_eq!(counts[4], 0, "allocations per launch: {counts:?}");

    // The threaded schedule computes the same.
    let threads = base.clone().with_schedule(Schedule::Threads);
    l.launch(&k, &mut gm, items, &core_cfg, &threads).unwrap();
    let o = gm.slice::<f32>(out).unwrap();
    assert!(
        o.iter()
            .enumerate()
            .all(|(i, v)| *v == 2.0 * i as f32 + 1.0)
    );
}
