"""Issue 7: the same bits on a Dask cluster as in one process, for arrays and for many files.

The cluster is a real ``dask.distributed.LocalCluster`` with two worker
processes.  Every comparison is bit for bit against ``dropout`` or the CLI in
this process.  Tests that need no dask (the NumPy block module) run without it.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import socket
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
from conftest import write_npy, write_safetensors

from dropout_core import DropoutParams, dropout
from dropout_core.batch import apply_files
from dropout_core.engine import dropout_block, dropout_block_counted, mask_stats
from dropout_core.errors import UsageError
from dropout_core.plan import plan_tensor
from dropout_core.units import GAP, SPAN

pytestmark = pytest.mark.dask

DTYPES = [np.float16, ml_dtypes.bfloat16, np.float32, np.float64]
VARIANTS = {
    "element": {},
    "channel": {"variant": "channel"},
    "channel-last": {"variant": "channel", "channel_axis": -1},
    "share-axes": {"share_axes": (0, 2)},
    "alpha": {"variant": "alpha"},
    "feature-alpha": {"variant": "feature-alpha"},
    "no-scale-fill": {"scale": False, "fill": -3.5},
    "exact-count": {"exact_count": True, "p": 0.3},
}
# Widths 7 and 13 put block edges in the middle of the stream's 8-unit words and 32-unit
# Philox blocks; the row length 97 makes every row start at a different offset in them.
SHAPE = (6, 4, 97)
CHUNKINGS = [(2, 3, 7), (4, 4, 13), (6, 1, 97), (1, 4, 50), SHAPE]


def _data(shape, dtype, seed=0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(shape) * 4
    x.reshape(-1)[5:: 13] = float(ml_dtypes.finfo(dtype).max) * 0.75  # kept: overflows
    x.reshape(-1)[:: 11] = np.inf  # a dropped inf still becomes the fill
    return x.astype(dtype)


def _tiles(shape, chunks):
    axes = [range(0, d, c) for d, c in zip(shape, chunks, strict=True)]
    for starts in itertools.product(*axes):
        yield tuple(slice(s, min(d, s + c)) for s, d, c in zip(starts, shape, chunks,
                                                                 strict=True))


# --------------------------------------------------------------- the NumPy block module


@pytest.mark.parametrize("chunks", [(7, 13), (1, 1001), (37, 5), (3, 1001), (37, 1001)])
@pytest.mark.parametrize("variant", ["element", "channel", "share-axes", "exact-count"])
def test_blocks_tile_to_the_whole_array(variant, chunks):
    x = _data((37, 1001), np.float32)
    kw = dict(VARIANTS[variant])
    p = kw.pop("p", 0.5)
    if variant == "share-axes":
        kw["share_axes"] = (0,)
    params = DropoutParams(p=p, **kw)
    whole, stats = dropout(x, params=params, seed=5, file="x.npy", return_stats=True)
    plan = plan_tensor(x.shape, x.dtype, params, 5, "x.npy", "")
    out, overflow = np.empty_like(whole), 0
    for loc in _tiles(x.shape, chunks):
        out[loc], over = dropout_block_counted(x[loc], loc, x.shape, params, 5, "x.npy",
                                               plan=plan)
        overflow += over
    assert out.tobytes() == whole.tobytes()
    assert mask_stats(plan, overflow=overflow) == stats


@pytest.mark.parametrize("shape,chunks", [
    ((300, 10007), (300, 2500)),  # runs close together, a span longer than SPAN: split
    ((3, 3 * GAP), (3, 1)),  # runs further apart than GAP: one stream call each
    ((5, GAP // 2), (5, 7)),  # runs closer than GAP: gathered from one span
])
def test_run_grouping_never_changes_a_bit(shape, chunks):
    assert shape[0] * shape[1] > SPAN or shape[1] > GAP or shape[1] < GAP
    x = _data(shape, np.float16)
    whole = dropout(x, 0.2, seed=9, file="g.npy", tensor="w")
    params = DropoutParams(p=0.2)
    plan = plan_tensor(shape, x.dtype, params, 9, "g.npy", "w")
    locs = list(_tiles(shape, chunks))[:40]  # enough blocks to cover every path
    for loc in locs:
        got = dropout_block(x[loc], loc, shape, params, 9, "g.npy", "w", plan=plan)
        assert got.tobytes() == whole[loc].tobytes(), loc


def test_a_block_computed_at_the_wrong_position_differs():
    x = _data((8, 64), np.float32)
    whole = dropout(x, 0.5, seed=1, file="x.npy")
    params = DropoutParams(p=0.5)
    right = dropout_block(x[2:4, 8:40], (2, 8), x.shape, params, 1, "x.npy")
    shifted = dropout_block(x[2:4, 8:40], (2, 9), x.shape, params, 1, "x.npy")
    assert right.tobytes() == whole[2:4, 8:40].tobytes()
    assert shifted.tobytes() != right.tobytes()


def test_block_input_is_never_modified():
    x = _data((4, 50), np.float32)
    before = x.copy()
    dropout_block(x[1:3], (slice(1, 3), slice(0, 50)), x.shape, DropoutParams(p=0.5), 2)
    assert x.tobytes() == before.tobytes()


def test_block_outside_the_tensor_is_refused():
    x = np.ones((4, 4), np.float32)
    with pytest.raises(UsageError, match="outside"):
        dropout_block(x, (2, 0), (4, 4), DropoutParams(p=0.5), 1)


def test_library_imports_without_dask():
    code = ("import sys; sys.modules['dask'] = None; sys.modules['distributed'] = None\n"
            "import dropout_core, dropout_core.engine, dropout_core.dask_backend, cli.main\n"
            "from dropout_core.dask_backend import dropout_dask\n"
            "try:\n    dropout_dask(None, 0.5, seed=1)\n"
            "except dropout_core.DropoutError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "pip install 'tensor-dropout[dask]'" in r.stdout


# --------------------------------------------------------------- the cluster


def _dask_dropout(arr, chunks, **kw):
    import dask.array as da

    from dropout_core.dask_backend import dropout_dask

    return dropout_dask(da.from_array(arr, chunks=chunks), **kw)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_dask_array_matches_one_process(dtype, variant):
    pytest.importorskip("dask.array")
    import dask

    kw = dict(VARIANTS[variant])
    p = kw.pop("p", 0.5)
    x = _data(SHAPE, dtype)
    whole, stats = dropout(x, p, seed=7, file="x.npy", tensor="t", return_stats=True, **kw)
    lazy = [_dask_dropout(x, c, p=p, seed=7, file="x.npy", tensor="t", return_stats=True, **kw)
            for c in CHUNKINGS]
    # Lists, not pairs: dask 2026.8's compute() regroups 3+ mixed collections by type.
    outs, stats_ = dask.compute([y for y, _ in lazy], [s for _, s in lazy], scheduler="threads")
    for chunks, out, got in zip(CHUNKINGS, outs, stats_, strict=True):
        assert out.dtype == whole.dtype and out.shape == whole.shape
        assert out.tobytes() == whole.tobytes(), chunks
        assert got == stats, chunks


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_cluster_array_matches_one_process(client, dtype):
    import dask

    # Every task costs milliseconds on a 2-core LocalCluster: few blocks, every variant at once.
    x = _data(SHAPE, dtype)
    chunks = (4, 3, 37)  # 37 and 74 fall mid-word; rows of 97 start at every offset
    want, lazy = [], []
    for kw in VARIANTS.values():
        kw = dict(kw)
        p = kw.pop("p", 0.5)
        want.append(dropout(x, p, seed=7, file="x.npy", tensor="t", return_stats=True, **kw))
        lazy.append(_dask_dropout(x, chunks, p=p, seed=7, file="x.npy", tensor="t",
                                  return_stats=True, **kw))
    outs, stats = dask.compute([y for y, _ in lazy], [s for _, s in lazy], scheduler=client.get)
    for name, (w_out, w_stats), g_out, g_stats in zip(VARIANTS, want, outs, stats, strict=True):
        assert g_out.tobytes() == w_out.tobytes(), name
        assert g_stats == w_stats, name


@pytest.mark.parametrize("chunks", [1000003, 999983, 3 * 1000003], ids=str)
def test_cluster_long_array_with_odd_chunks(client, chunks):
    x = _data((3 * 1000003,), np.float16)  # 6 MB: under the large-graph warning
    whole, stats = dropout(x, 0.1, seed=2**64 + 3, file="big.npy", return_stats=True)
    y, s = _dask_dropout(x, chunks, p=0.1, seed=2**64 + 3, file="big.npy", chunk_size=65537,
                         return_stats=True)
    out, got = client.compute([y, s], sync=True)
    assert out.tobytes() == whole.tobytes()
    assert got == stats


@pytest.mark.parametrize("kind", ["npy-fortran", "safetensors-bf16-channel"])
def test_cluster_reads_a_file_and_matches_the_cli(client, tmp_path, run_cli, kind):
    from dropout_core import load_tensors
    from dropout_core.dask_backend import dropout_dask, tensor_array

    if kind == "npy-fortran":
        x = _data((16, 3, 31), np.float32)
        src, name, opts = write_npy(tmp_path / "w.npy", x, fortran=True), "", []
        out = tmp_path / "o.npy"
    else:
        x = _data((16, 3, 31), ml_dtypes.bfloat16)
        src = write_safetensors(tmp_path / "w.safetensors", {"first": x[:2], "enc.w": x})
        name, opts, out = "enc.w", ["--variant", "channel"], tmp_path / "o.safetensors"
    code, _, err = run_cli("apply", src, "-o", str(out), "-p", "0.25", "--seed", "11", *opts,
                           "-q")
    assert code == 0, err
    want = load_tensors(str(out))[name]
    lazy = tensor_array(src, name, chunks=(5, 2, 9))  # each worker reads its own blocks
    y = dropout_dask(lazy, 0.25, seed=11, file=os.path.basename(src), tensor=name,
                     variant="channel" if opts else "element")
    assert client.compute(y, sync=True).tobytes() == want.tobytes()


def test_cluster_replays_a_mask(client):
    x = _data((4, 3, 9, 9), np.float64)
    mask = np.random.default_rng(3).random((4, 3, 1, 1)) < 0.5
    whole, stats = dropout(x, 0.4, mask=mask, seed=1, return_stats=True)
    y, s = _dask_dropout(x, (3, 2, 4, 5), p=0.4, mask=mask, seed=1, return_stats=True)
    out, got = client.compute([y, s], sync=True)
    assert out.tobytes() == whole.tobytes() and got == stats


@pytest.mark.parametrize("mode,p", [("eval", 0.5), ("train", 0.0)])
def test_identity_is_the_input_itself(client, mode, p):
    x = _data((5, 6), np.float16)
    y, s = _dask_dropout(x, 2, p=p, mode=mode, seed=4, return_stats=True)
    out, got = client.compute([y, s], sync=True)
    assert out.tobytes() == x.tobytes()
    assert got == dropout(x, p, mode=mode, seed=4, return_stats=True)[1]


def test_torch_stream_is_refused_with_the_reason():
    pytest.importorskip("dask.array")
    x = _data((4, 8), np.float32)
    with pytest.raises(UsageError, match="serial stream.*dropout\\(arr.compute\\(\\), "
                                         "rng='torch'"):
        _dask_dropout(x, 2, p=0.5, seed=1, rng="torch")


@pytest.mark.parametrize("case", ["p1", "mask", "eval"])
def test_torch_mode_runs_where_it_draws_nothing(client, case):
    x = _data((4, 3, 5), np.float32)
    kw = {"p1": {"p": 1.0}, "eval": {"p": 0.5, "mode": "eval"},
          "mask": {"p": 0.5, "mask": np.random.default_rng(0).random((4, 3, 5)) < 0.5}}[case]
    want = dropout(x, seed=3, rng="torch", **kw)
    y = _dask_dropout(x, (3, 2, 2), seed=3, rng="torch", **kw)
    assert client.compute(y, sync=True).tobytes() == want.tobytes()


def test_unknown_chunk_sizes_are_refused():
    da = pytest.importorskip("dask.array")
    from dropout_core.dask_backend import dropout_dask

    x = da.from_array(np.arange(10.0), chunks=3)
    with pytest.raises(UsageError, match="compute_chunk_sizes"):
        dropout_dask(x[x > 2], 0.5, seed=1)


# --------------------------------------------------------------- many files


@pytest.fixture
def files(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    rng = np.random.default_rng(8)
    paths = []
    for k in range(5):
        a = rng.standard_normal((3, 7, 11)).astype(np.float32)
        paths.append(write_npy(d / f"x{k}.npy", a, fortran=k % 2 == 1))
    paths.append(write_safetensors(d / "m.safetensors", {
        "a": rng.standard_normal((5, 13)).astype(ml_dtypes.bfloat16),
        "b": rng.standard_normal((9,)).astype(np.float16),
        "ids": np.arange(4, dtype=np.int64)}, {"kind": "test"}))
    return paths


def _outputs(doc) -> dict[str, bytes]:
    out = {}
    for f in doc["files"]:
        with open(f["output"], "rb") as fh:
            out[os.path.basename(f["output"])] = fh.read()
    return out


def _without_outputs(doc) -> dict:
    doc = copy.deepcopy(doc)
    for f in doc["files"]:
        f["output"] = os.path.basename(f["output"])
    return doc


def test_map_files_on_the_cluster_equals_the_cli(client, files, tmp_path, run_cli):
    from dropout_core.batch import map_files

    code, stats_text, err = run_cli("apply", *files, "--out-dir", str(tmp_path / "cli"), "-p",
                                    "0.3", "--seed", "7", "--repeat", "2", "--exclude", "ids",
                                    "--stats", "-", "-q")
    assert code == 0, err
    want = json.loads(stats_text)
    from dropout_core.batch import BatchOptions

    got = map_files(files, client, out_dir=str(tmp_path / "dask"), p=0.3, seed=7, repeat=2,
                    options=BatchOptions(exclude=("ids",)))
    assert _outputs(got) == _outputs(want)
    assert len(_outputs(got)) == 12
    assert _without_outputs(got) == _without_outputs(want)


def test_map_files_over_a_bag_resolves_relative_paths(client, files, tmp_path, monkeypatch):
    import dask
    import dask.bag as db

    from dropout_core.batch import map_files

    monkeypatch.chdir(tmp_path / "in")  # the workers' working directory is elsewhere
    names = [os.path.basename(f) for f in files]
    want = apply_files(names, params=DropoutParams(p=0.5, scale=False, fill=-1.0), seed=3,
                       out_dir="local")
    with dask.config.set(scheduler=client.get):
        got = map_files(db.from_sequence(names, npartitions=2), None, out_dir="bag",
                        scale=False, fill=-1.0, seed=3)
    assert [f["input"] for f in got["files"]] == names
    assert got["files"][0]["output"] == os.path.join("bag", "x0.npy")
    assert _outputs(got) == _outputs(want)
    assert _without_outputs(got) == _without_outputs(want)


def test_torch_mode_many_files_on_the_cluster_equal_local(client, files, tmp_path):
    from dropout_core.batch import map_files

    npys = [f for f in files if f.endswith(".npy")]
    params = DropoutParams(p=0.3, rng="torch")
    want = apply_files(npys, params=params, seed=5, out_dir=str(tmp_path / "local"))
    got = map_files(npys, client, params=params, seed=5, out_dir=str(tmp_path / "dask"))
    assert _outputs(got) == _outputs(want)
    assert _without_outputs(got) == _without_outputs(want)


def test_a_bad_file_stops_the_run_before_any_output(client, files, tmp_path):
    from dropout_core import DropoutError
    from dropout_core.batch import map_files

    bad = tmp_path / "in" / "bad.npy"
    bad.write_bytes(b"\x93NUMPY\x01\x00garbage")
    with pytest.raises(DropoutError, match="bad.npy"):
        map_files([*files, str(bad)], client, out_dir=str(tmp_path / "o"), seed=1, scale=False)
    # not even --out-dir is created before every input has passed its checks
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------- the command line


def test_cli_dask_scheduler_writes_what_the_cli_writes(cluster, files, tmp_path, run_cli):
    args = ["-p", "0.2", "--seed", "5", "--variant", "alpha", "--exclude", "ids", "--stats", "-",
            "-q"]
    code, local, err = run_cli("apply", *files, "--out-dir", str(tmp_path / "a"), *args)
    assert code == 0, err
    code, remote, err = run_cli("apply", *files, "--out-dir", str(tmp_path / "b"), *args,
                                "--dask-scheduler", cluster.scheduler_address)
    assert code == 0, err
    local, remote = json.loads(local), json.loads(remote)
    assert _outputs(remote) == _outputs(local)
    assert _without_outputs(remote) == _without_outputs(local)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})},
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_cli_unreachable_scheduler_is_one_line(files, tmp_path):
    pytest.importorskip("distributed")
    address = f"tcp://127.0.0.1:{_free_port()}"
    r = _cli("apply", files[0], "--out-dir", str(tmp_path / "o"), "--seed", "1",
             "--dask-scheduler", address, env={"TENSOR_DROPOUT_DASK_TIMEOUT": "1"})
    assert r.returncode == 1
    assert r.stderr.startswith(f"Error: cannot reach the Dask scheduler at {address} within 1 s")
    assert r.stderr.count("\n") == 1, r.stderr
    assert not os.path.exists(tmp_path / "o" / "x0.npy")


def test_cli_bad_scheduler_address_is_a_usage_error(files, tmp_path):
    pytest.importorskip("distributed")
    r = _cli("apply", files[0], "--out-dir", str(tmp_path / "o"), "--seed", "1",
             "--dask-scheduler", "localhost")
    assert r.returncode == 2
    assert r.stderr.startswith("Error: bad Dask scheduler address localhost")
    assert r.stderr.count("\n") == 1, r.stderr


def test_cli_missing_extra_is_one_line(files, tmp_path, monkeypatch, run_cli):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if it were not installed
    code, _, err = run_cli("apply", files[0], "--out-dir", str(tmp_path / "o"), "--seed", "1",
                           "--dask-scheduler", "tcp://127.0.0.1:8786")
    assert code == 1
    assert err == ("Error: this needs the optional Dask extra (distributed is not installed): "
                   "pip install 'tensor-dropout[dask]' (or: pip install 'dask[array]' "
                   "distributed)\n")


@pytest.mark.parametrize("extra,message", [
    (["--jobs", "2"], "give --jobs or --dask-scheduler, not both"),
    (["-o", "-"], "Dask workers cannot read stdin or write stdout"),
])
def test_cli_dask_scheduler_conflicts_are_usage_errors(files, tmp_path, run_cli, extra,
                                                       message):
    pytest.importorskip("distributed")
    code, _, err = run_cli("apply", files[0], *extra, "--seed", "1", "--dask-scheduler",
                           "tcp://127.0.0.1:1")
    assert code == 2
    assert err.startswith("Error: " + message) and err.count("\n") == 1
