"""GPU backend: kernels/match.cu compiled by NVRTC through cupy.RawModule, run over device texts.

Imported only by ``get_backend("gpu")`` (and the ``gpu`` tests), so a CPU-only install never
imports CuPy; cuDF / pylibcudf are imported only when a cuDF object comes in or goes out.

Texts: a cuDF string Series / Index (or a pylibcudf STRING column) is read in place through
pylibcudf: the chars buffer, the INT32 or INT64 offsets child and the validity bitmask, with
the column's slice offset applied to the offsets pointer and to the first validity bit.
Anything else goes through `metaclip_gpu.texts.as_arrow_texts` and each batch's Arrow buffers
are copied to the device. A batch is a row range: its offsets view starts at its first row, its
validity bit offset moves with it, and the chars stay whole (offsets index into them).

Semantics and return types mirror metaclip_gpu.backends.cpu, with CuPy arrays.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import cupy
import numpy as np
import pyarrow as pa

from metaclip_gpu.backends.gpu_build import KERNEL_NAMES, LOCAL_CAP, kernel_source, nvrtc_options
from metaclip_gpu.index import MetadataIndex
from metaclip_gpu.texts import as_arrow_texts

if TYPE_CHECKING:
    from metaclip_gpu.match import MatchResult

BLOCK = 256  # threads a block; one thread a text
_MAX_GRID_X = 2**31 - 1  # the kernels are grid-stride loops, so a capped grid is still complete
_INT32_MAX = 2**31 - 1

# --------------------------------------------------------------------- kernels ---
_module_lock = threading.RLock()  # kernel() holds it while raw_module() takes it
_raw_module: Any = None
_functions: dict[tuple[int, str], Any] = {}


def raw_module() -> Any:
    """The process's cupy.RawModule over kernel_source() (compiled lazily, once per device)."""
    global _raw_module
    if _raw_module is None:
        with _module_lock:
            if _raw_module is None:
                _raw_module = cupy.RawModule(
                    code=kernel_source(), options=nvrtc_options(), name_expressions=None
                )
    return _raw_module


def kernel(name: str) -> Any:
    """The compiled kernel `name` for the current device."""
    if name not in KERNEL_NAMES:
        raise KeyError(f"{name!r} is not one of the exported kernels {KERNEL_NAMES}")
    key = (cupy.cuda.runtime.getDevice(), name)
    function = _functions.get(key)
    if function is None:
        with _module_lock:
            function = _functions.get(key)
            if function is None:
                function = raw_module().get_function(name)
                _functions[key] = function
    return function


def _launch(name: str, n_threads: int, args: tuple[Any, ...]) -> None:
    if n_threads <= 0:
        return
    grid = min((n_threads + BLOCK - 1) // BLOCK, _MAX_GRID_X)
    kernel(name)((grid,), (BLOCK,), args)


def _check_signature(index: MetadataIndex) -> None:
    """Refuses an index built by host code that hashes differently from these kernels (e.g. an
    editable install whose CPU extension was not rebuilt after an edit of kernels/)."""
    out = cupy.zeros(1, dtype=np.uint64)
    kernel("mc_index_signature_kernel")((1,), (1,), (out,))
    device_signature = int(out[0])
    if device_signature != index.stats.signature:
        raise RuntimeError(
            f"the GPU kernels' index signature {device_signature:#018x} differs from the index's "
            f"{index.stats.signature:#018x}: the CPU extension that built the index is out of date "
            "with kernels/ (reinstall metaclip-gpu: pip install -e .)"
        )


def _table_to_device(slots: np.ndarray, mask: int, blob: np.ndarray) -> tuple[Any, Any, Any]:
    """One probe table's kernel arguments: (slots, mask, blob), its arrays on the device."""
    blob = np.ascontiguousarray(blob, dtype=np.int32)
    blob_dev = cupy.asarray(blob) if blob.size else cupy.zeros(1, dtype=np.int32)
    slots_dev = cupy.asarray(np.ascontiguousarray(slots, dtype=np.uint64))
    return slots_dev, np.uint64(mask), blob_dev


# ---------------------------------------------------------------------- texts ---
@dataclass(frozen=True)
class DeviceTextBatch:
    """Rows of a device string column, as the kernels read them."""

    n_rows: int
    chars: Any  # cupy uint8: the whole chars buffer (or a one-byte dummy when empty)
    offsets: Any  # cupy int32 / int64 [n_rows + 1], starting at this batch's first row
    valid: Any  # cupy uint8 validity bitmap (LSB order), or None when no row is null
    valid_bit_offset: int  # bit of `valid` that belongs to row 0 of this batch
    owner: Any  # keeps the memory behind chars / offsets / valid alive

    def __len__(self) -> int:
        return self.n_rows

    @property
    def offsets_are_64(self) -> bool:
        return self.offsets.dtype == np.int64

    def rows(self, start: int, stop: int) -> DeviceTextBatch:
        """Rows [start, stop) as a batch: only the offsets view and the bit offset move."""
        stop = min(stop, self.n_rows)
        return replace(
            self,
            n_rows=stop - start,
            offsets=self.offsets[start : stop + 1],
            valid_bit_offset=self.valid_bit_offset + start,
        )


def _is_cudf_object(texts: Any) -> bool:
    root = (type(texts).__module__ or "").partition(".")[0]
    return root in ("cudf", "pylibcudf")


def _device_view(ptr: int, count: int, dtype: Any, owner: Any) -> Any:
    """A CuPy array over `count` items at device address `ptr`, owned by `owner`."""
    dtype = np.dtype(dtype)
    memory = cupy.cuda.UnownedMemory(ptr, count * dtype.itemsize, owner, cupy.cuda.Device().id)
    return cupy.ndarray((count,), dtype=dtype, memptr=cupy.cuda.MemoryPointer(memory, 0))


def _span_ptr(span: Any) -> int:
    """Device address of a pylibcudf data / mask buffer (gpumemoryview or any Span)."""
    ptr = getattr(span, "ptr", None)
    if ptr is None:
        ptr = span.__cuda_array_interface__["data"][0]
    return int(ptr)


def _span_nbytes(span: Any) -> int | None:
    for attr in ("nbytes", "size"):  # gpumemoryview / rmm.DeviceBuffer: nbytes; Span: size
        value = getattr(span, attr, None)
        if isinstance(value, int | np.integer):
            return int(value)
    cai = getattr(span, "__cuda_array_interface__", None)
    if cai is not None:
        return int(np.prod(cai["shape"])) * np.dtype(cai["typestr"]).itemsize
    return None


def _pylibcudf_strings(texts: Any) -> Any:
    """The pylibcudf STRING column behind a cuDF Series / Index (zero-copy), or None."""
    import pylibcudf as plc

    if isinstance(texts, plc.Column):
        column = texts
    else:
        column = None
        to_pylibcudf = getattr(texts, "to_pylibcudf", None)
        if to_pylibcudf is not None:
            try:
                column = to_pylibcudf()  # public: (Column, metadata)
            except TypeError:
                column = None
            if isinstance(column, tuple):
                column = column[0]
        if column is None and hasattr(texts, "_column"):  # older cuDF: the internal column
            column = texts._column.to_pylibcudf(mode="read")
        if column is None:
            return None  # e.g. a cudf.pandas proxy: the caller goes through Arrow instead
    if column.type().id() != plc.TypeId.STRING:
        raise TypeError(
            f"texts must be a string column, got a cuDF column of type {column.type().id()!r}"
        )
    return column


def cudf_text_column(texts: Any) -> DeviceTextBatch | None:
    """All rows of a cuDF string Series / Index / pylibcudf column, read in place.

    None when `texts` offers no pylibcudf view (the caller then goes through Arrow).
    """
    import pylibcudf as plc

    column = _pylibcudf_strings(texts)
    if column is None:
        return None
    owner = (texts, column)
    n_rows = int(column.size())
    row_offset = int(column.offset())  # the slice offset into the offsets (and validity bits)
    if column.num_children() == 0:
        # An empty (or all-null / all-empty) strings column may have no offsets child.
        offsets = cupy.zeros(n_rows + 1, dtype=np.int32)
    else:
        child = column.child(0)
        kind = child.type().id()
        if kind == plc.TypeId.INT32:
            dtype = np.dtype(np.int32)
        elif kind == plc.TypeId.INT64:
            dtype = np.dtype(np.int64)
        else:
            raise TypeError(f"unexpected strings offsets type {kind!r}")
        first = int(child.offset()) + row_offset
        ptr = _span_ptr(child.data()) + first * dtype.itemsize
        offsets = _device_view(ptr, n_rows + 1, dtype, owner)
    data = column.data()
    chars_bytes = _span_nbytes(data) if data is not None else 0
    if data is not None and chars_bytes is None:
        chars_bytes = int(offsets[-1])  # chars are addressed up to the last row's end
    if data is None or not chars_bytes or _span_ptr(data) == 0:
        chars = cupy.zeros(1, dtype=np.uint8)
    else:
        chars = _device_view(_span_ptr(data), chars_bytes, np.uint8, owner)
    valid = None
    mask = column.null_mask()
    if mask is not None and int(column.null_count()) > 0 and n_rows > 0:
        mask_bytes = _span_nbytes(mask) or (row_offset + n_rows + 7) // 8
        valid = _device_view(_span_ptr(mask), mask_bytes, np.uint8, owner)
    return DeviceTextBatch(n_rows, chars, offsets, valid, row_offset, owner)


def arrow_to_device(array: pa.Array) -> DeviceTextBatch:
    """Copies one Arrow string/binary array (maybe a slice) to the device: its bytes only."""
    n_rows = len(array)
    validity, offsets_buffer, data = array.buffers()
    wide = pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type)
    dtype = np.dtype(np.int64 if wide else np.int32)
    host_offsets = np.frombuffer(
        offsets_buffer, dtype=dtype, count=n_rows + 1, offset=array.offset * dtype.itemsize
    )
    first, last = int(host_offsets[0]), int(host_offsets[-1])
    if data is not None and last > first:
        chars = cupy.asarray(np.frombuffer(data, dtype=np.uint8, count=last - first, offset=first))
    else:
        chars = cupy.zeros(1, dtype=np.uint8)
    offsets = cupy.asarray(host_offsets - host_offsets.dtype.type(first) if first else host_offsets)
    valid, bit_offset = None, 0
    if validity is not None and array.null_count > 0:
        byte0, bit_offset = divmod(array.offset, 8)
        n_bytes = (bit_offset + n_rows + 7) // 8
        valid = cupy.asarray(np.frombuffer(validity, dtype=np.uint8, count=n_bytes, offset=byte0))
    return DeviceTextBatch(n_rows, chars, offsets, valid, bit_offset, None)


# -------------------------------------------------------------------- backend ---
class GPUBackend:
    name = "gpu"
    xp = cupy
    local_cap = LOCAL_CAP

    def __init__(self) -> None:
        self._index: tuple[MetadataIndex, int, tuple[Any, ...]] | None = None
        self._dummy_u8 = cupy.zeros(1, dtype=np.uint8)
        self._dummy_i64 = cupy.zeros(1, dtype=np.int64)

    # ---------------------------------------------------------------- inputs
    def text_batches(self, texts: Any, batch_rows: int) -> Iterator[DeviceTextBatch]:
        if batch_rows <= 0:
            raise ValueError(f"batch_rows must be positive, got {batch_rows}")
        whole = cudf_text_column(texts) if _is_cudf_object(texts) else None
        if whole is not None:
            for start in range(0, whole.n_rows, batch_rows):
                yield whole.rows(start, start + batch_rows)
            return
        for chunk in as_arrow_texts(texts).chunks:
            for start in range(0, len(chunk), batch_rows):
                yield arrow_to_device(chunk.slice(start, batch_rows))

    def _index_args(self, index: MetadataIndex) -> tuple[Any, ...]:
        """(slots, mask, blob, byte_slots, byte_mask, byte_blob) on the current device,
        uploaded once per index and device."""
        device = cupy.cuda.runtime.getDevice()
        if self._index is None or self._index[0] is not index or self._index[1] != device:
            _check_signature(index)
            args = (
                *_table_to_device(index.slots, index.mask, index.blob),
                *_table_to_device(index.byte_slots, index.byte_mask, index.byte_blob),
            )
            self._index = (index, device, args)
        return self._index[2]

    def _text_args(self, batch: DeviceTextBatch, rows: Any) -> tuple[tuple[Any, ...], int]:
        has_valid = batch.valid is not None
        has_rows = rows is not None
        n_rows = len(rows) if has_rows else batch.n_rows
        args = (
            batch.chars,
            batch.offsets,
            batch.valid if has_valid else self._dummy_u8,
            np.int32(has_valid),
            np.int64(batch.valid_bit_offset),
            rows if has_rows else self._dummy_i64,
            np.int32(has_rows),
            np.int64(n_rows),
        )
        return args, n_rows

    @staticmethod
    def _suffix(batch: DeviceTextBatch) -> str:
        return "i64" if batch.offsets_are_64 else "i32"

    # --------------------------------------------------------------- kernels
    def match_fixed(
        self, index: MetadataIndex, batch: DeviceTextBatch, spill_capacity: int
    ) -> tuple[Any, Any, Any, int]:
        ids = cupy.empty((self.local_cap, batch.n_rows), dtype=np.int32)  # slot-major (match.cu)
        counts = cupy.empty(batch.n_rows, dtype=np.int32)
        spill = cupy.empty(max(spill_capacity, 1), dtype=np.int64)
        used = cupy.zeros(1, dtype=np.uint64)
        text_args, n = self._text_args(batch, None)
        _launch(
            f"mc_match_fixed_{self._suffix(batch)}",
            n,
            (*self._index_args(index), *text_args, ids, counts, spill, np.int64(spill_capacity),
             used),
        )  # fmt: skip
        needed = int(used[0])
        return ids, counts, spill[: min(needed, spill_capacity)], needed

    def gather_fixed(self, fixed_ids: Any, counts: Any, starts: Any) -> Any:
        fixed_ids = cupy.ascontiguousarray(fixed_ids, dtype=np.int32)
        counts = cupy.ascontiguousarray(counts, dtype=np.int32)
        starts = cupy.ascontiguousarray(starts, dtype=np.int64)
        total = int(starts[-1])
        n_rows = len(starts) - 1
        out = cupy.empty(max(total, 1), dtype=np.int32)
        _launch("mc_gather_fixed_rows", n_rows, (fixed_ids, counts, starts, np.int64(n_rows), out))
        return out[:total]

    def count_raw(self, index: MetadataIndex, batch: DeviceTextBatch, rows: Any) -> Any:
        rows = cupy.ascontiguousarray(rows, dtype=np.int64)
        counts = cupy.empty(len(rows), dtype=np.int64)
        text_args, n = self._text_args(batch, rows)
        _launch(
            f"mc_count_raw_{self._suffix(batch)}",
            n,
            (*self._index_args(index), *text_args, counts),
        )
        return counts

    def fill_raw(
        self, index: MetadataIndex, batch: DeviceTextBatch, rows: Any, offsets: Any, total: int
    ) -> Any:
        rows = cupy.ascontiguousarray(rows, dtype=np.int64)
        offsets = cupy.ascontiguousarray(offsets, dtype=np.int64)
        ids = cupy.empty(max(total, 1), dtype=np.int32)
        text_args, n = self._text_args(batch, rows)
        _launch(
            f"mc_fill_raw_{self._suffix(batch)}",
            n,
            (*self._index_args(index), *text_args, offsets, ids),
        )
        return ids[:total]

    # ---------------------------------------------------------------- output
    @staticmethod
    def to_cudf_list(result: MatchResult) -> Any:
        return to_cudf_list(result)


# --------------------------------------------------------------------- output ---
def _plc_column_from_cupy(array: Any) -> Any:
    """A pylibcudf numeric column over a 1-D CuPy array (zero-copy; it keeps `array` alive)."""
    import pylibcudf as plc

    for factory in ("from_array", "from_cuda_array_interface", "from_cuda_array_interface_obj"):
        make = getattr(plc.Column, factory, None)
        if make is not None:
            return make(array)
    raise RuntimeError("this pylibcudf has no Column.from_array / from_cuda_array_interface")


def to_cudf_list(result: MatchResult) -> Any:
    """A cuDF ``list<int32>`` Series over a MatchResult (one row a text, its sorted entry ids).

    cuDF list offsets are int32: more than 2**31 - 1 ids in one result cannot be one list
    column. Split the texts (smaller partitions), or use `MatchResult.to_arrow()`, which falls
    back to a large_list.
    """
    import cudf
    import pylibcudf as plc

    offsets = cupy.asarray(result.offsets)
    n_texts = len(offsets) - 1
    total = int(offsets[-1])
    if total > _INT32_MAX or n_texts >= _INT32_MAX:
        raise OverflowError(
            f"{total:,} entry ids over {n_texts:,} texts do not fit a cuDF list column "
            f"(int32 offsets, at most {_INT32_MAX:,} ids and rows); match smaller partitions "
            "(e.g. dask_cudf map_partitions) or use MatchResult.to_arrow() for a large_list"
        )
    ids = cupy.ascontiguousarray(cupy.asarray(result.entry_ids)[:total], dtype=np.int32)
    offsets_col = _plc_column_from_cupy(cupy.ascontiguousarray(offsets, dtype=np.int32))
    values_col = _plc_column_from_cupy(ids)
    lists = plc.Column(
        plc.DataType(plc.TypeId.LIST), n_texts, None, None, 0, 0, [offsets_col, values_col]
    )
    return cudf.Series.from_pylibcudf(lists)
