"""The instruction-data stages (stages/instruction.py) and the llava recipe: short answers are never rejected,
exact conversation duplicates collapse while different questions about one image stay, the yes-ratio lands within
the tolerance, multiple-choice letters are remapped consistently on every sample, splits never share an image
group, and `mmcurate demo --llava` runs end to end with its export reading back as the kept conversations."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import mmcurate_cli, run_local
from llava_fixtures import build_llava_mix
from mmcurate.curate.answers import classify_answer
from mmcurate.curate.choices import is_negative_option, is_referential_option, parse_multiple_choice
from mmcurate.curate.conversations import qa_pairs
from mmcurate.instruction_sample import read_truth, synthetic_records
from mmcurate.io import open_reader
from mmcurate.io.base import split_read_rejects
from mmcurate.io.conversations import IMAGE_TOKEN, turns_from_record
from mmcurate.pipeline.global_phase import run_on_table
from mmcurate.pipeline.recipe import default_recipe_dict, llava_recipe_dict
from mmcurate.pipeline.schema import TURN_TYPE
from mmcurate.pipeline.stage import SAMPLE_ID, StageError, registry
from mmcurate.pipeline.write_phase import edited_turns, turn_edit_columns

SHORT = {"Yes", "No", "3", "Red", "B", "4", "12", "Bonjour", "The second"}


def _conv(*texts):
    return [{"role": "human" if i % 2 == 0 else "gpt", "text": t} for i, t in enumerate(texts)]


def _table(rows) -> pa.Table:
    """rows: (key, image name or None, turns); sha256 and pHash derived from the image name (same name, same image)."""

    def code(name):
        return int(hashlib.sha256(name.encode()).hexdigest()[:15], 16)

    return pa.table(
        {
            "key": [r[0] for r in rows],
            "source": ["s"] * len(rows),
            "sha256": pa.array([hashlib.sha256(r[1].encode()).hexdigest() if r[1] else None for r in rows]),
            "phash": pa.array([None if r[1] is None else code(r[1]) for r in rows], pa.uint64()),
            "turns": pa.array([r[2] for r in rows], pa.list_(TURN_TYPE)),
        }
    )


def _generated(n=1500, seed=0, **kw) -> pa.Table:
    records = synthetic_records(n, [f"img/{k}.jpg" for k in range(n // 4)], seed=seed, **kw)
    return _table([(r["id"], r.get("image"), turns_from_record(r)) for r, _ in records])


def _after(table: pa.Table, res) -> dict:
    """key -> the conversation after a step: its edits applied, its rejects gone."""
    gone = set(res.rejected.column("key").to_pylist())
    edits = {}
    if res.columns is not None:
        for c in turn_edit_columns(res.columns.column_names):
            for i, e in zip(res.columns.column(SAMPLE_ID).to_pylist(), res.columns.column(c).to_pylist()):
                edits[i] = e
    out = {}
    for i, (k, t) in enumerate(zip(table.column("key").to_pylist(), table.column("turns").to_pylist())):
        if k not in gone:
            out[k] = edited_turns(t, [edits.get(i)])
    return out


# ---------------------------------------------------------------------------------------------------------
# instruction_dedup


def test_exact_duplicates_collapse_and_different_questions_about_one_image_stay():
    rows = [
        ("a1", "cat.jpg", _conv("<image>\nIs there a cat?", "Yes")),
        ("a2", "cat.jpg", _conv("<image>\nis there  a cat?", "yes")),  # the same, normalised
        ("a3", "cat_resaved.jpg@same-bytes", _conv("<image>\nIs there a cat?", "Yes")),
        ("b1", "cat.jpg", _conv("<image>\nWhat color is the cat?", "Orange")),
        ("b2", "cat.jpg", _conv("<image>\nHow many cats are there?", "1")),
        ("b3", "cat.jpg", _conv("<image>\nIs there a dog?", "No")),
        ("c1", "dog.jpg", _conv("<image>\nIs there a cat?", "Yes")),  # the same question about another image
        ("t1", None, _conv("Translate 'thank you' into French.", "Merci")),
        ("t2", None, _conv("Translate 'thank you' into French.", "Merci")),
        ("t3", None, _conv("Translate 'good morning' into French.", "Bonjour")),
    ]
    t = _table(rows)
    # a3's image is a re-saved path of cat.jpg: the same bytes
    sha = t.column("sha256").to_pylist()
    sha[2] = sha[0]
    t = t.set_column(2, "sha256", pa.array(sha))
    res = run_on_table(registry.create("instruction_dedup", {}), t)
    rejected = dict(zip(res.rejected.column("key").to_pylist(), res.rejected.column("reason").to_pylist()))
    assert rejected == {"a2": "duplicate_conversation", "a3": "duplicate_conversation", "t2": "duplicate_conversation"}
    dups = res.duplicates.to_pylist()
    assert {(d["key"], d["duplicate_of"], d["kind"]) for d in dups} == {
        ("a2", "a1", "conversation"),
        ("a3", "a1", "conversation"),
        ("t2", "t1", "conversation"),
    }
    groups = dict(zip(res.columns.column(SAMPLE_ID).to_pylist(), res.columns.column("image_group").to_pylist()))
    keys = t.column("key").to_pylist()
    by_key = {keys[i]: g for i, g in groups.items()}
    assert by_key["a1"] == by_key["b1"] == by_key["b2"] == by_key["b3"] != by_key["c1"]
    assert "t1" not in by_key and "a2" not in by_key  # text-only: no image group; rejected: no column
    assert res.stats.image_groups == 2 and res.stats.duplicate_conversations == 3
    apart = run_on_table(registry.create("instruction_dedup", {"text_only": "apart"}), t)
    assert "t2" not in apart.rejected.column("key").to_pylist()


def test_near_copies_are_found_within_an_image_group_only():
    long = (
        "The image shows an orange tabby cat lying on a wooden floor next to a window, with sunlight falling "
        "across its fur and a small red ball beside its front paws."
    )
    rows = [
        ("a1", "cat.jpg", _conv("<image>\nDescribe the image in detail.", long)),
        ("a2", "cat.jpg", _conv("<image>\nDescribe the image in detail!", long.replace("small", "tiny"))),
        ("a3", "cat.jpg", _conv("<image>\nDESCRIBE THE IMAGE IN DETAIL.", long.upper())),  # exact, normalised
        ("a4", "cat.jpg", _conv("<image>\nDescribe the image, in detail.", long.replace(",", " ;"))),
        ("c1", "other.jpg", _conv("<image>\nDescribe the image in detail.", long)),  # another image: kept
    ]
    res = run_on_table(registry.create("instruction_dedup", {}), _table(rows))
    got = {(d["key"], d["duplicate_of"], d["kind"]) for d in res.duplicates.to_pylist()}
    assert got == {("a2", "a1", "near_conversation"), ("a3", "a1", "conversation"), ("a4", "a1", "near_conversation")}
    assert all(0 <= d <= 0.25 for d in res.duplicates.column("distance").to_pylist())
    exact_only = run_on_table(registry.create("instruction_dedup", {"near": False}), _table(rows))
    assert exact_only.rejected.column("key").to_pylist() == ["a3"]


def test_planted_copies_in_generated_data_are_what_dedup_finds():
    records = synthetic_records(1200, [f"img/{k}.jpg" for k in range(200)], seed=3, duplicate_share=0.1)
    t = _table([(r["id"], r.get("image"), turns_from_record(r)) for r, _ in records])
    res = run_on_table(registry.create("instruction_dedup", {}), t)
    truth = {tr["id"]: tr for _, tr in records}
    found = dict(zip(res.rejected.column("key").to_pylist(), res.rejected.column("reason").to_pylist()))
    planted = {k for k, tr in truth.items() if tr["copy"]}
    assert set(found) == planted
    for k, reason in found.items():
        assert reason == ("duplicate_conversation" if truth[k]["copy"] == "exact" else "near_duplicate_conversation")


# ---------------------------------------------------------------------------------------------------------
# answer_balance


def _yes_ratio(convs) -> float:
    c = Counter(classify_answer(p.answer) for t in convs for p in qa_pairs(t or []))
    return c["yes"] / (c["yes"] + c["no"])


@pytest.mark.parametrize("target, tolerance", [(0.5, 0.02), (0.4, 0.01), (0.6, 0.05)])
def test_yes_ratio_after_rebalancing_is_within_tolerance(target, tolerance):
    t = _generated(yes_share=0.8)
    before = _yes_ratio(t.column("turns").to_pylist())
    assert before > 0.7
    res = run_on_table(registry.create("answer_balance", {"yes_ratio": target, "tolerance": tolerance}), t)
    after = _yes_ratio(_after(t, res).values())
    assert abs(after - target) <= tolerance + 1e-9
    s = res.stats
    assert s.yes_ratio_before == round(before, 4) and s.yes_ratio_after == round(after, 4)
    assert s.pairs_removed > 0 and s.removed_class == "yes"
    assert set(res.rejected.column("reason").to_pylist()) <= {"answer_balance"}
    assert s.samples_rejected == res.rejected.num_rows and s.per_task_type["yes_no"]["yes"] > 0
    assert s.per_template and all(p["template"] for p in s.per_template)


def test_answer_balance_edits_leave_valid_conversations():
    rows = [
        ("m", "x.jpg", _conv("<image>\nIs there a cat?", "Yes", "What color is it?", "Orange")),
        ("n", "y.jpg", _conv("<image>\nIs there a dog?", "Yes")),
        ("o", "z.jpg", _conv("<image>\nIs it raining?", "No")),
        ("p", "w.jpg", _conv("<image>\nIs it day?", "Yes", "Is it sunny?", "Yes", "How many cars?", "2")),
    ]
    t = _table(rows)
    res = run_on_table(registry.create("answer_balance", {"yes_ratio": 0.5, "tolerance": 0.0}), t)
    after = _after(t, res)
    # 4 yes, 1 no: 3 yes go, spread over the two templates, pairs of multi-pair conversations first
    assert res.rejected.num_rows == 0 and res.stats.pairs_removed == 3 and res.stats.yes_ratio_after == 0.5
    assert after["m"] == _conv("<image>\nWhat color is it?", "Orange")  # the placeholder moved to what is left
    assert after["p"] == _conv("<image>\nHow many cars?", "2")
    assert after["n"] == rows[1][2] and after["o"] == rows[2][2]
    # a single-pair sample whose only pair goes is rejected
    single = _table(
        [(f"s{i}", f"i{i}.jpg", _conv("<image>\nIs there a dog?", "Yes" if i < 2 else "No")) for i in range(3)]
    )
    res = run_on_table(registry.create("answer_balance", {"yes_ratio": 0.5, "tolerance": 0.0}), single)
    assert res.rejected.column("reason").to_pylist() == ["answer_balance"] and res.columns is None
    assert "were removed to balance the yes-ratio" in res.rejected.column("detail")[0].as_py()


def test_answer_balance_measures_only_without_a_target():
    t = _generated(n=300)
    res = run_on_table(registry.create("answer_balance", {}), t)
    assert res.rejected.num_rows == 0 and res.columns is None
    assert res.stats.yes_ratio_before == res.stats.yes_ratio_after and res.stats.pairs_removed == 0
    assert sum(res.stats.answer_classes.values()) == res.stats.pairs


# ---------------------------------------------------------------------------------------------------------
# option_order

MC = [
    ("<image>\nWhat is shown?\nA. a dog\nB. a cat\nC. a car\nD. None of the above", "A"),
    ("<image>\nWhich colour? (a) red (b) blue (c) green", "(a)"),
    ("What is it?\nA) tree\nB) rock\nC) cloud\nAnswer with the letter.", "A) tree"),
    ("<image>\nPick one: A. sun, B. moon, C. star.", "sun"),
    ("<image>\nHow many?\nA. one\nB. two\nC. three\nD. four\nE. five", "The answer is A."),
    ("<image>\nIs it?\nA. yes\nB. no\nC. not sure", "Answer: A"),
    ("<image>\nWhere?\nA. left\nB. None of them\nC. right", "C"),
]


def _mc_table(n=350):
    rows = []
    for i in range(n):
        q, a = MC[i % len(MC)]
        rows.append((f"k{i:04d}", f"img{i}.jpg", _conv(q.replace("?", f" #{i}?", 1), a)))
    return _table(rows)


@pytest.mark.parametrize("policy", ["shuffle", "negative_last", "shuffle_negative_last"])
def test_letter_remapping_is_consistent_on_every_sample(policy):
    t = _mc_table()
    res = run_on_table(registry.create("option_order", {"policy": policy, "seed": 1}), t)
    after = _after(t, res)
    changed = 0
    for k, before in zip(t.column("key").to_pylist(), t.column("turns").to_pylist()):
        old = parse_multiple_choice(before[0]["text"], before[1]["text"])
        new = parse_multiple_choice(after[k][0]["text"], after[k][1]["text"])
        assert new is not None and sorted(new.texts) == sorted(old.texts)
        assert new.texts[new.correct_index] == old.texts[old.correct_index], k
        assert after[k][0]["text"].count(IMAGE_TOKEN) == before[0]["text"].count(IMAGE_TOKEN)
        # a negative option goes last; under shuffling one that refers to the others ("None of them") stays put
        pinned = policy.startswith("shuffle")
        movable = [x for x in old.texts if is_negative_option(x) and not (pinned and is_referential_option(x))]
        if "negative_last" in policy and movable:
            assert is_negative_option(new.texts[-1])
        changed += after[k] != before
    assert changed and res.stats.reordered == changed and res.stats.unverified == 0
    if policy == "shuffle":
        # balanced as far as the options that must stay in place ("None of them" refers to the others) allow
        assert res.stats.p_value_before < 1e-6 and res.stats.chi2_after < res.stats.chi2_before / 20


def test_option_order_report_only_changes_nothing():
    t = _mc_table(70)
    res = run_on_table(registry.create("option_order", {}), t)
    assert res.columns is None and res.rejected.num_rows == 0
    assert res.stats.multiple_choice == 70 and res.stats.letters_before["A"] >= 50
    assert res.stats.letters_after == res.stats.letters_before


# ---------------------------------------------------------------------------------------------------------
# template_stats, task_mix, split


def test_template_cap_and_stats():
    rows = [
        (f"q{i:03d}", f"i{i}.jpg", _conv(f"<image>\nIs there a {o} in the image?", "Yes"))
        for i, o in enumerate(["cat", "dog", "car", "bus", "tree", "cup"] * 5)
    ]
    rows += [(f"r{i:03d}", f"j{i}.jpg", _conv(f"<image>\nWhat is written on sign {i}?", "STOP")) for i in range(4)]
    t = _table(rows)
    res = run_on_table(registry.create("template_stats", {"max_per_template": 10}), t)
    assert res.rejected.num_rows == 20 and set(res.rejected.column("reason").to_pylist()) == {"template_cap"}
    s = res.stats
    assert s.top[0] == {"skeleton": "is there a {obj} in the image?", "questions": 30, "share": round(30 / 34, 4)}
    assert s.distinct_skeletons == 2 and s.top10_share == 1.0 and 0 < s.compression_ratio < 1
    again = run_on_table(registry.create("template_stats", {"max_per_template": 10}), t.take(np.arange(34)[::-1]))
    assert sorted(again.rejected.column("key").to_pylist()) == sorted(res.rejected.column("key").to_pylist())


def test_task_mix_column_counts_and_target():
    t = _generated(n=800)
    res = run_on_table(registry.create("task_mix", {}), t)
    types = res.columns.column("task_type").to_pylist()
    assert len(types) == t.num_rows and res.stats.counts == {k: v for k, v in res.stats.counts.items() if v}
    assert sum(res.stats.counts.values()) == t.num_rows and Counter(types) == Counter(res.stats.counts)
    assert {"yes_no", "multiple_choice", "captioning", "dialogue", "grounding"} <= set(types)
    capped = run_on_table(registry.create("task_mix", {"target": {"yes_no": 0.1}}), t)
    kept = Counter(capped.columns.column("task_type").to_pylist())
    assert kept["yes_no"] <= 0.1 * sum(kept.values()) + 1 and kept["yes_no"] > 0
    assert set(capped.rejected.column("reason").to_pylist()) == {"task_mix_cap"}


def test_split_never_puts_one_image_group_in_two_splits():
    rng = np.random.default_rng(0)
    n = 3000
    t = pa.table(
        {
            "key": [f"k{i:05d}" for i in range(n)],
            "source": ["s"] * n,
            "phash": pa.array(rng.integers(0, 2**63, n).astype(np.uint64)),
            "image_group": pa.array(rng.integers(0, 400, n)),
        }
    )
    res = run_on_table(registry.create("split", {}), t)
    split = res.columns.column("split").to_pylist()
    by_group: dict = {}
    for g, s in zip(t.column("image_group").to_pylist(), split):
        by_group.setdefault(g, set()).add(s)
    assert all(len(s) == 1 for s in by_group.values())
    assert abs(res.stats.counts["train"] / n - 0.8) < 0.05
    off = run_on_table(registry.create("split", {"image_group": False}), t)
    assert off.stats.groups == n


@pytest.mark.parametrize(
    "name, params, match",
    [
        ("instruction_dedup", {"threshold": 0}, "threshold"),
        ("instruction_dedup", {"shingle": "words"}, "shingle"),
        ("instruction_dedup", {"text_only": "maybe"}, "text_only"),
        ("answer_balance", {"yes_ratio": 1.5}, "yes_ratio"),
        ("answer_balance", {"yes_ratio": True}, "yes_ratio"),
        ("option_order", {"policy": "random"}, "policy"),
        ("template_stats", {"max_per_template": 0}, "max_per_template"),
        ("task_mix", {"target": {"chitchat": 0.2}}, "unknown task type"),
        ("task_mix", {"target": {"yes_no": 0.7, "ocr": 0.5}}, "add up"),
        ("split", {"image_group": "yes"}, "image_group"),
        ("answer_balance", {"ratio": 0.5}, "unknown parameter"),
    ],
)
def test_parameters_are_checked(name, params, match):
    with pytest.raises(StageError, match=match):
        registry.create(name, params)


# ---------------------------------------------------------------------------------------------------------
# the llava recipe on LLaVA data


def _llava_recipe(path, out, image_root=None, **stage_params):
    r = llava_recipe_dict()
    r["input"]["path"] = str(path)
    if image_root:
        r["input"]["options"] = {"image_root": str(image_root)}
    r["output"]["path"] = str(out)
    r["output"]["shard_size"] = 25
    r["output"]["report"] = False
    r["stages"] = [
        {name: {**(params or {}), **stage_params.get(name, {})}} for s in r["stages"] for name, params in s.items()
    ]
    return r


def test_no_short_valid_answer_is_rejected_by_the_llava_recipe(tmp_path):
    path, entries = build_llava_mix(tmp_path / "mix")
    manifest = run_local(_llava_recipe(path, tmp_path / "out", image_root=tmp_path / "mix" / "images"))
    rejects = pq.read_table(tmp_path / "out" / "rejects.parquet").to_pylist()
    rejected = {r["key"]: r["reason"] for r in rejects}
    valid = {rec["id"] for rec, ok, _ in entries if ok}
    assert not valid & set(rejected), {k: rejected[k] for k in valid & set(rejected)}
    shorts = {rec["id"] for rec, ok, _ in entries if ok and any(t["value"] in SHORT for t in rec["conversations"])}
    assert len(shorts) >= 7
    assert manifest["counts"]["kept"] == len(valid)
    # the default recipe destroys the same answers (caption_filter) and the other questions about an image
    default = default_recipe_dict()
    default["input"] = {
        "path": str(path),
        "format": "llava",
        "options": {"image_root": str(tmp_path / "mix" / "images")},
    }
    default["output"] = {"path": str(tmp_path / "default"), "shard_size": 25, "report": False}
    run_local(default)
    lost = {r["key"] for r in pq.read_table(tmp_path / "default" / "rejects.parquet").to_pylist()} & shorts
    assert len(lost) >= 5


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """`mmcurate demo --llava` and `mmcurate export` of its run, as a user runs them."""
    d = tmp_path_factory.mktemp("demo_llava")
    proc = mmcurate_cli("demo", "--llava", "--out", d, "--shard-size", 50)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    exp = mmcurate_cli("export", d / "curated_llava", "--format", "llava", "--out", d / "export")
    assert exp.returncode == 0, exp.stdout + exp.stderr
    return d, proc.stdout


def test_llava_demo_runs_every_stage(demo_run):
    d, stdout = demo_run
    manifest = json.loads((d / "curated_llava" / "manifest.json").read_text())
    stages = {s["name"]: s for s in manifest["stages"]}
    assert manifest["counts"]["accounting_ok"]
    assert stages["conversation_check"]["rejected"] == 6
    assert stages["instruction_dedup"]["reasons"]["duplicate_conversation"] > 0
    assert stages["instruction_dedup"]["reasons"]["near_duplicate_conversation"] > 0
    ab = stages["answer_balance"]["stats"]
    assert ab["yes_ratio_before"] > 0.7 and abs(ab["yes_ratio_after"] - 0.5) <= 0.02 and ab["pairs_removed"] > 0
    oo = stages["option_order"]["stats"]
    assert oo["p_value_before"] < 0.01 and oo["reordered"] > 0 and oo["unverified"] == 0
    assert stages["template_stats"]["stats"]["distinct_skeletons"] > 10
    assert len(stages["task_mix"]["stats"]["counts"]) >= 8
    assert set(stages["split"]["stats"]["counts"]) == {"train", "val", "test"}
    # the planted copies are what dedup removed; no other valid sample went but to balancing
    truth = read_truth(d / "llava_input")
    rejects = pq.read_table(d / "curated_llava" / "rejects.parquet").to_pylist()
    for r in rejects:
        t = truth[r["key"]]
        if not t["valid"]:
            assert r["stage"] == "conversation_check"
        elif t["copy"]:
            assert r["reason"] in ("duplicate_conversation", "near_duplicate_conversation")
        else:
            assert r["reason"] == "answer_balance"
    planted = {k for k, t in truth.items() if t["copy"]}
    assert planted <= {r["key"] for r in rejects}


def test_llava_demo_output_reflects_the_edits_and_splits(demo_run):
    d, _ = demo_run
    samples = pq.read_table(d / "curated_llava" / "samples.parquet").to_pylist()
    inputs = {r["id"]: r for r in json.loads((d / "llava_input" / "llava.json").read_text())}
    edited = [s for s in samples if s.get("answer_balance_turn_edits")]
    assert edited
    for s in samples:
        turns = s["turns"]
        record = json.loads(s["meta"])
        assert turns_from_record(record) == turns  # the record written out is the edited conversation
        assert s["n_turns"] == len(turns)
        n_images = len(s["image_paths"])
        assert sum(t["text"].count(IMAGE_TOKEN) for t in turns) in (0, n_images)
        if s.get("answer_balance_turn_edits"):
            assert len(turns) < len(inputs[s["key"]]["conversations"])
    # the yes-ratio of what was written
    assert abs(_yes_ratio([s["turns"] for s in samples]) - 0.5) <= 0.02 + 1e-9
    # multiple-choice answers still name the option they named in the input
    for s in samples:
        for before, after in zip(qa_pairs(inputs[s["key"]]["conversations"]), qa_pairs(s["turns"])):
            old = parse_multiple_choice(before.question, before.answer)
            if old is not None and old.correct_index is not None and before.question != after.question:
                new = parse_multiple_choice(after.question, after.answer)
                assert new.texts[new.correct_index] == old.texts[old.correct_index]
    # no image group in two splits
    by_group: dict = {}
    for s in samples:
        if s["image_group"] is not None:
            by_group.setdefault(s["image_group"], set()).add(s["split"])
    assert by_group and all(len(v) == 1 for v in by_group.values())


def test_llava_demo_export_reads_back_as_the_kept_conversations(demo_run):
    d, _ = demo_run
    samples = {s["key"]: s for s in pq.read_table(d / "curated_llava" / "samples.parquet").to_pylist()}
    exported = {}
    for split in ("train", "val", "test"):
        reader = open_reader(d / "export" / f"{split}.json", image_root=d / "export" / "images")
        for shard in reader.shards():
            kept, rejected = split_read_rejects(pa.concat_tables(list(reader.read(shard))))
            assert rejected.num_rows == 0
            for k, turns, sp in zip(
                kept.column("key").to_pylist(), kept.column("turns").to_pylist(), [split] * kept.num_rows
            ):
                exported[k] = (turns, sp)
    assert set(exported) == set(samples)
    for k, (turns, split) in exported.items():
        assert turns == samples[k]["turns"] and split == samples[k]["split"]
    # the dataset card's instruction sections, from the manifest's stats
    card = (d / "export" / "README.md").read_text()
    stages = {s["name"]: s for s in json.loads((d / "curated_llava" / "manifest.json").read_text())["stages"]}
    ab, mix = stages["answer_balance"]["stats"], stages["task_mix"]["stats"]
    assert f"| before | {ab['yes']} | {ab['no']} | {ab['yes_ratio_before']:.4g} |" in card
    assert f"| after | {ab['yes'] - ab['pairs_removed']} | {ab['no']} | {ab['yes_ratio_after']:.4g} |" in card
    for t, n in mix["counts"].items():
        assert f"| {t} | {n} | {n / sum(mix['counts'].values()):.1%} |" in card
    assert "## Multiple choice" in card and "## Question templates" in card


def test_recipe_llava_prints_the_commented_instruction_recipe():
    import yaml

    from mmcurate.pipeline.recipe import parse_recipe

    proc = mmcurate_cli("recipe", "llava")
    assert proc.returncode == 0, proc.stderr
    r = yaml.safe_load(proc.stdout)
    assert [next(iter(s)) for s in r["stages"]] == [
        "integrity",
        "conversation_check",
        "conversation_clean",
        "answer_filter",
        "pii_redact",
        "instruction_dedup",
        "answer_balance",
        "option_order",
        "template_stats",
        "task_mix",
        "split",
    ]
    assert r["input"]["format"] == "llava" and proc.stdout.count("#") >= 10
    parse_recipe(r)  # every stage and parameter valid


def test_stats_are_step_stats_that_survive_the_manifest():
    from mmcurate.pipeline.stage import StepStats
    from mmcurate.stages import instruction as ins

    t = _generated(n=400, yes_share=0.8)
    for name, params, kind in [
        ("instruction_dedup", {}, ins.InstructionDedupStats),
        ("answer_balance", {"yes_ratio": 0.5}, ins.AnswerBalanceStats),
        ("option_order", {"policy": "shuffle"}, ins.OptionOrderStats),
        ("template_stats", {"max_per_template": 5}, ins.TemplateStepStats),
        ("task_mix", {"target": {"yes_no": 0.2}}, ins.TaskMixStats),
    ]:
        res = run_on_table(registry.create(name, params), t)
        assert type(res.stats) is kind and isinstance(res.stats, StepStats)
        d = json.loads(json.dumps(res.stats.to_dict()))  # plain JSON: no NaN, no numpy values
        assert kind.from_dict(d) == res.stats, name
