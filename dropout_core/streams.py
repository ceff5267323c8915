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

import hashlib
from fractions import Fraction

import numpy as np

STREAM_VERSION = b"tensor-dropout/v1"
GOLDEN = 0x9E3779B97F4A7C15
_M64 = (1 << 64) - 1


def _field(data: bytes) -> bytes:
    return len(data).to_bytes(8, "little") + data


def _as_bytes(text: str) -> bytes:
    # File names may hold undecodable bytes (surrogateescape); keep them exact.
    return text.encode("utf-8", "surrogateescape")


def derive_digest(seed: int, file: str, tensor: str, purpose: str) -> bytes:
    """The 32-byte SHA-256 from which a tensor's generators are keyed."""
    h = hashlib.sha256(STREAM_VERSION)
    for part in (purpose.encode(), str(int(seed)).encode(), _as_bytes(file), _as_bytes(tensor)):
        h.update(_field(part))
    return h.digest()


def threshold(p: float) -> int:
    """Drop threshold t = round_half_even(p * 2**32); P(drop) = t / 2**32.

    >>> threshold(0.5), threshold(1.0), threshold(0.0)
    (2147483648, 4294967296, 0)
    """
    return round(Fraction(p) * (1 << 32))


def effective_p(p: float) -> float:
    """The drop probability the stream really realises (within 2**-33 of p)."""
    return threshold(p) / float(1 << 32)


def splitmix64(seed: int, index: np.ndarray) -> np.ndarray:
    """Output ``index`` (0-based) of the SplitMix64 sequence started at ``seed``."""
    with np.errstate(over="ignore"):
        z = (index.astype(np.uint64) + np.uint64(1)) * np.uint64(GOLDEN) + np.uint64(seed)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _probe_fast_path() -> bool:
    # Generator.integers over the full uint64 range returns the raw words and is
    # faster than random_raw; use it only where it provably yields the same words.
    for key, counter in ((1, 0), (2**127 + 5, 2**64 + 3)):
        raw = np.random.Philox(key=key, counter=counter).random_raw(9)
        gen = np.random.Generator(np.random.Philox(key=key, counter=counter))
        if not np.array_equal(raw, gen.integers(0, 2**64, size=9, dtype=np.uint64)):
            return False
    return True


_FAST_WORDS = _probe_fast_path()


def philox_words(key: int, first: int, count: int) -> np.ndarray:
    """Words ``[first, first + count)`` of the Philox4x64-10 stream with ``key``.

    Word ``w`` is lane ``w % 4`` of the block at counter ``w // 4 + 1``.
    """
    skip = first % 4
    bitgen = np.random.Philox(key=key, counter=first // 4)
    n = skip + count
    if _FAST_WORDS:
        words = np.random.Generator(bitgen).integers(0, 2**64, size=n, dtype=np.uint64)
    else:
        words = bitgen.random_raw(n)
    words = words[skip:]
    if words.dtype.byteorder == ">" or (words.dtype.byteorder == "=" and not _LITTLE):
        words = words.byteswap()
    return words


_LITTLE = np.little_endian


def philox_bytes(key: int, start: int, stop: int) -> np.ndarray:
    """Bytes ``[start, stop)`` of the stream: byte i is byte i % 8 of word i // 8."""
    w0 = start // 8
    w1 = (stop + 7) // 8
    data = philox_words(key, w0, w1 - w0).view(np.uint8)
    off = start - 8 * w0
    return data[off : off + (stop - start)]


class WordCursor:
    """Words of one key's stream, read in order from word ``first`` on.

    ``take(a)`` then ``take(b)`` equals ``philox_words(key, first, a + b)``.  One
    generator is keyed for many small draws: small arrays come back from the
    allocator warm, where one big draw would fault in fresh pages every time.
    """

    __slots__ = ("take",)

    def __init__(self, key: int, first: int) -> None:
        bitgen = np.random.Philox(key=key, counter=first // 4)
        if _FAST_WORDS:
            integers = np.random.Generator(bitgen).integers

            def take(n: int) -> np.ndarray:
                return integers(0, 2**64, size=n, dtype=np.uint64)
        else:
            take = bitgen.random_raw
        if first % 4:
            take(first % 4)
        if not _LITTLE:
            raw = take

            def take(n: int) -> np.ndarray:
                return raw(n).byteswap()
        self.take = take


def stream_bytes(words: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Bytes ``[start, stop)`` of the stream, from the words ``start // 8`` onwards."""
    off = start % 8
    return words.view(np.uint8)[off:off + (stop - start)]


def keep_from_bytes(b: np.ndarray, start: int, t: int, tie_seed: int,
                    out: np.ndarray) -> np.ndarray:
    """Keep decisions (bool, into ``out``) of units ``start ..`` from their stream bytes ``b``.

    The complement of ``KeepStream.drop``: kept iff ``b > t_hi``, or ``b == t_hi``
    and the tie's SplitMix64 draw ``>> 40`` is at least ``t_lo``.
    """
    if t <= 0:
        out[...] = True
        return out
    if t >= 1 << 32:
        out[...] = False
        return out
    t_hi, t_lo = t >> 24, t & 0xFFFFFF
    if not t_lo:  # a tie draws >= 0: always kept
        return np.greater_equal(b, t_hi, out=out)
    np.greater(b, t_hi, out=out)
    ties = np.flatnonzero(b == t_hi)
    if ties.size:
        r = splitmix64(tie_seed, ties + start) >> np.uint64(40)
        out[ties[r >= np.uint64(t_lo)]] = True
    return out


class KeepStream:
    """The default stream for one tensor: drop decisions by unit index.

    >>> s = KeepStream(seed=7, file="x.npy", tensor="")
    >>> s.drop(0, 8, 0.5).dtype
    dtype('bool')
    """

    def __init__(self, seed: int, file: str, tensor: str) -> None:
        d = derive_digest(seed, file, tensor, "keep")
        self.key = int.from_bytes(d[0:16], "little")
        self.tie_seed = int.from_bytes(d[16:24], "little")

    def drop(self, start: int, stop: int, p: float) -> np.ndarray:
        """Boolean drop decisions for units ``[start, stop)``."""
        t = threshold(p)
        n = stop - start
        if t <= 0:
            return np.zeros(n, dtype=bool)
        if t >= 1 << 32:
            return np.ones(n, dtype=bool)
        keep = keep_from_bytes(philox_bytes(self.key, start, stop), start, t, self.tie_seed,
                               np.empty(n, dtype=bool))
        return np.logical_not(keep, out=keep)


class ExactCountStream:
    """Exactly k of n units dropped, chosen uniformly: the k smallest (key, index).

    Unit i's key is word i of the Philox stream keyed by the "exact" purpose.
    The threshold is found in two streaming passes, so units need not fit in memory.
    """

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

    def drop(self, start: int, stop: int, p: float | None = None) -> np.ndarray:
        if self._limit is None:
            return np.zeros(stop - start, dtype=bool)
        kmax, imax = self._limit
        keys = self._keys(start, stop)
        idx = np.arange(start, stop)
        return (keys < np.uint64(kmax)) | ((keys == np.uint64(kmax)) & (idx <= imax))


def exact_count(p: float, units: int) -> int:
    """round_half_even(p * units), computed exactly.

    >>> exact_count(0.5, 5), exact_count(0.3, 10)
    (2, 3)
    """
    return round(Fraction(p) * units)


def derive_repeat_seed(seed: int, copy: int) -> int:
    """Seed for copy ``copy`` of ``--repeat``: independent of seed + k, below 2**63."""
    d = hashlib.sha256(STREAM_VERSION + _field(b"repeat") + _field(str(int(seed)).encode())
                       + _field(str(int(copy)).encode())).digest()
    return int.from_bytes(d[:8], "little") >> 1
