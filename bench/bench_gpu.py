"""GPU against CPU on the same data: `match` alone, and `curate` in process and on a cluster.

    .venv/bin/python bench/bench_gpu.py [--copies 64] [--shards 16] [--t 20000] [--quick]
                                        [--require-gpu]          (what ``./run gpu-check`` runs)

Input: the CC3M validation alt-texts repeated `--copies` times (default 64: 1,013,312 texts)
and the 500k-entry metadata, from ``../shared/data`` (or ``--data-dir``). Measured:
  (a) match alone: the CPU backend (all cores) and the GPU backend on the same Arrow texts,
      and the GPU backend on a cuDF Series (read in place). The GPU's first call (NVRTC
      compile or CuPy's cached binary, the index upload) is timed apart from `--reps` warm
      calls; the GPU result must equal the CPU's, id for id, or the script fails;
  (b) ``run_curate`` in process, CPU then GPU, into fresh folders: per-stage seconds, and the
      curated rows must be the same;
  (c) ``run_curate`` on a ``dask_cuda.LocalCUDACluster`` (one worker per GPU, the default RMM
      asynchronous allocator, cuDF spilling) against a ``distributed.LocalCluster`` of one
      single-threaded worker per core (cluster start-up timed apart), same check.
Writes ``bench/results/bench_gpu.json`` and ``bench/RESULTS-gpu.md`` (the device named from
``nvidia-smi`` and CuPy's device properties). Without a CUDA device it measures nothing: with
`--require-gpu` it exits 1 and writes nothing; without, it writes a JSON that says it skipped
(so ``./run bench`` on a CPU machine stays green and shows why there are no GPU figures).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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

from metaclip_gpu import MetadataIndex, match
from metaclip_gpu.engine.backends import gpu_count
from metaclip_gpu.pipeline.run import run_curate
from metaclip_gpu.pipeline.write import curated_dir

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_JSON = BENCH_DIR / "results" / "bench_gpu.json"
DEFAULT_MARKDOWN = BENCH_DIR / "RESULTS-gpu.md"
NO_GPU = "no CUDA device: CuPy sees none (is the gpu extra installed, and the driver?)"


def device_description() -> dict[str, Any]:
    """The GPU(s): ``nvidia-smi`` (name, memory, driver) and CuPy's device 0 properties."""
    import cupy

    found: dict[str, Any] = {"count": gpu_count()}
    smi = shutil.which("nvidia-smi")
    if smi is not None:
        query = subprocess.run(
            [smi, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        found["nvidia_smi"] = [line.strip() for line in query.stdout.splitlines() if line]
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"]
    found["name"] = name.decode() if isinstance(name, bytes) else str(name)
    found["compute_capability"] = f"{props['major']}.{props['minor']}"
    found["multiprocessors"] = int(props["multiProcessorCount"])
    found["memory_gib"] = round(props["totalGlobalMem"] / 2**30, 1)
    found["cuda_runtime"] = int(cupy.cuda.runtime.runtimeGetVersion())
    return found


def _sync(result: Any) -> None:
    int(result.offsets[-1])  # a host read: waits for the device


def _timed(fn: Any, reps: int) -> tuple[float, list[float]]:
    """(first call's seconds, the next `reps` calls' seconds)."""
    started = time.perf_counter()
    _sync(fn())
    first = time.perf_counter() - started
    warm = []
    for _ in range(reps):
        started = time.perf_counter()
        _sync(fn())
        warm.append(time.perf_counter() - started)
    return first, warm


def bench_match(texts: pa.Array, index: MetadataIndex, reps: int) -> dict[str, Any]:
    import cudf

    n = len(texts)
    cpu = match(texts, index, backend="cpu")
    cpu_first, cpu_warm = _timed(lambda: match(texts, index, backend="cpu"), reps)
    gpu_first, gpu_warm = _timed(lambda: match(texts, index, backend="gpu"), reps)
    series = cudf.Series.from_arrow(texts)
    cudf_first, cudf_warm = _timed(lambda: match(series, index, backend="gpu"), reps)
    for name, source in (("arrow", texts), ("cudf", series)):
        got = match(source, index, backend="gpu")
        if not (
            np.array_equal(got.offsets.get(), cpu.offsets)
            and np.array_equal(got.entry_ids.get(), cpu.entry_ids)
        ):
            raise SystemExit(f"bench_gpu: the GPU's matches ({name} input) differ from the CPU's")

    def rate(seconds: list[float]) -> float:
        return round(n / statistics.median(seconds))

    return {
        "texts": n,
        "text_bytes": int(pc.sum(pc.binary_length(texts)).as_py() or 0),
        "gpu_equals_cpu": True,
        "cpu": {"seconds_median": statistics.median(cpu_warm), "texts_per_s": rate(cpu_warm)},
        "gpu_arrow": {
            "first_call_seconds": gpu_first,
            "seconds_median": statistics.median(gpu_warm),
            "texts_per_s": rate(gpu_warm),
        },
        "gpu_cudf_series": {
            "first_call_seconds": cudf_first,
            "seconds_median": statistics.median(cudf_warm),
            "texts_per_s": rate(cudf_warm),
        },
        "cpu_first_call_seconds": cpu_first,
    }


def curated_urls(out: Path, t: float) -> list[str]:
    urls: list[str] = []
    for path in sorted(curated_dir(out, t).glob("*.parquet")):
        urls += pq.read_table(path, columns=["url"]).column("url").to_pylist()
    return sorted(urls)


def bench_curate(
    shards: Path, metadata: Path, scratch: Path, t: float, cluster: bool
) -> dict[str, Any]:
    from metaclip_gpu.pipeline.cluster import close_client, make_client

    figures: dict[str, Any] = {}
    for backend in ("cpu", "gpu"):
        client, startup = None, 0.0
        if cluster:
            started = time.perf_counter()
            workers = available_cores() if backend == "cpu" else None
            client = make_client(cluster="local", backend=backend, workers=workers)
            startup = time.perf_counter() - started
        out = scratch / f"{'cluster' if cluster else 'process'}-{backend}"
        try:
            started = time.perf_counter()
            summary = run_curate(
                shards, metadata, out, ts=[t], backend=backend, progress=False, client=client,
                cache_dir=scratch / "cache",
            )  # fmt: skip
            wall = time.perf_counter() - started
        finally:
            close_client(client)
        figures[backend] = {
            "cluster_startup_seconds": round(startup, 3),
            "wall_seconds": round(wall, 3),
            "seconds": summary["seconds"],
            "texts_per_s": round(summary["texts_read"] / wall),
            "kept": summary["ts"][0]["kept"],
        }
    same = curated_urls(scratch / f"{'cluster' if cluster else 'process'}-cpu", t)
    if same != curated_urls(scratch / f"{'cluster' if cluster else 'process'}-gpu", t):
        raise SystemExit(f"bench_gpu: GPU and CPU curated sets differ (cluster={cluster})")
    figures["gpu_equals_cpu"] = True
    return figures


def markdown(f: dict[str, Any]) -> str:
    d, m = f["device"], f["match"]
    lines = [
        "# GPU against CPU (bench/bench_gpu.py)",
        "",
        f"Measured {f['date']} with `{f['command']}`.",
        "",
        f"- GPU: **{d['name']}** (compute capability {d['compute_capability']}, "
        f"{d['multiprocessors']} SMs, {d['memory_gib']} GiB; nvidia-smi: "
        f"{'; '.join(d.get('nvidia_smi', [])) or 'not found'}; {d['count']} visible)",
        f"- CPU: {f['machine']['cpu']}, {f['machine']['cores']} cores",
        f"- Input: CC3M val x {f['copies']} = {m['texts']:,} texts ({m['text_bytes']:,} bytes), "
        f"{f['metadata_entries']:,} metadata entries",
        "",
        "| match | texts/s | median s | first call s |",
        "|---|---:|---:|---:|",
        f"| CPU backend, {f['machine']['cores']} cores | {m['cpu']['texts_per_s']:,} | "
        f"{m['cpu']['seconds_median']:.3f} | {m['cpu_first_call_seconds']:.3f} |",
    ]
    for key, label in (("gpu_arrow", "GPU, Arrow input"), ("gpu_cudf_series", "GPU, cuDF")):
        g = m[key]
        lines.append(
            f"| {label} | {g['texts_per_s']:,} | {g['seconds_median']:.3f} | "
            f"{g['first_call_seconds']:.3f} |"
        )
    lines += ["", "| curate (t = {:g}) | backend | wall s | texts/s | stages s |".format(f["t"])]
    lines.append("|---|---|---:|---:|---|")
    for where in ("in_process", "cluster"):
        for backend, g in f[where].items():
            if backend == "gpu_equals_cpu":
                continue
            stages = ", ".join(f"{k} {v:.2f}" for k, v in g["seconds"].items() if k != "total")
            lines.append(
                f"| {where.replace('_', ' ')} | {backend} | {g['wall_seconds']:.2f} | "
                f"{g['texts_per_s']:,} | {stages} |"
            )
    lines += ["", "GPU and CPU gave the same matches and the same curated rows in every run."]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=64, help="CC3M val repeats")
    parser.add_argument("--shards", type=int, default=16, help="Parquet shards for curate")
    parser.add_argument("--t", type=float, default=20000.0, help="balancing threshold")
    parser.add_argument("--reps", type=int, default=3, help="warm runs of each match")
    parser.add_argument("--quick", action="store_true", help="8 copies, 4 shards, 1 rep")
    parser.add_argument("--require-gpu", action="store_true", help="exit 1 without a GPU")
    parser.add_argument("--no-cluster", action="store_true", help="skip the cluster runs")
    parser.add_argument("--data-dir", default=None, help="folder of cc3m_val.tsv and metadata")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--markdown", type=Path, default=DEFAULT_MARKDOWN)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "bench/bench_gpu.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if gpu_count() == 0:
        if args.require_gpu:
            print(f"bench_gpu: {NO_GPU}; nothing measured, nothing written", file=sys.stderr)
            return 1
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"benchmark": "bench_gpu", "skipped": NO_GPU}, indent=1))
        print(f"bench_gpu: skipped: {NO_GPU}")
        return 0
    if args.quick:
        args.copies, args.shards, args.reps = 8, 4, 1
    data_dir = find_data_dir(args.data_dir)
    missing = [p for p in (data_dir / CC3M_FILE, data_dir / METADATA_FILE) if not p.is_file()]
    if missing:
        print(missing_data_message("bench_gpu", missing), file=sys.stderr)
        return 1
    metadata = data_dir / METADATA_FILE
    figures: dict[str, Any] = {
        "benchmark": "bench_gpu",
        "command": command,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "device": device_description(),
        "machine": {"cpu": cpu_model(), "cores": available_cores()},
        "copies": args.copies,
        "t": args.t,
    }
    with tempfile.TemporaryDirectory(prefix="bench_gpu-") as tmp:
        scratch = Path(tmp)
        write_shards(data_dir, scratch / "shards", args.copies, args.shards)
        index = MetadataIndex.load(metadata, cache=scratch / "cache")
        figures["metadata_entries"] = len(index)
        texts = pq.read_table(scratch / "shards").column("caption").combine_chunks()
        figures["match"] = bench_match(texts, index, args.reps)
        print(json.dumps(figures["match"], indent=1), flush=True)
        figures["in_process"] = bench_curate(scratch / "shards", metadata, scratch, args.t, False)
        if not args.no_cluster:
            figures["cluster"] = bench_curate(scratch / "shards", metadata, scratch, args.t, True)
        else:
            figures["cluster"] = {}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=1))
    args.markdown.write_text(markdown(figures))
    print(f"bench_gpu: wrote {args.json} and {args.markdown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
