"""End-to-end curation: `metaclip-gpu curate` vs a MetaCLIP-reference-style CPU pipeline.

    .venv/bin/python bench/bench_curate.py [--copies 64] [--shards 8] [--t 20000] [--quick]

Input: the CC3M validation alt-texts (caption, url) repeated `--copies` times (default 64:
1,013,312 rows; each copy's urls get a ``#<copy>`` suffix so keys stay distinct), written as
`--shards` Parquet shards in a scratch folder, and the 500k-entry metadata, from
``../shared/data`` (or ``--data-dir`` / ``$METACLIP_SHARED_DATA``).

Measured in one run, side by side, each into a fresh output folder:
  (a) reference style, one process, as MetaCLIP's scripts do it: per shard, pyarrow read, then
      per text ``automaton.iter(spacing(text))`` (pyahocorasick over ``" " + entry + " "``);
      numpy count (bincount over the concatenated ids); numpy balance (one ``np.random`` draw
      per (text, entry), kept where any draw < t / max(count, t)); the kept rows written as
      Parquet. The automaton build is timed apart (MetaCLIP pickles it once);
  (b) ``run_curate`` in process (all cores to the kernel), `--reps` runs, median;
  (c) ``run_curate`` on a ``distributed.LocalCluster`` of one single-threaded worker per core
      (cluster start-up timed apart), `--reps` runs, median.
Per stage seconds, rows/s, peak RSS of this process and of each dask worker. The index comes
from the on-disk cache (built once before timing; its cold build time is printed). Writes
``bench/results/bench_curate.json``. No GPU figure is measured unless a GPU is available.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import (
    CC3M_FILE,
    METADATA_FILE,
    available_cores,
    build_automaton,
    cpu_model,
    find_data_dir,
    missing_data_message,
    peak_rss_mib,
    read_cc3m_rows,
)

from metaclip_gpu import MetadataIndex
from metaclip_gpu.engine.metadata import load_metadata
from metaclip_gpu.engine.reference import spaced_entries, spacing
from metaclip_gpu.pipeline.run import run_curate

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "bench_curate.json"


# ----------------------------------------------------------------------------- input
def write_shards(data_dir: Path, out: Path, copies: int, n_shards: int) -> int:
    captions, urls = read_cc3m_rows(data_dir / CC3M_FILE)
    table = pa.table(
        {
            "url": [f"{url}#{copy}" for copy in range(copies) for url in urls],
            "caption": pa.concat_arrays([pa.array(captions, pa.string())] * copies),
        }
    )
    bounds = np.linspace(0, table.num_rows, n_shards + 1).astype(np.int64).tolist()
    out.mkdir(parents=True, exist_ok=True)
    for shard in range(n_shards):
        lo, hi = bounds[shard], bounds[shard + 1]
        pq.write_table(table.slice(lo, hi - lo), out / f"part-{shard:05d}.parquet")
    return table.num_rows


# ----------------------------------------------------------------------------- reference style


def reference_curate(shards: list[Path], automaton, n_entries: int, t: float, out: Path):
    """MetaCLIP's scripts, one process: match each text, count, balance, write kept rows."""
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    per_shard: list[tuple[np.ndarray, np.ndarray]] = []
    for path in shards:
        captions = pq.read_table(path, columns=["caption"]).column("caption").to_pylist()
        lengths, flat = [], []
        for text in captions:
            ids = {idx for _end, (idx, _key) in automaton.iter(spacing(text))}
            lengths.append(len(ids))
            flat.extend(ids)
        offsets = np.zeros(len(lengths) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        per_shard.append((offsets, np.asarray(flat, np.int64)))
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
        hit = (rng.random(len(ids)) < probs[ids]).astype(np.int64)
        hits = np.zeros(len(ids) + 1, np.int64)
        np.cumsum(hit, out=hits[1:])
        mask = hits[offsets[1:]] > hits[offsets[:-1]]  # any kept draw; no match: never kept
        table = pq.read_table(path).filter(pa.array(mask))
        pq.write_table(table, out / path.name)
        kept += int(mask.sum())
    seconds["balance"] = time.perf_counter() - mark
    seconds["total"] = time.perf_counter() - started
    return seconds, counts, kept


# ----------------------------------------------------------------------------- ours
def curate_once(shards_dir: Path, metadata: Path, out: Path, t: float, client: Any) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    summary = run_curate(shards_dir, metadata, out, ts=[t], progress=False, client=client)
    wall = time.perf_counter() - started
    return {"seconds": summary["seconds"], "wall": wall, "summary": summary}


def peak_rss_of_process_mib() -> float:
    """This process's peak RSS from ``VmHWM`` (reset by exec, unlike ``ru_maxrss``, which a
    dask worker would inherit from the process that spawned it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**10
    return peak_rss_mib()


def worker_peaks_mib(client: Any) -> dict[str, float]:
    return {a: round(v, 1) for a, v in client.run(peak_rss_of_process_mib).items()}


def median_seconds(runs: list[dict]) -> dict[str, float]:
    stages = runs[0]["seconds"].keys()
    return {k: round(statistics.median(r["seconds"][k] for r in runs), 3) for k in stages}


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=64, help="CC3M copies [64: 1,013,312]")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--t", type=float, default=1_000.0, help="balancing threshold")
    parser.add_argument("--reps", type=int, default=3, help="runs of each curate setting")
    parser.add_argument("--quick", action="store_true", help="4 copies, 1 rep")
    parser.add_argument("--no-dask", action="store_true", help="skip the LocalCluster run")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--data-dir", default=None, help="folder of cc3m_val.tsv and metadata")
    parser.add_argument("--scratch", type=Path, default=None, help="where shards/outputs go")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quick:
        args.copies, args.reps = 4, 1
    console = Console(highlight=False, width=None if "COLUMNS" in os.environ else 120)
    data_dir = find_data_dir(args.data_dir)
    metadata = data_dir / METADATA_FILE
    missing = [p for p in (data_dir / CC3M_FILE, metadata) if not p.is_file()]
    if missing:
        print(missing_data_message("bench_curate.py", missing), file=sys.stderr)
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="bench-curate-", dir=args.scratch))
    try:
        return run(args, console, metadata, data_dir, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run(args, console: Console, metadata: Path, data_dir: Path, scratch: Path) -> int:
    shards_dir = scratch / "shards"
    n_rows = write_shards(data_dir, shards_dir, args.copies, args.shards)
    shards = sorted(shards_dir.glob("*.parquet"))
    cores = available_cores()
    console.print(
        f"[bold]bench_curate[/]: {n_rows:,} CC3M rows (x{args.copies}) in {len(shards)} Parquet "
        f"shards, {METADATA_FILE}, t = {args.t:,.0f}; {cpu_model()}, {cores} cores"
    )

    started = time.perf_counter()
    MetadataIndex.load(metadata, cache=False)
    cold_index_s = time.perf_counter() - started
    MetadataIndex.load(metadata)  # fills the on-disk cache every run below reads

    in_process = [
        curate_once(shards_dir, metadata, scratch / "ours", args.t, None) for _ in range(args.reps)
    ]
    ours_counts = np.load(scratch / "ours" / "entry_counts.npy")
    summary = in_process[-1]["summary"]

    peak_after_ours = peak_rss_of_process_mib()

    entries = load_metadata(metadata)
    started = time.perf_counter()
    automaton = build_automaton(spaced_entries(entries))
    automaton_s = time.perf_counter() - started
    ref_seconds, ref_counts, ref_kept = reference_curate(
        shards, automaton, len(entries), args.t, scratch / "reference"
    )
    del automaton

    counts_equal = bool(np.array_equal(ours_counts, ref_counts))

    dask: dict[str, Any] | None = None
    if not args.no_dask:
        from metaclip_gpu.pipeline.cluster import close_client, make_client

        started = time.perf_counter()
        client = make_client(cluster="local", workers=cores, threads_per_worker=1)
        startup_s = time.perf_counter() - started
        try:
            runs = [
                curate_once(shards_dir, metadata, scratch / "dask", args.t, client)
                for _ in range(args.reps)
            ]
            dask = {
                "workers": cores,
                "startup_s": round(startup_s, 2),
                "seconds": median_seconds(runs),
                "worker_peak_rss_mib": worker_peaks_mib(client),
                "kept": runs[-1]["summary"]["ts"][0]["kept"],
            }
        finally:
            close_client(client)

    ours = median_seconds(in_process)
    figures = {
        "rows": n_rows,
        "shards": len(shards),
        "t": args.t,
        "reps": args.reps,
        "index_cold_build_s": round(cold_index_s, 3),
        "reference": {
            "automaton_build_s": round(automaton_s, 3),
            "seconds": {k: round(v, 3) for k, v in ref_seconds.items()},
            "kept": ref_kept,
        },
        "in_process": {
            "seconds": ours,
            "kept": summary["ts"][0]["kept"],
            "expected_kept": summary["ts"][0]["expected_kept"],
            "matched": summary["matched"],
        },
        "dask": dask,
        "counts_equal_reference": counts_equal,
        "peak_rss_mib_in_process": round(peak_after_ours, 1),
        "peak_rss_mib_after_reference": round(peak_rss_of_process_mib(), 1),
        "speedup_in_process": round(ref_seconds["total"] / ours["total"], 2),
        "speedup_dask": round(ref_seconds["total"] / dask["seconds"]["total"], 2) if dask else None,
        "machine": {
            "cpu": cpu_model(),
            "cores": cores,
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg": os.getloadavg(),
        },
        "gpu": "not measured (no GPU backend here)",
    }
    report(console, figures)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=1) + "\n")
    console.print(f"figures written to {args.json}")
    return 0 if counts_equal else 1


def report(console: Console, f: dict[str, Any]) -> None:
    table = Table(title=f"curate, {f['rows']:,} rows, t = {f['t']:,.0f} (median of {f['reps']})")
    table.add_column("pipeline")
    for stage in ("index", "match", "count", "balance", "total"):
        table.add_column(f"{stage} s", justify="right")
    table.add_column("rows/s", justify="right")
    table.add_column("vs reference", justify="right")
    ref = f["reference"]["seconds"]
    rows = [("reference style (pyahocorasick + numpy, 1 process)", ref, 1.0)]
    rows.append(("metaclip-gpu, in process", f["in_process"]["seconds"], f["speedup_in_process"]))
    if f["dask"]:
        label = f"metaclip-gpu, LocalCluster {f['dask']['workers']} workers"
        rows.append((label, f["dask"]["seconds"], f["speedup_dask"]))
    for label, seconds, ratio in rows:
        cells = [f"{seconds[k]:.2f}" if k in seconds else "-" for k in ("index", "match")]
        cells += [f"{seconds[k]:.2f}" for k in ("count", "balance", "total")]
        rate = f"{f['rows'] / seconds['total']:,.0f}"
        table.add_row(label, *cells, rate, f"{ratio:.1f}x")
    console.print(table)
    console.print(
        f"reference automaton build {f['reference']['automaton_build_s']:.2f} s (not in its "
        f"total); our index cold build {f['index_cold_build_s']:.2f} s (cached: in 'index')"
    )
    console.print(
        f"kept: reference {f['reference']['kept']:,} (global RNG), ours "
        f"{f['in_process']['kept']:,} (expected {f['in_process']['expected_kept']:,.0f}); "
        f"entry counts equal the reference's: {f['counts_equal_reference']}"
    )
    peaks = f"peak RSS: in process {f['peak_rss_mib_in_process']:,.0f} MiB (with the input writing)"
    if f["dask"]:
        peaks += ", dask workers " + ", ".join(
            f"{v:,.0f}" for v in f["dask"]["worker_peak_rss_mib"].values()
        )
        peaks += f" MiB (cluster start-up {f['dask']['startup_s']:.1f} s, not in totals)"
    console.print(peaks)


if __name__ == "__main__":
    sys.exit(main())
