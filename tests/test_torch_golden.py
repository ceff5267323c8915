"""--rng torch against real torch's bits, without torch.

The goldens in tests/golden/torch/ were written by real torch 2.13 (CPU) with
scripts/make_torch_golden.py; this file only reads them.  Outputs must match
bit for bit (so -0.0 vs +0.0 counts), except that any NaN equals any NaN:
torch's NaN payloads (bfloat16 0xFFFF vs 0x7FC0) are not part of the contract.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import dropout_core.streams.torch_cpu as ts
from dropout_core.streams.torch_cpu import (
    TorchMaskSource,
    keep_threshold,
    torch_alpha_values,
    torch_dropout,
    torch_dropout_values,
    torch_scale,
)

GOLDEN = Path(__file__).parent / "golden" / "torch"
REMAKE = ("the goldens come from real torch: `python scripts/make_torch_golden.py` (with torch "
          "installed) remakes tests/golden/torch/")
MANIFEST = json.loads((GOLDEN / "cases.json").read_text())
CASES = MANIFEST["cases"]
DTYPES = {
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
}
UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def load(name: str, dtype: str) -> np.ndarray:
    a = np.load(GOLDEN / name, allow_pickle=False)
    return a.view(DTYPES[dtype]) if dtype == "bfloat16" else a


def call_input(call: dict) -> np.ndarray:
    a = load(call["input"], call["dtype"])
    if call["fortran"]:
        a = np.asfortranarray(a)
    if call["transpose"] is not None:
        a = a.transpose(call["transpose"])
    if call.get("slices") is not None:
        a = a[tuple(slice(*s) for s in call["slices"])]
    assert list(a.shape) == call["shape"], f"{call['input']}: shape differs from the manifest"
    return a


def bits(s: str) -> np.ndarray:
    return np.array([c == "1" for c in s])


def assert_same_bits(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, torch gave {want.dtype}"
    assert got.shape == want.shape, f"{what}: shape {got.shape}, torch gave {want.shape}"
    u = UINT[got.dtype.itemsize]
    nan_got = np.isnan(got.astype(np.float64))
    nan_want = np.isnan(want.astype(np.float64))
    same = (got.view(u) == want.view(u)) | (nan_got & nan_want)
    if not same.all():
        bad = np.argwhere(~same)[:5]
        detail = "; ".join(
            f"at {tuple(int(i) for i in ix)}: got {got[tuple(ix)]!r} "
            f"(0x{int(got.view(u)[tuple(ix)]):x}), torch {want[tuple(ix)]!r} "
            f"(0x{int(want.view(u)[tuple(ix)]):x})" for ix in bad)
        pytest.fail(f"{what}: {int((~same).sum())} of {same.size} elements differ from torch "
                    f"({detail}); {REMAKE}")


# ------------------------------------------------------------------ goldens
def test_manifest_is_from_torch_2_13():
    assert MANIFEST["format"] == 1
    assert MANIFEST["torch_version"].startswith("2.13"), REMAKE
    assert len(CASES) > 50, REMAKE


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_matches_torch(case):
    """manual_seed(seed) once, the calls in order on one stream, then the stream position."""
    src = TorchMaskSource(case["seed"])
    for k, call in enumerate(case["calls"]):
        what = f"golden case {case['id']!r}, call {k} ({call['function']}, p={call['p']}, " \
               f"{call['dtype']}, shape {call['shape']})"
        x = call_input(call)
        got = torch_dropout(x, call["p"], src, variant=call["function"],
                            training=call["training"])
        assert_same_bits(got, load(call["output"], call["dtype"]), what)
    probe = src.keep(MANIFEST["probe_n"], 0.5)
    assert np.array_equal(probe, bits(case["probe"])), (
        f"golden case {case['id']!r}: after its calls the stream is not where torch's is "
        f"(words drawn: {src.words_consumed}); {REMAKE}")


@pytest.mark.parametrize("entry", MANIFEST["seed_probes"], ids=lambda e: str(e["seed"]))
def test_seed_reduction_matches_torch(entry):
    """manual_seed(s): s as 64-bit two's complement, then init_genrand(s mod 2**32)."""
    s = entry["seed"]
    src = TorchMaskSource(s)
    assert src.seed32 == (s % 2**64) % 2**32
    assert np.array_equal(src.keep(MANIFEST["probe_n"], 0.5), bits(entry["probe"])), \
        f"seed {s}: first keep bits differ from torch's; {REMAKE}"


@pytest.mark.parametrize("seed", [0, -1, 2**40 + 5, -(2**63), 2**64 - 1, 2**32 + 3])
def test_seed_taken_mod_2_32(seed):
    a = TorchMaskSource(seed).keep(1000, 0.3)
    b = TorchMaskSource((seed % 2**64) % 2**32).keep(1000, 0.3)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("seed", [2**64, -(2**63) - 1])
def test_seed_out_of_torch_range(seed):
    with pytest.raises(ValueError):
        TorchMaskSource(seed)


@pytest.mark.parametrize("seed", [1.5, "3", True])
def test_seed_must_be_an_integer(seed):
    with pytest.raises(TypeError):
        TorchMaskSource(seed)


# ------------------------------------------------------------------ the mask itself
def reference_keep(words: np.ndarray, p: float) -> np.ndarray:
    """Spec section 3, literally: u53 = (hi & 0x1FFFFF) << 32 | lo, kept iff u53 < ceil(q 2**53)."""
    w = words.astype(np.uint64)
    hi, lo = w[0::2], w[1::2]
    u53 = ((hi & np.uint64(0x1FFFFF)) << np.uint64(32)) | lo
    return u53 < np.uint64(math.ceil((1.0 - p) * 2.0**53))


@pytest.mark.parametrize("p", [0.5, 0.1, 1 / 3, 0.9, 1e-17, 2.0**-53, 1 - 2.0**-20, 0.7])
def test_keep_is_spec_formula(p):
    n = 5000
    assert np.array_equal(TorchMaskSource(42).keep(n, p),
                          reference_keep(TorchMaskSource(42).words(2 * n), p))


@pytest.mark.parametrize("hi_first", [True, False])
@pytest.mark.parametrize("p", [0.3, 0.5, 1 / 3, 0.999])
def test_mask_ties_on_the_21_high_bits(monkeypatch, hi_first, p):
    """Pairs whose 21 bits equal T's high part are decided by lo, in both pair layouts."""
    T = keep_threshold(p)
    th, tl = T >> 32, T & 0xFFFFFFFF
    rng = np.random.default_rng(0)
    his = rng.integers(0, 2**32, 64, dtype=np.uint64) & ~np.uint64(0x1FFFFF) | np.uint64(th)
    los = np.array([tl, tl - 1, tl + 1, 0, 2**32 - 1] * 12 + [tl] * 4, np.int64)
    los = (los % 2**32).astype(np.uint64)
    words = np.empty(128, np.uint64)
    words[0::2], words[1::2] = his, los
    want = reference_keep(words, p)
    pairs = (his << np.uint64(32)) | los if hi_first else (los << np.uint64(32)) | his
    monkeypatch.setattr(ts, "_HI_FIRST", hi_first)
    got = np.empty(64, bool)
    ts._mask_into(pairs, T, got, np.empty(64, np.uint64))
    assert np.array_equal(got, want)


N_CHUNKED = 2 * ts.BLOCK + 12345  # big enough for the threaded pipeline


@pytest.mark.parametrize("splits", [
    [1, N_CHUNKED - 1],
    [7, 13, 1, N_CHUNKED - 21],
    [ts.BLOCK - 1, 2, N_CHUNKED - ts.BLOCK - 1],
    [ts.BLOCK, ts.BLOCK, N_CHUNKED - 2 * ts.BLOCK],
    [2 * ts.BLOCK + 1, N_CHUNKED - 2 * ts.BLOCK - 1],
    [12345, 0, 99999, N_CHUNKED - 12345 - 99999],
    [N_CHUNKED],
], ids=lambda s: "+".join(map(str, s)))
@pytest.mark.parametrize("p", [0.5, 1 / 3])
def test_keep_in_pieces_equals_one_call(splits, p):
    whole = TorchMaskSource(2**31 - 1).keep(N_CHUNKED, p)
    src = TorchMaskSource(2**31 - 1)
    pieces = [src.keep(n, p) for n in splits]
    assert [len(x) for x in pieces] == splits
    assert np.array_equal(np.concatenate(pieces), whole)
    assert src.words_consumed == 2 * N_CHUNKED


@pytest.mark.parametrize("ps", [(0.5, 0.1), (0.9, 1 / 3)])
def test_p_may_change_between_calls(ps):
    src = TorchMaskSource(3)
    got = np.concatenate([src.keep(1001, ps[0]), src.keep(999, ps[1])])
    words = TorchMaskSource(3).words(4000)
    want = np.concatenate([reference_keep(words[:2002], ps[0]),
                           reference_keep(words[2002:], ps[1])])
    assert np.array_equal(got, want)


def test_skip_and_words_agree_with_keep():
    a = TorchMaskSource(9)
    a.skip(1234)
    a.words(6)
    b = TorchMaskSource(9)
    b.keep(1237, 0.5)
    assert a.words_consumed == b.words_consumed == 2 * 1237
    assert np.array_equal(a.keep(100, 0.2), b.keep(100, 0.2))


def test_abandoned_blocks_keep_the_count_exact():
    src = TorchMaskSource(11)
    it = src.blocks(10 * ts.BLOCK, 0.5)
    next(it)
    it.close()
    assert src.words_consumed == 2 * ts.BLOCK  # only the block handed out
    fresh = TorchMaskSource(11)
    fresh.skip(ts.BLOCK)
    assert np.array_equal(src.keep(1000, 0.5), fresh.keep(1000, 0.5))


@pytest.mark.parametrize("readahead", [0, 1, 1000, ts.BLOCK + 7, 3 * ts.BLOCK])
def test_readahead_changes_no_bits(readahead):
    """Read-ahead words are handed out in order, whatever mix of calls follows."""
    src = TorchMaskSource(-12345, readahead=readahead)
    got = [src.keep(3, 0.5), src.keep(N_CHUNKED, 0.2), src.words(10), src.keep(5001, 1 / 3)]
    src.skip(ts.BLOCK + 1)
    it = src.blocks(3 * ts.BLOCK, 0.5)
    got.append(next(it)[1])
    it.close()
    first = got[-1].size  # a block: at most BLOCK (less if read-ahead words ran out first)
    assert 1 <= first <= ts.BLOCK
    got.append(src.keep(777, 0.9))
    assert src.words_consumed == 2 * (3 + N_CHUNKED + 5 + 5001 + ts.BLOCK + 1 + first + 777)

    ref = TorchMaskSource(-12345)
    want = [ref.keep(3, 0.5), ref.keep(N_CHUNKED, 0.2), ref.words(10), ref.keep(5001, 1 / 3)]
    ref.skip(ts.BLOCK + 1)
    want += [ref.keep(first, 0.5), ref.keep(777, 0.9)]
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        assert np.array_equal(g, w), f"piece {k} differs with readahead={readahead}"


@pytest.mark.parametrize("count", [-2, 3])
def test_words_come_in_pairs(count):
    with pytest.raises(ValueError):
        TorchMaskSource(0).words(count)


def test_keep_zero_elements():
    src = TorchMaskSource(0)
    assert src.keep(0, 0.5).shape == (0,)
    assert src.words_consumed == 0


@pytest.mark.parametrize("p", [0.0, 1.0, -0.1, 1.5])
def test_keep_rejects_p_that_draws_nothing(p):
    with pytest.raises(ValueError):
        TorchMaskSource(0).keep(10, p)


# ------------------------------------------------------------------ no words drawn
VARIANTS = ["element", "channel", "alpha", "feature-alpha", "dropout1d", "dropout2d",
            "dropout3d"]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("p,training", [(0.0, True), (1.0, True), (0.5, False), (1.0, False)])
def test_identity_and_p1_draw_no_words(variant, p, training):
    x = np.array([[[1.5, -2.0, np.inf], [np.nan, -0.0, 3.0]]], np.float32)  # (1, 2, 3)
    src = TorchMaskSource(5)
    got = torch_dropout(x, p, src, variant=variant, training=training)
    assert src.words_consumed == 0
    with np.errstate(invalid="ignore"):
        want = x if (p == 0.0 or not training) else x * np.float32(0)
    assert_same_bits(got, want, f"{variant} p={p} training={training}")
    assert np.array_equal(src.keep(50, 0.5), TorchMaskSource(5).keep(50, 0.5))


def test_empty_tensor_draws_no_words():
    src = TorchMaskSource(5)
    assert torch_dropout(np.zeros((3, 0), np.float32), 0.5, src).shape == (3, 0)
    assert src.words_consumed == 0


@pytest.mark.parametrize("variant,shape,words", [
    ("element", (3, 4, 5), 2 * 60),
    ("channel", (3, 4, 5), 2 * 12),
    ("dropout1d", (4, 5), 2 * 4),
    ("dropout2d", (3, 4, 5), 2 * 12),
    ("dropout3d", (2, 3, 4, 5), 2 * 2),
    ("alpha", (3, 4, 5), 2 * 60),
    ("feature-alpha", (3, 4, 5, 2), 2 * 12),
])
def test_words_per_call(variant, shape, words):
    src = TorchMaskSource(1)
    torch_dropout(np.ones(shape, np.float32), 0.25, src, variant=variant)
    assert src.words_consumed == words


# ------------------------------------------------------------------ arithmetic pieces
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_fused_path_equals_keep_then_values(dtype):
    """dropout_flat (blocks, threaded) == keep() then torch_dropout_values()."""
    n = 2 * ts.BLOCK + 3
    x = np.random.default_rng(1).standard_normal(n).astype(DTYPES[dtype])
    got = TorchMaskSource(8).dropout_flat(x, 0.3)
    want = torch_dropout_values(x, TorchMaskSource(8).keep(n, 0.3), 0.3)
    assert_same_bits(got, want, f"dropout_flat {dtype}")


@pytest.mark.parametrize("dtype,p,want", [
    ("float32", 0.5, np.float32(2.0)),
    ("float64", 1 / 3, np.float64(1.0) / np.float64(1 - 1 / 3)),
    ("float32", 0.1, np.float32(1.0) / np.float32(0.9)),
    ("float16", 0.99999, np.float32(np.inf)),
    ("bfloat16", 0.1, np.float32(ml_dtypes.bfloat16(np.float32(1) / np.float32(0.9)))),
])
def test_torch_scale(dtype, p, want):
    s = torch_scale(p, DTYPES[dtype])
    assert s.dtype == (np.float64 if dtype == "float64" else np.float32)
    assert s == want


def test_dropped_values_follow_x_times_zero():
    x = np.array([-1.0, 2.0, np.inf, -np.inf, np.nan, -0.0], np.float32)
    out = torch_dropout_values(x, np.zeros(6, bool), 0.5)
    assert np.signbit(out[[0, 5]]).all() and not np.signbit(out[1])
    assert np.isnan(out[2:5]).all()


def test_alpha_values_p_half_float64():
    x = np.array([1.0, -1.0, 0.0], np.float64)
    out = torch_alpha_values(x, np.array([True, False, True]), 0.5)
    a = 1.0 / math.sqrt((ts.ALPHA_PRIME**2 * 0.5 + 1) * 0.5)
    assert out[0] == 1.0 * a + ts.ALPHA_PRIME * a * 0.5
    assert out[1] == -ts.ALPHA_PRIME * a + ts.ALPHA_PRIME * a * 0.5


@pytest.mark.parametrize("variant,shape", [("dropout1d", (2, 3, 4, 5)), ("channel", (5,)),
                                           ("feature-alpha", (5,)), ("bogus", (5,))])
def test_bad_variant_or_rank(variant, shape):
    with pytest.raises(ValueError):
        torch_dropout(np.ones(shape, np.float32), 0.5, 0, variant=variant)


@pytest.mark.parametrize("dtype", [np.int32, np.complex64, np.float64])
def test_dtype_check(dtype):
    x = np.ones(4, dtype)
    if dtype is np.float64:
        assert torch_dropout(x, 0.5, 0).dtype == np.float64
    else:
        with pytest.raises(TypeError):
            torch_dropout(x, 0.5, 0)


def test_memory_order_perm():
    x = np.zeros((2, 3, 4))
    assert ts.memory_order_perm(x) is None
    assert ts.memory_order_perm(np.asfortranarray(x)) == (2, 1, 0)
    assert ts.memory_order_perm(x.transpose(1, 2, 0)) == (2, 0, 1)
    assert ts.memory_order_perm(x[:, ::2]) is None  # not dense, but in C order
    assert ts.memory_order_perm(np.asfortranarray(x)[:, ::2]) == (2, 1, 0)
    cl = np.zeros((2, 5, 6, 3)).transpose(0, 3, 1, 2)  # channels-last (N, C, H, W)
    assert ts.memory_order_perm(cl) == (0, 2, 3, 1)
    assert ts.memory_order_perm(cl[:, ::2]) == (0, 2, 3, 1)  # infer_dense_strides
    assert ts.memory_order_perm(x[:, ::-1]) is None  # torch.from_numpy refuses: C order
