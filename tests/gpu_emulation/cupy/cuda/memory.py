"""Device memory of the emulated device: host addresses stand for device addresses.

`UnownedMemory(ptr, size, owner)` and `MemoryPointer(mem, offset)` as in CuPy; an
`ndarray(..., memptr=...)` over them reads the bytes at that address (see `host_view`), so code
that wraps a raw device pointer (e.g. a pylibcudf column's buffer) runs unchanged, provided the
pointer is a host address the test owns.
"""

from __future__ import annotations

import ctypes as _ctypes
from typing import Any

import numpy as _np


class BaseMemory:
    def __init__(self, ptr: int, size: int, device_id: int = 0) -> None:
        self.ptr = int(ptr)
        self.size = int(size)
        self.device_id = int(device_id)


class Memory(BaseMemory):
    """Memory the emulated device allocated (a NumPy buffer)."""

    def __init__(self, size: int) -> None:
        self._buffer = _np.empty(max(int(size), 1), dtype=_np.uint8)
        super().__init__(self._buffer.ctypes.data if size else 0, size)


class UnownedMemory(BaseMemory):
    """Memory someone else owns: `owner` is kept alive while this object lives."""

    def __init__(self, ptr: int, size: int, owner: Any, device_id: int | None = None) -> None:
        super().__init__(ptr, size, 0 if device_id is None else device_id)
        self.owner = owner


class MemoryPointer:
    def __init__(self, mem: BaseMemory, offset: int) -> None:
        self.mem = mem
        self.ptr = mem.ptr + int(offset)
        self.device_id = mem.device_id

    def __int__(self) -> int:
        return self.ptr

    def __add__(self, offset: int) -> MemoryPointer:
        return MemoryPointer(self.mem, self.ptr - self.mem.ptr + int(offset))


def _host_view(memptr: MemoryPointer, nbytes: int) -> _np.ndarray:
    """The `nbytes` bytes at `memptr` as a uint8 NumPy array (no copy)."""
    if nbytes == 0:
        return _np.empty(0, dtype=_np.uint8)
    if memptr.ptr == 0:
        raise ValueError("a null device pointer cannot hold data")
    end = memptr.ptr + nbytes
    if memptr.mem.size and end > memptr.mem.ptr + memptr.mem.size:
        raise ValueError(
            f"{nbytes} bytes at offset {memptr.ptr - memptr.mem.ptr} run past the "
            f"{memptr.mem.size}-byte allocation"
        )
    return _np.ctypeslib.as_array((_ctypes.c_uint8 * nbytes).from_address(memptr.ptr))


def alloc(size: int) -> MemoryPointer:
    return MemoryPointer(Memory(size), 0)


class MemoryPool:
    """Counts nothing: the emulated device has no pool; kept for code that configures one."""

    def __init__(self, allocator: Any = None) -> None:
        self._limit = 0

    def malloc(self, size: int) -> MemoryPointer:
        return alloc(size)

    def used_bytes(self) -> int:
        return 0

    def total_bytes(self) -> int:
        return 0

    def free_bytes(self) -> int:
        return 0

    def free_all_blocks(self, stream: Any = None) -> None:
        return None

    def set_limit(self, size: int | None = None, fraction: float | None = None) -> None:
        self._limit = int(size or 0)

    def get_limit(self) -> int:
        return self._limit


_allocator: Any = None


def set_allocator(allocator: Any = None) -> None:
    global _allocator
    _allocator = allocator


def get_allocator() -> Any:
    return _allocator
