"""`cupy.RawModule` / `cupy.RawKernel` of the emulated device.

The source text and options given to RawModule are compiled for the host
(`gpu_emulation.host_build`); each launch converts its arguments as CuPy 14 does, checks them
against the kernel's parameter list (`gpu_emulation.launch_args`) and runs every block and thread
of the grid. Each launch is appended to `gpu_emulation.LAUNCHES` (kernel name, grid, block).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cupy.cuda import compiler, driver

from gpu_emulation import host_build, last_launch, launch_args, launch_log, staging

_MAX_BLOCK_THREADS = 1024
_MAX_GRID = (2**31 - 1, 65535, 65535)
_MAX_BLOCK = (1024, 1024, 64)


def _dims(value: Any, what: str) -> tuple[int, int, int]:
    if not isinstance(value, tuple):  # Cython `tuple grid` in cupy.cuda.function.Function
        raise TypeError(
            f"Argument '{what}' has incorrect type (expected tuple, got {type(value).__name__})"
        )
    dims = (*value, 1, 1)[:3]
    return tuple(max(1, int(d)) for d in dims)  # type: ignore[return-value]


class RawKernel:
    """One kernel of a host-built module (what RawModule.get_function returns)."""

    def __init__(
        self,
        code: str | None,
        name: str,
        options: tuple = (),
        backend: str = "nvrtc",
        *,
        translate_cucomplex: bool = False,
        enable_cooperative_groups: bool = False,
        jitify: bool = False,
    ) -> None:
        self.code = code
        self.name = name
        self.options = options
        self.backend = backend
        self._library: host_build.HostLibrary | None = None

    @property
    def kernel(self) -> RawKernel:
        self._load()
        return self

    def _load(self) -> host_build.HostLibrary:
        if self._library is None:
            self._library = _compile(self.code or "", self.options)
            if self.name not in self._library.kernels:
                raise driver.CUDADriverError(
                    driver._CUDA_ERROR_NOT_FOUND, "CUDA_ERROR_NOT_FOUND: named symbol not found"
                )
        return self._library

    def __call__(
        self,
        grid: Any,
        block: Any,
        args: Any,
        *,
        shared_mem: int = 0,
        stream: Any = None,
        enable_cooperative_groups: bool = False,
    ) -> None:
        library = self._load()
        grid3, block3 = _dims(grid, "grid"), _dims(block, "block")
        threads = block3[0] * block3[1] * block3[2]
        if threads > _MAX_BLOCK_THREADS or any(
            b > m for b, m in zip(block3, _MAX_BLOCK, strict=True)
        ):
            raise driver.CUDADriverError(
                driver._CUDA_ERROR_INVALID_VALUE, f"CUDA_ERROR_INVALID_VALUE: block {block3}"
            )
        if any(g > m for g, m in zip(grid3, _MAX_GRID, strict=True)):
            raise driver.CUDADriverError(
                driver._CUDA_ERROR_INVALID_VALUE, f"CUDA_ERROR_INVALID_VALUE: grid {grid3}"
            )
        params = library.params[self.name]
        converted = [launch_args.convert(arg) for arg in args]
        launch_args.check(self.name, params, converted)
        launched, staged = staging.stage(params, converted)
        pointers, keep = launch_args.argv(launched)
        launch_log.append((self.name, grid3, block3))
        last_launch[self.name] = (grid3, block3, tuple(args))
        library.launch(self.name, grid3, block3, pointers)
        staging.finish(self.name, staged)
        del keep, args


class RawModule:
    def __init__(
        self,
        *,
        code: str | None = None,
        path: str | None = None,
        options: tuple = (),
        backend: str = "nvrtc",
        translate_cucomplex: bool = False,
        enable_cooperative_groups: bool = False,
        name_expressions: Any = None,
        jitify: bool = False,
    ) -> None:
        if not isinstance(options, tuple):
            raise TypeError(
                f"Argument 'options' has incorrect type (expected tuple, got "
                f"{type(options).__name__})"
            )
        if (code is None) == (path is None):
            raise TypeError("Exactly one of code and path keyword arguments must be given.")
        self.code = code if code is not None else Path(path).read_text()  # type: ignore[arg-type]
        self.options = options
        self.backend = backend
        self.name_expressions = name_expressions

    def get_function(self, name: str) -> RawKernel:
        kernel = RawKernel(self.code, name, self.options, self.backend)
        kernel._load()
        return kernel

    def compile(self, log_stream: Any = None) -> None:
        _compile(self.code, self.options)


def _compile(code: str, options: tuple) -> host_build.HostLibrary:
    try:
        return host_build.host_library(code, tuple(options))
    except host_build.HostCompileError as err:
        raise compiler.CompileException(str(err), code, "emulated", tuple(options)) from err
