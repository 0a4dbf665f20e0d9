"""One shard of the match stage: `match_shard` streams the shard (`read.iter_shard_checked`),
matches each chunk's ``text`` and writes ONE Parquet file ``<out_dir>/matches/<safe name>.parquet``
with the columns

- ``shard``: dictionary<int32, string>, the shard's name (`read.Shard.name`);
- ``row``: int64, the row's position in its shard (``chunk.first_row + i``);
- ``lang``: the row's language, in a worldwide run (`languages.LanguageIndexes`);
- ``entry_ids``: list<int32>, the row's sorted distinct entry ids (empty for a null text);

and, in its footer, the shard's entry counts (`shard_counts`), which the task also hands to the
count stage in memory (`MatchReport.counts`). No input column is copied: (shard, row) joins a
row back to its input (files written before held the key column too; they read the same).

Crash safety: the file is written under ``<name>.parquet.tmp-<pid>`` in the same folder,
fsynced, renamed into place with `os.replace` (its folder fsynced), and only then recorded in
the manifest (`manifest`). In process (`match.run_match`) the two fsyncs are the stage's main
thread's, after the rename, just before the record (`durable`): the compute thread goes on
with the next shard. A run killed at any point leaves each shard with no record (it is redone,
overwriting any output already renamed) or a record whose output exists. `stage_config` is
what, besides the input file, decides a shard's output.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from metaclip_gpu import storage
from metaclip_gpu.engine.index import MetadataIndex
from metaclip_gpu.engine.match import match
from metaclip_gpu.pipeline.checksums import known_checksum, remember
from metaclip_gpu.pipeline.english_only import NOT_ENGLISH, EnglishOnly
from metaclip_gpu.pipeline.files import (
    ENTRY_IDS_TYPE,
    MATCHES_DIR,
    _fsync_dir,
    delay_hook,
    output_name,
)
from metaclip_gpu.pipeline.languages import LanguageIndexes
from metaclip_gpu.pipeline.manifest import Manifest, ShardRecord, fingerprint
from metaclip_gpu.pipeline.oserrors import with_path
from metaclip_gpu.pipeline.read import (
    ReadOptions,
    Shard,
    ShardChunk,
    ShardError,
    ShardReport,
    iter_shard_checked,
)
from metaclip_gpu.pipeline.shard_counts import ShardCounts
from metaclip_gpu.storage import Location, RemotePath
from metaclip_gpu.storage_write import HashingWriter, attempt_name, open_output, remove

LOADED = (MetadataIndex, LanguageIndexes, EnglishOnly)  # a loaded index, not a metadata path
MatchIndex = MetadataIndex | LanguageIndexes | EnglishOnly
OUTPUT_VERSION = 1  # bump when the match files' layout changes: old outputs are then redone
RECORDED_LINES = 20  # line numbers of a shard's skipped rows kept in its manifest record
SHARD_TYPE = pa.dictionary(pa.int32(), pa.string())
# Match files are written once and read once (balance): uncompressed they are ~1.5x larger
# and cost 0.6x the writing and 0.4x the reading of snappy (a 127k-row CC3M shard: 17.7 vs
# 11.6 MB, write 0.08 vs 0.13 s, read 0.025 vs 0.06 s). Older compressed files read the same.
COMPRESSION = "none"
# Dictionary-encoding `row` and `entry_ids` (Arrow's default) first builds a hash table of every
# id and then gives up on it (half a million distinct ids overflow the dictionary page): without
# it a 125k-row cc3m shard's table takes 0.034 s of CPU to write instead of 0.066 s, and reads
# as fast. Only the shard name and a worldwide run's languages are worth a dictionary; the
# statistics of the ids are never read.
WRITER_OPTIONS: dict[str, Any] = {
    "compression": COMPRESSION,
    "use_dictionary": ["shard", "lang"],
    "write_statistics": ["shard", "row", "lang"],
}


@dataclass
class MatchReport(ShardReport):
    """A `ShardReport` plus where the output went, how long it took, and whether the
    shard was found done in the manifest (``reused``: no work was done this run); the shard's
    entry counts for the count stage (``counts``, `RunCounts.add`, which the match stage then
    drops) and the checksum memo entry of its output file (``verified``, `known_checksum`: a
    dask worker's, adopted by the client so it need not hash the file again)."""

    output: Location | None = None
    seconds: float = 0.0
    reused: bool = False
    counts: ShardCounts | None = None
    verified: tuple[Any, str] | None = None


def stage_config(index: MatchIndex, options: ReadOptions) -> str:
    """What, besides the input file, decides a shard's match output: the metadata (its digest;
    "" for an index built from a list, then only its length; per-language metadata: all their
    digests, the language column and what happens to unknown languages; the language
    identifier, `lid.LidModel.describe`) and the options that pick the text/key columns and
    parse lines. A record with another config is redone."""
    if isinstance(index, LanguageIndexes):
        # "stripped": texts are stripped before matching (older worldwide outputs are redone)
        metadata: Any = [
            index.digest,
            index.lang_column,
            index.unknown,
            index.lid.describe(),
            "stripped",
        ]
    elif isinstance(index, EnglishOnly):
        metadata = index.config()
    else:
        metadata = [index.stats.digest, index.stats.padding]
    payload = {
        "version": OUTPUT_VERSION,
        "metadata": metadata,
        "n_entries": len(index),
        "text_column": options.text_column,
        "key_column": options.key_column,
        "tsv_columns": list(options.tsv_columns) if options.tsv_columns is not None else None,
        "header": options.header,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _chunk_table(
    chunk: ShardChunk,
    index: MatchIndex,
    backend: str,
    threads: int | None,
    report: ShardReport,
) -> pa.Table:
    n = chunk.num_rows
    lang: pa.Array | None = None
    texts = chunk.table.column("text")
    if isinstance(index, EnglishOnly):  # MetaCLIP 1's LID filter: other texts match nothing
        texts, dropped = index.english_texts(texts, chunk.shard.path)
        report.skipped[NOT_ENGLISH] += dropped
        index = index.index
    if isinstance(index, LanguageIndexes):
        codes = index.row_codes(chunk.table, chunk.shard.path)
        entry_ids = index.match_rows(texts, codes, backend, threads)
        lang = index.names_of(codes)
    else:
        result = match(texts, index, backend=backend, threads=threads)
        entry_ids = result.to_arrow()
    if entry_ids.type != ENTRY_IDS_TYPE:  # large_list only past 2**31 ids in one chunk
        entry_ids = entry_ids.cast(ENTRY_IDS_TYPE)
    shard = pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(n, dtype=np.int32)), pa.array([chunk.shard.name], pa.string())
    )
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        "shard": shard,
        "row": pa.array(np.arange(chunk.first_row, chunk.first_row + n, dtype=np.int64)),
    }
    if lang is not None:
        columns["lang"] = lang
    columns["entry_ids"] = entry_ids
    return pa.table(columns)


def _reading(options: ReadOptions, index: MatchIndex) -> ReadOptions:
    """What the match stage reads of a shard: its texts alone, unless a worldwide index needs
    each row's language column (`LanguageIndexes.row_codes`)."""
    return options if isinstance(index, LanguageIndexes) else replace(options, text_only=True)


def read_ahead(chunks: Iterator[ShardChunk]) -> Iterator[ShardChunk]:
    """`chunks`, the next one read by a thread while the caller matches this one (pyarrow's
    reading and parsing release the GIL). One chunk ahead: memory grows by one chunk."""
    with ThreadPoolExecutor(1, thread_name_prefix="read-ahead") as pool:
        pending = pool.submit(next, chunks, None)
        while (chunk := pending.result()) is not None:
            pending = pool.submit(next, chunks, None)
            yield chunk


def _empty_table() -> pa.Table:
    return pa.table(
        {
            "shard": pa.array([], SHARD_TYPE),
            "row": pa.array([], pa.int64()),
            "entry_ids": pa.array([], ENTRY_IDS_TYPE),
        }
    )


def match_shard(
    shard: Shard,
    index: MatchIndex,
    out_dir: str | os.PathLike[str],
    *,
    options: ReadOptions | None = None,
    backend: str = "cpu",
    threads: int | None = None,
    manifest: Manifest | None = None,
    config: str | None = None,
    on_rows: Callable[[int], None] | None = None,
) -> MatchReport:
    """Matches one shard into ``<out_dir>/matches/`` and records it in the manifest.

    `manifest`: the loaded `Manifest` of `out_dir` to append to (loaded here when None);
    `config`: `stage_config` (computed here when None); `on_rows(n)` is called after each
    chunk of n rows (a progress bar). Returns the shard's report; a shard that cannot be read
    has ``error`` set and ``output`` None.
    """
    options = options or ReadOptions()
    manifest = manifest if manifest is not None else Manifest.load(out_dir)
    config = config if config is not None else stage_config(index, options)
    report, record = match_shard_output(
        shard,
        index,
        out_dir,
        options=options,
        backend=backend,
        threads=threads,
        config=config,
        on_rows=on_rows,
    )
    manifest.append(record)
    return report


def _write_matches(
    shard: Shard,
    index: MatchIndex,
    options: ReadOptions,
    backend: str,
    threads: int | None,
    report: MatchReport,
    counts: ShardCounts,
    on_rows: Callable[[int], None] | None,
    sink: Any,
) -> None:
    """Streams the shard's match table into `sink` (one Parquet file); `report.error` set
    when the shard cannot be read (then the file is not to be kept)."""
    writer: pq.ParquetWriter | None = None
    try:
        for chunk in read_ahead(iter_shard_checked(shard, _reading(options, index), report)):
            if chunk.num_rows == 0:
                continue
            try:
                table = _chunk_table(chunk, index, backend, threads, report)
            except ShardError as err:  # e.g. a worldwide shard without languages
                report.error = str(err)
                break
            if on_rows is not None:
                on_rows(chunk.num_rows)
            if writer is None:
                writer = pq.ParquetWriter(sink, table.schema, **WRITER_OPTIONS)
            else:
                table = table.cast(writer.schema)
            writer.write_table(table)
            counts.add(table)
        if report.error is None and writer is None:
            writer = pq.ParquetWriter(sink, _empty_table().schema, **WRITER_OPTIONS)
        if writer is not None and report.error is None:
            writer.add_key_value_metadata(counts.footer())
    finally:
        if writer is not None:
            writer.close()


def _write_local(
    final: Path, write: Callable[[Any], None], report: MatchReport, durable: bool = True
) -> str:
    """`write` into ``<final>.tmp-<pid>``, fsynced and renamed to `final` (and its folder
    fsynced; neither with `durable` False: the caller does it, `durable.make_durable`, before
    the record); its checksum ("" and no file, and an earlier output of the shard removed, when
    the shard cannot be read)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    renamed = False
    checksum = ""
    with with_path(tmp), open(tmp, "wb") as raw:
        try:
            sink = HashingWriter(raw)  # hashed as written: not read back for its checksum
            write(sink)
            if report.error is None:
                raw.flush()
                if durable:
                    os.fsync(raw.fileno())
                checksum = sink.checksum()
                delay_hook()
                os.replace(tmp, final)
                renamed = True
                if durable:
                    _fsync_dir(final.parent)
        finally:
            if not renamed:
                tmp.unlink(missing_ok=True)
    if report.error is not None:
        final.unlink(missing_ok=True)  # an output of an earlier version of this input
    return checksum


def _write_remote(final: RemotePath, write: Callable[[Any], None], report: MatchReport) -> str:
    """`write` streamed to the object `final` (this attempt's own name), hashed on the way;
    its checksum ("" and no object when the shard cannot be read)."""
    with open_output(final) as sink:
        write(sink)
        delay_hook()  # before the object exists
    if report.error is not None:
        remove(final)
        return ""
    return sink.checksum()


def match_shard_output(
    shard: Shard,
    index: MatchIndex,
    out_dir: str | os.PathLike[str],
    *,
    options: ReadOptions,
    backend: str,
    threads: int | None,
    config: str,
    on_rows: Callable[[int], None] | None = None,
    durable: bool = True,
) -> tuple[MatchReport, ShardRecord]:
    """`match_shard` without the manifest: writes the output (temp + rename) and returns the
    report and the record to append. A dask worker runs this and the client appends, so only
    one process ever appends to the manifest. `durable` False: a local output is neither
    fsynced nor its folder; the caller makes it durable before appending its record
    (`durable.commit`)."""
    start = time.perf_counter()
    out_dir = storage.location(out_dir)
    input_fingerprint = fingerprint(shard.path)  # before reading: a change meanwhile is redone
    name = output_name(shard.name)
    report = MatchReport(shard)
    counts = ShardCounts()  # the shard's entry counts, in its match file's footer
    write = functools.partial(
        _write_matches, shard, index, options, backend, threads, report, counts, on_rows
    )
    if isinstance(out_dir, RemotePath):
        name = attempt_name(name)  # no rename in object storage: a name per attempt
        final: Location = out_dir / MATCHES_DIR / name
        checksum = _write_remote(final, write, report)
    else:
        final = out_dir / MATCHES_DIR / name
        checksum = _write_local(final, write, report, durable)
    written: dict[str, Any] = {}  # an object's size and ETag, for its record
    if report.error is None:
        written = remember(final, checksum)
        report.verified = known_checksum(final)
        delay_hook()
        report.output = final
        report.counts = counts
    report.seconds = time.perf_counter() - start
    record = ShardRecord(
        shard=shard.name,
        output=None if report.error is not None else f"{MATCHES_DIR}/{name}",
        rows=report.rows,
        skipped=dict(sorted(report.skipped.items())),
        null_texts=report.null_texts,
        error=report.error,
        seconds=round(report.seconds, 6),
        fingerprint=input_fingerprint,
        config=config,
        path=str(shard.path),
        invalid_lines=report.invalid_lines[:RECORDED_LINES],
        checksum=checksum,
        output_fingerprint=written,
    )
    return report, record


def _report_from_record(shard: Shard, record: ShardRecord, manifest: Manifest) -> MatchReport:
    report = MatchReport(shard, rows=record.rows, error=record.error, null_texts=record.null_texts)
    report.skipped.update(record.skipped)
    report.invalid_lines = list(record.invalid_lines)
    report.output = manifest.output_path(record)
    report.seconds = record.seconds
    report.reused = True
    return report
