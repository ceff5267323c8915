"""Make the torch golden files that tests/test_torch_golden.py checks --rng torch against.

Needs real torch (2.13, CPU wheel); the tests that read the goldens do not.
Run from the repository root, with an interpreter that has torch, numpy and
ml_dtypes (kept out of the project's own venv):

    python3 -m venv /work/torchvenv
    /work/torchvenv/bin/pip install torch==2.13.0 numpy ml_dtypes
    /work/torchvenv/bin/python scripts/make_torch_golden.py [--out tests/golden/torch]

It rewrites ``tests/golden/torch/`` from scratch: for each case an input .npy
and torch's output .npy, plus ``cases.json``, the manifest.  bfloat16 arrays
are stored as their uint16 bit patterns (np.save cannot hold bfloat16); the
manifest's ``dtype`` says how to read them back.  Everything is deterministic:
inputs come from ``np.random.default_rng`` with fixed seeds, and the outputs
are torch's, so rerunning it with the same torch gives the same bytes.

Manifest (``cases.json``)::

    {"torch_version": ..., "format": 1,
     "seed_probes": [{"seed": s, "probe": "0101..."}],   # keep bits of a 64-element
                                                          # F.dropout(ones, 0.5) right
                                                          # after manual_seed(s)
     "cases": [case, ...]}

    case = {"id", "seed", "calls": [call, ...], "probe": "0101..."}
        # manual_seed(seed) once, then the calls in order (one stream), then the
        # probe: the keep bits of F.dropout(torch.ones(64), 0.5), which pins
        # where the stream stands after the calls.
        # A single-call case also repeats its call's fields at the top level.
    call = {"function": "dropout" | "dropout1d" | "dropout2d" | "dropout3d"
                        | "alpha_dropout" | "feature_alpha_dropout",
            "p", "training", "dtype": "float32" | "float64" | "float16" | "bfloat16",
            "shape": logical shape, "fortran": bool, "transpose": perm or null,
            "slices": [[start, stop, step] per axis] or null,
            "input": file, "output": file}
        # The input file holds a base array a in C order; the call's array is
        # a, made Fortran-ordered (np.asfortranarray) if fortran, then
        # .transpose(perm) if transpose, then sliced by slices (a strided,
        # non-dense view) if slices.  torch sees torch.from_numpy of exactly
        # that array, so the mask follows its memory layout as torch's does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import warnings

import ml_dtypes
import numpy as np
import torch
import torch.nn.functional as F

FUNCTIONS = {
    "dropout": F.dropout,
    "dropout1d": F.dropout1d,
    "dropout2d": F.dropout2d,
    "dropout3d": F.dropout3d,
    "alpha_dropout": F.alpha_dropout,
    "feature_alpha_dropout": F.feature_alpha_dropout,
}
TORCH_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
NP_DTYPES = {
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
}
SEEDS = [0, 1, 7, 2**31 - 1, 2**32 + 3, 2**62, -1, -12345]
PROBE_N = 64
THIRD = 1 / 3


# ---------------------------------------------------------------- inputs
def make_input(rng: np.random.Generator, shape, dtype: str) -> np.ndarray:
    """Normal values with negatives, +-0, +-inf, NaN, huge and subnormal ones sprinkled in."""
    n = int(np.prod(shape))
    x = rng.standard_normal(n) * 3.0
    specials = {
        "float32": [np.nan, np.inf, -np.inf, -0.0, 0.0, -1.5, 3e38, -2e-41],
        "float64": [np.nan, np.inf, -np.inf, -0.0, 0.0, -1.5, 1.7e308, -3e-310],
        "float16": [np.nan, np.inf, -np.inf, -0.0, 0.0, -1.5, 40000.0, -3e-6],
        "bfloat16": [np.nan, np.inf, -np.inf, -0.0, 0.0, -1.5, 3e38, -2e-40],
    }[dtype]
    if n >= 4:
        k = min(n // 2, len(specials))
        pos = rng.choice(n, size=k, replace=False)
        x[pos] = specials[:k]
    elif n >= 1:
        x[0] = -abs(x[0])  # at least one negative, so -0.0 shows when dropped
    with np.errstate(over="ignore"):
        return x.astype(NP_DTYPES[dtype]).reshape(shape)


def to_torch(a: np.ndarray, dtype: str) -> torch.Tensor:
    if dtype == "bfloat16":
        return torch.from_numpy(a.view(np.uint16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def to_numpy_bits(t: torch.Tensor, dtype: str) -> np.ndarray:
    """torch output -> storable numpy array (bfloat16 as uint16 bits), layout kept."""
    if dtype == "bfloat16":
        return t.view(torch.uint16).numpy()
    return t.numpy()


def storable(a: np.ndarray, dtype: str) -> np.ndarray:
    return a.view(np.uint16) if dtype == "bfloat16" else a


# ---------------------------------------------------------------- cases
class Builder:
    def __init__(self, out: str) -> None:
        self.out = out
        self.cases: list[dict] = []
        self.bytes = 0

    def _save(self, name: str, a: np.ndarray) -> str:
        path = os.path.join(self.out, name)
        np.save(path, a, allow_pickle=False)
        self.bytes += os.path.getsize(path)
        return name

    def call(self, case_id: str, k: int, rng, *, function="dropout", p=0.5, dtype="float32",
             shape=(7,), fortran=False, transpose=None, slices=None, base_shape=None,
             training=True) -> dict:
        """One call.  ``shape`` is the logical shape; with ``slices``, give ``base_shape``."""
        shape = tuple(shape)
        if base_shape is None:
            assert slices is None
            base_shape = shape if transpose is None else tuple(
                shape[list(transpose).index(i)] for i in range(len(shape)))
        base = make_input(rng, tuple(base_shape), dtype)
        arr = np.asfortranarray(base) if fortran else base
        if transpose is not None:
            arr = arr.transpose(transpose)
        if slices is not None:
            arr = arr[tuple(slice(*s) for s in slices)]
        assert arr.shape == shape, (case_id, arr.shape, shape)
        suffix = f"_{k}" if k else ""
        return {
            "function": function, "p": p, "training": training, "dtype": dtype,
            "shape": list(shape), "fortran": fortran,
            "transpose": list(transpose) if transpose is not None else None,
            "slices": [list(s) for s in slices] if slices is not None else None,
            "input": self._save(f"{case_id}{suffix}_in.npy", storable(base, dtype)),
            "output": None,  # filled by add()
            "_array": arr,
        }

    def add(self, case_id: str, seed: int, calls: list[dict]) -> None:
        torch.manual_seed(seed)
        for c in calls:
            xt = to_torch(c.pop("_array"), c["dtype"])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # dropout2d on 3-D input warns
                y = FUNCTIONS[c["function"]](xt, p=c["p"], training=c["training"])
            assert y.dtype == TORCH_DTYPES[c["dtype"]] and tuple(y.shape) == tuple(c["shape"])
            c["output"] = self._save(c["input"].replace("_in.npy", "_out.npy"),
                                     to_numpy_bits(y, c["dtype"]))
        case = {"id": case_id, "seed": seed, "calls": calls, "probe": probe()}
        if len(calls) == 1:
            case.update({k: v for k, v in calls[0].items()})
        self.cases.append(case)

    @staticmethod
    def rng(case_id: str) -> np.random.Generator:
        """Inputs keyed by case id: adding a case changes no other case's files."""
        return np.random.default_rng([20260101, *case_id.encode()])

    def single(self, case_id: str, seed: int, **kw) -> None:
        rng = self.rng(case_id)
        self.add(case_id, seed, [self.call(case_id, 0, rng, **kw)])

    def sequence(self, case_id: str, seed: int, calls: list[dict]) -> None:
        rng = self.rng(case_id)
        self.add(case_id, seed, [self.call(case_id, k, rng, **kw) for k, kw in enumerate(calls)])


def probe() -> str:
    """Keep bits of the next 64 elements: where the stream stands now."""
    y = F.dropout(torch.ones(PROBE_N), 0.5, training=True)
    return "".join("1" if v else "0" for v in (y != 0).tolist())


def pname(p: float) -> str:
    return {THIRD: "third"}.get(p, repr(p).replace(".", "p").replace("-", "m"))


def build(b: Builder) -> None:
    seeds = iter(SEEDS * 100)
    dtypes = list(NP_DTYPES)
    ps = [0.1, 0.5, 0.9, THIRD]
    shapes = [(1,), (7,), (3, 5), (13, 17, 3), (64, 33)]

    # Element dropout: every dtype x every p, rotating shapes and seeds.
    for i, dt in enumerate(dtypes):
        for j, p in enumerate(ps):
            shape = shapes[(i + j) % len(shapes)]
            b.single(f"dropout_{dt}_{pname(p)}", next(seeds), function="dropout", p=p, dtype=dt,
                     shape=shape)
    # Every seed of the list at least once on a mid-size f32 tensor.
    for s in SEEDS:
        b.single(f"dropout_float32_seed_{s}".replace("-", "m"), s, p=0.3, shape=(17, 19))
    # Fortran order and other dense non-C layouts: the mask follows memory.
    for i, dt in enumerate(dtypes):
        b.single(f"dropout_{dt}_fortran", next(seeds), p=ps[i], dtype=dt, shape=(13, 17, 3),
                 fortran=True)
    b.single("dropout_float32_fortran_2d", 7, p=0.5, shape=(31, 29), fortran=True)
    b.single("dropout_float32_transposed", 1, p=0.4, shape=(5, 6, 7), transpose=(2, 0, 1))
    b.single("dropout_float32_channels_last", 2**62, p=0.6, shape=(2, 3, 6, 5),
             transpose=(0, 3, 1, 2))
    # Non-dense (strided) views: torch lays the noise out in the view's stride order.
    b.single("dropout_float32_fortran_sliced", 1, p=0.45, dtype="float32", shape=(13, 9, 3),
             base_shape=(13, 17, 3), fortran=True, slices=[[None], [None, None, 2], [None]])
    b.single("dropout_float64_c_sliced", 2, p=0.45, dtype="float64", shape=(6, 4, 5),
             base_shape=(6, 8, 5), slices=[[None], [1, None, 2], [None]])
    b.single("dropout_bfloat16_channels_last_sliced_c", 3, p=0.3, dtype="bfloat16",
             shape=(2, 3, 6, 5), base_shape=(2, 6, 5, 6), transpose=(0, 3, 1, 2),
             slices=[[None], [None, None, 2], [None], [None]])
    b.single("alpha_dropout_float32_fortran_sliced", 4, function="alpha_dropout", p=0.3,
             shape=(7, 5, 4), base_shape=(7, 10, 4), fortran=True,
             slices=[[None], [None, None, 2], [None]])
    # Edge cases: p == 0, p == 1, eval mode, empty and 0-d tensors, extreme p.
    for dt in dtypes:
        b.single(f"dropout_{dt}_p0", 3, p=0.0, dtype=dt, shape=(9, 4))
        b.single(f"dropout_{dt}_p1", 4, p=1.0, dtype=dt, shape=(9, 4))
    b.single("dropout_float32_eval", 5, p=0.5, shape=(9, 4), training=False)
    b.single("dropout_float32_empty", 6, p=0.5, shape=(3, 0))
    b.single("dropout_float32_scalar", 8, p=0.5, shape=())
    b.single("dropout_float64_p_tiny", 9, p=1e-17, dtype="float64", shape=(40,))
    b.single("dropout_float32_p_2m53", 10, p=2.0**-53, shape=(40,))
    b.single("dropout_float32_p_near1", 11, p=1 - 2.0**-20, shape=(3000,))
    # float16: s = 1/(1-p) overflows to inf; kept values become inf (or NaN for 0).
    b.single("dropout_float16_scale_overflow", 7, p=0.99999, dtype="float16", shape=(300000,))
    b.single("dropout_bfloat16_p_near1", 12, p=0.999, dtype="bfloat16", shape=(5000,))
    # More than 2**20 elements: crosses many blocks of the threaded pipeline.
    b.single("dropout_float32_big", 2**62, p=THIRD, shape=(1025, 1031))

    # Channel (feature) dropout, every dtype.
    for i, dt in enumerate(dtypes):
        p = ps[i]
        b.single(f"dropout1d_{dt}_2d", next(seeds), function="dropout1d", p=p, dtype=dt,
                 shape=(5, 9))
        b.single(f"dropout1d_{dt}_3d", next(seeds), function="dropout1d", p=p, dtype=dt,
                 shape=(4, 6, 10))
        b.single(f"dropout2d_{dt}_4d", next(seeds), function="dropout2d", p=p, dtype=dt,
                 shape=(2, 3, 5, 4))
        b.single(f"dropout3d_{dt}_5d", next(seeds), function="dropout3d", p=p, dtype=dt,
                 shape=(2, 3, 2, 3, 4))
    b.single("dropout2d_float32_3d", -1, function="dropout2d", p=0.5, shape=(3, 4, 5))
    b.single("dropout3d_float32_4d", -12345, function="dropout3d", p=0.5, shape=(3, 2, 3, 4))
    b.single("dropout2d_float32_fortran", 0, function="dropout2d", p=THIRD, shape=(3, 7, 5, 4),
             fortran=True)
    b.single("dropout2d_float32_many_channels", 1, function="dropout2d", p=0.2,
             shape=(8, 600, 2, 2))
    b.single("dropout2d_float32_p1", 2, function="dropout2d", p=1.0, shape=(2, 3, 2, 2))

    # Alpha dropout (float32/float64; the reduced dtypes as a bonus).
    for i, dt in enumerate(["float32", "float64"]):
        for j, p in enumerate(ps):
            b.single(f"alpha_dropout_{dt}_{pname(p)}", next(seeds), function="alpha_dropout",
                     p=p, dtype=dt, shape=shapes[(i + j + 1) % len(shapes)])
        b.single(f"alpha_dropout_{dt}_fortran", next(seeds), function="alpha_dropout", p=0.25,
                 dtype=dt, shape=(13, 17, 3), fortran=True)
        b.single(f"alpha_dropout_{dt}_p1", 3, function="alpha_dropout", p=1.0, dtype=dt,
                 shape=(4, 5))
        b.single(f"feature_alpha_dropout_{dt}_3d", next(seeds), function="feature_alpha_dropout",
                 p=ps[i], dtype=dt, shape=(4, 6, 5))
        b.single(f"feature_alpha_dropout_{dt}_4d", next(seeds), function="feature_alpha_dropout",
                 p=ps[i + 2], dtype=dt, shape=(2, 3, 4, 5))
        b.single(f"feature_alpha_dropout_{dt}_2d", next(seeds), function="feature_alpha_dropout",
                 p=0.5, dtype=dt, shape=(6, 7))
    b.single("alpha_dropout_float32_eval", 4, function="alpha_dropout", p=0.5, shape=(4, 5),
             training=False)
    for dt in ["float16", "bfloat16"]:
        b.single(f"alpha_dropout_{dt}", 5, function="alpha_dropout", p=0.3, dtype=dt,
                 shape=(13, 17))
        b.single(f"feature_alpha_dropout_{dt}", 6, function="feature_alpha_dropout", p=0.3,
                 dtype=dt, shape=(3, 5, 7))

    # Sequences: one manual_seed, several calls continuing one stream.
    b.sequence("sequence_mixed", -12345, [
        dict(function="dropout", p=0.5, dtype="float32", shape=(100,)),
        dict(function="dropout2d", p=0.3, dtype="float64", shape=(2, 3, 4, 4)),
        dict(function="dropout", p=0.0, dtype="float32", shape=(50,)),
        dict(function="alpha_dropout", p=0.2, dtype="float32", shape=(7, 9)),
        dict(function="dropout", p=1.0, dtype="float16", shape=(10,)),
        dict(function="dropout", p=0.7, dtype="bfloat16", shape=(13, 17), fortran=True),
        dict(function="dropout", p=0.5, dtype="float32", shape=(10,), training=False),
        dict(function="feature_alpha_dropout", p=0.4, dtype="float64", shape=(3, 4, 5)),
        dict(function="dropout1d", p=0.6, dtype="float16", shape=(6, 8)),
        dict(function="dropout", p=THIRD, dtype="float64", shape=(1,)),
    ])
    b.sequence("sequence_blocks", 2**32 + 3, [
        dict(function="dropout", p=0.5, dtype="float16", shape=(300001,)),
        dict(function="dropout", p=0.1, dtype="float16", shape=(300001,)),
        dict(function="dropout", p=0.9, dtype="float32", shape=(3,)),
    ])
    b.sequence("sequence_same_p", 7, [
        dict(function="dropout", p=0.25, dtype="float32", shape=(1,)),
        dict(function="dropout", p=0.25, dtype="float32", shape=(2, 3)),
        dict(function="dropout", p=0.25, dtype="float32", shape=(5, 7, 3)),
    ])


def seed_probes() -> list[dict]:
    """How manual_seed reduces seeds: the first keep bits after each."""
    out = []
    for s in [0, 1, -1, 2**32 - 1, 2**32, 2**32 + 3, 2**40 + 5, 2**62, 2**63, 2**64 - 1,
              -(2**31), -(2**32), -(2**63), -12345]:
        torch.manual_seed(s)
        out.append({"seed": s, "probe": probe()})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description="Make the torch golden files.")
    ap.add_argument("--out", default=os.path.join("tests", "golden", "torch"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    if os.path.isdir(args.out):
        shutil.rmtree(args.out)
    os.makedirs(args.out)
    b = Builder(args.out)
    build(b)
    manifest = {
        "format": 1,
        "torch_version": torch.__version__,
        "made_by": "scripts/make_torch_golden.py",
        "probe_n": PROBE_N,
        "seed_probes": seed_probes(),
        "cases": b.cases,
    }
    path = os.path.join(args.out, "cases.json")
    with open(path, "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    ids = [c["id"] for c in b.cases]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    print(f"{len(b.cases)} cases, {b.bytes / 2**20:.1f} MiB of .npy in {args.out}")


if __name__ == "__main__":
    main()
