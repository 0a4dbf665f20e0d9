"""match() accepts the column types users have and returns the same CSR whatever the layout."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from metaclip_gpu import MetadataIndex, match
from metaclip_gpu.engine.reference import FastOracle

ENTRIES = ["a", "dog", "hot dog", "big hot dog", ",", "", "中文", "the end"]
TEXTS = [
    "a dog",
    None,
    "a big hot dog, at the end",
    "",
    "no match here",
    "中文 text",
    "hot  dog",
    "the end.",
] * 5


@pytest.fixture(scope="module")
def index() -> MetadataIndex:
    return MetadataIndex.from_entries(ENTRIES)


@pytest.fixture(scope="module")
def expected() -> list[list[int]]:
    return FastOracle(ENTRIES).match_many(TEXTS)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda t: t, id="list"),
        pytest.param(lambda t: tuple(t), id="tuple"),
        pytest.param(lambda t: np.array(t, dtype=object), id="numpy-object"),
        pytest.param(lambda t: pa.array(t, pa.string()), id="string"),
        pytest.param(lambda t: pa.array(t, pa.large_string()), id="large_string"),
        pytest.param(lambda t: pa.array(t, pa.string_view()), id="string_view"),
        pytest.param(
            lambda t: pa.chunked_array([t[:7], t[7:19], [], t[19:]], pa.string()), id="chunked"
        ),
        pytest.param(
            lambda t: pa.array([None, "x", *t, "y"], pa.string()).slice(2, len(t)), id="sliced"
        ),
        pytest.param(lambda t: pa.array([None, *t], pa.large_string()).slice(1), id="sliced-large"),
        pytest.param(lambda t: [None if s is None else s.encode() for s in t], id="bytes-list"),
    ],
)
def test_input_types_agree_with_oracle(make, index, expected) -> None:
    result = match(make(TEXTS), index, backend="cpu")
    assert result.to_lists() == expected
    assert result.offsets.dtype == np.int64 and result.entry_ids.dtype == np.int32


@pytest.mark.parametrize("batch_rows", [1, 3, 7, 1 << 16])
@pytest.mark.parametrize("threads", [1, 2])
def test_batching_and_threads_do_not_change_results(index, expected, batch_rows, threads) -> None:
    result = match(TEXTS, index, backend="cpu", threads=threads, batch_rows=batch_rows)
    assert result.to_lists() == expected


def test_overflowing_texts_between_short_ones_keep_their_place() -> None:
    """Texts past the kernel's per-thread buffer are re-run and put back in order."""
    entries = [f"w{i}" for i in range(100)]
    long_text = " ".join(reversed(entries)) + " w5 w5"
    texts = ["w1", long_text, "w2 w3", long_text[:40], long_text, "none"]
    index = MetadataIndex.from_entries(entries)
    result = match(texts, index, backend="cpu", batch_rows=4)
    assert result.to_lists() == FastOracle(entries).match_many(texts)
    assert len(result.ids_of(1)) == 100


def test_empty_input(index) -> None:
    result = match([], index, backend="cpu")
    assert len(result) == 0
    assert result.offsets.tolist() == [0]
    assert result.to_arrow().to_pylist() == []


def test_to_arrow_and_ids_of(index, expected) -> None:
    result = match(TEXTS, index, backend="cpu")
    assert result.to_arrow().to_pylist() == expected
    assert result.ids_of(2).tolist() == expected[2]
    assert result.matched_texts() == sum(1 for ids in expected if ids)


def test_non_text_column_is_rejected(index) -> None:
    with pytest.raises(TypeError, match="string or binary"):
        match(pa.array([1, 2, 3]), index, backend="cpu")


def test_unknown_backend_is_rejected(index) -> None:
    with pytest.raises(ValueError, match="unknown backend"):
        match(TEXTS, index, backend="tpu")


def test_gpu_backend_without_a_gpu_says_so(index) -> None:
    from metaclip_gpu.engine.backends import gpu_available

    if gpu_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="needs CuPy and an NVIDIA GPU"):
        match(TEXTS, index, backend="gpu")
    assert match(TEXTS, index, backend="auto").backend == "cpu"
