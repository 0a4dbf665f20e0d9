"""Matching throughput: MetaCLIP's pyahocorasick matcher vs the metaclip-gpu CPU backend.

Run from anywhere (paths are relative to the repository root):

    .venv/bin/python bench/bench_match.py [--repeat-to N] [--json PATH] [--quick]

Inputs: the CC3M validation alt-texts (first tab field of ``cc3m_val.tsv``) and the 500k-entry
metadata, from ``../shared/data`` next to the repository root (or ``--data-dir`` /
``$METACLIP_SHARED_DATA``). The texts are repeated to at least ``--repeat-to`` rows (default
1,013,312 = 64 copies; ``--quick``: 4 copies).

Measured in one run, side by side:
  (a) MetaCLIP's pyahocorasick path as a user runs it: its ``spacing()``, an
      ``ahocorasick.Automaton`` over ``" " + entry + " "`` (build timed separately), and per text
      the set of ids from ``automaton.iter(spacing(text))``; on a fixed subset (``--aho-texts``)
      because it is slow;
  (b) the CPU backend with one thread; (c) with all cores. (b)/(c): ``--reps`` runs, median/min.
Also: index build time, index bytes, peak RSS after each phase, the agreement of (a) with the
CPU backend on the subset, and (when ``nvcc`` is on PATH) the kernels' ptxas resource usage.
No GPU figure is measured by this script unless a GPU backend is available where it runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_REPEAT_TO = 1_013_312  # 64 copies of the 15,833 CC3M validation texts
QUICK_COPIES = 4
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "bench_match.json"

try:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    from rich.console import Console
    from rich.table import Table
except ImportError as err:  # pragma: no cover - environment
    sys.exit(f"bench_match.py needs numpy, pyarrow and rich: {err}")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import (  # noqa: E402  (bench/_common.py, beside this script)
    CC3M_FILE,
    METADATA_FILE,
    REPO_ROOT,
    available_cores,
    build_automaton,
    cpu_model,
    find_data_dir,
    missing_data_message,
    peak_rss_mib,
    read_cc3m_rows,
    rss_mib,
)

from metaclip_gpu import MetadataIndex, match  # noqa: E402
from metaclip_gpu.engine.metadata import load_metadata  # noqa: E402
from metaclip_gpu.engine.reference import spaced_entries, spacing  # noqa: E402  (MetaCLIP's spacing(), verbatim)

# ----------------------------------------------------------------------------- MetaCLIP's path


def aho_match(automaton, texts: list[str]) -> list[list[int]]:
    """Per text, the distinct matched ids (a set, as MetaCLIP's matcher dedups them)."""
    out = []
    for text in texts:
        out.append(list({idx for _end, (idx, _key) in automaton.iter(spacing(text))}))
    return out


# ----------------------------------------------------------------------------- helpers
def utf8_bytes(array: pa.Array) -> int:
    return int(pc.sum(pc.binary_length(array)).as_py() or 0)


def ptxas_usage(console: Console) -> dict[str, Any] | None:
    """Registers / shared memory / stack per kernel from ``nvcc -Xptxas -v`` (sm_90)."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    cmd = [
        nvcc, "-arch=sm_90", "-cubin", "-Xptxas", "-v", "-std=c++17",
        "-I", "kernels", "-o", "/dev/null", "kernels/match.cu",
    ]  # fmt: skip
    try:
        proc = subprocess.run(
            cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return {"command": " ".join(cmd), "error": str(err)}
    output = proc.stdout + proc.stderr
    kernels: dict[str, dict[str, Any]] = {}
    current = None
    for line in output.splitlines():
        if m := re.search(r"(?:Compiling entry function|Function properties for) '?(\w+)'?", line):
            current = m.group(1)
            kernels.setdefault(current, {"lines": []})
            continue
        if current is None or ("ptxas info" not in line and "bytes stack frame" not in line):
            continue
        text = line.replace("ptxas info    :", "").strip()
        if "Compile time" in text:
            continue
        info = kernels[current]
        info["lines"].append(text)
        if m := re.search(r"Used (\d+) registers", text):
            info["registers"] = int(m.group(1))
        if m := re.search(r"(\d+) bytes smem", text):
            info["smem_bytes"] = int(m.group(1))
        if m := re.search(r"(\d+) bytes stack frame", text):
            info["stack_bytes"] = int(m.group(1))
        if m := re.search(r"(\d+) bytes spill stores", text):
            info["spill_store_bytes"] = int(m.group(1))
        if m := re.search(r"(\d+) bytes spill loads", text):
            info["spill_load_bytes"] = int(m.group(1))
    for info in kernels.values():
        info.setdefault("smem_bytes", 0)  # ptxas prints no smem figure when a kernel uses none
    return {
        "command": " ".join(["nvcc", *cmd[1:]]),
        "returncode": proc.returncode,
        "kernels": kernels,
        "raw": output if proc.returncode else None,
    }


def time_backend(texts: pa.Array, index: MetadataIndex, backend: str, threads, reps: int):
    """(list of seconds, last result) of `reps` full runs of match()."""
    seconds, res = [], None
    for _ in range(reps):
        started = time.perf_counter()
        res = match(texts, index, backend=backend, threads=threads)
        np.asarray(res.offsets[-1:].get() if hasattr(res.offsets, "get") else res.offsets[-1:])
        seconds.append(time.perf_counter() - started)
    return seconds, res


def compare(aho_ids: list[list[int]], res, entries: list[str], n: int) -> dict[str, Any]:
    """The CPU backend's id sets vs the automaton's on the first `n` texts.

    With duplicate strings, pyahocorasick keeps only the last id of a string, so ids are then
    compared through their strings' first id; without duplicates, ids are compared as is.
    """
    first_id: dict[str, int] = {}
    for i, entry in enumerate(entries):
        first_id.setdefault(entry, i)
    duplicates = len(entries) - len(first_id)
    offsets = np.asarray(res.offsets)
    ids = np.asarray(res.entry_ids)

    def canon(values) -> set[int]:
        if not duplicates:
            return set(values)
        return {first_id[entries[v]] for v in values}

    mismatches = []
    for i in range(n):
        ours = canon(ids[offsets[i] : offsets[i + 1]].tolist())
        theirs = canon(aho_ids[i])
        if ours != theirs:
            mismatches.append(i)
    return {
        "texts_compared": n,
        "duplicate_strings_in_metadata": duplicates,
        "compared_as": "ids" if not duplicates else "first id of each string",
        "mismatched_texts": len(mismatches),
        "first_mismatches": mismatches[:10],
        "agree": not mismatches,
    }


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repeat-to",
        type=int,
        default=None,
        help=f"repeat the CC3M texts to at least this many rows (default {DEFAULT_REPEAT_TO:,})",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write figures")
    parser.add_argument(
        "--quick", action="store_true", help=f"smoke run: {QUICK_COPIES} copies of the texts"
    )
    parser.add_argument(
        "--aho-texts",
        type=int,
        default=None,
        help="texts timed with pyahocorasick (default 100,000; --quick 20,000)",
    )
    parser.add_argument("--reps", type=int, default=5, help="runs of each CPU-backend setting")
    parser.add_argument("--data-dir", default=None, help="folder of cc3m_val.tsv and metadata")
    parser.add_argument("--no-nvcc", action="store_true", help="skip the ptxas resource report")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(highlight=False, width=120)

    data_dir = find_data_dir(args.data_dir)
    cc3m_path, metadata_path = data_dir / CC3M_FILE, data_dir / METADATA_FILE
    missing = [p for p in (cc3m_path, metadata_path) if not p.is_file()]
    if missing:
        print(missing_data_message("bench_match.py", missing), file=sys.stderr)
        return 2

    phases: dict[str, dict[str, float]] = {}
    load_before = os.getloadavg()

    def phase(name: str) -> None:
        phases[name] = {"peak_rss_mib": round(peak_rss_mib(), 1), "rss_mib": round(rss_mib(), 1)}

    phase("start")
    # ------------------------------------------------------------------ inputs
    base_texts, _urls = read_cc3m_rows(cc3m_path)
    if args.quick and args.repeat_to is None:
        copies = QUICK_COPIES
    else:
        copies = max(1, math.ceil((args.repeat_to or DEFAULT_REPEAT_TO) / len(base_texts)))
    texts_list = base_texts * copies
    n_texts = len(texts_list)
    texts = pa.array(texts_list, type=pa.string())
    text_bytes = utf8_bytes(texts)
    entries = load_metadata(metadata_path)
    aho_n = min(n_texts, args.aho_texts or (20_000 if args.quick else 100_000))
    aho_texts = texts_list[:aho_n]
    aho_bytes = utf8_bytes(texts.slice(0, aho_n))
    phase("inputs loaded")
    cores = available_cores()
    console.print(
        f"[bold]bench_match[/]: {len(base_texts):,} CC3M texts x {copies} = {n_texts:,} texts "
        f"({text_bytes / 1e6:,.1f} MB UTF-8), {len(entries):,} metadata entries; "
        f"{cpu_model()}, {cores} cores"
    )

    # ------------------------------------------------------------------ index
    started = time.perf_counter()
    index = MetadataIndex.load(metadata_path, cache=False)
    index_load_s = time.perf_counter() - started
    phase("index built")
    console.print(
        f"index: MetadataIndex.load(cache=False) {index_load_s:.2f} s, {index.nbytes:,} bytes"
    )

    # ------------------------------------------------------------------ backends
    from metaclip_gpu.engine.backends import gpu_available

    settings: list[tuple[str, str, int | None]] = [
        ("cpu_1_thread", "cpu", 1),
        ("cpu_all_cores", "cpu", None),
    ]
    if gpu_available():
        settings.append(("gpu", "gpu", None))
    runs: dict[str, dict[str, Any]] = {}
    res_all = None
    gpu_note = "no GPU figure is measured here (CPU-only machine; no GPU backend available)"
    for label, backend, threads in settings:
        warm = texts.slice(0, min(n_texts, 20_000))
        try:
            match(warm, index, backend=backend, threads=threads)  # warm caches / compile
            seconds, res = time_backend(texts, index, backend, threads, args.reps)
        except Exception as err:  # the GPU backend is optional here
            if backend != "gpu":
                raise
            gpu_note = f"no GPU figure: the GPU backend failed ({type(err).__name__}: {err})"
            continue
        median, best = statistics.median(seconds), min(seconds)
        runs[label] = {
            "backend": backend,
            "threads": (1 if threads == 1 else cores) if backend == "cpu" else None,
            "texts": n_texts,
            "bytes": text_bytes,
            "seconds": [round(s, 4) for s in seconds],
            "median_s": median,
            "min_s": best,
            "texts_per_s_median": n_texts / median,
            "texts_per_s_best": n_texts / best,
            "mb_per_s_median": text_bytes / median / 1e6,
            "matched_texts": res.matched_texts(),
            "ids": len(res.entry_ids),
        }
        phase(label)
        console.print(
            f"{label}: median {median:.3f} s, min {best:.3f} s ({n_texts / median:,.0f} texts/s)"
        )
        if backend == "cpu":
            res_all = res
        else:
            gpu_note = "GPU backend measured (end to end from host Arrow texts)"

    # ------------------------------------------------------------------ pyahocorasick
    started = time.perf_counter()
    automaton = build_automaton(spaced_entries(entries))
    aho_build_s = time.perf_counter() - started
    phase("automaton built")
    console.print(f"pyahocorasick automaton build: {aho_build_s:.2f} s; matching {aho_n:,} texts")
    started = time.perf_counter()
    aho_ids = aho_match(automaton, aho_texts)
    aho_s = time.perf_counter() - started
    phase("pyahocorasick matched")
    aho_rate = aho_n / aho_s
    runs["pyahocorasick"] = {
        "texts": aho_n,
        "bytes": aho_bytes,
        "seconds": [round(aho_s, 4)],
        "median_s": aho_s,
        "min_s": aho_s,
        "texts_per_s_median": aho_rate,
        "texts_per_s_best": aho_rate,
        "mb_per_s_median": aho_bytes / aho_s / 1e6,
    }
    agreement = compare(aho_ids, res_all, entries, aho_n)
    del automaton, aho_ids

    ptxas = None if args.no_nvcc else ptxas_usage(console)

    # ------------------------------------------------------------------ report
    scaling = (
        runs["cpu_all_cores"]["texts_per_s_median"] / runs["cpu_1_thread"]["texts_per_s_median"]
    )
    table = Table(
        title=f"Metadata sub-string matching: {len(entries):,} entries, CC3M val texts",
        title_justify="left",
    )
    table.add_column("method")
    table.add_column("texts", justify="right")
    table.add_column("texts/s (median)", justify="right")
    table.add_column("texts/s (best run)", justify="right")
    table.add_column("MB/s", justify="right")
    table.add_column("x pyahocorasick", justify="right")
    rows = [
        ("MetaCLIP spacing + pyahocorasick", "pyahocorasick"),
        ("metaclip-gpu CPU backend, 1 thread", "cpu_1_thread"),
        (f"metaclip-gpu CPU backend, {cores} threads", "cpu_all_cores"),
    ]
    if "gpu" in runs:
        rows.append(("metaclip-gpu GPU backend", "gpu"))
    for label, key in rows:
        run = runs[key]
        table.add_row(
            label,
            f"{run['texts']:,}",
            f"{run['texts_per_s_median']:,.0f}",
            f"{run['texts_per_s_best']:,.0f}",
            f"{run['mb_per_s_median']:,.1f}",
            f"{run['texts_per_s_median'] / aho_rate:,.1f}x",
        )
    console.print()
    console.print(table)
    lines = [
        f"machine: {cpu_model()}, {cores} cores ({platform.machine()}, Python "
        f"{platform.python_version()})",
        f"index build: MetadataIndex.load(cache=False) {index_load_s:.2f} s wall "
        f"(native builder {index.stats.build_seconds:.2f} s); index {index.nbytes / 2**20:.1f} MiB"
        f" ({index.stats.n_keys:,} keys, {index.stats.table_slots:,} slots)",
        f"pyahocorasick automaton build: {aho_build_s:.2f} s",
        f"scaling {cores}-core / 1-core (median texts/s): {scaling:.2f}x",
        "peak RSS (MiB) after each phase: "
        + ", ".join(f"{name} {v['peak_rss_mib']:,.0f}" for name, v in phases.items()),
        f"CPU-backend runs: {args.reps} each, full {n_texts:,} texts; pyahocorasick: one run "
        f"on the first {aho_n:,} texts",
        f"agreement on the first {aho_n:,} texts (pyahocorasick vs CPU backend, id sets): "
        + (
            "all equal"
            if agreement["agree"]
            else f"{agreement['mismatched_texts']:,} texts differ "
            f"(first: {agreement['first_mismatches']})"
        ),
        gpu_note,
    ]
    noisy = [
        key
        for key in ("cpu_1_thread", "cpu_all_cores")
        if runs[key]["median_s"] > 1.25 * runs[key]["min_s"]
    ]
    if noisy:
        lines.append(
            f"warning: noisy runs ({', '.join(noisy)}: median > 1.25x min); other processes "
            f"competed for the cores (load average before {load_before[0]:.2f}, after "
            f"{os.getloadavg()[0]:.2f}); the best run is the less disturbed figure"
        )
    for line in lines:
        console.print(line, soft_wrap=True)
    if ptxas is not None:
        console.print(f"ptxas (sm_90): {ptxas['command']}")
        if ptxas.get("kernels"):
            for name, info in ptxas["kernels"].items():
                console.print(
                    f"  {name}: {info.get('registers', '?')} registers, "
                    f"{info['smem_bytes']} bytes smem, {info.get('stack_bytes', 0)} bytes stack, "
                    f"{info.get('spill_store_bytes', 0)}/{info.get('spill_load_bytes', 0)} "
                    "bytes spill stores/loads"
                )
        else:
            console.print(f"  failed: {ptxas.get('error') or ptxas.get('raw')}")
    else:
        console.print("ptxas: nvcc not on PATH (or --no-nvcc): no register/smem report")

    result = {
        "benchmark": "bench_match",
        "unix_time": time.time(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "cpu_model": cpu_model(),
            "cores": cores,
            "logical_cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "inputs": {
            "cc3m": str(cc3m_path),
            "metadata": str(metadata_path),
            "base_texts": len(base_texts),
            "copies": copies,
            "texts": n_texts,
            "text_bytes_utf8": text_bytes,
            "metadata_entries": len(entries),
            "aho_texts": aho_n,
            "aho_text_bytes_utf8": aho_bytes,
        },
        "index": {
            "load_seconds_wall": index_load_s,
            "nbytes": index.nbytes,
            "stats": {k: getattr(index.stats, k) for k in index.stats.__dataclass_fields__},
        },
        "pyahocorasick_build_seconds": aho_build_s,
        "runs": runs,
        "ratios_to_pyahocorasick": {
            key: run["texts_per_s_median"] / aho_rate for key, run in runs.items()
        },
        "scaling_all_cores_over_1": scaling,
        "peak_rss_mib_after_phase": phases,
        "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
        "noisy_runs": noisy,
        "agreement": agreement,
        "gpu": gpu_note,
        "ptxas_sm90": ptxas,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, default=float) + "\n")
    console.print(f"figures written to {args.json}")
    return 0 if agreement["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
