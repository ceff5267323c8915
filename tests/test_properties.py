"""Hypothesis properties over shapes, dtypes and p: what holds for every input."""

from __future__ import annotations

from fractions import Fraction

import ml_dtypes
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dropout_core import dropout, effective_p
from dropout_core.params import DropoutParams
from dropout_core.streams.default import KeepStream

FLOATS = [np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16), np.dtype(np.float32),
          np.dtype(np.float64)]
shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=9)
ps = st.one_of(st.sampled_from([0.0, 1.0, 0.5, 1 / 3]), st.floats(0, 1))
seeds = st.integers(-(2**70), 2**70)


@st.composite
def arrays(draw):
    dtype = draw(st.sampled_from(FLOATS))
    shape = draw(shapes)
    x = draw(hnp.arrays(np.float32, shape, elements=st.floats(width=32, allow_nan=True,
                                                                 allow_infinity=True)))
    with np.errstate(over="ignore"):
        return x.astype(dtype)


settings.register_profile("ci", max_examples=150, deadline=None)
settings.load_profile("ci")


@given(arrays(), ps, seeds)
def test_shape_and_dtype_preserved_and_counts_add_up(x, p, seed):
    y, s = dropout(x, p, seed=seed, return_stats=True)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert s["kept"] + s["dropped"] == x.size == s["numel"]


@given(arrays(), ps, seeds)
def test_dropped_are_fill_and_kept_are_scaled(x, p, seed):
    y = dropout(x, p, seed=seed, fill=0.0)
    if p == 0:
        assert y.tobytes() == x.tobytes()
        return
    drop = (~KeepStream(seed, "", "", p).keep(0, x.size)).reshape(x.shape)
    yb = y.astype(np.float64)
    assert (yb[drop] == 0).all() and not np.signbit(yb[drop]).any()
    if p < 1:
        wide = np.float64 if x.dtype == np.float64 else np.float32
        with np.errstate(over="ignore", invalid="ignore"):
            want = (x.astype(wide) * wide(1 / (1 - p))).astype(x.dtype)
        assert y[~drop].tobytes() == want[~drop].tobytes()


@given(arrays(), ps, seeds, st.integers(1, 50))
def test_chunk_size_never_changes_bits(x, p, seed, chunk):
    assert dropout(x, p, seed=seed, chunk_size=chunk).tobytes() == \
        dropout(x, p, seed=seed).tobytes()


@given(arrays(), ps, seeds)
def test_eval_is_identity(x, p, seed):
    assert dropout(x, p, seed=seed, mode="eval").tobytes() == x.tobytes()


@given(ps)
def test_effective_p_within_2_to_minus_32(p):
    assert abs(effective_p(DropoutParams(p=p)) - p) <= 2.0**-32


@given(hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=6), ps, seeds,
       st.sampled_from(["channel", "feature-alpha"]))
def test_channel_masks_are_constant_over_spatial_axes(shape, p, seed, variant):
    x = np.ones(shape, np.float32)
    y, s = dropout(x, p, seed=seed, variant=variant, return_stats=True)
    per = y.reshape(shape[0], shape[1], -1)
    assert (per == per[..., :1]).all()
    if p > 0:
        assert s["units"] == shape[0] * shape[1]


@given(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=6), ps, seeds)
def test_exact_count_is_exact(shape, p, seed):
    _, s = dropout(np.ones(shape, np.float32), p, seed=seed, exact_count=True,
                   return_stats=True)
    # exact rational arithmetic: p = 0.05 is a hair above 1/20, so 0.05 * 10 rounds up to 1
    assert s["dropped_units"] == round(Fraction(p) * s["units"])


@given(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5), ps, seeds, st.data())
def test_fortran_order_equals_c_order(shape, p, seed, data):
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    chunk = data.draw(st.integers(1, 40))
    a = dropout(np.asfortranarray(x), p, seed=seed, chunk_size=chunk)
    assert a.tobytes() == dropout(x, p, seed=seed).tobytes()
