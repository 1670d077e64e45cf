"""Map stages that inject failures, for the Ray executor's tests. All pass every row through unchanged.

Registered on import; tests/test_ray_executor.py ships this module to Ray workers by value (cloudpickle),
so workers need not import it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from mmcurate.pipeline.stage import MapStage, StageResult, registry


def _first_call(marker: str) -> bool:
    """True for exactly one call across all processes: the one that creates the marker file."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


@registry.register
class KillWorkerOnce(MapStage):
    """Kills its worker process (os._exit) on the first call anywhere; later calls pass rows through.
    No setup(): the Ray executor runs it as tasks."""

    name = "test_kill_worker_once"

    @dataclass
    class Params:
        marker: str = ""

    def process(self, batch: pa.Table) -> StageResult:
        if _first_call(self.params.marker):
            os._exit(1)
        return StageResult(batch)


@registry.register
class KillActorOnce(KillWorkerOnce):
    """The same in an actor: it has a setup(), so the Ray executor runs it in an actor pool."""

    name = "test_kill_actor_once"

    def setup(self) -> None:
        self.ready = True


@registry.register
class FailWhileFlagged(MapStage):
    """Raises on rows of input shards whose path ends with `shard_suffix` while the file `flag` exists."""

    name = "test_fail_while_flagged"

    @dataclass
    class Params:
        flag: str = ""
        shard_suffix: str = ""

    def process(self, batch: pa.Table) -> StageResult:
        if (
            os.path.exists(self.params.flag)
            and pc.any(pc.ends_with(batch.column("source"), self.params.shard_suffix)).as_py()
        ):
            raise RuntimeError("injected failure")
        return StageResult(batch)


@registry.register
class DropUnknownColumns(MapStage):
    """Keeps only the input columns (a stage that breaks the pass-through contract)."""

    name = "test_drop_unknown_columns"

    def process(self, batch: pa.Table) -> StageResult:
        return StageResult(batch.select([c for c in batch.column_names if not c.startswith("__")]))


@registry.register
class SleepPerBatch(MapStage):
    """Sleeps `seconds` per batch: keeps a run going long enough to be killed half-way."""

    name = "test_sleep_per_batch"

    @dataclass
    class Params:
        seconds: float = 0.0

    def process(self, batch: pa.Table) -> StageResult:
        import time

        time.sleep(self.params.seconds)
        return StageResult(batch)
