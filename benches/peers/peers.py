"""MLA decode peers next to `amlac bench`: see run.sh (the entry point).

Every peer runs in its own subprocess (so its thread pools do not linger into
the next measurement), rounds alternate amla -> NumPy -> JAX bf16 -> JAX f32,
and each figure is the median over rounds of the median over repeats.
FLOPs are the same for everybody: 2*B*Sq*H*N*(576+512).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

DK, DV = 576, 512
SCALE = 1.0 / (192.0 ** 0.5)


def flops(b, n, h):
    return 2.0 * b * h * n * (DK + DV)


def time_it(fn, launches, warmup):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(launches):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def peer_numpy(b, n, h, launches, warmup):
    import numpy as np
    from threadpoolctl import threadpool_info

    rng = np.random.default_rng(0)
    q = rng.standard_normal((b, h, DK), dtype=np.float32)
    kv = rng.standard_normal((b, n, DK), dtype=np.float32)

    def run():
        out = np.empty((b, h, DV), np.float32)
        for i in range(b):  # per sequence: [H,576] x [576,N] and [H,N] x [N,512]
            s = (q[i] @ kv[i].T) * SCALE
            m = s.max(axis=1, keepdims=True)
            p = np.exp(s - m)
            out[i] = (p @ kv[i, :, :DV]) / p.sum(axis=1, keepdims=True)
        return out

    t = time_it(run, launches, warmup)
    blas = [
        {k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    ]
    return {"seconds": t, "blas": blas}


def peer_jax(b, n, h, launches, warmup, dtype):
    import jax
    import jax.numpy as jnp

    key = jax.random.PRNGKey(0)
    kq, kk = jax.random.split(key)
    dt = jnp.bfloat16 if dtype == "bf16" else jnp.float32
    q = jax.random.normal(kq, (b, h, DK), jnp.float32).astype(dt)
    kv = jax.random.normal(kk, (b, n, DK), jnp.float32).astype(dt)

    @jax.jit
    def mla(q, kv):
        s = jnp.einsum("bhd,bnd->bhn", q, kv, preferred_element_type=jnp.float32) * SCALE
        m = s.max(axis=-1, keepdims=True)
        p = jnp.exp(s - m)
        l = p.sum(axis=-1, keepdims=True)
        o = jnp.einsum("bhn,bnd->bhd", p.astype(dt), kv[:, :, :DV],
                       preferred_element_type=jnp.float32)
        return (o / l).astype(dt)

    t0 = time.perf_counter()
    mla(q, kv).block_until_ready()
    jit_s = time.perf_counter() - t0
    t = time_it(lambda: mla(q, kv).block_until_ready(), launches, warmup)
    return {"seconds": t, "jit_seconds": jit_s, "jax": jax.__version__}


def child(args):
    b, n, h = args.shape
    if args.peer == "numpy":
        r = peer_numpy(b, n, h, args.launches, args.warmup)
    else:
        r = peer_jax(b, n, h, args.launches, args.warmup, args.peer.split("-")[1])
    r["gflops"] = flops(b, n, h) / r["seconds"] / 1e9
    print(json.dumps(r))


def run_peer(peer, shape, launches, warmup):
    env = dict(os.environ)
    if peer == "numpy":
        # These slow a current NumPy's OpenBLAS down: unset for NumPy runs only.
        env.pop("OPENBLAS_CORETYPE", None)
        env.pop("OPENBLAS_L2_SIZE", None)
    cmd = [sys.executable, __file__, "--child", peer, "--shape", *map(str, shape),
           "--launches", str(launches), "--warmup", str(warmup)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_amla(amlac, kernel, shape, launches, warmup):
    b, n, h = shape
    cmd = [amlac, "bench", kernel, "-D", f"B={b}", "-D", f"N={n}", "-D", f"H={h}",
           "--json", "--launches", str(launches), "--warmup", str(warmup),
           "--compile-repeats", "3"]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--amlac")
    ap.add_argument("--kernel")
    ap.add_argument("--shapes", default="16:4096:128",
                    help="comma-separated B:N:H triples")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--launches", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--peers", default="numpy,jax-bf16,jax-f32")
    ap.add_argument("--json", action="store_true", help="one JSON line per shape")
    ap.add_argument("--child")
    ap.add_argument("--shape", type=int, nargs=3)
    args = ap.parse_args()
    if args.child:
        args.peer = args.child
        child(args)
        return
    peers = [p for p in args.peers.split(",") if p]
    shapes = [tuple(int(x) for x in s.split(":")) for s in args.shapes.split(",")]
    for shape in shapes:
        runs = {"amla": [], **{p: [] for p in peers}}
        fu, peak, blas = [], [], None
        for _ in range(args.rounds):
            r = run_amla(args.amlac, args.kernel, shape, args.launches, args.warmup)
            runs["amla"].append(r["gflops"])
            fu.append(r["fu"])
            peak.append(r["peak"]["gflops"])
            for p in peers:
                pr = run_peer(p, shape, args.launches, args.warmup)
                runs[p].append(pr["gflops"])
                blas = pr.get("blas", blas)
        med = {k: statistics.median(v) for k, v in runs.items()}
        b, n, h = shape
        row = {"B": b, "N": n, "H": h, "gflops": med, "fu": statistics.median(fu),
               "peak_gflops": statistics.median(peak),
               "ratio": {p: med["amla"] / med[p] for p in peers}, "openblas": blas}
        if args.json:
            print(json.dumps(row), flush=True)
            continue
        print(f"B={b} N={n} H={h}: peak {row['peak_gflops']:.1f} GFLOP/s, "
              f"amla {med['amla']:.1f} GFLOP/s (fu {row['fu']:.3f})")
        for p in peers:
            print(f"  {p:<9} {med[p]:>8.1f} GFLOP/s   amla / {p} = {row['ratio'][p]:.2f}x")
        if blas:
            print(f"  NumPy BLAS: {blas}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
