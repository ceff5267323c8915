"""Seeds and stream keys, decided in one place.

Every random decision of a run is keyed by ``(seed, file key, tensor name)``:
this module draws fresh seeds, checks given ones, derives ``--repeat`` seeds
and names the file part of the key.  docs/random-stream.md specifies the
derivation; ``streams/`` turns a key into keep bits.
"""

from __future__ import annotations

import hashlib
import os
import secrets

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


def derive_repeat_seed(seed: int, copy: int) -> int:
    """Seed for copy ``copy`` of ``--repeat``: independent of seed + k, below 2**63."""
    d = hashlib.sha256(STREAM_VERSION + field(b"repeat") + field(str(int(seed)).encode())
                       + field(str(int(copy)).encode())).digest()
    return int.from_bytes(d[:8], "little") >> 1


def new_seed() -> int:
    """A fresh seed for runs without one (reported in the stats so they can be repeated)."""
    return secrets.randbits(63)


def check_seed(seed: object) -> int:
    """A seed as a Python int; anything but an integer is a usage error."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise UsageError(f"seed must be an integer, got {seed!r}")
    return int(seed)


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
