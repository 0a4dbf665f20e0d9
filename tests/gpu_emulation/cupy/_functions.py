"""Module-level functions of the emulated CuPy: NumPy's, over device arrays only.

Each takes device arrays (`cupy.ndarray`), Python and NumPy scalars, and lists of those; a NumPy
array among the arguments raises TypeError as in CuPy. Results are device arrays (0-d for
reductions). Creation from host data goes through `asarray` / `array` (a copy to the device).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from cupy._ndarray import call, ndarray, unwrap

# Every name here exists in CuPy 14 with NumPy's meaning (tests/test_gpu_emulation.py checks
# the names against the installed CuPy where it imports).
DELEGATED = [
    "add",
    "subtract",
    "multiply",
    "divide",
    "true_divide",
    "floor_divide",
    "mod",
    "remainder",
    "power",
    "negative",
    "absolute",
    "abs",
    "sign",
    "sqrt",
    "exp",
    "expm1",
    "log",
    "log1p",
    "log2",
    "log10",
    "maximum",
    "minimum",
    "fmax",
    "fmin",
    "equal",
    "not_equal",
    "less",
    "less_equal",
    "greater",
    "greater_equal",
    "logical_and",
    "logical_or",
    "logical_not",
    "logical_xor",
    "bitwise_and",
    "bitwise_or",
    "bitwise_xor",
    "invert",
    "left_shift",
    "right_shift",
    "isnan",
    "isinf",
    "isfinite",
    "floor",
    "ceil",
    "rint",
    "trunc",
    "clip",
    "concatenate",
    "stack",
    "hstack",
    "vstack",
    "cumsum",
    "cumprod",
    "sum",
    "prod",
    "mean",
    "min",
    "max",
    "amin",
    "amax",
    "argmin",
    "argmax",
    "any",
    "all",
    "count_nonzero",
    "sort",
    "argsort",
    "lexsort",
    "searchsorted",
    "unique",
    "bincount",
    "nonzero",
    "flatnonzero",
    "argwhere",
    "where",
    "diff",
    "repeat",
    "tile",
    "take",
    "ravel",
    "reshape",
    "copy",
    "isin",
    "dot",
    "around",
    "broadcast_to",
    "squeeze",
    "expand_dims",
    "atleast_1d",
    "arange",
    "linspace",
    "zeros",
    "ones",
    "full",
    "zeros_like",
    "ones_like",
    "full_like",
]
HOST_ONLY = ["result_type", "can_cast", "iinfo", "finfo"]  # metadata, no device data


def _delegate(name: str) -> Any:
    target = getattr(np, name)

    def function(*args: Any, **kwargs: Any) -> Any:
        return call(target, args, kwargs)

    function.__name__ = name
    function.__doc__ = f"numpy.{name} on the emulated device."
    return function


def _host(name: str) -> Any:
    target = getattr(np, name)

    def function(*args: Any, **kwargs: Any) -> Any:
        args = tuple(a.dtype if isinstance(a, ndarray) else a for a in args)
        return target(*args, **kwargs)

    function.__name__ = name
    return function


FUNCTIONS: dict[str, Any] = {name: _delegate(name) for name in DELEGATED}
FUNCTIONS.update({name: _host(name) for name in HOST_ONLY})


def empty(shape: Any, dtype: Any = float, order: str = "C") -> ndarray:
    return ndarray(shape, dtype, order=order)


def empty_like(
    a: Any, dtype: Any = None, order: str = "K", subok: Any = None, shape: Any = None
) -> ndarray:
    base = unwrap(a)
    return ndarray(base.shape if shape is None else shape, base.dtype if dtype is None else dtype)


def asarray(a: Any, dtype: Any = None, order: Any = None, *, blocking: bool = False) -> ndarray:
    """A device array: `a` itself when it already is one (of `dtype`), else a device copy."""
    if isinstance(a, ndarray):
        return a if dtype is None or np.dtype(dtype) == a.dtype else a.astype(dtype)
    return ndarray._from_numpy(np.array(a, dtype=dtype, order=order or "K", copy=True))


def array(
    obj: Any,
    dtype: Any = None,
    copy: bool = True,
    order: str = "K",
    subok: bool = False,
    ndmin: int = 0,
    *,
    blocking: bool = False,
) -> ndarray:
    if isinstance(obj, ndarray):
        source = obj._a
        if not copy and (dtype is None or np.dtype(dtype) == source.dtype):
            return obj
        return ndarray._from_numpy(np.array(source, dtype=dtype, order=order, ndmin=ndmin))
    return ndarray._from_numpy(np.array(obj, dtype=dtype, order=order, ndmin=ndmin, copy=True))


def ascontiguousarray(a: Any, dtype: Any = None) -> ndarray:
    if not isinstance(a, ndarray):
        raise TypeError(
            "Argument 'a' has incorrect type (expected cupy._core.core._ndarray_base, got "
            f"{type(a).__name__})"
        )
    if a.flags.c_contiguous and (dtype is None or np.dtype(dtype) == a.dtype):
        return a
    return ndarray._from_numpy(np.ascontiguousarray(a._a, dtype=dtype))


def asnumpy(
    a: Any, stream: Any = None, order: str = "C", out: Any = None, *, blocking: bool = True
) -> np.ndarray:
    if isinstance(a, ndarray):
        return a.get(stream=stream, order=order, out=out)
    result = np.asarray(a, order=order)
    if out is not None:
        out[...] = result
        return out
    return result


def get_array_module(*args: Any) -> Any:
    import cupy

    return cupy if any(isinstance(arg, ndarray) for arg in args) else np
