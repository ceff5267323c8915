"""One plan per tensor: its parameters validated once, before any data moves.

A ``TensorPlan`` fixes the mask shape, the value rule (``kernel.ValuePlan``),
the random stream and, once bound, the keep source.  The file path, the
in-memory API and the Dask path all run from it: every check a tensor needs
happens in ``plan_tensor``, and nothing is checked again while it runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import where as where_of
from .kernel import ValuePlan, value_plan
from .params import DropoutParams
from .units import MATERIALIZE_UNITS, HeldMask, held, mask_shape, replayed_mask


@dataclass(frozen=True)
class TensorPlan:
    """Everything one tensor's run needs, fixed once.

    Picklable and small: it is what a Dask graph ships to every block and what
    ``--jobs`` sends to a worker.  ``source`` is None until ``bind`` gives it
    the stream's keep source (for exact count, with its threshold found).
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    params: DropoutParams
    seed: int | None
    file: str
    tensor: str
    where: str
    mask_shape: tuple[int, ...] | None  # None: the identity (eval or p = 0)
    values: ValuePlan | None
    source: object | None = None  # keep bits: keep(u0, u1, out=None), serial
    memory_order: tuple[int, ...] | None = None  # axis order a serial stream walks
    replayed: bool = False  # the keep bits are a given mask, not a stream's

    @property
    def identity(self) -> bool:
        return self.mask_shape is None

    @property
    def units(self) -> int:
        return math.prod(self.mask_shape) if self.mask_shape is not None else 0

    @property
    def broadcast(self) -> bool:
        """One mask unit covers several elements (channel and shared-axes variants)."""
        return self.mask_shape is not None and self.mask_shape != self.shape

    def bind(self, state=None) -> TensorPlan:
        """This plan with its keep source (``state``: the stream's per-file state).

        A serial stream that must be walked in another order than the kernel's
        (a broadcast mask, or memory order) and a small broadcast mask are drawn
        up front and held.
        """
        if self.identity or self.replayed or self.source is not None:
            return self
        stream = self.params.stream_module()
        src = stream.source(self.params, self.seed, self.file, self.tensor, self.units, state)
        if src.serial and (self.broadcast or self.memory_order is not None):
            perm = None if self.broadcast else self.memory_order
            src = held(src, self.units, perm=perm, mshape=self.mask_shape)
        elif self.broadcast and self.units <= MATERIALIZE_UNITS:
            src = held(src, self.units)
        bound = object.__new__(TensorPlan)  # dataclasses.replace, without its per-call cost
        bound.__dict__.update(self.__dict__, source=src)
        return bound


_VALUES: dict = {}  # (params, dtype) -> ValuePlan: many small tensors share one


def _value_plan(params: DropoutParams, dtype: np.dtype, where: str) -> ValuePlan:
    """The stream's value rule for ``dtype``, made once per (params, dtype) and process."""
    key = (params, dtype)
    found = _VALUES.get(key)
    if found is None:
        stream = params.stream_module()
        found = getattr(stream, "value_plan", value_plan)(params, dtype, where)
        if len(_VALUES) > 256:
            _VALUES.clear()
        _VALUES[key] = found
    return found


def plan_tensor(shape: tuple[int, ...], dtype, params: DropoutParams, seed: int | None,
                file: str = "", tensor: str = "", *, where: str | None = None,
                mask: np.ndarray | None = None,
                memory_order: tuple[int, ...] | None = None) -> TensorPlan:
    """Check a tensor against ``params`` and fix what its run needs (raises DropoutError).

    ``mask`` is a replayed keep mask (bool or 0/1, broadcastable to ``shape``);
    ``memory_order`` is the axis order of the data in memory, which only a
    serial stream looks at.
    """
    shape = tuple(int(d) for d in shape)
    dtype = np.dtype(dtype)
    where = where if where is not None else where_of(file, tensor)
    if params.identity:
        return TensorPlan(shape, dtype, params, seed, file, tensor, where, None, None)
    values = _value_plan(params, dtype, where)
    if mask is not None:
        mshape, bits = replayed_mask(mask, shape, where)
        return TensorPlan(shape, dtype, params, seed, file, tensor, where, mshape, values,
                          HeldMask(bits), replayed=True)
    mshape = mask_shape(shape, params, where)
    return TensorPlan(shape, dtype, params, seed, file, tensor, where, mshape, values,
                      memory_order=memory_order)
