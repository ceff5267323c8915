"""Dropout on tensor files: one file in, the same format out, plus its statistics.

A file is opened and its header parsed once (``formats.open_tensor_file``),
each chosen tensor planned once (``plan_file``), and then run (``run_file``):
read through the format's reader, written through the format's writer into a
temporary file that replaces the target atomically.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .atomic import CommitGroup, atomic_write, check_replaceable, check_target
from .dtypes import dtype_label
from .engine import CHUNK, run_tensor
from .errors import DropoutError, UsageError, escape_name
from .formats import (
    REGISTRY,
    Entry,
    Sink,
    TensorFile,
    TensorInfo,
    format_module,
    format_of_name,
    known_extensions,
    open_tensor_file,
)
from .params import DropoutParams
from .plan import TensorPlan, plan_tensor
from .seeds import file_key, resolve_seed
from .stats import ContentDigest, MaskDigest, TensorStats, totals
from .threads import BufferPool
from .units import slab_chunks


def selected(name: str, tensors: tuple[str, ...], exclude: tuple[str, ...]) -> bool:
    """--tensor/--exclude: fnmatch globs on tensor names."""
    if tensors and not any(fnmatch.fnmatchcase(name, g) for g in tensors):
        return False
    return not any(fnmatch.fnmatchcase(name, g) for g in exclude)


@dataclass
class FileJob:
    """One input, checked and planned: what to read, what to write, each tensor's plan.

    Picklable (the header travels, not an open file), so ``--jobs`` sends jobs
    to worker processes without parsing a header twice.
    """

    tf: TensorFile
    output: str
    params: DropoutParams
    seed: int | None
    key: str
    plans: dict[str, TensorPlan]  # the chosen tensors; the others are copied unchanged
    mask_out: str | None = None
    copy: int | None = None
    extra: dict = field(default_factory=dict)  # reported in the stats beside the file's own


def plan_file(tf: TensorFile, params: DropoutParams, seed: int | None, key: str, *,
              tensors: tuple[str, ...] = (), exclude: tuple[str, ...] = (),
              replay: dict[str, np.ndarray] | None = None,
              names: set[str] | None = None) -> dict[str, TensorPlan]:
    """Every check that needs no tensor data: dtypes, mask shapes, replayed masks.

    Returns the chosen tensors' plans, in file order (``names``: exactly these
    tensors, instead of the globs).  Runs before any output is opened, so a bad
    tensor never leaves half a run behind.
    """
    plans = {}
    for t in tf.tensors:
        if names is not None and t.name not in names:
            continue
        if names is None and tf.named and not selected(t.name, tensors, exclude):
            continue
        here = tf.where(t)
        mask = None
        if replay is not None and not params.identity:
            if t.name not in replay:
                raise DropoutError(f"{here}: the mask file has no tensor of this name")
            mask = replay[t.name]
        order = tuple(range(len(t.shape)))[::-1] if t.fortran_order else None
        plans[t.name] = plan_tensor(t.shape, t.dtype, params, seed, key, t.name, where=here,
                                    mask=mask, memory_order=order)
    return plans


def replay_for(masks: dict[str, np.ndarray], tf: TensorFile) -> dict[str, np.ndarray]:
    """--mask-in's masks (``load_tensors`` of the mask file) by tensor name for ``tf``: a
    lone mask serves a .npy's array."""
    if not tf.named and "" not in masks and len(masks) == 1:
        masks = {"": next(iter(masks.values()))}
    return masks


def apply_file(input: str, output: str | None = None, *, params: DropoutParams | None = None,
               seed: int | None = None, inplace: bool = False, force: bool = False,
               tensors: tuple[str, ...] = (), exclude: tuple[str, ...] = (),
               mask_in: str | None = None, mask_out: str | None = None,
               chunk_size: int = CHUNK, key: str | None = None,
               progress: Callable[[int], None] | None = None, threads: int | None = None,
               **kwargs) -> dict:
    """Apply dropout to every chosen tensor of ``input`` and write ``output``.

    ``output`` "-" writes to stdout; ``inplace=True`` replaces ``input``.  Extra
    keyword arguments build the DropoutParams (p=, mode=, variant=, ...).  ``key``
    overrides the file part of the stream key (default: the input's base name).
    ``progress`` is called with the number of tensor bytes written so far;
    ``threads`` (default: the usable cores) never changes a bit of the output.
    Returns the file's statistics as a dict.
    """
    if params is None:
        params = DropoutParams(**kwargs)
    elif kwargs:
        raise UsageError("give params= or keyword options (p=, mode=, ...), not both")
    input = os.fspath(input)
    output = None if output is None else os.fspath(output)
    mask_in = None if mask_in is None else os.fspath(mask_in)
    mask_out = None if mask_out is None else os.fspath(mask_out)
    if inplace:
        if input == "-":
            raise UsageError("inplace=True needs a file, not stdin")
        if output not in (None, input):
            raise UsageError("inplace=True and an output path exclude each other")
        output = input
    elif output is None:
        raise UsageError("give an output path, or inplace=True")
    check_mask_in(mask_in, seed, params)
    seed = resolve_seed(seed, needed=not (mask_in or params.identity))
    if mask_out:
        mask_format(mask_out, params)
    with open_tensor_file(input) as tf:
        check_selection([tf], tensors, exclude, params)
        check_output_format(output, tf, params)
        if inplace:
            check_replaceable(output, force=force, interface=params.interface)
        elif output != "-":
            check_target(output, force=force, inputs=[input], interface=params.interface)
        replay = replay_for(load_tensors(mask_in), tf) if mask_in else None
        key = key if key is not None else file_key(input)
        plans = plan_file(tf, params, seed, key, tensors=tensors, exclude=exclude,
                          replay=replay)
        job = FileJob(tf, output, params, seed, key, plans, mask_out)
        return run_file(job, chunk=chunk_size, threads=threads, progress=progress)


def check_selection(files: list[TensorFile], tensors: tuple[str, ...],
                    exclude: tuple[str, ...], params: DropoutParams) -> None:
    """--tensor/--exclude choose tensors by name: each glob must match a tensor somewhere,
    and a file whose one array has no name (.npy) cannot be chosen from."""
    if not (tensors or exclude):
        return
    named = [tf for tf in files if tf.named]
    if files and not named:  # (in a mixed run the globs choose in the files that name tensors)
        raise UsageError(f"{files[0].where()}: holds one unnamed array; "
                         f"{params.say('tensor')}/{params.say('exclude')} choose tensors "
                         "by name, in files that hold several")
    names = {t.name for tf in named for t in tf.tensors}
    for option, globs in (("tensor", tensors), ("exclude", exclude)):
        for g in globs:
            if not any(fnmatch.fnmatchcase(n, g) for n in names):
                shown = ", ".join(escape_name(n) for n in sorted(names)[:5])
                raise UsageError(f"{params.say(option)} pattern {escape_name(g)} matches no "
                                 f"tensor in any input (patterns match whole names; tensors "
                                 f"are {shown}{', ...' if len(names) > 5 else ''})")


def check_output_format(output: str | None, tf: TensorFile, params: DropoutParams) -> None:
    """An output named for another format than the one written (no conversion is done)."""
    if output in (None, "-"):
        return
    named = format_of_name(output)
    if named is not None and named != tf.format:
        ext = format_module(tf.format).EXTENSIONS[0]
        raise UsageError(f"{escape_name(output)}: the name says {named} but the output is "
                         f"{tf.format}, like its input {tf.where()} (no conversion is done); "
                         f"name it {ext}")


def mask_format(path: str, params: DropoutParams) -> str:
    """The format of a --mask-out file, from its extension (which must name one)."""
    found = format_of_name(path)
    if found is None:
        exts = " or ".join(e for name in REGISTRY for e in format_module(name).EXTENSIONS)
        raise UsageError(f"{escape_name(path)}: {params.say('mask_out')} must be named {exts}")
    return found


MASK_KEY = "tensor-dropout"  # the metadata entry of a mask file that records its options


def mask_options(path: str) -> dict | None:
    """The options a mask file was made with (p, variant, ...), or None if it records none."""
    with open_tensor_file(path) as tf:
        text = (tf.metadata or {}).get(MASK_KEY)
    if text is None:
        return None
    try:
        recorded = json.loads(text)
    except ValueError:
        recorded = None
    if not isinstance(recorded, dict) or not isinstance(recorded.get("p"), (int, float)):
        raise DropoutError(f"{escape_name(path)}: its {MASK_KEY} metadata is not a record of "
                           "dropout options")
    return recorded


def mask_p(mask_in: str, p: float | None, interface: str = "python") -> float:
    """The p of a run that replays ``mask_in``: the one given, else the mask's recorded p.

    A mask that records nothing (a .npy mask) needs p given: 1/(1-p) rescales.
    """
    from .params import say

    if p is not None:
        return p
    recorded = mask_options(mask_in)
    if recorded is None:
        raise UsageError(f"{escape_name(mask_in)} records no p (only .safetensors masks "
                         f"do); give {say('p', interface)}, the p it was made with")
    return recorded["p"]


def check_mask_in(mask_in: str | None, seed, params: DropoutParams) -> None:
    """A replayed mask draws nothing (no seed), and its recorded p is the run's."""
    if mask_in is None:
        return
    if seed is not None:
        raise UsageError(f"{params.say('seed')} has no effect with {params.say('mask_in')}: "
                         "the mask is replayed, nothing is drawn")
    recorded = mask_options(mask_in)
    if recorded is not None and recorded["p"] != params.p and not params.identity:
        raise UsageError(f"{escape_name(mask_in)} was made with p = {recorded['p']}; "
                         f"{params.say('p')} {params.p} would rescale it differently (leave "
                         f"{params.say('p')} out, or give {recorded['p']})")


def run_file(job: FileJob, *, chunk: int = CHUNK, threads: int | None = None,
             progress: Callable[[int], None] | None = None,
             group: CommitGroup | None = None) -> dict:
    """Run a planned file: every tensor in the format's visit order, into the output.

    ``group``: the output joins a batch whose durability is paid at its commit.
    """
    tf, params = job.tf, job.params
    fmt = format_module(tf.format)
    stream = params.stream_module()
    draws = any(not p.identity and not p.replayed for p in job.plans.values())
    state = stream.file_state(job.seed) if draws and hasattr(stream, "file_state") else None
    entries = [Entry(t.name, t.dtype, t.shape) for t in tf.tensors]
    mask_writer = MaskWriter(job.mask_out, tf, job.plans, params) if job.mask_out else None
    results: dict[str, dict] = {}
    buffers = BufferPool()  # chunk buffers, reused from tensor to tensor
    done = 0
    with open_output(job.output, group) as sink, (mask_writer or contextlib.nullcontext()):
        writer = fmt.writer(sink, entries, tf.metadata, like=tf)
        with open(tf.real_path, "rb") as src:
            fd = src.fileno()
            writer.begin()
            for t in fmt.visit_order(tf.tensors, serial=_serial(stream)):
                plan = job.plans.get(t.name)
                digest = ContentDigest(t.dtype, t.shape)
                if plan is None:
                    writer.copy(t.name, fd, t)
                    for _, _, values in chunks_of(fd, tf, t):
                        digest.update(values)
                    st = TensorStats(t.name, dtype_label(t.dtype), t.shape, None)
                    st.status = "skipped"
                else:
                    read, sliced = fmt.reader(fd, tf, t, buffers.take)
                    item = t.dtype.itemsize

                    def write(s, out, idx, _name=t.name, _item=item, _done=done, _d=digest):
                        _d.update(out)
                        writer.write(_name, s, out)
                        buffers.give(out)
                        if progress:
                            progress(_done + (s + out.size) * _item)

                    sink_for = mask_writer.sink_for(t.name) if mask_writer else None
                    st = run_tensor(plan.bind(state), read, write, sliced=sliced, chunk=chunk,
                                    threads=threads, mask_sink=sink_for)
                    if mask_writer and plan.identity:
                        mask_writer.fill_identity(t.name)
                results[t.name] = tensor_entry(st, digest.hexdigest())
                writer.end_tensor(t.name)
                done += t.nbytes
            writer.finish()
        if mask_writer:
            mask_writer.finish()
    return file_doc(job, results)


def tensor_entry(st: TensorStats, output_digest: str, mask_digest: str | None = None) -> dict:
    """One tensor's stats entry: its counts, and the digest of its output values.

    ``mask_digest``: the digest when it was computed elsewhere (a split run hashes
    the packed mask bits its tasks wrote), instead of ``st``'s own.
    """
    entry = st.as_dict()
    if mask_digest is not None:
        entry["mask_digest"] = mask_digest
    entry["output_digest"] = output_digest
    return entry


def file_doc(job: FileJob, results: dict[str, dict]) -> dict:
    """A file's stats document from its tensors' entries (``tensor_entry``), by name.

    The one builder of the document, whichever way the file ran (here, in a
    ``--jobs`` worker, or split over a Dask cluster), so every way reports the
    same keys in the same order.
    """
    tf = job.tf
    per_tensor = [results[t.name] for t in tf.tensors]
    # entries that are not tensors were kept by the writer; listed, but never counted
    not_tensors = [{"name": o.name, "status": "skipped", "reason": "not a tensor"}
                   for o in tf.others]
    doc = {
        "input": tf.path,
        "output": job.output,
        "format": tf.format,
        "key": job.key,
        "seed": job.seed,
        "status": "done",
        "metadata": tf.metadata,
        "tensors": per_tensor + not_tensors,
        "totals": totals(per_tensor),
    }
    if job.copy is not None:
        doc["copy"] = job.copy
    doc.update(job.extra)
    return doc


def failure(input: str, output: str | None, error: DropoutError) -> dict:
    """A file the run could not process, as its stats entry (``--keep-going``)."""
    return {"input": input, "output": output, "status": "failed", "error": str(error),
            "tensors": [], "totals": totals([])}


def run_one(job: FileJob, chunk: int, threads: int | None, keep_going: bool,
            progress: Callable[[int], None] | None = None,
            group: CommitGroup | None = None) -> dict:
    """One planned file; with ``keep_going`` a bad file becomes its failure entry."""
    try:
        return run_file(job, chunk=chunk, threads=threads, progress=progress, group=group)
    except DropoutError as e:
        if not keep_going or e.exit_code != 1:
            raise
        return failure(job.tf.path, job.output, e)


def _serial(stream) -> bool:
    """Does the stream hand out one serial sequence per file (torch's generator)?"""
    return hasattr(stream, "file_state")


@contextlib.contextmanager
def open_output(output: str, group: CommitGroup | None = None):
    """A Sink on a temporary file that replaces ``output`` when the block succeeds.

    "-" spools to an anonymous temporary file and copies it to stdout at the
    end: a failure never leaves half a file on stdout.  None writes nothing
    (``verify`` recomputes outputs only to hash them).
    """
    if output is None:
        yield _Discard()
        return
    if output == "-":
        import shutil
        import tempfile

        spool_dir = tempfile.gettempdir()
        try:
            f = tempfile.TemporaryFile(prefix="tensor-dropout-stdout-")
        except OSError as e:
            raise DropoutError(f"<stdout>: cannot create a spool file in {escape_name(spool_dir)}: "
                               f"{e.strerror}") from None
        with f:
            yield Sink(f, where=f"<stdout>: cannot spool the output to a temporary file in "
                                f"{escape_name(spool_dir)}")
            f.seek(0)
            out = sys.stdout.buffer
            shutil.copyfileobj(f, out, 1 << 20)
            out.flush()
        return
    with atomic_write(output, group=group) as f:
        yield Sink(f)


class _Discard:
    """A sink that keeps nothing."""

    def write_at(self, pos: int, data) -> None:
        pass


class MaskWriter:
    """--mask-out: the keep mask of each processed tensor, as bool, in its unit shape.

    Formats that hold metadata record the options that shaped the mask under
    ``MASK_KEY`` (JSON: p, variant, channel_axis, share_axes, exact_count, rng,
    mode), which ``--mask-in`` reads back.
    """

    def __init__(self, path: str, tf: TensorFile, plans: dict[str, TensorPlan],
                 params: DropoutParams) -> None:
        self.path = path
        self.format = mask_format(path, params)
        self.metadata = None
        if format_module(self.format).METADATA:
            self.metadata = {MASK_KEY: json.dumps({
                "p": params.p, "variant": params.variant, "channel_axis": params.channel_axis,
                "share_axes": list(params.share_axes), "exact_count": params.exact_count,
                "rng": params.rng, "mode": params.mode}, sort_keys=True)}
        self.entries = [Entry(name, np.dtype(bool), p.mask_shape or p.shape)
                        for name, p in plans.items()]
        most = format_module(self.format).MAX_TENSORS
        if most is not None and len(self.entries) > most:
            raise UsageError(f"{escape_name(path)}: a .{self.format} mask file holds at most "
                             f"{most} tensor(s); this input has {len(self.entries)} chosen "
                             "tensors, use .safetensors")
        self._ctx = None

    def __enter__(self) -> MaskWriter:
        if os.path.exists(self.path) and not os.path.isfile(self.path):
            raise DropoutError(f"{escape_name(self.path)}: mask output is not a regular file")
        self._ctx = atomic_write(self.path)
        sink = Sink(self._ctx.__enter__())
        self.writer = format_module(self.format).writer(sink, self.entries, self.metadata)
        self.writer.begin()
        return self

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)

    def sink_for(self, name: str) -> Callable[[int, np.ndarray], None]:
        def sink(u0: int, keep: np.ndarray) -> None:
            self.writer.write(name, u0, keep)

        return sink

    def fill_identity(self, name: str) -> None:
        """An identity run keeps every element: an all-True mask."""
        n = math.prod(next(e.shape for e in self.entries if e.name == name))
        step = 1 << 24
        for s in range(0, n, step):
            self.writer.write(name, s, np.ones(min(step, n - s), dtype=bool))

    def finish(self) -> None:
        self.writer.finish()


def chunks_of(fd: int, tf: TensorFile, t: TensorInfo, chunk: int = CHUNK):
    """A tensor's elements, chunk by chunk in C order, through its format's reader:
    ``(start, stop, flat values)``."""
    read, sliced = format_module(tf.format).reader(fd, tf, t, None)
    if sliced:
        for s, e, idx in slab_chunks(t.shape, chunk):
            yield s, e, read(s, e, idx)
    else:
        for s in range(0, t.numel, chunk):
            e = min(t.numel, s + chunk)
            yield s, e, read(s, e, None)


def inspect_file(path: str, *, digest: bool = False) -> dict:
    """Describe a tensor file: format, metadata, and per tensor dtype, shape, zeros.

    Works chunk by chunk; for bool tensors (mask files) it counts kept and dropped.
    ``digest``: each tensor's content digest (``output_digest`` in the stats),
    and for bool tensors their ``mask_digest`` as the stats compute it.

    A sharded checkpoint's index (``*.safetensors.index.json``) is described as
    one file: format ``safetensors-index``, the index's metadata, every shard's
    tensors in shard order (each with its ``shard``), and ``size`` the shards'
    total.
    """
    path = os.fspath(path)
    from .sharded import is_index

    if is_index(path):
        return _inspect_index(path, digest)
    with open_tensor_file(path) as tf, open(tf.real_path, "rb") as f:
        out = []
        for t in tf.tensors:
            zeros = nonfinite = 0
            content = ContentDigest(t.dtype, t.shape) if digest else None
            mask = MaskDigest() if digest and t.dtype == bool else None
            for _, _, buf in chunks_of(f.fileno(), tf, t):
                zeros += int(np.count_nonzero(buf == 0))
                if t.dtype.kind not in "biu":
                    nonfinite += int(np.count_nonzero(~np.isfinite(buf)))
                if content is not None:
                    content.update(buf)
                if mask is not None:
                    mask.update_keep(buf)
            entry = {"name": t.name, "dtype": dtype_label(t.dtype), "shape": list(t.shape),
                     "numel": t.numel, "zeros": zeros,
                     "zero_fraction": zeros / t.numel if t.numel else 0.0,
                     "nonfinite": nonfinite}
            if t.dtype == bool:
                entry["kept"], entry["dropped"] = t.numel - zeros, zeros
            if t.fortran_order:
                entry["fortran_order"] = True
            if content is not None:
                entry["digest"] = content.hexdigest()
            if mask is not None:
                entry["mask_digest"] = mask.hexdigest()
            out.append(entry)
        doc = {"file": tf.path, "format": tf.format, "size": tf.size,
               "metadata": tf.metadata, "tensors": out}
        if tf.others:
            doc["others"] = [o.name for o in tf.others]
        return doc


def _inspect_index(path: str, digest: bool) -> dict:
    from .sharded import read_index

    ckpt = read_index(path)
    shards = [inspect_file(ckpt.shard_path(name), digest=digest) for name in ckpt.shards]
    tensors = [dict(t, shard=name) for name, doc in zip(ckpt.shards, shards, strict=True)
               for t in doc["tensors"]]
    metadata = ckpt.doc.get("metadata")
    return {"file": path, "format": "safetensors-index", "size": sum(d["size"] for d in shards),
            "metadata": metadata if isinstance(metadata, dict) else None,
            "shards": list(ckpt.shards), "tensors": tensors}


def load_tensors(path: str) -> dict[str, np.ndarray]:
    """Read every tensor of a (small) file into memory, through its format's reader."""
    path = os.fspath(path)
    out = {}
    with open_tensor_file(path) as tf, open(tf.real_path, "rb") as f:
        for t in tf.tensors:
            a = np.empty(t.numel, dtype=t.dtype)
            for s, e, buf in chunks_of(f.fileno(), tf, t):
                a[s:e] = buf
            out[t.name] = a.reshape(t.shape)
    return out


def save_tensors(path: str, tensors: dict[str, np.ndarray],
                 metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` to ``path`` in the format its extension names, atomically.

    A .npy file holds one array (name it ""); .safetensors any number, plus
    string ``metadata``; .npz any number, as stored members ``NAME.npy`` (like
    ``np.savez``).

    >>> save_tensors("w.safetensors", {"w": np.ones((2, 2), np.float32)})  # doctest: +SKIP
    """
    path = os.fspath(path)
    fmt_name = format_of_name(path)
    if fmt_name is None:
        raise UsageError(f"{escape_name(path)}: unknown extension; name the file "
                         f"{known_extensions()}")
    fmt = format_module(fmt_name)
    if metadata is not None and not fmt.METADATA:
        raise UsageError(f"{escape_name(path)}: a {fmt_name} file cannot hold metadata")
    arrays = {}
    for name, a in tensors.items():
        if not isinstance(name, str):
            raise UsageError(f"tensor names must be strings, got {name!r}")
        a = np.asarray(a)
        if a.dtype.hasobject:
            raise DropoutError(f"{escape_name(path)}: tensor {escape_name(name)}: object "
                               "arrays are not tensors; refused")
        arrays[name] = a
    entries = [Entry(name, a.dtype, a.shape) for name, a in arrays.items()]
    with atomic_write(path) as f:
        writer = fmt.writer(Sink(f), entries, metadata)
        writer.begin()
        for name, a in arrays.items():
            writer.write(name, 0, np.ascontiguousarray(a).reshape(-1))
            writer.end_tensor(name)
        writer.finish()


def verify(stats: str | os.PathLike | dict) -> list[dict]:
    """Check a run against its stats document: recompute every output and compare.

    Each input named in the stats is read again and every output recomputed in
    memory (nothing is written) with the recorded options, seed and key; the
    recomputed content digests must equal the recorded ``output_digest`` s, and
    the output files (when they are files) must hold exactly that content.
    Paths are taken as recorded, so run it from the directory the run was made
    in.  Returns one result per file: ``{"input", "output", "ok", "problem"}``.
    """
    doc = stats if isinstance(stats, dict) else _read_stats(os.fspath(stats))
    params = _recorded_params(doc)
    results = []
    for f in doc["files"]:
        result = {"input": f.get("input"), "output": f.get("output"), "ok": False,
                  "problem": None}
        results.append(result)
        try:
            result["problem"] = _verify_file(f, doc, params)
        except DropoutError as e:
            result["problem"] = str(e)
        result["ok"] = result["problem"] is None
    return results


def _read_stats(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
    except OSError as e:
        raise DropoutError(f"{escape_name(path)}: cannot read: {e.strerror}") from None
    except ValueError:
        raise DropoutError(f"{escape_name(path)}: not a JSON stats document") from None
    if not isinstance(doc, dict) or doc.get("tool") != "tensor-dropout" \
            or not isinstance(doc.get("files"), list):
        raise DropoutError(f"{escape_name(path)}: not a tensor-dropout stats document")
    return doc


def _recorded_params(doc: dict) -> DropoutParams:
    torch = doc.get("rng") == "torch"
    try:
        return DropoutParams(p=doc["p"], mode=doc["mode"], variant=doc["variant"],
                             scale=doc["scale"], fill=None if torch else doc["fill"],
                             channel_axis=doc["channel_axis"],
                             share_axes=tuple(doc["share_axes"]),
                             exact_count=doc["exact_count"], rng=doc["rng"])
    except (KeyError, TypeError) as e:
        raise DropoutError(f"the stats document lacks a run option ({e})") from None


def _verify_file(f: dict, doc: dict, params: DropoutParams) -> str | None:
    """The first difference found for one file of a run, or None."""
    if f.get("status") == "failed":
        return f"the run failed on this file: {f.get('error')}"
    if f["input"] == "-":
        return "the input was stdin: nothing to read again"
    recorded = {t["name"]: t for t in f["tensors"]}
    chosen = {name for name, t in recorded.items() if t["status"] == "processed"}
    mask_in = doc.get("mask_in")
    with open_tensor_file(f["input"]) as tf:
        if {t.name for t in tf.tensors} != set(recorded):
            return "the input's tensors are not the ones recorded"
        replay = replay_for(load_tensors(mask_in), tf) if mask_in else None
        plans = plan_file(tf, params, f["seed"], f["key"], replay=replay, names=chosen)
        again = run_file(FileJob(tf, None, params, f["seed"], f["key"], plans))
    for t in again["tensors"]:
        want = recorded[t["name"]]
        for field_name in ("output_digest", "mask_digest"):
            if want.get(field_name) != t.get(field_name):
                return (f"tensor {escape_name(t['name'])}: the recomputed {field_name} differs "
                        "from the recorded one")
    if f["output"] in (None, "-"):
        return None
    found = {t["name"]: t.get("digest") for t in inspect_file(f["output"], digest=True)[
        "tensors"]}
    for t in again["tensors"]:
        if found.get(t["name"]) != t["output_digest"]:
            return (f"tensor {escape_name(t['name'])}: the output file "
                    f"{escape_name(f['output'])} does not hold the recomputed content")
    return None
