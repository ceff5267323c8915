"""A pure-Python transcription of docs/random-stream.md, independent of NumPy's generators.

Slow (a few thousand elements a second); used by scripts/make_golden.py to
produce expected masks and by tests/test_streams.py to check the fast path.
If this file and docs/random-stream.md disagree, one of them is wrong.
"""

from __future__ import annotations

import hashlib
from fractions import Fraction

M64 = (1 << 64) - 1
PHILOX_M = (0xD2E7470EE14C6C93, 0xCA5A826395121157)
PHILOX_W = (0x9E3779B97F4A7C15, 0xBB67AE8584CAA73B)


def field(b: bytes) -> bytes:
    return len(b).to_bytes(8, "little") + b


def digest(seed: int, file: str, tensor: str, purpose: str) -> bytes:
    data = b"tensor-dropout/v1" + field(purpose.encode()) + field(str(seed).encode()) \
        + field(file.encode("utf-8", "surrogateescape")) \
        + field(tensor.encode("utf-8", "surrogateescape"))
    return hashlib.sha256(data).digest()


def philox4x64_10(counter: int, key: int) -> list[int]:
    """Philox4x64 with 10 rounds: 256-bit counter, 128-bit key -> four 64-bit words."""
    c = [(counter >> (64 * i)) & M64 for i in range(4)]
    k0, k1 = key & M64, key >> 64
    for _ in range(10):
        p0, p1 = PHILOX_M[0] * c[0], PHILOX_M[1] * c[2]
        c = [(p1 >> 64) ^ c[1] ^ k0, p1 & M64, (p0 >> 64) ^ c[3] ^ k1, p0 & M64]
        k0, k1 = (k0 + PHILOX_W[0]) & M64, (k1 + PHILOX_W[1]) & M64
    return c


def word(key: int, w: int) -> int:
    """Word w of the stream: lane w % 4 of the block at counter w // 4 + 1."""
    return philox4x64_10(w // 4 + 1, key)[w % 4]


def splitmix64(seed: int, i: int) -> int:
    z = (seed + (i + 1) * 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def threshold(p: float) -> int:
    return round(Fraction(p) * 2**32)


def dropped(seed: int, file: str, tensor: str, p: float, units: int) -> list[bool]:
    """The default stream's drop decision for units 0 .. units-1."""
    d = digest(seed, file, tensor, "keep")
    key = int.from_bytes(d[0:16], "little")
    tie = int.from_bytes(d[16:24], "little")
    t = threshold(p)
    t_hi, t_lo = t >> 24, t & 0xFFFFFF
    out = []
    cache: dict[int, int] = {}
    for i in range(units):
        w = i // 8
        if w not in cache:
            cache = {w: word(key, w)}
        b = (cache[w] >> (8 * (i % 8))) & 0xFF
        if b < t_hi:
            out.append(True)
        elif b == t_hi:
            out.append((splitmix64(tie, i) >> 40) < t_lo)
        else:
            out.append(False)
    return out


def exact_dropped(seed: int, file: str, tensor: str, p: float, units: int) -> list[bool]:
    """--exact-count: the round_half_even(p * units) units with the smallest (key, index)."""
    d = digest(seed, file, tensor, "exact")
    key = int.from_bytes(d[0:16], "little")
    k = round(Fraction(p) * units)
    order = sorted(range(units), key=lambda i: (word(key, i), i))
    chosen = set(order[:k])
    return [i in chosen for i in range(units)]


def repeat_seed(seed: int, copy: int) -> int:
    data = b"tensor-dropout/v1" + field(b"repeat") + field(str(seed).encode()) \
        + field(str(copy).encode())
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little") >> 11  # below 2**53
