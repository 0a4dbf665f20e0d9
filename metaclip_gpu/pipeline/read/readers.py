"""`read_shard` (dispatch by format), its checked forms, and `read_table`."""

from __future__ import annotations

import os
import tarfile
import zlib
from collections.abc import Iterable, Iterator, Sequence

import pyarrow as pa

from metaclip_gpu.pipeline.read.columns import Chunker
from metaclip_gpu.pipeline.read.shards import (
    ReadOptions,
    Shard,
    ShardChunk,
    ShardError,
    ShardReport,
    find_shards,
)
from metaclip_gpu.pipeline.read.text_formats import (
    parquet_columns_chunk,
    read_delimited,
    read_jsonl,
    read_parquet,
)
from metaclip_gpu.pipeline.read.webdataset import read_wds


# ---------------------------------------------------------------------- readers
def read_shard(shard: Shard, options: ReadOptions | None = None) -> Iterator[ShardChunk]:
    """Streams `shard` as chunks of at most ``options.batch_rows`` rows.

    Raises `ShardError` naming the file when the shard cannot be read (possibly after some
    chunks were yielded: a pipeline then discards the shard's partial output). An empty shard
    yields nothing.
    """
    options = options or ReadOptions()
    readers = {
        "parquet": read_parquet,
        "jsonl": read_jsonl,
        "tsv": read_delimited,
        "csv": read_delimited,
        "wds": read_wds,
    }
    if shard.format not in readers:
        raise ShardError(shard.path, f"unknown format {shard.format!r}")
    chunker = Chunker(shard, options.batch_rows)
    try:
        yield from readers[shard.format](shard, options, chunker)
        yield from chunker.finish()
    except ShardError:
        raise
    except FileNotFoundError as err:
        raise ShardError(shard.path, f"cannot open: {err}") from err
    except (
        OSError,
        EOFError,
        pa.ArrowException,
        tarfile.TarError,
        zlib.error,
        UnicodeDecodeError,
    ) as err:
        raise ShardError(
            shard.path, f"cannot read as {shard.format}: {type(err).__name__}: {err}"
        ) from err


def has_schema(shard: Shard) -> bool:
    """Whether the shard's format names its columns without rows (Parquet's schema; a JSONL,
    TSV or tar shard with no rows names none)."""
    return shard.format == "parquet"


def columns_chunk(shard: Shard, options: ReadOptions | None = None) -> ShardChunk | None:
    """A 0-row chunk with the columns `read_shard` gives `shard`, where its format records them
    without rows (`has_schema`); else None. Raises `ShardError` when the shard cannot be
    read."""
    if not has_schema(shard):
        return None
    try:
        return parquet_columns_chunk(shard, options or ReadOptions())
    except (OSError, pa.ArrowException) as err:
        raise ShardError(shard.path, f"not a readable Parquet file: {err}") from err


def read_shard_checked(
    shard: Shard, options: ReadOptions | None = None
) -> tuple[list[ShardChunk] | None, ShardReport]:
    """All chunks of `shard` and its report; (None, report with ``error``) if it is unreadable.

    Holds the whole shard in memory: a streaming pipeline uses `iter_shard_checked`.
    """
    report = ShardReport(shard)
    chunks = list(iter_shard_checked(shard, options, report))
    return (None if report.error is not None else chunks), report


def iter_shard_checked(
    shard: Shard, options: ReadOptions | None, report: ShardReport
) -> Iterator[ShardChunk]:
    """`read_shard` that fills `report` as it goes and ends (no exception) on a `ShardError`.

    After the loop, ``report.error`` set means the shard failed part-way: discard what was
    done with its chunks and record it as skipped with that reason.
    """
    try:
        for chunk in read_shard(shard, options):
            report.add(chunk)
            yield chunk
    except ShardError as err:
        report.error = str(err)


def read_table(
    spec: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | Sequence[Shard],
    options: ReadOptions | None = None,
) -> pa.Table:
    """Every row of every shard in one table (for small inputs and the CLI; raises ShardError).

    Columns that differ between shards are unified (missing ones become nulls).
    """
    options = options or ReadOptions()
    if isinstance(spec, Sequence) and spec and all(isinstance(s, Shard) for s in spec):
        shards = list(spec)
    else:
        shards = find_shards(spec)  # type: ignore[arg-type]
    tables = [chunk.table for shard in shards for chunk in read_shard(shard, options)]
    if not tables:
        return pa.table({"text": pa.array([], pa.string())})
    return pa.concat_tables(tables, promote_options="permissive")
