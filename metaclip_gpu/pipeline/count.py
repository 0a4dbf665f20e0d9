"""Stage `count` (SPEC section 3): texts per metadata entry, as exact uint64 counts.

`count[e]` is the number of texts whose match list contains entry `e`. A match list holds each
entry at most once (SPEC 3, and `MatchResult` stores sorted distinct ids), so the counts of a
flat CSR `entry_ids` array are its bincount. Counts of partitions add up to the counts of the
whole (`add_counts`, `reduce_counts`), exactly, whatever the sharding.

Every function takes its array module from its inputs (NumPy on CPU, CuPy on GPU, see
`array_module`), so one code path serves both backends; CuPy is never imported here.

Output formats:

- `save_entry_counts` writes MetaCLIP's counts file: ``np.save`` of a 1-D ``uint64`` array of
  length ``len(metadata)`` (the reference, ``metaclip1/balancing.py`` and
  ``metaclip1/indexing/entry_count.py``, allocates ``np.zeros(len(metadata), dtype=np.uint64)``
  "to be safe for scaling" and saves it with ``np.save``; it calls the file
  ``entry_count.npy``, this project ``entry_counts.npy``). ``np.load`` reads it back.
- `counts_table` gives the Parquet table: ``entry_id`` int32, ``entry`` string, ``count``
  uint64.

The stage over a run directory: `count_matches` adds up the per-shard counts of the match
tasks: those they handed over in memory in this process (``curate``: `shard_counts.RunCounts`,
only for the very files the records name), else those stored in each match file's footer
(`shard_counts`), and, for a file without them (an older run's), `entry_counts` of its
flattened ``entry_ids`` (only that column is read, one batch at a time, or one task per file on
a dask cluster); `run_count` saves ``entry_counts.npy`` and ``entry_counts.parquet``
(`counts_files`: hashed from memory; `count_and_save` leaves the Parquet table to a thread
while ``curate`` balances).
"""

from __future__ import annotations

import io
import itertools
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metaclip_gpu import storage
from metaclip_gpu.engine.arrays import array_module, to_host
from metaclip_gpu.engine.index import MetadataIndex
from metaclip_gpu.pipeline import rundir
from metaclip_gpu.pipeline.checksums import checksum_matches
from metaclip_gpu.pipeline.cluster import results_as_completed
from metaclip_gpu.pipeline.counts_files import PendingTable, npy_parts, put_bytes, save_counts
from metaclip_gpu.pipeline.files import MATCH_READ_ROWS
from metaclip_gpu.pipeline.manifest import Manifest
from metaclip_gpu.pipeline.match import match_records
from metaclip_gpu.pipeline.read import Shard
from metaclip_gpu.pipeline.run_lock import holds_run_lock
from metaclip_gpu.pipeline.shard_counts import RunCounts, add_footer_counts
from metaclip_gpu.storage import Location, RemotePath

COUNT_DTYPE = np.uint64
"""The dtype of every counts array (MetaCLIP's, and exact far beyond any pool size)."""


def entry_counts(entry_ids: Any, n_entries: int) -> Any:
    """Texts per entry: ``uint64[n_entries]``, the bincount of the flat CSR `entry_ids`.

    `entry_ids` is the flat id array of a match CSR (`MatchResult.entry_ids`; any integer
    dtype), in which each text lists an entry at most once, so a text counts each of its
    entries once. The result lives on the same device as `entry_ids`. Raises ValueError for an
    id outside ``[0, n_entries)``.
    """
    xp = array_module(entry_ids)
    ids = xp.asarray(entry_ids)
    if ids.ndim != 1:
        raise ValueError(f"entry_ids must be 1-D, got shape {ids.shape}")
    if n_entries < 0:
        raise ValueError(f"n_entries must be >= 0, got {n_entries}")
    if ids.dtype.kind not in "iu":
        raise TypeError(f"entry_ids must be integers, got dtype {ids.dtype}")
    if len(ids) == 0:
        return xp.zeros(n_entries, dtype=COUNT_DTYPE)
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= n_entries:
        raise ValueError(f"entry ids must lie in [0, {n_entries}), found [{low}, {high}]")
    return xp.bincount(ids.astype(xp.int64, copy=False), minlength=n_entries).astype(COUNT_DTYPE)


def add_counts(a: Any, b: Any) -> Any:
    """The exact uint64 sum of two counts arrays of the same length (partition counts).

    When one is a CuPy array and the other a NumPy array, both are brought to the host and the
    result is a NumPy array.
    """
    if array_module(a) is not array_module(b):
        a, b = to_host(a), to_host(b)
    xp = array_module(a)
    a, b = _as_counts(xp, a), _as_counts(xp, b)
    if a.shape != b.shape:
        raise ValueError(f"counts of different lengths: {a.shape[0]} and {b.shape[0]}")
    return a + b


def reduce_counts(parts: Iterable[Any], n_entries: int | None = None) -> Any:
    """The exact uint64 sum of the counts arrays in `parts` (per-partition counts -> global).

    With no parts, zeros of length `n_entries` (a ValueError when `n_entries` is not given).
    The sum does not depend on the order or grouping of the parts.
    """
    total: Any = None
    for part in parts:
        if total is None:
            total = _as_counts(array_module(part), part).copy()
        else:
            total = add_counts(total, part)
    if total is None:
        if n_entries is None:
            raise ValueError("reduce_counts of no parts needs n_entries")
        return np.zeros(n_entries, dtype=COUNT_DTYPE)
    if n_entries is not None and total.shape[0] != n_entries:
        raise ValueError(f"counts have length {total.shape[0]}, expected {n_entries}")
    return total


def save_entry_counts(counts: Any, path_npy: str | os.PathLike[str] | RemotePath) -> Location:
    """Writes `counts` in MetaCLIP's format: ``np.save`` of a 1-D ``uint64`` array.

    The file is written under a temporary name in the same folder and renamed into place, so
    a reader never sees a partial file (in object storage: one PUT). `path_npy` is used as
    given (no ``.npy`` is appended). Returns the path.
    """
    path = storage.location(path_npy)
    put_bytes(path, npy_parts(_as_counts(np, to_host(counts))))
    return path


def load_entry_counts(path_npy: str | os.PathLike[str] | RemotePath) -> np.ndarray:
    """Reads a counts file written by `save_entry_counts` (or MetaCLIP) as 1-D ``uint64``."""
    path = storage.location(path_npy)
    if isinstance(path, RemotePath):
        counts = np.load(io.BytesIO(storage.read_bytes(path)), allow_pickle=False)
    else:
        counts = np.load(path, allow_pickle=False)
    return _as_counts(np, counts)


def counts_table(counts: Any, entries: Sequence[str] | pa.Array | pa.ChunkedArray) -> pa.Table:
    """The counts as a table for Parquet: ``entry_id`` int32, ``entry`` string, ``count`` uint64.

    One row per entry, in id order; `entries` are the metadata strings (``entries[i]`` is entry
    ``i``), of the same length as `counts`.
    """
    host = _as_counts(np, to_host(counts))
    if isinstance(entries, pa.ChunkedArray):
        entries = entries.combine_chunks()
    entry_array = entries if isinstance(entries, pa.Array) else pa.array(entries, type=pa.string())
    if len(entry_array) != len(host):
        raise ValueError(f"{len(entry_array)} entries for {len(host)} counts")
    if not (pa.types.is_string(entry_array.type) or pa.types.is_large_string(entry_array.type)):
        entry_array = entry_array.cast(pa.string())
    return pa.table(
        {
            "entry_id": pa.array(np.arange(len(host), dtype=np.int32)),
            "entry": entry_array,
            "count": pa.array(host, type=pa.uint64()),
        }
    )


def _as_counts(xp: Any, counts: Any) -> Any:
    """`counts` as a 1-D uint64 array of module `xp` (integers only, none negative)."""
    array = xp.asarray(counts)
    if array.ndim != 1:
        raise ValueError(f"counts must be 1-D, got shape {array.shape}")
    if array.dtype == COUNT_DTYPE:
        return array
    if array.dtype.kind not in "iu":
        raise TypeError(f"counts must be integers, got dtype {array.dtype}")
    if array.dtype.kind == "i" and len(array) and int(array.min()) < 0:
        raise ValueError("counts must not be negative")
    return array.astype(COUNT_DTYPE)


def file_counts(
    path: str | os.PathLike[str] | RemotePath, n_entries: int, batch_rows: int = MATCH_READ_ROWS
):
    """uint64 counts of one match file's ``entry_ids`` (only that column is read)."""
    parquet = storage.parquet_file(storage.location(path))
    parts = (
        entry_counts(pc.list_flatten(batch.column(0)).to_numpy(zero_copy_only=False), n_entries)
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=["entry_ids"])
    )
    return reduce_counts(parts, n_entries)


def count_matches(
    out_dir: str | os.PathLike[str],
    n_entries: int,
    *,
    shards: Iterable[str] | None = None,
    client: Any = None,
    matched: RunCounts | None = None,
) -> np.ndarray:
    """The global uint64 counts over the match outputs the manifest of `out_dir` records.

    `shards`: only these shard names (default: the shards of the last match run, from the run
    record `rundir`; every recorded shard in a directory without one). Shards recorded with an
    error have no output and count nothing; a recorded output that is missing or damaged
    (its checksum) raises `FileNotFoundError` (rerun the match stage), and one matched with
    another configuration than the run record's `rundir.RunDirError`, rather than silently
    counting less or mixing two configurations.
    `matched`: the counts the match tasks of this process's match run handed over in memory
    (`shard_counts.RunCounts`), used for the shards whose records name the files they were
    made with; the other shards' come from their match files' footers.
    `client`: a `distributed.Client`; each file without footer counts (an older run's) is
    counted by a task on a worker and the per-file counts are reduced here
    (`count.reduce_counts`, exact in any order).
    """
    out_dir = storage.location(out_dir)
    manifest = Manifest.load(out_dir)
    if shards is None:
        shards = rundir.current_shards(out_dir)
    names = sorted(manifest.records) if shards is None else list(shards)
    config = rundir.match_config_id(out_dir)
    records = {}
    for name in names:
        record = manifest.get(name)
        if record is None:
            raise FileNotFoundError(f"{out_dir}: shard {name!r} is not in the manifest")
        if config is not None and record.config != config:
            raise rundir.RunDirError(
                f"count: shard {name!r} in {out_dir} was matched with other settings than the "
                "last match run; rerun match"
            )
        records[name] = record
    totals, from_memory = _start(matched, records, {"": n_entries})
    paths = _count_footers(manifest, records, totals, from_memory)
    if not paths:  # every file had its counts in memory or in its footer
        return totals[""]
    if client is not None and paths:
        futures = client.map(file_counts, paths, n_entries=n_entries, pure=False)
        parts = results_as_completed(client, futures)
    else:
        parts = (file_counts(p, n_entries) for p in paths)
    return reduce_counts(itertools.chain([totals[""]], parts), n_entries)


def _start(
    matched: RunCounts | None, records: dict[str, Any], sizes: dict[str, int]
) -> tuple[dict[str, np.ndarray], set[str]]:
    """The totals to add the footers to, and the shards they already hold: the in-memory
    counts when they are of these records' very files, else zeros and none."""
    if matched is not None and matched.covered_by(records):
        return matched.start_totals(sizes), set(matched.files)
    return {lang: np.zeros(n, dtype=COUNT_DTYPE) for lang, n in sizes.items()}, set()


def _count_footers(
    manifest: Manifest,
    records: dict[str, Any],
    totals: dict[str, np.ndarray],
    from_memory: set[str],
) -> list[Location]:
    """Checks each record's output (FileNotFoundError when missing or damaged) and adds its
    footer counts to `totals`, except the shards `from_memory` (`_start`); returns the outputs
    without footer counts (an older run's), to count from their ``entry_ids``."""
    paths = []
    for name, record in records.items():
        path = manifest.output_path(record)
        if path is None:
            continue
        if not checksum_matches(path, record.checksum, "rerun match"):
            raise FileNotFoundError(
                f"{path}: match output of shard {name!r} is missing or damaged; rerun match"
            )
        if name in from_memory:
            continue
        if not add_footer_counts(path, totals):
            paths.append(path)
    return paths


@holds_run_lock("count")
def run_count(
    out_dir: str | os.PathLike[str],
    metadata_path: str | os.PathLike[str] | MetadataIndex,
    *,
    client: Any = None,
    matched: RunCounts | None = None,
) -> np.ndarray:
    """Counts the match outputs of the last match run's shards in `out_dir` and writes
    ``entry_counts.npy`` and ``entry_counts.parquet`` there (`counts_files`), their checksums
    in the run record. `rundir.RunDirError` when `metadata_path` is not the metadata the match
    stage used. `client`, `matched`: as in `count_matches`."""
    counts, table = count_and_save(out_dir, metadata_path, client=client, matched=matched)
    table.finish()
    return counts


def count_and_save(
    out_dir: str | os.PathLike[str],
    metadata_path: str | os.PathLike[str] | MetadataIndex,
    *,
    client: Any = None,
    matched: RunCounts | None = None,
) -> tuple[np.ndarray, PendingTable]:
    """`run_count`, but ``entry_counts.parquet`` is still being written by a thread when this
    returns (``curate`` balances meanwhile): the caller, holding the run lock, calls
    `PendingTable.finish` before it lets go of it."""
    started = time.perf_counter()
    out_dir = storage.location(out_dir)
    index = (
        metadata_path
        if isinstance(metadata_path, MetadataIndex)
        else MetadataIndex.load(metadata_path)
    )
    rundir.check_metadata(out_dir, index, "count")
    shards = rundir.current_shards(out_dir)
    counts = count_matches(out_dir, len(index), shards=shards, client=client, matched=matched)
    table = save_counts(
        out_dir,
        counts,
        lambda: counts_table(counts, index.entries),
        shards,
        round(time.perf_counter() - started, 3),
    )
    return counts, table


COUNTS_DIR = "entry_counts"


def count_languages(
    out_dir: Location,
    shards: Sequence[Shard],
    sizes: dict[str, int],
    client: Any = None,
    matched: RunCounts | None = None,
) -> dict[str, np.ndarray]:
    """Per-language uint64 counts over the match files of `shards` (``lang`` column);
    `matched` as in `count_matches`."""
    records = match_records(out_dir, shards)
    paths = []
    totals, from_memory = _start(matched, records, sizes)
    for name, record in records.items():
        if record.output is None or name in from_memory:
            continue
        path = out_dir / record.output
        if not add_footer_counts(path, totals):  # the match tasks' counts (`shard_counts`)
            paths.append(path)
    if client is not None and paths:
        futures = client.map(file_language_counts, paths, sizes=sizes)
        parts = list(results_as_completed(client, futures))
    else:
        parts = [file_language_counts(path, sizes) for path in paths]
    parts.append(totals)
    return {lang: reduce_counts([p[lang] for p in parts], n) for lang, n in sizes.items()}


def file_language_counts(path: Location, sizes: dict[str, int]) -> dict[str, np.ndarray]:
    """One match file's per-language counts (every language of `sizes`, zeros included)."""
    counts = {lang: np.zeros(n, dtype=np.uint64) for lang, n in sizes.items()}
    parquet = storage.parquet_file(path)
    try:
        batches = parquet.iter_batches(batch_size=MATCH_READ_ROWS, columns=["lang", "entry_ids"])
        for batch in batches:
            lang = batch.column(0)
            lists = batch.column(1)
            lengths = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False)
            ids = pc.list_flatten(lists).to_numpy(zero_copy_only=False)
            codes = lang.indices.fill_null(-1).to_numpy(zero_copy_only=False)
            pair_codes = np.repeat(codes, lengths)
            for code, name in enumerate(lang.dictionary.to_pylist()):
                selected = ids[pair_codes == code]
                if len(selected):
                    counts[name] += np.bincount(selected, minlength=sizes[name]).astype(np.uint64)
    finally:
        parquet.close()
    return counts
