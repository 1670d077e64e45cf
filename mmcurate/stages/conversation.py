"""Conversation stages for instruction data (LLaVA-style, read by io/llava.py): conversation_check,
conversation_clean.

They work on the reader's conversation columns (pipeline.schema.CONVERSATION_FIELDS: `turns`, `image_paths`,
...); a recipe that lists them over another input is refused when the stage first sees a batch, naming the
columns. An edit goes through stages.batch.set_turns, so the `turns` column, `question`/`answer`, the caption
(where it was the first answer) and the record in `meta` (what the output shard's JSON and the LLaVA export
hold) agree. pii_redact (stages/text.py) redacts every turn the same way.

Neither stage looks at how long an answer is: "Yes", "No", "3", "Red" and "B" are answers, never rejects.
Reject details name turns by number and never quote their text.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from mmcurate.io.conversations import GPT, HUMAN, IMAGE_TOKEN, KNOWN_ROLES, SYSTEM, count_placeholders
from mmcurate.io.keys import short_repr
from mmcurate.pipeline.params import check_bool, check_choice, check_int
from mmcurate.pipeline.stage import MapStage, Resources, StageResult, registry
from mmcurate.stages.batch import reject_rows, require_columns, set_turns
from mmcurate.stages.text import MAX_CHARS_DEFAULT, CaptionClean, caption_cleaner

#: What conversation_check asks of the <image> placeholders (`placeholders`):
#: exact: as many placeholders as images. exact_or_none (the default): that, or no placeholder at all with one or
#: more images, as LLaVA-Pretrain-style captions and several converted sets write them (the LLaVA trainers put
#: the image first when its placeholder is missing). ignore: no check.
PLACEHOLDER_RULES = ("exact", "exact_or_none", "ignore")

#: Every reason conversation_check gives, in the order it checks them (the first failure is the reject's reason).
CHECK_REASONS = (
    "no_conversation",
    "malformed_turn",
    "unknown_role",
    "too_many_turns",
    "text_too_long",
    "empty_turn",
    "first_turn_not_human",
    "roles_not_alternating",
    "unanswered_turn",
    "image_placeholders",
)


@dataclass(frozen=True)
class ConversationRules:
    placeholders: str = "exact_or_none"
    allow_system: bool = False
    max_turns: int | None = 256
    max_chars: int | None = MAX_CHARS_DEFAULT
    require_final_answer: bool = True


def check_conversation(turns: list[dict] | None, n_images: int, rules: ConversationRules) -> tuple[str, str] | None:
    """(reason, detail) of the first rule the conversation breaks (CHECK_REASONS order), else None."""
    if turns is None:
        return "no_conversation", "the entry has no `conversations` list"
    if not turns:
        return "no_conversation", "`conversations` is empty"
    for i, t in enumerate(turns, 1):
        if t["role"] is None or t["text"] is None:
            what = "role (`from`)" if t["role"] is None else "text (`value`)"
            return "malformed_turn", f"turn {i} has no string {what}"
    for i, t in enumerate(turns, 1):
        role = t["role"]
        if role not in KNOWN_ROLES:
            return "unknown_role", f"turn {i} has role {short_repr(role, 40)}; known: human/user, gpt/assistant"
        if role == SYSTEM and not (rules.allow_system and i == 1):
            where = "only as the first turn" if rules.allow_system else "with allow_system: true, as the first turn"
            return "unknown_role", f"turn {i} is a system turn, accepted {where}"
    body = turns[1:] if turns[0]["role"] == SYSTEM else turns
    if rules.max_turns is not None and len(turns) > rules.max_turns:
        return "too_many_turns", f"{len(turns)} turns > max_turns {rules.max_turns}"
    n_chars = sum(len(t["text"]) for t in turns)
    if rules.max_chars is not None and n_chars > rules.max_chars:
        return "text_too_long", f"{n_chars} characters in the conversation > max_chars {rules.max_chars}"
    for i, t in enumerate(turns, 1):
        if not t["text"].strip():
            return "empty_turn", f"turn {i} ({t['role']}) is empty or whitespace only"
    if not body:
        return "no_conversation", "the conversation holds only a system turn"
    if body[0]["role"] != HUMAN:
        return "first_turn_not_human", f"the conversation starts with a {body[0]['role']} turn"
    offset = len(turns) - len(body)
    for i, t in enumerate(body):
        if t["role"] != (HUMAN if i % 2 == 0 else GPT):
            return "roles_not_alternating", f"turns {i + offset} and {i + offset + 1} are both {t['role']} turns"
    if rules.require_final_answer and body[-1]["role"] == HUMAN:
        return "unanswered_turn", f"the last turn ({len(turns)}) is a question without an answer"
    if rules.placeholders != "ignore":
        n_ph = count_placeholders(turns)
        if n_ph != n_images and not (rules.placeholders == "exact_or_none" and n_ph == 0):
            return "image_placeholders", f"{n_ph} {IMAGE_TOKEN} placeholder(s) for {n_images} image(s)"
    return None


@registry.register
class ConversationCheck(MapStage):
    """The conversation's structure; each failure a reject reason of its own (CHECK_REASONS, checked in that
    order): no_conversation (no or an empty `conversations` list), malformed_turn (a turn that is not an object
    with a string role and text), unknown_role (roles other than human/user and gpt/assistant; a system turn
    only first and with `allow_system`), too_many_turns (`max_turns`), text_too_long (the conversation's
    characters, `max_chars`), empty_turn (empty or whitespace only), first_turn_not_human,
    roles_not_alternating, unanswered_turn (a last question without an answer; `require_final_answer: false`
    keeps it), image_placeholders (the `<image>` placeholders do not match the images: see PLACEHOLDER_RULES)."""

    name = "conversation_check"
    batch_size = 1024
    requires = ("key", "source", "turns", "image_paths")
    resources = Resources(cpus=1.0)

    @dataclass
    class Params:
        placeholders: str = "exact_or_none"  # exact | exact_or_none | ignore
        allow_system: bool = False  # accept one leading system turn
        max_turns: int | None = 256  # null: no limit
        max_chars: int | None = MAX_CHARS_DEFAULT  # characters of the whole conversation; null: no limit
        require_final_answer: bool = True  # reject a conversation that ends with a question

        def validate(self):
            check_choice("placeholders", self.placeholders, PLACEHOLDER_RULES)
            check_bool("allow_system", self.allow_system)
            check_int("max_turns", self.max_turns, 1, optional=True)
            check_int("max_chars", self.max_chars, 1, optional=True)
            check_bool("require_final_answer", self.require_final_answer)

    def __init__(self, **params):
        super().__init__(**params)
        p = self.params
        self._rules = ConversationRules(
            p.placeholders, p.allow_system, p.max_turns, p.max_chars, p.require_final_answer
        )

    def process(self, batch: pa.Table) -> StageResult:
        require_columns(batch, self.name, self.requires)
        turns = batch.column("turns").to_pylist()
        images = batch.column("image_paths").to_pylist()
        rows, reasons, details = [], [], []
        for i, (t, imgs) in enumerate(zip(turns, images)):
            verdict = check_conversation(t, len(imgs or ()), self._rules)
            if verdict is not None:
                rows.append(i)
                reasons.append(verdict[0])
                details.append(verdict[1])
        return reject_rows(batch, self.name, rows, reasons, details)


def _separator(whitespace: str) -> str:
    """The one character that stands for a run of whitespace next to a placeholder."""
    return " " if whitespace else ""


def _clean_line(line: str, cleaner) -> str:
    """One line of prose: its indentation kept, the rest cleaned, <image> placeholders kept in place."""
    body = line.lstrip(" \t")
    indent = line[: len(line) - len(body)]
    if IMAGE_TOKEN not in body:
        cleaned = cleaner(body)
        return indent + cleaned if cleaned else ""
    parts = body.split(IMAGE_TOKEN)
    out = []
    for i, seg in enumerate(parts):
        if i:
            out.append(IMAGE_TOKEN)
        cleaned = cleaner(seg)
        after, before = i > 0, i < len(parts) - 1
        if cleaned:
            lead = _separator(seg[: len(seg) - len(seg.lstrip())]) if after else ""
            trail = _separator(seg[len(seg.rstrip()) :]) if before else ""
            out.append(lead + cleaned + trail)
        elif after and before:
            out.append(_separator("".join(c for c in seg if c.isspace())))
    return indent + "".join(out)


def clean_turn(text: str | None, cleaner) -> str | None:
    """`cleaner` (a curate.captions.CaptionCleaner) applied to a turn line by line: line breaks are kept (options of
    a multiple-choice question, lists and paragraphs of an answer), runs of blank lines become one, a line keeps
    its indentation, and fenced code blocks (```) are left exactly as they are. <image> placeholders stay where
    they were, with the line break or one space that separated them from the text. The turn is stripped."""
    if text is None:
        return None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out: list[str] = []
    in_code = False
    for line in lines:
        if line.lstrip().startswith("```"):
            in_code = not in_code
            out.append(line)
            continue
        if in_code:
            out.append(line)
            continue
        cleaned = _clean_line(line, cleaner)
        if cleaned.strip() or (out and out[-1].strip()):  # one blank line for a run of them
            out.append(cleaned if cleaned.strip() else "")
    return "\n".join(out).strip()


@registry.register
class ConversationClean(MapStage):
    """caption_clean's cleaning (curate.captions.CaptionCleaner: markup and entities, mojibake, NFC, control and
    zero-width characters, punctuation runs, whitespace) applied to every turn, the `<image>` placeholders kept
    where they were. The cleaned turns are what is written out (stages.batch.set_turns: the `turns` column, the
    record in `meta`, `question`/`answer`, and the caption where it was the first answer).

    Rejects: text_too_long (a turn longer than `max_chars`, before any pattern runs), and empty_after_clean (a
    turn that cleaning leaves empty, e.g. only markup; `reject_emptied: false` keeps it for conversation_check to
    judge)."""

    name = "conversation_clean"
    batch_size = 1024
    requires = ("key", "source", "turns")
    resources = Resources(cpus=1.0)

    @dataclass
    class Params(CaptionClean.Params):  # caption_clean's settings; max_chars is per turn
        reject_emptied: bool = True

        def validate(self):
            super().validate()
            check_bool("reject_emptied", self.reject_emptied)

    def __init__(self, **params):
        super().__init__(**params)
        self._cleaner = caption_cleaner(self.params)

    def process(self, batch: pa.Table) -> StageResult:
        require_columns(batch, self.name, self.requires)
        max_chars = self.params.max_chars
        new_turns, rows, reasons, details = [], [], [], []
        for i, turns in enumerate(batch.column("turns").to_pylist()):
            verdict = None
            if turns is not None:
                for k, t in enumerate(turns, 1):
                    if t["text"] is not None and max_chars is not None and len(t["text"]) > max_chars:
                        verdict = ("text_too_long", f"turn {k}: {len(t['text'])} characters > max_chars {max_chars}")
                        break
            if verdict is None and turns is not None:
                cleaned = [{"role": t["role"], "text": clean_turn(t["text"], self._cleaner)} for t in turns]
                emptied = [
                    k
                    for k, (t, c) in enumerate(zip(turns, cleaned), 1)
                    if c["text"] is not None and not c["text"].strip() and t["text"].strip()
                ]
                if emptied and self.params.reject_emptied:
                    verdict = ("empty_after_clean", f"turn {emptied[0]} is empty after cleaning")
                turns = cleaned
            if verdict is not None:
                rows.append(i)
                reasons.append(verdict[0])
                details.append(verdict[1])
            new_turns.append(turns)
        return reject_rows(set_turns(batch, new_turns), self.name, rows, reasons, details)
