"""Stage `balance` (SPEC section 4): counter-based draws, keep masks, expected size, solving t."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from metaclip_gpu.pipeline.count import entry_counts
from metaclip_gpu.pipeline.draws import (
    csr_uniform_draws,
    expected_kept,
    keep_chances,
    keep_mask,
    keep_mask_from_probs,
    keep_masks,
    keep_probability,
    solve_t,
    uniform_draws,
)

M64 = (1 << 64) - 1


# --- the draw formula, written out independently with Python ints ------------------------------


def py_splitmix64(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def py_draw(seed: int, key: int, entry: int) -> float:
    h = py_splitmix64((seed & M64) ^ py_splitmix64((key & M64) ^ py_splitmix64(entry)))
    return (h >> 11) / 2.0**53


# (seed, key, entry) -> u, pinned once from py_draw (as exact float hex).
PINNED = [
    (0, 0, 0, "0x1.1c13ade1c7e5cp-3"),
    (1, 2, 3, "0x1.ac54fedc523fdp-1"),
    (20240601, 123456789, 499999, "0x1.f5d352af75250p-5"),
    (-1, -(2**63), 2**31 - 1, "0x1.dab87661757edp-1"),
    (2**64 - 1, 2**64 - 1, 7, "0x1.afbab2c29203cp-2"),
]


def csr_from_lists(lists: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(lists) + 1, dtype=np.int64)
    np.cumsum([len(ids) for ids in lists], out=offsets[1:])
    return offsets, np.asarray([i for ids in lists for i in ids], dtype=np.int32)


def zipf_pool(
    seed: int, n_texts: int, n_entries: int, max_per_text: int = 4, empty_share: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """A CSR of Zipf-distributed entries: up to max_per_text distinct per text, some none."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_entries + 1) ** 1.1
    weights /= weights.sum()
    sizes = rng.integers(1, max_per_text + 1, size=n_texts)
    sizes[rng.random(n_texts) < empty_share] = 0
    draws = rng.choice(n_entries, size=(n_texts, max_per_text), p=weights).tolist()
    lists = [sorted(set(row[:k])) for row, k in zip(draws, sizes.tolist(), strict=True)]
    return csr_from_lists(lists)


def text_keys(n: int, seed: int = 99) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**63, size=n, dtype=np.int64)


def independent_keep_probs(offsets: np.ndarray, ids: np.ndarray, counts: np.ndarray, t: float):
    """Per-text keep probability 1 - prod(1 - p), by a Python loop over texts."""
    p = [t / max(float(c), t) for c in counts.tolist()]
    out = []
    for i in range(len(offsets) - 1):
        miss = 1.0
        for e in ids[offsets[i] : offsets[i + 1]].tolist():
            miss *= 1.0 - p[e]
        out.append(1.0 - miss)
    return np.array(out)


# --- uniform draws ------------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "key", "entry", "pinned"), PINNED)
def test_draws_pinned_values(seed: int, key: int, entry: int, pinned: str) -> None:
    assert py_draw(seed, key, entry) == float.fromhex(pinned)
    key_array = np.array([key], dtype=np.int64) if key < 0 else np.array([key], dtype=np.uint64)
    got = uniform_draws(seed, key_array, np.array([entry], dtype=np.int32))
    assert got.dtype == np.float64
    assert got[0] == float.fromhex(pinned)


def test_draws_match_python_formula_on_random_triples() -> None:
    rng = np.random.default_rng(5)
    keys = rng.integers(0, 2**64, size=200, dtype=np.uint64)
    ids = rng.integers(0, 2**31, size=200, dtype=np.int64).astype(np.int32)
    for seed in (0, 7, 2**64 - 3, -12345):
        got = uniform_draws(seed, keys, ids)
        want = [py_draw(seed, int(k), int(e)) for k, e in zip(keys, ids, strict=True)]
        assert got.tolist() == want


def test_draws_depend_only_on_seed_key_entry() -> None:
    rng = np.random.default_rng(0)
    n = 20_000
    keys = rng.integers(0, 2**63, size=n, dtype=np.int64)
    ids = rng.integers(0, 500_000, size=n).astype(np.int32)
    u = uniform_draws(3, keys, ids)
    assert ((u >= 0.0) & (u < 1.0)).all()
    np.testing.assert_array_equal(uniform_draws(3, keys, ids), u)  # deterministic
    perm = rng.permutation(n)
    np.testing.assert_array_equal(uniform_draws(3, keys[perm], ids[perm]), u[perm])
    chunks = [uniform_draws(3, keys[a : a + 3001], ids[a : a + 3001]) for a in range(0, n, 3001)]
    np.testing.assert_array_equal(np.concatenate(chunks), u)
    # Signed keys are their two's complement; any integer id dtype gives the same draws.
    np.testing.assert_array_equal(uniform_draws(3, keys.view(np.uint64), ids.astype(np.int64)), u)
    other = uniform_draws(4, keys, ids)
    assert (other != u).mean() > 0.999
    assert abs(np.corrcoef(u, other)[0, 1]) < 0.05
    with pytest.raises(TypeError):
        uniform_draws(3, keys.astype(np.float64), ids)
    with pytest.raises(ValueError, match="shape"):
        uniform_draws(3, keys[:-1], ids)


def _ks_distance(u: np.ndarray) -> float:
    x = np.sort(u)
    n = len(x)
    i = np.arange(1, n + 1)
    return float(max((i / n - x).max(), (x - (i - 1) / n).max()))


@pytest.mark.parametrize("layout", ["sequential_keys", "sequential_entries", "random"])
def test_draws_are_roughly_uniform(layout: str) -> None:
    n = 1_000_000
    rng = np.random.default_rng(1)
    if layout == "sequential_keys":
        keys, ids = np.arange(n, dtype=np.uint64), np.full(n, 17, dtype=np.int32)
    elif layout == "sequential_entries":
        keys, ids = np.full(n, 42, dtype=np.uint64), np.arange(n, dtype=np.int32)
    else:
        keys = rng.integers(0, 2**64, size=n, dtype=np.uint64)
        ids = rng.integers(0, 2**31, size=n).astype(np.int32)
    u = uniform_draws(2024, keys, ids)
    # KS: the 99.9% critical value at n = 1e6 is about 1.95 / sqrt(n) = 0.002.
    assert _ks_distance(u) < 0.003
    assert abs(u.mean() - 0.5) < 0.002


def test_csr_draws_use_each_texts_key() -> None:
    offsets, ids = csr_from_lists([[1, 4], [], [0], [2, 3, 9]])
    keys = np.array([10, 11, 12, 13], dtype=np.uint64)
    got = csr_uniform_draws(offsets, ids, keys, 8)
    want = [py_draw(8, k, e) for k, e in [(10, 1), (10, 4), (12, 0), (13, 2), (13, 3), (13, 9)]]
    assert got.tolist() == want


# --- keep probability and masks ---------------------------------------------------------------


def test_keep_probability() -> None:
    counts = np.array([0, 1, 5000, 5001, 20_000, 100_000], dtype=np.uint64)
    p = keep_probability(counts, 5000)
    assert p.dtype == np.float64
    assert p.tolist() == [1.0, 1.0, 1.0, 5000 / 5001, 0.25, 0.05]
    for bad in (0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="t must be"):
            keep_probability(counts, bad)


def test_keep_mask_matches_python_oracle() -> None:
    offsets, ids = zipf_pool(3, 2000, 60)
    counts = entry_counts(ids, 60)
    keys = text_keys(2000)
    t = float(np.median(counts[counts > 0]))
    p = keep_probability(counts, t).tolist()
    mask = keep_mask(offsets, ids, keys, counts, t, seed=11)
    assert mask.dtype == bool
    assert mask.shape == (2000,)
    want = [
        any(py_draw(11, int(keys[i]), e) < p[e] for e in ids[offsets[i] : offsets[i + 1]].tolist())
        for i in range(2000)
    ]
    assert mask.tolist() == want
    assert 0 < mask.sum() < (offsets[1:] > offsets[:-1]).sum()


def test_keep_mask_rules() -> None:
    offsets, ids = zipf_pool(4, 5000, 80)
    counts = entry_counts(ids, 80)
    keys = text_keys(5000)
    t = 150.0
    mask = keep_mask(offsets, ids, keys, counts, t, seed=1)
    lengths = np.diff(offsets)
    assert not mask[lengths == 0].any()  # no match: never kept
    text_max = np.zeros(5000)
    has = lengths > 0
    text_min = np.full(5000, np.inf)
    np.minimum.at(text_min, np.repeat(np.arange(5000), lengths), counts[ids].astype(float))
    np.maximum.at(text_max, np.repeat(np.arange(5000), lengths), counts[ids].astype(float))
    assert mask[has & (text_max <= t)].all()  # all entries count <= t: always kept
    assert mask[has & (text_min <= t)].all()  # any entry count <= t: always kept
    assert not mask[has & (text_min > t)].all()  # head-only texts are subsampled
    # Everything kept once t >= max count.
    np.testing.assert_array_equal(
        keep_mask(offsets, ids, keys, counts, float(counts.max()), seed=1), has
    )


def test_keep_mask_deterministic_across_chunking_and_seed_sensitive() -> None:
    offsets, ids = zipf_pool(5, 6000, 100)
    counts = entry_counts(ids, 100)  # global counts, shared by every chunk
    keys = text_keys(6000)
    t = 80.0
    whole = keep_mask(offsets, ids, keys, counts, t, seed=7)
    np.testing.assert_array_equal(keep_mask(offsets, ids, keys, counts, t, seed=7), whole)
    for cut in (1, 2500, 5999):
        first = keep_mask(offsets[: cut + 1], ids[: offsets[cut]], keys[:cut], counts, t, seed=7)
        second = keep_mask(
            offsets[cut:] - offsets[cut], ids[offsets[cut] :], keys[cut:], counts, t, seed=7
        )
        np.testing.assert_array_equal(np.concatenate([first, second]), whole)
    # Texts reordered (with their keys): the same texts are kept.
    lists = [ids[offsets[i] : offsets[i + 1]].tolist() for i in range(6000)]
    perm = np.random.default_rng(0).permutation(6000)
    p_offsets, p_ids = csr_from_lists([lists[i] for i in perm])
    np.testing.assert_array_equal(
        keep_mask(p_offsets, p_ids, keys[perm], counts, t, seed=7), whole[perm]
    )
    other = keep_mask(offsets, ids, keys, counts, t, seed=8)
    assert (other != whole).sum() > 50


def test_keep_masks_several_t_from_one_pass() -> None:
    offsets, ids = zipf_pool(6, 4000, 70)
    counts = entry_counts(ids, 70)
    keys = text_keys(4000)
    ts = [20.0, 60.0, 200.0, 1000.0]
    masks = keep_masks(offsets, ids, keys, counts, ts, seed=3)
    assert list(masks) == ts
    for t in ts:
        np.testing.assert_array_equal(masks[t], keep_mask(offsets, ids, keys, counts, t, seed=3))
        p = keep_probability(counts, t).tolist()
        want = [
            any(
                py_draw(3, int(keys[i]), e) < p[e]
                for e in ids[offsets[i] : offsets[i + 1]].tolist()
            )
            for i in range(4000)
        ]
        assert masks[t].tolist() == want  # the texts only sure at a larger t included
    sizes = [int(masks[t].sum()) for t in ts]
    assert sizes == sorted(sizes)
    for small, large in itertools.pairwise(ts):
        assert not (masks[small] & ~masks[large]).any()  # nested: same draws


def test_empty_csr() -> None:
    offsets, ids = np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int32)
    counts = np.zeros(3, dtype=np.uint64)
    assert keep_mask(offsets, ids, np.zeros(0, np.uint64), counts, 5, 0).shape == (0,)
    assert expected_kept(offsets, ids, counts, 5) == 0.0
    offsets = np.zeros(4, dtype=np.int64)  # three texts, no matches
    assert not keep_mask(offsets, ids, np.arange(3, dtype=np.uint64), counts, 5, 0).any()
    assert solve_t(offsets, ids, counts, 10) == 1.0
    with pytest.raises(ValueError, match="offsets"):
        keep_mask(np.array([0, 2]), ids, np.zeros(1, np.uint64), counts, 5, 0)


# --- balancing statistics (issue 3) -----------------------------------------------------------

HEAD_COUNTS = [20_000, 40_000, 60_000, 80_000, 100_000]
T = 5_000


def head_tail_pool() -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """5 head entries (ids 0..4) with HEAD_COUNTS texts of exactly one head entry each, then
    20,000 tail texts of 1..3 tail entries (ids 5..1004, every count far below T).

    Returns (offsets, ids, head entry of each text or -1, number of head texts), texts shuffled.
    """
    rng = np.random.default_rng(2025)
    head = np.repeat(np.arange(5), HEAD_COUNTS)
    lists: list[list[int]] = [[int(e)] for e in head]
    for _ in range(20_000):
        k = int(rng.integers(1, 4))
        lists.append(sorted((5 + rng.choice(1000, size=k, replace=False)).tolist()))
    label = np.concatenate([head, np.full(20_000, -1)])
    perm = rng.permutation(len(lists))
    offsets, ids = csr_from_lists([lists[i] for i in perm])
    return offsets, ids, label[perm], len(head)


@pytest.fixture(scope="module")
def pool() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    offsets, ids, label, _ = head_tail_pool()
    counts = entry_counts(ids, 1005)
    return offsets, ids, label, counts, text_keys(len(label), seed=123)


def test_head_entries_keep_about_t(pool) -> None:
    offsets, ids, label, counts, keys = pool
    assert counts[:5].tolist() == HEAD_COUNTS
    assert counts[5:].max() < T
    for seed in (0, 1, 2):
        mask = keep_mask(offsets, ids, keys, counts, T, seed)
        kept_per_head = np.bincount(label[mask & (label >= 0)], minlength=5)
        for n, kept in zip(HEAD_COUNTS, kept_per_head.tolist(), strict=True):
            # kept ~ Binomial(n, p = T / n): mean n p = T, sd sqrt(n p (1 - p)).
            p = T / n
            mean, sd = n * p, math.sqrt(n * p * (1 - p))
            assert abs(kept - mean) < 5 * sd, (seed, n, kept, mean, sd)
        # The five together: mean 5 T, sd the root of the summed variances.
        total_sd = math.sqrt(sum(T * (1 - T / n) for n in HEAD_COUNTS))
        assert abs(kept_per_head.sum() - 5 * T) < 5 * total_sd
        assert mask[label < 0].all()  # every tail-only text is kept


def test_expected_size_matches_mean_over_seeds(pool) -> None:
    offsets, ids, _, counts, keys = pool
    expected = expected_kept(offsets, ids, counts, T)
    assert expected == pytest.approx(5 * T + 20_000, rel=1e-12)  # single-entry head texts

    # A pool where texts match several head entries, so the product in the formula matters.
    m_offsets, m_ids = zipf_pool(8, 30_000, 40, max_per_text=4)
    m_counts = entry_counts(m_ids, 40)
    t = 3000.0
    q = independent_keep_probs(m_offsets, m_ids, m_counts, t)
    m_expected = expected_kept(m_offsets, m_ids, m_counts, t)
    assert m_expected == pytest.approx(q.sum(), rel=1e-12)
    assert 0.2 * len(q) < m_expected < 0.8 * len(q)
    m_keys = text_keys(30_000, seed=5)

    # The kept size is a sum of independent per-text Bernoullis: var = sum of q (1 - q).
    head_var = sum(T * (1 - T / n) for n in HEAD_COUNTS)  # tail texts have q = 1
    cases = {
        "head_tail": (offsets, ids, counts, keys, float(T), expected, head_var),
        "multi": (m_offsets, m_ids, m_counts, m_keys, t, m_expected, float((q * (1 - q)).sum())),
    }
    for name, (o, i, c, k, tt, e, var) in cases.items():
        sizes = [int(m.sum()) for m in (keep_mask(o, i, k, c, tt, seed) for seed in range(30))]
        se = math.sqrt(var / len(sizes))  # standard error of the mean of 30 seeds
        mean = float(np.mean(sizes))
        assert abs(mean - e) < 4 * se, (name, mean, e, se)


# --- solving for t ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def solve_pool() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    offsets, ids = zipf_pool(9, 40_000, 50, max_per_text=3)
    return offsets, ids, entry_counts(ids, 50)


def test_expected_kept_is_monotone_in_t(solve_pool) -> None:
    offsets, ids, counts = solve_pool
    n_matched = int((np.diff(offsets) > 0).sum())
    ts = np.geomspace(0.01, float(counts.max()) * 2, 60)
    sizes = [expected_kept(offsets, ids, counts, float(t)) for t in ts]
    assert all(b >= a for a, b in itertools.pairwise(sizes))
    assert sizes[0] < 0.01 * n_matched
    assert expected_kept(offsets, ids, counts, float(counts.max())) == n_matched
    assert sizes[-1] == n_matched


def test_solve_t_recovers_known_t(solve_pool) -> None:
    offsets, ids, counts = solve_pool
    assert (counts > 1234.5).sum() >= 5
    target = expected_kept(offsets, ids, counts, 1234.5)
    t = solve_t(offsets, ids, counts, target)
    assert t == pytest.approx(1234.5, rel=1e-6)
    assert expected_kept(offsets, ids, counts, t) == pytest.approx(target, rel=1e-8)
    # Below t = 1 too.
    small_target = expected_kept(offsets, ids, counts, 0.25)
    assert solve_t(offsets, ids, counts, small_target) == pytest.approx(0.25, rel=1e-6)


def test_solve_t_edges(solve_pool) -> None:
    offsets, ids, counts = solve_pool
    n_matched = int((np.diff(offsets) > 0).sum())
    assert solve_t(offsets, ids, counts, n_matched) == float(counts.max())
    assert solve_t(offsets, ids, counts, 10 * n_matched) == float(counts.max())
    for bad in (0, -5):
        with pytest.raises(ValueError, match="target_size"):
            solve_t(offsets, ids, counts, bad)
    # Counts that are not this pool's: texts with a count-0 entry are kept for every t.
    zeroed = counts.copy()
    zeroed[0] = 0
    owner = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    always = len(np.unique(owner[ids == 0]))
    assert always > 100
    with pytest.raises(ValueError, match="count 0"):
        solve_t(offsets, ids, zeroed, always // 2)
    assert solve_t(offsets, ids, zeroed, always + 50) > 0


# --- NumPy == CuPy ----------------------------------------------------------------------------


@pytest.mark.gpu
def test_numpy_and_cupy_agree_bit_for_bit() -> None:
    import cupy

    offsets, ids = zipf_pool(10, 20_000, 90)
    counts = entry_counts(ids, 90)
    keys = text_keys(20_000)
    g_offsets, g_ids, g_keys = cupy.asarray(offsets), cupy.asarray(ids), cupy.asarray(keys)
    g_counts = entry_counts(g_ids, 90)
    assert isinstance(g_counts, cupy.ndarray)
    assert g_counts.dtype == np.uint64
    np.testing.assert_array_equal(g_counts.get(), counts)

    rng = np.random.default_rng(0)
    flat_keys = rng.integers(0, 2**64, size=100_000, dtype=np.uint64)
    flat_ids = rng.integers(0, 2**31, size=100_000).astype(np.int32)
    for seed in (0, 5, 2**64 - 1, -3):
        cpu = uniform_draws(seed, flat_keys, flat_ids)
        gpu = uniform_draws(seed, cupy.asarray(flat_keys), cupy.asarray(flat_ids))
        assert isinstance(gpu, cupy.ndarray)
        np.testing.assert_array_equal(gpu.get().view(np.uint64), cpu.view(np.uint64))

    ts = [10.0, 75.5, 400.0]
    cpu_masks = keep_masks(offsets, ids, keys, counts, ts, seed=9)
    gpu_masks = keep_masks(g_offsets, g_ids, g_keys, g_counts, ts, seed=9)
    for t in ts:
        np.testing.assert_array_equal(gpu_masks[t].get(), cpu_masks[t])
        assert expected_kept(g_offsets, g_ids, g_counts, t) == pytest.approx(
            expected_kept(offsets, ids, counts, t), rel=1e-12
        )
    target = expected_kept(offsets, ids, counts, 123.0)
    assert solve_t(g_offsets, g_ids, g_counts, target) == pytest.approx(123.0, rel=1e-6)


def test_keys_as_a_function_are_asked_only_for_the_undecided_texts() -> None:
    offsets, ids = zipf_pool(7, 3000, 80)
    counts = entry_counts(ids, 80)
    keys = text_keys(3000)
    asked: list[np.ndarray] = []

    def keys_of(rows: np.ndarray) -> np.ndarray:
        asked.append(rows)
        return keys[rows]

    ts = [30.0, 300.0]
    lazy = keep_masks(offsets, ids, keys_of, counts, ts, seed=5)
    eager = keep_masks(offsets, ids, keys, counts, ts, seed=5)
    for t in ts:
        np.testing.assert_array_equal(lazy[t], eager[t])
    [rows] = asked
    tail = np.flatnonzero(counts <= 30)
    decided = np.array([np.isin(ids[a:b], tail).any() for a, b in itertools.pairwise(offsets)])
    np.testing.assert_array_equal(rows, np.flatnonzero((np.diff(offsets) > 0) & ~decided))
    assert 0 < len(rows) < 3000


def test_pair_probability_form_equals_the_count_form() -> None:
    """Per-pair probabilities (worldwide: one array per language) give the same mask as the
    counts they come from, and the same chances as the expected size sums."""
    offsets, ids = zipf_pool(9, 3000, 70)
    counts = entry_counts(ids, 70)
    keys = text_keys(3000)
    for t in (15.0, 150.0):
        pair_probs = keep_probability(counts, t)[ids]
        np.testing.assert_array_equal(
            keep_mask_from_probs(offsets, ids, keys, pair_probs, seed=4),
            keep_mask(offsets, ids, keys, counts, t, seed=4),
        )
        chances = keep_chances(offsets, pair_probs)
        assert math.isclose(chances.sum(), expected_kept(offsets, ids, counts, t), rel_tol=1e-12)
