"""Progress in batch jobs: plain lines in a log as the run goes, ``--quiet``, ``--log-format
json`` (metaclip_gpu.pipeline.progress and the commands' log options)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from metaclip_gpu.cli import main

METADATA = ["red car", "blue sky", "dog", "cat", "the"]
WORDS = ["the", "red", "car", "blue", "sky", "dog", "cat", "on", "a", "road"]
LINE = re.compile(
    r"^metaclip-gpu (match|balance)( done)?: (\d+)/(\d+) shards, ([\d,]+) rows, "
    r"[\d,]+ rows/s, elapsed \d+:\d\d:\d\d, ETA (\d+:\d\d:\d\d|\?)$"
)


pytestmark = pytest.mark.usefixtures("private_cache")


def _pool(tmp_path: Path, shards: int, rows: int) -> tuple[Path, Path]:
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps(METADATA))
    folder = tmp_path / "pool"
    folder.mkdir()
    for k in range(shards):
        texts = [
            " ".join(WORDS[(i * 7 + j * 3 + k) % len(WORDS)] for j in range(6)) + f" {i}"
            for i in range(rows)
        ]
        urls = [f"u{k}-{i}" for i in range(rows)]
        pq.write_table(pa.table({"url": urls, "caption": texts}), folder / f"{k:03d}.parquet")
    return metadata, folder


def test_curate_writes_progress_lines_to_a_log_as_it_goes(tmp_path: Path) -> None:
    metadata, pool = _pool(tmp_path, shards=40, rows=4000)
    log = tmp_path / "job.log"
    env = {**os.environ, "METACLIP_PROGRESS_INTERVAL": "0.05", "COLUMNS": "120"}
    command = [
        sys.executable, "-m", "metaclip_gpu.cli",
        "curate", "--metadata", str(metadata), "--input", str(pool),
        "--output", str(tmp_path / "run"), "--t", "100", "--backend", "cpu",
        "--threads", "1", "--no-report",
    ]  # fmt: skip
    seen_while_running: list[str] = []
    with log.open("w") as stderr:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, env=env)
        while proc.poll() is None:  # read the log while the job runs, as `tail -f` would
            lines = log.read_text().splitlines()
            if proc.poll() is None and any(LINE.match(x) for x in lines):
                seen_while_running = lines
                break
            time.sleep(0.02)
        out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log.read_text()[-2000:]
    assert seen_while_running, "no progress line in the log before the run ended"

    lines = log.read_text().splitlines()
    assert not any("\r" in x or "\x1b" in x for x in lines)  # plain lines, no bar redraws
    match_lines = [m for m in map(LINE.match, lines) if m and m.group(1) == "match"]
    assert len(match_lines) >= 3, lines
    progress = [m for m in match_lines if not m.group(2)]
    done = [m for m in match_lines if m.group(2)]
    assert progress and len(done) == 1 and done[0] is match_lines[-1]
    shards = [int(m.group(3)) for m in match_lines]
    assert shards == sorted(shards) and shards[-1] == 40
    assert int(done[0].group(5).replace(",", "")) == 40 * 4000
    assert any(m and m.group(1) == "balance" and m.group(2) for m in map(LINE.match, lines))
    assert b"matched texts" in out  # the summary still goes to stdout


def _invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_log_format_json_writes_progress_and_summary_as_json_lines(tmp_path: Path) -> None:
    metadata, pool = _pool(tmp_path, shards=3, rows=300)
    out = tmp_path / "run"
    result = _invoke(
        "curate", "--metadata", str(metadata), "--input", str(pool), "--output", str(out),
        "--t", "50", "--backend", "cpu", "--no-report", "--log-format", "json",
        "--progress-interval", "0.05",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    events = [json.loads(x) for x in result.stderr.splitlines()]  # every line is JSON
    progress = [e for e in events if e["event"] == "progress"]
    assert {e["stage"] for e in progress} == {"match", "balance"}
    final = next(e for e in progress if e["stage"] == "match" and e["done"])
    assert final["shards"] == final["shards_total"] == 3 and final["rows"] == 900
    assert set(final) >= {"rows_per_second", "elapsed_seconds", "eta_seconds"}
    [summary] = [json.loads(x) for x in result.stdout.splitlines()]  # only the summary
    assert summary["event"] == "summary" and summary["command"] == "curate"
    assert summary["texts_read"] == 900 and summary["outcome"]["exit_code"] == 0
    assert (
        summary["ts"][0]["kept"] == json.loads((out / "summary.json").read_text())["ts"][0]["kept"]
    )


def test_quiet_prints_only_the_last_line(tmp_path: Path) -> None:
    metadata, pool = _pool(tmp_path, shards=2, rows=200)
    out = tmp_path / "run"
    result = _invoke(
        "curate", "--metadata", str(metadata), "--input", str(pool), "--output", str(out),
        "--t", "50", "--backend", "cpu", "--no-report", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    [line] = result.stdout.splitlines()
    assert "400" in line  # the outcome line: texts read

    # The stage-at-a-time commands too: one line each; count's names the next step.
    stage = tmp_path / "stage"
    for args in (
        ["match", "--metadata", str(metadata), "--input", str(pool), "--output", str(stage)],
        ["count", "--metadata", str(metadata), "--output", str(stage)],
        ["balance", "--input", str(pool), "--output", str(stage), "--t", "50", "--no-report"],
    ):
        result = _invoke(*args, "--quiet")
        assert result.exit_code == 0, result.output
        assert len(result.stdout.splitlines()) == 1, (args[0], result.stdout)
        assert result.stderr == "", (args[0], result.stderr)
    count = _invoke("count", "--metadata", str(metadata), "--output", str(stage), "-q")
    assert "next: metaclip-gpu balance --input" in count.stdout


def test_build_metadata_json_summary_and_step_lines(tmp_path: Path) -> None:
    _, pool = _pool(tmp_path, shards=2, rows=200)
    out = tmp_path / "built.json"
    result = _invoke(
        "build-metadata", "--out", str(out), "--wordnet", "none", "--corpus", str(pool),
        "--min-unigram-count", "1", "--no-numbers", "--log-format", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [summary] = [json.loads(x) for x in result.stdout.splitlines()]
    assert summary["command"] == "build-metadata"
    assert summary["entries"] == len(json.loads(out.read_text())) > 0
    steps = [json.loads(x) for x in result.stderr.splitlines()]
    assert [(e["event"], e["done"]) for e in steps] == [("step", False), ("step", True)]
    assert steps[0]["step"].startswith("counting n-grams of 2 shards")


def test_a_stage_without_progress_does_not_import_rich() -> None:
    """`run_match(..., progress=False)` (the API, the benchmarks): no display, so rich is not
    imported on the stage's clock (it cost each such run 0.03-0.09 s)."""
    code = (
        "import sys\n"
        "from metaclip_gpu.pipeline.progress import stage_progress\n"
        "with stage_progress(False) as bar:\n"
        "    bar.update(bar.add_task('match', total=1, rows=0), advance=1)\n"
        "print('rich.console' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
