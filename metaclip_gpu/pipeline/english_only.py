"""MetaCLIP 1's English filter (``curate --english-only``): only texts the LID calls English
are matched, as the reference's ``metaclip/metaclip1/cc_matching.py`` does with its ``lid``
option (``lid(text) == "en"`` before the sub-string match).

`EnglishOnly` wraps the run's `MetadataIndex`; the match stage (`stages`) sees it and, per
chunk, labels every text with `lid.identify` (fastText ``lid.176``), matches the English
ones and gives every other text an empty match list (so it is never counted nor kept). The
texts so dropped are counted per shard under the skip reason `NOT_ENGLISH` (the manifest
record's ``skipped``, the summary's ``skipped`` and the report's skipped rows); they stay in
``texts_read``. The identifier's name goes into the match stage's config, so switching the
filter or the model redoes the matching, and a rerun reuses the match files (it never
identifies again).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metaclip_gpu.engine.index import MetadataIndex
from metaclip_gpu.pipeline.lid import INSTALL_HINT, LidModel, english_mask, identify
from metaclip_gpu.pipeline.read import ShardError

NOT_ENGLISH = "not_english"


@dataclass
class EnglishOnly:
    """`index`, matched only against the texts that `model` calls English."""

    index: MetadataIndex
    model: LidModel = field(default_factory=LidModel)

    def __len__(self) -> int:
        return len(self.index)

    def config(self) -> list[Any]:
        """What decides the match output besides the input (`shard_match.stage_config`)."""
        stats = self.index.stats
        return [stats.digest, stats.padding, NOT_ENGLISH, self.model.describe()]

    def check_available(self) -> None:
        """`RuntimeError` when no language identifier is installed, and the errors of
        `lid.LidModel.check` for a named model (before any shard)."""
        self.model.check()
        if self.model.describe() == "none":
            raise RuntimeError(f"--english-only needs a language identifier: {INSTALL_HINT}")

    def english_texts(
        self, texts: pa.Array | pa.ChunkedArray, where: str | Path
    ) -> tuple[pa.Array, int]:
        """`texts` with every text the LID does not call English made null (it then matches
        nothing), and how many non-null texts were so dropped."""
        if isinstance(texts, pa.ChunkedArray):
            texts = texts.combine_chunks()
        codes = identify(texts, self.model)
        if codes is None:
            raise ShardError(where, f"--english-only needs a language identifier: {INSTALL_HINT}")
        english = english_mask(codes)
        dropped = int(len(texts) - texts.null_count - np.count_nonzero(english))
        if dropped == 0:
            return texts, 0
        kept = pc.if_else(pa.array(english, pa.bool_()), texts, pa.scalar(None, texts.type))
        return kept, dropped
