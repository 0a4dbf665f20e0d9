"""`chunk_draws.balance_chunk` (masks and expected sizes of every t from one pass) gives what
`draws.keep_masks` and `draws.expected_kept` give, bit for bit, and `expected_kept` (which
skips the logarithms of texts kept for sure) equals the plain formula over every pair."""

from __future__ import annotations

import numpy as np
import pytest

from metaclip_gpu.pipeline.chunk_draws import balance_chunk
from metaclip_gpu.pipeline.csr_segments import segment_any
from metaclip_gpu.pipeline.draws import _text_chances, expected_kept, keep_masks


def random_pool(seed: int, n_texts: int = 3000, n_entries: int = 400):
    """A CSR of distinct sorted ids per text (some texts unmatched) and counts spanning
    1 .. 50,000, so that some texts are sure at each t and others are not."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 12, n_texts)
    lengths[rng.random(n_texts) < 0.1] = 0
    lists = [np.sort(rng.choice(n_entries, size=k, replace=False)) for k in lengths]
    offsets = np.zeros(n_texts + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = np.concatenate(lists).astype(np.int32)
    counts = np.exp(rng.uniform(0, np.log(50_000), n_entries)).astype(np.uint64)
    keys = rng.integers(0, 2**63, n_texts, dtype=np.int64).view(np.uint64)
    return offsets, ids, counts, keys


def plain_expected(offsets: np.ndarray, ids: np.ndarray, counts: np.ndarray, t: float) -> float:
    """``sum over texts of -expm1(sum log1p(-p))`` over EVERY pair (the formula as written)."""
    c = counts[ids].astype(np.float64)
    owner = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    with np.errstate(divide="ignore"):
        log_miss = np.log1p(-(t / np.maximum(c, t)))
    sums = np.bincount(owner, weights=log_miss, minlength=len(offsets) - 1)
    return float((-np.expm1(sums)).sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_expected_kept_equals_the_plain_formula_bit_for_bit(seed: int) -> None:
    offsets, ids, counts, _ = random_pool(seed)
    for t in (0.5, 1.0, 7.0, 300.0, 5_000.0, 1e9):
        assert expected_kept(offsets, ids, counts, t) == plain_expected(offsets, ids, counts, t)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_balance_chunk_equals_keep_masks_and_expected_kept(seed: int) -> None:
    offsets, ids, counts, keys = random_pool(seed)
    ts = [20.0, 300.0, 5_000.0, 60_000.0]
    asked: list[np.ndarray] = []

    def keys_of(rows: np.ndarray) -> np.ndarray:
        asked.append(rows)
        return keys[rows]

    decided = balance_chunk(offsets, ids, keys_of, counts, ts, seed=7)
    want = keep_masks(offsets, ids, keys, counts, ts, seed=7)
    assert len(asked) == 1  # the keys of the undecided texts, once
    assert 0 < len(asked[0]) < len(keys)
    assert decided.matched == int((np.diff(offsets) > 0).sum())
    for t in ts:
        assert np.array_equal(decided.masks[t], want[t])
        assert decided.expected[t] == expected_kept(offsets, ids, counts, t)
    kept = [int(decided.masks[t].sum()) for t in ts]
    assert kept == sorted(kept) and kept[0] < kept[-1]  # the t really matter here


def test_balance_chunk_of_unmatched_and_empty_chunks() -> None:
    counts = np.array([5, 10], dtype=np.uint64)
    none = balance_chunk(
        np.zeros(4, np.int64), np.zeros(0, np.int32), np.arange(3), counts, [1.0], 0
    )
    assert none.matched == 0 and not none.masks[1.0].any() and none.expected[1.0] == 0.0
    empty = balance_chunk(
        np.zeros(1, np.int64), np.zeros(0, np.int32), np.arange(0), counts, [1.0], 0
    )
    assert empty.masks[1.0].shape == (0,) and empty.expected[1.0] == 0.0
    with pytest.raises(ValueError, match="positive finite"):
        balance_chunk(np.zeros(1, np.int64), np.zeros(0, np.int32), np.arange(0), counts, [0.0], 0)


def test_balance_chunk_with_few_pairs_for_many_entries_equals_keep_masks() -> None:
    """Fewer pairs than a quarter of the entries: the pairs' counts are gathered directly
    (no flag array over every entry); the same masks and expected sizes."""
    offsets, ids, counts, keys = random_pool(3, n_texts=40, n_entries=5000)
    assert 4 * len(ids) < len(counts)
    ts = [20.0, 300.0, 5_000.0]
    decided = balance_chunk(offsets, ids, keys, counts, ts, seed=2)
    want = keep_masks(offsets, ids, keys, counts, ts, seed=2)
    for t in ts:
        np.testing.assert_array_equal(decided.masks[t], want[t])
        assert decided.expected[t] == expected_kept(offsets, ids, counts, t)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def testsegment_any_equals_a_cumulative_sum_of_the_flags(seed: int) -> None:
    """`segment_any` (NumPy: ``logical_or.reduceat`` over the non-empty texts) against the
    definition, with empty texts first, last and in runs, and a CSR of no pairs at all."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 6, 500)
    lengths[rng.random(500) < 0.3] = 0
    lengths[:3] = 0
    lengths[-4:] = 0
    for lens in (lengths, np.zeros(7, dtype=np.int64)):
        offsets = np.zeros(len(lens) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        flags = rng.random(int(offsets[-1])) < 0.2
        csum = np.concatenate([[0], np.cumsum(flags, dtype=np.int64)])
        want = csum[offsets[1:]] - csum[offsets[:-1]] > 0
        np.testing.assert_array_equal(segment_any(np, offsets, flags), want)


@pytest.mark.parametrize("seed", [3, 4])
def test_text_chances_of_a_csr_of_only_undecided_texts_take_no_gather_and_agree(seed) -> None:
    """Every text matched and none sure (what `balance_chunk` passes at the smallest t):
    `_text_chances` uses the CSR as it is; the values equal those of the same texts inside a
    CSR that also holds an unmatched text (which takes the gather), bit for bit."""
    offsets, ids, counts, _keys = random_pool(seed)
    counts = np.maximum(counts, np.uint64(100))  # no pair is sure at t = 50
    matched = np.flatnonzero(np.diff(offsets) > 0)
    lengths = np.diff(offsets)[matched]
    only = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    pair_counts = counts[ids]
    direct = _text_chances(np, only, pair_counts, 50.0)
    with_empty = np.concatenate([only, [only[-1]]])  # one more text, unmatched
    gathered = _text_chances(np, with_empty, pair_counts, 50.0)
    assert len(direct) == len(matched) and (direct > 0).all() and (direct < 1).all()
    assert np.array_equal(direct, gathered[:-1]) and gathered[-1] == 0.0
    assert direct.sum() == plain_expected(only, ids, counts, 50.0)
