"""Sharded safetensors checkpoints: a Hugging Face ``*.safetensors.index.json`` and its shards.

An input named ``*.safetensors.index.json`` stands for the whole checkpoint.
``batch`` calls this module three times:

* ``shard_jobs`` (from ``plan_jobs``): read and validate the index, and make
  one job per shard, each keyed by the index's base name, so that a tensor's
  mask depends on (seed, index name, tensor name) and never on the sharding;
* ``check_checkpoints`` (once every shard is opened and planned, before
  anything is written): hold each shard's tensors against the index;
* ``write_indexes`` (once every shard is written): the output index, then the
  stats entry for it.

The output index is the input's JSON (same keys, same order, ``metadata``
kept), written as ``json.dumps(doc, indent=2)`` plus a newline.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass

from .atomic import atomic_write, check_side_outputs, check_target
from .errors import DropoutError, UsageError, escape_name
from .formats import safetensors

INDEX_SUFFIX = ".safetensors.index.json"
MAX_INDEX = 100_000_000  # bytes, like the safetensors header cap


@dataclass(frozen=True)
class Checkpoint:
    """A validated index: its JSON, and its shards' names in sorted order."""

    path: str  # as the user named it
    doc: dict  # the whole JSON document, key order kept
    weight_map: dict[str, str]  # tensor name -> shard name
    shards: tuple[str, ...]

    @property
    def key(self) -> str:
        """The file part of every shard's stream key: the index's base name."""
        return os.path.basename(self.path)

    def shard_path(self, name: str) -> str:
        """Where a shard is read: beside the index."""
        return os.path.join(os.path.dirname(self.path), name)


def is_index(path: str) -> bool:
    """Does this input name a sharded checkpoint's index?

    >>> is_index("ckpt/model.safetensors.index.json"), is_index("model.safetensors")
    (True, False)
    """
    return path.endswith(INDEX_SUFFIX)


def read_index(path: str) -> Checkpoint:
    """Read and validate an index; every shard must exist and be a safetensors file."""
    where = escape_name(path)
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise DropoutError(f"{where}: not a regular file")
        if st.st_size > MAX_INDEX:
            raise DropoutError(f"{where}: index of {st.st_size} bytes exceeds the limit of "
                               f"{MAX_INDEX}")
        with open(path, "rb") as f:
            raw = f.read(MAX_INDEX + 1)
    except OSError as e:
        raise DropoutError(f"{where}: cannot read: {e.strerror}") from None
    if len(raw) > MAX_INDEX:
        raise DropoutError(f"{where}: index exceeds the limit of {MAX_INDEX} bytes")
    try:
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates,
                         parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise DropoutError(f"{where}: not valid JSON (not UTF-8 text)") from None
    except json.JSONDecodeError as e:
        raise DropoutError(f"{where}: not valid JSON ({e.msg} at line {e.lineno} column "
                           f"{e.colno})") from None
    except _Refused as e:
        raise DropoutError(f"{where}: {e}") from None
    if not isinstance(doc, dict):
        raise DropoutError(f"{where}: not a JSON object")
    weight_map = doc.get("weight_map")
    if not isinstance(weight_map, dict):
        raise DropoutError(f"{where}: has no \"weight_map\" object (tensor name -> shard file)")
    if not weight_map:
        raise DropoutError(f"{where}: the weight_map is empty: no shard to process")
    for tensor, shard in weight_map.items():
        if not isinstance(shard, str):
            raise DropoutError(f"{where}: the weight_map maps tensor {escape_name(tensor)} to "
                               f"{json.dumps(shard)}, not to a shard file name")
    shards = tuple(sorted(set(weight_map.values())))
    ckpt = Checkpoint(path, doc, weight_map, shards)
    for name in shards:
        _check_shard(ckpt, name)
    return ckpt


class _Refused(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise _Refused(f"duplicate key {escape_name(k)} in the index")
        out[k] = v
    return out


def _no_constant(name: str) -> None:
    raise _Refused(f"{name} is not JSON")


def _check_shard(ckpt: Checkpoint, name: str) -> None:
    """A shard is a plain file name beside the index, naming a safetensors file."""
    where, shown = escape_name(ckpt.path), escape_name(name)
    plain = (name not in ("", ".", "..") and "\0" not in name
             and not any(sep and sep in name for sep in ("/", "\\", os.sep, os.altsep)))
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        plain = False
    if not plain:
        raise DropoutError(f"{where}: shard name {shown} is not a plain file name; shards "
                           "must lie in the index's directory (no path, no '..')")
    path = ckpt.shard_path(name)
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise DropoutError(f"{where}: shard {shown} is not a regular file")
        with open(path, "rb") as f:
            head = f.read(9)
    except FileNotFoundError:
        raise DropoutError(f"{where}: shard {shown} is missing ({escape_name(path)} does not "
                           "exist)") from None
    except OSError as e:
        raise DropoutError(f"{where}: shard {shown}: cannot read: {e.strerror}") from None
    if not safetensors.sniff(head, st.st_size):
        raise DropoutError(f"{where}: shard {shown} is not a safetensors file")


def shard_jobs(path: str, *, output: str | None, out_dir: str | None, suffix: str,
               inplace: bool, repeat: int, seed: int | None,
               interface: str = "python") -> list:
    """``plan_jobs`` for one index: ``(shard, output, key)`` per shard, keyed by the index's
    name.  ``interface`` spells the options in messages ("python" or "cli")."""
    from .params import say as say_in

    def say(option: str) -> str:
        return say_in(option, interface)

    where = escape_name(path)
    if output is not None:
        raise UsageError(f"{where}: a sharded checkpoint is written as shards plus an index; "
                         f"use {say('out_dir')} or {say('inplace')}, not {say('output')}")
    if repeat > 1:
        raise UsageError(f"{where}: {say('repeat')} is not supported for a sharded checkpoint; "
                         f"run once per copy with its own {say('out_dir')} and {say('seed')}")
    if suffix:
        raise UsageError(f"{where}: {say('suffix')} would rename the shards the index names; "
                         f"write the checkpoint to another {say('out_dir')} instead")
    ckpt = read_index(path)
    jobs = []
    for name in ckpt.shards:
        src = ckpt.shard_path(name)
        dst = src if inplace else os.path.join(out_dir, name)
        jobs.append((src, dst, ckpt.key))
    return jobs


@dataclass(frozen=True)
class CheckedIndex:
    """A checkpoint held against its opened shards, and where its index goes."""

    checkpoint: Checkpoint
    output: str | None  # None: --inplace, the index is left as it is


def check_checkpoints(inputs: list[str], work: list, params, opts, *,
                      out_dir: str | None) -> list[CheckedIndex]:
    """Before anything is written: every shard holds exactly the tensors the index maps to it.

    ``work`` is the run's planned ``files.FileJob`` list (each shard opened once).
    The index is read again and must name the shards planned from it.
    """
    indexes = [p for p in inputs if is_index(p)]
    if not indexes:
        return []
    if params.rng == "torch":
        raise UsageError(f"{escape_name(indexes[0])}: {params.say('rng_torch')} draws one serial "
                         "stream per file, so a checkpoint's masks would depend on how it is "
                         "sharded; use the default stream for sharded checkpoints")
    by_path = {job.tf.path: job for job in work}
    checked, index_outputs = [], {}
    for path in indexes:
        ckpt = read_index(path)
        where = escape_name(path)
        found = {name: by_path.get(ckpt.shard_path(name)) for name in ckpt.shards}
        if any(job is None or job.key != ckpt.key for job in found.values()):
            raise DropoutError(f"{where}: the index changed while it was being read")
        for name, job in found.items():
            _check_tensors(ckpt, name, job.tf)
        out = None if out_dir is None else os.path.join(out_dir, os.path.basename(path))
        if out is not None:
            real = os.path.abspath(out)
            if real in index_outputs:
                raise UsageError(f"{where} and {escape_name(index_outputs[real])} would write "
                                 f"the same index {escape_name(out)}")
            index_outputs[real] = path
            if os.path.lexists(out):  # a DIR still to be created holds nothing to clash with
                check_target(out, force=opts.force, inputs=[path], interface=params.interface)
        for job in found.values():
            if job.output != job.tf.path and os.path.lexists(job.output):
                check_target(job.output, force=opts.force, inputs=[job.tf.path],
                             interface=params.interface)
        checked.append(CheckedIndex(ckpt, out))
    shard_inputs = [job.tf.path for job in work]
    check_side_outputs({params.say("stats"): opts.stats, params.say("mask_out"): opts.mask_out},
                       indexes + shard_inputs, [c.output for c in checked if c.output],
                       force=opts.force, interface=params.interface)
    return checked


def _check_tensors(ckpt: Checkpoint, name: str, tf) -> None:
    where, shown = escape_name(ckpt.path), escape_name(name)
    if tf.format != "safetensors":
        raise DropoutError(f"{where}: shard {shown} is not a safetensors file")
    held = {t.name for t in tf.tensors}
    for t in tf.tensors:
        mapped = ckpt.weight_map.get(t.name)
        if mapped is None:
            raise DropoutError(f"{where}: shard {shown} holds tensor {escape_name(t.name)}, "
                               "which the index does not map")
        if mapped != name:
            raise DropoutError(f"{where}: shard {shown} holds tensor {escape_name(t.name)}, "
                               f"which the index maps to shard {escape_name(mapped)}")
    for tensor, shard in ckpt.weight_map.items():
        if shard == name and tensor not in held:
            raise DropoutError(f"{where}: tensor {escape_name(tensor)} is mapped to shard "
                               f"{shown}, which does not hold it")


def index_text(doc: dict) -> str:
    """The output index: the input's JSON, indented by 2, with a final newline."""
    return json.dumps(doc, indent=2) + "\n"


def write_indexes(checked: list[CheckedIndex], doc: dict) -> None:
    """After every shard is written: each output index, and ``doc["indexes"]`` for the stats.

    With --inplace the index is left as it is: the shards keep their names,
    tensors, dtypes and sizes, so its content would not change.
    """
    if not checked:
        return
    entries = []
    for c in checked:
        if c.output is not None:
            with atomic_write(c.output) as f:
                f.write(index_text(c.checkpoint.doc).encode())
        entries.append({"input": c.checkpoint.path,
                        "output": c.output if c.output is not None else c.checkpoint.path,
                        "key": c.checkpoint.key,
                        "shards": list(c.checkpoint.shards)})
    doc["indexes"] = entries
