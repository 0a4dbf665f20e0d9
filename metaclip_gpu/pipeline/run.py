"""The one orchestrator: read -> match -> count -> balance -> write into a run directory, in
process or as tasks on a dask cluster through the same code (`curate`).

MetaCLIP 1 and worldwide curation (MetaCLIP 2) are two modes of this one pipeline. Reading and
matching are the same stage (`match.run_match`, given a `MetadataIndex`, an `EnglishOnly`
filter or per-language `LanguageIndexes`); languages are a dimension of the counts and of the
thresholds (MetaCLIP 1: one language whose t is given directly, ``entry_counts.npy``;
worldwide: ``entry_counts/<lang>.npy`` and each language's t derived from the English one,
`thresholds`); the fork is the balancing policy: each text on its own (`balance`) or one text
per image (`balance_per_image`). A `Mode` (`run_modes`) holds what differs: how the index is
loaded, how counts and thresholds are made, the balancing policy and the summary's extra
figures.

Every stage resumes: finished match shards and curated files are reused. The run holds the
directory's lock (`run_lock`) and the run record checks what each stage depends on (`rundir`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from metaclip_gpu import storage
from metaclip_gpu.engine.index import MetadataIndex
from metaclip_gpu.pipeline.cluster import run_backend
from metaclip_gpu.pipeline.languages import LanguageIndexes, UnknownLanguage
from metaclip_gpu.pipeline.match import run_match, shard_list
from metaclip_gpu.pipeline.read import ReadOptions
from metaclip_gpu.pipeline.run_lock import holds_run_lock
from metaclip_gpu.pipeline.run_modes import EachText, Mode, OneTextPerImage, Run, StageTimer
from metaclip_gpu.pipeline.run_summary import SUMMARY_NAME
from metaclip_gpu.pipeline.thresholds import DEFAULT_T_EN
from metaclip_gpu.pipeline.write import write_json
from metaclip_gpu.storage import RemotePath


@holds_run_lock("curate")
def curate(
    shards_spec: Any,
    metadata: Any,
    out_dir: str | os.PathLike[str],
    *,
    worldwide: bool = False,
    ts: Iterable[float] | None = None,
    target_size: int | None = None,
    options: ReadOptions | None = None,
    seed: int = 0,
    backend: str = "cpu",
    threads: int | None = None,
    progress: bool = True,
    client: Any = None,
    cache_dir: str | os.PathLike[str] | None = None,
    english_only: bool = False,
    lid_model: str | os.PathLike[str] | None = None,
    lang_column: str | None = None,
    image_column: str | None = None,
    unknown: UnknownLanguage = "skip",
    curated_entry_ids: bool = False,
) -> dict[str, Any]:
    """read -> match -> count -> balance -> write every shard of `shards_spec` into `out_dir`,
    each stage timed; writes ``summary.json`` and returns it.

    `metadata`: a metadata file or a loaded `MetadataIndex` (MetaCLIP 1); with `worldwide`, a
    folder of ``<lang>.json`` files, one JSON object by language or `LanguageIndexes`.
    `ts`: MetaCLIP 1's thresholds (20,000 for 400M pairs), and `target_size` the expected kept
    size to solve one more t for (at least one of the two); worldwide: the English thresholds
    ``t_en`` (default 170,000, MetaCLIP 2's), every other language's t following from them.
    `english_only`: MetaCLIP 1's LID filter (`english_only.EnglishOnly`): only texts the
    language identifier (`lid_model`, default the packaged fastText ``lid.176.ftz``) calls
    English are matched; the others are counted in ``skipped`` as ``not_english``.
    Worldwide: `lang_column` holds each row's language (else `lid_model` identifies it),
    `image_column` groups the texts of one image (default: the key column), `unknown` says what
    happens to a language without metadata ("skip" or "other").
    `curated_entry_ids`: the curated files also hold ``entry_ids`` (each kept row's matched
    entries); by default they hold the input's columns only, as MetaCLIP's reference writes
    them, and every row's ids stay in ``matches/*.parquet`` (shard, row, entry_ids).

    `client`: a `distributed.Client` (`cluster.make_client`) to run each stage's per-shard
    tasks on (the result is the same as in process); `cache_dir`: the index cache the workers
    read (default `index.default_cache_dir()`). None runs everything in this process.

    The summary: ``shards``, ``shards_unreadable`` (name and error), ``texts_read``,
    ``skipped`` (rows by reason), ``null_texts``, ``matched``, ``distinct_entries_matched``,
    ``ts`` (per-t figures), ``seconds`` (per stage and total), ``outputs`` (paths); worldwide
    adds ``languages`` (per-language figures and t).
    """
    if worldwide:
        mode: Mode = OneTextPerImage(
            (DEFAULT_T_EN,) if ts is None else tuple(ts),
            lang_column,
            image_column,
            unknown,
            lid_model,
        )
    else:
        mode = EachText(ts, target_size, english_only, lid_model)
    options = options or ReadOptions()
    backend = run_backend(backend, client)  # once, here: every stage and task gets the result
    run = Run(
        shards=shard_list(shards_spec),
        out_dir=storage.location(out_dir),
        options=options,
        seed=seed,
        backend=backend,
        progress=progress,
        client=client,
        cache_dir=Path(cache_dir) if cache_dir is not None else None,
        curated_entry_ids=curated_entry_ids,
    )
    if isinstance(run.out_dir, RemotePath):  # in object storage: summary.json marks a finished run
        from metaclip_gpu.storage_write import remove

        remove(run.out_dir / SUMMARY_NAME)
    timer = StageTimer()
    with timer.stage("index"):
        mode.load(metadata, run)
    with timer.stage("match"):
        reports = run_match(
            run.shards,
            mode.matcher,
            run.out_dir,
            options=options,
            backend=run.backend,
            threads=threads,
            progress=progress,
            client=client,
            cache_dir=run.cache_dir,
            matched=run.matched,
        )
    mode.after_match(reports, run)
    with timer.stage("count"):
        mode.count(run)
    with timer.stage("balance"):  # the wait for the counts table is the balance stage's
        try:
            balanced = mode.balance(run)
        finally:
            mode.counts_saved()  # before the run lets go of its lock
    summary = mode.summary(run, reports, balanced, timer)
    write_json(run.out_dir / SUMMARY_NAME, summary)
    return summary


def run_curate(
    shards_spec: Any,
    metadata_path: str | os.PathLike[str] | MetadataIndex,
    out_dir: str | os.PathLike[str],
    **kwargs: Any,
) -> dict[str, Any]:
    """`curate` in MetaCLIP 1's mode (each text balanced on its own)."""
    return curate(shards_spec, metadata_path, out_dir, **kwargs)


def run_worldwide(
    shards_spec: Any,
    metadata_path: str | os.PathLike[str] | LanguageIndexes,
    out_dir: str | os.PathLike[str],
    *,
    t_en: Sequence[float] = (DEFAULT_T_EN,),
    **kwargs: Any,
) -> dict[str, Any]:
    """`curate` in worldwide mode (MetaCLIP 2: per-language t from `t_en`, one text per
    image)."""
    return curate(shards_spec, metadata_path, out_dir, worldwide=True, ts=t_en, **kwargs)
