"""The curation pipeline: columnar batches flow through map stages; global steps decide across the run.

Stages are executor-agnostic (the local executor and the Ray executor run the same ones), so a stage
holds no file handles, threads or executor state between calls other than what `setup()` loads, and a map
stage keeps the columns it does not know (the Ray executor tags rows with its own).
"""

from mmcurate.pipeline.schema import DUPLICATES_SCHEMA, REJECTS_SCHEMA, SAMPLE_SCHEMA
from mmcurate.pipeline.stage import GlobalResult, GlobalStage, MapStage, Resources, StageError, StageResult, registry

__all__ = [
    "SAMPLE_SCHEMA",
    "REJECTS_SCHEMA",
    "DUPLICATES_SCHEMA",
    "MapStage",
    "GlobalStage",
    "Resources",
    "StageResult",
    "GlobalResult",
    "StageError",
    "registry",
]
