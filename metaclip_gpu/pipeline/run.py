"""The one orchestrator: read -> match -> count -> balance -> write into a run directory, in
process or as tasks on a dask cluster through the same code (`curate`).

MetaCLIP 1 and worldwide curation (MetaCLIP 2) are two modes of this one pipeline. Reading and
matching are the same stage (`match.run_match`, given a `MetadataIndex`, an `EnglishOnly`
filter or per-language `LanguageIndexes`); languages are a dimension of the counts and of the
thresholds (MetaCLIP 1: one language whose t is given directly, ``entry_counts.npy``;
worldwide: ``entry_counts/<lang>.npy`` and each language's t derived from the English one,
`thresholds`); the fork is the balancing policy: each text on its own (`balance`) or one text
per image (`balance_per_image`). A `Mode` holds what differs: how the index is loaded, how
counts and thresholds are made, the balancing policy and the summary's extra figures.

Every stage resumes: finished match shards and curated files are reused. The run holds the
directory's lock (`run_lock`) and the run record checks what each stage depends on (`rundir`).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from metaclip_gpu import storage
from metaclip_gpu.engine.index import MetadataIndex, default_cache_dir
from metaclip_gpu.pipeline.balance import run_balance
from metaclip_gpu.pipeline.balance_per_image import balance_per_image
from metaclip_gpu.pipeline.cluster import run_backend
from metaclip_gpu.pipeline.count import (
    COUNTS_DIR,
    count_and_save,
    count_languages,
    counts_table,
    save_entry_counts,
)
from metaclip_gpu.pipeline.counts_files import PendingTable
from metaclip_gpu.pipeline.english_only import EnglishOnly
from metaclip_gpu.pipeline.files import COUNTS_PARQUET, remove_stale_tmp
from metaclip_gpu.pipeline.languages import LanguageIndexes, UnknownLanguage
from metaclip_gpu.pipeline.lid import LidModel
from metaclip_gpu.pipeline.match import run_match, shard_list
from metaclip_gpu.pipeline.outcome import EXIT_NOTHING_READ, NothingRead
from metaclip_gpu.pipeline.read import ReadOptions, Shard
from metaclip_gpu.pipeline.run_lock import holds_run_lock
from metaclip_gpu.pipeline.run_summary import (
    SUMMARY_NAME,
    curate_summary,
    read_figures,
    worldwide_summary,
)
from metaclip_gpu.pipeline.shard_counts import RunCounts
from metaclip_gpu.pipeline.thresholds import (
    DEFAULT_T_EN,
    THRESHOLDS_NAME,
    _finite,
    language_thresholds,
    save_probabilities,
    t_en_label,
)
from metaclip_gpu.pipeline.write import t_label, write_json, write_parquet
from metaclip_gpu.storage import Location, RemotePath


class StageTimer:
    """Wall seconds per stage of a run (`stage`), and with `finish` the total since creation."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - start

    def finish(self) -> dict[str, float]:
        """Each stage's seconds and ``total``, rounded to milliseconds."""
        seconds = {**self.seconds, "total": time.perf_counter() - self.started}
        return {k: round(v, 3) for k, v in seconds.items()}


@dataclass
class Run:
    """What every stage of one run shares."""

    shards: list[Shard]
    out_dir: Location
    options: ReadOptions
    seed: int
    backend: str
    progress: bool
    client: Any
    cache_dir: Path | None
    matched: RunCounts = field(default_factory=RunCounts)  # the match tasks' counts
    curated_entry_ids: bool = False  # the curated files also hold each kept row's ids


class Mode:
    """What differs between MetaCLIP 1 and worldwide curation (module doc)."""

    matcher: Any = None  # what the match stage gets (set by `load`)

    def load(self, metadata: Any, run: Run) -> Any:
        """The index (or indexes) to count against; sets `matcher`, what the match stage gets."""
        raise NotImplementedError

    def after_match(self, reports: list[Any], run: Run) -> None:
        """A check of the match stage's reading before counting (none by default)."""

    def count(self, run: Run) -> None:
        """Counts the match files of the run's shards and saves the counts."""
        raise NotImplementedError

    def counts_saved(self) -> None:
        """Waits for what `count` still writes meanwhile (nothing by default)."""

    def balance(self, run: Run) -> Any:
        """Thresholds, then the kept rows of every shard written; returns the figures."""
        raise NotImplementedError

    def summary(self, run: Run, reports: list[Any], balanced: Any, timer: StageTimer) -> dict:
        """The run's ``summary.json`` (`run_summary`)."""
        raise NotImplementedError


class EachText(Mode):
    """MetaCLIP 1: one entry list and the ts given (or solved from `target_size`); each text is
    balanced on its own (`balance.run_balance`). `english_only`: MetaCLIP 1's LID filter."""

    def __init__(
        self,
        ts: Iterable[float] | None,
        target_size: int | None,
        english_only: bool,
        lid_model: str | os.PathLike[str] | None,
    ) -> None:
        self.ts, self.target_size = ts, target_size
        self.english_only, self.lid_model = english_only, lid_model
        self.index: MetadataIndex | None = None
        self.matcher: Any = None
        self.table: PendingTable | None = None  # entry_counts.parquet, written while balancing

    def load(self, metadata: Any, run: Run) -> Any:
        if isinstance(metadata, MetadataIndex):
            index = metadata
        elif run.client is not None:
            run.cache_dir = run.cache_dir if run.cache_dir is not None else default_cache_dir()
            index = MetadataIndex.load(metadata, cache=run.cache_dir)  # workers read this cache
        else:
            index = MetadataIndex.load(metadata)
        loaded = run.client is None or isinstance(metadata, MetadataIndex)
        self.matcher = index if loaded else metadata  # a path: each worker loads the cache
        if self.english_only:  # a loaded filter: broadcast to the workers with its index
            model = LidModel(None if self.lid_model is None else str(self.lid_model))
            self.matcher = EnglishOnly(index, model)
            self.matcher.check_available()
        self.index = index
        return index

    def count(self, run: Run) -> None:
        assert self.index is not None
        _, self.table = count_and_save(
            run.out_dir, self.index, client=run.client, matched=run.matched
        )

    def counts_saved(self) -> None:
        if self.table is not None:
            self.table.finish()
            self.table = None

    def balance(self, run: Run) -> dict[str, Any]:
        return run_balance(
            run.out_dir,
            run.shards,
            options=run.options,
            ts=self.ts,
            target_size=self.target_size,
            seed=run.seed,
            backend=run.backend,
            progress=run.progress,
            client=run.client,
            summary=False,
            curated_entry_ids=run.curated_entry_ids,
        )

    def summary(self, run: Run, reports: list[Any], balanced: Any, timer: StageTimer) -> dict:
        assert self.index is not None
        return curate_summary(
            run.out_dir,
            read_figures(run.shards, reports),
            balanced,
            metadata_entries=len(self.index),
            seed=run.seed,
            target_size=self.target_size,
            backend=run.backend,
            english_only=self.english_only,
            language_identifier=self.matcher.model.describe() if self.english_only else None,
            seconds=timer.finish(),
            curated={t_label(f["t"]): f["output"] for f in balanced["ts"]},
        )


class OneTextPerImage(Mode):
    """Worldwide (MetaCLIP 2): per-language indexes, counts and thresholds (each language's t
    from the English `t_en`, `thresholds`); one text per image (`balance_per_image`)."""

    def __init__(
        self,
        t_en: Sequence[float],
        lang_column: str | None,
        image_column: str | None,
        unknown: UnknownLanguage,
        lid_model: str | os.PathLike[str] | None,
    ) -> None:
        self.t_values = list(dict.fromkeys(float(t) for t in t_en))
        if not self.t_values or not all(t > 0 and math.isfinite(t) for t in self.t_values):
            raise ValueError(f"t_en must be positive finite numbers, got {list(t_en)!r}")
        self.lang_column, self.image_column = lang_column, image_column
        self.unknown, self.lid_model = unknown, lid_model
        self.langs: LanguageIndexes | None = None
        self.counts: dict[str, Any] = {}  # per language (`count`)
        self.thresholds: list[Any] = []  # per t_en (`balance`)
        self.matcher: Any = None

    def load(self, metadata: Any, run: Run) -> Any:
        if self.lid_model is not None:
            LidModel(str(self.lid_model)).check()  # a bad model fails here, not in every shard
        if isinstance(metadata, LanguageIndexes):
            self.langs = metadata
        else:
            self.langs = LanguageIndexes.load(
                metadata,
                unknown=self.unknown,
                lang_column=self.lang_column,
                lid=LidModel(None if self.lid_model is None else str(self.lid_model)),
            )
        self.matcher = self.langs
        return self.langs

    def after_match(self, reports: list[Any], run: Run) -> None:
        outcome = read_figures(run.shards, reports)["outcome"]
        if outcome["exit_code"] == EXIT_NOTHING_READ:  # no counts to set thresholds from
            raise NothingRead(outcome["message"].removeprefix("error: "))

    def count(self, run: Run) -> None:
        assert self.langs is not None
        sizes = {lang: len(index) for lang, index in self.langs.indexes.items()}
        self.counts = count_languages(run.out_dir, run.shards, sizes, run.client, run.matched)
        counts_dir = run.out_dir / COUNTS_DIR
        if isinstance(counts_dir, Path):
            counts_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_tmp(counts_dir)  # what a count killed mid-write left
        for lang, c in self.counts.items():
            save_entry_counts(c, counts_dir / f"{lang}.npy")
        tables = [
            counts_table(c, self.langs.indexes[lang].entries).add_column(
                0, "lang", pa.array([lang] * len(c), pa.string()).dictionary_encode()
            )
            for lang, c in self.counts.items()
        ]
        write_parquet(pa.concat_tables(tables), run.out_dir / COUNTS_PARQUET)

    def balance(self, run: Run) -> Any:
        assert self.langs is not None
        self.thresholds = [language_thresholds(self.counts, t) for t in self.t_values]
        probs = {}
        for th in self.thresholds:
            probs[th.t_en] = th.probabilities(self.counts)
            save_probabilities(run.out_dir, th, probs[th.t_en])
        write_json(
            run.out_dir / THRESHOLDS_NAME,
            {
                t_en_label(th.t_en): {"tail_share": th.tail_share, "t": _finite(th.t)}
                for th in self.thresholds
            },
        )
        return balance_per_image(
            run.out_dir,
            run.shards,
            self.langs,
            probs,
            run.seed,
            run.options,
            self.image_column,
            run.progress,
            run.client,
            entry_ids=run.curated_entry_ids,
        )

    def summary(self, run: Run, reports: list[Any], balanced: Any, timer: StageTimer) -> dict:
        assert self.langs is not None
        summary = worldwide_summary(
            run.out_dir,
            run.shards,
            reports,
            self.langs,
            self.counts,
            self.thresholds,
            balanced,
            run.seed,
            run.backend,
            run.curated_entry_ids,
        )
        summary["seconds"] = timer.finish()
        return summary


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
