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


class ExactCountStream:
    """Keep decisions with exactly ``exact_count(p, units)`` units dropped.

    The threshold is found when the stream is made; the object is small and
    picklable afterwards (what every Dask block of the tensor receives).
    """

    serial = False

    def __init__(self, seed: int, file: str, tensor: str, units: int, p: float,
                 block: int = 1 << 20) -> None:
        d = derive_digest(seed, file, tensor, "exact")
        self.key = int.from_bytes(d[0:16], "little")
        self.units = units
        self.count = exact_count(p, units)
        self._limit = self._find_limit(block)

    def _keys(self, start: int, stop: int) -> np.ndarray:
        return philox_words(self.key, start, stop - start)

    def _find_limit(self, block: int) -> tuple[int, int] | None:
        k, n = self.count, self.units
        if k == 0:
            return None
        if k == n:
            return (_M64, n)
        hist = np.zeros(1 << 16, dtype=np.int64)
        for s in range(0, n, block):
            hist += np.bincount((self._keys(s, min(n, s + block)) >> np.uint64(48)).astype(np.intp),
                                minlength=1 << 16)
        cum = np.cumsum(hist)
        bucket = int(np.searchsorted(cum, k))  # first bucket where cum >= k
        before = int(cum[bucket - 1]) if bucket else 0
        keys, idx = [], []
        for s in range(0, n, block):
            kk = self._keys(s, min(n, s + block))
            sel = np.flatnonzero((kk >> np.uint64(48)) == np.uint64(bucket))
            keys.append(kk[sel])
            idx.append(sel + s)
        keys_a, idx_a = np.concatenate(keys), np.concatenate(idx)
        order = np.lexsort((idx_a, keys_a))
        j = order[k - before - 1]
        return (int(keys_a[j]), int(idx_a[j]))

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
