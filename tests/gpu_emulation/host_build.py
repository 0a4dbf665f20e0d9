"""The host build of a kernel source for the emulated device (test-only).

`cupy.RawModule(code=..., options=...)` of the emulated CuPy hands its source text and NVRTC
options here. `host_library(code, options)` compiles that same text with the host C++ compiler
(g++ or $CXX) through the host branch of kernels/portable.cuh, into a shared library with
`emu_harness.h`, once per (source, options, sanitizer) in a cache folder, and loads it.

Device compile settings: the NVRTC options' ``-D``/``-U``/``-I``/``-std=`` are passed on as they
are (e.g. ``-DMC_LOCAL_CAP=32`` from `gpu_build.nvrtc_options()`), and every
``MC_*`` macro whose value the source sets to a different integer on the device (e.g.
``MC_TOKEN_RING``, ``MC_READ_AHEAD``) is defined to its device value, found by preprocessing the
source as NVRTC would (``__CUDACC_RTC__`` defined). ``MC_ON_DEVICE`` stays 0: that is the
portability switch itself.

The kernel list is what the device build exports: every ``extern "C" __global__`` function of
the preprocessed device branch. Each kernel's parameter list comes from the C++ types of the
host build (emu_harness.h), so the launch checks compare against the compiler's view.

``METACLIP_EMU_SANITIZE=address`` builds with AddressSanitizer (the process must then run with
the ASan runtime preloaded; see tests/gpu_emulation/asan.py).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
HARNESS = HERE / "emu_harness.h"
SANITIZE_ENV = "METACLIP_EMU_SANITIZE"
CACHE_ENV = "METACLIP_EMU_CACHE"
_KEPT_OPTION = re.compile(r"^(-D|-U|-I|-std=|--std=|--define-macro=|--include-path=)")
_KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+([A-Za-z_]\w*)\s*\(')
_DEFINE = re.compile(r"^#define\s+(MC_\w+)\s+(\S.*?)\s*$", re.MULTILINE)
_INT_LITERAL = re.compile(r"^\(?-?\d+[uUlL]*\)?$")
_KEEP_HOST = frozenset({"MC_ON_DEVICE"})


class HostCompileError(RuntimeError):
    """The host compiler rejected the kernel source (its messages are in the text)."""


@dataclass(frozen=True)
class Param:
    """One kernel parameter: a pointer to `size`-byte elements, or a `size`-byte value."""

    is_pointer: bool
    kind: str  # "i" signed, "u" unsigned, "f" float, "b" bool
    size: int
    is_const: bool

    def describe(self) -> str:
        names = {"i": "int", "u": "uint", "f": "float", "b": "bool"}
        base = "bool" if self.kind == "b" else f"{names[self.kind]}{8 * self.size}"
        if self.is_pointer:
            return f"{'const ' if self.is_const else ''}{base}*"
        return base


class _CParam(ctypes.Structure):
    _fields_ = [
        ("is_pointer", ctypes.c_int32),
        ("kind", ctypes.c_int32),
        ("size", ctypes.c_int32),
        ("is_const", ctypes.c_int32),
    ]


class HostLibrary:
    """A loaded host build: kernels by name, their parameters, and the grid launcher."""

    def __init__(self, path: Path, device_defines: dict[str, str]) -> None:
        self.path = path
        self.device_defines = dict(device_defines)
        self._lib = ctypes.CDLL(str(path))
        self._lib.emu_kernel_count.restype = ctypes.c_int
        self._lib.emu_kernel_name.restype = ctypes.c_char_p
        self._lib.emu_kernel_name.argtypes = [ctypes.c_int]
        self._lib.emu_kernel_params.restype = ctypes.c_int
        self._lib.emu_kernel_params.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
        self._lib.emu_launch.restype = None
        self._lib.emu_launch.argtypes = [ctypes.c_int] + [ctypes.c_uint] * 6 + [ctypes.c_void_p]
        self.kernels: dict[str, int] = {}
        self.params: dict[str, tuple[Param, ...]] = {}
        for k in range(self._lib.emu_kernel_count()):
            name = self._lib.emu_kernel_name(k).decode()
            n = self._lib.emu_kernel_params(k, None, 0)
            buffer = (_CParam * max(n, 1))()
            self._lib.emu_kernel_params(k, ctypes.addressof(buffer), n)
            self.kernels[name] = k
            self.params[name] = tuple(
                Param(bool(p.is_pointer), chr(p.kind), int(p.size), bool(p.is_const))
                for p in buffer[:n]
            )

    def launch(
        self, name: str, grid: tuple[int, int, int], block: tuple[int, int, int], argv: ctypes.Array
    ) -> None:
        """Runs kernel `name` over every block and thread; `argv` holds one pointer per
        parameter to that argument's bytes (cuLaunchKernel's kernelParams)."""
        self._lib.emu_launch(self.kernels[name], *grid, *block, ctypes.addressof(argv))


def _compiler() -> list[str]:
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        raise HostCompileError("no host C++ compiler (g++/c++ or $CXX) for the emulated device")
    return shlex.split(cxx)


def host_options(options: tuple[str, ...]) -> list[str]:
    """The NVRTC options that mean the same to the host compiler (defines, includes, std)."""
    kept = []
    for option in options:
        if not _KEPT_OPTION.match(option):
            continue  # architecture, fast-math, line info: device code generation only
        option = option.replace("--define-macro=", "-D").replace("--include-path=", "-I")
        kept.append(option.replace("--std=", "-std="))
    return kept


def sanitizer() -> str | None:
    value = os.environ.get(SANITIZE_ENV, "").strip()
    return value or None


def _run(command: list[str], what: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise HostCompileError(f"{what} failed ({shlex.join(command)}):\n{done.stderr}")
    return done.stdout


def _macros(source: Path, options: list[str], device: bool) -> dict[str, str]:
    flags = ["-D__CUDACC_RTC__"] if device else []
    out = _run([*_compiler(), "-x", "c++", "-E", "-dM", *flags, *options, str(source)], "-dM")
    return {name: value for name, value in _DEFINE.findall(out)}


def device_settings(source: Path, options: list[str]) -> dict[str, str]:
    """MC_* integer macros whose device value differs from the host's: their device values."""
    device = _macros(source, options, device=True)
    host = _macros(source, options, device=False)
    return {
        name: value
        for name, value in sorted(device.items())
        if name not in _KEEP_HOST and _INT_LITERAL.match(value) and host.get(name) != value
    }


def device_kernel_names(source: Path, options: list[str]) -> list[str]:
    """Every ``extern "C" __global__`` function of the device branch, in source order."""
    out = _run(
        [*_compiler(), "-x", "c++", "-E", "-P", "-D__CUDACC_RTC__", *options, str(source)], "-E"
    )
    names = list(dict.fromkeys(_KERNEL.findall(out)))
    if not names:
        raise HostCompileError(f'no extern "C" __global__ kernel found in {source}')
    return names


def _cache_root() -> Path:
    root = os.environ.get(CACHE_ENV)
    return Path(root) if root else Path(tempfile.gettempdir()) / "metaclip-gpu-emulated-device"


_lock = threading.Lock()
_loaded: dict[str, HostLibrary] = {}


def host_library(code: str, options: tuple[str, ...]) -> HostLibrary:
    """The host build of `code` compiled with `options` (cached on disk and in process)."""
    kept = host_options(options)
    sanitize = sanitizer()
    flags = ["-std=c++17", "-O1", "-g", "-fPIC", "-shared", "-fno-strict-aliasing"]
    if sanitize:
        flags += [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer"]
    digest = hashlib.sha256(
        "\0".join([code, *kept, *flags, HARNESS.read_text(), " ".join(_compiler())]).encode()
    ).hexdigest()[:20]
    with _lock:
        if digest in _loaded:
            return _loaded[digest]
        folder = _cache_root() / digest
        library = folder / "emulated_kernels.so"
        defines_file = folder / "device_defines.txt"
        if not library.is_file():
            library = _build(code, kept, flags, folder)
        defines = dict(
            line.split("=", 1) for line in defines_file.read_text().splitlines() if "=" in line
        )
        _loaded[digest] = HostLibrary(library, defines)
        return _loaded[digest]


def _build(code: str, kept: list[str], flags: list[str], folder: Path) -> Path:
    work = Path(tempfile.mkdtemp(prefix="build-", dir=_mkdir(folder.parent)))
    source = work / "kernel_source.cu"
    source.write_text(code, encoding="utf-8")
    defines = device_settings(source, kept)
    names = device_kernel_names(source, kept)
    unit = work / "emulated_kernels.cpp"
    unit.write_text(
        f'#include "{source.name}"\n#include "{HARNESS.name}"\n'
        f"EMU_KERNEL_TABLE({', '.join(f'EMU_KERNEL({name})' for name in names)})\n",
        encoding="utf-8",
    )
    output = work / "emulated_kernels.so"
    device = [f"-D{name}={value}" for name, value in defines.items()]
    command = [*_compiler(), *flags, *kept, *device, f"-I{work}", f"-I{HERE}", str(unit)]
    _run([*command, "-o", str(output)], "host build of the kernel source")
    (work / "device_defines.txt").write_text(
        "".join(f"{name}={value}\n" for name, value in defines.items())
    )
    try:
        work.rename(folder)  # atomic: a concurrent builder's folder wins, ours is dropped
    except OSError:
        shutil.rmtree(work, ignore_errors=True)
    return folder / "emulated_kernels.so"


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
