"""Worldwide thresholds (MetaCLIP 2, SPEC section 5): each language's t from the English one.

For each English threshold ``t_en`` (MetaCLIP 2: 170,000): the English tail share
``p = t_to_p(count[en], t_en)``, then ``t[lang] = p_to_t(count[lang], p)`` for every other
language, so each keeps the same share of its matches in the tail (`draws.t_to_p`,
`draws.p_to_t`, the reference's definitions). ``thresholds.json`` records both, and
``entry_probs/<t_en>_<lang>.npy`` holds ``p[e] = t / max(count[e], t)`` as float32, the arrays
MetaCLIP 2's data loader reads to re-sample every epoch (with a language whose ``t`` is 0, as
the reference's ``p_to_t`` can give, every probability is 0). MetaCLIP 1 is the case of one
language whose t is given directly.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from metaclip_gpu.engine.arrays import to_host
from metaclip_gpu.pipeline.draws import keep_probability
from metaclip_gpu.pipeline.languages import ENGLISH
from metaclip_gpu.pipeline.write import (
    t_label,
)
from metaclip_gpu.storage import RemotePath

PROBS_DIR = "entry_probs"
THRESHOLDS_NAME = "thresholds.json"
DEFAULT_T_EN = 170_000.0


def t_en_label(t_en: float) -> str:
    """``t_en=170000``: the curated folder of one English threshold."""
    return "t_en=" + t_label(t_en).removeprefix("t=")


@dataclass
class Thresholds:
    """Per English threshold: the tail share and each language's threshold."""

    t_en: float
    tail_share: float
    t: dict[str, float]  # NaN for a language with no match (nothing to keep)

    def probabilities(self, counts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``p[lang][e] = t / max(count, t)`` (float64); all 0 where ``t`` is 0."""
        probs = {}
        for lang, c in counts.items():
            t = self.t[lang]
            probs[lang] = keep_probability(c, t) if t > 0 else np.zeros(len(c), np.float64)
        return probs


def language_thresholds(counts: dict[str, np.ndarray], t_en: float) -> Thresholds:
    """The reference's ``global_count``: ``t_to_p`` on English, ``p_to_t`` elsewhere."""
    if ENGLISH not in counts or not counts[ENGLISH].any():
        raise ValueError(
            "worldwide thresholds start from English counts: give 'en' metadata and English "
            "texts (their tail share at t_en sets every other language's t)"
        )
    p = t_to_p(counts[ENGLISH], t_en)
    per_lang = {}
    for lang, c in counts.items():
        if lang == ENGLISH:
            per_lang[lang] = float(t_en)
        else:
            per_lang[lang] = p_to_t(c, p) if c.any() else math.nan
    return Thresholds(float(t_en), p, per_lang)


def save_probabilities(
    out_dir: Path | RemotePath, thresholds: Thresholds, probs: dict[str, np.ndarray]
):
    """``entry_probs/<t_en>_<lang>.npy`` (float32, as MetaCLIP 2's loader reads them)."""
    folder = out_dir / PROBS_DIR
    stem = t_label(thresholds.t_en).removeprefix("t=")
    if isinstance(folder, RemotePath):  # one PUT each: as atomic
        from metaclip_gpu.storage_write import write_bytes

        for lang, p in probs.items():
            buffer = io.BytesIO()
            np.save(buffer, p.astype(np.float32))
            write_bytes(folder / f"{stem}_{lang}.npy", buffer.getvalue())
        return
    folder.mkdir(parents=True, exist_ok=True)
    for lang, p in probs.items():
        final = folder / f"{stem}_{lang}.npy"
        tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}.npy")
        np.save(tmp, p.astype(np.float32))
        os.replace(tmp, final)


def _finite_value(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _finite(values: dict[str, float]) -> dict[str, float | None]:
    return {k: _finite_value(v) for k, v in values.items()}


def t_to_p(counts: Any, t: float) -> float:
    """The tail share of threshold `t`: the fraction of all matches held by entries whose
    count is below `t` (MetaCLIP 2 ``t_to_p``: ``counts[counts < t].sum() / counts.sum()``).

    Raises ValueError when `counts` sums to 0 (no matches: no share to keep).
    """
    c = _host_counts(counts)
    total = c.sum()
    if not total > 0:
        raise ValueError("t_to_p: the counts are all 0 (no matches)")
    return float(c[c < t].sum() / total)


def p_to_t(counts: Any, p: float) -> float:
    """The threshold whose tail share is closest to `p` (MetaCLIP 2 ``p_to_t``): the counts
    sorted ascending, their running share of the total, and the count where that share is
    nearest `p` (the first such on a tie). It can be 0 when zero counts are nearest, which
    keeps nothing of that language, as in the reference.

    Raises ValueError when `counts` is empty or sums to 0.
    """
    c = np.sort(_host_counts(counts))
    total = c.sum()
    if not total > 0:
        raise ValueError("p_to_t: the counts are all 0 (no matches)")
    share = np.cumsum(c) / total
    return float(c[int(np.abs(share - float(p)).argmin())])


def _host_counts(counts: Any) -> np.ndarray:
    """Counts as a host uint64 array (exact sums, as the reference's uint64 arrays)."""
    return np.asarray(to_host(counts)).astype(np.uint64, copy=False)
