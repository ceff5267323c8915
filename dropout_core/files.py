"""Dropout on tensor files: one file in, the same format out, plus its statistics."""

from __future__ import annotations

import contextlib
import fnmatch
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable

import numpy as np

from . import npy, safetensors_file
from .array import check_seed, new_seed, torch_source_for
from .atomic import atomic_write, check_target
from .dtypes import dtype_label
from .engine import CHUNK, effective_p, run_tensor
from .errors import DropoutError, UsageError, escape_name
from .kernel import make_plan
from .masks import mask_shape
from .params import DropoutParams
from .pipeline import BufferPool
from .readers import open_tensor_file, output_format
from .stats import TensorStats, totals
from .tensorfile import TensorFile, TensorInfo, read_exact


def file_key(path: str) -> str:
    """The file part of every stream key: the input's base name, "-" for stdin."""
    return "-" if path == "-" else os.path.basename(path)


def selected(name: str, tensors: tuple[str, ...], exclude: tuple[str, ...]) -> bool:
    """--tensor/--exclude: fnmatch globs on tensor names (a .npy's one tensor is always chosen)."""
    if tensors and not any(fnmatch.fnmatchcase(name, g) for g in tensors):
        return False
    return not any(fnmatch.fnmatchcase(name, g) for g in exclude)


def visit_order(tf: TensorFile, params: DropoutParams) -> list[TensorInfo]:
    """Tensors in the order they are processed.

    The default stream is per tensor, so any order gives the same bits; data
    order keeps the I/O sequential.  The torch stream is one serial stream per
    file: tensors take it in order of name, the order of
    ``safetensors.numpy.load_file(path).keys()``.
    """
    if params.rng == "torch":
        return sorted(tf.tensors, key=lambda t: t.name)
    return sorted(tf.tensors, key=lambda t: t.offset)


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
    if inplace:
        if input == "-":
            raise UsageError("--inplace needs a file, not stdin")
        if output not in (None, input):
            raise UsageError("--inplace and an output path exclude each other")
        output = input
    elif output is None:
        raise UsageError("give an output path (-o), or inplace=True")
    if seed is None:
        seed = None if (mask_in or params.identity) else new_seed()
    elif not isinstance(seed, int) or isinstance(seed, bool):
        seed = check_seed(seed)
    tf = open_tensor_file(input)
    try:
        if output != "-" and not inplace:
            check_target(output, force=force, inputs=[input])
        replay = _load_masks(mask_in, tf) if mask_in else None
        return _apply(tf, output, params, seed, inplace, tensors, exclude, replay, mask_out,
                      chunk_size, key if key is not None else file_key(input), progress,
                      threads)
    finally:
        tf.close()


def _load_masks(path: str, tf: TensorFile) -> dict[str, np.ndarray]:
    masks = load_tensors(path)
    if tf.format == "npy" and "" not in masks and len(masks) == 1:
        masks = {"": next(iter(masks.values()))}
    return masks


def load_tensors(path: str) -> dict[str, np.ndarray]:
    """Read every tensor of a (small) file into memory, through the checked readers."""
    tf = open_tensor_file(path)
    try:
        out = {}
        with open(tf.real_path, "rb") as f:
            for t in tf.tensors:
                buf = np.empty(t.numel, dtype=t.dtype)
                read_exact(f.fileno(), t.offset, buf)
                if t.fortran_order:
                    out[t.name] = buf.reshape(t.shape[::-1]).T
                else:
                    out[t.name] = buf.reshape(t.shape)
        return out
    finally:
        tf.close()


def check_file(tf: TensorFile, params: DropoutParams, tensors: tuple[str, ...] = (),
               exclude: tuple[str, ...] = (), replay: dict | None = None) -> list[TensorInfo]:
    """Every check that needs no tensor data: dtypes, mask shapes, replayed masks.

    Returns the chosen tensors.  Runs before any output is opened, so a bad
    tensor never leaves half a run behind.
    """
    chosen = [t for t in tf.tensors if tf.format == "npy" or selected(t.name, tensors, exclude)]
    if params.identity:
        return chosen
    for t in chosen:
        make_plan(params, t.dtype, tf.where(t))
        if replay is None:
            mask_shape(t.shape, params, tf.where(t))
        elif t.name not in replay:
            raise DropoutError(f"{tf.where(t)}: the mask file has no tensor of this name")
    return chosen


def _apply(tf: TensorFile, output: str, params: DropoutParams, seed: int | None, inplace: bool,
           tensors, exclude, replay, mask_out, chunk, key, progress=None,
           threads=None) -> dict:
    chosen = check_file(tf, params, tensors, exclude, replay)
    chosen_names = {t.name for t in chosen}
    out_header = _output_header(tf)
    torch_source = None
    if params.rng == "torch" and not params.identity and replay is None:
        torch_source = torch_source_for(seed, readahead=chunk)  # overlaps words with I/O
    mask_writer = _MaskWriter(mask_out, tf, chosen, params, replay) if mask_out else None
    results: dict[str, dict] = {}
    buffers = BufferPool()  # chunk buffers, reused from tensor to tensor
    sink_ctx = _open_sink(output, tf, inplace)
    with sink_ctx as sink, (mask_writer or contextlib.nullcontext()):
        with open(tf.real_path, "rb") as src:
            fd = src.fileno()
            sink.write_at(0, out_header)
            base_out = len(out_header)
            for t in visit_order(tf, params):
                data_out = base_out + (t.offset - len(tf.header)) if tf.format == "safetensors" \
                    else base_out
                if t.name not in chosen_names:
                    _copy_bytes(fd, t.offset, t.nbytes, sink, data_out)
                    st = TensorStats(t.name, _label(t), t.shape, None)
                    st.status = "skipped"
                    results[t.name] = st.as_dict()
                    continue
                reader, sliced = _reader(fd, tf, t, buffers)

                def write(s, chunk, idx, _base=data_out, _t=t):
                    sink.write_at(_base + s * _t.dtype.itemsize, chunk)
                    buffers.give(chunk)
                    if progress:
                        progress(_base - base_out + (s + chunk.size) * _t.dtype.itemsize)

                mask_sink = mask_writer.sink_for(t) if mask_writer else None
                st = run_tensor(shape=t.shape, dtype=t.dtype, read=reader, write=write,
                                params=params, seed=seed if seed is not None else 0, file=key,
                                tensor=t.name, where=tf.where(t), sliced=sliced,
                                mask=None if replay is None else replay.get(t.name),
                                torch_source=torch_source,
                                memory_order=tuple(range(len(t.shape)))[::-1]
                                if t.fortran_order else None,
                                mask_sink=mask_sink, chunk=chunk, threads=threads)
                if mask_writer and st.units_shape is None:
                    mask_writer.fill_identity(t)
                results[t.name] = st.as_dict()
    per_tensor = [results[t.name] for t in tf.tensors]
    return {
        "input": tf.path,
        "output": output,
        "format": tf.format,
        "key": key,
        "seed": seed,
        "metadata": tf.metadata,
        "tensors": per_tensor,
        "totals": totals(per_tensor),
    }


def _label(t: TensorInfo) -> str:
    return dtype_label(t.dtype)


def _output_header(tf: TensorFile) -> bytes:
    if tf.format == "safetensors":
        return tf.header  # same names, dtypes, shapes and offsets: the header is unchanged
    t = tf.tensors[0]
    return npy.header_bytes(t.dtype, t.shape)


def _reader(fd: int, tf: TensorFile, t: TensorInfo, buffers: BufferPool | None = None):
    if t.fortran_order:
        # A Fortran-order tensor is read whole with pread (a memory map would turn a file
        # truncated mid-run into SIGBUS) and served in C-order hyperslabs.
        data = np.empty(t.numel, dtype=t.dtype)
        read_exact(fd, t.offset, data, where=tf.where(t))
        logical = data.reshape(t.shape[::-1]).T

        def read_f(s, e, idx):
            return np.array(logical[idx], order="C").reshape(-1)

        return read_f, True

    def read_c(s, e, idx):
        buf = buffers.take(e - s, t.dtype) if buffers else np.empty(e - s, dtype=t.dtype)
        read_exact(fd, t.offset + s * t.dtype.itemsize, buf)
        return buf

    return read_c, False


def _copy_bytes(fd: int, offset: int, nbytes: int, sink, out_offset: int) -> None:
    step = 1 << 24
    for s in range(0, nbytes, step):
        n = min(step, nbytes - s)
        buf = np.empty(n, dtype=np.uint8)
        read_exact(fd, offset + s, buf)
        sink.write_at(out_offset + s, buf)


class _Sink:
    """Positioned writes into an open file."""

    KICK = 32 << 20  # bytes written between two starts of writeback
    # Bytes per pwrite.  Large writes make the page cache allocate large folios,
    # which on some VMs are several times slower to fill (1 GiB: 0.8-3.3 s in
    # 4 MiB writes, 0.26-0.32 s in 256 KiB writes, like cp).
    PIECE = 256 << 10

    def __init__(self, f, where: str | None = None) -> None:
        self.f = f
        self.fd = f.fileno()
        self.where = where  # names the file in errors (atomic_write names its own target)
        self._lo, self._hi = None, 0

    def write_at(self, pos: int, data) -> None:
        view = memoryview(np.ascontiguousarray(data).reshape(-1).view(np.uint8)) \
            if isinstance(data, np.ndarray) else memoryview(data)
        done = 0
        try:
            while done < len(view):
                done += os.pwrite(self.fd, view[done:done + self.PIECE], pos + done)
        except OSError as e:
            if self.where is None:
                raise
            raise DropoutError(f"{self.where}: {os.strerror(e.errno) if e.errno else e}") \
                from None
        self._lo = pos if self._lo is None else min(self._lo, pos)
        self._hi = max(self._hi, pos + done)
        if self._hi - self._lo >= self.KICK:
            self._start_writeback()

    def _start_writeback(self) -> None:
        # Start writing the dirty pages to disk now, without waiting, so that the
        # final fsync finds little left to do (on Linux, DONTNEED starts the
        # writeback of dirty pages and only drops pages that are already clean).
        if hasattr(os, "posix_fadvise"):
            with contextlib.suppress(OSError):
                os.posix_fadvise(self.fd, self._lo, self._hi - self._lo,
                                 os.POSIX_FADV_DONTNEED)
        self._lo, self._hi = None, 0


@contextlib.contextmanager
def _open_sink(output: str, tf: TensorFile, inplace: bool):
    if output == "-":
        # Spool, then copy: a failure never leaves half a file on stdout.
        spool_dir = tempfile.gettempdir()
        try:
            f = tempfile.TemporaryFile(prefix="tensor-dropout-stdout-")
        except OSError as e:
            raise DropoutError(f"<stdout>: cannot create a spool file in {escape_name(spool_dir)}: "
                               f"{e.strerror}") from None
        with f:
            yield _Sink(f, where=f"<stdout>: cannot spool the output to a temporary file in "
                                 f"{escape_name(spool_dir)}")
            f.seek(0)
            out = sys.stdout.buffer
            shutil.copyfileobj(f, out, 1 << 20)
            out.flush()
        return
    with atomic_write(output) as f:
        yield _Sink(f)


class _MaskWriter:
    """--mask-out: the keep mask of each processed tensor, as bool, in its unit shape."""

    def __init__(self, path: str, tf: TensorFile, chosen: list[TensorInfo],
                 params: DropoutParams, replay) -> None:
        self.path = path
        self.format = output_format(path, tf.format)
        self.shapes: dict[str, tuple] = {}
        for t in chosen:
            if params.identity:
                shape = t.shape
            elif replay is not None:
                m = np.asarray(replay[t.name])
                shape = (1,) * (len(t.shape) - m.ndim) + m.shape
            else:
                shape = mask_shape(t.shape, params, tf.where(t))
            self.shapes[t.name] = tuple(shape)
        if self.format == "npy" and len(self.shapes) != 1:
            raise UsageError(f"{escape_name(path)}: a .npy mask file holds one tensor; this "
                             f"input has {len(self.shapes)} chosen tensors, use .safetensors")
        names = list(self.shapes)
        if self.format == "npy":
            self.header = npy.header_bytes(np.dtype(bool), self.shapes[names[0]])
            self.offsets = {names[0]: len(self.header)}
        else:
            self.header = safetensors_file.build_header(
                [(n, np.dtype(bool), self.shapes[n]) for n in names])
            self.offsets, pos = {}, len(self.header)
            for n in names:
                self.offsets[n] = pos
                pos += math.prod(self.shapes[n])
        self._ctx = None

    def __enter__(self):
        check = self.path != "-"
        if check and os.path.exists(self.path) and not os.path.isfile(self.path):
            raise DropoutError(f"{escape_name(self.path)}: mask output is not a regular file")
        self._ctx = atomic_write(self.path)
        self.sink = _Sink(self._ctx.__enter__())
        self.sink.write_at(0, self.header)
        return self

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)

    def sink_for(self, t: TensorInfo):
        base = self.offsets[t.name]

        def sink(u0: int, dropped: np.ndarray) -> None:
            self.sink.write_at(base + u0, ~np.asarray(dropped, dtype=bool))

        return sink

    def fill_identity(self, t: TensorInfo) -> None:
        n = math.prod(self.shapes[t.name])
        step = 1 << 24
        for s in range(0, n, step):
            self.sink.write_at(self.offsets[t.name] + s, np.ones(min(step, n - s), dtype=bool))


def inspect_file(path: str) -> dict:
    """Describe a tensor file: format, metadata, and per tensor dtype, shape, zeros.

    Works chunk by chunk; for bool tensors (mask files) it counts kept and dropped.
    """
    tf = open_tensor_file(path)
    try:
        out = []
        with open(tf.real_path, "rb") as f:
            for t in tf.tensors:
                zeros = nonfinite = 0
                for s in range(0, t.numel, CHUNK):
                    buf = np.empty(min(CHUNK, t.numel - s), dtype=t.dtype)
                    read_exact(f.fileno(), t.offset + s * t.dtype.itemsize, buf)
                    zeros += int(np.count_nonzero(buf == 0))
                    if t.dtype.kind not in "biu":
                        nonfinite += int(np.count_nonzero(~np.isfinite(buf)))
                entry = {"name": t.name, "dtype": _label(t), "shape": list(t.shape),
                         "numel": t.numel, "zeros": zeros,
                         "zero_fraction": zeros / t.numel if t.numel else 0.0,
                         "nonfinite": nonfinite}
                if t.dtype == bool:
                    entry["kept"], entry["dropped"] = t.numel - zeros, zeros
                if t.fortran_order:
                    entry["fortran_order"] = True
                out.append(entry)
        return {"file": tf.path, "format": tf.format, "size": tf.size,
                "metadata": tf.metadata, "tensors": out}
    finally:
        tf.close()


def run_header(params: DropoutParams, seed: int | None) -> dict:
    """The run-level part of the stats document."""
    from . import __version__

    return {
        "tool": "tensor-dropout",
        "version": __version__,
        "p": params.p,
        "effective_p": effective_p(params),
        "seed": seed,
        "mode": params.mode,
        "variant": params.variant,
        "rng": params.rng,
        "scale": params.scale,
        "fill": params.fill_value(),
        "exact_count": params.exact_count,
        "share_axes": list(params.share_axes),
        "channel_axis": params.channel_axis,
    }
