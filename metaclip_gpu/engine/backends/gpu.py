"""GPU backend: kernels/match.cu compiled by NVRTC through cupy.RawModule, run over device texts.

Imported only by ``get_backend("gpu")`` (and the ``gpu`` tests), so a CPU-only install never
imports CuPy; cuDF / pylibcudf are imported only when a cuDF object comes in or goes out.

State lives as long as the process (`process_backend`): the kernels are compiled once, each
index is uploaded (and its signature checked) once per device (`device_cache.IndexCache`).

Texts: a cuDF string Series / Index (or a pylibcudf STRING column) is read in place: the chars
buffer, the INT32 or INT64 offsets child and the validity bitmask (`device_layout`), with the
column's slice offset applied to the offsets pointer and to the first validity bit, and each
cuDF Buffer's own offset in its pointer. Its buffers are read inside the cuDF column's
``access(mode="read", scope="internal")`` for as long as the batches are in use (spilling
cannot move them; a spilled column is brought back first). Anything else goes through
`metaclip_gpu.engine.texts.as_arrow_texts` and each batch's Arrow buffers are copied to the device.
A batch is a row range, sized for the device by bytes of text (`device_layout.batch_bounds`):
its offsets view starts at its first row, its validity bit offset moves with it, and the
chars stay whole (offsets index into them).

Semantics and return types mirror metaclip_gpu.engine.backends.cpu, with CuPy arrays.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import cupy
import numpy as np
import pyarrow as pa

from metaclip_gpu.engine.backends.device_cache import IndexCache
from metaclip_gpu.engine.backends.device_layout import (
    GPU_BATCH_BYTES,
    GPU_BATCH_ROWS,
    StringsLayout,
    batch_bounds,
    check_chars_extent,
    strings_layout,
)
from metaclip_gpu.engine.backends.gpu_build import (
    KERNEL_NAMES,
    LOCAL_CAP,
    kernel_source,
    nvrtc_options,
)
from metaclip_gpu.engine.backends.gpu_output import to_cudf_list
from metaclip_gpu.engine.index import MetadataIndex
from metaclip_gpu.engine.texts import as_arrow_texts

if TYPE_CHECKING:
    from metaclip_gpu.engine.match import MatchResult

BLOCK = 256  # threads a block; one thread a text
_MAX_GRID_X = 2**31 - 1  # the kernels are grid-stride loops, so a capped grid is still complete

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


def launch(name: str, n_threads: int, args: tuple[Any, ...]) -> None:
    """Runs kernel `name` for `n_threads` items (its grid-stride loop covers them all) on the
    current stream; nothing when there are none."""
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


def upload_index(index: MetadataIndex) -> tuple[Any, ...]:
    """(slots, mask, blob, byte_slots, byte_mask, byte_blob) of `index` on the current device,
    after the signature check: what `IndexCache` runs once per index and device."""
    _check_signature(index)
    return (
        *_table_to_device(index.slots, index.mask, index.blob),
        *_table_to_device(index.byte_slots, index.byte_mask, index.byte_blob),
    )


# ---------------------------------------------------------------------- texts ---
@dataclass(frozen=True)
class DeviceTextBatch:
    """Rows of a device string column, as the kernels read them."""

    n_rows: int
    chars: Any  # cupy uint8: the whole chars buffer (a one-byte dummy only when no row has a byte)
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


def pylibcudf_strings(texts: Any) -> tuple[Any, contextlib.AbstractContextManager[Any]] | None:
    """(pylibcudf column, the context to read its buffers in) of a cuDF Series / Index or a
    pylibcudf column; None for what has neither (the caller copies through Arrow)."""
    import pylibcudf as plc

    if isinstance(texts, plc.Column):
        return texts, contextlib.nullcontext()
    column = getattr(texts, "_column", None)
    if column is None:
        return None
    if hasattr(column, "plc_column") and hasattr(column, "access"):
        # cuDF 26: the column's own buffers (cuDF Buffers: owner pointer + their offset),
        # spill-locked (unspilled first if need be) for as long as the context is open.
        return column.plc_column, column.access(mode="read", scope="internal")
    if hasattr(column, "to_pylibcudf"):  # older cuDF: a read-mode view of the column
        try:
            return column.to_pylibcudf(mode="read"), contextlib.nullcontext()
        except TypeError:
            return None
    return None


def _batch_from_layout(layout: StringsLayout, owner: Any) -> DeviceTextBatch:
    """CuPy views over the addresses of `layout` (owned by `owner`), checked against the
    offsets the device holds: offsets over a missing chars buffer are an error."""
    n_rows = layout.n_rows
    if layout.offsets_ptr == 0:  # an empty (or all-null / all-empty) column: no offsets child
        offsets = cupy.zeros(n_rows + 1, dtype=np.int32)
    else:
        offsets = _device_view(layout.offsets_ptr, n_rows + 1, layout.offsets_dtype, owner)
    ends = offsets[:: max(n_rows, 1)].get() if n_rows else np.zeros(2, dtype=np.int64)
    check_chars_extent(layout, int(ends[0]), int(ends[-1]))
    if layout.chars_ptr == 0 or layout.chars_nbytes == 0:
        chars = cupy.zeros(1, dtype=np.uint8)  # never read: no row has a byte
    else:
        chars = _device_view(layout.chars_ptr, layout.chars_nbytes, np.uint8, owner)
    valid = None
    if layout.mask_ptr:
        valid = _device_view(layout.mask_ptr, layout.mask_nbytes, np.uint8, owner)
    return DeviceTextBatch(n_rows, chars, offsets, valid, layout.bit_offset, owner)


@contextlib.contextmanager
def cudf_strings(texts: Any) -> Iterator[DeviceTextBatch | None]:
    """All rows of a cuDF string Series / Index / pylibcudf column, read in place while the
    context is open (its cuDF buffers spill-locked, so they cannot move or spill meanwhile).
    On leaving, the current stream is synchronized first: kernels still reading the buffers
    finish before the lock goes. Yields None when `texts` offers no pylibcudf view."""
    found = pylibcudf_strings(texts)
    if found is None:
        yield None
        return
    column, access = found
    with access:
        batch = _batch_from_layout(strings_layout(column), owner=(texts, column))
        try:
            yield batch
        finally:
            cupy.cuda.get_current_stream().synchronize()


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


def _host_offsets(array: pa.Array) -> np.ndarray:
    wide = pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type)
    dtype = np.dtype(np.int64 if wide else np.int32)
    return np.frombuffer(
        array.buffers()[1], dtype=dtype, count=len(array) + 1, offset=array.offset * dtype.itemsize
    )


# -------------------------------------------------------------------- backend ---
class GPUBackend:
    """The kernels on the current device. One per process (`process_backend`): its index
    uploads (`IndexCache`) serve every chunk and shard the process matches."""

    name = "gpu"
    xp = cupy
    local_cap = LOCAL_CAP

    def __init__(self) -> None:
        self.indexes: IndexCache[tuple[Any, ...]] = IndexCache(upload_index)
        self._dummies: dict[int, tuple[Any, Any]] = {}

    # ---------------------------------------------------------------- inputs
    def text_batches(self, texts: Any, batch_rows: int | None = None) -> Iterator[DeviceTextBatch]:
        """Device batches of `texts`: `batch_rows` rows each when given, else sized for the
        device (`device_layout.GPU_BATCH_BYTES` of text, at most `GPU_BATCH_ROWS` texts)."""
        if batch_rows is not None and batch_rows <= 0:
            raise ValueError(f"batch_rows must be positive, got {batch_rows}")
        max_rows = batch_rows or GPU_BATCH_ROWS
        max_bytes = GPU_BATCH_BYTES if batch_rows is None else None
        if _is_cudf_object(texts):
            with cudf_strings(texts) as whole:
                if whole is not None:
                    bounds = batch_bounds(cupy, whole.offsets, whole.n_rows, max_bytes, max_rows)
                    for start, stop in bounds:
                        yield whole.rows(start, stop)
                    return
        for chunk in as_arrow_texts(texts).chunks:
            if len(chunk) == 0:
                continue
            offsets = _host_offsets(chunk)
            for start, stop in batch_bounds(np, offsets, len(chunk), max_bytes, max_rows):
                yield arrow_to_device(chunk.slice(start, stop - start))

    def _index_args(self, index: MetadataIndex) -> tuple[Any, ...]:
        """The index's device arrays, uploaded once per index and device (`IndexCache`)."""
        return self.indexes.get(index, int(cupy.cuda.runtime.getDevice()))

    def _dummy(self) -> tuple[Any, Any]:
        """(uint8, int64) one-element arrays on the current device for absent pointers."""
        device = int(cupy.cuda.runtime.getDevice())
        found = self._dummies.get(device)
        if found is None:
            found = (cupy.zeros(1, dtype=np.uint8), cupy.zeros(1, dtype=np.int64))
            self._dummies[device] = found
        return found

    def _text_args(self, batch: DeviceTextBatch, rows: Any) -> tuple[tuple[Any, ...], int]:
        has_valid = batch.valid is not None
        has_rows = rows is not None
        n_rows = len(rows) if has_rows else batch.n_rows
        dummy_u8, dummy_i64 = self._dummy()
        args = (
            batch.chars,
            batch.offsets,
            batch.valid if has_valid else dummy_u8,
            np.int32(has_valid),
            np.int64(batch.valid_bit_offset),
            rows if has_rows else dummy_i64,
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
        launch(
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
        launch("mc_gather_fixed_rows", n_rows, (fixed_ids, counts, starts, np.int64(n_rows), out))
        return out[:total]

    def count_raw(self, index: MetadataIndex, batch: DeviceTextBatch, rows: Any) -> Any:
        rows = cupy.ascontiguousarray(rows, dtype=np.int64)
        counts = cupy.empty(len(rows), dtype=np.int64)
        text_args, n = self._text_args(batch, rows)
        launch(
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
        launch(
            f"mc_fill_raw_{self._suffix(batch)}",
            n,
            (*self._index_args(index), *text_args, offsets, ids),
        )
        return ids[:total]

    # ---------------------------------------------------------------- output
    @staticmethod
    def to_cudf_list(result: MatchResult) -> Any:
        return to_cudf_list(result)


_process_backend: GPUBackend | None = None


def process_backend() -> GPUBackend:
    """The process's one `GPUBackend` (made on first use, after `ensure_device_memory` gives
    the process a pooled RMM resource unless one is set): a dask-cuda worker, or a run in
    process, compiles the kernels and uploads each index once, however many chunks it runs."""
    global _process_backend
    if _process_backend is None:
        with _module_lock:
            if _process_backend is None:
                from metaclip_gpu.engine.backends.gpu_memory import ensure_device_memory

                ensure_device_memory()
                _process_backend = GPUBackend()
    return _process_backend
