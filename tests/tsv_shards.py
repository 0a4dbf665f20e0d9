"""Splitting a headerless ``caption<TAB>url`` TSV (like CC3M) into shards, for pipeline tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


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
