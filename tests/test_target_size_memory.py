"""``--target-size`` at any scale: the balance stage's memory does not grow with the pool
(the t is solved from per-file figures, `pipeline.target_size`, not from every match list
in memory)."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metaclip_gpu.pipeline.balance import run_balance
from metaclip_gpu.pipeline.count import run_count
from metaclip_gpu.pipeline.match import run_match


def write_text_shards(root: Path, n_shards: int, rows: int) -> None:
    words = ["dog", "cat", "red car", "the sun", "a beach", "blue", "man", "city"]
    rng = np.random.default_rng(3)
    root.mkdir(parents=True, exist_ok=True)
    for s in range(n_shards):
        picks = rng.integers(0, len(words), size=(rows, 3))
        texts = [" ".join(words[j] for j in row) + f" {s}-{i}" for i, row in enumerate(picks)]
        urls = [f"u{s}-{i}" for i in range(rows)]
        pq.write_table(pa.table({"caption": texts, "url": urls}), root / f"part-{s}.parquet")


def balance_peak_bytes(root: Path, n_shards: int) -> int:
    """Peak traced (NumPy and Python) bytes of `run_balance` with a target size."""
    write_text_shards(root / "in", n_shards, 40_000)
    (root / "meta.json").write_text(json.dumps(["dog", "cat", "red car", "the sun", "blue"]))
    out = root / "out"
    run_match(root / "in", root / "meta.json", out, progress=False)
    run_count(out, root / "meta.json")
    tracemalloc.start()
    try:
        run_balance(out, root / "in", target_size=1000 * n_shards, progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


@pytest.mark.slow
def test_memory_of_a_target_size_does_not_grow_with_the_pool(tmp_path) -> None:
    """Two shards, then eight of the same size: the balance stage's peak stays about the
    same (the whole pool's match lists in memory would make it about 4x)."""
    small = balance_peak_bytes(tmp_path / "two", 2)
    large = balance_peak_bytes(tmp_path / "eight", 8)
    assert large < 1.5 * small, (small, large)
