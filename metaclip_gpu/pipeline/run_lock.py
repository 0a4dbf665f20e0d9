"""The lock of a run directory: one run (one process) writes into a directory at a time.

``<out_dir>/run.lock`` holds ``{"host", "pid", "token", "since", "what"}`` of the process that
holds it. It is made atomically: written under a temporary name, then hard-linked to
``run.lock`` (``os.link`` fails when the name exists), so a reader never sees a half-written
lock. A second run finds the lock and is refused with `RunDirBusy`, one line naming the
holder. The holder removes the lock when it finishes, also on an exception; a process killed
with SIGKILL leaves it behind:

- held by a process of THIS host that no longer runs (``os.kill(pid, 0)`` finds no such
  process, or the pid is this very process's, reused): the lock is stale. The next run
  renames it away (a rename: of two runs that find the same stale lock, one succeeds) and
  takes the directory;
- held on ANOTHER host: it cannot be checked from here, so the run is refused; the message
  says which file to delete once that run is known to be gone.

The lock is reentrant within a process (``curate`` holds it and calls the stage functions,
which take it too), so it does not keep two threads of one process apart. Dask workers never
take it: only the client process writes the manifest, the counts and the summary. On a file
system without hard links the lock is made with ``O_CREAT | O_EXCL`` instead.

In object storage (an ``s3://`` output) the lock is the object ``run.lock``, created only
where none exists (a conditional PUT, S3's ``If-None-Match: *``): of two runs, one gets it.
A lock of this host whose process is gone is deleted and taken again, as above (between the
read and the delete another run of this host could take it: a narrow window the local lock
closes with a rename, which object stores lack); a lock of another host is refused with the
same line naming the URL to delete. A store without conditional writes is refused with one
line (`storage_write.NoConditionalWrites`): there would be no lock at all. The lock has no
lease or heartbeat: a run killed on another host leaves it until someone deletes it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from metaclip_gpu import storage
from metaclip_gpu.storage import RemotePath

LOCK_NAME = "run.lock"
F = TypeVar("F", bound=Callable[..., Any])

_held: dict[Path | str, int] = {}  # resolved lock path -> depth, in this process
_held_guard = threading.Lock()


class RunDirBusy(RuntimeError):
    """Another run holds the directory's lock (the message names it)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def read_holder(lock: Path | RemotePath) -> dict[str, Any] | None:
    """The holder recorded in `lock`, or None when there is no lock (or it is unreadable)."""
    if isinstance(lock, RemotePath):
        from metaclip_gpu.storage_write import invalidate

        invalidate(lock)
    try:
        data = json.loads(storage.read_bytes(lock))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _describe(holder: dict[str, Any]) -> str:
    what = f" ({holder['what']})" if holder.get("what") else ""
    return f"pid {holder.get('pid')} on host {holder.get('host')}{what} since {holder.get('since')}"


def _create(lock: Path | RemotePath, content: bytes) -> bool:
    """Creates `lock` with `content` atomically; False when it exists."""
    if isinstance(lock, RemotePath):
        from metaclip_gpu.storage_write import write_bytes

        try:
            write_bytes(lock, content, exclusive=True)
        except FileExistsError:
            return False
        return True
    tmp = lock.with_name(f"{LOCK_NAME}.tmp-{os.getpid()}")
    tmp.write_bytes(content)
    try:
        os.link(tmp, lock)
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links here: exclusive create (content written just after)
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _remove_stale(lock: Path | RemotePath, holder: dict[str, Any]) -> None:
    """Renames a dead holder's lock away (only one of several runs succeeds) and deletes it
    (in object storage: deletes it if it still holds `holder`)."""
    if isinstance(lock, RemotePath):
        from metaclip_gpu.storage_write import remove

        if read_holder(lock) == holder:
            remove(lock)
        return
    aside = lock.with_name(f"{LOCK_NAME}.stale-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return  # another run removed it first
    if read_holder(aside) != holder:  # a live lock taken in between: put it back
        with contextlib.suppress(OSError):
            os.link(aside, lock)
    aside.unlink(missing_ok=True)


def acquire(out_dir: str | os.PathLike[str], what: str = "") -> dict[str, Any]:
    """Takes the lock of `out_dir` (made if needed) for this process; `RunDirBusy` when a live
    run holds it. Returns the holder record written."""
    directory = storage.location(out_dir)
    if isinstance(directory, Path):
        directory.mkdir(parents=True, exist_ok=True)
    lock = directory / LOCK_NAME
    mine = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "token": uuid.uuid4().hex,
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "what": what,
    }
    content = json.dumps(mine).encode()
    for _ in range(100):
        if _create(lock, content):
            return mine
        holder = read_holder(lock)
        if holder is None:  # vanished, or an exclusive create not yet written: try again
            time.sleep(0.01)
            continue
        same_host = holder.get("host") == mine["host"]
        pid = holder.get("pid")
        # this process does not hold the lock (else no acquire): a lock with its pid is an
        # earlier process's whose pid was reused (containers restart from the same pids)
        if same_host and isinstance(pid, int) and (pid == os.getpid() or not _pid_alive(pid)):
            _remove_stale(lock, holder)
            continue
        hint = "wait for it to finish" if same_host else f"if that run is gone, delete {lock}"
        raise RunDirBusy(
            f"{directory} is in use by {_describe(holder)}: {hint}, or use another --output"
        )
    raise RunDirBusy(f"{directory}: could not take the lock {lock}")


def release(out_dir: str | os.PathLike[str], holder: dict[str, Any]) -> None:
    """Removes the lock of `out_dir` if it is still `holder`'s."""
    lock = storage.location(out_dir) / LOCK_NAME
    if read_holder(lock) != holder:
        return
    if isinstance(lock, RemotePath):
        from metaclip_gpu.storage_write import remove

        remove(lock)
    else:
        lock.unlink(missing_ok=True)


@contextlib.contextmanager
def run_lock(out_dir: str | os.PathLike[str], what: str = "") -> Iterator[None]:
    """Holds the lock of `out_dir` for the block (reentrant within this process)."""
    where = storage.location(out_dir)
    key = where.url if isinstance(where, RemotePath) else (where / LOCK_NAME).resolve()
    with _held_guard:
        depth = _held.get(key, 0)
        _held[key] = depth + 1
    holder = None
    try:
        if depth == 0:
            holder = acquire(out_dir, what)
        yield
    finally:
        with _held_guard:
            _held[key] -= 1
            if _held[key] == 0:
                del _held[key]
        if holder is not None:
            release(out_dir, holder)


def holds_run_lock(what: str, param: str = "out_dir") -> Callable[[F], F]:
    """Decorator: the call holds the lock of the directory passed as argument `param`."""

    def decorate(function: F) -> F:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            out_dir = signature.bind(*args, **kwargs).arguments[param]
            with run_lock(out_dir, what):
                return function(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
