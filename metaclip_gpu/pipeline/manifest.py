"""The manifest of a stage's output directory: which shards are finished, and with what result.

``<out_dir>/manifest.jsonl`` holds one JSON record per finished shard, appended (one
``os.write`` on an ``O_APPEND`` descriptor, then ``fsync``) only after the shard's output file
was renamed into place. So a run killed at any moment leaves, for each shard, either no
record (the shard is redone) or a record whose output exists. A later record for the same
shard supersedes an earlier one.

A shard counts as done (`Manifest.is_done`) only when its latest record exists, the input's
fingerprint (size and mtime_ns) and the run's ``config`` (metadata digest and read options)
still match, and its output file, if it has one, exists and still has the bytes whose XXH64
the record holds (``checksum``, `checksums`; a damaged file is named in a warning
and redone; a record without a checksum, from an older version, is redone).
A record with an ``error`` (the shard could not be read) has no output and is done while the
input is unchanged: reading it again would fail again.

A run killed while appending can leave a truncated last line; `Manifest.load` ignores it (and
any other line that is not a JSON object), and the next append starts on a new line.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from metaclip_gpu import storage
from metaclip_gpu.pipeline.checksums import checksum_matches
from metaclip_gpu.pipeline.oserrors import with_path
from metaclip_gpu.pipeline.read import Shard
from metaclip_gpu.storage import RemotePath

MANIFEST_NAME = "manifest.jsonl"


def fingerprint(path: str | os.PathLike[str] | RemotePath) -> dict[str, Any]:
    """``{"size", "mtime_ns"}`` of an input file (a URL's: `storage.fingerprint`): a changed
    input gets a new fingerprint."""
    return storage.fingerprint(storage.location(path))


@dataclass
class ShardRecord:
    """One finished shard. ``output`` is relative to the output directory (None on error)."""

    shard: str
    output: str | None
    rows: int
    skipped: dict[str, int] = field(default_factory=dict)
    null_texts: int = 0
    error: str | None = None
    seconds: float = 0.0
    fingerprint: dict[str, Any] = field(default_factory=dict)
    config: str = ""
    path: str = ""
    invalid_lines: list[int] = field(default_factory=list)  # first lines of skipped rows
    checksum: str = ""  # XXH64 of the output file's bytes (`checksums.file_checksum`)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShardRecord:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def parquet_readable(path: Path) -> bool:
    """True when `path` exists and its Parquet footer can be read."""
    try:
        pq.ParquetFile(path).close()
    except (OSError, ValueError, TypeError):  # pyarrow's ArrowInvalid is a ValueError
        return False
    return True


class Manifest:
    """The records of ``<out_dir>/manifest.jsonl``, latest per shard name."""

    def __init__(self, out_dir: str | os.PathLike[str], name: str = MANIFEST_NAME) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / name
        self.records: dict[str, ShardRecord] = {}
        self.ignored_lines = 0  # truncated or malformed lines seen by `load`

    @classmethod
    def load(cls, out_dir: str | os.PathLike[str], name: str = MANIFEST_NAME) -> Manifest:
        """The manifest `name` of `out_dir` (empty when there is no file yet)."""
        manifest = cls(out_dir, name)
        try:
            raw = manifest.path.read_bytes()
        except FileNotFoundError:
            return manifest
        for line in raw.split(b"\n"):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                record = ShardRecord.from_dict(data)
            except (ValueError, TypeError):
                manifest.ignored_lines += 1
                continue
            manifest.records[record.shard] = record
        return manifest

    def __len__(self) -> int:
        return len(self.records)

    def __contains__(self, shard: str) -> bool:
        return shard in self.records

    def get(self, shard: str) -> ShardRecord | None:
        return self.records.get(shard)

    def output_path(self, record: ShardRecord) -> Path | None:
        return None if record.output is None else self.out_dir / record.output

    def is_done(self, shard: Shard | str, *, config: str | None = None) -> bool:
        """Whether `shard` needs no work (see the module docstring).

        With a `Shard`, its input's fingerprint must match the record's; with a name, only the
        record and its output are checked. `config`, when given, must equal the record's.
        """
        name = shard if isinstance(shard, str) else shard.name
        record = self.records.get(name)
        if record is None:
            return False
        if config is not None and record.config != config:
            return False
        if isinstance(shard, Shard):
            try:
                if fingerprint(shard.path) != record.fingerprint:
                    return False
            except OSError:
                return False
        out = self.output_path(record)
        if out is None:
            return record.error is not None
        return checksum_matches(out, record.checksum, f"shard {name} is redone")

    def append(self, record: ShardRecord) -> None:
        """Appends `record` durably (fsync), on a fresh line even after a truncated one."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        line = record.to_json().encode("utf-8") + b"\n"
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            with with_path(self.path):  # os.write's errors name no file
                size = os.fstat(fd).st_size
                if size > 0 and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line
                os.write(fd, line)
                os.fsync(fd)
        finally:
            os.close(fd)
        self.records[record.shard] = record
