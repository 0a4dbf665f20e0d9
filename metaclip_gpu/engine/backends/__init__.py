"""The backend seam: the one place that decides between the CPU and the GPU.

Both backends run the same kernels (kernels/match.cu) and expose the same small interface,
`Backend`; everything above it (metaclip_gpu.engine.match and the pipeline) is one code path that
only talks to `backend.xp` (NumPy or CuPy) and these methods. GPU modules are imported lazily,
so a CPU-only install never imports CuPy or cuDF.
"""

from __future__ import annotations

import os
from typing import Any, Literal, Protocol

BackendName = Literal["auto", "cpu", "gpu"]


class Backend(Protocol):
    name: str
    xp: Any  # numpy or cupy
    local_cap: int  # ids a text keeps in mc_match_fixed's per-thread list (more are spilled)

    def text_batches(self, texts: Any, batch_rows: int | None = None) -> Any:
        """Yields TextBatch views over `texts` of at most `batch_rows` rows each (None: the
        backend's own batch size)."""

    def match_fixed(self, index: Any, batch: Any, spill_capacity: int) -> tuple[Any, Any, Any, int]:
        """Runs mc_match_fixed: slot-major (local_cap, rows) int32 ids, int32 counts (-1: the
        ids past local_cap are in the spill, -2: the spill ran out), the int64 spill keys
        (row << 32 | id) that fit `spill_capacity`, and the number of keys asked for."""

    def gather_fixed(self, fixed_ids: Any, counts: Any, starts: Any) -> Any:
        """Runs mc_gather_fixed_rows: rows with count >= 0 copied to CSR `starts` (n + 1)."""

    def count_raw(self, index: Any, batch: Any, rows: Any) -> Any:
        """Runs mc_count_raw on `rows` of `batch`: int64 hit counts."""

    def fill_raw(self, index: Any, batch: Any, rows: Any, offsets: Any, total: int) -> Any:
        """Runs mc_fill_raw on `rows` of `batch`: int32 ids, duplicates kept."""


def gpu_count() -> int:
    """CUDA devices CuPy sees (``CUDA_VISIBLE_DEVICES`` applied); 0 without CuPy, a driver or
    a device (never raises)."""
    os.environ.setdefault("RAPIDS_NO_INITIALIZE", "1")
    try:
        import cupy

        return max(int(cupy.cuda.runtime.getDeviceCount()), 0)
    except Exception:
        return 0


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device (never raises)."""
    return gpu_count() > 0


def resolve_backend(name: BackendName | str = "auto") -> str:
    """ "cpu" or "gpu" for `name` ("auto": GPU when CuPy sees a device); raises for a GPU
    request without a GPU and for an unknown name.

    Every run resolves its backend once, where it starts (the CLI commands, `run_curate`,
    `run_match`, `run_balance`, `run_worldwide`, `count_corpus`), and hands the resolved name
    to its tasks: a task never decides "auto" for itself on a worker."""
    if name == "auto":
        return "gpu" if gpu_available() else "cpu"
    if name == "cpu":
        return name
    if name == "gpu":
        if not gpu_available():
            raise RuntimeError(
                "backend='gpu' needs CuPy and an NVIDIA GPU (pip install 'metaclip-gpu[gpu]'); "
                "none was found. Use backend='cpu' or 'auto'."
            )
        return name
    raise ValueError(f"unknown backend {name!r}: expected 'auto', 'cpu' or 'gpu'")


def get_backend(name: BackendName | str = "auto", *, threads: int | None = None) -> Backend:
    """The backend called `name`: "cpu", "gpu", or "auto" (GPU when CuPy sees a device).

    CPU: a new `CPUBackend` (cheap: it holds pointers only). GPU: the process's one
    `GPUBackend`, whose compiled kernels and uploaded indexes live as long as the process, so
    a worker uploads each index once whatever the number of chunks and shards it matches."""
    if resolve_backend(name) == "cpu":
        from metaclip_gpu.engine.backends.cpu import CPUBackend

        return CPUBackend(threads=threads)
    from metaclip_gpu.engine.backends.gpu import process_backend

    return process_backend()
