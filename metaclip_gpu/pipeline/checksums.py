"""Checksums of a run directory's output files: XXH64 of a file's bytes, and their check on reuse.

A stage records each output file's checksum (`file_checksum`, 16 hex digits) next to it in a
manifest, and reuses a file only when `checksum_matches` says it still has those bytes (SPEC
section 7). A mismatch is named in a `DamagedFileWarning` and the caller redoes the file.

Hashing is I/O: each reused file is read once more. Within one process a file already
verified is not hashed again while its size, mtime and inode are unchanged (a ``curate`` run
checks a match file at the match, count and balance stages; it is read from disk once), so
the cost of a rerun is one read of every reused output, about the speed of the disk (XXH64
itself runs at several GB/s; see ``bench/bench_checksums.py`` for a measured run).
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from typing import Any

import xxhash

from metaclip_gpu import storage
from metaclip_gpu.pipeline.oserrors import with_path
from metaclip_gpu.storage import Location, RemotePath
from metaclip_gpu.storage_write import write_bytes

BLOCK_BYTES = 4 << 20


class DamagedFileWarning(UserWarning):
    """An output file whose bytes no longer match its recorded checksum (it is redone)."""


# (path, size, mtime_ns, inode) -> hash; an object's (url, size, version tag, "") -> hash
_verified: dict[tuple[str, int, int | str, int | str], str] = {}
_verified_lock = threading.Lock()


def file_checksum(path: str | os.PathLike[str]) -> str:
    """XXH64 (seed 0) of the file's bytes as 16 hex digits, read in 4 MiB blocks."""
    digest = xxhash.xxh64()
    with open(path, "rb") as f:
        while block := f.read(BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _object_key(url: str, found: dict[str, Any]) -> tuple[str, int, int | str, int | str]:
    return (url, int(found["size"]), str(found.get("version", found.get("mtime_ns"))), "")


def _stat_key(path: Path | RemotePath) -> tuple[str, int, int | str, int | str]:
    if isinstance(path, RemotePath):  # the ETag changes whenever the bytes do
        return _object_key(path.url, storage.fingerprint(path))
    st = os.stat(path)
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)


def remember(path: str | os.PathLike[str] | RemotePath, checksum: str) -> dict[str, Any]:
    """Notes that `path` (as it is now) has `checksum`: a writer calls this after hashing what
    it just wrote, so the next check in this process needs no read. Returns an object's
    fingerprint (`storage.fingerprint`: size and ETag), for its record (`remember_object`);
    {} for a local file."""
    path = storage.location(path)
    found = storage.fingerprint(path) if isinstance(path, RemotePath) else {}
    key = _object_key(path.url, found) if isinstance(path, RemotePath) else _stat_key(path)
    with _verified_lock:
        _verified[key] = checksum
    return found


def remember_object(loc: RemotePath, found: dict[str, Any], checksum: str) -> None:
    """Notes that the object `loc` has `checksum` while it has the fingerprint `found` (its
    size and ETag, as recorded when it was written): a rerun checks an unchanged object with
    one HEAD instead of reading it all (S3's ETag changes whenever the bytes do)."""
    if found.get("size") is None or not checksum:
        return
    with _verified_lock:
        _verified[_object_key(loc.url, found)] = checksum


def known_checksum(path: str | os.PathLike[str] | RemotePath) -> tuple[Any, str] | None:
    """This process's memo entry for a local file as it is now (its stat key and checksum),
    None when it has none or for an object (whose record carries its ETag instead): a dask
    worker returns it with the file it wrote, and the client `adopt_checksum`s it."""
    path = storage.location(path)
    if isinstance(path, RemotePath):
        return None
    key = _stat_key(path)
    with _verified_lock:
        known = _verified.get(key)
    return None if known is None else (key, known)


def adopt_checksum(entry: tuple[Any, str] | None) -> None:
    """Notes another process's `known_checksum` entry: the file is not hashed again here while
    its path, size, mtime and inode are those (a file changed since has another key and is)."""
    if entry is not None:
        key, checksum = entry
        with _verified_lock:
            _verified[tuple(key)] = checksum


def current_checksum(path: str | os.PathLike[str] | RemotePath) -> str:
    """`file_checksum` of `path`, from this process's memo while the file is unchanged (an
    object in a remote run directory: while its size and ETag are)."""
    path = storage.location(path)
    key = _stat_key(path)
    with _verified_lock:
        known = _verified.get(key)
    if known is None:
        if isinstance(path, RemotePath):
            from metaclip_gpu.storage_write import checksum

            known = checksum(path)
        else:
            known = file_checksum(path)
        with _verified_lock:
            _verified[key] = known
    return known


def checksum_matches(
    path: str | os.PathLike[str] | RemotePath, expected: str | None, what: str = ""
) -> bool:
    """Whether `path` exists and has the checksum `expected`. A file that exists with other
    bytes is named in a `DamagedFileWarning` (`what` says what it is and that it is redone);
    a missing file or a record without a checksum (an older run's) is simply not reusable."""
    if not expected:
        return False
    try:
        found = current_checksum(path)
    except OSError:
        return False
    if found == expected:
        return True
    note = f"; {what}" if what else ""
    warnings.warn(
        f"{path}: damaged (XXH64 {found}, recorded {expected}){note}",
        DamagedFileWarning,
        stacklevel=2,
    )
    return False


def put_bytes(path: Location, parts: list[Any]) -> str:
    """The bytes of `parts` (bytes or buffers, one after the other) at `path`, atomically (a
    temporary name in the same folder, then renamed; in object storage one PUT); returns their
    XXH64, noted for later checks."""
    digest = xxhash.xxh64()
    for part in parts:
        digest.update(part)
    checksum = digest.hexdigest()
    if isinstance(path, RemotePath):
        write_bytes(path, b"".join(parts))
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")  # `files.remove_stale_tmp`'s
        try:
            with with_path(tmp), open(tmp, "wb") as f:
                for part in parts:
                    f.write(part)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    remember(path, checksum)
    return checksum
