"""cupy.cuda.runtime of the emulated device: one device, id 0."""

from __future__ import annotations

from typing import Any

_current = 0
_DEVICE_COUNT = 1
_PROPERTIES: dict[str, Any] = {
    "name": b"Emulated device (host build of the kernels)",
    "totalGlobalMem": 16 * 2**30,
    "multiProcessorCount": 4,
    "maxThreadsPerBlock": 1024,
    "maxGridSize": (2**31 - 1, 65535, 65535),
    "major": 9,
    "minor": 0,
}
is_hip = False


class CUDARuntimeError(RuntimeError):
    def __init__(self, status: int, message: str = "") -> None:
        self.status = status
        super().__init__(message or f"CUDA runtime error {status}")


def getDeviceCount() -> int:
    return _DEVICE_COUNT


def getDevice() -> int:
    return _current


def setDevice(device: int) -> None:
    global _current
    if not 0 <= int(device) < _DEVICE_COUNT:
        raise CUDARuntimeError(101, "cudaErrorInvalidDevice: invalid device ordinal")
    _current = int(device)


def deviceSynchronize() -> None:
    return None


def getDeviceProperties(device: int) -> dict[str, Any]:
    return dict(_PROPERTIES)


def memGetInfo() -> tuple[int, int]:
    total = int(_PROPERTIES["totalGlobalMem"])
    return total, total


def runtimeGetVersion() -> int:
    return 12080


def driverGetVersion() -> int:
    return 12080
