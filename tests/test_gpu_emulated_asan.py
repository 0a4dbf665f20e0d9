"""The emulated kernels under AddressSanitizer (tests/gpu_emulation/asan.py): the emulated
backend tests run clean, and a launch that reads past an array is reported and fails.

Each test starts one Python process with the ASan runtime preloaded and the kernels built with
``-fsanitize=address`` (small data: tests/test_gpu_emulated_backend.py). Skipped where the host
compiler has no shared ASan runtime, except in CI (``$CI`` set), where it must run.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from gpu_emulation import asan

pytestmark = pytest.mark.emulated_gpu

REPO = Path(__file__).resolve().parent.parent

BAD_LAUNCH = textwrap.dedent(
    """
    import sys
    import numpy as np
    sys.path.insert(0, "tests")
    import gpu_emulation
    from metaclip_gpu.engine.backends.gpu_build import kernel_source, nvrtc_options

    cp = gpu_emulation.install()
    module = cp.RawModule(code=kernel_source(), options=nvrtc_options())
    kernel = module.get_function("mc_gather_fixed_rows")
    n = 1000
    fixed = cp.zeros((n, 32), dtype=np.int32)
    counts = cp.zeros(n, dtype=np.int32)
    starts = cp.zeros(n + 1, dtype=np.int64)
    out = cp.zeros(1, dtype=np.int32)
    kernel((4,), (256,), (fixed, counts, starts, np.int64(n), out))
    print("in bounds: clean", flush=True)
    kernel((4,), (256,), (fixed, counts, starts, np.int64(n + 24), out))  # 24 rows too many
    print("out of bounds: not reported", flush=True)
    """
)


def _require_asan() -> None:
    if asan.asan_runtime() is None:
        reason = "the host compiler has no shared AddressSanitizer runtime (libasan.so)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: CI must run the emulated kernels under ASan")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def asan_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("asan_build")


def test_asan_reports_an_out_of_bounds_read(asan_cache: Path) -> None:
    _require_asan()
    done = asan.run_python(["-c", BAD_LAUNCH], REPO, cache=asan_cache)
    assert "in bounds: clean" in done.stdout, done.stderr[-3000:]
    assert "out of bounds: not reported" not in done.stdout
    assert done.returncode == asan.ASAN_EXIT, done.stderr[-3000:]
    assert "AddressSanitizer: heap-buffer-overflow" in done.stderr
    assert "READ of size 4" in done.stderr and "mc_gather_fixed" in done.stderr


def test_emulated_backend_tests_run_clean_under_asan(asan_cache: Path) -> None:
    _require_asan()
    draws = "tests/test_draw_kernels.py::test_emulated_device_equals_the_host"
    args = ["-m", "pytest", "tests/test_gpu_emulated_backend.py", draws, "-q", "-x"]
    done = asan.run_python([*args, "-p", "no:cacheprovider"], REPO, cache=asan_cache)
    output = done.stdout + done.stderr
    assert "AddressSanitizer" not in output, output[-4000:]
    assert done.returncode == 0, output[-4000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout.splitlines()[-1]
