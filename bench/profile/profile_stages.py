"""Where the match and balance stages' wall time goes, shard by shard, on this machine's cores.

    .venv/bin/python bench/profile/profile_stages.py [--copies 64] [--shards 8] [--t 1000]
        [--runs 1] [--no-fsync] [--json bench/results/profile_stages.json]

CC3M x `--copies` (64: 1,013,312 rows; ``bench_curate.cc3m_table``) as `--shards` Parquet
shards, then `--runs` ``run_curate`` runs, each in a fresh process, with
`match.match_shard_output` and `balance._shard_figures` wrapped to take, per shard, its wall
time and its thread's CPU time (``time.thread_time``), and ``os.fsync`` wrapped to add up the
seconds each thread waited in it (the compute threads', the main thread's). Per stage: the wall
time, the process's CPU time (all threads, pyarrow's own included) and their ratio (2.0 = both
cores busy all along), and how long the stage went on after its last shard's compute thread
was done (records, fsyncs). A shard's wall minus its thread CPU minus its fsync waits is time
its thread was runnable but not running, or waiting on something else: the GIL, a core (other
processes share them), pyarrow's own threads, reads. `--no-fsync` makes ``os.fsync`` a no-op
(what the stages cost without durability waits; the run directory is then not crash safe).
`--pandas-first` imports pandas before the run: pyarrow imports it on its first ``pa.array``
call (to tell a pandas Series from an array), in the match stage's first shard, holding the
GIL for about 0.3-0.5 s (py-spy ``--gil``) while the other compute thread waits for it.
No GPU figure is measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent.parent))
from _common import CC3M_FILE, METADATA_FILE, find_data_dir, missing_data_message  # noqa: E402

DEFAULT_JSON = HERE.parent / "results" / "profile_stages.json"


class Timeline:
    """Per-shard (stage, shard, thread, start, wall, thread CPU, fsync wait) rows and the
    fsync waits of every thread, filled by the wrappers `install` puts in place."""

    def __init__(self, no_fsync: bool) -> None:
        self.rows: list[dict[str, Any]] = []
        self.fsync_by_thread: dict[str, float] = defaultdict(float)
        self.fsyncs_by_thread: dict[str, int] = defaultdict(int)
        self.local = threading.local()
        self.lock = threading.Lock()
        self.origin = time.perf_counter()
        self.no_fsync = no_fsync

    def install(self) -> None:
        from metaclip_gpu.pipeline import balance, match

        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            started = time.perf_counter()
            if not self.no_fsync:
                real_fsync(fd)
            waited = time.perf_counter() - started
            name = threading.current_thread().name
            with self.lock:
                self.fsync_by_thread[name] += waited
                self.fsyncs_by_thread[name] += 1
            self.local.fsync = getattr(self.local, "fsync", 0.0) + waited

        os.fsync = fsync
        match.match_shard_output = self.wrap("match", match.match_shard_output)
        balance._shard_figures = self.wrap("balance", balance._shard_figures)

    def wrap(self, stage: str, fn: Any) -> Any:
        def timed(shard: Any, *args: Any, **kwargs: Any) -> Any:
            self.local.fsync = 0.0
            wall0, cpu0 = time.perf_counter(), time.thread_time()
            try:
                return fn(shard, *args, **kwargs)
            finally:
                wall = time.perf_counter() - wall0
                row = {
                    "stage": stage,
                    "shard": shard.name,
                    "thread": threading.current_thread().name,
                    "start": round(wall0 - self.origin, 4),
                    "wall": round(wall, 4),
                    "cpu": round(time.thread_time() - cpu0, 4),
                    "fsync": round(self.local.fsync, 4),
                }
                with self.lock:
                    self.rows.append(row)

        return timed


def child(
    shards: str, metadata: str, out: str, t: float, no_fsync: bool, pandas_first: bool
) -> dict[str, Any]:
    """One ``run_curate`` with the wrappers in place; the figures (run in a fresh process)."""
    if pandas_first:  # what pyarrow's first pa.array() call otherwise imports mid-stage
        import pandas  # noqa: F401
    from metaclip_gpu.pipeline import run as run_module
    from metaclip_gpu.pipeline import run_modes

    timeline = Timeline(no_fsync)
    timeline.install()
    stages: dict[str, dict[str, float]] = {}
    real_stage = run_modes.StageTimer.stage

    @contextlib.contextmanager
    def stage(timer: Any, name: str) -> Iterator[None]:  # each stage's wall and process CPU
        wall0, cpu0 = time.perf_counter(), time.process_time()
        with real_stage(timer, name):
            yield
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        shards_end = max(
            (r["start"] + r["wall"] for r in timeline.rows if r["stage"] == name), default=None
        )
        end = time.perf_counter() - timeline.origin
        stages[name] = {
            "wall": round(wall, 3),
            # after the stage's last shard left its compute thread: records, fsyncs, clean-up
            "tail": round(end - shards_end, 4) if shards_end is not None else None,
            "process_cpu": round(cpu, 3),
            "cores_busy": round(cpu / wall, 2) if wall else 0.0,
        }

    run_modes.StageTimer.stage = stage  # type: ignore[method-assign]
    summary = run_module.run_curate(shards, metadata, out, ts=[t], progress=False)
    return {
        "stages": stages,
        "summary_seconds": summary["seconds"],
        "shards": timeline.rows,
        "fsync_by_thread": {k: round(v, 4) for k, v in timeline.fsync_by_thread.items()},
        "fsyncs_by_thread": dict(timeline.fsyncs_by_thread),
    }


def report(figures: dict[str, Any]) -> None:
    fsync = "off" if figures["no_fsync"] else "on"
    pandas = "; pandas imported first" if figures.get("pandas_first") else ""
    print(f"load average {os.getloadavg()[0]:.2f}; fsync {fsync}{pandas}")
    for stage, f in figures["stages"].items():
        tail = "" if f.get("tail") is None else f", {f['tail']:.3f} s after its last shard"
        print(
            f"{stage:8s} wall {f['wall']:.3f} s, process CPU {f['process_cpu']:.3f} s "
            f"({f['cores_busy']:.2f} cores busy){tail}"
        )
    print(f"{'stage':8s} {'shard':22s} {'thread':26s} start  wall   cpu    fsync  other")
    for row in sorted(figures["shards"], key=lambda r: (r["stage"] != "match", r["start"])):
        other = row["wall"] - row["cpu"] - row["fsync"]
        print(
            f"{row['stage']:8s} {row['shard']:22s} {row['thread']:26s} {row['start']:5.2f} "
            f"{row['wall']:.3f}  {row['cpu']:.3f}  {row['fsync']:.3f}  {other:.3f}"
        )
    for stage in ("match", "balance"):
        rows = [r for r in figures["shards"] if r["stage"] == stage]
        if rows:
            print(
                f"{stage}: median shard wall {statistics.median(r['wall'] for r in rows):.3f} s, "
                f"thread CPU {statistics.median(r['cpu'] for r in rows):.3f} s, fsync "
                f"{statistics.median(r['fsync'] for r in rows):.3f} s"
            )
    waits = figures["fsync_by_thread"]
    calls = figures["fsyncs_by_thread"]
    listed = ", ".join(f"{k} {v:.3f} s/{calls[k]}" for k, v in waits.items())
    print(f"fsync waits by thread (seconds/calls): {listed}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=64, help="CC3M copies [64: ~1M rows]")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--t", type=float, default=1000.0)
    parser.add_argument("--no-fsync", action="store_true", help="os.fsync a no-op (not safe)")
    parser.add_argument(
        "--pandas-first", action="store_true", help="import pandas before the run starts"
    )
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--scratch", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--runs", type=int, default=1, help="curate runs (fresh processes)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        shards, metadata, out, t = args.child
        figures = child(shards, metadata, out, float(t), args.no_fsync, args.pandas_first)
        print(json.dumps(figures))
        return 0
    import subprocess

    from bench_curate import cc3m_table, write_table_shards

    from metaclip_gpu import MetadataIndex

    data_dir = find_data_dir(args.data_dir)
    missing = [p for p in (data_dir / CC3M_FILE, data_dir / METADATA_FILE) if not p.is_file()]
    if missing:
        print(missing_data_message("profile_stages.py", missing), file=sys.stderr)
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="bench-timeline-", dir=args.scratch))
    try:
        write_table_shards(cc3m_table(data_dir, args.copies), scratch / "shards", args.shards)
        metadata = data_dir / METADATA_FILE
        MetadataIndex.load(metadata)  # fills the on-disk cache the run reads
        command = [sys.executable, __file__, "--child", str(scratch / "shards"), str(metadata)]
        command += [str(scratch / "out"), str(args.t)] + (["--no-fsync"] if args.no_fsync else [])
        command += ["--pandas-first"] if args.pandas_first else []
        runs = []
        for _ in range(args.runs):
            shutil.rmtree(scratch / "out", ignore_errors=True)
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            figures.update(
                no_fsync=args.no_fsync, pandas_first=args.pandas_first, loadavg=os.getloadavg()
            )
            report(figures)
            runs.append(figures)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    summary = {
        "copies": args.copies,
        "n_shards": args.shards,
        "no_fsync": args.no_fsync,
        "pandas_first": args.pandas_first,
        "gpu": "not measured (no GPU backend here)",
        "runs": runs,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
