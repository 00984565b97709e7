"""Tensor files as NumPy, ml_dtypes and safetensors users write them.

    python tests/python/tensor_files.py make tests/data/tensor_files
        writes the checked-in inputs (small MLA decode: B=1, H=16, N=64):
        q_bf16.npy (ml_dtypes bfloat16, descr '<V2'), kv_bf16.npy,
        inputs.safetensors (q and kv, BF16), f_order.npy (a Fortran-order
        f32 array, arange(24) of shape [2, 3, 4]).

    python tests/python/tensor_files.py check OUT_DIR
        loads what `amlac run` wrote back (OUT_DIR/npy/out.npy written with
        --bf16-npy ml-dtypes, OUT_DIR/npy/lse.npy, OUT_DIR/outputs.safetensors)
        and checks them against each other and a float64 NumPy reference.

Run with the packages of tests/python/requirements.txt
(`bash tests/python/setup-venv.sh`, then tests/python/.venv/bin/python).
"""

import sys
from pathlib import Path

import ml_dtypes
import numpy as np
from safetensors.numpy import load_file, save_file

B, H, N, D, DV = 1, 16, 64, 576, 512
SCALE = 1.0 / np.sqrt(576.0)  # the kernel's default (dsl-examples/mla_decode.amla)


def inputs():
    rng = np.random.default_rng(13)
    q = rng.standard_normal((B, H, D)).astype(ml_dtypes.bfloat16)
    kv = rng.standard_normal((B, N, D)).astype(ml_dtypes.bfloat16)
    return q, kv


def make(d: Path):
    d.mkdir(parents=True, exist_ok=True)
    q, kv = inputs()
    np.save(d / "q_bf16.npy", q)
    np.save(d / "kv_bf16.npy", kv)
    save_file({"q": q, "kv": kv}, str(d / "inputs.safetensors"))
    np.save(d / "f_order.npy", np.asfortranarray(np.arange(24, dtype=np.float32).reshape(2, 3, 4)))


def reference():
    q, kv = (x.astype(np.float64) for x in inputs())
    s = np.einsum("bhd,bnd->bhn", q, kv) * SCALE
    m = s.max(axis=-1, keepdims=True)
    p = np.exp(s - m)
    l = p.sum(axis=-1, keepdims=True)
    out = np.einsum("bhn,bnd->bhd", p / l, kv[:, :, :DV])
    lse = (m + np.log(l))[..., 0]
    return out, lse


def check(d: Path):
    raw = np.load(d / "npy" / "out.npy")
    assert raw.dtype == np.dtype("V2"), raw.dtype
    out_npy = raw.view(ml_dtypes.bfloat16)
    lse_npy = np.load(d / "npy" / "lse.npy")
    st = load_file(str(d / "outputs.safetensors"))
    assert st["out"].dtype == ml_dtypes.bfloat16, st["out"].dtype
    assert st["lse"].dtype == np.float32, st["lse"].dtype
    assert out_npy.shape == st["out"].shape == (B, H, DV), (out_npy.shape, st["out"].shape)
    assert np.array_equal(out_npy.astype(np.float32), st["out"].astype(np.float32))
    assert np.array_equal(lse_npy, st["lse"])
    out, lse = reference()
    err = np.abs(st["out"].astype(np.float64) - out).max()
    lerr = np.abs(st["lse"].astype(np.float64) - lse).max()
    assert err < 2e-2 and lerr < 1e-3, (err, lerr)
    print(f"ok: out max abs err {err:.2e}, lse max abs err {lerr:.2e}")


if __name__ == "__main__":
    {"make": make, "check": check}[sys.argv[1]](Path(sys.argv[2]))
