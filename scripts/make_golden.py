"""Make the golden files of the default stream in tests/golden/default/.

    python scripts/make_golden.py

Expected outputs come from tests/reference_stream.py, a plain-Python transcription
of docs/random-stream.md that shares no code with dropout_core's stream or kernel,
and from the arithmetic written out below.  Only the .npy/.safetensors header
writers of dropout_core are reused (their bytes are checked against NumPy and the
reference safetensors reader by the tests), and for .npz the ZIP layer's writer
(formats/ziparchive.py, checked against zipfile and NumPy by test_ziparchive.py).
Review a change here like code: a golden file is never remade to make a test pass.

The .npz cases are listed in npz_cases.json (cases.json keeps the cases that came
before them, byte for byte).  Their inputs are written by zipfile the way np.savez
writes (Zip64 extras, stored or deflated) with a fixed date, so they are the same
bytes on every run; deflated bytes come from zlib, whose version the cases record.

The sharded safetensors checkpoint is listed in sharded_cases.json: a directory of
shards plus model.safetensors.index.json, and a .expected directory of the shards and
index the tool writes with --out-dir.  Every tensor's stream key is (seed, the INDEX's
base name, tensor name), per README "Sharded checkpoints"; the shard headers come from
the same safetensors header writer as the other safetensors goldens, and the expected
index is the input's JSON as json.dumps(doc, indent=2) plus a newline.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
import zipfile
import zlib

import ml_dtypes
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
import reference_stream as ref  # noqa: E402

from dropout_core.formats import npy, ziparchive  # noqa: E402
from dropout_core.formats import safetensors as safetensors_file  # noqa: E402

OUT = os.path.join(ROOT, "tests", "golden", "default")
ALPHA_PRIME = 1.7580993408473766
BF16 = np.dtype(ml_dtypes.bfloat16)


def mask_shape(shape, variant="element", channel_axis=1, share_axes=()):
    if variant in ("channel", "feature-alpha"):
        c = channel_axis % len(shape)
        return tuple(d if k in (0, c) else 1 for k, d in enumerate(shape))
    shared = {a % len(shape) for a in share_axes}
    return tuple(1 if k in shared else d for k, d in enumerate(shape))


def expected(x, *, seed, file, tensor, p, variant="element", channel_axis=1, share_axes=(),
             exact=False, scale=True, fill=None):
    """Dropout by the letter of docs/random-stream.md, sections 3-7."""
    ms = mask_shape(x.shape, variant, channel_axis, share_axes)
    units = math.prod(ms)
    decide = ref.exact_dropped if exact else ref.dropped
    drop = np.array(decide(seed, file, tensor, p, units), dtype=bool).reshape(ms)
    drop = np.broadcast_to(drop, x.shape)
    alpha = variant in ("alpha", "feature-alpha")
    d = fill if fill is not None else (-ALPHA_PRIME if alpha else 0.0)
    wide = np.float64 if x.dtype == np.float64 else np.float32
    if alpha:
        if p == 1:
            return np.full(x.shape, d).astype(x.dtype)
        a, b = (1.0 / math.sqrt((1 - p) * (1 + p * d * d)), None) if scale else (1.0, 0.0)
        if b is None:
            b = -a * p * d
        kept = x.astype(wide) * wide(a) + wide(b)
        return np.where(drop, np.array(a * d + b).astype(x.dtype), kept.astype(x.dtype))
    if scale and p < 1:
        with np.errstate(over="ignore", invalid="ignore"):
            kept = (x.astype(wide) * wide(1.0 / (1.0 - p))).astype(x.dtype)
    else:
        kept = x
    return np.where(drop, np.array(d).astype(x.dtype), kept)


def save_npy(path, a):
    with open(path, "wb") as f:
        f.write(npy.header_bytes(a.dtype, a.shape))
        f.write(np.ascontiguousarray(a).tobytes())


def save_npy_fortran(path, a):
    with open(path, "wb") as f:
        f.write(npy.header_bytes(a.dtype, a.shape, fortran_order=True))
        f.write(np.asfortranarray(a).tobytes(order="F"))


def save_st(path, tensors, metadata=None):
    with open(path, "wb") as f:
        f.write(safetensors_file.build_header([(k, v.dtype, v.shape) for k, v in tensors.items()],
                                              metadata))
        for v in tensors.values():
            f.write(np.ascontiguousarray(v).tobytes())


def npy_bytes(a, fortran=False):
    f = io.BytesIO()
    f.write(npy.header_bytes(a.dtype, a.shape, fortran_order=fortran))
    f.write(np.asfortranarray(a).tobytes(order="F") if fortran else
            np.ascontiguousarray(a).tobytes())
    return f.getvalue()


def save_npz_like_numpy(path, members):
    """(member name, bytes, zipfile method) in order, as np.savez writes them, dated 1980."""
    with zipfile.ZipFile(path, "w") as z:
        for name, data, method in members:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            with z.open(info, "w", force_zip64=True) as f:
                f.write(data)


class _FileSink:
    def __init__(self, f):
        self.f = f

    def write_at(self, pos, data):
        self.f.seek(pos)
        self.f.write(bytes(memoryview(data).cast("B")))


def save_npz_expected(path, src, outputs):
    """The rewrite of archive ``src``: each member in its place; a tensor in ``outputs`` as a
    fresh C-order .npy with the input member's compression, every other member copied."""
    fd = os.open(src, os.O_RDONLY)
    try:
        with open(path, "wb") as f:
            w = ziparchive.ArchiveWriter(_FileSink(f))
            for m in ziparchive.read_directory(fd, os.fstat(fd).st_size, src):
                tensor = m.name[:-4] if m.name.endswith(".npy") else None
                if tensor in outputs:
                    data = npy_bytes(outputs[tensor])
                    mw = w.add(m.name, m.method, len(data))
                    mw.write(data)
                    mw.close()
                else:
                    w.copy(fd, m)
            w.finish()
    finally:
        os.close(fd)


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(1126)
    cases = []

    def npy_case(cid, x, args, fortran=False, **kw):
        inp = f"{cid}.npy"
        (save_npy_fortran if fortran else save_npy)(os.path.join(OUT, inp), x)
        y = expected(x, file=inp, tensor="", **kw)
        save_npy(os.path.join(OUT, f"{cid}.expected.npy"), y)
        cases.append({"id": cid, "input": inp, "expected": f"{cid}.expected.npy", "args": args})

    def st_case(cid, tensors, args, skip=(), metadata=None, **kw):
        inp = f"{cid}.safetensors"
        save_st(os.path.join(OUT, inp), tensors, metadata)
        out = {k: (v if k in skip else expected(v, file=inp, tensor=k, **kw))
               for k, v in tensors.items()}
        save_st(os.path.join(OUT, f"{cid}.expected.safetensors"), out, metadata)
        cases.append({"id": cid, "input": inp, "expected": f"{cid}.expected.safetensors",
                      "args": args})

    def special(n, dtype):
        x = rng.standard_normal(n).astype(dtype)
        x[:4] = np.array([np.nan, np.inf, -np.inf, -0.0]).astype(dtype)
        return x

    npy_case("example_1x3x3", np.arange(1, 10, dtype=np.float64).reshape(1, 3, 3),
             ["-p", "0.5", "--seed", "7"], seed=7, p=0.5)
    npy_case("f32_third_nan_inf", special(35, np.float32).reshape(5, 7),
             ["-p", str(1 / 3), "--seed", "0"], seed=0, p=1 / 3)
    x16 = rng.standard_normal(300).astype(np.float16)
    x16[::7] = 60000
    npy_case("f16_overflow", x16, ["-p", "0.5", "--seed", str(2**40)], seed=2**40, p=0.5)
    npy_case("f64_p09_negative_seed", rng.standard_normal((3, 50)),
             ["-p", "0.9", "--seed", "-12345"], seed=-12345, p=0.9)
    npy_case("f32_p01_odd", rng.standard_normal((13, 17, 3)).astype(np.float32),
             ["-p", "0.1", "--seed", "99"], seed=99, p=0.1)
    npy_case("fortran_f32", rng.standard_normal((6, 5, 4)).astype(np.float32),
             ["-p", "0.5", "--seed", "1"], fortran=True, seed=1, p=0.5)
    npy_case("p1_drops_all", special(20, np.float32), ["-p", "1", "--seed", "3"], seed=3, p=1.0)
    npy_case("fill_no_scale", special(40, np.float32),
             ["-p", "0.3", "--seed", "4", "--no-scale", "--fill", "-1.5"],
             seed=4, p=0.3, scale=False, fill=-1.5)
    npy_case("int32_no_scale", rng.integers(-100, 100, (8, 9), dtype=np.int32),
             ["-p", "0.4", "--seed", "5", "--no-scale", "--fill", "-1"],
             seed=5, p=0.4, scale=False, fill=-1.0)
    npy_case("bool_no_scale", rng.random(50) > 0.3, ["-p", "0.5", "--seed", "6", "--no-scale"],
             seed=6, p=0.5, scale=False)
    npy_case("channel_nchw", rng.standard_normal((2, 3, 4, 5)).astype(np.float32),
             ["-p", "0.5", "--seed", "8", "--variant", "channel"],
             seed=8, p=0.5, variant="channel")
    npy_case("channel_last", rng.standard_normal((2, 4, 4, 6)).astype(np.float32),
             ["-p", "0.5", "--seed", "8", "--variant", "channel", "--channel-axis", "-1"],
             seed=8, p=0.5, variant="channel", channel_axis=-1)
    npy_case("share_axes_0_2", rng.standard_normal((3, 4, 5)).astype(np.float64),
             ["-p", "0.25", "--seed", "10", "--share-axes", "0,2"],
             seed=10, p=0.25, share_axes=(0, 2))
    npy_case("exact_count", rng.standard_normal((10, 10)).astype(np.float32),
             ["-p", "0.25", "--seed", "11", "--exact-count"], seed=11, p=0.25, exact=True)
    npy_case("exact_count_channel", rng.standard_normal((4, 6, 3)).astype(np.float32),
             ["-p", "0.5", "--seed", "12", "--exact-count", "--variant", "channel"],
             seed=12, p=0.5, exact=True, variant="channel")
    npy_case("alpha_f64", rng.standard_normal((6, 6)),
             ["-p", "0.2", "--seed", "13", "--variant", "alpha"], seed=13, p=0.2, variant="alpha")
    npy_case("feature_alpha_f32", rng.standard_normal((2, 3, 4)).astype(np.float32),
             ["-p", "0.5", "--seed", "14", "--variant", "feature-alpha"],
             seed=14, p=0.5, variant="feature-alpha")
    st_case("multi_dtypes", {
        "w32": rng.standard_normal((4, 8)).astype(np.float32),
        "b16": rng.standard_normal(8).astype(np.float16),
        "wbf16": rng.standard_normal((8, 4)).astype(np.float32).astype(BF16),
        "ids": np.arange(16, dtype=np.int64),
    }, ["-p", "0.3", "--seed", "15", "--exclude", "ids"], skip=("ids",),
        metadata={"b": "2", "a": "1"}, seed=15, p=0.3)
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"made_by": "scripts/make_golden.py", "cases": cases}, f, indent=1)
        f.write("\n")
    npz_cases(rng)
    sharded_cases(rng)


def npz_cases(rng) -> None:
    """The .npz cases (after the others: they draw from the generator last)."""
    cases = []
    stored, deflated = zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED

    def npz_case(cid, members, args, skip=(), fortran=(), **kw):
        """members: (name, array or bytes, zipfile method); arrays become NAME.npy."""
        inp = f"{cid}.npz"
        src = os.path.join(OUT, inp)
        save_npz_like_numpy(src, [(n + ".npy", npy_bytes(v, n in fortran), m)
                                  if isinstance(v, np.ndarray) else (n, v, m)
                                  for n, v, m in members])
        outputs = {n: expected(v, file=inp, tensor=n, **kw) for n, v, _ in members
                   if isinstance(v, np.ndarray) and n not in skip}
        save_npz_expected(os.path.join(OUT, f"{cid}.expected.npz"), src, outputs)
        case = {"id": cid, "input": inp, "expected": f"{cid}.expected.npz", "args": args}
        if any(m == deflated for _, _, m in members):
            case["zlib"] = zlib.ZLIB_RUNTIME_VERSION  # deflated bytes are this zlib's
        cases.append(case)

    npz_case("npz_savez_exclude", [
        ("w", rng.standard_normal((4, 6)).astype(np.float32), stored),
        ("h", rng.standard_normal(10).astype(np.float16), stored),
        ("ids", np.arange(12, dtype=np.int64), stored),
    ], ["-p", "0.3", "--seed", "21", "--exclude", "ids"], skip=("ids",), seed=21, p=0.3)
    npz_case("npz_savez_compressed_fortran", [
        ("a", rng.standard_normal((3, 5, 2)), deflated),
        ("f", rng.standard_normal((4, 3)).astype(np.float32), deflated),
    ], ["-p", "0.5", "--seed", "22"], fortran=("f",), seed=22, p=0.5)
    npz_case("npz_other_members_channel", [
        ("meta.json", b'{"epoch": 3}', deflated),
        ("x", rng.standard_normal((2, 3, 4, 4)).astype(np.float32), stored),
        ("notes/", b"", stored),
        ("y", rng.standard_normal((2, 5, 3)).astype(np.float32), deflated),
        ("raw.bin", bytes(range(64)), stored),
    ], ["-p", "0.5", "--seed", "23", "--variant", "channel"], seed=23, p=0.5, variant="channel")
    with open(os.path.join(OUT, "npz_cases.json"), "w") as f:
        json.dump({"made_by": "scripts/make_golden.py", "cases": cases}, f, indent=1)
        f.write("\n")


def sharded_cases(rng) -> None:
    """The sharded checkpoint cases (after the .npz ones: they draw from the generator last)."""
    cases = []

    def sharded_case(cid, shards, args, exclude=lambda name: False, **kw):
        """shards: {shard file name: {tensor name: array}}; written under cid/ and
        cid.expected/ beside an index whose metadata holds the total size."""
        index = "model.safetensors.index.json"
        doc = {"metadata": {"total_size": sum(v.nbytes for t in shards.values()
                                              for v in t.values())},
               "weight_map": {k: shard for shard, t in shards.items() for k in t}}
        text = (json.dumps(doc, indent=2) + "\n").encode()
        for d in (cid, f"{cid}.expected"):
            os.makedirs(os.path.join(OUT, d), exist_ok=True)
            with open(os.path.join(OUT, d, index), "wb") as f:
                f.write(text)
        meta = {"format": "pt"}
        for shard, tensors in shards.items():
            save_st(os.path.join(OUT, cid, shard), tensors, meta)
            out = {k: (v if exclude(k) else expected(v, file=index, tensor=k, **kw))
                   for k, v in tensors.items()}
            save_st(os.path.join(OUT, f"{cid}.expected", shard), out, meta)
        cases.append({"id": cid, "input": f"{cid}/{index}", "expected": f"{cid}.expected",
                      "files": sorted([index, *shards]), "args": args})

    sharded_case("sharded_ckpt", {
        "model-00001-of-00002.safetensors": {
            "layer0.weight": rng.standard_normal((6, 8)).astype(np.float32),
            "layer0.bias": rng.standard_normal(6).astype(np.float32),
        },
        "model-00002-of-00002.safetensors": {
            "layer1.weight": rng.standard_normal((4, 6)).astype(np.float16),
            "layer1.bias": rng.standard_normal(4).astype(np.float16),
        },
    }, ["-p", "0.25", "--seed", "11", "--exclude", "*.bias"],
        exclude=lambda name: name.endswith(".bias"), seed=11, p=0.25)
    with open(os.path.join(OUT, "sharded_cases.json"), "w") as f:
        json.dump({"made_by": "scripts/make_golden.py", "cases": cases}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
