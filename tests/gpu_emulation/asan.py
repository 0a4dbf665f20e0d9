"""Running the emulated device under AddressSanitizer (test-only).

The emulated kernels are built with ``-fsanitize=address`` when ``METACLIP_EMU_SANITIZE=address``
(host_build.py). Python itself is not instrumented, so such a process must start with the
compiler's ASan runtime preloaded; `asan_env()` gives that environment and `run_python()` runs
a command under it. Every device array of the emulation is its own heap allocation, so a kernel
that reads or writes past one is reported (``heap-buffer-overflow``) and the process fails.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from gpu_emulation.host_build import CACHE_ENV, SANITIZE_ENV, _compiler

ASAN_OPTIONS = "detect_leaks=0:halt_on_error=1:abort_on_error=0:exitcode=23"
ASAN_EXIT = 23


def asan_runtime() -> Path | None:
    """The host compiler's shared ASan runtime, or None where it has none."""
    try:
        done = subprocess.run(
            [*_compiler(), "-print-file-name=libasan.so"],
            capture_output=True,
            text=True,
            check=False,
        )
    except (OSError, RuntimeError):
        return None
    path = Path(done.stdout.strip())
    return path.resolve() if done.returncode == 0 and path.is_absolute() and path.exists() else None


def asan_env(cache: Path | None = None) -> dict[str, str]:
    """This process's environment plus the ASan runtime, options and sanitizer switch."""
    runtime = asan_runtime()
    if runtime is None:
        raise RuntimeError("the host compiler has no shared AddressSanitizer runtime")
    env = dict(os.environ)
    env["LD_PRELOAD"] = " ".join(filter(None, [str(runtime), env.get("LD_PRELOAD", "")]))
    env["ASAN_OPTIONS"] = ASAN_OPTIONS
    env[SANITIZE_ENV] = "address"
    if cache is not None:
        env[CACHE_ENV] = str(cache)
    return env


def run_python(
    args: list[str], cwd: Path, cache: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """`python <args>` under ASan (output captured)."""
    command = [sys.executable, *args]
    try:
        return subprocess.run(
            command,
            cwd=cwd,
            env=asan_env(cache),
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as err:
        raise AssertionError(f"{shlex.join(command)} under ASan ran past {timeout} s") from err
