"""The library's semantics, on arrays in memory: nn.Dropout's rules and ours."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from conftest import binomial_bounds

from dropout_core import ALPHA_PRIME, DropoutError, DropoutParams, UsageError, dropout
from dropout_core.streams.default import KeepStream

BF16 = ml_dtypes.bfloat16
FLOATS = [np.float16, BF16, np.float32, np.float64]


def specials(dtype, n=64):
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    x[:5] = [np.nan, np.inf, -np.inf, -0.0, 0.0]
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_eval_mode_is_identity_bit_for_bit(dtype, p):
    x = specials(dtype)
    y = dropout(x, p, seed=1, mode="eval")
    assert y.tobytes() == x.tobytes() and y.dtype == x.dtype


@pytest.mark.parametrize("dtype", FLOATS)
def test_p_zero_is_identity_bit_for_bit(dtype):
    x = specials(dtype)
    assert dropout(x, 0.0, seed=1).tobytes() == x.tobytes()


@pytest.mark.parametrize("dtype", FLOATS)
def test_p_one_drops_everything_to_the_fill(dtype):
    x = specials(dtype)
    y = dropout(x, 1.0, seed=1, fill=0.0)
    assert (y.view(np.uint8) == 0).all()  # +0.0 everywhere, even where x was NaN or -inf


@pytest.mark.parametrize("dtype", FLOATS)
def test_dropped_elements_are_exactly_the_fill_even_for_nan_and_inf(dtype):
    x = np.full(4096, np.nan, dtype=np.float32).astype(dtype)
    x[::3] = np.inf
    y = dropout(x, 0.5, seed=3, fill=-2.0)
    drop = ~KeepStream(3, "", "", 0.5).keep(0, x.size)
    assert (y[drop].astype(np.float64) == -2.0).all()
    kept_in, kept_out = x[~drop].astype(np.float64), y[~drop].astype(np.float64)
    assert (np.isnan(kept_out) == np.isnan(kept_in)).all()
    assert (np.isinf(kept_out) == np.isinf(kept_in)).all()


@pytest.mark.parametrize("p", [0.1, 1 / 3, 0.5, 0.9])
def test_survivors_scaled_by_float32_reciprocal(p):
    x = np.random.default_rng(1).standard_normal(10_000).astype(np.float32)
    y = dropout(x, p, seed=2)
    drop = ~KeepStream(2, "", "", p).keep(0, x.size)
    np.testing.assert_array_equal(y[~drop], x[~drop] * np.float32(1 / (1 - p)))
    assert (y[drop] == 0).all()


@pytest.mark.parametrize("dtype", [np.float16, BF16])
def test_16_bit_floats_computed_in_float32_and_rounded_once(dtype):
    x = np.random.default_rng(4).standard_normal(5000).astype(dtype)
    y = dropout(x, 0.3, seed=5)
    drop = ~KeepStream(5, "", "", 0.3).keep(0, x.size)
    want = (x.astype(np.float32) * np.float32(1 / 0.7)).astype(dtype)
    assert y.dtype == dtype
    assert y[~drop].tobytes() == want[~drop].tobytes()


def test_bfloat16_rounds_to_nearest_even_not_truncation():
    x = np.array([1.0 + 2**-8] * 64, dtype=np.float32).astype(BF16)  # exact in bf16
    y = dropout(x, 1 / 3, seed=0)
    kept = y[y != 0].astype(np.float32)
    want = np.float32(x[0].astype(np.float32) * np.float32(1.5))
    assert (kept == np.float32(want.astype(BF16))).all()


def test_float16_overflow_is_counted_not_hidden():
    x = np.full(1000, 60000, dtype=np.float16)
    y, st = dropout(x, 0.5, seed=1, return_stats=True)
    assert st["overflow"] == st["kept"] == int(np.isinf(y).sum()) > 0


def test_input_nan_inf_is_not_counted_as_overflow():
    x = specials(np.float32, 1000)
    _, st = dropout(x, 0.5, seed=1, return_stats=True)
    assert st["overflow"] == 0


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint16, np.bool_])
def test_integer_and_bool_refused_with_scaling(dtype):
    with pytest.raises(DropoutError, match="scale=False"):
        dropout(np.ones(10, dtype), 0.5, seed=1, tensor="ids")


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint16])
def test_integers_masked_with_no_scale(dtype):
    x = np.arange(1, 2001).astype(dtype)
    y = dropout(x, 0.5, seed=1, scale=False)
    drop = ~KeepStream(1, "", "", 0.5).keep(0, x.size)
    assert (y[drop] == 0).all() and (y[~drop] == x[~drop]).all() and y.dtype == dtype


@pytest.mark.parametrize("dtype,fill", [(np.int8, 300), (np.int32, 0.5), (np.bool_, 2),
                                        (ml_dtypes.float8_e8m0fnu, 0.0)])
def test_fill_that_the_dtype_cannot_hold_is_refused(dtype, fill):
    with pytest.raises(DropoutError, match="cannot be represented"):
        dropout(np.ones(4, dtype), 0.5, seed=1, scale=False, fill=fill)


@pytest.mark.parametrize("p", [-0.1, 1.0001, float("nan"), "0.5", None])
def test_bad_p_is_a_usage_error(p):
    with pytest.raises(UsageError, match="0 <= p <= 1"):
        DropoutParams(p=p)


def test_inplace_writes_into_the_given_array():
    x = np.ones(1000, np.float32)
    y = dropout(x, 0.5, seed=1, inplace=True)
    assert y is x and set(np.unique(x).tolist()) == {0.0, 2.0}


def test_not_inplace_leaves_the_input_alone():
    x = np.ones(1000, np.float32)
    dropout(x, 0.5, seed=1)
    assert (x == 1).all()


@pytest.mark.parametrize("shape", [(6, 5), (3, 4, 5), (2, 3, 4, 5)])
def test_fortran_order_gives_the_same_result_as_c_order(shape):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    a = dropout(x, 0.5, seed=9, chunk_size=7)
    b = dropout(np.asfortranarray(x), 0.5, seed=9, chunk_size=7)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("chunk", [1, 3, 64, 1000, 1 << 20])
def test_chunk_size_never_changes_a_bit(chunk):
    x = np.random.default_rng(0).standard_normal((37, 41)).astype(np.float16)
    want = dropout(x, 0.3, seed=4)
    y, st = dropout(x, 0.3, seed=4, chunk_size=chunk, return_stats=True)
    assert y.tobytes() == want.tobytes()
    assert st["mask_digest"] == dropout(x, 0.3, seed=4, return_stats=True)[1]["mask_digest"]


def test_stats_count_kept_and_dropped():
    x = np.ones(100_000, np.float32)
    y, st = dropout(x, 0.3, seed=1, return_stats=True)
    assert st["dropped"] == int((y == 0).sum()) and st["kept"] + st["dropped"] == x.size
    lo, hi = binomial_bounds(x.size, 0.3)
    assert lo <= st["dropped"] <= hi
    assert st["drop_fraction"] == st["dropped"] / x.size


def test_channel_variant_drops_whole_channels():
    x = np.ones((16, 8, 5, 5), np.float32)
    y, st = dropout(x, 0.5, seed=3, variant="channel", return_stats=True)
    per = y.reshape(16, 8, -1)
    assert ((per == 0).all(-1) | (per == 2).all(-1)).all()
    assert st["mask_shape"] == [16, 8, 1, 1] and st["units"] == 128
    assert st["dropped"] == st["dropped_units"] * 25


def test_channels_last_with_channel_axis_minus_one():
    x = np.ones((4, 5, 5, 6), np.float32)
    y = dropout(x, 0.5, seed=3, variant="channel", channel_axis=-1)
    per = np.moveaxis(y, -1, 1).reshape(4, 6, -1)
    assert ((per == 0).all(-1) | (per == 2).all(-1)).all()
    # the same decisions as channels-first data laid out NCHW
    z = dropout(np.ones((4, 6, 5, 5), np.float32), 0.5, seed=3, variant="channel")
    np.testing.assert_array_equal(np.moveaxis(y, -1, 1), z)


def test_channel_axis_zero_serves_unbatched_input():
    x = np.ones((6, 4, 4), np.float32)
    _, st = dropout(x, 0.5, seed=1, variant="channel", channel_axis=0, return_stats=True)
    assert st["mask_shape"] == [6, 1, 1]


def test_channel_variant_needs_two_dimensions():
    with pytest.raises(DropoutError, match="at least 2 dimensions"):
        dropout(np.ones(5, np.float32), 0.5, seed=1, variant="channel")


def test_share_axes_share_one_decision_along_the_axes():
    x = np.ones((3, 4, 5), np.float32)
    y, st = dropout(x, 0.5, seed=2, share_axes=(0, 2), return_stats=True)
    assert st["mask_shape"] == [1, 4, 1]
    assert (y == y[:1, :, :1]).all()


def test_share_axis_out_of_range_is_an_error():
    with pytest.raises(DropoutError, match="out of range"):
        dropout(np.ones((3, 4), np.float32), 0.5, seed=1, share_axes=(2,))


@pytest.mark.parametrize("shape,variant,p", [((10, 10), "element", 0.25),
                                             ((8, 6, 3), "channel", 0.5),
                                             ((7,), "element", 0.5)])
def test_exact_count_drops_round_p_times_units(shape, variant, p):
    _, st = dropout(np.ones(shape, np.float32), p, seed=1, variant=variant, exact_count=True,
                    return_stats=True)
    assert st["dropped_units"] == round(p * st["units"])


def test_alpha_dropout_uses_torch_constants_and_keeps_selu_moments():
    p = 0.2
    x = np.random.default_rng(0).standard_normal(1 << 20)
    y, st = dropout(x, p, seed=1, variant="alpha", return_stats=True)
    a = 1 / math.sqrt((ALPHA_PRIME**2 * p + 1) * (1 - p))
    b = a * ALPHA_PRIME * p
    assert st["alpha_a"] == pytest.approx(a, rel=1e-15) and st["alpha_b"] == pytest.approx(b)
    drop = ~KeepStream(1, "", "", p).keep(0, x.size)
    np.testing.assert_array_equal(y[~drop], x[~drop] * a + b)
    assert (y[drop] == np.float64(a * -ALPHA_PRIME + b)).all()
    assert abs(y.mean()) < 0.01 and abs(y.std() - 1) < 0.01


def test_alpha_eval_is_identity():
    x = specials(np.float32)
    assert dropout(x, 0.5, variant="alpha", mode="eval").tobytes() == x.tobytes()


def test_feature_alpha_shares_the_channel_mask():
    x = np.zeros((4, 6, 3, 3), np.float32)
    y = dropout(x, 0.5, seed=1, variant="feature-alpha")
    per = y.reshape(4, 6, -1)
    assert (per == per[..., :1]).all() and len(np.unique(y)) == 2


def test_mask_replay_gives_paired_tensors_the_same_mask():
    x = np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32)
    keep = np.random.default_rng(1).random((8, 1)) > 0.5
    y = dropout(x, 0.5, mask=keep)
    np.testing.assert_array_equal(y, np.where(keep, x * np.float32(2), 0))


def test_mask_that_does_not_broadcast_is_refused():
    with pytest.raises(DropoutError, match="does not broadcast"):
        dropout(np.ones((4, 4), np.float32), 0.5, mask=np.ones((3,), bool))


def test_seed_reproduces_and_differs():
    x = np.ones(4096, np.float32)
    assert (dropout(x, 0.5, seed=1) == dropout(x, 0.5, seed=1)).all()
    assert (dropout(x, 0.5, seed=1) != dropout(x, 0.5, seed=2)).any()


def test_without_seed_a_fresh_seed_is_reported_and_reproduces():
    x = np.ones(4096, np.float32)
    y, st = dropout(x, 0.5, return_stats=True)
    assert (dropout(x, 0.5, seed=st["seed"]) == y).all()


def test_complex64_is_scaled():
    x = (np.ones(100) + 1j).astype(np.complex64)
    y = dropout(x, 0.5, seed=1)
    assert set(np.unique(y).tolist()) <= {0j, 2 + 2j}


@pytest.mark.parametrize("dtype,big", [(ml_dtypes.float8_e4m3fn, 400),
                                       (ml_dtypes.float8_e5m2, 40000)])
def test_float8_overflow_counted(dtype, big):
    x = np.full(256, big, np.float32).astype(dtype)
    _, st = dropout(x, 0.5, seed=1, return_stats=True)
    assert st["overflow"] == st["kept"] > 0


@pytest.mark.parametrize("text,n", [("67108864", 1 << 26), ("64MiB", 1 << 26), ("64M", 1 << 26),
                                    ("1g", 1 << 30), ("2KB", 2000), (" 3_000 ", 3000),
                                    ("5 TiB", 5 << 40), (7, 7)])
def test_parse_size_reads_bytes_and_units(text, n):
    from dropout_core.params import parse_size

    assert parse_size(text) == n


@pytest.mark.parametrize("text", ["0", "-1", "1e6", "64 parsecs", "MiB", "", True, 2.5, -3])
def test_parse_size_refuses_what_is_not_a_size(text):
    from dropout_core.params import parse_size

    with pytest.raises(UsageError, match="size must be"):
        parse_size(text)
