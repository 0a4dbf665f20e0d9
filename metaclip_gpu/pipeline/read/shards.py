"""Shards and their names: formats, `Shard`, `ReadOptions`, chunks (and `to_backend`), reports,
`find_shards`."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from metaclip_gpu import storage
from metaclip_gpu.storage import Location, RemotePath

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
FIRST_LINE_PEEK = 1 << 20


class ShardError(ValueError):
    """A shard that cannot be read; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike[str] | RemotePath, reason: str) -> None:
        self.path = storage.location(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        # raised on dask workers and unpickled on the client: rebuild from both arguments
        # (the default rebuilds from ``args``, the message alone, and fails)
        return (type(self), (self.path, self.reason))


@dataclass(frozen=True)
class Shard:
    """One input file.

    ``name`` is its path relative to the root of the spec that found it (the directory, the
    glob's fixed prefix, or the file's own folder), in POSIX form: a stable id for manifests
    that does not change when the whole data set moves. Names are unique within one
    `find_shards` result (a clash gets ``~`` plus 8 hex digits of the path's SHA-1).
    """

    path: Location  # a local `Path`, or a `storage.RemotePath` (URL and storage options)
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
    have no fixed schema). ``text_only``: the chunks hold ``text`` alone (the match stage:
    a Parquet shard then reads one column, not its urls and the rest; a named key column must
    still exist), whatever ``columns`` says.
    """

    text_column: str | None = None
    key_column: str | None = None
    tsv_columns: tuple[str, ...] | None = None
    batch_rows: int = 1 << 20
    columns: list[str] | None = None
    header: bool | None = None
    text_only: bool = False

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
    own names, in the order of ``source_columns``). ``skipped`` counts the rows skipped since
    the previous chunk, by reason; a shard whose last rows were all skipped ends with a 0-row
    chunk that carries those counts.
    """

    shard: Shard
    first_row: int
    table: pa.Table
    skipped: Counter[str] = field(default_factory=Counter)
    invalid_lines: list[int] = field(default_factory=list)
    text_column: str = "text"
    key_column: str | None = None
    source_columns: tuple[str, ...] = ()  # the input's column order, where the format has one

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


def _is_supported(path: Location) -> bool:
    try:
        shard_format(str(path))
    except ValueError:
        return False
    return True


def _hidden(path: Location) -> bool:
    """Files a directory or glob skips: ``.crc``, ``_SUCCESS``, editor and temp files."""
    return path.name.startswith((".", "_")) or path.name.endswith("~")


def find_shards(
    spec: str | os.PathLike[str] | RemotePath | Iterable[str | os.PathLike[str] | RemotePath],
    *,
    formats: Iterable[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> list[Shard]:
    """The shards named by `spec`, sorted by path, each with its position and stable name.

    `spec`: a directory (its supported files, not recursive; hidden/``_``-prefixed files and
    files of other formats are ignored), a glob (``**`` recurses; hidden files are ignored and
    an unsupported match is an error), a file, or a list of those; each may be a local path or
    a URL (``s3://``, ``gs://``, ``hf://``: `storage.location`, reached with
    `storage_options`). A file listed twice is read once. `formats` limits the result to some
    of FORMATS (e.g. ``["wds"]`` for an img2dataset folder that also holds ``.parquet`` and
    ``_stats.json`` files). A path that does not exist or a spec that finds nothing raises
    `FileNotFoundError`; an unknown suffix on a named file or a glob match raises `ValueError`
    naming the file; a store that refuses (bad credentials) raises its `OSError` naming the URL.
    """
    wanted = set(FORMATS if formats is None else formats)
    unknown = wanted - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown formats {sorted(unknown)}; expected some of {FORMATS}")
    items = [spec] if isinstance(spec, str | os.PathLike | RemotePath) else list(spec)
    found: dict[Location, tuple[str, str | None, str]] = {}  # abs path -> (fmt, compr., name)
    for item in items:
        path = storage.location(item, storage_options if storage_options else None)
        pairs: list[tuple[Location, Location]] = []  # (file, root)
        if storage.is_dir(path):
            files = [p for p in storage.list_files(path) if not _hidden(p)]
            files = [p for p in files if _is_supported(p)]
            if not files:
                raise FileNotFoundError(
                    f"{path}: no shards in this directory (supported suffixes: "
                    f"{', '.join(sorted(FORMAT_SUFFIXES))})"
                )
            pairs = [(p, path) for p in files]
        elif storage.is_file(path):
            pairs = [(path, _parent(path))]
        elif storage.has_magic(path):
            matches = [m for m in storage.glob(path) if not _hidden(m)]
            if not matches:
                raise FileNotFoundError(f"{path}: no file matches this glob")
            root = storage.glob_root(path)
            pairs = [(m, root) for m in matches]
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")
        for file, root in pairs:
            fmt, compression = shard_format(str(file))
            if fmt not in wanted:
                continue
            absolute = storage.absolute(file)
            if absolute in found:
                continue
            found[absolute] = (fmt, compression, storage.relative_name(file, root))
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


def _parent(path: Location) -> Location:
    if isinstance(path, Path):
        return path.parent
    return RemotePath(path.url.rsplit("/", 1)[0], path.options_json)


def input_stream(shard: Shard) -> pa.NativeFile:
    return storage.input_stream(shard.path, shard.compression)


# Parquet ---------------------------------------------------------------


def to_backend(table: pa.Table, backend: str) -> Any:
    """`table` itself for ``"cpu"``; a ``cudf.DataFrame`` for ``"gpu"`` (cuDF imported here).

    ``"auto"`` means ``"gpu"`` when CuPy sees a device.
    """
    if backend == "auto":
        from metaclip_gpu.engine.backends import gpu_available

        backend = "gpu" if gpu_available() else "cpu"
    if backend == "cpu":
        return table
    if backend == "gpu":
        import cudf

        return cudf.DataFrame.from_arrow(table)
    raise ValueError(f"unknown backend {backend!r}: expected 'auto', 'cpu' or 'gpu'")
