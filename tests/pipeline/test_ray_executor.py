"""The Ray executor (issue 5): the same recipe on Ray Data gives the local executor's outputs byte for byte,
survives killed workers, resumes after a failed or killed driver, and runs from the CLI.

One local Ray instance (2 CPUs) serves the module. The failure-injecting stages live in ray_test_stages.py
and are shipped to Ray workers by value. The map-step plumbing is also checked without Ray, against the
local map phase, with blocks merged and split at random the way Ray Data may.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml

import ray_test_stages  # registers the test stages (and is used below)
from helpers import default_recipe_for, output_digests, run_local
from mmcurate.pipeline.executor import LocalExecutor, StagePlan, run_map_shard
from mmcurate.pipeline.recipe import parse_recipe
from mmcurate.pipeline.stage import StageError

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parents[1]


def _split_recipe(input_dir: Path, out: Path, extra_stages=(), at: int = 1) -> dict:
    """The default recipe plus a split stage; small batches, so a shard spans several of them."""
    r = default_recipe_for(input_dir, out, batch_size=8)
    r["stages"].append({"split": {"ratios": [0.6, 0.2, 0.2], "phash_radius": 16}})
    r["stages"][at:at] = list(extra_stages)
    return r


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    from mmcurate.pipeline.ray_executor import init_ray

    ray.cloudpickle.register_pickle_by_value(ray_test_stages)
    started = init_ray(num_cpus=2)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def local_run(demo_input, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ray_ref") / "local"
    run_local(_split_recipe(demo_input, out), keep_work=True, observers=_report())
    return out


def _report() -> list:
    """The report's observer, as the CLI attaches it: thumbs.parquet is compared like every output."""
    from mmcurate.report import ReportObserver

    return [ReportObserver()]


def _untimed(obj):
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if k not in ("seconds", "samples_per_s", "read_seconds")}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj


def _ray_run(recipe: dict, **kw) -> dict:
    from mmcurate.pipeline.ray_executor import RayExecutor

    return RayExecutor(parse_recipe(recipe), progress=False, observers=_report(), **kw).run()


# ---------------------------------------------------------------------------------------------
# Same outputs
# ---------------------------------------------------------------------------------------------
def test_ray_outputs_are_byte_identical_to_local(ray_session, demo_input, local_run, tmp_path):
    out = tmp_path / "ray"
    manifest = _ray_run(_split_recipe(demo_input, out), keep_work=True)
    local = json.loads((local_run / "manifest.json").read_text())
    # shards (per split), samples/rejects/duplicates parquet, thumbnails, and the map phase's work files
    ray_files, local_files = output_digests(out, work=True), output_digests(local_run, work=True)
    assert {f for f in local_files if f.startswith("shards/")} >= {"shards/train/00000.tar", "shards/val/00000.tar"}
    assert ray_files == local_files
    # the same per-shard and per-stage counters
    for f in sorted((local_run / "_work" / "done").glob("*.json")):
        ray_done = json.loads((out / "_work" / "done" / f.name).read_text())
        assert _untimed(ray_done) == _untimed(json.loads(f.read_text()))
    assert manifest["counts"] == local["counts"] and manifest["counts"]["accounting_ok"]
    # the same per-stage counters; the global steps ran sharded on Ray (global_mode auto) and in memory
    # locally, so their stats differ by the partitioning figures only
    counters = ("name", "kind", "in", "kept", "rejected", "reasons")
    assert [{k: st[k] for k in counters} for st in manifest["stages"]] == [
        {k: st[k] for k in counters} for st in local["stages"]
    ]
    assert {st["mode"] for st in manifest["stages"] if st["kind"] == "global"} >= {"sharded"}
    assert {st["mode"] for st in local["stages"] if st["kind"] == "global"} == {"memory"}
    assert manifest["outputs"] == local["outputs"]
    assert manifest["run"]["executor"] == "ray" and local["run"]["executor"] == "local"
    assert manifest["run"]["ray"]["cluster_resources"]["CPU"] == 2


def test_ray_executor_is_the_executor_with_the_ray_strategy():
    """Ray changes how the work runs, not the phases: RayExecutor only builds the executor with RayStrategy."""
    from mmcurate.pipeline.executor import Executor
    from mmcurate.pipeline.ray_executor import RayExecutor, RayStrategy

    assert issubclass(RayExecutor, Executor) and issubclass(LocalExecutor, Executor)
    phases = {name for name, value in vars(Executor).items() if callable(value) and name != "__init__"}
    for cls in (RayExecutor, LocalExecutor):
        assert phases.isdisjoint(vars(cls)), f"{cls.__name__} overrides {phases & set(vars(cls))}"
    ex = RayExecutor(parse_recipe(_split_recipe(Path("in"), Path("out"))), address="auto", max_retries=1)
    assert isinstance(ex.strategy, RayStrategy) and (ex.strategy.address, ex.strategy.max_retries) == ("auto", 1)
    assert ex.global_mode == "sharded" and ex.dataset is None


def test_map_steps_give_the_local_map_output_however_blocks_are_cut(demo_input, tmp_path):
    """Ray Data merges a task's small outputs and splits large ones: the steps and the assembly must not
    depend on where blocks begin and end. Checked without Ray against the local map phase."""
    from mmcurate.io import open_reader
    from mmcurate.pipeline.ray_executor import _MapStep, _ReadShards, _ShardAssembler

    recipe = parse_recipe(_split_recipe(demo_input, tmp_path / "unused"))
    plan = StagePlan.from_stages(recipe.build_stages())
    for _, st in plan.map_steps:
        st.setup()
    reader = open_reader(recipe.input_path)
    shards = reader.shards()[:3]
    for i, s in enumerate(shards):
        run_map_shard(recipe, plan, i, s, tmp_path / "local")

    rng = np.random.default_rng(0)

    def recut(blocks):
        whole = pa.concat_tables(blocks, promote_options="permissive")
        cuts = np.sort(rng.choice(np.arange(1, whole.num_rows), size=whole.num_rows // 6, replace=False))
        bounds = [0, *cuts.tolist(), whole.num_rows]
        return [whole.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:])]

    read = _ReadShards(reader, recipe.batch_size)
    blocks = [b for i, s in enumerate(shards) for b in read(pa.table({"index": [i], "shard": [s]}))]
    names = [name for name, _ in plan.map_steps]
    for k, (name, st) in enumerate(plan.map_steps):
        step = _MapStep(name, st, k, k == len(names) - 1, None)
        blocks = [step(b) for b in recut(blocks)]
    blocks = recut(blocks)
    rng.shuffle(blocks)
    assembler = _ShardAssembler(names)
    completed = [s for b in blocks for s in assembler.add(b)]
    for s in completed:
        assembler.write(s, shards[s], tmp_path / "ray")
    assert sorted(completed) == [0, 1, 2] and not assembler.pending()
    for sub in ("meta", "rejects"):
        for f in sorted((tmp_path / "local" / sub).iterdir()):
            assert (tmp_path / "ray" / sub / f.name).read_bytes() == f.read_bytes(), f"{sub}/{f.name}"
    for f in sorted((tmp_path / "local" / "done").iterdir()):
        assert _untimed(json.loads((tmp_path / "ray" / "done" / f.name).read_text())) == _untimed(
            json.loads(f.read_text())
        )


def test_a_stage_that_drops_unknown_columns_is_named(demo_input):
    from mmcurate.io import open_reader
    from mmcurate.pipeline.ray_executor import _MapStep, _ReadShards

    reader = open_reader(str(demo_input))
    block = next(_ReadShards(reader, 8)(pa.table({"index": [0], "shard": [reader.shards()[0]]})))
    step = _MapStep("test_drop_unknown_columns", ray_test_stages.DropUnknownColumns(), 0, True, None)
    with pytest.raises(StageError, match="test_drop_unknown_columns.*must keep the columns"):
        step(block)


# ---------------------------------------------------------------------------------------------
# Failures
# ---------------------------------------------------------------------------------------------
def test_killed_task_and_actor_workers_are_retried(ray_session, demo_input, local_run, tmp_path):
    task_marker, actor_marker = tmp_path / "task.killed", tmp_path / "actor.killed"
    out = tmp_path / "killed"
    _ray_run(
        _split_recipe(
            demo_input,
            out,
            [
                {"test_kill_worker_once": {"marker": str(task_marker)}},
                {"test_kill_actor_once": {"marker": str(actor_marker)}},
            ],
        ),
        max_retries=2,
    )
    assert task_marker.exists() and actor_marker.exists(), "no worker was killed"
    assert output_digests(out) == output_digests(local_run)


def test_failed_ray_run_resumes_shard_by_shard(ray_session, demo_input, local_run, tmp_path):
    flag = tmp_path / "fail"
    flag.touch()
    out = tmp_path / "resumed"
    recipe = _split_recipe(
        demo_input, out, [{"test_fail_while_flagged": {"flag": str(flag), "shard_suffix": "00005.tar"}}]
    )
    with pytest.raises(Exception, match="injected failure"):
        _ray_run(recipe)
    done = out / "_work" / "done"
    assert not (done / "00005.json").exists() and not (out / "manifest.json").exists()
    before = {p.name: p.read_bytes() for p in done.glob("*.json")}
    flag.unlink()
    if before:  # shards finished before the failure (Ray's scheduling decides): a plain rerun must not redo them
        with pytest.raises(StageError, match="--resume"):
            _ray_run(recipe)
    else:  # nothing finished: the failed run left nothing behind to resume
        assert not (out / "_work").exists()
    _ray_run(recipe, resume=True, keep_work=True)
    assert {name: (done / name).read_bytes() for name in before} == before, "finished shards were mapped again"
    assert output_digests(out) == output_digests(local_run)


def test_ray_resumes_a_local_run(ray_session, demo_input, local_run, tmp_path):
    """Both executors leave the same work files, so either can finish the other's run."""
    flag = tmp_path / "fail"
    flag.touch()
    out = tmp_path / "local_then_ray"
    recipe = _split_recipe(
        demo_input, out, [{"test_fail_while_flagged": {"flag": str(flag), "shard_suffix": "00003.tar"}}]
    )
    with pytest.raises(RuntimeError, match="injected failure"):
        LocalExecutor(parse_recipe(recipe), progress=False).run()
    assert sorted(p.name for p in (out / "_work" / "done").iterdir()) == ["00000.json", "00001.json", "00002.json"]
    flag.unlink()
    manifest = _ray_run(recipe, resume=True)
    assert manifest["run"]["executor"] == "ray"
    assert output_digests(out) == output_digests(local_run)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
# The CLI with the test stages registered (and shipped to its Ray workers by value).
_CLI = (
    "import sys; sys.path.insert(0, {tests!r}); import ray_test_stages; "
    "import ray.cloudpickle; ray.cloudpickle.register_pickle_by_value(ray_test_stages); "
    "from mmcurate.cli import main; sys.exit(main(sys.argv[1:]))"
)


def _ray_cli(recipe: dict, *flags, popen=False):
    path = Path(recipe["output"]["path"]).with_suffix(".yaml")
    path.write_text(yaml.safe_dump(recipe))
    cmd = [sys.executable, "-c", _CLI.format(tests=str(TESTS)), "run", str(path), "--executor", "ray", *flags]
    if popen:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_cli_ray_run_killed_mid_run_resumes(ray_session, demo_input, local_run, tmp_path):
    """`mmcurate run --executor ray --address ADDR` joins the module's Ray instance (as it would a cluster);
    its driver is killed with SIGKILL after a shard is done, and --resume finishes the run."""
    address = ray_session.get_runtime_context().gcs_address
    out = tmp_path / "cli"
    recipe = _split_recipe(demo_input, out, [{"test_sleep_per_batch": {"seconds": 0.15}}])
    proc = _ray_cli(recipe, "--address", address, popen=True)
    # kill -9 the driver once a shard is done, before the run finishes
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if list((out / "_work" / "done").glob("*.json")):
            break
        time.sleep(0.02)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed mid-way"
    assert not (out / "manifest.json").exists()
    done = out / "_work" / "done"
    before = {p.name: p.read_bytes() for p in done.glob("*.json")}
    assert 0 < len(before) < 6
    finished = _ray_cli(recipe, "--address", address, "--resume", "--keep-work")
    assert finished.returncode == 0, finished.stdout + finished.stderr[-3000:]
    assert "accounting ok" in finished.stdout
    assert {name: (done / name).read_bytes() for name in before} == before, "finished shards were mapped again"
    assert output_digests(out) == output_digests(local_run)
    assert json.loads((out / "manifest.json").read_text())["run"]["executor"] == "ray"


def test_cli_without_ray_says_how_to_install(tmp_path, demo_input):
    """Runs whether or not Ray is installed: the import is made to fail."""
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_split_recipe(demo_input, tmp_path / "out")))
    code = "import sys; sys.modules['ray'] = None; from mmcurate.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run(
        [sys.executable, "-c", code, "run", str(path), "--executor", "ray"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "pip install 'mmcurate[ray]'" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "mmcurate.cli", "run", str(path), "--address", "auto"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "--address is for --executor ray" in proc.stderr
