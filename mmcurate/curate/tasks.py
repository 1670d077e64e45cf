"""Task type of an instruction conversation, by readable rules (no model).

A question/answer pair gets the first type whose rule matches, in this order (the order matters: a grounding
question may also be a short question, a multiple-choice question may also start with "Is"):

1. ``"grounding"``: the question or the answer has a box: four numbers in brackets (``[0.1, 0.2, 0.3, 0.4]``,
   ``[12, 40, 200, 310]``), two corner points (``(12,40),(200,310)``), a box or reference tag (``<box>``,
   ``<ref>``, ``<bbox>``, ``<|box_start|>``), or the words "bounding box".
2. ``"multiple_choice"``: the question lists options (:func:`choices.parse_multiple_choice`).
3. ``"counting"``: "how many", "count", "number of".
4. ``"ocr"``: reading text: "what does ... say / read", "what is written", "written", "text", "read", "OCR",
   "spell", "title of", "what word(s) / letter(s)".
5. ``"yes_no"``: a yes/no question (:func:`answers.question_is_yes_no`) or a yes/no answer.
6. ``"captioning"``: "describe", "description", "caption", "summarize"; or "what is in / happening in / shown
   in the image", "what do you see" with a long answer.
7. ``"reasoning"``: "why", "how" (not how many / much / old / far / big / tall / long), "explain", "reason",
   "purpose", "infer", "might", "could be", "suggest".
8. ``"short_vqa"``: any other question with a short answer (:func:`answers.classify_answer` not "long").
9. ``"open_vqa"``: any other question with a long answer.

A conversation (:func:`task_type`) with at least ``dialogue_min_pairs`` pairs of at least two types is
``"dialogue"``; otherwise it takes its most common pair type (ties: the type that came first). A conversation
without a question/answer pair is ``"empty"``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from mmcurate.curate.answers import classify_answer, question_is_yes_no
from mmcurate.curate.choices import parse_multiple_choice
from mmcurate.curate.conversations import qa_pairs

TASK_TYPES = (
    "grounding",
    "multiple_choice",
    "counting",
    "ocr",
    "yes_no",
    "captioning",
    "reasoning",
    "short_vqa",
    "open_vqa",
    "dialogue",
    "empty",
)

_NUM = r"-?\d*\.?\d+"
_BOX = re.compile(
    rf"\[\s*{_NUM}\s*(?:,\s*{_NUM}\s*){{3}}\]"
    rf"|\(\s*{_NUM}\s*,\s*{_NUM}\s*\)\s*,?\s*\(\s*{_NUM}\s*,\s*{_NUM}\s*\)"
    r"|<\|?/?(?:box|ref|bbox|box_start|object_ref_start|quad)\|?>"
    r"|\bbounding box(?:es)?\b",
    re.IGNORECASE,
)
_COUNTING = re.compile(r"\bhow many\b|\bcount(?:ing)?\b|\bnumber of\b", re.IGNORECASE)
_OCR = re.compile(
    r"\bwhat (?:does|do|did)\b[^?\n]{0,60}\b(?:say|read)\b|\bwritten\b|\btext\b|\bread\b|\bocr\b|\bspell\b"
    r"|\btitle of\b|\bwhat (?:word|words|letter|letters)\b",
    re.IGNORECASE,
)
_CAPTION = re.compile(r"\bdescri(?:be|bing|ption)\b|\bcaption\b|\bsummari[sz]e\b", re.IGNORECASE)
_WHAT_IN_IMAGE = re.compile(
    r"\bwhat (?:is|'s) (?:in|shown in|happening in|going on in|depicted in) (?:the|this) (?:image|picture|photo)"
    r"|\bwhat do you see\b",
    re.IGNORECASE,
)
_REASONING = re.compile(
    r"^\W*(?:why\b|how\b(?!\s+(?:many|much|old|far|big|tall|long)\b))"
    r"|\b(?:explain|reason|reasons|purpose|infer|inferred|might|could be|suggests?)\b",
    re.IGNORECASE,
)


def turn_task_type(question: str, answer: str) -> str:
    """The task type of one question/answer pair (rules 1-9 of the module docstring)."""
    if _BOX.search(question) or _BOX.search(answer):
        return "grounding"
    if parse_multiple_choice(question, answer) is not None:
        return "multiple_choice"
    if _COUNTING.search(question):
        return "counting"
    if _OCR.search(question):
        return "ocr"
    answer_class = classify_answer(answer)
    if question_is_yes_no(question) or answer_class in ("yes", "no"):
        return "yes_no"
    long_answer = answer_class == "long"
    if _CAPTION.search(question) or (long_answer and _WHAT_IN_IMAGE.search(question)):
        return "captioning"
    if _REASONING.search(question):
        return "reasoning"
    return "open_vqa" if long_answer else "short_vqa"


def turn_task_types(conversation: Sequence[Any]) -> list[str]:
    """The task type of each question/answer pair of a conversation, in order."""
    return [turn_task_type(p.question, p.answer) for p in qa_pairs(conversation)]


def task_type(conversation: Sequence[Any], dialogue_min_pairs: int = 3) -> str:
    """The task type of a conversation (module docstring)."""
    types = turn_task_types(conversation)
    if not types:
        return "empty"
    counts = Counter(types)
    if len(types) >= dialogue_min_pairs and len(counts) > 1:
        return "dialogue"
    top = max(counts.values())
    return next(t for t in types if counts[t] == top)  # ties: the first to occur


def task_types(conversations: Sequence[Sequence[Any]], dialogue_min_pairs: int = 3) -> np.ndarray:
    """:func:`task_type` of each conversation, as a str array."""
    return np.asarray([task_type(c, dialogue_min_pairs) for c in conversations], dtype="<U15")
