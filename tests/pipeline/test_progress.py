"""Progress: a bar on a terminal; elsewhere (a batch job's log) one-line records every N seconds / 10%."""

from __future__ import annotations

import io
import re

import pyarrow as pa
import pytest

from helpers import default_recipe_for
from mmcurate.api import make_executor
from mmcurate.pipeline import map_phase
from mmcurate.pipeline.global_phase import MemoryGlobalContext, run_global_phase
from mmcurate.pipeline.map_phase import LogProgress, StagePlan, format_duration, progress_interval, progress_mode
from mmcurate.pipeline.stage import StageError, registry


class FakeStream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_progress_mode():
    assert progress_mode(False, FakeStream(True)) is None
    assert progress_mode(None, FakeStream(False)) is None
    assert progress_mode(True, FakeStream(True)) == "bar"
    assert progress_mode(True, FakeStream(False)) == "log"
    assert progress_mode("always", FakeStream(False)) == "bar"
    assert progress_mode("log", FakeStream(True)) == "log"
    assert progress_mode(True, object()) == "log"  # a stream without isatty is no terminal


def test_log_lines_every_interval_and_every_tenth():
    clock, lines = Clock(), []
    p = LogProgress(1000, 20, interval=30, clock=clock, emit=lines.append)
    assert lines == ["map: started, 1,000 samples in 20 shard(s)"]
    clock.t += 5
    p.update({"read": 50})  # 5%, 5 s: nothing yet
    assert len(lines) == 1
    clock.t += 5
    p.update({"read": 60})  # 11%: a tenth crossed
    assert lines[-1] == "map: 110/1,000 samples (11%), 2/20 shards, 11 samples/s, eta 1m21s"
    clock.t += 31
    p.update({"read": 10})  # 12%, but 31 s since the last line
    assert len(lines) == 3 and lines[-1].startswith("map: 120/1,000 samples (12%), 3/20 shards")
    clock.t += 1
    p.update({"read": 10})  # neither
    assert len(lines) == 3
    clock.t += 59
    p.close()
    assert lines[-1] == "map: done, 130 samples from 4 shard(s) in 1m41s, 1 samples/s"


def test_log_lines_without_a_total():
    clock, lines = Clock(), []
    p = LogProgress(None, 3, interval=10, clock=clock, emit=lines.append)
    clock.t += 11
    p.update({"read": 500})
    assert lines == ["map: started, 3 shard(s)", "map: 500 samples, 1/3 shards, 45 samples/s"]


def test_interval_from_the_environment(monkeypatch):
    monkeypatch.delenv("MMCURATE_PROGRESS_INTERVAL", raising=False)
    assert progress_interval() == 30
    monkeypatch.setenv("MMCURATE_PROGRESS_INTERVAL", "2.5")
    assert progress_interval() == 2.5
    for bad in ("0", "-3", "soon"):
        monkeypatch.setenv("MMCURATE_PROGRESS_INTERVAL", bad)
        with pytest.raises(StageError, match="MMCURATE_PROGRESS_INTERVAL must be"):
            progress_interval()


def test_format_duration():
    assert [format_duration(s) for s in (0, 12.4, 93, 3600 + 5 * 60 + 7)] == ["0s", "12s", "1m33s", "1h05m"]


def test_a_run_off_a_terminal_logs_lines(demo_input, tmp_path, monkeypatch):
    """mmcurate.run / the CLI's default (progress=True) with stderr going to a file: log lines, no bar."""
    err = FakeStream(tty=False)
    monkeypatch.setattr("sys.stderr", err)
    monkeypatch.setenv("MMCURATE_PROGRESS_INTERVAL", "1000")
    make_executor(default_recipe_for(demo_input, tmp_path / "out"), report=False).run()
    out = err.getvalue()
    assert "\r" not in out  # no bar
    lines = [line for line in out.splitlines() if line.startswith("mmcurate: map:")]
    assert lines[0] == "mmcurate: map: started, 111 samples in 6 shard(s)"
    assert re.fullmatch(r"mmcurate: map: done, 111 samples from 6 shard\(s\) in \d+s, [\d,]+ samples/s", lines[-1])
    assert all(re.search(r"\(\d+%\), \d/6 shards, [\d,]+ samples/s", line) for line in lines[1:-1])


def test_no_lines_when_progress_is_off(demo_input, tmp_path, monkeypatch):
    err = FakeStream(tty=False)
    monkeypatch.setattr("sys.stderr", err)
    make_executor(default_recipe_for(demo_input, tmp_path / "out"), report=False, progress=False).run()
    assert "map:" not in err.getvalue()


def test_a_terminal_gets_the_bar(monkeypatch):
    shown = []
    monkeypatch.setattr(map_phase, "_progress_bar", lambda total: shown.append(total) or object())
    monkeypatch.setattr("sys.stderr", FakeStream(tty=True))
    assert isinstance(map_phase.map_progress(True, lambda: 42, 3), map_phase._BarProgress)
    assert shown == [42]
    assert map_phase.map_progress(False, lambda: 1 / 0, 3) is None  # nothing counted when nothing is shown


def test_global_step_lines(monkeypatch):
    err = FakeStream(tty=False)
    monkeypatch.setattr("sys.stderr", err)
    table = pa.table({"key": ["a", "b", "c"], "source": ["s"] * 3, "sha256": ["x", "x", "y"]})
    plan = StagePlan.from_stages([registry.create("exact_dedup", {})])
    run_global_phase(MemoryGlobalContext.from_table(table), plan, progress=True)
    lines = err.getvalue().splitlines()
    assert lines[0] == "mmcurate: global: exact_dedup (1/1) started on 3 samples"
    assert re.fullmatch(r"mmcurate: global: exact_dedup \(1/1\) done in \d+\.\ds: 2 kept, 1 rejected", lines[1])
    err.truncate(0)
    err.seek(0)
    run_global_phase(MemoryGlobalContext.from_table(table), plan)
    assert err.getvalue() == ""
