"""Device memory of a GPU process: one RMM resource, pooled, shared by cuDF and CuPy.

``import cudf`` points CuPy's allocator at RMM; RMM's default resource is plain
cudaMalloc/cudaFree, so without a pool every temporary CuPy array of the match (ids,
counts, prefix sums, sort keys) is a synchronous allocation. `ensure_device_memory` gives
the process a pooled resource once:

- `pool_size` given (``--rmm-pool-size``): an RMM pool of that initial size (it grows);
- else, when the resource is still RMM's untouched default: RMM's asynchronous allocator
  (``cudaMallocAsync``, stream-ordered, pooled by the driver, no size to choose);
- else (dask-cuda's worker set a pool or the async allocator, or the user did): left as is.

Then CuPy allocates through RMM (`rmm.allocators.cupy.rmm_cupy_allocator`), so cuDF's and
CuPy's arrays come from the same pool. Without RMM installed CuPy keeps its own pool.
Imported lazily (GPU only): in process by the CLI and the GPU backend; on dask-cuda workers
the cluster has already set the pool.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

_lock = threading.Lock()
_configured: dict[int, str] = {}  # device -> what was set there


def parse_size(size: str | int) -> int:
    """Bytes of ``"40GB"``, ``"512MiB"``, ``"1e9"`` or an int (dask's `parse_bytes`)."""
    if isinstance(size, int):
        return size
    from dask.utils import parse_bytes

    return int(parse_bytes(size))


def _is_default_resource(resource: Any, mr: Any) -> bool:
    return type(resource) is mr.CudaMemoryResource


def ensure_device_memory(pool_size: str | int | None = None) -> str:
    """Sets the current device's RMM resource (module docstring) once per process; returns
    what it holds: "pool", "async", "kept" (a resource set before), or "cupy" (no RMM, or
    none that sees the device: CuPy keeps its own pool)."""
    try:
        import cupy
        import rmm
        from rmm.allocators.cupy import rmm_cupy_allocator
    except ImportError:
        return "cupy"
    device = int(cupy.cuda.runtime.getDevice())
    with _lock:
        if device in _configured and pool_size is None:
            return _configured[device]
        try:
            current = rmm.mr.get_current_device_resource()
        except RuntimeError:
            if pool_size is not None:
                raise
            # RMM's CUDA runtime sees no device although CuPy does: a CuPy without a real
            # device behind it (the test suite's emulated one). Nothing to pool.
            _configured[device] = "cupy"
            return "cupy"
        if pool_size is not None:
            pool = rmm.mr.PoolMemoryResource(
                rmm.mr.CudaMemoryResource(), initial_pool_size=parse_size(pool_size)
            )
            rmm.mr.set_current_device_resource(pool)
            state = "pool"
        elif _is_default_resource(current, rmm.mr):
            try:
                rmm.mr.set_current_device_resource(rmm.mr.CudaAsyncMemoryResource())
                state = "async"
            except Exception as err:  # e.g. a driver without cudaMallocAsync
                warnings.warn(
                    f"RMM's asynchronous allocator is not available ({err}); device memory "
                    "is not pooled: give --rmm-pool-size",
                    RuntimeWarning,
                    stacklevel=2,
                )
                state = "kept"
        else:
            state = "kept"
        cupy.cuda.set_allocator(rmm_cupy_allocator)
        _configured[device] = state
        return state
