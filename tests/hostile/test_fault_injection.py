"""Fault injection: kill -9 in each phase then --resume, two runs on one output, a full disk.

Each run is the real CLI in its own process; a killed run kills itself with SIGKILL at a chosen point (see
builders_runs._DRIVER), so nothing of it gets to clean up. Every resumed run must end byte-identical to an
uninterrupted one, with no temp file left behind."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import default_recipe_for, mmcurate_run
from tests.hostile.builders_runs import error_lines, killed_run, paused_run, temp_files, tree, was_killed


def _assert_same_outputs(out: Path, reference: Path):
    assert tree(out) == tree(reference)
    m, ref = (json.loads((d / "manifest.json").read_text()) for d in (out, reference))
    assert m["counts"] == ref["counts"] and m["counts"]["accounting_ok"]
    assert m["outputs"] == ref["outputs"]
    assert not (out / "_work").exists()
    assert temp_files(out) == []


@pytest.mark.parametrize(
    "point,n",
    [
        ("map", 2),  # two shards done
        ("map_before_done", 3),  # a shard's files written but not its done record
        ("global", 1),  # every shard mapped, global phase computed, nothing written
        ("write", 80),  # first output shard published, the second in progress (temp files)
        ("report", 1),  # outputs and manifest written, _work/ still there
    ],
)
def test_kill9_then_resume_is_byte_identical(demo_input, reference, tmp_path, point, n):
    out = tmp_path / "out"
    r = default_recipe_for(demo_input, out)
    killed = killed_run(r, point, n, tmp=tmp_path)
    assert was_killed(killed), f"not killed at {point}: rc={killed.returncode} {killed.stderr[-2000:]}"
    assert (out / "_work" / "lock").exists()  # the dead run's lock file stays; its lock does not
    if point == "write":
        assert temp_files(out), "the kill should leave a shard in progress"
    proc = mmcurate_run(r, "--resume", tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    _assert_same_outputs(out, reference)


def test_resume_after_meta_lost_redoes_the_shards(demo_input, reference, tmp_path):
    """A done record whose files are gone or damaged is not trusted: its shard is mapped again."""
    out = tmp_path / "out"
    r = default_recipe_for(demo_input, out)
    assert was_killed(killed_run(r, "global", 1, tmp=tmp_path))
    import shutil

    shutil.rmtree(out / "_work" / "meta")
    rejects = sorted((out / "_work" / "rejects").iterdir())
    rejects[1].write_bytes(rejects[1].read_bytes()[:-20])  # truncated
    proc = mmcurate_run(r, "--resume", tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "mapping shard 0" in proc.stderr and "meta/00000.parquet is missing" in proc.stderr
    assert "mapping shard 1" in proc.stderr
    _assert_same_outputs(out, reference)


def test_two_runs_on_one_output(demo_input, reference, tmp_path):
    """A second run, resume or overwrite beside a live run fails at once naming the holder; the first run
    finishes intact."""
    out = tmp_path / "out"
    r = default_recipe_for(demo_input, out)
    flag = tmp_path / "go"
    first = paused_run(r, flag, tmp=tmp_path)
    try:
        waiting = Path(str(flag) + ".waiting")
        deadline = time.time() + 120
        while not waiting.exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert waiting.exists(), first.communicate()[1]
        before = tree(out)
        for flags in ((), ("--resume",), ("--overwrite",)):
            t = time.perf_counter()
            second = mmcurate_run(r, *flags, tmp=tmp_path)
            assert second.returncode == 2, second.stderr
            lines = error_lines(second)
            assert len(lines) == 1, second.stderr
            assert f"is in use by pid {first.pid} on host " in lines[0] and "started" in lines[0], lines
            assert time.perf_counter() - t < 30
        assert tree(out) == before  # the refused runs touched nothing
    finally:
        flag.write_text("")
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    _assert_same_outputs(out, reference)
    # the lock went with the finished run: the same output resumes (already finished) without complaint
    again = mmcurate_run(r, "--resume", tmp=tmp_path)
    assert again.returncode == 0 and "already holds a finished run" in again.stderr, again.stderr


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return proc.returncode == 0


def test_full_disk_names_enospc_and_resume_finishes(demo_input, reference, tmp_path):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "1500k"):
        pytest.skip("mounting a small tmpfs needs root (mount -t tmpfs)")
    try:
        out = disk / "out"
        r = default_recipe_for(demo_input, out)
        proc = mmcurate_run(r, tmp=tmp_path)
        assert proc.returncode == 2, proc.stderr
        lines = error_lines(proc)
        assert len(lines) == 1, proc.stderr  # no "Exception ignored", no traceback
        assert "ENOSPC" in lines[0] and str(out) in lines[0] and "--resume" in lines[0], lines
        assert temp_files(out) == []  # a failed write removes its temp file
        # free space, then finish
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        proc = mmcurate_run(r, "--resume", tmp=tmp_path)
        assert proc.returncode == 0, proc.stderr
        _assert_same_outputs(out, reference)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
