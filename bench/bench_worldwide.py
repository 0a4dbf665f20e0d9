"""Worldwide matching throughput: a mixed-language pool vs the English-only path, and vs a
reference-style per-language pyahocorasick matcher (MetaCLIP 2's ``substr_matching.py``).

    .venv/bin/python bench/bench_worldwide.py [--texts 1013312] [--reps 3] [--quick]

Input, ``--texts`` rows (default 1,013,312), half of them English, half in six other
languages:

- English: the CC3M validation alt-texts (``../shared/data``, repeated), matched against the
  500k-entry metadata with MetaCLIP 2's per-side padding;
- zh, ja, th (no-space scripts) and ru, de, ar: **SYNTHETIC** texts and metadata. Each
  language's metadata is 50,000 distinct "words" of 1-4 characters drawn from its script
  (CJK ideographs, kana + ideographs, Thai, Cyrillic, Latin with umlauts, Arabic) plus
  10,000 two-word phrases; its texts are 4-12 words drawn with Zipf-like weights, joined
  without spaces (zh, ja, th) or with spaces, with a comma or a full stop (ASCII or CJK)
  here and there. No real multilingual data is available offline; the figures measure the
  engine on these shapes, not on real MetaCLIP 2 data.

Measured side by side in one run:
  (a) reference style: per language a ``pyahocorasick`` automaton over its
      ``get_spaced_metadata`` keys; per text ``automaton.iter(spacing(text))`` with its
      language's automaton (a ``--aho-texts`` subset; builds timed apart);
  (b) ``LanguageIndexes.match_rows`` over the whole mixed pool (grouped per language), all
      cores, ``--reps`` runs, median;
  (c) the English-only path: the same number of CC3M texts against the same metadata with
      MetaCLIP 1's padding ("spaced"), ``match``, median.
Ids of (a) and (b) agree on the subset (checked). Writes ``bench/results/bench_worldwide.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
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
    read_cc3m_rows,
)

from metaclip_gpu import MetadataIndex, match
from metaclip_gpu.engine.metadata import load_metadata
from metaclip_gpu.engine.reference import spacing, worldwide_spaced_entries
from metaclip_gpu.pipeline.languages import LanguageIndexes

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "bench_worldwide.json"
ALPHABETS = {  # (code point ranges, words joined by a space)
    "zh": ([(0x4E00, 0x4FFF)], False),
    "ja": ([(0x3041, 0x3096), (0x4E00, 0x4E7F)], False),
    "th": ([(0x0E01, 0x0E30), (0x0E40, 0x0E44)], False),
    "ru": ([(0x0430, 0x044F)], True),
    "de": ([(0x61, 0x7A), (0xE4, 0xE4), (0xF6, 0xF6), (0xFC, 0xFC)], True),
    "ar": ([(0x0627, 0x064A)], True),
}
WORDS_PER_LANGUAGE = 50_000
PHRASES_PER_LANGUAGE = 10_000


def alphabet(ranges: list[tuple[int, int]]) -> np.ndarray:
    return np.array([chr(c) for lo, hi in ranges for c in range(lo, hi + 1)], dtype=object)


def synthetic_language(lang: str, n_texts: int, seed: int) -> tuple[list[str], list[str]]:
    """(metadata, texts) of one synthetic language (module docstring)."""
    ranges, spaced = ALPHABETS[lang]
    chars = alphabet(ranges)
    rng = np.random.default_rng(seed)
    words: dict[str, None] = {}
    while len(words) < WORDS_PER_LANGUAGE:
        length = int(rng.integers(1, 5))
        words["".join(chars[rng.integers(0, len(chars), length)])] = None
    vocab = np.array(list(words), dtype=object)
    weights = 1.0 / np.arange(1, len(vocab) + 1) ** 1.1
    weights /= weights.sum()
    joiner = " " if spaced else ""
    phrases = {
        f"{vocab[a]}{joiner}{vocab[b]}": None
        for a, b in rng.integers(0, 2_000, (PHRASES_PER_LANGUAGE * 2, 2))
        if a != b
    }
    phrases = [p for p in phrases if p not in words]  # distinct entries: pyahocorasick keeps
    metadata = list(vocab) + phrases[:PHRASES_PER_LANGUAGE]  # one id per string
    lengths = rng.integers(4, 13, n_texts)
    drawn = vocab[rng.choice(len(vocab), int(lengths.sum()), p=weights)]
    bounds = np.concatenate([[0], np.cumsum(lengths)]).tolist()
    stops = [",", ".", "\uff0c", "\u3002"]  # ASCII and CJK comma and full stop
    texts = []
    for i in range(n_texts):
        text = joiner.join(drawn[bounds[i] : bounds[i + 1]].tolist())
        if i % 5 == 0:
            text += stops[i % len(stops)]
        texts.append(text)
    return metadata, texts


def timed(fn, reps: int) -> tuple[float, Any]:
    seconds, result = [], None
    for _ in range(reps):
        started = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=1_013_312)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--aho-texts", type=int, default=60_000, help="reference subset")
    parser.add_argument("--quick", action="store_true", help="60,000 texts, 1 rep")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--data-dir", default=None, help="folder of cc3m_val.tsv and metadata")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quick:
        args.texts, args.reps, args.aho_texts = 60_000, 1, 12_000
    console = Console(highlight=False, width=None if "COLUMNS" in os.environ else 120)
    data_dir = find_data_dir(args.data_dir)
    metadata_path = data_dir / METADATA_FILE
    missing = [p for p in (data_dir / CC3M_FILE, metadata_path) if not p.is_file()]
    if missing:
        print(missing_data_message("bench_worldwide.py", missing), file=sys.stderr)
        return 2

    # ------------------------------------------------------------------ pool
    captions, _ = read_cc3m_rows(data_dir / CC3M_FILE)
    n_en = args.texts // 2
    english = (captions * (n_en // len(captions) + 1))[:n_en]
    per_other = (args.texts - n_en) // len(ALPHABETS)
    metadata: dict[str, list[str]] = {"en": load_metadata(metadata_path)}
    texts, langs = list(english), ["en"] * n_en
    for seed, lang in enumerate(ALPHABETS):
        entries, lang_texts = synthetic_language(lang, per_other, seed)
        metadata[lang] = entries
        texts += lang_texts
        langs += [lang] * per_other
    order = np.random.default_rng(0).permutation(len(texts))  # languages interleaved
    texts = [texts[i] for i in order]
    langs = [langs[i] for i in order]
    n = len(texts)
    text_array = pa.array(texts, pa.string())
    console.print(
        f"[bold]bench_worldwide[/]: {n:,} texts ({n_en:,} CC3M English, {per_other:,} each "
        f"of SYNTHETIC {', '.join(ALPHABETS)}); {cpu_model()}, {available_cores()} cores"
    )

    # ------------------------------------------------------------------ ours
    started = time.perf_counter()
    indexes = {
        lang: MetadataIndex.from_entries(entries, padding="worldwide")
        for lang, entries in metadata.items()
    }
    build_s = time.perf_counter() - started
    langs_index = LanguageIndexes(indexes, digest="bench")
    codes = langs_index.language_of(pa.array(langs, pa.string()))
    mixed_s, mixed = timed(
        lambda: langs_index.match_rows(text_array, codes, "cpu", None), args.reps
    )

    spaced = MetadataIndex.from_entries(metadata["en"])
    english_pool = pa.array((captions * (n // len(captions) + 1))[:n], pa.string())
    english_s, _ = timed(lambda: match(english_pool, spaced, backend="cpu"), args.reps)

    # ------------------------------------------------------------------ reference style
    started = time.perf_counter()
    automata = {
        lang: build_automaton(worldwide_spaced_entries(entries))
        for lang, entries in metadata.items()
    }
    automaton_s = time.perf_counter() - started
    subset = min(n, args.aho_texts)
    started = time.perf_counter()
    aho_ids = [
        sorted({idx for _end, (idx, _key) in automata[langs[i]].iter(spacing(texts[i]))})
        for i in range(subset)
    ]
    aho_s = time.perf_counter() - started
    ours_ids = mixed.slice(0, subset).to_pylist()
    agree = sum(a == b for a, b in zip(aho_ids, ours_ids, strict=True))

    figures = {
        "texts": n,
        "english_texts": n_en,
        "per_other_language": per_other,
        "languages": list(metadata),
        "metadata_entries": {lang: len(e) for lang, e in metadata.items()},
        "reps": args.reps,
        "index_build_s": round(build_s, 3),
        "automaton_build_s": round(automaton_s, 3),
        "mixed_worldwide": {"seconds": round(mixed_s, 3), "texts_per_s": round(n / mixed_s)},
        "english_only_spaced": {
            "seconds": round(english_s, 3),
            "texts_per_s": round(n / english_s),
        },
        "reference_aho": {
            "texts": subset,
            "seconds": round(aho_s, 3),
            "texts_per_s": round(subset / aho_s),
        },
        "speedup_vs_reference": round((n / mixed_s) / (subset / aho_s), 1),
        "mixed_vs_english_only": round(english_s / mixed_s, 2),
        "ids_agree_on_subset": f"{agree}/{subset}",
        "machine": {
            "cpu": cpu_model(),
            "cores": available_cores(),
            "platform": platform.platform(),
            "loadavg": os.getloadavg(),
        },
        "gpu": "not measured (no GPU backend here)",
    }
    table = Table(title=f"worldwide matching, {n:,} texts (median of {args.reps})")
    for name in ("path", "texts", "seconds", "texts/s", "vs reference"):
        table.add_column(name, justify="left" if name == "path" else "right")
    ref_rate = subset / aho_s
    rows = [
        ("reference style: per-language pyahocorasick, 1 core", subset, aho_s),
        ("metaclip-gpu worldwide, mixed pool, all cores", n, mixed_s),
        ("metaclip-gpu English-only (spaced), all cores", n, english_s),
    ]
    for label, count, seconds in rows:
        rate = count / seconds
        table.add_row(
            label, f"{count:,}", f"{seconds:.2f}", f"{rate:,.0f}", f"{rate / ref_rate:.1f}x"
        )
    console.print(table)
    console.print(
        f"index builds {build_s:.2f} s (7 languages), automata {automaton_s:.2f} s; ids agree "
        f"with the reference on {agree:,} of {subset:,} texts"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=1) + "\n")
    console.print(f"figures written to {args.json}")
    return 0 if agree == subset else 1


if __name__ == "__main__":
    sys.exit(main())
