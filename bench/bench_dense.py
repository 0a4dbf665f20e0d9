"""Matching throughput by ids a text, at real match density, beside MetaCLIP's pyahocorasick.

Run from anywhere (paths are relative to the repository root):

    .venv/bin/python bench/bench_dense.py [--texts N] [--reps R] [--json PATH] [--quick]

Two data sets, each measured side by side in one run:
  cc3m   today's bench_match data: the CC3M validation alt-texts against the 500k-entry list
         (9.6 ids a text; no text is long);
  dense  metadata that gives 15-40 ids a text: the 500k list plus every bigram and trigram of
         the CC3M texts seen >= 3 times plus the Title-case form of the 5,000 most frequent
         words (the ones not already listed), and texts of web alt-text length: 6-80 words
         (log-uniform; median ~22), built by joining CC3M captions, half of them capitalised,
         a third ending in a full stop.
Texts are put in buckets by their number of distinct ids (1-8, 9-16, 17-32, 33-64, 65+; texts
with no id are left out). For each bucket: the CPU backend on 1 thread and on all cores
(``--reps`` runs over the bucket's texts repeated to at least ``--min-rows``, median), and
MetaCLIP's matcher (its ``spacing()`` and a pyahocorasick automaton over ``" " + e + " "``, as
``bench_match.py`` runs it) on up to ``--aho-texts`` of them (6,000), with its ids compared to
ours. The one-thread runs and pyahocorasick's alternate, round by round, so a burst of other
work on the machine falls on both; each round also gives a paired ratio (CPU time), whose
median and range are printed. Each single-thread figure is given per wall second and per
CPU second of the process (``time.process_time``): on a shared machine the CPU-time ratio
is the steadier one, since time spent waiting for a core is not counted on either side.
Figures go to ``bench/results/bench_dense.json`` with the load average (compare the ratios
of one run, not absolute rates across runs).
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

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
    peak_rss_mib,
    read_cc3m_rows,
)
from bench_match import aho_match, compare, ptxas_usage

from metaclip_gpu import MetadataIndex, match
from metaclip_gpu.engine.metadata import load_metadata
from metaclip_gpu.engine.reference import spaced_entries

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "bench_dense.json"
BUCKETS: tuple[tuple[str, int, int], ...] = (
    ("1-8", 1, 8),
    ("9-16", 9, 16),
    ("17-32", 17, 32),
    ("33-64", 33, 64),
    ("65+", 65, 1 << 30),
)
TITLE_WORDS = 5_000
NGRAM_MIN_COUNT = 3


# ------------------------------------------------------------------------------ data sets
def dense_metadata(entries: list[str], captions: list[str]) -> list[str]:
    """The 500k list, then the corpus's frequent bigrams and trigrams, then Title-case words
    (each string once: nothing already listed is added again)."""
    seen = set(entries)
    ngrams: collections.Counter[str] = collections.Counter()
    words: collections.Counter[str] = collections.Counter()
    for caption in captions:
        tokens = caption.split()
        words.update(tokens)
        for n in (2, 3):
            ngrams.update(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    extra = []
    for gram, count in ngrams.items():
        if count >= NGRAM_MIN_COUNT and gram not in seen:
            seen.add(gram)
            extra.append(gram)
    for word, _count in words.most_common(TITLE_WORDS):
        title = word.title()
        if title not in seen:
            seen.add(title)
            extra.append(title)
    return entries + extra


def web_texts(captions: list[str], n: int, seed: int = 0) -> list[str]:
    """`n` alt-text-like texts of 6-80 words (log-uniform), made of joined captions."""
    rng = random.Random(seed)
    lo, hi = math.log(6), math.log(80)
    texts = []
    for _ in range(n):
        target = round(math.exp(rng.uniform(lo, hi)))
        words: list[str] = []
        while len(words) < target:
            caption = rng.choice(captions)
            if rng.random() < 0.5:
                caption = caption[:1].upper() + caption[1:]
            words += caption.split()
            if rng.random() < 0.3:
                words[-1] += "."
        texts.append(" ".join(words[:target]))
    return texts


# ------------------------------------------------------------------------------ timing
def time_ours(
    texts: pa.Array, index: MetadataIndex, threads: int | None, reps: int
) -> tuple[list[float], list[float]]:
    """(wall seconds, CPU seconds of the process) of `reps` runs of match()."""
    wall, cpu = [], []
    for _ in range(reps):
        started, started_cpu = time.perf_counter(), time.process_time()
        match(texts, index, backend="cpu", threads=threads)
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return wall, cpu


def measure(
    name: str,
    entries: list[str],
    texts: list[str],
    args: argparse.Namespace,
    cores: int,
) -> dict[str, Any]:
    started = time.perf_counter()
    index = MetadataIndex.from_entries(entries, cache=False)
    index_s = time.perf_counter() - started
    all_texts = pa.array(texts, type=pa.string())
    counts = np.diff(np.asarray(match(all_texts, index, backend="cpu").offsets))
    started = time.perf_counter()
    automaton = build_automaton(spaced_entries(entries))
    aho_build_s = time.perf_counter() - started
    words = np.array([len(t.split()) for t in texts])
    print(
        f"[{name}] {len(entries):,} entries, {len(texts):,} texts, "
        f"{counts.mean():.1f} ids a text (median {np.median(counts):.0f}), "
        f"{words.mean():.1f} words a text; index {index_s:.2f} s, automaton {aho_build_s:.2f} s"
    )
    buckets: dict[str, Any] = {}
    for label, lo, hi in BUCKETS:
        members = np.flatnonzero((counts >= lo) & (counts <= hi))
        if len(members) == 0:
            buckets[label] = {"texts": 0}
            print(f"  {label:>6}: no texts")
            continue
        subset = [texts[i] for i in members]
        copies = max(1, math.ceil(args.min_rows / len(subset)))
        timed = pa.array(subset * copies, type=pa.string())
        n_timed = len(timed)
        match(timed.slice(0, 2_000), index, backend="cpu", threads=1)  # warm
        aho_texts = subset[: args.aho_texts]
        aho_ids = aho_match(automaton, aho_texts)  # warm (and the ids compared below)
        # One thread and pyahocorasick alternate, round by round, so that a burst of other
        # work on a shared machine falls on both sides; each round gives a paired ratio.
        one, one_cpu, aho_wall, aho_cpu = [], [], [], []
        for _ in range(max(args.reps, args.aho_reps)):
            wall_s, cpu_s = time_ours(timed, index, 1, 1)
            one += wall_s
            one_cpu += cpu_s
            started, started_cpu = time.perf_counter(), time.process_time()
            aho_match(automaton, aho_texts)
            aho_wall.append(time.perf_counter() - started)
            aho_cpu.append(time.process_time() - started_cpu)
        paired_cpu = [
            (n_timed / ours) / (len(aho_texts) / theirs)
            for ours, theirs in zip(one_cpu, aho_cpu, strict=True)
        ]
        every, _ = time_ours(timed, index, None, args.reps)
        agreement = compare(aho_ids, match(aho_texts, index, backend="cpu"), entries, len(aho_ids))
        one_rate = n_timed / statistics.median(one)
        one_cpu_rate = n_timed / statistics.median(one_cpu)
        every_rate = n_timed / statistics.median(every)
        aho_rate = len(aho_texts) / statistics.median(aho_wall)
        aho_cpu_rate = len(aho_texts) / statistics.median(aho_cpu)
        buckets[label] = {
            "texts": len(members),
            "ids_mean": float(counts[members].mean()),
            "words_mean": float(words[members].mean()),
            "timed_rows": n_timed,
            "cpu_1_thread_s": [round(s, 4) for s in one],
            "cpu_1_thread_cpu_s": [round(s, 4) for s in one_cpu],
            "cpu_all_cores_s": [round(s, 4) for s in every],
            "cpu_1_thread_texts_per_s": one_rate,
            "cpu_1_thread_texts_per_cpu_s": one_cpu_rate,
            "cpu_all_cores_texts_per_s": every_rate,
            "pyahocorasick_texts": len(aho_texts),
            "pyahocorasick_s": [round(s, 4) for s in aho_wall],
            "pyahocorasick_cpu_s": [round(s, 4) for s in aho_cpu],
            "pyahocorasick_texts_per_s": aho_rate,
            "pyahocorasick_texts_per_cpu_s": aho_cpu_rate,
            "ratio_1_thread": one_rate / aho_rate,
            "ratio_1_thread_cpu_time": one_cpu_rate / aho_cpu_rate,
            "ratio_1_thread_cpu_time_paired": [round(r, 2) for r in paired_cpu],
            "ratio_1_thread_cpu_time_paired_median": statistics.median(paired_cpu),
            "ratio_all_cores": every_rate / aho_rate,
            "scaling_all_cores_over_1": every_rate / one_rate,
            "agreement": agreement,
        }
        print(
            f"  {label:>6}: {len(members):>7,} texts, {counts[members].mean():5.1f} ids | "
            f"1 thread {one_rate:>9,.0f}/s ({one_cpu_rate:>9,.0f}/cpu-s), "
            f"{cores} threads {every_rate:>9,.0f}/s | pyahocorasick {aho_rate:>7,.0f}/s "
            f"({aho_cpu_rate:>7,.0f}/cpu-s) | 1 thread {one_rate / aho_rate:5.1f}x "
            f"(cpu-time {one_cpu_rate / aho_cpu_rate:5.1f}x, paired rounds "
            f"{min(paired_cpu):.1f}-{max(paired_cpu):.1f}x), all {every_rate / aho_rate:5.1f}x, "
            f"scaling {every_rate / one_rate:.2f}x"
            + ("" if agreement["agree"] else f"  MISMATCH {agreement['mismatched_texts']}")
        )
    return {
        "entries": len(entries),
        "texts": len(texts),
        "ids_per_text_mean": float(counts.mean()),
        "ids_per_text_median": float(np.median(counts)),
        "words_per_text_mean": float(words.mean()),
        "texts_without_ids": int((counts == 0).sum()),
        "index_build_s": index_s,
        "index_nbytes": index.nbytes,
        "automaton_build_s": aho_build_s,
        "buckets": buckets,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=60_000, help="dense texts (default 60,000)")
    parser.add_argument(
        "--cc3m-copies", type=int, default=2, help="copies of the CC3M texts (default 2)"
    )
    parser.add_argument(
        "--min-rows", type=int, default=100_000, help="rows a bucket is timed on (repeated)"
    )
    parser.add_argument("--aho-texts", type=int, default=6_000, help="pyahocorasick texts/bucket")
    parser.add_argument("--reps", type=int, default=5, help="runs of each CPU-backend setting")
    parser.add_argument(
        "--aho-reps", type=int, default=3, help="pyahocorasick runs a bucket (at least --reps)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: small sizes, 2 reps")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write figures")
    parser.add_argument("--data-dir", default=None, help="folder of cc3m_val.tsv and metadata")
    parser.add_argument("--no-nvcc", action="store_true", help="skip the ptxas resource report")
    args = parser.parse_args(argv)
    if args.quick:
        args.texts, args.cc3m_copies, args.min_rows = 8_000, 1, 5_000
        args.aho_texts, args.reps, args.aho_reps = min(args.aho_texts, 500), 2, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data_dir = find_data_dir(args.data_dir)
    cc3m_path, metadata_path = data_dir / CC3M_FILE, data_dir / METADATA_FILE
    missing = [p for p in (cc3m_path, metadata_path) if not p.is_file()]
    if missing:
        print(missing_data_message("bench_dense.py", missing), file=sys.stderr)
        return 2
    cores = available_cores()
    load_before = os.getloadavg()
    captions, _urls = read_cc3m_rows(cc3m_path)
    entries = load_metadata(metadata_path)
    print(f"bench_dense: {cpu_model()}, {cores} cores, load average {load_before[0]:.2f}")
    sets = {
        "cc3m": measure("cc3m", entries, captions * args.cc3m_copies, args, cores),
        "dense": measure(
            "dense", dense_metadata(entries, captions), web_texts(captions, args.texts), args, cores
        ),
    }
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    ptxas = None if args.no_nvcc else ptxas_usage(None)
    if ptxas is not None and ptxas.get("kernels"):
        print(f"ptxas (sm_90): {ptxas['command']}")
        for name, info in ptxas["kernels"].items():
            print(
                f"  {name}: {info.get('registers', '?')} registers, "
                f"{info.get('stack_bytes', 0)} bytes stack, "
                f"{info.get('spill_store_bytes', 0)}/{info.get('spill_load_bytes', 0)} "
                "bytes spill stores/loads"
            )
    agree = all(
        b.get("agreement", {"agree": True})["agree"]
        for s in sets.values()
        for b in s["buckets"].values()
    )
    result = {
        "benchmark": "bench_dense",
        "unix_time": time.time(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "cpu_model": cpu_model(),
            "cores": cores,
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "load_average_1min": {"before": load_before[0], "after": load_after[0]},
        "data_sets": sets,
        "all_agree": agree,
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "ptxas_sm90": ptxas,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(f"figures written to {args.json}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
