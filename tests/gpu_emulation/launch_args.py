"""Kernel arguments of the emulated device: converted as CuPy 14 converts them, then checked.

CuPy 14 (`cupy/cuda/function.pyx` `_pointer`, `cupy/_core/_scalar.pyx` `CScalar`) hands
cuLaunchKernel one pointer per argument, to:
- a device array or MemoryPointer: its 8-byte device address (None: 8 zero bytes);
- a NumPy array of size 1: its value, `itemsize` bytes (a larger NumPy array: TypeError);
- a NumPy scalar: its value in its own dtype;
- a Python bool / float / complex / int: bool (1 byte) / float64 / complex128 / int64 (uint64
  from 2**63 up; out of range: OverflowError); anything else: TypeError.
The driver then reads as many bytes as the kernel's parameter has. CuPy checks nothing against
the kernel, so a Python int for an `int` parameter "works" on a little-endian device only by
reading the low 4 of 8 bytes, and an int32 for a `long long` parameter reads 4 bytes of
garbage. The emulated device refuses both: every launch must match the kernel's parameters in
count and order, pointer or value, pointee kind and width (a C-contiguous device array), and
value kind and width (a signedness difference only where the value means the same).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpu_emulation.host_build import Param

_NOT_SCALAR = (
    "You are trying to pass a numpy.ndarray of shape {} as a kernel parameter. Only "
    "numpy.ndarrays of size one can be passed by value. If you meant to pass a pointer to "
    "__global__ memory, you need to pass a cupy.ndarray instead."
)


class LaunchArgumentError(TypeError):
    """A launch whose arguments do not match the kernel's parameter list."""


@dataclass(frozen=True)
class Argument:
    """What CuPy puts behind one kernel-parameter pointer."""

    address: int | None  # a device address (pointer arguments)
    array: Any  # the device array passed, if any (for its dtype and layout)
    value: np.ndarray | None  # a by-value argument: one element of its CuPy dtype

    def describe(self) -> str:
        if self.value is not None:
            return f"{self.value.dtype} value"
        if self.array is not None:
            layout = "" if self.array.flags.c_contiguous else ", not C-contiguous"
            return f"device array of {self.array.dtype}{layout}"
        return "device pointer" if self.address else "None (null pointer)"


def convert(arg: Any) -> Argument:
    """CuPy 14's `_pointer(arg)`: what the kernel will be handed for `arg`."""
    import cupy

    if arg is None:
        return Argument(0, None, None)
    if isinstance(arg, cupy.ndarray):
        return Argument(int(arg._a.ctypes.data), arg, None)
    if isinstance(arg, cupy.cuda.MemoryPointer):
        return Argument(int(arg.ptr), None, None)
    if isinstance(arg, np.ndarray):
        if arg.size != 1:
            raise TypeError(_NOT_SCALAR.format(arg.shape))
        return Argument(None, None, np.array(arg.reshape(()), dtype=arg.dtype))
    if type(arg) is bool:
        dtype = np.dtype(np.bool_)
    elif type(arg) is float:
        dtype = np.dtype(np.float64)
    elif type(arg) is complex:
        dtype = np.dtype(np.complex128)
    elif type(arg) is int:
        dtype = np.dtype(np.uint64 if arg >= 2**63 else np.int64)
        if not -(2**63) <= arg < 2**64:
            raise OverflowError(f"Python integer {arg} out of bounds for {dtype}")
    elif isinstance(arg, np.generic):
        dtype = arg.dtype
    else:
        raise TypeError(f"Unsupported type {type(arg)}")
    return Argument(None, None, np.array(arg, dtype=dtype))


def _kind(dtype: np.dtype) -> str:
    return {"b": "b", "i": "i", "u": "u", "f": "f"}.get(dtype.kind, dtype.kind)


def _value_fits(value: np.ndarray, param: Param) -> bool:
    """Whether an integer value of the other signedness means the same in the parameter."""
    if value.dtype.kind not in "iu" or param.kind not in "iu":
        return False
    target = np.dtype(f"{param.kind}{param.size}")
    info = np.iinfo(target)
    return bool(info.min <= int(value) <= info.max)


def check(kernel: str, params: tuple[Param, ...], args: list[Argument]) -> None:
    """Raises LaunchArgumentError naming the first argument that does not fit its parameter."""
    if len(args) != len(params):
        raise LaunchArgumentError(
            f"{kernel}: {len(args)} arguments for {len(params)} parameters "
            f"({', '.join(p.describe() for p in params)})"
        )
    for position, (param, arg) in enumerate(zip(params, args, strict=True)):
        where = f"{kernel}: argument {position} ({arg.describe()}) for parameter {param.describe()}"
        if param.is_pointer:
            if arg.value is not None:
                raise LaunchArgumentError(f"{where}: a value where the kernel wants a pointer")
            if arg.array is None:
                continue  # a raw device pointer or None: nothing to check the pointee against
            dtype = arg.array.dtype
            if _kind(dtype) != param.kind or dtype.itemsize != param.size:
                raise LaunchArgumentError(f"{where}: the array's element type differs")
            if not arg.array.flags.c_contiguous:
                raise LaunchArgumentError(f"{where}: the kernel reads a C-contiguous array")
            continue
        if arg.value is None:
            raise LaunchArgumentError(f"{where}: a pointer where the kernel wants a value")
        value = arg.value
        if value.dtype.itemsize != param.size:
            raise LaunchArgumentError(
                f"{where}: {value.dtype.itemsize} bytes passed, the kernel reads {param.size}"
            )
        if _kind(value.dtype) != param.kind and not _value_fits(value, param):
            raise LaunchArgumentError(f"{where}: the value's kind differs")


def argv(args: list[Argument]) -> tuple[ctypes.Array, list[Any]]:
    """cuLaunchKernel's kernelParams: one pointer per argument to its bytes (and the buffers
    that must stay alive while the kernel runs)."""
    buffers: list[Any] = []
    for arg in args:
        if arg.value is not None:
            raw = arg.value.tobytes()
            buffers.append(ctypes.create_string_buffer(raw, max(len(raw), 16)))
        else:
            buffers.append(ctypes.c_void_p(arg.address or None))
    pointers = (ctypes.c_void_p * max(len(buffers), 1))(
        *[ctypes.addressof(buffer) for buffer in buffers]
    )
    return pointers, buffers
