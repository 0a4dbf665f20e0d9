"""One worker per GPU, decided once: the backend of a run is resolved where it starts.

A machine "with GPUs" here is `gpu_count` mocked to 2 and `dask_cuda.LocalCUDACluster`
replaced by a recording stand-in (an in-process `distributed.LocalCluster`), so the whole
command runs; the tasks are wrapped to record the backend they receive, then do the work on
the CPU. What a real LocalCUDACluster does with these arguments is for the ``gpu`` tests.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import metaclip_gpu.engine.backends as backends
import metaclip_gpu.pipeline.cluster as cluster_module
from metaclip_gpu.cli import main
from metaclip_gpu.metadata_builder import ngrams
from metaclip_gpu.pipeline import balance as balance_stage
from metaclip_gpu.pipeline import match as match_stage
from metaclip_gpu.pipeline import run

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.filterwarnings("ignore:Port 8787 is already in use:UserWarning")

CAPTIONS = [
    "a dog on a sofa",
    "new york at night",
    "a cat and a dog",
    "nothing here",
    "the cat",
    "dog dog dog",
]

# What the wrapped tasks received (module level: the in-process workers call these).
RECEIVED: list[tuple[str, str]] = []
CLUSTERS: list[dict[str, Any]] = []
_REAL = {
    "match": match_stage._match_task,
    "balance": balance_stage._balance_task,
    "ngrams": ngrams.count_shard,
}


def _match_task(*args: Any, backend: str, **kwargs: Any) -> Any:
    RECEIVED.append(("match", backend))
    return _REAL["match"](*args, backend="cpu", **kwargs)


def _balance_task(*args: Any, backend: str, **kwargs: Any) -> Any:
    RECEIVED.append(("balance", backend))
    return _REAL["balance"](*args, backend="cpu", **kwargs)


def _count_shard(shard: Any, options: Any = None, backend: str = "cpu") -> Any:
    RECEIVED.append(("ngrams", backend))
    return _REAL["ngrams"](shard, options, backend="cpu")


class RecordingCUDACluster(distributed.LocalCluster):
    """Takes LocalCUDACluster's arguments, records them, starts in-process workers."""

    def __init__(self, **kwargs: Any) -> None:
        CLUSTERS.append(kwargs)
        super().__init__(
            n_workers=kwargs["n_workers"],
            threads_per_worker=kwargs["threads_per_worker"],
            processes=False,
            dashboard_address=None,
        )


@pytest.fixture
def pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """(metadata file, shards dir): two small TSV shards; the index cache under tmp_path."""
    monkeypatch.setenv("METACLIP_GPU_CACHE", str(tmp_path / "cache"))
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps(["dog", "cat", "new york", "a", "sofa"]))
    shards = tmp_path / "shards"
    shards.mkdir()
    for i in range(2):
        lines = CAPTIONS[i * 3 : i * 3 + 3]
        (shards / f"part-{i}.tsv").write_text("".join(f"{c}\thttp://x/{i}/{c}\n" for c in lines))
    return metadata, shards


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine where CuPy reports two GPUs, with the recording LocalCUDACluster and the
    recording tasks in place."""
    RECEIVED.clear()
    CLUSTERS.clear()
    monkeypatch.setattr(backends, "gpu_available", lambda: True)
    monkeypatch.setattr(backends, "gpu_count", lambda: 2, raising=False)
    monkeypatch.setattr(cluster_module, "gpu_count", lambda: 2, raising=False)
    fake = types.ModuleType("dask_cuda")
    fake.LocalCUDACluster = RecordingCUDACluster  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "dask_cuda", fake)
    monkeypatch.setattr(match_stage, "_match_task", _match_task)
    monkeypatch.setattr(balance_stage, "_balance_task", _balance_task)
    monkeypatch.setattr(ngrams, "count_shard", _count_shard)


def _curate(metadata: Path, shards: Path, out: Path, *extra: str) -> Any:
    args = ["curate", "--metadata", str(metadata), "--input", str(shards), "--output", str(out)]
    return CliRunner().invoke(main, [*args, "--t", "2", "--no-report", *extra])


def test_cluster_local_with_auto_on_a_gpu_machine_is_one_cuda_worker_per_gpu(
    pool: tuple[Path, Path], two_gpus: None, tmp_path: Path
) -> None:
    """Issue 10, point 1: `--cluster local` with the default `--backend auto` started a CPU
    LocalCluster whose workers each resolved "auto" to the GPU themselves."""
    metadata, shards = pool
    result = _curate(metadata, shards, tmp_path / "out", "--cluster", "local")
    assert result.exit_code == 0, result.output
    assert len(CLUSTERS) == 1
    kwargs = CLUSTERS[0]
    assert kwargs["n_workers"] == 2 and kwargs["threads_per_worker"] == 1
    assert kwargs["enable_cudf_spill"] is True
    assert kwargs.get("rmm_async") is True and "rmm_pool_size" not in kwargs
    assert sorted(RECEIVED) == [("balance", "gpu")] * 2 + [("match", "gpu")] * 2
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["backend"] == "gpu"


def test_rmm_pool_size_goes_to_each_cuda_worker(
    pool: tuple[Path, Path], two_gpus: None, tmp_path: Path
) -> None:
    metadata, shards = pool
    extra = ("--cluster", "local", "--workers", "1", "--rmm-pool-size", "2GB")
    result = _curate(metadata, shards, tmp_path / "out", *extra)
    assert result.exit_code == 0, result.output
    assert CLUSTERS[0]["n_workers"] == 1 and CLUSTERS[0]["rmm_pool_size"] == "2GB"
    assert "rmm_async" not in CLUSTERS[0]


def test_more_workers_than_gpus_is_a_one_line_error(
    pool: tuple[Path, Path], two_gpus: None, tmp_path: Path
) -> None:
    metadata, shards = pool
    result = _curate(metadata, shards, tmp_path / "out", "--cluster", "local", "--workers", "3")
    assert result.exit_code == 1
    assert "--workers 3 is more than the 2 visible GPU(s)" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert CLUSTERS == [] and RECEIVED == []


def test_missing_nvml_is_a_one_line_error(
    pool: tuple[Path, Path], two_gpus: None, tmp_path: Path
) -> None:
    """dask-cuda raises pynvml's NVMLError_LibraryNotFound without libnvidia-ml."""

    class NVMLError_LibraryNotFound(Exception):
        def __str__(self) -> str:
            return "NVML Shared Library Not Found"

    def no_nvml(**kwargs: Any) -> Any:
        raise NVMLError_LibraryNotFound()

    sys.modules["dask_cuda"].LocalCUDACluster = no_nvml  # type: ignore[attr-defined]
    metadata, shards = pool
    result = _curate(metadata, shards, tmp_path / "out", "--cluster", "local")
    assert result.exit_code == 1
    assert "needs NVML" in result.output and "NVML Shared Library Not Found" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_real_dask_cuda_without_nvml_is_a_cluster_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """The installed dask-cuda on a machine without the NVIDIA driver's NVML: its
    `pynvml.NVMLError_LibraryNotFound` becomes the one-line `ClusterError`."""
    pytest.importorskip("dask_cuda", reason="the gpu extra is not installed (no dask-cuda)")
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pytest.skip("NVML is present here: LocalCUDACluster would start")
    monkeypatch.setattr(backends, "gpu_available", lambda: True)
    monkeypatch.setattr(cluster_module, "gpu_count", lambda: 1)
    with pytest.raises(cluster_module.ClusterError, match="needs NVML") as caught:
        cluster_module.make_client(cluster="local", backend="gpu")
    assert isinstance(caught.value.__cause__, pynvml.NVMLError)


def test_build_metadata_counter_tasks_receive_the_resolved_backend(
    pool: tuple[Path, Path], two_gpus: None, tmp_path: Path
) -> None:
    _, shards = pool
    args = ["build-metadata", "--out", str(tmp_path / "m.json"), "--wordnet", "none"]
    args += ["--corpus", str(shards), "--min-unigram-count", "1", "--cluster", "local"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert CLUSTERS[0]["n_workers"] == 2
    assert RECEIVED == [("ngrams", "gpu")] * 2


def test_in_process_auto_reaches_the_stages_resolved(
    pool: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a GPU, "auto" is "cpu" from the start: the summary and every stage say so."""
    monkeypatch.setattr(backends, "gpu_available", lambda: False)
    monkeypatch.setattr(backends, "gpu_count", lambda: 0, raising=False)
    seen: list[str] = []
    real = match_stage.match_shard_output

    def spy(*args: Any, backend: str, **kwargs: Any) -> Any:
        seen.append(backend)
        return real(*args, backend=backend, **kwargs)

    monkeypatch.setattr(match_stage, "match_shard_output", spy)
    metadata, shards = pool
    summary = run.run_curate(shards, metadata, tmp_path / "o", ts=[2], backend="auto")
    assert summary["backend"] == "cpu"
    assert seen == ["cpu", "cpu"]


class _Client:
    def __init__(self, devices: dict[str, int]) -> None:
        self.devices = devices

    def run(self, function: Any) -> dict[str, int]:
        assert function is backends.gpu_count or function.__name__ == "gpu_count"
        return self.devices


def test_a_joined_cluster_decides_auto_from_its_workers() -> None:
    assert cluster_module.run_backend("auto", _Client({"a": 1, "b": 2})) == "gpu"
    assert cluster_module.run_backend("auto", _Client({"a": 1, "b": 0})) == "cpu"
    assert cluster_module.run_backend("auto", _Client({})) == "cpu"
    assert cluster_module.run_backend("gpu", _Client({"a": 0})) == "gpu"  # as given
    with pytest.raises(ValueError, match="unknown backend"):
        cluster_module.run_backend("tpu", _Client({}))


def test_cpu_machine_auto_starts_a_cpu_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "gpu_available", lambda: False)
    monkeypatch.setattr(backends, "gpu_count", lambda: 0, raising=False)
    monkeypatch.setattr(cluster_module, "gpu_count", lambda: 0, raising=False)
    built: list[dict[str, Any]] = []

    class Recording(distributed.LocalCluster):
        def __init__(self, **kwargs: Any) -> None:
            built.append(kwargs)
            super().__init__(**{**kwargs, "processes": False})

    monkeypatch.setattr(distributed, "LocalCluster", Recording)
    client = cluster_module.make_client(cluster="local", workers=1, backend="auto")
    try:
        assert built == [
            {"n_workers": 1, "threads_per_worker": 1, "processes": True, "dashboard_address": None}
        ]
    finally:
        cluster_module.close_client(client)


def test_an_in_process_gpu_run_gets_its_memory_pool_where_it_starts(
    two_gpus: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--rmm-pool-size` works in process too (not only for dask-cuda workers); without it
    the process gets RMM's asynchronous allocator (`ensure_device_memory(None)`)."""
    import click

    from metaclip_gpu.cli.common import start_run
    from metaclip_gpu.engine.backends import gpu_memory

    asked: list[str | None] = []
    monkeypatch.setattr(gpu_memory, "ensure_device_memory", lambda size=None: asked.append(size))
    assert start_run("auto", rmm_pool_size="3GB") == ("gpu", None)
    assert start_run("auto") == ("gpu", None)
    assert asked == ["3GB", None]
    with pytest.raises(click.UsageError, match="--rmm-pool-size needs the GPU backend"):
        start_run("cpu", rmm_pool_size="3GB")
