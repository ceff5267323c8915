"""One large file across a Dask cluster: tasks by tensor and by ranges within a tensor.

``run_split(client, job, ...)`` runs one planned file (``files.FileJob``) as many
tasks.  The client creates a pre-sized temporary output file beside the target
and writes its header; each task reads its own byte range of the input and
writes its own byte range of that file, and the packed keep bits of its units
into a scratch file beside it (ranges start at multiples of 8 units, so bits
pack into whole bytes).  One task per tensor hashes the tensor's output values
and its packed mask in order: the digests of the whole tensor, as a local run
computes them (a tensor written by many tasks is hashed range by range as they
finish, ``digest_as_written``).  The client moves the output into place only after
every task succeeded and the file is durable; any failure removes both files
and leaves the target as it was.  Workers and client must see the same files
under the same paths (a shared file system): a probe asks every worker first.

An .npz whose tensor members are stored (``np.savez``) splits the same way: its
output archive is planned in advance (``npz.split_layout``: every member's place,
from the writer's own header builders), range tasks also return the CRC-32 of the
bytes they read and wrote, and the client combines them per member
(``ziparchive.crc32_combine``), checks the input's, and writes the local headers
and the central directory last.

What a stream or format cannot split runs as one task (``one_task_reason``).
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from .atomic import atomic_file, side_file
from .dtypes import dtype_label
from .engine import run_tensor
from .errors import DropoutError, escape_name
from .files import FileJob, file_doc, tensor_entry
from .formats import Entry, format_module
from .formats.base import byte_view, read_exact, write_exact
from .kernel import kernel_for
from .plan import TensorPlan
from .stats import ContentDigest, MaskDigest, TensorStats
from .streams import exact
from .units import broadcast_keep, slab_chunks

SPLIT_SIZE = 64 << 20  # bytes of a tensor per task (chosen by benchmarks/bench_dask_split.py)
# raw bytes at fixed offsets, any range writable (an .npz: when its members are stored, see
# the format's split_refusal)
SPLIT_FORMATS = ("npy", "safetensors", "npz")


def one_task_reason(job: FileJob) -> str | None:
    """Why this planned file must run as one task (the stats' ``dask_split``), or None."""
    tf, params = job.tf, job.params
    say = params.say
    drawn = [p for p in job.plans.values() if not p.identity]
    if tf.format not in SPLIT_FORMATS:
        return f"one task: a .{tf.format} file is written front to back"
    refusal = getattr(format_module(tf.format), "split_refusal", None)
    why = refusal(tf) if refusal is not None else None
    if why is not None:
        return f"one task: {why}"
    if job.mask_out:
        return f"one task: {say('mask_out')} writes its mask file in one pass"
    if any(p.replayed for p in drawn):
        return f"one task: {say('mask_in')} replays a mask that is held in memory"
    if params.rng == "torch" and drawn:
        return (f"one task: {say('rng_torch')} is a serial stream (each decision depends on "
                "every draw before it)")
    if any(t.fortran_order for t in tf.tensors):
        return "one task: a Fortran-order .npy is reordered into C order as a whole"
    return None


# --------------------------------------------------------------------------- the tasks


@dataclass(frozen=True)
class Piece:
    """One task's share of a tensor: elements (or, for ``kind="mask"``, units) [start, stop).

    ``kind``: "copy" (bytes unchanged), "drop" (values, and with ``mask_off`` the
    packed keep bits of the same units), "mask" (only the packed keep bits of a
    broadcast mask's units).
    """

    kind: str
    src: str
    out: str
    side: str
    name: str
    in_off: int
    out_off: int
    dtype: np.dtype
    shape: tuple[int, ...]
    start: int
    stop: int
    plan: TensorPlan | None = None  # with its keep source
    mask_off: int | None = None  # byte offset of the tensor's unit 0 in the side file
    chunk: int = 1 << 20
    threads: int | None = None
    crc: bool = False  # also the CRC-32 of the bytes read and written (an archive member)

    @property
    def nbytes(self) -> int:
        return (self.stop - self.start) * (self.dtype.itemsize if self.kind != "mask" else 0)


class _Shifted:
    """A keep source seen from unit ``base`` on: a range of a tensor as a tensor of its own."""

    serial = False

    def __init__(self, src, base: int) -> None:
        self.src, self.base = src, base

    def keep(self, u0: int, u1: int, out: np.ndarray | None = None) -> np.ndarray:
        return self.src.keep(self.base + u0, self.base + u1, out=out)


class _Bits:
    """Keep bits in unit order, packed 8 to a byte and written at their place in a file."""

    def __init__(self, fd: int, offset: int, first_unit: int) -> None:
        self.fd, self.pos = fd, offset + first_unit // 8
        self.carry = np.zeros(0, dtype=bool)

    def put(self, _u0: int, keep: np.ndarray) -> None:
        if self.carry.size:
            keep = np.concatenate([self.carry, keep])
        whole = keep.size - keep.size % 8
        self._write(np.packbits(keep[:whole], bitorder="little"))
        self.carry = keep[whole:].copy()

    def close(self) -> None:
        if self.carry.size:  # the tensor's last byte: zero-padded, as MaskDigest pads
            self._write(np.packbits(self.carry, bitorder="little"))

    def _write(self, data: np.ndarray) -> None:
        self.pos += write_exact(self.fd, self.pos, data)


def _open(path: str, flags: int) -> int:
    try:
        return os.open(path, flags)
    except OSError as e:
        raise DropoutError(f"{escape_name(path)}: cannot open on this Dask worker: "
                           f"{e.strerror}") from None


def run_piece(piece: Piece, version: str) -> tuple[int, int, int | None, int | None]:
    """One task, on a worker: its range of the input into its range of the output.

    Returns (dropped units, overflow, CRC-32 of the input bytes read, of the output bytes
    written); the CRCs are None unless ``piece.crc``.  Writes only into files that exist
    (never makes a file: after a failure the client has removed them).
    """
    from . import __version__

    if version != __version__:
        raise DropoutError(f"this Dask worker runs tensor-dropout {__version__}, the client "
                           f"{version}; install the same version everywhere")
    p = piece
    item = p.dtype.itemsize
    fin = _open(p.src, os.O_RDONLY)
    fout = _open(p.side if p.kind == "mask" else p.out, os.O_WRONLY)
    fbits = None
    crc = _Crc() if p.crc else None
    try:
        if p.kind == "copy":
            step = max(1, (16 << 20) // max(1, item))
            for s in range(p.start, p.stop, step):
                buf = np.empty(min(step, p.stop - s), dtype=p.dtype)
                read_exact(fin, p.in_off + s * item, buf)
                if crc is not None:
                    crc.read(buf)
                    crc.wrote(buf)
                write_exact(fout, p.out_off + s * item, buf)
            result = (0, 0)
        elif p.kind == "mask":
            result = (_mask_units(p, fout), 0)
        elif p.plan.broadcast:
            result = (0, _drop_slabs(p, fin, fout, crc))
        else:
            bits = None
            if p.mask_off is not None:
                fbits = _open(p.side, os.O_WRONLY)
                bits = _Bits(fbits, p.mask_off, p.start)
            result = _drop_range(p, fin, fout, bits, crc)
            if bits is not None:
                bits.close()
        result += (None, None) if crc is None else (crc.input, crc.output)
        os.fsync(fout)  # this worker's writes are durable before the client renames
        if fbits is not None:
            os.fsync(fbits)
        return result
    finally:
        for fd in (fin, fout, fbits):
            if fd is not None:
                os.close(fd)


class _Crc:
    """The CRC-32s of a range's input and output bytes, fed in order."""

    def __init__(self) -> None:
        self.input = self.output = 0

    def read(self, data: np.ndarray) -> None:
        self.input = zlib.crc32(byte_view(data), self.input)

    def wrote(self, data: np.ndarray) -> None:
        self.output = zlib.crc32(byte_view(data), self.output)


def run_pieces(pieces: list[Piece], version: str) -> list[tuple]:
    """One task: a few pieces (many small tensors share a task, as a large one's range has
    one to itself); ``run_piece``'s result for each."""
    return [run_piece(p, version) for p in pieces]


def digest_tensors(specs: list[tuple], *after) -> list[tuple[str, str | None]]:
    """One task: ``digest_tensor`` of a few tensors, after the tasks that wrote them
    (``after``: their results, a dependency only)."""
    return [digest_tensor(*spec) for spec in specs]


def _drop_range(p: Piece, fin: int, fout: int, bits: _Bits | None,
                crc: _Crc | None = None) -> tuple[int, int]:
    """Elements [start, stop) of a tensor whose units are its elements, through the engine.

    The engine reads and writes chunks in order (on its reader and writer threads), so
    ``crc`` sees the bytes in order; the input is hashed before the kernel changes it.
    """
    n, item = p.stop - p.start, p.dtype.itemsize
    sub = replace(p.plan, shape=(n,), mask_shape=(n,), source=_Shifted(p.plan.source, p.start))

    def read(s: int, e: int, idx) -> np.ndarray:
        buf = np.empty(e - s, dtype=p.dtype)
        read_exact(fin, p.in_off + (p.start + s) * item, buf)
        if crc is not None:
            crc.read(buf)
        return buf

    def write(s: int, out: np.ndarray, idx) -> None:
        if crc is not None:
            crc.wrote(out)
        write_exact(fout, p.out_off + (p.start + s) * item, out)

    st = run_tensor(sub, read, write, chunk=p.chunk, threads=p.threads,
                    mask_sink=None if bits is None else bits.put)
    return st.dropped_units, st.overflow


def _drop_slabs(p: Piece, fin: int, fout: int, crc: _Crc | None = None) -> int:
    """The slabs in [start, stop) of a tensor with a broadcast mask (channel, shared axes)."""
    plan, item = p.plan, p.dtype.itemsize
    kernel = kernel_for(plan.values)
    overflow = 0
    for s, e, idx in slab_chunks(p.shape, p.chunk):
        if s < p.start:
            continue
        if s >= p.stop:
            break
        x = np.empty(e - s, dtype=p.dtype)
        read_exact(fin, p.in_off + s * item, x)
        if crc is not None:
            crc.read(x)
        overflow += kernel.apply(x, broadcast_keep(plan.source, plan.mask_shape, p.shape, idx))
        if crc is not None:
            crc.wrote(x)
        write_exact(fout, p.out_off + s * item, x)
    return overflow


def _mask_units(p: Piece, fside: int) -> int:
    """Units [start, stop) of a broadcast mask: packed keep bits, and how many are dropped."""
    bits = _Bits(fside, p.mask_off, p.start)
    step = max(8, p.chunk - p.chunk % 8)
    dropped = 0
    for u0 in range(p.start, p.stop, step):
        keep = p.plan.source.keep(u0, min(p.stop, u0 + step))
        dropped += keep.size - int(np.count_nonzero(keep))
        bits.put(u0, keep)
    bits.close()
    return dropped


def digest_tensor(out: str, out_off: int, dtype: np.dtype, shape: tuple[int, ...],
                  side: str, mask_off: int | None, units: int) -> tuple[str, str | None]:
    """A tensor's (output digest, mask digest or None), from what its pieces wrote.

    SHA-256 is serial, so this is the part of a tensor that one worker does alone.
    """
    content = ContentDigest(dtype, shape)
    fd = _open(out, os.O_RDONLY)
    try:
        _hash_values(fd, out_off, dtype, 0, math.prod(shape), content)
    finally:
        os.close(fd)
    return content.hexdigest(), _mask_digest(side, mask_off, units)


def digest_as_written(spec: tuple, ranges: list[tuple[str, int, int]],
                      mask_events: list[str]) -> list[tuple[str, str | None]]:
    """One task for one large tensor: ``digest_tensor``'s result, hashing each range of
    elements as soon as the task that writes it is done (``ranges``: (the name of the
    ``distributed.Event`` the client sets then, start, stop), in order), so the serial
    SHA-256 runs beside the writing instead of after it.

    The task secedes from the worker's thread pool while it waits: it holds no slot that
    a range task needs.  If the run is abandoned (its temporary file is gone), it stops.
    """
    from distributed import Event, get_client, get_worker, rejoin, secede

    out, out_off, dtype, shape, side, mask_off, units = spec
    client, worker = get_client(), get_worker()
    me = worker.get_current_task()

    def wanted() -> bool:  # not cancelled, nor released because the client went away
        ts = worker.state.tasks.get(me)
        return ts is not None and ts.state not in ("cancelled", "released", "forgotten")

    secede()
    try:
        content = ContentDigest(dtype, shape)
        fd = _open(out, os.O_RDONLY)
        try:
            for name, start, stop in ranges:
                _wait_for(Event(name, client), out, wanted)
                _hash_values(fd, out_off, dtype, start, stop, content)
        finally:
            os.close(fd)
        for name in mask_events:
            _wait_for(Event(name, client), out, wanted)
        return [(content.hexdigest(), _mask_digest(side, mask_off, units))]
    finally:
        rejoin()


def _wait_for(event, out: str, wanted: Callable[[], bool]) -> None:
    """Wait until a writing task is done (its event set); give up when the run was
    abandoned: the client removed the output file, or this task is no longer wanted (it
    was cancelled, or its client is gone).  The event stays set (the client clears it at
    the end), so a digest task run again, after its worker died, finds it set too."""
    while not event.wait(timeout=2):
        if not os.path.exists(out) or not wanted():
            raise DropoutError(f"{escape_name(out)}: the run was abandoned")


def _hash_values(fd: int, out_off: int, dtype: np.dtype, start: int, stop: int,
                 content: ContentDigest) -> None:
    """Feed elements [start, stop) of a tensor at ``out_off`` to ``content``, in order."""
    step = max(1, (16 << 20) // dtype.itemsize)
    for s in range(start, stop, step):
        buf = np.empty(min(step, stop - s), dtype=dtype)
        read_exact(fd, out_off + s * dtype.itemsize, buf)
        content.update(buf)


def _mask_digest(side: str, mask_off: int | None, units: int) -> str | None:
    """The digest of a tensor's packed keep bits in the side file, or None (no mask)."""
    if mask_off is None:
        return None
    mask = MaskDigest()
    size = (units + 7) // 8
    fd = _open(side, os.O_RDONLY)
    try:
        for s in range(0, size, 16 << 20):
            buf = np.empty(min(16 << 20, size - s), dtype=np.uint8)
            read_exact(fd, mask_off + s, buf)
            mask.update_packed(buf)
    finally:
        os.close(fd)
    return mask.hexdigest()


def probe(paths: list[tuple[str, int]]) -> tuple[str, list[str]]:
    """Run on every worker: its tensor-dropout version, and the paths it cannot use."""
    from . import __version__

    return __version__, [path for path, mode in paths if not os.access(path, mode)]


# --------------------------------------------------------------------------- the client


def _ranges(n: int, per: int) -> list[tuple[int, int]]:
    """[0, n) cut every ``per`` (a multiple of 8) elements or units."""
    return [(s, min(n, s + per)) for s in range(0, n, per)] or [(0, 0)]


def _slab_ranges(shape: tuple[int, ...], chunk: int, per: int) -> list[tuple[int, int]]:
    """[0, numel) cut at slab edges (``slab_chunks``), about ``per`` elements each."""
    cuts, last = [0], 0
    for _, e, _ in slab_chunks(shape, chunk):
        if e - cuts[-1] >= per:
            cuts.append(e)
        last = e
    if cuts[-1] != last:
        cuts.append(last)
    return list(zip(cuts[:-1], cuts[1:], strict=True)) or [(0, 0)]


def check_workers(client, paths: list[tuple[str, int]], shown: dict[str, str]) -> None:
    """Every worker must see the input and the temporary files, and run our version."""
    from . import __version__

    for worker, (version, missing) in sorted(client.run(probe, paths).items()):
        if version != __version__:
            raise DropoutError(f"the Dask worker {worker} runs tensor-dropout {version}, the "
                               f"client {__version__}; install the same version everywhere")
        if missing:
            path = missing[0]
            seen = escape_name(shown[path]) + ("" if shown[path] == path else
                                               f" ({escape_name(path)})")
            raise DropoutError(
                f"the Dask worker {worker} cannot see {seen}: splitting a file needs a file "
                "system shared by this machine and every worker, under the same paths")


def _sources(client, job: FileJob, per: int) -> dict[str, object]:
    """Each drawing tensor's keep source; exact count's thresholds found by range tasks
    (both passes of ``streams.exact`` run on the workers, one task per range of units)."""
    sources, pending = {}, {}
    for name, plan in job.plans.items():
        if plan.identity:
            continue
        if plan.params.stream != "exact" or plan.units <= per:  # (one range: find it here)
            sources[name] = plan.params.stream_module().source(
                plan.params, plan.seed, plan.file, plan.tensor, plan.units, None)
            continue
        k = exact.exact_count(plan.params.p, plan.units)
        settled, limit = exact.edge_limit(k, plan.units)
        if not settled:
            key = exact.stream_key(plan.seed, plan.file, plan.tensor)
            pending[name] = (plan, k, key, _ranges(plan.units, per))
        else:
            sources[name] = exact.ExactCountStream.with_limit(
                plan.seed, plan.file, plan.tensor, plan.units, plan.params.p, limit)
    if not pending:
        return sources
    hists = {name: client.map(exact.histogram, [key] * len(r), [a for a, _ in r],
                              [b for _, b in r], pure=False)
             for name, (_, _, key, r) in pending.items()}
    found = {}
    for name, futs in hists.items():
        _, k, key, r = pending[name]
        hist = sum(client.gather(futs))
        found[name] = exact.find_bucket(hist, k)
    cands = {name: client.map(exact.candidates, [key] * len(r), [found[name][0]] * len(r),
                              [a for a, _ in r], [b for _, b in r], pure=False)
             for name, (_, _, key, r) in pending.items()}
    for name, futs in cands.items():
        plan, k, _, _ = pending[name]
        parts = client.gather(futs)
        keys = np.concatenate([a for a, _ in parts])
        idx = np.concatenate([b for _, b in parts])
        limit = exact.limit_of(keys, idx, k - found[name][1])
        sources[name] = exact.ExactCountStream.with_limit(
            plan.seed, plan.file, plan.tensor, plan.units, plan.params.p, limit)
    return sources


def run_split(client, job: FileJob, *, split_size: int, chunk: int, threads: int | None,
              advance: Callable[[int], None] | None = None) -> dict:
    """Run one planned file as tasks on ``client``'s cluster; returns its stats document,
    equal to ``files.run_file``'s for the same job."""
    from . import __version__

    distributed = __import__("distributed")
    tf = job.tf
    layout = _layout(job)
    src = os.path.abspath(tf.real_path)
    submitted: list = []
    signalled: list[str] = []  # Events set for digests that hash as ranges finish
    with atomic_file(job.output) as (f, tmp), side_file(job.output) as side:
        tmp, side = os.path.abspath(tmp), os.path.abspath(side)
        f.truncate(layout.size)
        for pos, data in layout.begin():
            write_exact(f.fileno(), pos, data)
        check_workers(client, [(src, os.R_OK), (tmp, os.W_OK), (side, os.W_OK)],
                      {src: tf.path, tmp: job.output, side: job.output})
        try:
            pieces, masks = [], {}
            crc = layout.checksummed
            mask_pos = 0
            sources = _sources(client, job, _per(split_size, 1))
            for t in tf.tensors:
                plan = job.plans.get(t.name)
                out_off = layout.offsets[t.name]
                base = dict(src=src, out=tmp, side=side, name=t.name, in_off=t.offset,
                            out_off=out_off, dtype=t.dtype, shape=t.shape, chunk=chunk,
                            threads=threads, crc=crc)
                per = _per(split_size, t.dtype.itemsize)
                if plan is None or plan.identity:
                    pieces += [Piece("copy", start=a, stop=b, **base)
                               for a, b in _ranges(t.numel, per)]
                    continue
                bound = replace(plan, source=sources[t.name])
                masks[t.name] = mask_pos
                if bound.broadcast:
                    pieces += [Piece("drop", start=a, stop=b, plan=bound, **base)
                               for a, b in _slab_ranges(t.shape, chunk, per)]
                    pieces += [Piece("mask", start=a, stop=b, plan=bound, mask_off=mask_pos,
                                     **dict(base, crc=False))
                               for a, b in _ranges(plan.units, _per(split_size, 1))]
                else:
                    pieces += [Piece("drop", start=a, stop=b, plan=bound, mask_off=mask_pos,
                                     **base) for a, b in _ranges(t.numel, per)]
                mask_pos += (plan.units + 7) // 8
            for k, (in_off, out_off, n) in enumerate(layout.others):  # members, as they are
                pieces += [Piece("copy", src=src, out=tmp, side=side, name=f"\0member {k}",
                                 in_off=in_off, out_off=out_off, dtype=np.dtype(np.uint8),
                                 shape=(n,), start=a, stop=b)
                           for a, b in _ranges(n, _per(split_size, 1))]
            os.truncate(side, mask_pos)
            groups = _groups(pieces, split_size, lambda p: p.nbytes or
                             (p.stop - p.start) // 8)
            futures = client.map(run_pieces, groups, version=__version__, pure=False)
            size_of = {fut.key: sum(p.nbytes for p in g)
                       for fut, g in zip(futures, groups, strict=True)}
            writers: dict[str, list] = {}  # tensor -> the tasks that write it
            ranges: dict[str, list] = {}  # tensor -> (task key, start, stop) of its values
            for fut, g in zip(futures, groups, strict=True):
                for p in g:
                    if fut not in writers.setdefault(p.name, []):
                        writers[p.name].append(fut)
                    if p.kind != "mask":
                        ranges.setdefault(p.name, []).append((_written(fut), p.start, p.stop))

            def spec(t) -> tuple:
                return (tmp, layout.offsets[t.name], t.dtype, t.shape, side, masks.get(t.name),
                        job.plans[t.name].units if t.name in masks else 0)

            # each group of tensors' digests waits only for its own writers: other tensors
            # keep going; a tensor written by several tasks is hashed as they finish
            digests, announce = [], {}  # task key -> its Event, set when the task is done
            for ts in _groups(list(tf.tensors), split_size, lambda t: t.nbytes):
                if len(ts) == 1 and len(writers[ts[0].name]) > 1:
                    t = ts[0]
                    waited = {name for name, _, _ in ranges[t.name]}
                    mask_events = [_written(f) for f in writers[t.name]
                                   if _written(f) not in waited]
                    announce.update((f.key, _written(f)) for f in writers[t.name])
                    digests.append(client.submit(digest_as_written, spec(t), ranges[t.name],
                                                 mask_events, pure=False))
                else:
                    digests.append(client.submit(
                        digest_tensors, [spec(t) for t in ts],
                        *dict.fromkeys(f for t in ts for f in writers[t.name]), pure=False))
            submitted = futures + digests
            for fut in distributed.as_completed(submitted, loop=client.loop):
                if advance and fut.key in size_of:
                    advance(size_of[fut.key])
                if fut.status == "error":
                    fut.result()  # raises the task's error
                if fut.key in announce:  # a digest hashing as it goes may take this range
                    signalled.append(announce.pop(fut.key))
                    distributed.Event(signalled[-1], client).set()
            counts = [c for cs in client.gather(futures) for c in cs]
            hashed = dict(zip((t.name for t in tf.tensors),
                              (h for hs in client.gather(digests) for h in hs), strict=True))
            parts: dict[str, list[tuple[int, int, int]]] = {t.name: [] for t in tf.tensors}
            for p, (_, _, c_in, c_out) in zip(pieces, counts, strict=True):
                if p.crc:  # a tensor's ranges, in order
                    parts[p.name].append((p.nbytes, c_in, c_out))
            for pos, data in layout.end(parts):  # (an archive: CRCs checked, then the headers)
                write_exact(f.fileno(), pos, data)
        except distributed.KilledWorker as e:
            raise DropoutError(f"{tf.where()}: a Dask worker died while processing a part of "
                               f"the file ({e}); the target is unchanged") from None
        except distributed.client.FutureCancelledError as e:
            raise DropoutError(f"{tf.where()}: a task was cancelled ({e}); the target is "
                               "unchanged") from None
        finally:
            pending = [fut for fut in submitted if not fut.done()]
            if pending:
                client.cancel(pending)
            for name in signalled:  # frees them on the scheduler
                distributed.Event(name, client).clear()
    results = _entries(job, pieces, counts, hashed)
    return file_doc(job, results)


class _RawLayout:
    """A .npy or .safetensors output planned for a split: its header at 0, each tensor's
    bytes at their offset (``RawWriter``'s), nothing else."""

    checksummed = False  # no checksum covers the data
    others: tuple = ()

    def __init__(self, job: FileJob) -> None:
        tf = job.tf
        entries = [Entry(t.name, t.dtype, t.shape) for t in tf.tensors]
        w = format_module(tf.format).writer(None, entries, tf.metadata, like=tf)
        self.header, self.offsets = w.header, w.offsets
        self.size = max([len(w.header)] + [w.offsets[t.name] + t.nbytes for t in tf.tensors])

    def begin(self) -> list[tuple[int, bytes]]:
        return [(0, self.header)]

    def end(self, parts: dict) -> list[tuple[int, bytes]]:
        return []


def _layout(job: FileJob):
    """The output file planned before any task runs: the format's own ``split_layout`` (an
    archive), else a raw format's header and offsets.

    Either way: ``size``, ``offsets`` (each tensor's data), ``begin()`` (bytes the client
    writes first), ``others`` ((input offset, output offset, bytes) copied as they are),
    ``checksummed`` (ranges report CRC-32s) and ``end(parts)`` (bytes written last, from
    each tensor's ranges' (bytes, input CRC, output CRC)).
    """
    fmt = format_module(job.tf.format)
    if hasattr(fmt, "split_layout"):
        copied = {t.name for t in job.tf.tensors if t.name not in job.plans}
        return fmt.split_layout(job.tf, copied)
    return _RawLayout(job)


def _written(future) -> str:
    """The name of the ``distributed.Event`` that says a writing task is done."""
    return f"tensor-dropout-written-{future.key}"


def _groups(items: list, split_size: int, size: Callable) -> list[list]:
    """Consecutive items in groups of about ``split_size`` bytes (at least one item each)."""
    groups, load = [[]], 0
    for item in items:
        if groups[-1] and load + size(item) > split_size:
            groups.append([])
            load = 0
        groups[-1].append(item)
        load += size(item)
    return groups if groups[0] else []


def _per(split_size: int, itemsize: int) -> int:
    """Elements (units, for itemsize 1) per task: about ``split_size`` bytes, a multiple of 8."""
    return max(8, split_size // max(1, itemsize) // 8 * 8)


def _entries(job: FileJob, pieces: list[Piece], counts: list[tuple[int, int]],
             hashed: dict[str, tuple[str, str | None]]) -> dict[str, dict]:
    """Each tensor's stats entry from its pieces' counts and its digests."""
    dropped: dict[str, int] = {}
    overflow: dict[str, int] = {}
    for p, (d, o, _, _) in zip(pieces, counts, strict=True):
        dropped[p.name] = dropped.get(p.name, 0) + d
        overflow[p.name] = overflow.get(p.name, 0) + o
    results = {}
    for t in job.tf.tensors:
        plan = job.plans.get(t.name)
        out_digest, mask_digest = hashed[t.name]
        st = TensorStats(t.name, dtype_label(t.dtype), t.shape,
                         None if plan is None else plan.mask_shape)
        if plan is None:
            st.status = "skipped"
        elif plan.identity:
            st.extra.update({"scale": 1.0, "mode": plan.params.mode})
        else:
            st.extra.update(plan.values.summary())
            st.dropped_units, st.overflow = dropped[t.name], overflow[t.name]
        results[t.name] = tensor_entry(st, out_digest, mask_digest)
    return results
