"""Stage `count` (SPEC section 3): texts per metadata entry, as exact uint64 counts.

`count[e]` is the number of texts whose match list contains entry `e`. A match list holds each
entry at most once (SPEC 3, and `MatchResult` stores sorted distinct ids), so the counts of a
flat CSR `entry_ids` array are its bincount. Counts of partitions add up to the counts of the
whole (`add_counts`, `reduce_counts`), exactly, whatever the sharding.

Every function takes its array module from its inputs (NumPy on CPU, CuPy on GPU, see
`array_module`), so one code path serves both backends; CuPy is never imported here.

Output formats:

- `save_entry_counts` writes MetaCLIP's counts file: ``np.save`` of a 1-D ``uint64`` array of
  length ``len(metadata)`` (the reference, ``metaclip1/balancing.py`` and
  ``metaclip1/indexing/entry_count.py``, allocates ``np.zeros(len(metadata), dtype=np.uint64)``
  "to be safe for scaling" and saves it with ``np.save``; it calls the file
  ``entry_count.npy``, this project ``entry_counts.npy``). ``np.load`` reads it back.
- `counts_table` gives the Parquet table: ``entry_id`` int32, ``entry`` string, ``count``
  uint64.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from metaclip_gpu.engine.arrays import array_module, to_host
from metaclip_gpu.oserrors import with_path

COUNT_DTYPE = np.uint64
"""The dtype of every counts array (MetaCLIP's, and exact far beyond any pool size)."""


def entry_counts(entry_ids: Any, n_entries: int) -> Any:
    """Texts per entry: ``uint64[n_entries]``, the bincount of the flat CSR `entry_ids`.

    `entry_ids` is the flat id array of a match CSR (`MatchResult.entry_ids`; any integer
    dtype), in which each text lists an entry at most once, so a text counts each of its
    entries once. The result lives on the same device as `entry_ids`. Raises ValueError for an
    id outside ``[0, n_entries)``.
    """
    xp = array_module(entry_ids)
    ids = xp.asarray(entry_ids)
    if ids.ndim != 1:
        raise ValueError(f"entry_ids must be 1-D, got shape {ids.shape}")
    if n_entries < 0:
        raise ValueError(f"n_entries must be >= 0, got {n_entries}")
    if ids.dtype.kind not in "iu":
        raise TypeError(f"entry_ids must be integers, got dtype {ids.dtype}")
    if len(ids) == 0:
        return xp.zeros(n_entries, dtype=COUNT_DTYPE)
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= n_entries:
        raise ValueError(f"entry ids must lie in [0, {n_entries}), found [{low}, {high}]")
    return xp.bincount(ids.astype(xp.int64, copy=False), minlength=n_entries).astype(COUNT_DTYPE)


def add_counts(a: Any, b: Any) -> Any:
    """The exact uint64 sum of two counts arrays of the same length (partition counts).

    When one is a CuPy array and the other a NumPy array, both are brought to the host and the
    result is a NumPy array.
    """
    if array_module(a) is not array_module(b):
        a, b = to_host(a), to_host(b)
    xp = array_module(a)
    a, b = _as_counts(xp, a), _as_counts(xp, b)
    if a.shape != b.shape:
        raise ValueError(f"counts of different lengths: {a.shape[0]} and {b.shape[0]}")
    return a + b


def reduce_counts(parts: Iterable[Any], n_entries: int | None = None) -> Any:
    """The exact uint64 sum of the counts arrays in `parts` (per-partition counts -> global).

    With no parts, zeros of length `n_entries` (a ValueError when `n_entries` is not given).
    The sum does not depend on the order or grouping of the parts.
    """
    total: Any = None
    for part in parts:
        if total is None:
            total = _as_counts(array_module(part), part).copy()
        else:
            total = add_counts(total, part)
    if total is None:
        if n_entries is None:
            raise ValueError("reduce_counts of no parts needs n_entries")
        return np.zeros(n_entries, dtype=COUNT_DTYPE)
    if n_entries is not None and total.shape[0] != n_entries:
        raise ValueError(f"counts have length {total.shape[0]}, expected {n_entries}")
    return total


def save_entry_counts(counts: Any, path_npy: str | os.PathLike[str]) -> Path:
    """Writes `counts` in MetaCLIP's format: ``np.save`` of a 1-D ``uint64`` array.

    The file is written under a temporary name in the same folder and renamed into place, so
    a reader never sees a partial file. `path_npy` is used as given (no ``.npy`` is appended).
    Returns the path.
    """
    host = _as_counts(np, to_host(counts))
    path = Path(path_npy)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with with_path(tmp), os.fdopen(fd, "wb") as f:
            np.save(f, host, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_entry_counts(path_npy: str | os.PathLike[str]) -> np.ndarray:
    """Reads a counts file written by `save_entry_counts` (or MetaCLIP) as 1-D ``uint64``."""
    counts = np.load(Path(path_npy), allow_pickle=False)
    return _as_counts(np, counts)


def counts_table(counts: Any, entries: Sequence[str] | pa.Array | pa.ChunkedArray) -> pa.Table:
    """The counts as a table for Parquet: ``entry_id`` int32, ``entry`` string, ``count`` uint64.

    One row per entry, in id order; `entries` are the metadata strings (``entries[i]`` is entry
    ``i``), of the same length as `counts`.
    """
    host = _as_counts(np, to_host(counts))
    if isinstance(entries, pa.ChunkedArray):
        entries = entries.combine_chunks()
    entry_array = entries if isinstance(entries, pa.Array) else pa.array(entries, type=pa.string())
    if len(entry_array) != len(host):
        raise ValueError(f"{len(entry_array)} entries for {len(host)} counts")
    if not (pa.types.is_string(entry_array.type) or pa.types.is_large_string(entry_array.type)):
        entry_array = entry_array.cast(pa.string())
    return pa.table(
        {
            "entry_id": pa.array(np.arange(len(host), dtype=np.int32)),
            "entry": entry_array,
            "count": pa.array(host, type=pa.uint64()),
        }
    )


def _as_counts(xp: Any, counts: Any) -> Any:
    """`counts` as a 1-D uint64 array of module `xp` (integers only, none negative)."""
    array = xp.asarray(counts)
    if array.ndim != 1:
        raise ValueError(f"counts must be 1-D, got shape {array.shape}")
    if array.dtype == COUNT_DTYPE:
        return array
    if array.dtype.kind not in "iu":
        raise TypeError(f"counts must be integers, got dtype {array.dtype}")
    if array.dtype.kind == "i" and len(array) and int(array.min()) < 0:
        raise ValueError("counts must not be negative")
    return array.astype(COUNT_DTYPE)
