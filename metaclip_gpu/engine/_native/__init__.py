"""The compiled CPU build of the kernels (built by `pip install`, see build_ext.py)."""

from __future__ import annotations

try:
    from metaclip_gpu._cpu_kernels import ffi, lib
except ImportError as err:  # pragma: no cover - only on a broken install
    raise ImportError(
        "metaclip_gpu's CPU kernels are not built: reinstall with `pip install -e .` "
        "(a C++ compiler with OpenMP is needed at install time)"
    ) from err

__all__ = ["ffi", "lib"]
