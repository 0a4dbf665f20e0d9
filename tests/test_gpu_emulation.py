"""The emulated device itself (tests/gpu_emulation): CuPy 14's rules and the launch checks.

Each test here would pass on a real device too, except the launch-argument checks, which are the
emulator's own (a real device runs a mismatched launch and reads garbage).
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from metaclip_gpu.engine.backends.gpu_build import KERNEL_NAMES, kernel_source, nvrtc_options

pytestmark = pytest.mark.emulated_gpu


def _module(cp: Any) -> Any:
    return cp.RawModule(code=kernel_source(), options=nvrtc_options())


# ------------------------------------------------------------------ CuPy's names ---
def _real_cupy() -> Any:
    """The installed CuPy (imported in a subprocess first: it must import without a GPU)."""
    done = subprocess.run(
        [sys.executable, "-c", "import cupy"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"real CuPy does not import here (install the gpu extra): {done.stderr[-300:]}")
    import gpu_emulation

    gpu_emulation.uninstall()  # the real package, for this test only
    try:
        return importlib.import_module("cupy")
    finally:
        gpu_emulation.install()


def _public(namespace: Any) -> set[str]:
    return {name for name in vars(namespace) if not name.startswith("_")}


def test_every_public_name_exists_in_real_cupy(emulated_cupy) -> None:
    fake = emulated_cupy
    fake_names = {
        "cupy": _public(fake),
        "cupy.cuda": _public(fake.cuda),
        "cupy.cuda.runtime": _public(fake.cuda.runtime),
        "cupy.cuda.memory": _public(fake.cuda.memory),
        "cupy.cuda.driver": _public(fake.cuda.driver),
        "cupy.cuda.compiler": _public(fake.cuda.compiler),
        # dunders too: a protocol real CuPy lacks (e.g. __index__) would hide a device bug
        "cupy.ndarray": {n for n in dir(fake.ndarray) if not n.startswith("_") or n[:2] == "__"},
        "cupy.cuda.Device": {n for n in dir(fake.cuda.Device) if not n.startswith("_")},
        "cupy.cuda.Stream": {n for n in dir(fake.cuda.Stream) if not n.startswith("_")},
        "cupy.RawKernel": {n for n in dir(fake.RawKernel) if not n.startswith("_")},
        "cupy.RawModule": {n for n in dir(fake.RawModule) if not n.startswith("_")},
    }
    real = _real_cupy()
    real_names = {
        "cupy": set(dir(real)),
        "cupy.cuda": set(dir(real.cuda)),
        "cupy.cuda.runtime": set(dir(real.cuda.runtime)),
        "cupy.cuda.memory": set(dir(real.cuda.memory)),
        "cupy.cuda.driver": set(dir(real.cuda.driver)),
        "cupy.cuda.compiler": set(dir(real.cuda.compiler)),
        "cupy.ndarray": set(dir(real.ndarray)),
        "cupy.cuda.Device": set(dir(real.cuda.Device)),
        "cupy.cuda.Stream": set(dir(real.cuda.Stream)),
        "cupy.RawKernel": set(dir(real.RawKernel)),
        "cupy.RawModule": set(dir(real.RawModule)),
    }
    ignored = {"annotations", "Any", "__weakref__"}  # `from __future__`, typing, a slot
    for where, names in fake_names.items():
        extra = sorted(names - real_names[where] - ignored)
        assert not extra, f"{where} of the emulation has names real CuPy lacks: {extra}"
    assert real.ndarray.__array__ is not None and "get" in real_names["cupy.ndarray"]


# ------------------------------------------------------------- host/device rules ---
def test_implicit_host_reads_raise_like_cupy(emulated_cupy) -> None:
    cp = emulated_cupy
    x = cp.arange(4, dtype=np.int64)
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(x)
    with pytest.raises(TypeError, match="Implicit conversion"):
        x.__array__()
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.array([x[0], x[1]])


def test_mixing_numpy_and_cupy_arrays_raises(emulated_cupy) -> None:
    cp = emulated_cupy
    x, host = cp.arange(4), np.arange(4)
    for mixed in (
        lambda: x + host,
        lambda: host + x,
        lambda: cp.maximum(x, host),
        lambda: cp.concatenate([x, host]),
        lambda: cp.cumsum(host),
        lambda: cp.ascontiguousarray(host),
    ):
        with pytest.raises(TypeError):
            mixed()
    with pytest.raises(TypeError):
        x[:2] = host[:2]


def test_explicit_reads_work_like_cupy(emulated_cupy) -> None:
    cp = emulated_cupy
    x = cp.asarray(np.array([3, 1, 2], dtype=np.int32))
    host = x.get()
    assert isinstance(host, np.ndarray) and host.tolist() == [3, 1, 2]
    host[0] = 9  # a copy: the device array is unchanged
    assert cp.asnumpy(x).tolist() == [3, 1, 2]
    assert int(x[0]) == 3 and float(x.sum()) == 6.0 and bool(x[1] == 1)
    total = x.sum()
    assert isinstance(total, cp.ndarray) and total.ndim == 0  # a 0-d device array, not a scalar
    with pytest.raises(ValueError, match="ambiguous"):
        bool(x)
    with pytest.raises(TypeError):
        int(x)
    assert isinstance(np.sum(x), cp.ndarray)  # NEP 18: NumPy functions dispatch to CuPy


def test_empty_is_not_zeroed(emulated_cupy) -> None:
    """cupy.empty gives whatever the memory held: a kernel that skips an output is caught."""
    out = emulated_cupy.empty(4, dtype=np.int32).get()
    assert (out != 0).all()


# ------------------------------------------------------------------ the kernels ---
def test_host_build_exports_the_device_kernels_with_device_settings(emulated_cupy) -> None:
    from gpu_emulation import host_build

    library = host_build.host_library(kernel_source(), nvrtc_options())
    assert set(library.kernels) == set(KERNEL_NAMES)
    # The device branch's tuning (e.g. a 16-token ring, no read-ahead) replaces the host's.
    assert library.device_defines, "no device-only setting found: is portable.cuh unchanged?"
    for name, value in library.device_defines.items():
        assert int(value.strip("()uUlL")) >= 0, (name, value)


def test_parameter_lists_equal_the_device_build(emulated_cupy) -> None:
    """The host build's parameter widths are those of NVRTC's PTX for sm_90 (pointers: 8)."""
    import re

    from gpu_emulation import host_build
    from test_kernels_compile import nvrtc_compile

    ptx, _log = nvrtc_compile(kernel_source(), nvrtc_options(arch="compute_90"))
    bits = {"8": 1, "16": 2, "32": 4, "64": 8}
    device = {
        name: [bits[width] for width in re.findall(r"\.param\s+\.[usbf](\d+)\s", params)]
        for name, params in re.findall(r"\.entry\s+(\w+)\s*\((.*?)\)", ptx, flags=re.S)
    }
    library = host_build.host_library(kernel_source(), nvrtc_options())
    host = {
        name: [8 if p.is_pointer else p.size for p in params]
        for name, params in library.params.items()
    }
    assert host == device


def test_arguments_are_converted_as_cupy_14_converts_them(emulated_cupy) -> None:
    """cupy/cuda/function.pyx `_pointer` and cupy/_core/_scalar.pyx `CScalar`."""
    from gpu_emulation.launch_args import convert

    cp = emulated_cupy
    assert convert(7).value.dtype == np.int64  # a Python int is int64 ...
    assert convert(2**63).value.dtype == np.uint64  # ... or uint64 from 2**63 up
    with pytest.raises(OverflowError):
        convert(2**64)
    assert convert(1.5).value.dtype == np.float64
    assert convert(True).value.dtype == np.bool_ and convert(True).value.nbytes == 1
    assert convert(np.int32(3)).value.dtype == np.int32  # a NumPy scalar keeps its dtype
    assert convert(np.array([5], dtype=np.int16)).value.dtype == np.int16  # by value
    with pytest.raises(TypeError, match=r"numpy\.ndarray of shape"):
        convert(np.zeros(2))
    with pytest.raises(TypeError, match="Unsupported type"):
        convert("3")
    array = cp.zeros(3, dtype=np.int64)
    assert convert(array).address == array.data.ptr and convert(None).address == 0
