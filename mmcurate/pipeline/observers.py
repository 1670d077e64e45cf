"""What an executor tells those who watch a run, so that they can add outputs of their own without the
pipeline knowing them. The report is one: ``mmcurate.report.ReportObserver`` collects thumbnails while the
write phase re-reads the input and writes report.html once the manifest is there; the CLI attaches it.

Hooks are called in the order below, on the driver, in the run's own process. Every hook does nothing
unless overridden.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from mmcurate.pipeline.global_phase import GlobalPhaseResult


class RunObserver:
    def on_global_phase(self, result: GlobalPhaseResult) -> None:
        """The global steps are done: their rejects and duplicate groups are known; nothing is written yet."""

    def on_input_batch(self, batch: pa.Table, shard_rejects: pa.Table) -> None:
        """One batch of the write phase's second read of the input (the original image bytes, kept and
        rejected samples alike), with the map phase's rejects of the batch's shard (REJECTS_SCHEMA)."""

    def on_outputs_written(self, out_dir: Path) -> None:
        """Shards and tables are written, the manifest not yet: the time to write files of one's own."""

    def on_run_finished(self, manifest: dict, out_dir: Path) -> dict[str, float]:
        """manifest.json is written. Returns the seconds spent on what this hook wrote, by name, for the
        manifest's timings_s (empty when it wrote nothing; the executor then leaves the manifest as it is)."""
        return {}
