"""Where files live: local paths and object-storage URLs (``s3://``, ``gs://``, ``hf://``) behind
one seam.

`location` turns what a user typed into a `Location`: a `pathlib.Path` for a local path (or a
``file://`` URL), read exactly as before with no detour, or a `RemotePath` for a URL: the URL
with the storage options that reach it, so the options travel with it wherever it goes (into a
`read.Shard`, pickled into a dask task). Every remote operation goes through fsspec
(`fsspec.core.url_to_fs`, with s3fs, gcsfs or huggingface_hub behind it); pyarrow reads a remote
file through `arrow_filesystem` (``pyarrow.fs.PyFileSystem(FSSpecHandler(fs))``). No protocol is
spoken here.

Credentials and endpoints come from each provider's standard environment (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ``AWS_ENDPOINT_URL``...; ``GOOGLE_APPLICATION_
CREDENTIALS``; ``HF_TOKEN``), plus the command line's ``--storage-options '<json>'`` (the
keyword arguments of the fsspec file system, e.g. ``{"endpoint_url": ..., "anon": true}``).
s3fs (through aiobotocore) does not read ``AWS_ENDPOINT_URL`` on every version, so for ``s3://``
it is passed as ``endpoint_url`` here unless the options name one.

A missing file-system package is one line naming the extra to install (`MissingStorageExtra`);
an error of the store (no bucket, denied) is an `OSError` whose file name is the URL
(`named_errors`), which the command line prints as one line.
"""

from __future__ import annotations

import errno
import glob as globbing
import json
import os
import posixpath
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

# protocol -> (extra, package): what `pip install 'metaclip-gpu[extra]'` brings
EXTRAS: dict[str, tuple[str, str]] = {
    "s3": ("s3", "s3fs"),
    "s3a": ("s3", "s3fs"),
    "gs": ("gcs", "gcsfs"),
    "gcs": ("gcs", "gcsfs"),
    "hf": ("hf", "huggingface_hub"),
}
LOCAL_PROTOCOLS = ("file", "local")
# info() fields that change whenever an object's bytes do, by store (S3, GCS, HF)
VERSION_FIELDS = ("ETag", "etag", "generation", "md5Hash", "blob_id")


class MissingStorageExtra(ImportError):
    """The fsspec implementation of a URL's protocol is not installed (names the extra)."""


@dataclass(frozen=True)
class RemotePath:
    """A file or folder in object storage: its URL and the storage options (canonical JSON)
    that reach it. Its `str` is the URL alone: options may hold secrets."""

    url: str
    options_json: str = "{}"

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"RemotePath({self.url!r})"

    @property
    def options(self) -> dict[str, Any]:
        return json.loads(self.options_json)

    @property
    def protocol(self) -> str:
        return self.url.split("://", 1)[0].lower()

    @property
    def name(self) -> str:
        return posixpath.basename(self.url.rstrip("/"))

    def __truediv__(self, part: str) -> RemotePath:
        return RemotePath(f"{self.url.rstrip('/')}/{part}", self.options_json)

    def as_posix(self) -> str:
        return self.url


Location = Path | RemotePath


def is_url(text: str | os.PathLike[str]) -> bool:
    """Whether `text` is a URL (``scheme://...``) other than a local ``file://`` one."""
    if isinstance(text, RemotePath):
        return True
    if isinstance(text, os.PathLike):
        return False
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.isidentifier() and scheme.lower() not in LOCAL_PROTOCOLS


def location(
    path: str | os.PathLike[str] | RemotePath, options: Mapping[str, Any] | None = None
) -> Location:
    """`path` as a `Path` (local, or a ``file://`` URL) or a `RemotePath` carrying `options`
    (a `RemotePath` given keeps its own options unless `options` is given)."""
    if isinstance(path, RemotePath):
        return path if options is None else RemotePath(path.url, _canonical(options))
    if isinstance(path, Path):
        return path
    text = os.fspath(path)
    if is_url(text):
        return RemotePath(text, _canonical(options or {}))
    scheme, sep, rest = text.partition("://")
    if sep and scheme.lower() in LOCAL_PROTOCOLS:
        return Path(rest)
    return Path(text)


def _canonical(options: Mapping[str, Any]) -> str:
    return json.dumps(dict(options), sort_keys=True, separators=(",", ":"))


def parse_options(text: str | None) -> dict[str, Any]:
    """``--storage-options``: a JSON object, or `ValueError` saying what is wrong."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got a {type(value).__name__}")
    return value


# ---------------------------------------------------------------------- file systems
def _with_environment(protocol: str, options: dict[str, Any]) -> dict[str, Any]:
    """`options` plus the endpoint of the standard environment where the package ignores it."""
    if EXTRAS.get(protocol, ("",))[0] == "s3":
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        client_kwargs = options.get("client_kwargs") or {}
        if endpoint and "endpoint_url" not in options and "endpoint_url" not in client_kwargs:
            options = {**options, "endpoint_url": endpoint}
    return options


def filesystem(loc: RemotePath) -> tuple[Any, str]:
    """The fsspec file system of `loc` and the path in it (fsspec caches the instances)."""
    import fsspec.core

    options = _with_environment(loc.protocol, loc.options)
    try:
        return fsspec.core.url_to_fs(loc.url, **options)
    except ImportError as err:
        extra, package = EXTRAS.get(loc.protocol, (None, None))
        if extra is None:
            raise MissingStorageExtra(f"{loc.url}: no file system for this URL ({err})") from err
        raise MissingStorageExtra(
            f"{loc.url}: reading {loc.protocol}:// URLs needs the {package} package: "
            f"pip install 'metaclip-gpu[{extra}]'"
        ) from err
    except ValueError as err:  # an unknown protocol
        raise MissingStorageExtra(f"{loc.url}: {err}") from err


def arrow_filesystem(loc: RemotePath) -> tuple[Any, str]:
    """`loc`'s file system as a ``pyarrow.fs.FileSystem`` (for pyarrow's readers and writers)
    and the path in it."""
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    fs, path = filesystem(loc)
    return PyFileSystem(FSSpecHandler(fs)), path


@contextmanager
def named_errors(loc: Location) -> Iterator[None]:
    """Re-raises an `OSError` without a file name (the stores' errors) with `loc`'s URL as its
    name and an errno, so `oserrors.describe` prints one line naming it; the botocore errors
    that are no `OSError` (no credentials at all) become `PermissionError`."""
    try:
        yield
    except MissingStorageExtra:
        raise
    except OSError as err:
        if err.filename is not None and err.errno is not None:
            raise
        code = err.errno or _errno_of(err)
        reason = err.strerror or str(err) or type(err).__name__
        raise OSError(code, reason, str(loc)) from err  # a FileNotFoundError for ENOENT ...
    except Exception as err:
        if type(err).__module__.split(".")[0] not in ("botocore", "aiobotocore", "google"):
            raise
        raise PermissionError(errno.EACCES, f"{type(err).__name__}: {err}", str(loc)) from err


def _errno_of(err: OSError) -> int:
    if isinstance(err, FileNotFoundError):
        return errno.ENOENT
    if isinstance(err, PermissionError):
        return errno.EACCES
    if isinstance(err, FileExistsError):  # a conditional write refused (the run lock)
        return errno.EEXIST
    return errno.EIO


# ---------------------------------------------------------------------- reading
def input_stream(loc: Location, compression: str | None = None) -> pa.NativeFile:
    """A pyarrow stream over `loc`'s bytes, decompressed by `compression` (a pyarrow codec)."""
    if isinstance(loc, Path):
        return pa.input_stream(str(loc), compression=compression)
    fs, path = filesystem(loc)
    with named_errors(loc):
        handle = fs.open(path, "rb")
    return pa.input_stream(handle, compression=compression)


def read_bytes(loc: Location) -> bytes:
    """All of `loc`'s bytes."""
    if isinstance(loc, Path):
        return loc.read_bytes()
    fs, path = filesystem(loc)
    with named_errors(loc):
        return fs.cat_file(path)


def parquet_source(loc: Location) -> tuple[str, Any]:
    """(path, filesystem) for ``pyarrow.parquet``'s ``ParquetFile``/``read_table``: the local
    path with no file system, or the remote path with `arrow_filesystem`."""
    if isinstance(loc, Path):
        return str(loc), None
    fs, path = arrow_filesystem(loc)
    return path, fs


def parquet_file(loc: Location) -> Any:
    """``pyarrow.parquet.ParquetFile`` of `loc` (a local path opened as before)."""
    import pyarrow.parquet as pq

    loc = location(loc)
    if isinstance(loc, Path):
        return pq.ParquetFile(loc)
    path, fs = parquet_source(loc)
    with named_errors(loc):
        return pq.ParquetFile(path, filesystem=fs)


def fingerprint(loc: Location) -> dict[str, Any]:
    """What identifies the version of an input file: ``{"size", "mtime_ns"}`` of a local file
    (``os.stat``, as the manifest always had), and for a remote object its size, its
    modification time (``mtime_ns``, 0 where the store gives none) and the store's version tag
    (``version``: S3's ETag, GCS's generation, the Hub's blob id) where it has one. A changed
    file gets a new fingerprint. (The balance stage's digest reads only ``size`` and
    ``mtime_ns``; S3's modification time has whole seconds.)"""
    if isinstance(loc, Path):
        st = os.stat(loc)
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    info = stat(loc)
    found: dict[str, Any] = {"size": int(info.get("size") or 0), "mtime_ns": _mtime_ns(info)}
    version = next((info[k] for k in VERSION_FIELDS if info.get(k) not in (None, "")), None)
    if version is not None:
        found["version"] = str(version)
    return found


def stat(loc: RemotePath) -> dict[str, Any]:
    """fsspec's ``info`` of `loc` (``size``, ``type``, and the store's own fields)."""
    fs, path = filesystem(loc)
    with named_errors(loc):
        return fs.info(path)


def _mtime_ns(info: Mapping[str, Any]) -> int:
    for key in ("LastModified", "mtime", "updated", "last_modified", "created"):
        value = info.get(key)
        if isinstance(value, datetime):
            return int(value.timestamp() * 1e9)
        if isinstance(value, int | float):
            return int(value * 1e9)
        if isinstance(value, str):
            try:
                return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1e9)
            except ValueError:
                continue
    return 0


# ---------------------------------------------------------------------- listing
def is_dir(loc: Location) -> bool:
    if isinstance(loc, Path):
        return loc.is_dir()
    fs, path = filesystem(loc)
    with named_errors(loc):
        return bool(fs.isdir(path))


def is_file(loc: Location) -> bool:
    if isinstance(loc, Path):
        return loc.is_file()
    fs, path = filesystem(loc)
    with named_errors(loc):
        return bool(fs.isfile(path))


def list_files(folder: Location) -> list[Location]:
    """The files directly in `folder`, sorted (no subfolders)."""
    if isinstance(folder, Path):
        return [p for p in sorted(folder.iterdir()) if p.is_file()]
    fs, path = filesystem(folder)
    with named_errors(folder):
        entries = fs.ls(path, detail=True)
    files = sorted(e["name"] for e in entries if e.get("type") == "file")
    return [RemotePath(fs.unstrip_protocol(name), folder.options_json) for name in files]


def glob(pattern: Location) -> list[Location]:
    """The files matching `pattern` (``**`` recurses), sorted."""
    if isinstance(pattern, Path):
        matches = [Path(m) for m in sorted(globbing.glob(str(pattern), recursive=True))]
        return [m for m in matches if m.is_file()]
    fs, path = filesystem(pattern)
    with named_errors(pattern):
        found = fs.glob(path, detail=True)
    files = sorted(name for name, info in found.items() if info.get("type") == "file")
    return [RemotePath(fs.unstrip_protocol(name), pattern.options_json) for name in files]


def glob_root(pattern: Location) -> Location:
    """The fixed part of a glob: the folder its names are relative to."""
    if isinstance(pattern, Path):
        fixed = []
        for part in pattern.parts:
            if globbing.has_magic(part):
                break
            fixed.append(part)
        return Path(*fixed) if fixed else Path(".")
    scheme, _, rest = pattern.url.partition("://")
    fixed = []
    for part in rest.split("/"):
        if globbing.has_magic(part):
            break
        fixed.append(part)
    return RemotePath(f"{scheme}://{'/'.join(fixed)}", pattern.options_json)


def has_magic(loc: Location) -> bool:
    return globbing.has_magic(str(loc))


def relative_name(file: Location, root: Location) -> str:
    """`file`'s path under `root`, in POSIX form."""
    if isinstance(file, Path) and isinstance(root, Path):
        return Path(os.path.relpath(os.path.abspath(file), os.path.abspath(root))).as_posix()
    return posixpath.relpath(
        str(file).split("://", 1)[-1], str(root).rstrip("/").split("://", 1)[-1]
    )


def absolute(loc: Location) -> Location:
    """A local path made absolute; a URL as it is."""
    return Path(os.path.abspath(loc)) if isinstance(loc, Path) else loc
