"""Dropout on one rectangular block of a larger tensor, computed from its position alone.

The default stream decides unit ``i`` from ``(seed, file, tensor, i)`` only, so a
block anywhere in a tensor (a Dask chunk, say) computes its part of the output
without looking at any other block.  This module is plain NumPy; the Dask
glue lives in ``dask_backend``.

A block's flat C-order indices are not contiguous in the tensor: it is a set of
runs, one per index of its leading axes.  Runs that lie close together are
drawn as one span of the stream and gathered, so narrow blocks do not pay the
stream's set-up cost once per row.

>>> import numpy as np
>>> from dropout_core import DropoutParams, dropout
>>> x = np.arange(1.0, 61.0).reshape(6, 10)
>>> whole = dropout(x, 0.5, seed=3, file="x.npy")
>>> part = dropout_block(x[2:5, 3:9], (slice(2, 5), slice(3, 9)), x.shape,
...                      DropoutParams(p=0.5), 3, "x.npy", "")
>>> bool((part == whole[2:5, 3:9]).all())
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .dtypes import dtype_label
from .engine import CHUNK, _replayed
from .errors import UsageError
from .kernel import ValuePlan, apply_chunk, make_plan
from .masks import UnitSource, mask_shape, unit_source
from .params import DropoutParams
from .stats import TensorStats

GAP = 1 << 15  # units: drawing a gap this long costs about one stream set-up, so merge across it
SPAN = 1 << 20  # units: the longest span drawn at once for one gathered group of runs

Location = tuple  # a tuple of slices (one per axis) or of ints (the block's first index)


class AllDropped(UnitSource):
    """Every unit dropped: torch at p = 1, which computes ``x * 0`` and draws nothing."""

    def drop(self, u0: int, u1: int) -> np.ndarray:
        return np.ones(u1 - u0, dtype=bool)


@dataclass(frozen=True)
class TensorPlan:
    """Everything a block of one tensor needs, fixed once for the whole tensor.

    Picklable and small: it is what a Dask graph ships to every block.  For
    ``exact_count`` it holds the stream with its global threshold already found.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    params: DropoutParams
    seed: int
    file: str
    tensor: str
    where: str
    mask_shape: tuple[int, ...] | None  # None: the identity (eval or p = 0)
    values: ValuePlan | None
    source: UnitSource | None  # None: the drop decisions come with the block (a replayed mask)

    @property
    def units(self) -> int:
        return math.prod(self.mask_shape) if self.mask_shape is not None else 0


def plan_tensor(shape: tuple[int, ...], dtype, params: DropoutParams, seed: int, file: str = "",
                tensor: str = "", *, where: str | None = None,
                mask: np.ndarray | None = None) -> TensorPlan:
    """Check a tensor against ``params`` and fix what its blocks share (raises DropoutError).

    ``rng="torch"`` is refused when it would draw from torch's stream: that
    stream is serial (unit i's bits depend on every draw before it), so no
    block could compute its part from its position.
    """
    shape = tuple(int(d) for d in shape)
    dtype = np.dtype(dtype)
    if where is None:
        from .array import _where

        where = _where(file, tensor)
    if params.identity:
        return TensorPlan(shape, dtype, params, seed, file, tensor, where, None, None, None)
    values = make_plan(params, dtype, where)
    if mask is not None:
        mshape, _ = _replayed(mask, shape, where)
        return TensorPlan(shape, dtype, params, seed, file, tensor, where, mshape, values, None)
    mshape = mask_shape(shape, params, where)
    if params.rng == "torch":
        if params.p < 1.0:
            raise UsageError(
                f"{where}: rng='torch' is a serial stream (each decision depends on every "
                "draw before it), so blocks cannot compute their parts independently; use "
                "rng='default', or compute the whole array in one process with "
                "dropout(arr.compute(), rng='torch', ...)")
        src: UnitSource = AllDropped()
    else:
        src = unit_source(params, seed, file, tensor, math.prod(mshape))
    return TensorPlan(shape, dtype, params, seed, file, tensor, where, mshape, values, src)


def as_slices(location: Location, block_shape: tuple[int, ...]) -> tuple[slice, ...]:
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


def unit_location(location: tuple[slice, ...], mshape: tuple[int, ...]) -> tuple[slice, ...]:
    """The part of the unit mask that a block of the tensor reads (1-sized axes broadcast)."""
    return tuple(slice(0, 1) if m == 1 else sl for sl, m in zip(location, mshape, strict=True))


def drop_block(src: UnitSource, ushape: tuple[int, ...], location: tuple[slice, ...]) -> np.ndarray:
    """Drop decisions (bool) for the sub-block ``location`` of a unit array of shape ``ushape``."""
    bshape = tuple(sl.stop - sl.start for sl in location)
    if any(s.start < 0 or s.stop > d for s, d in zip(location, ushape, strict=True)):
        raise UsageError(f"block {location!r} lies outside the shape {list(ushape)}")
    n = math.prod(bshape)
    if n == 0:
        return np.zeros(bshape, dtype=bool)
    ndim = len(ushape)
    # Axis m: the outermost axis after which the block spans whole axes; one run per
    # index of the axes before m, each run (width on m) * (everything after m) units long.
    m = ndim
    while m > 0 and bshape[m - 1] == ushape[m - 1]:
        m -= 1
    if m == 0:  # the block is the whole array
        return src.drop(0, n).reshape(bshape)
    m -= 1
    tail = math.prod(ushape[m + 1:])
    run = bshape[m] * tail
    strides = [math.prod(ushape[k + 1:]) for k in range(ndim)]
    starts = np.full((1,), location[m].start * strides[m], dtype=np.int64)
    for k in range(m - 1, -1, -1):  # build the run starts, outer axes varying slowest
        offs = (np.arange(location[k].start, location[k].stop, dtype=np.int64) * strides[k])
        starts = (offs[:, None] + starts[None, :]).reshape(-1)
    if starts.size == 1:
        return src.drop(int(starts[0]), int(starts[0]) + run).reshape(bshape)
    out = np.empty((starts.size, run), dtype=bool)
    # Group runs: a new group where the gap to the previous run is long, or the span would grow
    # past SPAN units; each group is one stream call, gathered.
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
            out[a] = src.drop(s0, s1)
            continue
        span = src.drop(s0, s1)
        idx = (starts[a:b] - s0)[:, None] + np.arange(run, dtype=np.int64)[None, :]
        out[a:b] = span[idx]
    return out.reshape(bshape)


def block_drop(tp: TensorPlan, location: tuple[slice, ...]) -> np.ndarray:
    """Drop decisions for the block's elements (a broadcast, read-only view for unit masks)."""
    bshape = tuple(sl.stop - sl.start for sl in location)
    uloc = unit_location(location, tp.mask_shape)
    units = drop_block(tp.source, tp.mask_shape, uloc)
    return np.broadcast_to(units, bshape)


def dropout_block(block: np.ndarray, location: Location, full_shape: tuple[int, ...],
                  params: DropoutParams, seed: int, file: str = "", tensor: str = "", *,
                  plan: TensorPlan | None = None, dropped: np.ndarray | None = None,
                  chunk_size: int = CHUNK) -> np.ndarray:
    """The output of ``dropout(full, ...)`` at ``location``, from the block ``full[location]``.

    ``location`` is a tuple of slices or the block's first index.  ``plan``
    (from ``plan_tensor``) saves re-deriving the per-tensor constants, and for
    ``exact_count`` the global threshold, in every block.  ``dropped`` gives
    the block's decisions from a replayed mask.  Never modifies ``block``.
    """
    return dropout_block_counted(block, location, full_shape, params, seed, file, tensor,
                                 plan=plan, dropped=dropped, chunk_size=chunk_size)[0]


def dropout_block_counted(block: np.ndarray, location: Location, full_shape: tuple[int, ...],
                          params: DropoutParams, seed: int, file: str = "", tensor: str = "", *,
                          plan: TensorPlan | None = None, dropped: np.ndarray | None = None,
                          chunk_size: int = CHUNK) -> tuple[np.ndarray, int]:
    """Like ``dropout_block``; also returns the block's overflow count (for the stats)."""
    block = np.asarray(block)
    # With ``dropped`` the decisions come with the block; a 0-d stand-in mask only tells
    # plan_tensor not to set up a stream.
    tp = plan or plan_tensor(full_shape, block.dtype, params, seed, file, tensor,
                             mask=None if dropped is None else np.ones((), bool))
    if tp.dtype != block.dtype or tuple(full_shape) != tp.shape:
        raise UsageError(f"{tp.where}: block of {dtype_label(block.dtype)} for a tensor of "
                         f"shape {list(full_shape)}, planned as {dtype_label(tp.dtype)} "
                         f"{list(tp.shape)}")
    location = as_slices(tuple(location), block.shape)
    if any(s.start < 0 or s.stop > d for s, d in zip(location, tp.shape, strict=True)):
        raise UsageError(f"{tp.where}: block {location!r} lies outside the tensor's shape "
                         f"{list(tp.shape)}")
    out = np.array(block, order="C", copy=True)
    if tp.mask_shape is None or out.size == 0:
        return out, 0
    if tp.source is None:
        if dropped is None:
            raise UsageError(f"{tp.where}: this plan replays a mask; pass the block's part "
                             "of it as dropped=")
        drop = np.broadcast_to(np.asarray(dropped, dtype=bool), out.shape)
    else:
        drop = block_drop(tp, location)
    flat, drop = out.reshape(-1), np.ascontiguousarray(drop).reshape(-1)
    overflow = 0
    for s in range(0, flat.size, chunk_size):
        e = min(flat.size, s + chunk_size)
        res, over = apply_chunk(flat[s:e], drop[s:e], tp.values)
        overflow += over
        if not np.shares_memory(res, flat):
            flat[s:e] = res
    return out, overflow


def mask_stats(tp: TensorPlan, mask: np.ndarray | None = None, overflow: int = 0,
               chunk: int = CHUNK) -> dict:
    """The tensor's statistics, as ``dropout(..., return_stats=True)`` reports them.

    Counts and the mask digest depend only on the mask, never on the data, so
    this walks the unit stream (or the replayed ``mask``) in order; ``overflow``
    is the sum of the blocks' overflow counts.
    """
    label = dtype_label(tp.dtype)
    if tp.mask_shape is None:
        stats = TensorStats(tp.tensor, label, tp.shape, None)
        stats.extra.update({"scale": 1.0, "mode": tp.params.mode})
    else:
        src = tp.source if tp.source is not None else _replayed(mask, tp.shape, tp.where)[1]
        stats = TensorStats(tp.tensor, label, tp.shape, tp.mask_shape)
        stats.extra.update(tp.values.summary())
        for u0 in range(0, tp.units, chunk):
            stats.add_units(src.drop(u0, min(tp.units, u0 + chunk)))
        stats.overflow = int(overflow)
    d = stats.as_dict()
    d["seed"] = tp.seed
    return d
