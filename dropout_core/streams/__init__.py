"""The random streams: where each tensor's keep bits come from, one module per stream.

A stream module offers one small interface:

* ``NAME`` and ``effective_p(p)``: the drop probability it really realises;
* ``value_plan(params, dtype, where)`` (optional): its own value rules
  (``kernel.value_plan`` when absent); ``check_params(params)`` (optional);
* ``file_state(seed)`` (optional): state shared by one file's tensors, made
  once per file (torch's generator);
* ``source(params, seed, file, tensor, units, state)``: a keep source for one
  tensor, with ``serial`` (False: any range, in any order, from any thread;
  True: forward only) and ``keep(u0, u1, out=None)`` -> bool keep bits of
  units ``[u0, u1)``;
* ``whole_array(x, params, state)`` (optional): a fused path for a whole
  in-memory array when no statistics are wanted, or None;
* ``memory_order_perm(x)`` (optional, serial streams): the axis order in which
  the stream walks an array in memory, when that is not C order.

A new stream is one module here plus one line in ``REGISTRY``; the engine and
the kernel never ask which stream they have.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType

# DropoutParams.stream -> module (imported on first use: torch's pulls in more)
REGISTRY = {
    "default": "default",
    "exact": "exact",
    "torch": "torch_cpu",
}


@functools.cache
def stream_module(name: str) -> ModuleType:
    """The module of the stream called ``name`` (a DropoutParams.stream value)."""
    return importlib.import_module(f"{__name__}.{REGISTRY[name]}")
