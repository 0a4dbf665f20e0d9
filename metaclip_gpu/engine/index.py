"""The compiled metadata index: an n-gram probe table plus the entry bytes for verification.

Layout (kernels/tokens.cuh): `slots` is a linear-probing table of two-word (16-byte) slots
keyed by the hash of an entry's token sequence (and of each proper prefix of it, so a probe run
stops as soon as no entry can extend it); a slot whose only entry has up to 8 bytes holds its
id and bytes itself, and for the others `blob` holds, per slot, the ids and UTF-8 bytes of the
entries that end there, against which every candidate is verified byte by byte.
After the table come the words of a small Bloom filter over the multi-token keys.
`entry_offsets`/`entry_chars` keep the entries themselves (for reports, not for the kernels).

Padding (`metaclip_gpu.engine.metadata`): "spaced" pads every entry with a space on both sides
(MetaCLIP 1); "worldwide" follows MetaCLIP 2's ``get_spaced_metadata``. Entries padded on both
sides go to the token table above; the others to `byte_slots`/`byte_blob`, a table of the same
layout keyed by the hash of each character prefix of the entry's bytes, matched on the bytes of
``spacing(text)`` (kernels/tokens.cuh). A "spaced" index has an empty byte table.

The index is built by the compiled builder in under a second for 500k entries and cached on
disk, keyed by the metadata file's SHA-256 and the padding.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from metaclip_gpu import storage
from metaclip_gpu.engine.metadata import (
    Padding,
    check_encodable,
    content_digest,
    padding_flags,
    parse_metadata,
)
from metaclip_gpu.storage import RemotePath

INDEX_FORMAT = 8  # 8: two-word slots, entries of up to 8 bytes inline (kernels/tokens.cuh)
MAX_LOAD = 0.5
_FILTER_SLOTS_PER_WORD = 32  # MC_FILTER_SLOTS_PER_WORD in kernels/tokens.cuh
_SLOT_WORDS = 2  # MC_SLOT_WORDS in kernels/tokens.cuh: uint64 words a table slot
_ARRAYS = ("slots", "blob", "byte_slots", "byte_blob", "entry_offsets", "entry_chars")


def build_signature() -> int:
    """The hash/layout signature of the installed kernels (kernels/tokens.cuh).

    Part of the cache key, so an index cached by a build that hashes differently is never read.
    """
    from metaclip_gpu.engine._native import lib

    return int(lib.mc_index_signature_host())


def default_cache_dir() -> Path:
    """``$METACLIP_GPU_CACHE``, else ``$XDG_CACHE_HOME/metaclip-gpu``, else ``~/.cache/...``."""
    if env := os.environ.get("METACLIP_GPU_CACHE"):
        return local_cache_dir(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "metaclip-gpu"


def local_cache_dir(path: str | os.PathLike[str]) -> Path:
    """`path` as the index cache: a local folder (an index is memory-mapped from it, and the
    index of a remote metadata file is cached there too); a URL is a `ValueError`."""
    if storage.is_url(path):
        raise ValueError(
            f"{path}: the index cache must be a local folder (the index is memory-mapped); "
            "the index of remote metadata is cached locally by its SHA-256, so give a local "
            "--cache-dir or $METACLIP_GPU_CACHE"
        )
    return Path(path)


@dataclass(frozen=True)
class IndexStats:
    n_entries: int
    n_keys: int  # distinct n-gram keys (entries and their proper prefixes)
    n_unmatchable: int  # entries that can never match (e.g. "St. Louis", a tab inside)
    n_merged: int  # keys sharing a slot through a 32-bit fingerprint collision
    max_tokens: int  # most tokens in one entry
    table_slots: int
    padding: Padding  # "spaced" or "worldwide" (metaclip_gpu.engine.metadata)
    n_byte_entries: int  # matchable entries with an unpadded side (the byte table)
    n_byte_keys: int  # distinct byte keys (those entries and their character prefixes)
    byte_table_slots: int
    build_seconds: float
    digest: str  # SHA-256 of the metadata source, "" when built from a list
    signature: int  # mc_index_signature() of the code that built it (kernels/tokens.cuh)


@dataclass(frozen=True, eq=False)
class MetadataIndex:
    """Metadata compiled for matching; host (NumPy) arrays, shared by both backends."""

    slots: np.ndarray  # uint64 [2 * table_slots], then the multi-token filter's words
    blob: np.ndarray  # int32 verification records (kernels/tokens.cuh)
    byte_slots: np.ndarray  # uint64 [2 * byte_table_slots]: the byte-level entries' table
    byte_blob: np.ndarray  # int32: header (longest entry, per-byte flags), then the records
    entry_offsets: np.ndarray  # int64 [n_entries + 1]
    entry_chars: np.ndarray  # uint8
    stats: IndexStats

    @property
    def mask(self) -> int:
        return self.stats.table_slots - 1

    @property
    def byte_mask(self) -> int:
        return self.stats.byte_table_slots - 1

    def __len__(self) -> int:
        return self.stats.n_entries

    @property
    def entries(self) -> pa.LargeStringArray:
        """The entry strings, zero-copy over `entry_chars`."""
        return pa.LargeStringArray.from_buffers(
            self.stats.n_entries, pa.py_buffer(self.entry_offsets), pa.py_buffer(self.entry_chars)
        )

    def entry(self, entry_id: int) -> str:
        start, stop = self.entry_offsets[entry_id], self.entry_offsets[entry_id + 1]
        return self.entry_chars[start:stop].tobytes().decode("utf-8")

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, name).nbytes for name in _ARRAYS)

    # ------------------------------------------------------------------ build
    @classmethod
    def from_entries(
        cls,
        entries: list[str],
        *,
        padding: Padding = "spaced",
        digest: str = "",
        cache: bool = False,
    ) -> MetadataIndex:
        """Builds the index for a list of entry strings (not cached unless `cache`).

        `padding`: "spaced" (every entry padded with a space on both sides, MetaCLIP 1) or
        "worldwide" (MetaCLIP 2's per-side padding, `metadata.worldwide_padding`).
        """
        check_encodable(entries, "metadata entries")
        if cache:
            digest = digest or content_digest(json.dumps(entries).encode("utf-8"))
            return cls._cached(digest, padding, lambda: entries)
        return cls._build(entries, padding, digest)

    @classmethod
    def load(
        cls,
        path: str | Path | RemotePath,
        *,
        padding: Padding = "spaced",
        cache: bool | str | Path = True,
    ) -> MetadataIndex:
        """The index of a metadata file (JSON list or one entry per line), local or remote
        (a URL or `storage.RemotePath`: read through `storage`, then cached locally like a
        local file, by its bytes).

        `padding` as in `from_entries`. `cache=True` uses `default_cache_dir()`, a path names
        another cache directory (a local one: a URL is a `ValueError`), `False` always
        rebuilds. The cache key is the file's SHA-256, the padding and the index format version.
        """
        path = storage.location(path)
        raw = storage.read_bytes(path)
        digest = content_digest(raw)
        if cache is False:
            return cls._build(parse_metadata(raw, str(path)), padding, digest)
        cache_dir = default_cache_dir() if cache is True else local_cache_dir(cache)
        return cls._cached(digest, padding, lambda: parse_metadata(raw, str(path)), cache_dir)

    @classmethod
    def _cached(
        cls,
        digest: str,
        padding: Padding,
        entries_fn: Callable[[], list[str]],
        cache_dir: Path | None = None,
    ) -> MetadataIndex:
        cache_dir = cache_dir or default_cache_dir()
        name = f"index-v{INDEX_FORMAT}-{build_signature():016x}-{padding}-{digest[:40]}"
        where = cache_dir / name
        if (where / "stats.json").exists():
            try:
                return cls._read(where)
            except (OSError, ValueError, KeyError):
                pass  # unreadable cache entry: rebuild it below
        index = cls._build(entries_fn(), padding, digest)
        index._write(where)
        return index

    @classmethod
    def _build(cls, entries: list[str], padding: Padding, digest: str) -> MetadataIndex:
        from metaclip_gpu.engine._native import ffi, lib

        started = time.perf_counter()
        pad = padding_flags(entries, padding)  # raises on an unknown padding
        array = pa.array(entries, type=pa.large_string())
        offsets = np.frombuffer(array.buffers()[1], dtype=np.int64, count=len(array) + 1)
        data = array.buffers()[2]
        chars = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
        chars = chars[: offsets[-1]].copy() if len(chars) else np.zeros(1, np.uint8)
        offsets = offsets.copy()
        built = lib.mc_index_build(
            ffi.from_buffer("uint8_t[]", chars),
            ffi.from_buffer("int64_t[]", offsets),
            ffi.from_buffer("uint8_t[]", pad if len(pad) else np.zeros(1, np.uint8)),
            len(entries),
            MAX_LOAD,
        )
        if built == ffi.NULL:
            raise MemoryError(
                f"cannot build an index for {len(entries):,} entries: out of memory, or the "
                "verification records exceed 2**29 words (about 2 GiB of entry text)"
            )
        try:
            info = ffi.new("int64_t[10]")
            lib.mc_index_info(built, info)
            slots = np.empty(info[0], dtype=np.uint64)
            blob = np.empty(info[1], dtype=np.int32)
            byte_slots = np.empty(info[6], dtype=np.uint64)
            byte_blob = np.empty(info[7], dtype=np.int32)
            lib.mc_index_export(
                built,
                ffi.from_buffer("uint64_t[]", slots),
                ffi.from_buffer("int32_t[]", blob),
                ffi.from_buffer("uint64_t[]", byte_slots),
                ffi.from_buffer("int32_t[]", byte_blob),
            )
        finally:
            lib.mc_index_free(built)
        stats = IndexStats(
            n_entries=len(entries),
            n_keys=int(info[2]),
            n_unmatchable=int(info[3]),
            n_merged=int(info[4]),
            max_tokens=int(info[5]),
            # words: _SLOT_WORDS a slot, then one filter word per _FILTER_SLOTS_PER_WORD slots
            table_slots=int(info[0])
            * _FILTER_SLOTS_PER_WORD
            // (_SLOT_WORDS * _FILTER_SLOTS_PER_WORD + 1),
            padding=padding,
            n_byte_entries=int(info[9]),
            n_byte_keys=int(info[8]),
            byte_table_slots=int(info[6]) // _SLOT_WORDS,
            build_seconds=time.perf_counter() - started,
            digest=digest,
            signature=build_signature(),
        )
        return cls(slots, blob, byte_slots, byte_blob, offsets, chars, stats)

    # ------------------------------------------------------------------ cache
    def _write(self, where: Path) -> None:
        """Writes into a temporary sibling directory, then renames it into place."""
        where.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=where.name + ".", dir=where.parent))
        try:
            for name in _ARRAYS:
                np.save(tmp / f"{name}.npy", getattr(self, name))
            (tmp / "stats.json").write_text(json.dumps(asdict(self.stats)))
            os.replace(tmp, where)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # another process won the race, or no space

    @classmethod
    def _read(cls, where: Path) -> MetadataIndex:
        stats = IndexStats(**json.loads((where / "stats.json").read_text()))
        if stats.signature != build_signature():
            raise ValueError(f"{where} was built by code that hashes differently")
        arrays = {name: np.load(where / f"{name}.npy") for name in _ARRAYS}
        return cls(**arrays, stats=stats)
