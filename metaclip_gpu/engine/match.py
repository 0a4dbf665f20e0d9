"""Stage `match`: every text against every metadata entry, as a CSR of distinct entry ids.

`match(texts, index)` runs on either backend (see metaclip_gpu.engine.backends) with one code path:
the single-pass kernel handles texts with up to `local_cap` distinct matches; the rare longer
texts are re-run through the count and fill kernels and de-duplicated with a library sort.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from metaclip_gpu.engine.arrays import to_host
from metaclip_gpu.engine.backends import Backend, BackendName, get_backend
from metaclip_gpu.engine.backends.cpu import DEFAULT_BATCH_ROWS as DEFAULT_BATCH_ROWS  # re-export
from metaclip_gpu.engine.index import MetadataIndex


@dataclass(frozen=True)
class MatchResult:
    """Per-text sorted distinct entry ids in CSR form (NumPy on CPU, CuPy on GPU)."""

    offsets: Any  # int64 [n_texts + 1]
    entry_ids: Any  # int32 [offsets[-1]]
    backend: str

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def ids_of(self, text: int) -> np.ndarray:
        """The entry ids of one text (a host array)."""
        start, stop = int(self.offsets[text]), int(self.offsets[text + 1])
        return to_host(self.entry_ids[start:stop])

    def to_lists(self) -> list[list[int]]:
        offsets, ids = to_host(self.offsets), to_host(self.entry_ids)
        return [ids[offsets[i] : offsets[i + 1]].tolist() for i in range(len(offsets) - 1)]

    def to_arrow(self) -> pa.Array:
        """A list<int32> column (large_list when the ids exceed int32 list offsets)."""
        offsets, ids = to_host(self.offsets), to_host(self.entry_ids)
        if offsets[-1] < 2**31:
            return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(ids))
        return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(ids))

    def matched_texts(self) -> int:
        return int((self.offsets[1:] > self.offsets[:-1]).sum())


def match(
    texts: Any,
    index: MetadataIndex,
    *,
    backend: BackendName | str | Backend = "auto",
    threads: int | None = None,
    batch_rows: int | None = None,
) -> MatchResult:
    """Matches `texts` against `index` (SPEC section 2) and returns the CSR of entry ids.

    `texts`: a pyarrow string/binary (Chunked)Array, a cuDF or pandas Series, or a sequence of
    ``str``/``bytes``/``None``. A null text matches nothing; binary texts (and invalid UTF-8
    inside string columns) are matched as bytes. `threads` sets the CPU backend's threads
    (default: all cores available to the process). `batch_rows`: texts a kernel launch
    covers; default the backend's own size (CPU: `DEFAULT_BATCH_ROWS`; GPU: hundreds of MB of
    text, `backends.device_layout.GPU_BATCH_BYTES`). The GPU backend is the process's one
    (`get_backend`): each index is uploaded once, whatever the number of calls.
    """
    if batch_rows is not None and batch_rows <= 0:  # None: the backend's own batch size
        raise ValueError(f"batch_rows must be positive, got {batch_rows}")
    be = get_backend(backend, threads=threads) if isinstance(backend, str) else backend
    xp = be.xp
    parts_counts, parts_ids = [], []
    for batch in be.text_batches(texts, batch_rows):
        counts, ids = _match_batch(be, index, batch)
        parts_counts.append(counts)
        parts_ids.append(ids)
    if not parts_counts:
        return MatchResult(xp.zeros(1, dtype=xp.int64), xp.zeros(0, dtype=xp.int32), be.name)
    counts = xp.concatenate(parts_counts)
    offsets = xp.zeros(len(counts) + 1, dtype=xp.int64)
    xp.cumsum(counts, out=offsets[1:])
    return MatchResult(offsets, xp.concatenate(parts_ids), be.name)


def _match_batch(be: Backend, index: MetadataIndex, batch: Any) -> tuple[Any, Any]:
    """(per-text distinct counts, flat ids) for one batch."""
    xp = be.xp
    fixed_ids, counts = be.match_fixed(index, batch)
    lengths = counts.astype(xp.int64)
    long_rows = xp.flatnonzero(counts < 0)
    if len(long_rows):
        long_counts, long_ids = _match_long(be, index, batch, long_rows)
        lengths[long_rows] = long_counts
    starts = xp.zeros(len(lengths) + 1, dtype=xp.int64)
    xp.cumsum(lengths, out=starts[1:])
    flat = be.gather_fixed(fixed_ids, counts, starts)  # leaves the long rows' places
    if len(long_rows):
        flat[_positions(xp, starts, long_rows, long_counts)] = long_ids
    return lengths, flat


def _match_long(be: Backend, index: MetadataIndex, batch: Any, rows: Any) -> tuple[Any, Any]:
    """Texts with more than `local_cap` distinct ids: count, fill, then sort-unique per text."""
    xp = be.xp
    raw_counts = be.count_raw(index, batch, rows)
    raw_offsets = xp.zeros(len(rows) + 1, dtype=xp.int64)
    xp.cumsum(raw_counts, out=raw_offsets[1:])
    total = int(raw_offsets[-1])
    raw_ids = be.fill_raw(index, batch, rows, raw_offsets[:-1], total)
    owner, _ = _runs(xp, raw_counts)
    keys = _sorted_unique(xp, (owner << 32) | raw_ids.astype(xp.int64))
    ids = (keys & 0xFFFFFFFF).astype(xp.int32)
    counts = xp.bincount(keys >> 32, minlength=len(rows)).astype(xp.int64)
    return counts, ids


def _sorted_unique(xp: Any, keys: Any) -> Any:
    """The distinct values of `keys`, ascending: a sort and a neighbour mask. (NumPy 2.3+'s
    ``unique`` hashes int64 first, 50x slower than sorting on these million-element keys.)"""
    keys = xp.sort(keys)
    if len(keys) < 2:
        return keys
    first = xp.ones(len(keys), dtype=bool)
    xp.not_equal(keys[1:], keys[:-1], out=first[1:])
    return keys[first]


def _positions(xp: Any, starts: Any, rows: Any, lengths: Any) -> Any:
    """Destination of element k of each listed row: starts[row] + k, flattened."""
    owner, run_start = _runs(xp, lengths)
    within = xp.arange(len(owner), dtype=xp.int64) - run_start[owner]
    return starts[rows][owner] + within


def _runs(xp: Any, lengths: Any) -> tuple[Any, Any]:
    """For runs of the given lengths laid end to end: each element's run, and each run's start.

    A searchsorted rather than ``repeat`` with array counts, which CuPy accepts only from 14.1.
    """
    ends = xp.cumsum(lengths.astype(xp.int64))
    total = int(ends[-1]) if len(ends) else 0
    owner = xp.searchsorted(ends, xp.arange(total, dtype=xp.int64), side="right")
    return owner, ends - lengths
