"""Mask statistics, accumulated chunk by chunk: counts, overflow and a digest of the mask.

Gathered beside the kernel, from the same keep bits, in unit order.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np


class MaskDigest:
    """SHA-256 of the keep mask packed 8 units to a byte, little bit order, in C order.

    Independent of how the mask was split into chunks.

    >>> d = MaskDigest(); d.update(np.array([False, True, False])); d.hexdigest()[:15]
    'sha256:2f9fdc92'
    """

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self._carry = np.zeros(0, dtype=bool)

    def update(self, dropped: np.ndarray) -> None:
        """The next units' drop decisions (bool, any shape, in C order)."""
        self.update_keep(~np.asarray(dropped, dtype=bool).reshape(-1))

    def update_keep(self, keep: np.ndarray) -> None:
        """The next units' keep bits (bool, flat), as the fast path holds them."""
        if self._carry.size:
            keep = np.concatenate([self._carry, keep])
        whole = keep.size - keep.size % 8
        self._h.update(np.packbits(keep[:whole], bitorder="little").tobytes())
        self._carry = keep[whole:].copy()

    def update_packed(self, packed) -> None:
        """Keep bits already packed (``np.packbits(keep, bitorder="little")``), at a multiple
        of 8 units; only the last call may end in a zero-padded byte."""
        if self._carry.size:
            raise ValueError("packed bits must start at a multiple of 8 units")
        self._h.update(memoryview(np.ascontiguousarray(packed, dtype=np.uint8)))

    def hexdigest(self) -> str:
        h = self._h.copy()
        if self._carry.size:
            h.update(np.packbits(self._carry, bitorder="little").tobytes())
        return "sha256:" + h.hexdigest()


class TensorStats:
    """Counts for one tensor, in units (mask entries) and in elements."""

    def __init__(self, name: str, dtype: str, shape: tuple[int, ...], units_shape) -> None:
        self.name, self.dtype, self.shape = name, dtype, tuple(shape)
        self.units_shape = None if units_shape is None else tuple(units_shape)
        self.numel = math.prod(self.shape)
        self.units = math.prod(self.units_shape) if self.units_shape else (
            0 if units_shape is None else 1)
        self.dropped_units = 0
        self.overflow = 0
        self.digest: MaskDigest | None = MaskDigest() if units_shape is not None else None
        self.extra: dict = {}
        self.status = "processed"

    def add_keep(self, keep: np.ndarray) -> None:
        """The next units' keep bits (bool, flat, in unit order)."""
        self.dropped_units += keep.size - int(np.count_nonzero(keep))
        self.digest.update_keep(keep)

    def as_dict(self) -> dict:
        per_unit = self.numel // self.units if self.units else 0
        dropped = self.dropped_units * per_unit
        d = {
            "name": self.name,
            "status": self.status,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "numel": self.numel,
            "mask_shape": None if self.units_shape is None else list(self.units_shape),
            "units": self.units,
            "kept_units": self.units - self.dropped_units,
            "dropped_units": self.dropped_units,
            "kept": self.numel - dropped,
            "dropped": dropped,
            "drop_fraction": dropped / self.numel if self.numel else 0.0,
            "overflow": self.overflow,
            "mask_digest": self.digest.hexdigest() if self.digest else None,
        }
        d.update(self.extra)
        return d


def totals(tensors: list[dict]) -> dict:
    """Sums over tensor dicts (processed ones only count in kept/dropped)."""
    done = [t for t in tensors if t["status"] == "processed"]
    numel = sum(t["numel"] for t in done)
    dropped = sum(t["dropped"] for t in done)
    return {
        "tensors": len(tensors),
        "processed": len(done),
        "skipped": len(tensors) - len(done),
        "numel": numel,
        "kept": numel - dropped,
        "dropped": dropped,
        "drop_fraction": dropped / numel if numel else 0.0,
        "overflow": sum(t["overflow"] for t in done),
    }


def run_header(params, seed: int | None) -> dict:
    """The run-level part of the stats document."""
    from . import __version__

    return {
        "tool": "tensor-dropout",
        "version": __version__,
        "p": params.p,
        "effective_p": params.effective_p(),
        "seed": seed,
        "mode": params.mode,
        "variant": params.variant,
        "rng": params.rng,
        "scale": params.scale,
        "fill": params.fill_value(),
        "exact_count": params.exact_count,
        "share_axes": list(params.share_axes),
        "channel_axis": params.channel_axis,
    }


def sum_totals(files: list[dict]) -> dict:
    """The run's totals over its files' totals: the keys of ``totals``, in its order, then
    the number of files and of files that failed."""
    out = {k: sum(f["totals"][k] for f in files) for k in totals([])}
    out["drop_fraction"] = out["dropped"] / out["numel"] if out["numel"] else 0.0
    out["files"] = len(files)
    out["failed"] = sum(f.get("status") == "failed" for f in files)
    return out


class ContentDigest:
    """SHA-256 of a tensor's content, whatever file format or memory order holds it.

    Hashed: ``b"tensor-dropout/content/v1"``, then length-prefixed fields (8-byte
    little-endian length) of the dtype's name (``float32``, ``bfloat16``...) and
    the shape as JSON (``[2, 3]``), then every element in C order as its
    little-endian bytes.  docs/random-stream.md states it with an example.

    >>> d = ContentDigest(np.dtype("<f4"), (2,)); d.update(np.zeros(2, "<f4")); d.hexdigest()[:15]
    'sha256:a18f4024'
    """

    def __init__(self, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        from .dtypes import dtype_label
        from .seeds import field

        self._h = hashlib.sha256(b"tensor-dropout/content/v1" + field(dtype_label(dtype).encode())
                                 + field(json.dumps(list(shape)).encode()))
        order = dtype.byteorder
        self._swap = order == ">" or (order == "=" and not np.little_endian)

    def update(self, flat: np.ndarray) -> None:
        """The next elements, in C order."""
        a = np.ascontiguousarray(flat).reshape(-1)
        if self._swap:
            a = a.byteswap()
        self._h.update(a.view(np.uint8))

    def hexdigest(self) -> str:
        return "sha256:" + self._h.hexdigest()
