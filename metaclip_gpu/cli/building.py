"""``build-metadata``: a metadata file from WordNet, corpus n-grams and titles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from metaclip_gpu.cli.common import (
    BACKEND_OPTION,
    STORAGE_OPTIONS_OPTION,
    TEXT_COLUMN_OPTION,
    log_options,
    make_console,
    read_options,
    start_run,
    step,
    storage_options,
)
from metaclip_gpu.cli.errors import Command
from metaclip_gpu.pipeline import progress


def _print_build_summary(console: Console, result: Any) -> None:
    table = Table(title="metaclip-gpu build-metadata", show_header=False, title_justify="left")
    table.add_column("figure", style="bold")
    table.add_column("value")
    corpus = result.corpus
    if corpus is not None:
        table.add_row(
            "corpus",
            f"{corpus.texts:,} texts, {corpus.tokens:,} word tokens, "
            f"{corpus.distinct_unigrams:,} distinct unigrams, "
            f"{corpus.distinct_bigrams:,} distinct bigrams",
        )
    for name, fig in result.figures.items():
        dropped = ", ".join(f"{why} {n:,}" for why, n in sorted(fig.dropped.items())) or "none"
        cap = "no cap" if fig.cap is None else f"cap {fig.cap:,}"
        rule = f" [{fig.rule}]" if fig.rule else ""
        table.add_row(
            f"{name}{rule}",  # the console prints without markup: brackets stay
            f"{fig.added:,} added of {fig.candidates:,} candidates ({cap}); "
            f"{fig.duplicates:,} already present; {fig.over_cap:,} over a cap; "
            f"dropped: {dropped}",
        )
    table.add_row("entries", f"{result.entries:,}")
    table.add_row("metadata", str(result.metadata))
    table.add_row("provenance", str(result.provenance))
    console.print(table)


def _resolve_rule(rule: str, wordnet: Any) -> str:
    if rule != "auto":
        return rule
    return "lemmas" if wordnet is not None and wordnet.kind == "omw" else "synset-names"


@click.command(name="build-metadata", cls=Command)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="metadata.json to write (a JSON list of strings); the provenance goes beside it.",
)
@click.option(
    "--wordnet",
    "wordnet_spec",
    default="auto",
    show_default=True,
    help="WordNet: 'auto' (nltk's corpus, else /usr/share/wordnet), a folder with "
    "WordNet's data.* files, an Open Multilingual Wordnet wn-data-<lang>.tab file, or 'none'.",
)
@click.option(
    "--wordnet-rule",
    type=click.Choice(["auto", "synset-names", "lemmas"]),
    default="auto",
    show_default=True,
    help="synset-names: one canonical name per synset (MetaCLIP 1, English); lemmas: every "
    "lemma name (MetaCLIP 2's rule for other languages); auto: synset-names for WordNet 3.0, "
    "lemmas for an OMW .tab file.",
)
@click.option(
    "--corpus",
    "corpus_spec",
    multiple=True,
    help="Text shards for unigrams and bigrams (as curate's --input, local or URLs); repeat "
    "for several.",
)
@STORAGE_OPTIONS_OPTION
@TEXT_COLUMN_OPTION
@click.option("--min-unigram-count", default=100, show_default=True, type=click.IntRange(1))
@click.option("--min-bigram-pmi", default=30.0, show_default=True, type=float)
@click.option(
    "--titles",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Titles with counts, one 'title<TAB>count' a line (e.g. Wikipedia page views).",
)
@click.option("--min-title-count", default=1, show_default=True, type=click.IntRange(1))
@click.option(
    "--numbers/--no-numbers",
    default=True,
    show_default=True,
    help="Put '0'..'99' first (MetaCLIP 1 and 2 both do).",
)
@click.option(
    "--filters",
    type=click.Choice(["metaclip1", "metaclip2"]),
    default="metaclip1",
    show_default=True,
    help="metaclip1: drop empty strings and single punctuation characters; metaclip2: strip, "
    "then drop empty, over-256-character and punctuation-only strings.",
)
@click.option(
    "--max-entries",
    default=500_000,
    show_default=True,
    type=click.IntRange(1),
    help="The list stops at this many entries (MetaCLIP: 500,000).",
)
@click.option("--max-unigrams", default=251_465, show_default=True, type=click.IntRange(0))
@click.option("--max-bigrams", default=100_646, show_default=True, type=click.IntRange(0))
@click.option("--max-titles", default=61_235, show_default=True, type=click.IntRange(0))
@click.option(
    "--unigram-share",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Also cap unigrams at this share of the candidates (MetaCLIP 2: 0.1).",
)
@click.option(
    "--title-share",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Also cap titles at this share of the candidates (MetaCLIP 2: 0.76).",
)
@BACKEND_OPTION
@click.option("--cluster", type=click.Choice(["local"]), default=None, help="As curate's.")
@click.option("--workers", type=click.IntRange(1), default=None, help="As curate's.")
@click.option("--scheduler-address", default=None, help="As curate's.")
@log_options
def build_metadata_cmd(
    out: Path,
    wordnet_spec: str,
    wordnet_rule: str,
    corpus_spec: tuple[str, ...],
    text_column: str | None,
    min_unigram_count: int,
    min_bigram_pmi: float,
    titles: Path | None,
    min_title_count: int,
    numbers: bool,
    filters: str,
    max_entries: int,
    max_unigrams: int,
    max_bigrams: int,
    max_titles: int,
    unigram_share: float,
    title_share: float,
    backend: str,
    cluster: str | None,
    workers: int | None,
    scheduler_address: str | None,
) -> None:
    """Builds a MetaCLIP metadata.json from WordNet, corpus n-grams and titles."""
    from metaclip_gpu.metadata_builder.build import (
        Caps,
        TitlesError,
        build_metadata,
        count_corpus_ngrams,
        read_titles,
    )
    from metaclip_gpu.metadata_builder.wordnet import WordNetError, WordNetNotFound, find_wordnet
    from metaclip_gpu.pipeline.cluster import close_client
    from metaclip_gpu.pipeline.read import find_shards

    if cluster and scheduler_address:
        raise click.UsageError("give --cluster or --scheduler-address, not both")
    console = make_console()
    try:
        wordnet = None if wordnet_spec == "none" else find_wordnet(wordnet_spec)
        title_counts = read_titles(titles) if titles is not None else None
        shards = (
            find_shards(list(corpus_spec), storage_options=storage_options())
            if corpus_spec
            else None
        )
    except (WordNetNotFound, TitlesError, FileNotFoundError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    corpus = None
    if shards is not None:
        backend, client = start_run(
            backend, cluster=cluster, scheduler_address=scheduler_address, workers=workers
        )
        try:
            with step(console, f"counting n-grams of {len(shards):,} shards"):
                corpus = count_corpus_ngrams(
                    shards,
                    read_options(text_column, None),
                    min_unigram_count=min_unigram_count,
                    min_bigram_pmi=min_bigram_pmi,
                    backend=backend,
                    client=client,
                )
        except (RuntimeError, ValueError) as err:  # an unreadable shard, --backend gpu
            raise click.ClickException(str(err)) from err
        finally:
            close_client(client)
    caps = Caps(max_unigrams, max_bigrams, max_titles, unigram_share, title_share, max_entries)
    try:
        result = build_metadata(
            out,
            wordnet=wordnet,
            wordnet_rule=_resolve_rule(wordnet_rule, wordnet),
            corpus=corpus,
            corpus_origin=" ".join(corpus_spec),
            min_unigram_count=min_unigram_count,
            min_bigram_pmi=min_bigram_pmi,
            titles=title_counts,
            titles_origin="" if titles is None else str(titles),
            min_title_count=min_title_count,
            numbers=numbers,
            caps=caps,
            filters=filters,
        )
    except (WordNetError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    _print_build_summary(console, result)
    payload = {
        "entries": result.entries,
        "metadata": str(result.metadata),
        "provenance": str(result.provenance),
        "added": {name: fig.added for name, fig in result.figures.items()},
    }
    progress.summary_line(
        "build-metadata", payload, f"wrote {result.entries:,} entries to {result.metadata}"
    )
