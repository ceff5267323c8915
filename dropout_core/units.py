"""Mask units: the shape of a tensor's mask, and how its units map onto elements.

A variant only changes the shape of the mask (one unit per element, per
(n, c) channel, or per index of the axes not shared); the kernel never knows.
Unit ``u`` is the C-order flat index into that shape.  A mask held in memory
(a replayed ``--mask-in``, or a small broadcast mask drawn up front) is a
keep source like the streams' own.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from .dtypes import dtype_label
from .errors import DropoutError, UsageError
from .params import DropoutParams

MATERIALIZE_UNITS = 1 << 24  # broadcast masks up to this many units are held in memory
GAP = 1 << 15  # units: drawing a gap this long costs about one stream set-up, so merge across it
SPAN = 1 << 20  # units: the longest span drawn at once for one gathered group of runs


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


def replayed_mask(mask, shape: tuple[int, ...], where: str) -> tuple[tuple[int, ...], np.ndarray]:
    """A replayed keep mask checked against the tensor: (mask shape, keep bits, flat C order).

    bool, or 0/1 integers; it may have fewer dimensions than the tensor
    (leading ones are added) and 1-sized axes that broadcast.
    """
    mask = np.asarray(mask)
    if mask.dtype != bool:
        if mask.dtype.kind in "iu" and np.isin(mask, (0, 1)).all():
            mask = mask.astype(bool)
        else:
            raise DropoutError(f"{where}: mask must be bool (or 0/1 integers), got "
                               f"{dtype_label(mask.dtype)}")
    if mask.ndim > len(shape):
        raise DropoutError(f"{where}: mask of shape {list(mask.shape)} has more dimensions than "
                           f"the tensor {list(shape)}")
    mshape = (1,) * (len(shape) - mask.ndim) + mask.shape
    if any(m not in (1, d) for m, d in zip(mshape, shape, strict=True)):
        raise DropoutError(f"{where}: mask of shape {list(mask.shape)} does not broadcast to the "
                           f"tensor's shape {list(shape)}")
    return tuple(mshape), np.ascontiguousarray(mask).reshape(-1)


class HeldMask:
    """Keep bits held in memory: a replayed mask, or a broadcast mask drawn up front."""

    serial = False

    def __init__(self, keep: np.ndarray) -> None:
        self.bits = np.ascontiguousarray(keep, dtype=bool).reshape(-1)

    def keep(self, u0: int, u1: int, out: np.ndarray | None = None) -> np.ndarray:
        if out is None:
            return self.bits[u0:u1]
        out[...] = self.bits[u0:u1]
        return out


def held(src, units: int, block: int = 1 << 20, perm: tuple | None = None,
         mshape: tuple | None = None) -> HeldMask:
    """All of a source's keep bits, drawn in order; ``perm`` reorders a serial stream
    drawn in memory order (``mshape`` permuted by ``perm``) back to C order."""
    if isinstance(src, HeldMask) and perm is None:
        return src
    out = np.empty(units, dtype=bool)
    for s in range(0, units, block):
        src.keep(s, min(units, s + block), out=out[s:s + block])
    if perm is not None:
        mem_shape = tuple(mshape[k] for k in perm)
        out = np.ascontiguousarray(np.transpose(out.reshape(mem_shape), np.argsort(perm)))
    return HeldMask(out)


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


def broadcast_keep(src, mshape: tuple[int, ...], shape: tuple[int, ...],
                   index: tuple) -> np.ndarray:
    """Keep bits for the elements of hyperslab ``index``, from a broadcast mask."""
    m = len(index) - 1
    uprefix = tuple(i if mshape[k] > 1 else 0 for k, i in enumerate(index[:m]))
    sl = index[m]
    a, b = (sl.start, sl.stop) if mshape[m] > 1 else (0, 1)
    utail = math.prod(mshape[m + 1:])
    ubase = (int(np.ravel_multi_index(uprefix, mshape[:m])) if m else 0) * mshape[m]
    units = src.keep((ubase + a) * utail, (ubase + b) * utail)
    units = units.reshape((b - a,) + tuple(mshape[m + 1:]))
    return np.broadcast_to(units, (sl.stop - sl.start,) + tuple(shape[m + 1:])).reshape(-1)


def as_slices(location: tuple, block_shape: tuple[int, ...]) -> tuple[slice, ...]:
    """A block's location as one slice per axis (a tuple of ints is its first index)."""
    if len(location) != len(block_shape):
        raise UsageError(f"location {location!r} has {len(location)} axes, the block has "
                         f"{len(block_shape)}")
    out = []
    for loc, n in zip(location, block_shape, strict=True):
        if isinstance(loc, slice):
            start = loc.start or 0
            if loc.stop is not None and loc.stop - start != n or loc.step not in (None, 1):
                raise UsageError(f"location {location!r} does not match the block's shape "
                                 f"{list(block_shape)}")
            out.append(slice(start, start + n))
        else:
            out.append(slice(int(loc), int(loc) + n))
    return tuple(out)


def keep_block(src, ushape: tuple[int, ...], location: tuple[slice, ...]) -> np.ndarray:
    """Keep bits for the sub-block ``location`` of a unit array of shape ``ushape``."""
    return gather_block(src.keep, ushape, location, bool)


def gather_block(fetch, shape: tuple[int, ...], location: tuple[slice, ...],
                 dtype=bool) -> np.ndarray:
    """The sub-block ``location`` of a flat C-order sequence of ``shape``, of ``dtype``.

    ``fetch(start, stop)`` returns elements ``[start, stop)`` (keep bits of a
    stream, or values of a file); it is called with increasing, non-overlapping
    ranges, so a source that only moves forward can serve it.  A block's flat
    C-order indices are not contiguous: it is a set of runs, one per index of
    its leading axes.  Runs that lie close together are fetched as one span and
    gathered, so narrow blocks do not pay the source's set-up cost once per row.

    >>> gather_block(lambda a, b: np.arange(a, b), (3, 4), (slice(1, 3), slice(1, 3)), int)
    array([[ 5,  6],
           [ 9, 10]])
    """
    bshape = tuple(sl.stop - sl.start for sl in location)
    if any(s.start < 0 or s.stop > d for s, d in zip(location, shape, strict=True)):
        raise UsageError(f"block {location!r} lies outside the shape {list(shape)}")
    n = math.prod(bshape)
    if n == 0:
        return np.ones(bshape, dtype=dtype)
    ndim = len(shape)
    # Axis m: the outermost axis after which the block spans whole axes; one run per
    # index of the axes before m, each run (width on m) * (everything after m) units long.
    m = ndim
    while m > 0 and bshape[m - 1] == shape[m - 1]:
        m -= 1
    if m == 0:  # the block is the whole array
        return fetch(0, n).reshape(bshape)
    m -= 1
    tail = math.prod(shape[m + 1:])
    run = bshape[m] * tail
    strides = [math.prod(shape[k + 1:]) for k in range(ndim)]
    starts = np.full((1,), location[m].start * strides[m], dtype=np.int64)
    for k in range(m - 1, -1, -1):  # build the run starts, outer axes varying slowest
        offs = (np.arange(location[k].start, location[k].stop, dtype=np.int64) * strides[k])
        starts = (offs[:, None] + starts[None, :]).reshape(-1)
    if starts.size == 1:
        return fetch(int(starts[0]), int(starts[0]) + run).reshape(bshape)
    out = np.empty((starts.size, run), dtype=dtype)
    # Group runs: a new group where the gap to the previous run is long, or the span would grow
    # past SPAN units; each group is one fetch, gathered.
    gaps = starts[1:] - starts[:-1] - run
    new = np.concatenate(([True], gaps > GAP))
    group = np.cumsum(new) - 1
    gstart = starts[new][group]
    piece = (starts - gstart) // max(SPAN, run)
    cut = np.concatenate(([True], (group[1:] != group[:-1]) | (piece[1:] != piece[:-1])))
    bounds = np.append(np.flatnonzero(cut), starts.size)
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        s0, s1 = int(starts[a]), int(starts[b - 1]) + run
        if b - a == 1:
            out[a] = fetch(s0, s1)
            continue
        span = fetch(s0, s1)
        idx = (starts[a:b] - s0)[:, None] + np.arange(run, dtype=np.int64)[None, :]
        out[a:b] = span[idx]
    return out.reshape(bshape)
