"""Stage write: the curated rows of a shard (`curated_table`: the input columns under their
own names, as MetaCLIP's reference writes them; ``entry_ids`` only on request), written
atomically (`write_parquet`, `write_json`: a temporary name, then renamed; the checksum
remembered), and the folder of each threshold (``curated/t=<t>/``, `curated_dir`) with the
digest of what its files depend on (`_prepare_t_dir`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from metaclip_gpu import storage, storage_write
from metaclip_gpu.pipeline.aligned import KeyedChunk
from metaclip_gpu.pipeline.checksums import put_bytes, remember
from metaclip_gpu.pipeline.files import ENTRY_IDS_TYPE, remove_stale_tmp
from metaclip_gpu.pipeline.manifest import ShardRecord
from metaclip_gpu.pipeline.oserrors import with_path
from metaclip_gpu.pipeline.read import (
    ReadOptions,
    Shard,
    ShardChunk,
    ShardError,
    columns_chunk,
    has_schema,
    read_shard,
)
from metaclip_gpu.storage import Location, RemotePath

CURATED_DIR = "curated"
BALANCE_CONFIG = "_balance.json"
CURATED_MANIFEST = "_manifest.jsonl"  # per t folder: each curated file's checksum
BALANCE_VERSION = 3  # bump when the curated files' content rules change (2: entry_ids optional;
# 3: a Parquet shard with no rows gets its columns, not a file without any)


def t_label(t: float) -> str:
    """The folder name of a threshold: ``t=20000`` for whole numbers, else ``t=<repr>``."""
    value = float(t)
    if value.is_integer() and abs(value) < 1e15:
        return f"t={int(value)}"
    return f"t={value!r}"


def curated_dir(out_dir: str | os.PathLike[str] | RemotePath, t: float) -> Location:
    return storage.location(out_dir) / CURATED_DIR / t_label(t)


def _restore_names(chunk: ShardChunk) -> list[str]:
    """The chunk's column names as in the input (undoing `read`'s ``text``/``key`` renames)."""
    names = []
    for name in chunk.table.column_names:
        if name == "text":
            names.append(chunk.text_column)
        elif name == "key" and chunk.key_column is not None:
            names.append(chunk.key_column)
        elif name == "text_orig" and chunk.text_column != "text":
            names.append("text")
        elif name == "key_orig" and chunk.key_column not in (None, "key"):
            names.append("key")
        else:
            names.append(name)
    return names


def curated_table(keyed: KeyedChunk, mask: np.ndarray, *, entry_ids: bool = False) -> pa.Table:
    """The kept rows of `keyed` (bool `mask`): the input's columns under their own names, in
    the input's order; with `entry_ids`, also ``entry_ids`` (each row's matched entries, from
    the match file; an input column of that name is replaced)."""
    table = keyed.chunk.table.rename_columns(_restore_names(keyed.chunk))
    order = {name: i for i, name in enumerate(keyed.chunk.source_columns)}
    if order:  # the input's column order (the reader puts text and key first)
        names = sorted(table.column_names, key=lambda name: order.get(name, len(order)))
        table = table.select(names)
    if entry_ids:
        if "entry_ids" in table.column_names:
            table = table.drop_columns(["entry_ids"])
        table = table.append_column("entry_ids", keyed.entry_lists)
    return table.filter(pa.array(mask, pa.bool_()))


def empty_curated_table(
    shard: Shard,
    options: ReadOptions,
    *,
    entry_ids: bool = False,
    template: pa.Table | None = None,
) -> pa.Table:
    """The curated file of a shard with no rows: `curated_table`'s columns, so every curated
    file of a folder has the same ones (a reader of the folder, ``pq.read_table(folder)``,
    takes one file's schema for all: a file without columns lost every other file's
    columns). From the shard's schema where its format has one without rows (Parquet); else
    those of `template` (`curated_template`: another shard's), else none (only
    ``entry_ids``, when asked for)."""
    chunk = columns_chunk(shard, options)
    if chunk is None:
        if template is not None:
            return template.slice(0, 0)
        return pa.table({"entry_ids": pa.array([], ENTRY_IDS_TYPE)} if entry_ids else {})
    return _no_rows(chunk, entry_ids)


def curated_template(
    shards: Sequence[Shard], rows: dict[str, int], options: ReadOptions, *, entry_ids: bool
) -> pa.Table | None:
    """A 0-row table with the curated columns of the first shard that has rows (`rows`: each
    shard's rows at match time), read from its first rows; only when a shard with no rows
    has a format that names no columns without rows (JSONL, TSV, tar): None otherwise, or
    when no shard has rows."""
    if not any(rows.get(s.name) == 0 and not has_schema(s) for s in shards):
        return None
    for shard in shards:
        if not rows.get(shard.name):
            continue
        try:
            for chunk in read_shard(shard, replace(options, batch_rows=1024)):
                if chunk.num_rows:
                    return _no_rows(replace(chunk, table=chunk.table.slice(0, 0)), entry_ids)
        except ShardError:
            continue  # changed since matching: the next shard with rows
    return None


def _no_rows(chunk: ShardChunk, entry_ids: bool) -> pa.Table:
    """`curated_table` of a 0-row chunk."""
    no_ids = pa.array([], ENTRY_IDS_TYPE)
    keyed = KeyedChunk(chunk, np.zeros(1, np.int64), np.zeros(0, np.int32), no_ids)
    return curated_table(keyed, np.zeros(0, dtype=bool), entry_ids=entry_ids)


def write_json(path: Location, payload: Any) -> None:
    """`payload` as indented UTF-8 JSON at `path` (a temporary name, then renamed; in object
    storage one PUT, as atomic)."""
    if isinstance(path, RemotePath):
        storage_write.write_json(path, payload)
        return
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with with_path(tmp):
        tmp.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def write_parquet(table: pa.Table, final: Location) -> str:
    """Writes `table` at `final` (a temporary name, then renamed; in object storage streamed
    to the object, whose name the caller made unique to the attempt); returns its checksum."""
    if isinstance(final, RemotePath):
        with storage_write.open_output(final) as sink:
            pq.write_table(table, sink)
        remember(final, sink.checksum())
        return sink.checksum()
    # Into memory, hashed there and written once: writing the file and reading it back to
    # hash it cost 0.078 s of CPU for a 120k-row cc3m table, this 0.061 s (the file's bytes are
    # held in memory meanwhile: one curated file a shard in flight).
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return put_bytes(final, [sink.getvalue()])


def _balance_digest(
    seed: int,
    t: float,
    counts: np.ndarray,
    records: dict[str, ShardRecord],
    options: ReadOptions,
    entry_ids: bool = False,
) -> str:
    """What a t folder's curated files depend on (a change deletes them: `_prepare_t_dir`)."""
    payload = {
        "version": BALANCE_VERSION,
        "entry_ids": bool(entry_ids),
        "seed": int(seed),
        "t": float(t),
        "counts": hashlib.sha256(np.ascontiguousarray(counts).tobytes()).hexdigest(),
        "shards": sorted(
            (name, r.config, r.fingerprint.get("size"), r.fingerprint.get("mtime_ns"))
            + ((r.fingerprint["version"],) if "version" in r.fingerprint else ())
            for name, r in records.items()
        ),
        "columns": options.columns,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _prepare_t_dir(directory: Location, digest: str, seed: int, t: float) -> None:
    """Creates the folder of one t; deletes what a killed run left half-written there, and its
    Parquet files when they are of another config."""
    if isinstance(directory, RemotePath):
        _prepare_remote_t_dir(directory, digest, seed, t)
        return
    directory.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(directory)
    config_path = directory / BALANCE_CONFIG
    try:
        old = json.loads(config_path.read_text())
    except (OSError, ValueError):
        old = None
    if isinstance(old, dict) and old.get("digest") == digest:
        return
    (directory / CURATED_MANIFEST).unlink(missing_ok=True)
    for path in directory.iterdir():  # temporary files: only dead writers' (above)
        if path.name.endswith(".parquet"):
            path.unlink(missing_ok=True)
    write_json(config_path, {"digest": digest, "seed": int(seed), "t": float(t)})


def _prepare_remote_t_dir(directory: RemotePath, digest: str, seed: int, t: float) -> None:
    """`_prepare_t_dir` in object storage: every object of another digest's folder goes (its
    record objects first, so a run killed meanwhile finds files no record names: orphans)."""
    config_path = directory / BALANCE_CONFIG
    try:
        old = json.loads(storage.read_bytes(config_path))
    except (OSError, ValueError):
        old = None
    if isinstance(old, dict) and old.get("digest") == digest:
        return
    records = directory / CURATED_MANIFEST.removesuffix(".jsonl")
    for obj in storage_write.list_tree(records) + storage_write.list_tree(directory):
        storage_write.remove(obj)
    write_json(config_path, {"digest": digest, "seed": int(seed), "t": float(t)})
