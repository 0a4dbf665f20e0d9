"""Language identification throughput: fastText lid.176 batched over an Arrow column vs per text.

Run from anywhere (paths are relative to the repository root):

    .venv/bin/python bench/bench_lid.py [--reps N] [--repeat K] [--quick] [--json PATH]

Input: the CC3M validation alt-texts (``../shared/data/cc3m_val.tsv``, or ``--data-dir`` /
``$METACLIP_SHARED_DATA``), repeated ``--repeat`` times (default 1: 15,833 texts). One
process, one thread (fastText's predict is single-threaded; BLAS/OpenMP threads are set to 1
before NumPy loads), so the figures are texts/s on one core: each method's CPU seconds of
this process (``time.process_time``, what a shared, loaded machine disturbs least) and wall
seconds, the median of ``--reps`` runs, the methods interleaved run by run. Methods:

  (a) ``metaclip_gpu.pipeline.lid.identify``: what the pipeline runs per chunk (newlines replaced in
      Arrow, one multi-line predict call, labels back as an Arrow column);
  (b) the model's own ``predict`` called once per Python string (as the reference's
      ``ftlangdetect.detect`` does), newlines replaced per text;
  (c) ``langid.classify`` per text on the first ``--langid-texts`` texts, only where the
      ``langid`` package is installed (the old identifier, now the fallback).

The labels of (a) and (b) must be identical (exit 1 otherwise). Model loading is not timed.
Writes ``bench/results/bench_lid.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _common import (
    CC3M_FILE,
    available_cores,
    cpu_model,
    find_data_dir,
    read_cc3m_rows,
)

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core: langid's NumPy must not spread over threads

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = REPO_ROOT / "bench" / "results" / "bench_lid.json"

sys.path.insert(0, str(REPO_ROOT))
import pyarrow as pa  # noqa: E402

from metaclip_gpu.pipeline import lid  # noqa: E402


def timed_interleaved(fns: dict[str, Any], reps: int) -> dict[str, tuple[float, float, Any]]:
    """{name: (median CPU seconds, median wall seconds, last result)}, runs interleaved."""
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    wall: dict[str, list[float]] = {name: [] for name in fns}
    results: dict[str, Any] = {}
    for _ in range(reps):
        for name, fn in fns.items():
            cpu0, wall0 = time.process_time(), time.perf_counter()
            results[name] = fn()
            cpu[name].append(time.process_time() - cpu0)
            wall[name].append(time.perf_counter() - wall0)
    return {
        name: (statistics.median(cpu[name]), statistics.median(wall[name]), results[name])
        for name in fns
    }


def rates(n: int, cpu_s: float, wall_s: float) -> dict[str, float]:
    return {
        "cpu_seconds": round(cpu_s, 3),
        "wall_seconds": round(wall_s, 3),
        "texts_per_cpu_s": round(n / cpu_s),
        "texts_per_wall_s": round(n / wall_s),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=1, help="the CC3M texts, K times")
    parser.add_argument("--langid-texts", type=int, default=2000)
    parser.add_argument("--lid-model", default=None, help="e.g. lid.176.bin [packaged .ftz]")
    parser.add_argument("--quick", action="store_true", help="1 rep")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--data-dir", default=None, help="folder of cc3m_val.tsv")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quick:
        args.reps = 1
    path = find_data_dir(args.data_dir) / CC3M_FILE
    if not path.is_file():
        print(f"bench_lid.py: missing input file {path} (see --data-dir)", file=sys.stderr)
        return 2
    captions, _ = read_cc3m_rows(path)
    texts = captions * args.repeat
    n = len(texts)
    column = pa.array(texts, pa.string())
    model_spec = lid.LidModel(args.lid_model)
    model = lid.fasttext_model(model_spec)
    if model is None:
        print("bench_lid.py: fastText is not installed: pip install -e '.[lid]'", file=sys.stderr)
        return 2
    print(f"bench_lid: {n:,} CC3M texts, {model_spec.describe()}; {cpu_model()}")

    def per_text() -> list[str]:
        return [model.predict(t.replace("\n", " "), k=1)[0][0] for t in texts]

    runs = timed_interleaved(
        {"batched": lambda: lid.identify(column, model_spec), "per_text": per_text}, args.reps
    )
    batched_cpu, batched_wall, batched = runs["batched"]
    single_cpu, single_wall, single = runs["per_text"]
    labels = batched.to_pylist()
    agree = sum(a == b.removeprefix(lid.LABEL_PREFIX) for a, b in zip(labels, single, strict=True))

    figures: dict[str, Any] = {
        "texts": n,
        "model": model_spec.describe(),
        "reps": args.reps,
        "batched_identify": rates(n, batched_cpu, batched_wall),
        "per_text_predict": rates(n, single_cpu, single_wall),
        "batched_vs_per_text_cpu": round(single_cpu / batched_cpu, 2),
        "labels_agree": f"{agree}/{n}",
        "top_languages": dict(Counter(labels).most_common(5)),
    }
    rows = [
        ("lid.identify, batched (Arrow)", n, batched_cpu, batched_wall),
        ("predict per text", n, single_cpu, single_wall),
    ]
    try:
        import langid
    except ImportError:
        figures["langid_per_text"] = "not installed"
    else:
        subset = texts[: args.langid_texts]
        langid.classify("warm up")  # loads its model
        langid_cpu, langid_wall, _ = timed_interleaved(
            {"langid": lambda: [langid.classify(t)[0] for t in subset]}, 1
        )["langid"]
        figures["langid_per_text"] = {
            "texts": len(subset),
            **rates(len(subset), langid_cpu, langid_wall),
        }
        rows.append(("langid per text (fallback)", len(subset), langid_cpu, langid_wall))
    figures["machine"] = {
        "cpu": cpu_model(),
        "cores": available_cores(),
        "threads_used": 1,
        "platform": platform.platform(),
        "loadavg": os.getloadavg(),
    }
    for label, count, cpu_s, wall_s in rows:
        print(
            f"  {label:30s} {count:>7,} texts  CPU {cpu_s:7.3f} s = {count / cpu_s:>8,.0f} "
            f"texts/s  (wall {wall_s:7.3f} s = {count / wall_s:>8,.0f} texts/s)"
        )
    print(f"  labels agree (batched vs per text): {agree:,}/{n:,}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=1) + "\n")
    print(f"figures written to {args.json}")
    return 0 if agree == n else 1


if __name__ == "__main__":
    sys.exit(main())
