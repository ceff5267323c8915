"""Mask units: which shape a tensor's mask has, and where its drop decisions come from.

A variant only changes the shape of the mask (one unit per element, per
(n, c) channel, or per index of the axes not shared); the kernel never knows.
Unit ``u`` is the C-order flat index into that shape.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from .errors import DropoutError
from .params import DropoutParams
from .streams import ExactCountStream, KeepStream

MATERIALIZE_UNITS = 1 << 24  # broadcast masks up to this many units are held in memory


def _axis(a: int, ndim: int, where: str, what: str) -> int:
    if not -ndim <= a < ndim:
        raise DropoutError(f"{where}: {what} {a} is out of range for a tensor with {ndim} "
                           "dimensions")
    return a % ndim


def mask_shape(shape: tuple[int, ...], params: DropoutParams, where: str) -> tuple[int, ...]:
    """The shape of the mask units for a tensor of ``shape``.

    >>> mask_shape((8, 3, 32, 32), DropoutParams(variant="channel"), "x")
    (8, 3, 1, 1)
    >>> mask_shape((8, 5, 4), DropoutParams(share_axes=(0, 2)), "x")
    (1, 5, 1)
    """
    ndim = len(shape)
    if params.is_channel:
        if ndim < 2:
            raise DropoutError(f"{where}: {params.variant} dropout needs at least 2 dimensions "
                               f"(N, C, ...), the tensor has shape {list(shape)}")
        ca = _axis(params.channel_axis, ndim, where, "channel axis")
        return tuple(d if k in (0, ca) else 1 for k, d in enumerate(shape))
    if params.share_axes:
        shared = {_axis(a, ndim, where, "shared axis") for a in params.share_axes}
        return tuple(1 if k in shared else d for k, d in enumerate(shape))
    return shape


class UnitSource:
    """Drop decisions for units [u0, u1)."""

    serial = False

    def drop(self, u0: int, u1: int) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


class StreamUnits(UnitSource):
    def __init__(self, stream: KeepStream, p: float) -> None:
        self.stream, self.p = stream, p

    def drop(self, u0: int, u1: int) -> np.ndarray:
        return self.stream.drop(u0, u1, self.p)


class ExactUnits(UnitSource):
    def __init__(self, stream: ExactCountStream) -> None:
        self.stream = stream

    def drop(self, u0: int, u1: int) -> np.ndarray:
        return self.stream.drop(u0, u1)


class ArrayUnits(UnitSource):
    """A mask held in memory: a replayed --mask-in, or a materialized broadcast mask."""

    def __init__(self, dropped: np.ndarray) -> None:
        self.dropped = np.ascontiguousarray(dropped, dtype=bool).reshape(-1)

    def drop(self, u0: int, u1: int) -> np.ndarray:
        return self.dropped[u0:u1]


class TorchUnits(UnitSource):
    """torch's serial mt19937 stream: units must be asked for in order."""

    serial = True

    def __init__(self, source, p: float) -> None:
        self.source, self.p, self.pos = source, p, 0

    def drop(self, u0: int, u1: int) -> np.ndarray:
        if u0 != self.pos:
            raise AssertionError("the torch stream only moves forward")
        self.pos = u1
        return ~self.source.keep(u1 - u0, self.p)


def materialize(src: UnitSource, units: int, block: int = 1 << 20) -> ArrayUnits:
    if isinstance(src, ArrayUnits):
        return src
    out = np.empty(units, dtype=bool)
    for s in range(0, units, block):
        out[s:s + block] = src.drop(s, min(units, s + block))
    return ArrayUnits(out)


def slab_chunks(shape: tuple[int, ...], target: int) -> Iterator[tuple[int, int, tuple]]:
    """C-order chunks that are also hyperslabs: (flat start, flat stop, index).

    ``index`` is a tuple of ints for the leading axes and one slice, so
    ``array[index]`` is the chunk.  Each chunk holds about ``target`` elements.
    """
    n = math.prod(shape)
    if n == 0:
        return
    ndim = len(shape)
    if ndim == 0:
        yield 0, 1, ()
        return
    tails = [math.prod(shape[k + 1:]) for k in range(ndim)]
    m = next(k for k in range(ndim) if tails[k] <= target)
    step = max(1, target // tails[m])
    for prefix in np.ndindex(*shape[:m]):
        base = (int(np.ravel_multi_index(prefix, shape[:m])) if m else 0) * shape[m]
        for a in range(0, shape[m], step):
            b = min(shape[m], a + step)
            yield (base + a) * tails[m], (base + b) * tails[m], tuple(prefix) + (slice(a, b),)


def broadcast_drop(src: UnitSource, mshape: tuple[int, ...], shape: tuple[int, ...],
                   index: tuple) -> np.ndarray:
    """Drop decisions for the elements of hyperslab ``index``, from a broadcast mask."""
    m = len(index) - 1
    uprefix = tuple(i if mshape[k] > 1 else 0 for k, i in enumerate(index[:m]))
    sl = index[m]
    a, b = (sl.start, sl.stop) if mshape[m] > 1 else (0, 1)
    utail = math.prod(mshape[m + 1:])
    ubase = (int(np.ravel_multi_index(uprefix, mshape[:m])) if m else 0) * mshape[m]
    units = src.drop((ubase + a) * utail, (ubase + b) * utail)
    units = units.reshape((b - a,) + tuple(mshape[m + 1:]))
    return np.broadcast_to(units, (sl.stop - sl.start,) + tuple(shape[m + 1:])).reshape(-1)


def unit_source(params: DropoutParams, seed: int, file: str, tensor: str, units: int,
                torch_source=None) -> UnitSource:
    """The drop decisions of one tensor's mask for the chosen stream."""
    if params.rng == "torch":
        if params.p >= 1.0:  # torch computes x * 0 and draws nothing
            return ArrayUnits(np.ones(units, dtype=bool))
        return TorchUnits(torch_source, params.p)
    if params.exact_count:
        return ExactUnits(ExactCountStream(seed, file, tensor, units, params.p))
    return StreamUnits(KeepStream(seed, file, tensor), params.p)
