"""Writing a run directory that may live in object storage: the writing half of the seam
(`storage` reads). A local `Path` keeps the local code path of each caller (temporary name
plus ``os.replace``); these functions are what a `RemotePath` output goes through, fsspec
underneath (no protocol is spoken here).

Object stores have no rename, so a remote run directory commits without one: each data file
is written once under a name unique to the attempt (`attempt_name`), a PUT of a whole object
is atomic (a reader sees all of it or nothing), and the manifest record naming the file is
the commit point (`manifest`). Objects no latest record names are orphans of a killed
attempt, deleted by the next run under the run lock (`sweep`).
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO

import xxhash

from metaclip_gpu.storage import Location, RemotePath, filesystem, named_errors

BLOCK_BYTES = 4 << 20


class NoConditionalWrites(OSError):
    """The store cannot create an object only where none exists (the remote run lock)."""


def attempt_name(name: str) -> str:
    """`name` with 12 hex digits unique to this attempt before its suffix:
    ``part-0-1a2b3c4d.parquet`` -> ``part-0-1a2b3c4d.<uuid12>.parquet``."""
    stem, dot, suffix = name.rpartition(".")
    if not dot:
        return f"{name}.{uuid.uuid4().hex[:12]}"
    return f"{stem}.{uuid.uuid4().hex[:12]}.{suffix}"


def write_bytes(loc: RemotePath, data: bytes, *, exclusive: bool = False) -> None:
    """One PUT of `data` at `loc` (atomic: a reader sees the old object or the new one).
    `exclusive`: only where no object exists (S3 ``If-None-Match: *``), else
    `FileExistsError`; a store that cannot do that raises `NoConditionalWrites`."""
    fs, path = filesystem(loc)
    with named_errors(loc):
        if not exclusive:
            fs.pipe_file(path, data)
            return
        try:
            fs.pipe_file(path, data, mode="create")
        except (NotImplementedError, TypeError) as err:
            raise NoConditionalWrites(
                0, f"the store cannot create an object exclusively ({err})", str(loc)
            ) from err


def write_json(loc: RemotePath, payload: Any, *, exclusive: bool = False) -> None:
    data = (json.dumps(payload, indent=1, ensure_ascii=False) + "\n").encode("utf-8")
    write_bytes(loc, data, exclusive=exclusive)


class HashingWriter(io.RawIOBase):
    """A writable file that passes its bytes to `sink` and hashes them (XXH64) on the way, so
    a file streamed to object storage has its checksum without being read back."""

    def __init__(self, sink: BinaryIO) -> None:
        super().__init__()
        self.sink = sink
        self.digest = xxhash.xxh64()
        self.position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.digest.update(view)
        self.sink.write(view)
        self.position += len(view)
        return len(view)

    def tell(self) -> int:
        return self.position

    def checksum(self) -> str:
        return self.digest.hexdigest()


@contextmanager
def open_output(loc: RemotePath) -> Iterator[HashingWriter]:
    """A streaming upload to `loc` (a multipart upload past fsspec's block size), hashed as it
    goes: the object appears whole when the block ends without an exception; on an exception
    the upload is discarded (fsspec's ``discard``) and no object is left (a killed process
    leaves none either, or an unfinished multipart upload that the store expires)."""
    fs, path = filesystem(loc)
    with named_errors(loc):
        handle = fs.open(path, "wb")
    try:
        yield HashingWriter(handle)
    except BaseException:
        with suppress(Exception):
            handle.discard()
        handle.closed = True  # else closing it (also when collected) would upload the part
        raise
    with named_errors(loc):
        handle.close()


def checksum(loc: Location) -> str:
    """XXH64 (seed 0) of `loc`'s bytes, streamed in 4 MiB blocks."""
    digest = xxhash.xxh64()
    if isinstance(loc, Path):
        opened: Any = open(loc, "rb")  # noqa: SIM115 (closed below)
    else:
        fs, path = filesystem(loc)
        with named_errors(loc):
            opened = fs.open(path, "rb")
    with opened as f:
        while block := f.read(BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def remove(loc: RemotePath) -> None:
    """Deletes the object `loc` (nothing when there is none)."""
    fs, path = filesystem(loc)
    with named_errors(loc), suppress(FileNotFoundError):
        fs.rm_file(path)


def list_tree(folder: RemotePath) -> list[RemotePath]:
    """Every object under `folder` (recursively), sorted."""
    fs, path = filesystem(folder)
    fs.invalidate_cache(path)
    with named_errors(folder):
        try:
            names = fs.find(path.rstrip("/") + "/")
        except FileNotFoundError:
            return []
        finally:  # no listing kept: other processes (dask workers) write here too
            fs.invalidate_cache(path)
    return [RemotePath(fs.unstrip_protocol(n), folder.options_json) for n in sorted(names)]


def relative(loc: RemotePath, root: RemotePath) -> str:
    """`loc`'s name under `root` (POSIX, no leading slash)."""
    prefix = root.url.split("://", 1)[1].rstrip("/") + "/"
    return loc.url.split("://", 1)[1].removeprefix(prefix)


def sweep(folder: RemotePath, root: RemotePath, keep: Iterable[str]) -> list[str]:
    """Deletes the objects under `folder` whose names relative to `root` are not in `keep`
    (the files the latest records name): what killed attempts left. Returns their names."""
    wanted = set(keep)
    removed = []
    for loc in list_tree(folder):
        name = relative(loc, root)
        if name not in wanted:
            remove(loc)
            removed.append(name)
    return removed


def invalidate(loc: RemotePath) -> None:
    """Forgets fsspec's cached listings of `loc`'s folder (another process may have written)."""
    fs, path = filesystem(loc)
    fs.invalidate_cache(path)
