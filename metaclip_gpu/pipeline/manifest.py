"""The manifest of a stage's output directory: which shards are finished, and with what result.

``<out_dir>/manifest.jsonl`` holds one JSON record per finished shard, appended (one
``os.write`` on an ``O_APPEND`` descriptor, then ``fsync``; the records of several shards
finished together share one fsync, `Manifest.batch`) only after the shard's output
file was renamed into place and made durable (`durable`). So a run killed at any moment
leaves, for each shard, either no record (the shard is redone) or a record whose output
exists. A later record for the same shard supersedes an earlier one.

A shard counts as done (`Manifest.is_done`) only when its latest record exists, the input's
fingerprint (size and mtime_ns) and the run's ``config`` (metadata digest and read options)
still match, and its output file, if it has one, exists and still has the bytes whose XXH64
the record holds (``checksum``, `checksums`; a damaged file is named in a warning
and redone; a record without a checksum, from an older version, is redone).
A record with an ``error`` (the shard could not be read) has no output and is done while the
input is unchanged: reading it again would fail again.

A run killed while appending can leave a truncated last line; `Manifest.load` ignores it (and
any other line that is not a JSON object), and the next append starts on a new line.

In object storage (an ``s3://`` output) nothing can be appended to: each record is one object
``<out_dir>/manifest/<seq>-<random>.json`` (``_manifest/`` for a curated folder), put whole
(atomic) after its output file was written under its attempt's unique name: the record is the
commit point. `load` lists the folder and reads the records in ``seq`` order (the run lock
keeps one writer, so ``seq`` orders them); ``objects`` names each shard's latest record
object: the others, superseded, are orphans that the next run deletes with the files no
latest record names (`files.remove_orphans`).
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from metaclip_gpu import storage
from metaclip_gpu.pipeline.checksums import checksum_matches, remember_object
from metaclip_gpu.pipeline.oserrors import with_path
from metaclip_gpu.pipeline.read import Shard
from metaclip_gpu.storage import Location, RemotePath

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
    # an output in object storage: its size and ETag when written (`checksums.remember_object`)
    output_fingerprint: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        data = asdict(self)
        if not self.output_fingerprint:  # local outputs: records as before
            del data["output_fingerprint"]
        return json.dumps(data, sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShardRecord:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def parquet_readable(path: Location) -> bool:
    """True when `path` exists and its Parquet footer can be read."""
    try:
        storage.parquet_file(path).close()
    except (OSError, ValueError, TypeError):  # pyarrow's ArrowInvalid is a ValueError
        return False
    return True


class Manifest:
    """The records of ``<out_dir>/manifest.jsonl``, latest per shard name."""

    def __init__(self, out_dir: str | os.PathLike[str] | RemotePath, name: str = MANIFEST_NAME):
        self.out_dir: Location = storage.location(out_dir)
        self.path = self.out_dir / name
        self.records: dict[str, ShardRecord] = {}
        self.ignored_lines = 0  # truncated or malformed lines seen by `load`
        # in object storage: the folder of record objects, each latest record's object name
        self.folder = self.out_dir / name.removesuffix(".jsonl")
        self.objects: dict[str, str] = {}
        self.next_seq = 0
        self._batched = False  # inside `batch`: appends are fsynced when it ends
        self._unsynced = False

    @classmethod
    def load(
        cls, out_dir: str | os.PathLike[str] | RemotePath, name: str = MANIFEST_NAME
    ) -> Manifest:
        """The manifest `name` of `out_dir` (empty when there is no file yet)."""
        manifest = cls(out_dir, name)
        if isinstance(manifest.out_dir, RemotePath):
            manifest._load_objects()
            return manifest
        try:
            raw = manifest.path.read_bytes()
        except FileNotFoundError:
            return manifest
        manifest._add_lines(raw)
        return manifest

    def _load_objects(self) -> None:
        """A remote manifest: its record objects, in ``seq`` order (later ones win)."""
        from metaclip_gpu.storage_write import invalidate, list_tree, relative

        assert isinstance(self.folder, RemotePath) and isinstance(self.out_dir, RemotePath)
        invalidate(self.folder)
        objects = [o for o in list_tree(self.folder) if o.name.endswith(".json")]
        fs, _ = storage.filesystem(self.folder)
        with storage.named_errors(self.folder):
            contents = fs.cat([fs._strip_protocol(o.url) for o in objects]) if objects else {}
        by_path = {fs._strip_protocol(k): v for k, v in contents.items()}
        for obj in objects:
            relative_name = relative(obj, self.out_dir)
            seq = obj.name.split("-", 1)[0]
            if seq.isdigit():
                self.next_seq = max(self.next_seq, int(seq) + 1)
            shard = self._add_lines(by_path.get(fs._strip_protocol(obj.url), b""))
            if shard is not None:  # a record superseded by a later one is an orphan
                self.objects[shard] = relative_name
        for record in self.records.values():  # unchanged outputs are checked with a HEAD
            out = self.output_path(record)
            if isinstance(out, RemotePath):
                remember_object(out, record.output_fingerprint, record.checksum)

    def _add_lines(self, raw: bytes) -> str | None:
        """Adds the records of `raw`'s lines; returns the last one's shard name."""
        last = None
        for line in raw.split(b"\n"):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                record = ShardRecord.from_dict(data)
            except (ValueError, TypeError):
                self.ignored_lines += 1
                continue
            self.records[record.shard] = record
            last = record.shard
        return last

    def __len__(self) -> int:
        return len(self.records)

    def __contains__(self, shard: str) -> bool:
        return shard in self.records

    def get(self, shard: str) -> ShardRecord | None:
        return self.records.get(shard)

    def output_path(self, record: ShardRecord) -> Location | None:
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
        """Appends `record` durably (fsync; inside `batch`, at its end), on a fresh line even
        after a truncated one (in object storage: puts it as the next record object)."""
        if isinstance(self.folder, RemotePath):
            from metaclip_gpu.storage_write import write_bytes

            name = f"{self.next_seq:010d}-{uuid.uuid4().hex[:8]}.json"
            write_bytes(self.folder / name, record.to_json().encode("utf-8") + b"\n")
            self.next_seq += 1
            self.objects[record.shard] = f"{self.folder.name}/{name}"
            self.records[record.shard] = record
            return
        assert isinstance(self.out_dir, Path)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        line = record.to_json().encode("utf-8") + b"\n"
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            with with_path(self.path):  # os.write's errors name no file
                size = os.fstat(fd).st_size
                if size > 0 and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line
                os.write(fd, line)
                if self._batched:
                    self._unsynced = True
                else:
                    os.fsync(fd)
        finally:
            os.close(fd)
        self.records[record.shard] = record

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """The records appended inside are fsynced once, when it ends (also when it ends with
        an error: the records written are complete): one fsync for several records."""
        self._batched = True
        try:
            yield
        finally:
            self._batched = False
            if self._unsynced:
                self._unsynced = False
                fd = os.open(self.path, os.O_RDONLY)
                try:
                    with with_path(self.path):
                        os.fsync(fd)
                finally:
                    os.close(fd)
