"""Stage `count` (SPEC section 3): per-entry text counts, exact uint64, sharding-independent."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metaclip_gpu.engine.arrays import array_module
from metaclip_gpu.pipeline.count import (
    add_counts,
    counts_table,
    entry_counts,
    load_entry_counts,
    reduce_counts,
    save_entry_counts,
)


def csr_from_lists(lists: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(int64 offsets, int32 entry ids) of per-text id lists, as `MatchResult` stores them."""
    offsets = np.zeros(len(lists) + 1, dtype=np.int64)
    np.cumsum([len(ids) for ids in lists], out=offsets[1:])
    flat = [i for ids in lists for i in ids]
    return offsets, np.asarray(flat, dtype=np.int32)


def random_lists(rng: np.random.Generator, n_texts: int, n_entries: int) -> list[list[int]]:
    """Per-text sorted distinct ids: 0 to 6 per text, skewed towards low ids."""
    weights = 1.0 / np.arange(1, n_entries + 1)
    weights /= weights.sum()
    lists = []
    for _ in range(n_texts):
        k = int(rng.integers(0, min(7, n_entries + 1)))
        lists.append(sorted(rng.choice(n_entries, size=k, replace=False, p=weights).tolist()))
    return lists


def counter_oracle(lists: list[list[int]], n_entries: int) -> list[int]:
    counter = Counter(i for ids in lists for i in set(ids))
    return [counter[e] for e in range(n_entries)]


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 40).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.lists(st.sets(st.integers(0, n - 1), max_size=8).map(sorted), max_size=50),
        )
    )
)
def test_counts_equal_counter_oracle(case: tuple[int, list[list[int]]]) -> None:
    n_entries, lists = case
    _, ids = csr_from_lists(lists)
    counts = entry_counts(ids, n_entries)
    assert counts.dtype == np.uint64
    assert counts.shape == (n_entries,)
    assert counts.tolist() == counter_oracle(lists, n_entries)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_counts_random_csr_and_partitions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_entries = 300
    lists = random_lists(rng, 3000, n_entries)
    offsets, ids = csr_from_lists(lists)
    whole = entry_counts(ids, n_entries)
    assert whole.dtype == np.uint64
    assert whole.tolist() == counter_oracle(lists, n_entries)
    assert int(whole.sum()) == len(ids)

    # Partitions of the texts (random cut points), counted separately, then reduced.
    cuts = np.sort(rng.choice(np.arange(1, len(lists)), size=7, replace=False))
    bounds = [0, *cuts.tolist(), len(lists)]
    parts = [
        entry_counts(ids[offsets[a] : offsets[b]], n_entries) for a, b in itertools.pairwise(bounds)
    ]
    assert all(p.dtype == np.uint64 for p in parts)
    total = reduce_counts(parts, n_entries)
    assert total.dtype == np.uint64
    np.testing.assert_array_equal(total, whole)
    np.testing.assert_array_equal(reduce_counts(reversed(parts)), whole)
    pairwise = add_counts(add_counts(parts[0], parts[1]), reduce_counts(parts[2:]))
    np.testing.assert_array_equal(pairwise, whole)


def test_counts_accept_any_integer_ids_and_empty() -> None:
    assert entry_counts(np.array([], dtype=np.int32), 4).tolist() == [0, 0, 0, 0]
    assert entry_counts(np.array([], dtype=np.int32), 4).dtype == np.uint64
    for dtype in (np.int32, np.int64, np.uint32, np.uint16):
        assert entry_counts(np.array([3, 0, 3], dtype=dtype), 5).tolist() == [1, 0, 0, 2, 0]


def test_counts_reject_bad_ids() -> None:
    with pytest.raises(ValueError, match="entry ids"):
        entry_counts(np.array([0, 5], dtype=np.int32), 5)
    with pytest.raises(ValueError, match="entry ids"):
        entry_counts(np.array([-1], dtype=np.int32), 5)
    with pytest.raises(TypeError):
        entry_counts(np.array([0.0]), 5)


def test_add_and_reduce_counts_checks() -> None:
    a = np.array([1, 2], dtype=np.uint64)
    with pytest.raises(ValueError, match="lengths"):
        add_counts(a, np.array([1, 2, 3], dtype=np.uint64))
    with pytest.raises(ValueError, match="n_entries"):
        reduce_counts([])
    empty = reduce_counts([], 3)
    assert empty.dtype == np.uint64
    assert empty.tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="negative"):
        add_counts(a, np.array([1, -1]))
    # Beyond int64: exact uint64 arithmetic.
    big = np.array([2**63 + 5, 0], dtype=np.uint64)
    assert add_counts(big, a).tolist() == [2**63 + 6, 2]
    # reduce_counts does not alias its single input.
    only = reduce_counts([a])
    only[0] = 99
    assert a[0] == 1


def test_save_entry_counts_is_metaclip_format(tmp_path: Path) -> None:
    counts = entry_counts(np.array([0, 2, 2, 2], dtype=np.int32), 4)
    path = save_entry_counts(counts, tmp_path / "sub" / "entry_counts.npy")
    assert path == tmp_path / "sub" / "entry_counts.npy"
    assert sorted(p.name for p in path.parent.iterdir()) == ["entry_counts.npy"]
    loaded = np.load(path)  # what MetaCLIP's balancing code does
    assert loaded.dtype == np.uint64
    assert loaded.shape == (4,)
    assert loaded.tolist() == [1, 0, 3, 0]
    np.testing.assert_array_equal(load_entry_counts(path), loaded)
    # Int64 counts are stored as uint64 too; the name is used as given.
    other = save_entry_counts(np.array([4, 5]), tmp_path / "counts.bin")
    assert other.name == "counts.bin"
    assert np.load(other).dtype == np.uint64


def test_counts_table(tmp_path: Path) -> None:
    entries = ["dog", "new york", "é中文", ""]
    counts = np.array([3, 0, 2**40, 1], dtype=np.uint64)
    table = counts_table(counts, entries)
    assert table.schema == pa.schema(
        [("entry_id", pa.int32()), ("entry", pa.string()), ("count", pa.uint64())]
    )
    assert table.column("entry_id").to_pylist() == [0, 1, 2, 3]
    assert table.column("entry").to_pylist() == entries
    assert table.column("count").to_pylist() == [3, 0, 2**40, 1]
    pq.write_table(table, tmp_path / "entry_counts.parquet")
    assert pq.read_table(tmp_path / "entry_counts.parquet").equals(table)
    assert counts_table(counts, pa.chunked_array([entries[:2], entries[2:]])).equals(table)
    with pytest.raises(ValueError, match="entries"):
        counts_table(counts, entries[:3])


def test_array_module_is_numpy_for_host_arrays() -> None:
    assert array_module(np.zeros(2)) is np
    assert array_module([1, 2], np.zeros(1)) is np
