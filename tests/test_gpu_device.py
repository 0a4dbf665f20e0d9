"""What only a real GPU can check (marked ``gpu``: skipped where CuPy sees no device).

The emulated device (tests/gpu_emulation) has no cuDF, RMM, spilling or dask-cuda, and the
host-memory pylibcudf tests (test_device_layout.py) check addresses, not device reads. These
run the real thing: cuDF Series inputs (``iloc`` slices, empty, all-null, large strings), a
column spilled to host and read back under the spill lock, the process-lived backend, the RMM
pool shared with CuPy, and a `LocalCUDACluster` with a pool and cuDF spilling. The other
``gpu`` tests: test_gpu_backend.py (every input path, `to_cudf_list`), test_keys.py
(`hash_values` vs xxhash), test_ngrams.py / test_gpu_ngrams_input.py (n-gram counts).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from metaclip_gpu import MetadataIndex, match
from metaclip_gpu.engine.backends import get_backend

pytestmark = pytest.mark.gpu

ENTRIES = ["dog", "cat", "a dog", "new york", "sofa", "中文", "w0 w1"]
TEXTS: list[str | None] = [
    "a dog on a sofa", None, "", "new york, new york", "中文 text", "w0 w1 w2", None, "cat",
] * 37  # fmt: skip


@pytest.fixture(scope="module")
def index() -> MetadataIndex:
    return MetadataIndex.from_entries(ENTRIES)


def _same(gpu_result: Any, texts: list[str | None], index: MetadataIndex) -> None:
    cpu = match(texts, index, backend="cpu")
    np.testing.assert_array_equal(gpu_result.offsets.get(), cpu.offsets)
    np.testing.assert_array_equal(gpu_result.entry_ids.get(), cpu.entry_ids)


@pytest.mark.parametrize(("start", "stop"), [(0, 296), (1, 2), (5, 13), (9, 250), (7, 7)])
def test_cudf_iloc_slices(index: MetadataIndex, start: int, stop: int) -> None:
    cudf = pytest.importorskip("cudf")
    sliced = cudf.Series(TEXTS, dtype="str").iloc[start:stop]
    _same(match(sliced, index, backend="gpu"), TEXTS[start:stop], index)
    _same(match(sliced, index, backend="gpu", batch_rows=3), TEXTS[start:stop], index)


def test_cudf_empty_all_null_all_empty_and_index(index: MetadataIndex) -> None:
    cudf = pytest.importorskip("cudf")
    for texts in ([], [None, None, None], ["", "", ""], ["", None]):
        _same(match(cudf.Series(texts, dtype="str"), index, backend="gpu"), texts, index)
    _same(match(cudf.Index(TEXTS[:50], dtype="str"), index, backend="gpu"), TEXTS[:50], index)


def test_cudf_from_large_strings(index: MetadataIndex) -> None:
    cudf = pytest.importorskip("cudf")
    series = cudf.Series.from_arrow(pa.array(TEXTS, type=pa.large_string()))
    _same(match(series, index, backend="gpu"), TEXTS, index)


def test_spilled_column_is_unspilled_read_and_left_spillable(index: MetadataIndex) -> None:
    """With cuDF spilling on, a column spilled to host is brought back inside the access
    context, matched, and stays spillable (never exposed) afterwards."""
    cudf = pytest.importorskip("cudf")
    with cudf.option_context("spill", True):
        series = cudf.Series(TEXTS, dtype="str")
        plc_column = series._column.plc_column
        buffers = [plc_column.data(), plc_column.child(0).data(), plc_column.null_mask()]
        owners = [b.owner for b in buffers if b is not None and hasattr(b.owner, "spill")]
        if not owners:
            pytest.skip("cuDF made no spillable buffers here")
        for owner in owners:
            owner.spill(target="cpu")
        assert all(owner.is_spilled for owner in owners)
        _same(match(series, index, backend="gpu"), TEXTS, index)
        assert all(owner.spillable and not owner.exposed for owner in owners)


def test_backend_and_index_upload_live_as_long_as_the_process(index: MetadataIndex) -> None:
    backend = get_backend("gpu")
    assert get_backend("gpu") is backend
    before = backend.indexes.uploads  # type: ignore[attr-defined]
    for rows in (5, 50, None):
        match(TEXTS, index, backend="gpu", batch_rows=rows)
    assert backend.indexes.uploads - before <= 1  # type: ignore[attr-defined]


def test_device_memory_is_pooled_and_shared_with_cupy() -> None:
    cupy = pytest.importorskip("cupy")
    rmm = pytest.importorskip("rmm")
    from rmm.allocators.cupy import rmm_cupy_allocator

    from metaclip_gpu.engine.backends.gpu_memory import ensure_device_memory

    state = ensure_device_memory()
    assert state in ("async", "kept", "pool")
    resource = rmm.mr.get_current_device_resource()
    assert type(resource) is not rmm.mr.CudaMemoryResource  # not plain cudaMalloc
    allocator = cupy.cuda.get_allocator()
    assert allocator is rmm_cupy_allocator or getattr(allocator, "__name__", "") == (
        rmm_cupy_allocator.__name__
    )


def _curated_rows(out: Path, t: float) -> list[tuple[str, ...]]:
    import pyarrow.parquet as pq

    from metaclip_gpu.pipeline.write import curated_dir

    rows: list[tuple[str, ...]] = []
    for path in sorted(curated_dir(out, t).glob("*.parquet")):
        table = pq.read_table(path, columns=["url"])
        rows += [(u,) for u in table.column("url").to_pylist()]
    return sorted(rows)


@pytest.mark.filterwarnings("ignore:Port 8787 is already in use:UserWarning")
@pytest.mark.parametrize("pool_size", [None, "1GB"], ids=["async", "pool"])
def test_local_cuda_cluster_with_pool_and_spilling(
    pool_size: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("dask_cuda")
    from metaclip_gpu.pipeline.cluster import close_client, make_client
    from metaclip_gpu.pipeline.run import run_curate

    monkeypatch.setenv("METACLIP_GPU_CACHE", str(tmp_path / "cache"))
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps(ENTRIES))
    shards = tmp_path / "in"
    shards.mkdir()
    for i in range(2):
        lines = [t for t in TEXTS[i * 100 : (i + 1) * 100] if t]
        rows = "".join(f"{t}\thttp://x/{i}/{j}\n" for j, t in enumerate(lines))
        (shards / f"p{i}.tsv").write_text(rows)
    client = make_client(cluster="local", workers=1, backend="gpu", rmm_pool_size=pool_size)
    try:

        def worker_memory() -> tuple[str, bool]:
            import cudf
            import rmm

            return type(rmm.mr.get_current_device_resource()).__name__, cudf.get_option("spill")

        [(resource, spill)] = client.run(worker_memory).values()
        assert spill is True
        assert ("Pool" in resource) if pool_size else ("Async" in resource), resource
        on_gpu = run_curate(shards, metadata, tmp_path / "g", ts=[3], backend="gpu", client=client)
    finally:
        close_client(client)
    run_curate(shards, metadata, tmp_path / "c", ts=[3], backend="cpu")
    assert on_gpu["backend"] == "gpu"
    assert _curated_rows(tmp_path / "g", 3.0) == _curated_rows(tmp_path / "c", 3.0)
