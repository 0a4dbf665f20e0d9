"""``summary.json`` of a MetaCLIP 1 run, one builder for ``curate`` and the stage-at-a-time route.

``curate`` times its stages as it runs them. The ``match``, ``count`` and ``balance`` commands
run as separate processes, so each records its seconds (and the match stage how many shards it
matched) in the run record (`rundir`), and ``balance``, the last, writes the same summary from
those records and the manifest: the figures equal those of a ``curate`` run of the same
shards, the seconds are the stages' own (``index`` is inside ``match`` there).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from metaclip_gpu import rundir
from metaclip_gpu.stages import COUNTS_NPY, COUNTS_PARQUET, MATCHES_DIR

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
    """The summary of a run: `read` (`curate.read_figures`), `balance` (`curate.run_balance`'s
    result), the stages' `seconds` and the `curated` folders by t label."""
    return {
        **read,
        "matched": balance["ts"][0]["matched"],
        "metadata_entries": metadata_entries,
        "distinct_entries_matched": balance["distinct_entries_matched"],
        "seed": int(seed),
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


SYNTHETIC_INPUT = "synthetic (metaclip_gpu.synthetic: metadata and texts made from wordfreq)"


def mark_synthetic(out_dir: Path) -> None:
    """Records in ``summary.json`` (its ``input_kind``) that the run's input was the demo's
    synthetic pool, for the report to say so (absent in a curate run of files)."""
    path = Path(out_dir) / SUMMARY_NAME
    summary = json.loads(path.read_text(encoding="utf-8"))
    summary["input_kind"] = SYNTHETIC_INPUT
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # as `curate.write_json`: never a half-written summary
