"""Array-module dispatch: the one place that tells NumPy (CPU) from CuPy (GPU) arrays.

Stages above the backends take their array module from their inputs, so one code path serves
both; CuPy is imported only when a CuPy array is actually passed in.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def array_module(*arrays: Any) -> Any:
    """CuPy when any of `arrays` is a CuPy array, else NumPy (CuPy is imported only then)."""
    for array in arrays:
        if type(array).__module__.startswith("cupy"):
            import cupy

            return cupy
    return np


def to_host(array: Any) -> np.ndarray:
    """A NumPy copy of a CuPy array; NumPy arrays (and array-likes) as NumPy arrays."""
    return array.get() if type(array).__module__.startswith("cupy") else np.asarray(array)
