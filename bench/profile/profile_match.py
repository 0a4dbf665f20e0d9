"""Where one shard's match task spends its time besides the kernel (CPU seconds, one thread).

    .venv/bin/python bench/profile/profile_match.py [--data dense|cc3m] [--rows 125000]
        [--reps 5] [--cprofile] [--scratch DIR]

Builds one shard of `bench_curate`'s data set (`--rows` rows, default 125k: one shard of its
1M-row run), loads the index, then, on this thread (``threads=1``), `--reps` times each:
  * the whole task (`shard_match.match_shard_output`: read, match, counts, write the file);
  * the kernel alone (`engine.match.match` on the shard's texts, spill merge included) and the
    spill merge alone (`engine.match._merge_spill`, timed by wrapping it);
  * the footer counts (`ShardCounts.add` over the match table, then `footer`);
  * writing the match table as the task writes it (uncompressed Parquet, footer included);
  * the count stage's two ways for 8 such shards: 8 footers read (`add_footer_counts`) and
    8 shards' in-memory counts summed (`RunCounts`), and ``entry_counts.npy``/``.parquet``
    bytes.
Prints CPU seconds (``process_time``: this process, Arrow's threads included; min and median)
and, with `--cprofile`, cProfile's top 25 functions of one whole task. Writes
``bench/results/profile_match.json``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent.parent))
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from _common import find_data_dir  # noqa: E402
from bench_curate import data_set, write_table_shards  # noqa: E402

from metaclip_gpu.engine import match as engine_match  # noqa: E402
from metaclip_gpu.engine.index import MetadataIndex  # noqa: E402
from metaclip_gpu.pipeline import counts_files  # noqa: E402
from metaclip_gpu.pipeline.count import counts_table  # noqa: E402
from metaclip_gpu.pipeline.manifest import ShardRecord  # noqa: E402
from metaclip_gpu.pipeline.read import ReadOptions, find_shards, read_shard  # noqa: E402
from metaclip_gpu.pipeline.shard_counts import (  # noqa: E402
    RunCounts,
    ShardCounts,
    add_footer_counts,
)
from metaclip_gpu.pipeline.shard_match import (  # noqa: E402
    WRITER_OPTIONS,
    match_shard_output,
    stage_config,
)

DEFAULT_JSON = HERE.parent / "results" / "profile_match.json"


def cpu_seconds(fn: Callable[[], Any], reps: int) -> dict[str, float]:
    """min and median CPU seconds of `fn()` over `reps` runs."""
    times = []
    for _ in range(reps):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return {"min": round(min(times), 4), "median": round(statistics.median(times), 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=("dense", "cc3m"), default="dense")
    parser.add_argument("--rows", type=int, default=125_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--cprofile", action="store_true")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--scratch", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="profile-match-", dir=args.scratch))
    try:
        figures = measure(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=1) + "\n")
    print(f"figures written to {args.json}")
    return 0


def measure(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    table, metadata = data_set(args.data, find_data_dir(args.data_dir), args.rows, scratch)
    write_table_shards(table.slice(0, args.rows), scratch / "in", 1)
    index = MetadataIndex.load(metadata)
    shard = find_shards(scratch / "in")[0]
    options = ReadOptions()
    config = stage_config(index, options)
    out = scratch / "out"
    texts = pa.concat_arrays([c.table.column("text").combine_chunks() for c in read_shard(shard)])
    figures: dict[str, Any] = {
        "data": args.data,
        "rows": len(texts),
        "entries": len(index),
        "reps": args.reps,
        "loadavg_before": os.getloadavg(),
    }

    def task() -> Any:
        return match_shard_output(
            shard, index, out, options=options, backend="cpu", threads=1, config=config
        )

    report, record = task()
    figures["task"] = cpu_seconds(task, args.reps)
    result = engine_match.match(texts, index, backend="cpu", threads=1)
    figures["ids"] = int(result.offsets[-1])
    figures["kernel_with_spill_merge"] = cpu_seconds(
        lambda: engine_match.match(texts, index, backend="cpu", threads=1), args.reps
    )
    figures["spill_merge"] = spill_merge_seconds(texts, index, args.reps)
    assert report.error is None and record.output is not None
    match_table = pq.ParquetFile(out / record.output).read()

    def footer() -> dict[bytes, bytes]:
        counts = ShardCounts()
        counts.add(match_table)
        return counts.footer()

    figures["footer_counts"] = cpu_seconds(footer, args.reps)
    figures["footer_bytes"] = len(footer()[next(iter(footer()))])
    sink = scratch / "write.parquet"

    def write() -> None:
        with pq.ParquetWriter(sink, match_table.schema, **WRITER_OPTIONS) as writer:
            writer.write_table(match_table)
            writer.add_key_value_metadata(footer())

    figures["write_match_file"] = cpu_seconds(write, args.reps)
    assert record.output is not None

    def eight_footers() -> None:
        totals = {"": np.zeros(len(index), np.uint64)}
        for _ in range(8):
            add_footer_counts(out / record.output, totals)

    figures["count_8_footers"] = cpu_seconds(eight_footers, args.reps)

    counts = ShardCounts()
    counts.add(match_table)

    def in_memory() -> np.ndarray:
        matched = RunCounts()
        for i in range(8):
            matched.add(_record(record, i), counts)
        return matched.start_totals({"": len(index)})[""]

    figures["count_8_in_memory"] = cpu_seconds(in_memory, args.reps)
    totals = in_memory()
    figures["entry_counts_npy_bytes"] = cpu_seconds(
        lambda: counts_files.npy_parts(totals), args.reps
    )
    figures["entry_counts_parquet_bytes"] = cpu_seconds(
        lambda: counts_files.parquet_bytes(counts_table(totals, index.entries)), args.reps
    )
    if args.cprofile:
        profiler = cProfile.Profile()
        profiler.enable()
        task()
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(25)
        print(text.getvalue())
    figures["loadavg_after"] = os.getloadavg()
    for name, value in figures.items():
        print(f"{name}: {value}")
    return figures


def _record(record: ShardRecord, i: int) -> ShardRecord:
    return ShardRecord(shard=f"{record.shard}-{i}", output=record.output, rows=record.rows,
                       checksum=record.checksum)  # fmt: skip


def spill_merge_seconds(texts: pa.Array, index: MetadataIndex, reps: int) -> dict[str, float]:
    """CPU seconds inside `_merge_spill` during one `match` call (min, median over `reps`)."""
    real = engine_match._merge_spill
    spent: list[float] = []

    def timed(*args: Any) -> Any:
        start = time.process_time()
        try:
            return real(*args)
        finally:
            spent[-1] += time.process_time() - start

    engine_match._merge_spill = timed  # type: ignore[assignment]
    try:
        for _ in range(reps):
            spent.append(0.0)
            engine_match.match(texts, index, backend="cpu", threads=1)
    finally:
        engine_match._merge_spill = real  # type: ignore[assignment]
    return {"min": round(min(spent), 4), "median": round(statistics.median(spent), 4)}


if __name__ == "__main__":
    sys.exit(main())
