"""Real pylibcudf STRING columns over emulated device memory, matched by the emulated GPU.

`plc.gpumemoryview` takes any object with ``__cuda_array_interface__``; the emulated arrays
(tests/gpu_emulation) give their host address there, so real `pylibcudf.Column` objects can be
built over them without a GPU, and `metaclip_gpu.engine.backends.gpu.cudf_strings` reads them as it
reads a cuDF column on a device (data pointer, offsets child and its offset, the slice offset,
the null mask), then the kernels run on the emulated device. Needs the gpu extra (pylibcudf
installed; CI installs it); skipped without it. cuDF Series (which allocate through RMM) still
need a device: the ``gpu`` tests.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from test_gpu_backend import WORDS, _entries, _texts, assert_same

from metaclip_gpu import MetadataIndex, match

pytestmark = pytest.mark.emulated_gpu


@pytest.fixture
def plc(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("RAPIDS_NO_INITIALIZE", "1")
    return pytest.importorskip("pylibcudf", reason="pylibcudf needs the gpu extra")


@pytest.fixture(scope="module")
def index() -> MetadataIndex:
    return MetadataIndex.from_entries(_entries(), cache=False)


def strings_column(
    plc: Any, cp: Any, texts: list[str | None], *, large: bool = False, lead: int = 0
) -> Any:
    """A STRING column over emulated device memory; its offsets child starts `lead` entries
    into a longer buffer (child offset `lead`), as a sliced child does."""
    encoded = [(t or "").encode() for t in texts]
    dtype, kind = (np.int64, plc.TypeId.INT64) if large else (np.int32, plc.TypeId.INT32)
    offsets = np.concatenate([np.full(lead, 7), np.cumsum([0, *map(len, encoded)])])
    d_offsets = cp.asarray(offsets.astype(dtype))
    child = plc.Column(
        plc.DataType(kind), len(texts) + 1, plc.gpumemoryview(d_offsets), None, 0, lead, []
    )
    chars = np.frombuffer(b"".join(encoded) or b"\0", dtype=np.uint8)
    d_chars = cp.asarray(chars)
    valid = np.array([t is not None for t in texts], dtype=bool)
    nulls = int((~valid).sum())
    mask = None
    if nulls:
        mask = plc.gpumemoryview(cp.asarray(np.packbits(valid, bitorder="little")))
    column = plc.Column(
        plc.DataType(plc.TypeId.STRING),
        len(texts),
        plc.gpumemoryview(d_chars),
        mask,
        nulls,
        0,
        [child],
    )
    return column, (d_offsets, d_chars)  # the caller keeps the device arrays alive


def sliced(plc: Any, column: Any, start: int, stop: int, nulls: int) -> Any:
    """The rows [start, stop) as a view (column offset `start`, the children unsliced), as
    plc.copying.slice gives; `nulls` is the view's null count."""
    mask = column.null_mask()
    children = [column.child(0)]
    return plc.Column(column.type(), stop - start, column.data(), mask, nulls, start, children)


@pytest.mark.parametrize("large", [False, True])
@pytest.mark.parametrize("lead", [0, 3])
def test_pylibcudf_column_equals_cpu(plc, emulated_cupy, index, large: bool, lead: int) -> None:
    texts = _texts(200)
    column, _keep = strings_column(plc, emulated_cupy, texts, large=large, lead=lead)
    expected = match(texts, index, backend="cpu")
    assert_same(match(column, index, backend="gpu"), expected)
    assert_same(match(column, index, backend="gpu", batch_rows=29), expected)


def test_sliced_pylibcudf_column(plc, emulated_cupy, index) -> None:
    """A view at row offset 5: the offsets pointer and the first validity bit move by 5."""
    texts = _texts(200)
    texts[7] = None
    column, _keep = strings_column(plc, emulated_cupy, texts)
    view = sliced(plc, column, 5, 180, nulls=sum(t is None for t in texts[5:180]))
    assert view.null_count() >= 2
    assert view.offset() == 5 and view.size() == 175
    expected = match(texts[5:180], index, backend="cpu")
    assert_same(match(view, index, backend="gpu"), expected)
    assert_same(match(view, index, backend="gpu", batch_rows=16), expected)


def test_overflow_empty_and_all_null_pylibcudf(plc, emulated_cupy, index) -> None:
    cp = emulated_cupy
    texts = [" ".join(WORDS), None, "", "w3 w4"]
    column, _keep = strings_column(plc, cp, texts)
    assert_same(match(column, index, backend="gpu"), match(texts, index, backend="cpu"))
    nulls, _keep_nulls = strings_column(plc, cp, [None, None, None])
    assert_same(match(nulls, index, backend="gpu"), match([None] * 3, index, backend="cpu"))
    empty = plc.Column(plc.DataType(plc.TypeId.STRING), 0, None, None, 0, 0, [])
    assert len(match(empty, index, backend="gpu")) == 0
