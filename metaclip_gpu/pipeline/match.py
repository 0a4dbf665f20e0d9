"""Stage ``match``: every shard's texts -> entry ids, persisted per shard (one Parquet file in
``<out_dir>/matches/``, `shard_match`), idempotent and resumable, in process or as tasks on a
dask cluster (`run_match`).

A shard the manifest says is done is not read again; a shard that cannot be read
(`read.ShardError`) gets a record with its ``error`` and no output, and the run goes on. Other
exceptions (bugs, out of memory) propagate. `run_match` deletes temporary files whose writer
process is gone (same host), so they never pile up; the count stage reads only the outputs the
manifest names, so a stray file is never counted. `match_records` is what the later stages
ask of the match stage: each shard's up-to-date record.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from metaclip_gpu import storage
from metaclip_gpu.engine.index import MetadataIndex, default_cache_dir, local_cache_dir
from metaclip_gpu.pipeline import rundir
from metaclip_gpu.pipeline.checksums import adopt_checksum
from metaclip_gpu.pipeline.cluster import run_backend
from metaclip_gpu.pipeline.durable import commit, finished_batches, results_of
from metaclip_gpu.pipeline.files import (
    MATCHES_DIR,
    SHARDS_IN_FLIGHT,
    _progress,
    output_name,
    remove_orphans,
    remove_stale_tmp,
)
from metaclip_gpu.pipeline.manifest import Manifest, ShardRecord
from metaclip_gpu.pipeline.read import (
    ReadOptions,
    Shard,
    ShardReport,
    find_shards,
)
from metaclip_gpu.pipeline.run_lock import holds_run_lock
from metaclip_gpu.pipeline.shard_counts import RunCounts
from metaclip_gpu.pipeline.shard_match import (
    LOADED,
    MatchIndex,
    MatchReport,
    _report_from_record,
    match_shard_output,
    stage_config,
)
from metaclip_gpu.storage import Location, RemotePath


@holds_run_lock("match")
def run_match(
    shards_spec: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | Sequence[Shard],
    metadata_path: str | os.PathLike[str] | MatchIndex,
    out_dir: str | os.PathLike[str],
    *,
    options: ReadOptions | None = None,
    backend: str = "cpu",
    threads: int | None = None,
    progress: bool = True,
    retry_errors: bool = False,
    client: Any = None,
    cache_dir: str | os.PathLike[str] | None = None,
    matched: RunCounts | None = None,
) -> list[ShardReport]:
    """Runs the match stage over every shard of `shards_spec` into `out_dir`, resumably.

    Loads the index once; a shard the manifest says is done (`Manifest.is_done`) is not read
    again (its report, rebuilt from the record, has ``reused=True``); a shard whose record is
    missing, stale (input or config changed) or whose output is missing or unreadable is
    redone. Shards recorded as unreadable are retried only with `retry_errors`. Reports come
    in shard order. `metadata_path` may also be a loaded `MetadataIndex` or, for worldwide
    curation, a `languages.LanguageIndexes` (then the output has a ``lang`` column).

    `client`: a `distributed.Client` (`cluster.make_client`): the shards to redo
    run as tasks on its workers (`match_shard_output`), each worker loading the index from the
    on-disk cache `cache_dir` (default `index.default_cache_dir()`; built here first, so
    workers only read it; a loaded `MetadataIndex` is broadcast instead); each task returns
    its record and this process alone appends it to the manifest. `threads` None then means
    the worker's ``nthreads``. None runs every shard in this process.

    `matched`: each shard matched now hands its entry counts over to it once its record is
    appended (`shard_counts.RunCounts`, for the count stage; reused shards are not in it).
    """
    started = time.perf_counter()
    options = options or ReadOptions()
    backend = run_backend(backend, client)  # once, here: the tasks receive "cpu" or "gpu"
    if isinstance(shards_spec, Sequence) and shards_spec and isinstance(shards_spec[0], Shard):
        shards = list(shards_spec)  # type: ignore[arg-type]
    else:
        shards = find_shards(shards_spec)  # type: ignore[arg-type]
    if isinstance(metadata_path, LOADED):
        index = metadata_path
    elif client is not None:
        cache_dir = local_cache_dir(cache_dir) if cache_dir is not None else default_cache_dir()
        index = MetadataIndex.load(metadata_path, cache=cache_dir)
    else:
        index = MetadataIndex.load(metadata_path)
    out_dir = storage.location(out_dir)
    if isinstance(out_dir, Path):
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_tmp(out_dir / MATCHES_DIR)
    manifest = Manifest.load(out_dir)
    remove_orphans(manifest, MATCHES_DIR)  # in object storage: what killed attempts left
    config = stage_config(index, options)
    rundir.begin_match(out_dir, index, options, config, [s.name for s in shards])
    if client is not None:
        return _recorded(out_dir, started, _run_match_dask(
            client,
            shards,
            metadata_path if isinstance(metadata_path, LOADED) else storage.location(metadata_path),
            cache_dir,
            out_dir,
            manifest,
            config,
            options=options,
            backend=backend,
            threads=threads,
            progress=progress,
            retry_errors=retry_errors,
            matched=matched,
        ))  # fmt: skip
    reports: dict[str, ShardReport] = {}
    in_flight = SHARDS_IN_FLIGHT if backend == "cpu" else 1
    with _progress(progress) as bar, concurrent.futures.ThreadPoolExecutor(in_flight) as pool:
        task = bar.add_task("match", total=len(shards), rows=0)
        rows = 0
        lock = threading.Lock()

        def advance_rows(n: int) -> None:
            nonlocal rows
            with lock:
                rows += n
                bar.update(task, rows=rows)

        futures = []
        for shard in shards:
            record = manifest.get(shard.name)
            retry = retry_errors and record is not None and record.error is not None
            if record is not None and not retry and manifest.is_done(shard, config=config):
                reports[shard.name] = _report_from_record(shard, record, manifest)
                advance_rows(reports[shard.name].rows)
                bar.update(task, advance=1)
                continue
            futures.append(
                pool.submit(
                    match_shard_output,
                    shard,
                    index,
                    out_dir,
                    options=options,
                    backend=backend,
                    threads=threads,
                    config=config,
                    on_rows=advance_rows,
                    durable=False,  # this thread fsyncs the file before its record
                )
            )
        try:
            for batch in finished_batches(futures):
                finished, failure = results_of(batch)
                # only this thread appends: each file and its folder fsynced first
                commit([(manifest, record, _local(report)) for report, record in finished])
                for report, record in finished:
                    _hand_over(report, record, matched)
                    reports[record.shard] = report
                    bar.update(task, advance=1)
                if failure is not None:
                    raise failure
        except BaseException:
            for future in futures:
                future.cancel()  # the unrecorded shards are redone by the next run
            raise
    return _recorded(out_dir, started, [reports[shard.name] for shard in shards])


def _local(report: MatchReport) -> list[Path]:
    """The shard's output to make durable before its record: a local file (none on error)."""
    return [report.output] if isinstance(report.output, Path) else []


def _hand_over(report: MatchReport, record: ShardRecord, matched: RunCounts | None) -> None:
    """Gives the shard's counts, now that its record is appended, to `matched`; the report
    keeps none (the reports of a run of many shards stay small)."""
    if matched is not None:
        matched.add(record, report.counts)
    report.counts = None


def _recorded(out_dir: Location, started: float, reports: list[ShardReport]) -> list[ShardReport]:
    """`reports`, after recording the match stage's figures in the run record (`rundir`) (and
    in object storage deleting the outputs and records this run superseded)."""
    if isinstance(out_dir, RemotePath):
        remove_orphans(Manifest.load(out_dir), MATCHES_DIR)
    matched = sum(not getattr(r, "reused", False) for r in reports)
    rundir.end_match(out_dir, matched, round(time.perf_counter() - started, 3))
    return reports


def _match_task(
    shard: Shard,
    metadata: Path | MatchIndex,
    cache_dir: Path | None,
    out_dir: Location,
    *,
    options: ReadOptions,
    backend: str,
    threads: int | None,
    config: str,
) -> tuple[MatchReport, ShardRecord]:
    """One shard's match on a dask worker (the index from the worker's cache of the file)."""
    from metaclip_gpu.pipeline.cluster import worker_index, worker_threads

    index = metadata if isinstance(metadata, LOADED) else worker_index(metadata, cache_dir)
    return match_shard_output(
        shard,
        index,
        out_dir,
        options=options,
        backend=backend,
        threads=threads if threads is not None else worker_threads(),
        config=config,
    )


def _run_match_dask(
    client: Any,
    shards: list[Shard],
    metadata: Path | MatchIndex,
    cache_dir: Path | None,
    out_dir: Location,
    manifest: Manifest,
    config: str,
    *,
    options: ReadOptions,
    backend: str,
    threads: int | None,
    progress: bool,
    retry_errors: bool,
    matched: RunCounts | None,
) -> list[ShardReport]:
    from metaclip_gpu.pipeline.cluster import results_as_completed

    reports: dict[str, ShardReport] = {}
    todo: list[Shard] = []
    for shard in shards:
        record = manifest.get(shard.name)
        retry = retry_errors and record is not None and record.error is not None
        if record is not None and not retry and manifest.is_done(shard, config=config):
            reports[shard.name] = _report_from_record(shard, record, manifest)
        else:
            todo.append(shard)
    with _progress(progress) as bar:
        task = bar.add_task("match", total=len(shards), rows=0)
        rows = sum(r.rows for r in reports.values())
        bar.update(task, advance=len(reports), rows=rows)
        if todo:
            if isinstance(metadata, LOADED):
                metadata = client.scatter(metadata, broadcast=True)
            futures = [
                client.submit(
                    _match_task,
                    shard,
                    metadata,
                    cache_dir,
                    out_dir,
                    options=options,
                    backend=backend,
                    threads=threads,
                    config=config,
                    pure=False,
                    key=f"match-{output_name(shard.name)}-{uuid.uuid4().hex[:8]}",
                )
                for shard in todo
            ]
            try:
                for report, record in results_as_completed(client, futures):
                    manifest.append(record)  # only here: one process appends to the manifest
                    adopt_checksum(report.verified)  # the worker hashed it: not again here
                    _hand_over(report, record, matched)
                    reports[record.shard] = report
                    rows += report.rows
                    bar.update(task, advance=1, rows=rows)
            except BaseException:
                client.cancel(futures)  # the unrecorded shards are redone by the next run
                raise
            if isinstance(out_dir, Path):
                remove_stale_tmp(out_dir / MATCHES_DIR)  # what workers killed mid-write left
    return [reports[shard.name] for shard in shards]


def shard_list(spec: Any) -> list[Shard]:
    if isinstance(spec, Sequence) and spec and all(isinstance(s, Shard) for s in spec):
        return list(spec)
    return find_shards(spec)


def match_records(out_dir: Location, shards: Sequence[Shard]) -> dict[str, ShardRecord]:
    """Each shard's up-to-date match record; RuntimeError naming the shards without one."""
    manifest = Manifest.load(out_dir)
    config = rundir.match_config_id(out_dir)  # a record of another config is not up to date
    stale = [s.name for s in shards if not manifest.is_done(s, config=config)]
    if stale:
        listed = ", ".join(stale[:5]) + (" ..." if len(stale) > 5 else "")
        raise RuntimeError(
            f"{out_dir}: {len(stale)} shard(s) have no up-to-date match output ({listed}); "
            "run the match and count stages first"
        )
    return {s.name: manifest.records[s.name] for s in shards}
