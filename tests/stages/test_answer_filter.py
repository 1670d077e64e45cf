"""answer_filter (stages/answers.py): answers judged by task type. Short answers to yes/no, counting,
multiple-choice and short-VQA questions are kept; short descriptions and reasons, refusals and disclaimers are
rejected; every input row ends kept or rejected; reject details never quote the text."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

import io_fixtures as fx
from helpers import assert_accounted, run_stage
from mmcurate.io import open_reader
from mmcurate.io.base import split_read_rejects
from mmcurate.pipeline.stage import StageError, registry
from mmcurate.stages.answers import ANSWER_REASONS, AnswerRules, check_answers, check_pair, is_boilerplate_answer

MC = "Which animal is shown?\nA. cat\nB. dog\nC. horse\nAnswer with the option's letter."

#: (question, short answer) pairs that must be kept, one per question type.
SHORT_VALID = [
    ("<image>\nIs there a dog in the picture?", "Yes"),
    ("<image>\nIs the man wearing a hat?", "No"),
    ("<image>\nHow many cars are parked on the street?", "3"),
    ("<image>\nWhat color is the umbrella?", "Red"),
    (f"<image>\n{MC}", "B"),
    ("<image>\nHow many birds are on the wire?", "two"),
    ("<image>\nWhat is the woman holding?", "A kite"),
    ("<image>\nWhat does the sign say?", "STOP"),
]


def _conv(*texts) -> list[dict]:
    return [{"from": ("human", "gpt")[i % 2], "value": t} for i, t in enumerate(texts)]


def _batch(tmp_path, records) -> pa.Table:
    """The LLaVA reader's batch of these records; every record with an image gets a.jpg."""
    root = tmp_path / "imgs"
    root.mkdir(exist_ok=True)
    (root / "a.jpg").write_bytes(fx.image_bytes(1))
    p = tmp_path / "data.json"
    p.write_text(json.dumps(records))
    reader = open_reader(p, image_root=root)
    kept, rejected = split_read_rejects(pa.concat_tables(list(reader.read(reader.shards()[0]))))
    assert rejected.num_rows == 0
    return kept


@pytest.mark.parametrize("question, answer", SHORT_VALID)
def test_short_answers_are_valid_for_their_question_types(question, answer):
    assert check_pair(question, answer, AnswerRules()) is None
    # even the strictest settings never reject them
    strict = AnswerRules(min_words_description=50, min_words_reasoning=50, max_words=1, strict_yes_no=True)
    assert check_pair(question, answer, strict) is None or len(answer.split()) > 1


def test_description_and_reasoning_need_words_yes_no_does_not():
    rules = AnswerRules()
    reason, task, _ = check_pair("<image>\nDescribe the image in detail.", "A dog.", rules)
    assert (reason, task) == ("answer_too_short", "captioning")
    assert check_pair("Write a caption for this photo.", "Two dogs playing.", rules)[0] == "answer_too_short"
    # a question that asks for brevity has no minimum (LLaVA-Pretrain's captions)
    for question, answer in [
        ("Describe the image briefly.", "An astronaut."),
        ("Write a terse caption.\n<image>", "rocket on the pad"),
        ("A short image caption:", "dog"),
        ("<image>\nSummarize the visual content of the image.", "a red bus"),
        ("Describe the image in one sentence.", "A beach."),
        ("Explain briefly why the road is wet.", "Rain."),
    ]:
        assert check_pair(question, answer, rules) is None, question
    assert check_pair("<image>\nDescribe the image in detail.", "A brown dog runs across a grassy park.", rules) is None
    reason, task, _ = check_pair("Why is the man holding an umbrella?", "Rain.", rules)
    assert (reason, task) == ("answer_too_short", "reasoning")
    assert check_pair("Why is the man holding an umbrella?", "Because it rains.", rules) is None
    # a 2-word answer to a yes/no question is kept, also when it says neither yes nor no (strict_yes_no off)
    assert check_pair("Is the dog happy?", "Yes, definitely.", rules) is None
    assert check_pair("Is the dog happy?", "Probably not.", rules) is None
    assert check_pair("Is the dog happy?", "Probably not.", AnswerRules(strict_yes_no=True))[0] == "answer_not_yes_no"
    # null: no minimum
    assert check_pair("Describe the image.", "A dog.", AnswerRules(min_words_description=None)) is None


@pytest.mark.parametrize(
    "answer",
    [
        "I'm sorry, I cannot help with that request.",
        "I\u2019m sorry, but I can't identify people in images.",
        "Sorry, I cannot answer that.",
        "As an AI language model, I do not have eyes.",
        "I cannot see the image you provided.",
        "I am unable to view the image.",
        "I don't have access to the image.",
        "",
        "   ",
        "...",
        '"  "',
    ],
)
def test_boilerplate_is_rejected_for_every_task_type(answer):
    assert is_boilerplate_answer(answer)
    for question in ("Is there a dog?", "How many dogs?", "Describe the image.", "Why is it wet?", MC):
        assert check_pair(question, answer, AnswerRules())[0] == "answer_boilerplate"


@pytest.mark.parametrize(
    "answer",
    ["No", "None", "I see a dog.", "Sorry is written on the sign.", "I cannot tell the exact model, but a red car."],
)
def test_answers_that_merely_resemble_boilerplate_are_kept(answer):
    assert not is_boilerplate_answer(answer)


def test_max_words():
    long = " ".join(["word"] * 30)
    assert check_pair("Describe the image.", long, AnswerRules()) is None
    reason, _, detail = check_pair("Describe the image.", long, AnswerRules(max_words=20))
    assert reason == "answer_too_long" and "30 words > max_words 20" in detail
    assert check_pair("Is there a dog?", "Yes", AnswerRules(max_words=1)) is None


def test_the_first_failing_pair_is_named_never_quoted():
    turns = [
        {"role": r, "text": t}
        for r, t in zip(
            ("human", "gpt") * 3,
            ("<image>\nIs it a cat?", "No", "How many?", "4", "Describe the scene.", "Secret words"),
        )
    ]
    reason, detail = check_answers(turns, AnswerRules())
    assert reason == "answer_too_short"
    assert detail.startswith("pair 3 (turn 6, captioning)") and "Secret" not in detail
    assert check_answers(None, AnswerRules()) is None and check_answers([], AnswerRules()) is None


def test_filter_over_a_batch_accounts_for_every_row(tmp_path):
    records = [
        {"id": f"short{i}", "image": "a.jpg", "conversations": _conv(q, a)} for i, (q, a) in enumerate(SHORT_VALID)
    ]
    records += [
        {"id": "multi", "image": "a.jpg", "conversations": _conv(*[t for pair in SHORT_VALID for t in pair])},
        {"id": "text_yes", "conversations": _conv("Is Paris in France?", "Yes")},
        {"id": "text_refusal", "conversations": _conv("What is 2+2?", "As an AI, I cannot do math.")},
        {
            "id": "short_desc",
            "image": "a.jpg",
            "conversations": _conv("<image>\nDescribe the image in detail.", "A dog"),
        },
        {"id": "yes_no_2w", "image": "a.jpg", "conversations": _conv("<image>\nIs the sky clear?", "Mostly cloudy")},
        {
            "id": "late_refusal",
            "image": "a.jpg",
            "conversations": _conv("<image>\nIs there a dog?", "Yes", "What breed?", "I'm sorry, I can't tell."),
        },
        {"id": "why_short", "image": "a.jpg", "conversations": _conv("<image>\nWhy is the road wet?", "Rain")},
    ]
    batch = _batch(tmp_path, records)
    _, res = run_stage("answer_filter", batch)
    assert_accounted(batch, res, "answer_filter")
    rejected = {r["key"]: (r["reason"], r["detail"]) for r in res.rejected.to_pylist()}
    assert {k: v[0] for k, v in rejected.items()} == {
        "text_refusal": "answer_boilerplate",
        "short_desc": "answer_too_short",
        "late_refusal": "answer_boilerplate",
        "why_short": "answer_too_short",
    }
    assert rejected["late_refusal"][1].startswith("pair 2 ")
    assert {r[0] for r in rejected.values()} <= set(ANSWER_REASONS)
    kept = res.kept.column("key").to_pylist()
    assert kept == [f"short{i}" for i in range(len(SHORT_VALID))] + ["multi", "text_yes", "yes_no_2w"]
    assert (
        res.kept.column("turns").to_pylist()
        == batch.filter(pa.array([k in kept for k in batch.column("key").to_pylist()])).column("turns").to_pylist()
    )


@pytest.mark.parametrize(
    "params, match",
    [
        ({"min_words_description": 0}, "min_words_description"),
        ({"min_words_description": "5"}, "min_words_description"),
        ({"min_words_reasoning": -1}, "min_words_reasoning"),
        ({"max_words": 0}, "max_words"),
        ({"max_words": 2.5}, "max_words"),
        ({"strict_yes_no": "no"}, "strict_yes_no"),
        ({"min_words": 3}, "unknown parameter"),
    ],
)
def test_parameters_are_checked(params, match):
    with pytest.raises(StageError, match=match):
        registry.create("answer_filter", params)


def test_rows_without_conversation_columns_are_refused():
    plain = pa.table({"key": ["a"], "source": ["s"], "caption": ["x"]})
    with pytest.raises(StageError, match="stage 'answer_filter': input lacks column\\(s\\) turns"):
        run_stage("answer_filter", plain)
