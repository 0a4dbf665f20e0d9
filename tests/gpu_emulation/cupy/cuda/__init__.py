"""cupy.cuda of the emulated device: one device, the null stream, NumPy-backed memory."""

from __future__ import annotations

from typing import Any

from cupy.cuda import compiler, driver, memory, runtime
from cupy.cuda.memory import (
    BaseMemory,
    Memory,
    MemoryPointer,
    MemoryPool,
    UnownedMemory,
    alloc,
    get_allocator,
    set_allocator,
)


class Device:
    def __init__(self, device: Any = None) -> None:
        self.id = runtime.getDevice() if device is None else int(device)
        self._previous: list[int] = []

    def use(self) -> None:
        runtime.setDevice(self.id)

    def __enter__(self) -> Device:
        self._previous.append(runtime.getDevice())
        runtime.setDevice(self.id)
        return self

    def __exit__(self, *exc: Any) -> None:
        runtime.setDevice(self._previous.pop())

    def synchronize(self) -> None:
        return None

    @property
    def compute_capability(self) -> str:
        props = runtime.getDeviceProperties(self.id)
        return f"{props['major']}{props['minor']}"

    @property
    def attributes(self) -> dict[str, int]:
        props = runtime.getDeviceProperties(self.id)
        return {
            "MultiProcessorCount": int(props["multiProcessorCount"]),
            "MaxThreadsPerBlock": int(props["maxThreadsPerBlock"]),
            "MaxGridDimX": int(props["maxGridSize"][0]),
        }

    @property
    def mem_info(self) -> tuple[int, int]:
        return runtime.memGetInfo()

    def __int__(self) -> int:
        return self.id

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)


class Stream:
    """Every stream is the null stream: launches run to completion when they are made."""

    null: Stream

    def __init__(self, null: bool = False, non_blocking: bool = False, ptds: bool = False):
        self.ptr = 0
        self._previous: list[Stream] = []

    def synchronize(self) -> None:
        return None

    def use(self) -> Stream:
        global _current_stream
        _current_stream = self
        return self

    def __enter__(self) -> Stream:
        global _current_stream
        self._previous.append(_current_stream)
        _current_stream = self
        return self

    def __exit__(self, *exc: Any) -> None:
        global _current_stream
        _current_stream = self._previous.pop()


Stream.null = Stream(null=True)
_current_stream = Stream.null


def get_current_stream(device_id: int = -1) -> Stream:
    return _current_stream


def is_available() -> bool:
    return runtime.getDeviceCount() > 0


__all__ = [
    "BaseMemory",
    "Device",
    "Memory",
    "MemoryPointer",
    "MemoryPool",
    "Stream",
    "UnownedMemory",
    "alloc",
    "compiler",
    "driver",
    "get_allocator",
    "get_current_stream",
    "is_available",
    "memory",
    "runtime",
    "set_allocator",
]
