"""The exact-count stream: exactly round(p * units) units dropped, chosen uniformly.

Unit i's key is word i of the Philox stream keyed by the "exact" purpose; the
dropped units are the k smallest (key, index) pairs.  The threshold is found in
two streaming passes, so the units need not fit in memory.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from ..seeds import derive_digest
from . import default
from .philox import philox_words

NAME = "exact"
_M64 = (1 << 64) - 1
effective_p = default.effective_p  # the stats' effective_p is the per-unit rate of the default


def exact_count(p: float, units: int) -> int:
    """round_half_even(p * units), computed exactly.

    >>> exact_count(0.5, 5), exact_count(0.3, 10)
    (2, 3)
    """
    return round(Fraction(p) * units)


def stream_key(seed: int, file: str, tensor: str) -> int:
    """The Philox key of a tensor's unit keys."""
    return int.from_bytes(derive_digest(seed, file, tensor, "exact")[0:16], "little")


# The threshold's two passes, each over any range of units: ranges can run anywhere, and
# their results add up (pass 1) or concatenate (pass 2) to those of the whole tensor.

def histogram(key: int, start: int, stop: int, block: int = 1 << 20) -> np.ndarray:
    """Pass 1: how many keys of units [start, stop) fall in each of the 2**16 top-bit buckets."""
    hist = np.zeros(1 << 16, dtype=np.int64)
    for s in range(start, stop, block):
        e = min(stop, s + block)
        hist += np.bincount((philox_words(key, s, e - s) >> np.uint64(48)).astype(np.intp),
                            minlength=1 << 16)
    return hist


def find_bucket(hist: np.ndarray, k: int) -> tuple[int, int]:
    """The bucket holding the k-th smallest key, and how many keys lie in earlier buckets."""
    cum = np.cumsum(hist)
    bucket = int(np.searchsorted(cum, k))  # first bucket where cum >= k
    return bucket, int(cum[bucket - 1]) if bucket else 0


def candidates(key: int, bucket: int, start: int, stop: int,
               block: int = 1 << 20) -> tuple[np.ndarray, np.ndarray]:
    """Pass 2: the keys of units [start, stop) in ``bucket``, and their unit indices."""
    keys, idx = [np.zeros(0, np.uint64)], [np.zeros(0, np.int64)]
    for s in range(start, stop, block):
        kk = philox_words(key, s, min(stop, s + block) - s)
        sel = np.flatnonzero((kk >> np.uint64(48)) == np.uint64(bucket))
        keys.append(kk[sel])
        idx.append(sel + s)
    return np.concatenate(keys), np.concatenate(idx)


def edge_limit(k: int, n: int) -> tuple[bool, tuple[int, int] | None]:
    """(True, limit) when dropping k of n units needs no pass (none or all), else (False, None)."""
    if k == 0:
        return True, None
    if k == n:
        return True, (_M64, n)
    return False, None


def limit_of(keys: np.ndarray, idx: np.ndarray, rank: int) -> tuple[int, int]:
    """The (key, index) pair of rank ``rank`` (from 1) among one bucket's candidates."""
    j = np.lexsort((idx, keys))[rank - 1]
    return (int(keys[j]), int(idx[j]))


class ExactCountStream:
    """Keep decisions with exactly ``exact_count(p, units)`` units dropped.

    The threshold is found when the stream is made; the object is small and
    picklable afterwards (what every Dask block of the tensor receives).
    """

    serial = False

    def __init__(self, seed: int, file: str, tensor: str, units: int, p: float,
                 block: int = 1 << 20) -> None:
        self.key = stream_key(seed, file, tensor)
        self.units = units
        self.count = exact_count(p, units)
        self._limit = self._find_limit(block)

    def _keys(self, start: int, stop: int) -> np.ndarray:
        return philox_words(self.key, start, stop - start)

    def _find_limit(self, block: int) -> tuple[int, int] | None:
        k, n = self.count, self.units
        settled, limit = edge_limit(k, n)
        if settled:
            return limit
        bucket, before = find_bucket(histogram(self.key, 0, n, block), k)
        keys, idx = candidates(self.key, bucket, 0, n, block)
        return limit_of(keys, idx, k - before)

    @classmethod
    def with_limit(cls, seed: int, file: str, tensor: str, units: int, p: float,
                   limit: tuple[int, int] | None) -> ExactCountStream:
        """The stream with its threshold already found (by ``histogram`` and ``candidates``
        run elsewhere, e.g. one Dask task per range of units)."""
        self = object.__new__(cls)
        self.key = stream_key(seed, file, tensor)
        self.units, self.count, self._limit = units, exact_count(p, units), limit
        return self

    def keep(self, u0: int, u1: int, out: np.ndarray | None = None) -> np.ndarray:
        """Keep decisions of units ``[u0, u1)``."""
        if self._limit is None:
            keep = np.ones(u1 - u0, dtype=bool)
        else:
            kmax, imax = self._limit
            keys = self._keys(u0, u1)
            idx = np.arange(u0, u1)
            keep = ~((keys < np.uint64(kmax)) | ((keys == np.uint64(kmax)) & (idx <= imax)))
        if out is None:
            return keep
        out[...] = keep
        return out


def source(params, seed: int, file: str, tensor: str, units: int,
           state=None) -> ExactCountStream:
    return ExactCountStream(seed, file, tensor, units, params.p)
