"""One chunk of the balance stage in one pass over its pairs: the keep mask and the expected
kept size of every t (`balance_chunk`), as `draws.keep_masks` and `draws.expected_kept` give
them one by one, bit for bit.

Why one pass: both start from the count of each (text, entry) pair, and both find that most
matched texts hold an entry of ``count <= t`` (such a text is kept whatever its draws, and its
chance to be kept is exactly 1). Done apart, each gathered the counts of every pair, and the
expected size took a logarithm of every pair. Here the texts sure at the smallest t are found
once (from each pair's flag ``count <= t``, gathered from a per-entry flag array: a byte a
pair, not an 8-byte count; `csr_segments.segment_any`), and the counts, the draws, the keep
probabilities and the logarithms touch only the pairs of the other texts
(`draws._Undecided`): on 127k CC3M rows at t = 1,000 that is about one text in six.

Both steps run as two fused kernels (`draw_kernels`, kernels/draws.cuh) where the inputs are
the kernels' types (uint64 counts, int32 entry ids: what the pipeline holds); the NumPy / CuPy
formulas of `draws` remain the reference they equal, and the path for other types.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from metaclip_gpu.engine.arrays import array_module
from metaclip_gpu.pipeline.csr_segments import check_csr, segment_any
from metaclip_gpu.pipeline.draw_kernels import ChunkDraws, draw_chunk
from metaclip_gpu.pipeline.draws import (
    _check_t,
    _text_chances,
    _Undecided,
)


@dataclass(frozen=True)
class ChunkBalance:
    """What balancing decided for one chunk: `masks` (bool ``[n_texts]`` per t, the kept
    texts), `expected` (per t, the expected number kept) and `matched` (texts with a match)."""

    masks: dict[float, Any]
    expected: dict[float, float]
    matched: int


def balance_chunk(
    offsets: Any, entry_ids: Any, text_keys: Any, counts: Any, ts: Iterable[float], seed: int
) -> ChunkBalance:
    """`draws.keep_masks` and `draws.expected_kept` of every t in `ts`, from one pass.

    Arguments as `draws.keep_masks` (`text_keys`: an array of every text's key, or a function
    of the undecided texts' indices giving theirs, called once).
    """
    return _balance_chunk(offsets, entry_ids, text_keys, counts, ts, seed, fused=True)


def reference_balance_chunk(
    offsets: Any, entry_ids: Any, text_keys: Any, counts: Any, ts: Iterable[float], seed: int
) -> ChunkBalance:
    """`balance_chunk` through the NumPy / CuPy formulas of `draws` only, never the kernels:
    the reference the kernels are tested and timed against (bench/profile/profile_balance.py),
    and the path `balance_chunk` takes for inputs the kernels do not take."""
    return _balance_chunk(offsets, entry_ids, text_keys, counts, ts, seed, fused=False)


def _balance_chunk(
    offsets: Any,
    entry_ids: Any,
    text_keys: Any,
    counts: Any,
    ts: Iterable[float],
    seed: int,
    *,
    fused: bool,
) -> ChunkBalance:
    ts = list(ts)
    for t in ts:
        _check_t(t)
    xp = array_module(offsets, entry_ids, counts)
    offsets, entry_ids = check_csr(xp, offsets, entry_ids)
    counts = xp.asarray(counts)
    matched = int((offsets[1:] > offsets[:-1]).sum())
    if not ts:
        return ChunkBalance({}, {}, matched)
    drawn = draw_chunk(xp, offsets, entry_ids, counts, ts, text_keys, seed) if fused else None
    if drawn is not None:
        return _from_fused(xp, drawn, ts, matched)
    if 4 * len(entry_ids) >= len(counts):  # gather one byte a pair, not a count
        tail_pairs = (counts <= min(ts))[entry_ids]
    else:  # few pairs: no pass over every entry
        tail_pairs = counts[entry_ids] <= min(ts)
    sure = segment_any(xp, offsets, tail_pairs)
    undecided = _Undecided.draw(xp, offsets, entry_ids, sure, text_keys, seed)
    undecided_counts = counts[undecided.entry_ids].astype(xp.float64)
    masks: dict[float, Any] = {}
    expected: dict[float, float] = {}
    for t in ts:
        # p = t / max(count, t) of each undecided pair: `draws.keep_probability`'s values
        masks[t] = undecided.mask(sure, t / xp.maximum(undecided_counts, t))
        chances = sure.astype(xp.float64)  # the sure texts: 1.0; unmatched: 0.0
        if len(undecided.rows):
            chances[undecided.rows] = _text_chances(xp, undecided.offsets, undecided_counts, t)
        expected[t] = float(chances.sum())
    return ChunkBalance(masks, expected, matched)


def _from_fused(xp: Any, fused: ChunkDraws, ts: list[float], matched: int) -> ChunkBalance:
    """`ChunkBalance` from the kernels' draws: the sure texts plus each t's kept undecided
    ones, and the chances summed over the chunk as the reference sums them."""
    masks: dict[float, Any] = {}
    expected: dict[float, float] = {}
    for k, t in enumerate(ts):
        mask = fused.sure.copy()
        mask[fused.rows] = fused.kept[k]
        masks[t] = mask
        chances = fused.sure.astype(xp.float64)  # the sure texts: 1.0; unmatched: 0.0
        chances[fused.rows] = fused.chances[k]
        expected[t] = float(chances.sum())
    return ChunkBalance(masks, expected, matched)
