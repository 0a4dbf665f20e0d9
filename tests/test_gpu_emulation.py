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

from metaclip_gpu.backends.gpu_build import KERNEL_NAMES, kernel_source, nvrtc_options

pytestmark = pytest.mark.emulated_gpu


def _module(cp: Any) -> Any:
    return cp.RawModule(code=kernel_source(), options=nvrtc_options())


def _gather_args(cp: Any, n: int = 3) -> list[Any]:
    """Arguments of mc_gather_fixed_rows for `n` rows of 2 ids each."""
    fixed = cp.asarray(np.arange(n * 32, dtype=np.int32).reshape(n, 32))
    counts = cp.asarray(np.full(n, 2, dtype=np.int32))
    starts = cp.asarray(np.arange(0, 2 * n + 1, 2, dtype=np.int64))
    out = cp.zeros(2 * n, dtype=np.int32)
    return [fixed, counts, starts, np.int64(n), out]


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
        "cupy.ndarray": {n for n in dir(fake.ndarray) if not n.startswith("_")},
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
        "cupy.ndarray": set(dir(real.ndarray)),
        "cupy.cuda.Device": set(dir(real.cuda.Device)),
        "cupy.cuda.Stream": set(dir(real.cuda.Stream)),
        "cupy.RawKernel": set(dir(real.RawKernel)),
        "cupy.RawModule": set(dir(real.RawModule)),
    }
    ignored = {"annotations", "Any"}  # `from __future__`, typing in the fake's modules
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


def test_options_reach_the_host_build(emulated_cupy) -> None:
    """-DMC_LOCAL_CAP from the options sets the fixed buffer: 3 ids overflow a cap of 2."""
    from metaclip_gpu import MetadataIndex
    from metaclip_gpu.backends.gpu import GPUBackend

    cp = emulated_cupy
    index = MetadataIndex.from_entries(["a", "b", "c"], cache=False)
    backend = GPUBackend()
    batch = next(backend.text_batches(["a b c", "a"], 16))
    base = list(backend._index_args(index))
    for cap, expected in ((32, [3, 1]), (2, [-1, 1])):
        module = cp.RawModule(code=kernel_source(), options=nvrtc_options(local_cap=cap))
        ids = cp.empty((2, cap), dtype=np.int32)
        counts = cp.empty(2, dtype=np.int32)
        text_args, _n = backend._text_args(batch, None)
        module.get_function("mc_match_fixed_i32")((1,), (32,), (*base, *text_args, ids, counts))
        assert counts.get().tolist() == expected


@pytest.mark.parametrize(("grid", "block"), [((1,), (1,)), ((2,), (3,)), ((1, 2, 2), (2, 1, 2))])
def test_every_thread_of_the_grid_runs(emulated_cupy, grid, block) -> None:
    """Grid-stride loops cover all rows for any grid; 3-D grids and blocks are emulated."""
    cp = emulated_cupy
    args = _gather_args(cp, n=7)
    _module(cp).get_function("mc_gather_fixed_rows")(grid, block, tuple(args))
    expected = np.arange(7 * 32).reshape(7, 32)[:, :2].ravel()
    assert args[-1].get().tolist() == expected.tolist()


def test_a_64_bit_argument_passed_as_32_bit_is_refused(emulated_cupy) -> None:
    from gpu_emulation import LaunchArgumentError

    cp = emulated_cupy
    kernel = _module(cp).get_function("mc_gather_fixed_rows")
    args = _gather_args(cp)
    args[3] = np.int32(3)  # n_rows is mc_i64
    with pytest.raises(LaunchArgumentError, match=r"argument 3 .* 4 bytes passed, .* reads 8"):
        kernel((1,), (32,), tuple(args))


def test_a_python_int_for_an_int32_parameter_is_refused(emulated_cupy) -> None:
    """CuPy passes a Python int as int64: an `int` parameter would read 4 of its 8 bytes."""
    from gpu_emulation import LaunchArgumentError

    from metaclip_gpu import MetadataIndex
    from metaclip_gpu.backends.gpu import GPUBackend

    cp = emulated_cupy
    backend = GPUBackend()
    index = MetadataIndex.from_entries(["a"], cache=False)
    batch = next(backend.text_batches(["a"], 16))
    text_args, _ = backend._text_args(batch, None)
    text_args = list(text_args)
    text_args[3] = 0  # has_valid, an mc_i32
    ids, counts = cp.empty((1, 32), dtype=np.int32), cp.empty(1, dtype=np.int32)
    args = (*backend._index_args(index), *text_args, ids, counts)
    with pytest.raises(LaunchArgumentError, match=r"argument 9 \(int64 value\).*8 bytes passed"):
        _module(cp).get_function("mc_match_fixed_i32")((1,), (32,), args)


def test_two_pointer_arguments_swapped_are_refused(emulated_cupy) -> None:
    from gpu_emulation import LaunchArgumentError

    cp = emulated_cupy
    kernel = _module(cp).get_function("mc_gather_fixed_rows")
    args = _gather_args(cp)
    args[1], args[2] = args[2], args[1]  # counts (int32*) <-> out_offsets (int64*)
    with pytest.raises(LaunchArgumentError, match=r"argument 1 .* element type differs"):
        kernel((1,), (32,), tuple(args))


def test_count_contiguity_and_host_arrays_are_checked(emulated_cupy) -> None:
    from gpu_emulation import LaunchArgumentError

    cp = emulated_cupy
    kernel = _module(cp).get_function("mc_gather_fixed_rows")
    args = _gather_args(cp)
    with pytest.raises(LaunchArgumentError, match="4 arguments for 5 parameters"):
        kernel((1,), (32,), tuple(args[:4]))
    strided = cp.zeros(12, dtype=np.int32)[::2]
    with pytest.raises(LaunchArgumentError, match="C-contiguous"):
        kernel((1,), (32,), (*args[:4], strided))
    with pytest.raises(TypeError, match=r"numpy\.ndarray of shape"):  # CuPy's own refusal
        kernel((1,), (32,), (*args[:4], np.zeros(6, dtype=np.int32)))
    with pytest.raises(LaunchArgumentError, match="a value where the kernel wants a pointer"):
        kernel((1,), (32,), (*args[:4], np.zeros(1, dtype=np.int64)))
    with pytest.raises(TypeError, match="expected tuple"):
        kernel([1], (32,), tuple(args))


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


def test_a_write_past_an_array_fails_cleanly(emulated_cupy) -> None:
    """Same-typed pointers swapped (the 1-row counts where the 32-wide rows go): the kernel
    writes past the smaller array, which the emulation reports instead of corrupting memory."""
    from gpu_emulation import KernelMemoryError

    from metaclip_gpu import MetadataIndex
    from metaclip_gpu.backends.gpu import GPUBackend

    cp = emulated_cupy
    backend = GPUBackend()
    index = MetadataIndex.from_entries(["a", "b", "c"], cache=False)
    batch = next(backend.text_batches(["a b c"] * 40, 64))
    text_args, _n = backend._text_args(batch, None)
    ids, counts = cp.zeros((40, 32), dtype=np.int32), cp.zeros(40, dtype=np.int32)
    kernel = _module(cp).get_function("mc_match_fixed_i32")
    args = (*backend._index_args(index), *text_args)
    kernel((1,), (64,), (*args, ids, counts))
    assert counts.get().tolist() == [3] * 40
    with pytest.raises(KernelMemoryError, match="past the end of argument 14"):
        kernel((1,), (64,), (*args, counts, ids))


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


def test_signedness_may_differ_only_where_the_value_means_the_same(emulated_cupy) -> None:
    """mc_match_fixed's `mask` is uint64: a Python int (int64) below 2**63 has the same bytes."""
    from gpu_emulation import LaunchArgumentError

    from metaclip_gpu import MetadataIndex
    from metaclip_gpu.backends.gpu import GPUBackend

    cp = emulated_cupy
    backend = GPUBackend()
    index = MetadataIndex.from_entries(["a", "b"], cache=False)
    batch = next(backend.text_batches(["a b", "b"], 16))
    text_args, _n = backend._text_args(batch, None)
    index_args = list(backend._index_args(index))
    kernel = _module(cp).get_function("mc_match_fixed_i32")
    ids, counts = cp.zeros((2, 32), dtype=np.int32), cp.zeros(2, dtype=np.int32)
    index_args[1] = int(index_args[1])  # the mask as a Python int: int64, same bytes
    kernel((1,), (32,), (*index_args, *text_args, ids, counts))
    assert counts.get().tolist() == [2, 1]
    index_args[1] = np.int64(-1)  # not a uint64 value
    with pytest.raises(LaunchArgumentError, match="kind differs"):
        kernel((1,), (32,), (*index_args, *text_args, ids, counts))
