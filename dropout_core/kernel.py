"""The dropout arithmetic on one chunk: scale, fill and dtype rules; no I/O.

Narrow floats (float16, bfloat16, float8) are computed in float32 and rounded
once to nearest even; float64 and complex are computed in their own dtype.
A dropped element is exactly the fill value, whatever the input held.
"""

from __future__ import annotations

import math
import threading
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


# ----------------------------------------------------------------------------- the fast path
#
# The default stream fused with the arithmetic and the statistics, block by block,
# on threads.  It gives the bits, counts, digest and overflow of the path above
# (tests/test_invariance.py and tests/test_stream_invariance.py pin that); it only
# avoids the passes and temporaries, and spreads the blocks over the cores.

BLOCK = 1 << 18  # units per block of arithmetic: small enough for the cache, big enough
# that each NumPy call outlasts the hand-over of the GIL between the threads
SEGMENT = 1 << 20  # units per task of a producer thread: the keep bits it draws at once
_M32 = 1 << 32


class FusedKernel:
    """Drop decisions of a KeepStream applied to chunks in place, with their statistics.

    ``mode`` says how values change:  "mul" (x * scale in the compute dtype),
    "lut" (16- and 8-bit floats: a table of every bit pattern's scaled result),
    "mask" (no arithmetic), "generic" (apply_chunk on each block).
    """

    def __init__(self, stream, p: float, plan: ValuePlan, dtype: np.dtype) -> None:
        from .streams import threshold

        self.key, self.tie_seed = stream.key, stream.tie_seed
        self.t = threshold(p)
        self.plan = plan
        self.dtype = np.dtype(dtype)
        self.mode = "generic"
        size = self.dtype.itemsize
        self.ity = np.dtype(f"i{size}") if size in (1, 2, 4, 8) else None
        self.fill_bits = None
        if plan.fill is not None and self.ity is not None and plan.fill.dtype == self.dtype:
            self.fill_bits = self.ity.type(np.asarray(plan.fill).reshape(()).view(self.ity))
        if plan.kind == "mask" and self.fill_bits is not None and self.dtype.kind != "O":
            self.mode = "mask"
        elif plan.kind == "scale" and self.fill_bits is not None:
            if self.dtype == plan.cdtype and self.dtype.kind == "f" and size in (4, 8) \
                    and self.dtype.isnative:
                self.mode = "mul"
            elif _is_ml_float(self.dtype, size) and (size == 1 or self.dtype.isnative):
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

    @staticmethod
    def make(src, plan: ValuePlan, dtype: np.dtype, units: int | None = None) -> FusedKernel | None:
        """The fast path for this unit source and plan, or None to take the general one.

        ``units`` (the tensor's size) lets the kernel draw the next chunk's keep
        bits ahead, on another thread, while this chunk's values are computed.
        """
        from .masks import StreamUnits
        from .streams import KeepStream

        if type(src) is not StreamUnits or type(src.stream) is not KeepStream:
            return None
        if plan.kind not in ("mask", "scale", "alpha"):
            return None
        k = FusedKernel(src.stream, src.p, plan, dtype)
        k.units = units
        return k

    # -- one chunk ------------------------------------------------------------------------
    #
    # Two stages.  The keep bits of units [a, b) depend on nothing but (key, a, b),
    # so worker threads draw them ahead: the segments of this chunk and, once it is
    # running, of the next one.  The calling thread turns them into values and
    # statistics, in order.  Few, long NumPy calls per thread keep the GIL quiet.

    units: int | None = None
    _pending: dict | None = None

    def apply(self, x: np.ndarray, start: int, stats, threads: int,
              want_drop: bool = False) -> tuple[np.ndarray, int, np.ndarray | None]:
        """Apply units ``[start, start + x.size)`` to flat ``x`` in place.

        Updates ``stats`` (counts and digest, in order) and returns (x, overflow,
        dropped or None).
        """
        if not (x.flags.c_contiguous and x.flags.writeable):
            x = np.ascontiguousarray(x).copy()
        x = x.reshape(-1)
        n = x.size
        stop = start + n
        ahead = threads > 1 and n >= 2 * BLOCK
        keeps = [self._keep_job((a, b)) if not ahead else self._submitted(a, b, threads)
                 for a, b in self._cuts(start, stop, threads)]
        if ahead and self.units is not None and stop < self.units:
            nxt = self._cuts(stop, min(self.units, stop + n), threads)
            self._pending = {ab: self._pending.pop(ab, None) or self._submit(ab, threads)
                             for ab in nxt}
        overflow = 0
        drops = [] if want_drop else None
        digest = stats.digest
        buf = _scratch(min(n, SEGMENT))
        with np.errstate(over="ignore", invalid="ignore"):
            for job in keeps:
                a, b, keep = job.result() if ahead else job
                n_seg = b - a
                kept = int(np.count_nonzero(keep))
                stats.dropped_units += n_seg - kept
                m8 = np.negative(keep.view(np.int8), out=buf.m8[:n_seg])  # kept -> -1
                xs = x[a - start:b - start]
                for s in range(0, n_seg, BLOCK):
                    e = min(n_seg, s + BLOCK)
                    overflow += self._values(xs[s:e], keep[s:e], m8[s:e], buf)
                # the digest: whole bytes from the first multiple of 8 to the last
                a8 = min(b, -(-a // 8) * 8)
                b8 = max(a8, b // 8 * 8)
                if a8 > a:
                    digest.update(~keep[:a8 - a])
                if b8 > a8:
                    digest.update_packed(np.packbits(keep[a8 - a:b8 - a], bitorder="little"))
                if b > b8:
                    digest.update(~keep[b8 - a:])
                if want_drop:
                    drops.append(~keep)
                self._give(keep)
        return x, overflow, (np.concatenate(drops) if want_drop else None)

    @staticmethod
    def _cuts(start: int, stop: int, threads: int) -> list[tuple[int, int]]:
        """Segments of [start, stop): at most SEGMENT units, inner cuts on BLOCK multiples."""
        n = stop - start
        # one segment per producer thread (the calling thread consumes), or more
        # when the chunk is larger than SEGMENT
        pieces = max(threads - 1 if n >= 2 * BLOCK else 1, -(-n // SEGMENT))
        per = -(-n // pieces)
        cuts = [start]
        for k in range(1, pieces):
            c = (start + k * per + BLOCK - 1) // BLOCK * BLOCK
            if cuts[-1] < c < stop:
                cuts.append(c)
        cuts.append(stop)
        return list(zip(cuts[:-1], cuts[1:], strict=True))

    def _submit(self, ab: tuple[int, int], threads: int):
        from .pipeline import pool

        return pool(max(1, threads - 1)).submit(self._keep_job, ab)

    def _submitted(self, a: int, b: int, threads: int):
        if self._pending is None:
            self._pending = {}
        return self._pending.pop((a, b), None) or self._submit((a, b), threads)

    def _take(self, n: int) -> np.ndarray:
        free = self.__dict__.setdefault("_free", [])
        while True:
            try:
                buf = free.pop()  # atomic: producers on several threads may race here
            except IndexError:
                return np.empty(max(n, SEGMENT), dtype=bool)[:n]
            if buf.size >= n:
                return buf[:n]

    def _give(self, keep: np.ndarray) -> None:
        free = self.__dict__.setdefault("_free", [])
        if len(free) < 8:
            free.append(keep.base if keep.base is not None else keep)

    def _keep_job(self, ab: tuple[int, int]) -> tuple[int, int, np.ndarray]:
        """Keep bits of units [a, b), drawn block by block (warm 128 KiB word draws);
        the ties of the whole segment are refined at once."""
        from .streams import WordCursor, splitmix64, stream_bytes

        a, b = ab
        keep = self._take(b - a)
        t = self.t
        if not 0 < t < _M32:
            keep[...] = t <= 0
            return a, b, keep
        t_hi, t_lo = t >> 24, t & 0xFFFFFF
        eq = _scratch(0).eq
        cursor = WordCursor(self.key, a // 8)
        ties = []
        s = a
        while s < b:
            e = min(b, (s // BLOCK + 1) * BLOCK)
            bb = stream_bytes(cursor.take((e + 7) // 8 - s // 8), s, e)
            kb = keep[s - a:e - a]
            if t_lo:
                np.greater(bb, t_hi, out=kb)
                tb = np.flatnonzero(np.equal(bb, t_hi, out=eq[:e - s]))
                if tb.size:
                    ties.append(tb + (s - a))
            else:  # a tie's draw is >= 0: always kept
                np.greater_equal(bb, t_hi, out=kb)
            s = e
        if ties:
            tie = np.concatenate(ties) if len(ties) > 1 else ties[0]
            r = splitmix64(self.tie_seed, tie + a) >> np.uint64(40)
            keep[tie[r >= np.uint64(t_lo)]] = True
        return a, b, keep

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
        out, ovf = apply_chunk(xb, ~keep, self.plan)
        if out is not xb:
            np.copyto(xb, out)
        return ovf

    def _select(self, val: np.ndarray, xb: np.ndarray, m8: np.ndarray) -> None:
        """xb = val where kept (m8 == -1), the fill value where dropped: bit operations."""
        ity = self.ity
        out = xb.view(ity)
        np.bitwise_and(val.view(ity), m8, out=out)
        if self.fill_bits:
            np.bitwise_or(out, np.bitwise_and(np.invert(m8), self.fill_bits), out=out)


def _is_ml_float(dtype: np.dtype, size: int) -> bool:
    from .dtypes import is_floating

    return size in (1, 2) and is_floating(dtype) and dtype.kind != "c"


class _Scratch:
    """One thread's work arrays, reused segment after segment."""

    def __init__(self, n: int) -> None:
        self.size = n
        self.m8 = np.empty(n, dtype=np.int8)
        self.eq = np.empty(BLOCK, dtype=bool)
        self._raw = np.empty(BLOCK * 8, dtype=np.uint8)

    def values(self, dtype: np.dtype, n: int) -> np.ndarray:
        return self._raw[:n * np.dtype(dtype).itemsize].view(dtype)


_tls = threading.local()


def _scratch(n: int) -> _Scratch:
    buf = getattr(_tls, "buf", None)
    if buf is None or buf.size < n or buf.eq.size < BLOCK:
        buf = _tls.buf = _Scratch(max(n, SEGMENT))
    return buf
