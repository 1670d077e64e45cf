"""The report's part in a run: a run observer (``mmcurate.pipeline.observers.RunObserver``) that collects the
thumbnails while the write phase re-reads the input, writes them to thumbs.parquet beside the outputs, and
renders report.html once the manifest is written, when the recipe asks for it (``output.report``).

    LocalExecutor(recipe, observers=[ReportObserver()]).run()     # what `mmcurate run` does
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmcurate.pipeline.global_phase import GlobalPhaseResult
from mmcurate.pipeline.observers import RunObserver
from mmcurate.report.run_data import THUMBS
from mmcurate.report.thumbnails import ThumbnailCollector

__all__ = ["ReportObserver"]


class ReportObserver(RunObserver):
    """Thumbnails of the rejects (map and global) and of the duplicate groups the report shows, then the report.

    collector_options: ThumbnailCollector's limits (max_per_reason, max_groups, ...)."""

    def __init__(self, **collector_options):
        self.collector_options = collector_options
        self.collector: ThumbnailCollector | None = None
        self._wanted_dup_keys: set[str] = set()
        self._global_rejects_by_source: dict[str, pa.Table] = {}
        self._shard_rejects: pa.Table | None = None
        self._shard_reject_keys: set[str] = set()

    def on_global_phase(self, result: GlobalPhaseResult) -> None:
        self.collector = ThumbnailCollector(**self.collector_options)  # a new write phase starts from nothing
        self._wanted_dup_keys = self.collector.wanted_keys(result.duplicates)
        rejects = nearest_the_cut(result.rejects, self.collector.max_per_reason)
        self._global_rejects_by_source = {
            src: rejects.filter(pc.equal(rejects.column("source"), src))
            for src in set(rejects.column("source").to_pylist())
        }
        self._shard_rejects, self._shard_reject_keys = None, set()

    def on_input_batch(self, batch: pa.Table, shard_rejects: pa.Table) -> None:
        """Offers the collector the rows it can use: the shard's rejects and the members of the duplicate
        groups it will show."""
        if self.collector is None:
            raise RuntimeError("ReportObserver: on_input_batch before on_global_phase")
        if shard_rejects is not self._shard_rejects:  # the first batch of a shard
            self._shard_rejects = shard_rejects
            self._shard_reject_keys = set(shard_rejects.column("key").to_pylist())
        keys = batch.column("key").to_pylist()
        srcs = batch.column("source").to_pylist()
        shard_global = [self._global_rejects_by_source[s] for s in set(srcs) if s in self._global_rejects_by_source]
        interesting = self._shard_reject_keys | self._wanted_dup_keys
        for g in shard_global:
            interesting.update(g.column("key").to_pylist())
        pick = [j for j, k in enumerate(keys) if k in interesting]
        if not pick:
            return
        sub = batch.take(pick).select(["key", "image", "caption"])
        sub_keys = sub.column("key").to_pylist()
        images = dict(zip(sub_keys, sub.column("image").to_pylist()))
        captions = dict(zip(sub_keys, sub.column("caption").to_pylist()))
        for g in shard_global:
            self.collector.offer_rejects(g, images, captions)
        if shard_rejects.num_rows:
            self.collector.offer_rejects(shard_rejects, images, captions)
        if self._wanted_dup_keys:
            self.collector.offer_group_members(self._wanted_dup_keys, sub.select(["key", "image"]))

    def on_outputs_written(self, out_dir: Path) -> None:
        if self.collector is not None:
            self.collector.write(Path(out_dir) / THUMBS)

    def on_run_finished(self, manifest: dict, out_dir: Path) -> dict[str, float]:
        if not manifest["run"]["recipe"]["output"]["report"]:
            return {}
        import mmcurate.report.html_report as html_report  # the renderer loads only for a run that wants it

        t = time.perf_counter()
        html_report.write_report(out_dir)
        return {"report": time.perf_counter() - t}


def nearest_the_cut(rejects: pa.Table, k: int) -> pa.Table:
    """The global rejects with clip_score_filter's (reason ``clip_score``) narrowed to the ``k`` scored highest:
    the collector keeps the smallest keys of what it is offered, and the report's CLIP view shows the rejects just
    below the cut, so those are the ones whose thumbnails are worth keeping. Other rejects pass as they are."""
    from mmcurate.stages.clip import reject_scores

    clip = pc.fill_null(pc.equal(rejects.column("reason"), "clip_score"), False).to_numpy(zero_copy_only=False)
    if not clip.any():
        return rejects
    at = np.flatnonzero(clip)
    scores = reject_scores(rejects.column("detail").take(pa.array(at)))
    nearest = at[np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")[:k]]
    return rejects.take(pa.array(np.sort(np.concatenate([np.flatnonzero(~clip), nearest]))))
