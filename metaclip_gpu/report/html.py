"""The report of a curate run: ``<run_dir>/report/index.html`` and its PNG figures.

Sections: the run (texts read, share matched, ...), the curated size per t (expected and
actual), the entry distribution (MetaCLIP's cumulative-count figure and a log-log
rank/count plot, before and after balancing), the head entries with their keep
probabilities, per-stage times, skipped rows and, for a worldwide (MetaCLIP 2) run whose
summary has ``languages`` (`pipeline.run`, worldwide mode), a table and one cumulative figure per
language::

    "languages": {"<lang>": {"texts": int, "matched": int, "kept": {"<t_en label>": int},
                             "t": {"<t_en label>": float | None},
                             "entry_counts": "<that language's .npy>"}}

(a relative ``entry_counts`` path is taken from the run folder). In a worldwide run the
run-wide distribution and head-entry sections show English, whose t is t_en.

Every number on the page is read from ``summary.json`` or the run's entry counts
(``entry_counts.npy``; the entry strings from ``entry_counts.parquet``). What is derived
here is only shares (``matched / texts``) and the keep probabilities
``t / max(count, t)`` of `draws.keep_probability`, the function balancing uses. The page
needs no network: the figures are PNG files beside it, referenced by relative path.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from metaclip_gpu import storage
from metaclip_gpu.pipeline.advice import t_keeps_nearly_all
from metaclip_gpu.pipeline.count import COUNTS_DIR, load_entry_counts
from metaclip_gpu.pipeline.draws import keep_probability
from metaclip_gpu.pipeline.files import COUNTS_NPY, COUNTS_PARQUET
from metaclip_gpu.pipeline.languages import ENGLISH
from metaclip_gpu.pipeline.run_summary import SUMMARY_NAME
from metaclip_gpu.pipeline.write import t_label
from metaclip_gpu.report.plots import (
    NO_BALANCING,
    Curve,
    cumulative_figure,
    rank_count_figure,
    save_png,
)
from metaclip_gpu.storage import Location, RemotePath

REPORT_DIR = "report"
INDEX_NAME = "index.html"
TEMPLATE_NAME = "report.html.j2"
HEAD_ROWS = 25
CUMULATIVE_PNG = "cumulative_counts.png"
RANK_PNG = "rank_counts.png"


@dataclass(frozen=True)
class HeadEntry:
    """One of the most matched entries: its id, string, count and keep probability per t."""

    entry_id: int
    entry: str
    count: int
    keep: list[float]


@dataclass(frozen=True)
class Language:
    """One language of a worldwide run, as its summary states it, with its figure's file."""

    name: str
    texts: int
    matched: int
    t: dict[str, float | None]  # per t_en label; None: no match in this language
    kept: dict[str, int]
    image: str

    @property
    def matched_share(self) -> float:
        return share(self.matched, self.texts)


def share(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def head_entries(
    counts: np.ndarray, entries: pa.ChunkedArray, ts: Sequence[float], rows: int
) -> list[HeadEntry]:
    """The `rows` matched entries of largest count (ties by id) with their strings (`entries`:
    the ``entry`` column of ``entry_counts.parquet``) and ``t / max(count, t)`` per t."""
    order = np.argsort(-counts.astype(np.float64), kind="stable")[:rows]
    order = order[counts[order] > 0]
    strings = entries.take(pa.array(order)).to_pylist()
    keep = [keep_probability(counts[order], t) for t in ts]
    return [
        HeadEntry(int(e), strings[i], int(counts[e]), [float(p[i]) for p in keep])
        for i, e in enumerate(order.tolist())
    ]


def _curves(per_t: Sequence[Mapping[str, Any]]) -> list[Curve]:
    """t = infinity, then each t of the run, labelled with its kept and expected sizes."""
    curves = [Curve(None, NO_BALANCING)]
    for figure in per_t:
        curves.append(
            Curve(
                figure["t"],
                f"{t_label(figure['t'])}: {figure['kept']:,} texts kept "
                f"(expected {figure['expected_kept']:,.1f})",
            )
        )
    return curves


def _counts_file(run_dir: Location, recorded: str) -> Location:
    """Where a counts file the summary names is: its recorded path (absolute when the run
    wrote it) or, for a run directory read from object storage, the same file under it."""
    path = Path(recorded)
    if not path.is_absolute():
        return run_dir / recorded
    return path if isinstance(run_dir, Path) else run_dir / COUNTS_DIR / path.name


def _load_counts(path: Location) -> np.ndarray:
    if isinstance(path, Path):
        return load_entry_counts(path)
    counts = np.load(io.BytesIO(storage.read_bytes(path)), allow_pickle=False)
    if counts.ndim != 1 or counts.dtype.kind not in "iu":
        raise ValueError(f"{path}: not a 1-D integer counts array")
    return counts.astype(np.uint64, copy=False)


def _read_entries(run_dir: Location, **kwargs: Any) -> pa.ChunkedArray:
    source, filesystem = storage.parquet_source(run_dir / COUNTS_PARQUET)
    return pq.read_table(source, filesystem=filesystem, columns=["entry"], **kwargs).column("entry")


def language_section(
    run_dir: Location, languages: Mapping[str, Mapping[str, Any]], out: Path
) -> tuple[list[Language], list[str]]:
    """The languages of a worldwide run, each with its cumulative figure written to `out`, and
    the t labels of their ``kept`` figures (the table's columns)."""
    rows = []
    for i, (name, figures) in enumerate(languages.items()):
        counts = _load_counts(_counts_file(run_dir, figures["entry_counts"]))
        image = f"language-{i:03d}-{re.sub(r'[^A-Za-z0-9_-]', '_', name)}.png"
        lang = Language(
            name, figures["texts"], figures["matched"], figures["t"], figures["kept"], image
        )
        title = f"{name}: {lang.texts:,} texts, {lang.matched:,} matched ({lang.matched_share:.2%})"
        curves = [Curve(None, NO_BALANCING)]
        curves += [
            Curve(t, f"{label}: t = {t:,.6g}") for label, t in lang.t.items() if t is not None
        ]
        save_png(cumulative_figure(counts, curves, title), out / image)
        rows.append(lang)
    labels = list(dict.fromkeys(label for lang in rows for label in lang.kept))
    return rows, labels


def _overall_counts(run_dir: Location, summary: Mapping[str, Any]) -> tuple[np.ndarray, Any]:
    """The counts and entry strings the run-wide sections show: the run's, or for a worldwide
    run English's (the language whose t is t_en; each language has its own section)."""
    if not summary.get("worldwide"):
        return _load_counts(run_dir / COUNTS_NPY), _read_entries(run_dir)
    counts = _load_counts(_counts_file(run_dir, summary["languages"][ENGLISH]["entry_counts"]))
    return counts, _read_entries(run_dir, filters=[("lang", "==", ENGLISH)])


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("metaclip_gpu.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["int"] = lambda value: f"{int(value):,}"
    env.filters["decimal"] = lambda value: f"{value:,.1f}"
    env.filters["share"] = lambda value: f"{value:.2%}"
    env.filters["prob"] = lambda value: f"{value:.4g}"
    env.filters["t"] = lambda value: f"{value:,.6g}"
    return env


def write_report(
    run_dir: str | os.PathLike[str] | RemotePath,
    *,
    head_rows: int = HEAD_ROWS,
    out: str | os.PathLike[str] | None = None,
) -> Path:
    """Writes ``<run_dir>/report/index.html`` (or ``<out>/index.html``) and its PNGs from the
    run's ``summary.json`` and entry counts (replacing an earlier report's PNGs); returns the
    HTML file's path. `run_dir` may be a URL (read through `storage`); without `out` its report
    is written into ``<run_dir>/report/`` there (`_upload_report`; the URL is returned)."""
    run_dir = storage.location(run_dir)
    if out is None and isinstance(run_dir, RemotePath):
        return _upload_report(run_dir, head_rows)
    summary = json.loads(storage.read_bytes(run_dir / SUMMARY_NAME).decode("utf-8"))
    counts, entries = _overall_counts(run_dir, summary)
    out = Path(out) if out is not None else run_dir / REPORT_DIR  # type: ignore[operator]
    out.mkdir(exist_ok=True, parents=True)
    for old in out.glob("*.png"):
        old.unlink()

    per_t = summary["ts"]
    texts, matched = summary["texts_read"], summary["matched"]
    curves = _curves(per_t)
    heading = f"{texts:,} texts, {matched:,} matched ({share(matched, texts):.2%})"
    save_png(
        cumulative_figure(counts, curves, f"Cumulative entry counts: {heading}"),
        out / CUMULATIVE_PNG,
    )
    save_png(rank_count_figure(counts, curves, f"Entry count by rank: {heading}"), out / RANK_PNG)

    head = head_entries(counts, entries, [f["t"] for f in per_t], head_rows)
    languages, language_labels = (
        language_section(run_dir, summary["languages"], out)
        if "languages" in summary
        else (None, [])
    )
    html = (
        _environment()
        .get_template(TEMPLATE_NAME)
        .render(
            run_dir=str(run_dir),
            summary=summary,
            labels=[t_label(f["t"]) for f in per_t],
            matched_share=share(matched, texts),
            kept_shares=[share(f["kept"], f["matched"]) for f in per_t],
            head=head,
            cumulative_png=CUMULATIVE_PNG,
            rank_png=RANK_PNG,
            languages=languages,
            language_labels=language_labels,
            warning=t_keeps_nearly_all(per_t),
        )
    )
    index = out / INDEX_NAME
    tmp = index.with_name(f"{INDEX_NAME}.tmp-{os.getpid()}")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, index)
    return index


def _upload_report(run_dir: RemotePath, head_rows: int) -> Any:
    """The report of a run directory in object storage, into ``<run_dir>/report/`` there:
    made in a local temporary folder, then each file one PUT (an earlier report's files go
    first); returns the index's URL."""
    import tempfile

    from metaclip_gpu.storage_write import list_tree, remove, write_bytes

    folder = run_dir / REPORT_DIR
    with tempfile.TemporaryDirectory(prefix="metaclip-report-") as tmp:
        write_report(run_dir, head_rows=head_rows, out=tmp)
        for old in list_tree(folder):
            remove(old)
        for file in sorted(Path(tmp).iterdir()):
            if file.name != INDEX_NAME:
                write_bytes(folder / file.name, file.read_bytes())
        write_bytes(folder / INDEX_NAME, (Path(tmp) / INDEX_NAME).read_bytes())  # last
    return folder / INDEX_NAME
