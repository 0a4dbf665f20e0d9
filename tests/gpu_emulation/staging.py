"""Each launch's device arrays, staged so a kernel that runs past one fails cleanly.

The emulated device's memory is the test process's heap: a kernel writing past an array (e.g.
two same-typed pointers swapped, a too-small output) would corrupt it and crash the session
later. So each array argument is copied into a fresh buffer followed by a guard of canary
bytes (at least 4 KiB, and as large as the launch's largest array); after the kernel, any
changed guard byte raises `KernelMemoryError` naming the argument, and only then are the
buffers of non-const pointers copied back. A read past an array sees canary bytes. Under
AddressSanitizer (METACLIP_EMU_SANITIZE set) the buffers get no guard, so ASan reports the
first byte past each one. Arguments whose memory overlaps are passed as they are (their
aliasing is the kernel's to see).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import numpy as np

from gpu_emulation.host_build import Param, sanitizer
from gpu_emulation.launch_args import Argument

GUARD_BYTES = 4096
CANARY = 0xEE


class KernelMemoryError(RuntimeError):
    """A kernel wrote past the end of one of its array arguments."""


@dataclass
class _Staged:
    position: int
    original: np.ndarray  # the argument's memory, as bytes
    buffer: np.ndarray  # the copy the kernel ran on, guard included
    writable: bool


def _bytes_of(arg: Argument) -> np.ndarray:
    return arg.array._a.reshape(-1).view(np.uint8)


def _overlapping(args: list[Argument]) -> bool:
    spans = sorted(
        (arg.address, arg.address + arg.array.nbytes)
        for arg in args
        if arg.array is not None and arg.array.nbytes and arg.address
    )
    return any(start < end for (_, end), (start, _) in itertools.pairwise(spans))


def stage(params: tuple[Param, ...], args: list[Argument]) -> tuple[list[Argument], list[_Staged]]:
    """The arguments to launch with (array arguments moved to guarded copies)."""
    if _overlapping(args):
        return args, []
    # A kernel handed the wrong array runs past it by up to the size of the right one.
    largest = max((arg.array.nbytes for arg in args if arg.array is not None), default=0)
    guard = 0 if sanitizer() else max(GUARD_BYTES, largest)
    launched, staged = list(args), []
    for position, (param, arg) in enumerate(zip(params, args, strict=True)):
        if arg.array is None:
            continue
        original = _bytes_of(arg)
        buffer = np.empty(original.size + guard, dtype=np.uint8)
        buffer[: original.size] = original
        buffer[original.size :] = CANARY
        launched[position] = replace(arg, address=int(buffer.ctypes.data))
        staged.append(_Staged(position, original, buffer, not param.is_const))
    return launched, staged


def finish(kernel: str, staged: list[_Staged]) -> None:
    """Checks every guard, then copies the kernel's writes back to the arguments."""
    for item in staged:
        guard = item.buffer[item.original.size :]
        changed = np.flatnonzero(guard != CANARY)
        if changed.size:
            raise KernelMemoryError(
                f"{kernel} wrote past the end of argument {item.position} "
                f"({item.original.size} bytes): at byte {item.original.size + int(changed[0])}"
            )
    for item in staged:
        if item.writable:
            item.original[...] = item.buffer[: item.original.size]
