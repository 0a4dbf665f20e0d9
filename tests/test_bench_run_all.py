"""bench/run_all.py on a folder of stand-in benchmarks: discovery, --quick where a benchmark
has it, one table per benchmark from its fresh JSON, the machine header, failures reported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
WITH_QUICK = """\
import argparse, json, pathlib
parser = argparse.ArgumentParser()
parser.add_argument("--quick", action="store_true")
args = parser.parse_args()
results = pathlib.Path(__file__).parent / "results"
results.mkdir(exist_ok=True)
figures = {"machine": {"cpu": "left out"}, "quick": args.quick, "note": "a|b",
           "runs": {"one_thread": {"texts_per_s": 1234567.8, "seconds": [0.5, 0.25]}}}
(results / "bench_fast.json").write_text(json.dumps(figures))
"""
FAILING = "import sys\nsys.exit(3)\n"


def test_run_all_writes_one_table_per_benchmark(tmp_path: Path) -> None:
    (tmp_path / "bench_fast.py").write_text(WITH_QUICK)
    (tmp_path / "bench_failing.py").write_text(FAILING)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "bench_failing.json").write_text(json.dumps({"stale": 1}))
    (tmp_path / "helper.py").write_text("raise SystemExit('not a benchmark: never run')\n")
    run = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "bench" / "run_all.py"),
            "--quick",
            "--bench-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 1, run.stderr  # one benchmark failed
    assert "failed: bench_failing" in run.stderr
    results = (tmp_path / "RESULTS.md").read_text()
    for row in (
        "| CPU |",
        "| cores |",
        "| memory |",
        "| GPU |",
        "| load average |",
        "**Quick run**",
    ):
        assert row in results
    fast = results.split("## bench_fast", 1)[1]
    assert "bench_fast.py --quick`: exit status 0" in fast
    assert "| quick | true |" in fast
    assert "| runs.one_thread.texts_per_s | 1,234,568 |" in fast
    assert "| runs.one_thread.seconds | [0.5; 0.25] (2) |" in fast
    assert "| note | a\\|b |" in fast
    assert "left out" not in results  # the machine a benchmark records is the header's
    failing = results.split("## bench_failing", 1)[1].split("## ", 1)[0]
    assert "exit status 3" in failing and "No figures" in failing
    assert "stale" not in results  # an old JSON is not reported as this run's
