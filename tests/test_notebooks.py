"""Every notebook in notebooks/ executes (nbclient, CPU backend) and its key cells give figures
and the run's numbers; each jupytext-paired ``.py`` holds the same cells as its ``.ipynb``.

Cells are found by tag: ``pool`` says which input it curates, ``summary`` prints the kept
count per t, ``figure`` displays a figure, ``report`` writes the report. The notebook writes
its run to ``$METACLIP_NOTEBOOK_OUT``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

from metaclip_gpu.pipeline.run_summary import SUMMARY_NAME
from metaclip_gpu.pipeline.write import t_label

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 120


def tagged(notebook: nbformat.NotebookNode, tag: str) -> list[nbformat.NotebookNode]:
    return [cell for cell in notebook.cells if tag in cell.get("metadata", {}).get("tags", [])]


def printed(cell: nbformat.NotebookNode) -> str:
    return "".join(out.get("text", "") for out in cell.outputs if out.output_type == "stream")


def test_there_is_a_notebook() -> None:
    assert NOTEBOOKS, "notebooks/ holds no .ipynb"


@pytest.mark.parametrize("data", ["shared", "synthetic"])
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes_with_figures_and_the_run_numbers(
    path: Path, data: str, tmp_path, monkeypatch, request
) -> None:
    """With ../shared/data (CC3M; skipped where absent), and without it (synthetic input)."""
    if data == "shared":
        request.getfixturevalue("cc3m_path")
    else:
        (tmp_path / "no-data").mkdir()
        monkeypatch.setenv("METACLIP_SHARED_DATA", str(tmp_path / "no-data"))
    monkeypatch.setenv("METACLIP_NOTEBOOK_OUT", str(tmp_path))
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()

    summary = json.loads((tmp_path / "run" / SUMMARY_NAME).read_text())
    (summary_cell,) = tagged(notebook, "summary")
    text = printed(summary_cell)
    (pool_cell,) = tagged(notebook, "pool")
    assert ("SYNTHETIC" in printed(pool_cell)) == (data == "synthetic")
    assert f"texts read: {summary['texts_read']:,}\n" in text
    assert f"matched: {summary['matched']:,} (" in text
    for figure in summary["ts"]:
        assert f"kept, {t_label(figure['t'])}: {figure['kept']:,} (" in text

    figures = tagged(notebook, "figure")
    assert figures
    for cell in figures:
        pngs = [out for out in cell.outputs if "image/png" in out.get("data", {})]
        assert len(pngs) == 1, cell.source
        assert len(pngs[0]["data"]["image/png"]) > 1000  # base64 of a real picture

    (report_cell,) = tagged(notebook, "report")
    page = re.search(r"report: (\S+)", printed(report_cell))
    assert page and Path(page.group(1)) == tmp_path / "run" / "report" / "index.html"
    assert Path(page.group(1)).is_file()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_paired_script_holds_the_same_cells(path: Path) -> None:
    script = path.with_suffix(".py")
    if not script.is_file():
        pytest.skip(f"{path.name} has no paired .py")
    cells = [(c.cell_type, c.source, c.metadata.get("tags")) for c in jupytext.read(script).cells]
    stored = [(c.cell_type, c.source, c.metadata.get("tags")) for c in jupytext.read(path).cells]
    assert cells == stored, f"run: jupytext --sync {script.relative_to(REPO_ROOT)}"
