"""The emulated device's launch checks, on launches the GPU backend really made.

`match()` on the emulated device records each kernel's latest launch
(`gpu_emulation.last_launch`); these tests replay such a launch with one thing altered and
expect the emulator to refuse it, the way a real device would silently misread it. They find
parameters by their types (tests/gpu_emulation/host_build.py), not by position, so they hold
whatever parameter lists the kernels have.
"""

from __future__ import annotations

from typing import Any

import gpu_emulation
import numpy as np
import pyarrow as pa
import pytest
from gpu_emulation import KernelMemoryError, LaunchArgumentError, host_build
from test_gpu_emulated_backend import dense_case

from metaclip_gpu import MetadataIndex, match
from metaclip_gpu.engine.backends.gpu_build import (
    KERNEL_NAMES,
    LOCAL_CAP,
    kernel_source,
    nvrtc_options,
)
from metaclip_gpu.pipeline.chunk_draws import balance_chunk

pytestmark = pytest.mark.emulated_gpu

SMALL_CAP = 20  # a smaller per-text buffer than the default (kernels may need >= 16)
Launch = tuple[tuple[int, int, int], tuple[int, int, int], tuple[Any, ...]]


@pytest.fixture(scope="module")
def case() -> tuple[MetadataIndex, list[str | None]]:
    return dense_case()


@pytest.fixture
def recorded(emulated_cupy, case) -> dict[str, Launch]:
    """Every kernel's latest launch: int32 offsets (a list), then int64 (large_string), then
    the balance stage's draws (`balance_chunk` on that match, at t = 1)."""
    index, texts = case
    match(texts, index, backend="gpu")
    int32_match_fixed = gpu_emulation.last_launch["mc_match_fixed_i32"]
    result = match(pa.array(texts, type=pa.large_string()), index, backend="gpu")
    cp = emulated_cupy
    counts = cp.bincount(result.entry_ids, minlength=len(index)).astype(cp.uint64)
    keys = cp.arange(len(texts), dtype=cp.int64)
    balance_chunk(result.offsets, result.entry_ids, keys, counts, [1.0], seed=3)
    launches = dict(gpu_emulation.last_launch)
    assert set(launches) == set(KERNEL_NAMES)
    assert launches["mc_match_fixed_i32"] is int32_match_fixed
    return launches


def _kernel(cp: Any, name: str, local_cap: int | None = None) -> Any:
    options = nvrtc_options() if local_cap is None else nvrtc_options(local_cap=local_cap)
    return cp.RawModule(code=kernel_source(), options=options).get_function(name)


def _params(name: str) -> tuple[host_build.Param, ...]:
    return host_build.host_library(kernel_source(), nvrtc_options()).params[name]


def _outputs(name: str) -> list[int]:
    return [i for i, p in enumerate(_params(name)) if p.is_pointer and not p.is_const]


def test_recorded_launches_replay(emulated_cupy, recorded) -> None:
    for name, (grid, block, args) in recorded.items():
        _kernel(emulated_cupy, name)(grid, block, args)


def test_a_64_bit_value_passed_as_32_bit_is_refused(emulated_cupy, recorded) -> None:
    checked = 0
    for name, (grid, block, args) in recorded.items():
        params = _params(name)
        wide = [
            i for i, p in enumerate(params) if not p.is_pointer and (p.kind, p.size) == ("i", 8)
        ]
        if not wide:
            continue
        altered = list(args)
        altered[wide[0]] = np.int32(int(args[wide[0]]))
        with pytest.raises(LaunchArgumentError, match="4 bytes passed, the kernel reads 8"):
            _kernel(emulated_cupy, name)(grid, block, tuple(altered))
        checked += 1
    assert checked >= 7  # every text kernel (n_rows, valid_bit_offset) and the gather


def test_a_python_int_for_a_32_bit_value_is_refused(emulated_cupy, recorded) -> None:
    """CuPy passes a Python int as int64; a 4-byte parameter would read half of it."""
    checked = 0
    for name, (grid, block, args) in recorded.items():
        narrow = [i for i, p in enumerate(_params(name)) if not p.is_pointer and p.size == 4]
        for i in narrow:
            altered = list(args)
            altered[i] = int(args[i])
            with pytest.raises(LaunchArgumentError, match="8 bytes passed, the kernel reads 4"):
                _kernel(emulated_cupy, name)(grid, block, tuple(altered))
            checked += 1
    assert checked >= 12  # has_valid and has_rows of the six text kernels


def test_two_pointer_arguments_swapped_are_refused(emulated_cupy, recorded) -> None:
    checked = 0
    for name, (grid, block, args) in recorded.items():
        pointers = [(i, p) for i, p in enumerate(_params(name)) if p.is_pointer]
        pairs = [
            (i, j)
            for i, p in pointers
            for j, q in pointers
            if i < j and (p.kind, p.size) != (q.kind, q.size)
        ]
        if not pairs:
            continue
        i, j = pairs[0]
        altered = list(args)
        altered[i], altered[j] = altered[j], altered[i]
        with pytest.raises(LaunchArgumentError, match=f"argument {i} .*element type differs"):
            _kernel(emulated_cupy, name)(grid, block, tuple(altered))
        checked += 1
    assert checked >= 7


def _int32_outputs(args: tuple[Any, ...]) -> tuple[int, int]:
    """mc_match_fixed's per-text counts and its id rows: its smallest and largest int32
    outputs (other outputs, if any, have other types)."""
    outputs = [i for i in _outputs("mc_match_fixed_i32") if args[i].dtype == np.int32]
    outputs.sort(key=lambda i: args[i].nbytes)
    assert len(outputs) >= 2 and args[outputs[0]].nbytes < args[outputs[-1]].nbytes
    return outputs[0], outputs[-1]


def test_a_write_past_an_array_fails_cleanly(emulated_cupy, recorded) -> None:
    """Two same-typed outputs swapped: mc_match_fixed writes its id rows into the small counts
    array. The emulation reports it instead of corrupting the test process's memory."""
    grid, block, args = recorded["mc_match_fixed_i32"]
    counts_at, ids_at = _int32_outputs(args)
    altered = list(args)
    altered[counts_at], altered[ids_at] = args[ids_at], args[counts_at]
    with pytest.raises(KernelMemoryError, match=f"past the end of argument {ids_at}"):
        _kernel(emulated_cupy, "mc_match_fixed_i32")(grid, block, tuple(altered))


@pytest.mark.parametrize(("grid", "block"), [((1,), (1,)), ((2,), (3,)), ((1, 2, 2), (2, 1, 2))])
def test_every_thread_of_any_grid_runs(emulated_cupy, recorded, grid, block) -> None:
    """Grid-stride loops give the same output for any grid; 3-D grids and blocks run (their
    extra y/z threads redo x's rows). Kernels whose outputs are per row only: one with an
    atomic counter would count the redone rows twice, on a device too."""
    cp = emulated_cupy
    names = ("mc_gather_fixed_rows", "mc_count_raw_i64", "mc_fill_raw_i32", "mc_sure_texts")
    for name in (*names, "mc_draw_undecided"):
        backend_grid, backend_block, args = recorded[name]
        runs = []
        for launch in ((backend_grid, backend_block), (grid, block)):
            fresh = list(args)
            for i in _outputs(name):
                fresh[i] = cp.empty_like(args[i])  # the same poison where nothing is written
            _kernel(cp, name)(*launch, tuple(fresh))
            runs.append([fresh[i].get() for i in _outputs(name)])
        for backends, ours in zip(*runs, strict=True):
            np.testing.assert_array_equal(ours, backends, err_msg=name)


def test_compile_options_reach_the_host_build(emulated_cupy, recorded, case) -> None:
    """-DMC_LOCAL_CAP from the options sizes the per-text buffer: built with 20, the text of 25
    ids no longer fits (a negative count) while the default build keeps it; every text that
    fits has the CPU's count. Built with 2 (a cap below the sink's linear scan), texts past it
    spill instead of writing past the buffer (which crashed the launch)."""
    cp = emulated_cupy
    grid, block, args = recorded["mc_match_fixed_i32"]
    counts_at, ids_at = _int32_outputs(args)
    n = args[counts_at].size
    index, texts = case
    lengths = [len(ids) for ids in match(texts, index, backend="cpu").to_lists()]
    assert len(lengths) == n and any(SMALL_CAP < k <= LOCAL_CAP for k in lengths)
    for cap in (LOCAL_CAP, SMALL_CAP, 2):  # 2: below the sink's linear-scan length (16)
        fresh = [cp.zeros_like(a) if i in _outputs("mc_match_fixed_i32") else a
                 for i, a in enumerate(args)]  # fmt: skip
        fresh[counts_at] = cp.empty(n, dtype=np.int32)
        fresh[ids_at] = cp.empty(n * cap, dtype=np.int32)
        _kernel(cp, "mc_match_fixed_i32", local_cap=cap)(grid, block, tuple(fresh))
        counts = fresh[counts_at].get().tolist()
        for count, k in zip(counts, lengths, strict=True):
            assert count == k if k <= cap else count < 0, (cap, k, count)


def test_count_contiguity_and_host_arrays_are_checked(emulated_cupy, recorded) -> None:
    cp = emulated_cupy
    grid, block, args = recorded["mc_gather_fixed_rows"]
    kernel = _kernel(cp, "mc_gather_fixed_rows")
    out = _outputs("mc_gather_fixed_rows")[-1]
    with pytest.raises(LaunchArgumentError, match=f"{len(args) - 1} arguments for {len(args)}"):
        kernel(grid, block, args[:-1])
    altered = list(args)
    altered[out] = cp.zeros(2 * args[out].size, dtype=args[out].dtype)[::2]
    with pytest.raises(LaunchArgumentError, match="C-contiguous"):
        kernel(grid, block, tuple(altered))
    altered[out] = args[out].get()  # a host array: CuPy itself refuses one of size > 1
    with pytest.raises(TypeError, match=r"numpy\.ndarray of shape"):
        kernel(grid, block, tuple(altered))
    altered[out] = np.zeros(1, dtype=np.int64)  # size 1: passed by value, not as a pointer
    with pytest.raises(LaunchArgumentError, match="a value where the kernel wants a pointer"):
        kernel(grid, block, tuple(altered))
    with pytest.raises(TypeError, match="expected tuple"):
        kernel(list(grid), block, args)


def test_signedness_may_differ_only_where_the_value_means_the_same(emulated_cupy, recorded):
    """A uint64 parameter (the table mask) takes a Python int below 2**63 (int64, the same
    bytes) but not a negative int64."""
    cp = emulated_cupy
    grid, block, args = recorded["mc_match_fixed_i32"]
    unsigned = [i for i, p in enumerate(_params("mc_match_fixed_i32")) if p.kind == "u"]
    mask_at = next(i for i in unsigned if not _params("mc_match_fixed_i32")[i].is_pointer)
    kernel = _kernel(cp, "mc_match_fixed_i32")
    altered = list(args)
    altered[mask_at] = int(args[mask_at])
    kernel(grid, block, tuple(altered))
    altered[mask_at] = np.int64(-1)
    with pytest.raises(LaunchArgumentError, match="kind differs"):
        kernel(grid, block, tuple(altered))
