"""GPU backend == CPU backend, on every input path the GPU backend has (needs a GPU).

Every test is marked ``gpu``: conftest.py skips them where CuPy sees no CUDA device. CuPy and
cuDF are imported inside the tests, so collecting this file needs neither.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from metaclip_gpu import MetadataIndex, match
from metaclip_gpu.engine.backends import get_backend

pytestmark = pytest.mark.gpu

WORDS = [f"w{i}" for i in range(80)] + ["a", "the", "dog", "new", "york", "é", "中文"]
FILLER = ["x", "y", ".", ",", ";", "?", "  ", "\t", "\n", "St.", "e.g."]


def _entries() -> list[str]:
    pairs = [f"{a} {b}" for a, b in itertools.pairwise(WORDS[:41])]
    odd = ["new york", "new york city", ",", "", "St. Louis", "a  b", " w3", "w4 ", "w5"]
    return WORDS + pairs + odd + ["w7", "w7"]  # duplicates keep their own ids


def _texts(n: int = 600, seed: int = 11) -> list[str | None]:
    rng = random.Random(seed)
    texts: list[str | None] = []
    for _ in range(n):
        parts = [rng.choice(WORDS + FILLER) for _ in range(rng.randrange(0, 14))]
        texts.append(rng.choice([" ", "", ", ", " . "]).join(parts))
    texts[3] = None
    texts[100] = None
    texts[101] = ""
    texts[7] = " ".join(WORDS)  # more distinct ids than local_cap (64): the spill path
    texts[8] = " ".join(WORDS[::-1]) + ", new york city w7"
    return texts


@pytest.fixture(scope="module")
def index() -> MetadataIndex:
    return MetadataIndex.from_entries(_entries(), cache=False)


@pytest.fixture(scope="module")
def texts() -> list[str | None]:
    return _texts()


@pytest.fixture(scope="module")
def cpu_result(texts: list[str | None], index: MetadataIndex):
    return match(texts, index, backend="cpu")


@pytest.fixture(scope="module")
def gpu():
    backend = get_backend("gpu")
    assert backend.name == "gpu"
    return backend


def _host(array: Any) -> np.ndarray:
    return array.get() if hasattr(array, "get") else np.asarray(array)


def assert_same(gpu_result: Any, cpu_result: Any) -> None:
    import cupy

    assert gpu_result.backend == "gpu"
    assert isinstance(gpu_result.offsets, cupy.ndarray)
    assert isinstance(gpu_result.entry_ids, cupy.ndarray)
    assert gpu_result.offsets.dtype == np.int64 and gpu_result.entry_ids.dtype == np.int32
    np.testing.assert_array_equal(_host(gpu_result.offsets), _host(cpu_result.offsets))
    np.testing.assert_array_equal(_host(gpu_result.entry_ids), _host(cpu_result.entry_ids))


def _cpu(texts: Any, index: MetadataIndex):
    return match(texts, index, backend="cpu")


# ------------------------------------------------------------------ the seam ---
def test_auto_picks_gpu(index: MetadataIndex) -> None:
    assert get_backend("auto").name == "gpu"
    assert match(["a dog"], index).backend == "gpu"


def test_local_cap_matches_cpu_build(gpu) -> None:
    from metaclip_gpu.engine._native import lib

    assert gpu.local_cap == int(lib.mc_local_cap())


# ------------------------------------------------------------- host inputs ---
@pytest.mark.parametrize("batch_rows", [1 << 16, 37])
def test_python_list(gpu, index, texts, cpu_result, batch_rows: int) -> None:
    assert_same(match(texts, index, backend=gpu, batch_rows=batch_rows), cpu_result)


@pytest.mark.parametrize("arrow_type", [pa.string(), pa.large_string(), pa.large_binary()])
def test_arrow_input(gpu, index, texts, cpu_result, arrow_type: pa.DataType) -> None:
    values: list[Any] = texts
    if pa.types.is_large_binary(arrow_type):
        values = [t.encode() if t is not None else None for t in texts]
    array = pa.array(values, type=arrow_type)
    assert_same(match(array, index, backend=gpu, batch_rows=64), cpu_result)


def test_arrow_slices_and_chunks(gpu, index, texts) -> None:
    array = pa.array(texts, type=pa.large_string())
    sliced = array.slice(5, 301)  # offset not a multiple of 8: validity bit offset 5
    assert_same(match(sliced, index, backend=gpu, batch_rows=50), _cpu(sliced, index))
    chunked = pa.chunked_array([texts[:123], texts[123:]], type=pa.string())
    assert_same(match(chunked, index, backend=gpu, batch_rows=50), _cpu(chunked, index))


def test_overflow_text(gpu, index) -> None:
    texts = [" ".join(WORDS), "w1", " ".join(WORDS[::-1]) + " w7 new york city", None, ""]
    cpu = _cpu(texts, index)
    assert len(cpu.ids_of(0)) > gpu.local_cap  # the case this test is about
    assert_same(match(texts, index, backend=gpu), cpu)
    assert_same(match(texts, index, backend=gpu, batch_rows=2), cpu)


def test_empty_and_all_null(gpu, index) -> None:
    assert len(match([], index, backend=gpu)) == 0
    assert_same(match([None, None, None], index, backend=gpu), _cpu([None, None, None], index))
    assert_same(match(["", ""], index, backend=gpu), _cpu(["", ""], index))


# -------------------------------------------------------------- cuDF inputs ---
def test_cudf_series(gpu, index, texts, cpu_result) -> None:
    cudf = pytest.importorskip("cudf")
    series = cudf.Series(texts, dtype="str")
    assert_same(match(series, index, backend=gpu), cpu_result)
    assert_same(match(series, index, backend=gpu, batch_rows=41), cpu_result)


def test_cudf_sliced_series_with_nulls(gpu, index, texts) -> None:
    cudf = pytest.importorskip("cudf")
    series = cudf.Series(texts, dtype="str")
    sliced = series.iloc[5:450]
    assert int(sliced.isna().sum()) >= 1  # row 100 is null
    expected = _cpu(texts[5:450], index)
    assert_same(match(sliced, index, backend=gpu), expected)
    assert_same(match(sliced, index, backend=gpu, batch_rows=29), expected)
    from metaclip_gpu.engine.backends.gpu import cudf_text_column

    whole = cudf_text_column(sliced)
    assert whole is not None and whole.n_rows == 445


def test_pylibcudf_slice_nonzero_offset(gpu, index, texts) -> None:
    """A pylibcudf slice view: offset 5 into an unsliced offsets child, nulls inside."""
    cudf = pytest.importorskip("cudf")
    plc = pytest.importorskip("pylibcudf")
    column, _metadata = cudf.Series(texts, dtype="str").to_pylibcudf()
    (view,) = plc.copying.slice(column, [5, 450])
    assert view.offset() == 5 and view.size() == 445 and view.null_count() >= 1
    expected = _cpu(texts[5:450], index)
    assert_same(match(view, index, backend=gpu), expected)
    assert_same(match(view, index, backend=gpu, batch_rows=29), expected)


def test_cudf_overflow_and_empty(gpu, index) -> None:
    cudf = pytest.importorskip("cudf")
    texts = [" ".join(WORDS), None, "", "w3 w4"]
    series = cudf.Series(texts, dtype="str")
    assert_same(match(series, index, backend=gpu), _cpu(texts, index))
    empty = cudf.Series([], dtype="str")
    assert len(match(empty, index, backend=gpu)) == 0
    nulls = cudf.Series([None, None], dtype="str")
    assert_same(match(nulls, index, backend=gpu), _cpu([None, None], index))


def test_to_cudf_list_round_trip(gpu, index, texts, cpu_result) -> None:
    pytest.importorskip("cudf")
    from metaclip_gpu.engine.backends.gpu import to_cudf_list

    result = match(texts, index, backend=gpu)
    lists = to_cudf_list(result)
    assert len(lists) == len(texts)
    assert lists.to_arrow().to_pylist() == cpu_result.to_lists()
    assert to_cudf_list(match([], index, backend=gpu)).to_arrow().to_pylist() == []


# ------------------------------------------------------- worldwide padding ---
WORLDWIDE_ENTRIES = ["中国", "中", "东京", "\uff0c", ",", "Hello世界", "ไทย", "dr.", "dog", ""]
WORLDWIDE_ENTRIES += ["中国", *(chr(0x4E00 + 3 * k) for k in range(80))]  # > local_cap (64) ids


def _worldwide_texts() -> list[str | None]:
    rng = random.Random(5)
    pieces = [*WORLDWIDE_ENTRIES[:9], "x", " ", "  ", ".", "\u3002", "ภาษา", "dr", "\t"]
    texts: list[str | None] = [
        "".join(rng.choice(pieces) for _ in range(rng.randrange(0, 16))) for _ in range(400)
    ]
    texts[3] = None
    texts[4] = "".join(WORLDWIDE_ENTRIES[11:])  # more ids than local_cap: the spill path
    return texts


@pytest.mark.parametrize("batch_rows", [1 << 16, 29])
def test_worldwide_index(gpu, batch_rows: int) -> None:
    index = MetadataIndex.from_entries(WORLDWIDE_ENTRIES, padding="worldwide")
    assert index.stats.n_byte_entries > 0
    texts = _worldwide_texts()
    cpu = _cpu(texts, index)
    assert len(cpu.ids_of(4)) > gpu.local_cap
    assert_same(match(texts, index, backend=gpu, batch_rows=batch_rows), cpu)
    raw = pa.array([t.encode()[:-1] if t else t for t in texts], type=pa.large_binary())
    assert_same(match(raw, index, backend=gpu, batch_rows=batch_rows), _cpu(raw, index))


# ------------------------------------------------------------------ real data ---
@pytest.mark.slow
def test_cc3m_gpu_equals_cpu(gpu, cc3m_texts: list[str], metadata_500k: list[str]) -> None:
    index = MetadataIndex.from_entries(metadata_500k, cache=False)
    cpu = match(cc3m_texts, index, backend="cpu")
    assert_same(match(cc3m_texts, index, backend=gpu), cpu)
    assert_same(match(pa.array(cc3m_texts, pa.large_string()), index, backend=gpu), cpu)
    try:
        import cudf
    except ImportError:
        return
    series = cudf.Series(cc3m_texts, dtype="str")
    assert_same(match(series, index, backend=gpu, batch_rows=4096), cpu)
    part = series.iloc[1000:9000]
    assert_same(match(part, index, backend=gpu), _cpu(cc3m_texts[1000:9000], index))


def test_index_signature_agrees_and_a_foreign_index_is_refused(gpu, index) -> None:
    """The device computes the same hash/layout signature as the host build of the index."""
    import dataclasses

    from metaclip_gpu.engine.backends.gpu import GPUBackend

    texts = ["w1 w2", "new york"]
    assert (
        match(texts, index, backend=gpu).to_lists() == match(texts, index, backend="cpu").to_lists()
    )
    foreign = dataclasses.replace(
        index, stats=dataclasses.replace(index.stats, signature=index.stats.signature ^ 1)
    )
    with pytest.raises(RuntimeError, match="signature"):
        match(["w1"], foreign, backend=GPUBackend())
