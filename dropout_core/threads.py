"""Every thread of the library: keep bits drawn ahead, reads ahead and writes behind.

NumPy and ``os.preadv``/``os.pwrite`` release the GIL, so on a machine with two
or more cores a chunk can be read, another computed and a third written at the
same time, while worker threads draw the next keep bits.  Nothing here decides
a bit of the output: every element's result depends only on (seed, key,
index), and the statistics are gathered in order on the calling thread.
"""

from __future__ import annotations

import os
import queue
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator

import numpy as np

MAX_THREADS = 8
QUEUE_DEPTH = 2  # chunks read ahead of the compute, and chunks waiting to be written


def default_threads() -> int:
    """Compute threads when none are asked for: the usable cores, at most MAX_THREADS."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(MAX_THREADS, n))


def resolve_threads(threads: int | None) -> int:
    """The thread count to use: the one given (checked), or ``default_threads()``."""
    if threads is None:
        return default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        from .errors import UsageError

        raise UsageError(f"threads must be a positive integer, got {threads!r}")
    return threads


_pool = None  # a concurrent.futures.ThreadPoolExecutor, made on first use
_pool_size = 0
_pool_lock = threading.Lock()


def pool(workers: int):
    """A shared pool with at least ``workers`` threads (made on first use, kept)."""
    from concurrent.futures import ThreadPoolExecutor  # (imported when a run needs threads)

    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < workers:
            old = _pool
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tensor-dropout")
            _pool_size = workers
            if old is not None:
                old.shutdown(wait=False)
        return _pool


_serial: dict = {}


def serial_worker(name: str):
    """One shared thread named ``name`` that runs its tasks in order (FIFO)."""
    from concurrent.futures import ThreadPoolExecutor

    with _pool_lock:
        ex = _serial.get(name)
        if ex is None:
            ex = _serial[name] = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        return ex


def _forget_pool() -> None:
    # A forked child (--jobs) inherits the pool objects but not their threads.
    global _pool, _pool_size, _pool_lock
    _pool, _pool_size, _pool_lock = None, 0, threading.Lock()
    _serial.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def ahead(fn: Callable, items: Iterable, workers: int, depth: int) -> Iterator:
    """``fn(item)`` for each item, in order, computed up to ``depth`` items ahead on
    ``workers`` pool threads.  Stopping early leaves at most ``depth`` tasks running."""
    ex = pool(workers)
    todo = iter(items)
    queued: deque = deque()
    for item in todo:
        queued.append(ex.submit(fn, item))
        if len(queued) >= depth:
            break
    while queued:
        fut = queued.popleft()
        for item in todo:
            queued.append(ex.submit(fn, item))
            break
        yield fut.result()

class BufferPool:
    """Chunk buffers used again and again: fresh memory for every chunk costs page
    faults (and, in a virtual machine, the host's too) that can outweigh the copy.

    ``take`` hands out a buffer; ``give`` returns one when its chunk is written.
    Arrays that are not from the pool are ignored, and a buffer never returned
    is simply garbage-collected, so the pool holds at most ``keep`` idle buffers.
    """

    def __init__(self, keep: int = 2 * QUEUE_DEPTH + 4) -> None:
        self.keep = keep
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        self._ours: weakref.WeakValueDictionary = weakref.WeakValueDictionary()

    def take(self, n: int, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        need = n * dtype.itemsize
        while True:
            try:
                raw = self._free.get_nowait()
            except queue.Empty:
                raw = np.empty(need, dtype=np.uint8)
                self._ours[id(raw)] = raw
                break
            if raw.size >= need:
                break
        return raw[:need].view(dtype)

    def give(self, arr) -> None:
        raw = arr.base if isinstance(arr, np.ndarray) and arr.base is not None else arr
        if self._ours.get(id(raw)) is raw and self._free.qsize() < self.keep:
            self._free.put(raw)


_DONE = object()


class _Stage(threading.Thread):
    """A thread that feeds or drains a bounded queue and keeps its first error."""

    def __init__(self, target: Callable[[], None], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._target_fn = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._target_fn()
        except BaseException as e:  # handed to the main thread, raised there
            self.error = e


def overlapped(chunks: Iterable, read: Callable, write: Callable, compute: Callable,
               depth: int = QUEUE_DEPTH) -> None:
    """For each chunk ``(s, e, idx)``: ``write(s, compute(s, e, idx, read(s, e, idx)), idx)``.

    Reading runs ahead on one thread and writing trails on another, each at most
    ``depth`` chunks away; ``compute`` runs on the calling thread, in order.  The
    first error of any stage is raised here, after both threads have stopped, so
    nothing is written once this returns or raises.
    """
    inq: queue.Queue = queue.Queue(depth)
    outq: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def put(q: queue.Queue, item) -> bool:
        return _put_while(q, item, lambda: not stop.is_set())

    def reader() -> None:
        try:
            for s, e, idx in chunks:
                if stop.is_set() or not put(inq, (s, e, idx, read(s, e, idx))):
                    return
        finally:
            put(inq, _DONE)

    def writer() -> None:
        while True:
            item = outq.get()
            if item is _DONE:
                return
            if stop.is_set():
                continue
            s, out, idx = item
            try:
                write(s, out, idx)
            except BaseException:
                stop.set()
                raise

    rt, wt = _Stage(reader, "tensor-dropout-read"), _Stage(writer, "tensor-dropout-write")
    rt.start()
    wt.start()
    error: BaseException | None = None
    try:
        while True:
            item = _get(inq, rt)
            if item is _DONE:
                break
            if wt.error is not None:
                break
            s, e, idx, x = item
            out = compute(s, e, idx, x)
            if not _put_while(outq, (s, out, idx), wt.is_alive):
                break
    except BaseException as e:
        error = e
    finally:
        if error is not None or wt.error is not None or rt.error is not None:
            stop.set()  # abandon: the writer drops what is queued, the reader stops
        _drain(inq)
        # Wait for both threads even through a second signal: once this returns,
        # nothing may write to the output any more.
        while True:
            try:
                if wt.is_alive():
                    _put_while(outq, _DONE, wt.is_alive)
                rt.join()
                wt.join()
                break
            except BaseException as e:
                error = error or e
                stop.set()
                _drain(inq)
    for err in (error, rt.error, wt.error):
        if err is not None:
            raise err


def _get(q: queue.Queue, producer: _Stage):
    while True:
        try:
            return q.get(timeout=0.05)
        except queue.Empty:
            if not producer.is_alive() and q.empty():
                return _DONE


def _put_while(q: queue.Queue, item, go: Callable[[], bool]) -> bool:
    """Put ``item`` on a bounded queue, waiting only while ``go()`` holds."""
    while go():
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _drain(q: queue.Queue) -> None:
    try:
        while True:
            q.get_nowait()
    except queue.Empty:
        pass
