"""MetaCLIP-reference-style curation for ``bench_curate.py``: one process, and a process pool.

Both do what MetaCLIP's scripts do: per text ``automaton.iter(spacing(text))`` (pyahocorasick
over ``" " + entry + " "``), a numpy bincount of the ids, one numpy draw per (text, entry) kept
where any draw < t / max(count, t), and the kept rows written as Parquet.

- `serial_curate`: all shards in this process, ids kept in memory between the stages.
- `pool_curate`: as MetaCLIP's per-shard scripts are run, one process per core over the shards
  (`concurrent.futures.ProcessPoolExecutor`, forked so each worker has the automaton without
  unpickling it: the cheapest start the reference can get). Stage match: each task reads its
  shard, matches, saves its ids (``np.savez``) and returns the shard's bincount; stage count:
  the sum of those; stage balance: each task loads the counts and its ids, draws (its own
  generator, seeded by the shard's position) and writes the shard's kept rows. Each worker
  reports its peak RSS (``VmHWM``).
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from metaclip_gpu.engine.reference import spacing

_AUTOMATON: Any = None  # set before the pool forks; workers read it


def vmhwm_mib() -> float:
    """This process's peak RSS (``VmHWM``, which exec resets and fork does not carry over)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**10
    return 0.0


def match_texts(automaton: Any, captions: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, ids) of each text's distinct entry ids, MetaCLIP's way."""
    lengths, flat = [], []
    for text in captions:
        ids = {idx for _end, (idx, _key) in automaton.iter(spacing(text or ""))}
        lengths.append(len(ids))
        flat.extend(ids)
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets, np.asarray(flat, np.int64)


def kept_mask(offsets: np.ndarray, ids: np.ndarray, probs: np.ndarray, rng) -> np.ndarray:
    """Rows with any draw < their entry's probability (a row without ids is never kept)."""
    hit = (rng.random(len(ids)) < probs[ids]).astype(np.int64)
    hits = np.zeros(len(ids) + 1, np.int64)
    np.cumsum(hit, out=hits[1:])
    return hits[offsets[1:]] > hits[offsets[:-1]]


def serial_curate(shards: list[Path], automaton, n_entries: int, t: float, out: Path):
    """MetaCLIP's scripts in one process: match each text, count, balance, write kept rows."""
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    per_shard = []
    for path in shards:
        captions = pq.read_table(path, columns=["caption"]).column("caption").to_pylist()
        per_shard.append(match_texts(automaton, captions))
    seconds["match"] = time.perf_counter() - started

    mark = time.perf_counter()
    counts = np.zeros(n_entries, np.uint64)
    for _offsets, ids in per_shard:
        counts += np.bincount(ids, minlength=n_entries).astype(np.uint64)
    seconds["count"] = time.perf_counter() - mark

    mark = time.perf_counter()
    probs = t / np.maximum(counts.astype(np.float64), t)
    rng = np.random.default_rng(0)
    out.mkdir(parents=True, exist_ok=True)
    kept = 0
    for path, (offsets, ids) in zip(shards, per_shard, strict=True):
        mask = kept_mask(offsets, ids, probs, rng)
        pq.write_table(pq.read_table(path).filter(pa.array(mask)), out / path.name)
        kept += int(mask.sum())
    seconds["balance"] = time.perf_counter() - mark
    seconds["total"] = time.perf_counter() - started
    return seconds, counts, kept


def _match_task(path: Path, ids_dir: Path, n_entries: int) -> tuple[np.ndarray, float]:
    captions = pq.read_table(path, columns=["caption"]).column("caption").to_pylist()
    offsets, ids = match_texts(_AUTOMATON, captions)
    np.savez(ids_dir / f"{path.stem}.npz", offsets=offsets, ids=ids)
    return np.bincount(ids, minlength=n_entries).astype(np.uint64), vmhwm_mib()


def _balance_task(
    path: Path, position: int, ids_dir: Path, counts_path: Path, t: float, out: Path
) -> tuple[int, float]:
    counts = np.load(counts_path)
    probs = t / np.maximum(counts.astype(np.float64), t)
    saved = np.load(ids_dir / f"{path.stem}.npz")
    mask = kept_mask(saved["offsets"], saved["ids"], probs, np.random.default_rng(position))
    pq.write_table(pq.read_table(path).filter(pa.array(mask)), out / path.name)
    return int(mask.sum()), vmhwm_mib()


def pool_curate(
    shards: list[Path], automaton, n_entries: int, t: float, out: Path, workers: int
) -> tuple[dict[str, float], np.ndarray, int, list[float]]:
    """MetaCLIP's per-shard scripts on `workers` processes; returns (seconds, counts, kept,
    the peak RSS of each task's worker in MiB)."""
    global _AUTOMATON
    _AUTOMATON = automaton
    ids_dir, out = out / "_ids", out / "curated"
    ids_dir.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    peaks: list[float] = []
    started = time.perf_counter()
    context = multiprocessing.get_context("fork")
    try:
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            counts = np.zeros(n_entries, np.uint64)
            parts = list(
                pool.map(_match_task, shards, [ids_dir] * len(shards), [n_entries] * len(shards))
            )
            seconds["match"] = time.perf_counter() - started
            mark = time.perf_counter()
            for part, peak in parts:
                counts += part
                peaks.append(peak)
            counts_path = out.parent / "entry_count.npy"
            np.save(counts_path, counts)
            seconds["count"] = time.perf_counter() - mark
            mark = time.perf_counter()
            n = len(shards)
            results = list(
                pool.map(
                    _balance_task,
                    shards,
                    range(n),
                    [ids_dir] * n,
                    [counts_path] * n,
                    [t] * n,
                    [out] * n,
                )
            )
            seconds["balance"] = time.perf_counter() - mark
    finally:
        _AUTOMATON = None
    seconds["total"] = time.perf_counter() - started
    peaks += [peak for _kept, peak in results]
    return seconds, counts, sum(k for k, _ in results), peaks
