"""metaclip-gpu: MetaCLIP data curation on NVIDIA GPUs, with a first-class CPU backend.

The public API: `curate` (the whole pipeline, MetaCLIP 1 or worldwide, in process or on a dask
cluster), the stages one at a time over a run directory (`run_match`, `run_count`,
`run_balance`), and the engine's in-memory matching (`MetadataIndex`, `match`, `MatchResult`,
`load_metadata`). Packages: `engine` (metadata, index, matching, backends), `pipeline` (the
stages in the order data flows, and `pipeline.run`, the orchestrator), `metadata_builder`,
`report`, `cli`.
"""

from metaclip_gpu.engine.index import MetadataIndex
from metaclip_gpu.engine.match import MatchResult, match
from metaclip_gpu.engine.metadata import load_metadata
from metaclip_gpu.pipeline.balance import run_balance
from metaclip_gpu.pipeline.count import run_count
from metaclip_gpu.pipeline.match import run_match
from metaclip_gpu.pipeline.run import curate

__all__ = [
    "MatchResult",
    "MetadataIndex",
    "curate",
    "load_metadata",
    "match",
    "run_balance",
    "run_count",
    "run_match",
]
__version__ = "0.1.0"
