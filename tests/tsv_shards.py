"""TSV shards for pipeline tests: CC3M-like ``caption<TAB>url`` files split into shards, and a
small pool of word captions with its metadata."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

WORDS = [f"w{i}" for i in range(60)] + ["dog", "red car", "beach"]
ENTRIES = [*WORDS[:40], "w1 w2", "dog"]


def split_lines(src: Path, dst: Path, n_shards: int, limit: int | None = None) -> list[bytes]:
    """Writes `src`'s lines (the first `limit`) into `n_shards` contiguous TSV shards
    ``dst/part-NNN.tsv``; returns the lines written."""
    lines = src.read_bytes().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    lines = lines[:limit] if limit is not None else lines
    dst.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, len(lines), n_shards + 1).astype(int)
    for i in range(n_shards):
        part = lines[bounds[i] : bounds[i + 1]]
        (dst / f"part-{i:03d}.tsv").write_bytes(b"".join(line + b"\n" for line in part))
    return lines


def write_word_pool(tmp_path: Path, n_shards: int, rows: int) -> tuple[Path, Path]:
    """`n_shards` TSV shards of `rows` captions of four of `WORDS` each, with hashed urls (keys
    that compress badly, so match files take room), under ``tmp_path/in``, and `ENTRIES` as
    ``tmp_path/metadata.json``; returns (shards folder, metadata file)."""
    root = tmp_path / "in"
    root.mkdir()
    for s in range(n_shards):
        lines = []
        for r in range(rows):
            digest = hashlib.sha256(f"{s}/{r}".encode()).hexdigest()
            words = [WORDS[int(digest[i : i + 2], 16) % len(WORDS)] for i in range(0, 8, 2)]
            lines.append(f"{' '.join(words)}\thttp://x/{digest}")
        (root / f"part-{s}.tsv").write_text("\n".join(lines) + "\n")
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps(ENTRIES))
    return root, metadata
