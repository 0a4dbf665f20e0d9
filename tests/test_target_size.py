"""``--target-size`` from per-file figures (pipeline.target_size): equal to `solve_t` of the
whole pool (its memory: test_target_size_memory.py)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_balance import zipf_pool
from tsv_shards import split_lines

from metaclip_gpu.engine.index import MetadataIndex
from metaclip_gpu.pipeline.aligned import csr_of
from metaclip_gpu.pipeline.count import entry_counts, run_count
from metaclip_gpu.pipeline.draws import expected_kept, solve_t
from metaclip_gpu.pipeline.manifest import Manifest
from metaclip_gpu.pipeline.match import run_match
from metaclip_gpu.pipeline.target_size import solve_target


def write_match_files(root: Path, offsets: np.ndarray, ids: np.ndarray, n_files: int) -> list[Path]:
    """The CSR as `n_files` match files (an ``entry_ids`` column), split at uneven places."""
    root.mkdir(parents=True, exist_ok=True)
    lists = [ids[offsets[i] : offsets[i + 1]].tolist() for i in range(len(offsets) - 1)]
    bounds = np.unique(
        np.r_[0, np.sort(np.random.default_rng(5).integers(0, len(lists), n_files - 1)), len(lists)]
    )
    paths = []
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        path = root / f"m{i}.parquet"
        table = pa.table({"entry_ids": pa.array(lists[a:b], pa.list_(pa.int32()))})
        pq.write_table(table, path, row_group_size=997)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Path]]:
    offsets, ids = zipf_pool(9, 40_000, 50, max_per_text=3)
    files = write_match_files(tmp_path_factory.mktemp("pool"), offsets, ids, 7)
    return offsets, ids, entry_counts(ids, 50), files


def test_equals_solve_t_over_the_concatenated_pool(pool) -> None:
    offsets, ids, counts, files = pool
    for t in (0.25, 3.0, 1234.5, float(counts.max()) * 0.9):
        target = expected_kept(offsets, ids, counts, t)
        solved = solve_target(files, counts, target)
        assert solved == pytest.approx(solve_t(offsets, ids, counts, target), rel=1e-8)
        assert solved == pytest.approx(t, rel=1e-6)


def test_edges_are_those_of_solve_t(pool) -> None:
    offsets, ids, counts, files = pool
    n_matched = int((np.diff(offsets) > 0).sum())
    assert solve_target(files, counts, n_matched) == float(counts.max())
    assert solve_target(files, counts, 10 * n_matched) == float(counts.max())
    for bad in (0, -5):
        with pytest.raises(ValueError, match="target_size"):
            solve_target(files, counts, bad)
    zeroed = counts.copy()
    zeroed[0] = 0
    owner = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    always = len(np.unique(owner[ids == 0]))
    with pytest.raises(ValueError, match="count 0"):
        solve_target(files, zeroed, always // 2)
    assert solve_target(files, zeroed, always + 50) == pytest.approx(
        solve_t(offsets, ids, zeroed, always + 50), rel=1e-8
    )


def test_cc3m_target_equals_solve_t(cc3m_path, metadata_500k_path, tmp_path) -> None:
    split_lines(cc3m_path, tmp_path / "shards", 4)
    out = tmp_path / "out"
    index = MetadataIndex.load(metadata_500k_path)
    run_match(tmp_path / "shards", index, out, progress=False)
    counts = run_count(out, index)
    files = [out / r.output for r in Manifest.load(out).records.values() if r.output]
    lists = pa.chunked_array(
        [c for f in files for c in pq.read_table(f, columns=["entry_ids"]).column(0).chunks]
    )
    offsets, ids = csr_of(lists)
    for target in (500, 6000, 12000):
        solved = solve_target(files, counts, target)
        assert solved == pytest.approx(solve_t(offsets, ids, counts, target), rel=1e-8)
        assert abs(expected_kept(offsets, ids, counts, solved) - target) < 1e-3


def test_csr_of_slices_chunks_and_nulls() -> None:
    """`csr_of` of a sliced list array (offsets into a shared values buffer), of a chunked one
    and of one with nulls (empty texts) gives each row's ids."""
    lists = pa.array([[1, 2], [], [3], None, [4, 5, 6], []], pa.list_(pa.int32()))
    for column in (
        lists.slice(0, 3),
        lists.slice(2),
        lists.slice(4, 2),
        lists.slice(6),
        lists.filter(pa.array([True, True, True, False, True, True])),
        lists,
        pa.chunked_array([lists.slice(0, 2), lists.slice(2)]),
    ):
        offsets, ids = csr_of(column)
        assert offsets.dtype == np.int64 and ids.dtype == np.int32 and offsets[0] == 0
        want = [row or [] for row in column.to_pylist()]
        assert [ids[a:b].tolist() for a, b in itertools.pairwise(offsets)] == want
