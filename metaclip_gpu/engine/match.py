"""Stage `match`: every text against every metadata entry, as a CSR of distinct entry ids.

`match(texts, index)` runs on either backend (see metaclip_gpu.engine.backends) with one code path:
one pass of the kernel matches every text; a text keeps its `local_cap` smallest distinct ids in
the kernel and appends the others to a spill of (row, id) keys, which a library sort merges
and de-duplicates, so no text is scanned twice. Only when a batch's spill runs out are the
texts that lost ids re-run through the count and fill kernels (and the spill grows for the
next batch).
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

_MAX_BATCH_ROWS = 2**31  # spill keys hold the row in their high 32 bits (kernels/match.cu)
_COUNT_SPILLED = -1  # MC_COUNT_SPILLED: the row holds local_cap ids, the rest are spilled
_COUNT_REDO = -2  # MC_COUNT_REDO: the spill ran out; the text is re-run


class _SpillSize:
    """Spill keys a batch gets room for: 64 a row (a text holds 64 ids in the kernel, so
    that is room for texts of twice that), at most 2**24 keys (128 MiB: a GPU batch of
    millions of rows does not reserve gigabytes for a rare case). After a batch that asked
    for more, both grow to 1.25x what it asked, so dense texts pay for the count/fill re-run
    once rather than in every batch. On the CPU untouched spill pages cost nothing."""

    def __init__(self, per_row: float = 64.0, most: int = 1 << 24) -> None:
        self.per_row = per_row
        self.most = most

    def capacity(self, n_rows: int) -> int:
        return max(min(int(n_rows * self.per_row), self.most), 4096)

    def update(self, needed: int, n_rows: int) -> None:
        if needed > self.capacity(n_rows):
            self.per_row = max(self.per_row, 1.25 * needed / max(n_rows, 1))
            self.most = max(self.most, int(1.25 * needed))


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
    if batch_rows is not None and not 0 < batch_rows < _MAX_BATCH_ROWS:  # None: backend's
        raise ValueError(f"batch_rows must be in [1, 2**31), got {batch_rows}")
    be = get_backend(backend, threads=threads) if isinstance(backend, str) else backend
    xp = be.xp
    parts_counts, parts_ids = [], []
    spill_size = _SpillSize()
    for batch in be.text_batches(texts, batch_rows):
        counts, ids = _match_batch(be, index, batch, spill_size)
        parts_counts.append(counts)
        parts_ids.append(ids)
    if not parts_counts:
        return MatchResult(xp.zeros(1, dtype=xp.int64), xp.zeros(0, dtype=xp.int32), be.name)
    counts = xp.concatenate(parts_counts)
    offsets = xp.zeros(len(counts) + 1, dtype=xp.int64)
    xp.cumsum(counts, out=offsets[1:])
    return MatchResult(offsets, xp.concatenate(parts_ids), be.name)


def _match_batch(
    be: Backend, index: MetadataIndex, batch: Any, spill_size: _SpillSize
) -> tuple[Any, Any]:
    """(per-text distinct counts, flat ids) for one batch."""
    xp = be.xp
    n_rows = len(batch)
    capacity = spill_size.capacity(n_rows)
    fixed_ids, counts, spill, needed = be.match_fixed(index, batch, capacity)
    spill_size.update(needed, n_rows)
    lengths = counts.astype(xp.int64)
    parts = []  # (rows, their counts, their ids) of the texts not complete in fixed_ids
    spilled_rows = xp.flatnonzero(counts == _COUNT_SPILLED)
    if len(spilled_rows):
        parts.append((spilled_rows, *_merge_spill(xp, fixed_ids, counts, spilled_rows, spill)))
    redo_rows = xp.flatnonzero(counts == _COUNT_REDO)
    if len(redo_rows):
        parts.append((redo_rows, *_match_long(be, index, batch, redo_rows)))
    for rows, row_counts, _ids in parts:
        lengths[rows] = row_counts
    starts = xp.zeros(len(lengths) + 1, dtype=xp.int64)
    xp.cumsum(lengths, out=starts[1:])
    flat = be.gather_fixed(fixed_ids, counts, starts)  # leaves the other rows' places
    for rows, row_counts, ids in parts:
        flat[_positions(xp, starts, rows, row_counts)] = ids
    return lengths, flat


def _merge_spill(xp: Any, fixed_ids: Any, counts: Any, rows: Any, spill: Any) -> tuple[Any, Any]:
    """The distinct ids of texts that spilled: their local_cap kernel ids (slot-major
    `fixed_ids` columns, each row's ascending) and their spill keys, merged.

    Only the spill keys are sorted: the kernel ids, as (row, id) keys row by row, are
    already one ascending run, and so are the sorted spill keys, so the last step merges
    two runs (`_merge_runs`) instead of sorting all the keys again (that sort, and the
    slot-major key build before it, took ~60% of this function, ~16% of `match()` on texts
    of 65+ ids)."""
    spill = xp.sort(spill[counts[spill >> 32] == _COUNT_SPILLED])  # texts that lost none
    local = (rows.astype(xp.int64) << 32)[:, None] | fixed_ids[:, rows].T.astype(xp.int64)
    keys = _unique_sorted(xp, _merge_runs(xp, local.ravel(), spill))
    row_counts = xp.bincount(keys >> 32, minlength=len(counts))[rows].astype(xp.int64)
    return row_counts, (keys & 0xFFFFFFFF).astype(xp.int32)


def _match_long(be: Backend, index: MetadataIndex, batch: Any, rows: Any) -> tuple[Any, Any]:
    """Texts whose spill ran out, re-run: count, fill, then sort-unique per text."""
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
    return _unique_sorted(xp, xp.sort(keys))


def _merge_runs(xp: Any, a: Any, b: Any) -> Any:
    """The values of two ascending arrays, ascending. NumPy's stable sort of int64 is a
    timsort, which finds the two runs and merges them in one linear pass (3.6x the default
    sort on a spilled batch's keys); CuPy's sort is a radix sort whatever it is asked
    (and accepts no `kind`)."""
    keys = xp.concatenate([a, b])
    return xp.sort(keys, kind="stable") if xp is np else xp.sort(keys)


def _unique_sorted(xp: Any, keys: Any) -> Any:
    """The distinct values of ascending `keys`: a neighbour mask."""
    if len(keys) < 2:
        return keys
    first = xp.ones(len(keys), dtype=bool)
    xp.not_equal(keys[1:], keys[:-1], out=first[1:])
    return keys[first]


def _positions(xp: Any, starts: Any, rows: Any, lengths: Any) -> Any:
    """Destination of element k of each listed row: starts[row] + k, flattened.

    Element j of the flat list, k-th of its row r (whose run starts at run_start[r]), goes to
    starts[r] + j - run_start[r]: one per-row offset spread over the row's elements, plus j.
    NumPy spreads it with ``repeat`` (a third of the searchsorted's time on 2M spilled ids)."""
    if xp is np:
        lengths = lengths.astype(np.int64, copy=False)
        run_start = np.cumsum(lengths) - lengths
        shift = np.repeat(starts[rows] - run_start, lengths)
        return shift + np.arange(len(shift), dtype=np.int64)
    owner, run_start = _runs(xp, lengths)
    return (starts[rows] - run_start)[owner] + xp.arange(len(owner), dtype=xp.int64)


def _runs(xp: Any, lengths: Any) -> tuple[Any, Any]:
    """For runs of the given lengths laid end to end: each element's run, and each run's start.

    A searchsorted rather than ``repeat`` with array counts, which CuPy accepts only from 14.1.
    """
    ends = xp.cumsum(lengths.astype(xp.int64))
    total = int(ends[-1]) if len(ends) else 0
    owner = xp.searchsorted(ends, xp.arange(total, dtype=xp.int64), side="right")
    return owner, ends - lengths
