"""Seeds and stream keys, decided in one place.

Every random decision of a run is keyed by ``(seed, file key, tensor name)``:
this module draws fresh seeds, checks given ones, derives ``--repeat`` seeds
and names the file part of the key.  docs/random-stream.md specifies the
derivation; ``streams/`` turns a key into keep bits.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from .errors import UsageError

STREAM_VERSION = b"tensor-dropout/v1"


def field(data: bytes) -> bytes:
    """A length-prefixed field of a key derivation: 8-byte little-endian length, then data."""
    return len(data).to_bytes(8, "little") + data


def _as_bytes(text: str) -> bytes:
    # File names may hold undecodable bytes (surrogateescape); keep them exact.
    return text.encode("utf-8", "surrogateescape")


def derive_digest(seed: int, file: str, tensor: str, purpose: str) -> bytes:
    """The 32-byte SHA-256 from which a tensor's generators are keyed."""
    h = hashlib.sha256(STREAM_VERSION)
    for part in (purpose.encode(), str(int(seed)).encode(), _as_bytes(file), _as_bytes(tensor)):
        h.update(field(part))
    return h.digest()


SEED_BITS = 53  # fresh and derived seeds stay below 2**53: exact in JSON readers (jq, JS)


def derive_repeat_seed(seed: int, copy: int) -> int:
    """Seed for copy ``copy`` of ``--repeat``: independent of seed + k, below 2**53."""
    d = hashlib.sha256(STREAM_VERSION + field(b"repeat") + field(str(int(seed)).encode())
                       + field(str(int(copy)).encode())).digest()
    return int.from_bytes(d[:8], "little") >> (64 - SEED_BITS)


def new_seed() -> int:
    """A fresh seed for runs without one (reported in the stats so they can be repeated).

    Below 2**53, so that jq and JavaScript read it back exactly.
    """
    return int.from_bytes(os.urandom(8), "little") >> (64 - SEED_BITS)  # the OS's CSPRNG


MAX_SEED_DIGITS = 4300  # Python's own limit for int <-> decimal text (the key holds the text)


def check_seed(seed: object) -> int:
    """A seed as a Python int; anything but an integer is a usage error."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise UsageError(f"seed must be an integer, got {seed!r}")
    seed = int(seed)
    if seed.bit_length() > MAX_SEED_DIGITS * 3.32:  # cheap pre-check before the exact one
        if abs(seed) >= 10**MAX_SEED_DIGITS:
            raise UsageError(f"seed has more than {MAX_SEED_DIGITS} digits; give a shorter one")
    return seed


def parse_seed(text: str) -> int:
    """A seed from text (the command line): a decimal integer of at most 4300 digits.

    >>> parse_seed("-0042")
    -42
    """
    t = text.strip()
    sign, digits = (t[0], t[1:]) if t[:1] in ("+", "-") else ("", t)
    if not (digits.isascii() and digits.isdigit()):
        raise UsageError(f"seed must be an integer, got {text!r}")
    digits = digits.lstrip("0") or "0"
    if len(digits) > MAX_SEED_DIGITS:
        raise UsageError(f"seed has {len(digits)} digits; at most {MAX_SEED_DIGITS} are "
                         "accepted")
    return int(sign + digits)


def resolve_seed(seed: object, *, needed: bool) -> int | None:
    """The run's seed: the one given (checked), a fresh one when a mask will be drawn, or None.

    ``needed`` is False when nothing is drawn (eval mode, p = 0, a replayed mask).
    """
    if seed is not None:
        return check_seed(seed)
    return new_seed() if needed else None


def file_key(path: str) -> str:
    """The file part of every stream key: the input's base name, "-" for stdin."""
    return "-" if path == "-" else os.path.basename(path)
