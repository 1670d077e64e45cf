"""answer_filter: answer-aware text filtering of instruction data (LLaVA-style conversations).

Every question/answer pair (curate.conversations.qa_pairs over the `turns` column) is judged by its task type
(curate.tasks.turn_task_type), never by one length rule for all: "Yes", "No", "3", "Red", "two" and "B" are valid
answers to yes/no, counting, short-VQA and multiple-choice questions, and no rule rejects them. The rules, in the
order they are checked for each pair (the first failing pair's first failing rule is the sample's reason):

1. answer_boilerplate, every task type: the answer is empty (after stripping whitespace, quotes and punctuation)
   or is a refusal or an assistant disclaimer (ANSWER_BOILERPLATE: "I'm sorry, I cannot ...", "As an AI ...",
   "I cannot see the image", ...), recognised at the start of the answer.
2. answer_too_long, every task type: more than `max_words` words (default null: no limit).
3. answer_too_short, by task type (MIN_WORDS_BY_TYPE): a captioning/description answer under
   `min_words_description` words (default 5), a reasoning (why / how / explain) answer under
   `min_words_reasoning` words (default 3). No other task type has a minimum, and neither has a question that
   asks for brevity (BREVITY: "Describe the image briefly.", "Write a terse caption.", "A short image caption:",
   "Summarize ...", "in a few words", "in one sentence": LLaVA-Pretrain's captions answer those in 2-4 words).
4. answer_not_yes_no, only with `strict_yes_no: true`: a yes/no question answered with neither yes nor no.

A sample is rejected when any pair fails; a sample without pairs is left to conversation_check. Text-only
samples are checked like the others. Reject details name the pair by number and its task type, never quote it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa

from mmcurate.curate.answers import classify_answer
from mmcurate.curate.conversations import qa_pairs
from mmcurate.curate.tasks import turn_task_type
from mmcurate.pipeline.params import check_bool, check_int
from mmcurate.pipeline.stage import MapStage, Resources, StageResult, registry
from mmcurate.stages.batch import reject_rows, require_columns

#: Every reason answer_filter gives, in the order it checks them.
ANSWER_REASONS = ("answer_boilerplate", "answer_too_long", "answer_too_short", "answer_not_yes_no")

_CANT = r"(?:can ?not|can't|am unable to|am not able to|(?:do not|don't) have the ability to|(?:am|'m) not able to)"
_PICTURE = r"(?:the|this|that|your|an|any|the provided|the given|the attached) (?:image|picture|photo|photograph)s?"

#: Refusals and assistant disclaimers that answer nothing, matched at the start of the answer (lowercased,
#: whitespace normalised, curly apostrophes made straight, leading quotes and punctuation stripped).
ANSWER_BOILERPLATE: dict[str, str] = {
    "refusal": (
        r"(?:i'm|i am) (?:so |very |really )?sorry,? (?:but )?(?:i|as an ai)"
        rf"(?: {_CANT}| (?:can't|cannot|won't|will not|do not|don't))"
        r"|sorry,? (?:but )?i (?:can ?not|can't|am unable|am not able|won't)"
        r"|i apologi[sz]e,? (?:but )?i (?:can ?not|can't|am unable|am not able)"
    ),
    "as_an_ai": r"as an ai\b|as a (?:large )?language model\b|i am an ai\b|i'm an ai\b",
    "no_image": (
        rf"i {_CANT} (?:see|view|access|look at|open|process|analy[sz]e|display) {_PICTURE}"
        rf"|i (?:do not|don't) have (?:access to|the ability to see) {_PICTURE}"
        r"|(?:there is|there's) no (?:image|picture|photo) (?:provided|attached|given|shown)"
    ),
}
_BOILERPLATE = re.compile("|".join(f"(?:{rx})" for rx in ANSWER_BOILERPLATE.values()))
#: A question that asks for a short answer: no minimum length applies to its answer.
BREVITY = re.compile(
    r"\b(?:brief(?:ly)?|short(?:ly)?|concise(?:ly)?|terse(?:ly)?|succinct(?:ly)?|compact|quick(?:ly)?"
    r"|summar(?:y|ies|i[sz]e[sd]?|i[sz]ing)|in (?:a|one|two|three|a few|few) (?:words?|phrases?|sentences?|lines?)"
    r"|(?:one|single|1)[- ](?:word|phrase|sentence|line)|one-liner)\b",
    re.IGNORECASE,
)
_LEADING = " \t\r\n\"'`*_.,;:!?-()[]"


def _boilerplate_key(text: str) -> str:
    return " ".join(text.replace("\u2019", "'").replace("\u2018", "'").lower().split()).lstrip(_LEADING)


def is_boilerplate_answer(text: str) -> bool:
    """Whether an answer says nothing: empty once stripped of whitespace, quotes and punctuation, or a refusal /
    disclaimer of ANSWER_BOILERPLATE."""
    if not any(c.isalnum() for c in text):
        return True
    return _BOILERPLATE.match(_boilerplate_key(text)) is not None


@dataclass(frozen=True)
class AnswerRules:
    min_words_description: int | None = 5
    min_words_reasoning: int | None = 3
    max_words: int | None = None
    strict_yes_no: bool = False

    def min_words(self, task: str) -> int | None:
        """The minimum answer length of a task type (MIN_WORDS_BY_TYPE), None for none."""
        key = MIN_WORDS_BY_TYPE.get(task)
        return getattr(self, key) if key else None


#: The task types with a minimum answer length, and the parameter that holds it. Every other type (yes_no,
#: counting, multiple_choice, short_vqa, ocr, grounding, open_vqa) accepts a one-word answer.
MIN_WORDS_BY_TYPE = {"captioning": "min_words_description", "reasoning": "min_words_reasoning"}


def check_pair(question: str, answer: str, rules: AnswerRules) -> tuple[str, str, str] | None:
    """(reason, task type, detail without the pair number) of the first rule the pair breaks, else None."""
    task = turn_task_type(question, answer)
    if is_boilerplate_answer(answer):
        return "answer_boilerplate", task, "the answer is empty or a refusal/disclaimer"
    n_words = len(answer.split())
    if rules.max_words is not None and n_words > rules.max_words:
        return "answer_too_long", task, f"{n_words} words > max_words {rules.max_words}"
    lo = None if BREVITY.search(question) else rules.min_words(task)
    if lo is not None and n_words < lo:
        return "answer_too_short", task, f"{n_words} word(s) < {MIN_WORDS_BY_TYPE[task]} {lo}"
    if rules.strict_yes_no and task == "yes_no" and classify_answer(answer) not in ("yes", "no"):
        return "answer_not_yes_no", task, "a yes/no question answered with neither yes nor no"
    return None


def check_answers(turns: list[dict] | None, rules: AnswerRules) -> tuple[str, str] | None:
    """(reason, detail) of the first question/answer pair that breaks a rule, else None."""
    if not turns:
        return None
    for n, pair in enumerate(qa_pairs(turns), 1):
        verdict = check_pair(pair.question, pair.answer, rules)
        if verdict is not None:
            reason, task, detail = verdict
            return reason, f"pair {n} (turn {pair.answer_turn + 1}, {task}): {detail}"
    return None


@registry.register
class AnswerFilter(MapStage):
    """Answer-aware text filtering (module docstring): each question/answer pair's answer judged by its task
    type. Rejects: answer_boilerplate (empty, a refusal or "As an AI..."; every type), answer_too_long (more
    than `max_words`; every type), answer_too_short (a description under `min_words_description`, a reasoning
    answer under `min_words_reasoning`), answer_not_yes_no (`strict_yes_no: true` only). Short answers to
    yes/no, counting, multiple-choice and short-VQA questions are never rejected."""

    name = "answer_filter"
    batch_size = 1024
    requires = ("key", "source", "turns")
    resources = Resources(cpus=1.0)

    @dataclass
    class Params:
        min_words_description: int | None = 5  # captioning / description answers; null: no minimum
        min_words_reasoning: int | None = 3  # why / how / explain answers; null: no minimum
        max_words: int | None = None  # any answer; null: no limit
        strict_yes_no: bool = False  # reject a yes/no question answered with neither yes nor no

        def validate(self):
            check_int("min_words_description", self.min_words_description, 1, optional=True)
            check_int("min_words_reasoning", self.min_words_reasoning, 1, optional=True)
            check_int("max_words", self.max_words, 1, optional=True)
            check_bool("strict_yes_no", self.strict_yes_no)

    def __init__(self, **params):
        super().__init__(**params)
        p = self.params
        self._rules = AnswerRules(p.min_words_description, p.min_words_reasoning, p.max_words, p.strict_yes_no)

    def process(self, batch: pa.Table) -> StageResult:
        require_columns(batch, self.name, self.requires)
        rows, reasons, details = [], [], []
        for i, turns in enumerate(batch.column("turns").to_pylist()):
            verdict = check_answers(turns, self._rules)
            if verdict is not None:
                rows.append(i)
                reasons.append(verdict[0])
                details.append(verdict[1])
        return reject_rows(batch, self.name, rows, reasons, details)
