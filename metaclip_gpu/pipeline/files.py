"""The run directory's shared names and file handling: where each stage's outputs go
(``matches/``, ``entry_counts.*``), each shard's output name, temporary files a killed run left
(`remove_stale_tmp`), the test hook that slows a stage down (`delay_hook`) and the progress bar.

Test hook: when the environment variable ``METACLIP_GPU_TEST_SHARD_DELAY`` holds a number of
seconds, `match_shard` sleeps half of it before renaming its output and half after, before the
manifest record, and the balance stage half before writing each curated file, so a test can
kill a run at the interesting moments. Unset in normal use.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

MATCHES_DIR = "matches"
COUNTS_NPY = "entry_counts.npy"
COUNTS_PARQUET = "entry_counts.parquet"
# In process on the CPU, two shards are worked on at once, so one's reading and writing
# (pyarrow, GIL released) overlap the other's matching: 1.4x on 2 cores. One on the GPU.
SHARDS_IN_FLIGHT = 2
DELAY_ENV = "METACLIP_GPU_TEST_SHARD_DELAY"
_TMP_RE = re.compile(r"\.tmp-(\d+)$")
# What versions before the `.tmp-<pid>` names left: tempfile.mkstemp's ``.<name>.<8 chars>.tmp``
# (the counts files). No pid says whose: stale whenever the run lock is ours.
_OLD_TMP_RE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
ENTRY_IDS_TYPE = pa.list_(pa.int32())
# Rows of a match file decoded at a time by the stages that read one. Decoding ``entry_ids`` (a
# list column) 64k rows at a time rather than a whole 125k-row chunk cost 0.039 s of CPU instead
# of 0.053 s for a dense shard's 4.97M ids (median of 40 alternated reads, the batches then
# combined): the decoder's buffers stay in cache. Only where the values do not depend on the
# batches (not where floats are summed batch by batch: target_size, balance_shard._file_stats).
MATCH_READ_ROWS = 1 << 16


def output_name(shard_name: str) -> str:
    """A file name for a shard's matches: its name made safe, plus 8 hex digits of its SHA-1
    (shard names are relative paths; ``a/b.tsv`` and ``a_b.tsv`` must not collide)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", shard_name).strip("._-") or "shard"
    digest = hashlib.sha1(shard_name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{safe[:150]}-{digest}.parquet"


def delay_hook() -> None:
    """Sleeps half of ``$METACLIP_GPU_TEST_SHARD_DELAY`` seconds when it is set (module doc)."""
    value = os.environ.get(DELAY_ENV)
    if value:
        time.sleep(float(value) / 2)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be fsynced
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_stale_tmp(directory: Path) -> list[Path]:
    """Deletes the ``*.tmp-<pid>`` files in `directory` of processes that no longer run (on
    this host): outputs a killed run left half-written. Also the ``.<name>.XXXXXXXX.tmp``
    files of older versions (the caller holds the run lock, so no writer of theirs lives)."""
    removed = []
    if not directory.is_dir():
        return removed
    for path in directory.iterdir():
        found = _TMP_RE.search(path.name)
        if found is None:
            if _OLD_TMP_RE.match(path.name) and path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
            continue
        pid = int(found.group(1))
        if pid != os.getpid():
            try:
                os.kill(pid, 0)
                continue  # alive (or a zombie not yet reaped)
            except ProcessLookupError:
                pass
            except PermissionError:
                continue  # alive, another user's
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def remove_orphans(manifest: Any, folder: str, keep: tuple[str, ...] = ()) -> list[str]:
    """In a run directory in object storage (`storage_write`): deletes the objects under
    `folder` (relative to the manifest's directory) that no latest record of `manifest` (a
    `manifest.Manifest`) names, and the record objects later ones superseded: what killed or
    redone attempts left; `folder` "" is the whole directory (then `keep` names the other
    files to keep). The caller holds the run lock. Nothing for a local directory
    (`remove_stale_tmp` is its counterpart). Returns the names deleted."""
    from metaclip_gpu.storage import RemotePath
    from metaclip_gpu.storage_write import sweep

    root = manifest.out_dir
    if not isinstance(root, RemotePath):
        return []
    wanted = {r.output for r in manifest.records.values() if r.output is not None}
    wanted |= set(manifest.objects.values()) | set(keep)
    if not folder:
        return sweep(root, root, wanted)
    return sweep(root / folder, root, wanted) + sweep(manifest.folder, root, wanted)


def _progress(enabled: bool):  # -> a rich Progress, or progress lines in a log
    from metaclip_gpu.pipeline.progress import stage_progress

    return stage_progress(enabled)
