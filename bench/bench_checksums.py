"""What the run directory's checksums and the per-file ``--target-size`` solver cost.

    .venv/bin/python bench/bench_checksums.py [--copies 64] [--shards 8] [--quick]

Input: the CC3M validation alt-texts repeated `--copies` times (default 64: 1,013,312 rows) in
`--shards` Parquet shards (`bench_curate.write_shards`), the 500k-entry metadata, from
``../shared/data`` (or ``--data-dir`` / ``$METACLIP_SHARED_DATA``). One ``run_curate`` at
t = 20,000 into a scratch folder, then:

- the bytes of the outputs a rerun verifies (match files, curated files) and the seconds to
  hash them all with XXH64 (``checksums.file_checksum``; the files were just written, so
  they are read from the page cache: this is the hashing cost, not a cold disk's);
- a rerun that finds everything done, twice: with the checksum check (this process's memo of
  verified files cleared first, so every file is hashed once), and with the check replaced by
  the former one (a Parquet footer read); their difference is what verifying costs a rerun;
- ``--target-size`` of a tenth of the rows: `target_size.solve_target` over the match files
  (passes over the files, seconds) against `draws.solve_t` over the pool's match lists in
  memory (reading them included).

Writes ``bench/results/bench_checksums.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import (
    CC3M_FILE,
    METADATA_FILE,
    available_cores,
    cpu_model,
    find_data_dir,
    missing_data_message,
)
from bench_curate import write_shards

from metaclip_gpu.pipeline import balance_shard, checksums, count, manifest, target_size
from metaclip_gpu.pipeline.aligned import csr_of
from metaclip_gpu.pipeline.count import load_entry_counts
from metaclip_gpu.pipeline.draws import solve_t
from metaclip_gpu.pipeline.run import run_curate
from metaclip_gpu.pipeline.write import curated_dir

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "bench_checksums.json"
T = 20_000.0


def footer_check(path: Any, expected: str | None, what: str = "") -> bool:
    """The check before checksums: the file exists and its Parquet footer reads."""
    return manifest.parquet_readable(Path(path))


def timed_rerun(shards: Path, metadata: Path, out: Path, check: Any) -> float:
    saved = (manifest.checksum_matches, count.checksum_matches, balance_shard.checksum_matches)
    manifest.checksum_matches = count.checksum_matches = balance_shard.checksum_matches = check
    checksums._verified.clear()
    try:
        start = time.perf_counter()
        summary = run_curate(shards, metadata, out, ts=[T], progress=False)
        seconds = time.perf_counter() - start
    finally:
        manifest.checksum_matches, count.checksum_matches, balance_shard.checksum_matches = saved
    assert summary["shards_matched_this_run"] == 0
    return seconds


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=64, help="CC3M copies [64: 1,013,312]")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="4 copies")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quick:
        args.copies = 4
    data_dir = find_data_dir(args.data_dir)
    missing = [p for p in (data_dir / CC3M_FILE, data_dir / METADATA_FILE) if not p.is_file()]
    if missing:
        print(missing_data_message("bench_checksums", missing), file=sys.stderr)
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="bench_checksums-"))
    try:
        figures = run(args, data_dir / METADATA_FILE, data_dir, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures, indent=1))
    print(f"wrote {args.json}")
    return 0


def run(args: argparse.Namespace, metadata: Path, data_dir: Path, scratch: Path) -> dict:
    shards = scratch / "shards"
    rows = write_shards(data_dir, shards, args.copies, args.shards)
    out = scratch / "out"
    start = time.perf_counter()
    run_curate(shards, metadata, out, ts=[T], progress=False)
    first = time.perf_counter() - start

    match_files = sorted((out / "matches").glob("*.parquet"))
    curated_files = sorted(curated_dir(out, T).glob("*.parquet"))
    files = match_files + curated_files
    size = sum(p.stat().st_size for p in files)
    start = time.perf_counter()
    for path in files:
        checksums.file_checksum(path)
    hashing = time.perf_counter() - start

    with_checksums = timed_rerun(shards, metadata, out, checksums.checksum_matches)
    with_footers = timed_rerun(shards, metadata, out, footer_check)

    counts = load_entry_counts(out / "entry_counts.npy")
    target = rows // 10
    passes = 0
    evaluate = target_size.file_expected

    def counted(*a: Any, **k: Any) -> Any:
        nonlocal passes
        passes += 1
        return evaluate(*a, **k)

    target_size.file_expected = counted
    try:
        start = time.perf_counter()
        solved = target_size.solve_target(match_files, counts, target)
        per_file = time.perf_counter() - start
    finally:
        target_size.file_expected = evaluate
    start = time.perf_counter()
    lists = pa.chunked_array(
        [c for f in match_files for c in pq.read_table(f, columns=["entry_ids"]).column(0).chunks]
    )
    offsets, ids = csr_of(lists)
    in_memory_t = solve_t(offsets, ids, counts, target)
    in_memory = time.perf_counter() - start

    return {
        "machine": {
            "cpu": cpu_model(),
            "cores": available_cores(),
            "python": platform.python_version(),
        },
        "rows": rows,
        "shards": args.shards,
        "first_run_seconds": round(first, 2),
        "outputs_verified": {
            "files": len(files),
            "mib": round(size / 2**20, 1),
            "xxh64_seconds_page_cache": round(hashing, 3),
            "xxh64_gib_per_s_page_cache": round(size / 2**30 / hashing, 2) if hashing else None,
        },
        "rerun_nothing_to_do_seconds": {
            "checksums": round(with_checksums, 2),
            "footer_only": round(with_footers, 2),
            "difference": round(with_checksums - with_footers, 2),
        },
        "target_size": {
            "target": target,
            "per_file_solver_seconds": round(per_file, 2),
            "per_file_solver_passes": passes // len(match_files),
            "in_memory_solve_t_seconds_with_reading": round(in_memory, 2),
            "t_per_file": solved,
            "t_in_memory": in_memory_t,
            "relative_difference": abs(solved - in_memory_t) / in_memory_t,
        },
    }


if __name__ == "__main__":
    raise SystemExit(main())
