"""Many files in one run: output names, --repeat seeds, --jobs, one stats document.

Every input is opened and planned once, and every output target checked once,
before anything is written; then the planned files run here, in worker
processes (``--jobs``, in batches) or on a Dask cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from . import sharded
from .atomic import (
    CommitGroup,
    atomic_write,
    check_replaceable,
    check_side_outputs,
    check_target,
)
from .dtypes import dtype_label
from .engine import CHUNK
from .errors import DropoutError, UsageError, escape_name
from .files import (
    FileJob,
    check_mask_in,
    check_output_format,
    check_selection,
    failure,
    load_tensors,
    mask_format,
    plan_file,
    replay_for,
    run_one,
)
from .formats import TensorFile, open_tensor_file
from .params import DropoutParams, parse_size
from .params import say as say_in
from .seeds import derive_repeat_seed, file_key, resolve_seed
from .stats import run_header, sum_totals, totals


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
    key: str | None = None  # the file part of every stream key (default: each input's name)
    keep_going: bool = False  # a bad file is reported in the stats; the others still run
    dry_run: bool = False  # check and plan everything, write nothing
    # bytes of a tensor per Dask task: a larger file is split across the cluster
    # (None: dask_split.SPLIT_SIZE; "256MiB" and the like are read by params.parse_size);
    # only with a Dask scheduler
    dask_split_size: int | str | None = None

    def __post_init__(self) -> None:
        for name in ("mask_in", "mask_out", "stats"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, os.fspath(value))


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
              seed: int | None = None, key: str | None = None,
              interface: str = "python") -> list[Job]:
    """Turn the inputs and output options into jobs, each with its output, seed and key.

    ``seed`` is the run's (already decided); ``--repeat`` copies get seeds
    derived from it, here and nowhere else.
    """
    def say(option: str) -> str:
        return say_in(option, interface)

    if not inputs:
        raise UsageError("give at least one input file")
    if repeat < 1:
        raise UsageError(f"{say('repeat')} must be at least 1, got {repeat}")
    given = [o for o in (output is not None, out_dir is not None, inplace) if o]
    if len(given) > 1:
        raise UsageError(f"give only one of {say('output')}, {say('out_dir')} and "
                         f"{say('inplace')}")
    if not given:
        raise UsageError(f"give {say('output')}, {say('out_dir')} or {say('inplace')}")
    if output is not None and (len(inputs) > 1 or repeat > 1):
        raise UsageError(f"{say('output')} takes one input and no {say('repeat')}; use "
                         f"{say('out_dir')} for several outputs")
    if suffix and out_dir is None:
        raise UsageError(f"{say('suffix')} names the outputs in {say('out_dir')}; it has no "
                         f"effect with {say('output') if output is not None else say('inplace')}")
    if inplace and repeat > 1:
        raise UsageError(f"{say('repeat')} makes new files; it cannot be combined with "
                         f"{say('inplace')}")
    if "-" in inputs and len(inputs) > 1:
        raise UsageError("stdin (-) can only be the only input")
    jobs: list[Job] = []
    for path in inputs:
        if sharded.is_index(path):  # a sharded checkpoint: one job per shard (sharded.py)
            shards = sharded.shard_jobs(path, output=output, out_dir=out_dir, suffix=suffix,
                                        inplace=inplace, repeat=repeat, seed=seed,
                                        interface=interface)
            jobs += [Job(src, dst, seed, None, inplace=inplace, key=k) for src, dst, k in shards]
            continue
        for r in range(repeat):
            copy = r if repeat > 1 else None
            s = seed if copy is None or seed is None else derive_repeat_seed(seed, r)
            if inplace:
                jobs.append(Job(path, path, s, copy, inplace=True, key=key))
            elif out_dir is not None:
                jobs.append(Job(path, output_name(path, out_dir, suffix, copy, repeat), s, copy,
                                key=key))
            else:
                jobs.append(Job(path, output, s, copy, key=key))
    seen: dict[str, str] = {}
    for j in jobs:
        if j.output in (None, "-"):
            continue
        out = os.path.abspath(j.output)
        if out in seen and seen[out] != j.input:
            raise UsageError(f"{escape_name(seen[out])} and {escape_name(j.input)} would both "
                             f"be written to {escape_name(j.output)} (the same base name); "
                             f"give them different names, or run them separately with "
                             f"different {say('out_dir')}")
        seen[out] = j.input
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
    the seed, the file's base name (or ``options.key``) and the tensor's name.
    ``dask_scheduler`` (an address or a ``distributed.Client``) runs the files
    on a Dask cluster instead: see ``dask_backend.run_jobs``.  With
    ``options.keep_going`` a bad file is reported in the stats (``"status":
    "failed"``) and the others still run; ``options.dry_run`` checks and plans
    everything and writes nothing.
    """
    opts = options or BatchOptions()
    say = params.say
    inputs = [os.fspath(i) for i in inputs]
    output = None if output is None else os.fspath(output)
    out_dir = None if out_dir is None else os.fspath(out_dir)
    if dask_scheduler is not None and jobs > 1:
        raise UsageError(f"give {say('jobs')} or {say('dask_scheduler')}, not both: the "
                         "cluster's workers decide the parallelism")
    if output == "-" and opts.stats == "-":
        raise UsageError(f"{say('output_stdout')} and {say('stats_stdout')} both want stdout; "
                         "write one to a file")
    if opts.dask_split_size is not None:
        from .dask_backend import DaskBag

        if dask_scheduler is None or isinstance(dask_scheduler, DaskBag):
            raise UsageError(f"{say('dask_split_size')} says how a file is split across a Dask "
                             f"cluster; give {say('dask_scheduler')} too")
        opts = replace(opts, dask_split_size=parse_size(opts.dask_split_size,
                                                        say("dask_split_size")))
    if dask_scheduler is not None and ("-" in inputs or output == "-"):
        raise UsageError("Dask workers cannot read stdin or write stdout (-); give file "
                         f"paths, or run without {say('dask_scheduler')}")
    check_mask_in(opts.mask_in, seed, params)
    # reported in the stats, so that a run without a seed can be repeated
    seed = resolve_seed(seed, needed=opts.mask_in is None and not params.identity)
    planned = plan_jobs(inputs, output=output, out_dir=out_dir, suffix=suffix, inplace=inplace,
                        repeat=repeat, seed=seed, key=opts.key, interface=params.interface)
    if opts.mask_out:
        if len(planned) > 1:
            raise UsageError(f"{say('mask_out')} takes one input file")
        mask_format(opts.mask_out, params)
    with contextlib.ExitStack() as opened:
        work, failed = _plan_files(planned, params, opts, opened, out_dir)
        checkpoints = sharded.check_checkpoints(inputs, work, params, opts, out_dir=out_dir)
        outputs = [j.output for j in planned if j.output not in (None, "-")]
        check_side_outputs({say("stats"): opts.stats, say("mask_out"): opts.mask_out}, inputs,
                           outputs, force=opts.force, interface=params.interface)
        doc = run_header(params, seed)
        if opts.mask_in is not None:
            doc["mask_in"] = opts.mask_in
        if opts.dry_run:
            doc["dry_run"] = True
            doc["files"] = [describe(job) for job in work] + failed
            doc["totals"] = sum_totals(doc["files"])
            return doc
        session = None
        if dask_scheduler is not None:  # reach the cluster before anything is made
            from .dask_backend import session as dask_session

            session = opened.enter_context(dask_session(dask_scheduler))
        if out_dir is not None and not os.path.isdir(out_dir) and work:
            try:
                os.makedirs(out_dir, exist_ok=True)
            except OSError as e:
                raise DropoutError(f"{escape_name(out_dir)}: cannot create directory: "
                                   f"{e.strerror}") from None
        if session is not None:
            from .dask_backend import run_jobs

            results = run_jobs(work, opts, session, progress)
        elif jobs > 1 and len(work) > 1:
            results = _run_in_processes(work, opts, jobs, progress)
        else:
            results = _run_here(work, opts, progress)
    doc["files"] = results + failed
    doc["totals"] = sum_totals(doc["files"])
    sharded.write_indexes(checkpoints, doc)  # after every shard: the output index, its stats
    if opts.stats not in (None, "-"):
        write_stats(doc, opts.stats)
    return doc


def _plan_files(planned: list[Job], params: DropoutParams, opts: BatchOptions,
                opened: contextlib.ExitStack,
                out_dir: str | None) -> tuple[list[FileJob], list[dict]]:
    """Open each input once, check it and plan each of its jobs; nothing is written yet.

    Returns the planned files and, with ``keep_going``, the ones that failed.
    """
    files: dict[str, TensorFile] = {}
    bad: dict[str, str] = {}
    for j in planned:  # open every input first: a glob that matches nothing is an error
        if j.input in files or j.input in bad:
            continue
        try:
            files[j.input] = opened.enter_context(open_tensor_file(j.input))
        except DropoutError as e:
            if not opts.keep_going or e.exit_code != 1:
                raise
            bad[j.input] = str(e)
    check_selection(list(files.values()), opts.tensors, opts.exclude, params)
    masks = load_tensors(opts.mask_in) if opts.mask_in else None  # read once for every input
    work, failed = [], []
    for j in planned:
        try:
            if j.input in bad:
                raise DropoutError(bad[j.input])
            tf = files[j.input]
            check_output_format(j.output, tf, params)
            if j.inplace:
                check_replaceable(j.output, force=opts.force, interface=params.interface)
            elif j.output != "-":
                check_target(j.output, force=opts.force, inputs=list(files),
                             interface=params.interface, made_dir=out_dir)
            replay = replay_for(masks, tf) if masks is not None else None
            key = j.key if j.key is not None else file_key(j.input)
            plans = plan_file(tf, params, j.seed, key, tensors=opts.tensors,
                              exclude=opts.exclude, replay=replay)
        except DropoutError as e:
            if not opts.keep_going or e.exit_code != 1:
                raise
            failed.append(failure(j.input, j.output, e))
            continue
        work.append(FileJob(tf, j.output, params, j.seed, key, plans, opts.mask_out, j.copy))
    return work, failed


def describe(job: FileJob) -> dict:
    """What a planned file would do (``--dry-run``): tensors processed or copied, units."""
    tensors = []
    for t in job.tf.tensors:
        plan = job.plans.get(t.name)
        entry = {"name": t.name, "status": "skipped" if plan is None else "processed",
                 "dtype": dtype_label(t.dtype), "shape": list(t.shape), "numel": t.numel,
                 "mask_shape": None, "units": 0, "dropped": 0, "overflow": 0}
        if plan is not None and not plan.identity:
            entry["mask_shape"], entry["units"] = list(plan.mask_shape), plan.units
        tensors.append(entry)
    doc = {"input": job.tf.path, "output": job.output, "format": job.tf.format,
           "key": job.key, "seed": job.seed, "status": "planned", "tensors": tensors,
           "totals": totals(tensors)}
    if job.copy is not None:
        doc["copy"] = job.copy
    return doc


def _size(job: FileJob) -> int:
    return job.tf.size


def _run_here(work: list[FileJob], opts: BatchOptions,
              progress: Callable[[int, int], None] | None) -> list[dict]:
    total, done, results = sum(map(_size, work)), 0, []
    with CommitGroup() as group:
        for job in work:
            hook = None if progress is None else \
                (lambda n, _done=done: progress(min(total, _done + n), total))
            results.append(run_one(job, opts.chunk_size, opts.threads, opts.keep_going, hook,
                                   group))
            done += _size(job)
            if progress:
                progress(done, total)
    return results


def run_batch(work: list[FileJob], chunk: int, threads: int | None,
              keep_going: bool) -> list[dict]:
    """A worker process's task: several planned files, one after the other."""
    with CommitGroup() as group:
        return [run_one(job, chunk, threads, keep_going, group=group) for job in work]


def _run_in_processes(work: list[FileJob], opts: BatchOptions, jobs: int,
                      progress: Callable[[int, int], None] | None) -> list[dict]:
    """Planned files in ``jobs`` worker processes, sent in batches (a few per worker)."""
    n = min(len(work), 4 * jobs)
    batches = [work[k::n] for k in range(n)]  # interleaved: sizes even out
    total, done = sum(map(_size, work)), 0
    results: list[dict | None] = [None] * len(work)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("forkserver")  # workers inherit no threads
    ctx.set_forkserver_preload([__name__])  # each worker starts with the library imported
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        with _main_hidden():
            futures = [pool.submit(run_batch, b, opts.chunk_size, opts.threads, opts.keep_going)
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
    with atomic_write(os.fspath(path)) as f:
        f.write(text.encode())
