"""CPU backend: the host build of kernels/match.cu, run on OpenMP threads over Arrow buffers.

Texts stay in their pyarrow buffers: the kernels read the chars, offsets and validity bitmap
in place (no copy), whatever the offset width (string: int32, large_string: int64).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from metaclip_gpu.engine._native import ffi, lib
from metaclip_gpu.engine.index import MetadataIndex
from metaclip_gpu.engine.texts import as_arrow_texts

DEFAULT_BATCH_ROWS = 1 << 16  # texts a CPU kernel call covers


@dataclass
class ArrowTextBatch:
    """Raw pointers into one pyarrow string/binary array (kept alive by `array`)."""

    array: pa.Array
    chars: Any
    offsets: Any
    offsets_are_64: bool
    valid: Any  # cdata pointer or ffi.NULL
    valid_bit_offset: int

    def __len__(self) -> int:
        return len(self.array)


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class CPUBackend:
    name = "cpu"
    xp = np

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads if threads and threads > 0 else _available_cores()
        self.local_cap = int(lib.mc_local_cap())
        self._index_ptrs: dict[int, tuple[MetadataIndex, tuple[Any, ...]]] = {}

    # ---------------------------------------------------------------- inputs
    def text_batches(self, texts: Any, batch_rows: int | None = None) -> Iterator[ArrowTextBatch]:
        batch_rows = DEFAULT_BATCH_ROWS if batch_rows is None else batch_rows
        for chunk in as_arrow_texts(texts).chunks:
            for start in range(0, len(chunk), batch_rows):
                yield self._batch(chunk.slice(start, batch_rows))

    @staticmethod
    def _batch(array: pa.Array) -> ArrowTextBatch:
        validity, offsets, data = array.buffers()
        wide = pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type)
        width = 8 if wide else 4
        has_nulls = validity is not None and array.null_count > 0
        return ArrowTextBatch(
            array=array,
            chars=ffi.cast("uint8_t *", data.address if data is not None and data.size else 0),
            offsets=ffi.cast("void *", offsets.address + array.offset * width),
            offsets_are_64=wide,
            valid=ffi.cast("uint8_t *", validity.address) if has_nulls else ffi.NULL,
            valid_bit_offset=array.offset,
        )

    def _index_args(self, index: MetadataIndex) -> tuple[Any, ...]:
        cached = self._index_ptrs.get(id(index))
        if cached is None or cached[0] is not index:
            ptrs = (
                ffi.from_buffer("uint64_t[]", index.slots),
                index.mask,
                ffi.from_buffer("int32_t[]", index.blob),
                ffi.from_buffer("uint64_t[]", index.byte_slots),
                index.byte_mask,
                ffi.from_buffer("int32_t[]", index.byte_blob),
            )
            cached = (index, ptrs)
            self._index_ptrs = {id(index): cached}
        return cached[1]

    def _text_args(self, batch: ArrowTextBatch, rows: np.ndarray | None) -> tuple[Any, ...]:
        n_rows = len(batch) if rows is None else len(rows)
        rows_ptr = ffi.NULL if rows is None else ffi.from_buffer("int64_t[]", rows)
        return (
            batch.chars,
            batch.offsets,
            int(batch.offsets_are_64),
            batch.valid,
            batch.valid_bit_offset,
            rows_ptr,
            n_rows,
        )

    # --------------------------------------------------------------- kernels
    def match_fixed(
        self, index: MetadataIndex, batch: ArrowTextBatch, spill_capacity: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        n_rows = len(batch)
        ids = np.empty((self.local_cap, n_rows), dtype=np.int32)  # slot-major (match.cu)
        counts = np.empty(n_rows, dtype=np.int32)
        spill = np.empty(max(spill_capacity, 1), dtype=np.int64)
        used = np.zeros(1, dtype=np.uint64)
        lib.mc_cpu_match_fixed(
            *self._index_args(index),
            *self._text_args(batch, None),
            ffi.from_buffer("int32_t[]", ids),
            ffi.from_buffer("int32_t[]", counts),
            ffi.from_buffer("int64_t[]", spill),
            spill_capacity,
            ffi.from_buffer("uint64_t[]", used),
            self.threads,
        )
        needed = int(used[0])
        return ids, counts, spill[: min(needed, spill_capacity)], needed

    def gather_fixed(
        self, fixed_ids: np.ndarray, counts: np.ndarray, starts: np.ndarray
    ) -> np.ndarray:
        out = np.empty(max(int(starts[-1]), 1), dtype=np.int32)
        lib.mc_cpu_gather_fixed_rows(
            ffi.from_buffer("int32_t[]", fixed_ids),
            ffi.from_buffer("int32_t[]", counts),
            ffi.from_buffer("int64_t[]", starts),
            len(starts) - 1,
            ffi.from_buffer("int32_t[]", out),
            self.threads,
        )
        return out[: int(starts[-1])]

    def count_raw(
        self, index: MetadataIndex, batch: ArrowTextBatch, rows: np.ndarray
    ) -> np.ndarray:
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        counts = np.empty(len(rows), dtype=np.int64)
        lib.mc_cpu_count_raw(
            *self._index_args(index),
            *self._text_args(batch, rows),
            ffi.from_buffer("int64_t[]", counts),
            self.threads,
        )
        return counts

    def fill_raw(
        self,
        index: MetadataIndex,
        batch: ArrowTextBatch,
        rows: np.ndarray,
        offsets: np.ndarray,
        total: int,
    ) -> np.ndarray:
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        ids = np.empty(max(total, 1), dtype=np.int32)
        lib.mc_cpu_fill_raw(
            *self._index_args(index),
            *self._text_args(batch, rows),
            ffi.from_buffer("int64_t[]", offsets),
            ffi.from_buffer("int32_t[]", ids),
            self.threads,
        )
        return ids[:total]
