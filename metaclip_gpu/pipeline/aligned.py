"""Each chunk of a shard with its rows of the shard's match file, aligned and checked
(`iter_keyed_matches`): what the balance stages read.

The input shard is read again with the same `read.ReadOptions` (the reader's row numbering does
not depend on the batch size), and its match file is read in step; each chunk's match rows must
be exactly ``first_row .. first_row + n - 1`` (else the input changed since matching: an error).
The text keys are computed from the chunk on demand (`keys.text_keys`: the key column, else
the text hash mixed with the row) and the match list becomes a CSR.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metaclip_gpu import storage
from metaclip_gpu.engine.arrays import to_host
from metaclip_gpu.pipeline.files import ENTRY_IDS_TYPE, MATCH_READ_ROWS
from metaclip_gpu.pipeline.keys import text_keys
from metaclip_gpu.pipeline.read import (
    ReadOptions,
    Shard,
    ShardChunk,
    read_shard,
)


@dataclass
class KeyedChunk:
    """One chunk of a shard with its match list and, on demand, its text keys (hashing
    strings costs; balancing needs the keys of few rows, `keys_of`)."""

    chunk: ShardChunk
    offsets: np.ndarray  # int64 [n + 1]
    entry_ids: np.ndarray  # int32, flat
    entry_lists: pa.Array  # list<int32> [n], the same ids as an Arrow column
    extra: dict[str, pa.Array] = field(default_factory=dict)  # other match-file columns

    @functools.cached_property
    def keys(self) -> np.ndarray:
        """uint64 [n]: every row's text key (`keys.text_keys`)."""
        return text_keys(self.chunk.table, self.chunk.first_row)

    def keys_of(self, rows: Any) -> np.ndarray:
        """The text keys of the chunk rows `rows` (NumPy or CuPy indices) only."""
        rows = to_host(rows).astype(np.int64, copy=False)
        return text_keys(self.chunk.table, self.chunk.first_row, select=rows)


class _MatchRows:
    """Reads a match file's ``row``, ``entry_ids`` and `extra` columns sequentially, `take(n)`
    rows at a time."""

    def __init__(self, path: storage.Location, batch_rows: int, extra: Sequence[str] = ()) -> None:
        self.path = path
        self.file = storage.parquet_file(path)
        self.batches = self.file.iter_batches(
            batch_size=min(max(batch_rows, 1024), MATCH_READ_ROWS),
            columns=["row", "entry_ids", *extra],
        )
        self.pending: pa.Table | None = None

    def take(self, n: int) -> pa.Table:
        while self.pending is None or self.pending.num_rows < n:
            batch = next(self.batches, None)
            if batch is None:
                break
            table = pa.Table.from_batches([batch])
            self.pending = (
                table if self.pending is None else pa.concat_tables([self.pending, table])
            )
        have = 0 if self.pending is None else self.pending.num_rows
        if have < n:
            raise RuntimeError(
                f"{self.path}: match file has fewer rows than its shard; rerun the match stage"
            )
        assert self.pending is not None
        out, self.pending = self.pending.slice(0, n), self.pending.slice(n)
        return out

    def remaining(self) -> int:
        rest = 0 if self.pending is None else self.pending.num_rows
        return rest + sum(batch.num_rows for batch in self.batches)

    def close(self) -> None:
        self.file.close()


def csr_of(entry_lists: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(int64 offsets [n + 1], int32 flat ids) of a list<int32> column (nulls as empty)."""
    if isinstance(entry_lists, pa.ListArray) and entry_lists.null_count == 0:
        bounds = np.asarray(entry_lists.offsets)  # this slice's own, into `values`
        start, stop = int(bounds[0]), int(bounds[-1])
        values = entry_lists.values.slice(start, stop - start)
        flat = values.to_numpy(zero_copy_only=False) if len(values) else np.zeros(0, np.int32)
        return bounds.astype(np.int64) - start, np.asarray(flat, dtype=np.int32)
    lengths = pc.list_value_length(entry_lists).fill_null(0).to_numpy(zero_copy_only=False)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = pc.list_flatten(entry_lists)
    ids = flat.to_numpy(zero_copy_only=False) if len(flat) else np.zeros(0, np.int32)
    return offsets, np.asarray(ids, dtype=np.int32)


def iter_keyed_matches(
    shard: Shard,
    match_file: str | os.PathLike[str] | storage.RemotePath,
    options: ReadOptions | None = None,
    extra: Sequence[str] = (),
) -> Iterator[KeyedChunk]:
    """Each chunk of `shard` with its rows of `match_file`, aligned and checked, and its keys
    (and the match file's `extra` columns, e.g. a worldwide run's ``lang``).

    Raises `read.ShardError` when the shard cannot be read and RuntimeError when the match
    file does not line up with the shard (a changed input: rerun the match stage).
    """
    options = options or ReadOptions()
    rows = _MatchRows(storage.location(match_file), options.batch_rows, extra)
    try:
        for chunk in read_shard(shard, options):
            n = chunk.num_rows
            if n == 0:
                continue
            matched = rows.take(n)
            row = matched.column("row").to_numpy()
            expected = np.arange(chunk.first_row, chunk.first_row + n, dtype=np.int64)
            if not np.array_equal(row, expected):
                raise RuntimeError(
                    f"{match_file}: rows {row[:1]}.. do not line up with shard {shard.name} "
                    f"rows {chunk.first_row}..; rerun the match stage"
                )
            lists = matched.column("entry_ids").combine_chunks()
            if lists.type != ENTRY_IDS_TYPE:
                lists = lists.cast(ENTRY_IDS_TYPE)
            offsets, ids = csr_of(lists)
            columns = {name: matched.column(name).combine_chunks() for name in extra}
            yield KeyedChunk(chunk, offsets, ids, lists, columns)
        if rows.remaining():
            raise RuntimeError(
                f"{match_file}: match file has more rows than shard {shard.name}; "
                "rerun the match stage"
            )
    finally:
        rows.close()
