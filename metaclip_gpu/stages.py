"""Stages ``match`` (persisted per shard, idempotent, resumable) and ``count``, single process.

`match_shard` streams one shard (`read.iter_shard_checked`), matches each chunk's ``text`` and
writes ONE Parquet file ``<out_dir>/matches/<safe name>.parquet`` with the columns

- ``shard``: dictionary<int32, string>, the shard's name (`read.Shard.name`);
- ``row``: int64, the row's position in its shard (``chunk.first_row + i``);
- ``key``: the input's key column, only when the shard has one;
- ``entry_ids``: list<int32>, the row's sorted distinct entry ids (empty for a null text).

Crash safety: the file is written under ``<name>.parquet.tmp-<pid>`` in the same folder,
fsynced, renamed into place with `os.replace`, and only then recorded in the manifest
(`metaclip_gpu.manifest`). A run killed at any point leaves each shard with no record (it is
redone, overwriting any output already renamed) or a record whose output exists. `run_match`
deletes temporary files whose writer process is gone (same host), so they never pile up; the
count stage reads only the outputs the manifest names, so a stray file is never counted.

A shard that cannot be read (`read.ShardError`) gets a record with its ``error`` and no
output, and the run goes on. Other exceptions (bugs, out of memory) propagate.

Test hook: when the environment variable ``METACLIP_GPU_TEST_SHARD_DELAY`` holds a number of
seconds, `match_shard` sleeps half of it before renaming its output and half after, before the
manifest record, and the balance stage half before writing each curated file, so a test can
kill a run at the interesting moments. Unset in normal use.

`count_matches` adds up `count.entry_counts` of each output's flattened ``entry_ids`` (only
that column is read, one batch at a time); `run_count` saves ``entry_counts.npy`` (MetaCLIP's
format) and ``entry_counts.parquet`` (entry id, entry string, count).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from metaclip_gpu import rundir
from metaclip_gpu.checksums import checksum_matches, file_checksum, remember
from metaclip_gpu.cluster import run_backend
from metaclip_gpu.count import counts_table, entry_counts, reduce_counts, save_entry_counts
from metaclip_gpu.english_only import NOT_ENGLISH, EnglishOnly
from metaclip_gpu.index import MetadataIndex, default_cache_dir
from metaclip_gpu.languages import LanguageIndexes
from metaclip_gpu.manifest import Manifest, ShardRecord, fingerprint
from metaclip_gpu.match import match
from metaclip_gpu.oserrors import with_path
from metaclip_gpu.read import (
    ReadOptions,
    Shard,
    ShardChunk,
    ShardError,
    ShardReport,
    find_shards,
    iter_shard_checked,
)
from metaclip_gpu.run_lock import holds_run_lock

MATCHES_DIR = "matches"
COUNTS_NPY = "entry_counts.npy"
COUNTS_PARQUET = "entry_counts.parquet"
LOADED = (MetadataIndex, LanguageIndexes, EnglishOnly)  # a loaded index, not a metadata path
MatchIndex = MetadataIndex | LanguageIndexes | EnglishOnly
# In process on the CPU, two shards are worked on at once, so one's reading and writing
# (pyarrow, GIL released) overlap the other's matching: 1.4x on 2 cores. One on the GPU.
SHARDS_IN_FLIGHT = 2
DELAY_ENV = "METACLIP_GPU_TEST_SHARD_DELAY"
OUTPUT_VERSION = 1  # bump when the match files' layout changes: old outputs are then redone
_TMP_RE = re.compile(r"\.tmp-(\d+)$")
ENTRY_IDS_TYPE = pa.list_(pa.int32())
RECORDED_LINES = 20  # line numbers of a shard's skipped rows kept in its manifest record
SHARD_TYPE = pa.dictionary(pa.int32(), pa.string())


@dataclass
class MatchReport(ShardReport):
    """A `ShardReport` plus where the output went, how long it took, and whether the
    shard was found done in the manifest (``reused``: no work was done this run)."""

    output: Path | None = None
    seconds: float = 0.0
    reused: bool = False


# ---------------------------------------------------------------------- names and config
def output_name(shard_name: str) -> str:
    """A file name for a shard's matches: its name made safe, plus 8 hex digits of its SHA-1
    (shard names are relative paths; ``a/b.tsv`` and ``a_b.tsv`` must not collide)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", shard_name).strip("._-") or "shard"
    digest = hashlib.sha1(shard_name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{safe[:150]}-{digest}.parquet"


def stage_config(index: MatchIndex, options: ReadOptions) -> str:
    """What, besides the input file, decides a shard's match output: the metadata (its digest;
    "" for an index built from a list, then only its length; per-language metadata: all their
    digests, the language column and what happens to unknown languages; the language
    identifier, `lid.LidModel.describe`) and the options that pick the text/key columns and
    parse lines. A record with another config is redone."""
    if isinstance(index, LanguageIndexes):
        # "stripped": texts are stripped before matching (older worldwide outputs are redone)
        metadata: Any = [
            index.digest,
            index.lang_column,
            index.unknown,
            index.lid.describe(),
            "stripped",
        ]
    elif isinstance(index, EnglishOnly):
        metadata = index.config()
    else:
        metadata = [index.stats.digest, index.stats.padding]
    payload = {
        "version": OUTPUT_VERSION,
        "metadata": metadata,
        "n_entries": len(index),
        "text_column": options.text_column,
        "key_column": options.key_column,
        "tsv_columns": list(options.tsv_columns) if options.tsv_columns is not None else None,
        "header": options.header,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------- match, one shard
def _chunk_table(
    chunk: ShardChunk,
    index: MatchIndex,
    backend: str,
    threads: int | None,
    report: ShardReport,
) -> pa.Table:
    n = chunk.num_rows
    lang: pa.Array | None = None
    texts = chunk.table.column("text")
    if isinstance(index, EnglishOnly):  # MetaCLIP 1's LID filter: other texts match nothing
        texts, dropped = index.english_texts(texts, chunk.shard.path)
        report.skipped[NOT_ENGLISH] += dropped
        index = index.index
    if isinstance(index, LanguageIndexes):
        codes = index.row_codes(chunk.table, chunk.shard.path)
        entry_ids = index.match_rows(texts, codes, backend, threads)
        lang = index.names_of(codes)
    else:
        result = match(texts, index, backend=backend, threads=threads)
        entry_ids = result.to_arrow()
    if entry_ids.type != ENTRY_IDS_TYPE:  # large_list only past 2**31 ids in one chunk
        entry_ids = entry_ids.cast(ENTRY_IDS_TYPE)
    shard = pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(n, dtype=np.int32)), pa.array([chunk.shard.name], pa.string())
    )
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        "shard": shard,
        "row": pa.array(np.arange(chunk.first_row, chunk.first_row + n, dtype=np.int64)),
    }
    if "key" in chunk.table.column_names:
        key = chunk.table.column("key")
        columns["key"] = key.cast(pa.string()) if pa.types.is_null(key.type) else key
    if lang is not None:
        columns["lang"] = lang
    columns["entry_ids"] = entry_ids
    return pa.table(columns)


def _empty_table() -> pa.Table:
    return pa.table(
        {
            "shard": pa.array([], SHARD_TYPE),
            "row": pa.array([], pa.int64()),
            "entry_ids": pa.array([], ENTRY_IDS_TYPE),
        }
    )


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


def match_shard(
    shard: Shard,
    index: MatchIndex,
    out_dir: str | os.PathLike[str],
    *,
    options: ReadOptions | None = None,
    backend: str = "cpu",
    threads: int | None = None,
    manifest: Manifest | None = None,
    config: str | None = None,
    on_rows: Callable[[int], None] | None = None,
) -> MatchReport:
    """Matches one shard into ``<out_dir>/matches/`` and records it in the manifest.

    `manifest`: the loaded `Manifest` of `out_dir` to append to (loaded here when None);
    `config`: `stage_config` (computed here when None); `on_rows(n)` is called after each
    chunk of n rows (a progress bar). Returns the shard's report; a shard that cannot be read
    has ``error`` set and ``output`` None.
    """
    options = options or ReadOptions()
    manifest = manifest if manifest is not None else Manifest.load(out_dir)
    config = config if config is not None else stage_config(index, options)
    report, record = match_shard_output(
        shard,
        index,
        out_dir,
        options=options,
        backend=backend,
        threads=threads,
        config=config,
        on_rows=on_rows,
    )
    manifest.append(record)
    return report


def match_shard_output(
    shard: Shard,
    index: MatchIndex,
    out_dir: str | os.PathLike[str],
    *,
    options: ReadOptions,
    backend: str,
    threads: int | None,
    config: str,
    on_rows: Callable[[int], None] | None = None,
) -> tuple[MatchReport, ShardRecord]:
    """`match_shard` without the manifest: writes the output (temp + rename) and returns the
    report and the record to append. A dask worker runs this and the client appends, so only
    one process ever appends to the manifest."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    matches_dir = out_dir / MATCHES_DIR
    matches_dir.mkdir(parents=True, exist_ok=True)
    input_fingerprint = fingerprint(shard.path)  # before reading: a change meanwhile is redone
    name = output_name(shard.name)
    final = matches_dir / name
    tmp = matches_dir / f"{name}.tmp-{os.getpid()}"
    report = MatchReport(shard)
    renamed = False
    with with_path(tmp), open(tmp, "wb") as sink:
        try:
            writer: pq.ParquetWriter | None = None
            try:
                for chunk in iter_shard_checked(shard, options, report):
                    if chunk.num_rows == 0:
                        continue
                    try:
                        table = _chunk_table(chunk, index, backend, threads, report)
                    except ShardError as err:  # e.g. a worldwide shard without languages
                        report.error = str(err)
                        break
                    if on_rows is not None:
                        on_rows(chunk.num_rows)
                    if writer is None:
                        writer = pq.ParquetWriter(sink, table.schema)
                    else:
                        table = table.cast(writer.schema)
                    writer.write_table(table)
                if report.error is None and writer is None:
                    writer = pq.ParquetWriter(sink, _empty_table().schema)
            finally:
                if writer is not None:
                    writer.close()
            if report.error is None:
                sink.flush()
                os.fsync(sink.fileno())
                checksum = file_checksum(tmp)  # just written: read from the page cache
                delay_hook()
                os.replace(tmp, final)
                renamed = True
                _fsync_dir(matches_dir)
        finally:
            if not renamed:
                tmp.unlink(missing_ok=True)
    if report.error is not None:
        checksum = ""
        final.unlink(missing_ok=True)  # an output of an earlier version of this input
    else:
        remember(final, checksum)
        delay_hook()
        report.output = final
    report.seconds = time.perf_counter() - start
    record = ShardRecord(
        shard=shard.name,
        output=None if report.error is not None else f"{MATCHES_DIR}/{name}",
        rows=report.rows,
        skipped=dict(sorted(report.skipped.items())),
        null_texts=report.null_texts,
        error=report.error,
        seconds=round(report.seconds, 6),
        fingerprint=input_fingerprint,
        config=config,
        path=str(shard.path),
        invalid_lines=report.invalid_lines[:RECORDED_LINES],
        checksum=checksum,
    )
    return report, record


def _report_from_record(shard: Shard, record: ShardRecord, manifest: Manifest) -> MatchReport:
    report = MatchReport(shard, rows=record.rows, error=record.error, null_texts=record.null_texts)
    report.skipped.update(record.skipped)
    report.invalid_lines = list(record.invalid_lines)
    report.output = manifest.output_path(record)
    report.seconds = record.seconds
    report.reused = True
    return report


def remove_stale_tmp(directory: Path) -> list[Path]:
    """Deletes the ``*.tmp-<pid>`` files in `directory` of processes that no longer run (on
    this host): outputs a killed run left half-written."""
    removed = []
    if not directory.is_dir():
        return removed
    for path in directory.iterdir():
        found = _TMP_RE.search(path.name)
        if found is None:
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


# ---------------------------------------------------------------------- match, all shards
def _progress(enabled: bool):  # -> a rich Progress, or progress lines in a log
    from metaclip_gpu.progress import stage_progress

    return stage_progress(enabled)


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
) -> list[ShardReport]:
    """Runs the match stage over every shard of `shards_spec` into `out_dir`, resumably.

    Loads the index once; a shard the manifest says is done (`Manifest.is_done`) is not read
    again (its report, rebuilt from the record, has ``reused=True``); a shard whose record is
    missing, stale (input or config changed) or whose output is missing or unreadable is
    redone. Shards recorded as unreadable are retried only with `retry_errors`. Reports come
    in shard order. `metadata_path` may also be a loaded `MetadataIndex` or, for worldwide
    curation, a `languages.LanguageIndexes` (then the output has a ``lang`` column).

    `client`: a `distributed.Client` (`metaclip_gpu.cluster.make_client`): the shards to redo
    run as tasks on its workers (`match_shard_output`), each worker loading the index from the
    on-disk cache `cache_dir` (default `index.default_cache_dir()`; built here first, so
    workers only read it; a loaded `MetadataIndex` is broadcast instead); each task returns
    its record and this process alone appends it to the manifest. `threads` None then means
    the worker's ``nthreads``. None runs every shard in this process.
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
        cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        index = MetadataIndex.load(metadata_path, cache=cache_dir)
    else:
        index = MetadataIndex.load(metadata_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(out_dir / MATCHES_DIR)
    manifest = Manifest.load(out_dir)
    config = stage_config(index, options)
    rundir.begin_match(out_dir, index, options, config, [s.name for s in shards])
    if client is not None:
        return _recorded(out_dir, started, _run_match_dask(
            client,
            shards,
            metadata_path if isinstance(metadata_path, LOADED) else Path(metadata_path),
            cache_dir,
            out_dir,
            manifest,
            config,
            options=options,
            backend=backend,
            threads=threads,
            progress=progress,
            retry_errors=retry_errors,
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
                )
            )
        try:
            for future in concurrent.futures.as_completed(futures):
                report, record = future.result()
                manifest.append(record)  # only this thread appends
                reports[record.shard] = report
                bar.update(task, advance=1)
        except BaseException:
            for future in futures:
                future.cancel()  # the unrecorded shards are redone by the next run
            raise
    return _recorded(out_dir, started, [reports[shard.name] for shard in shards])


def _recorded(out_dir: Path, started: float, reports: list[ShardReport]) -> list[ShardReport]:
    """`reports`, after recording the match stage's figures in the run record (`rundir`)."""
    matched = sum(not getattr(r, "reused", False) for r in reports)
    rundir.end_match(out_dir, matched, round(time.perf_counter() - started, 3))
    return reports


def _match_task(
    shard: Shard,
    metadata: Path | MatchIndex,
    cache_dir: Path | None,
    out_dir: Path,
    *,
    options: ReadOptions,
    backend: str,
    threads: int | None,
    config: str,
) -> tuple[MatchReport, ShardRecord]:
    """One shard's match on a dask worker (the index from the worker's cache of the file)."""
    from metaclip_gpu.cluster import worker_index, worker_threads

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
    out_dir: Path,
    manifest: Manifest,
    config: str,
    *,
    options: ReadOptions,
    backend: str,
    threads: int | None,
    progress: bool,
    retry_errors: bool,
) -> list[ShardReport]:
    from metaclip_gpu.cluster import results_as_completed

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
                    reports[record.shard] = report
                    rows += report.rows
                    bar.update(task, advance=1, rows=rows)
            except BaseException:
                client.cancel(futures)  # the unrecorded shards are redone by the next run
                raise
            remove_stale_tmp(out_dir / MATCHES_DIR)  # what workers killed mid-write left
    return [reports[shard.name] for shard in shards]


# ---------------------------------------------------------------------- count
def file_counts(path: str | os.PathLike[str], n_entries: int, batch_rows: int = 1 << 20):
    """uint64 counts of one match file's ``entry_ids`` (only that column is read)."""
    parquet = pq.ParquetFile(path)
    parts = (
        entry_counts(pc.list_flatten(batch.column(0)).to_numpy(zero_copy_only=False), n_entries)
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=["entry_ids"])
    )
    return reduce_counts(parts, n_entries)


def count_matches(
    out_dir: str | os.PathLike[str],
    n_entries: int,
    *,
    shards: Iterable[str] | None = None,
    client: Any = None,
) -> np.ndarray:
    """The global uint64 counts over the match outputs the manifest of `out_dir` records.

    `shards`: only these shard names (default: the shards of the last match run, from the run
    record `rundir`; every recorded shard in a directory without one). Shards recorded with an
    error have no output and count nothing; a recorded output that is missing or damaged
    (its checksum) raises `FileNotFoundError` (rerun the match stage), and one matched with
    another configuration than the run record's `rundir.RunDirError`, rather than silently
    counting less or mixing two configurations.
    `client`: a `distributed.Client`; each file is counted by a task on a worker and the
    per-file counts are reduced here (`count.reduce_counts`, exact in any order).
    """
    out_dir = Path(out_dir)
    manifest = Manifest.load(out_dir)
    if shards is None:
        shards = rundir.current_shards(out_dir)
    names = sorted(manifest.records) if shards is None else list(shards)
    config = rundir.match_config_id(out_dir)
    paths = []
    for name in names:
        record = manifest.get(name)
        if record is None:
            raise FileNotFoundError(f"{out_dir}: shard {name!r} is not in the manifest")
        if config is not None and record.config != config:
            raise rundir.RunDirError(
                f"count: shard {name!r} in {out_dir} was matched with other settings than the "
                "last match run; rerun match"
            )
        path = manifest.output_path(record)
        if path is None:
            continue
        if not checksum_matches(path, record.checksum, "rerun match"):
            raise FileNotFoundError(
                f"{path}: match output of shard {name!r} is missing or damaged; rerun match"
            )
        paths.append(path)
    if client is not None and paths:
        from metaclip_gpu.cluster import results_as_completed

        futures = client.map(file_counts, paths, n_entries=n_entries, pure=False)
        return reduce_counts(results_as_completed(client, futures), n_entries)
    return reduce_counts((file_counts(p, n_entries) for p in paths), n_entries)


@holds_run_lock("count")
def run_count(
    out_dir: str | os.PathLike[str],
    metadata_path: str | os.PathLike[str] | MetadataIndex,
    *,
    client: Any = None,
) -> np.ndarray:
    """Counts the match outputs of the last match run's shards in `out_dir` and writes
    ``entry_counts.npy`` and ``entry_counts.parquet`` there (each under a temporary name, then
    renamed), their checksums in the run record. `rundir.RunDirError` when `metadata_path` is
    not the metadata the match stage used. `client`: count each match file on a dask worker
    (`count_matches`)."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    index = (
        metadata_path
        if isinstance(metadata_path, MetadataIndex)
        else MetadataIndex.load(metadata_path)
    )
    rundir.check_metadata(out_dir, index, "count")
    shards = rundir.current_shards(out_dir)
    counts = count_matches(out_dir, len(index), shards=shards, client=client)
    save_entry_counts(counts, out_dir / COUNTS_NPY)
    final = out_dir / COUNTS_PARQUET
    tmp = out_dir / f"{COUNTS_PARQUET}.tmp-{os.getpid()}"
    try:
        with with_path(tmp):
            pq.write_table(counts_table(counts, index.entries), tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    if shards is not None:
        files = {name: file_checksum(out_dir / name) for name in (COUNTS_NPY, COUNTS_PARQUET)}
        rundir.record_counts(out_dir, shards, files, round(time.perf_counter() - started, 3))
    return counts
