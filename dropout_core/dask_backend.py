"""Dropout on a Dask cluster: the same bits as one process, for big arrays and many files.

Needs the optional extra (``pip install 'tensor-dropout[dask]'``); dask is
imported inside the functions, so ``import dropout_core`` never needs it.

* ``dropout_dask(arr, p, seed=..., file=..., tensor=...)``: a dask array whose
  blocks each compute their own part of ``dropout(arr.compute(), ...)`` from
  their position (the default stream is counter based), with any chunking.
* ``tensor_array(path, tensor)``: a tensor of a file as a dask array whose
  blocks read their own bytes (so ``dropout_dask`` of it is what the CLI writes).
* ``map_files(paths, client, out_dir=..., params=..., seed=...)``: the file
  API over a cluster (distributed futures) or a dask.bag; each output is the
  file the CLI writes, and the stats are one document, as ``apply_files`` returns.
"""

from __future__ import annotations

import contextlib
import operator
import os
from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np

from .engine import CHUNK, dropout_block_counted, mask_stats
from .errors import DropoutError, UsageError, escape_name
from .params import DropoutParams
from .plan import TensorPlan, plan_tensor
from .seeds import resolve_seed
from .units import replayed_mask

CONNECT_TIMEOUT = 10.0  # seconds to reach a scheduler, and to wait for its first worker
TIMEOUT_ENV = "TENSOR_DROPOUT_DASK_TIMEOUT"  # overrides CONNECT_TIMEOUT (seconds)
EXTRA = "pip install 'tensor-dropout[dask]' (or: pip install 'dask[array]' distributed)"


def _need(module: str):
    """Import a part of dask, or say which extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise DropoutError(f"this needs the optional Dask extra ({e.name} is not installed): "
                           f"{EXTRA}") from None


# --------------------------------------------------------------------------- arrays


def dropout_dask(arr, p: float = 0.5, *, seed: int | None = None, file: str = "",
                 tensor: str = "", mode: str = "train", inplace: bool = False,
                 variant: str = "element", scale: bool = True, fill: float | None = None,
                 channel_axis: int = 1, share_axes: tuple[int, ...] = (),
                 exact_count: bool = False, rng: str = "default", mask: np.ndarray | None = None,
                 chunk_size: int = CHUNK, return_stats: bool = False,
                 params: DropoutParams | None = None, torch_source=None):
    """``dropout`` for a dask array: a lazy array with the same bits, for any chunking.

    Every block computes its own part from its position, so no block waits on
    another.  The options are ``dropout``'s; ``chunk_size`` bounds the work
    inside one block.  ``return_stats=True`` returns ``(array, stats)`` where
    ``stats`` is a ``dask.delayed`` dict equal to what ``dropout(...,
    return_stats=True)`` reports; compute both together
    (``dask.compute(y, stats)``) so the blocks run once.

    ``exact_count`` finds its global threshold here, once, while building the
    graph (two passes over the mask's keys, no data); the blocks only compare
    against it.  ``rng="torch"`` is refused whenever it would draw: torch's
    stream is serial.

    >>> import dask.array as da, numpy as np
    >>> from dropout_core import dropout
    >>> x = np.arange(1.0, 101.0).reshape(10, 10)
    >>> y = dropout_dask(da.from_array(x, chunks=(3, 7)), 0.3, seed=5, file="x.npy")
    >>> bool((y.compute() == dropout(x, 0.3, seed=5, file="x.npy")).all())
    True
    """
    da = _need("dask.array")
    if params is None:
        params = DropoutParams(p=p, mode=mode, variant=variant, scale=scale, fill=fill,
                               channel_axis=channel_axis, share_axes=tuple(share_axes),
                               exact_count=exact_count, rng=rng)
    if not isinstance(arr, da.Array):
        raise DropoutError(f"arr must be a dask.array.Array, got {type(arr).__name__}; "
                           "use dropout() for NumPy arrays")
    if arr.dtype.hasobject:
        raise DropoutError("object arrays are not tensors; refused")
    if inplace:
        raise UsageError("dask arrays are immutable: inplace=True is not available; use the "
                         "returned array (e.g. store it with .to_zarr or da.store)")
    if torch_source is not None:
        raise UsageError("torch_source is a serial stream and cannot be shared by Dask blocks")
    if any(c != c for c in arr.shape):  # NaN: unknown chunk sizes
        raise UsageError("the array's chunk sizes are unknown, so blocks cannot know their "
                         "position; call arr.compute_chunk_sizes() first")
    if chunk_size < 1:
        raise UsageError(f"chunk_size must be positive, got {chunk_size}")
    if seed is None and params.rng == "torch" and mask is None and not params.identity:
        raise UsageError("rng='torch' needs an explicit seed (torch.manual_seed)")
    seed = resolve_seed(seed, needed=True)
    mask_np = None if mask is None else np.asarray(mask)
    tp = plan_tensor(arr.shape, arr.dtype, params, seed, file, tensor, mask=mask_np)
    if mask_np is not None:
        tp = replace(tp, source=None)  # each block gets its part of the mask, not all of it
    elif not tp.identity:
        tp = tp.bind()  # once, here: exact count's threshold is found before the graph
        if tp.source.serial:
            raise UsageError(
                f"{tp.where}: rng='torch' is a serial stream (each decision depends on every "
                "draw before it), so blocks cannot compute their parts independently; use "
                "rng='default', or compute the whole array in one process with "
                "dropout(arr.compute(), rng='torch', ...)")
    if tp.mask_shape is None:  # eval or p = 0: the input, bit for bit (dask arrays never change)
        return (arr, _delayed_stats(tp, None, 0)) if return_stats else arr
    from dask.base import tokenize

    token = tokenize(arr.name, repr(params), seed, file, tensor, chunk_size,
                     None if mask_np is None else tokenize(mask_np))
    meta = np.empty((0,) * arr.ndim, dtype=arr.dtype)
    args: list = [arr]
    if mask_np is not None:
        args.append(_mask_blocks(da, mask_np, tp, arr.chunks))
    if not return_stats:
        return da.map_blocks(_block, *args, tp=tp, chunk_size=chunk_size,
                             name=f"dropout-{token}", dtype=arr.dtype, meta=meta)
    # One task per block yields (output, overflow); two views of it share the work.
    pairs = da.map_blocks(_block_pair, *args, tp=tp, chunk_size=chunk_size,
                          name=f"dropout-pair-{token}", dtype=arr.dtype, meta=meta)
    out = pairs.map_blocks(operator.itemgetter(0), name=f"dropout-{token}", dtype=arr.dtype,
                           meta=meta)
    ones = tuple((1,) * len(c) for c in arr.chunks)
    over = pairs.map_blocks(_overflow_of, ndim=arr.ndim, chunks=ones, dtype=np.int64,
                            name=f"dropout-overflow-{token}",
                            meta=np.empty((0,) * arr.ndim, dtype=np.int64))
    return out, _delayed_stats(tp, mask_np, over.sum())


def tensor_array(path: str, tensor: str = "", *, chunks="auto"):
    """One tensor of a .npy or .safetensors file as a lazy dask array, read where it is used.

    The header is checked here; each block then reads only its own part of the
    file (through a memory map, in C order whatever the file's order), so the
    workers need the same path (a shared file system) and nothing but the
    block crosses the network.  ``tensor`` names a safetensors tensor ("" for a
    .npy file's array).  With ``file=os.path.basename(path)`` and the same
    ``tensor``, ``dropout_dask`` of it is what the CLI writes for that tensor.
    """
    da = _need("dask.array")
    if path == "-":
        raise UsageError("a dask array reads its blocks from a file; stdin (-) cannot be one")
    from dask.base import tokenize

    from .formats import open_tensor_file

    with open_tensor_file(path) as tf:
        if not tf.named:
            info = tf.tensors[0]
        else:
            found = [t for t in tf.tensors if t.name == tensor]
            if not found:
                names = ", ".join(escape_name(t.name) for t in tf.tensors[:10])
                raise DropoutError(f"{escape_name(path)}: no tensor named {escape_name(tensor)} "
                                   f"(it has: {names}{', ...' if len(tf.tensors) > 10 else ''})")
            info = found[0]
        real = os.path.abspath(tf.real_path)
        st = os.stat(real)
    source = _FileTensor(real, info.dtype, info.shape, info.offset, info.fortran_order)
    name = "tensor-" + tokenize(real, info.name, info.offset, st.st_size, st.st_mtime_ns)
    return da.from_array(source, chunks=chunks, name=name, lock=False, asarray=False,
                         meta=np.empty((0,) * len(info.shape), dtype=info.dtype))


class _FileTensor:
    """An array-like over one tensor's bytes in a file; indexing reads just those bytes."""

    def __init__(self, path: str, dtype: np.dtype, shape: tuple, offset: int, fortran: bool):
        self.path, self.dtype, self.shape = path, np.dtype(dtype), tuple(shape)
        self.offset, self.fortran, self.ndim = offset, fortran, len(shape)

    def __getitem__(self, key) -> np.ndarray:
        n = 1
        for d in self.shape:
            n *= d
        if n == 0:
            return np.empty(self.shape, self.dtype)[key].copy()
        mm = np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset, shape=(n,))
        view = mm.reshape(self.shape[::-1]).T if self.fortran else mm.reshape(self.shape)
        return np.array(view[key], order="C")


def _location(block_info) -> tuple[slice, ...]:
    return tuple(slice(a, b) for a, b in block_info[0]["array-location"])


def _block(x, dropped=None, *, tp: TensorPlan, chunk_size: int, block_info=None):
    return _block_pair(x, dropped, tp=tp, chunk_size=chunk_size, block_info=block_info)[0]


def _block_pair(x, dropped=None, *, tp: TensorPlan, chunk_size: int, block_info=None):
    return dropout_block_counted(x, _location(block_info), tp.shape, tp.params, tp.seed, tp.file,
                                 tp.tensor, plan=tp, dropped=dropped, chunk_size=chunk_size)


def _overflow_of(pair, ndim: int) -> np.ndarray:
    return np.full((1,) * ndim, pair[1], dtype=np.int64)


def _mask_blocks(da, mask: np.ndarray, tp: TensorPlan, chunks):
    """A replayed mask as drop decisions, broadcast to the array's own chunks."""
    _, keep = replayed_mask(mask, tp.shape, tp.where)
    dropped = ~keep.reshape(tp.mask_shape)
    mchunks = tuple(c if m > 1 else (1,) for c, m in zip(chunks, tp.mask_shape, strict=True))
    return da.broadcast_to(da.from_array(dropped, chunks=mchunks), tp.shape, chunks=chunks)


def _delayed_stats(tp: TensorPlan, mask, overflow):
    dask = _need("dask")
    counts = dask.delayed(mask_stats, pure=True)(tp, mask)  # runs beside the blocks
    return dask.delayed(_with_overflow, pure=True)(counts, overflow)


def _with_overflow(stats: dict, overflow) -> dict:
    if stats["mask_digest"] is not None:
        stats = dict(stats, overflow=int(overflow))
    return stats


# --------------------------------------------------------------------------- many files


class DaskBag:
    """As a scheduler: run the jobs as a dask.bag on dask's current scheduler."""


@contextlib.contextmanager
def session(scheduler) -> Iterator:
    """A connected ``distributed.Client`` (closed afterwards if made here), or the DaskBag."""
    if isinstance(scheduler, DaskBag):
        yield scheduler
        return
    client, owned = _connect(scheduler)
    try:
        yield client
    finally:
        if owned:
            client.close()


def run_jobs(work: list, opts, session,
             progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Run planned files (``files.FileJob``) on Dask, one task per output; results in order.

    ``session``: a ``distributed.Client`` or a ``DaskBag`` (see ``session``).
    Called by ``apply_files(dask_scheduler=...)``.
    """
    for job in work:
        if job.tf.path == "-" or job.output == "-":
            raise UsageError("Dask workers cannot read stdin or write stdout (-); give file "
                             "paths, or run without a Dask scheduler")
    from . import __version__

    tasks = [_portable(job) for job in work]
    sizes = [job.tf.size for job in work]  # progress counts bytes, as apply_files does
    run = dict(chunk=opts.chunk_size, threads=opts.threads, keep_going=opts.keep_going,
               version=__version__)
    if isinstance(session, DaskBag):
        bag = _need("dask.bag")
        results = bag.from_sequence(tasks, npartitions=max(1, len(tasks))).map(
            _remote_job, **run).compute()
        if progress:
            progress(sum(sizes), sum(sizes))
        return list(results)
    return _run_futures(session, work, tasks, sizes, run, opts, progress)


def _split_or_not(work: list, split_size: int) -> list[bool]:
    """Which files run split across the cluster: those larger than ``split_size`` that can.

    A large file that cannot says why in its stats (``dask_split``).
    """
    from .dask_split import one_task_reason

    split = []
    for job in work:
        large = job.tf.size > split_size
        reason = one_task_reason(job) if large else None
        if reason is not None:
            job.extra["dask_split"] = reason
        split.append(large and reason is None)
    return split


def _portable(job) -> tuple:
    """The job with absolute paths (a worker's working directory is its own)."""
    def absolute(p):
        return None if p is None else os.path.abspath(p)

    tf = replace(job.tf, real_path=absolute(job.tf.real_path))
    return replace(job, tf=tf, output=absolute(job.output),
                   mask_out=absolute(job.mask_out)), job.output


def _remote_job(task, *, chunk: int, threads: int | None, keep_going: bool,
                version: str) -> dict:
    """One file, on a worker: run as planned, reported under the paths as given."""
    from . import __version__
    from .files import run_one

    if version != __version__:
        raise DropoutError(f"this Dask worker runs tensor-dropout {__version__}, the client "
                           f"{version}; install the same version everywhere")
    job, shown_out = task
    stats = run_one(job, chunk, threads, keep_going)
    stats["output"] = shown_out
    return stats


def _connect(scheduler):
    """A Client for an address (owned: closed after the run), or the Client given."""
    distributed = _need("distributed")
    if isinstance(scheduler, distributed.Client):
        return scheduler, False
    if not isinstance(scheduler, str):
        raise UsageError(f"dask_scheduler must be an address or a distributed.Client, got "
                         f"{type(scheduler).__name__}")
    from distributed.comm import resolve_address

    shown = escape_name(scheduler)
    timeout = _timeout()
    try:  # before Client(): a Client that fails on a bad address hangs in its finalizer
        resolve_address(scheduler)
    except ValueError as e:
        raise UsageError(f"bad Dask scheduler address {shown}: {e} (expected e.g. "
                         "tcp://host:8786)") from None
    except OSError as e:
        raise DropoutError(f"cannot reach the Dask scheduler at {shown}: "
                           f"{e.strerror or e}") from None
    try:
        client = distributed.Client(scheduler, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as e:
        raise DropoutError(f"cannot reach the Dask scheduler at {shown} within {timeout:g} s "
                           f"({e})") from None
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (OSError, TimeoutError):
        client.close()
        raise DropoutError(f"the Dask scheduler at {shown} has no workers (waited {timeout:g} "
                           f"s); start some with: dask worker {shown}") from None
    return client, True


def _timeout() -> float:
    text = os.environ.get(TIMEOUT_ENV)
    if not text:
        return CONNECT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise UsageError(f"{TIMEOUT_ENV} must be a number of seconds above 0, got {text!r}")
    return value


def _run_futures(client, work, tasks, sizes, run: dict, opts, progress) -> list[dict]:
    """One task per small file, many per large file (``dask_split``); results in order."""
    distributed = _need("distributed")
    from .dask_split import SPLIT_SIZE

    split_size = opts.dask_split_size or SPLIT_SIZE
    split = _split_or_not(work, split_size)
    whole = [k for k, s in enumerate(split) if not s]
    futures = client.map(_remote_job, [tasks[k] for k in whole], pure=False, **run)
    size_of = {f.key: sizes[k] for f, k in zip(futures, whole, strict=True)}
    results: list = [None] * len(work)
    done, total = 0, sum(sizes)

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(min(done, total), total)

    try:
        for k in (k for k, s in enumerate(split) if s):  # one after another, every worker busy
            results[k] = _split_one(client, work[k], split_size, opts, advance)
        for f in distributed.as_completed(futures, loop=client.loop):
            advance(size_of[f.key])
        for k, r in zip(whole, client.gather(futures), strict=True):
            results[k] = r
        return results
    except distributed.KilledWorker as e:
        raise DropoutError(f"a Dask worker died while processing a file ({e})") from None
    finally:
        client.cancel([f for f in futures if not f.done()])


def _split_one(client, job, split_size: int, opts, advance) -> dict:
    from .dask_split import run_split
    from .files import failure

    start = job.tf.size
    counted = 0

    def step(n: int) -> None:
        nonlocal counted
        counted += n
        advance(n)

    try:
        doc = run_split(client, job, split_size=split_size, chunk=opts.chunk_size,
                        threads=opts.threads, advance=step)
    except DropoutError as e:
        if not opts.keep_going or e.exit_code != 1:
            raise
        doc = failure(job.tf.path, job.output, e)
    advance(max(0, start - counted))  # the header and what was not counted
    return doc
