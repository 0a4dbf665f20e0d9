"""``--target-size``: the t whose expected kept size is the target, from per-shard figures.

`draws.solve_t` needs the match lists of the whole pool in memory (about 4 bytes per match
and 8 per text: tens of GB for a billion texts). Here the pool is never gathered: each pass
asks every match file for its expected kept size at a GRID of t values
(`file_expected`, one file streamed in batches; a task per file on a dask cluster), and the
client only adds up those few numbers per file. The expected kept size is non-decreasing in
t, so the grid narrows the bracket ``[lo, hi]`` (``E(lo) < target <= E(hi)``) by a factor of
``GRID_POINTS + 1`` per pass: geometric steps while ``hi > 2 lo``, then arithmetic, until the
bracket is within a relative ``balance.SOLVE_RTOL`` (1e-9), as `solve_t`'s bisection; the
result is the bracket's midpoint, so it agrees with `solve_t` to about 1e-9 (the sums are
added in another order). Each pass reads the match files' ``entry_ids`` column once; with 3
points (a bracket 4x narrower per pass) the 1M-row CC3M pool of ``bench/bench_checksums.py``
took 18 passes, in about the time of `solve_t` with the pool in memory (32 points: 8 passes,
but 4-5x the compute, as every point costs a pass over the pairs).

Like `solve_t`, a file drops from each evaluation the texts with an entry of ``count <= lo``
(kept with probability 1 for every t still in the bracket) and counts them once. The edge
cases are `solve_t`'s: a target of at least the number of matched texts gives
``max(count)`` (at least 1); the search goes below ``t = 1`` when even that keeps too many;
and no t keeps fewer texts than those matching an entry of count 0 (a ValueError).

Memory: one batch of one match file per task; the client holds the counts and ``GRID_POINTS``
floats per file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from metaclip_gpu import storage
from metaclip_gpu.pipeline.draws import SOLVE_MAX_ITER, SOLVE_RTOL

GRID_POINTS = 3  # per pass; more points: fewer passes over the files, more compute
GRID_CELLS = 1 << 22  # (pair, t) cells evaluated at once: 32 MiB of float64
BATCH_ROWS = 1 << 20  # floats summed batch by batch: another size moves the t solved


@dataclass
class FileExpected:
    """One match file's figures at a grid of t: expected kept per t, matched texts, the
    largest count among its matches and the texts sure to be kept for every t >= ``lo``."""

    expected: np.ndarray  # float64 [len(ts)]
    matched: int
    max_count: float
    sure: int

    def __add__(self, other: FileExpected) -> FileExpected:
        return FileExpected(
            self.expected + other.expected,
            self.matched + other.matched,
            max(self.max_count, other.max_count),
            self.sure + other.sure,
        )


def _batch_expected(
    lists: Any, counts: np.ndarray, ts: Sequence[float], lo: float, out: FileExpected
) -> None:
    lengths = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(lists)
    ids = np.asarray(flat.to_numpy(zero_copy_only=False) if len(flat) else [], dtype=np.int64)
    pair_counts = counts[ids].astype(np.float64)
    matched = lengths > 0
    out.matched += int(matched.sum())
    if len(pair_counts):
        out.max_count = max(out.max_count, float(pair_counts.max()))
    owner = np.repeat(np.arange(len(lengths)), lengths)
    sure = np.bincount(owner[pair_counts <= lo], minlength=len(lengths)) > 0
    out.sure += int(sure.sum())
    rest = matched & ~sure
    offsets = np.zeros(int(rest.sum()) + 1, dtype=np.int64)
    np.cumsum(lengths[rest], out=offsets[1:])
    rest_counts = pair_counts[rest[owner]]
    if len(rest_counts):
        out.expected += _grid_chances(offsets, rest_counts, np.asarray(ts, dtype=np.float64))


def _grid_chances(offsets: np.ndarray, pair_counts: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Sum over texts of ``1 - prod(1 - p)`` at each t of `ts` (every text has a pair): the
    same per-text formula as `draws.keep_chances` (``-expm1(sum log1p(-p))``, exactly 1 with
    a ``p = 1`` pair), for the whole grid at once, in slices of about ``GRID_CELLS`` cells."""
    total = np.zeros(len(ts), dtype=np.float64)
    n_texts = len(offsets) - 1
    start = 0
    while start < n_texts:
        stop = int(np.searchsorted(offsets, offsets[start] + GRID_CELLS // len(ts), "right"))
        stop = min(max(stop - 1, start + 1), n_texts)
        a, b = int(offsets[start]), int(offsets[stop])
        c = pair_counts[a:b, None]
        with np.errstate(divide="ignore"):  # log1p(-1) = -inf: such a text's chance is 1
            logs = np.log1p(-(ts / np.maximum(c, ts)))
        sums = np.add.reduceat(logs, offsets[start:stop] - a, axis=0)
        total += (-np.expm1(sums)).sum(axis=0)
        start = stop
    return total


def file_expected(
    match_file: str | os.PathLike[str], counts: np.ndarray, ts: Sequence[float], lo: float = 0.0
) -> FileExpected:
    """`FileExpected` of one match file (its ``entry_ids`` column, streamed) at each of `ts`
    (all ``>= lo``); ``expected`` includes the sure texts."""
    out = FileExpected(np.zeros(len(ts), dtype=np.float64), 0, 0.0, 0)
    parquet = storage.parquet_file(match_file)
    try:
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=["entry_ids"]):
            _batch_expected(batch.column(0), counts, ts, lo, out)
    finally:
        parquet.close()
    out.expected += out.sure
    return out


Evaluate = Callable[[Sequence[float], float], FileExpected]


def _grid(lo: float, hi: float, points: int) -> list[float]:
    """`points` values strictly inside (lo, hi): geometric while hi > 2 lo, else arithmetic."""
    steps = range(1, points + 1)
    if lo > 0 and hi > 2.0 * lo:
        ratio = math.log(hi / lo) / (points + 1)
        values = [lo * math.exp(ratio * k) for k in steps]
    else:
        values = [lo + (hi - lo) * k / (points + 1) for k in steps]
    return sorted({v for v in values if lo < v < hi})


def solve_from(evaluate: Evaluate, target_size: float, points: int = GRID_POINTS) -> float:
    """The t with expected kept size `target_size`, `evaluate(ts, lo)` giving the pool's
    figures at `ts` (module docstring)."""
    if not target_size > 0:
        raise ValueError(f"target_size must be > 0, got {target_size}")
    first = evaluate([1.0], 0.0)
    hi = max(first.max_count, 1.0)
    if target_size >= first.matched:
        return hi
    lo = 1.0
    if first.expected[0] > target_size:  # below t = 1 (as `solve_t`: -> first.sure as t -> 0)
        hi = 1.0
        while True:
            if first.sure >= target_size:
                raise ValueError(
                    f"no t > 0 keeps as few as {target_size} texts in expectation: "
                    f"{first.sure} texts match an entry of count 0 (counts not of this pool?)"
                )
            ts = [hi * 2.0**-k for k in range(points, 0, -1)]
            figures = evaluate(ts, 0.0)
            below = [t for t, e in zip(ts, figures.expected, strict=True) if e <= target_size]
            if below:
                lo = below[-1]
                hi = min((t for t in ts if t > lo), default=hi)
                break
            hi = ts[0]
            if hi < 1e-300:
                raise ValueError(f"no t > 0 keeps as few as {target_size} texts in expectation")
    for _ in range(SOLVE_MAX_ITER):
        if hi - lo <= SOLVE_RTOL * hi:
            break
        ts = _grid(lo, hi, points)
        if not ts:
            break
        figures = evaluate(ts, lo)
        for t, e in zip(ts, figures.expected, strict=True):
            if e < target_size:
                lo = t
            else:
                hi = t
                break
    return 0.5 * (lo + hi)


def solve_target(
    match_files: Sequence[Path], counts: np.ndarray, target_size: float, client: Any = None
) -> float:
    """The t of `target_size` over the match files (in this process, or one dask task per
    file per pass with `client`); equal to `draws.solve_t` of their concatenation."""
    if not match_files:
        raise RuntimeError("no match outputs to solve --target-size on")
    counts = np.asarray(counts)
    # hash=False: a key of its own (the balance stage scatters the same counts next; under one
    # content key, this release could drop them before its tasks ran: "lost dependencies")
    shared = client.scatter(counts, broadcast=True, hash=False) if client is not None else counts

    def evaluate(ts: Sequence[float], lo: float) -> FileExpected:
        if client is not None:
            futures = client.map(
                file_expected, match_files, counts=shared, ts=ts, lo=lo, pure=False
            )
            parts = client.gather(futures)
        else:
            parts = [file_expected(path, counts, ts, lo) for path in match_files]
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        return total

    return solve_from(evaluate, target_size)
