"""Warnings about a run's settings that the run itself cannot see as errors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

NEARLY_ALL = 0.01  # head entries (count > t) holding under this share of the matches


def t_keeps_nearly_all(per_t: Sequence[dict[str, Any]]) -> str | None:
    """A warning when every t is above the counts of nearly every matched entry: balancing
    then keeps (nearly) every matched text, as if it were not balanced. `per_t`: the
    ``ts`` figures of a MetaCLIP 1 summary (``head_match_share``, ``kept``, ``matched``)."""
    if not per_t or any(f.get("head_match_share", 1.0) >= NEARLY_ALL for f in per_t):
        return None
    ts = ", ".join(f"{f['t']:,.6g}" for f in per_t)
    matched = per_t[0]["matched"]
    kept = min(f["kept"] for f in per_t)
    share = kept / matched if matched else 1.0
    return (
        f"every t ({ts}) is above the counts of nearly all matched entries (those above t hold "
        f"under {NEARLY_ALL:.0%} of the matches), so balancing keeps {share:.1%} of the matched "
        "texts, nearly as if unbalanced: give a smaller --t (MetaCLIP's 20000 is for 400M "
        "pairs) or --target-size"
    )
