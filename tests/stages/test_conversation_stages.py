"""conversation_check, conversation_clean, pii_redact on conversations, the image stages on text-only samples, and a
whole run over a mixed LLaVA set: every reason, short answers never rejected, the cleaned and redacted turns what
is written out, the rest of each record unchanged."""

from __future__ import annotations

import io
import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import io_fixtures as fx
from helpers import assert_accounted, run_local, run_stage
from llava_fixtures import build_llava_mix
from mmcurate.io import open_reader
from mmcurate.io.base import split_read_rejects
from mmcurate.io.conversations import turns_from_record
from mmcurate.pipeline.stage import StageError
from mmcurate.stages.batch import set_turns
from mmcurate.stages.conversation import CHECK_REASONS, ConversationRules, check_conversation

SHORT_ANSWERS = ["Yes", "No", "3", "Red", "B", "yes.", "0", "A"]


def _batch(tmp_path, records, images: dict | None = None) -> pa.Table:
    """The LLaVA reader's batch of these records (their read rejects dropped), images {path: bytes} under tmp."""
    root = tmp_path / "imgs"
    root.mkdir(exist_ok=True)
    for rel, data in (images or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    p = tmp_path / "data.json"
    p.write_text(json.dumps(records))
    reader = open_reader(p, image_root=root)
    kept, rejected = split_read_rejects(pa.concat_tables(list(reader.read(reader.shards()[0]))))
    assert rejected.num_rows == 0
    return kept


def _conv(*texts, roles=("human", "gpt")) -> list[dict]:
    return [{"from": roles[i % 2], "value": t} for i, t in enumerate(texts)]


# ---------------------------------------------------------------------------------------------------------
# conversation_check


def _t(*pairs):
    return [{"role": r, "text": t} for r, t in pairs]


@pytest.mark.parametrize(
    "turns, n_images, rules, reason",
    [
        (None, 1, {}, "no_conversation"),
        ([], 0, {}, "no_conversation"),
        (_t(("human", "Q"), ("gpt", None)), 0, {}, "malformed_turn"),
        (_t((None, "Q"), ("gpt", "A")), 0, {}, "malformed_turn"),
        (_t(("robot", "Q"), ("gpt", "A")), 0, {}, "unknown_role"),
        (_t(("system", "be brief"), ("human", "Q"), ("gpt", "A")), 0, {}, "unknown_role"),
        (_t(("human", "Q"), ("system", "x"), ("gpt", "A")), 0, {"allow_system": True}, "unknown_role"),
        (_t(*[("human", "Q"), ("gpt", "A")] * 3), 0, {"max_turns": 4}, "too_many_turns"),
        (_t(("human", "Q" * 50), ("gpt", "A" * 60)), 0, {"max_chars": 100}, "text_too_long"),
        (_t(("human", "<image>\nQ"), ("gpt", " \n\t")), 1, {}, "empty_turn"),
        (_t(("human", ""), ("gpt", "A")), 0, {}, "empty_turn"),
        (_t(("gpt", "A"), ("human", "Q")), 0, {}, "first_turn_not_human"),
        (_t(("human", "Q1"), ("human", "Q2"), ("gpt", "A")), 0, {}, "roles_not_alternating"),
        (_t(("human", "Q"), ("gpt", "A"), ("gpt", "A2")), 0, {}, "roles_not_alternating"),
        (_t(("human", "Q"), ("gpt", "A"), ("human", "Q2")), 0, {}, "unanswered_turn"),
        (_t(("human", "<image>\n<image>\nQ"), ("gpt", "A")), 1, {}, "image_placeholders"),
        (_t(("human", "<image>\nQ"), ("gpt", "A")), 0, {}, "image_placeholders"),  # text-only with a placeholder
        (_t(("human", "Q"), ("gpt", "A")), 1, {"placeholders": "exact"}, "image_placeholders"),
        (_t(("human", "<image>\nQ"), ("gpt", "A")), 2, {}, "image_placeholders"),
    ],
)
def test_check_reasons(turns, n_images, rules, reason):
    verdict = check_conversation(turns, n_images, ConversationRules(**rules))
    assert verdict is not None and verdict[0] == reason and reason in CHECK_REASONS
    assert "\n" not in verdict[1]


@pytest.mark.parametrize(
    "turns, n_images, rules",
    [
        (_t(("human", "<image>\nIs it red?"), ("gpt", "Yes")), 1, {}),
        (_t(("human", "Caption.\n<image>"), ("gpt", "a cat")), 1, {"placeholders": "exact"}),
        (_t(("human", "Describe."), ("gpt", "A cat.")), 1, {}),  # 0 placeholders, 1 image: exact_or_none
        (_t(("human", "<image><image> same?"), ("gpt", "No")), 2, {"placeholders": "exact"}),
        (_t(("human", "<image>\n<image>"), ("gpt", "3")), 1, {"placeholders": "ignore"}),
        (_t(("human", "2+2?"), ("gpt", "4")), 0, {"placeholders": "exact"}),
        (_t(("system", "Be brief."), ("human", "Q"), ("gpt", "B")), 0, {"allow_system": True}),
        (_t(("human", "Q"), ("gpt", "A"), ("human", "Q2")), 0, {"require_final_answer": False}),
    ],
)
def test_check_accepts(turns, n_images, rules):
    assert check_conversation(turns, n_images, ConversationRules(**rules)) is None


def test_short_answers_are_never_rejected(tmp_path):
    records = [{"id": f"s{i}", "conversations": _conv(f"Question {i}?", a)} for i, a in enumerate(SHORT_ANSWERS)] + [
        {"id": "multi", "conversations": _conv("Q1?", "Yes", "Q2?", "3", "Q3?", "B")}
    ]
    batch = _batch(tmp_path, records)
    for name in ("conversation_check", "conversation_clean", "pii_redact"):
        _, res = run_stage(name, batch)
        assert_accounted(batch, res, name)
        assert res.rejected.num_rows == 0, (name, res.rejected.to_pylist())
        assert [t[-1]["text"] for t in res.kept.column("turns").to_pylist()][: len(SHORT_ANSWERS)] == SHORT_ANSWERS
        batch = res.kept


def test_check_params_and_columns(tmp_path):
    with pytest.raises(ValueError, match="placeholders must be one of exact, exact_or_none, ignore"):
        run_stage("conversation_check", pa.table({"key": []}), placeholders="strict")
    with pytest.raises(ValueError, match="max_turns"):
        run_stage("conversation_check", pa.table({"key": []}), max_turns=0)
    plain = pa.table({"key": ["a"], "source": ["s"], "caption": ["x"]})
    for name in ("conversation_check", "conversation_clean"):
        with pytest.raises(StageError, match=f"stage '{name}': input lacks column\\(s\\) turns"):
            run_stage(name, plain)


def test_check_over_a_batch(tmp_path):
    records = [
        {"id": "ok", "image": "a.jpg", "conversations": _conv("<image>\nQ", "Yes")},
        {"id": "bad", "image": "a.jpg", "conversations": _conv("<image>\nQ", "")},
        {"id": "text", "conversations": _conv("Q", "No")},
    ]
    batch = _batch(tmp_path, records, {"a.jpg": fx.image_bytes(1)})
    _, res = run_stage("conversation_check", batch)
    assert_accounted(batch, res, "conversation_check")
    assert res.kept.column("key").to_pylist() == ["ok", "text"]
    assert res.rejected.select(["key", "reason"]).to_pylist() == [{"key": "bad", "reason": "empty_turn"}]


# ---------------------------------------------------------------------------------------------------------
# conversation_clean


def test_clean_every_turn_keeps_placeholders_and_writes_the_record(tmp_path):
    records = [
        {
            "id": "dirty",
            "image": ["a.jpg", "b.jpg"],
            "source": "sharegpt4v",
            "conversations": [
                {"from": "human", "value": "<image>\n<image>\nCompare  <b>them</b>&amp;say\u200b why."},
                {"from": "gpt", "value": "The first is caf\u00c3\u00a9-coloured.<br>The   second\tis not!!!!!!"},
                {"from": "human", "value": "Options:\nA. one\nB. two"},
                {"from": "gpt", "value": "B"},
            ],
        },
        {"id": "clean", "conversations": _conv("Already clean?", "Yes")},
    ]
    batch = _batch(tmp_path, records, {"a.jpg": fx.image_bytes(1), "b.jpg": fx.image_bytes(2)})
    _, res = run_stage("conversation_clean", batch)
    assert_accounted(batch, res, "conversation_clean")
    dirty, clean = res.kept.to_pylist()
    texts = [t["text"] for t in dirty["turns"]]
    assert texts == [
        "<image>\n<image>\nCompare them&say why.",
        "The first is café-coloured. The second is not!!!",
        "Options:\nA. one\nB. two",
        "B",
    ]
    record = json.loads(dirty["meta"])
    assert [c["value"] for c in record["conversations"]] == texts  # the edit is in the record written out
    assert {k: v for k, v in record.items() if k != "conversations"} == {
        k: v for k, v in records[0].items() if k != "conversations"
    }
    assert dirty["caption"] == dirty["answer"] == texts[1]  # the caption follows the first answer
    assert dirty["question"] == "Compare them&say why."
    assert clean["meta"] == batch.column("meta")[1].as_py()  # nothing to clean: the record byte for byte
    # cleaning twice changes nothing more
    _, again = run_stage("conversation_clean", res.kept)
    assert again.kept.column("meta").to_pylist() == res.kept.column("meta").to_pylist()


def test_clean_rejects_emptied_and_too_long_turns(tmp_path):
    records = [
        {"id": "markup_only", "conversations": _conv("Q?", "<br><p></p>")},
        {"id": "long", "conversations": _conv("Q?", "x" * 50)},
        {"id": "fine", "conversations": _conv("Q?", "No")},
    ]
    batch = _batch(tmp_path, records)
    _, res = run_stage("conversation_clean", batch, max_chars=40)
    assert_accounted(batch, res, "conversation_clean")
    assert {r["key"]: r["reason"] for r in res.rejected.to_pylist()} == {
        "markup_only": "empty_after_clean",
        "long": "text_too_long",
    }
    _, res = run_stage("conversation_clean", batch, reject_emptied=False)
    assert res.rejected.num_rows == 0 and res.kept.column("turns")[0].as_py()[1]["text"] == ""


# ---------------------------------------------------------------------------------------------------------
# pii_redact on conversations


def test_pii_redact_redacts_every_turn_and_the_record_agrees(tmp_path):
    records = [
        {
            "id": "p",
            "note": "call +1 415 555 0100",
            "conversations": [
                {"from": "human", "value": "Mail jane.doe@example.org please"},
                {"from": "gpt", "value": "Yes"},
                {"from": "human", "value": "and my card 4111 1111 1111 1111?"},
                {"from": "gpt", "value": "Server 8.8.8.8 it is."},
            ],
        },
        {"id": "q", "conversations": _conv("Nothing here?", "No")},
    ]
    batch = _batch(tmp_path, records)
    _, res = run_stage("pii_redact", batch)
    assert_accounted(batch, res, "pii_redact")
    p, q = res.kept.to_pylist()
    texts = [t["text"] for t in p["turns"]]
    assert texts == ["Mail <EMAIL> please", "Yes", "and my card <CREDIT_CARD>?", "Server <IP> it is."]
    record = json.loads(p["meta"])
    assert [c["value"] for c in record["conversations"]] == texts and "<PHONE>" in record["note"]
    assert p["question"] == "Mail <EMAIL> please"
    assert json.loads(p["pii_redactions"]) == {"credit_card": 1, "email": 1, "ip": 1, "phone": 1}  # counted once
    assert q["meta"] == batch.column("meta")[1].as_py() and json.loads(q["pii_redactions"]) == {}
    _, rej = run_stage("pii_redact", batch, reject_if_found=True)
    assert rej.rejected.column("key").to_pylist() == ["p"]


def test_set_turns_removing_a_turn_pair_leaves_a_valid_record(tmp_path):
    records = [{"id": "r", "x": 1, "conversations": _conv("<image>\nQ1", "Yes", "Q2", "No")}]
    batch = _batch(tmp_path, records)
    turns = batch.column("turns").to_pylist()
    out = set_turns(batch, [turns[0][2:]])
    row = out.to_pylist()[0]
    assert row["n_turns"] == 2 and row["question"] == "Q2" and row["answer"] == row["caption"] == "No"
    assert json.loads(row["meta"]) == {"id": "r", "x": 1, "conversations": _conv("Q2", "No")}
    assert turns_from_record(json.loads(row["meta"])) == row["turns"]


# ---------------------------------------------------------------------------------------------------------
# image stages on text-only samples


@pytest.mark.parametrize("name", ["integrity", "image_filter", "exact_dedup", "phash_dedup"])
def test_image_stages_pass_text_only_samples_untouched(tmp_path, name):
    from mmcurate.pipeline.stage import registry

    photo = fx.image_bytes(1, size=(320, 240))
    records = [
        {"id": "img", "image": "a.jpg", "conversations": _conv("<image>\nQ", "Yes")},
        {"id": "text", "conversations": _conv("Q", "No")},
        {"id": "gone", "image": "missing.jpg", "conversations": _conv("<image>\nQ", "3")},
    ]
    batch = _batch(tmp_path, records, {"a.jpg": photo})
    stage = registry.create(name, {})
    stage = getattr(stage, "map_part", None) or stage
    res = stage.process(batch)
    assert_accounted(batch, res, name)
    assert res.kept.column("key").to_pylist() == ["img", "text"]
    assert res.rejected.select(["key", "reason"]).to_pylist() == [{"key": "gone", "reason": "missing_image"}]
    text = res.kept.to_pylist()[1]
    for col in ("width", "height", "format", "sha256", "phash"):
        if col in res.kept.column_names:
            assert text[col] is None, col
    assert text["meta"] == batch.column("meta")[1].as_py() and text["turns"] == batch.column("turns")[1].as_py()
    if name == "integrity":  # then phash_dedup's map part finds the pHashes integrity computed
        again = registry.create("phash_dedup", {}).map_part.process(res.kept)
        assert again.kept.column("phash").to_pylist() == res.kept.column("phash").to_pylist()


# ---------------------------------------------------------------------------------------------------------
# a whole run


def instruction_recipe(input_path, images, out) -> dict:
    return {
        "input": {"path": str(input_path), "format": "llava", "options": {"image_root": str(images), "shard_size": 10}},
        "output": {"path": str(out), "shard_size": 7, "report": False},
        "stages": [
            {"integrity": {}},
            {"conversation_check": {}},
            {"conversation_clean": {}},
            {"pii_redact": {}},
        ],
    }


def test_a_run_keeps_every_valid_conversation_and_writes_the_edits(tmp_path):
    path, entries = build_llava_mix(tmp_path / "in")
    out = tmp_path / "out"
    manifest = run_local(instruction_recipe(path, tmp_path / "in" / "images", out))
    truth = {r["id"]: (valid, what) for r, valid, what in entries}
    records = {r["id"]: r for r, _, _ in entries}
    samples = pq.read_table(out / "samples.parquet").to_pylist()
    rejects = pq.read_table(out / "rejects.parquet").to_pylist()
    assert manifest["counts"]["accounting_ok"] and manifest["counts"]["read"] == len(entries)
    assert sorted(s["key"] for s in samples) == sorted(k for k, (v, _) in truth.items() if v)
    assert {r["key"]: r["reason"] for r in rejects} == {k: what for k, (v, what) in truth.items() if not v}
    # the output shards' JSON holds the record as samples.parquet does, with the cleaned, redacted turns
    shard_json = {}
    for tar_path in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".json"):
                    shard_json[m.name[: -len(".json")]] = json.load(io.BytesIO(tar.extractfile(m).read()))
    for s in samples:
        record = json.loads(s["meta"])
        assert turns_from_record(record) == s["turns"]
        written = dict(shard_json[s["key"]])
        fields = written.pop("mmcurate")
        assert written == record and fields["n_turns"] == s["n_turns"] and fields["has_image"] == s["has_image"]
        original = records[s["key"]]
        edited = {"sharegpt4v_1", "with_pii"}
        if s["key"] in edited:
            assert record != original and {k: v for k, v in record.items() if k != "conversations"} == {
                k: v for k, v in original.items() if k != "conversations"
            }
        else:
            assert record == original, s["key"]  # unchanged: no stage edited it
    by_key = {s["key"]: s for s in samples}
    assert "jane.doe@example.org" not in json.dumps(samples) and "<EMAIL>" in by_key["with_pii"]["question"]
    assert by_key["text_only_1"]["has_image"] is False and by_key["text_only_1"]["width"] is None
    assert [t["text"] for t in by_key["vqa_mc"]["turns"]][1] == "B"
