"""The dropout arithmetic: a chunk and its keep bits in, output values out.

Scale, fill and dtype rules, nothing else: no random numbers, no threads, no
statistics, no I/O.  Narrow floats (float16, bfloat16, float8) are computed in
float32 and rounded once to nearest even; float64 and complex are computed in
their own dtype.  A dropped element is exactly the fill value, whatever the
input held.

``apply_chunk`` is the reference; ``Kernel`` computes the same bits with fewer
passes (bit selects, and a table of every 8- and 16-bit float's scaled value),
which tests/test_stream_invariance.py pins.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .dtypes import cast_fill, compute_dtype, dtype_label, is_floating
from .errors import DropoutError
from .params import DropoutParams


@dataclass(frozen=True)
class ValuePlan:
    """How one tensor's values change, fixed before its first chunk.

    ``kind``: "mask" (dropped -> fill), "scale" (kept * scale), "alpha" (kept
    a*x + b), or "custom": ``fn(x, keep)`` computes the output (a stream's own
    value rules, such as torch's rounding).
    """

    kind: str
    dtype: np.dtype
    cdtype: np.dtype
    p: float
    fill: np.ndarray | None = None  # 0-d, dtype: the value of a dropped element
    scale: np.generic | None = None  # in cdtype
    a: np.generic | None = None
    b: np.generic | None = None
    fn: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None

    def summary(self) -> dict:
        """The numbers the stats report for this tensor."""
        out: dict = {"scale": None if self.scale is None else _number(self.scale)}
        if self.a is not None:
            out["alpha_a"], out["alpha_b"] = _number(self.a), _number(self.b)
        if self.fill is not None:
            out["fill"] = _jsonable(self.fill)
        return out


def _number(v) -> float | str:
    """A float for JSON; inf and NaN (a float16 scale can overflow) as strings."""
    f = float(v)
    return f if math.isfinite(f) else str(f)


def _jsonable(v: np.ndarray) -> float | int | bool | str | None:
    item = v.item() if v.dtype.kind in "biuc" else float(v.astype(np.float64))
    if isinstance(item, complex):
        return str(item)
    if isinstance(item, float) and not np.isfinite(item):
        return str(item)
    return item


def value_plan(params: DropoutParams, dtype: np.dtype, where: str) -> ValuePlan:
    """Check that ``dtype`` can take this dropout and fix the constants (the default rules)."""
    cd = compute_dtype(dtype)
    if not is_floating(dtype) and (params.scale or params.is_alpha):
        what = "alpha dropout" if params.is_alpha else "scaling by 1/(1-p)"
        raise DropoutError(f"{where}: {dtype_label(dtype)} tensor cannot take {what}; use "
                           f"{params.say('no_scale')} to mask it without scaling, or leave "
                           f"it out ({params.say('exclude')})")
    if params.is_alpha:
        # The dropped value is a*d + b, rounded to the dtype like every alpha output.
        d = params.fill_value()
        if params.p >= 1.0:  # the affine correction is undefined: every element becomes d
            return ValuePlan("mask", dtype, cd, params.p, fill=np.array(d).astype(dtype))
        a, b = params.alpha_affine()
        dropped = np.array(a * d + b, dtype=np.float64).astype(dtype)
        return ValuePlan("alpha", dtype, cd, params.p, fill=dropped, a=cd.type(a), b=cd.type(b))
    fill = cast_fill(params.fill_value(), dtype, where, params.say("fill"))
    s = params.scale_factor()
    if s is None:
        return ValuePlan("mask", dtype, cd, params.p, fill=fill)
    real = np.empty(0, cd).real.dtype  # complex data is scaled by a real factor
    return ValuePlan("scale", dtype, cd, params.p, fill=fill, scale=real.type(s))


def _nonfinite(x: np.ndarray) -> np.ndarray | None:
    """Where x is inf or NaN, or None when it is finite everywhere (the usual case)."""
    if x.dtype.kind in "biu":
        return None
    bad = ~np.isfinite(x)
    return bad if bad.any() else None


def _overflow(bad_in: np.ndarray | None, out: np.ndarray, drop: np.ndarray) -> int:
    """Kept elements that were finite and are not any more (inf, or NaN in float8)."""
    bad = _nonfinite(out)
    if bad is None:
        return 0
    bad &= ~drop
    if bad_in is not None:
        bad &= ~bad_in
    return int(np.count_nonzero(bad))


def apply_chunk(x: np.ndarray, drop: np.ndarray, plan: ValuePlan) -> tuple[np.ndarray, int]:
    """Apply drop decisions (bool, same length as flat ``x``) to a chunk: the reference.

    Returns (output chunk in ``plan.dtype``, overflow count).  May reuse ``x``'s
    memory for the output.
    """
    kind = plan.kind
    if kind == "mask":
        out = x
        np.copyto(out, plan.fill, where=drop)
        return out, 0
    bad_in = _nonfinite(x)
    with np.errstate(over="ignore", invalid="ignore"):
        if kind == "scale":
            if x.dtype == plan.cdtype:
                out = np.multiply(x, plan.scale, out=x)
            else:
                out = (x.astype(plan.cdtype) * plan.scale).astype(plan.dtype)
            np.copyto(out, plan.fill, where=drop)
        elif kind == "alpha":
            v = x.astype(plan.cdtype) * plan.a
            v += plan.b
            out = v.astype(plan.dtype)
            np.copyto(out, plan.fill, where=drop)
        else:
            out = plan.fn(x, ~drop)
    return out, _overflow(bad_in, out, drop)


# ----------------------------------------------------------------------------- the fast path

BLOCK = 1 << 18  # elements per block of arithmetic: small enough for the cache, big enough
# that each NumPy call outlasts a hand-over of the GIL between threads


class Kernel:
    """One tensor's value rule, applied in place to a chunk and its keep bits.

    ``mode`` says how values change: "mul" (x * scale in the compute dtype),
    "lut" (16- and 8-bit floats: a table of every bit pattern's scaled result),
    "mask" (no arithmetic), "generic" (``apply_chunk`` on each block).  All
    give ``apply_chunk``'s bits and overflow counts.
    """

    def __init__(self, plan: ValuePlan) -> None:
        self.plan = plan
        self.dtype = dtype = np.dtype(plan.dtype)
        self.mode = "generic"
        size = dtype.itemsize
        self.ity = np.dtype(f"i{size}") if size in (1, 2, 4, 8) else None
        self.fill_bits = None
        if plan.fill is not None and self.ity is not None and plan.fill.dtype == dtype:
            self.fill_bits = self.ity.type(np.asarray(plan.fill).reshape(()).view(self.ity))
        if plan.kind == "mask" and self.fill_bits is not None and dtype.kind != "O":
            self.mode = "mask"
        elif plan.kind == "scale" and self.fill_bits is not None:
            if dtype == plan.cdtype and dtype.kind == "f" and size in (4, 8) and dtype.isnative:
                self.mode = "mul"
            elif size in (1, 2) and is_floating(dtype) and dtype.kind != "c" \
                    and (size == 1 or dtype.isnative):
                self._make_table()
                self.mode = "lut"

    def _make_table(self) -> None:
        """Every bit pattern's scaled value, computed exactly as apply_chunk computes it."""
        uty = np.dtype(f"u{self.dtype.itemsize}")
        pats = np.arange(1 << (8 * self.dtype.itemsize), dtype=np.uint64).astype(uty)
        x = pats.view(self.dtype)
        with np.errstate(all="ignore"):
            out = (x.astype(self.plan.cdtype) * self.plan.scale).astype(self.dtype)
        finite_in = np.isfinite(x.astype(np.float32))
        finite_out = np.isfinite(out.astype(np.float32))
        self.table = out.view(uty).copy()
        self.overflows = finite_in & ~finite_out
        self.uty = uty
        # |x| (the bits without the sign) at and above which a finite input can overflow
        sign = np.array(1 << (8 * self.dtype.itemsize - 1), dtype=uty)
        mag = pats & ~sign
        hit = mag[self.overflows]
        self.abs_mask = (~sign).astype(uty)
        self.overflow_from = int(hit.min()) if hit.size else None

    def apply(self, x: np.ndarray, keep: np.ndarray) -> int:
        """Turn flat, contiguous, writeable ``x`` into the output in place; returns overflow."""
        n = x.size
        if self.mode == "generic" and n <= BLOCK:
            return self._generic(x, keep)
        buf = _scratch()
        overflow = 0
        with np.errstate(over="ignore", invalid="ignore"):
            for s in range(0, n, BLOCK):
                e = min(n, s + BLOCK)
                kb = keep[s:e]
                m8 = np.negative(kb.view(np.int8), out=buf.m8[:e - s])  # kept -> -1
                overflow += self._values(x[s:e], kb, m8, buf)
        return overflow

    def _generic(self, xb: np.ndarray, keep: np.ndarray) -> int:
        out, ovf = apply_chunk(xb, ~keep, self.plan)
        if out is not xb:
            np.copyto(xb, out.reshape(xb.shape))
        return ovf

    def _values(self, xb: np.ndarray, keep: np.ndarray, m8: np.ndarray, buf) -> int:
        """x -> output in place for one block; returns its overflow count."""
        mode = self.mode
        n = xb.size
        if mode == "mask":
            self._select(xb, xb, m8)
            return 0
        if mode == "mul":
            sc = buf.values(self.dtype, n)
            np.multiply(xb, self.plan.scale, out=sc)
            hi, lo = np.maximum.reduce(sc), np.minimum.reduce(sc)
            if np.isfinite(hi) and np.isfinite(lo):
                # all finite: so was x (scale is finite), and nothing overflowed
                self._select(sc, xb, m8)
                return 0
        elif mode == "lut":
            bits = xb.view(self.uty)
            ovf = 0
            if self.overflow_from is not None:
                mag = np.bitwise_and(bits, self.abs_mask, out=buf.values(self.uty, n))
                if int(np.maximum.reduce(mag)) >= self.overflow_from:
                    ovf = int(np.count_nonzero(np.take(self.overflows, bits) & keep))
            looked = np.take(self.table, bits, out=buf.values(self.uty, n), mode="clip")
            self._select(looked.view(self.dtype), xb, m8)
            return ovf
        # generic (and the rare block of "mul" with inf or nan): the reference arithmetic
        return self._generic(xb, keep)

    def _select(self, val: np.ndarray, xb: np.ndarray, m8: np.ndarray) -> None:
        """xb = val where kept (m8 == -1), the fill value where dropped: bit operations."""
        ity = self.ity
        out = xb.view(ity)
        np.bitwise_and(val.view(ity), m8, out=out)
        if self.fill_bits:
            np.bitwise_or(out, np.bitwise_and(np.invert(m8), self.fill_bits), out=out)


_KERNELS: dict[int, tuple[ValuePlan, Kernel]] = {}


def kernel_for(plan: ValuePlan) -> Kernel:
    """The kernel of a value plan, made once (a float16 table costs a millisecond)."""
    found = _KERNELS.get(id(plan))
    if found is None or found[0] is not plan:
        if len(_KERNELS) > 256:
            _KERNELS.clear()
        found = _KERNELS[id(plan)] = (plan, Kernel(plan))
    return found[1]


class _Scratch:
    """One thread's work arrays, reused block after block."""

    def __init__(self) -> None:
        self.m8 = np.empty(BLOCK, dtype=np.int8)
        self._raw = np.empty(BLOCK * 8, dtype=np.uint8)

    def values(self, dtype: np.dtype, n: int) -> np.ndarray:
        return self._raw[:n * np.dtype(dtype).itemsize].view(dtype)


_tls = threading.local()


def _scratch() -> _Scratch:
    buf = getattr(_tls, "buf", None)
    if buf is None:
        buf = _tls.buf = _Scratch()
    return buf
