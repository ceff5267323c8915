"""Chunk size, threads and --jobs never change a single output bit, nor the statistics.

Every element's fate depends only on (seed, file key, tensor name, index); the
threads only decide who computes which block, and the statistics are gathered
in order.  These tests run the same work split every way we can think of and
compare bytes.
"""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest
from conftest import write_npy, write_safetensors

import dropout_core.threads as threads_module
from dropout_core import apply_file, dropout
from dropout_core.engine import CHUNK, SEGMENT
from dropout_core.kernel import BLOCK

THREADS = [1, 2, 3, 8]
ODD_CHUNKS = [7, 1000, BLOCK + 1, 1000003]


@pytest.fixture
def threads(monkeypatch):
    """Set the thread count the library uses when none is given."""

    def use(n: int) -> None:
        monkeypatch.setattr(threads_module, "default_threads", lambda: n)

    return use


def _big(dtype=np.float32, n=5 * 251507, seed=0):  # > 2 segments, odd blocks
    x = np.random.default_rng(seed).standard_normal(n).astype(dtype)
    x[::997] = np.inf  # a few blocks take the exact (slow) path
    x[5::1009] = np.nan
    return x


def _run(x, threads, nthreads, chunk, **kw):
    threads(nthreads)
    out, st = dropout(x, 0.1, seed=42, file="x.npy", chunk_size=chunk, return_stats=True, **kw)
    return out, st


# ----------------------------------------------------------------------------- arrays

@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16, np.float64])
def test_array_results_never_depend_on_threads_or_chunks(dtype, threads):
    x = _big(dtype)
    want, want_st = _run(x, threads, 1, CHUNK)
    for nthreads in THREADS:
        for chunk in [CHUNK, 1000003, 3 * SEGMENT + 1, x.size]:
            got, st = _run(x, threads, nthreads, chunk)
            assert got.tobytes() == want.tobytes(), (nthreads, chunk)
            assert st == want_st, (nthreads, chunk)


@pytest.mark.parametrize("chunk", [1, 7, 1000, BLOCK + 1])
@pytest.mark.parametrize("nthreads", [1, 2])
def test_tiny_and_odd_chunks_give_the_same_bits(chunk, nthreads, threads):
    x = _big(np.float32, n={1: 3000, 7: 20000}.get(chunk, 3 * BLOCK + 5))
    want, want_st = _run(x, threads, 1, 1 << 30)
    got, st = _run(x, threads, nthreads, chunk)
    assert got.tobytes() == want.tobytes()
    assert st == want_st


@pytest.mark.parametrize("nthreads", THREADS)
def test_inplace_and_fortran_order_arrays_agree_at_any_thread_count(nthreads, threads):
    x = _big(np.float32).reshape(-1, 5)[:, :4].copy()  # 2-D
    want, want_st = _run(x, threads, 1, CHUNK)
    y = x.copy()
    got, st = _run(y, threads, nthreads, 1000003, inplace=True)
    assert got is y and got.tobytes() == want.tobytes() and st == want_st
    f = np.asfortranarray(x)
    got, st = _run(f, threads, nthreads, 777777)
    assert np.ascontiguousarray(got).tobytes() == want.tobytes() and st == want_st


def test_a_mask_out_sink_sees_the_same_mask_at_any_split(threads):
    from dropout_core.engine import run_tensor
    from dropout_core.params import DropoutParams
    from dropout_core.plan import plan_tensor

    x = _big(np.float32, n=SEGMENT + 5)
    masks = []
    for nthreads, chunk in [(1, CHUNK), (2, 7777), (3, BLOCK - 1)]:
        seen = np.zeros(x.size, dtype=bool)

        def sink(u0, keep, _seen=seen):
            _seen[u0:u0 + keep.size] = ~keep

        out = x.copy()

        def write(s, chunk_out, idx, _out=out):
            _out[s:s + chunk_out.size] = chunk_out

        plan = plan_tensor(x.shape, x.dtype, DropoutParams(p=0.3), 1, "a", "").bind()
        run_tensor(plan, lambda s, e, idx: x[s:e].copy(), write, mask_sink=sink, chunk=chunk,
                   threads=nthreads)
        masks.append(seen)
    for m in masks[1:]:
        np.testing.assert_array_equal(m, masks[0])


# ----------------------------------------------------------------------------- files

def _files(tmp_path):
    rng = np.random.default_rng(3)
    big = _big(np.float32, n=5 * 212345).reshape(-1, 5)
    paths = {
        "c.npy": write_npy(tmp_path / "c.npy", big),
        "f.npy": write_npy(tmp_path / "f.npy", big, fortran=True),
        "m.safetensors": write_safetensors(tmp_path / "m.safetensors", {
            "a.weight": rng.standard_normal((300, 700)).astype(np.float32),
            "b.half": rng.standard_normal((1000, 300)).astype(np.float16),
            "c.bf16": rng.standard_normal((SEGMENT + 3,)).astype(ml_dtypes.bfloat16),
            "d.f64": rng.standard_normal((999, 101)),
            "e.int": rng.integers(0, 9, (50, 7)).astype(np.int32),
        }, {"format": "np"}),
    }
    return paths


def _apply(src, out, threads, nthreads, chunk, **kw):
    threads(nthreads)
    # --exclude names tensors: only a file that holds named ones takes it
    names = {"exclude": ("e.int",)} if str(src).endswith(".safetensors") else {}
    st = apply_file(src, str(out), p=0.1, seed=9, chunk_size=chunk, force=True, **names, **kw)
    st.pop("output")
    return out.read_bytes(), st


@pytest.mark.parametrize("name", ["c.npy", "f.npy", "m.safetensors"])
def test_file_bytes_and_stats_never_depend_on_threads_or_chunks(name, tmp_path, threads):
    src = _files(tmp_path)[name]
    want, want_st = _apply(src, tmp_path / "want", threads, 1, CHUNK)
    for nthreads in THREADS:
        for chunk in [CHUNK, *ODD_CHUNKS[2:]]:
            got, st = _apply(src, tmp_path / "got", threads, nthreads, chunk)
            assert got == want, (nthreads, chunk)
            assert st == want_st, (nthreads, chunk)


@pytest.mark.parametrize("chunk", [1, 7])
def test_file_with_tiny_chunks_gives_the_same_bytes(chunk, tmp_path, threads):
    x = _big(np.float16, n=3000).reshape(100, 30)
    src = write_npy(tmp_path / "s.npy", x)
    want, want_st = _apply(src, tmp_path / "want", threads, 1, CHUNK)
    got, st = _apply(src, tmp_path / "got", threads, 2, chunk)
    assert got == want and st == want_st


def test_inplace_file_equals_the_copy(tmp_path, threads):
    src = _files(tmp_path)["m.safetensors"]
    want, _ = _apply(src, tmp_path / "want", threads, 1, CHUNK)
    threads(2)
    apply_file(src, inplace=True, p=0.1, seed=9, key="m.safetensors", chunk_size=1000003,
               exclude=("e.int",))
    assert (tmp_path / "m.safetensors").read_bytes() == want


def test_jobs_and_chunk_size_never_change_cli_outputs(tmp_path, run_cli, threads):
    paths = _files(tmp_path)
    outs = {}
    for jobs, chunk in [("1", str(CHUNK)), ("2", "1000003"), ("3", "7777")]:
        d = tmp_path / f"out-{jobs}"
        code, _, err = run_cli("apply", *paths.values(), "--out-dir", str(d), "-p", "0.2",
                               "--seed", "3", "-j", jobs, "--chunk-size", chunk, "-q",
                               "--no-scale", "--stats", str(tmp_path / f"s{jobs}.json"))
        assert code == 0, err
        outs[jobs] = {p.name: p.read_bytes() for p in sorted(d.iterdir())}
        doc = json.loads((tmp_path / f"s{jobs}.json").read_text())
        outs[jobs]["stats"] = [[(t["name"], t["mask_digest"], t["dropped"]) for t in f["tensors"]]
                               for f in doc["files"]]
    assert outs["1"] == outs["2"] == outs["3"]
