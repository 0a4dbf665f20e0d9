"""metaclip-gpu: MetaCLIP data curation on NVIDIA GPUs, with a first-class CPU backend."""

from metaclip_gpu.engine.index import MetadataIndex
from metaclip_gpu.engine.match import MatchResult, match
from metaclip_gpu.engine.metadata import load_metadata

__all__ = ["MatchResult", "MetadataIndex", "load_metadata", "match"]
__version__ = "0.1.0"
