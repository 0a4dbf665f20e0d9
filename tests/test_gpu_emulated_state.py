"""Device state lives as long as the process, on the emulated device (tests/gpu_emulation).

Issue 10, point 2: `match()` built a new `GPUBackend` on every call, and the pipeline calls it
per chunk, so every chunk uploaded the index again and re-ran the signature check (a launch
and a sync). Counted here two ways: the backend's `IndexCache.uploads`, and the launches of
``mc_index_signature_kernel`` the emulated device logged (one per upload). Also: device
batches are cut by bytes of text, and give the CPU's results.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import gpu_emulation
import numpy as np
import pytest

from metaclip_gpu import MetadataIndex, match
from metaclip_gpu.pipeline.match import run_match
from metaclip_gpu.pipeline.read import ReadOptions

pytestmark = pytest.mark.emulated_gpu

ENTRIES = ["dog", "cat", "a dog", "new york", "sofa", "the", "red", "red car"]
WORDS = ["a", "dog", "cat", "new", "york", "sofa", "the", "red", "car", "x", ",", "."]


def _texts(n: int, seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randrange(0, 9))) for _ in range(n)]


def signature_launches() -> int:
    return sum(1 for name, *_ in gpu_emulation.launch_log if name == "mc_index_signature_kernel")


def _uploads() -> int:
    from metaclip_gpu.engine.backends import get_backend

    return get_backend("gpu").indexes.uploads  # type: ignore[attr-defined]


def _same(a, b) -> None:
    np.testing.assert_array_equal(a.offsets.get(), b.offsets)
    np.testing.assert_array_equal(a.entry_ids.get(), b.entry_ids)


def test_each_index_is_uploaded_once_whatever_the_number_of_calls_and_batches() -> None:
    first = MetadataIndex.from_entries(ENTRIES)
    second = MetadataIndex.from_entries(ENTRIES[:4])
    texts = _texts(120)
    for batch_rows in (7, 50, None):  # 18, 3 and 1 batches
        _same(
            match(texts, first, backend="gpu", batch_rows=batch_rows),
            match(texts, first, backend="cpu"),
        )
    assert signature_launches() == 1 and _uploads() == 1
    match(texts, second, backend="gpu", batch_rows=11)
    match(texts, first, backend="gpu", batch_rows=11)  # still on the device
    assert signature_launches() == 2 and _uploads() == 2


def test_a_digest_keyed_index_loaded_twice_is_one_upload(tmp_path: Path) -> None:
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(ENTRIES))
    a = MetadataIndex.load(path, cache=tmp_path / "cache")
    b = MetadataIndex.load(path, cache=tmp_path / "cache")
    assert a is not b and a.stats.digest == b.stats.digest != ""
    match(["a dog"], a, backend="gpu")
    match(["a dog"], b, backend="gpu")
    assert signature_launches() == 1 and _uploads() == 1


def _shards(root: Path, n_shards: int, rows: int) -> Path:
    root.mkdir()
    texts = _texts(n_shards * rows, seed=9)
    for i in range(n_shards):
        lines = texts[i * rows : (i + 1) * rows]
        rows_text = "".join(f"{t}\thttp://x/{i}/{j}\n" for j, t in enumerate(lines))
        (root / f"part-{i}.tsv").write_text(rows_text)
    return root


def test_match_stage_over_many_chunks_and_shards_uploads_once(tmp_path: Path) -> None:
    index = MetadataIndex.from_entries(ENTRIES)
    shards = _shards(tmp_path / "in", n_shards=3, rows=40)
    options = ReadOptions(batch_rows=9)  # 5 chunks a shard, 15 match() calls
    gpu = run_match(shards, index, tmp_path / "gpu", options=options, backend="gpu", progress=False)
    cpu = run_match(shards, index, tmp_path / "cpu", options=options, backend="cpu", progress=False)
    assert [r.rows for r in gpu] == [r.rows for r in cpu] == [40, 40, 40]
    assert signature_launches() == 1 and _uploads() == 1
    chunks = sum(1 for name, *_ in gpu_emulation.launch_log if name.startswith("mc_match_fixed"))
    assert chunks == 15


@pytest.mark.filterwarnings("ignore:Port 8787 is already in use:UserWarning")
def test_a_dask_worker_uploads_once_for_all_its_shards(tmp_path: Path) -> None:
    """One worker (in this process, so it runs on the emulated device) matching 3 shards of 5
    chunks each through `_match_task`: one upload."""
    distributed = pytest.importorskip("distributed")
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps(ENTRIES))
    shards = _shards(tmp_path / "in", n_shards=3, rows=40)
    options = ReadOptions(batch_rows=9)
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        reports = run_match(
            shards, metadata, tmp_path / "out", options=options, backend="gpu",
            progress=False, client=client, cache_dir=tmp_path / "cache",
        )  # fmt: skip
    assert [r.rows for r in reports] == [40, 40, 40] and not any(r.error for r in reports)
    assert signature_launches() == 1 and _uploads() == 1


def test_device_batches_are_cut_by_bytes_of_text(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from metaclip_gpu.engine.backends import get_backend

    # importlib, not `from metaclip_gpu.engine.backends import gpu`: the package attribute may still
    # be a real-CuPy gpu module imported by an earlier test
    gpu_module = importlib.import_module("metaclip_gpu.engine.backends.gpu")
    texts = ["x" * 10] * 20 + ["y" * 100] + ["z"] * 5
    monkeypatch.setattr(gpu_module, "GPU_BATCH_BYTES", 45)
    sizes = [len(b) for b in get_backend("gpu").text_batches(texts)]
    assert sizes == [4, 4, 4, 4, 4, 1, 5]
    index = MetadataIndex.from_entries(["x" * 10, "z", "y" * 100])
    _same(match(texts, index, backend="gpu"), match(texts, index, backend="cpu"))
    assert [len(b) for b in get_backend("gpu").text_batches(texts, batch_rows=8)] == [8, 8, 8, 2]


def test_worldwide_uploads_each_language_once_across_runs(tmp_path: Path) -> None:
    """One index per language, each uploaded once; a second run in the same process (new
    LanguageIndexes objects, the same digests) uploads nothing."""
    from test_worldwide_pipeline import METADATA, make_pool, write_shards

    from metaclip_gpu.pipeline.run import run_worldwide

    pool = make_pool(300, seed=4)
    shards = write_shards(pool, tmp_path / "in", [100, 200])
    metadata = tmp_path / "metadata"
    metadata.mkdir()
    for lang, entries in METADATA.items():
        (metadata / f"{lang}.json").write_text(json.dumps(entries, ensure_ascii=False))
    options = ReadOptions(batch_rows=40)
    uploads = []
    for run in ("first", "second"):
        run_worldwide(
            shards, metadata, tmp_path / run, t_en=[20.0], backend="gpu", options=options,
            progress=False,
        )  # fmt: skip
        uploads.append(_uploads())
    languages = set(pool.column("lang").to_pylist()) & set(METADATA)
    assert len(languages) > 1
    assert uploads[0] == len(languages) == signature_launches()  # 3 shards x chunks each
    assert uploads[1] == uploads[0]  # the second run: nothing uploaded again
