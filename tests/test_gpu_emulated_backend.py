"""The GPU backend on the emulated device (tests/gpu_emulation) equals the CPU backend.

Every kernel launch of engine/backends/gpu.py runs here without a GPU: the host build of
kernels/match.cu over the launch's whole grid, each launch's arguments checked against the
kernel's parameters. cuDF / pylibcudf inputs need a real device and are left to the ``gpu``
tests (tests/test_gpu_backend.py). Fixtures that touch CuPy are function-scoped: the emulated
module is installed per test.
"""

from __future__ import annotations

from typing import Any

import gpu_emulation
import numpy as np
import pyarrow as pa
import pytest
from test_gpu_backend import (
    WORDS,
    WORLDWIDE_ENTRIES,
    _entries,
    _texts,
    _worldwide_texts,
    assert_same,
)

from metaclip_gpu import MetadataIndex, match
from metaclip_gpu.engine.backends.gpu_build import LOCAL_CAP, MATCH_KERNEL_NAMES

pytestmark = pytest.mark.emulated_gpu

DENSE_IDS = 12_000  # distinct ids of the dense text: past the fixed buffer and any spill room


@pytest.fixture(scope="module")
def index() -> MetadataIndex:
    return MetadataIndex.from_entries(_entries(), cache=False)


@pytest.fixture(scope="module")
def texts() -> list[str | None]:
    return _texts(300)


def _cpu(texts: Any, index: MetadataIndex):
    return match(texts, index, backend="cpu")


def _launched() -> set[str]:
    return {name for name, _grid, _block in gpu_emulation.launch_log}


def test_auto_resolves_to_the_emulated_gpu(index) -> None:
    from metaclip_gpu.engine.backends import get_backend, gpu_available

    assert gpu_available()
    assert get_backend("auto").name == "gpu"
    assert match(["a dog"], index).backend == "gpu"


@pytest.mark.parametrize("batch_rows", [1 << 16, 37])
def test_python_list_int32_offsets(index, texts, batch_rows: int) -> None:
    assert_same(match(texts, index, backend="gpu", batch_rows=batch_rows), _cpu(texts, index))
    assert {"mc_match_fixed_i32", "mc_gather_fixed_rows"} <= _launched()


@pytest.mark.parametrize("arrow_type", [pa.large_string(), pa.large_binary()])
def test_int64_offsets(index, texts, arrow_type: pa.DataType) -> None:
    values: list[Any] = texts
    if pa.types.is_large_binary(arrow_type):
        values = [t.encode() if t is not None else None for t in texts]
    array = pa.array(values, type=arrow_type)
    assert_same(match(array, index, backend="gpu", batch_rows=64), _cpu(texts, index))
    assert "mc_match_fixed_i64" in _launched()


@pytest.mark.parametrize("arrow_type", [pa.string(), pa.large_string()])
def test_sliced_columns_with_nulls(index, texts, arrow_type: pa.DataType) -> None:
    """A slice at offset 5 (validity bit offset 5, offsets not starting at 0), nulls inside."""
    array = pa.array(texts, type=arrow_type)
    sliced = array.slice(5, 250)
    assert sliced.offset == 5 and sliced.null_count >= 1
    expected = _cpu(sliced, index)
    assert_same(match(sliced, index, backend="gpu"), expected)
    assert_same(match(sliced, index, backend="gpu", batch_rows=29), expected)
    chunked = pa.chunked_array([texts[:123], texts[123:]], type=arrow_type)
    assert_same(match(chunked, index, backend="gpu", batch_rows=50), _cpu(chunked, index))


def test_more_than_local_cap_ids_in_a_text(index) -> None:
    texts = [" ".join(WORDS), "w1", " ".join(WORDS[::-1]) + " w7 new york city", None, ""]
    cpu = _cpu(texts, index)
    assert len(cpu.ids_of(0)) > LOCAL_CAP  # the case this test is about
    assert_same(match(texts, index, backend="gpu"), cpu)
    assert_same(match(texts, index, backend="gpu", batch_rows=2), cpu)


def test_exactly_local_cap_ids_and_one_more() -> None:
    entries = [f"e{i}" for i in range(LOCAL_CAP + 1)]
    index = MetadataIndex.from_entries(entries, cache=False)
    texts = [" ".join(entries[:LOCAL_CAP]), " ".join(entries), " ".join(entries[::-1])]
    assert_same(match(texts, index, backend="gpu"), _cpu(texts, index))


def test_empty_and_all_null(index) -> None:
    assert len(match([], index, backend="gpu")) == 0
    for texts in ([None, None, None], ["", ""], pa.array([None] * 9, type=pa.large_string())):
        assert_same(match(texts, index, backend="gpu"), _cpu(texts, index))


@pytest.mark.parametrize("batch_rows", [1 << 16, 29])
def test_worldwide_index(batch_rows: int) -> None:
    index = MetadataIndex.from_entries(WORLDWIDE_ENTRIES, padding="worldwide", cache=False)
    assert index.stats.n_byte_entries > 0
    texts = _worldwide_texts()
    cpu = _cpu(texts, index)
    assert len(cpu.ids_of(4)) > LOCAL_CAP
    assert_same(match(texts, index, backend="gpu", batch_rows=batch_rows), cpu)
    raw = pa.array([t.encode()[:-1] if t else t for t in texts], type=pa.large_binary())
    assert_same(match(raw, index, backend="gpu", batch_rows=batch_rows), _cpu(raw, index))


def dense_case() -> tuple[MetadataIndex, list[str | None]]:
    """An index and texts that take every path: one text matches DENSE_IDS distinct entries,
    more than any fixed per-text buffer (and spill) a batch has room for, so it goes through
    the count and fill kernels; one has 25 distinct ids (no neighbours, so no pairs), between
    a small build's buffer and the default one; the others are ordinary."""
    dense = [f"d{i}" for i in range(DENSE_IDS)]
    index = MetadataIndex.from_entries([*_entries(), *dense], cache=False)
    return index, [" ".join(dense), *_texts(120), " ".join(WORDS), " ".join(WORDS[:50:2])]


def test_every_kernel_is_launched_and_checked() -> None:
    """Both offset widths over the dense case run every matching kernel, each launch checked
    (the balance stage's are launched in tests/test_draw_kernels.py)."""
    index, texts = dense_case()
    cpu = _cpu(texts, index)
    assert len(cpu.ids_of(0)) == DENSE_IDS
    assert_same(match(texts, index, backend="gpu"), cpu)
    assert_same(match(pa.array(texts, type=pa.large_string()), index, backend="gpu"), cpu)
    assert _launched() == set(MATCH_KERNEL_NAMES)
    for _name, grid, block in gpu_emulation.launch_log:
        assert block[0] * block[1] * block[2] <= 1024 and min(grid) >= 1


def test_foreign_index_signature_is_refused(index) -> None:
    import dataclasses

    from metaclip_gpu.engine.backends.gpu import GPUBackend

    foreign = dataclasses.replace(
        index, stats=dataclasses.replace(index.stats, signature=index.stats.signature ^ 1)
    )
    with pytest.raises(RuntimeError, match="signature"):
        match(["w1"], foreign, backend=GPUBackend())


def test_device_results_stay_on_the_device(index) -> None:
    """match() on the GPU hands back device arrays: reading them needs .get()."""
    result = match(["w1 w2", "new york"], index, backend="gpu")
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(result.entry_ids)
    assert result.to_lists() == _cpu(["w1 w2", "new york"], index).to_lists()


def test_balance_math_on_device_arrays() -> None:
    """The `gpu` test that NumPy and CuPy balance bit for bit, run on emulated arrays."""
    from test_balance import test_numpy_and_cupy_agree_bit_for_bit

    test_numpy_and_cupy_agree_bit_for_bit()
