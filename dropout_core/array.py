"""Dropout on a NumPy array in memory: the library's simplest entry point."""

from __future__ import annotations

import secrets

import numpy as np

from .engine import CHUNK, run_tensor
from .errors import DropoutError, UsageError
from .kernel import make_plan
from .params import DropoutParams


def new_seed() -> int:
    """A fresh seed for runs without one (reported in the stats so they can be repeated)."""
    return secrets.randbits(63)


def check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise UsageError(f"seed must be an integer, got {seed!r}")
    return int(seed)


def torch_source_for(seed: int, readahead: int = 0):
    """torch.manual_seed(seed)'s stream; a seed torch would refuse is a usage error."""
    from .torch_stream import TorchMaskSource

    if not -(2**63) <= seed < 2**64:
        raise UsageError(f"seed {seed} is outside torch.manual_seed's range [-2**63, 2**64)")
    return TorchMaskSource(seed, readahead=readahead)


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
    seed is torch's ``manual_seed``.  ``inplace=True`` writes into ``x``.

    >>> y = dropout(np.ones(6, np.float32), 0.5, seed=1)
    >>> sorted(set(y.tolist())) in ([0.0, 2.0], [2.0], [0.0])
    True
    """
    if params is None:
        params = DropoutParams(p=p, mode=mode, variant=variant, scale=scale, fill=fill,
                               channel_axis=channel_axis, share_axes=tuple(share_axes),
                               exact_count=exact_count, rng=rng)
    if not isinstance(x, np.ndarray):
        raise DropoutError(f"x must be a numpy.ndarray, got {type(x).__name__}")
    if x.dtype.hasobject:
        raise DropoutError("object arrays are not tensors; refused")
    if seed is None:
        seed = new_seed() if torch_source is None else 0
    seed = check_seed(seed)
    if chunk_size < 1:
        raise UsageError(f"chunk_size must be positive, got {chunk_size}")
    if inplace and not x.flags.writeable:
        raise DropoutError("inplace=True needs a writeable array")
    if params.rng == "torch" and torch_source is None and not params.identity and mask is None:
        torch_source = torch_source_for(seed, readahead=chunk_size)  # words overlap the math
    if (torch_source is not None and not return_stats and mask is None and not params.identity
            and params.channel_axis == 1 and 0 < params.p < 1):
        # No statistics wanted: torch_stream's fused whole-array path, the same bits
        # (both are checked against the torch goldens), about 2x faster than the chunk loop.
        from .torch_stream import torch_dropout

        make_plan(params, x.dtype, _where(file, tensor))  # the same dtype checks and errors
        y = torch_dropout(x, params.p, torch_source, variant=params.variant)
        if inplace:
            x[...] = y
            return x
        return y
    shape = x.shape
    c_contig = x.flags.c_contiguous
    flat = x.reshape(-1) if c_contig else None
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

    perm = None
    if params.rng == "torch" and not params.identity:
        from .torch_stream import memory_order_perm

        perm = memory_order_perm(x)  # torch walks memory (or stride) order, not C order
    stats = run_tensor(shape=shape, dtype=x.dtype, read=read, write=write, params=params,
                       seed=seed, file=file, tensor=tensor, where=_where(file, tensor),
                       sliced=flat is None or out_flat is None, mask=mask,
                       torch_source=torch_source, memory_order=perm, chunk=chunk_size,
                       threads=threads)
    if return_stats:
        d = stats.as_dict()
        d["seed"] = seed
        return out, d
    return out


def _in_place(chunk: np.ndarray, out_flat: np.ndarray, s: int) -> bool:
    """Is ``chunk`` already the output's elements [s, s + chunk.size)?"""
    return (chunk.dtype == out_flat.dtype and chunk.flags.c_contiguous and chunk.size > 0
            and chunk.ctypes.data == out_flat.ctypes.data + s * out_flat.itemsize)


def _where(file: str, tensor: str) -> str:
    from .errors import escape_name

    return (escape_name(file) if file else "array") + (f": tensor {escape_name(tensor)}"
                                                       if tensor else "")

