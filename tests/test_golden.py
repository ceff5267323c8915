"""Golden files of the default stream: inputs, flags and expected outputs as data.

The expected files are made by scripts/make_golden.py from a plain-Python
transcription of docs/random-stream.md; a mismatch means the stream or the
arithmetic changed.  Never remake them to make this test pass.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
import zlib

import numpy as np
import pytest

from dropout_core import load_tensors

HERE = os.path.join(os.path.dirname(__file__), "golden", "default")
CASES = []
for _index in ("cases.json", "npz_cases.json"):
    with open(os.path.join(HERE, _index)) as _f:
        CASES += json.load(_f)["cases"]


def _members(path) -> list[tuple[str, int, bytes]]:
    with zipfile.ZipFile(path) as z:
        return [(i.filename, i.compress_type, z.read(i)) for i in z.infolist()]


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_cli_output_matches_golden_bytes(case, tmp_path, run_cli):
    src = tmp_path / case["input"]  # same base name: the base name is part of the key
    shutil.copyfile(os.path.join(HERE, case["input"]), src)
    out = tmp_path / ("out" + os.path.splitext(case["input"])[1])
    code, _, err = run_cli("apply", str(src), "-o", str(out), "-q", *case["args"])
    assert code == 0, err
    with open(os.path.join(HERE, case["expected"]), "rb") as f:
        want = f.read()
    got = out.read_bytes()
    if got != want and case.get("zlib", zlib.ZLIB_RUNTIME_VERSION) != zlib.ZLIB_RUNTIME_VERSION:
        # deflated bytes are zlib's choice: with another zlib, the members must still hold
        # the same bytes, in the same order, with the same compression
        if _members(out) == _members(os.path.join(HERE, case["expected"])):
            return
    if got != want:
        a, b = load_tensors(str(out)), load_tensors(os.path.join(HERE, case["expected"]))
        diffs = {k: int(np.count_nonzero(a[k].view(np.uint8) != b[k].view(np.uint8)))
                 for k in b}
        pytest.fail(f"{case['id']}: output differs from the golden file (differing bytes per "
                    f"tensor: {diffs}); the goldens are made by scripts/make_golden.py")


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_python_api_matches_golden(case):
    """dropout() with file=<base name> gives the bytes the CLI writes."""
    from dropout_core import DropoutParams, dropout

    opts, flags, args = {}, set(), list(case["args"])
    while args:
        a = args.pop(0)
        if a in ("--exact-count", "--no-scale"):
            flags.add(a)
        else:
            opts[a] = args.pop(0)
    params = DropoutParams(
        p=float(opts["-p"]), variant=opts.get("--variant", "element"),
        channel_axis=int(opts.get("--channel-axis", 1)),
        share_axes=tuple(int(a) for a in opts["--share-axes"].split(","))
        if "--share-axes" in opts else (),
        exact_count="--exact-count" in flags, scale="--no-scale" not in flags,
        fill=float(opts["--fill"]) if "--fill" in opts else None)
    tensors = load_tensors(os.path.join(HERE, case["input"]))
    want = load_tensors(os.path.join(HERE, case["expected"]))
    for name, x in tensors.items():
        if name == opts.get("--exclude"):
            assert x.tobytes() == want[name].tobytes()
            continue
        y = dropout(x, params=params, seed=int(opts["--seed"]), file=case["input"], tensor=name)
        assert y.tobytes() == np.ascontiguousarray(want[name]).tobytes(), name


with open(os.path.join(HERE, "sharded_cases.json")) as _f:
    SHARDED_CASES = json.load(_f)["cases"]


@pytest.mark.parametrize("case", SHARDED_CASES, ids=[c["id"] for c in SHARDED_CASES])
def test_sharded_checkpoint_matches_golden_bytes(case, tmp_path, run_cli):
    """Every shard and the index, written with --out-dir, byte for byte."""
    src_dir = tmp_path / "in"
    shutil.copytree(os.path.join(HERE, os.path.dirname(case["input"])), src_dir)
    out_dir = tmp_path / "out"
    index = src_dir / os.path.basename(case["input"])  # same base name: it is the key
    code, _, err = run_cli("apply", str(index), "--out-dir", str(out_dir), "-q", *case["args"])
    assert code == 0, err
    assert sorted(os.listdir(out_dir)) == case["files"]
    for name in case["files"]:
        with open(os.path.join(HERE, case["expected"], name), "rb") as f:
            want = f.read()
        if (out_dir / name).read_bytes() != want:
            pytest.fail(f"{case['id']}: {name} differs from the golden file; the goldens are "
                        "made by scripts/make_golden.py")
