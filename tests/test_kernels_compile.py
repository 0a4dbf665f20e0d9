"""kernels/match.cu compiles for the GPU (SPEC section 6), without a GPU: NVRTC and nvcc.

NVRTC is driven through ``cuda.bindings.nvrtc`` (package cuda-bindings plus
nvidia-cuda-nvrtc-cu12) with exactly the source and options the GPU backend hands to
``cupy.RawModule``; nvcc gets the same options translated. A compiler is skipped only where it
is absent, and never in CI (``$CI`` set). Neither needs a device.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from metaclip_gpu.engine.backends import gpu_build
from metaclip_gpu.engine.backends.gpu_build import (
    KERNEL_DIR,
    KERNEL_NAMES,
    KERNEL_SOURCE_FILE,
    LOCAL_CAP,
    kernel_source,
    nvrtc_options,
)

ARCHS = ("sm_80", "sm_90")


def _absent(reason: str) -> None:
    """Skip where a compiler is missing, except in CI, where NVRTC and nvcc must both run."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must compile the kernels (install the 'test' extra)")
    pytest.skip(reason)


# ------------------------------------------------------------------ compilers ---
def _nvrtc():
    """cuda.bindings.nvrtc with a loadable libnvrtc, or skip saying which part is missing."""
    try:
        from cuda.bindings import nvrtc
    except ImportError as err:
        _absent(f"NVRTC not available: cuda-bindings is not installed ({err})")
    try:
        err, _major, _minor = nvrtc.nvrtcVersion()
    except Exception as exc:  # the binding imports, the shared library does not load
        _absent(f"NVRTC not available: libnvrtc cannot be loaded ({exc})")
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        _absent(f"NVRTC not available: nvrtcVersion returned {err}")
    return nvrtc


def _check(nvrtc, result, what: str) -> None:
    err = result[0]
    assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS, f"{what} failed: {err}"


def nvrtc_compile(source: str, options: tuple[str, ...], name: str = "match.cu") -> tuple[str, str]:
    """(PTX, program log) of `source`; fails the test with the log when it does not compile."""
    nvrtc = _nvrtc()
    err, prog = nvrtc.nvrtcCreateProgram(source.encode("utf-8"), name.encode(), 0, [], [])
    assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS, f"nvrtcCreateProgram failed: {err}"
    try:
        encoded = [option.encode("utf-8") for option in options]
        (compiled,) = nvrtc.nvrtcCompileProgram(prog, len(encoded), encoded)
        result = nvrtc.nvrtcGetProgramLogSize(prog)
        _check(nvrtc, result, "nvrtcGetProgramLogSize")
        # Output buffers must be mutable: `b" " * 1` is CPython's shared one-byte object, and
        # NVRTC writing its NUL into it turns every b" " in the process into b"\x00".
        log_buffer = bytearray(result[1])
        _check(nvrtc, nvrtc.nvrtcGetProgramLog(prog, log_buffer), "nvrtcGetProgramLog")
        log = bytes(log_buffer).rstrip(b"\x00 ").decode("utf-8", errors="replace")
        assert compiled == nvrtc.nvrtcResult.NVRTC_SUCCESS, (
            f"NVRTC could not compile {name} with {options}: {compiled}\n{log}"
        )
        result = nvrtc.nvrtcGetPTXSize(prog)
        _check(nvrtc, result, "nvrtcGetPTXSize")
        ptx_buffer = bytearray(result[1])
        _check(nvrtc, nvrtc.nvrtcGetPTX(prog, ptx_buffer), "nvrtcGetPTX")
        return bytes(ptx_buffer).rstrip(b"\x00").decode("utf-8"), log
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def ptx_entries(ptx: str) -> set[str]:
    return set(re.findall(r"\.entry\s+([A-Za-z_]\w*)", ptx))


def nvcc_options(options: tuple[str, ...]) -> list[str]:
    """The nvcc spelling of NVRTC options (the architecture is given to nvcc separately)."""
    translated = []
    for option in options:
        if option.startswith(("--gpu-architecture=", "-arch=", "-arch ")):
            continue
        if option.startswith("--std="):
            option = "-std=" + option.removeprefix("--std=")
        elif option.startswith("--include-path="):
            option = "-I" + option.removeprefix("--include-path=")
        elif option.startswith("--define-macro="):
            option = "-D" + option.removeprefix("--define-macro=")
        translated.append(option)
    return translated


def _nvcc() -> str:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        _absent("nvcc not found on PATH")
    return nvcc


def nvcc_cubin(source: Path, arch: str, options: tuple[str, ...], out: Path) -> str:
    """Compiles `source` to a cubin for `arch` (sm_XX); returns nvcc's messages."""
    command = [_nvcc(), f"-arch={arch}", "-cubin", *nvcc_options(options), "-o", str(out)]
    command.append(str(source))
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    messages = (done.stdout + done.stderr).strip()
    assert done.returncode == 0, f"nvcc failed ({' '.join(command)}):\n{messages}"
    assert out.is_file() and out.stat().st_size > 0
    return messages


def cubin_symbols(cubin: bytes) -> set[str]:
    """Names in the cubin's ELF string tables that look like C identifiers."""
    return {name.decode() for name in re.findall(rb"\x00([A-Za-z_]\w*)(?=\x00)", cubin)}


# ---------------------------------------------------------------- the source ---
def test_kernel_dir_holds_the_source() -> None:
    assert (KERNEL_DIR / KERNEL_SOURCE_FILE).is_file()
    assert (KERNEL_DIR / "portable.cuh").is_file() and (KERNEL_DIR / "tokens.cuh").is_file()


def test_kernel_source_inlines_local_headers() -> None:
    source = kernel_source()
    assert not re.search(r'^\s*#\s*include\s*"', source, re.MULTILINE), "a local include is left"
    assert not re.search(r"^\s*#\s*pragma\s+once", source, re.MULTILINE)
    # Each header once, with #line markers naming the original files.
    assert source.count('#line 1 "portable.cuh"') == 1
    assert source.count('#line 1 "tokens.cuh"') == 1
    for name in KERNEL_NAMES:
        assert name in source or name.rsplit("_", 1)[0] in source


def test_nvrtc_options_shape() -> None:
    options = nvrtc_options()
    assert "-std=c++17" in options
    assert f"-I{KERNEL_DIR}" in options
    assert f"-DMC_LOCAL_CAP={LOCAL_CAP}" in options
    arch_flags = ("-arch", "--gpu-architecture")
    assert not any(option.startswith(arch_flags) for option in options), "CuPy adds the arch"
    assert nvrtc_options(arch="compute_90")[0] == "--gpu-architecture=compute_90"
    assert nvrtc_options(arch="90")[0] == "--gpu-architecture=compute_90"
    assert not any(o.startswith("-DMC_LOCAL_CAP") for o in nvrtc_options(local_cap=None))


def test_gpu_build_imports_without_cupy() -> None:
    code = (
        "import sys; import metaclip_gpu.engine.backends.gpu_build as g; g.kernel_source(); "
        "g.nvrtc_options(); "
        "bad = [m for m in ('cupy', 'cudf', 'pylibcudf') if m in sys.modules]; "
        "assert not bad, bad"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# --------------------------------------------------------------------- NVRTC ---
@pytest.mark.parametrize("arch", ARCHS)
def test_nvrtc_compiles_every_kernel(arch: str) -> None:
    compute = arch.replace("sm_", "compute_")
    ptx, log = nvrtc_compile(kernel_source(), nvrtc_options(arch=compute))
    assert bytes([0x20])[0] == 0x20, "an NVRTC output buffer overwrote a shared bytes object"
    assert f".target {arch}" in ptx
    entries = ptx_entries(ptx)
    missing = [name for name in KERNEL_NAMES if name not in entries]
    assert not missing, f"kernels missing from the {arch} PTX: {missing}; log:\n{log}"
    # Every exported kernel is listed, so the GPU backend can fetch it by name.
    assert entries == set(KERNEL_NAMES), f"unlisted kernels: {sorted(entries - set(KERNEL_NAMES))}"


def test_nvrtc_compiles_the_file_through_the_include_path() -> None:
    """The raw match.cu (headers found through -I<KERNEL_DIR>) gives the same kernels."""
    raw = (KERNEL_DIR / KERNEL_SOURCE_FILE).read_text(encoding="utf-8")
    ptx, _log = nvrtc_compile(raw, nvrtc_options(arch="compute_90"), name="kern.cu")
    assert ptx_entries(ptx) == set(KERNEL_NAMES)


def test_local_cap_agrees_with_source_default_and_cpu_extension() -> None:
    from metaclip_gpu.engine._native import lib

    assert gpu_build.default_local_cap_in_source() == LOCAL_CAP
    assert int(lib.mc_local_cap()) == LOCAL_CAP
    # With and without -DMC_LOCAL_CAP the device code is the same: the defaults agree.
    with_define, _ = nvrtc_compile(kernel_source(), nvrtc_options(arch="compute_90"))
    default, _ = nvrtc_compile(kernel_source(), nvrtc_options(arch="compute_90", local_cap=None))
    assert ptx_entries(default) == set(KERNEL_NAMES)
    assert default == with_define


def test_gpu_backend_local_cap_constant() -> None:
    """The GPU backend's local_cap is the gpu_build constant (checked on the source text)."""
    gpu_py = Path(gpu_build.__file__).with_name("gpu.py").read_text(encoding="utf-8")
    assert re.search(r"^\s*local_cap = LOCAL_CAP\s*$", gpu_py, re.MULTILINE)


# ---------------------------------------------------------------------- nvcc ---
@pytest.mark.parametrize("arch", ARCHS)
def test_nvcc_compiles_every_kernel(arch: str, tmp_path: Path) -> None:
    source = tmp_path / "match_inlined.cu"
    source.write_text(kernel_source(), encoding="utf-8")
    out = tmp_path / f"match_{arch}.cubin"
    nvcc_cubin(source, arch, nvrtc_options(), out)
    symbols = cubin_symbols(out.read_bytes())
    missing = [name for name in KERNEL_NAMES if name not in symbols]
    assert not missing, f"kernels missing from the {arch} cubin: {missing}"


def test_nvcc_compiles_the_file_through_the_include_path(tmp_path: Path) -> None:
    out = tmp_path / "match_sm_90.cubin"
    nvcc_cubin(KERNEL_DIR / KERNEL_SOURCE_FILE, "sm_90", nvrtc_options(), out)
    symbols = cubin_symbols(out.read_bytes())
    assert set(KERNEL_NAMES) <= symbols
