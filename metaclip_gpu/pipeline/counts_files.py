"""The count stage's two files, hashed from the bytes in memory (never read back to hash).

- ``entry_counts.npy`` (MetaCLIP's format, what balance reads) is written first and recorded
  in the run record (`rundir.record_counts`) at once;
- ``entry_counts.parquet`` (the entry strings beside their counts, for people and the report;
  0.04-0.05 s for 500k entries, 15 MB) is built and written by a thread while the next stage
  runs, and recorded when the caller collects it (`PendingTable.finish`).

Crash safety: an earlier count's ``entry_counts.parquet`` is deleted before the new counts are
written, so it is never found beside counts it does not hold; the new one is written under a
temporary name and renamed (in object storage: one PUT), and recorded only after that. A run
killed meanwhile leaves no table, or a complete one that the record does not name; the next
count writes it again. The temporary names are ``<name>.tmp-<pid>``, so the next count (which
holds the run lock) deletes what a killed one left (`files.remove_stale_tmp`).
"""

from __future__ import annotations

import io
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from metaclip_gpu.pipeline import rundir
from metaclip_gpu.pipeline.checksums import put_bytes
from metaclip_gpu.pipeline.files import COUNTS_NPY, COUNTS_PARQUET, remove_stale_tmp
from metaclip_gpu.storage import Location, RemotePath
from metaclip_gpu.storage_write import remove


def npy_parts(counts: np.ndarray) -> list[Any]:
    """`counts` (1-D) as ``np.save`` writes them (MetaCLIP's counts file): the format's header,
    then the array's own memory (not copied: ``np.save`` into a buffer copies 4 MB three times
    for 500k entries)."""
    counts = np.ascontiguousarray(counts)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(counts))
    return [header.getvalue(), memoryview(counts).cast("B")]


def parquet_bytes(table: pa.Table) -> pa.Buffer:
    """`table` as a plain Parquet file (no compression or dictionaries: 0.06 s for 500k
    entries against 0.17 s with snappy and dictionary pages)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="none", use_dictionary=False)
    return sink.getvalue()


class PendingTable:
    """``entry_counts.parquet`` being written by a thread (`save_counts`); `finish` waits for
    it and records its checksum (in the run record, when the counts are recorded there)."""

    def __init__(self, out_dir: Location, future: Future[str], recorded: bool) -> None:
        self.out_dir, self.future, self.recorded = out_dir, future, recorded

    def finish(self) -> str:
        """The table's checksum, once it is in place (re-raises the writer's error)."""
        checksum = self.future.result()
        if self.recorded:
            rundir.record_counts_file(self.out_dir, COUNTS_PARQUET, checksum)
        return checksum


def save_counts(
    out_dir: Location,
    counts: np.ndarray,
    make_table: Any,
    shards: list[str] | None,
    seconds: float,
) -> PendingTable:
    """Writes ``entry_counts.npy`` and records it (with `shards`, the counted shard names; None:
    a directory without a run record), then starts writing ``entry_counts.parquet`` (the table
    `make_table()` gives) on a thread; the caller calls `PendingTable.finish` before it lets go
    of the run lock."""
    drop_counts_table(out_dir)
    files = {COUNTS_NPY: put_bytes(out_dir / COUNTS_NPY, npy_parts(counts))}
    if shards is not None:
        rundir.record_counts(out_dir, shards, files, seconds)
    return write_counts_table(out_dir, make_table, recorded=shards is not None)


def drop_counts_table(out_dir: Location) -> None:
    """Deletes ``entry_counts.parquet`` (before counts it would no longer match are written, so
    a run killed meanwhile never leaves a stale one) and what a count killed mid-write left
    (the caller holds the run lock)."""
    table_path = out_dir / COUNTS_PARQUET
    if isinstance(table_path, RemotePath):
        remove(table_path)
    else:
        remove_stale_tmp(out_dir)
        table_path.unlink(missing_ok=True)


def write_counts_table(out_dir: Location, make_table: Any, *, recorded: bool) -> PendingTable:
    """Starts writing ``entry_counts.parquet`` (the table `make_table()` gives) on a thread,
    to overlap the balance stage; `recorded`: its checksum goes to the run record."""
    table_path = out_dir / COUNTS_PARQUET
    pool = ThreadPoolExecutor(1, thread_name_prefix="entry-counts-parquet")
    future = pool.submit(lambda: put_bytes(table_path, [parquet_bytes(make_table())]))
    pool.shutdown(wait=False)  # the thread ends with its one task
    return PendingTable(out_dir, future, recorded)
