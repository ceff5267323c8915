"""The default random stream: counter-based, platform independent, random access.

Every decision for unit ``i`` of a tensor depends only on ``(seed, file, tensor, i)``,
so any chunk, thread or Dask block computes its own part.  docs/random-stream.md
specifies the stream well enough to reimplement it; ``tests/test_streams.py``
checks this module against a pure-Python transcription of that page.

In short, for a tensor keyed by ``(seed, file, tensor)``:

* ``D = SHA-256(b"tensor-dropout/v1" + field(purpose) + field(str(seed)) +
  field(file) + field(tensor))`` where ``field(b) = len(b).to_bytes(8, "little") + b``.
* The *keep* purpose gives a Philox4x64-10 key ``D[0:16]`` (two little-endian
  64-bit words) and a SplitMix64 seed ``D[16:24]``.
* Word ``w`` of the stream is lane ``w % 4`` of Philox4x64-10 at counter
  ``w // 4 + 1``; byte ``i`` of the stream is byte ``i % 8`` (little-endian)
  of word ``i // 8``.  Byte ``i`` is unit ``i``'s coarse draw ``b_i``.
* ``t = round_half_even(p * 2**32)``, ``t_hi = t >> 24``, ``t_lo = t & 0xFFFFFF``.
  Unit ``i`` is dropped iff ``b_i < t_hi``, or ``b_i == t_hi`` and
  ``splitmix64_output(seed=D[16:24], index=i) >> 40 < t_lo``.
  So P(drop) = t / 2**32 exactly.
"""

from __future__ import annotations

import functools
import threading
from fractions import Fraction

import numpy as np

from ..seeds import derive_digest
from .philox import WordCursor, splitmix64, stream_bytes

NAME = "default"
DRAW_BLOCK = 1 << 18  # units drawn per generator call: warm, reused allocations
_M32 = 1 << 32


@functools.lru_cache(maxsize=256)
def threshold(p: float) -> int:
    """Drop threshold t = round_half_even(p * 2**32); P(drop) = t / 2**32.

    >>> threshold(0.5), threshold(1.0), threshold(0.0)
    (2147483648, 4294967296, 0)
    """
    return round(Fraction(p) * (1 << 32))


def effective_p(p: float) -> float:
    """The drop probability the stream really realises (within 2**-33 of p)."""
    return threshold(p) / float(1 << 32)


def keep_from_bytes(b: np.ndarray, start: int, t: int, tie_seed: int,
                    out: np.ndarray, eq: np.ndarray | None = None) -> np.ndarray:
    """Keep decisions (bool, into ``out``) of units ``start ..`` from their stream bytes ``b``.

    The stream's one rule: kept iff ``b > t_hi``, or ``b == t_hi`` and the tie's
    SplitMix64 draw ``>> 40`` is at least ``t_lo``.  ``eq`` is optional scratch
    space of at least ``b.size`` bools.
    """
    if t <= 0:
        out[...] = True
        return out
    if t >= _M32:
        out[...] = False
        return out
    t_hi, t_lo = t >> 24, t & 0xFFFFFF
    if not t_lo:  # a tie draws >= 0: always kept
        return np.greater_equal(b, t_hi, out=out)
    np.greater(b, t_hi, out=out)
    ties = np.flatnonzero(np.equal(b, t_hi, out=None if eq is None else eq[:b.size]))
    if ties.size:
        r = splitmix64(tie_seed, ties + start) >> np.uint64(40)
        out[ties[r >= np.uint64(t_lo)]] = True
    return out


_tls = threading.local()


def _eq_scratch() -> np.ndarray:
    eq = getattr(_tls, "eq", None)
    if eq is None:
        eq = _tls.eq = np.empty(DRAW_BLOCK, dtype=bool)
    return eq


class KeepStream:
    """The default stream for one tensor: keep decisions by unit index, any range.

    >>> KeepStream(seed=7, file="x.npy", tensor="", p=0.5).keep(0, 8).dtype
    dtype('bool')
    """

    serial = False

    def __init__(self, seed: int, file: str, tensor: str, p: float) -> None:
        d = derive_digest(seed, file, tensor, "keep")
        self.key = int.from_bytes(d[0:16], "little")
        self.tie_seed = int.from_bytes(d[16:24], "little")
        self.t = threshold(p)

    def keep(self, u0: int, u1: int, out: np.ndarray | None = None) -> np.ndarray:
        """Keep decisions of units ``[u0, u1)`` (into ``out`` when given).

        Drawn block by block from one cursor: small, warm allocations.
        """
        keep = np.empty(u1 - u0, dtype=bool) if out is None else out
        if not 0 < self.t < _M32:
            keep[...] = self.t <= 0
            return keep
        eq = _eq_scratch()
        cursor = WordCursor(self.key, u0 // 8)
        s = u0
        while s < u1:
            e = min(u1, (s // DRAW_BLOCK + 1) * DRAW_BLOCK)
            bb = stream_bytes(cursor.take((e + 7) // 8 - s // 8), s, e)
            keep_from_bytes(bb, s, self.t, self.tie_seed, keep[s - u0:e - u0], eq)
            s = e
        return keep


def source(params, seed: int, file: str, tensor: str, units: int, state=None) -> KeepStream:
    """The keep bits of one tensor's mask."""
    return KeepStream(seed, file, tensor, params.p)
