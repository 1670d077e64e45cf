"""negative_synthesis (stages/negatives.py): the absent check uses the CLIP score threshold (crafted embeddings:
a candidate scoring at or above it is never asked about), the appended pairs reach the record marked synthetic, the
output shards, samples.parquet and the LLaVA export, and memory and sharded global mode give the same outputs."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import mmcurate_cli, output_digests, run_local
from mmcurate.curate import negatives as neg
from mmcurate.pipeline.global_phase import run_on_table
from mmcurate.pipeline.schema import TURN_TYPE
from mmcurate.pipeline.stage import SAMPLE_ID, registry
from mmcurate.pipeline.write_phase import apply_turn_edits, edited_turns
from mmcurate.stages.negatives import NegativeSynthesis

WORDS = ["dog", "cat", "car", "tree", "kite", "bench", "horse", "boat"]
D = len(WORDS)


def _crafted_prompts(self, words):
    """One axis per object: an image embedding along "dog" scores 1 with dog, 0 with every other object."""
    return np.stack([np.eye(D, dtype=np.float32)[WORDS.index(w)] for w in words])


def _unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def _table(n=60):
    """n samples asking about a cat, car, tree, ...; every fourth has a caption naming a dog (the most frequent
    object); every third image embedding lies along "dog", the others score 1/sqrt(D) with every object."""
    rng = np.random.default_rng(0)
    keys, turns, emb, caps, metas = [], [], [], [], []
    for i in range(n):
        obj = WORDS[1 + i % (D - 1)]
        keys.append(f"s{i:03d}")
        turns.append(
            [
                {"role": "human", "text": f"<image>\nIs there a {obj} in the image?"},
                {"role": "gpt", "text": "Yes"},
            ]
        )
        caps.append(("a dog" if i % 2 else "the dogs") if i % 4 == 3 else None)
        emb.append(_unit(np.eye(D)[0]) if i % 3 == 0 else _unit(np.ones(D) + 0.01 * rng.random(D)))
        metas.append(
            json.dumps({"id": keys[-1], "conversations": [{"from": t["role"], "value": t["text"]} for t in turns[-1]]})
        )
    return pa.table(
        {
            "key": keys,
            "source": ["s"] * n,
            "turns": pa.array(turns, pa.list_(TURN_TYPE)),
            "caption": caps,
            "meta": metas,
            "image_embedding": pa.array([e.astype(np.float16) for e in emb], pa.list_(pa.float16(), D)),
        }
    )


def _added(res) -> dict:
    """SAMPLE_ID -> the appended (question, answer) pairs."""
    if res.columns is None:
        return {}
    ids = res.columns.column(SAMPLE_ID).to_pylist()
    edits = res.columns.column("negative_synthesis_turn_edits").to_pylist()
    out = {}
    for i, e in zip(ids, edits):
        assert all(x["turn"] == -1 for x in e)
        out[i] = [(e[k]["text"], e[k + 1]["text"]) for k in range(0, len(e), 2)]
    return out


def _stage(**params):
    return registry.create("negative_synthesis", {"min_df": 2, "model": "mmcurate-tiny", "weights": "random", **params})


@pytest.mark.parametrize("strategy", ["random", "popularity", "co_occurrence"])
def test_a_candidate_scoring_at_or_above_max_score_is_never_added(monkeypatch, strategy):
    monkeypatch.setattr(NegativeSynthesis, "embed_prompts", _crafted_prompts)
    table = _table()
    res = run_on_table(_stage(strategy=strategy, max_score=0.5, per_sample=2), table)
    added = _added(res)
    assert res.rejected.num_rows == 0
    assert len(added) == table.num_rows and all(len(p) == 2 for p in added.values())
    asks_dog = {i for i, pairs in added.items() for q, _ in pairs if "dog" in q}
    assert not {i for i in asks_dog if i % 3 == 0}  # images along "dog": dog scores 1.0 there
    if strategy == "popularity":  # dog is the most frequent object: every other image is asked about it
        assert asks_dog == {i for i in range(table.num_rows) if i % 3 and i % 4 != 3}
        assert res.stats.candidates_above_threshold == sum(i % 3 == 0 and i % 4 != 3 for i in range(table.num_rows))
    for i, pairs in added.items():
        own = table.column("turns")[i].as_py()[0]["text"] + str(table.column("caption")[i].as_py())
        for q, a in pairs:
            assert a == "No"
            assert not any(w in q for w in WORDS if w in own)  # never an object the sample names
    # below every score: nothing added
    none = run_on_table(_stage(strategy=strategy, max_score=0.0), table)
    assert none.columns is None and none.stats.pairs_added == 0


def test_pairs_are_deterministic_open_answers_and_stats(monkeypatch):
    monkeypatch.setattr(NegativeSynthesis, "embed_prompts", _crafted_prompts)
    table = _table()
    params = {"seed": 3, "open_answers": True, "max_score": 0.5, "per_sample": 3}
    a = run_on_table(_stage(**params), table)
    b = run_on_table(_stage(**params), table.take(np.arange(table.num_rows)[::-1]))
    by_key = lambda res, t: {t.column("key")[i].as_py(): p for i, p in _added(res).items()}  # noqa: E731
    assert by_key(a, table) == by_key(b, table.take(np.arange(table.num_rows)[::-1]))
    assert all(ans.startswith(("There is no", "No,")) for pairs in _added(a).values() for _, ans in pairs)
    st = a.stats
    assert st.vocabulary_size == D and st.top_objects[0] == ["dog", table.num_rows // 4]
    assert st.pairs_added == 3 * table.num_rows and st.samples_edited == table.num_rows
    assert len(st.question_templates) >= 10 and set(st.question_templates) <= set(neg.QUESTION_TEMPLATES)


def test_appended_pairs_reach_turns_and_record_marked_synthetic(monkeypatch):
    monkeypatch.setattr(NegativeSynthesis, "embed_prompts", _crafted_prompts)
    table = _table(12).append_column(SAMPLE_ID, pa.array(np.arange(12), pa.int64()))
    res = run_on_table(_stage(per_sample=1, max_score=0.5), table)
    cols = res.columns
    joined = table.append_column(
        "negative_synthesis_turn_edits",
        pa.array([None] * 12, cols.schema.field("negative_synthesis_turn_edits").type),
    )
    edits = dict(zip(cols.column(SAMPLE_ID).to_pylist(), cols.column("negative_synthesis_turn_edits").to_pylist()))
    joined = joined.set_column(
        joined.schema.get_field_index("negative_synthesis_turn_edits"),
        "negative_synthesis_turn_edits",
        pa.array([edits.get(i) for i in range(12)], cols.schema.field("negative_synthesis_turn_edits").type),
    )
    out = apply_turn_edits(joined)
    for turns, meta in zip(out.column("turns").to_pylist(), out.column("meta").to_pylist()):
        assert len(turns) == 4 and [t["role"] for t in turns] == ["human", "gpt", "human", "gpt"]
        assert turns[3]["text"] == "No" and "?" in turns[2]["text"]
        conv = json.loads(meta)["conversations"]
        assert [c.get("synthetic") for c in conv] == [None, None, True, True]
        assert [c["value"] for c in conv] == [t["text"] for t in turns]
    # a later step may remove an appended turn by its index
    t0 = table.column("turns")[0].as_py()
    after = edited_turns(t0, [edits[0], [{"turn": 2, "text": None}, {"turn": 3, "text": None}]])
    assert after == t0
    with pytest.raises(ValueError, match="without text"):
        edited_turns(t0, [[{"turn": -1, "text": None}]])


def test_parameters_are_checked():
    for params, match in (
        ({"strategy": "adversarial"}, "strategy"),
        ({"per_sample": 0}, "per_sample"),
        ({"templates": ["no placeholder"]}, "templates"),
        ({"max_score": 2}, "max_score"),
    ):
        with pytest.raises(Exception, match=match):
            _stage(**params)


# ---------------------------------------------------------------------------------------------------------
# end to end: the built-in instruction sample, tiny random CLIP


def _recipe(sample: dict, out, mode: str) -> dict:
    clip = {"model": "mmcurate-tiny", "weights": "random", "device": "cpu"}
    return {
        "input": {"path": str(sample["path"]), "format": "llava", "options": {"image_root": str(sample["image_root"])}},
        "output": {"path": str(out), "shard_size": 40, "report": False},
        "run": {"workers": 1, "batch_size": 32, "global_mode": mode},
        "stages": [
            {"conversation_check": {}},
            {"clip_embed": {**clip, "text": False}},
            {
                "negative_synthesis": {
                    **clip,
                    "min_df": 2,
                    "max_score": 1.0,
                    "per_sample": 2,
                    "strategy": "co_occurrence",
                }
            },
            {"template_stats": {}},
        ],
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from mmcurate.instruction_sample import build_instruction_sample

    d = tmp_path_factory.mktemp("negatives")
    sample = build_instruction_sample(d / "input", n=90)
    out = {}
    for mode in ("memory", "sharded"):
        out[mode] = (d / mode, run_local(_recipe(sample, d / mode, mode)))
    return d, out


def test_memory_and_sharded_runs_write_the_same_outputs(runs):
    _, out = runs
    (mem, _), (sh, _) = out["memory"], out["sharded"]
    assert output_digests(mem) == output_digests(sh)


def test_output_record_turns_and_export_hold_the_pairs_marked_synthetic(runs):
    d, out = runs
    run_dir, manifest = out["memory"]
    stats = {s["name"]: s for s in manifest["stages"]}["negative_synthesis"]["stats"]
    assert stats["pairs_added"] > 0 and stats["vocabulary_size"] > 0
    samples = pq.read_table(run_dir / "samples.parquet").to_pylist()
    with_pairs = [s for s in samples if s["negatives_added"]]
    assert (
        len(with_pairs) == stats["samples_edited"]
        and sum(s["negatives_added"] or 0 for s in samples) == stats["pairs_added"]
    )
    for s in samples:
        conv = json.loads(s["meta"])["conversations"]
        synthetic = [c for c in conv if c.get("synthetic")]
        assert len(synthetic) == 2 * (s["negatives_added"] or 0)
        assert len(conv) == len(s["turns"])
        if s["negatives_added"]:
            assert s["has_image"] and s["turns"][-1]["text"] == "No"
            assert s["negative_synthesis_turn_edits"] is not None
    # the output shards' JSON
    shard_meta = {}
    for tar in sorted((run_dir / "shards").rglob("*.tar")):
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                if m.name.endswith(".json"):
                    rec = json.loads(tf.extractfile(m).read())
                    shard_meta[rec["mmcurate"].get("negatives_added") or 0] = rec
    assert any(
        k > 0 and sum(bool(c.get("synthetic")) for c in r["conversations"]) == 2 * k for k, r in shard_meta.items()
    )
    # the LLaVA export
    exp = mmcurate_cli("export", run_dir, "--format", "llava", "--out", d / "export")
    assert exp.returncode == 0, exp.stdout + exp.stderr
    entries = json.loads((d / "export" / "data.json").read_text())  # one file: the run has no split
    marked = [c for e in entries for c in e["conversations"] if c.get("synthetic")]
    assert len(marked) == 2 * stats["pairs_added"]
    assert all(c["from"] in ("human", "gpt") for c in marked)


def test_model_takes_clip_embeds_forms():
    """negative_synthesis checks its model as clip_embed does: a name, an open_clip ARCH/TAG or a mapping."""
    from mmcurate.pipeline.stage import StageError, registry

    mapping = {
        "arch": "mmcurate-tiny",
        "preprocess": {
            "image_size": 224,
            "mean": [0.5, 0.5, 0.5],
            "std": [0.5, 0.5, 0.5],
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        },
    }
    st = registry.create("negative_synthesis", {"model": mapping, "weights": "random"})
    assert st.params.model_name() == mapping
    assert registry.create("negative_synthesis", {"model": "ViT-B-32/laion400m_e32"}).params.model_name()
    with pytest.raises(StageError, match="open_clip has no architecture 'nope'"):
        registry.create("negative_synthesis", {"model": {"arch": "nope"}})
