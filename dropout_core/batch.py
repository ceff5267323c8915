"""Many files in one run: output names, --repeat seeds, --jobs, one stats document.

Every input is opened and planned once, and every output target checked once,
before anything is written; then the planned files run here, in worker
processes (``--jobs``, in batches) or on a Dask cluster.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import sys
import types
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from . import sharded
from .atomic import CommitGroup, atomic_write, check_target
from .engine import CHUNK
from .errors import DropoutError, UsageError, escape_name
from .files import FileJob, load_replay, plan_file, run_file
from .formats import open_tensor_file
from .params import DropoutParams
from .seeds import derive_repeat_seed, file_key, resolve_seed
from .stats import run_header, sum_totals


@dataclass(frozen=True)
class Job:
    """One output to make: which input, where to, with which seed."""

    input: str
    output: str | None
    seed: int | None
    copy: int | None = None
    inplace: bool = False
    key: str | None = None  # the file part of the stream key (default: the input's base name)


@dataclass
class BatchOptions:
    """What every file of a run shares besides the dropout parameters."""

    force: bool = False
    tensors: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    mask_in: str | None = None
    mask_out: str | None = None
    stats: str | None = None  # a path for the JSON stats ("-": the caller prints them)
    chunk_size: int = CHUNK
    threads: int | None = None  # per file; like chunk_size, never changes a result


def output_name(input: str, out_dir: str, suffix: str = "", copy: int | None = None,
                copies: int = 1) -> str:
    """Where an input goes in --out-dir: same base name, plus --suffix and the copy number.

    >>> output_name("data/x.npy", "out", "-aug", copy=2, copies=10)
    'out/x-aug_2.npy'
    """
    base = "stdin.npy" if input == "-" else os.path.basename(input)
    stem, ext = os.path.splitext(base)
    tag = "" if copy is None else f"_{copy:0{len(str(copies - 1))}d}"
    return os.path.join(out_dir, f"{stem}{suffix}{tag}{ext}")


def plan_jobs(inputs: list[str], *, output: str | None = None, out_dir: str | None = None,
              suffix: str = "", inplace: bool = False, repeat: int = 1,
              seed: int | None = None) -> list[Job]:
    """Turn the command line's inputs and output options into jobs, each with its seed.

    ``seed`` is the run's (already decided); ``--repeat`` copies get seeds
    derived from it, here and nowhere else.
    """
    if not inputs:
        raise UsageError("give at least one input file")
    if repeat < 1:
        raise UsageError(f"repeat must be at least 1, got {repeat}")
    given = [o for o in (output is not None, out_dir is not None, inplace) if o]
    if len(given) > 1:
        raise UsageError("give only one of -o/--output, --out-dir and --inplace")
    if not given:
        raise UsageError("give -o/--output, --out-dir or --inplace")
    if output is not None and (len(inputs) > 1 or repeat > 1):
        raise UsageError("-o takes one input and no --repeat; use --out-dir for several outputs")
    if inplace and repeat > 1:
        raise UsageError("--repeat makes new files; it cannot be combined with --inplace")
    if "-" in inputs and len(inputs) > 1:
        raise UsageError("stdin (-) can only be the only input")
    jobs: list[Job] = []
    for path in inputs:
        if sharded.is_index(path):  # a sharded checkpoint: one job per shard (sharded.py)
            jobs += sharded.shard_jobs(path, output=output, out_dir=out_dir, suffix=suffix,
                                       inplace=inplace, repeat=repeat, seed=seed)
            continue
        for r in range(repeat):
            copy = r if repeat > 1 else None
            s = seed if copy is None or seed is None else derive_repeat_seed(seed, r)
            if inplace:
                jobs.append(Job(path, path, s, copy, inplace=True))
            elif out_dir is not None:
                jobs.append(Job(path, output_name(path, out_dir, suffix, copy, repeat), s, copy))
            else:
                jobs.append(Job(path, output, s, copy))
    outs = [os.path.abspath(j.output) for j in jobs if j.output not in (None, "-")]
    if len(set(outs)) != len(outs):
        dup = next(o for o in outs if outs.count(o) > 1)
        raise UsageError(f"two inputs would write the same output {escape_name(dup)}; "
                         "rename them or use --suffix")
    return jobs


def apply_files(inputs: list[str], *, params: DropoutParams, seed: int | None = None,
                output: str | None = None, out_dir: str | None = None, suffix: str = "",
                inplace: bool = False, repeat: int = 1, jobs: int = 1,
                options: BatchOptions | None = None,
                progress: Callable[[int, int], None] | None = None,
                dask_scheduler=None) -> dict:
    """Apply dropout to every input; return one stats document for the whole run.

    ``progress(done, total)`` is called in bytes as the work advances.

    Every input is checked (header, plans and output target) before any output
    is written.  Results never depend on ``jobs``, on the order of the inputs
    or on which other files share the run: each tensor's stream is keyed by
    the seed, the file's base name and the tensor's name.  ``dask_scheduler``
    (an address or a ``distributed.Client``) runs the files on a Dask cluster
    instead: see ``dask_backend.run_jobs``.
    """
    opts = options or BatchOptions()
    if dask_scheduler is not None and jobs > 1:
        raise UsageError("give --jobs or --dask-scheduler, not both: the cluster's workers "
                         "decide the parallelism")
    # reported in the stats, so that a run without --seed can be repeated
    seed = resolve_seed(seed, needed=opts.mask_in is None and not params.identity)
    planned = plan_jobs(inputs, output=output, out_dir=out_dir, suffix=suffix, inplace=inplace,
                        repeat=repeat, seed=seed)
    if opts.mask_out and len(planned) > 1:
        raise UsageError("--mask-out takes one input file")
    with contextlib.ExitStack() as opened:
        work = _plan_files(planned, params, opts, opened)
        checkpoints = sharded.check_checkpoints(inputs, work, params, opts, out_dir=out_dir)
        outputs = [j.output for j in planned if j.output not in (None, "-")]
        check_side_outputs({"--stats": opts.stats, "--mask-out": opts.mask_out}, inputs,
                           outputs, force=opts.force)
        if out_dir is not None and not os.path.isdir(out_dir):
            try:
                os.makedirs(out_dir, exist_ok=True)
            except OSError as e:
                raise DropoutError(f"{escape_name(out_dir)}: cannot create directory: "
                                   f"{e.strerror}") from None
        for j in planned:
            if not j.inplace and j.output != "-":
                check_target(j.output, force=opts.force, inputs=list(inputs))
        if dask_scheduler is not None:
            from .dask_backend import run_jobs

            results = run_jobs(work, opts, dask_scheduler, progress)
        elif jobs > 1 and len(work) > 1:
            results = _run_in_processes(work, opts, jobs, progress)
        else:
            results = _run_here(work, opts, progress)
    doc = run_header(params, seed)
    doc["files"] = results
    doc["totals"] = sum_totals(results)
    sharded.write_indexes(checkpoints, doc)  # after every shard: the output index, its stats
    if opts.stats not in (None, "-"):
        write_stats(doc, opts.stats)
    return doc


def _plan_files(planned: list[Job], params: DropoutParams, opts: BatchOptions,
                opened: contextlib.ExitStack) -> list[FileJob]:
    """Open each input once and plan each of its jobs (a bad input leaves nothing behind)."""
    files = {}
    work = []
    for j in planned:
        tf = files.get(j.input)
        if tf is None:
            tf = files[j.input] = opened.enter_context(open_tensor_file(j.input))
        replay = load_replay(opts.mask_in, tf) if opts.mask_in else None
        key = j.key if j.key is not None else file_key(j.input)
        plans = plan_file(tf, params, j.seed, key, tensors=opts.tensors, exclude=opts.exclude,
                          replay=replay)
        work.append(FileJob(tf, j.output, params, j.seed, key, plans, opts.mask_out, j.copy))
    return work


def _size(job: FileJob) -> int:
    return job.tf.size


def _run_here(work: list[FileJob], opts: BatchOptions,
              progress: Callable[[int, int], None] | None) -> list[dict]:
    total, done, results = sum(map(_size, work)), 0, []
    with CommitGroup() as group:
        for job in work:
            hook = None if progress is None else \
                (lambda n, _done=done: progress(min(total, _done + n), total))
            results.append(run_file(job, chunk=opts.chunk_size, threads=opts.threads,
                                    progress=hook, group=group))
            done += _size(job)
            if progress:
                progress(done, total)
    return results


def run_batch(work: list[FileJob], chunk: int, threads: int | None) -> list[dict]:
    """A worker process's task: several planned files, one after the other."""
    with CommitGroup() as group:
        return [run_file(job, chunk=chunk, threads=threads, group=group) for job in work]


def _run_in_processes(work: list[FileJob], opts: BatchOptions, jobs: int,
                      progress: Callable[[int, int], None] | None) -> list[dict]:
    """Planned files in ``jobs`` worker processes, sent in batches (a few per worker)."""
    n = min(len(work), 4 * jobs)
    batches = [work[k::n] for k in range(n)]  # interleaved: sizes even out
    total, done = sum(map(_size, work)), 0
    results: list[dict | None] = [None] * len(work)
    ctx = multiprocessing.get_context("forkserver")  # workers inherit no threads
    ctx.set_forkserver_preload([__name__])  # each worker starts with the library imported
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        with _main_hidden():
            futures = [pool.submit(run_batch, b, opts.chunk_size, opts.threads)
                       for b in batches]
        for k, f in enumerate(futures):
            for i, r in zip(range(k, len(work), n), f.result(), strict=True):
                results[i] = r
                done += _size(work[i])
            if progress:
                progress(done, total)
    return results


@contextlib.contextmanager
def _main_hidden() -> Iterator[None]:
    """Start worker processes that never import the caller's ``__main__``.

    multiprocessing runs the main module again in each worker it starts: a plain
    script without an ``if __name__ == "__main__":`` guard would run once per
    worker.  While the workers start (at submit), ``__main__`` is an empty module.
    """
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


def map_files(paths, client=None, *, params: DropoutParams | None = None,
              seed: int | None = None, output: str | None = None, out_dir: str | None = None,
              suffix: str = "", inplace: bool = False, repeat: int = 1,
              options: BatchOptions | None = None,
              progress: Callable[[int, int], None] | None = None, **kwargs) -> dict:
    """``apply_files`` over Dask: each file is one task; returns the run's one stats document.

    ``paths`` is a list of paths or a dask.bag of them.  ``client`` is a
    ``distributed.Client``, a scheduler address, or None for a dask.bag on
    dask's current scheduler.  Output names, ``--repeat`` seeds and every
    check are ``apply_files``' own, and each output is byte for byte the file
    the CLI writes for it.  Workers must see the paths (a shared file system);
    relative paths are resolved here, and reported as given.  Keyword
    options build the DropoutParams (p=, variant=, ...).

    >>> doc = map_files(["a.npy", "b.npy"], client, out_dir="out", p=0.3, seed=7)  # doctest: +SKIP
    """
    from .dask_backend import DaskBag

    params = params or DropoutParams(**kwargs)
    if hasattr(paths, "__dask_graph__"):
        paths = paths.compute()
    return apply_files(list(paths), params=params, seed=seed, output=output, out_dir=out_dir,
                       suffix=suffix, inplace=inplace, repeat=repeat, options=options,
                       progress=progress, dask_scheduler=DaskBag() if client is None else client)


def write_stats(doc: dict, path: str) -> None:
    """The stats document as JSON, written like every other output (atomically)."""
    text = json.dumps(doc, indent=2, allow_nan=False) + "\n"
    with atomic_write(path) as f:
        f.write(text.encode())


def _same_path(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_side_outputs(side: dict[str, str | None], inputs: list[str], outputs: list[str], *,
                       force: bool) -> None:
    """--stats and --mask-out may not name an input, an output or each other."""
    given = [(opt, p) for opt, p in side.items() if p not in (None, "-")]
    for k, (opt, path) in enumerate(given):
        for other in [i for i in inputs if i != "-"]:
            if _same_path(path, other):
                raise UsageError(f"{escape_name(path)}: {opt} names an input file; it would be "
                                 "replaced")
        for other in outputs:
            if _same_path(path, other):
                raise UsageError(f"{escape_name(path)}: {opt} names an output file")
        for opt2, other in given[k + 1:]:
            if _same_path(path, other):
                raise UsageError(f"{escape_name(path)}: {opt} and {opt2} name the same file")
        check_target(path, force=force, inputs=list(inputs))
