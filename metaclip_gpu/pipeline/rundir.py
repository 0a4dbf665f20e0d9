"""What a run directory belongs to (SPEC section 7): ``<out_dir>/run.json``.

The match stage records, once per directory, the run's configuration: the metadata (its
SHA-256 and entry count; padding; per language for a worldwide run, with the language column
and the unknown-language policy) and the read options that decide the match files (text and
key columns, TSV columns, header), with the match config hash its manifest records carry
(`shard_match.stage_config`), and the list of shards of the run. Later stages record what they
made from it: the counts (for which config and shards, each file's checksum) and the last
balance's seed. What each stage does with it:

match
    Another configuration REDOES: the new one is recorded (the counts record, which
    depended on the old one, is dropped) and every shard whose manifest record has another
    config is matched again. The shard list is replaced by this run's (a shard removed from
    the input is no longer counted).
count
    REFUSES (`RunDirError`, one line) when given other metadata than the match stage used, or
    when a shard's match record is of another configuration; counts only the recorded shard
    list.
balance
    REFUSES when its read options differ from the match stage's, or when the counts are
    missing, of another configuration, of another shard list, or damaged (checksum); REDOES
    the curated files of another seed, t or counts (the ``_balance.json`` digest) and any
    damaged one (checksum).
curate, curate --worldwide
    run the three, so another configuration is redone from the match stage on.

Every message names the directory and the difference and says how to start afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from metaclip_gpu import storage
from metaclip_gpu.engine.index import MetadataIndex
from metaclip_gpu.engine.metadata import content_digest
from metaclip_gpu.pipeline.checksums import checksum_matches

RUN_NAME = "run.json"
RUN_FORMAT = 1


class RunDirError(RuntimeError):
    """A stage found the run directory holding results of other settings (one line)."""


def _afresh(out_dir: Path | storage.RemotePath) -> str:
    return f"use a new --output (or delete {out_dir}) to start afresh"


# ---------------------------------------------------------------------- the record
def load_state(out_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The record of `out_dir`, or None (no match stage ran there, or an unreadable file)."""
    try:
        data = json.loads(storage.read_bytes(storage.location(out_dir) / RUN_NAME))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == RUN_FORMAT else None


def save_state(out_dir: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Writes the record (a temporary name, then renamed: a reader sees the old or the new;
    in object storage one PUT, as atomic)."""
    out = storage.location(out_dir)
    if isinstance(out, storage.RemotePath):
        from metaclip_gpu.storage_write import write_json

        write_json(out / RUN_NAME, state)
        return
    path = out / RUN_NAME
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def metadata_config(index: Any) -> dict[str, Any]:
    """The metadata part of the configuration, of a `MetadataIndex` or `LanguageIndexes` (or
    an `english_only.EnglishOnly` wrapper: its metadata is the wrapped index's; the filter
    itself is part of the match stage's config id)."""
    if isinstance(getattr(index, "index", None), MetadataIndex):
        index = index.index
    indexes = getattr(index, "indexes", None)
    if indexes is not None:  # worldwide
        return {
            "mode": "worldwide",
            "sha256": index.digest,
            "entries": len(index),
            "languages": {lang: _index_config(i) for lang, i in indexes.items()},
            "lang_column": index.lang_column,
            "unknown_language": index.unknown,
        }
    return {"mode": "metaclip", **_index_config(index)}


def _index_config(index: Any) -> dict[str, Any]:
    digest = index.stats.digest or content_digest(
        json.dumps(index.entries.to_pylist()).encode("utf-8")
    )
    return {"sha256": digest, "entries": len(index), "padding": index.stats.padding}


def read_config(options: Any) -> dict[str, Any]:
    """The read options that decide which texts (and keys) the match files hold."""
    return {
        "text_column": options.text_column,
        "key_column": options.key_column,
        "tsv_columns": list(options.tsv_columns) if options.tsv_columns is not None else None,
        "header": options.header,
    }


def shards_digest(names: list[str]) -> str:
    return hashlib.sha256(json.dumps(sorted(names)).encode("utf-8")).hexdigest()[:16]


def _describe_metadata(config: dict[str, Any]) -> str:
    digest = str(config.get("sha256"))[:12]
    return f"{config.get('mode')} metadata sha256 {digest} ({config.get('entries'):,} entries)"


def _differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    parts = []
    if old.get("metadata") != new.get("metadata"):
        parts.append(
            f"{_describe_metadata(old['metadata'])} before, "
            f"{_describe_metadata(new['metadata'])} now"
        )
    if old.get("read") != new.get("read"):
        changed = {
            k: (old["read"].get(k), new["read"].get(k))
            for k in new["read"]
            if old.get("read", {}).get(k) != new["read"].get(k)
        }
        listed = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
        parts.append(f"read options {listed}")
    return "; ".join(parts) or "another match config"


# ---------------------------------------------------------------------- match
def begin_match(
    out_dir: str | os.PathLike[str], index: Any, options: Any, config_id: str, shards: list[str]
) -> str | None:
    """Records this match run's configuration and shard list before any shard is matched.
    Returns what differs from the recorded configuration (then redone), or None."""
    out_dir = storage.location(out_dir)
    new = {
        "metadata": metadata_config(index),
        "read": read_config(options),
        "match_config": config_id,
    }
    state = load_state(out_dir)
    changed = None
    if state is None or state.get("config") != new:
        if state is not None and state.get("config") is not None:
            changed = _differences(state["config"], new)
        state = {"format": RUN_FORMAT, "config": new}  # what depended on the old one goes
    state["shards"] = list(shards)
    state.pop("match", None)
    save_state(out_dir, state)
    return changed


def end_match(out_dir: str | os.PathLike[str], matched_this_run: int, seconds: float) -> None:
    """Records the match stage's figures the summary needs (stage at a time)."""
    state = load_state(out_dir)
    if state is not None:
        state["match"] = {"shards_matched_this_run": matched_this_run, "seconds": seconds}
        save_state(out_dir, state)


def match_config_id(out_dir: str | os.PathLike[str]) -> str | None:
    state = load_state(out_dir)
    return None if state is None else state.get("config", {}).get("match_config")


def current_shards(out_dir: str | os.PathLike[str]) -> list[str] | None:
    """The shard names of the last match run into `out_dir` (None: no record)."""
    state = load_state(out_dir)
    return None if state is None else list(state.get("shards", []))


# ---------------------------------------------------------------------- count
def check_metadata(out_dir: str | os.PathLike[str], index: Any, stage: str) -> None:
    """`RunDirError` when `index` is not the metadata the match stage used in `out_dir`."""
    out_dir = storage.location(out_dir)
    state = load_state(out_dir)
    if state is None:
        return
    recorded = state["config"]["metadata"]
    given = metadata_config(index)
    if recorded != given:
        raise RunDirError(
            f"{stage}: {out_dir} was matched with {_describe_metadata(recorded)}, not "
            f"{_describe_metadata(given)}; rerun match with this metadata, or "
            f"{_afresh(out_dir)}"
        )


def record_counts(
    out_dir: str | os.PathLike[str], shards: list[str], files: dict[str, str], seconds: float
) -> None:
    """Records the counts just written: for which match config and shards, their checksums."""
    state = load_state(out_dir)
    if state is None:
        return
    state["counts"] = {
        "match_config": state["config"]["match_config"],
        "shards": shards_digest(shards),
        "n_shards": len(shards),
        "files": files,
        "seconds": seconds,
    }
    save_state(out_dir, state)


def record_counts_file(out_dir: str | os.PathLike[str], name: str, checksum: str) -> None:
    """Adds one more counts file, written after `record_counts` (the Parquet table), to the
    counts record."""
    state = load_state(out_dir)
    if state is None or state.get("counts") is None:
        return
    state["counts"].setdefault("files", {})[name] = checksum
    save_state(out_dir, state)


# ---------------------------------------------------------------------- balance
def check_balance_inputs(
    out_dir: str | os.PathLike[str], options: Any, shards: list[str], counts_name: str
) -> dict[str, Any] | None:
    """`RunDirError` unless the counts of `out_dir` are of its match config and of `shards`,
    undamaged, and `options` read the texts as the match stage did. Returns the record (None
    for a directory of an older version, which has none: then nothing is checked)."""
    out_dir = storage.location(out_dir)
    state = load_state(out_dir)
    if state is None:
        return None
    config = state["config"]
    if config["read"] != read_config(options):
        raise RunDirError(
            f"balance: {out_dir} was matched with other read options ("
            + _differences(config, {**config, "read": read_config(options)})
            + f"); give the match stage's options, or {_afresh(out_dir)}"
        )
    counts = state.get("counts")
    if counts is None or counts.get("match_config") != config["match_config"]:
        raise RunDirError(
            f"balance: {out_dir} has no counts of its current match stage; run count first"
        )
    if counts.get("shards") != shards_digest(shards):
        raise RunDirError(
            f"balance: the counts in {out_dir} are over {counts.get('n_shards')} other shards "
            f"than the {len(shards)} given; run match and count on these shards first"
        )
    path = out_dir / counts_name
    if not checksum_matches(path, counts.get("files", {}).get(counts_name), "run count again"):
        raise RunDirError(f"balance: {path} is missing or damaged; run count again")
    return state


def record_balance(out_dir: str | os.PathLike[str], seed: int, seconds: float) -> None:
    state = load_state(out_dir)
    if state is not None:
        state["balance"] = {"seed": int(seed), "seconds": seconds}
        save_state(out_dir, state)
