"""How the GPU backend builds kernels/match.cu (with draws.cuh): source, options, kernel names.

Importable without CuPy (the compile tests use it with NVRTC / nvcc on machines without a GPU).
The GPU backend compiles `kernel_source()` with `cupy.RawModule(code=..., options=nvrtc_options())`;
CuPy adds ``-arch=compute_XX`` for the device itself.

`kernel_source()` returns match.cu with its local ``#include "..."`` headers inlined (each once,
with ``#line`` markers so compiler messages still name the original files). CuPy keys its on-disk
kernel cache on the source text and options only, so an inlined source means an edited header
can never be served a stale cached binary. ``-I<KERNEL_DIR>`` stays in the options all the same.
"""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path

# Ids a text keeps in mc_match_fixed's per-thread list (the rest are spilled); kernels/match.cu
# defaults MC_LOCAL_CAP to the same value, which the CPU extension is built with.
LOCAL_CAP = 64
KERNEL_SOURCE_FILE = "match.cu"
KERNEL_NAMES: tuple[str, ...] = (
    "mc_match_fixed_i32",
    "mc_match_fixed_i64",
    "mc_count_raw_i32",
    "mc_count_raw_i64",
    "mc_fill_raw_i32",
    "mc_fill_raw_i64",
    "mc_gather_fixed_rows",
    "mc_index_signature_kernel",
    "mc_sure_texts",  # the balance stage's (draws.cuh, included by match.cu)
    "mc_draw_undecided",
)
# The kernels `match()` launches (the others belong to the balance stage).
MATCH_KERNEL_NAMES: tuple[str, ...] = KERNEL_NAMES[:-2]
CXX_STD = "c++17"

_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"([^"]+)"[ \t]*$')
_PRAGMA_ONCE = re.compile(r"^[ \t]*#[ \t]*pragma[ \t]+once\b")


def _kernel_dir() -> Path:
    """kernels/ of a source checkout, else the installed package data metaclip_gpu.kernels."""
    checkout = Path(__file__).resolve().parents[3] / "kernels"
    if (checkout / KERNEL_SOURCE_FILE).is_file():
        return checkout
    try:
        # kernels/ has no __init__.py: installed, it is a namespace package, whose files() is
        # a MultiplexedPath (no usable str()); joinpath gives a real file path.
        source = importlib.resources.files("metaclip_gpu.kernels").joinpath(KERNEL_SOURCE_FILE)
    except ModuleNotFoundError:
        return checkout
    return Path(str(source)).parent if isinstance(source, Path) else checkout


KERNEL_DIR: Path = _kernel_dir()


def _arch_option(arch: str) -> str:
    """``--gpu-architecture=`` for "compute_90", "sm_90" or "90"."""
    arch = arch.strip()
    if arch.isdigit():
        arch = f"compute_{arch}"
    return f"--gpu-architecture={arch}"


def nvrtc_options(arch: str | None = None, *, local_cap: int | None = LOCAL_CAP) -> tuple[str, ...]:
    """NVRTC options for kernel_source(); `arch` only for compiling outside CuPy.

    `local_cap=None` leaves MC_LOCAL_CAP to match.cu's own default.
    """
    options = [f"-std={CXX_STD}", f"-I{KERNEL_DIR}"]
    if local_cap is not None:
        options.append(f"-DMC_LOCAL_CAP={int(local_cap)}")
    if arch is not None:
        options.insert(0, _arch_option(arch))
    return tuple(options)


def _inline(path: Path, seen: set[Path], out: list[str]) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    out.append(f'#line 1 "{path.name}"')
    for number, line in enumerate(lines, start=1):
        if _PRAGMA_ONCE.match(line):
            out.append("")  # inlined once below, and "#pragma once in main file" warns
            continue
        found = _INCLUDE.match(line)
        header = path.parent / found.group(1) if found else None
        if header is None or not header.is_file():
            out.append(line)
            continue
        header = header.resolve()
        if header not in seen:
            seen.add(header)
            _inline(header, seen, out)
        out.append(f'#line {number + 1} "{path.name}"')


def kernel_source() -> str:
    """match.cu with its local headers inlined: the one translation unit of every kernel."""
    main = (KERNEL_DIR / KERNEL_SOURCE_FILE).resolve()
    out: list[str] = []
    _inline(main, {main}, out)
    return "\n".join(out) + "\n"


def default_local_cap_in_source() -> int | None:
    """The ``#define MC_LOCAL_CAP`` default written in match.cu (None if absent)."""
    text = (KERNEL_DIR / KERNEL_SOURCE_FILE).read_text(encoding="utf-8")
    found = re.search(r"^[ \t]*#[ \t]*define[ \t]+MC_LOCAL_CAP[ \t]+(\d+)", text, re.MULTILINE)
    return int(found.group(1)) if found else None
