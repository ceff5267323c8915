"""The dropout arithmetic on one chunk: scale, fill and dtype rules; no I/O.

Narrow floats (float16, bfloat16, float8) are computed in float32 and rounded
once to nearest even; float64 and complex are computed in their own dtype.
A dropped element is exactly the fill value, whatever the input held.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .dtypes import cast_fill, compute_dtype, dtype_label, is_floating
from .errors import DropoutError
from .params import ALPHA_PRIME, DropoutParams


@dataclass(frozen=True)
class ValuePlan:
    """How one tensor's values change, fixed before its first chunk."""

    kind: str  # "mask", "scale", "alpha", "torch", "torch-alpha", "torch-zero"
    dtype: np.dtype
    cdtype: np.dtype
    p: float
    fill: np.ndarray | None = None  # 0-d, dtype: the value of a dropped element
    scale: np.generic | None = None  # in cdtype
    a: np.generic | None = None
    b: np.generic | None = None

    def summary(self) -> dict:
        """The numbers the stats report for this tensor."""
        out: dict = {"scale": None if self.scale is None else _number(self.scale)}
        if self.kind in ("alpha", "torch-alpha"):
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


def make_plan(params: DropoutParams, dtype: np.dtype, where: str) -> ValuePlan:
    """Check that ``dtype`` can take this dropout and fix the constants."""
    cd = compute_dtype(dtype)
    floating = is_floating(dtype)
    if params.rng == "torch":
        from .torch_stream import torch_scale

        allowed = {"float16", "bfloat16", "float32", "float64"}
        if dtype_label(dtype) not in allowed:
            raise DropoutError(f"{where}: rng torch supports {', '.join(sorted(allowed))}, "
                               f"not {dtype_label(dtype)}")
        if params.p >= 1.0:
            return ValuePlan("torch-zero", dtype, cd, params.p)
        if params.is_alpha:
            a = 1.0 / math.sqrt((ALPHA_PRIME**2 * params.p + 1) * (1 - params.p))
            return ValuePlan("torch-alpha", dtype, cd, params.p, a=cd.type(a),
                             b=cd.type(ALPHA_PRIME * a * params.p))
        return ValuePlan("torch", dtype, cd, params.p, scale=torch_scale(params.p, dtype))
    if not floating and (params.scale or params.is_alpha):
        what = "alpha dropout" if params.is_alpha else "scaling by 1/(1-p)"
        raise DropoutError(f"{where}: {dtype_label(dtype)} tensor cannot take {what}; use "
                           "--no-scale to mask it without scaling, or --exclude it")
    if params.is_alpha:
        # The dropped value is a*d + b, rounded to the dtype like every alpha output.
        d = params.fill_value()
        if params.p >= 1.0:  # the affine correction is undefined: every element becomes d
            return ValuePlan("mask", dtype, cd, params.p, fill=np.array(d).astype(dtype))
        a, b = params.alpha_affine()
        dropped = np.array(a * d + b, dtype=np.float64).astype(dtype)
        return ValuePlan("alpha", dtype, cd, params.p, fill=dropped, a=cd.type(a), b=cd.type(b))
    fill = cast_fill(params.fill_value(), dtype, where)
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
    """Apply drop decisions (bool, same length as flat ``x``) to a chunk.

    Returns (output chunk in ``plan.dtype``, overflow count).  May reuse ``x``'s
    memory for the output.
    """
    kind = plan.kind
    if kind == "mask":
        out = x
        np.copyto(out, plan.fill, where=drop)
        return out, 0
    bad_in = _nonfinite(x)
    if kind == "scale":
        with np.errstate(over="ignore", invalid="ignore"):
            if x.dtype == plan.cdtype:
                out = np.multiply(x, plan.scale, out=x)
            else:
                out = (x.astype(plan.cdtype) * plan.scale).astype(plan.dtype)
        np.copyto(out, plan.fill, where=drop)
        return out, _overflow(bad_in, out, drop)
    if kind == "alpha":
        with np.errstate(over="ignore", invalid="ignore"):
            v = x.astype(plan.cdtype) * plan.a
            v += plan.b
            out = v.astype(plan.dtype)
        np.copyto(out, plan.fill, where=drop)
        return out, _overflow(bad_in, out, drop)
    from . import torch_stream

    if kind == "torch-zero":
        with np.errstate(invalid="ignore"):
            out = (x.astype(plan.cdtype) * plan.cdtype.type(0)).astype(plan.dtype)
        return out, 0
    with np.errstate(over="ignore", invalid="ignore"):
        if kind == "torch":
            out = torch_stream.torch_dropout_values(x, ~drop, plan.p)
        else:
            out = torch_stream.torch_alpha_values(x, ~drop, plan.p)
    return out, _overflow(bad_in, out, drop)
