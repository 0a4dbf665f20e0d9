"""An emulated CUDA device for the test suite (never part of the package).

`install()` puts a fake ``cupy`` package (tests/gpu_emulation/cupy) into ``sys.modules`` and
drops the cached modules that imported the real one (`metaclip_gpu.engine.backends.gpu`,
`metaclip_gpu.metadata_builder.gpu_ngrams`); `uninstall()` undoes both. Tests use it through the
``emulated_cupy`` fixture or the ``emulated_gpu`` marker (tests/conftest.py).

What it is: NumPy-backed device arrays that refuse implicit host reads and mixing with NumPy
arrays as CuPy 14 does, and a `cupy.RawModule` that compiles the given kernel source with the
host compiler (the same text NVRTC gets, through kernels/portable.cuh, with the device's compile
settings) and runs every block and thread of each launch's grid, after checking the launch's
arguments against the kernel's parameter list.

What it is not: no cuDF / pylibcudf / RMM / dask-cuda; one device; no streams or asynchrony
(every launch completes before the call returns, so missing synchronisation is invisible); no
concurrency between threads of a grid (they run one after another, so races, atomics' ordering,
warp behaviour, shared memory and __syncthreads are not exercised); no device memory limits,
alignment (NumPy's, not 256 bytes), registers, occupancy or timing; host C++ semantics where
they differ from NVRTC's (the host compiler may accept code NVRTC rejects, which
tests/test_kernels_compile.py covers).

Keep fixtures that touch CuPy function-scoped (the emulation is installed per test), and do not
import cudf under it: cudf binds `cupy` at import time and would keep the fake. pylibcudf does
not import CuPy, so real pylibcudf columns over emulated memory work
(tests/test_gpu_emulated_pylibcudf.py).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
FAKE_ROOT = HERE / "cupy"
GPU_MODULES = ("metaclip_gpu.engine.backends.gpu", "metaclip_gpu.metadata_builder.gpu_ngrams")

# Every launch of the emulated device: (kernel name, grid, block). The fixture clears it.
launch_log: list[tuple[str, tuple[int, int, int], tuple[int, int, int]]] = []
# The latest launch of each kernel: name -> (grid, block, the args tuple as given). Self-tests
# replay and alter a launch the backend really made. The fixture clears it.
last_launch: dict[str, tuple[tuple[int, int, int], tuple[int, int, int], tuple[Any, ...]]] = {}

_saved: dict[str, ModuleType] | None = None


def _is_cupy(name: str) -> bool:
    return name == "cupy" or name.startswith("cupy.") or name.startswith("cupy_backends")


def install() -> ModuleType:
    """Replaces `cupy` for this process (until uninstall()); returns the emulated module."""
    global _saved
    if _saved is not None:
        return sys.modules["cupy"]
    _saved = {
        name: module
        for name, module in sys.modules.items()
        if _is_cupy(name) or name in GPU_MODULES
    }
    for name in _saved:
        del sys.modules[name]
    for name in GPU_MODULES:  # so `from package import gpu` imports it afresh, too
        parent, _, child = name.rpartition(".")
        if parent in sys.modules and hasattr(sys.modules[parent], child):
            delattr(sys.modules[parent], child)
    spec = importlib.util.spec_from_file_location(
        "cupy", FAKE_ROOT / "__init__.py", submodule_search_locations=[str(FAKE_ROOT)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["cupy"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        uninstall()
        raise
    return module


def uninstall() -> None:
    """Puts back the modules install() replaced (the real `cupy`, if it had been imported)."""
    global _saved
    if _saved is None:
        return
    for name in [n for n in sys.modules if _is_cupy(n) or n in GPU_MODULES]:
        del sys.modules[name]
    sys.modules.update(_saved)
    for name in GPU_MODULES:  # the parent package's attribute, set by the emulated import
        parent, _, child = name.rpartition(".")
        if parent in sys.modules:
            if name in _saved:
                setattr(sys.modules[parent], child, _saved[name])
            elif hasattr(sys.modules[parent], child):
                delattr(sys.modules[parent], child)
    _saved = None


def emulated_module() -> Any:
    """The installed emulated cupy (install() first)."""
    if _saved is None:
        raise RuntimeError("the emulated device is not installed")
    return sys.modules["cupy"]


from gpu_emulation.launch_args import LaunchArgumentError  # noqa: E402 - after launch_log
from gpu_emulation.staging import KernelMemoryError  # noqa: E402

__all__ = [
    "KernelMemoryError",
    "LaunchArgumentError",
    "emulated_module",
    "install",
    "last_launch",
    "launch_log",
    "uninstall",
]
