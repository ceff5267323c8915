"""Many files in one run: output names, --repeat seeds, --jobs, one stats document."""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from .array import check_seed, new_seed
from .atomic import atomic_write, check_target
from .errors import DropoutError, UsageError, escape_name
from .files import apply_file, check_file, run_header
from .params import DropoutParams
from .readers import open_tensor_file
from .streams import derive_repeat_seed


@dataclass(frozen=True)
class Job:
    """One output to make: which input, where to, with which seed."""

    input: str
    output: str | None
    seed: int | None
    copy: int | None = None
    inplace: bool = False


@dataclass
class BatchOptions:
    """What every file of a run shares besides the dropout parameters."""

    force: bool = False
    tensors: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    mask_in: str | None = None
    mask_out: str | None = None
    stats: str | None = None  # a path for the JSON stats ("-": the caller prints them)
    chunk_size: int = 1 << 20
    threads: int | None = None  # per file; like chunk_size, never changes a result
    extra: dict = field(default_factory=dict)


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
              seed: int | None = None) -> tuple[list[Job], int | None]:
    """Turn the command line's inputs and output options into jobs; returns (jobs, seed)."""
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
    if seed is not None:
        seed = check_seed(seed)
    jobs: list[Job] = []
    for path in inputs:
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
    return jobs, seed


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size if path != "-" else 0
    except OSError:
        return 0


def _run_job(job: Job, params: DropoutParams, opts: BatchOptions, seed: int | None,
             progress: Callable[[int], None] | None = None) -> dict:
    s = job.seed
    if s is None and job.copy is not None and seed is not None:
        s = derive_repeat_seed(seed, job.copy)
    stats = apply_file(job.input, None if job.inplace else job.output, params=params, seed=s,
                       inplace=job.inplace, force=opts.force, tensors=opts.tensors,
                       exclude=opts.exclude, mask_in=opts.mask_in, mask_out=opts.mask_out,
                       chunk_size=opts.chunk_size, progress=progress, threads=opts.threads)
    if job.copy is not None:
        stats["copy"] = job.copy
    return stats


def apply_files(inputs: list[str], *, params: DropoutParams, seed: int | None = None,
                output: str | None = None, out_dir: str | None = None, suffix: str = "",
                inplace: bool = False, repeat: int = 1, jobs: int = 1,
                options: BatchOptions | None = None,
                progress: Callable[[int, int], None] | None = None,
                dask_scheduler=None) -> dict:
    """Apply dropout to every input; return one stats document for the whole run.

    ``progress(done, total)`` is called in bytes as the work advances.

    Every input is checked (header and output target) before any output is
    written.  Results never depend on ``jobs``, on the order of the inputs or
    on which other files share the run: each tensor's stream is keyed by the
    seed, the file's base name and the tensor's name.  ``dask_scheduler`` (an
    address or a ``distributed.Client``) runs the files on a Dask cluster
    instead: see ``dask_backend.run_jobs``.
    """
    opts = options or BatchOptions()
    if dask_scheduler is not None and jobs > 1:
        raise UsageError("give --jobs or --dask-scheduler, not both: the cluster's workers "
                         "decide the parallelism")
    plan, seed = plan_jobs(inputs, output=output, out_dir=out_dir, suffix=suffix,
                           inplace=inplace, repeat=repeat, seed=seed)
    if seed is None and opts.mask_in is None and not params.identity:
        seed = new_seed()  # reported in the stats, so the run can be repeated
    if opts.mask_out and len(plan) > 1:
        raise UsageError("--mask-out takes one input file")
    for j in plan:  # inputs first: a bad input leaves nothing behind, not even --out-dir
        if j.input != "-" and j.copy in (None, 0):
            tf = open_tensor_file(j.input)
            try:
                check_file(tf, params, opts.tensors, opts.exclude,
                           {t.name: None for t in tf.tensors} if opts.mask_in else None)
            finally:
                tf.close()
    outputs = [j.output for j in plan if j.output not in (None, "-")]
    check_side_outputs({"--stats": opts.stats, "--mask-out": opts.mask_out}, inputs, outputs,
                       force=opts.force)
    if out_dir is not None and not os.path.isdir(out_dir):
        try:
            os.makedirs(out_dir, exist_ok=True)
        except OSError as e:
            raise DropoutError(f"{escape_name(out_dir)}: cannot create directory: "
                               f"{e.strerror}") from None
    for j in plan:
        if not j.inplace and j.output != "-":
            check_target(j.output, force=opts.force, inputs=list(inputs))
    plan = [Job(j.input, j.output, j.seed if j.seed is not None else
                (seed if j.copy is None else None), j.copy, j.inplace) for j in plan]
    sizes = [_size(j.input) for j in plan]
    total, done = sum(sizes), 0
    results: list[dict] = []
    if dask_scheduler is not None:
        from .dask_backend import run_jobs

        results = run_jobs(plan, params, opts, seed, dask_scheduler, progress)
    elif jobs > 1 and len(plan) > 1:
        # forkserver: workers never inherit the parent's I/O or word-generating threads
        with ProcessPoolExecutor(max_workers=jobs,
                                 mp_context=multiprocessing.get_context("forkserver")) as pool:
            futures = [pool.submit(_run_job, j, params, opts, seed) for j in plan]
            for f, size in zip(futures, sizes, strict=True):
                results.append(f.result())
                done += size
                if progress:
                    progress(done, total)
    else:
        for j, size in zip(plan, sizes, strict=True):
            hook = None if progress is None else \
                (lambda n, _done=done: progress(min(total, _done + n), total))
            results.append(_run_job(j, params, opts, seed, hook))
            done += size
            if progress:
                progress(done, total)
    doc = run_header(params, seed)
    doc["files"] = results
    doc["totals"] = _sum_totals(results)
    if opts.stats not in (None, "-"):
        write_stats(doc, opts.stats)
    return doc


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


def _sum_totals(files: list[dict]) -> dict:
    keys = ("tensors", "processed", "skipped", "numel", "kept", "dropped", "overflow")
    out = {k: sum(f["totals"][k] for f in files) for k in keys}
    out["files"] = len(files)
    out["drop_fraction"] = out["dropped"] / out["numel"] if out["numel"] else 0.0
    return out
