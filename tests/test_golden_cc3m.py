"""Golden CC3M runs: the curated sets, entry counts and summaries of MetaCLIP 1 (with and
without a key column, two t, a target size) and worldwide (language and image columns) equal
those recorded in ``tests/golden/cc3m.json`` (how they were made: `golden_cc3m`). They guard
the module restructure of issue 12: behaviour must not change when code moves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from golden_cc3m import GOLDEN, golden_runs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(cc3m_path: Path, metadata_500k_path: Path, tmp_path_factory) -> dict:
    return golden_runs(cc3m_path, metadata_500k_path, tmp_path_factory.mktemp("golden"))


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(GOLDEN.read_text())["runs"]


@pytest.mark.parametrize("name", ["metaclip1-key", "metaclip1-nokey", "metaclip1-target-size"])
def test_metaclip1_runs_equal_the_golden_digests(runs: dict, golden: dict, name: str) -> None:
    assert runs[name]["curated"] == golden[name]["curated"]
    assert runs[name]["entry_counts"] == golden[name]["entry_counts"]
    assert runs[name]["summary"] == golden[name]["summary"]


def test_worldwide_run_equals_the_golden_digests(runs: dict, golden: dict) -> None:
    run, want = runs["worldwide"], golden["worldwide"]
    assert run["curated"] == want["curated"]
    assert run["entry_counts"] == want["entry_counts"]
    assert run["summary"] == want["summary"]


def test_the_golden_runs_exercise_both_policies(golden: dict) -> None:
    """Balancing really happens (fewer rows kept at the lower t) in every run."""
    for name, run in golden.items():
        kept = [digest["rows"] for digest in run["curated"].values()]
        assert len(kept) == 2 and len(set(kept)) == 2 and min(kept) > 0, name
    assert set(golden["worldwide"]["summary"]["languages"]) >= {"en", "de"}
