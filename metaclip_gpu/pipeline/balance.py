"""Stage ``balance`` (SPEC section 4), MetaCLIP 1's policy (each text on its own), over all shards.

`run_balance` reads what `match.run_match` and `count.run_count` left in ``out_dir``
(``manifest.jsonl``, ``matches/*.parquet``, ``entry_counts.npy``) and, for each threshold
``t``, writes one curated Parquet file per input shard::

    <out_dir>/curated/t=<t>/<files.output_name(shard)>   e.g. t=20000/part-0.tsv-1a2b3c4d.parquet

holding the kept rows with ALL their input columns under their original names, in the
input's order (the text and key columns are renamed back from ``text``/``key``, so ``caption``
and ``url`` stay for img2dataset), as MetaCLIP's reference writes them. With
``curated_entry_ids`` also ``entry_ids`` (list<int32>, the row's matched entries; an input
column of that name is replaced); either way the match files hold every row's ids (join on
shard + row). Several ``t`` come from one pass over each shard: the draws
``u(seed, text key, entry)`` do not depend on ``t`` (`chunk_draws.balance_chunk`).

How a shard is balanced: `balance_shard` (each shard in process, or as a task on a dask
worker); its rows are read aligned with its match file (`aligned`).

Idempotence: each curated file is written under a temporary name and renamed into place, and
its checksum (`checksums`) appended to the folder's ``_manifest.jsonl`` (in process: only
after the file and its folder were fsynced, by the stage's main thread while the compute
threads go on, `durable`). A ``t`` folder holds ``_balance.json`` with the digest of
everything its files depend on (seed, ``t``, the counts, every shard's match record,
``curated_entry_ids``); a rerun with the same digest skips the shards whose curated files
still have their recorded checksums (a damaged one is named in a warning and redone), and a
changed digest deletes the folder's Parquet files and manifest first. (Names starting with
``_`` are ignored by `read.find_shards`, so a curated folder can be used as input.) What the
stage checks in the run record before it starts: `rundir`.

Memory: one shard's kept rows at a time (`balance_shard`). `--target-size` solves ``t`` from
each match file's expected kept size on a grid of t, added up here (`target_size`): memory
does not grow with the pool.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from metaclip_gpu import storage
from metaclip_gpu.pipeline import rundir
from metaclip_gpu.pipeline.balance_shard import (
    ShardFigures,
    _balance_task,
    _commit_curated,
    _record_curated,
    _shard_figures,
    _xp,
)
from metaclip_gpu.pipeline.cluster import run_backend
from metaclip_gpu.pipeline.count import load_entry_counts
from metaclip_gpu.pipeline.durable import ordered_batches, results_of
from metaclip_gpu.pipeline.files import (
    COUNTS_NPY,
    SHARDS_IN_FLIGHT,
    _progress,
    output_name,
    remove_orphans,
    remove_stale_tmp,
)
from metaclip_gpu.pipeline.manifest import Manifest, ShardRecord
from metaclip_gpu.pipeline.match import match_records, shard_list
from metaclip_gpu.pipeline.read import (
    ReadOptions,
    Shard,
)
from metaclip_gpu.pipeline.run_lock import holds_run_lock
from metaclip_gpu.pipeline.run_summary import SUMMARY_NAME, _write_stage_summary
from metaclip_gpu.pipeline.target_size import solve_target
from metaclip_gpu.pipeline.write import (
    BALANCE_CONFIG,
    CURATED_MANIFEST,
    _balance_digest,
    _prepare_t_dir,
    curated_dir,
    curated_template,
    t_label,
)
from metaclip_gpu.storage import Location, RemotePath
from metaclip_gpu.storage_write import attempt_name, remove

# ---------------------------------------------------------------------- figures


# ---------------------------------------------------------------------- balance stage


def _solve_target(
    out_dir: Location,
    records: dict[str, ShardRecord],
    counts: np.ndarray,
    target_size: int,
    client: Any = None,
) -> float:
    """The t of `draws.solve_t` from per-file figures (`target_size.solve_target`)."""
    files = [out_dir / r.output for r in records.values() if r.output is not None]
    if not files:
        raise RuntimeError(f"{out_dir}: no match outputs to solve --target-size on")
    return solve_target(files, counts, target_size, client)


@holds_run_lock("balance")
def run_balance(
    out_dir: str | os.PathLike[str],
    shards_spec: Any,
    *,
    options: ReadOptions | None = None,
    ts: Iterable[float] | None = None,
    target_size: int | None = None,
    seed: int = 0,
    backend: str = "cpu",
    progress: bool = True,
    client: Any = None,
    summary: bool = True,
    curated_entry_ids: bool = False,
) -> dict[str, Any]:
    """Balances every shard of `shards_spec` for each t and writes the curated shards.

    `ts`: thresholds (MetaCLIP: 20,000 for 400M pairs); `target_size`: also the t whose
    expected kept size is `target_size` (`draws.solve_t` over all shards). At least one of
    the two. `options` must pick the same text/key columns as the match stage did. The match
    and count stages must have run into `out_dir` for these very shards (else RuntimeError).

    Returns ``{"seed", "counts_path", "shards": [...], "ts": [per-t figures]}``; each per-t
    figure holds ``t``, ``texts``, ``matched``, ``kept``, ``expected_kept``, ``head_entries``
    (entries with ``count > t``), ``head_entry_share`` (of the distinct matched entries),
    ``head_match_share`` (of all (text, entry) matches), ``output`` (the folder) and
    ``solved`` (True for the t solved from `target_size`).

    `client`: a `distributed.Client`; each shard is balanced (or found done) by a task on a
    worker, which writes its curated files and returns its figures here.

    `curated_entry_ids`: the curated files also hold ``entry_ids`` (each kept row's ids; by
    default they hold the input's columns only, and the ids stay in ``matches/``).

    `summary`: also write ``summary.json`` (`run_summary`), as ``curate`` does; `run_curate`
    writes its own. The run record (`rundir`) must hold counts of these shards and of the match
    stage's settings, and `options` read texts as the match stage did (else `RunDirError`).
    """
    started = time.perf_counter()
    options = options or ReadOptions()
    backend = run_backend(backend, client)  # once, here: the tasks receive "cpu" or "gpu"
    out_dir = storage.location(out_dir)
    shards = shard_list(shards_spec)
    records = match_records(out_dir, shards)
    counts_path = out_dir / COUNTS_NPY
    if not storage.is_file(counts_path):
        raise FileNotFoundError(f"{counts_path}: no counts; run the count stage first")
    rundir.check_balance_inputs(out_dir, options, [s.name for s in shards], COUNTS_NPY)
    if summary and isinstance(out_dir, RemotePath):  # summary.json marks a finished run there
        remove(out_dir / SUMMARY_NAME)
    counts = load_entry_counts(counts_path)
    t_list = [float(t) for t in (ts or [])]
    solved: float | None = None
    if target_size is not None:
        solved = _solve_target(out_dir, records, counts, int(target_size), client)
        t_list.append(solved)
    if not t_list:
        raise ValueError("run_balance needs ts or target_size")
    t_list = list(dict.fromkeys(t_list))  # distinct, in order
    for t in t_list:
        if not (t > 0 and math.isfinite(t)):
            raise ValueError(f"t must be a positive finite number, got {t!r}")

    xp = _xp(backend) if client is None else np
    device_counts = xp.asarray(counts)
    directories = {t: curated_dir(out_dir, t) for t in t_list}
    for t in t_list:
        digest = _balance_digest(seed, t, counts, records, options, curated_entry_ids)
        _prepare_t_dir(directories[t], digest, seed, t)
    curated = {t: Manifest.load(directories[t], CURATED_MANIFEST) for t in t_list}
    for manifest in curated.values():  # in object storage: what killed attempts left
        remove_orphans(manifest, "", keep=(BALANCE_CONFIG,))

    in_flight = SHARDS_IN_FLIGHT if xp is np else 1
    with _progress(progress) as bar, ThreadPoolExecutor(in_flight) as pool:
        task = bar.add_task("balance", total=len(shards), rows=0)
        todo: list[tuple[Shard, Location, dict[float, Location]]] = []
        for shard in shards:
            record = records[shard.name]
            if record.output is None:  # unreadable at match time: nothing to curate
                bar.update(task, advance=1)
                continue
            outputs = _curated_outputs(directories, curated, shard.name)
            todo.append((shard, out_dir / record.output, outputs))
        recorded = {s.name: _recorded_checksums(curated, s.name) for s, _, _ in todo}
        template = curated_template(  # for shards with no rows and no schema
            [s for s, _, _ in todo],
            {name: r.rows for name, r in records.items()},
            options,
            entry_ids=curated_entry_ids,
        )
        if client is not None:
            shard_figures = _balance_dask(
                client,
                todo,
                counts,
                t_list,
                seed,
                options,
                backend,
                bar,
                task,
                recorded,
                curated_entry_ids,
                template,
            )
            for figures, (_, _, outputs) in zip(shard_figures, todo, strict=True):
                _record_curated(curated, figures, outputs)
        else:  # in process: shards in order, two at once on the CPU (files.SHARDS_IN_FLIGHT)
            shard_figures = []
            rows = 0

            def one(item: tuple[Shard, Location, dict[float, Location]]) -> ShardFigures:
                shard, match_file, outputs = item
                return _shard_figures(
                    shard, match_file, device_counts, counts, t_list, seed, outputs,
                    options=options, xp=xp, recorded=recorded[shard.name],
                    entry_ids=curated_entry_ids, template=template,
                )  # fmt: skip

            futures = [pool.submit(one, item) for item in todo]
            try:  # this thread makes each batch of curated files durable, then records them
                for batch in ordered_batches(futures):
                    done, failure = results_of(batch)
                    items = todo[len(shard_figures) : len(shard_figures) + len(done)]
                    _commit_curated(curated, done, [outputs for _, _, outputs in items])
                    for figures in done:
                        shard_figures.append(figures)
                        rows += figures.texts
                        bar.update(task, advance=1, rows=rows)
                    if failure is not None:
                        raise failure
            except BaseException:
                for future in futures:
                    future.cancel()  # the unrecorded shards are balanced by the next run
                raise

    for folder in directories.values():  # the files this run superseded, before summary.json
        if isinstance(folder, RemotePath):
            remove_orphans(Manifest.load(folder, CURATED_MANIFEST), "", (BALANCE_CONFIG,))
    matched_entries = counts > 0
    distinct = int(matched_entries.sum())
    total_matches = int(counts.sum(dtype=np.uint64))
    per_t = []
    for t in t_list:
        head = counts > t
        n_head = int(head.sum())
        per_t.append(
            {
                "t": t,
                "solved": solved is not None and t == solved,
                "texts": sum(f.texts for f in shard_figures),
                "matched": sum(f.matched for f in shard_figures),
                "kept": sum(f.kept[t] for f in shard_figures),
                "expected_kept": sum(f.expected[t] for f in shard_figures),
                "head_entries": n_head,
                "head_entry_share": n_head / distinct if distinct else 0.0,
                "head_match_share": (
                    int(counts[head].sum(dtype=np.uint64)) / total_matches if total_matches else 0.0
                ),
                "output": str(directories[t]),
            }
        )
    result = {
        "seed": int(seed),
        "target_size": target_size,
        "curated_entry_ids": bool(curated_entry_ids),
        "counts_path": str(counts_path),
        "distinct_entries_matched": distinct,
        "shards": [
            {
                "shard": f.shard,
                "texts": f.texts,
                "matched": f.matched,
                "kept": {t_label(t): k for t, k in f.kept.items()},
                "reused": f.reused,
            }
            for f in shard_figures
        ],
        "ts": per_t,
    }
    rundir.record_balance(out_dir, seed, round(time.perf_counter() - started, 3))
    if summary:
        _write_stage_summary(out_dir, shards, records, result, backend, started)
    return result


def _recorded_checksums(curated: dict[float, Manifest], shard: str) -> dict[float, str]:
    """Per t, the checksum the folder's manifest records for `shard`'s curated file."""
    found = {}
    for t, manifest in curated.items():
        record = manifest.get(shard)
        if record is not None:
            found[t] = record.checksum
    return found


def _curated_outputs(
    directories: dict[float, Location], curated: dict[float, Manifest], shard: str
) -> dict[float, Location]:
    """Per t, where `shard`'s curated file goes: ``<t folder>/<files.output_name(shard)>``; in
    object storage the file its record names (reused if its checksum still matches) or, when
    any t has none, a name unique to this attempt for every t (nothing is overwritten)."""
    local = {t: folder / output_name(shard) for t, folder in directories.items()}
    if not any(isinstance(folder, RemotePath) for folder in directories.values()):
        return local
    named = {t: curated[t].get(shard) for t in directories}
    if all(r is not None and r.output for r in named.values()):
        return {t: directories[t] / r.output for t, r in named.items()}  # type: ignore[union-attr]
    return {t: folder / attempt_name(output_name(shard)) for t, folder in directories.items()}


def _balance_dask(
    client: Any,
    todo: list[tuple[Shard, Location, dict[float, Location]]],
    counts: np.ndarray,
    ts: list[float],
    seed: int,
    options: ReadOptions,
    backend: str,
    bar: Any,
    task: Any,
    recorded: dict[str, dict[float, str]],
    entry_ids: bool = False,
    template: pa.Table | None = None,
) -> list[ShardFigures]:
    """Runs `_balance_task` for each shard of `todo` on the cluster; figures in `todo` order."""
    from metaclip_gpu.pipeline.cluster import results_as_completed

    shared_counts = client.scatter(counts, broadcast=True, hash=False)  # see target_size
    futures = [
        client.submit(
            _balance_task,
            shard,
            match_file,
            shared_counts,
            ts,
            seed,
            outputs,
            options=options,
            backend=backend,
            recorded=recorded[shard.name],
            entry_ids=entry_ids,
            template=template,
            pure=False,
            key=f"balance-{output_name(shard.name)}-{uuid.uuid4().hex[:8]}",
        )
        for shard, match_file, outputs in todo
    ]
    done: dict[str, ShardFigures] = {}
    rows = 0
    try:
        for figures in results_as_completed(client, futures):
            done[figures.shard] = figures
            rows += figures.texts
            bar.update(task, advance=1, rows=rows)
    except BaseException:
        client.cancel(futures)
        raise
    for folder in {
        path.parent for _, _, outputs in todo for path in outputs.values() if isinstance(path, Path)
    }:
        remove_stale_tmp(folder)  # what workers killed mid-write left
    return [done[shard.name] for shard, _, _ in todo]
