# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Curating a small pool the MetaCLIP way
#
# This notebook walks through what `metaclip-gpu curate` does, on the CPU backend, in a few
# seconds: it curates a small pool of alt-texts, looks at the metadata entries a few texts
# match, draws the entry distribution before and after balancing (the MetaCLIP paper's
# cumulative-count figure) and writes the HTML report.
#
# The pool is the CC3M validation split (15,833 real alt-texts) with a 500k-entry metadata
# list when `../shared/data` (or `$METACLIP_SHARED_DATA`) holds them; otherwise it is the
# package's **synthetic** demo input (`metaclip_gpu.synthetic`: texts whose words follow
# English word frequencies, and a metadata list of frequent words and word pairs).

# %%
# %matplotlib inline
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.csv
import pyarrow.parquet as pq
from IPython.display import display

from metaclip_gpu import MetadataIndex, match
from metaclip_gpu.pipeline.count import load_entry_counts
from metaclip_gpu.pipeline.draws import keep_probability
from metaclip_gpu.pipeline.files import COUNTS_NPY
from metaclip_gpu.pipeline.run import run_curate
from metaclip_gpu.pipeline.write import t_label
from metaclip_gpu.report.html import write_report
from metaclip_gpu.report.plots import NO_BALANCING, Curve, cumulative_figure, rank_count_figure

DATA = Path(os.environ.get("METACLIP_SHARED_DATA") or Path.cwd().parent.parent / "shared" / "data")
CC3M, METADATA = DATA / "cc3m_val.tsv", DATA / "metadata_wordnet_wordfreq_500k.json"
OUT = Path(os.environ.get("METACLIP_NOTEBOOK_OUT") or tempfile.mkdtemp(prefix="metaclip-nb-"))
TS = [20.0, 200.0]  # balancing thresholds; MetaCLIP used t = 20,000 for 400M pairs

# %% [markdown]
# ## 1. A small pool in shards
#
# The pipeline reads shards (Parquet, JSONL, TSV, CSV or WebDataset tars). We write the pool
# as 4 Parquet shards with a `caption` column (the text) and a `url` column: a stable key,
# so the curated set does not depend on how the pool is split.

# %% tags=["pool"]
if CC3M.is_file() and METADATA.is_file():
    source, metadata, shards = "CC3M validation alt-texts (real data)", METADATA, OUT / "shards"
    pool = pyarrow.csv.read_csv(
        CC3M,
        read_options=pyarrow.csv.ReadOptions(column_names=["caption", "url"]),
        parse_options=pyarrow.csv.ParseOptions(delimiter="\t", quote_char=False),
    )
    shards.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, pool.num_rows, 5).astype(int)
    for i in range(4):
        pq.write_table(pool.slice(bounds[i], bounds[i + 1] - bounds[i]), shards / f"{i}.parquet")
else:  # the same layout, made up: metadata.json and shards/part-NNNNN.parquet (url, caption)
    from metaclip_gpu.synthetic import write_pool

    source = "SYNTHETIC alt-texts (metaclip_gpu.synthetic, not real data)"
    metadata, shards = write_pool(OUT / "input", n_texts=20_000, n_shards=4, seed=0)
    pool = pq.read_table(shards)

index = MetadataIndex.load(metadata)  # compiled once, then cached on disk
print(f"{source}: {pool.num_rows:,} texts in 4 shards under {shards}")
print(f"metadata: {len(index):,} entries")

# %% [markdown]
# ## 2. Curate: match, count, balance
#
# `run_curate` is what `metaclip-gpu curate` runs: every text is matched against every
# metadata entry (MetaCLIP's sub-string rule), each entry's matches are counted, and each t
# keeps a text when, for one of its entries `e`, a draw depending only on (seed, text key,
# entry) falls below `t / max(count[e], t)`.

# %% tags=["summary"]
summary = run_curate(shards, index, OUT / "run", ts=TS, backend="cpu", progress=False)
texts, matched = summary["texts_read"], summary["matched"]
print(f"texts read: {texts:,}")
print(f"matched: {matched:,} ({matched / texts:.2%} of the texts match at least one entry)")
for figure in summary["ts"]:
    print(
        f"kept, {t_label(figure['t'])}: {figure['kept']:,} "
        f"(expected {figure['expected_kept']:,.1f}; {figure['head_entries']:,} head entries)"
    )
print(json.dumps(summary["seconds"]))

# %% [markdown]
# ## 3. What did a few texts match?
#
# `match` returns, for each text, its distinct entry ids (CSR: `offsets`, `entry_ids`);
# `index.entry(i)` is entry `i`'s string. A text matches an entry when the entry's words
# appear as whole words in it (punctuation is split off, case matters).

# %%
sample = pool.column("caption").slice(0, 4)
result = match(sample, index, backend="cpu")
for i, text in enumerate(sample.to_pylist()):
    entries = [index.entry(e) for e in result.ids_of(i)]
    print(f"{text!r}\n    -> {len(entries)} entries: {entries}\n")

# %% [markdown]
# The same lists were written by the run to `matches/*.parquet` (shard, row, key,
# entry_ids), and the counts to `entry_counts.npy` (MetaCLIP's format). The most matched
# entries, and how likely balancing keeps a text through each of them:

# %%
counts = load_entry_counts(OUT / "run" / COUNTS_NPY)
top = np.argsort(-counts.astype(np.float64), kind="stable")[:10]
for e in top.tolist():
    keep = ", ".join(f"{t_label(t)}: {float(keep_probability(counts[e], t)):.4f}" for t in TS)
    print(f"{index.entry(e)!r:>12} count {int(counts[e]):>6,}   keep probability {keep}")

# %% [markdown]
# ## 4. The entry distribution before and after balancing
#
# Sorting the entries' counts ascending and summing them gives MetaCLIP's figure: after
# balancing with t an entry contributes `min(count, t)`, so the head (frequent entries like
# "a", "the") is flattened while the tail is kept whole. The log-log rank/count plot shows
# the same clipping.

# %% tags=["figure"]
curves = [Curve(None, NO_BALANCING)] + [Curve(t, t_label(t)) for t in TS]
display(cumulative_figure(counts, curves, f"Cumulative entry counts: {source}"))

# %% tags=["figure"]
display(rank_count_figure(counts, curves, "Entry count by rank"))

# %% [markdown]
# ## 5. The report
#
# `metaclip-gpu curate` writes the same figures, the head entries, the curated sizes, the
# stage times and the skipped rows into `<output>/report/index.html` (`--no-report` to skip;
# `metaclip-gpu report <output>` to redo it). Open it in a browser: it needs no network.

# %% tags=["report"]
page = write_report(OUT / "run")
print(f"report: {page}")
print(sorted(p.name for p in page.parent.iterdir()))
