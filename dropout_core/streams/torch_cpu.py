"""torch-compatible dropout in NumPy: torch 2.13 CPU dropout, bit for bit, without torch.

What ``torch.manual_seed(s)`` followed by ``torch.nn.functional.dropout`` (and
its channel and alpha relatives) computes on the CPU, as documented in
``specs/torch-cpu-dropout.md`` and checked against real torch by the goldens in
``tests/golden/torch/`` (made by ``scripts/make_torch_golden.py``).

* :class:`TorchMaskSource` is torch's default CPU generator after
  ``manual_seed(seed)``: a serial mt19937 stream.  ``keep(n, p)`` draws the keep
  decisions of the next ``n`` elements (two 32-bit words each); calls continue
  the stream, so a chunked caller gets the same bits as one whole call.
* :func:`torch_scale`, :func:`torch_dropout_values` and
  :func:`torch_alpha_values` apply a keep mask the way torch rounds.
* :func:`torch_dropout` is the whole-array reference entry point.

The mt19937 words come from NumPy's legacy ``RandomState`` (the same
``init_genrand`` seeding as torch).  Word generation is the cost floor of this
mode; for large requests it runs on a worker thread (NumPy releases the GIL)
while the calling thread turns the previous block of words into a mask.

>>> import numpy as np
>>> torch_dropout(np.ones(6, np.float32), 0.5, 0).tolist()
[0.0, 0.0, 2.0, 0.0, 0.0, 0.0]
"""

from __future__ import annotations

import math
import operator
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from functools import partial

import ml_dtypes
import numpy as np

from ..dtypes import compute_dtype, dtype_label
from ..errors import DropoutError, UsageError
from ..kernel import ValuePlan
from ..params import ALPHA_PRIME
from ..threads import serial_worker

NAME = "torch"

__all__ = [
    "TorchMaskSource",
    "keep_threshold",
    "memory_order_perm",
    "torch_alpha_values",
    "torch_dropout",
    "torch_dropout_values",
    "torch_scale",
]

_F16 = np.dtype(np.float16)
_BF16 = np.dtype(ml_dtypes.bfloat16)
_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)
_REDUCED = (_F16, _BF16)
_SUPPORTED = (_F32, _F64, _F16, _BF16)

_MASK21 = 0x1FFFFF
# x * 0 for inf/NaN and overflow to inf are part of the contract, not accidents.
_quiet = np.errstate(invalid="ignore", over="ignore")

# Elements per block of the threaded pipeline (2 words each: 1 MiB of words).
BLOCK = 1 << 17
# Below this many elements a request is served inline, without the worker thread.
_THREAD_MIN = 2 * BLOCK
# Blocks of words generated ahead of the block being masked.
_PREFETCH = 3


# ---------------------------------------------------------------- the generator
def _seed32(seed) -> int:
    """torch.manual_seed's reduction: 64-bit two's complement, then the low 32 bits."""
    if isinstance(seed, bool):
        raise TypeError("seed must be an integer, not bool")
    try:
        s = operator.index(seed)
    except TypeError:
        raise TypeError(f"seed must be an integer, got {type(seed).__name__}") from None
    if not -(1 << 63) <= s < (1 << 64):
        # torch.manual_seed raises "Overflow when unpacking long long" here.
        raise ValueError(f"seed {s} is outside torch's range [-2**63, 2**64)")
    return (s % (1 << 64)) % (1 << 32)


def keep_threshold(p: float) -> int:
    """T with: an element is kept iff its 53-bit draw u53 < T, i.e. T = ceil((1 - p) * 2**53).

    ``1 - p`` is a double, as torch computes ``q`` for ``bernoulli_``; the
    product with 2**53 is exact, so the ceiling is too.
    """
    p = float(p)
    if not 0.0 < p < 1.0:
        raise ValueError(f"keep_threshold needs 0 < p < 1, got {p!r}")
    return math.ceil((1.0 - p) * 2.0**53)


def _worker():
    """One shared word-generating thread (FIFO, so each source's blocks stay in order)."""
    return serial_worker("torch-mt19937")


def alpha_a(p: float) -> float:
    """torch's alpha dropout constant ``a = 1 / sqrt((alpha'^2 p + 1)(1 - p))`` (spec section 6)."""
    return 1.0 / math.sqrt((ALPHA_PRIME * ALPHA_PRIME * p + 1) * (1 - p))


def _probe_pair_order() -> bool:
    """True if ``randint(0, 2**64, dtype=uint64)`` packs two words as ``first << 32 | second``.

    NumPy builds a 64-bit draw from two mt19937 words (``mt19937_next64``); the
    order is the C compiler's choice, so it is checked once against the raw
    32-bit words rather than assumed.
    """
    pairs = np.random.RandomState(12345).randint(0, 1 << 64, size=64, dtype=np.uint64)
    words = np.random.RandomState(12345).randint(0, 1 << 32, size=128, dtype=np.uint32)
    w = words.astype(np.uint64)
    if np.array_equal(pairs, (w[0::2] << np.uint64(32)) | w[1::2]):
        return True
    if np.array_equal(pairs, (w[1::2] << np.uint64(32)) | w[0::2]):
        return False
    raise RuntimeError("NumPy's 64-bit mt19937 draws are not made of two 32-bit words")


# hi-first: a uint64 draw is (hi << 32 | lo), torch's u53 is just its low 53 bits.
_HI_FIRST = _probe_pair_order()
_MASK53 = (1 << 53) - 1


def _draw_pairs(rs: np.random.RandomState, m: int) -> np.ndarray:
    """The next ``2 * m`` words as ``m`` uint64 pairs (about 25% faster than 32-bit draws)."""
    return rs.randint(0, 1 << 64, size=m, dtype=np.uint64)


def _mask_into(pairs: np.ndarray, T: int, out: np.ndarray, tmp: np.ndarray) -> None:
    """Keep decisions of ``out.size`` elements from their word pairs (see ``_draw_pairs``).

    Kept iff ``u53 = (hi & 0x1FFFFF) << 32 | lo < T``.
    """
    m = out.size
    if m == 0:
        return
    t = tmp[:m]
    if _HI_FIRST:
        np.bitwise_and(pairs, np.uint64(_MASK53), out=t)
        np.less(t, np.uint64(T), out=out)
        return
    # lo-first pairs: compare the 21 bits of hi with T's high part, and only
    # where they tie (about one element in 2**21) look at lo.
    th, tl = T >> 32, T & 0xFFFFFFFF
    np.bitwise_and(pairs, np.uint64(_MASK21), out=t)
    np.less(t, np.uint64(th), out=out)
    if tl:  # with tl == 0 a tie (lo < 0) is never kept: nothing to refine
        ties = np.flatnonzero(t == np.uint64(th))
        if ties.size:
            out[ties] = (pairs[ties] >> np.uint64(32)) < np.uint64(tl)


class TorchMaskSource:
    """Serial mt19937 stream as ``torch.manual_seed(seed)`` sets it; only moves forward.

    ``keep(n, p)`` returns the keep mask torch's ``bernoulli_(1 - p)`` would
    draw for the next ``n`` elements and advances the stream by ``2 * n`` words,
    so ``keep(a, p)`` then ``keep(b, p)`` equals ``keep(a + b, p)`` split at
    ``a`` (p may change between calls, as between torch calls).  p == 0 and
    p == 1 draw nothing in torch; callers handle them (``keep`` rejects them).

    ``words_consumed`` counts the 32-bit words handed out so far (2 per element).

    ``readahead`` (elements, default 0): after each request, generate the
    words of up to this many further elements on the worker thread, so that a
    caller that asks chunk after chunk finds them ready while it was busy
    writing the previous chunk.  It never changes a result, only when the
    words are computed; unused read-ahead words are simply never handed out.

    An instance is not meant to be used by two threads at the same time.
    """

    def __init__(self, seed: int, *, readahead: int = 0) -> None:
        self.seed32 = _seed32(seed)
        self.seed = operator.index(seed)
        self.readahead = max(0, operator.index(readahead))
        self._rs = np.random.RandomState(self.seed32)  # legacy init_genrand(seed32)
        self._words = 0
        # Pairs already drawn from _rs but not handed out, in stream order:
        # [ndarray or Future of ndarray, number of pairs].
        self._queue: deque[list] = deque()
        self._queued = 0
        self._tmp = np.empty(0, np.uint64)

    def __repr__(self) -> str:
        return f"TorchMaskSource(seed={self.seed}, words_consumed={self._words})"

    @property
    def words_consumed(self) -> int:
        return self._words

    # -- pairs of words, in stream order
    def _pair_chunks(self, n: int, block: int) -> Iterator[np.ndarray]:
        """The word pairs of the next ``n`` elements, as consecutive uint64 arrays.

        Read-ahead pairs come first; then fresh ones, drawn inline for small
        requests and on the worker thread, ``_PREFETCH`` blocks ahead, for
        large ones.  A pair is counted in ``words_consumed`` when yielded; if
        the consumer stops early, pairs already drawn stay queued for the next
        request, so the stream never skips a word.
        """
        need = n
        while need and self._queue:
            item = self._queue[0]
            arr = item[0].result() if isinstance(item[0], Future) else item[0]
            m = min(need, item[1], block)
            if m == item[1]:
                self._queue.popleft()
            else:
                item[0], item[1] = arr[m:], item[1] - m
            self._queued -= m
            need -= m
            self._words += 2 * m
            yield arr[:m]
        if need == 0:
            return
        if need < max(_THREAD_MIN, 2 * block):
            while need:  # the queue is empty: every earlier future has been waited for
                m = min(block, need)
                arr = _draw_pairs(self._rs, m)
                need -= m
                self._words += 2 * m
                yield arr
            return
        ex = _worker()
        todo = need

        def submit() -> None:
            nonlocal todo
            if todo:
                m = min(block, todo)
                todo -= m
                self._queue.append([ex.submit(_draw_pairs, self._rs, m), m])
                self._queued += m

        for _ in range(_PREFETCH):
            submit()
        while need:
            fut, m = self._queue.popleft()
            arr = fut.result()
            self._queued -= m
            submit()
            need -= m
            self._words += 2 * m
            yield arr

    def _top_up(self) -> None:
        """Start drawing read-ahead pairs on the worker thread (after all earlier draws)."""
        if self._queued >= self.readahead:
            return
        ex = _worker()
        while self._queued < self.readahead:
            m = min(BLOCK, self.readahead - self._queued)
            self._queue.append([ex.submit(_draw_pairs, self._rs, m), m])
            self._queued += m

    def words(self, count: int) -> np.ndarray:
        """The next ``count`` raw mt19937 words (count even: whole elements), as torch sees them."""
        count = operator.index(count)
        if count < 0 or count % 2:
            raise ValueError("count must be an even number >= 0 (two words per element)")
        out = np.empty(count, np.uint32)
        at = 0
        for arr in self._pair_chunks(count // 2, 1 << 22):
            first, second = arr >> np.uint64(32), arr & np.uint64(0xFFFFFFFF)
            if not _HI_FIRST:
                first, second = second, first
            out[at:at + 2 * arr.size:2] = first
            out[at + 1:at + 2 * arr.size:2] = second
            at += 2 * arr.size
        self._top_up()
        return out

    def skip(self, n: int) -> None:
        """Advance past ``n`` elements (``2 * n`` words) without computing their mask."""
        n = operator.index(n)
        if n < 0:
            raise ValueError("n must be >= 0")
        for _ in self._pair_chunks(n, 1 << 22):
            pass
        self._top_up()

    def _buffer(self, m: int) -> np.ndarray:
        if self._tmp.size < m:
            self._tmp = np.empty(m, np.uint64)
        return self._tmp

    # -- keep masks
    def blocks(self, n: int, p: float, block: int = BLOCK) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, keep)`` for consecutive blocks covering the next ``n`` elements.

        Each ``keep`` is a fresh bool array of at most ``block`` elements.  For
        large ``n`` the words of later blocks are generated on a worker thread
        while the caller works on the current block.  Elements of blocks not
        yet yielded when the caller stops early are not consumed.
        """
        n = operator.index(n)
        if n < 0:
            raise ValueError("n must be >= 0")
        T = keep_threshold(p)
        block = max(1, int(block))
        tmp = self._buffer(min(block, n))
        s = 0
        for pairs in self._pair_chunks(n, block):
            out = np.empty(pairs.size, bool)
            _mask_into(pairs, T, out, tmp)
            yield s, out
            s += pairs.size
        self._top_up()

    def keep(self, n: int, p: float) -> np.ndarray:
        """Bool keep mask of the next ``n`` elements (consumes exactly ``2 * n`` words)."""
        n = operator.index(n)
        out = np.empty(n, bool)
        for s, k in self.blocks(n, p):
            out[s:s + k.size] = k
        return out

    @_quiet
    def dropout_flat(self, x: np.ndarray, p: float, out: np.ndarray | None = None) -> np.ndarray:
        """Element dropout of ``x`` walked in C order, fused with the mask draw.

        Same result as ``torch_dropout_values(x, self.keep(x.size, p).reshape(x.shape), p)``
        but block by block, overlapping the arithmetic with word generation.
        Handles 0 < p < 1 only.  ``out`` (optional) must have ``x``'s shape and dtype.
        """
        x = np.asarray(x)
        dt = _check_dtype(x.dtype)
        xf = np.ascontiguousarray(x).reshape(-1)
        if out is None:
            out = np.empty(x.shape, dt)
        elif out.shape != x.shape or out.dtype != dt:
            raise ValueError("out must have x's shape and dtype")
        of = out.reshape(-1)  # a view when out is C-contiguous
        s_val = torch_scale(p, dt)
        finite = bool(np.isfinite(s_val))
        tmp32 = None
        for s, k in self.blocks(xf.size, p):
            e = s + k.size
            if dt in _REDUCED:
                if tmp32 is None:
                    tmp32 = np.empty(min(BLOCK, xf.size), _F32)
                t = tmp32[:k.size]
                t[...] = xf[s:e]
                if finite:
                    np.multiply(t, k, out=t)
                    np.multiply(t, s_val, out=t)
                else:
                    np.multiply(t, np.where(k, s_val, np.float32(0)), out=t)
                of[s:e] = t
            else:
                np.multiply(xf[s:e], k, out=of[s:e])
                np.multiply(of[s:e], s_val, out=of[s:e])
        if not np.shares_memory(of, out):
            out[...] = of.reshape(x.shape)
        return out


# ---------------------------------------------------------------- arithmetic
def _check_dtype(dtype) -> np.dtype:
    dt = np.dtype(dtype)
    if dt.byteorder not in "=|" and dt.kind == "f":
        dt = dt.newbyteorder("=")
    if dt not in _SUPPORTED:
        raise TypeError(f"torch-compatible dropout supports float32, float64, float16 and "
                        f"bfloat16, not {dt}")
    return dt


def _compute(dt: np.dtype) -> np.dtype:
    return _F64 if dt == _F64 else _F32


def torch_scale(p: float, dtype) -> np.floating:
    """The kept noise value s of ``noise.div_(1 - p)`` (spec section 4), in the compute dtype.

    float32/float64: ``T(1) / T(1 - p)`` with ``1 - p`` taken in double.
    float16/bfloat16: ``T(float32(1) / float32(1 - p))``, returned as float32
    (it may be inf for float16 with p close to 1).
    """
    dt = _check_dtype(dtype)
    q = 1.0 - float(p)
    if dt == _F64:
        return np.float64(1.0) / np.float64(q)
    if dt == _F32:
        return np.float32(1.0) / np.float32(q)
    with np.errstate(over="ignore"):
        return np.float32(dt.type(np.float32(1.0) / np.float32(q)))


@_quiet
def torch_dropout_values(x: np.ndarray, keep: np.ndarray, p: float) -> np.ndarray:
    """``x * noise`` with noise in {s, +0.0} (spec section 4); returns x's dtype.

    ``keep`` is a bool mask broadcastable to ``x``.  A dropped negative gives
    -0.0, a dropped inf or NaN gives NaN.  float16/bfloat16 are computed in
    float32 and rounded once.
    """
    x = np.asarray(x)
    dt = _check_dtype(x.dtype)
    keep = np.asarray(keep, dtype=bool)
    s = torch_scale(p, dt)
    if dt in _REDUCED:
        xf = x.astype(_F32)
        if np.isfinite(s):
            xf *= keep  # x*1 == x and x*0 == x*(+0): the same bits as x*noise
            xf *= s
        else:
            xf *= np.where(keep, s, np.float32(0))
        return xf.astype(dt)
    out = np.multiply(x.astype(dt, copy=False), keep)
    out *= s
    return out


@_quiet
def torch_alpha_values(x: np.ndarray, keep: np.ndarray, p: float) -> np.ndarray:
    """Alpha dropout's arithmetic (spec section 6), each step rounded in x's dtype.

    ``b = ((noise - 1) * C(alpha' a)) + C(alpha' a p)``, ``noise = noise * C(a)``,
    ``out = x * noise + b``, with noise the 0/1 keep mask broadcastable to x and
    C the compute dtype (float64 for float64, float32 otherwise: torch hands
    scalars to reduced-precision kernels as float32).
    """
    x = np.asarray(x)
    dt = _check_dtype(x.dtype)
    ct = _compute(dt).type
    keep = np.asarray(keep, dtype=bool)
    p = float(p)
    a = alpha_a(p)
    c1, c2 = ct(ALPHA_PRIME * a), ct(ALPHA_PRIME * a * p)

    def r(v):  # round a compute-dtype result to T (a no-op for float32/float64)
        return v if dt == _compute(dt) else v.astype(dt).astype(ct)

    # noise is 0 or 1, so b and the scaled noise take two values each: run the
    # steps above on [0, 1] once, then pick per element (same bits, fewer passes).
    n01 = np.array([0, 1], ct)
    b01 = r(r(r(n01 - ct(1)) * c1) + c2)
    s01 = r(n01 * ct(a))
    noise = np.multiply(keep, s01[1])  # s01[0] is 0 * a == +0
    b = b01[keep.view(np.uint8)]  # a table look-up beats np.where with scalars
    xc = x.astype(ct, copy=False)
    if dt == _compute(dt):
        out = np.multiply(xc, noise)
        out += b
        return out
    return r(r(xc * noise) + b).astype(dt)


# ---------------------------------------------------------------- memory order
def _infer_dense_perm(shape: tuple[int, ...], strides: tuple[int, ...]) -> list[int]:
    """ATen's infer_dense_strides ordering: the axes innermost first.

    ``empty_like`` (preserve format) gives a dense, non-overlapping tensor its
    own strides and any other strided tensor dense strides "which keep the
    layout permutation of the input"; both are this order.  A stable insertion
    sort by stride, starting from C order's innermost-first guess; equal
    strides put the larger axis outside; zero strides are ambiguous and never
    force a move.
    """
    ndim = len(shape)
    perm = list(range(ndim - 1, -1, -1))

    def should_swap(d0: int, d1: int) -> int:
        s0, s1 = strides[d0], strides[d1]
        if s0 == 0 or s1 == 0:
            return 0
        if s0 < s1:
            return -1
        if s0 > s1:
            return 1
        return 1 if shape[d0] > shape[d1] else 0

    for i in range(1, ndim):
        dim1 = i
        for j in range(1, i + 1):
            dim0 = i - j
            c = should_swap(perm[dim0], perm[dim1])
            if c > 0:
                perm[dim0], perm[dim1] = perm[dim1], perm[dim0]
                dim1 = dim0
            elif c < 0:
                break
    return perm


def memory_order_perm(x: np.ndarray) -> tuple[int, ...] | None:
    """The axis order in which torch walks ``empty_like(torch.from_numpy(x))`` (None: C order).

    ``x.transpose(perm)`` walked in C order visits the elements in torch's
    mask order.  A dense x is walked in memory order (a Fortran-ordered x in
    Fortran order); a non-dense one (a strided slice) in the order of its
    strides, as ATen's ``infer_dense_strides`` lays out the noise tensor.
    Negative strides (which ``torch.from_numpy`` refuses) count as C order.
    """
    shape = x.shape
    if x.ndim < 2 or x.flags.c_contiguous or x.size == 0:
        return None
    if any(st < 0 for st in x.strides):
        return None
    inner_first = _infer_dense_perm(shape, x.strides)
    perm = tuple(inner_first[::-1])
    # Size-1 axes do not change the walk: no permutation if the rest is in C order.
    if [k for k in perm if shape[k] > 1] == [k for k in range(x.ndim) if shape[k] > 1]:
        return None
    return perm


# ---------------------------------------------------------------- whole arrays
_VARIANTS = {
    "element": "element", "dropout": "element",
    "channel": "channel", "feature_dropout": "channel",
    "dropout1d": "dropout1d", "dropout2d": "dropout2d", "dropout3d": "dropout3d",
    "alpha": "alpha", "alpha_dropout": "alpha",
    "feature-alpha": "feature-alpha", "feature_alpha_dropout": "feature-alpha",
}


@_quiet
def _times_zero(x: np.ndarray) -> np.ndarray:
    """``x * 0`` as torch computes it for p == 1: finite -> +-0, inf/NaN -> NaN."""
    dt = _check_dtype(x.dtype)
    if dt in _REDUCED:
        return (x.astype(_F32) * np.float32(0)).astype(dt)
    return x.astype(dt, copy=False) * dt.type(0)


def torch_dropout(x: np.ndarray, p: float, seed, *, variant: str = "element",
                  training: bool = True) -> np.ndarray:
    """What ``torch.manual_seed(seed); F.<variant>(torch.from_numpy(x), p, training)`` returns.

    ``seed`` is an int (a fresh stream) or a :class:`TorchMaskSource` (continue
    it, as consecutive torch calls do).  ``variant``:

    * ``"element"`` (``"dropout"``): ``F.dropout``; the mask follows x's memory
      order (a Fortran-ordered x is walked in Fortran order, as torch does).
    * ``"channel"`` (``"feature_dropout"``): one keep decision per (n, c) of an
      (N, C, *spatial) input, drawn in (n, c) row-major order: torch's
      ``feature_dropout``.  ``"dropout1d"``, ``"dropout2d"``, ``"dropout3d"``
      add the F-function wrappers (dropout1d on 2-D and dropout3d on 4-D input
      treat it as unbatched; dropout2d takes 3-D input as (N, C, L)).
    * ``"alpha"`` (``"alpha_dropout"``) and ``"feature-alpha"``
      (``"feature_alpha_dropout"``).  Note that ``F.alpha_dropout`` and
      ``F.feature_alpha_dropout`` default to ``training=False``; here the
      default is True for every variant.

    p == 0, ``training=False`` or an empty x: x comes back (a copy) and no
    words are drawn.  p == 1: ``x * 0``, no words drawn.
    """
    x = np.asarray(x)
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    try:
        kind = _VARIANTS[variant]
    except KeyError:
        raise ValueError(f"unknown variant {variant!r}; one of {sorted(set(_VARIANTS))}") \
            from None
    _check_dtype(x.dtype)
    src = seed if isinstance(seed, TorchMaskSource) else TorchMaskSource(seed)

    if kind == "dropout1d":
        if x.ndim not in (2, 3):
            raise ValueError(f"dropout1d: Expected 2D or 3D input, but received a {x.ndim}D "
                             "input.")
        if x.ndim == 2:
            return torch_dropout(x[None], p, src, variant="channel", training=training)[0]
        kind = "channel"
    elif kind == "dropout2d":
        kind = "channel"  # 3-D input is taken as (N, C, L), as torch does (with a warning)
    elif kind == "dropout3d":
        if x.ndim == 4:
            return torch_dropout(x[None], p, src, variant="channel", training=training)[0]
        kind = "channel"

    if p == 0.0 or not training or x.size == 0:
        return x.copy(order="K")
    if p == 1.0:
        return _times_zero(x)

    if kind in ("channel", "feature-alpha"):
        if x.ndim < 2:
            raise ValueError("Feature dropout requires at least 2 dimensions in the input")
        n, c = x.shape[0], x.shape[1]
        keep = src.keep(n * c, p).reshape((n, c) + (1,) * (x.ndim - 2))
        if kind == "channel":
            return torch_dropout_values(x, keep, p)
        return torch_alpha_values(x, keep, p)

    perm = memory_order_perm(x)
    xt = x if perm is None else x.transpose(perm)
    if kind == "element":
        out = src.dropout_flat(xt, p)
    else:
        keep = src.keep(xt.size, p).reshape(xt.shape)
        out = torch_alpha_values(xt, keep, p)
    return out if perm is None else out.transpose(np.argsort(perm))


# ---------------------------------------------------------------- the stream interface
# What the rest of the library sees of this mode (streams/__init__.py lists it).

SUPPORTED_DTYPES = ("bfloat16", "float16", "float32", "float64")


def effective_p(p: float) -> float:
    """The drop probability of ``bernoulli_(1 - p)``: 1 - ceil((1 - p) 2**53) / 2**53."""
    if p >= 1.0:
        return 1.0
    if p <= 0.0:
        return 0.0
    return 1.0 - keep_threshold(p) / 2.0**53


def check_params(params) -> None:
    """What torch's own functions cannot do (a usage error, named in the params' words)."""
    if params.exact_count or params.share_axes:
        raise UsageError(f"{params.say('rng_torch')} reproduces torch's own functions; "
                         f"{params.say('exact_count')} and {params.say('share_axes')} have "
                         "no torch counterpart")
    if params.fill is not None or not params.scale:
        raise UsageError(f"{params.say('rng_torch')} computes exactly what torch does; "
                         f"{params.say('fill')} and {params.say('no_scale')} are not "
                         "available with it")


def value_plan(params, dtype: np.dtype, where: str) -> ValuePlan:
    """torch's value rules: x * noise with torch's rounding, or alpha's affine steps."""
    if dtype_label(dtype) not in SUPPORTED_DTYPES:
        raise DropoutError(f"{where}: rng torch supports {', '.join(SUPPORTED_DTYPES)}, "
                           f"not {dtype_label(dtype)}")
    cd = compute_dtype(dtype)
    p = params.p
    if p >= 1.0:
        return ValuePlan("custom", dtype, cd, p, fn=_times_zero_masked)
    if params.is_alpha:
        a = alpha_a(p)
        return ValuePlan("custom", dtype, cd, p, a=cd.type(a), b=cd.type(ALPHA_PRIME * a * p),
                         fn=partial(_alpha_masked, p=p))
    return ValuePlan("custom", dtype, cd, p, scale=torch_scale(p, dtype),
                     fn=partial(_dropout_masked, p=p))


def _dropout_masked(x: np.ndarray, keep: np.ndarray, p: float) -> np.ndarray:
    return torch_dropout_values(x, keep, p)


def _alpha_masked(x: np.ndarray, keep: np.ndarray, p: float) -> np.ndarray:
    return torch_alpha_values(x, keep, p)


def _times_zero_masked(x: np.ndarray, keep: np.ndarray) -> np.ndarray:
    return _times_zero(x)


def file_state(seed: int) -> TorchMaskSource:
    """One file's tensors continue one generator: torch.manual_seed(seed)'s stream."""
    if not -(2**63) <= seed < 2**64:
        raise UsageError(f"seed {seed} is outside torch.manual_seed's range [-2**63, 2**64)")
    return TorchMaskSource(seed, readahead=1 << 20)


class TorchUnits:
    """torch's serial mt19937 stream for one tensor: units must be asked for in order."""

    serial = True

    def __init__(self, gen: TorchMaskSource, p: float) -> None:
        self.gen, self.p, self.pos = gen, p, 0

    def keep(self, u0: int, u1: int, out: np.ndarray | None = None) -> np.ndarray:
        if u0 != self.pos:
            raise AssertionError("the torch stream only moves forward")
        self.pos = u1
        keep = self.gen.keep(u1 - u0, self.p)
        if out is None:
            return keep
        out[...] = keep
        return out


class AllDropped:
    """Every unit dropped: torch at p = 1 computes ``x * 0`` and draws nothing."""

    serial = False

    def keep(self, u0: int, u1: int, out: np.ndarray | None = None) -> np.ndarray:
        if out is None:
            return np.zeros(u1 - u0, dtype=bool)
        out[...] = False
        return out


def source(params, seed: int, file: str, tensor: str, units: int, state=None):
    """The next tensor's part of the file's generator ``state``."""
    if params.p >= 1.0:  # torch computes x * 0 and draws nothing
        return AllDropped()
    return TorchUnits(state, params.p)


def whole_array(x: np.ndarray, params, state: TorchMaskSource) -> np.ndarray | None:
    """The fused whole-array path (no statistics wanted), or None where it does not apply.

    The same bits as the chunk loop (both are checked against the torch goldens),
    about 2x faster.
    """
    if params.channel_axis != 1 or not 0 < params.p < 1:
        return None
    return torch_dropout(x, params.p, state, variant=params.variant)
