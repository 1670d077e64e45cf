"""LLaVA-style conversations as plain Python: turns, question/answer pairs, and one flat text per conversation.

A conversation is a list of turns ``(role, text)``; dicts are accepted too, as the reader's ``{"role": ...,
"text": ...}`` structs or LLaVA's ``{"from": ..., "value": ...}``. Roles: ``"human"`` (also ``"user"``)
asks, ``"gpt"`` (also ``"assistant"``) answers. ``<image>`` placeholders may appear in human text; they carry
no wording and are removed before any text rule looks at it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

HUMAN_ROLES = frozenset({"human", "user"})
GPT_ROLES = frozenset({"gpt", "assistant"})

_IMAGE_TOKEN = re.compile(r"<image>", re.IGNORECASE)
_SPACES = re.compile(r"[ \t]+")
_BLANK_LINES = re.compile(r"\s*\n\s*")


class QAPair(NamedTuple):
    """One question and its answer: ``answer_turn`` is the index of the answer turn in the conversation (the
    question is the turn before it), the index the stages remove by."""

    question: str
    answer: str
    answer_turn: int


def turn_role_text(turn: Any) -> tuple[str, str]:
    """``(role, text)`` of one turn, given as a pair or as a dict (role/text or LLaVA's from/value); the role
    lowercased."""
    if isinstance(turn, dict):
        role = turn["role"] if "role" in turn else turn.get("from", "")
        text = turn["text"] if "text" in turn else turn.get("value", "")
    else:
        role, text = turn
    return str(role).lower(), "" if text is None else str(text)


def strip_image_tokens(text: str) -> str:
    """The text without ``<image>`` placeholders, each line's spaces collapsed and blank lines dropped (the
    placeholder usually sits on a line of its own, before or after the question)."""
    text = _IMAGE_TOKEN.sub(" ", text)
    text = _SPACES.sub(" ", text)
    return _BLANK_LINES.sub("\n", text).strip()


def qa_pairs(conversation: Sequence[Any]) -> list[QAPair]:
    """The question/answer pairs: every human turn immediately followed by a gpt turn. A turn that is not part
    of such a pair (a leading gpt turn, two human turns in a row: the first one) belongs to no pair."""
    turns = [turn_role_text(t) for t in conversation]
    pairs = []
    for i in range(1, len(turns)):
        if turns[i][0] in GPT_ROLES and turns[i - 1][0] in HUMAN_ROLES:
            pairs.append(QAPair(strip_image_tokens(turns[i - 1][1]), turns[i][1].strip(), i))
    return pairs


def conversation_text(conversation: Sequence[Any]) -> str:
    """All turns' text in order, one turn per line, without ``<image>`` placeholders and without roles: what
    near-duplicate detection compares (the roles alternate the same way in every conversation)."""
    return "\n".join(strip_image_tokens(turn_role_text(t)[1]) for t in conversation)
