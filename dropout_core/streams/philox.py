"""The counter-based generator under the default and exact-count streams.

Word ``w`` of a key's stream is lane ``w % 4`` of Philox4x64-10 at counter
``w // 4 + 1`` (numpy.random.Philox); byte ``i`` is byte ``i % 8`` of word
``i // 8``, little-endian.  SplitMix64 breaks the default stream's rare ties.
docs/random-stream.md specifies both.
"""

from __future__ import annotations

import threading

import numpy as np

GOLDEN = 0x9E3779B97F4A7C15
_LITTLE = np.little_endian


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


_M64 = (1 << 64) - 1
_tls = threading.local()


def _bitgen(key: int, counter: int) -> np.random.Philox:
    """A Philox bit generator at (key, counter), as ``Philox(key=key, counter=counter)``.

    One generator per thread is re-keyed by setting its state: the constructor
    also gathers OS entropy for a seed it does not use, which costs more than
    drawing a small tensor's words.
    """
    bg = getattr(_tls, "bitgen", None)
    if bg is None:
        bg = _tls.bitgen = np.random.Philox(key=0)
    bg.state = {
        "bit_generator": "Philox",
        "state": {"counter": np.array([(counter >> s) & _M64 for s in (0, 64, 128, 192)],
                                      dtype=np.uint64),
                  "key": np.array([key & _M64, (key >> 64) & _M64], dtype=np.uint64)},
        "buffer": np.zeros(4, dtype=np.uint64), "buffer_pos": 4, "has_uint32": 0,
        "uinteger": 0,
    }
    return bg


class WordCursor:
    """Words of one key's stream, read in order from word ``first`` on.

    ``take(a)`` then ``take(b)`` equals ``philox_words(key, first, a + b)``.  One
    generator is keyed for many small draws: small arrays come back from the
    allocator warm, where one big draw would fault in fresh pages every time.
    A cursor uses its thread's generator: one cursor per thread at a time.
    """

    __slots__ = ("take",)

    def __init__(self, key: int, first: int) -> None:
        bitgen = _bitgen(key, first // 4)
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


def philox_words(key: int, first: int, count: int) -> np.ndarray:
    """Words ``[first, first + count)`` of the Philox4x64-10 stream with ``key``."""
    return WordCursor(key, first).take(count)


def philox_bytes(key: int, start: int, stop: int) -> np.ndarray:
    """Bytes ``[start, stop)`` of the stream: byte i is byte i % 8 of word i // 8."""
    w0 = start // 8
    return stream_bytes(philox_words(key, w0, (stop + 7) // 8 - w0), start, stop)


def stream_bytes(words: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Bytes ``[start, stop)`` of the stream, from the words ``start // 8`` onwards."""
    off = start % 8
    return words.view(np.uint8)[off:off + (stop - start)]
