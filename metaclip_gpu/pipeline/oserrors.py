"""Operating-system errors told in one line: the path, what happened, what to do.

`with_path` gives an `OSError` raised without a file name (pyarrow's writers, ``os.write``,
``np.save`` to an open file) the path being written, so `describe` can name it. The command
line prints `describe`'s line instead of a traceback (`metaclip_gpu.cli.errors`).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

RERUN = "then rerun the same command: what is already written is kept and reused"
ADVICE: dict[int, str] = {
    errno.ENOSPC: f"the disk is full: free space on it or give another --output, {RERUN}",
    errno.EDQUOT: f"your disk quota is used up: free space or give another --output, {RERUN}",
    errno.EROFS: f"the file system is read-only: give an --output on a writable one, {RERUN}",
    errno.EACCES: f"check this path's permissions (an --output must be writable), {RERUN}",
    errno.EPERM: f"check this path's permissions (an --output must be writable), {RERUN}",
    errno.ENOTDIR: "a part of this path is a file, not a folder: give another path",
    errno.EISDIR: "this is a folder where a file was expected: give another path",
    errno.EEXIST: "this path already exists as something else: give another path",
    errno.ENOENT: "no such file or folder: check the path",
    errno.EMFILE: f"too many open files: raise the limit (ulimit -n), {RERUN}",
    errno.ENFILE: f"the system has too many open files: close some, {RERUN}",
    errno.EIO: f"input/output error: check the disk or network file system, {RERUN}",
    errno.ENOMEM: f"out of memory: use fewer --workers or smaller shards, {RERUN}",
}


@contextmanager
def with_path(path: str | os.PathLike[str]) -> Iterator[None]:
    """Re-raises an `OSError` that has an errno but no file name with `path` as its name."""
    try:
        yield
    except OSError as err:
        if err.filename is not None or err.errno is None:
            raise
        raise OSError(err.errno, err.strerror or os.strerror(err.errno), str(path)) from err


def describe(err: OSError, where: str | os.PathLike[str] | None = None) -> str:
    """One line for `err`: its path (else `where`, the folder being written), the system's
    words and, for the common errnos, what to do."""
    if err.filename is not None:
        path = str(err.filename)
        if err.filename2 is not None:
            path += f" -> {err.filename2}"
    elif where is not None:
        path = f"under {where}"
    else:
        path = ""
    reason = err.strerror or str(err) or type(err).__name__
    if err.errno is not None:
        reason += f" (errno {err.errno}, {errno.errorcode.get(err.errno, '?')})"
    advice = ADVICE.get(err.errno) if err.errno is not None else None
    parts = [part for part in (path, reason, advice) if part]
    return ": ".join(parts)
