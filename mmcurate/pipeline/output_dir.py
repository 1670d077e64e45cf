"""The output directory's safety: what a run may write or delete there, the run lock, and what --resume trusts.

* apart from the input   An output directory that equals, contains or lies inside an input path (a shard,
                         the input directory, a LLaVA image_root, a folder reader's root, a caption file),
                         symlinks resolved, is refused before anything is written: an --overwrite there
                         would delete the input, and a later run would read its own outputs.
* ours to delete         --overwrite replaces only a directory that is empty or holds an mmcurate run (a
                         manifest.json of ours, or a _work/ with our run.json or lock). Even then it deletes
                         only the entries mmcurate writes (OWN_ENTRIES); anything else a user put there stays.
* one run at a time      `RunLock`: flock on _work/lock, held from before the first write or deletion to the
                         end of the run. The kernel releases it when the process dies (kill -9 + --resume
                         works); a second run or resume on the same output fails at once naming the holder.
* trusted resume         each shard's done record lists its _work files with size and row count; --resume
                         checks them (stat + Parquet footer, no data read) and redoes a shard that fails.
                         --resume of a finished run (manifest.json, no _work/) compares its recipe and input:
                         a different one is refused, the same one is reported as finished and left as it is.
* no stale temp files    hidden temp files of killed writers are removed when a run starts or resumes.
* nothing on a failed start   executors validate the input, the reader options and the stages (including a
                         cheap check that weight files exist) before calling anything here that writes.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from mmcurate.io.atomic import is_temp_file
from mmcurate.pipeline.stage import StageError

WORK = "_work"
LOCK = "lock"
RUN_RECORD = "run.json"
MANIFEST = "manifest.json"
#: Everything a run writes at the top of its output directory; --overwrite deletes these and nothing else.
OWN_FILES = (
    "manifest.json",
    "samples.parquet",
    "rejects.parquet",
    "duplicates.parquet",
    "thumbs.parquet",
    "report.html",
)
OWN_DIRS = ("shards", WORK)
OWN_ENTRIES = OWN_FILES + OWN_DIRS


def log(msg: str) -> None:
    print(f"mmcurate: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Output apart from the input
# ---------------------------------------------------------------------------------------------
def _is_url(p: str) -> bool:
    return "://" in p and not p.startswith("file://")


def _local(p) -> str | None:
    if p is None or not isinstance(p, (str, os.PathLike)):
        return None
    s = os.fspath(p)
    if _is_url(s):
        return None
    return s[len("file://") :] if s.startswith("file://") else s


def input_paths(input_path, reader, shards: list[str]) -> list[str]:
    """Every local path the input consists of: the input spec's existing paths, the reader's roots (a LLaVA
    image_root, a folder's root and caption file) and each shard (a file, or ROOT@N for the readers that
    cut one file or folder into shards)."""
    found = []
    specs = input_path if isinstance(input_path, (list, tuple)) else [input_path]
    for s in specs:
        s = _local(s)
        if s and os.path.exists(s):
            found.append(s)
    for attr in ("path", "root", "image_root", "captions"):
        v = getattr(reader, attr, None)
        for item in v if isinstance(v, (list, tuple)) else [v]:
            item = _local(item)
            if item and os.path.exists(item):
                found.append(item)
    for shard in shards:
        s = _local(shard)
        if s is None:
            continue
        if not os.path.exists(s) and "@" in s:
            s = s.rpartition("@")[0]
        found.append(s)
    return list(dict.fromkeys(found))


def check_apart_from_input(out: Path, paths: list[str]) -> None:
    """Refuse an output directory that equals, contains or lies inside one of `paths` (symlinks resolved)."""
    o = os.path.realpath(out)
    seen = set()
    for p in paths:
        r = os.path.realpath(p)
        if r in seen:
            continue
        seen.add(r)
        if o == r:
            how = "is"
        elif r.startswith(o.rstrip(os.sep) + os.sep):
            how = "contains"
        elif o.startswith(r.rstrip(os.sep) + os.sep):
            how = "lies inside"
        else:
            continue
        shown = p if os.path.realpath(p) == p else f"{p} (= {r})"
        raise StageError(
            f"output directory {out} {how} the input {shown}; choose an output directory outside "
            f"the input (mmcurate never writes into or deletes its input)"
        )


# ---------------------------------------------------------------------------------------------
# The run lock
# ---------------------------------------------------------------------------------------------
class OutputInUse(StageError):
    """Another live process holds the output directory's lock."""


class RunLock:
    """An exclusive flock on OUT/_work/lock for the whole run. The file holds the holder's pid, host and start
    time (for the message a second run prints). The kernel drops the lock when the holder dies, whatever
    kills it; the file itself may stay and is reused."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.path = self.out / WORK / LOCK
        self.fd: int | None = None
        self.created_out = False

    def acquire(self) -> RunLock:
        self.created_out = not self.out.exists()
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise StageError(f"output {self.out} exists and is not a directory") from None
        (self.out / WORK).mkdir(exist_ok=True)
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise OutputInUse(
                    f"output {self.out} is in use by {self._holder()}; wait for that run to end "
                    f"(or stop it), then run again with --resume"
                ) from None
            # The holder before us may have deleted the file (end of its run) after we opened it: then this
            # lock guards nothing, so take it again on the file now at the path.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                info = {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
                try:
                    os.ftruncate(fd, 0)
                    os.write(fd, json.dumps(info).encode())
                except OSError as exc:  # a full disk: say where
                    self.release(cleanup=True)
                    raise OSError(exc.errno, exc.strerror, str(self.path)) from None
                return self
            os.close(fd)
            (self.out / WORK).mkdir(parents=True, exist_ok=True)
        raise StageError(f"could not lock {self.path}: it keeps being replaced by another process")

    def _holder(self) -> str:
        try:
            info = json.loads(self.path.read_text() or "{}")
            return f"pid {info['pid']} on host {info['host']} (started {info['started']})"
        except (OSError, ValueError, KeyError, TypeError):
            return "another process (pid unknown)"

    def release(self, cleanup: bool = False) -> None:
        """Drop the lock. cleanup: first remove the lock file, a _work/ that holds no result (see _entries), and
        the output directory when this run created it and it is empty: a run that ends before its first result
        (refused, or failed in set-up) leaves no trace."""
        if self.fd is None:
            return
        try:
            if cleanup:
                try:
                    if os.path.samestat(os.fstat(self.fd), os.stat(self.path)):
                        os.unlink(self.path)  # while locked: nobody can be using it
                except FileNotFoundError:
                    pass
                work = self.out / WORK
                if work.is_dir() and not work.is_symlink() and _work_is_empty(work):
                    shutil.rmtree(work, ignore_errors=True)
                if self.created_out:
                    try:
                        self.out.rmdir()
                    except OSError:  # not empty, or gone
                        pass
        finally:
            os.close(self.fd)
            self.fd = None


# ---------------------------------------------------------------------------------------------
# What the output directory holds, and what a run may do with it
# ---------------------------------------------------------------------------------------------
def recipe_identity(recipe_dict: dict) -> dict:
    """What must not change between a run and its resume: the recipe minus run-time knobs (workers, batch size
    do not change results), the report switch and the output path (a moved output directory resumes)."""
    d = json.loads(json.dumps(recipe_dict))
    d.pop("run", None)
    d.get("output", {}).pop("report", None)
    d.get("output", {}).pop("path", None)
    return d


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _our_manifest(out: Path) -> dict | None:
    m = _read_json(out / MANIFEST)
    if (
        isinstance(m, dict)
        and "manifest_version" in m
        and isinstance(m.get("run"), dict)
        and isinstance(m["run"].get("recipe"), dict)
    ):
        return m
    return None


def _our_run_record(out: Path) -> dict | None:
    r = _read_json(out / WORK / RUN_RECORD)
    return r if isinstance(r, dict) and "recipe" in r and "shards" in r else None


def _entries(out: Path) -> list[str]:
    """The directory's entries, not counting a _work/ that holds nothing but a lock file, a run record and empty
    work folders: a run that failed or was killed before its first result (say, a weight file that did not
    load), or the lock this run has just taken. Nothing is lost by starting afresh over it."""
    if not out.is_dir():
        return []
    names = sorted(os.listdir(out))
    if WORK in names and _work_is_empty(out / WORK):
        names.remove(WORK)
    return names


def _work_is_empty(work: Path) -> bool:
    try:
        for name in os.listdir(work):
            if name in (LOCK, RUN_RECORD):
                continue
            p = work / name
            if not (p.is_dir() and not p.is_symlink() and not os.listdir(p)):
                return False
    except OSError:
        return False
    return True


def is_ours(out: Path) -> bool:
    """Whether the directory holds an mmcurate run: a manifest.json of ours, or a _work/ with our run record."""
    return _our_manifest(out) is not None or _our_run_record(out) is not None


@dataclasses.dataclass
class Decision:
    action: str  # "fresh" | "resume" | "finished"
    manifest: dict | None = None  # for "finished": the finished run's manifest


def decide(out: Path, *, resume: bool, overwrite: bool, identity: dict, shards: list[str]) -> Decision:
    """What the run does with the output directory, deciding only (nothing is written). Raises StageError with
    the reason and the flag or fix when the directory must not be used."""
    names = _entries(out)
    if not names:
        return Decision("fresh")
    if overwrite:
        if not is_ours(out):
            raise StageError(
                f"output {out} is not empty and holds no mmcurate run (no manifest.json or "
                f"_work/{RUN_RECORD} of ours), so --overwrite will not delete it; choose another "
                f"output directory, or empty this one yourself"
            )
        return Decision("fresh")
    if not resume:
        raise StageError(
            f"output directory {out} is not empty: pass --resume to finish an earlier run of the "
            f"same recipe, or --overwrite to start again"
        )
    record = _our_run_record(out)
    if record is not None:
        if record != json.loads(json.dumps({"recipe": identity, "shards": shards})):
            raise StageError(
                f"{out} holds an unfinished run of a different recipe or input; use --overwrite to discard it"
            )
        return Decision("resume")
    manifest = _our_manifest(out)
    if manifest is not None:
        same = recipe_identity(manifest["run"]["recipe"]) == json.loads(json.dumps(identity)) and [
            i.get("shard") for i in manifest.get("inputs", [])
        ] == list(shards)
        if not same:
            raise StageError(
                f"{out} holds a finished run of a different recipe or input; use --overwrite to replace it"
            )
        missing = [o["path"] for o in manifest.get("outputs", []) if not (out / o["path"]).is_file()]
        if missing:
            raise StageError(
                f"{out} holds a finished run of this recipe, but its output {missing[0]} is missing; "
                f"use --overwrite to run it again"
            )
        return Decision("finished", manifest)
    if set(names) <= set(OWN_ENTRIES) | {n for n in names if is_temp_file(n)}:
        return Decision("fresh")  # only our own leftovers of a run that never recorded itself
    raise StageError(f"output {out} is not empty and holds no mmcurate run to resume; choose another output directory")


def prepare(
    out: Path, *, resume: bool, overwrite: bool, identity: dict, shards: list[str]
) -> tuple[RunLock | None, dict | None]:
    """Take the run lock and make the output directory ready: (lock, None) to run, or (None, manifest) when
    --resume finds this recipe's run already finished (nothing to do; the directory is left as it was).
    A refusal raises StageError and leaves nothing behind."""
    if not (out / WORK / LOCK).exists():
        # Refuse what is refused anyway before writing anything (the lock's folder included). With a lock file
        # there, a live run may hold it: then the lock below says so, rather than "not empty".
        decide(out, resume=resume, overwrite=overwrite, identity=identity, shards=shards)
    lock = RunLock(out).acquire()
    try:
        # Again under the lock, which makes it the answer: the directory cannot change under us any more.
        decision = decide(out, resume=resume, overwrite=overwrite, identity=identity, shards=shards)
        if decision.action == "finished":
            log(
                f"{out} already holds a finished run of this recipe and input; nothing to do (use --overwrite "
                f"to run it again)"
            )
            lock.release(cleanup=True)
            return None, decision.manifest
        if decision.action == "fresh":
            clear_own_entries(out)  # --overwrite, or leftovers of a run that never got to a result
        else:
            remove_stale_temp_files(out)
        for sub in ("meta", "rejects", "done"):
            (out / WORK / sub).mkdir(parents=True, exist_ok=True)
    except BaseException:
        lock.release(cleanup=True)
        raise
    return lock, None


def clear_own_entries(out: Path) -> None:
    """--overwrite: delete what mmcurate writes (OWN_ENTRIES, our temp files), keeping _work/lock (held by this
    run) and anything mmcurate did not write."""
    for name in sorted(os.listdir(out)):
        p = out / name
        if name == WORK and p.is_dir() and not p.is_symlink():
            for sub in sorted(os.listdir(p)):
                if sub != LOCK:
                    _remove(p / sub)
        elif name in OWN_ENTRIES or is_temp_file(name):
            _remove(p)
    kept = [n for n in os.listdir(out) if n != WORK]
    if kept:
        log(
            f"--overwrite kept {len(kept)} entr{'y' if len(kept) == 1 else 'ies'} mmcurate did not write in "
            f"{out}: {', '.join(sorted(kept)[:5])}{' ...' if len(kept) > 5 else ''}"
        )


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink(missing_ok=True)


def remove_stale_temp_files(out: Path) -> list[str]:
    """Hidden temp files of killed writers (atomic writes, shards in progress) in our own parts of the output
    directory. Only under the run lock: a live writer's temp file looks the same."""
    removed = []
    roots = [out] + [out / d for d in OWN_DIRS if (out / d).is_dir() and not (out / d).is_symlink()]
    for i, root in enumerate(roots):
        walk = [(str(root), [], os.listdir(root))] if i == 0 else os.walk(root)
        for dirpath, _, files in walk:
            for name in files:
                p = os.path.join(dirpath, name)
                if is_temp_file(name) and os.path.isfile(p) and not os.path.islink(p):
                    os.unlink(p)
                    removed.append(p)
    if removed:
        log(f"removed {len(removed)} stale temp file(s) of an interrupted run in {out}")
    return removed


# ---------------------------------------------------------------------------------------------
# Done records
# ---------------------------------------------------------------------------------------------
def file_record(path: Path, rows: int) -> dict:
    """What a done record keeps about one of a shard's work files, for resume to check it."""
    return {"path": path.name, "size": os.stat(path).st_size, "rows": int(rows)}


def check_done_record(work: Path, record: dict, shard: str) -> str | None:
    """Why a done record cannot be trusted (None when its files are there and complete): the shard it names,
    and each file's existence, size and row count (from the Parquet footer, no data read)."""
    import pyarrow.parquet as pq

    if not isinstance(record, dict):
        return "its done record is unreadable"
    if record.get("shard") != shard:
        return "its done record names another shard"
    files = record.get("files")
    if not isinstance(files, dict):
        return "its done record lists no files to check (written by an older mmcurate)"
    for kind in ("meta", "rejects"):
        f = files.get(kind)
        if f is None:
            continue
        p = work / kind / f["path"]
        try:
            size = os.stat(p).st_size
        except OSError:
            return f"{WORK}/{kind}/{f['path']} is missing"
        if size != f["size"]:
            return f"{WORK}/{kind}/{f['path']} has {size} bytes, {f['size']} were written"
        try:
            rows = pq.read_metadata(p).num_rows
        except Exception as exc:  # noqa: BLE001 - any unreadable footer means: redo the shard
            return f"{WORK}/{kind}/{f['path']} is unreadable ({type(exc).__name__})"
        if rows != f["rows"]:
            return f"{WORK}/{kind}/{f['path']} has {rows} rows, {f['rows']} were written"
    return None


def read_done_record(path: Path) -> dict | None:
    return _read_json(path)


def forget_shard(work: Path, index: int) -> None:
    """Remove what a shard left in work/ (its done record first), so that it is mapped again from scratch."""
    name = f"{index:05d}"
    for p in (work / "done" / f"{name}.json", work / "meta" / f"{name}.parquet", work / "rejects" / f"{name}.parquet"):
        p.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Pre-flight: stage set-up that can fail, checked without loading anything
# ---------------------------------------------------------------------------------------------
def preflight_stages(stages) -> None:
    """Checks, before the output is touched, what would make a stage's setup() fail for want of a file: a
    stage's own `preflight()` when it has one; else every `weights` / `*_weights` parameter naming a path
    that does not exist, and a CLIP model's weights resolved from the caches (file lookups only, no load).
    Loading (and a file's contents) is still checked by setup(), in the map phase."""
    for st in stages:
        own = getattr(st, "preflight", None)
        if callable(own):
            own()
            continue
        p = getattr(st, "params", None)
        if p is None or not dataclasses.is_dataclass(p):
            continue
        for f in dataclasses.fields(p):
            if f.name != "weights" and not f.name.endswith("_weights"):
                continue
            v = getattr(p, f.name)
            if isinstance(v, str) and v != "random" and not os.path.exists(os.path.expanduser(v)):
                raise StageError(f"stage '{st.name}': {f.name} {v!r} does not exist; give the path of the weight file")
        if hasattr(p, "model_name") and hasattr(p, "weights") and not getattr(p, "allow_download", False):
            try:
                from mmcurate.models.loader import WeightsNotFoundError, resolve_weights
            except ImportError:
                continue
            try:
                resolve_weights(p.model_name(), p.weights)
            except WeightsNotFoundError as exc:
                raise StageError(f"stage '{st.name}': cannot load weights for {p.model_name()!r}: {exc}") from None
            except (KeyError, ValueError):
                continue  # the stage's own checks report these
