"""Small work: one call per sample, the per-sample transform, many small files.

The fast paths for small work must give the bits the general path gives.
"""

from __future__ import annotations

import pickle

import ml_dtypes
import numpy as np
import pytest
from conftest import binomial_bounds

from dropout_core import Dropout, dropout
from dropout_core.array import SMALL

CASES = [
    (np.float32, {}), (np.float64, {"p": 0.3}), (np.float16, {"p": 0.5}),
    (ml_dtypes.bfloat16, {"p": 0.2}), (np.float32, {"fill": -1.5}),
    (np.int32, {"scale": False}), (np.float32, {"variant": "alpha"}),
    (np.float32, {"exact_count": True, "p": 0.25}), (np.complex64, {}),
]


@pytest.mark.parametrize("dtype,kw", CASES, ids=[f"{np.dtype(d).name}-{k}" for d, k in CASES])
@pytest.mark.parametrize("n", [1, 100, 10_000, SMALL])
def test_a_small_call_gives_the_engine_s_bits(dtype, kw, n):
    x = (np.random.default_rng(n).standard_normal(n) * 4).astype(dtype)
    x[::7] = 0
    kw = {"p": 0.1, **kw}
    fast = dropout(x, seed=5, file="s.npy", **kw)  # no stats: the one-call path
    full, _ = dropout(x, seed=5, file="s.npy", return_stats=True, **kw)  # the engine
    assert fast.dtype == full.dtype and fast.tobytes() == full.tobytes()


def test_a_small_call_in_place_and_on_a_view():
    x = np.random.default_rng(0).standard_normal((30, 40)).astype(np.float32)
    want = dropout(x, 0.4, seed=2)
    y = x.copy()
    assert dropout(y, 0.4, seed=2, inplace=True) is y and y.tobytes() == want.tobytes()
    f = np.asfortranarray(x)
    assert np.array_equal(dropout(f, 0.4, seed=2), want)


def test_the_transform_depends_only_on_seed_key_and_array():
    t = Dropout(p=0.3, seed=11)
    x = np.ones((8, 16), np.float32)
    a = [t(x, key=i) for i in range(20)]
    b = [t(x, key=i) for i in reversed(range(20))][::-1]  # another order of calls
    for i in range(20):
        assert a[i].tobytes() == b[i].tobytes()
        assert a[i].tobytes() == dropout(x, 0.3, seed=11, file=str(i)).tobytes()
    assert len({r.tobytes() for r in a}) == 20  # each sample its own mask
    dropped = sum(int((r == 0).sum()) for r in a)
    lo, hi = binomial_bounds(20 * x.size, 0.3)
    assert lo <= dropped <= hi


def test_the_transform_travels_to_workers():
    t = Dropout(p=0.2, seed=3, variant="channel")
    x = np.ones((2, 4, 5, 5), np.float32)
    u = pickle.loads(pickle.dumps(t))
    assert u == t and u(x, key="sample-7").tobytes() == t(x, key="sample-7").tobytes()


def test_the_transform_of_a_file_s_name_is_the_cli_s_output(tmp_path, run_cli):
    x = np.random.default_rng(1).standard_normal((3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "img.npy", x)
    code, _, err = run_cli("apply", str(tmp_path / "img.npy"), "-o", str(tmp_path / "o.npy"),
                           "-p", "0.1", "--seed", "9", "-q")
    assert code == 0, err
    assert np.load(tmp_path / "o.npy").tobytes() == Dropout(0.1, seed=9)(x, "img.npy").tobytes()


@pytest.mark.parametrize("bad", [1.5, None, ("a",)])
def test_the_transform_takes_an_index_or_a_name(bad):
    from dropout_core import UsageError

    with pytest.raises(UsageError, match="key must be an index or a name"):
        Dropout(0.1, seed=1)(np.ones(3, np.float32), key=bad)


@pytest.mark.parametrize("args", [
    ["apply", "{sample}", "-o", "{tmp}/out.npy", "-p", "0.5", "--seed", "1", "-q"],
    ["inspect", "{sample}"],
    ["--version"],
])
def test_start_up_imports_no_optional_module(tmp_path, args):
    """Start-up is paid by every shell command: what one command never uses (Pillow, Dask,
    torch, the preview and split modules) is not imported."""
    import json
    import os
    import subprocess
    import sys

    sample = os.path.join(os.path.dirname(__file__), "..", "samples", "example_1x3x3.npy")
    argv = [a.format(sample=sample, tmp=tmp_path) for a in args]
    code = ("import json, sys\nfrom cli.main import main\ntry:\n    main(sys.argv[1:])\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "print(json.dumps(sorted(sys.modules)), file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    loaded = set(json.loads(r.stderr.strip().splitlines()[-1]))
    heavy = {"PIL", "dask", "distributed", "torch", "safetensors", "dropout_core.previews",
             "dropout_core.dask_split", "dropout_core.dask_backend"}
    assert not heavy & loaded, heavy & loaded
