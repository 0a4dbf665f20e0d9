"""What the two curation modes of the one orchestrator (`run.curate`) do differently, and
the state of a run they share (`Run`, `StageTimer`).

A `Mode` holds what differs between MetaCLIP 1 (`EachText`: one entry list, the ts given or
solved from a target size, each text balanced on its own) and worldwide curation, MetaCLIP 2
(`OneTextPerImage`: per-language indexes, counts and thresholds, one text per image): how the
index is loaded, how counts and thresholds are made, the balancing policy and the summary's
extra figures.
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

from metaclip_gpu.engine.index import MetadataIndex, default_cache_dir
from metaclip_gpu.pipeline.balance import run_balance
from metaclip_gpu.pipeline.balance_per_image import balance_per_image
from metaclip_gpu.pipeline.count import (
    COUNTS_DIR,
    count_and_save,
    count_languages,
    counts_table,
    save_entry_counts,
)
from metaclip_gpu.pipeline.counts_files import (
    PendingTable,
    drop_counts_table,
    write_counts_table,
)
from metaclip_gpu.pipeline.english_only import EnglishOnly
from metaclip_gpu.pipeline.files import remove_stale_tmp
from metaclip_gpu.pipeline.languages import LanguageIndexes, UnknownLanguage
from metaclip_gpu.pipeline.lid import LidModel
from metaclip_gpu.pipeline.outcome import EXIT_NOTHING_READ, NothingRead
from metaclip_gpu.pipeline.read import ReadOptions, Shard
from metaclip_gpu.pipeline.run_summary import (
    curate_summary,
    read_figures,
    worldwide_summary,
)
from metaclip_gpu.pipeline.shard_counts import RunCounts
from metaclip_gpu.pipeline.thresholds import (
    THRESHOLDS_NAME,
    _finite,
    language_thresholds,
    save_probabilities,
    t_en_label,
)
from metaclip_gpu.pipeline.write import t_label, write_json
from metaclip_gpu.storage import Location


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
        self.table: PendingTable | None = None  # entry_counts.parquet, written while balancing

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
        drop_counts_table(run.out_dir)
        if isinstance(counts_dir, Path):
            counts_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_tmp(counts_dir)  # what a count killed mid-write left
        for lang, c in self.counts.items():
            save_entry_counts(c, counts_dir / f"{lang}.npy")
        langs, counts = self.langs, dict(self.counts)

        def table() -> pa.Table:  # every language's, one after the other
            return pa.concat_tables(
                counts_table(c, langs.indexes[lang].entries).add_column(
                    0, "lang", pa.array([lang] * len(c), pa.string()).dictionary_encode()
                )
                for lang, c in counts.items()
            )

        self.table = write_counts_table(run.out_dir, table, recorded=False)  # while balancing

    def counts_saved(self) -> None:
        if self.table is not None:
            self.table.finish()
            self.table = None

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
