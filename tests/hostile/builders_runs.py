"""Helpers for the output-safety and fault-injection tests: runs of the real CLI killed with SIGKILL (or paused) at
a chosen point of a phase, comparisons of output directories, image-folder and LLaVA inputs. The demo input, recipes and
plain runs are tests/helpers.py's."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from mmcurate.io.atomic import is_temp_file
from tests.helpers import write_recipe

ROOT = Path(__file__).resolve().parents[2]

#: Outputs that record times or the machine (manifest, report) are compared by their counts, not their bytes.
VOLATILE = {"manifest.json", "report.html"}


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """stderr without the run's log records (progress, input notes, warnings: `mmcurate: ...` lines that are not
    `mmcurate: error: ...`): what is left must be the one error line, never a traceback or "Exception ignored"."""
    return [
        ln
        for ln in proc.stderr.splitlines()
        if ln.strip() and (ln.startswith("mmcurate: error: ") or not ln.startswith("mmcurate: "))
    ]


# A driver that runs the CLI in a process that kills itself (SIGKILL: no cleanup, no finally, no atexit) at a
# chosen point. The points wrap the real functions; nothing else changes.
_DRIVER = r"""
import os, signal, sys, time
from pathlib import Path
point, n = sys.argv[1], int(sys.argv[2])
calls = [0]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def after(mod, name, *, before=False, when=None):
    orig = getattr(mod, name)
    def wrapped(*a, **k):
        if when is None or when(*a, **k):
            calls[0] += 1
            if before and calls[0] == n:
                die()
        res = orig(*a, **k)
        if not before and calls[0] == n and (when is None or when(*a, **k)):
            die()
        return res
    setattr(mod, name, wrapped)

import mmcurate.pipeline.executor as ex
from mmcurate.io.shard_writer import ShardWriter
if point == "map":              # after the n-th shard's done record
    after(ex, "write_map_shard")
elif point == "map_before_done":  # the n-th shard's meta and rejects written, its done record not yet
    after(ex, "_atomic_json", before=True, when=lambda path, obj: Path(path).parent.name == "done")
elif point == "global":         # the global phase computed, nothing written yet
    after(ex.LocalExecutor, "_global_phase")
elif point == "write":          # in the middle of the n-th output tar member (a shard in progress)
    after(ShardWriter, "_add_member", before=True)
elif point == "report":         # outputs and manifest written, report not yet, _work/ still there
    import mmcurate.report.html_report as hr
    import mmcurate.report as rep
    after(hr, "write_report", before=True)
    rep.write_report = hr.write_report
elif point == "pause":          # wait in the global phase until the file argv[3] exists
    flag = Path(sys.argv[3])
    orig = ex.LocalExecutor._global_phase
    def paused(self, *a, **k):
        Path(str(flag) + ".waiting").write_text(str(os.getpid()))
        while not flag.exists():
            time.sleep(0.02)
        return orig(self, *a, **k)
    ex.LocalExecutor._global_phase = paused
    sys.argv[3:4] = []
from mmcurate.cli import main
sys.exit(main(sys.argv[3:]))
"""


def killed_run(r: dict, point: str, n: int = 1, *flags, tmp: Path) -> subprocess.CompletedProcess:
    """Run the recipe, SIGKILLed at `point` (see _DRIVER) the n-th time it is reached."""
    path = write_recipe(r, tmp / (Path(r["output"]["path"]).name + ".yaml"))
    return subprocess.run(
        [sys.executable, "-c", _DRIVER, point, str(n), "run", str(path), *flags],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


def paused_run(r: dict, flag: Path, *flags, tmp: Path) -> subprocess.Popen:
    """Start the recipe in the background; it stops at the start of the global phase until `flag` exists
    (and writes FLAG.waiting with its pid once it is there)."""
    path = write_recipe(r, tmp / (Path(r["output"]["path"]).name + ".yaml"))
    return subprocess.Popen(
        [sys.executable, "-c", _DRIVER, "pause", "0", str(flag), "run", str(path), *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def tree(d: Path, skip=VOLATILE) -> dict[str, str]:
    """relative path -> sha256 of every file under d (except `skip` at the top)."""
    out = {}
    for p in sorted(d.rglob("*")):
        rel = p.relative_to(d).as_posix()
        if p.is_file() and rel not in skip:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def temp_files(d: Path) -> list[str]:
    return [str(p) for p in d.rglob("*") if is_temp_file(p.name)]


def snapshot(d: Path) -> dict[str, tuple]:
    """Every entry under d with its type, size and content hash: to show that d was left untouched."""
    out = {}
    for root, dirs, files in os.walk(d):
        for name in dirs + files:
            p = Path(root) / name
            rel = p.relative_to(d).as_posix()
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def was_killed(proc: subprocess.CompletedProcess) -> bool:
    return proc.returncode == -signal.SIGKILL


def folder_input(d: Path, n: int = 4) -> Path:
    """An image folder with a captions.jsonl (the folder reader's input)."""
    from tests.io_fixtures import image_bytes

    d.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        (d / f"img{i}.jpg").write_bytes(image_bytes(i, size=(64, 48)))
        rows.append(json.dumps({"file_name": f"img{i}.jpg", "caption": f"a small test picture number {i}"}))
    (d / "captions.jsonl").write_text("\n".join(rows) + "\n")
    return d


def llava_input(d: Path, n: int = 4) -> Path:
    """A LLaVA JSON file in d with its images in d/images (image_root)."""
    from tests.io_fixtures import image_bytes

    (d / "images").mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(n):
        (d / "images" / f"{i}.jpg").write_bytes(image_bytes(i, size=(64, 48)))
        entries.append(
            {
                "id": f"s{i}",
                "image": f"{i}.jpg",
                "conversations": [
                    {"from": "human", "value": "<image>\nWhat is shown?"},
                    {"from": "gpt", "value": f"a small test picture number {i}"},
                ],
            }
        )
    path = d / "llava.json"
    path.write_text(json.dumps(entries))
    return path
