"""Texts with more distinct ids than the kernel's per-text list (issue 13: no cliff).

mc_match_fixed keeps a text's `local_cap` smallest ids and spills the rest as (row, id) keys
that match.py merges; only texts whose spill ran out are re-run through count and fill. Its
output rows are slot-major (issue 10: coalesced stores). Every path must give the reference's
ids.
"""

from __future__ import annotations

import importlib
import itertools
import random

import numpy as np
import pytest

from metaclip_gpu import MetadataIndex, match
from metaclip_gpu.engine.backends.cpu import CPUBackend
from metaclip_gpu.engine.reference import reference_match

match_module = importlib.import_module("metaclip_gpu.engine.match")  # the package exports `match`
WORDS = [f"w{k}" for k in range(150)]
ENTRIES = WORDS + [f"{a} {b}" for a, b in itertools.pairwise(WORDS)] + ["w7", "w9 w10"]


def _texts(n: int = 300, seed: int = 5) -> list[str | None]:
    rng = random.Random(seed)
    texts: list[str | None] = []
    for _ in range(n):
        length = rng.choice([0, 1, 3, 10, 30, 60, 120])
        start = rng.randrange(len(WORDS))
        run = [WORDS[(start + k) % len(WORDS)] for k in range(length)]
        rng.shuffle(run[: length // 3])  # some order broken: fewer bigrams
        texts.append(rng.choice([" ", " . ", ", "]).join(run))
    texts[4] = None
    texts[5] = " ".join(WORDS + WORDS[::-1])  # repeats: spilled ids come again
    texts[6] = " ".join(WORDS[:20] + WORDS[19::-1] + WORDS[5:9])  # repeats below local_cap
    return texts


@pytest.fixture(scope="module")
def index() -> MetadataIndex:
    return MetadataIndex.from_entries(ENTRIES, cache=False)


@pytest.fixture(scope="module")
def texts() -> list[str | None]:
    return _texts()


@pytest.fixture(scope="module")
def expected(texts: list[str | None]) -> list[list[int]]:
    return [reference_match(text, ENTRIES) for text in texts]


def test_long_texts_are_spilled_and_merged(index, texts, expected) -> None:
    cap = CPUBackend().local_cap
    assert sum(len(ids) > cap for ids in expected) > 50  # the case this test is about
    assert max(len(ids) for ids in expected) > 4 * cap
    for threads in (1, 2):
        assert match(texts, index, backend="cpu", threads=threads).to_lists() == expected
    assert match(texts, index, backend="cpu", batch_rows=7).to_lists() == expected


class _TinySpill(match_module._SpillSize):
    """A spill with room for `room` keys, whatever it is asked: forces the count/fill re-run."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room
        self.seen: list[int] = []

    def capacity(self, n_rows: int) -> int:
        return self.room

    def update(self, needed: int, n_rows: int) -> None:
        self.seen.append(needed)


@pytest.mark.parametrize("room", [0, 1, 40])
def test_spill_that_runs_out_reruns_those_texts(index, texts, expected, monkeypatch, room) -> None:
    spills: list[_TinySpill] = []

    def tiny() -> _TinySpill:
        spills.append(_TinySpill(room))
        return spills[-1]

    monkeypatch.setattr(match_module, "_SpillSize", tiny)
    assert match(texts, index, backend="cpu", batch_rows=64).to_lists() == expected
    assert max(spills[0].seen) > room  # some batch ran out: the re-run path was taken


def test_backend_reports_redo_and_spilled_counts(index, texts, expected) -> None:
    be = CPUBackend(threads=1)
    batch = next(be.text_batches(texts, len(texts)))
    _ids, counts, spill, needed = be.match_fixed(index, batch, 1 << 20)
    assert needed == len(spill) > 0
    long_rows = [i for i, want in enumerate(expected) if len(want) > be.local_cap]
    assert np.flatnonzero(counts == -1).tolist() == long_rows
    assert set((spill >> 32).tolist()) <= set(long_rows)
    _ids, counts, spill, needed = be.match_fixed(index, batch, 3)
    assert len(spill) == 3 and needed > 3
    assert (counts == -2).any() and set(np.flatnonzero(counts < 0)) == set(long_rows)


def test_fixed_rows_are_slot_major(index, texts, expected) -> None:
    """Issue 10: slot k of text i is ids[k, i], so a warp's k-th stores are contiguous."""
    be = CPUBackend(threads=2)
    batch = next(be.text_batches(texts, len(texts)))
    ids, counts, _spill, _needed = be.match_fixed(index, batch, 1 << 20)
    assert ids.shape == (be.local_cap, len(texts))
    for i, want in enumerate(expected):
        if counts[i] >= 0:
            assert ids[: counts[i], i].tolist() == want
        else:
            assert ids[:, i].tolist() == sorted(ids[:, i].tolist())
            assert set(ids[:, i].tolist()) <= set(want)


def test_batch_rows_must_fit_the_spill_keys(index) -> None:
    with pytest.raises(ValueError, match="batch_rows"):
        match(["w1"], index, backend="cpu", batch_rows=2**31)


def test_spill_size_is_capped_and_grows_after_a_batch_that_needed_more() -> None:
    size = match_module._SpillSize()
    assert size.capacity(10) == 4096
    assert size.capacity(1 << 16) == 64 << 16  # 64 keys a row on the CPU's batches
    assert size.capacity(1 << 24) == 1 << 24  # capped for a device-sized batch
    size.update(needed=3 << 24, n_rows=1 << 24)
    assert size.capacity(1 << 24) >= 3 << 24
    before = size.capacity(100)
    size.update(needed=10, n_rows=100)  # it fitted: nothing changes
    assert size.capacity(100) == before


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_merge_spill_gives_each_spilled_row_its_ids_sorted_and_distinct(seed) -> None:
    """_merge_spill sorts only the spill keys and merges them with the kernel's rows (each
    ascending): the same ids as sorting every key, for spill keys that come in any order
    (two threads interleave their rows), repeat (an id spilled twice), and include keys of
    rows that ran out (count -2: dropped, re-run elsewhere)."""
    rng = np.random.default_rng(seed)
    cap, n_rows = 8, 40
    counts = rng.choice([3, match_module._COUNT_SPILLED, match_module._COUNT_REDO], n_rows)
    fixed = np.zeros((cap, n_rows), dtype=np.int32)  # slot-major, as mc_match_fixed writes
    want, spill = {}, []
    for row in range(n_rows):
        ids = rng.choice(1000, size=cap + 6, replace=False)
        fixed[:, row] = np.sort(ids[:cap])  # the kernel's list: its first cap ids, ascending
        extra = ids[cap:]
        if counts[row] != 3:
            spill += [(row << 32) | int(i) for i in np.concatenate([extra, extra[:2]])]
        if counts[row] == match_module._COUNT_SPILLED:
            want[row] = sorted(ids.tolist())
    spill_keys = rng.permutation(np.array(spill, dtype=np.int64))
    rows = np.flatnonzero(counts == match_module._COUNT_SPILLED)
    row_counts, ids = match_module._merge_spill(np, fixed, counts, rows, spill_keys)
    ends = np.cumsum(row_counts)
    got = {int(r): ids[e - c : e].tolist() for r, c, e in zip(rows, row_counts, ends, strict=True)}
    assert got == want
