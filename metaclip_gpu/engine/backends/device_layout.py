"""The arithmetic of the GPU backend's inputs, kept apart from device memory: where a string
column's bytes are, and how texts are cut into device batches.

Nothing here allocates or reads device memory or imports CuPy, so the tests run it on real
pylibcudf columns built over host memory (`tests/test_device_layout.py`); `gpu.py` turns the
addresses into CuPy views.

A libcudf STRING column: `size()` rows starting at row `offset()` of its offsets child
(INT32, or INT64 for large columns; the child itself is not sliced with its parent), `data()`
the chars the offsets index into, `null_mask()` the validity bits (bit `offset()` belongs to
row 0). Each buffer is a Span: `.ptr` and `.size` in bytes. For a cuDF column that Span is a
cuDF `Buffer`, whose `.ptr` is its owner's pointer plus the Buffer's own offset (an interior
slice of a larger allocation) and which may be spillable: its `.ptr` must be read inside the
column's ``access(mode="read", scope="internal")`` (see `gpu.cudf_strings`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

# Device batches. A wave on an H100/H200 is 132 SMs x 4 resident 256-thread blocks of
# mc_match_fixed = 135,168 texts; a batch ends at GPU_BATCH_BYTES of text or GPU_BATCH_ROWS
# texts, whichever comes first (the fixed-id buffer costs 128 B a text: 512 MiB at 4M rows).
GPU_BATCH_BYTES = 256 << 20
GPU_BATCH_ROWS = 1 << 22  # 31 waves of 135,168 texts


@dataclass(frozen=True)
class StringsLayout:
    """Addresses of one STRING column's rows, as the kernels read them."""

    n_rows: int
    offsets_ptr: int  # the offset of row 0; 0 when the column has no offsets child
    offsets_itemsize: int  # 4 (INT32) or 8 (INT64)
    chars_ptr: int  # 0 when the column has no chars buffer
    chars_nbytes: int
    mask_ptr: int  # 0 when no row is null
    mask_nbytes: int
    bit_offset: int  # the validity bit of row 0

    @property
    def offsets_dtype(self) -> np.dtype:
        return np.dtype(np.int64 if self.offsets_itemsize == 8 else np.int32)


def span_ptr(span: Any) -> int:
    """The address of a Span (gpumemoryview, cuDF Buffer, rmm.DeviceBuffer: ``.ptr``)."""
    ptr = getattr(span, "ptr", None)
    if ptr is None:
        ptr = span.__cuda_array_interface__["data"][0]
    return int(ptr)


def span_nbytes(span: Any) -> int:
    """The bytes of a Span (``.size``, the Span protocol; ``.nbytes`` for older views)."""
    for attr in ("size", "nbytes"):
        value = getattr(span, attr, None)
        if isinstance(value, int | np.integer):
            return int(value)
    cai = span.__cuda_array_interface__
    return int(np.prod(cai["shape"])) * np.dtype(cai["typestr"]).itemsize


def strings_layout(column: Any) -> StringsLayout:
    """The `StringsLayout` of a pylibcudf STRING column (read its spans' `.ptr` under the
    owning cuDF column's access context when there is one)."""
    import pylibcudf as plc

    kind = column.type().id()
    if kind != plc.TypeId.STRING:
        raise TypeError(f"texts must be a string column, got a cuDF column of type {kind!r}")
    n_rows = int(column.size())
    row_offset = int(column.offset())
    offsets_ptr, itemsize = 0, 4
    if column.num_children() > 0:
        child = column.child(0)
        child_kind = child.type().id()
        if child_kind == plc.TypeId.INT32:
            itemsize = 4
        elif child_kind == plc.TypeId.INT64:
            itemsize = 8
        else:
            raise TypeError(f"unexpected strings offsets type {child_kind!r}")
        child_data = child.data()
        if child_data is None:
            if n_rows:
                raise ValueError(f"a string column of {n_rows:,} rows has no offsets buffer")
        else:
            first = int(child.offset()) + row_offset
            needed = (first + n_rows + 1) * itemsize
            available = span_nbytes(child_data)
            if n_rows and needed > available:
                raise ValueError(
                    f"the string column's offsets buffer holds {available:,} bytes; rows "
                    f"{row_offset:,}..{row_offset + n_rows:,} need {needed:,}"
                )
            offsets_ptr = span_ptr(child_data) + first * itemsize
    data = column.data()
    chars_ptr = span_ptr(data) if data is not None else 0
    chars_nbytes = span_nbytes(data) if data is not None else 0
    mask_ptr, mask_nbytes = 0, 0
    null_count = int(column.null_count())
    if null_count > 0 and n_rows > 0:
        mask = column.null_mask()
        if mask is None:
            raise ValueError(f"a string column with {null_count:,} nulls has no null mask")
        mask_ptr, mask_nbytes = span_ptr(mask), span_nbytes(mask)
        needed_bits = row_offset + n_rows
        if mask_nbytes * 8 < needed_bits:
            raise ValueError(
                f"the string column's null mask holds {mask_nbytes * 8:,} bits; its rows "
                f"need {needed_bits:,}"
            )
    return StringsLayout(
        n_rows=n_rows,
        offsets_ptr=offsets_ptr,
        offsets_itemsize=itemsize,
        chars_ptr=chars_ptr,
        chars_nbytes=chars_nbytes,
        mask_ptr=mask_ptr,
        mask_nbytes=mask_nbytes,
        bit_offset=row_offset,
    )


def check_chars_extent(layout: StringsLayout, first: int, last: int) -> None:
    """Refuses a column whose offsets (first row's start `first`, last row's end `last`)
    address bytes its chars buffer does not hold: in particular offsets over a missing chars
    buffer (a spilled or malformed column), never matched against a dummy pointer."""
    if last < first or first < 0:
        raise ValueError(f"the string column's offsets run backwards ({first:,} to {last:,})")
    if last == first:
        return  # no row has a byte: the chars are never read
    if layout.chars_ptr == 0:
        raise ValueError(
            f"the string column has no chars buffer but its offsets span {last - first:,} "
            "bytes (a spilled column read outside its access context, or a malformed one)"
        )
    if last > layout.chars_nbytes:
        raise ValueError(
            f"the string column's offsets reach byte {last:,}; its chars buffer holds "
            f"{layout.chars_nbytes:,}"
        )


def batch_bounds(
    xp: Any, offsets: Any, n_rows: int, max_bytes: int | None, max_rows: int
) -> Iterator[tuple[int, int]]:
    """Row ranges [start, stop) covering `n_rows` texts whose `offsets` (n_rows + 1, NumPy
    or CuPy, maybe not starting at 0), each at most `max_rows` rows and `max_bytes` bytes of
    text (None: no byte limit) unless one text alone is longer. Two small host reads per
    batch on a device array."""
    if (max_bytes is not None and max_bytes <= 0) or max_rows <= 0:
        raise ValueError(f"batch limits must be positive, got {max_bytes} bytes, {max_rows} rows")
    if max_bytes is None:
        yield from ((s, min(s + max_rows, n_rows)) for s in range(0, n_rows, max_rows))
        return
    top = int(np.iinfo(offsets.dtype).max)  # offsets never pass it: clamp the search key
    start = 0
    while start < n_rows:
        stop = min(start + max_rows, n_rows)
        window = offsets[start : stop + 1]
        limit = min(int(window[0]) + max_bytes, top)
        # the last row boundary within `limit` bytes of this batch's start
        last = int(xp.searchsorted(window, limit, side="right")) - 1
        stop = start + max(1, min(last, stop - start))
        yield start, stop
        start = stop
