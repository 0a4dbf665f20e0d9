"""Where the balance stage's time goes, on bench_curate's data (CPU seconds, not only wall).

    .venv/bin/python bench/profile/profile_balance.py [--data cc3m|dense] [--rows 1000000]
        [--reps 3] [--cprofile] [--scratch DIR] [--keep]

Builds `bench_curate`'s data set (`--rows` rows in shards of 125k, at least 8), runs match and
count once, then:
  * the balance stage (`run_balance`, t = 1,000) `--reps` times into a fresh ``curated/``:
    wall seconds and the process's CPU seconds (user + system, Arrow's threads included);
    on a machine shared with other work the CPU figure is the steadier one;
  * one shard, on this thread, phase by phase (CPU seconds, median and min of `--reps`):
    reading the input and the match file in step (`aligned.iter_keyed_matches`), the input
    alone, the draws, masks and expected sizes (`chunk_draws.balance_chunk`, keys included;
    then the same through its NumPy reference path, `reference_balance_chunk`, without the
    kernels), the kept rows' table (`write.curated_table`) and writing it
    (`write.write_parquet`), and beside it
    the MetaCLIP-reference-style balance task of `curate_reference` on the same shard (load
    its ids from ``.npz`` and the counts, `curate_reference.kept_mask`, read the shard, filter,
    write), the two timed in turn;
  * with `--cprofile`, cProfile's top 25 functions (cumulative) of `balance_shard` on that
    shard (cProfile inflates Python-level loops, e.g. key hashing, several times over).
Prints the figures and writes ``bench/results/profile_balance.json``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent.parent))
from _common import find_data_dir  # noqa: E402
from bench_curate import data_set, write_table_shards  # noqa: E402
from curate_reference import kept_mask  # noqa: E402

from metaclip_gpu.pipeline.aligned import csr_of, iter_keyed_matches  # noqa: E402
from metaclip_gpu.pipeline.balance import run_balance  # noqa: E402
from metaclip_gpu.pipeline.balance_shard import balance_shard  # noqa: E402
from metaclip_gpu.pipeline.chunk_draws import (  # noqa: E402
    balance_chunk,
    reference_balance_chunk,
)
from metaclip_gpu.pipeline.count import load_entry_counts, run_count  # noqa: E402
from metaclip_gpu.pipeline.match import match_records, run_match, shard_list  # noqa: E402
from metaclip_gpu.pipeline.read import ReadOptions, read_shard  # noqa: E402
from metaclip_gpu.pipeline.write import curated_table, write_parquet  # noqa: E402

T = 1_000.0
DEFAULT_JSON = HERE.parent / "results" / "profile_balance.json"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall, CPU) seconds of one call."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    fn()
    return time.perf_counter() - wall, cpu_seconds() - cpu


def stage_runs(out: Path, shards_dir: Path, reps: int) -> dict[str, list[float]]:
    runs: dict[str, list[float]] = {"wall": [], "cpu": []}
    for _ in range(reps):
        shutil.rmtree(out / "curated", ignore_errors=True)
        wall, cpu = timed(
            lambda: run_balance(out, shards_dir, ts=[T], progress=False, summary=False)
        )
        runs["wall"].append(round(wall, 3))
        runs["cpu"].append(round(cpu, 3))
    return runs


def shard_phases(out: Path, shards_dir: Path, scratch: Path, reps: int) -> dict[str, float]:
    """CPU seconds of each phase of balancing the first shard, on this thread."""
    options = ReadOptions()
    shard = shard_list(shards_dir)[0]
    match_file = out / match_records(out, [shard])[shard.name].output
    counts = load_entry_counts(out / "entry_counts.npy")
    chunks = list(iter_keyed_matches(shard, match_file, options))
    decided = [balance_chunk(c.offsets, c.entry_ids, c.keys_of, counts, [T], 0) for c in chunks]
    tables = [curated_table(c, d.masks[T]) for c, d in zip(chunks, decided, strict=True)]
    target = scratch / "phase.parquet"
    phases: dict[str, Callable[[], Any]] = {
        "read input + match file (aligned)": lambda: list(
            iter_keyed_matches(shard, match_file, options)
        ),
        "read input alone": lambda: list(read_shard(shard, options)),
        "keys, draws, masks, expected (balance_chunk)": lambda: [
            balance_chunk(c.offsets, c.entry_ids, c.keys_of, counts, [T], 0) for c in chunks
        ],
        "the same, NumPy reference path (reference_balance_chunk)": lambda: [
            reference_balance_chunk(c.offsets, c.entry_ids, c.keys_of, counts, [T], 0)
            for c in chunks
        ],
        "curated table (filter)": lambda: [
            curated_table(c, d.masks[T]) for c, d in zip(chunks, decided, strict=True)
        ],
        "write + checksum (write_parquet)": lambda: [write_parquet(t, target) for t in tables],
        "whole shard (balance_shard)": lambda: balance_shard(
            shard, match_file, counts, [T], 0, {T: target}, options=options
        ),
    }
    phases["reference-style balance task (same shard)"] = _reference_task(
        shard.path, match_file, out / "entry_counts.npy", scratch
    )
    figures: dict[str, float] = {}
    for fn in phases.values():
        fn()  # warm
    cpu: dict[str, list[float]] = {name: [] for name in phases}
    for _ in range(reps):  # in turn, so load changes touch every phase alike
        for name, fn in phases.items():
            cpu[name].append(timed(fn)[1])
    for name, values in cpu.items():
        figures[name] = round(statistics.median(values), 4)
        figures[f"{name}, min"] = round(min(values), 4)
    figures["rows"] = sum(c.chunk.num_rows for c in chunks)
    figures["kept"] = sum(int(d.masks[T].sum()) for d in decided)
    figures["pairs"] = sum(len(c.entry_ids) for c in chunks)
    return figures


def _reference_task(
    shard_path: Path, match_file: Path, counts_path: Path, scratch: Path
) -> Callable[[], Any]:
    """`curate_reference._balance_task`'s work on one shard, its ids saved as it saves them."""
    table = pq.read_table(match_file, columns=["entry_ids"])
    offsets, ids = csr_of(table.column(0).combine_chunks())
    ids_path = scratch / "reference_ids.npz"
    np.savez(ids_path, offsets=offsets.astype(np.int64), ids=ids.astype(np.int64))

    def task() -> None:
        counts = np.load(counts_path)
        probs = T / np.maximum(counts.astype(np.float64), T)
        saved = np.load(ids_path)
        mask = kept_mask(saved["offsets"], saved["ids"], probs, np.random.default_rng(0))
        kept = pq.read_table(shard_path).filter(pa.array(mask))
        pq.write_table(kept, scratch / "reference.parquet")

    return task


def profile_shard(out: Path, shards_dir: Path, scratch: Path) -> str:
    shard = shard_list(shards_dir)[0]
    match_file = out / match_records(out, [shard])[shard.name].output
    counts = load_entry_counts(out / "entry_counts.npy")
    profiler = cProfile.Profile()
    profiler.enable()
    balance_shard(
        shard, match_file, counts, [T], 0, {T: scratch / "p.parquet"}, options=ReadOptions()
    )
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(25)
    return text.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=("cc3m", "dense"), default="cc3m")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--cprofile", action="store_true")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--scratch", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="profile-balance-", dir=args.scratch))
    try:
        table, metadata = data_set(args.data, find_data_dir(args.data_dir), args.rows, scratch)
        shards_dir = scratch / "shards"
        write_table_shards(table, shards_dir, max(8, round(args.rows / 125_000)))
        del table
        out = scratch / "out"
        run_match(shards_dir, metadata, out, progress=False)
        run_count(out, metadata)
        figures: dict[str, Any] = {"data": args.data, "rows": args.rows, "t": T}
        figures["loadavg_before"] = os.getloadavg()
        figures["stage"] = stage_runs(out, shards_dir, args.reps)
        figures["one_shard_cpu_s"] = shard_phases(out, shards_dir, scratch, args.reps)
        figures["loadavg_after"] = os.getloadavg()
        print(json.dumps(figures, indent=1))
        if args.cprofile:
            print(profile_shard(out, shards_dir, scratch))
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    finally:
        if args.keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
