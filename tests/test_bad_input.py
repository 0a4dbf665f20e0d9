"""Bad input never crashes a run nor loses good rows (issue 11): empty shards, lone
surrogates, invalid UTF-8 rows, unreadable shards and the exit codes that say so."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from metaclip_gpu.cli import main
from metaclip_gpu.curate import SUMMARY_NAME, curated_dir

ENTRIES = ["dog", "red car", "beach", "cat"]
GOOD_TEXTS = ["a dog on the beach", "red car, red cat", "nothing here", "a cat"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METACLIP_GPU_CACHE", str(tmp_path / "index-cache"))


@pytest.fixture
def metadata(tmp_path: Path) -> Path:
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(ENTRIES), encoding="utf-8")
    return path


def write_good_shard(root: Path, name: str = "good.tsv") -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text("".join(f"{t}\thttp://x/{i}\n" for i, t in enumerate(GOOD_TEXTS)))


def curate(metadata: Path, inputs: Path, out: Path, *extra: str):
    args = ["curate", "--metadata", str(metadata), "--input", str(inputs), "--output", str(out)]
    return CliRunner().invoke(main, [*args, "--t", "1000", "--no-report", *extra])


def curated_captions(out: Path) -> list[str]:
    folder = curated_dir(out, 1000)
    tables = [pq.read_table(p) for p in sorted(folder.glob("*.parquet"))]
    return sorted(
        c for t in tables if "caption" in t.column_names for c in t.column("caption").to_pylist()
    )


def summary_of(out: Path) -> dict:
    return json.loads((out / SUMMARY_NAME).read_text())


# ---------------------------------------------------------------------- item 1: 0-row shards
def test_zero_row_shards_next_to_good_ones_curate_the_good_rows(
    tmp_path: Path, metadata: Path
) -> None:
    """An empty JSONL, a 0-byte TSV and a 0-row Parquet used to raise KeyError in the balance
    stage, on every rerun too. Now: exit 0, the good rows curated, and a rerun is the same."""
    root = tmp_path / "in"
    write_good_shard(root)
    (root / "empty.jsonl").write_bytes(b"")
    (root / "empty.tsv").write_bytes(b"")
    pq.write_table(pa.table({"caption": pa.array([], pa.string())}), root / "empty.parquet")
    out = tmp_path / "out"
    for _ in range(2):  # the rerun reuses every stage's output
        result = curate(metadata, root, out)
        assert result.exit_code == 0, result.output
        assert curated_captions(out) == sorted(t for t in GOOD_TEXTS if t != "nothing here")
        summary = summary_of(out)
        assert summary["texts_read"] == len(GOOD_TEXTS)
        assert summary["shards"] == 4 and summary["shards_unreadable"] == []
        assert summary["ts"][0]["kept"] == 3
