"""What the command line tells a newcomer: required options in --help, a t that balances
nothing, the next step after ``count``, and a report that says what it curated and how."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from metaclip_gpu.cli import main
from metaclip_gpu.pipeline.advice import t_keeps_nearly_all

METADATA = ["red car", "blue sky", "dog", "cat", "the"]


pytestmark = pytest.mark.usefixtures("private_cache")


def _invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _pool(tmp_path: Path, rows: int = 400) -> tuple[Path, Path]:
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps(METADATA))
    folder = tmp_path / "pool"
    folder.mkdir()
    rare = ["red car", "blue sky", "dog", "cat"]
    for k in range(2):
        texts = [f"the {rare[i % 4]} {i}" for i in range(rows // 2)]
        urls = [f"u{k}-{i}" for i in range(rows // 2)]
        pq.write_table(pa.table({"url": urls, "caption": texts}), folder / f"{k}.parquet")
    return metadata, folder


def test_curate_help_says_t_or_target_size_is_required() -> None:
    result = _invoke("curate", "--help")
    text = " ".join(result.output.split())
    assert "--t (one or more) or --target-size: one of them is required" in text
    assert "Required: --t or --target-size" in text


def test_a_t_above_every_count_warns_in_the_summary_and_the_report(tmp_path: Path) -> None:
    pytest.importorskip("jinja2")
    pytest.importorskip("matplotlib")
    metadata, pool = _pool(tmp_path)  # "the": 400 texts, the others 100 each
    args = ["curate", "--metadata", str(metadata), "--input", str(pool), "--backend", "cpu"]
    big = _invoke(*args, "--output", str(tmp_path / "big"), "--t", "20000", "--t", "170000")
    assert big.exit_code == 0, big.output
    warning = " ".join(big.stderr.split())
    assert "warning: every t (20,000, 170,000) is above the counts of nearly all" in warning
    assert "keeps 100.0% of the matched texts" in warning
    page = (tmp_path / "big" / "report" / "index.html").read_text()
    assert 'id="t-warning"' in page and "every t (20,000, 170,000)" in page

    small = _invoke(*args, "--output", str(tmp_path / "small"), "--t", "50")
    assert small.exit_code == 0, small.output
    assert "warning" not in small.stderr
    assert 't-warning"' not in (tmp_path / "small" / "report" / "index.html").read_text()
    # One t that balances is enough: no warning when another t does not.
    figures = json.loads((tmp_path / "small" / "summary.json").read_text())["ts"]
    assert t_keeps_nearly_all(figures) is None
    both = json.loads((tmp_path / "big" / "summary.json").read_text())["ts"] + figures
    assert t_keeps_nearly_all(both) is None


def test_count_prints_the_next_step_that_runs(tmp_path: Path) -> None:
    metadata, pool = _pool(tmp_path)
    stage = tmp_path / "stage"
    matched = _invoke("match", "--metadata", str(metadata), "--input", str(pool), "--output",
                      str(stage))  # fmt: skip
    assert matched.exit_code == 0, matched.output
    counted = _invoke("count", "--metadata", str(metadata), "--output", str(stage))
    assert counted.exit_code == 0, counted.output
    [line] = [x for x in counted.stdout.splitlines() if x.startswith("next: ")]
    command = shlex.split(line.removeprefix("next: "))
    assert command[:3] == ["metaclip-gpu", "balance", "--input"]
    assert command[3] == str(pool) and command[5] == str(stage)
    # The pool is too small for MetaCLIP's 20000: the t offered balances ("the": 400 texts).
    t = float(command[command.index("--t") + 1])
    assert t < 400
    balanced = _invoke(*command[1:], "--no-report")
    assert balanced.exit_code == 0, balanced.output
    assert "warning" not in balanced.stderr


def test_the_report_says_synthetic_input_and_the_backend_that_ran(tmp_path: Path) -> None:
    pytest.importorskip("wordfreq")
    pytest.importorskip("jinja2")
    pytest.importorskip("matplotlib")
    out = tmp_path / "demo"
    demo = _invoke("demo", "--texts", "2000", "--shards", "2", "--output", str(out),
                   "--backend", "auto", "--threads", "1")  # fmt: skip
    assert demo.exit_code == 0, demo.output
    page = (out / "report" / "index.html").read_text()
    assert 'id="synthetic"' in page and "SYNTHETIC INPUT" in page
    assert '<td class="n" id="backend">cpu</td>' in page  # auto ran as cpu here
    assert json.loads((out / "summary.json").read_text())["input_kind"].startswith("synthetic")

    metadata, pool = _pool(tmp_path)
    real = _invoke("curate", "--metadata", str(metadata), "--input", str(pool), "--output",
                   str(tmp_path / "real"), "--t", "50")  # fmt: skip
    assert real.exit_code == 0, real.output
    page = (tmp_path / "real" / "report" / "index.html").read_text()
    assert "SYNTHETIC" not in page and '<td id="input">files (real data)</td>' in page


def test_count_after_curate_names_curates_input(tmp_path: Path) -> None:
    metadata, pool = _pool(tmp_path)
    out = tmp_path / "run"
    curated = _invoke("curate", "--metadata", str(metadata), "--input", str(pool), "--output",
                      str(out), "--t", "50", "--no-report")  # fmt: skip
    assert curated.exit_code == 0, curated.output
    counted = _invoke("count", "--metadata", str(metadata), "--output", str(out), "--quiet")
    assert f"next: metaclip-gpu balance --input {pool} --output {out} --t " in counted.stdout
