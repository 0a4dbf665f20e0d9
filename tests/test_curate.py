"""Stage balance + write and the single-process curate pipeline (pipeline.balance, SPEC 4)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from tsv_shards import split_lines

from metaclip_gpu.cli import main
from metaclip_gpu.engine.index import MetadataIndex
from metaclip_gpu.pipeline.balance import run_balance
from metaclip_gpu.pipeline.count import load_entry_counts, run_count
from metaclip_gpu.pipeline.files import COUNTS_NPY
from metaclip_gpu.pipeline.match import run_match
from metaclip_gpu.pipeline.read import ReadOptions, find_shards, read_shard
from metaclip_gpu.pipeline.run import run_curate
from metaclip_gpu.pipeline.run_summary import SUMMARY_NAME
from metaclip_gpu.pipeline.write import BALANCE_CONFIG, curated_dir, t_label

TS = [20.0, 200.0]
SMALL_ENTRIES = ["dog", "beach", "red car", "man", "woman", "city", "the sun"]


# ---------------------------------------------------------------------- helpers
def curated_rows(out_dir: Path, t: float) -> list[tuple[str, str, tuple[int, ...]]]:
    """Every curated row for `t` as sorted (url, caption, entry ids)."""
    rows = []
    for path in sorted(curated_dir(out_dir, t).glob("*.parquet")):
        table = pq.read_table(path)
        rows += zip(
            table.column("url").to_pylist(),
            table.column("caption").to_pylist(),
            (tuple(ids) for ids in table.column("entry_ids").to_pylist()),
            strict=True,
        )
    return sorted(rows)


def curate(shards: Path, metadata, out: Path, **kwargs):
    """`run_curate`; its curated files hold ``entry_ids`` (`curated_rows` reads them)."""
    kwargs.setdefault("ts", TS)
    kwargs.setdefault("seed", 0)
    kwargs.setdefault("curated_entry_ids", True)
    return run_curate(shards, metadata, out, progress=False, **kwargs)


@pytest.fixture(scope="module")
def index_500k(metadata_500k_path: Path) -> MetadataIndex:
    return MetadataIndex.load(metadata_500k_path)


@pytest.fixture(scope="module")
def base(tmp_path_factory, cc3m_path: Path, index_500k: MetadataIndex):
    """CC3M val in 4 TSV shards, curated for TS with seed 0: (shards dir, out dir, summary)."""
    root = tmp_path_factory.mktemp("curate_base")
    split_lines(cc3m_path, root / "shards4", 4)
    summary = curate(root / "shards4", index_500k, root / "out")
    return root / "shards4", root / "out", summary


# ---------------------------------------------------------------------- determinism
def test_rerun_into_a_fresh_directory_is_identical(base, index_500k, tmp_path) -> None:
    shards, out, _ = base
    curate(shards, index_500k, tmp_path / "again")
    for t in TS:
        first = curated_rows(out, t)
        assert first and curated_rows(tmp_path / "again", t) == first


def test_another_split_gives_the_same_curated_set(base, cc3m_path, index_500k, tmp_path) -> None:
    _, out, _ = base
    split_lines(cc3m_path, tmp_path / "shards3", 3)
    curate(tmp_path / "shards3", index_500k, tmp_path / "out3")
    for t in TS:
        assert curated_rows(tmp_path / "out3", t) == curated_rows(out, t)


def test_read_batch_size_does_not_change_the_result(base, index_500k, tmp_path) -> None:
    shards, out, _ = base
    curate(shards, index_500k, tmp_path / "small", options=ReadOptions(batch_rows=701))
    for t in TS:
        assert curated_rows(tmp_path / "small", t) == curated_rows(out, t)


def test_another_seed_gives_another_set_and_reruns_are_idempotent(base, tmp_path) -> None:
    shards, out, _ = base
    work = tmp_path / "copy"
    shutil.copytree(out, work)
    before = {p: p.stat().st_mtime_ns for p in curated_dir(work, TS[0]).glob("*.parquet")}
    again = run_balance(work, shards, ts=TS, seed=0, progress=False, curated_entry_ids=True)
    assert all(s["reused"] for s in again["shards"])
    assert {p: p.stat().st_mtime_ns for p in before} == before  # nothing rewritten
    reference = curated_rows(out, TS[0])

    other = run_balance(work, shards, ts=TS, seed=1, progress=False, curated_entry_ids=True)
    assert not any(s["reused"] for s in other["shards"])  # a new seed redoes every shard
    changed = curated_rows(work, TS[0])
    assert changed != reference
    assert {u for u, _, _ in changed} != {u for u, _, _ in reference}
    run_balance(work, shards, ts=TS, seed=0, progress=False, curated_entry_ids=True)
    assert curated_rows(work, TS[0]) == reference


# ---------------------------------------------------------------------- balancing figures
def binomial_tolerance(expected: float, n: int) -> float:
    """5 sigma of a sum of independent Bernoulli draws with this mean (variance <= min(E, n-E))."""
    return 5 * math.sqrt(max(min(expected, n - expected), 1.0)) + 1


def test_kept_counts_are_within_binomial_tolerance(base) -> None:
    _, out, summary = base
    for figure in summary["ts"]:
        kept, expected, matched = figure["kept"], figure["expected_kept"], figure["matched"]
        assert abs(kept - expected) <= binomial_tolerance(expected, matched), figure
        assert kept == len(curated_rows(out, figure["t"]))
    assert summary["ts"][0]["kept"] <= summary["ts"][1]["kept"]


def test_target_size_solves_t(base, index_500k, tmp_path) -> None:
    shards, _, _ = base
    summary = curate(shards, index_500k, tmp_path / "target", ts=[], target_size=6000)
    (figure,) = summary["ts"]
    assert figure["solved"] and abs(figure["expected_kept"] - 6000) < 1e-3
    assert abs(figure["kept"] - 6000) <= binomial_tolerance(6000, figure["matched"])


def matched_keys(out_dir: Path, shards_dir: Path) -> list[tuple[str, list[int]]]:
    """(input key, entry ids) of every row of the match files, which hold no input column:
    joined back to the input by (shard, row), as the README says."""
    keys = {}
    for shard in find_shards(shards_dir):
        for chunk in read_shard(shard):
            for i, key in enumerate(chunk.table.column("key").to_pylist()):
                keys[(shard.name, chunk.first_row + i)] = key
    matches = pa.concat_tables(
        pq.read_table(p) for p in sorted((out_dir / "matches").glob("*.parquet"))
    )
    assert "key" not in matches.column_names
    columns = (matches.column(c).to_pylist() for c in ("shard", "row", "entry_ids"))
    return [(keys[(s, r)], ids) for s, r, ids in zip(*columns, strict=True)]


def test_t_above_every_count_keeps_exactly_the_matched_texts(cc3m_path, tmp_path) -> None:
    index = MetadataIndex.from_entries(SMALL_ENTRIES)
    split_lines(cc3m_path, tmp_path / "shards", 3, limit=3000)
    run_match(tmp_path / "shards", index, tmp_path / "out", progress=False)
    counts = run_count(tmp_path / "out", index)
    t_all = float(counts.max()) + 1
    low = 5.0
    result = run_balance(
        tmp_path / "out", tmp_path / "shards", ts=[t_all, low], progress=False,
        curated_entry_ids=True,
    )  # fmt: skip
    matches = matched_keys(tmp_path / "out", tmp_path / "shards")
    matched_urls = {u for u, ids in matches if ids}
    assert 0 < len(matched_urls) < 3000  # some texts match nothing
    kept_all = curated_rows(tmp_path / "out", t_all)
    assert {u for u, _, _ in kept_all} == matched_urls
    assert result["ts"][0]["kept"] == result["ts"][0]["matched"] == len(matched_urls)
    assert result["ts"][0]["head_entries"] == 0
    kept_low = curated_rows(tmp_path / "out", low)
    assert {u for u, _, _ in kept_low} <= matched_urls
    figure = result["ts"][1]
    assert figure["head_entries"] == int((counts > low).sum())
    assert abs(figure["kept"] - figure["expected_kept"]) <= binomial_tolerance(
        figure["expected_kept"], figure["matched"]
    )
    # every text with a tail entry (count <= t) is kept
    tail = set(np.flatnonzero((counts > 0) & (counts <= low)).tolist())
    must = {u for u, ids in matches if tail.intersection(ids)}
    assert must <= {u for u, _, _ in kept_low}


# ---------------------------------------------------------------------- outputs
def test_curated_parquet_keeps_the_input_columns(base, cc3m_path) -> None:
    _, out, _ = base
    files = sorted(curated_dir(out, TS[0]).glob("*.parquet"))
    assert len(files) == 4
    table = pq.ParquetFile(files[0]).read()  # no hive column from the t=... folder name
    assert table.column_names == ["caption", "url", "entry_ids"]
    assert table.schema.field("entry_ids").type == pa.list_(pa.int32())
    source = dict(
        reversed(line.split("\t", 1)) for line in cc3m_path.read_text(encoding="utf-8").splitlines()
    )
    for url, caption, ids in curated_rows(out, TS[0])[:200]:
        assert source[url] == caption
        assert ids and list(ids) == sorted(set(ids))
    config = json.loads((curated_dir(out, TS[0]) / BALANCE_CONFIG).read_text())
    assert config["seed"] == 0 and config["t"] == TS[0]


def test_summary_json_has_the_stated_fields(base) -> None:
    _, out, summary = base
    on_disk = json.loads((out / SUMMARY_NAME).read_text())
    assert on_disk == json.loads(json.dumps(summary))
    for name in (
        "texts_read",
        "skipped",
        "null_texts",
        "shards_unreadable",
        "matched",
        "distinct_entries_matched",
        "ts",
        "seconds",
        "outputs",
    ):
        assert name in on_disk
    assert on_disk["texts_read"] == 15833
    counts = load_entry_counts(out / COUNTS_NPY)
    assert on_disk["distinct_entries_matched"] == int((counts > 0).sum())
    assert set(on_disk["seconds"]) >= {"match", "count", "balance", "total"}
    for figure in on_disk["ts"]:
        assert set(figure) >= {"t", "kept", "expected_kept", "head_entries", "head_entry_share"}
        assert figure["head_entries"] == int((counts > figure["t"]).sum())
    assert set(on_disk["outputs"]["curated"]) == {t_label(t) for t in TS}


def test_balance_needs_the_match_stage(base, tmp_path) -> None:
    shards, _, _ = base
    with pytest.raises(RuntimeError, match="match"):
        run_balance(tmp_path, shards, ts=[10], progress=False)


# ---------------------------------------------------------------------- CLI
def test_cli_curate_end_to_end(cc3m_path, metadata_500k_path, tmp_path) -> None:
    split_lines(cc3m_path, tmp_path / "shards", 2, limit=2000)
    out = tmp_path / "out"
    runner = CliRunner(env={"COLUMNS": "400"})
    args = ["curate", "--metadata", str(metadata_500k_path), "--input", str(tmp_path / "shards")]
    result = runner.invoke(main, [*args, "--output", str(out), "--t", "10", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "kept, t = 10" in result.output
    assert str(curated_dir(out, 10)) in result.output
    assert str(out / SUMMARY_NAME) in result.output
    summary = json.loads((out / SUMMARY_NAME).read_text())
    assert summary["texts_read"] == 2000 and summary["seed"] == 3
    assert len(list(curated_dir(out, 10).glob("*.parquet"))) == 2

    glob = str(tmp_path / "shards" / "*.tsv")
    balanced = runner.invoke(main, ["balance", "--input", glob, "--output", str(out), "--t", "30"])
    assert balanced.exit_code == 0, balanced.output
    assert "kept, t = 30" in balanced.output

    missing_t = runner.invoke(main, [*args, "--output", str(out)])
    assert missing_t.exit_code != 0 and "--t" in missing_t.output
    not_matched = runner.invoke(
        main, ["balance", "--input", glob, "--output", str(tmp_path), "--t", "5"]
    )
    assert not_matched.exit_code != 0 and "match" in not_matched.output


def test_cli_match_count_balance_one_stage_at_a_time_equal_curate(
    cc3m_path, metadata_500k_path, tmp_path
) -> None:
    split_lines(cc3m_path, tmp_path / "shards", 3, limit=3000)
    runner = CliRunner(env={"COLUMNS": "400"})
    shards, meta = str(tmp_path / "shards"), str(metadata_500k_path)
    whole, staged = tmp_path / "whole", tmp_path / "staged"
    curated = runner.invoke(
        main, ["curate", "--metadata", meta, "--input", shards, "--output", str(whole),
               "--t", "20", "--no-report"],
    )  # fmt: skip
    assert curated.exit_code == 0, curated.output
    steps = [
        ["match", "--metadata", meta, "--input", shards, "--output", str(staged)],
        ["count", "--metadata", meta, "--output", str(staged)],
        ["balance", "--input", shards, "--output", str(staged), "--t", "20"],
    ]
    for step in steps:
        result = runner.invoke(main, step)
        assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(
        np.load(staged / "entry_counts.npy"), np.load(whole / "entry_counts.npy")
    )
    for name in sorted(p.name for p in curated_dir(whole, 20).glob("*.parquet")):
        assert pq.read_table(curated_dir(staged, 20) / name).equals(
            pq.read_table(curated_dir(whole, 20) / name)
        )
    one_file = runner.invoke(main, ["match", "--metadata", meta, "--input", shards])
    assert one_file.exit_code != 0 and "--output directory" in one_file.output


def test_without_a_key_column_the_text_and_row_fallback_is_used(cc3m_path, tmp_path) -> None:
    """Caption-only shards: stable across reruns and batch sizes (not across splits)."""
    lines = cc3m_path.read_bytes().split(b"\n")[:1500]
    shards = tmp_path / "shards"
    shards.mkdir()
    for i in range(2):
        part = lines[i * 750 : (i + 1) * 750]
        (shards / f"part-{i}.tsv").write_bytes(b"".join(ln.split(b"\t")[0] + b"\n" for ln in part))
    index = MetadataIndex.from_entries(SMALL_ENTRIES)

    def captions(out: Path) -> list[tuple[str, tuple[int, ...]]]:
        rows = []
        for path in sorted(curated_dir(out, 3).glob("*.parquet")):
            table = pq.ParquetFile(path).read()  # no hive column from the t=... folder name
            assert table.column_names == ["caption", "entry_ids"]
            rows += zip(
                table.column("caption").to_pylist(),
                map(tuple, table.column("entry_ids").to_pylist()),
                strict=True,
            )
        return rows

    curate(shards, index, tmp_path / "a", ts=[3])
    curate(shards, index, tmp_path / "b", ts=[3], options=ReadOptions(batch_rows=97))
    assert captions(tmp_path / "a") and captions(tmp_path / "a") == captions(tmp_path / "b")


@pytest.mark.gpu
def test_gpu_balance_equals_cpu(base, tmp_path) -> None:
    shards, out, _ = base
    work = tmp_path / "gpu"
    shutil.copytree(out, work, ignore=shutil.ignore_patterns("curated"))
    run_balance(work, shards, ts=TS, seed=0, backend="gpu", progress=False, curated_entry_ids=True)
    for t in TS:
        assert curated_rows(work, t) == curated_rows(out, t)


# ---------------------------------------------------------------------- crash and resume
def test_curate_killed_in_the_balance_stage_resumes_to_the_same_result(
    base, metadata_500k_path: Path, tmp_path: Path
) -> None:
    """SIGKILL `curate` once the balance stage has written some curated files (the delay hook
    holds each file 0.3 s), rerun it: the same curated set as the uninterrupted run, no
    temporary file left."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from metaclip_gpu.pipeline.files import DELAY_ENV

    shards, clean, _ = base
    killed = tmp_path / "killed"
    code = (
        "import sys; from metaclip_gpu.pipeline.run import run_curate; "
        f"run_curate(sys.argv[1], sys.argv[2], sys.argv[3], ts={TS!r}, seed=0, progress=False, "
        "curated_entry_ids=True)"
    )
    env = {**os.environ, DELAY_ENV: "0.6"}  # match: 0.3 s before and after each rename
    args = [sys.executable, "-c", code, str(shards), str(metadata_500k_path), str(killed)]
    proc = subprocess.Popen(args, env=env)
    first_t = curated_dir(killed, TS[0])
    try:
        deadline = time.monotonic() + 60
        while not list(first_t.glob("*.parquet")) and time.monotonic() < deadline:
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    written = sum(len(list(curated_dir(killed, t).glob("*.parquet"))) for t in TS)
    assert 1 <= written < 4 * len(TS)  # killed part-way through the balance stage

    summary = curate(shards, metadata_500k_path, killed)
    for t in TS:
        assert curated_rows(killed, t) == curated_rows(clean, t)
    assert [f["kept"] for f in summary["ts"]] == [len(curated_rows(clean, t)) for t in TS]
    assert not [p for p in killed.rglob("*") if ".tmp-" in p.name]
