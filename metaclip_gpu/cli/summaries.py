"""The tables ``curate`` (MetaCLIP 1 and ``--worldwide``), ``balance`` and ``demo`` print at the
end of a run, from its summary (`pipeline.run_summary`), and the warning about t."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from metaclip_gpu.cli.common import warn
from metaclip_gpu.pipeline.draws import keep_probability

SHOWN_SHARDS = 5  # shards with skipped rows listed in the printed summary (all in the JSON)
SHOWN_LINES = 5  # their first line numbers


def warn_ts(per_t: list[dict[str, Any]]) -> None:
    from metaclip_gpu.pipeline.advice import t_keeps_nearly_all

    warning = t_keeps_nearly_all(per_t)
    if warning is not None:
        warn(warning)


def balance_rows(table: Table, per_t: list[dict[str, Any]]) -> None:
    for f in per_t:
        label = f"t = {f['t']:,.6g}" + (" (solved)" if f.get("solved") else "")
        matched = f["matched"]
        kept_share = f["kept"] / matched if matched else 0.0
        table.add_row(
            f"kept, {label}",
            f"{f['kept']:,} ({kept_share:.1%} of matched; expected {f['expected_kept']:,.1f})",
        )
        table.add_row(
            f"  head entries (count > t), {label}",
            f"{f['head_entries']:,} ({f['head_entry_share']:.1%} of matched entries, "
            f"{f['head_match_share']:.1%} of matches)",
        )


def _read_table(title: str, summary: dict[str, Any]) -> Table:
    """A two-column figures table opened with the summary's reading figures (`read_figures`)."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("figure", style="bold")
    table.add_column("value")
    table.add_row(
        "shards", f"{summary['shards']:,} ({summary['shards_matched_this_run']:,} matched this run)"
    )
    table.add_row("texts read", f"{summary['texts_read']:,}")
    skipped = summary["skipped"]
    table.add_row(
        "rows skipped",
        ", ".join(f"{reason}: {n:,}" for reason, n in skipped.items()) if skipped else "none",
    )
    per_shard = summary.get("skipped_rows", [])
    for bad in per_shard[:SHOWN_SHARDS]:
        lines = bad["lines"][:SHOWN_LINES]
        where = f"; lines {', '.join(map(str, lines))}" if lines else ""
        more = "..." if len(bad["lines"]) > len(lines) else ""
        reasons = ", ".join(f"{reason}: {n:,}" for reason, n in bad["skipped"].items())
        table.add_row("  skipped in", f"{bad['path']}: {reasons}{where}{more}")
    if len(per_shard) > SHOWN_SHARDS:
        table.add_row("", f"... {len(per_shard) - SHOWN_SHARDS:,} more shards (summary.json)")
    return table


def print_curate_summary(console: Console, summary: dict[str, Any]) -> None:
    table = _read_table("metaclip-gpu curate", summary)
    table.add_row("null texts", f"{summary['null_texts']:,}")
    for bad in summary["shards_unreadable"]:
        table.add_row("unreadable shard", f"{bad['shard']}: {bad['error']}")
    texts = summary["texts_read"]
    share = summary["matched"] / texts if texts else 0.0
    table.add_row("matched texts", f"{summary['matched']:,} ({share:.1%})")
    table.add_row(
        "distinct entries matched",
        f"{summary['distinct_entries_matched']:,} of {summary['metadata_entries']:,}",
    )
    balance_rows(table, summary["ts"])
    seconds = summary["seconds"]
    table.add_row(
        "seconds",
        ", ".join(f"{stage} {value:.2f}" for stage, value in seconds.items()),
    )
    if summary["shards_matched_this_run"] and seconds.get("match", 0) > 0:
        table.add_row("read + match rate", f"{texts / seconds['match']:,.0f} texts/s")
    outputs = summary["outputs"]
    table.add_row("matches", outputs["matches"])
    table.add_row(
        "entry counts", f"{outputs['entry_counts_npy']}, {outputs['entry_counts_parquet']}"
    )
    for label, path in outputs["curated"].items():
        table.add_row(f"curated shards ({label})", path)
    table.add_row("summary", outputs["summary"])
    console.print(table)
    _print_top_entries(console, summary)


def _print_top_entries(console: Console, summary: dict[str, Any], n: int = 10) -> None:
    """The `n` most matched entries (from ``entry_counts.parquet``) and their keep chance."""
    import pyarrow.compute as pc

    from metaclip_gpu import storage
    from metaclip_gpu.cli.common import storage_options

    where = storage.location(summary["outputs"]["entry_counts_parquet"], storage_options())
    counts = storage.parquet_file(where).read()
    top = counts.take(pc.select_k_unstable(counts, n, [("count", "descending")]))
    ts = [f["t"] for f in summary["ts"]]
    table = Table(title="most matched entries", title_justify="left")
    table.add_column("entry id", justify="right")
    table.add_column("entry")
    table.add_column("texts", justify="right")
    for t in ts:
        table.add_column(f"keep p, t = {t:,.6g}", justify="right")
    top = top.filter(pc.greater(top.column("count"), 0))
    top_counts = top.column("count").to_numpy()
    keep = [keep_probability(top_counts, t) for t in ts]
    for i, row in enumerate(top.to_pylist()):
        probs = [f"{p[i]:.3f}" for p in keep]
        table.add_row(str(row["entry_id"]), repr(row["entry"]), f"{row['count']:,}", *probs)
    console.print(table)


def print_worldwide_summary(console: Console, summary: dict[str, Any]) -> None:
    table = _read_table("metaclip-gpu curate --worldwide", summary)
    table.add_row(
        f"unknown language ({summary['unknown_language_policy']})",
        f"{summary['unknown_language']:,}",
    )
    for bad in summary["shards_unreadable"]:
        table.add_row("unreadable shard", f"{bad['shard']}: {bad['error']}")
    for f in summary["ts"]:
        table.add_row(
            f"t_en = {f['t']:,.6g}",
            f"tail share p = {f['tail_share']:.4f}; {f['samples']:,} images with a matched "
            f"text, {f['kept']:,} kept (expected {f['expected_kept']:,.1f})",
        )
    seconds = summary["seconds"]
    table.add_row("seconds", ", ".join(f"{k} {v:.2f}" for k, v in seconds.items()))
    for label, path in summary["outputs"]["curated"].items():
        table.add_row(f"curated shards ({label})", path)
    table.add_row("entry probabilities", summary["outputs"]["entry_probs"])
    table.add_row("summary", summary["outputs"]["summary"])
    console.print(table)

    labels = list(summary["outputs"]["curated"])
    per_lang = Table(title="per language", title_justify="left")
    for name in ("language", "texts", "matched", "images"):
        per_lang.add_column(name, justify="left" if name == "language" else "right")
    for label in labels:
        per_lang.add_column(f"t ({label})", justify="right")
        per_lang.add_column(f"kept ({label})", justify="right")
    for lang, f in summary["languages"].items():
        cells = [lang, f"{f['texts']:,}", f"{f['matched']:,}", f"{f['samples']:,}"]
        for label in labels:
            t = f["t"][label]
            cells += ["-" if t is None else f"{t:,.6g}", f"{f['kept'][label]:,}"]
        per_lang.add_row(*cells)
    console.print(per_lang)
