"""Stage ``read``: text shards (Parquet, JSONL, TSV/CSV, WebDataset tars) as bounded Arrow chunks.

A *shard* is one input file. `find_shards` turns a directory, glob, path or list of those into a
sorted, deterministic list of `Shard`; `read_shard` streams one shard as `ShardChunk` objects of
at most ``ReadOptions.batch_rows`` rows, each holding a pyarrow Table whose text column is
renamed ``text`` (and the key column, when there is one, ``key``), so memory stays bounded by the
chunk size whatever the size of the pool.

Bad input never crashes a run and never silently drops rows:

- a shard that cannot be read at all (missing text column, corrupt Parquet, truncated tar,
  broken compression) raises `ShardError` (a ValueError) naming the file; `read_shard_checked`
  and `iter_shard_checked` turn it into a `ShardReport` with ``error`` set, so a pipeline records
  the shard as skipped, with its reason, and goes on with the next one;
- a row that cannot be read (a JSONL line that is not a JSON object, a TSV/CSV row with the
  wrong number of fields, a WebDataset sample without a caption) is skipped and counted in
  ``ShardChunk.skipped`` by reason, with its 1-based line number in ``invalid_lines`` where the
  format has lines;
- a null or non-string text is kept as a null ``text`` (the matcher matches nothing for it) and
  counted in ``null_texts``.

Row identity: ``ShardChunk.first_row + i`` is the row's position among the rows the reader keeps
in its shard (skipped rows take no position), which is stable across reruns and batch sizes.

Backends: this module reads with pyarrow on both backends; `to_backend` hands a chunk's table to
cuDF (``cudf.DataFrame.from_arrow``) for ``backend="gpu"``. cuDF's own readers (``read_parquet``
straight to device memory, ``read_json(lines=True)``, ``read_csv``) are a later optimisation:
they would skip the host copy but need the same skip-and-count handling of bad rows, which
pyarrow's block parser plus the per-line fallback here already provide.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import tarfile
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

# ---------------------------------------------------------------------- formats and names
TEXT_CANDIDATES: tuple[str, ...] = ("caption", "text", "alt", "alt_text", "TEXT")
KEY_CANDIDATES: tuple[str, ...] = ("key", "url", "id", "uid", "URL")
TSV_DEFAULT_COLUMNS: tuple[str, ...] = ("caption", "url")  # MetaCLIP/CC3M: caption<TAB>url

FORMAT_SUFFIXES: dict[str, str] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",  # JSON lines, one object per line
    ".tsv": "tsv",
    ".tab": "tsv",
    ".txt": "tsv",
    ".csv": "csv",
    ".tar": "wds",  # WebDataset
}
# Compression suffixes allowed after a line format or a tar (decompressed by pyarrow's
# compressed input streams, picked from the suffix).
COMPRESSION_SUFFIXES: dict[str, str] = {".gz": "gzip", ".zst": "zstd", ".bz2": "bz2"}
FORMATS: tuple[str, ...] = ("parquet", "jsonl", "tsv", "csv", "wds")

JSON_BLOCK_BYTES = 8 << 20  # JSONL is parsed in blocks of whole lines of about this size
CSV_BLOCK_BYTES = 8 << 20
JSON_SAMPLE_LINES = 1000  # lines of the first block that decide a JSONL shard's columns
MAX_REPORTED_LINES = 1000  # line numbers of skipped rows kept per shard (all are counted)
_FIRST_LINE_PEEK = 1 << 20


class ShardError(ValueError):
    """A shard that cannot be read; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class Shard:
    """One input file.

    ``name`` is its path relative to the root of the spec that found it (the directory, the
    glob's fixed prefix, or the file's own folder), in POSIX form: a stable id for manifests
    that does not change when the whole data set moves. Names are unique within one
    `find_shards` result (a clash gets ``~`` plus 8 hex digits of the path's SHA-1).
    """

    path: Path
    format: str  # one of FORMATS
    index: int  # position in the sorted list
    name: str
    compression: str | None = None  # "gzip" | "zstd" | "bz2" | None


@dataclass(frozen=True)
class ReadOptions:
    """How to read shards.

    ``text_column``/``key_column``: None picks the first of TEXT_CANDIDATES / KEY_CANDIDATES
    present (the key may be absent); a named column that is absent raises `ShardError`.
    ``tsv_columns``: names of the columns of a headerless TSV/CSV. None means: ``.tsv``
    (``.tab``/``.txt``) files are headerless ``caption<TAB>url`` like CC3M/MetaCLIP, extended
    with ``f2``, ``f3`` ... when the first line has more fields (or cut to ``caption`` when it
    has one); ``.csv`` files have a header row. ``header`` overrides that per-format default
    (True: the first row names the columns; False: headerless). ``columns``: the other
    columns to keep (None = all; absent names are ignored, since JSON and WebDataset shards
    have no fixed schema).
    """

    text_column: str | None = None
    key_column: str | None = None
    tsv_columns: tuple[str, ...] | None = None
    batch_rows: int = 1 << 20
    columns: list[str] | None = None
    header: bool | None = None

    def __post_init__(self) -> None:
        if self.batch_rows < 1:
            raise ValueError(f"batch_rows must be >= 1, got {self.batch_rows}")


@dataclass
class ShardChunk:
    """At most ``batch_rows`` consecutive rows of one shard.

    ``table`` has ``text`` (string, large_string, or binary for a binary column that is not
    valid UTF-8), ``key`` when the shard has a key column, and the kept columns; a kept column
    called ``text`` or ``key`` that is not the text/key column becomes ``text_orig``/``key_orig``.
    ``text_column``/``key_column`` are the source names (to write curated rows back under their
    own names). ``skipped`` counts the rows skipped since the previous chunk, by reason; a
    shard whose last rows were all skipped ends with a 0-row chunk that carries those counts.
    """

    shard: Shard
    first_row: int
    table: pa.Table
    skipped: Counter[str] = field(default_factory=Counter)
    invalid_lines: list[int] = field(default_factory=list)
    text_column: str = "text"
    key_column: str | None = None

    @property
    def num_rows(self) -> int:
        return self.table.num_rows

    @property
    def null_texts(self) -> int:
        return self.table.column("text").null_count

    def to_backend(self, backend: str) -> Any:
        return to_backend(self.table, backend)


@dataclass
class ShardReport:
    """What reading one shard gave: rows kept, rows skipped by reason, and any error."""

    shard: Shard
    rows: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    error: str | None = None
    null_texts: int = 0
    invalid_lines: list[int] = field(default_factory=list)  # first MAX_REPORTED_LINES
    chunks: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def empty(self) -> bool:
        return self.error is None and self.rows == 0

    def add(self, chunk: ShardChunk) -> None:
        self.rows += chunk.num_rows
        self.skipped.update(chunk.skipped)
        self.null_texts += chunk.null_texts
        room = MAX_REPORTED_LINES - len(self.invalid_lines)
        if room > 0:
            self.invalid_lines.extend(chunk.invalid_lines[:room])
        self.chunks += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "shard": self.shard.name,
            "path": str(self.shard.path),
            "format": self.shard.format,
            "rows": self.rows,
            "skipped": dict(sorted(self.skipped.items())),
            "null_texts": self.null_texts,
            "invalid_lines": list(self.invalid_lines),
            "error": self.error,
        }


# ---------------------------------------------------------------------- finding shards
def shard_format(path: str | os.PathLike[str]) -> tuple[str, str | None]:
    """(format, compression) from the file name; `ValueError` naming the file if unknown."""
    p = Path(path)
    suffixes = [s.lower() for s in p.suffixes]
    compression = None
    if suffixes and suffixes[-1] in COMPRESSION_SUFFIXES:
        compression = COMPRESSION_SUFFIXES[suffixes.pop()]
    fmt = FORMAT_SUFFIXES.get(suffixes[-1]) if suffixes else None
    if fmt is None or (fmt == "parquet" and compression is not None):
        known = ", ".join(sorted(FORMAT_SUFFIXES))
        raise ValueError(
            f"{p}: unknown shard format {''.join(p.suffixes) or '(no suffix)'!r}; expected one "
            f"of {known} (line formats and .tar may end in .gz, .zst or .bz2)"
        )
    return fmt, compression


def _is_supported(path: Path) -> bool:
    try:
        shard_format(path)
    except ValueError:
        return False
    return True


def _hidden(path: Path) -> bool:
    """Files a directory or glob skips: ``.crc``, ``_SUCCESS``, editor and temp files."""
    return path.name.startswith((".", "_")) or path.name.endswith("~")


def _glob_root(pattern: str) -> Path:
    parts = Path(pattern).parts
    fixed: list[str] = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def find_shards(
    spec: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    formats: Iterable[str] | None = None,
) -> list[Shard]:
    """The shards named by `spec`, sorted by path, each with its position and stable name.

    `spec`: a directory (its supported files, not recursive; hidden/``_``-prefixed files and
    files of other formats are ignored), a glob (``**`` recurses; hidden files are ignored and
    an unsupported match is an error), a file, or a list of those. A file listed twice is read
    once. `formats` limits the result to some of FORMATS (e.g. ``["wds"]`` for an img2dataset
    folder that also holds ``.parquet`` and ``_stats.json`` files). A path that does not exist
    or a spec that finds nothing raises `FileNotFoundError`; an unknown suffix on a named file
    or a glob match raises `ValueError` naming the file.
    """
    wanted = set(FORMATS if formats is None else formats)
    unknown = wanted - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown formats {sorted(unknown)}; expected some of {FORMATS}")
    items = [spec] if isinstance(spec, str | os.PathLike) else list(spec)
    found: dict[Path, tuple[str, str | None, str]] = {}  # abs path -> (fmt, compression, name)
    for item in items:
        text = os.fspath(item)
        path = Path(text)
        pairs: list[tuple[Path, Path]] = []  # (file, root)
        if path.is_dir():
            files = [p for p in sorted(path.iterdir()) if p.is_file() and not _hidden(p)]
            files = [p for p in files if _is_supported(p)]
            if not files:
                raise FileNotFoundError(
                    f"{path}: no shards in this directory (supported suffixes: "
                    f"{', '.join(sorted(FORMAT_SUFFIXES))})"
                )
            pairs = [(p, path) for p in files]
        elif path.is_file():
            pairs = [(path, path.parent)]
        elif glob.has_magic(text):
            matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
            matches = [m for m in matches if m.is_file() and not _hidden(m)]
            if not matches:
                raise FileNotFoundError(f"{text}: no file matches this glob")
            root = _glob_root(text)
            pairs = [(m, root) for m in matches]
        else:
            raise FileNotFoundError(f"{text}: no such file or directory")
        for file, root in pairs:
            fmt, compression = shard_format(file)
            if fmt not in wanted:
                continue
            absolute = Path(os.path.abspath(file))
            if absolute in found:
                continue
            name = Path(os.path.relpath(absolute, os.path.abspath(root))).as_posix()
            found[absolute] = (fmt, compression, name)
    if not found:
        raise FileNotFoundError(f"{spec}: no shards of the formats {sorted(wanted)}")
    ordered = sorted(found, key=lambda p: p.as_posix())
    names = Counter(found[p][2] for p in ordered)
    shards = []
    for index, path in enumerate(ordered):
        fmt, compression, name = found[path]
        if names[name] > 1:
            name = f"{name}~{hashlib.sha1(path.as_posix().encode()).hexdigest()[:8]}"
        shards.append(Shard(path, fmt, index, name, compression))
    return shards


# ---------------------------------------------------------------------- columns and chunks
@dataclass(frozen=True)
class _Columns:
    """Which source columns become ``text`` and ``key``, and which others are kept."""

    text: str
    key: str | None
    keep: frozenset[str] | None  # None = all


def _resolve_columns(shard: Shard, names: Sequence[str], options: ReadOptions) -> _Columns:
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
    keep = None if options.columns is None else frozenset(options.columns)
    return _Columns(text, key, keep)


def _text_array(column: pa.ChunkedArray, shard: Shard, name: str) -> pa.ChunkedArray:
    """The text column as string/large_string (binary kept when it is not valid UTF-8)."""
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return column
    if pa.types.is_dictionary(kind):
        return _text_array(column.cast(kind.value_type), shard, name)
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


def _normalize(table: pa.Table, columns: _Columns, shard: Shard) -> pa.Table:
    """Renames the text/key columns to ``text``/``key`` and keeps the wanted other columns."""
    n = table.num_rows
    names = table.column_names
    if columns.text in names:
        text = _text_array(table.column(columns.text), shard, columns.text)
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


class _Chunker:
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
        )
        self.next_row += rows
        self.skipped = Counter()
        self.lines = []
        self.last_schema = table.schema
        return chunk


# ---------------------------------------------------------------------- readers
def read_shard(shard: Shard, options: ReadOptions | None = None) -> Iterator[ShardChunk]:
    """Streams `shard` as chunks of at most ``options.batch_rows`` rows.

    Raises `ShardError` naming the file when the shard cannot be read (possibly after some
    chunks were yielded: a pipeline then discards the shard's partial output). An empty shard
    yields nothing.
    """
    options = options or ReadOptions()
    readers = {
        "parquet": _read_parquet,
        "jsonl": _read_jsonl,
        "tsv": _read_delimited,
        "csv": _read_delimited,
        "wds": _read_wds,
    }
    if shard.format not in readers:
        raise ShardError(shard.path, f"unknown format {shard.format!r}")
    chunker = _Chunker(shard, options.batch_rows)
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


def to_backend(table: pa.Table, backend: str) -> Any:
    """`table` itself for ``"cpu"``; a ``cudf.DataFrame`` for ``"gpu"`` (cuDF imported here).

    ``"auto"`` means ``"gpu"`` when CuPy sees a device.
    """
    if backend == "auto":
        from metaclip_gpu.backends import gpu_available

        backend = "gpu" if gpu_available() else "cpu"
    if backend == "cpu":
        return table
    if backend == "gpu":
        import cudf

        return cudf.DataFrame.from_arrow(table)
    raise ValueError(f"unknown backend {backend!r}: expected 'auto', 'cpu' or 'gpu'")


def _input_stream(shard: Shard) -> pa.NativeFile:
    return pa.input_stream(str(shard.path), compression=shard.compression)


# Parquet ---------------------------------------------------------------
def _read_parquet(shard: Shard, options: ReadOptions, chunker: _Chunker) -> Iterator[ShardChunk]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(str(shard.path))
    except (OSError, pa.ArrowException) as err:
        raise ShardError(shard.path, f"not a readable Parquet file: {err}") from err
    try:
        names = pf.schema_arrow.names
        columns = _resolve_columns(shard, names, options)
        chunker.text_column, chunker.key_column = columns.text, columns.key
        wanted = [
            n
            for n in names
            if n in (columns.text, columns.key) or columns.keep is None or n in columns.keep
        ]
        for batch in pf.iter_batches(batch_size=options.batch_rows, columns=wanted):
            table = pa.Table.from_batches([batch])
            yield from chunker.push(_normalize(table, columns, shard))
    finally:
        pf.close()


# JSON lines ------------------------------------------------------------
def _line_blocks(shard: Shard, block_bytes: int) -> Iterator[tuple[bytes, int]]:
    """(block of whole lines, 1-based number of its first line), from a possibly compressed file."""
    line = 1
    rest = b""
    with _input_stream(shard) as stream:
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


def _read_jsonl(shard: Shard, options: ReadOptions, chunker: _Chunker) -> Iterator[ShardChunk]:
    """Line blocks parsed by pyarrow; a block pyarrow rejects is parsed line by line.

    `pyarrow.json.open_json` streams too, but stops for good at the first bad line, so blocks
    of whole lines go to `pyarrow.json.read_json` instead. The text column is given an explicit
    string type: otherwise pyarrow infers timestamps from captions like "2020-01-01".
    """
    from pyarrow import json as pajson

    columns: _Columns | None = None
    parse_options = None
    read_options = pajson.ReadOptions(use_threads=True, block_size=4 << 20)
    for block, first_line in _line_blocks(shard, JSON_BLOCK_BYTES):
        if columns is None:
            names = _json_columns_sample(block)
            if names is not None:
                columns = _resolve_columns(shard, names, options)
                chunker.text_column, chunker.key_column = columns.text, columns.key
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
        yield from chunker.push(_normalize(table, columns, shard))


def _json_lines_to_table(
    block: bytes, first_line: int, text_column: str | None, chunker: _Chunker
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
        rows.append(obj)
    return _rows_to_table(rows, text_column)


def _column_array(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
        # Mixed types: keep every value, as JSON text.
        return pa.array(
            [v if v is None or isinstance(v, str) else json.dumps(v) for v in values],
            type=pa.string(),
        )


def _rows_to_table(rows: list[dict[str, Any]], text_column: str | None) -> pa.Table:
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
    with _input_stream(shard) as stream:
        while b"\n" not in data and len(data) < _FIRST_LINE_PEEK:
            more = stream.read(1 << 16)
            if not more:
                break
            data += more
    if not data:
        return None
    return data.split(b"\n", 1)[0].rstrip(b"\r")


def _read_delimited(shard: Shard, options: ReadOptions, chunker: _Chunker) -> Iterator[ShardChunk]:
    """TSV (no quoting, like CC3M) or CSV (quoted fields may hold newlines), every column read
    as strings: type inference on the first block could fail on a later one (an ``id`` column
    of digits, then one with a letter) and an empty caption must stay ``""``, not null."""
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
    columns = _resolve_columns(shard, names, options)
    chunker.text_column, chunker.key_column = columns.text, columns.key

    def on_invalid(row: Any) -> str:
        chunker.skip("invalid_row", line=row.number)
        return "skip"

    reader = csv.open_csv(
        _input_stream(shard),
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
            column_types=dict.fromkeys(names, pa.string()),
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    try:
        for batch in reader:
            table = pa.Table.from_batches([batch])
            yield from chunker.push(_normalize(table, columns, shard))
    finally:
        reader.close()


def _csv_header(shard: Shard, tsv: bool) -> list[str]:
    from pyarrow import csv

    reader = csv.open_csv(
        _input_stream(shard),
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
def _split_wds_name(name: str) -> tuple[str, str] | None:
    """WebDataset's sample key and extension: the key is the path up to the first dot of the
    file name ("a/000123.jpg" -> ("a/000123", "jpg")); names without a dot belong to no sample."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not dot or not stem:
        return None
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def _read_wds(shard: Shard, options: ReadOptions, chunker: _Chunker) -> Iterator[ShardChunk]:
    """Streams the tar (never all in memory): consecutive members with the same key form a
    sample; its caption comes from the ``.json`` member's text field or else a ``.txt`` member.
    The sample key is the ``key`` column (unless `key_column` names a JSON field); the JSON's
    other fields are columns (nested values as JSON text)."""
    candidates = (options.text_column,) if options.text_column else TEXT_CANDIDATES
    keep = None if options.columns is None else frozenset(options.columns)
    rows: list[dict[str, Any]] = []
    chunker.key_column = options.key_column or "__key__"
    state: dict[str, Any] = {"text_source": None}

    def sample_row(key: str, parts: dict[str, bytes]) -> dict[str, Any] | None:
        meta: dict[str, Any] | None = None
        if "json" in parts:
            try:
                loaded = json.loads(parts["json"])
            except ValueError:
                loaded = None
            if isinstance(loaded, dict):
                meta = loaded
            elif "txt" not in parts:
                chunker.skip("invalid_json")
                return None
        source = next((c for c in candidates if meta is not None and c in meta), None)
        if source is not None:
            assert meta is not None
            value = meta.pop(source)
            text = value if isinstance(value, str) else None
        elif "txt" in parts:
            source = "txt"
            try:
                text = parts["txt"].decode("utf-8")
            except UnicodeDecodeError:
                chunker.skip("invalid_utf8")
                return None
        else:
            chunker.skip("missing_caption")
            return None
        if state["text_source"] is None:
            state["text_source"] = source
        meta = meta or {}
        row_key: Any = key
        if options.key_column and options.key_column in meta:
            row_key = meta.pop(options.key_column)
        elif meta.get("key") == key:
            del meta["key"]  # img2dataset repeats the sample key in its JSON
        row: dict[str, Any] = {"text": text, "key": row_key}
        for name, value in meta.items():
            if keep is not None and name not in keep:
                continue
            if isinstance(value, dict | list):
                value = json.dumps(value, ensure_ascii=False)
            row[f"{name}_orig" if name in ("text", "key") else name] = value
        return row

    def flush() -> Iterator[ShardChunk]:
        if rows:
            chunker.text_column = state["text_source"] or "caption"
            table = _rows_to_table(rows, "text")
            rows.clear()
            yield from chunker.push(table)

    with _input_stream(shard) as stream:
        counted = _CountingReader(stream)
        try:
            tar = tarfile.open(fileobj=counted, mode="r|")  # noqa: SIM115 (closed below)
        except tarfile.ReadError:
            if counted.total == 0:
                return  # a 0-byte file: an empty shard
            raise
        try:
            current: str | None = None
            parts: dict[str, bytes] = {}
            for member in tar:
                if not member.isfile():
                    continue
                split = _split_wds_name(member.name)
                if split is None:
                    continue
                key, ext = split
                if key != current:
                    if current is not None:
                        row = sample_row(current, parts)
                        if row is not None:
                            rows.append(row)
                            if len(rows) >= options.batch_rows:
                                yield from flush()
                    current, parts = key, {}
                if ext in ("json", "txt") and ext not in parts:
                    handle = tar.extractfile(member)
                    parts[ext] = handle.read() if handle is not None else b""
            if current is not None:
                row = sample_row(current, parts)
                if row is not None:
                    rows.append(row)
            _check_tar_end(shard, counted, tar.offset)
        finally:
            tar.close()
    yield from flush()


def _check_tar_end(shard: Shard, counted: _CountingReader, end: int) -> None:
    """Raises unless the archive's last member is followed by an end-of-archive zero block.

    tarfile's stream mode ends quietly at a header cut short, a missing header or a garbled
    one, so a tar truncated at a block boundary (a copy interrupted at a round size) would
    lose its last samples silently; every tar writer (tarfile, GNU tar, webdataset) writes
    the zero blocks.
    """
    block = counted.block_at(end)
    if block is None or len(block) < tarfile.BLOCKSIZE:
        raise ShardError(
            shard.path,
            f"truncated tar: ends at byte {counted.total:,} without the end-of-archive block "
            f"after the member data ending at byte {end:,}",
        )
    if block.count(0) != tarfile.BLOCKSIZE:
        raise ShardError(shard.path, f"corrupt tar: invalid member header at byte {end:,}")


class _CountingReader:
    """A read-only file object that counts the bytes it hands out and keeps the last ones."""

    WINDOW = 1 << 17

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.total = 0
        self.window = bytearray()
        self.window_start = 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read() if size is None or size < 0 else self.stream.read(size)
        self.total += len(data)
        self.window += data
        extra = len(self.window) - self.WINDOW
        if extra > 0:
            del self.window[:extra]
            self.window_start += extra
        return data

    def block_at(self, offset: int) -> bytes | None:
        """The (up to) 512 bytes at `offset`, reading on as needed; None if out of the window."""
        while self.total < offset + tarfile.BLOCKSIZE and self.read(tarfile.BLOCKSIZE):
            pass
        if offset < self.window_start:
            return None
        start = offset - self.window_start
        return bytes(self.window[start : start + tarfile.BLOCKSIZE])
