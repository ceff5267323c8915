"""Dropout on one tensor at a time, one chunk at a time: reader -> mask -> kernel -> writer.

``run_tensor`` is the one loop every entry point shares: in-memory arrays
(``dropout``), files (``apply_file``) and Dask blocks all go through it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .dtypes import dtype_label
from .errors import DropoutError
from .kernel import FusedKernel, ValuePlan, apply_chunk, make_plan
from .masks import (
    MATERIALIZE_UNITS,
    ArrayUnits,
    UnitSource,
    broadcast_drop,
    mask_shape,
    materialize,
    slab_chunks,
    unit_source,
)
from .params import DropoutParams
from .pipeline import overlapped, resolve_threads
from .stats import TensorStats
from .streams import effective_p as default_effective_p

CHUNK = 1 << 20  # elements per chunk; never changes a result, only memory and speed

Reader = Callable[[int, int, tuple], np.ndarray]  # (flat start, flat stop, slab index) -> flat
Writer = Callable[[int, np.ndarray, tuple], None]  # (flat start, flat output, slab index)
MaskSink = Callable[[int, np.ndarray], None]  # (unit start, dropped units)


def effective_p(params: DropoutParams) -> float:
    """The drop probability the chosen stream realises for p."""
    if params.identity:
        return 0.0
    if params.rng == "torch":
        if params.p >= 1.0:
            return 1.0
        q53 = math.ceil((1.0 - params.p) * 2.0**53)
        return 1.0 - q53 / 2.0**53
    return default_effective_p(params.p)


def run_tensor(*, shape: tuple[int, ...], dtype: np.dtype, read: Reader, write: Writer,
               params: DropoutParams, seed: int, file: str, tensor: str, where: str,
               sliced: bool = False, mask: np.ndarray | None = None, torch_source=None,
               memory_order: tuple | None = None, mask_sink: MaskSink | None = None,
               chunk: int = CHUNK, plan: ValuePlan | None = None,
               threads: int | None = None) -> TensorStats:
    """Apply dropout to one tensor, chunk by chunk, and return its statistics.

    ``read`` must serve C-order chunks; ``sliced`` says it needs the slab index
    (a Fortran-order source), so chunks are hyperslabs.  ``mask`` is a replayed
    keep mask (bool, broadcastable); ``memory_order`` is the axis order of the
    data in memory, which only the torch stream looks at.  ``threads`` (default:
    the usable cores) compute blocks in parallel and overlap ``read`` and
    ``write`` with the compute; like ``chunk``, it never changes a result.
    """
    if params.identity:
        stats = TensorStats(tensor, dtype_label(dtype), shape, None)
        stats.extra.update({"scale": 1.0, "mode": params.mode})
        for s, e, idx in _chunks(shape, chunk, sliced):
            write(s, read(s, e, idx), idx)
        return stats
    plan = plan or make_plan(params, dtype, where)
    if mask is not None:
        mshape, src = _replayed(mask, shape, where)
    else:
        mshape = mask_shape(shape, params, where)
        src = unit_source(params, seed, file, tensor, math.prod(mshape), torch_source)
    units = math.prod(mshape)
    broadcast = mshape != tuple(shape)
    if src.serial and (broadcast or memory_order is not None):
        src = _serial_to_array(src, mshape, memory_order if not broadcast else None)
    elif broadcast and units <= MATERIALIZE_UNITS and not isinstance(src, ArrayUnits):
        src = materialize(src, units)
    stats = TensorStats(tensor, dtype_label(dtype), shape, mshape)
    stats.extra.update(plan.summary())
    if broadcast:
        for u0 in range(0, units, chunk):
            d = src.drop(u0, min(units, u0 + chunk))
            stats.add_units(d)
            if mask_sink:
                mask_sink(u0, d)
    nthreads = resolve_threads(threads)
    fused = None if broadcast else FusedKernel.make(src, plan, dtype, units)

    def compute(s: int, e: int, idx, x: np.ndarray) -> np.ndarray:
        if fused is not None:
            out, overflow, drop = fused.apply(x, s, stats, nthreads, mask_sink is not None)
            if mask_sink:
                mask_sink(s, drop)
        else:
            if broadcast:
                drop = broadcast_drop(src, mshape, shape, idx)
            else:
                drop = src.drop(s, e)
                stats.add_units(drop)
                if mask_sink:
                    mask_sink(s, drop)
            out, overflow = apply_chunk(x, drop, plan)
        stats.overflow += overflow
        return out

    chunks = _chunks(shape, chunk, sliced or broadcast)
    if nthreads > 1 and math.prod(shape) > chunk:
        overlapped(chunks, read, write, compute)  # read ahead and write behind, on threads
    else:
        for s, e, idx in chunks:
            write(s, compute(s, e, idx, read(s, e, idx)), idx)
    return stats


def _chunks(shape, chunk, sliced):
    n = math.prod(shape)
    if sliced:
        yield from slab_chunks(shape, chunk)
    else:
        for s in range(0, n, chunk):
            yield s, min(n, s + chunk), None


def _serial_to_array(src: UnitSource, mshape: tuple, perm: tuple | None) -> ArrayUnits:
    """Draw a serial stream's whole mask up front, in the order torch walks memory."""
    units = math.prod(mshape)
    drawn = src.drop(0, units)
    if perm is not None:
        mem_shape = tuple(mshape[k] for k in perm)
        drawn = np.transpose(drawn.reshape(mem_shape), np.argsort(perm))
    return ArrayUnits(np.ascontiguousarray(drawn).reshape(-1))


def _replayed(mask: np.ndarray, shape: tuple, where: str) -> tuple[tuple, ArrayUnits]:
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
    return tuple(mshape), ArrayUnits(~mask.reshape(-1))
