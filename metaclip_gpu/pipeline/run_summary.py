"""``summary.json`` of a MetaCLIP 1 run, one builder for ``curate`` and the stage-at-a-time route.

``curate`` times its stages as it runs them. The ``match``, ``count`` and ``balance`` commands
run as separate processes, so each records its seconds (and the match stage how many shards it
matched) in the run record (`rundir`), and ``balance``, the last, writes the same summary from
those records and the manifest: the figures equal those of a ``curate`` run of the same
shards, the seconds are the stages' own (``index`` is inside ``match`` there).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metaclip_gpu.pipeline import rundir
from metaclip_gpu.pipeline.balance_per_image import WorldwideShardFigures
from metaclip_gpu.pipeline.count import COUNTS_DIR, load_entry_counts
from metaclip_gpu.pipeline.files import COUNTS_NPY, COUNTS_PARQUET, MATCHES_DIR
from metaclip_gpu.pipeline.languages import LanguageIndexes
from metaclip_gpu.pipeline.manifest import Manifest, ShardRecord
from metaclip_gpu.pipeline.outcome import run_outcome
from metaclip_gpu.pipeline.read import Shard
from metaclip_gpu.pipeline.shard_match import _report_from_record
from metaclip_gpu.pipeline.thresholds import (
    PROBS_DIR,
    THRESHOLDS_NAME,
    Thresholds,
    _finite_value,
    t_en_label,
)
from metaclip_gpu.pipeline.write import CURATED_DIR, t_label, write_json

SUMMARY_NAME = "summary.json"


def curate_summary(
    out_dir: Path,
    read: dict[str, Any],
    balance: dict[str, Any],
    *,
    metadata_entries: int,
    seed: int,
    target_size: int | None,
    backend: str,
    seconds: dict[str, float],
    curated: dict[str, str],
    english_only: bool = False,
    language_identifier: str | None = None,
) -> dict[str, Any]:
    """The summary of a run: `read` (`run_summary.read_figures`), `balance` (`balance.run_balance`'s
    result), the stages' `seconds` and the `curated` folders by t label."""
    return {
        **read,
        "matched": balance["ts"][0]["matched"],
        "metadata_entries": metadata_entries,
        "distinct_entries_matched": balance["distinct_entries_matched"],
        "seed": int(seed),
        "curated_entry_ids": bool(balance.get("curated_entry_ids", False)),
        "english_only": english_only,
        "language_identifier": language_identifier,
        "target_size": target_size,
        "backend": backend,
        "ts": balance["ts"],
        "seconds": seconds,
        "outputs": {
            "dir": str(out_dir),
            "matches": str(out_dir / MATCHES_DIR),
            "entry_counts_npy": str(out_dir / COUNTS_NPY),
            "entry_counts_parquet": str(out_dir / COUNTS_PARQUET),
            "curated": curated,
            "summary": str(out_dir / SUMMARY_NAME),
        },
    }


def stage_seconds(out_dir: Path, balance_seconds: float) -> tuple[dict[str, float], int | None]:
    """(seconds per stage and total, shards matched by the match run) from the run record."""
    state = rundir.load_state(out_dir) or {}
    match = state.get("match", {})
    seconds = {
        "match": float(match.get("seconds", 0.0)),
        "count": float(state.get("counts", {}).get("seconds", 0.0)),
        "balance": round(balance_seconds, 3),
    }
    seconds["total"] = round(sum(seconds.values()), 3)
    return seconds, match.get("shards_matched_this_run")


def read_figures(shards: Sequence[Shard], reports: Sequence[Any]) -> dict[str, Any]:
    """The summary's figures of the match stage's reading: shards (unreadable ones with their
    error, those matched by this run), texts read, rows skipped by reason (in all, and per
    shard with the file and the first line numbers), null texts, and the run's outcome
    (`outcome.run_outcome`: exit code and last line)."""
    skipped: Counter[str] = Counter()
    for report in reports:
        skipped.update(report.skipped)
    unreadable = [{"shard": r.shard.name, "error": r.error} for r in reports if r.error]
    texts_read = sum(r.rows for r in reports)
    return {
        "input": [str(s.path) for s in shards],
        "shards": len(shards),
        "shards_unreadable": unreadable,
        "shards_matched_this_run": sum(not getattr(r, "reused", False) for r in reports),
        "texts_read": texts_read,
        "skipped": dict(sorted(skipped.items())),
        "skipped_rows": [  # per shard with skipped rows: its file, reasons, first lines
            {
                "shard": r.shard.name,
                "path": str(r.shard.path),
                "skipped": dict(sorted(r.skipped.items())),
                "lines": list(r.invalid_lines),
            }
            for r in reports
            if r.skipped
        ],
        "null_texts": sum(r.null_texts for r in reports),
        "outcome": run_outcome(len(shards), texts_read, unreadable),
    }


def _write_stage_summary(
    out_dir: Path,
    shards: list[Shard],
    records: dict[str, ShardRecord],
    result: dict[str, Any],
    backend: str,
    started: float,
) -> None:
    """``summary.json`` of the stage-at-a-time route (`run_summary`): the reading figures from
    the match records of these shards, the rest from `result`."""
    manifest = Manifest.load(out_dir)
    reports = [_report_from_record(s, records[s.name], manifest) for s in shards]
    read = read_figures(shards, reports)
    seconds, matched_this_run = stage_seconds(out_dir, time.perf_counter() - started)
    if matched_this_run is not None:
        read["shards_matched_this_run"] = matched_this_run
    counts = load_entry_counts(out_dir / COUNTS_NPY)
    summary = curate_summary(
        out_dir,
        read,
        result,
        metadata_entries=len(counts),
        seed=result["seed"],
        target_size=result["target_size"],
        backend=backend,
        seconds=seconds,
        curated={t_label(f["t"]): f["output"] for f in result["ts"]},
    )
    write_json(out_dir / SUMMARY_NAME, summary)


def worldwide_summary(
    out_dir: Path,
    shards: list[Shard],
    reports: list[Any],
    langs: LanguageIndexes,
    counts: dict[str, np.ndarray],
    thresholds: list[Thresholds],
    shard_figures: list[WorldwideShardFigures],
    seed: int,
    backend: str,
    curated_entry_ids: bool = False,
) -> dict[str, Any]:
    languages: dict[str, Any] = {}
    for lang in langs.languages:
        per_shard = [f.languages[lang] for f in shard_figures if lang in f.languages]
        languages[lang] = {
            "texts": sum(f.texts for f in per_shard),
            "matched": sum(f.matched for f in per_shard),
            "samples": sum(f.samples for f in per_shard),
            "kept": {
                t_en_label(th.t_en): sum(f.kept.get(th.t_en, 0) for f in per_shard)
                for th in thresholds
            },
            "expected_kept": {
                t_en_label(th.t_en): sum(f.expected.get(th.t_en, 0.0) for f in per_shard)
                for th in thresholds
            },
            "t": {t_en_label(th.t_en): _finite_value(th.t[lang]) for th in thresholds},
            "metadata_entries": len(langs.indexes[lang]),
            "distinct_entries_matched": int((counts[lang] > 0).sum()),
            "entry_counts": str(out_dir / COUNTS_DIR / f"{lang}.npy"),
        }
    texts = sum(f.texts for f in shard_figures)
    distinct = sum(int((c > 0).sum()) for c in counts.values())
    matches = sum(int(c.sum(dtype=np.uint64)) for c in counts.values())
    heads = [
        {lang: counts[lang] > th.t[lang] for lang in counts if math.isfinite(th.t[lang])}
        for th in thresholds
    ]
    ts = [
        {
            "t": th.t_en,
            "solved": False,
            "tail_share": th.tail_share,
            "head_entries": sum(int(h.sum()) for h in head.values()),
            "head_entry_share": (
                sum(int(h.sum()) for h in head.values()) / distinct if distinct else 0.0
            ),
            "head_match_share": (
                sum(int(counts[lang][h].sum(dtype=np.uint64)) for lang, h in head.items()) / matches
                if matches
                else 0.0
            ),
            "texts": texts,
            "matched": sum(v["matched"] for v in languages.values()),
            "samples": sum(v["samples"] for v in languages.values()),
            "kept": sum(v["kept"][t_en_label(th.t_en)] for v in languages.values()),
            "expected_kept": sum(
                v["expected_kept"][t_en_label(th.t_en)] for v in languages.values()
            ),
            "output": str(out_dir / CURATED_DIR / t_en_label(th.t_en)),
        }
        for th, head in zip(thresholds, heads, strict=True)
    ]
    return {
        "worldwide": True,
        **read_figures(shards, reports),
        "unknown_language": sum(f.unknown_language for f in shard_figures),
        "unknown_language_policy": langs.unknown,
        "language_identifier": langs.lid.describe(),  # for shards without a language column
        "matched": ts[0]["matched"],
        "metadata_entries": len(langs),
        "distinct_entries_matched": distinct,
        "seed": int(seed),
        "curated_entry_ids": bool(curated_entry_ids),
        "backend": backend,
        "ts": ts,
        "languages": languages,
        "outputs": {
            "dir": str(out_dir),
            "matches": str(out_dir / MATCHES_DIR),
            "entry_counts": str(out_dir / COUNTS_DIR),
            "entry_counts_parquet": str(out_dir / COUNTS_PARQUET),
            "entry_probs": str(out_dir / PROBS_DIR),
            "thresholds": str(out_dir / THRESHOLDS_NAME),
            "curated": {
                t_en_label(th.t_en): t["output"] for th, t in zip(thresholds, ts, strict=True)
            },
            "summary": str(out_dir / SUMMARY_NAME),
        },
    }


SYNTHETIC_INPUT = "synthetic (metaclip_gpu.synthetic: metadata and texts made from wordfreq)"


def mark_synthetic(out_dir: Path) -> None:
    """Records in ``summary.json`` (its ``input_kind``) that the run's input was the demo's
    synthetic pool, for the report to say so (absent in a curate run of files)."""
    path = Path(out_dir) / SUMMARY_NAME
    summary = json.loads(path.read_text(encoding="utf-8"))
    summary["input_kind"] = SYNTHETIC_INPUT
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # as `write.write_json`: never a half-written summary
