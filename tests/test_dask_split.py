"""Issue 15: one large file split across a Dask cluster, with the bytes and stats of one process.

The cluster is the suite's real LocalCluster (two worker processes, conftest.py).
Files are small and split sizes smaller still, so one file becomes many tasks.
"""

from __future__ import annotations

import copy
import json
import os
import threading
import zipfile

import ml_dtypes
import numpy as np
import pytest
from conftest import write_npy, write_safetensors

from dropout_core import DropoutError, DropoutParams
from dropout_core.atomic import TEMP_MARK
from dropout_core.batch import BatchOptions, apply_files

pytestmark = pytest.mark.dask

SHAPE = (9, 6, 101)  # rows of 101 start at every offset in the stream's 8-unit words
VARIANTS = {
    "element": {},
    "channel": {"variant": "channel"},
    "share-axes": {"share_axes": (0, 2)},
    "exact-count": {"exact_count": True, "p": 0.3},
    "alpha-no-scale": {"variant": "alpha", "scale": False},
}


def _data(shape, dtype, seed=0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(shape) * 4
    x.reshape(-1)[5::13] = float(ml_dtypes.finfo(dtype).max) * 0.75  # kept: overflows
    x.reshape(-1)[::11] = np.inf
    return x.astype(dtype)


def _make(tmp_path, fmt: str, dtype) -> str:
    x = _data(SHAPE, dtype)
    if fmt == "npy":
        return write_npy(tmp_path / "big.npy", x)
    if fmt == "npz":  # stored members: it splits
        np.savez(tmp_path / "big.npz", **{"enc.w": x, "ids": np.arange(300, dtype=np.int64),
                                          "head": x[:2, :, :50].copy()})
        return str(tmp_path / "big.npz")
    return write_safetensors(tmp_path / "big.safetensors", {
        "enc.w": x, "ids": np.arange(300, dtype=np.int64), "head": x[:2, :, :50].copy()},
        {"kind": "test"})


def _pair(tmp_path, src: str, client, split_size: int | None, params: DropoutParams,
          options: dict | None = None) -> tuple[bytes, dict, bytes, dict]:
    """(local output, local stats file entry, split output, split stats file entry)."""
    ext = os.path.splitext(src)[1]
    opts = dict(options or {})
    local = apply_files([src], params=params, seed=11, output=str(tmp_path / f"local{ext}"),
                        options=BatchOptions(**opts))
    split = apply_files([src], params=params, seed=11, output=str(tmp_path / f"split{ext}"),
                        options=BatchOptions(dask_split_size=split_size, chunk_size=500, **opts),
                        dask_scheduler=client)
    return ((tmp_path / f"local{ext}").read_bytes(), _entry(local),
            (tmp_path / f"split{ext}").read_bytes(), _entry(split))


def _entry(doc: dict) -> dict:
    doc = copy.deepcopy(doc)
    for f in doc["files"]:
        f["output"] = os.path.basename(f["output"]).replace("split", "local")
    return doc


def _leftovers(d) -> list[str]:
    return [n for n in os.listdir(d) if TEMP_MARK in n]


CASES = [  # (format, dtype, variant, split size in bytes)
    ("npy", np.float32, "element", 1000),
    ("npy", np.float32, "element", 4096),
    ("npy", np.float16, "channel", 1000),
    ("npy", np.float64, "share-axes", 3000),
    ("npy", np.float32, "exact-count", 800),
    ("safetensors", ml_dtypes.bfloat16, "element", 1000),
    ("safetensors", ml_dtypes.bfloat16, "exact-count", 2048),
    ("safetensors", np.float32, "channel", 1500),
    ("safetensors", np.float16, "share-axes", 700),
    ("safetensors", np.float32, "alpha-no-scale", 5000),
    ("npz", np.float32, "share-axes", 900),
    ("npz", np.float16, "alpha-no-scale", 1000),
    ("npz", np.float64, "exact-count", 1500),
]


@pytest.mark.parametrize("fmt,dtype,variant,size", CASES,
                         ids=[f"{f}-{np.dtype(d).name}-{v}-{s}" for f, d, v, s in CASES])
def test_split_file_equals_the_local_run(client, tmp_path, fmt, dtype, variant, size):
    kw = dict(VARIANTS[variant])
    params = DropoutParams(p=kw.pop("p", 0.25), **kw)
    src = _make(tmp_path, fmt, dtype)
    options = {"exclude": ("ids",)} if fmt != "npy" else {}
    local, local_doc, split, split_doc = _pair(tmp_path, src, client, size, params, options)
    assert split == local
    assert split_doc == local_doc
    assert "dask_split" not in split_doc["files"][0]
    assert _leftovers(tmp_path) == []


def test_one_file_becomes_tasks_on_both_workers(client, tmp_path):
    from distributed import get_task_stream

    src = _make(tmp_path, "npy", np.float32)  # 5454 float32
    with get_task_stream(client=client) as stream:  # what the scheduler ran, and where
        local, local_doc, split, split_doc = _pair(tmp_path, src, client, 1024,
                                                   DropoutParams(p=0.5))
    assert split == local and split_doc == local_doc
    ranges = [t for t in stream.data if "run_piece" in str(t["key"])]
    assert len(ranges) == (5454 + 255) // 256  # 256 float32 per task
    assert len({t["worker"] for t in ranges}) == 2
    # one tensor written by many tasks: hashed by one task as its ranges finish
    assert sum("digest_as_written" in str(t["key"]) for t in stream.data) == 1
    assert not [t for t in stream.data if "digest_tensors" in str(t["key"])]


def test_a_file_under_the_split_size_is_one_task(client, tmp_path):
    from distributed import get_task_stream

    src = _make(tmp_path, "npy", np.float32)
    with get_task_stream(client=client) as stream:
        local, local_doc, split, split_doc = _pair(tmp_path, src, client, 1 << 20,
                                                   DropoutParams(p=0.5))
    assert split == local and split_doc == local_doc
    assert not [t for t in stream.data if "run_piece" in str(t["key"])]


def _stored_npz(tmp_path) -> str:
    """np.savez (stored members) of several dtypes, an empty tensor, and two members that are
    not tensors (one deflated: copied as it is, so the archive still splits)."""
    path = tmp_path / "big.npz"
    rng = np.random.default_rng(5)
    np.savez(path, w=_data((40, 50), np.float32), h=_data((3, 7, 61), np.float16),
             ids=np.arange(300, dtype=np.int64), empty=np.zeros((0, 4), np.float32),
             keep=rng.random(77) < 0.5, n=rng.integers(-99, 99, (5, 33), dtype=np.int32),
             z=np.zeros(0, np.int8))
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("README.txt", b"not a tensor\n" * 40, compress_type=zipfile.ZIP_DEFLATED)
        z.writestr("raw.bin", bytes(range(256)) * 5)
    return str(path)


NPZ_CASES = {  # (params, split size, tensors chosen)
    "element": (dict(p=0.3, scale=False), 700, ()),
    "channel": (dict(p=0.4, scale=False, variant="channel"), 1000, ("w", "h", "n", "empty")),
    "exact-count": (dict(p=0.25, scale=False, exact_count=True), 512, ()),
}


@pytest.mark.parametrize("case", list(NPZ_CASES))
def test_a_stored_npz_splits_and_equals_the_local_run(client, tmp_path, case):
    kw, size, chosen = NPZ_CASES[case]
    src = _stored_npz(tmp_path)
    local, local_doc, split, split_doc = _pair(tmp_path, src, client, size,
                                               DropoutParams(**kw),
                                               {"exclude": ("ids",), "tensors": chosen})
    assert split == local
    assert split_doc == local_doc
    assert "dask_split" not in split_doc["files"][0]
    assert _leftovers(tmp_path) == []
    out = tmp_path / "split.npz"
    with zipfile.ZipFile(out) as z:
        assert z.testzip() is None
        assert z.read("README.txt") == b"not a tensor\n" * 40
    with np.load(src) as a, np.load(out) as b:
        assert a.files == b.files
        np.testing.assert_array_equal(b["ids"], a["ids"])  # excluded: unchanged
        assert b["empty"].shape == (0, 4) and b["w"].dtype == np.float32


def test_a_stored_npz_becomes_range_tasks_on_both_workers(client, tmp_path):
    from distributed import get_task_stream

    src = _stored_npz(tmp_path)
    with get_task_stream(client=client) as stream:
        local, local_doc, split, split_doc = _pair(tmp_path, src, client, 1024,
                                                   DropoutParams(p=0.5, scale=False))
    assert split == local and split_doc == local_doc
    ranges = [t for t in stream.data if "run_piece" in str(t["key"])]
    assert len(ranges) >= 8  # w alone is 8000 bytes: eight tasks of 1 KiB
    assert len({t["worker"] for t in ranges}) == 2


def test_a_stored_npz_splits_with_zip64_records(client, tmp_path, monkeypatch):
    from dropout_core.formats import ziparchive

    src = _stored_npz(tmp_path)  # written before the limits drop: the input has no Zip64
    monkeypatch.setattr(ziparchive, "_ZIP64_AT", 4000)  # as if 4000 bytes were 4 GiB
    monkeypatch.setattr(ziparchive, "_COUNT64_AT", 5)  # and 5 members were 65535
    local, local_doc, split, split_doc = _pair(tmp_path, src, client, 1000,
                                               DropoutParams(p=0.3, scale=False))
    assert b"PK\x06\x06" in local  # the client wrote Zip64 records, as the local run did
    assert split == local and split_doc == local_doc
    with zipfile.ZipFile(tmp_path / "split.npz") as z:
        assert z.testzip() is None


def test_a_corrupt_stored_member_fails_the_split_as_the_local_run(client, tmp_path):
    from dropout_core.formats import open_tensor_file

    src = _stored_npz(tmp_path)
    with open_tensor_file(src) as tf:
        at = next(t for t in tf.tensors if t.name == "w").offset + 4321
    with open(src, "r+b") as f:  # one byte of w's data changes: its CRC-32 no longer matches
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0x10]))
    target = tmp_path / "split.npz"
    target.write_bytes(b"the old output")
    params = DropoutParams(p=0.5, scale=False)
    with pytest.raises(DropoutError, match="member w.npy: CRC-32 mismatch") as local:
        apply_files([src], params=params, seed=1, output=str(tmp_path / "local.npz"))
    with pytest.raises(DropoutError, match="member w.npy: CRC-32 mismatch") as split:
        apply_files([src], params=params, seed=1, output=str(target),
                    options=BatchOptions(dask_split_size=1000, force=True),
                    dask_scheduler=client)
    assert str(split.value) == str(local.value)
    assert target.read_bytes() == b"the old output"
    assert _leftovers(tmp_path) == []


def _npz(tmp_path) -> str:
    path = tmp_path / "big.npz"
    np.savez_compressed(path, a=_data((40, 50), np.float32), b=_data((7,), np.float64))
    return str(path)


FALLBACKS = {
    "torch": ("npy", {"rng": "torch"}, {}, "rng='torch' is a serial stream"),
    "npz-deflated": ("npz", {}, {}, "a .npz with deflated members (np.savez_compressed; a.npy "
                     "is one) is compressed member by member, front to back; only stored "
                     "members (np.savez) split"),
    "fortran": ("fortran", {}, {}, "a Fortran-order .npy is reordered into C order"),
    "npz-fortran": ("npz-fortran", {}, {}, "a Fortran-order .npy is reordered into C order"),
    "mask-out": ("npy", {}, {"mask_out": "m.safetensors"}, "mask_out writes its mask file"),
}


@pytest.mark.parametrize("case", list(FALLBACKS))
def test_what_cannot_split_runs_as_one_task_and_says_why(client, tmp_path, case):
    kind, kw, opts, why = FALLBACKS[case]
    if kind == "npz":
        src = _npz(tmp_path)
    elif kind == "npz-fortran":  # stored, but one member in Fortran order
        src = str(tmp_path / "big.npz")
        np.savez(src, a=_data((40, 50), np.float32),
                 f=np.asfortranarray(_data((30, 20), np.float32)))
    else:
        src = write_npy(tmp_path / "big.npy", _data(SHAPE, np.float32), fortran=kind == "fortran")
    if "mask_out" in opts:
        opts = {"mask_out": str(tmp_path / "local-m.safetensors")}
    params = DropoutParams(p=0.3, **kw)
    ext = os.path.splitext(src)[1]
    local = apply_files([src], params=params, seed=4, output=str(tmp_path / f"local{ext}"),
                        options=BatchOptions(**opts))
    if "mask_out" in opts:
        opts = {"mask_out": str(tmp_path / "split-m.safetensors")}
    split = apply_files([src], params=params, seed=4, output=str(tmp_path / f"split{ext}"),
                        options=BatchOptions(dask_split_size=1000, **opts),
                        dask_scheduler=client)
    assert (tmp_path / f"split{ext}").read_bytes() == (tmp_path / f"local{ext}").read_bytes()
    reason = split["files"][0].pop("dask_split")
    assert reason.startswith("one task: ") and why in reason
    assert _entry(split) == _entry(local)
    if "mask_out" in opts:
        assert (tmp_path / "split-m.safetensors").read_bytes() == \
            (tmp_path / "local-m.safetensors").read_bytes()


def test_mask_in_runs_as_one_task(client, tmp_path):
    src = write_npy(tmp_path / "big.npy", _data(SHAPE, np.float32))
    mask = write_npy(tmp_path / "mask.npy", np.random.default_rng(1).random(SHAPE) < 0.5)
    params = DropoutParams(p=0.5)
    local = apply_files([src], params=params, output=str(tmp_path / "local.npy"),
                        options=BatchOptions(mask_in=mask))
    split = apply_files([src], params=params, output=str(tmp_path / "split.npy"),
                        options=BatchOptions(mask_in=mask, dask_split_size=64),
                        dask_scheduler=client)
    assert (tmp_path / "split.npy").read_bytes() == (tmp_path / "local.npy").read_bytes()
    assert "mask_in replays a mask" in split["files"][0].pop("dask_split")
    assert _entry(split) == _entry(local)


def test_cli_split_stats_equal_the_local_stats(cluster, tmp_path, run_cli):
    src = _make(tmp_path, "safetensors", ml_dtypes.bfloat16)
    args = ["-p", "0.2", "--seed", "5", "--exact-count", "--exclude", "ids", "--stats", "-",
            "-q"]
    code, local, err = run_cli("apply", src, "-o", str(tmp_path / "local.safetensors"), *args)
    assert code == 0, err
    code, split, err = run_cli("apply", src, "-o", str(tmp_path / "split.safetensors"), *args,
                               "--dask-scheduler", cluster.scheduler_address,
                               "--dask-split-size", "2000")
    assert code == 0, err
    assert (tmp_path / "split.safetensors").read_bytes() == \
        (tmp_path / "local.safetensors").read_bytes()
    assert _entry(json.loads(split)) == _entry(json.loads(local))


def test_a_failing_task_leaves_the_target_and_no_temporary_file(client, tmp_path, monkeypatch):
    from dropout_core import dask_split

    src = _make(tmp_path, "npy", np.float32)
    target = tmp_path / "out.npy"
    target.write_bytes(b"the old output")
    real_check = dask_split.check_workers

    def check_then_shrink(*args, **kwargs):
        real_check(*args, **kwargs)
        with open(src, "r+b") as f:  # the input changes under the run: range tasks fail
            f.truncate(os.path.getsize(src) // 2)

    monkeypatch.setattr(dask_split, "check_workers", check_then_shrink)
    with pytest.raises(DropoutError, match="file shrank while it was being read"):
        apply_files([src], params=DropoutParams(p=0.5), seed=1, output=str(target),
                    options=BatchOptions(dask_split_size=1000, force=True),
                    dask_scheduler=client)
    assert target.read_bytes() == b"the old output"
    assert _leftovers(tmp_path) == []


def test_a_worker_that_cannot_see_the_file_is_one_error_line(cluster, tmp_path, run_cli,
                                                              monkeypatch):
    # /proc/self/cwd is this process's directory here, and each worker's own directory
    # there: the same path names another place, as on machines without a shared file system.
    _make(tmp_path, "npy", np.float32)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out.npy"
    code, _, err = run_cli("apply", "/proc/self/cwd/big.npy", "-o", str(out), "-p", "0.5",
                           "--seed", "1", "--dask-scheduler", cluster.scheduler_address,
                           "--dask-split-size", "1000")
    assert code == 1
    assert err.startswith("Error: the Dask worker tcp://") and err.count("\n") == 1, err
    assert "cannot see /proc/self/cwd/big.npy" in err and "shared by this machine" in err
    assert not out.exists() and _leftovers(tmp_path) == []


def test_split_size_without_a_scheduler_is_a_usage_error(tmp_path, run_cli):
    src = _make(tmp_path, "npy", np.float32)
    code, _, err = run_cli("apply", src, "-o", str(tmp_path / "o.npy"), "--seed", "1",
                           "--dask-split-size", "1000")
    assert code == 2
    assert err == ("Error: --dask-split-size says how a file is split across a Dask cluster; "
                   "give --dask-scheduler too\n")
    assert not (tmp_path / "o.npy").exists()


def test_small_tensors_share_tasks(client, tmp_path):
    from distributed import get_task_stream

    rng = np.random.default_rng(3)
    src = write_safetensors(tmp_path / "many.safetensors", {
        f"layer{k}.w": rng.standard_normal(100).astype(np.float32) for k in range(40)})
    with get_task_stream(client=client) as stream:
        local, local_doc, split, split_doc = _pair(tmp_path, src, client, 2000,
                                                   DropoutParams(p=0.4))
    assert split == local and split_doc == local_doc
    keys = [str(t["key"]) for t in stream.data]
    # 400 bytes a tensor: five tensors to a task of 2000 bytes, for the ranges and the digests
    assert sum("run_pieces" in k for k in keys) == 8
    assert sum("digest_tensors" in k for k in keys) == 8


class _DieOnce:
    """A worker plugin: the first worker to start a range task exits at once (os._exit,
    as a killed process would), once per flag file."""

    name = "die-once"

    def __init__(self, flag: str) -> None:
        self.flag = flag

    def setup(self, worker) -> None:
        pass

    def teardown(self, worker) -> None:
        pass

    def transition(self, key, start, finish, **kwargs) -> None:
        if finish == "executing" and "run_pieces" in str(key):
            try:
                fd = os.open(self.flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.close(fd)
            os._exit(1)


def _nanny_cluster(allowed_failures: int):
    """Two worker processes under nannies (a killed worker comes back); the scheduler
    retries a dead worker's task ``allowed_failures`` times (read when it starts)."""
    import dask
    import distributed

    with dask.config.set({"distributed.scheduler.allowed-failures": allowed_failures}):
        cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                           dashboard_address=":0")
    with cluster, distributed.Client(cluster, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=60)
        yield client


@pytest.fixture(scope="module")
def fragile_cluster():
    """No retries: a killed worker fails the run."""
    yield from _nanny_cluster(0)


@pytest.mark.parametrize("fmt", ["npy", "safetensors", "npz"])
def test_a_worker_killed_mid_run_leaves_the_target_untouched(fragile_cluster, tmp_path, fmt):
    from distributed import WorkerPlugin

    # (distributed is imported only in Dask runs, so the plugin's base class is added here)
    plugin = type("DieOnce", (_DieOnce, WorkerPlugin), {})(str(tmp_path / "died"))
    fragile_cluster.register_plugin(plugin)
    try:
        src = _make(tmp_path, fmt, np.float32)
        target = tmp_path / f"out.{fmt}"
        target.write_bytes(b"the old output")
        with pytest.raises(DropoutError, match="a Dask worker died while processing"):
            apply_files([src], params=DropoutParams(p=0.5), seed=1, output=str(target),
                        options=BatchOptions(dask_split_size=1000, force=True,
                                             exclude=("ids",) if fmt != "npy" else ()),
                        dask_scheduler=fragile_cluster)
    finally:
        fragile_cluster.unregister_worker_plugin(plugin.name)
    assert (tmp_path / "died").exists()  # a worker really was killed, mid-run
    assert target.read_bytes() == b"the old output"
    assert _leftovers(tmp_path) == []
    fragile_cluster.wait_for_workers(2, timeout=60)  # the nanny brought it back


def test_split_sizes_take_units(client, tmp_path, run_cli):
    from distributed import get_task_stream

    src = _make(tmp_path, "npy", np.float32)  # 5454 float32
    with get_task_stream(client=client) as stream:  # 1KiB from Python: 256 float32 per task
        _, local_doc, split, split_doc = _pair(tmp_path, src, client, "1KiB",
                                               DropoutParams(p=0.5))
    assert split_doc == local_doc
    assert sum("run_piece" in str(t["key"]) for t in stream.data) == (5454 + 255) // 256
    code, _, err = run_cli("apply", src, "-o", str(tmp_path / "o.npy"), "-p", "0.5",
                           "--seed", "11", "--dask-scheduler", client.scheduler.address,
                           "--dask-split-size", "2kb", "-q")
    assert code == 0, err
    assert (tmp_path / "o.npy").read_bytes() == (tmp_path / "local.npy").read_bytes()
    code, _, err = run_cli("apply", src, "-o", str(tmp_path / "o2.npy"), "--seed", "1",
                           "--dask-split-size", "64 parsecs")
    assert code == 2 and "a number of bytes such as 67108864, 64MiB or 1G" in err


class _DieWhileHashing(_DieOnce):
    """A worker plugin: the worker whose digest task is hashing a tensor as it is written
    exits (once per flag file) when it starts its third range task, so the digest dies
    half-way and is run again elsewhere."""

    name = "die-while-hashing"

    def setup(self, worker) -> None:
        self.worker, self.ranges = worker, 0

    def transition(self, key, start, finish, **kwargs) -> None:
        if finish != "executing" or "run_pieces" not in str(key):
            return
        hashing = any("digest_as_written" in str(k) and ts.state == "long-running"
                      for k, ts in self.worker.state.tasks.items())
        self.ranges += hashing
        if self.ranges >= 3:
            super().transition(key, start, finish, **kwargs)


@pytest.fixture(scope="module")
def sturdy_cluster():
    """distributed's default: a dead worker's tasks are run again (3 times at most)."""
    yield from _nanny_cluster(3)


def test_a_digest_whose_worker_dies_is_run_again_and_the_run_succeeds(sturdy_cluster,
                                                                       tmp_path):
    from distributed import WorkerPlugin

    plugin = type("Die", (_DieWhileHashing, WorkerPlugin), {})(str(tmp_path / "died"))
    src = write_npy(tmp_path / "big.npy", _data((40, 1000), np.float32))  # 157 range tasks
    local = apply_files([src], params=DropoutParams(p=0.5), seed=1,
                        output=str(tmp_path / "local.npy"))
    found: list = []

    def run() -> None:
        found.append(apply_files([src], params=DropoutParams(p=0.5), seed=1,
                                 output=str(tmp_path / "split.npy"),
                                 options=BatchOptions(dask_split_size=1024, chunk_size=64),
                                 dask_scheduler=sturdy_cluster))

    sturdy_cluster.register_plugin(plugin)
    try:  # in a daemon thread: a digest that waits forever fails the test, not hangs it
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(timeout=120)
        assert not thread.is_alive(), "the split run did not finish in 120 s"
    finally:
        sturdy_cluster.unregister_worker_plugin(plugin.name)
    [split] = found
    assert (tmp_path / "died").exists()  # the hashing worker really died, half-way
    assert (tmp_path / "split.npy").read_bytes() == (tmp_path / "local.npy").read_bytes()
    assert _entry(split) == _entry(local)
    assert _leftovers(tmp_path) == []


def _threads_waiting_for_ranges() -> int:
    """Run on a worker: its threads inside dask_split._wait_for."""
    import sys

    count = 0
    for frame in sys._current_frames().values():
        while frame is not None:
            if frame.f_code.co_name == "_wait_for" and "dask_split" in frame.f_code.co_filename:
                count += 1
                break
            frame = frame.f_back
    return count


def test_a_cancelled_digest_stops_waiting(client, tmp_path):
    # a client that went away (or cancelled) leaves no worker thread waiting forever for
    # ranges that will never be written, even when the temporary file is still there
    import time

    from dropout_core.dask_split import digest_as_written

    out = tmp_path / "out.tmp"
    out.write_bytes(bytes(64))
    spec = (str(out), 0, np.dtype(np.float32), (16,), str(out), None, 0)
    fut = client.submit(digest_as_written, spec, [(f"never-set-{tmp_path.name}", 0, 16)], [],
                        pure=False)
    deadline = time.monotonic() + 30
    while sum(client.run(_threads_waiting_for_ranges).values()) == 0:
        assert time.monotonic() < deadline, "the digest task never started waiting"
        time.sleep(0.1)
    fut.cancel()
    deadline = time.monotonic() + 30
    while sum(client.run(_threads_waiting_for_ranges).values()) != 0:
        assert time.monotonic() < deadline, "the cancelled digest task still waits"
        time.sleep(0.2)
    assert out.exists()  # it stopped because it was cancelled, not because the file went
