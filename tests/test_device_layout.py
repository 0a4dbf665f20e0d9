"""The GPU backend's column plumbing on REAL pylibcudf / cuDF objects, without a device.

pylibcudf columns (and cuDF Buffers, spillable ones included) can be built over host memory:
a Span is anything with ``.ptr`` and ``.size``. So `device_layout.strings_layout` (what
gpu.py turns into CuPy views) runs here on the very objects cuDF hands the GPU backend, and
each test reads the texts back from host memory through the addresses it computed, as the
kernels would: offsets from ``offsets_ptr``, bytes from ``chars_ptr``, validity from bit
``bit_offset + row`` of ``mask_ptr``. Not marked ``gpu``: they need only the installed gpu
extra and skip (with the reason) where pylibcudf does not import.
"""

from __future__ import annotations

import ctypes
import os
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

os.environ.setdefault("RAPIDS_NO_INITIALIZE", "1")
plc = pytest.importorskip("pylibcudf", reason="the gpu extra is not installed (no pylibcudf)")

from metaclip_gpu.engine.backends.device_layout import (  # noqa: E402 - after the skip
    GPU_BATCH_BYTES,
    StringsLayout,
    batch_bounds,
    check_chars_extent,
    strings_layout,
)

TEXTS: list[str | None] = ["a dog", None, "", "héllo wörld", "x", None, "中文 text", "", "end"]


class HostSpan:
    """A Span (``.ptr``, ``.size``) over a NumPy array, which it keeps alive."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = np.ascontiguousarray(array)
        self.ptr = self.array.ctypes.data if self.array.nbytes else 0
        self.size = self.array.nbytes


def _arrow_parts(texts: list[str | None], large: bool) -> tuple[np.ndarray, np.ndarray, Any]:
    """(chars, offsets, validity bytes or None) of `texts` as Arrow lays them out."""
    array = pa.array(texts, type=pa.large_string() if large else pa.string())
    validity, offsets, data = array.buffers()
    dtype = np.int64 if large else np.int32
    offs = np.frombuffer(offsets, dtype=dtype, count=len(texts) + 1).copy()
    chars = np.frombuffer(data, dtype=np.uint8).copy() if data is not None else np.zeros(0, "u1")
    valid = None
    if array.null_count:
        valid = np.frombuffer(validity, dtype=np.uint8, count=(len(texts) + 7) // 8).copy()
    return chars, offs, valid


def _plc_strings(
    texts: list[str | None], *, large: bool = False, offset: int = 0, size: int | None = None
) -> Any:
    """A pylibcudf STRING column over host memory: rows [offset, offset + size) of `texts`,
    the offsets child unsliced (as libcudf slices a strings column)."""
    chars, offs, valid = _arrow_parts(texts, large)
    size = len(texts) - offset if size is None else size
    kind = plc.TypeId.INT64 if large else plc.TypeId.INT32
    child = plc.Column(plc.DataType(kind), len(offs), HostSpan(offs), None, 0, 0, [])
    in_view = texts[offset : offset + size]
    nulls = sum(t is None for t in in_view)
    return plc.Column(
        plc.DataType(plc.TypeId.STRING),
        size,
        HostSpan(chars) if chars.size else None,
        HostSpan(valid) if valid is not None else None,
        nulls,
        offset,
        [child],
    )


def _read(address: int, count: int, dtype: Any) -> np.ndarray:
    """`count` items at host `address` (what a kernel reads at that device address)."""
    dtype = np.dtype(dtype)
    if count == 0:
        return np.zeros(0, dtype)
    raw = (ctypes.c_uint8 * (count * dtype.itemsize)).from_address(address)
    return np.frombuffer(raw, dtype=dtype, count=count).copy()


def texts_through(layout: StringsLayout) -> list[bytes | None]:
    """The rows as the kernels see them through `layout`'s addresses and bit offset."""
    n = layout.n_rows
    if layout.offsets_ptr == 0:
        offsets = np.zeros(n + 1, dtype=np.int64)
    else:
        offsets = _read(layout.offsets_ptr, n + 1, layout.offsets_dtype)
    check_chars_extent(layout, int(offsets[0]), int(offsets[-1]))
    mask = None
    if layout.mask_ptr:
        mask = _read(layout.mask_ptr, layout.mask_nbytes, np.uint8)
    rows: list[bytes | None] = []
    for i in range(n):
        bit = layout.bit_offset + i
        if mask is not None and not (mask[bit // 8] >> (bit % 8)) & 1:
            rows.append(None)
            continue
        start, stop = int(offsets[i]), int(offsets[i + 1])
        rows.append(_read(layout.chars_ptr + start, stop - start, np.uint8).tobytes())
    return rows


def _encoded(texts: list[str | None]) -> list[bytes | None]:
    return [None if t is None else t.encode("utf-8") for t in texts]


# ------------------------------------------------------------- pylibcudf columns ---
@pytest.mark.parametrize("large", [False, True], ids=["int32-offsets", "int64-offsets"])
def test_whole_column_reads_back_every_row(large: bool) -> None:
    column = _plc_strings(TEXTS, large=large)
    layout = strings_layout(column)
    assert layout.offsets_itemsize == (8 if large else 4)
    assert layout.n_rows == len(TEXTS) and layout.bit_offset == 0
    assert layout.offsets_ptr == column.child(0).data().ptr
    assert layout.chars_ptr == column.data().ptr
    assert texts_through(layout) == _encoded(TEXTS)


@pytest.mark.parametrize("large", [False, True], ids=["int32-offsets", "int64-offsets"])
@pytest.mark.parametrize(("offset", "size"), [(1, 5), (3, 6), (5, 1), (8, 1), (9, 0)])
def test_slice_offset_moves_the_offsets_pointer_and_the_first_validity_bit(
    large: bool, offset: int, size: int
) -> None:
    column = _plc_strings(TEXTS, large=large, offset=offset, size=size)
    layout = strings_layout(column)
    itemsize = 8 if large else 4
    assert layout.offsets_ptr == column.child(0).data().ptr + offset * itemsize
    assert layout.bit_offset == offset
    assert texts_through(layout) == _encoded(TEXTS[offset : offset + size])


def test_nulls_past_the_first_mask_byte() -> None:
    texts = [f"t{i}" if i % 3 else None for i in range(21)]
    column = _plc_strings(texts, offset=11, size=9)
    layout = strings_layout(column)
    assert layout.mask_ptr == column.null_mask().ptr and layout.mask_nbytes == 3
    assert texts_through(layout) == _encoded(texts[11:20])


def test_no_null_means_no_mask_even_when_one_is_attached() -> None:
    column = _plc_strings(TEXTS, offset=2, size=2)  # "", "héllo wörld": the mask is there
    assert column.null_mask() is not None and column.null_count() == 0
    layout = strings_layout(column)
    assert layout.mask_ptr == 0
    assert texts_through(layout) == _encoded(TEXTS[2:4])


def test_empty_column_without_children() -> None:
    column = plc.Column(plc.DataType(plc.TypeId.STRING), 0, None, None, 0, 0, [])
    layout = strings_layout(column)
    assert (layout.n_rows, layout.offsets_ptr, layout.chars_ptr, layout.mask_ptr) == (0, 0, 0, 0)
    assert texts_through(layout) == []


def test_all_null_column_with_and_without_an_offsets_child() -> None:
    mask = HostSpan(np.zeros(1, dtype=np.uint8))
    bare = plc.Column(plc.DataType(plc.TypeId.STRING), 3, None, mask, 3, 0, [])
    assert texts_through(strings_layout(bare)) == [None, None, None]
    offsets = HostSpan(np.zeros(4, np.int32))
    zeros = plc.Column(plc.DataType(plc.TypeId.INT32), 4, offsets, None, 0, 0, [])
    with_child = plc.Column(plc.DataType(plc.TypeId.STRING), 3, None, mask, 3, 0, [zeros])
    layout = strings_layout(with_child)
    assert layout.chars_ptr == 0
    assert texts_through(layout) == [None, None, None]


def test_offsets_over_a_missing_chars_buffer_are_an_error_not_a_dummy() -> None:
    """A spilled column read outside its access context has ``data() is None`` and its real
    offsets; matching it against a one-byte dummy read out of bounds (issue 10, point 3)."""
    _, offs, _ = _arrow_parts(["abc", "de"], large=False)
    child = plc.Column(plc.DataType(plc.TypeId.INT32), 3, HostSpan(offs), None, 0, 0, [])
    column = plc.Column(plc.DataType(plc.TypeId.STRING), 2, None, None, 0, 0, [child])
    layout = strings_layout(column)
    with pytest.raises(ValueError, match="no chars buffer but its offsets span 5 bytes"):
        check_chars_extent(layout, 0, 5)
    check_chars_extent(layout, 0, 0)  # all rows empty: nothing is read, no buffer needed


def test_offsets_past_the_chars_buffer_are_an_error() -> None:
    layout = strings_layout(_plc_strings(["abc", "de"]))
    assert layout.chars_nbytes == 5
    with pytest.raises(ValueError, match="reach byte 6; its chars buffer holds 5"):
        check_chars_extent(layout, 0, 6)


def test_a_short_offsets_buffer_or_missing_mask_is_refused() -> None:
    offs = HostSpan(np.array([0, 1], dtype=np.int32))  # 1 row's offsets for 2 rows
    child = plc.Column(plc.DataType(plc.TypeId.INT32), 2, offs, None, 0, 0, [])
    chars = HostSpan(np.frombuffer(b"ab", np.uint8).copy())
    short = plc.Column(plc.DataType(plc.TypeId.STRING), 2, chars, None, 0, 0, [child])
    with pytest.raises(ValueError, match="offsets buffer holds 8 bytes"):
        strings_layout(short)
    with pytest.raises(TypeError, match="string column"):
        strings_layout(child)


# ------------------------------------------------------------ cuDF Buffers, spilling ---
@pytest.fixture
def spill_manager() -> Iterator[Any]:
    """cuDF's global spill manager set for the test (spilling on), restored afterwards."""
    pytest.importorskip("cudf", reason="the gpu extra is not installed (no cudf)")
    from cudf.core.buffer import spill_manager as sm

    saved = (sm._global_manager, sm._global_manager_uninitialized)
    sm._global_manager, sm._global_manager_uninitialized = sm.SpillManager(), False
    try:
        yield sm._global_manager
    finally:
        sm._global_manager, sm._global_manager_uninitialized = saved


def _spillable(array: np.ndarray, offset: int = 0, size: int | None = None) -> Any:
    """A cuDF SpillableBuffer over host memory that cuDF takes for device memory."""
    from cudf.core.buffer.spillable_buffer import SpillableBuffer, SpillableBufferOwner

    owner = SpillableBufferOwner(ptr=array.ctypes.data, size=array.nbytes, owner=array)
    owner._finalize_init(ptr_desc={"type": "gpu"})
    return SpillableBuffer(owner=owner, offset=offset, size=size)


def _cudf_series(texts: list[str], pad: int, spillable: bool) -> tuple[Any, Any, Any, int]:
    """A real cudf.Series of `texts` whose chars are an interior slice (`pad` bytes in) of a
    larger allocation: (series, chars buffer, offsets buffer, allocation address)."""
    import cudf
    from cudf.core.buffer.buffer import Buffer, BufferOwner
    from cudf.core.column.column import ColumnBase

    chars, offs, _ = _arrow_parts(texts, large=False)
    allocation = np.concatenate([np.full(pad, ord("#"), np.uint8), chars, np.zeros(3, np.uint8)])
    if spillable:
        chars_buffer = _spillable(allocation, pad, chars.size)
        offsets_buffer = _spillable(offs)
    else:
        # as in cuDF, the owner's owner is a Span of the whole allocation
        whole, whole_offsets = HostSpan(allocation), HostSpan(offs)
        owner = BufferOwner(ptr=whole.ptr, size=whole.size, owner=whole)
        chars_buffer = Buffer(owner=owner, offset=pad, size=chars.size)
        offs_owner = BufferOwner(
            ptr=whole_offsets.ptr, size=whole_offsets.size, owner=whole_offsets
        )
        offsets_buffer = Buffer(owner=offs_owner)
    # validate=False: the Span check reads `.ptr`, which would expose a spillable buffer
    int32, string = plc.DataType(plc.TypeId.INT32), plc.DataType(plc.TypeId.STRING)
    child = plc.Column(int32, len(offs), offsets_buffer, None, 0, 0, [], validate=False)
    strings = plc.Column(string, len(texts), chars_buffer, None, 0, 0, [child], validate=False)
    column = ColumnBase.create(strings, np.dtype("object"), validate=False)
    return cudf.Series._from_column(column), chars_buffer, offsets_buffer, allocation.ctypes.data


def _gpu_module() -> Any:
    pytest.importorskip("cupy", reason="the gpu extra is not installed (no cupy)")
    pytest.importorskip("cudf", reason="the gpu extra is not installed (no cudf)")
    from metaclip_gpu.engine.backends import gpu

    return gpu


def test_cudf_buffer_offset_is_in_the_chars_pointer() -> None:
    """An interior slice of an allocation: the pointer is the owner's plus the Buffer's own
    offset (cuDF 26.10's ``to_pylibcudf`` hands back ``buffer.owner.owner``, dropping it)."""
    gpu = _gpu_module()
    texts = ["a dog", "héllo", "", "x y"]
    series, _, _, base = _cudf_series(texts, pad=7, spillable=False)
    column, access = gpu.pylibcudf_strings(series)
    with access:
        layout = strings_layout(column)
    assert layout.chars_ptr == base + 7
    assert texts_through(layout) == _encoded(texts)


def test_cudf_index_is_read_the_same_way() -> None:
    gpu = _gpu_module()
    import cudf

    texts = ["new york", "", "city"]
    series, *_ = _cudf_series(texts, pad=3, spillable=False)
    index = cudf.Index._from_column(series._column)
    column, access = gpu.pylibcudf_strings(index)
    with access:
        assert texts_through(strings_layout(column)) == _encoded(texts)


def test_spillable_column_is_spill_locked_while_read_and_never_exposed(spill_manager) -> None:
    """Inside the access context the buffers cannot spill (a spill lock each), reading their
    pointers does not expose them for good, and on leaving they are spillable again."""
    gpu = _gpu_module()
    texts = ["a dog", "héllo", "x y"]
    series, chars, offsets, base = _cudf_series(texts, pad=5, spillable=True)
    assert chars.owner.spillable and offsets.owner.spillable
    column, access = gpu.pylibcudf_strings(series)
    with access:
        assert not chars.owner.spillable and not offsets.owner.spillable
        layout = strings_layout(column)
        assert texts_through(layout) == _encoded(texts)
    assert layout.chars_ptr == base + 5
    assert chars.owner.spillable and offsets.owner.spillable
    assert not chars.owner.exposed and not offsets.owner.exposed


def test_pylibcudf_column_passes_through_without_a_context() -> None:
    gpu = _gpu_module()
    column = _plc_strings(TEXTS, offset=2, size=4)
    found, access = gpu.pylibcudf_strings(column)
    assert found is column
    with access:
        assert texts_through(strings_layout(found)) == _encoded(TEXTS[2:6])


# ------------------------------------------------------------------- device batches ---
def _bounds(offsets: list[int], max_bytes: int, max_rows: int) -> list[tuple[int, int]]:
    array = np.array(offsets, dtype=np.int64)
    return list(batch_bounds(np, array, len(array) - 1, max_bytes, max_rows))


def test_batches_end_at_the_byte_or_row_limit() -> None:
    offsets = [0, 10, 20, 30, 40, 50, 60]
    assert _bounds(offsets, 25, 100) == [(0, 2), (2, 4), (4, 6)]
    assert _bounds(offsets, 1000, 4) == [(0, 4), (4, 6)]
    assert _bounds(offsets, 30, 2) == [(0, 2), (2, 4), (4, 6)]


def test_a_text_longer_than_the_limit_is_a_batch_alone() -> None:
    assert _bounds([0, 5, 500, 505], 100, 10) == [(0, 1), (1, 2), (2, 3)]


def test_batches_of_a_slice_whose_offsets_do_not_start_at_zero() -> None:
    assert _bounds([1000, 1010, 1020, 1030], 20, 10) == [(0, 2), (2, 3)]
    assert _bounds([7], 20, 10) == []


def test_device_batches_are_several_waves() -> None:
    """At least several waves of 528 blocks of 256 threads (an H100/H200's mc_match_fixed)
    fit the byte budget for captions of a typical length (about 60 bytes)."""
    wave = 528 * 256
    assert 8 * wave <= GPU_BATCH_BYTES // 60
    rows = np.arange(0, 60 * 3_000_001, 60, dtype=np.int64)
    [(start, stop), *_] = batch_bounds(np, rows, len(rows) - 1, GPU_BATCH_BYTES, 1 << 22)
    assert stop - start >= 8 * wave


def test_an_old_style_column_without_mode_falls_back_to_arrow_not_a_type_error() -> None:
    """cuDF 26.10's column ``to_pylibcudf`` takes no ``mode``: the old fallback
    ``to_pylibcudf(mode="read")`` raised TypeError there. Such an object (no ``plc_column``
    / ``access``) now goes through Arrow (None), and one that takes ``mode`` is used."""
    gpu = _gpu_module()
    column = _plc_strings(TEXTS)

    class NoMode:
        def to_pylibcudf(self) -> Any:
            return column

    class WithMode:
        def to_pylibcudf(self, mode: str) -> Any:
            assert mode == "read"
            return column

    assert gpu.pylibcudf_strings(types.SimpleNamespace(_column=NoMode())) is None
    found, _ = gpu.pylibcudf_strings(types.SimpleNamespace(_column=WithMode()))
    assert found is column


def test_row_batches_without_a_byte_limit_and_a_limit_past_int32() -> None:
    offsets = np.array([0, 3, 6, 9, 2**31 - 1], dtype=np.int32)
    assert list(batch_bounds(np, offsets, 4, None, 3)) == [(0, 3), (3, 4)]
    assert list(batch_bounds(np, offsets, 4, 2**31, 10)) == [(0, 4)]  # the key is clamped
