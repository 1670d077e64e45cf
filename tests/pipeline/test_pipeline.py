"""The main job end to end: default recipe on the built-in sample, accounting, outputs, resume, workers."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from contextlib import contextmanager
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from helpers import default_recipe_for, mmcurate_run, output_digests, run_local
from mmcurate.pipeline.recipe import default_recipe_dict, parse_recipe
from mmcurate.pipeline.stage import StageError

ROOT = Path(__file__).resolve().parents[2]


def _truth(input_dir: Path) -> dict:
    return {r["key"]: r for r in map(json.loads, (input_dir / "truth.jsonl").read_text().splitlines())}


def _input_members(input_dir: Path) -> dict:
    """key -> {ext: bytes} of every member of the input shards."""
    out = {}
    for tar in sorted(input_dir.glob("*.tar")):
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                if m.isfile():
                    key, ext = m.name.split(".", 1)
                    out.setdefault(key, {})[ext] = tf.extractfile(m).read()
    return out


def _output_members(out: Path) -> dict:
    res = {}
    for tar in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                key, ext = m.name.split(".", 1)
                res.setdefault(key, {})[ext] = tf.extractfile(m).read()
    return res


@pytest.fixture(scope="module")
def default_run(demo_input, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "default"
    mmcurate_run(default_recipe_for(demo_input, out), check=True, timeout=600)
    return out


def test_every_sample_is_accounted_for(default_run, demo_input):
    manifest = json.loads((default_run / "manifest.json").read_text())
    c = manifest["counts"]
    n_input = len(_input_members(demo_input))
    assert c["read"] == n_input and c["accounting_ok"]
    samples = pq.read_table(default_run / "samples.parquet")
    rejects = pq.read_table(default_run / "rejects.parquet")
    assert samples.num_rows == c["kept"] and rejects.num_rows == c["rejected"]
    keys = samples.column("key").to_pylist() + rejects.column("key").to_pylist()
    assert sorted(keys) == sorted(_input_members(demo_input)), "each input sample exactly once in kept or rejects"
    # per-stage funnel is consistent
    for st in manifest["stages"]:
        assert st["in"] == st["kept"] + st["rejected"], st
        assert sum(st["reasons"].values()) == st["rejected"], st


def test_outputs_hold_original_bytes_and_cleaned_captions(default_run, demo_input):
    inp = _input_members(demo_input)
    out = _output_members(default_run)
    samples = pq.read_table(default_run / "samples.parquet").to_pylist()
    assert set(out) == {s["key"] for s in samples}
    for key, members in out.items():
        assert _image_bytes(members) == _image_bytes(inp[key]), f"{key}: image bytes were re-encoded"
        meta = json.loads(members["json"])
        assert "mmcurate" in meta
    # samples.parquet has what the issue asks for
    cols = set(pq.read_schema(default_run / "samples.parquet").names)
    assert {"key", "source", "sha256", "width", "height", "format", "phash", "caption", "shard"} <= cols
    for s in samples:
        assert len(s["phash"]) == 16 and s["sha256"] == hashlib.sha256(_image_bytes(inp[s["key"]])).hexdigest()
        assert not re.search(r"</?[a-z][a-z0-9]*[\s/>]|&amp;|&lt;", s["caption"] or ""), s["caption"]


def _image_bytes(members: dict) -> bytes:
    return members[next(e for e in members if e not in ("txt", "json"))]


def test_duplicates_and_rejects_match_the_sample_truth(default_run, demo_input):
    truth = _truth(demo_input)
    inp = _input_members(demo_input)
    rejects = {r["key"]: r for r in pq.read_table(default_run / "rejects.parquet").to_pylist()}
    kept = set(pq.read_table(default_run / "samples.parquet").column("key").to_pylist())
    dups = pq.read_table(default_run / "duplicates.parquet").to_pylist()
    for key, t in truth.items():
        if t["label"] in ("truncated", "corrupt", "empty", "unsupported"):
            assert rejects[key]["stage"] == "integrity", (key, rejects.get(key))
        if t["label"] == "exact_duplicate" and t.get("group") in inp and t["group"] != key:
            assert not (key in kept and t["group"] in kept), f"{key} and its byte-identical source both kept"
    exact = [d for d in dups if d["kind"] == "exact"]
    assert exact and all(d["distance"] == 0 for d in exact)
    for d in exact:
        # the direct link is byte-identical; duplicate_of may have moved on to a later step's representative
        assert _image_bytes(inp[d["key"]]) == _image_bytes(inp[d["via"] or d["duplicate_of"]])
    # duplicates are rejected by their stage, and their representative is kept
    for d in dups:
        assert rejects[d["key"]]["stage"] == f"{d['kind']}_dedup"
        assert d["duplicate_of"] in kept and d["representative_kept"]


def test_report_and_manifest_written(default_run):
    html = (default_run / "report.html").read_text()
    assert "<html" in html.lower() and "Funnel" in html
    m = json.loads((default_run / "manifest.json").read_text())
    assert m["run"]["recipe"]["stages"][0] == {"integrity": {}}
    assert all(o["sha256"] for o in m["outputs"])
    assert not (default_run / "_work").exists()


def test_inspect_prints_the_summary(default_run):
    out = subprocess.run(
        [sys.executable, "-m", "mmcurate.cli", "inspect", str(default_run)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    ).stdout
    assert "accounting ok" in out and "integrity" in out


def test_two_workers_give_identical_outputs(default_run, demo_input, tmp_path):
    out = tmp_path / "w2"
    mmcurate_run(default_recipe_for(demo_input, out, workers=2), check=True, timeout=600)
    a, b = _output_members(default_run), _output_members(out)
    assert a == b
    for name in sorted(p.name for p in (default_run / "shards").iterdir()):
        assert (default_run / "shards" / name).read_bytes() == (out / "shards" / name).read_bytes()


def test_resume_after_kill_equals_uninterrupted_run(default_run, demo_input, tmp_path):
    out = tmp_path / "killed"
    recipe = default_recipe_for(demo_input, out)
    path = tmp_path / "killed.yaml"
    path.write_text(yaml.safe_dump(recipe))
    proc = subprocess.Popen(
        [sys.executable, "-m", "mmcurate.cli", "run", str(path)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # kill -9 once the first shard is done but before the run finishes
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if list((out / "_work" / "done").glob("*.json")):
            break
        time.sleep(0.02)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed mid-way"
    assert (out / "_work").exists() and not (out / "manifest.json").exists()
    # without --resume the half-done directory is refused with a clear message
    refused = mmcurate_run(recipe, timeout=600)
    assert refused.returncode != 0 and "--resume" in refused.stderr
    mmcurate_run(recipe, "--resume", check=True, timeout=600)
    assert _output_members(out) == _output_members(default_run)
    for name in ("samples.parquet", "duplicates.parquet"):
        assert pq.read_table(out / name).drop_columns([]).equals(pq.read_table(default_run / name)), name
    for name in sorted(p.name for p in (default_run / "shards").iterdir()):
        assert (default_run / "shards" / name).read_bytes() == (out / "shards" / name).read_bytes()


def test_recipe_errors_name_the_bad_key(tmp_path):
    r = default_recipe_dict()
    r["input"]["path"] = str(tmp_path)
    r["stages"].append({"image_filtre": {}})
    with pytest.raises(StageError, match="unknown stage 'image_filtre'.*image_filter"):
        parse_recipe(r)
    r = default_recipe_dict()
    r["input"]["path"] = str(tmp_path)
    r["stages"][1] = {"image_filter": {"min_sde": 3}}
    with pytest.raises(StageError, match="min_sde.*valid:.*min_side"):
        parse_recipe(r)
    r = default_recipe_dict()
    r["input"]["path"] = str(tmp_path)
    r["outptu"] = {}
    with pytest.raises(StageError, match="outptu.*valid: input, output, run, stages"):
        parse_recipe(r)


def test_cli_reports_recipe_errors_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: {path: x}\nstages: [{nope: {}}]\n")
    proc = subprocess.run(
        [sys.executable, "-m", "mmcurate.cli", "run", str(bad)], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 2 and "unknown stage 'nope'" in proc.stderr and "Traceback" not in proc.stderr


def test_split_stage_writes_one_shard_directory_per_split(demo_input, tmp_path):
    out = tmp_path / "split"
    recipe = default_recipe_for(demo_input, out)
    recipe["stages"].append({"split": {"ratios": [0.6, 0.2, 0.2], "phash_radius": 16}})
    mmcurate_run(recipe, check=True, timeout=600)
    samples = pq.read_table(out / "samples.parquet").to_pylist()
    assert {s["split"] for s in samples} == {"train", "val", "test"}
    for s in samples:
        assert s["shard"].startswith(s["split"] + "/")
    written = {}
    for split in ("train", "val", "test"):
        for tar in sorted((out / "shards" / split).glob("*.tar")):
            with tarfile.open(tar) as tf:
                for m in tf.getmembers():
                    written[m.name.split(".", 1)[0]] = split
    assert written == {s["key"]: s["split"] for s in samples}
    # kept samples within the radius never straddle splits
    codes = {s["key"]: int(s["phash"], 16) for s in samples}
    keys = sorted(codes)
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            if bin(codes[a] ^ codes[b]).count("1") <= 16:
                assert written[a] == written[b], (a, b)


def test_semantic_recipe_end_to_end(demo_input, tmp_path):
    """CLIP embeddings -> CLIP-score filter -> SemDeDup -> split stratified by the semantic clusters."""
    out = tmp_path / "semantic"
    recipe = default_recipe_for(demo_input, out)
    # filters before dedup steps, so every duplicate group keeps its representative
    at = next(i for i, st in enumerate(recipe["stages"]) if "exact_dedup" in st)
    recipe["stages"][at:at] = [
        {"clip_embed": {"model": "mmcurate-tiny", "weights": "random"}},
        {"clip_score_filter": {"keep_fraction": 0.9}},
    ]
    recipe["stages"] += [
        {"semantic_dedup": {"eps": 0.02, "n_clusters": 4}},
        {"split": {"stratify_by": "semantic_cluster", "group_columns": []}},
    ]
    mmcurate_run(recipe, check=True, timeout=600)
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"]["accounting_ok"]
    names = [s["name"] for s in m["stages"]]
    assert names[-5:] == ["clip_score_filter", "exact_dedup", "phash_dedup", "semantic_dedup", "split"]
    samples = pq.read_table(out / "samples.parquet")
    for col in ("image_embedding", "clip_score", "semantic_cluster", "split"):
        assert col in samples.column_names and samples.column(col).null_count == 0, col
    assert samples.schema.field("image_embedding").type.list_size == 64
    kept = set(samples.column("key").to_pylist())
    dups = pq.read_table(out / "duplicates.parquet").to_pylist()
    assert all(d["duplicate_of"] in kept and d["representative_kept"] for d in dups)
    # the per-sample JSON in the shards carries scalars, not vectors
    for split in ("train", "val", "test"):
        for tar in (out / "shards" / split).glob("*.tar"):
            with tarfile.open(tar) as tf:
                for mem in tf.getmembers():
                    if mem.name.endswith(".json"):
                        meta = json.loads(tf.extractfile(mem).read())
                        assert "image_embedding" not in meta["mmcurate"] and "clip_score" in meta["mmcurate"]


# ---------------------------------------------------------------------------------------------
# The executor's seams: the strategy that runs the work, the observers that watch it
# ---------------------------------------------------------------------------------------------
class _CountingStrategy:
    """LocalStrategy's work, counted: what the executor asks of a strategy, and nothing else."""

    def __init__(self):
        from mmcurate.pipeline.executor import LocalStrategy

        self.local = LocalStrategy()
        self.auto_global_mode = self.local.auto_global_mode
        self.calls: dict[str, int] = {}
        self.shards_mapped: list[int] = []

    def _count(self, what: str):
        self.calls[what] = self.calls.get(what, 0) + 1

    def session(self):
        self._count("session")
        return self.local.session()

    def run_info(self) -> dict:
        return {"executor": "counting"}

    def map_runner(self, recipe, reader, work, progress):
        self._count("map_runner")
        runner = self.local.map_runner(recipe, reader, work, progress)
        strategy = self

        class Runner:
            def map_shards(self, todo):
                strategy.shards_mapped += [i for i, _ in todo]
                return runner.map_shards(todo)

        return Runner()

    @contextmanager
    def global_tasks(self, recipe):
        from mmcurate.pipeline.executor import GlobalTasks

        self._count("global_tasks")
        with self.local.global_tasks(recipe) as tasks:

            def counted_map(fn, items):
                self._count("global_task_batches")
                return tasks.map_fn(fn, items)

            yield GlobalTasks(counted_map, tasks.parallelism, tasks.tasks_see_gpu)

    def run_memory_global_phase(self, work, plan, n_shards, progress=False):
        self._count("memory_global_phase")
        return self.local.run_memory_global_phase(work, plan, n_shards, progress=progress)


@pytest.mark.parametrize("mode", ["memory", "sharded"])
def test_a_strategy_plugs_into_the_executor_and_changes_no_output(default_run, demo_input, tmp_path, mode):
    from mmcurate.pipeline.executor import Executor
    from mmcurate.report import ReportObserver

    strategy = _CountingStrategy()
    out = tmp_path / mode
    recipe = parse_recipe(default_recipe_for(demo_input, out, global_mode=mode))
    manifest = Executor(recipe, strategy, progress=False, observers=[ReportObserver()]).run()
    assert manifest["run"]["executor"] == "counting"
    assert strategy.calls["session"] == 1 and strategy.calls["map_runner"] == 1
    assert sorted(strategy.shards_mapped) == list(range(len(manifest["inputs"])))
    if mode == "memory":
        assert strategy.calls["memory_global_phase"] == 1 and "global_tasks" not in strategy.calls
    else:
        assert strategy.calls["global_tasks"] == 1 and strategy.calls["global_task_batches"] > 0
        assert "memory_global_phase" not in strategy.calls
    assert output_digests(out) == output_digests(default_run)  # the CLI's run: the local strategy, memory mode


class _Recorder:
    """A RunObserver that notes what it is told (duck-typed: the executor needs only the four hooks)."""

    def __init__(self):
        self.events: list[tuple] = []
        self.rows_seen = 0
        self.shard_rejects: set = set()

    def on_global_phase(self, result):
        self.events.append(("global", result.n_kept))

    def on_input_batch(self, batch, shard_rejects):
        if self.events[-1] != ("batches",):
            self.events.append(("batches",))
        assert {"key", "source", "image"} <= set(batch.column_names)
        self.rows_seen += batch.num_rows
        self.shard_rejects |= set(
            zip(shard_rejects.column("source").to_pylist(), shard_rejects.column("key").to_pylist())
        )

    def on_outputs_written(self, out_dir):
        self.events.append(("outputs", (out_dir / "duplicates.parquet").exists(), (out_dir / "manifest.json").exists()))

    def on_run_finished(self, manifest, out_dir):
        self.events.append(
            ("finished", json.loads((out_dir / "manifest.json").read_text())["counts"] == manifest["counts"])
        )
        return {"recorder": 0.25}


def test_observers_hear_the_run_in_order(demo_input, tmp_path):
    out = tmp_path / "observed"
    recorder = _Recorder()
    manifest = run_local(default_recipe_for(demo_input, out), observers=[recorder])
    assert recorder.events == [
        ("global", manifest["counts"]["kept"]),
        ("batches",),
        ("outputs", True, False),  # the tables are written, the manifest not yet
        ("finished", True),
    ]
    assert recorder.rows_seen == manifest["counts"]["read"]  # the whole input, kept and rejected samples
    global_steps = {st["name"] for st in manifest["stages"] if st["kind"] == "global"}
    rejects = pq.read_table(out / "rejects.parquet").to_pylist()
    map_rejects = {(r["source"], r["key"]) for r in rejects if r["stage"] not in global_steps}
    assert map_rejects and recorder.shard_rejects == map_rejects
    # what on_run_finished reports goes into the manifest, on disk too
    assert manifest["timings_s"]["recorder"] == 0.25
    assert json.loads((out / "manifest.json").read_text())["timings_s"]["recorder"] == 0.25
    # the pipeline itself writes no report: that is the report's observer's (the CLI attaches it)
    assert not (out / "thumbs.parquet").exists() and not (out / "report.html").exists()


def _module_imports(path: Path) -> tuple[set[str], set[str]]:
    """The mmcurate modules (or packages) a file imports, at module level or inside functions, and the names it
    takes from them with `from ... import`."""
    modules, names = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules |= {a.name for a in node.names if a.name.startswith("mmcurate")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("mmcurate"):
            modules |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
            names |= {a.name for a in node.names}
    return modules, names


def test_the_pipeline_imports_no_report_no_private_name_and_no_cycle():
    pkg = ROOT / "mmcurate" / "pipeline"
    modules = {f"mmcurate.pipeline.{p.stem}": p for p in pkg.glob("*.py") if p.stem != "__init__"}
    found = {name: _module_imports(path) for name, path in modules.items()}
    imports = {name: imported for name, (imported, _) in found.items()}
    assert {n: sorted(i for i in imp if i.startswith("mmcurate.report")) for n, imp in imports.items()} == {
        n: [] for n in modules
    }
    private = {
        n: sorted(x for x in names if x.startswith("_") and not x.endswith("__")) for n, (_, names) in found.items()
    }
    assert private == {n: [] for n in modules}
    graph = {n: {i for i in imp if i in modules and i != n} for n, imp in imports.items()}

    def cycle_from(start, node, seen):
        for nxt in graph[node]:
            if nxt == start:
                return [node, nxt]
            if nxt not in seen:
                seen.add(nxt)
                rest = cycle_from(start, nxt, seen)
                if rest:
                    return [node, *rest]
        return None

    cycles = {n: cycle_from(n, n, {n}) for n in graph}
    assert {n: c for n, c in cycles.items() if c} == {}
