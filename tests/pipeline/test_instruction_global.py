"""The instruction-data global steps (instruction_dedup, answer_balance, option_order, template_stats, task_mix, and
split after them) give the same result over one partition in RAM as over N partitions on disk with tasks in reverse
order, alone and chained (where each step reads the earlier ones' conversation edits); the write phase's edit
application; and a whole llava-recipe run in sharded global mode writes memory mode's outputs byte for byte."""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from helpers import output_digests, run_local
from mmcurate.instruction_sample import build_instruction_sample, synthetic_records
from mmcurate.io.conversations import turns_from_record
from mmcurate.pipeline.global_phase import MemoryGlobalContext, run_global_phase
from mmcurate.pipeline.global_sharded import ShardedGlobalContext, make_ids
from mmcurate.pipeline.recipe import llava_recipe_dict
from mmcurate.pipeline.schema import TURN_TYPE
from mmcurate.pipeline.stage import SAMPLE_ID, registry
from mmcurate.pipeline.write_phase import TURN_EDITS_TYPE, apply_turn_edits, edited_turns

N_IMAGES = 120


def _image_hashes(rng):
    """(sha256, phash) per image path: some images are byte copies of another (same sha256), some perceptual
    copies (pHash a few bits away)."""
    out = {}
    for k in range(N_IMAGES):
        path = f"img/{k:04d}.jpg"
        if k and rng.random() < 0.1:  # a byte copy of an earlier image
            out[path] = out[f"img/{int(rng.integers(k)):04d}.jpg"]
            continue
        code = int(rng.integers(0, 2**63)) * 2 + int(rng.integers(2))
        if k and rng.random() < 0.1:  # a re-encode of an earlier image: pHash 1-4 bits away
            code = out[f"img/{int(rng.integers(k)):04d}.jpg"][1]
            for b in rng.choice(64, int(rng.integers(1, 5)), replace=False):
                code ^= 1 << int(b)
        out[path] = (hashlib.sha256(rng.bytes(16)).hexdigest(), code)
    return out


def _survivors(n=900, n_shards=5, seed=0):
    """Survivor shards of LLaVA conversations (the built-in generator, with planted exact and near copies) and the
    columns the instruction steps read."""
    rng = np.random.default_rng(seed)
    hashes = _image_hashes(rng)
    records = synthetic_records(n, list(hashes), seed=seed, duplicate_share=0.08, text_only_share=0.1)
    order = rng.permutation(len(records))  # keys not in row order
    records = [records[i] for i in order]
    table = pa.table(
        {
            "key": [r["id"] for r, _ in records],
            "source": [f"src{i % 3}" for i in range(len(records))],
            "sha256": pa.array([hashes[r["image"]][0] if "image" in r else None for r, _ in records], pa.string()),
            "phash": pa.array([hashes[r["image"]][1] if "image" in r else None for r, _ in records], pa.uint64()),
            "turns": pa.array([turns_from_record(r) for r, _ in records], pa.list_(TURN_TYPE)),
        }
    )
    cuts = np.sort(rng.choice(np.arange(1, len(records)), n_shards - 1, replace=False))
    bounds = [0, *cuts.tolist(), len(records)]
    return [table.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:])]


def _reversed_map(fn, tasks):
    """Runs the tasks last to first, returns results in task order: nothing may depend on execution order."""
    tasks = list(tasks)
    return reversed([fn(t) for t in reversed(tasks)])


def _contexts(tmp_path, seed=0, remove=True):
    """(memory context, sharded context) over the same survivors, some removed by an 'earlier step'."""
    shards = _survivors(seed=seed)
    work = tmp_path / "_work"
    (work / "meta").mkdir(parents=True)
    for i, t in enumerate(shards):
        pq.write_table(t, work / "meta" / f"{i:05d}.parquet")
    sharded = ShardedGlobalContext(work, len(shards), map_fn=_reversed_map, parallelism=3)
    parts = [t.append_column(SAMPLE_ID, pa.array(make_ids(i, np.arange(t.num_rows)))) for i, t in enumerate(shards)]
    table = pa.concat_tables(parts)
    if remove:
        rng = np.random.default_rng(7)
        gone = np.sort(rng.choice(table.column(SAMPLE_ID).to_numpy(), table.num_rows // 15, replace=False))
        sharded.remove(gone)
        table = table.filter(pc.invert(pc.is_in(table.column(SAMPLE_ID), pa.array(gone))))
    return MemoryGlobalContext.from_table(table), sharded


def _strip(stats) -> dict:
    """A step's stats without its timings and partition counts (which differ by design between the contexts)."""
    return {k: v for k, v in stats.to_dict().items() if k not in ("seconds", "partitions")}


STEPS = [
    ("instruction_dedup", {}),
    ("instruction_dedup", {"phash_radius": None, "text_only": "apart", "threshold": 0.6, "shingle": "char5"}),
    ("answer_balance", {"yes_ratio": 0.5}),
    ("answer_balance", {"yes_ratio": 0.3, "tolerance": 0.01, "seed": 4}),
    ("answer_balance", {}),
    ("option_order", {"policy": "shuffle", "seed": 2}),
    ("option_order", {"policy": "shuffle_negative_last"}),
    ("option_order", {}),
    ("template_stats", {"max_per_template": 12}),
    ("template_stats", {}),
    ("task_mix", {"target": {"yes_no": 0.2, "multiple_choice": 0.05}}),
    ("task_mix", {}),
]


@pytest.mark.parametrize("name, params", STEPS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(STEPS)])
def test_step_sharded_equals_memory(tmp_path, name, params):
    mem_ctx, sharded = _contexts(tmp_path)
    stage = registry.create(name, params)
    mem = stage.run(mem_ctx)
    res = stage.run(sharded)
    assert res.rejected.equals(mem.rejected)
    assert res.duplicates.equals(mem.duplicates)
    assert (res.columns is None) == (mem.columns is None)
    if res.columns is not None:
        assert res.columns.equals(mem.columns)
    assert _strip(res.stats) == _strip(mem.stats)
    # every step here has data to act on, or (report only) to measure
    figures = res.stats.to_dict()
    assert (
        res.rejected.num_rows
        or res.columns is not None
        or any(figures.get(k) for k in ("pairs", "questions", "multiple_choice"))
    )


RECIPE_STEPS = [
    ("instruction_dedup", {}),
    ("answer_balance", {"yes_ratio": 0.5}),
    ("option_order", {"policy": "shuffle"}),
    ("template_stats", {"max_per_template": 40}),
    ("task_mix", {"target": {"captioning": 0.05}}),
    ("split", {"phash_radius": None}),
]


def _phase(ctx):
    plan = SimpleNamespace(global_steps=[registry.create(n, p) for n, p in RECIPE_STEPS])
    return run_global_phase(ctx, plan)


def test_chained_steps_sharded_equal_memory(tmp_path):
    """The steps in recipe order: later steps read the earlier ones' edit columns; the rejects, duplicates, stats and
    every added column (joined as the write phase joins them) are the same in both modes."""
    shards = _survivors()
    mem_ctx, sharded = _contexts(tmp_path, remove=False)
    mem, res = _phase(mem_ctx), _phase(sharded)
    assert res.rejects.equals(mem.rejects) and res.duplicates.equals(mem.duplicates)
    assert res.n_kept == mem.n_kept
    for step in mem.stats:
        assert {k: v for k, v in res.stats[step].get("stats", {}).items() if k not in ("seconds", "partitions")} == {
            k: v for k, v in mem.stats[step].get("stats", {}).items() if k not in ("seconds", "partitions")
        }, step
        assert res.stats[step]["reasons"] == mem.stats[step]["reasons"], step
    reasons = {r for s in mem.stats.values() for r in s["reasons"]}
    assert {"duplicate_conversation", "near_duplicate_conversation", "answer_balance", "template_cap"} <= reasons
    for i, t in enumerate(shards):
        rows = np.arange(t.num_rows)
        a = apply_turn_edits(mem.columns.join(i, t, rows))
        b = apply_turn_edits(res.columns.join(i, t, rows))
        assert a.equals(b)
    names = [f.name for f in mem.columns.schema_tables()[0].schema] + [
        f.name for s in mem.columns.schema_tables()[1:] for f in s.schema
    ]
    assert {"image_group", "answer_balance_turn_edits", "option_order_turn_edits", "task_type", "split"} <= set(names)


def test_chained_split_keeps_image_groups_whole(tmp_path):
    mem_ctx, _ = _contexts(tmp_path, remove=False)
    phase = _phase(mem_ctx)
    shards = _survivors()
    table = pa.concat_tables(
        [phase.columns.join(i, t, np.arange(t.num_rows)) for i, t in enumerate(shards)], promote_options="permissive"
    )
    table = table.filter(pc.is_valid(table.column("split")))
    by_group: dict = {}
    for g, s in zip(table.column("image_group").to_pylist(), table.column("split").to_pylist()):
        if g is not None:
            by_group.setdefault(g, set()).add(s)
    assert len(by_group) > 50 and all(len(s) == 1 for s in by_group.values())
    assert len({s for v in by_group.values() for s in v}) == 3


# ---------------------------------------------------------------------------------------------------------
# the write phase's edits


def _t(*texts):
    return [{"role": "human" if i % 2 == 0 else "gpt", "text": t} for i, t in enumerate(texts)]


def test_edited_turns_compose_in_step_order():
    turns = _t("<image>\nQ1", "A1", "Q2", "A2", "Q3", "A3")
    first = [{"turn": 0, "text": None}, {"turn": 1, "text": None}, {"turn": 2, "text": "<image>\nQ2"}]
    second = [{"turn": 2, "text": "<image>\nQ2 (reordered)"}, {"turn": 5, "text": "B"}, {"turn": 1, "text": "x"}]
    assert edited_turns(turns, [first, second]) == _t("<image>\nQ2 (reordered)", "A2", "Q3", "B")
    kept = edited_turns(turns, [first], keep_removed=True)
    assert kept[:2] == [None, None] and kept[2]["text"] == "<image>\nQ2"
    assert edited_turns(turns, [None, []]) == turns
    with pytest.raises(ValueError, match="turn 6"):
        edited_turns(turns, [[{"turn": 6, "text": None}]])


def test_apply_turn_edits_keeps_the_record_in_agreement():
    from mmcurate.io.conversations import conversation_columns

    recs = [
        {
            "id": "a",
            "image": "x.jpg",
            "conversations": [
                {"from": "human", "value": "<image>\nIs it red?"},
                {"from": "gpt", "value": "Yes"},
                {"from": "user", "value": "How many?"},
                {"from": "gpt", "value": "3"},
            ],
            "extra": 1,
        },
        {
            "id": "b",
            "image": "y.jpg",
            "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A cat"}],
        },
    ]
    turns = [turns_from_record(r) for r in recs]
    derived = [conversation_columns(t) for t in turns]
    meta = pa.table(
        {
            "key": ["a", "b"],
            "caption": [d[2] for d in derived],
            "meta": [json.dumps(r) for r in recs],
            "turns": pa.array(turns, pa.list_(TURN_TYPE)),
            "n_turns": pa.array([d[0] for d in derived], pa.int32()),
            "question": [d[1] for d in derived],
            "answer": [d[2] for d in derived],
            "answer_balance_turn_edits": pa.array(
                [
                    [{"turn": 0, "text": None}, {"turn": 1, "text": None}, {"turn": 2, "text": "<image>\nHow many?"}],
                    None,
                ],
                TURN_EDITS_TYPE,
            ),
        }
    )
    out = apply_turn_edits(meta)
    assert out.column("turns").to_pylist()[0] == [
        {"role": "human", "text": "<image>\nHow many?"},
        {"role": "gpt", "text": "3"},
    ]
    rec = json.loads(out.column("meta")[0].as_py())
    # the moved-and-edited turn is a new object (io.conversations.record_with_turns), spelt the normalised way
    assert rec["extra"] == 1 and rec["conversations"] == [
        {"from": "human", "value": "<image>\nHow many?"},
        {"from": "gpt", "value": "3"},
    ]
    assert out.column("n_turns").to_pylist() == [2, 2]
    assert out.column("question")[0].as_py() == "How many?" and out.column("answer")[0].as_py() == "3"
    assert out.column("caption")[0].as_py() == "3"
    assert out.column("meta")[1].as_py() == meta.column("meta")[1].as_py()  # unedited: byte for byte
    no_edits = meta.drop_columns(["answer_balance_turn_edits"])
    assert apply_turn_edits(no_edits) is no_edits


# ---------------------------------------------------------------------------------------------------------
# a whole run


@pytest.fixture(scope="module")
def llava_sample(tmp_path_factory):
    d = tmp_path_factory.mktemp("llava_sample")
    build_instruction_sample(d, n=200)
    return d


def _recipe(sample, out, mode):
    r = llava_recipe_dict()
    r["input"]["path"] = str(sample / "llava.json")
    r["input"]["options"] = {"image_root": str(sample / "images")}
    r["output"]["path"] = str(out)
    r["output"]["shard_size"] = 40
    r["output"]["report"] = False
    r["run"]["global_mode"] = mode
    r["stages"] = [s if "template_stats" not in s else {"template_stats": {"max_per_template": 6}} for s in r["stages"]]
    return r


@pytest.mark.parametrize("workers", [1, 2])
def test_llava_recipe_sharded_equals_memory(llava_sample, tmp_path, workers):
    mem = run_local(_recipe(llava_sample, tmp_path / "memory", "memory"))
    sh = run_local(
        {
            **_recipe(llava_sample, tmp_path / "sharded", "sharded"),
            "run": {"workers": workers, "global_mode": "sharded"},
        }
    )
    assert output_digests(tmp_path / "sharded") == output_digests(tmp_path / "memory")
    assert sh["counts"] == mem["counts"] and mem["counts"]["accounting_ok"]
    reasons = {r for s in mem["stages"] for r in s["reasons"]}
    assert {"duplicate_conversation", "answer_balance", "template_cap"} <= reasons
