"""The LLaVA reader's conversation columns: every turn with its role, every image, <image> placeholders kept,
text-only entries as valid samples, the record whole in meta, and malformed entries as rows a stage can reject
(never a crash)."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

import io_fixtures as fx
from llava_fixtures import build_llava_mix
from mmcurate.io import open_reader
from mmcurate.io.base import split_read_rejects
from mmcurate.io.conversations import (
    normalize_role,
    parse_turn,
    question_text,
    record_with_turns,
    turns_from_record,
    without_placeholders,
)
from mmcurate.pipeline.schema import CONVERSATION_FIELDS, INPUT_SCHEMA, SAMPLE_SCHEMA


@pytest.fixture(scope="module")
def mix(tmp_path_factory):
    d = tmp_path_factory.mktemp("llava_mix")
    path, entries = build_llava_mix(d)
    return path, d / "images", entries


def _rows(path, images, **options) -> dict[str, dict]:
    return {r["key"]: r for r in fx.read_all(open_reader(path, image_root=images, **options), batch_size=5)}


def test_schema_is_sample_schema_then_the_conversation_columns(mix):
    path, images, _ = mix
    reader = open_reader(path, image_root=images)
    assert reader.schema.names == SAMPLE_SCHEMA.names + [f.name for f in CONVERSATION_FIELDS]
    for batch in reader.read(reader.shards()[0], batch_size=7):
        assert batch.schema.equals(reader.schema)
        kept, _ = split_read_rejects(batch)
        assert kept.column_names[: len(INPUT_SCHEMA)] == INPUT_SCHEMA.names
        assert kept.schema.field("turns").type == pa.list_(pa.struct([("role", pa.string()), ("text", pa.string())]))


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_every_turn_image_and_placeholder_is_read(tmp_path, fmt):
    path, entries = build_llava_mix(tmp_path, fmt)
    rows = _rows(path, tmp_path / "images")
    assert len(rows) == len(entries)  # one row per entry, none dropped
    for record, _, _ in entries:
        r = rows[record["id"]]
        assert json.loads(r["meta"]) == record  # the record whole
        assert r["turns"] == turns_from_record(record)
        assert r["image_paths"] == (
            [] if "image" not in record else record["image"] if isinstance(record["image"], list) else [record["image"]]
        )
    mt = rows["multi_turn"]
    assert mt["n_turns"] == 6 and [t["role"] for t in mt["turns"]] == ["human", "gpt"] * 3
    assert mt["turns"][0]["text"] == "<image>\nWhat is in the cup?"  # placeholder kept in the text
    assert mt["question"] == "What is in the cup?" and mt["answer"] == "Coffee with latte art." == mt["caption"]
    mi = rows["multi_image"]
    assert mi["has_image"] and len(mi["image_paths"]) == 2
    assert mi["image"] == (tmp_path / "images" / mi["image_paths"][0]).read_bytes()  # the first image's bytes
    inter = rows["interleaved"]
    assert len(inter["image_paths"]) == 3 and inter["turns"][0]["text"].count("<image>") == 3
    assert inter["question"] == "First: then and finally . Which one is a rocket?"
    assert rows["vqa_mc"]["question"].splitlines()[1] == "A. a dog"  # line breaks kept


def test_text_only_entries_are_valid_samples_and_roles_are_normalised(mix):
    path, images, _ = mix
    rows = _rows(path, images)
    t = rows["text_only_1"]
    assert t["image"] is None and t["image_ext"] is None and t["has_image"] is False and t["image_paths"] == []
    assert t["read_reason"] is None  # a sample, not a reject
    assert [x["role"] for x in t["turns"]] == ["human", "gpt", "human", "gpt"]  # user/assistant normalised
    assert json.loads(t["meta"])["conversations"][0]["from"] == "user"  # the record keeps its spelling
    assert t["caption"] == t["answer"] == "4"
    missing = rows["missing_file"]  # names an image that is not there: not text-only
    assert missing["image"] is None and missing["has_image"] is True and missing["read_reason"] is None


def test_a_missing_or_escaping_further_image_is_a_read_reject(tmp_path):
    path, _ = build_llava_mix(tmp_path)
    (tmp_path / "outside.jpg").write_bytes(fx.image_bytes(1))
    records = [
        {
            "id": "second_missing",
            "image": ["coco/" + p.name for p in sorted((tmp_path / "images/coco").iterdir())][:1] + ["coco/gone.jpg"],
            "conversations": [],
        },
        {
            "id": "second_outside",
            "image": ["coco/" + sorted(p.name for p in (tmp_path / "images/coco").iterdir())[0], "../outside.jpg"],
            "conversations": [],
        },
    ]
    p = tmp_path / "multi.json"
    p.write_text(json.dumps(records))
    rows = _rows(p, tmp_path / "images")
    assert rows["second_missing"]["read_reason"] == "missing_image"
    assert "image 2 of 2 'coco/gone.jpg'" in rows["second_missing"]["read_detail"]
    assert rows["second_outside"]["read_reason"] == "path_outside_root"
    assert rows["second_outside"]["turns"] is None and rows["second_outside"]["image"] is None


@pytest.mark.parametrize(
    "conversations, turns",
    [
        ("not a list", None),
        (None, None),
        ([], []),
        ([7, {"from": "gpt"}], [{"role": None, "text": None}, {"role": "gpt", "text": None}]),
        (
            [{"from": 3, "value": "x"}, {"from": "gpt", "value": ["a"]}],
            [{"role": None, "text": "x"}, {"role": "gpt", "text": None}],
        ),
        (
            [{"role": "User", "content": "hi"}, {"role": "ASSISTANT ", "content": "Yes"}],
            [{"role": "human", "text": "hi"}, {"role": "gpt", "text": "Yes"}],
        ),
        (
            [{"from": "system", "value": "be brief"}, {"from": "Bot", "value": "x"}],
            [{"role": "system", "text": "be brief"}, {"role": "bot", "text": "x"}],
        ),
    ],
)
def test_malformed_conversations_are_read_as_they_are(tmp_path, conversations, turns):
    p = tmp_path / "m.json"
    p.write_text(json.dumps([{"id": "m", "conversations": conversations}]))
    (row,) = fx.read_all(open_reader(p))
    assert (
        row["read_reason"] is None
        and row["turns"] == turns
        and json.loads(row["meta"])["conversations"] == conversations
    )
    assert row["n_turns"] == len(turns or [])


def test_roles_and_question():
    assert [normalize_role(r) for r in ("human", "USER", " gpt", "Assistant", "system", "bot", 3, None)] == [
        "human",
        "human",
        "gpt",
        "gpt",
        "system",
        "bot",
        None,
        None,
    ]
    assert parse_turn("x") == {"role": None, "text": None}
    assert without_placeholders("<image>\nWhat is it?") == "What is it?"
    assert without_placeholders("Caption this.\n<image>") == "Caption this."
    assert question_text([{"role": "gpt", "text": "x"}, {"role": "human", "text": "Q <image>"}]) == "Q"
    assert question_text(None) is None


def test_record_with_turns_keeps_what_was_not_edited():
    record = {
        "id": "x",
        "image": "a.jpg",
        "conversations": [
            {"from": "user", "value": "<image>\nQ1", "extra": 1},
            {"from": "assistant", "value": "A1"},
            {"from": "human", "value": "Q2"},
            {"from": "gpt", "value": "A2"},
        ],
        "source": "vqa",
    }
    turns = turns_from_record(record)
    assert record_with_turns(record, turns) == record  # nothing edited: identical
    edited = [dict(t) for t in turns]
    edited[1]["text"] = "A1 cleaned"
    out = record_with_turns(record, edited)
    assert (
        out["conversations"][1] == {"from": "assistant", "value": "A1 cleaned"}
        and out["conversations"][0] == record["conversations"][0]
    )
    # a removed question/answer pair: the rest keep their objects
    out = record_with_turns(record, turns[:1] + turns[1:2])
    assert out["conversations"] == record["conversations"][:2] and out["source"] == "vqa"
    out = record_with_turns(record, turns[2:])
    assert out["conversations"] == record["conversations"][2:]
    # LLaVA's spelling for the export
    out = record_with_turns(record, turns, llava_roles=True)
    assert [c["from"] for c in out["conversations"]] == ["human", "gpt", "human", "gpt"]
    assert out["conversations"][0]["extra"] == 1
    assert record_with_turns(record, None) == record


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_unpaired_surrogates_are_rejects_not_a_crash(tmp_path, fmt):
    # "\ud800" parses in Python but neither UTF-8 nor Arrow can hold it: the old reader crashed on it
    records = [
        '{"id": "s", "conversations": [{"from": "human", "value": "bad \\ud800 x"}, {"from": "gpt", "value": "Yes"}]}',
        '{"id": "k\\udc00", "conversations": []}',
        '{"id": "fine", "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "No"}]}',
    ]
    p = tmp_path / f"s.{fmt}"
    p.write_text("[" + ",".join(records) + "]" if fmt == "json" else "\n".join(records) + "\n")
    rows = fx.read_all(open_reader(p))
    assert [(r["key"], r["read_reason"]) for r in rows] == [("s", "bad_meta"), ("entry_1", "bad_key"), ("fine", None)]
    assert rows[2]["answer"] == "No"
