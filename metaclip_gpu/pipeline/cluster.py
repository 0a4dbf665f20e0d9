"""Dask clusters for the curate pipeline, and what its tasks need on a worker.

`make_client` gives the `distributed.Client` that `run.curate` (and `match.run_match`,
`count.run_count`, `balance.run_balance`) take as ``client=``; with no client everything runs
in the calling process. Each stage submits one task per shard; a task writes its own output
(temporary name, then rename) and returns its figures (for the match stage: the manifest
record) to the client, which alone appends to ``manifest.jsonl``. Output folders and the
index cache must therefore be on a file system that every worker and the client see.

Single machine::

    metaclip-gpu curate ... --backend cpu --cluster local --workers 2  # distributed.LocalCluster
    metaclip-gpu curate ... --cluster local    # on a GPU machine: dask_cuda.LocalCUDACluster

Several machines (a shared file system for the input, output and ``--cache-dir``)::

    dask scheduler --scheduler-file /shared/sched.json                # on one node
    dask worker --scheduler-file /shared/sched.json --nthreads 8      # CPU, on each node
    dask cuda worker --scheduler-file /shared/sched.json \\
        --rmm-async --enable-cudf-spill                               # GPU: one worker per GPU
    metaclip-gpu curate ... --scheduler-address tcp://<scheduler host>:8786

(`dask-jobqueue` can start the workers under SLURM.) The GPU cluster path is written from the
dask-cuda API and has not been run on a GPU here.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from metaclip_gpu import storage
from metaclip_gpu.engine.backends import gpu_count, resolve_backend
from metaclip_gpu.engine.index import MetadataIndex
from metaclip_gpu.storage import Location, RemotePath


class ClusterError(RuntimeError):
    """A cluster that cannot start here (no NVML, more workers than GPUs) or cannot finish the
    run (no worker for too long, workers that die), with a one-line reason (no traceback)."""


def make_client(
    *,
    cluster: str | None = None,
    scheduler_address: str | None = None,
    workers: int | None = None,
    backend: str = "cpu",
    threads_per_worker: int = 1,
    rmm_pool_size: str | None = None,
    device_memory_limit: str | None = None,
) -> Any:
    """A `distributed.Client`, or None to run in process.

    `scheduler_address` (``tcp://host:8786``) joins a running cluster; `cluster="local"`
    starts one on this machine for `backend` (resolved here when "auto": the caller should
    resolve it first and hand the same name to its tasks). On CPU a `distributed.LocalCluster`
    of `workers` processes (default: dask's choice from the cores) with `threads_per_worker`
    threads each (the matcher's threads per task). On GPU a `dask_cuda.LocalCUDACluster`:
    one single-threaded worker per visible GPU (``CUDA_VISIBLE_DEVICES`` is respected;
    `workers` takes the first that many and may not exceed them), each with an RMM pool of
    `rmm_pool_size` (default: RMM's asynchronous, stream-ordered allocator, which pools
    without a fixed size), shared by cuDF and CuPy, and cuDF spilling on.
    `device_memory_limit` is dask-cuda's device-to-host spilling of the results a worker
    stores (dask's data), not cuDF's own spilling. The client owns a cluster it started:
    ``close_client`` then also closes the cluster.
    """
    from distributed import Client, LocalCluster

    if scheduler_address is not None:
        if cluster is not None:
            raise ValueError("give cluster or scheduler_address, not both")
        return Client(scheduler_address)
    if cluster is None:
        return None
    if cluster != "local":
        raise ValueError(f"unknown cluster {cluster!r}: expected 'local'")
    backend = resolve_backend(backend)
    if backend == "gpu":
        local: Any = _local_cuda_cluster(workers, rmm_pool_size, device_memory_limit)
    else:
        if rmm_pool_size is not None or device_memory_limit is not None:
            raise ValueError("rmm_pool_size and device_memory_limit are for a GPU cluster")
        local = LocalCluster(
            n_workers=workers,
            threads_per_worker=threads_per_worker,
            processes=True,
            dashboard_address=None,
        )
    client = Client(local)
    client._metaclip_cluster = local  # closed with the client (`close_client`)
    return client


def _local_cuda_cluster(
    workers: int | None, rmm_pool_size: str | None, device_memory_limit: str | None
) -> Any:
    """A `LocalCUDACluster`, one worker per visible GPU (`make_client`)."""
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError as err:
        raise ClusterError(
            f"--cluster local on a GPU needs dask-cuda (pip install 'metaclip-gpu[gpu]'): {err}"
        ) from err
    devices = gpu_count()
    if workers is not None and workers > devices:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        where = f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""
        raise ClusterError(
            f"--workers {workers} is more than the {devices} visible GPU(s){where}: a GPU "
            "cluster runs one worker per GPU; give --workers <= the GPU count, or --backend cpu"
        )
    kwargs: dict[str, Any] = {
        "n_workers": workers or devices,
        "threads_per_worker": 1,
        "enable_cudf_spill": True,
        "dashboard_address": None,
    }
    if rmm_pool_size is not None:
        kwargs["rmm_pool_size"] = rmm_pool_size
    else:
        kwargs["rmm_async"] = True
    if device_memory_limit is not None:
        kwargs["device_memory_limit"] = device_memory_limit
    try:
        return LocalCUDACluster(**kwargs)
    except Exception as err:
        if any(c.__name__.startswith("NVMLError") for c in type(err).__mro__):  # pynvml
            raise ClusterError(
                "dask-cuda's LocalCUDACluster needs NVML (libnvidia-ml.so, from the NVIDIA "
                f"driver), which failed here ({type(err).__name__}: {err}); check "
                "`nvidia-smi`, or run without --cluster"
            ) from err
        raise


def run_backend(backend: str, client: Any = None) -> str:
    """The backend a run uses, decided once where the run starts: "cpu" or "gpu".

    In process (`client` None) and for a local cluster (resolve before `make_client`):
    `resolve_backend` on this machine. On a cluster joined by address, "auto" asks the
    workers: "gpu" when every one of them sees a GPU, else "cpu"; "cpu" and "gpu" are taken
    as given (the workers, not this machine, must have the GPU). Tasks receive the result.
    """
    if client is None or backend not in ("auto", "cpu", "gpu"):
        return resolve_backend(backend)
    if backend != "auto":
        return backend
    devices = client.run(gpu_count)  # {worker address: GPUs it sees}
    return "gpu" if devices and all(n > 0 for n in devices.values()) else "cpu"


def close_client(client: Any) -> None:
    """Closes `client` and the local cluster `make_client` started for it, if any."""
    if client is None:
        return
    local = getattr(client, "_metaclip_cluster", None)
    client.close()
    if local is not None:
        local.close()


# ---------------------------------------------------------------------- worker side
@functools.lru_cache(maxsize=4)
def _cached_index(path: Location, cache_dir: str | None, version: str) -> MetadataIndex:
    return MetadataIndex.load(path, cache=Path(cache_dir) if cache_dir is not None else True)


def worker_index(
    path: str | os.PathLike[str] | RemotePath, cache_dir: str | os.PathLike[str] | None
) -> MetadataIndex:
    """The index of metadata file `path` (local or a URL, `storage`), loaded once per worker
    process from the on-disk cache `cache_dir` (the client builds it first); reloaded when
    the file changes (its `storage.fingerprint`)."""
    where = storage.location(path)
    version = json.dumps(storage.fingerprint(where), sort_keys=True)
    return _cached_index(where, None if cache_dir is None else str(cache_dir), version)


def worker_threads() -> int | None:
    """The ``nthreads`` of the dask worker running the calling task (None outside one)."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    state = getattr(worker, "state", None)
    return getattr(state, "nthreads", None) or getattr(worker, "nthreads", None)


# ---------------------------------------------------------------------- waiting for tasks
NO_WORKER_TIMEOUT = "metaclip-gpu.no-worker-timeout"  # dask config key (seconds or "1m")
DEFAULT_NO_WORKER_TIMEOUT = 60.0
POLL_SECONDS = 0.5


def no_worker_timeout() -> float:
    """Seconds a stage waits while the scheduler has no worker (dask config
    ``metaclip-gpu.no-worker-timeout``, e.g. ``DASK_METACLIP_GPU__NO_WORKER_TIMEOUT=2m``;
    the CLI's ``--no-worker-timeout``), default 60."""
    import dask
    from dask.utils import parse_timedelta

    value = dask.config.get(NO_WORKER_TIMEOUT, DEFAULT_NO_WORKER_TIMEOUT)
    return float(parse_timedelta(value, default="seconds"))


def results_as_completed(client: Any, futures: list[Any], *, ordered: bool = False) -> Iterator:
    """Each future's result, as they complete (in `futures` order with `ordered`).

    Unlike waiting on ``as_completed``, a stage never hangs: when the scheduler has had no
    worker for `no_worker_timeout` seconds (workers that keep dying, until the nanny stops
    restarting them), or a task killed its workers (dask's ``KilledWorker``), it raises
    `ClusterError` naming the scheduler; the caller cancels what is left and the finished
    shards are kept for the rerun.
    """
    from distributed import KilledWorker, wait

    timeout = no_worker_timeout()
    pending = list(futures)
    position = {future.key: i for i, future in enumerate(futures)}
    ready: dict[int, Any] = {}
    next_out = 0
    no_workers_since: float | None = None
    while pending:
        try:
            done, not_done = wait(pending, timeout=POLL_SECONDS, return_when="FIRST_COMPLETED")
        except TimeoutError:
            done, not_done = set(), set(pending)
        for future in done:
            try:
                result = future.result()
            except KilledWorker as err:
                raise ClusterError(
                    f"dask workers of scheduler {client.scheduler.address} kept dying while "
                    f"running a task ({err}); a worker dies when it runs out of memory or is "
                    "killed: see the worker logs, then rerun the same command to resume"
                ) from err
            if not ordered:
                yield result
            else:
                ready[position[future.key]] = result
        while ordered and next_out in ready:
            yield ready.pop(next_out)
            next_out += 1
        pending = [f for f in pending if f in not_done]
        if not pending:
            break
        if client.nthreads():
            no_workers_since = None
            continue
        now = time.monotonic()
        no_workers_since = no_workers_since if no_workers_since is not None else now
        if now - no_workers_since >= timeout:
            raise ClusterError(
                f"the dask scheduler {client.scheduler.address} has had no worker for "
                f"{timeout:g} s with {len(pending):,} tasks waiting: its workers died (out of "
                "memory? killed?) and were not restarted. Start workers or fix what kills "
                "them, then rerun the same command: finished shards are kept "
                "(--no-worker-timeout sets this wait)"
            )
