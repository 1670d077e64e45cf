"""Plain helpers the test files share (the shared fixtures are in conftest.py).

Runs of the pipeline: the demo input, a recipe over it, `mmcurate ...` and `mmcurate run` as a user runs them,
the local executor, and the digests two runs' outputs are compared by. Stages: one stage over a batch, and the
accounting every stage result keeps. Data: bad image blobs, unit vectors.

Test files import it by its bare name (`from helpers import ...`, as data_gen and io_fixtures), the hostile
suites as `tests.helpers`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import yaml

from mmcurate.pipeline.recipe import default_recipe_dict
from mmcurate.pipeline.schema import INPUT_SCHEMA, REJECTS_SCHEMA
from mmcurate.pipeline.stage import registry

ROOT = Path(__file__).resolve().parents[1]

#: Output files that hold timings, so two runs' copies differ in bytes.
TIMED_OUTPUTS = frozenset({"manifest.json", "report.html"})


# ---------------------------------------------------------------------------------------------------------
# runs of the pipeline


def build_demo_input(d: Path, shard_size: int = 20) -> Path:
    """The demo dataset in d: 111 samples, in 6 webdataset shards with the default shard_size."""
    from mmcurate.io.demo_dataset import build_demo_dataset

    build_demo_dataset(d, n_samples=None, shard_size=shard_size, seed=0)
    return d


def default_recipe_for(input_path, out: Path, **run) -> dict:
    """The default recipe reading input_path (a path, or a list of them) and writing out in shards of 25
    samples, with the run settings `run`."""
    r = default_recipe_dict()
    r["input"]["path"] = input_path if isinstance(input_path, list) else str(input_path)
    r["output"]["path"] = str(out)
    r["output"]["shard_size"] = 25
    r["run"].update(run)
    return r


def write_recipe(r: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(r))
    return path


def mmcurate_cli(*args, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess:
    """`mmcurate ARGS` as a user runs it, from cwd; the checkout is on PYTHONPATH, so its mmcurate runs
    wherever cwd is."""
    return subprocess.run(
        [sys.executable, "-m", "mmcurate.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def mmcurate_run(
    r: dict, *flags, tmp: Path | None = None, timeout: float = 300, check: bool = False
) -> subprocess.CompletedProcess:
    """`mmcurate run` on recipe r, written as YAML into tmp (by default next to r's output directory);
    check: assert that it succeeded."""
    out = Path(r["output"]["path"])
    path = write_recipe(r, (tmp or out.parent) / (out.name + ".yaml"))
    proc = mmcurate_cli("run", path, *flags, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def run_local(recipe: dict, **kw) -> dict:
    """recipe (a dict) run by the local executor without a progress bar (kw: the executor's options): its
    manifest."""
    from mmcurate.pipeline.executor import LocalExecutor
    from mmcurate.pipeline.recipe import parse_recipe

    return LocalExecutor(parse_recipe(recipe), progress=False, **kw).run()


def output_digests(out: Path, work: bool = False) -> dict[str, str]:
    """Relative path -> sha256 of every file of a run's output directory but those that hold timings
    (TIMED_OUTPUTS). _work/ (the run's scratch, there after keep_work) only with work=True, and then without
    its done records (which hold timings), run.json (which names the output directory) and _work/global (the
    sharded global phase's scratch)."""
    res = {}
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out)
        if not p.is_file() or p.name in TIMED_OUTPUTS or rel.parts[:2] == ("_work", "done") or rel.name == "run.json":
            continue
        if rel.parts[0] == "_work" and (not work or rel.parts[1:2] == ("global",)):
            continue
        res[str(rel)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return res


# ---------------------------------------------------------------------------------------------------------
# stages


def input_table(rows, has_image=None) -> pa.Table:
    """rows: (key, image bytes or None) pairs -> a table following INPUT_SCHEMA; ``has_image`` (instruction data's
    text-only flag), when given, is appended as a column."""
    keys = [k for k, _ in rows]
    t = pa.table(
        {
            "key": keys,
            "source": ["shard-0.tar"] * len(rows),
            "image": [b for _, b in rows],
            "image_ext": ["jpg"] * len(rows),
            "caption": [f"caption of {k}" for k in keys],
            "meta": ["{}"] * len(rows),
        },
        schema=INPUT_SCHEMA,
    )
    return t if has_image is None else t.append_column("has_image", pa.array(has_image))


def run_stage(name: str, batch: pa.Table, **params):
    """A new `name` stage with params, set up and run over batch: (the stage, its result)."""
    stage = registry.create(name, params)
    stage.setup()
    return stage, stage.process(batch)


def assert_accounted(batch: pa.Table, result, stage: str):
    """Every input row is kept or rejected, exactly once; the rejects follow REJECTS_SCHEMA and name the stage;
    kept rows start with the input's columns, and keep their source, image bytes (never re-encoded) and
    image_ext."""
    kept = result.kept.column("key").to_pylist()
    rejected = result.rejected.column("key").to_pylist()
    assert sorted(kept + rejected) == sorted(batch.column("key").to_pylist())
    assert not set(kept) & set(rejected)
    assert result.rejected.schema.equals(REJECTS_SCHEMA)
    assert set(result.rejected.column("stage").to_pylist()) <= {stage}
    assert result.kept.column_names[: len(batch.column_names)] == batch.column_names
    assert result.kept.column_names[: len(INPUT_SCHEMA)] == INPUT_SCHEMA.names
    row_of = {k: i for i, k in enumerate(batch.column("key").to_pylist())}
    for col in ("source", "image", "image_ext"):
        assert result.kept.column(col).to_pylist() == [batch.column(col)[row_of[k]].as_py() for k in kept], col


# ---------------------------------------------------------------------------------------------------------
# data


def bad_image_blobs(good_jpeg: bytes) -> dict:
    """Samples no image loader can decode, by what is wrong with them; cut from good_jpeg where they are
    broken JPEGs."""
    return {
        "truncated": good_jpeg[: len(good_jpeg) // 3],
        "corrupt": np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        "html": b"<html><body>403 Forbidden</body></html>",
        "empty": b"",
        "none": None,
        "header_only": good_jpeg[:200],
    }


def unit_rows(x) -> np.ndarray:
    """x scaled to unit L2 norm along its last axis (a vector, or each row of a matrix), as float32."""
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)
