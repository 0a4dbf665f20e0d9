"""The fused balance kernels (kernels/draws.cuh through `pipeline.draw_kernels`) against the
NumPy reference formulas of `draws`: the sure texts, the undecided texts' masks (bit for bit)
and their chances. On the host the chances are equal bit for bit too: the kernels add the same
log1p terms in the same order from 0.0 and call the same C library log1p / expm1 that NumPy
calls on this machine (NumPy has no SIMD float64 log1p / expm1 without AVX-512); the test
would show a libm that differs. On the emulated device (the host build of the same source)
the same; a real GPU's libdevice may differ in the last bit (`test_real_gpu_agrees`).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metaclip_gpu.pipeline.chunk_draws import balance_chunk, reference_balance_chunk
from metaclip_gpu.pipeline.csr_segments import csr_rows, segment_any
from metaclip_gpu.pipeline.draw_kernels import DRAW_MAX_TS, draw_chunk
from metaclip_gpu.pipeline.draws import _text_chances, expected_kept, keep_masks

# Counts spanning the tail and the head, ties with the thresholds below, and uint64 values too
# large for an exact double (their conversion must round as NumPy's does).
COUNT_CHOICES = [0, 1, 2, 3, 7, 10, 99, 100, 101, 1_000, 12_345, 10**6, 2**53 + 1, 2**64 - 1]
T_CHOICES = [0.5, 1.0, 2.0, 7.0, 10.0, 99.5, 100.0, 1_000.0, 5e5, 2.0**60]


def pool(lengths: list[int], n_entries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A CSR with distinct ids per text (as SPEC 3 guarantees), in random order."""
    rng = np.random.default_rng(seed)
    parts = [rng.choice(n_entries, size=min(k, n_entries), replace=False) for k in lengths]
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(p) for p in parts])
    ids = np.concatenate([np.zeros(0, np.int64), *parts]).astype(np.int32)
    return offsets, ids


def assert_equals_reference(offsets, ids, counts, ts, keys, seed) -> None:
    fused = draw_chunk(np, offsets, ids, counts, ts, keys, seed)
    assert fused is not None
    sure = segment_any(np, offsets, counts[ids] <= min(ts))
    rows = np.flatnonzero((np.diff(offsets) > 0) & ~sure)
    np.testing.assert_array_equal(fused.sure, sure)
    np.testing.assert_array_equal(fused.rows, rows)
    assert fused.kept.shape == fused.chances.shape == (len(ts), len(rows))
    masks = keep_masks(offsets, ids, keys, counts, ts, seed)
    sub_offsets, positions = csr_rows(np, offsets, rows)
    for k, t in enumerate(ts):
        np.testing.assert_array_equal(fused.kept[k], masks[t][rows], err_msg=f"t={t}")
        want = _text_chances(np, sub_offsets, counts[ids[positions]], t)
        got = fused.chances[k]
        assert np.array_equal(got.view(np.uint64), want.view(np.uint64)), (t, got, want)


@settings(max_examples=150, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 9), max_size=40),
    n_entries=st.integers(1, 30),
    count_picks=st.lists(st.integers(0, len(COUNT_CHOICES) - 1), min_size=30, max_size=30),
    ts=st.lists(st.sampled_from(T_CHOICES), min_size=1, max_size=11, unique=True),
    seed=st.integers(-(2**64), 2**64 - 1),
    signed_keys=st.booleans(),
    layout_seed=st.integers(0, 2**32 - 1),
)
def test_kernels_equal_the_reference_on_random_csrs(
    lengths, n_entries, count_picks, ts, seed, signed_keys, layout_seed
) -> None:
    """Empty texts, chunks of no pair, none or every text undecided, more thresholds than one
    launch takes (DRAW_MAX_TS), negative and huge seeds, int64 keys (two's complement)."""
    offsets, ids = pool(lengths, n_entries, layout_seed)
    counts = np.array([COUNT_CHOICES[i] for i in count_picks[:n_entries]], dtype=np.uint64)
    rng = np.random.default_rng(layout_seed)
    keys = rng.integers(0, 2**64, len(lengths), dtype=np.uint64)
    if signed_keys:
        keys = keys.view(np.int64)
    assert_equals_reference(offsets, ids, counts, ts, keys, seed)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kernels_equal_the_reference_on_a_zipf_pool(seed: int) -> None:
    """20,000 texts, Zipf-like counts: many distinct log1p / expm1 arguments, bit for bit."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 25, 20_000).tolist()
    offsets, ids = pool(lengths, 3_000, seed)
    counts = (50_000 / np.arange(1, 3_001) ** 1.1).astype(np.uint64) + 1
    keys = rng.integers(-(2**63), 2**63, 20_000, dtype=np.int64)
    ts = [3.0, 40.0, 333.3, 2_500.0]
    assert_equals_reference(offsets, ids, counts, ts, keys, seed - 1)


@pytest.mark.parametrize("seed", [0, 1])
def test_balance_chunk_equals_its_reference_path(seed: int) -> None:
    """`balance_chunk` (the kernels) and `reference_balance_chunk` (NumPy only): the same
    masks, expected sizes (bit for bit) and matched texts, over more thresholds than one
    launch takes, with the keys asked lazily."""
    rng = np.random.default_rng(seed)
    offsets, ids = pool(rng.integers(0, 15, 5_000).tolist(), 700, seed)
    counts = np.exp(rng.uniform(0, np.log(80_000), 700)).astype(np.uint64)
    keys = rng.integers(-(2**63), 2**63, 5_000, dtype=np.int64)
    ts = [float(t) for t in np.geomspace(2.0, 1e5, DRAW_MAX_TS + 3)]
    fused = balance_chunk(offsets, ids, lambda rows: keys[rows], counts, ts, seed)
    want = reference_balance_chunk(offsets, ids, lambda rows: keys[rows], counts, ts, seed)
    assert fused.matched == want.matched
    for t in ts:
        np.testing.assert_array_equal(fused.masks[t], want.masks[t])
        assert fused.expected[t] == want.expected[t]
    kept = [int(fused.masks[t].sum()) for t in ts]
    assert kept == sorted(kept) and kept[0] < kept[-1]


def test_keys_are_asked_once_for_the_undecided_texts_only() -> None:
    offsets, ids = pool([3, 0, 2, 4, 1], 6, 0)
    counts = np.array([1, 500, 500, 500, 500, 500], dtype=np.uint64)
    asked: list[np.ndarray] = []

    def keys_of(rows: np.ndarray) -> np.ndarray:
        asked.append(rows)
        return rows.astype(np.uint64) * 7

    fused = draw_chunk(np, offsets, ids, counts, [10.0], keys_of, 3)
    assert fused is not None
    [rows] = asked
    np.testing.assert_array_equal(rows, fused.rows)
    asked.clear()
    all_sure = np.ones(6, dtype=np.uint64)
    fused = draw_chunk(np, offsets, ids, all_sure, [10.0], keys_of, 3)
    assert fused is not None and not asked and fused.kept.shape == (1, 0)


def test_an_entry_id_outside_the_counts_names_its_text() -> None:
    offsets = np.array([0, 2, 3, 5], dtype=np.int64)
    counts = np.full(10, 1_000, dtype=np.uint64)
    for bad in (10, -1):
        ids = np.array([1, 2, 3, 4, bad], dtype=np.int32)
        with pytest.raises(ValueError, match=f"text 2 of the chunk has entry id {bad}"):
            draw_chunk(np, offsets, ids, counts, [5.0], np.arange(3), 0)
        with pytest.raises(ValueError, match="outside the 10 entries"):
            balance_chunk(offsets, ids, np.arange(3), counts, [5.0], 0)


def test_other_dtypes_take_the_reference_path_with_the_same_result() -> None:
    offsets, ids = pool([4, 0, 3, 5, 2] * 50, 40, 1)
    rng = np.random.default_rng(1)
    counts = rng.integers(1, 400, 40).astype(np.uint64)
    keys = rng.integers(0, 2**63, 250)
    ts = [5.0, 50.0]
    want = balance_chunk(offsets, ids, keys, counts, ts, 4)
    for other_ids, other_counts in ((ids.astype(np.int64), counts), (ids, counts.astype(np.int64))):
        assert draw_chunk(np, offsets, other_ids, other_counts, ts, keys, 4) is None
        got = balance_chunk(offsets, other_ids, keys, other_counts, ts, 4)
        for t in ts:
            np.testing.assert_array_equal(got.masks[t], want.masks[t])
            assert got.expected[t] == want.expected[t] == expected_kept(offsets, ids, counts, t)


def test_the_launch_limit_is_the_kernels() -> None:
    from metaclip_gpu.engine._native import lib

    assert int(lib.mc_draw_max_ts()) == DRAW_MAX_TS


def _device_case() -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(5)
    offsets, ids = pool(rng.integers(0, 12, 3_000).tolist(), 400, 5)
    counts = np.exp(rng.uniform(0, np.log(50_000), 400)).astype(np.uint64)
    keys = rng.integers(-(2**63), 2**63, 3_000, dtype=np.int64)
    return offsets, ids, counts, keys


@pytest.mark.emulated_gpu
def test_emulated_device_equals_the_host(emulated_cupy) -> None:
    """`balance_chunk` on CuPy (emulated) launches both kernels and gives the host's masks and
    expected sizes; on the emulated device (host libm) the chances are the host's bits."""
    import gpu_emulation

    cp = emulated_cupy
    offsets, ids, counts, keys = _device_case()
    ts = [20.0, 300.0, 5_000.0]
    host = balance_chunk(offsets, ids, keys, counts, ts, -9)
    device = balance_chunk(
        cp.asarray(offsets), cp.asarray(ids), lambda rows: cp.asarray(keys)[rows],
        cp.asarray(counts), ts, -9,
    )  # fmt: skip
    assert {name for name, _, _ in gpu_emulation.launch_log} == {
        "mc_sure_texts",
        "mc_draw_undecided",
    }
    assert device.matched == host.matched
    reference = reference_balance_chunk(
        cp.asarray(offsets), cp.asarray(ids), cp.asarray(keys), cp.asarray(counts), ts, -9
    )
    for t in ts:
        assert isinstance(device.masks[t], cp.ndarray)
        np.testing.assert_array_equal(device.masks[t].get(), host.masks[t])
        np.testing.assert_array_equal(reference.masks[t].get(), host.masks[t])
        assert device.expected[t] == host.expected[t]
    fused = draw_chunk(cp, cp.asarray(offsets), cp.asarray(ids), cp.asarray(counts), ts, keys, 1)
    want = draw_chunk(np, offsets, ids, counts, ts, keys, 1)
    assert fused is not None and want is not None
    np.testing.assert_array_equal(fused.chances.get().view(np.uint64), want.chances.view(np.uint64))


@pytest.mark.gpu
def test_real_gpu_agrees() -> None:
    """On a device: the same masks; the expected sizes within a few ulps a text (libdevice's
    log1p / expm1 against the host's libm)."""
    import cupy

    offsets, ids, counts, keys = _device_case()
    ts = [20.0, 300.0, 5_000.0]
    host = balance_chunk(offsets, ids, keys, counts, ts, 11)
    device = balance_chunk(
        cupy.asarray(offsets), cupy.asarray(ids), cupy.asarray(keys), cupy.asarray(counts), ts, 11
    )
    for t in ts:
        np.testing.assert_array_equal(device.masks[t].get(), host.masks[t])
        assert device.expected[t] == pytest.approx(host.expected[t], rel=1e-12)
