"""Dropout on a NumPy array in memory: ``dropout()``, and ``Dropout`` for data loaders."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from .engine import CHUNK, run_tensor
from .errors import DropoutError, UsageError
from .kernel import kernel_for
from .params import DropoutParams
from .plan import plan_tensor
from .seeds import resolve_seed

SMALL = 1 << 16  # elements: below this, dropout() is one kernel call (per-sample work)


def dropout(x: np.ndarray, p: float = 0.5, *, seed: int | None = None, file: str = "",
            tensor: str = "", mode: str = "train", inplace: bool = False,
            variant: str = "element", scale: bool = True, fill: float | None = None,
            channel_axis: int = 1, share_axes: tuple[int, ...] = (), exact_count: bool = False,
            rng: str = "default", mask: np.ndarray | None = None, chunk_size: int = CHUNK,
            return_stats: bool = False, params: DropoutParams | None = None,
            torch_source=None, threads: int | None = None):
    """Apply dropout to ``x``; the same bits the CLI writes for the same key.

    The mask of the default stream is keyed by ``(seed, file, tensor)``: the CLI
    uses the input file's base name and the tensor's name ("" in a .npy file),
    so ``dropout(np.load("x.npy"), 0.3, seed=7, file="x.npy")`` equals
    ``tensor-dropout apply x.npy -p 0.3 --seed 7``.  With ``rng="torch"`` the
    seed is torch's ``manual_seed`` (``torch_source``, a TorchMaskSource,
    continues a stream instead).  ``inplace=True`` writes into ``x``.

    >>> y = dropout(np.ones(6, np.float32), 0.5, seed=1)
    >>> sorted(set(y.tolist())) in ([0.0, 2.0], [2.0], [0.0])
    True
    """
    if params is None:
        params = _params(p, mode, variant, scale, fill, channel_axis, tuple(share_axes),
                         exact_count, rng)
    if not isinstance(x, np.ndarray):
        raise DropoutError(f"x must be a numpy.ndarray, got {type(x).__name__}")
    if x.dtype.hasobject:
        raise DropoutError("object arrays are not tensors; refused")
    draws = not params.identity and mask is None
    if torch_source is not None:  # the stream it continues was seeded with its own seed
        if seed is not None and seed != torch_source.seed:
            raise UsageError(f"seed={seed} and torch_source (seeded with {torch_source.seed}) "
                             "disagree; give one of them")
        seed = torch_source.seed
    seed = resolve_seed(seed, needed=draws)
    if chunk_size < 1:
        raise UsageError(f"chunk_size must be positive, got {chunk_size}")
    if inplace and not x.flags.writeable:
        raise DropoutError("inplace=True needs a writeable array")
    stream = params.stream_module()
    memory_order = None
    if draws and hasattr(stream, "memory_order_perm"):
        memory_order = stream.memory_order_perm(x)  # torch walks memory (or stride) order
    plan = plan_tensor(x.shape, x.dtype, params, seed, file, tensor, mask=mask,
                       memory_order=memory_order)
    state = None
    if draws and hasattr(stream, "file_state"):
        state = torch_source if torch_source is not None else stream.file_state(seed)
    if draws and not return_stats and hasattr(stream, "whole_array"):
        y = stream.whole_array(x, params, state)
        if y is not None:
            if inplace:
                x[...] = y
                return x
            return y
    plan = plan.bind(state)
    if not return_stats and x.size <= SMALL and not plan.identity and not plan.broadcast \
            and not plan.source.serial:
        # One chunk, no statistics: the plan's keep bits and value rule, without the engine's
        # chunk loop, threads and counters (the same bits: tests/test_invariance.py).
        out = x if inplace else np.array(x, order="C", copy=True)
        flat = out.reshape(-1) if out.flags.c_contiguous else np.ascontiguousarray(out).reshape(-1)
        kernel_for(plan.values).apply(flat, plan.source.keep(0, flat.size))
        if not np.shares_memory(flat, out):
            out[...] = flat.reshape(out.shape)
        return out
    shape = x.shape
    flat = x.reshape(-1) if x.flags.c_contiguous else None
    out = x if inplace else np.empty(shape, dtype=x.dtype)
    out_flat = out.reshape(-1) if out.flags.c_contiguous else None

    def read(s: int, e: int, idx) -> np.ndarray:
        if flat is not None:
            if inplace or out_flat is None:
                return flat[s:e] if inplace else flat[s:e].copy()
            dst = out_flat[s:e]  # one copy: the kernel then works in the output itself
            np.copyto(dst, flat[s:e])
            return dst
        return np.array(x[idx], copy=True).reshape(-1)

    def write(s: int, chunk: np.ndarray, idx) -> None:
        if idx is None:
            if not _in_place(chunk, out_flat, s):
                out_flat[s:s + chunk.size] = chunk
        else:
            view = out[idx]
            view[...] = chunk.reshape(view.shape)

    stats = run_tensor(plan, read, write, sliced=flat is None or out_flat is None,
                       chunk=chunk_size, threads=threads)
    if return_stats:
        d = stats.as_dict()
        d["seed"] = seed
        return out, d
    return out


def _in_place(chunk: np.ndarray, out_flat: np.ndarray, s: int) -> bool:
    """Is ``chunk`` already the output's elements [s, s + chunk.size)?"""
    return (chunk.dtype == out_flat.dtype and chunk.flags.c_contiguous and chunk.size > 0
            and chunk.ctypes.data == out_flat.ctypes.data + s * out_flat.itemsize)



@functools.lru_cache(maxsize=64)
def _params(*args) -> DropoutParams:
    """DropoutParams for ``dropout``'s keywords, validated once per combination."""
    p, mode, variant, scale, fill, channel_axis, share_axes, exact_count, rng = args
    return DropoutParams(p=p, mode=mode, variant=variant, scale=scale, fill=fill,
                         channel_axis=channel_axis, share_axes=share_axes,
                         exact_count=exact_count, rng=rng)


@dataclass(frozen=True)
class Dropout:
    """Dropout as a per-sample transform for data pipelines: ``transform(x, key=i)``.

    The mask depends only on ``(seed, key, the array's shape)``: never on the
    worker, the order of calls or how many workers a loader runs.  ``key`` (an
    index or a name) is the file part of the stream key, so
    ``Dropout(p, seed=s)(x, key="x.npy")`` equals
    ``tensor-dropout apply x.npy -p P --seed S``.  Picklable: it travels to
    loader workers.  (The torch stream is one sequence per seed and cannot be
    keyed by sample, so it is not offered here.)

    >>> t = Dropout(p=0.5, seed=7)
    >>> x = np.ones(8, np.float32)
    >>> bool((t(x, key=3) == t(x, key=3)).all())
    True
    """

    p: float = 0.5
    seed: int = 0
    variant: str = "element"
    mode: str = "train"
    scale: bool = True
    fill: float | None = None
    channel_axis: int = 1
    share_axes: tuple[int, ...] = ()
    exact_count: bool = False
    params: DropoutParams = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from .seeds import check_seed

        object.__setattr__(self, "seed", check_seed(self.seed))
        object.__setattr__(self, "share_axes", tuple(self.share_axes))
        object.__setattr__(self, "params", _params(
            self.p, self.mode, self.variant, self.scale, self.fill, self.channel_axis,
            self.share_axes, self.exact_count, "default"))

    def __call__(self, x: np.ndarray, key: int | str = "", *, tensor: str = "",
                 inplace: bool = False) -> np.ndarray:
        """``x`` with this sample's mask: the same for the same (seed, key, shape)."""
        if isinstance(key, bool) or not isinstance(key, (int, np.integer, str)):
            raise UsageError(f"key must be an index or a name, got {key!r}")
        return dropout(x, params=self.params, seed=self.seed, file=str(key), tensor=tensor,
                       inplace=inplace)
