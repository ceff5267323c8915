"""The fast path gives exactly what a straightforward implementation of the stream gives.

The reference here is the stream as docs/random-stream.md states it, written the
plain way: Philox words from a fresh generator, byte i of the stream is unit i's
draw, ties refined by SplitMix64, and apply_chunk's arithmetic on the whole
tensor at once.  The fast path (keep bits drawn per segment on threads, values
by bit masks or a table, stats packed per block) must match it bit for bit, at
any start, length, p, dtype and fill.
"""

from __future__ import annotations

import numpy as np
import pytest
import reference_stream as ref

from dropout_core import dropout
from dropout_core.kernel import BLOCK, Kernel, apply_chunk, value_plan
from dropout_core.params import DropoutParams
from dropout_core.stats import MaskDigest
from dropout_core.streams.default import KeepStream, keep_from_bytes, threshold
from dropout_core.streams.philox import philox_bytes


def slow_drop(stream: KeepStream, start: int, stop: int, p: float) -> np.ndarray:
    """Drop decisions for units [start, stop): the spec, one plain step at a time."""
    t = threshold(p)
    n = stop - start
    if t <= 0:
        return np.zeros(n, dtype=bool)
    if t >= 1 << 32:
        return np.ones(n, dtype=bool)
    t_hi, t_lo = t >> 24, t & 0xFFFFFF
    w0, w1 = start // 8, (stop + 7) // 8
    gen = np.random.Philox(key=stream.key, counter=w0 // 4)
    words = gen.random_raw(w0 % 4 + (w1 - w0))[w0 % 4:].astype("<u8")
    b = np.frombuffer(words.tobytes(), dtype=np.uint8)[start - 8 * w0:][:n]
    dropped = b < t_hi
    for i in np.flatnonzero(b == t_hi):
        if ref.splitmix64(stream.tie_seed, start + int(i)) >> 40 < t_lo:
            dropped[i] = True
    return dropped


P_VALUES = [0.1, 0.5, 0.25, 1 / 3, 2**-8, 255 / 256, 0.5 + 2**-30, 1 - 2**-33, 1e-12, 1.0]
RANGES = [(0, 1), (5, 6), (7, 16), (3, 1000), (8, 8 + BLOCK), (12345, 12345 + 3 * BLOCK + 5),
          (2**40 + 3, 2**40 + 3 + 5000), (BLOCK - 1, 2 * BLOCK + 1)]


@pytest.mark.parametrize("p", P_VALUES)
@pytest.mark.parametrize("start,stop", RANGES)
def test_drop_equals_the_slow_reference_at_any_range(p, start, stop):
    s = KeepStream(11, "w.safetensors", "layer.0", p)
    np.testing.assert_array_equal(~s.keep(start, stop), slow_drop(s, start, stop, p))


@pytest.mark.parametrize("p", P_VALUES)
def test_keep_from_bytes_is_the_complement_of_drop(p):
    s = KeepStream(-3, "x.npy", "", p)
    start, stop = 77, 77 + 4 * BLOCK
    keep = keep_from_bytes(philox_bytes(s.key, start, stop), start, threshold(p), s.tie_seed,
                           np.empty(stop - start, dtype=bool))
    np.testing.assert_array_equal(keep, ~slow_drop(s, start, stop, p))


def test_slow_reference_agrees_with_the_pure_python_transcription():
    s = KeepStream(7, "x.npy", "t", 0.3)
    want = np.array(ref.dropped(7, "x.npy", "t", 0.3, 600))
    np.testing.assert_array_equal(slow_drop(s, 0, 600, 0.3), want)


# ----------------------------------------------------------------------------- whole tensors

def reference(x: np.ndarray, params: DropoutParams, seed: int, file: str, tensor: str):
    """Output, dropped count, overflow and mask digest, computed the plain way."""
    plan = value_plan(params, x.dtype, "x")
    drop = slow_drop(KeepStream(seed, file, tensor, params.p), 0, x.size, params.p)
    out, overflow = apply_chunk(x.reshape(-1).copy(), drop, plan)
    d = MaskDigest()
    d.update(drop)
    return out.reshape(x.shape), int(drop.sum()), overflow, d.hexdigest()


def _data(dtype, n, special=False, seed=0):
    import ml_dtypes  # noqa: F401  (bfloat16 and float8 names)

    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return rng.integers(0, 2, n).astype(bool)
    if dt.kind in "iu":
        return rng.integers(-100 if dt.kind == "i" else 0, 100, n).astype(dt)
    x = (rng.standard_normal(n) * 3).astype(dt)
    if special:
        # inf, nan, negative zero, huge values that overflow when scaled, subnormals
        big = {2: 60000.0, 4: 3e38, 8: 1.7e308}.get(dt.itemsize, 400.0)
        picks = rng.integers(0, n, 64)
        x[picks[:8]] = np.inf
        x[picks[8:16]] = -np.inf
        x[picks[16:24]] = np.nan
        x[picks[24:32]] = -0.0
        x[picks[32:48]] = np.array(big).astype(dt)
        x[picks[48:56]] = np.array(-big).astype(dt)
        x[picks[56:]] = np.array(1e-40 if dt.itemsize >= 4 else 1e-7).astype(dt)
    return x


CASES = [
    # dtype, params, special values
    ("float32", dict(p=0.1), False),
    ("float32", dict(p=0.1), True),
    ("float32", dict(p=0.5, fill=1.5), True),
    ("float32", dict(p=0.3, fill=float("nan")), True),
    ("float32", dict(p=0.2, scale=False), True),
    ("float32", dict(p=1.0), False),
    ("float64", dict(p=0.1), False),
    ("float64", dict(p=0.9), True),
    ("float16", dict(p=0.1), False),
    ("float16", dict(p=0.5), True),
    ("float16", dict(p=0.5, fill=-2.0), True),
    ("bfloat16", dict(p=0.1), True),
    ("bfloat16", dict(p=1 / 3), False),
    ("float8_e4m3fn", dict(p=0.25), True),
    ("float8_e5m2", dict(p=0.6), True),
    ("int32", dict(p=0.1, scale=False), False),
    ("int8", dict(p=0.7, scale=False, fill=3), False),
    ("bool", dict(p=0.4, scale=False), False),
    ("complex64", dict(p=0.1), False),
    ("float32", dict(p=0.1, variant="alpha"), True),
]


@pytest.mark.parametrize("dtype,kw,special", CASES,
                         ids=[f"{d}-{'-'.join(f'{k}={v}' for k, v in kw.items())}-{s}"
                              for d, kw, s in CASES])
@pytest.mark.parametrize("n", [1, 13, 3 * BLOCK + 7])
def test_fast_path_equals_the_reference(dtype, kw, special, n):
    import ml_dtypes

    dt = getattr(ml_dtypes, dtype) if dtype.startswith(("bfloat", "float8")) else dtype
    x = _data(dt, n, special)
    params = DropoutParams(**kw)
    want, dropped, overflow, digest = reference(x, params, 5, "f.npy", "t")
    got, st = dropout(x, params=params, seed=5, file="f.npy", tensor="t", return_stats=True,
                      chunk_size=BLOCK + 3)
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
    assert st["dropped_units"] == dropped
    assert st["overflow"] == overflow
    assert st["mask_digest"] == digest


@pytest.mark.parametrize("dtype,mode", [("float32", "mul"), ("float64", "mul"),
                                        ("float16", "lut"), ("bfloat16", "lut"),
                                        ("int16", "mask"), ("complex64", "generic")])
def test_the_fast_modes_are_the_ones_expected(dtype, mode):
    import ml_dtypes

    dt = np.dtype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
    params = DropoutParams(p=0.1, scale=dt.kind not in "iu")
    k = Kernel(value_plan(params, dt, "x"))
    assert k.mode == mode


def test_f16_overflow_is_counted_like_the_reference():
    x = np.full(5000, 60000, np.float16)
    _, st = dropout(x, 0.5, seed=7, return_stats=True)
    _, dropped, overflow, _ = reference(x, DropoutParams(p=0.5), 7, "", "")
    assert st["overflow"] == overflow == 5000 - dropped
