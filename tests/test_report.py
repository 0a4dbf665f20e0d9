"""The report of a curate run (metaclip_gpu.report.html, `metaclip-gpu report`): sections, PNGs and
numbers equal to summary.json, on the CC3M data; the worldwide section on a hand-made run."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from matplotlib.image import imread
from PIL import Image
from tsv_shards import split_lines

from metaclip_gpu.cli import main
from metaclip_gpu.engine.index import MetadataIndex
from metaclip_gpu.pipeline.count import load_entry_counts
from metaclip_gpu.pipeline.files import COUNTS_NPY, COUNTS_PARQUET
from metaclip_gpu.pipeline.run import run_curate
from metaclip_gpu.pipeline.run_summary import SUMMARY_NAME
from metaclip_gpu.pipeline.write import t_label
from metaclip_gpu.report.html import INDEX_NAME, REPORT_DIR, write_report

TS = [20.0, 200.0]
SECTIONS = [
    "Run",
    "Curated size per t",
    "Entry distribution",
    "Rank and count",
    "Head entries",
    "Stage times",
    "Skipped rows",
]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def shown(html: str, element_id: str) -> str:
    """The text of the table cell with this id."""
    found = re.search(rf'id="{re.escape(element_id)}">([^<]*)<', html)
    assert found, f"no element with id {element_id!r}"
    return found.group(1)


def images_of(html: str, report_dir: Path) -> list[Path]:
    return [report_dir / src for src in re.findall(r'<img src="([^"]+)"', html)]


def check_png(path: Path) -> str:
    """Asserts `path` is a real, non-blank PNG picture; returns its Description text."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    pixels = imread(path)
    assert pixels.shape[0] >= 200 and pixels.shape[1] >= 400, pixels.shape
    assert float(pixels.std()) > 0.05, f"{path} is blank"
    with Image.open(path) as image:
        return image.text["Description"]


@pytest.fixture(scope="module")
def cc3m_run(tmp_path_factory, cc3m_path: Path, metadata_500k_path: Path):
    """CC3M val in 3 TSV shards curated for TS, and its report: (run dir, summary, html)."""
    root = tmp_path_factory.mktemp("report")
    split_lines(cc3m_path, root / "shards", 3)
    index = MetadataIndex.load(metadata_500k_path)
    summary = run_curate(root / "shards", index, root / "run", ts=TS, progress=False)
    page = write_report(root / "run")
    assert page == root / "run" / REPORT_DIR / INDEX_NAME
    return root / "run", summary, page.read_text(encoding="utf-8")


def test_every_section_is_on_the_page(cc3m_run) -> None:
    _, _, html = cc3m_run
    headings = re.findall(r"<h2[^>]*>([^<]*)</h2>", html)
    assert headings == SECTIONS  # and no "Languages": not a worldwide run


def test_the_numbers_shown_equal_the_summary(cc3m_run) -> None:
    run, summary, html = cc3m_run
    assert summary == json.loads((run / SUMMARY_NAME).read_text())
    assert summary["texts_read"] == 15833
    assert shown(html, "texts-read") == f"{summary['texts_read']:,}"
    assert shown(html, "matched") == f"{summary['matched']:,}"
    share = float(shown(html, "matched-share").rstrip("%")) / 100
    assert share == pytest.approx(summary["matched"] / summary["texts_read"], abs=5e-5)
    for figure in summary["ts"]:
        label = t_label(figure["t"])
        assert shown(html, f"kept-{label}") == f"{figure['kept']:,}"
        assert shown(html, f"expected-{label}") == f"{figure['expected_kept']:,.1f}"
    for stage, seconds in summary["seconds"].items():
        assert f'<td>{stage}</td><td class="n">{seconds}</td>' in html


def test_the_pngs_are_images_with_the_summary_numbers(cc3m_run) -> None:
    run, summary, html = cc3m_run
    images = images_of(html, run / REPORT_DIR)
    assert len(images) == 2
    for path in images:
        text = check_png(path)
        assert f"{summary['texts_read']:,} texts, {summary['matched']:,} matched" in text
        for figure in summary["ts"]:
            assert f"{t_label(figure['t'])}: {figure['kept']:,} texts kept" in text


def test_head_entries_come_from_the_counts(cc3m_run) -> None:
    run, _, html = cc3m_run
    counts = load_entry_counts(run / COUNTS_NPY)
    top = int(np.argmax(counts))
    entry = pq.read_table(run / COUNTS_PARQUET).column("entry")[top].as_py()
    row = re.search(
        rf'<td class="n">{top}</td><td><code>{re.escape(entry)}</code></td>\s*'
        r'<td class="n">([\d,]+)</td>\s*<td class="n">([^<]+)</td>\s*<td class="n">([^<]+)</td>',
        html,
    )
    assert row, "the largest count's entry is not in the head table"
    assert row.group(1) == f"{int(counts[top]):,}"
    for t, p in zip(TS, row.groups()[1:], strict=True):
        assert p == f"{t / max(int(counts[top]), t):.4g}"


# ---------------------------------------------------------------------- CLI
def test_cli_curate_writes_the_report_unless_told_not_to(
    cc3m_path, metadata_500k_path, tmp_path
) -> None:
    split_lines(cc3m_path, tmp_path / "shards", 2, limit=2000)
    runner = CliRunner(env={"COLUMNS": "400"})
    args = ["curate", "--metadata", str(metadata_500k_path), "--input", str(tmp_path / "shards")]
    result = runner.invoke(main, [*args, "--output", str(tmp_path / "a"), "--t", "10"])
    assert result.exit_code == 0, result.output
    page = tmp_path / "a" / REPORT_DIR / INDEX_NAME
    assert f"report: {page}" in result.output and page.is_file()

    quiet = runner.invoke(
        main, [*args, "--output", str(tmp_path / "b"), "--t", "10", "--no-report"]
    )
    assert quiet.exit_code == 0, quiet.output
    assert "report:" not in quiet.output and not (tmp_path / "b" / REPORT_DIR).exists()

    shutil.rmtree(tmp_path / "a" / REPORT_DIR)
    again = runner.invoke(main, ["report", str(tmp_path / "a")])
    assert again.exit_code == 0, again.output
    assert f"report: {page}" in again.output and page.is_file()

    not_a_run = runner.invoke(main, ["report", str(tmp_path / "shards")])
    assert not_a_run.exit_code != 0 and "summary.json" in not_a_run.output
