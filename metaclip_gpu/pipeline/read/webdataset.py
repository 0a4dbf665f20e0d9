"""The reader of WebDataset tars: one row per sample, its caption from JSON or .txt."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from typing import Any

from metaclip_gpu.pipeline.read.columns import Chunker
from metaclip_gpu.pipeline.read.shards import (
    TEXT_CANDIDATES,
    ReadOptions,
    Shard,
    ShardChunk,
    ShardError,
    input_stream,
)
from metaclip_gpu.pipeline.read.text_formats import rows_to_table, utf8_encodable


def _split_wds_name(name: str) -> tuple[str, str] | None:
    """WebDataset's sample key and extension: the key is the path up to the first dot of the
    file name ("a/000123.jpg" -> ("a/000123", "jpg")); names without a dot belong to no sample."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not dot or not stem:
        return None
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def read_wds(shard: Shard, options: ReadOptions, chunker: Chunker) -> Iterator[ShardChunk]:
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
            if isinstance(loaded, dict) and not utf8_encodable(loaded):
                chunker.skip("lone_surrogate")
                return None
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
        if options.text_only:
            return {"text": text}
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
            table = rows_to_table(rows, "text")
            rows.clear()
            yield from chunker.push(table)

    with input_stream(shard) as stream:
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
