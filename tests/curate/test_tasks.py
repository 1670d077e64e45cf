"""Task types of instruction conversations (mmcurate.curate.tasks)."""

from __future__ import annotations

import pytest

from mmcurate.curate.tasks import TASK_TYPES, task_type, task_types, turn_task_type

LONG = "The image shows a man riding a bicycle down a busy city street on a sunny afternoon."


@pytest.mark.parametrize(
    "question, answer, expected",
    [
        # grounding first: a box in the question or the answer
        ("What is at [0.12, 0.30, 0.50, 0.77]?", "A dog", "grounding"),
        ("Where is the dog? Give coordinates.", "[0.1, 0.2, 0.3, 0.4]", "grounding"),
        ("Where is the dog?", "<ref>the dog</ref><box>(120,40),(300,310)</box>", "grounding"),
        ("Find the cat.", "(12, 40), (200, 310)", "grounding"),
        ("Please provide the bounding box coordinate of the region: a red car.", "[12, 40, 200, 310]", "grounding"),
        # multiple choice before yes/no: it may start with "Is"
        ("Is the car\nA. red\nB. blue", "A", "multiple_choice"),
        ("What color is the car? (a) red (b) blue", "(b)", "multiple_choice"),
        ("How many dogs are there?", "3", "counting"),
        ("Count the people in the picture.", "Five people.", "counting"),
        ("Is the number of cats larger than 2?", "Yes", "counting"),
        ("What does the sign say?", "STOP", "ocr"),
        ("What is written on the bus?", "Route 42", "ocr"),
        ("Is there any text in the image?", "No", "ocr"),
        ("Read the title of the book.", "Moby Dick", "ocr"),
        ("Is there a dog in the image?", "Yes", "yes_no"),
        ("Are the people happy?", "Yes, the people are smiling and laughing together at the party.", "yes_no"),
        ("Does the man wear a hat?", LONG, "yes_no"),  # the question decides, whatever the answer
        ("What is the weather like?", "No, it is not sunny.", "yes_no"),  # the answer says yes/no
        ("Describe the image in detail.", LONG, "captioning"),
        ("Write a short caption.", "A man on a bike", "captioning"),
        ("What is happening in the image?", LONG, "captioning"),
        ("What is happening in the image?", "A race", "short_vqa"),
        ("Why is the man smiling?", "He is happy", "reasoning"),
        ("How might the weather affect the ride?", LONG, "reasoning"),
        ("Explain the purpose of the fence.", LONG, "reasoning"),
        ("How old is the man?", "30", "short_vqa"),
        ("What is the man holding?", "A frisbee", "short_vqa"),
        ("Is it day or night?", "Night", "short_vqa"),  # an alternative question, not yes/no
        ("What is the man doing?", LONG, "open_vqa"),
    ],
)
def test_turn_task_type(question, answer, expected):
    assert turn_task_type(question, answer) == expected


def test_conversation_task_type():
    yn = [("human", "<image>\nIs there a dog?"), ("gpt", "Yes")]
    short = [("human", "What color is it?"), ("gpt", "Brown")]
    why = [("human", "Why is it here?"), ("gpt", LONG)]
    assert task_type(yn) == "yes_no"
    assert task_type(yn + short) == "yes_no"  # 2 pairs, a tie: the first type
    assert task_type(short + yn) == "short_vqa"
    assert task_type(yn + short + why) == "dialogue"
    assert task_type(yn + short + why, dialogue_min_pairs=4) == "yes_no"
    assert task_type(yn + yn + yn + yn) == "yes_no"  # many pairs of one type: not a dialogue
    assert task_type(short + yn + yn) == "dialogue"
    assert task_type([]) == "empty"
    assert task_type([("gpt", "hello")]) == "empty"
    got = task_types([yn, yn + short + why, []])
    assert got.tolist() == ["yes_no", "dialogue", "empty"]
    assert set(got) <= set(TASK_TYPES)
