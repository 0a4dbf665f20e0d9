"""Making a stage's finished output files durable, then recording them, off the compute threads.

In process, a stage's compute threads write each output file under a temporary name and rename
it into place, and go on with the next shard; the stage's main thread, the one that appends
the manifest records, is its durability thread: `commit` fsyncs the files of every shard
finished meanwhile, then their folders (once each: the renames that named them), and only
then appends their records (one fsync a manifest for them all: `Manifest.batch`). So a
record is never on disk before the file it names is durable under its final name, and the
compute threads never wait on the disk. A failure there (the file named) fails the stage as
before: the shards of that batch get no record and are redone by the next run, which finds
their files under their final names with no record (or another checksum) and overwrites them.
A run killed between the fsync and the append leaves the same state. The rename comes before
the fsync here (the compute thread does not wait for the disk): a power cut in between can
leave a file under its final name with lost bytes, which no record vouches for (none names
it, or an older record's checksum no longer matches), so it is redone.

`finished_batches` and `ordered_batches` hand the main thread every shard finished since its
last commit, so several files share one folder fsync and several records one manifest fsync.

Measured (``bench/profile/profile_stages.py``, CC3M x 64 in 8 shards, 2 shared cores, 4 runs
each): before, the compute threads waited 0.050-0.076 s in fsync during the match stage (4-17 ms
a shard); now none, and the main thread's fsyncs (curated files included, which before were
never fsynced) end 0.006-0.035 s after a stage's last shard. The stages' walls moved less than
this machine's noise: durability waits are not where their time goes.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from metaclip_gpu.pipeline.files import _fsync_dir
from metaclip_gpu.pipeline.manifest import Manifest, ShardRecord
from metaclip_gpu.pipeline.oserrors import with_path


def fsync_file(path: Path) -> None:
    """Flushes `path`'s data to disk (an error names the file)."""
    with with_path(path):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def make_durable(paths: Iterable[Path]) -> None:
    """fsyncs each file of `paths`, then each of their folders once (their renames)."""
    folders: dict[Path, None] = {}
    for path in paths:
        fsync_file(path)
        folders.setdefault(path.parent)
    for folder in folders:
        _fsync_dir(folder)


def commit(entries: Sequence[tuple[Manifest, ShardRecord, Sequence[Path]]]) -> None:
    """Makes every local file of `entries` durable (`make_durable`), then appends each record
    to its manifest, in order (one fsync a manifest: `Manifest.batch`)."""
    make_durable(path for _, _, paths in entries for path in paths)
    manifests = {id(manifest): manifest for manifest, _, _ in entries}
    with contextlib.ExitStack() as stack:
        for manifest in manifests.values():
            stack.enter_context(manifest.batch())
        for manifest, record, _ in entries:
            manifest.append(record)


def finished_batches(futures: Sequence[Future[Any]]) -> Iterator[list[Future[Any]]]:
    """`futures` in batches as they finish: each batch is every future done since the last
    one (at least one), in submission order."""
    position = {future: i for i, future in enumerate(futures)}  # a stage may have 100k shards
    pending = set(futures)
    while pending:
        done, pending = concurrent.futures.wait(
            pending, return_when=concurrent.futures.FIRST_COMPLETED
        )
        yield sorted(done, key=position.__getitem__)


def ordered_batches(futures: Sequence[Future[Any]]) -> Iterator[list[Future[Any]]]:
    """`futures` in submission order, in batches: the next one (waited for) and those after it
    already done."""
    start = 0
    while start < len(futures):
        concurrent.futures.wait([futures[start]])
        end = start + 1
        while end < len(futures) and futures[end].done():
            end += 1
        yield list(futures[start:end])
        start = end


def results_of(batch: Sequence[Future[Any]]) -> tuple[list[Any], BaseException | None]:
    """The results of `batch`'s finished futures up to the first that raised, and its
    exception (the shards finished before it are still recorded, then it fails the stage)."""
    results = []
    for future in batch:
        failure = future.exception()
        if failure is not None:
            return results, failure
        results.append(future.result())
    return results, None
