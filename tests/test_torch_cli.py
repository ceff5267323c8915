"""--rng torch end to end: the CLI and the file API reproduce the torch goldens bit for bit.

tests/test_torch_golden.py checks the numpy reimplementation itself; this file
checks that the file engine (chunking, tensor order, Fortran order, stats, mask
files) carries it through unchanged.  The goldens are made with real torch by
scripts/make_torch_golden.py; torch is not needed here.
"""

from __future__ import annotations

import json
import os

import ml_dtypes
import numpy as np
import pytest
from conftest import write_npy, write_safetensors
from test_torch_golden import call_input  # the input as torch saw it: views included

from dropout_core import dropout, load_tensors

HERE = os.path.join(os.path.dirname(__file__), "golden", "torch")
with open(os.path.join(HERE, "cases.json")) as _f:
    CASES = json.load(_f)["cases"]

VARIANT = {"dropout": "element", "dropout1d": "channel", "dropout2d": "channel",
           "dropout3d": "channel", "alpha_dropout": "alpha",
           "feature_alpha_dropout": "feature-alpha"}
DTYPES = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64),
          "float16": np.dtype(np.float16), "bfloat16": np.dtype(ml_dtypes.bfloat16)}


def load(call: dict, key: str) -> np.ndarray:
    a = np.load(os.path.join(HERE, call[key]))
    dt = DTYPES[call["dtype"]]
    return a.view(dt) if a.dtype != dt else a


def channel_axis(call: dict) -> int:
    """torch's unbatched forms (dropout1d on 2-D, dropout3d on 4-D) have no batch axis."""
    nd = len(call["shape"])
    unbatched = (call["function"] == "dropout1d" and nd == 2) or \
        (call["function"] == "dropout3d" and nd == 4)
    return 0 if unbatched else 1


def same_bits(got: np.ndarray, want: np.ndarray) -> bool:
    """Bit-for-bit equality, except that any NaN equals any NaN (payloads are not a contract)."""
    nan = np.isnan(want.astype(np.float64))
    if not (np.isnan(got.astype(np.float64)) == nan).all():
        return False
    u = f"u{got.itemsize}"
    return bool((np.ascontiguousarray(got).view(u)[~nan]
                 == np.ascontiguousarray(want).view(u)[~nan]).all())


# Cases a file can hold: one call, training, no transposed or sliced view of the input.
SINGLE = [c for c in CASES if len(c["calls"]) == 1 and c["calls"][0]["training"]
          and c["calls"][0]["transpose"] is None and not c["calls"][0].get("slices")]


@pytest.mark.parametrize("case", SINGLE, ids=[c["id"] for c in SINGLE])
def test_cli_rng_torch_matches_torch(case, tmp_path, run_cli):
    call = case["calls"][0]
    x = load(call, "input")
    want = load(call, "output")
    if call["dtype"] == "bfloat16" and call["fortran"]:  # .npy has no bf16, safetensors no F order
        y = dropout(np.asfortranarray(x), call["p"], seed=case["seed"], rng="torch",
                    variant=VARIANT[call["function"]], channel_axis=channel_axis(call),
                    chunk_size=4099)
        assert same_bits(y, want)
        return
    if call["dtype"] == "bfloat16":
        src = write_safetensors(tmp_path / "x.safetensors", {"x": np.ascontiguousarray(x)})
        out = tmp_path / "y.safetensors"
    else:
        src = write_npy(tmp_path / "x.npy", np.ascontiguousarray(x), fortran=call["fortran"])
        out = tmp_path / "y.npy"
    code, stats, err = run_cli("apply", src, "-o", str(out), "--rng", "torch", "--seed",
                               str(case["seed"]), "-p", repr(call["p"]), "--variant",
                               VARIANT[call["function"]], "--channel-axis",
                               str(channel_axis(call)), "--chunk-size", "4099",
                               "--stats", "-", "-q")
    assert code == 0, err
    got = load_tensors(str(out))
    got = got["x"] if "x" in got else got[""]
    assert same_bits(got, want.reshape(got.shape)), (
        f"{case['id']}: differs from torch's output (goldens: scripts/make_torch_golden.py)")
    t = json.loads(stats)["files"][0]["tensors"][0]
    assert t["kept"] + t["dropped"] == x.size


@pytest.mark.parametrize("case", [c for c in CASES if c["id"] in ("sequence_same_p",
                                                                  "sequence_blocks")],
                         ids=lambda c: c["id"])
def test_tensors_of_one_file_continue_one_stream_in_name_order(case, tmp_path, run_cli):
    calls = case["calls"]
    ps = {c["p"] for c in calls}
    tensors = {f"t{i:02d}": load(c, "input") for i, c in enumerate(calls)}
    src = write_safetensors(tmp_path / "s.safetensors", tensors)
    if len(ps) == 1:
        code, _, err = run_cli("apply", src, "-o", str(tmp_path / "o.safetensors"), "--rng",
                               "torch", "--seed", str(case["seed"]), "-p", repr(ps.pop()), "-q")
        assert code == 0, err
        got = load_tensors(str(tmp_path / "o.safetensors"))
        for i, c in enumerate(calls):
            assert same_bits(got[f"t{i:02d}"], load(c, "output")), f"tensor {i}"
    else:  # different p per call: the Python API continues one TorchMaskSource
        from dropout_core.streams.torch_cpu import TorchMaskSource

        src_stream = TorchMaskSource(case["seed"])
        for c in calls:
            y = dropout(load(c, "input"), c["p"], rng="torch", torch_source=src_stream)
            assert same_bits(y, load(c, "output"))


def test_rng_torch_mask_out_matches_the_dropped_elements(tmp_path, run_cli):
    case = next(c for c in SINGLE if c["calls"][0]["function"] == "dropout"
                and c["calls"][0]["p"] == 0.5 and c["calls"][0]["dtype"] == "float32")
    call = case["calls"][0]
    x = np.ones(call["shape"], np.float32)
    src = write_npy(tmp_path / "x.npy", x)
    run_cli("apply", src, "-o", str(tmp_path / "y.npy"), "--rng", "torch", "--seed",
            str(case["seed"]), "-p", "0.5", "--mask-out", str(tmp_path / "m.npy"), "-q")
    m, y = np.load(tmp_path / "m.npy"), np.load(tmp_path / "y.npy")
    assert ((y != 0) == m).all()


def test_rng_torch_refuses_options_torch_has_not(tmp_path, run_cli):
    src = write_npy(tmp_path / "x.npy", np.ones(4, np.float32))
    for extra in (["--exact-count"], ["--share-axes", "0"], ["--no-scale"], ["--fill", "1"]):
        code, _, err = run_cli("apply", src, "-o", str(tmp_path / "y.npy"), "--rng", "torch",
                               "--seed", "1", *extra)
        assert code == 2 and err.startswith("Error: "), extra


def test_rng_torch_without_seed_reports_one_that_repeats_the_run(tmp_path, run_cli):
    src = write_npy(tmp_path / "x.npy", np.ones(1000, np.float32))
    code, out, err = run_cli("apply", src, "-o", str(tmp_path / "a.npy"), "--rng", "torch",
                             "--stats", "-", "-q")
    assert code == 0, err
    seed = json.loads(out)["seed"]
    run_cli("apply", src, "-o", str(tmp_path / "b.npy"), "--rng", "torch", "--seed", str(seed),
            "-q")
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()


API = [c for c in CASES if len(c["calls"]) == 1 and c["calls"][0]["training"]]


@pytest.mark.parametrize("stats", [False, True], ids=["fused", "chunked-with-stats"])
@pytest.mark.parametrize("chunk", [1 << 20, 1031])
@pytest.mark.parametrize("case", API, ids=[c["id"] for c in API])
def test_python_api_rng_torch_matches_torch_for_any_layout(case, chunk, stats):
    call = case["calls"][0]
    x = call_input(call)
    y = dropout(x, call["p"], seed=case["seed"], rng="torch", variant=VARIANT[call["function"]],
                channel_axis=channel_axis(call), chunk_size=chunk, return_stats=stats)
    y = y[0] if stats else y
    assert same_bits(y, load(call, "output").reshape(y.shape)), case["id"]


@pytest.mark.parametrize("seed", [str(2**64), str(-(2**63) - 1)])
def test_seed_outside_torchs_range_is_a_usage_error(tmp_path, run_cli, seed):
    src = write_npy(tmp_path / "x.npy", np.ones(4, np.float32))
    code, _, err = run_cli("apply", src, "-o", str(tmp_path / "y.npy"), "--rng", "torch",
                           "--seed", seed)
    assert code == 2 and "manual_seed" in err and not (tmp_path / "y.npy").exists()


def test_torch_source_reports_its_seed_and_refuses_a_different_one():
    from dropout_core import UsageError
    from dropout_core.streams.torch_cpu import TorchMaskSource

    x = np.ones((4, 5), np.float32)
    src = TorchMaskSource(1234)
    y1, stats = dropout(x, 0.5, rng="torch", torch_source=src, return_stats=True)
    assert stats["seed"] == 1234  # the stream's seed, not None
    # a continued stream equals one draw of both calls from a fresh source
    y2 = dropout(x, 0.5, rng="torch", torch_source=src)
    both = dropout(np.ones((8, 5), np.float32), 0.5, rng="torch", seed=1234)
    assert same_bits(np.concatenate([y1, y2]), both)
    with pytest.raises(UsageError, match="disagree"):
        dropout(x, 0.5, rng="torch", torch_source=TorchMaskSource(1), seed=2)
