"""Per-text reductions over the flat (text, entry) pairs of a match CSR (``offsets`` int64
``[n_texts + 1]`` from 0 to the number of pairs, as in `MatchResult`), on NumPy or CuPy
(the array module is the caller's `xp`), with no Python loop over texts: the text of each
pair (`pair_owner`), the sub-CSR of some texts (`csr_rows`) and whether any of a text's pair
flags is set (`segment_any`). The balance stage's draws, masks and expected sizes
(`draws`, `chunk_draws`) are built on them.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def check_csr(xp: Any, offsets: Any, entry_ids: Any) -> tuple[Any, Any]:
    """The CSR as (int64 offsets, entry ids) of module `xp`, checked for shape and ends."""
    offsets = xp.asarray(offsets)
    entry_ids = xp.asarray(entry_ids)
    if offsets.ndim != 1 or len(offsets) < 1:
        raise ValueError("offsets must be 1-D with at least one element")
    if entry_ids.ndim != 1:
        raise ValueError(f"entry_ids must be 1-D, got shape {entry_ids.shape}")
    offsets = offsets.astype(xp.int64, copy=False)
    if int(offsets[0]) != 0 or int(offsets[-1]) != len(entry_ids):
        raise ValueError(
            f"offsets must run from 0 to len(entry_ids) = {len(entry_ids)}, "
            f"got {int(offsets[0])}..{int(offsets[-1])}"
        )
    return offsets, entry_ids


def pair_owner(xp: Any, offsets: Any, n_pairs: int) -> Any:
    """The text of each flat pair, int64 ``[n_pairs]``: a cumulative sum of segment starts.

    (``repeat`` with array counts needs CuPy >= 14.1; this works in every version.)
    """
    if n_pairs == 0:
        return xp.zeros(0, dtype=xp.int64)
    starts = xp.bincount(offsets[1:-1], minlength=n_pairs + 1)[:n_pairs]
    return xp.cumsum(starts, dtype=xp.int64)


def csr_rows(xp: Any, offsets: Any, rows: Any) -> tuple[Any, Any]:
    """The sub-CSR of the texts `rows` (ascending): (int64 offsets, flat pair positions)."""
    lengths = offsets[1:][rows] - offsets[:-1][rows]
    sub_offsets = xp.zeros(len(rows) + 1, dtype=xp.int64)
    xp.cumsum(lengths, out=sub_offsets[1:])
    owner = pair_owner(xp, sub_offsets, int(sub_offsets[-1]))
    within = xp.arange(len(owner), dtype=xp.int64) - sub_offsets[:-1][owner]
    return sub_offsets, offsets[:-1][rows][owner] + within


def covers(offsets: Any, n_pairs: int) -> bool:
    """Whether the CSR `offsets` runs from pair 0 to pair `n_pairs`, every pair in one text."""
    return int(offsets[0]) == 0 and int(offsets[-1]) == n_pairs


def segment_any(xp: Any, offsets: Any, flags: Any) -> Any:
    """Per text, whether any of its pairs' bool `flags` is set: bool ``[n_texts]``.

    NumPy: ``logical_or.reduceat`` over the non-empty texts' starts (each segment then runs to
    the next start, the last to the end: the CSR covers `flags` whole), about 6x a cumulative
    sum of the flags on 5M pairs; CuPy, or a CSR that does not cover `flags`: that sum."""
    n_texts = len(offsets) - 1
    if xp is np and len(flags) and covers(offsets, len(flags)):
        nonempty = offsets[1:] > offsets[:-1]
        out = np.zeros(n_texts, dtype=bool)
        out[nonempty] = np.logical_or.reduceat(flags, offsets[:-1][nonempty])
        return out
    csum = xp.zeros(len(flags) + 1, dtype=xp.int64)
    xp.cumsum(flags, dtype=xp.int64, out=csum[1:])
    return csum[offsets[1:]] - csum[offsets[:-1]] > 0
