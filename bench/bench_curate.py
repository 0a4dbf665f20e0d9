"""End-to-end curation: `metaclip-gpu curate` vs MetaCLIP-reference-style CPU pipelines.

    .venv/bin/python bench/bench_curate.py [--data both|cc3m|dense] [--rows 1000000]
        [--shards 8] [--t 1000] [--reps 3] [--quick] [--dask] [--serial]

Two data sets (``--data``; default both), `--rows` rows each (default 1M; 4M is the lead's
longer run), written as `--shards` Parquet shards (url, caption; default one per 125k rows, at
least 8, so a larger pool has more shards of the same size) in a scratch folder:
  cc3m   today's data: the CC3M validation alt-texts (from ``../shared/data``, or
         ``--data-dir`` / ``$METACLIP_SHARED_DATA``) repeated to `--rows` (1M: 64 copies,
         1,013,312 rows; each copy's urls get a ``#<copy>`` suffix so keys stay distinct),
         against the 500k-entry metadata;
  dense  ``bench_dense.py``'s data: texts of 6-80 words made by joining CC3M captions, against
         the 500k list plus the corpus's frequent bigrams/trigrams and Title-case words.

Measured per data set, side by side, each into a fresh output folder:
  (a) ``run_curate`` (all cores to the kernel) in a child process per run, `--reps` runs,
      median; the child's peak RSS (``VmHWM``) shows memory flat as the pool grows;
  (b) the reference style on a process pool, one process per core over the shards, as
      MetaCLIP's per-shard scripts are run (`curate_reference.pool_curate`), once; each
      worker's peak RSS;
  (c) with ``--serial``: the reference style in one process (`curate_reference.serial_curate`),
      once (on the dense data it takes about as long as everything else together);
  (d) with ``--dask``: ``run_curate`` on a ``distributed.LocalCluster`` of one
      single-threaded worker per core (cluster start-up timed apart), `--reps` runs, median.
The pyahocorasick automaton build is timed apart (MetaCLIP pickles it once), as is our
index's cold build (the runs read the on-disk cache). Per stage seconds, rows/s, ratios;
``bench/results/bench_curate.json`` with the load average. No GPU figure is measured.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import (
    CC3M_FILE,
    METADATA_FILE,
    available_cores,
    build_automaton,
    cpu_model,
    find_data_dir,
    missing_data_message,
    read_cc3m_rows,
)
from bench_dense import dense_metadata, web_texts
from curate_reference import pool_curate, serial_curate, vmhwm_mib

from metaclip_gpu import MetadataIndex
from metaclip_gpu.engine.metadata import load_metadata
from metaclip_gpu.engine.reference import spaced_entries

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "bench_curate.json"
STAGES = ("index", "match", "count", "balance", "total")
# Imports happen before the clock starts on both sides: the reference pool's workers are forked
# from this process with its modules loaded. That includes pandas, which pyarrow imports on a
# process's first `pa.array` (0.3-0.4 s of CPU); the child imports it here, outside the clock,
# as the pool's workers have it. A `metaclip-gpu curate` command pays both imports once.
CHILD = """
import json, sys, time
import pyarrow as pa
from metaclip_gpu.pipeline.run import run_curate
pa.array([0])  # pyarrow's first pa.array imports pandas (see above)
started = time.perf_counter()
summary = run_curate(sys.argv[1], sys.argv[2], sys.argv[3], ts=[float(sys.argv[4])],
                     progress=False)
wall = time.perf_counter() - started
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        peak = int(line.split()[1]) / 1024
print(json.dumps({"seconds": summary["seconds"], "wall": wall, "peak_rss_mib": peak,
                  "kept": summary["ts"][0]["kept"], "matched": summary["matched"]}))
"""


# ----------------------------------------------------------------------------- input
def cc3m_table(data_dir: Path, copies: int) -> pa.Table:
    """CC3M's (url, caption) rows `copies` times, each copy's urls made distinct."""
    captions, urls = read_cc3m_rows(data_dir / CC3M_FILE)
    return pa.table(
        {
            "url": [f"{url}#{copy}" for copy in range(copies) for url in urls],
            "caption": pa.concat_arrays([pa.array(captions, pa.string())] * copies),
        }
    )


def data_set(name: str, data_dir: Path, rows: int, scratch: Path) -> tuple[pa.Table, Path]:
    """(the url, caption table, its metadata file) of data set `name`."""
    captions, _urls = read_cc3m_rows(data_dir / CC3M_FILE)
    if name == "cc3m":
        return cc3m_table(data_dir, math.ceil(rows / len(captions))), data_dir / METADATA_FILE
    texts = web_texts(captions, rows)
    metadata = scratch / "dense_metadata.json"
    entries = dense_metadata(load_metadata(data_dir / METADATA_FILE), captions)
    metadata.write_text(json.dumps(entries))
    table = pa.table({"url": [f"http://x/{i}" for i in range(rows)], "caption": texts})
    return table, metadata


def write_table_shards(table: pa.Table, out: Path, n_shards: int) -> list[Path]:
    bounds = np.linspace(0, table.num_rows, n_shards + 1).astype(np.int64).tolist()
    out.mkdir(parents=True, exist_ok=True)
    for shard in range(n_shards):
        lo, hi = bounds[shard], bounds[shard + 1]
        pq.write_table(table.slice(lo, hi - lo), out / f"part-{shard:05d}.parquet")
    return sorted(out.glob("*.parquet"))


def write_shards(data_dir: Path, out: Path, copies: int, n_shards: int) -> int:
    """CC3M x `copies` as `n_shards` Parquet shards in `out` (``bench_gpu``, ``bench_checksums``
    use it); returns the number of rows."""
    table = cc3m_table(data_dir, copies)
    write_table_shards(table, out, n_shards)
    return table.num_rows


# ----------------------------------------------------------------------------- ours
def curate_in_child(shards_dir: Path, metadata: Path, out: Path, t: float) -> dict:
    """One ``run_curate`` in a fresh Python (its own peak RSS); its summary's figures."""
    shutil.rmtree(out, ignore_errors=True)
    args = [str(shards_dir), str(metadata), str(out), str(t)]
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *args], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def curate_on_cluster(shards_dir: Path, metadata: Path, out: Path, t: float, client) -> dict:
    from metaclip_gpu.pipeline.run import run_curate

    shutil.rmtree(out, ignore_errors=True)
    summary = run_curate(shards_dir, metadata, out, ts=[t], progress=False, client=client)
    return {"seconds": summary["seconds"], "kept": summary["ts"][0]["kept"]}


def worker_peaks_mib(client: Any) -> dict[str, float]:
    return {a: round(v, 1) for a, v in client.run(vmhwm_mib).items()}


def median_seconds(runs: list[dict]) -> dict[str, float]:
    stages = runs[0]["seconds"].keys()
    return {k: round(statistics.median(r["seconds"][k] for r in runs), 3) for k in stages}


def rounded(seconds: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in seconds.items()}


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=("both", "cc3m", "dense"), default="both")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows a data set [1M]")
    parser.add_argument(
        "--shards", type=int, default=None, help="[one per 125k rows, at least 8: 1M -> 8]"
    )
    parser.add_argument("--t", type=float, default=1_000.0, help="balancing threshold")
    parser.add_argument("--reps", type=int, default=3, help="runs of each curate setting")
    parser.add_argument("--quick", action="store_true", help="64k rows, 1 rep")
    parser.add_argument("--serial", action="store_true", help="also the 1-process reference")
    parser.add_argument("--dask", action="store_true", help="also curate on a LocalCluster")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--data-dir", default=None, help="folder of cc3m_val.tsv and metadata")
    parser.add_argument("--scratch", type=Path, default=None, help="where shards/outputs go")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quick:
        args.rows, args.reps = 64_000, 1
    if args.shards is None:  # shards of a fixed size, so memory stays flat as the pool grows
        args.shards = max(8, round(args.rows / 125_000))
    console = Console(highlight=False, width=None if "COLUMNS" in os.environ else 120)
    data_dir = find_data_dir(args.data_dir)
    missing = [p for p in (data_dir / CC3M_FILE, data_dir / METADATA_FILE) if not p.is_file()]
    if missing:
        print(missing_data_message("bench_curate.py", missing), file=sys.stderr)
        return 2
    cores = available_cores()
    names = ("cc3m", "dense") if args.data == "both" else (args.data,)
    figures: dict[str, Any] = {
        "rows_asked": args.rows,
        "shards": args.shards,
        "t": args.t,
        "reps": args.reps,
        "cores": cores,
        "loadavg_before": os.getloadavg(),
    }
    ok = True
    for name in names:
        scratch = Path(tempfile.mkdtemp(prefix=f"bench-curate-{name}-", dir=args.scratch))
        try:
            figures[name] = measure(args, console, name, data_dir, scratch, cores)
            ok = ok and figures[name]["counts_equal_reference"]
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    figures["machine"] = {
        "cpu": cpu_model(),
        "cores": cores,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_after": os.getloadavg(),
    }
    figures["gpu"] = "not measured (no GPU backend here)"
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=1) + "\n")
    console.print(f"figures written to {args.json}")
    return 0 if ok else 1


def measure(args, console: Console, name: str, data_dir: Path, scratch: Path, cores: int):
    table, metadata = data_set(name, data_dir, args.rows, scratch)
    shards_dir = scratch / "shards"
    shards = write_table_shards(table, shards_dir, args.shards)
    n_rows = table.num_rows
    del table
    entries = load_metadata(metadata)
    console.print(
        f"[bold]bench_curate {name}[/]: {n_rows:,} rows in {len(shards)} Parquet shards, "
        f"{len(entries):,} entries, t = {args.t:,.0f}; {cpu_model()}, {cores} cores, "
        f"load {os.getloadavg()[0]:.2f}"
    )
    started = time.perf_counter()
    MetadataIndex.load(metadata, cache=False)
    cold_index_s = time.perf_counter() - started
    MetadataIndex.load(metadata)  # fills the on-disk cache every run below reads

    ours_runs = [
        curate_in_child(shards_dir, metadata, scratch / "ours", args.t) for _ in range(args.reps)
    ]
    ours_counts = np.load(scratch / "ours" / "entry_counts.npy")
    shutil.rmtree(scratch / "ours")

    started = time.perf_counter()
    automaton = build_automaton(spaced_entries(entries))
    automaton_s = time.perf_counter() - started
    pool_seconds, pool_counts, pool_kept, pool_peaks = pool_curate(
        shards, automaton, len(entries), args.t, scratch / "pool", cores
    )
    shutil.rmtree(scratch / "pool")
    serial = None
    if args.serial:
        seconds, serial_counts, kept = serial_curate(
            shards, automaton, len(entries), args.t, scratch / "serial"
        )
        serial = {"seconds": rounded(seconds), "kept": kept}
        assert np.array_equal(serial_counts, pool_counts)
    del automaton

    dask = None
    if args.dask:
        from metaclip_gpu.pipeline.cluster import close_client, make_client

        started = time.perf_counter()
        client = make_client(cluster="local", workers=cores, threads_per_worker=1)
        startup_s = time.perf_counter() - started
        try:
            runs = [
                curate_on_cluster(shards_dir, metadata, scratch / "dask", args.t, client)
                for _ in range(args.reps)
            ]
            dask = {
                "workers": cores,
                "startup_s": round(startup_s, 2),
                "seconds": median_seconds(runs),
                "worker_peak_rss_mib": worker_peaks_mib(client),
                "kept": runs[-1]["kept"],
            }
        finally:
            close_client(client)

    ours = median_seconds(ours_runs)
    pool_total = pool_seconds["total"]
    f = {
        "rows": n_rows,
        "entries": len(entries),
        "index_cold_build_s": round(cold_index_s, 3),
        "automaton_build_s": round(automaton_s, 3),
        "curate": {
            "seconds": ours,
            "totals": [r["seconds"]["total"] for r in ours_runs],
            "peak_rss_mib": round(max(r["peak_rss_mib"] for r in ours_runs), 1),
            "kept": ours_runs[-1]["kept"],
            "matched": ours_runs[-1]["matched"],
        },
        "reference_pool": {
            "workers": cores,
            "seconds": rounded(pool_seconds),
            "kept": pool_kept,
            "worker_peak_rss_mib": round(max(pool_peaks), 1),
        },
        "reference_serial": serial,
        "dask": dask,
        "counts_equal_reference": bool(np.array_equal(ours_counts, pool_counts)),
        "speedup_vs_pool": round(pool_total / ours["total"], 2),
        "speedup_vs_serial": round(serial["seconds"]["total"] / ours["total"], 2)
        if serial
        else None,
        "loadavg": os.getloadavg(),
    }
    report(console, name, f)
    return f


def report(console: Console, name: str, f: dict[str, Any]) -> None:
    title = f"curate {name}, {f['rows']:,} rows (ours: median of {len(f['curate']['totals'])})"
    table = Table(title=title)
    table.add_column("pipeline")
    for stage in STAGES:
        table.add_column(f"{stage} s", justify="right")
    table.add_column("rows/s", justify="right")
    table.add_column("peak RSS MiB", justify="right")
    table.add_column("ours faster", justify="right")
    ours_total = f["curate"]["seconds"]["total"]
    rows = [
        ("metaclip-gpu curate, in process", f["curate"]["seconds"], f["curate"]["peak_rss_mib"])
    ]
    pool = f["reference_pool"]
    rows.append(
        (f"reference, pool of {pool['workers']}", pool["seconds"], pool["worker_peak_rss_mib"])
    )
    if f["reference_serial"]:
        rows.append(("reference, 1 process", f["reference_serial"]["seconds"], None))
    if f["dask"]:
        label = f"curate, LocalCluster {f['dask']['workers']} workers"
        peak = max(f["dask"]["worker_peak_rss_mib"].values())
        rows.append((label, f["dask"]["seconds"], peak))
    for label, seconds, peak in rows:
        cells = [f"{seconds[k]:.2f}" if k in seconds else "-" for k in STAGES]
        rate = f"{f['rows'] / seconds['total']:,.0f}"
        ratio = f"{seconds['total'] / ours_total:.1f}x"
        table.add_row(label, *cells, rate, "-" if peak is None else f"{peak:,.0f}", ratio)
    console.print(table)
    console.print(
        f"automaton build {f['automaton_build_s']:.2f} s, our index cold build "
        f"{f['index_cold_build_s']:.2f} s (neither in a total); kept: ours "
        f"{f['curate']['kept']:,}, pool {pool['kept']:,}; entry counts equal the "
        f"reference's: {f['counts_equal_reference']}; curate totals {f['curate']['totals']}"
    )


if __name__ == "__main__":
    sys.exit(main())
