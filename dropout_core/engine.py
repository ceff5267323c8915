"""Run one planned tensor: read a chunk, take its keep bits, apply the kernel, count, write.

``run_tensor`` is the one loop every whole-tensor entry point shares: in-memory
arrays (``dropout``) and files (``apply_file``).  ``dropout_block_counted``
runs one rectangular block of a tensor from its position alone (a Dask block).
The keep bits come from the plan's source, the values from ``kernel``, the
counts and digest from ``stats``, the threads from ``threads``: this module
only puts them in order.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .dtypes import dtype_label
from .errors import UsageError
from .kernel import BLOCK, kernel_for
from .plan import TensorPlan, plan_tensor
from .stats import TensorStats
from .threads import BufferPool, ahead, overlapped, resolve_threads
from .units import as_slices, broadcast_keep, keep_block, replayed_mask, slab_chunks

CHUNK = 1 << 20  # elements per chunk; never changes a result, only memory and speed
SEGMENT = 1 << 20  # units per keep-bit task of a worker thread

Reader = Callable[[int, int, tuple], np.ndarray]  # (flat start, flat stop, slab index) -> flat
Writer = Callable[[int, np.ndarray, tuple], None]  # (flat start, flat output, slab index)
MaskSink = Callable[[int, np.ndarray], None]  # (unit start, keep bits)


def run_tensor(plan: TensorPlan, read: Reader, write: Writer, *, sliced: bool = False,
               chunk: int = CHUNK, threads: int | None = None,
               mask_sink: MaskSink | None = None) -> TensorStats:
    """Apply a bound plan to one tensor, chunk by chunk, and return its statistics.

    ``read`` serves C-order chunks (flat; the compute may overwrite them);
    ``sliced`` says it needs the slab index (a Fortran-order source), so chunks
    are hyperslabs.  ``threads`` (default: the usable cores) draw keep bits
    ahead and overlap ``read`` and ``write`` with the compute; like ``chunk``,
    it never changes a result.  ``mask_sink(u0, keep)`` sees every unit's keep
    bit, in order.
    """
    stats = TensorStats(plan.tensor, dtype_label(plan.dtype), plan.shape, plan.mask_shape)
    if plan.identity:
        stats.extra.update({"scale": 1.0, "mode": plan.params.mode})
        for s, e, idx in _chunks(plan.shape, chunk, sliced):
            write(s, read(s, e, idx), idx)
        return stats
    stats.extra.update(plan.values.summary())
    src, kernel, units = plan.source, kernel_for(plan.values), plan.units
    nthreads = resolve_threads(threads)
    if plan.broadcast:
        # the statistics walk the units in order; each element takes its unit's bit
        for u0 in range(0, units, chunk):
            keep = src.keep(u0, min(units, u0 + chunk))
            stats.add_keep(keep)
            if mask_sink:
                mask_sink(u0, keep)

        def compute(s: int, e: int, idx, x: np.ndarray) -> np.ndarray:
            x = _workable(x)
            stats.overflow += kernel.apply(x, broadcast_keep(src, plan.mask_shape, plan.shape,
                                                             idx))
            return x
        sliced = True
    else:
        cuts = (ab for s, e, _ in _chunks(plan.shape, chunk, sliced)
                for ab in _cuts(s, e, nthreads))
        bits = BufferPool(keep=4 * nthreads + 4)

        def draw(ab: tuple[int, int]) -> tuple[int, int, np.ndarray]:
            a, b = ab
            return a, b, src.keep(a, b, out=bits.take(b - a, bool))

        if nthreads > 1 and not src.serial and min(chunk, units) >= 2 * BLOCK:
            pieces = len(_cuts(0, min(chunk, units), nthreads))
            keeps = ahead(draw, cuts, workers=nthreads - 1, depth=2 * pieces)
        else:
            keeps = map(draw, cuts)

        def compute(s: int, e: int, idx, x: np.ndarray) -> np.ndarray:
            x = _workable(x)
            pos = s
            while pos < e:
                a, b, keep = next(keeps)
                stats.overflow += kernel.apply(x[a - s:b - s], keep)
                stats.add_keep(keep)
                if mask_sink:
                    mask_sink(a, keep)
                bits.give(keep)
                pos = b
            return x

    chunks = _chunks(plan.shape, chunk, sliced)
    if nthreads > 1 and math.prod(plan.shape) > chunk:
        overlapped(chunks, read, write, compute)  # read ahead and write behind, on threads
    else:
        for s, e, idx in chunks:
            write(s, compute(s, e, idx, read(s, e, idx)), idx)
    return stats


def _workable(x: np.ndarray) -> np.ndarray:
    """A flat, contiguous, writeable chunk (the kernel works in place)."""
    if not (x.flags.c_contiguous and x.flags.writeable):
        x = np.array(x, order="C", copy=True)
    return x.reshape(-1)


def _chunks(shape: tuple[int, ...], chunk: int, sliced: bool):
    n = math.prod(shape)
    if sliced:
        yield from slab_chunks(shape, chunk)
    else:
        for s in range(0, n, chunk):
            yield s, min(n, s + chunk), None


def _cuts(start: int, stop: int, threads: int) -> list[tuple[int, int]]:
    """Keep-bit tasks of [start, stop): at most SEGMENT units, inner cuts on BLOCK multiples,
    one per worker thread when the range is large enough to share."""
    n = stop - start
    pieces = max(threads - 1 if n >= 2 * BLOCK else 1, -(-n // SEGMENT))
    per = -(-n // pieces)
    cuts = [start]
    for k in range(1, pieces):
        c = (start + k * per + BLOCK - 1) // BLOCK * BLOCK
        if cuts[-1] < c < stop:
            cuts.append(c)
    cuts.append(stop)
    return list(zip(cuts[:-1], cuts[1:], strict=True))


# ----------------------------------------------------------------------------- blocks


def dropout_block(block: np.ndarray, location: tuple, full_shape: tuple[int, ...],
                  params, seed: int, file: str = "", tensor: str = "", *,
                  plan: TensorPlan | None = None, dropped: np.ndarray | None = None,
                  chunk_size: int = CHUNK) -> np.ndarray:
    """The output of ``dropout(full, ...)`` at ``location``, from the block ``full[location]``.

    ``location`` is a tuple of slices or the block's first index.  ``plan``
    (``plan_tensor(...).bind()``) saves re-deriving the per-tensor constants,
    and for ``exact_count`` the global threshold, in every block.  ``dropped``
    gives the block's decisions from a replayed mask.  Never modifies ``block``.

    >>> x = np.arange(1.0, 61.0).reshape(6, 10)
    >>> from dropout_core import DropoutParams, dropout
    >>> whole = dropout(x, 0.5, seed=3, file="x.npy")
    >>> part = dropout_block(x[2:5, 3:9], (slice(2, 5), slice(3, 9)), x.shape,
    ...                      DropoutParams(p=0.5), 3, "x.npy", "")
    >>> bool((part == whole[2:5, 3:9]).all())
    True
    """
    return dropout_block_counted(block, location, full_shape, params, seed, file, tensor,
                                 plan=plan, dropped=dropped, chunk_size=chunk_size)[0]


def dropout_block_counted(block: np.ndarray, location: tuple, full_shape: tuple[int, ...],
                          params, seed: int, file: str = "", tensor: str = "", *,
                          plan: TensorPlan | None = None, dropped: np.ndarray | None = None,
                          chunk_size: int = CHUNK) -> tuple[np.ndarray, int]:
    """Like ``dropout_block``; also returns the block's overflow count (for the stats)."""
    block = np.asarray(block)
    # With ``dropped`` the decisions come with the block; a 0-d stand-in mask only tells
    # plan_tensor not to set up a stream.
    tp = plan or plan_tensor(full_shape, block.dtype, params, seed, file, tensor,
                             mask=None if dropped is None else np.ones((), bool))
    tp = tp.bind()
    if tp.dtype != block.dtype or tuple(full_shape) != tp.shape:
        raise UsageError(f"{tp.where}: block of {dtype_label(block.dtype)} for a tensor of "
                         f"shape {list(full_shape)}, planned as {dtype_label(tp.dtype)} "
                         f"{list(tp.shape)}")
    location = as_slices(tuple(location), block.shape)
    if any(s.start < 0 or s.stop > d for s, d in zip(location, tp.shape, strict=True)):
        raise UsageError(f"{tp.where}: block {location!r} lies outside the tensor's shape "
                         f"{list(tp.shape)}")
    out = np.array(block, order="C", copy=True)
    if tp.identity or out.size == 0:
        return out, 0
    if dropped is not None:
        keep = ~np.broadcast_to(np.asarray(dropped, dtype=bool), out.shape)
    elif tp.source is None:
        raise UsageError(f"{tp.where}: this plan replays a mask; pass the block's part "
                         "of it as dropped=")
    else:
        uloc = tuple(slice(0, 1) if m == 1 else sl
                     for sl, m in zip(location, tp.mask_shape, strict=True))
        keep = np.broadcast_to(keep_block(tp.source, tp.mask_shape, uloc), out.shape)
    flat, keep = out.reshape(-1), np.ascontiguousarray(keep).reshape(-1)
    kernel = kernel_for(tp.values)
    overflow = 0
    for s in range(0, flat.size, chunk_size):
        e = min(flat.size, s + chunk_size)
        overflow += kernel.apply(flat[s:e], keep[s:e])
    return out, overflow


def mask_stats(tp: TensorPlan, mask: np.ndarray | None = None, overflow: int = 0,
               chunk: int = CHUNK) -> dict:
    """The tensor's statistics, as ``dropout(..., return_stats=True)`` reports them.

    Counts and the mask digest depend only on the mask, never on the data, so
    this walks the keep source (or the replayed ``mask``) in order; ``overflow``
    is the sum of the blocks' overflow counts.
    """
    stats = TensorStats(tp.tensor, dtype_label(tp.dtype), tp.shape, tp.mask_shape)
    if tp.identity:
        stats.extra.update({"scale": 1.0, "mode": tp.params.mode})
    else:
        from .units import HeldMask

        src = HeldMask(replayed_mask(mask, tp.shape, tp.where)[1]) if mask is not None \
            else tp.bind().source
        stats.extra.update(tp.values.summary())
        for u0 in range(0, tp.units, chunk):
            stats.add_keep(src.keep(u0, min(tp.units, u0 + chunk)))
        stats.overflow = int(overflow)
    d = stats.as_dict()
    d["seed"] = tp.seed
    return d
