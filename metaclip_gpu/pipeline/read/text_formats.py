"""Readers of Parquet, JSON lines and TSV/CSV shards (bad rows skipped and counted)."""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from metaclip_gpu import storage
from metaclip_gpu.pipeline.read.columns import Chunker, Columns, normalize, resolve_columns
from metaclip_gpu.pipeline.read.shards import (
    CSV_BLOCK_BYTES,
    FIRST_LINE_PEEK,
    JSON_BLOCK_BYTES,
    JSON_SAMPLE_LINES,
    TSV_DEFAULT_COLUMNS,
    ReadOptions,
    Shard,
    ShardChunk,
    ShardError,
    input_stream,
)


def read_parquet(shard: Shard, options: ReadOptions, chunker: Chunker) -> Iterator[ShardChunk]:
    import pyarrow.parquet as pq

    try:
        source, filesystem = storage.parquet_source(shard.path)
        pf = pq.ParquetFile(source, filesystem=filesystem)
    except (OSError, pa.ArrowException) as err:
        raise ShardError(shard.path, f"not a readable Parquet file: {err}") from err
    try:
        names = pf.schema_arrow.names
        columns = resolve_columns(shard, names, options)
        chunker.text_column, chunker.key_column = columns.text, columns.key
        chunker.source_columns = tuple(names)
        wanted = [
            n
            for n in names
            if n in (columns.text, columns.key) or columns.keep is None or n in columns.keep
        ]
        for batch in pf.iter_batches(batch_size=options.batch_rows, columns=wanted):
            table = pa.Table.from_batches([batch])
            yield from chunker.push(normalize(table, columns, shard))
    finally:
        pf.close()


def parquet_columns_chunk(shard: Shard, options: ReadOptions) -> ShardChunk:
    """A 0-row chunk with the columns `read_parquet` gives `shard` (from its schema alone)."""
    import pyarrow.parquet as pq

    source, filesystem = storage.parquet_source(shard.path)
    pf = pq.ParquetFile(source, filesystem=filesystem)
    try:
        schema = pf.schema_arrow
    finally:
        pf.close()
    columns = resolve_columns(shard, schema.names, options)
    return ShardChunk(
        shard,
        0,
        normalize(schema.empty_table(), columns, shard),
        text_column=columns.text,
        key_column=columns.key,
        source_columns=tuple(schema.names),
    )


# JSON lines ------------------------------------------------------------
def _line_blocks(shard: Shard, block_bytes: int) -> Iterator[tuple[bytes, int]]:
    """(block of whole lines, 1-based number of its first line), from a possibly compressed file."""
    line = 1
    rest = b""
    with input_stream(shard) as stream:
        while True:
            data = stream.read(block_bytes)
            if not data:
                break
            data = rest + data
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data  # one line longer than a block: keep reading
                continue
            block, rest = data[: cut + 1], data[cut + 1 :]
            yield block, line
            line += block.count(b"\n")
    if rest:
        yield rest, line


def _json_columns_sample(block: bytes) -> list[str] | None:
    """The field names of the first JSON objects of `block`, in order of appearance.

    None when the sample holds no JSON object (the block is blank or broken).
    """
    names: dict[str, None] = {}
    seen = 0
    for raw in block.split(b"\n"):
        if seen >= JSON_SAMPLE_LINES:
            break
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError:
            continue
        if isinstance(obj, dict):
            seen += 1
            names.update(dict.fromkeys(obj))
    return list(names) if seen else None


def read_jsonl(shard: Shard, options: ReadOptions, chunker: Chunker) -> Iterator[ShardChunk]:
    """Line blocks parsed by pyarrow; a block pyarrow rejects is parsed line by line.

    `pyarrow.json.open_json` streams too, but stops for good at the first bad line, so blocks
    of whole lines go to `pyarrow.json.read_json` instead. The text column is given an explicit
    string type: otherwise pyarrow infers timestamps from captions like "2020-01-01".
    """
    from pyarrow import json as pajson

    columns: Columns | None = None
    parse_options = None
    read_options = pajson.ReadOptions(use_threads=True, block_size=4 << 20)
    for block, first_line in _line_blocks(shard, JSON_BLOCK_BYTES):
        if columns is None:
            names = _json_columns_sample(block)
            if names is not None:
                columns = resolve_columns(shard, names, options)
                chunker.text_column, chunker.key_column = columns.text, columns.key
                chunker.source_columns = tuple(names)
                parse_options = pajson.ParseOptions(
                    explicit_schema=pa.schema([(columns.text, pa.string())]),
                    unexpected_field_behavior="infer",
                )
        if columns is None:  # no JSON object in this block: count its bad lines
            _json_lines_to_table(block, first_line, None, chunker)
            continue
        try:
            table = pajson.read_json(
                pa.BufferReader(block), read_options=read_options, parse_options=parse_options
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            table = _json_lines_to_table(block, first_line, columns.text, chunker)
        yield from chunker.push(normalize(table, columns, shard))


def _json_lines_to_table(
    block: bytes, first_line: int, text_column: str | None, chunker: Chunker
) -> pa.Table:
    """Parses `block` line by line: bad lines are counted as ``invalid_json`` (with their line
    numbers), non-string texts become null, blank lines are ignored (as pyarrow does)."""
    rows: list[dict[str, Any]] = []
    for offset, raw in enumerate(block.split(b"\n")):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError:  # includes invalid UTF-8
            obj = None
        if not isinstance(obj, dict):
            chunker.skip("invalid_json", line=first_line + offset)
            continue
        if not utf8_encodable(obj):
            chunker.skip("lone_surrogate", line=first_line + offset)
            continue
        rows.append(obj)
    return rows_to_table(rows, text_column)


def utf8_encodable(obj: Any) -> bool:
    """False when a string of a parsed JSON value (keys included) holds a lone surrogate
    (``"\\ud800"`` is valid JSON but no UTF-8 string, so no Arrow string either)."""
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _column_array(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
        # Mixed types: keep every value, as JSON text.
        return pa.array(
            [v if v is None or isinstance(v, str) else json.dumps(v) for v in values],
            type=pa.string(),
        )


def rows_to_table(rows: list[dict[str, Any]], text_column: str | None) -> pa.Table:
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    if text_column is not None:
        names.setdefault(text_column, None)
    arrays = []
    for name in names:
        values = [row.get(name) for row in rows]
        if name == text_column:
            arrays.append(
                pa.array([v if isinstance(v, str) else None for v in values], pa.string())
            )
        else:
            arrays.append(_column_array(values))
    return pa.Table.from_arrays(arrays, names=list(names))


# TSV / CSV -------------------------------------------------------------
def _first_line(shard: Shard) -> bytes | None:
    """The first line of the (decompressed) file, without its end; None when it is empty."""
    data = b""
    with input_stream(shard) as stream:
        while b"\n" not in data and len(data) < FIRST_LINE_PEEK:
            more = stream.read(1 << 16)
            if not more:
                break
            data += more
    if not data:
        return None
    return data.split(b"\n", 1)[0].rstrip(b"\r")


def read_delimited(shard: Shard, options: ReadOptions, chunker: Chunker) -> Iterator[ShardChunk]:
    """TSV (no quoting, like CC3M) or CSV (quoted fields may hold newlines), every column read
    as strings: type inference on the first block could fail on a later one (an ``id`` column
    of digits, then one with a letter) and an empty caption must stay ``""``, not null.

    Columns are parsed as bytes and decoded per batch (`_decode_rows`), so a row holding
    invalid UTF-8 is skipped and counted as ``invalid_utf8`` instead of failing the shard.
    Line numbers of skipped rows are pyarrow's record numbers: the line, counting neither
    blank lines nor the line breaks inside a quoted CSV field."""
    from pyarrow import csv

    tsv = shard.format == "tsv"
    first = _first_line(shard)
    if first is None:
        return  # empty shard
    header = options.header
    if header is None:
        header = options.tsv_columns is None and not tsv
    if options.tsv_columns is not None:
        names = list(options.tsv_columns)  # a header row, if any, is skipped
    elif header:
        names = _csv_header(shard, tsv)
    else:
        fields = first.count(b"\t" if tsv else b",") + 1
        names = list(TSV_DEFAULT_COLUMNS[:fields])
        names += [f"f{i}" for i in range(len(names), fields)]
    columns = resolve_columns(shard, names, options)
    chunker.text_column, chunker.key_column = columns.text, columns.key
    chunker.source_columns = tuple(names)

    lines = _RecordLines(1 if header else 0)

    def on_invalid(row: Any) -> str:
        chunker.skip("invalid_row", line=row.number)
        lines.skipped.append(row.number)
        return "skip"

    reader = csv.open_csv(
        input_stream(shard),
        read_options=csv.ReadOptions(
            column_names=names,
            skip_rows=1 if header else 0,
            block_size=CSV_BLOCK_BYTES,
            use_threads=False,  # streaming reads are single-threaded anyway; gives row numbers
        ),
        parse_options=csv.ParseOptions(
            delimiter="\t" if tsv else ",",
            quote_char=False if tsv else '"',
            newlines_in_values=not tsv,
            invalid_row_handler=on_invalid,
        ),
        convert_options=csv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.binary()),  # decoded by _decode_rows
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    try:
        for batch in reader:
            table = _decode_rows(pa.Table.from_batches([batch]), lines, chunker)
            yield from chunker.push(normalize(table, columns, shard))
    finally:
        reader.close()


class _RecordLines:
    """Maps the data records of a delimited file, in order, to their record numbers (what
    pyarrow's invalid-row handler reports): the header and the skipped records come between."""

    def __init__(self, header_records: int) -> None:
        self.header = header_records
        self.skipped: list[int] = []  # record numbers of invalid rows, ascending
        self.records = 0  # data records (parsed rows) seen so far

    def number_of(self, record: int) -> int:
        """The record number of the `record`-th (0-based) data record."""
        number = self.header + record + 1
        while True:  # move past the skipped records at or before it
            moved = self.header + record + 1 + bisect.bisect_right(self.skipped, number)
            if moved == number:
                return number
            number = moved


def _decode_rows(table: pa.Table, lines: _RecordLines, chunker: Chunker) -> pa.Table:
    """`table`'s binary columns as strings; a row with invalid UTF-8 in any column is dropped
    and counted (``invalid_utf8``, with its line). The check is Arrow's cast; only a batch it
    rejects is decoded row by row in Python."""
    first = lines.records
    lines.records += table.num_rows
    try:
        return table.cast(pa.schema([(name, pa.string()) for name in table.column_names]))
    except pa.ArrowInvalid:
        pass
    good = np.ones(table.num_rows, dtype=bool)
    for column in table.columns:
        for i, value in enumerate(column.to_pylist()):
            if good[i] and value is not None:
                try:
                    value.decode("utf-8")
                except UnicodeDecodeError:
                    good[i] = False
    for i in np.flatnonzero(~good).tolist():
        chunker.skip("invalid_utf8", line=lines.number_of(first + i))
    kept = table.filter(pa.array(good))
    return kept.cast(pa.schema([(name, pa.string()) for name in table.column_names]))


def _csv_header(shard: Shard, tsv: bool) -> list[str]:
    from pyarrow import csv

    reader = csv.open_csv(
        input_stream(shard),
        read_options=csv.ReadOptions(block_size=CSV_BLOCK_BYTES, use_threads=False),
        parse_options=csv.ParseOptions(
            delimiter="\t" if tsv else ",",
            quote_char=False if tsv else '"',
            newlines_in_values=not tsv,
            invalid_row_handler=lambda row: "skip",
        ),
    )
    try:
        return list(reader.schema.names)
    finally:
        reader.close()


# WebDataset ------------------------------------------------------------
