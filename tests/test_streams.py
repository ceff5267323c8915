"""The default stream: the fast path equals the spec's transcription, and it is honest."""

from __future__ import annotations

import numpy as np
import pytest
import reference_stream as ref
from conftest import binomial_bounds

from dropout_core.seeds import derive_repeat_seed
from dropout_core.streams.default import KeepStream, effective_p, threshold
from dropout_core.streams.exact import ExactCountStream, exact_count
from dropout_core.streams.philox import philox_words


@pytest.mark.parametrize("key", [0, 1, 2**64 + 3, 2**128 - 1])
@pytest.mark.parametrize("first", [0, 1, 3, 4, 5, 1001])
def test_philox_words_match_the_spec(key, first):
    got = philox_words(key, first, 9)
    assert got.tolist() == [ref.word(key, w) for w in range(first, first + 9)]


@pytest.mark.parametrize("p", [0.1, 0.5, 1 / 3, 0.9, 2**-8, 0.5 + 2**-30, 1 - 2**-33])
@pytest.mark.parametrize("seed,file,tensor", [(7, "x.npy", ""), (-5, "-", "w\x00/../x"),
                                              (2**70, "é.safetensors", "layer.0")])
def test_fast_stream_equals_reference_transcription(p, seed, file, tensor):
    want = np.array(ref.dropped(seed, file, tensor, p, 2000))
    got = ~KeepStream(seed, file, tensor, p).keep(0, 2000)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("start,stop", [(0, 1), (3, 4), (7, 9), (5, 1029), (1000, 1999)])
def test_any_range_is_the_same_slice_of_the_stream(start, stop):
    s = KeepStream(3, "a.npy", "", 0.3)
    np.testing.assert_array_equal(s.keep(start, stop), s.keep(0, 2000)[start:stop])


@pytest.mark.parametrize("p", [0.0, 1e-12, 0.1, 1 / 3, 0.5, 0.77, 1 - 1e-12, 1.0])
def test_effective_p_is_within_2_to_minus_32(p):
    assert abs(effective_p(p) - p) <= 2.0**-33
    assert threshold(p) == round(p * 2**32)


@pytest.mark.parametrize("p", [0.01, 0.1, 0.3, 0.5, 0.9, 0.999])
@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_drop_count_within_binomial_bounds(p, seed):
    n = 1 << 20
    k = int((~KeepStream(seed, "x.npy", "", p).keep(0, n)).sum())
    lo, hi = binomial_bounds(n, effective_p(p))
    assert lo <= k <= hi


def test_tie_refinement_realises_fractional_thresholds():
    # p just above k/256 puts t_lo to work: the count must follow p, not the 8-bit grid
    n, p = 1 << 22, 37 / 256 + 0.6 / 256
    k = int((~KeepStream(9, "t.npy", "", p).keep(0, n)).sum())
    lo, hi = binomial_bounds(n, p)
    assert lo <= k <= hi
    assert not (binomial_bounds(n, 37 / 256)[0] <= k <= binomial_bounds(n, 37 / 256)[1])


@pytest.mark.parametrize("other", [dict(seed=8), dict(file="y.npy"), dict(tensor="b")])
def test_any_key_change_gives_an_independent_mask(other):
    base = dict(seed=7, file="x.npy", tensor="a")
    n, p = 1 << 18, 0.5
    a = ~KeepStream(**base, p=p).keep(0, n)
    b = ~KeepStream(**{**base, **other}, p=p).keep(0, n)
    lo, hi = binomial_bounds(n, 0.5)  # P(agree) = p^2 + q^2 = 0.5 for independent masks
    assert lo <= int((a == b).sum()) <= hi


def test_bytes_are_uniform():
    from dropout_core.streams.philox import philox_bytes

    b = philox_bytes(12345, 0, 256 * 4096)
    counts = np.bincount(b, minlength=256)
    lo, hi = binomial_bounds(b.size, 1 / 256)
    assert counts.min() >= lo and counts.max() <= hi


@pytest.mark.parametrize("units,p", [(1, 0.5), (10, 0.25), (7, 0.5), (1000, 1 / 3), (5, 1.0),
                                     (5, 0.0), (300_001, 0.1)])
def test_exact_count_drops_exactly_round_p_n(units, p):
    s = ExactCountStream(4, "x.npy", "", units, p, block=4096)
    d = ~np.concatenate([s.keep(a, min(units, a + 777)) for a in range(0, units, 777)])
    assert int(d.sum()) == exact_count(p, units) == round(p * units)


def test_exact_count_matches_reference():
    want = ref.exact_dropped(3, "a.npy", "t", 0.3, 500)
    np.testing.assert_array_equal(~ExactCountStream(3, "a.npy", "t", 500, 0.3).keep(0, 500), want)


def test_exact_count_choice_is_uniform_over_units():
    units, k, seeds = 20, 5, 4000
    hits = np.zeros(units, int)
    for seed in range(seeds):
        hits += ~ExactCountStream(seed, "u", "", units, k / units).keep(0, units)
    lo, hi = binomial_bounds(seeds, k / units)
    assert hits.min() >= lo and hits.max() <= hi


def test_repeat_seeds_follow_the_spec_and_differ():
    seeds = [derive_repeat_seed(7, r) for r in range(5)]
    assert seeds == [ref.repeat_seed(7, r) for r in range(5)]
    assert len(set(seeds)) == 5 and all(0 <= s < 2**53 for s in seeds)


def test_fresh_seeds_are_exact_in_json_readers():
    from dropout_core.seeds import new_seed

    # a double holds every integer below 2**53: jq and JavaScript read these back exactly
    assert all(0 <= s < 2**53 and float(s) == s for s in (new_seed() for _ in range(1000)))
