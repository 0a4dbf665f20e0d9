"""cupy.cuda.driver of the emulated device: its error type only."""

from __future__ import annotations


class CUDADriverError(RuntimeError):
    def __init__(self, status: int, message: str = "") -> None:
        self.status = status
        super().__init__(message or f"CUDA driver error {status}")


_CUDA_ERROR_NOT_FOUND = 500  # CUresult values (not names CuPy exports)
_CUDA_ERROR_INVALID_VALUE = 1
