"""The curation pipeline: columnar batches flow through map stages; global steps decide across the run.

Stages are executor-agnostic (the local executor runs them now, a Ray executor later), so a stage
holds no file handles, threads or executor state between calls other than what `setup()` loads.
"""
from mmcurate.pipeline.schema import DUPLICATES_SCHEMA, REJECTS_SCHEMA, SAMPLE_SCHEMA
from mmcurate.pipeline.stage import (GlobalResult, GlobalStage, MapStage, Resources, StageError,
                                     StageResult, registry)

__all__ = ["SAMPLE_SCHEMA", "REJECTS_SCHEMA", "DUPLICATES_SCHEMA", "MapStage", "GlobalStage", "Resources",
           "StageResult", "GlobalResult", "StageError", "registry"]
