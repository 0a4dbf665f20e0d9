"""A shard's text/key columns resolved, normalized, and cut into bounded `ShardChunk`s."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from metaclip_gpu.pipeline.read.shards import (
    KEY_CANDIDATES,
    MAX_REPORTED_LINES,
    TEXT_CANDIDATES,
    ReadOptions,
    Shard,
    ShardChunk,
    ShardError,
)


# ---------------------------------------------------------------------- columns and chunks
@dataclass(frozen=True)
class Columns:
    """Which source columns become ``text`` and ``key``, and which others are kept."""

    text: str
    key: str | None
    keep: frozenset[str] | None  # None = all


def resolve_columns(shard: Shard, names: Sequence[str], options: ReadOptions) -> Columns:
    listed = ", ".join(repr(n) for n in names) or "(none)"
    if options.text_column is not None:
        if options.text_column not in names:
            raise ShardError(
                shard.path, f"no text column {options.text_column!r}; columns found: {listed}"
            )
        text = options.text_column
    else:
        text = next((c for c in TEXT_CANDIDATES if c in names), "")
        if not text:
            raise ShardError(
                shard.path,
                f"no text column (looked for {', '.join(TEXT_CANDIDATES)}; set text_column); "
                f"columns found: {listed}",
            )
    if options.key_column is not None:
        if options.key_column not in names:
            raise ShardError(
                shard.path, f"no key column {options.key_column!r}; columns found: {listed}"
            )
        key: str | None = options.key_column
    else:
        key = next((c for c in KEY_CANDIDATES if c in names and c != text), None)
    if options.text_only:  # the key was checked above, but is not read
        return Columns(text, None, frozenset())
    keep = None if options.columns is None else frozenset(options.columns)
    return Columns(text, key, keep)


def text_array(column: pa.ChunkedArray, shard: Shard, name: str) -> pa.ChunkedArray:
    """The text column as string/large_string (binary kept when it is not valid UTF-8)."""
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return column
    if pa.types.is_dictionary(kind):
        return text_array(column.cast(kind.value_type), shard, name)
    if pa.types.is_null(kind):
        return column.cast(pa.string())
    if pa.types.is_string_view(kind):
        return column.cast(pa.large_string())
    if pa.types.is_binary_view(kind):
        column = column.cast(pa.large_binary())
        kind = column.type
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        try:
            return column.cast(pa.large_string() if pa.types.is_large_binary(kind) else pa.string())
        except pa.ArrowInvalid:
            return column  # not UTF-8: matched as bytes
    raise ShardError(shard.path, f"text column {name!r} has type {kind}, expected strings")


def normalize(table: pa.Table, columns: Columns, shard: Shard) -> pa.Table:
    """Renames the text/key columns to ``text``/``key`` and keeps the wanted other columns."""
    n = table.num_rows
    names = table.column_names
    if columns.text in names:
        text = text_array(table.column(columns.text), shard, columns.text)
    else:  # a JSON block where no line has the text field
        text = pa.chunked_array([pa.nulls(n, pa.string())])
    out_names = ["text"]
    arrays: list[Any] = [text]
    if columns.key is not None:
        key = table.column(columns.key) if columns.key in names else pa.nulls(n)
        if isinstance(key, pa.ChunkedArray) and pa.types.is_dictionary(key.type):
            key = key.cast(key.type.value_type)
        out_names.append("key")
        arrays.append(key)
    for name in names:
        if name in (columns.text, columns.key):
            continue
        if columns.keep is not None and name not in columns.keep:
            continue
        out_names.append(f"{name}_orig" if name in ("text", "key") else name)
        arrays.append(table.column(name))
    return pa.Table.from_arrays(arrays, names=out_names)


class Chunker:
    """Re-cuts a stream of normalized tables into chunks of exactly `batch_rows` rows.

    Concatenation and slicing are zero-copy in Arrow (a chunk may hold several Arrow chunks).
    Tables whose schemas cannot be unified (e.g. a JSON field that is a number in one block
    and a string in another) are not merged: the pending rows go out as a shorter chunk first.
    """

    def __init__(self, shard: Shard, batch_rows: int) -> None:
        self.shard = shard
        self.batch_rows = batch_rows
        self.pending: pa.Table | None = None
        self.next_row = 0
        self.skipped: Counter[str] = Counter()
        self.lines: list[int] = []
        self.reported_lines = 0
        self.text_column = "text"
        self.key_column: str | None = None
        self.source_columns: tuple[str, ...] = ()
        self.last_schema: pa.Schema | None = None

    def skip(self, reason: str, count: int = 1, line: int | None = None) -> None:
        self.skipped[reason] += count
        if line is not None and self.reported_lines < MAX_REPORTED_LINES:
            self.lines.append(line)
            self.reported_lines += 1

    def push(self, table: pa.Table) -> Iterator[ShardChunk]:
        if table.num_rows == 0:
            return
        if self.pending is None:
            self.pending = table
        else:
            try:
                promote = "none" if table.schema == self.pending.schema else "permissive"
                self.pending = pa.concat_tables([self.pending, table], promote_options=promote)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                yield self._emit(self.pending.num_rows)
                self.pending = table
        while self.pending is not None and self.pending.num_rows >= self.batch_rows:
            yield self._emit(self.batch_rows)

    def finish(self) -> Iterator[ShardChunk]:
        if self.pending is not None and self.pending.num_rows:
            yield self._emit(self.pending.num_rows)
        if self.skipped:  # counts of trailing skipped rows: a 0-row chunk carries them
            schema = self.last_schema or pa.schema([("text", pa.string())])
            self.pending = schema.empty_table()
            yield self._emit(0)

    def _emit(self, rows: int) -> ShardChunk:
        assert self.pending is not None
        table = self.pending.slice(0, rows)
        rest = self.pending.slice(rows)
        self.pending = rest if rest.num_rows else None
        chunk = ShardChunk(
            shard=self.shard,
            first_row=self.next_row,
            table=table,
            skipped=self.skipped,
            invalid_lines=self.lines,
            text_column=self.text_column,
            key_column=self.key_column,
            source_columns=self.source_columns,
        )
        self.next_row += rows
        self.skipped = Counter()
        self.lines = []
        self.last_schema = table.schema
        return chunk
