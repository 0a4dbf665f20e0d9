"""N-gram counting throughput: a Counter-based single process vs the CPU backend on 1 and 2 cores.

Run from anywhere (paths are relative to the repository root):

    .venv/bin/python bench/bench_ngrams.py [--repeat N] [--shards K] [--json PATH]

Input: the CC3M validation alt-texts (``../shared/data/cc3m_val.tsv``, or ``--data-dir`` /
``$METACLIP_SHARED_DATA``) repeated ``--repeat`` times (default 64: 1,013,312 texts), written
as ``--shards`` headerless TSV shards in a temporary folder. Every method reads those shards
and ends with the same selection (unigrams seen >= 100 times, bigrams with PMI >= 30):

  (a) baseline: one Python process, MetaCLIP's ``spacing()``, ``str.split(" ")`` and two
      ``collections.Counter`` (the tests' oracle), PMI with ``math.log2``;
  (b) ``count_corpus`` in process (pyarrow group-by, dask's synchronous scheduler): 1 core;
  (c) ``count_corpus`` on a ``distributed.LocalCluster`` of 1 worker process (1 thread);
  (d) the same with 2 workers (2 cores).
Cluster start-up is not timed. The selections of all methods must be identical.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = REPO_ROOT / "bench" / "results" / "bench_ngrams.json"
MIN_UNIGRAM_COUNT = 100
MIN_PMI = 30.0

sys.path.insert(0, str(REPO_ROOT))
from metaclip_gpu.engine.reference import spacing  # noqa: E402
from metaclip_gpu.metadata_builder.ngrams import PUNCTUATION, count_corpus, select_ngrams  # noqa: E402
from metaclip_gpu.pipeline.read import ReadOptions, Shard, find_shards  # noqa: E402


def _is_word(token: str) -> bool:
    return token != "" and not all(char in PUNCTUATION for char in token)


def counter_baseline(paths: list[Path]) -> tuple[list[tuple[str, int]], list[tuple[str, str]]]:
    """(a): unigrams >= MIN_UNIGRAM_COUNT and bigrams with PMI >= MIN_PMI, pure Python."""
    unigrams: Counter[str] = Counter()
    bigrams: Counter[tuple[str, str]] = Counter()
    for path in paths:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                tokens = spacing(line.rstrip("\n").split("\t", 1)[0]).split(" ")
                unigrams.update(t for t in tokens if _is_word(t))
                bigrams.update((a, b) for a, b in pairwise(tokens) if _is_word(a) and _is_word(b))
    n_xx = sum(unigrams.values())
    kept = sorted(((w, n) for w, n in unigrams.items() if n >= MIN_UNIGRAM_COUNT), key=_by_count)
    pmi = {
        pair: math.log2(n * n_xx) - math.log2(unigrams[pair[0]] * unigrams[pair[1]])
        for pair, n in bigrams.items()
    }
    return kept, sorted(pair for pair, score in pmi.items() if score >= MIN_PMI)


def _by_count(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


def run_corpus(shards: list[Shard], client: Any) -> tuple[Any, float]:
    finish = functools.partial(select_ngrams, min_unigram_count=MIN_UNIGRAM_COUNT, min_pmi=MIN_PMI)
    started = time.perf_counter()
    selected = count_corpus(shards, ReadOptions(), client=client, finish=finish)
    return selected, time.perf_counter() - started


def as_baseline_form(selected: Any) -> tuple[list[tuple[str, int]], list[tuple[str, str]]]:
    uni = selected.unigrams.to_pydict()
    bi = selected.bigrams.to_pydict()
    return list(zip(uni["token"], uni["count"], strict=True)), sorted(
        zip(bi["w1"], bi["w2"], strict=True)
    )


def write_shards(source: Path, folder: Path, repeat: int, n_shards: int) -> tuple[int, int]:
    """`repeat` copies of `source`'s lines in `n_shards` TSV files; (texts, text bytes)."""
    lines = source.read_bytes().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    copies = [repeat // n_shards + (i < repeat % n_shards) for i in range(n_shards)]
    block = b"".join(line + b"\n" for line in lines)
    for i, n in enumerate(copies):
        (folder / f"part-{i:03d}.tsv").write_bytes(block * n)
    text_bytes = sum(len(line.split(b"\t", 1)[0]) for line in lines)
    return len(lines) * repeat, text_bytes * repeat


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=64, help="copies of CC3M val [64]")
    parser.add_argument("--shards", type=int, default=8, help="TSV shards to split into [8]")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write figures")
    parser.add_argument("--data-dir", default=None, help="folder of cc3m_val.tsv")
    args = parser.parse_args(argv)
    data_dir = Path(
        args.data_dir or os.environ.get("METACLIP_SHARED_DATA") or REPO_ROOT.parent / "shared/data"
    )
    source = data_dir / "cc3m_val.tsv"
    if not source.is_file():
        sys.exit(f"{source} not found: the benchmark needs ../shared/data (see README)")

    from distributed import Client, LocalCluster

    with tempfile.TemporaryDirectory(prefix="bench_ngrams_") as tmp:
        texts, text_bytes = write_shards(source, Path(tmp), args.repeat, args.shards)
        shards = find_shards(tmp)
        print(f"{texts:,} texts ({text_bytes / 1e6:.1f} MB of text) in {len(shards)} shards")
        rows: list[dict[str, Any]] = []

        started = time.perf_counter()
        expected = counter_baseline([s.path for s in shards])
        rows.append({"method": "Counter baseline, 1 process", "cores": 1})
        rows[-1]["seconds"] = time.perf_counter() - started

        selected, seconds = run_corpus(shards, None)
        assert as_baseline_form(selected) == expected, "in-process selection differs"
        rows.append({"method": "count_corpus in process", "cores": 1, "seconds": seconds})

        for workers in (1, 2):
            with (
                LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
                ) as cluster,
                Client(cluster) as client,
            ):
                client.wait_for_workers(workers)
                selected, seconds = run_corpus(shards, client)
            assert as_baseline_form(selected) == expected, f"{workers}-worker selection differs"
            rows.append(
                {
                    "method": f"count_corpus, LocalCluster {workers} worker(s)",
                    "cores": workers,
                    "seconds": seconds,
                }
            )

    base = rows[0]["seconds"]
    print(f"{'method':<42} {'s':>8} {'texts/s':>12} {'MB/s':>7} {'x base':>7}")
    for row in rows:
        row["texts_per_s"] = texts / row["seconds"]
        row["mb_per_s"] = text_bytes / 1e6 / row["seconds"]
        row["x_baseline"] = base / row["seconds"]
        print(
            f"{row['method']:<42} {row['seconds']:8.2f} {row['texts_per_s']:12,.0f} "
            f"{row['mb_per_s']:7.1f} {row['x_baseline']:6.1f}x"
        )
    result = {
        "texts": texts,
        "text_bytes": text_bytes,
        "repeat": args.repeat,
        "shards": len(shards),
        "selected_unigrams": len(expected[0]),
        "selected_bigrams": len(expected[1]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
