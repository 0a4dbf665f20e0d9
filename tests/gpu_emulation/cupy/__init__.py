"""The emulated `cupy` (test-only; see tests/gpu_emulation/__init__.py).

Loaded under the name ``cupy`` for emulated-GPU tests. Every public name here exists in the real
CuPy 14 with the same meaning (checked by tests/test_gpu_emulation.py where CuPy imports).
"""

from __future__ import annotations

from typing import Any

import numpy as _np
from cupy import cuda
from cupy._functions import (
    FUNCTIONS as _FUNCTIONS,
)
from cupy._functions import (
    array,
    asarray,
    ascontiguousarray,
    asnumpy,
    empty,
    empty_like,
    get_array_module,
)
from cupy._ndarray import ndarray
from cupy._raw import RawKernel, RawModule

__version__ = "14.2.0+emulated"

bool_ = _np.bool_
int8, int16, int32, int64 = _np.int8, _np.int16, _np.int32, _np.int64
uint8, uint16, uint32, uint64 = _np.uint8, _np.uint16, _np.uint32, _np.uint64
float16, float32, float64 = _np.float16, _np.float32, _np.float64
complex64, complex128 = _np.complex64, _np.complex128
intp, uintp = _np.intp, _np.uintp
dtype = _np.dtype
newaxis = None
inf, nan, pi, e = _np.inf, _np.nan, _np.pi, _np.e

globals().update(_FUNCTIONS)

_default_pool = cuda.MemoryPool()
_default_pinned_pool = cuda.MemoryPool()


def get_default_memory_pool() -> Any:
    return _default_pool


def get_default_pinned_memory_pool() -> Any:
    return _default_pinned_pool


def is_available() -> bool:
    return cuda.is_available()


__all__ = [
    "RawKernel",
    "RawModule",
    "array",
    "asarray",
    "ascontiguousarray",
    "asnumpy",
    "cuda",
    "empty",
    "empty_like",
    "get_array_module",
    "get_default_memory_pool",
    "get_default_pinned_memory_pool",
    "is_available",
    "ndarray",
    *_FUNCTIONS,
]
