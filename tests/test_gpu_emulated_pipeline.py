"""`run_curate` and `run_worldwide` with ``backend="gpu"`` on the emulated device curate exactly
the CPU backend's set (in process; tests/gpu_emulation). The inputs go through Arrow, so no cuDF
is needed; a dask cluster would start worker processes without the emulation and is not used.
"""

from __future__ import annotations

import json
from pathlib import Path

import gpu_emulation
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_worldwide_pipeline import METADATA, curated_rows, make_pool, write_shards

from metaclip_gpu.pipeline.read import ReadOptions
from metaclip_gpu.pipeline.run import run_curate, run_worldwide
from metaclip_gpu.pipeline.write import curated_dir

pytestmark = pytest.mark.emulated_gpu

CURATE_TS = [3.0, 1e9]


@pytest.fixture(scope="module")
def pool() -> pa.Table:
    return make_pool(500, seed=11)


@pytest.fixture(scope="module")
def shards(pool: pa.Table, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("emulated_pipeline")
    return write_shards(pool, root / "in", [len(pool) // 3, 2 * len(pool) // 3])


@pytest.fixture(scope="module")
def metadata_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("metadata")
    for lang, entries in METADATA.items():
        (folder / f"{lang}.json").write_text(json.dumps(entries, ensure_ascii=False))
    return folder


def _curated(out: Path, t: float) -> set[tuple[str, str, tuple[int, ...]]]:
    rows = set()
    for path in sorted(curated_dir(out, t).glob("*.parquet")):
        table = pq.read_table(path)
        rows |= set(
            zip(
                table.column("url").to_pylist(),
                table.column("caption").to_pylist(),
                (tuple(ids) for ids in table.column("entry_ids").to_pylist()),
                strict=True,
            )
        )
    return rows


@pytest.mark.parametrize("batch_rows", [1 << 20, 97])
def test_run_curate_gpu_equals_cpu(shards, metadata_dir, tmp_path, batch_rows: int) -> None:
    metadata = sorted({e for entries in METADATA.values() for e in entries})
    metadata_path = tmp_path / "metadata.json"
    metadata_path.write_text(json.dumps(metadata, ensure_ascii=False))
    options = ReadOptions(batch_rows=batch_rows)
    summaries = {
        backend: run_curate(
            shards,
            metadata_path,
            tmp_path / backend,
            ts=CURATE_TS,
            seed=5,
            backend=backend,
            options=options,
            progress=False,
            curated_entry_ids=True,
        )
        for backend in ("cpu", "gpu")
    }
    launched = {name for name, _grid, _block in gpu_emulation.launch_log}
    assert "mc_match_fixed_i32" in launched or "mc_match_fixed_i64" in launched
    assert summaries["gpu"]["matched"] == summaries["cpu"]["matched"] > 0
    for t in CURATE_TS:
        cpu = _curated(tmp_path / "cpu", t)
        assert cpu, f"nothing curated for t={t}: the comparison would be empty"
        assert _curated(tmp_path / "gpu", t) == cpu
    kept = [figure["kept"] for figure in summaries["cpu"]["ts"]]
    assert kept[0] < kept[1]  # t=3 drops head texts: the draws were exercised
    assert [figure["kept"] for figure in summaries["gpu"]["ts"]] == kept


def test_run_worldwide_gpu_equals_cpu(shards, metadata_dir, tmp_path) -> None:
    summaries = {
        backend: run_worldwide(
            shards,
            metadata_dir,
            tmp_path / backend,
            t_en=[20.0, 1e9],
            seed=7,
            backend=backend,
            progress=False,
        )
        for backend in ("cpu", "gpu")
    }
    launched = {name for name, _grid, _block in gpu_emulation.launch_log}
    assert launched & {"mc_match_fixed_i32", "mc_match_fixed_i64"}
    labels = summaries["cpu"]["outputs"]["curated"]
    assert labels and set(summaries["gpu"]["outputs"]["curated"]) == set(labels)
    for label in labels:
        cpu = curated_rows(summaries["cpu"], label)
        assert cpu, f"nothing curated for {label}"
        assert curated_rows(summaries["gpu"], label) == cpu
