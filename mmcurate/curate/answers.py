"""Answer classes and yes/no rebalancing for instruction data.

Models trained on VQA-style data over-answer "yes" when their data does; the rebalancer removes the fewest
yes (or no) question/answer pairs that bring the yes share among yes/no answers within a tolerance of the
target, spread over the question templates in proportion to their size.

Classes of an answer (:func:`classify_answer`), decided in this order, on the answer stripped of surrounding
whitespace, quotes and markdown emphasis; the *first word or phrase* decides, so "Yes, there is a dog on the
left" is "yes" and "There is a dog" is not:

1. ``"yes"``: the first word is yes / yeah / yep / yup / yea (whatever follows).
2. ``"no"``: the first word is no / nope / nah, except "no one" (a person answer, not a negation). "No dogs
   are visible" is "no". True / false / correct / none are *not* yes/no: they answer other question kinds
   (true/false items, choices, counts) and balancing them as yes/no would distort those.
3. ``"option"``: a choice letter A-H: "B", "B.", "B)", "B:", "(b)", "(B) red", "B. red", "b)", "Option B",
   optionally after "Answer:" / "The answer is" / "The correct option is". A capital letter needs nothing
   after it or one of ``. ) :``; a lowercase one needs brackets or ")"/"." (so "a dog" is not an option).
4. ``"number"``: the whole answer (less a final period) is a number: digits ("3", "-2", "3.5", "1,024",
   "50%", "1/2") or a number word ("three", "twenty-one", "zero"). "3 dogs" is not (it is "short").
5. ``"short"``: at most :data:`SHORT_MAX_WORDS` words (empty text is "short" with zero words).
6. ``"long"``: everything else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from mmcurate.curate.conversations import strip_image_tokens

ANSWER_CLASSES = ("yes", "no", "option", "number", "short", "long")
SHORT_MAX_WORDS = 4

_WRAPPING = " \t\r\n\"'`*_\u201c\u201d\u2018\u2019"
_YES = re.compile(r"(?:yes|yeah|yep|yup|yea)(?![\w'-])", re.IGNORECASE)
_NO = re.compile(r"(?:no|nope|nah)(?![\w'-])(?!\s+one\b)", re.IGNORECASE)
_ANSWER_PREFIX = re.compile(
    r"(?:answer\s*:|(?:the\s+)?(?:correct\s+|right\s+)?(?:answer|option|choice)\s+is\s*:?)\s*", re.IGNORECASE
)
_OPTION = re.compile(
    r"\(\s*[a-hA-H]\s*\)(?!\w)"  # (b), (B) red
    r"|(?i:option|choice)\s*\(?\s*[a-hA-H]\s*\)?(?!\w)"  # Option B, option (b)
    r"|[A-H](?:[.):](?=\s|$)|$)"  # B, B., B) red, B: red
    r"|[a-h](?:\)(?=\s|$)|\.?$)"  # b), b.
)
_NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand"
).split()
_NUMBER = re.compile(
    r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?%?|[-+]?\.\d+%?|\d+/\d+"
    r"|(?:" + "|".join(_NUMBER_WORDS) + r")(?:[-\s](?:" + "|".join(_NUMBER_WORDS[1:10]) + r"))?",
    re.IGNORECASE,
)

# Auxiliaries that open a yes/no question ("Is there...", "Does the man...", "Can you see...").
YES_NO_OPENERS = frozenset(
    "is are am was were do does did can could has have had will would should shall may might must "
    "isn't aren't wasn't weren't don't doesn't didn't can't couldn't hasn't haven't won't wouldn't shouldn't".split()
)
_QUESTION_PREFIX = re.compile(r"(?:q(?:uestion)?\s*[:.]\s*)", re.IGNORECASE)
_FIRST_WORD = re.compile(r"[A-Za-z']+")
_OR = re.compile(r"\bor\b", re.IGNORECASE)


def _strip_wrapping(text: str) -> str:
    return text.strip(_WRAPPING)


def classify_answer(text: str) -> str:
    """The class of one answer, one of :data:`ANSWER_CLASSES`, by the rules in the module docstring."""
    t = _strip_wrapping(text)
    if _YES.match(t):
        return "yes"
    if _NO.match(t):
        return "no"
    m = _ANSWER_PREFIX.match(t)
    body = t[m.end() :] if m else t
    if _OPTION.match(body):
        return "option"
    if _NUMBER.fullmatch(body.rstrip(". ")):
        return "number"
    return "short" if len(t.split()) <= SHORT_MAX_WORDS else "long"


def classify_answers(texts) -> np.ndarray:
    """:func:`classify_answer` over many answers, as a str array; equal answers are classified once."""
    cache: dict[str, str] = {}
    out = [cache.get(t) or cache.setdefault(t, classify_answer(t)) for t in texts]
    return np.asarray(out, dtype="<U6")


def question_is_yes_no(question: str) -> bool:
    """Whether a question asks for yes or no: its first word (after ``<image>`` placeholders and a "Q:" /
    "Question:" prefix) is an auxiliary verb (:data:`YES_NO_OPENERS`: "Is there...", "Does...", "Can...",
    "Were...") and its first sentence is not an alternative question ("Is it day or night?" asks to choose).
    Recognises the question whatever the answer says ("Yes, the man is..." or a long sentence)."""
    q = strip_image_tokens(question)
    m = _QUESTION_PREFIX.match(q)
    if m:
        q = q[m.end() :]
    w = _FIRST_WORD.match(q.lstrip(_WRAPPING))
    if not w or w.group(0).lower().replace("\u2019", "'") not in YES_NO_OPENERS:
        return False
    first_sentence = re.split(r"[?\n]", q, maxsplit=1)[0]
    return not _OR.search(first_sentence)


# ----------------------------------------------------------------------------------------------
# Yes-ratio statistics and rebalancing
# ----------------------------------------------------------------------------------------------


@dataclass
class YesNoStats:
    """Yes/no counts overall and per template; ``yes_ratio`` = yes / (yes + no), NaN where there is none."""

    n_yes: int
    n_no: int
    yes_ratio: float
    templates: np.ndarray  # the distinct template ids (sorted)
    template_yes: np.ndarray  # int64 per template
    template_no: np.ndarray
    template_ratio: np.ndarray  # float64 per template (NaN without yes/no turns)


def _ratio(yes, no):
    yes = np.asarray(yes, dtype=np.float64)
    total = yes + np.asarray(no, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, yes / np.where(total > 0, total, 1), np.nan)


def yes_no_stats(classes, template_ids=None) -> YesNoStats:
    """Yes share among the yes/no answers, overall and per template (``template_ids`` None: one template)."""
    classes = np.asarray(classes, dtype=str)
    tids = np.zeros(classes.size, dtype=np.int64) if template_ids is None else np.asarray(template_ids)
    if tids.shape != classes.shape:
        raise ValueError(f"template_ids must have shape {classes.shape}, got {tids.shape}")
    templates, inverse = np.unique(tids, return_inverse=True)
    inverse = inverse.reshape(-1)
    yes = np.bincount(inverse, weights=classes == "yes", minlength=templates.size).astype(np.int64)
    no = np.bincount(inverse, weights=classes == "no", minlength=templates.size).astype(np.int64)
    n_yes, n_no = int(yes.sum()), int(no.sum())
    return YesNoStats(n_yes, n_no, float(_ratio(n_yes, n_no)), templates, yes, no, _ratio(yes, no))


@dataclass
class Rebalance:
    """What :func:`rebalance_yes_no` removes. Rows are the input rows (one per answer turn).

    ``removed_conversation[j]`` / ``removed_turn[j]`` is a removed answer turn; its question is turn
    ``removed_turn[j] - 1``, removed with it. ``emptied`` lists the conversations left with no pair at all (the
    stage rejects those samples). ``feasible`` is False when the target cannot be reached without removing a
    whole side (no "no" answers at all, say); then nothing is removed."""

    removed: np.ndarray  # bool per row
    removed_conversation: np.ndarray  # int64
    removed_turn: np.ndarray  # int64: the answer turn
    emptied: np.ndarray  # int64 conversation ids, sorted
    yes_ratio_before: float
    yes_ratio_after: float
    feasible: bool
    removed_class: str | None  # "yes", "no" or None when nothing had to go
    templates: np.ndarray  # distinct template ids (sorted)
    removed_per_template: np.ndarray  # int64 per template

    @property
    def removed_question_turn(self) -> np.ndarray:
        return self.removed_turn - 1


def n_to_remove(n_yes: int, n_no: int, target: float = 0.5, tolerance: float = 0.02) -> tuple[str | None, int]:
    """``(side, k)``: the fewest answers of one side ("yes" or "no") whose removal puts yes / (yes + no) within
    ``target ± tolerance`` (it lands on the near edge of the band), or ``(None, 0)`` when already inside.
    When the band is narrower than one removal's step at these counts (1 yes, 1 no, target 0.4 ± 0.05), no
    count lands inside and ``k`` is the fewest that cross the near edge. ``k`` is -1 when only removing the
    whole side would do (the other side is empty)."""
    if not 0.0 <= target <= 1.0 or tolerance < 0:
        raise ValueError(f"need 0 <= target <= 1 and tolerance >= 0, got {target}, {tolerance}")
    total = n_yes + n_no
    if total == 0:
        return None, 0
    hi, lo = target + tolerance, target - tolerance
    if n_yes / total > hi:
        side, keep_other, have = "yes", n_no, n_yes

        def ok(y_left):
            return y_left / (y_left + keep_other) <= hi
    elif n_yes / total < lo:
        side, keep_other, have = "no", n_yes, n_no

        def ok(n_left):
            return keep_other / (keep_other + n_left) >= lo
    else:
        return None, 0
    if keep_other == 0:
        return side, -1
    # Closed form for the count left, then nudged past floating-point rounding on either side.
    bound = hi / (1 - hi) * n_no if side == "yes" else (1 - lo) / lo * n_yes if lo > 0 else float(have)
    left = min(have, max(0, int(np.floor(bound))))
    while left > 0 and not ok(left):
        left -= 1
    while left < have and ok(left + 1):
        left += 1
    return side, have - left


def _apportion(k: int, counts: np.ndarray) -> np.ndarray:
    """Largest-remainder split of k over groups in proportion to ``counts`` (ties to the earlier group); every
    share is at most its count."""
    total = int(counts.sum())
    if k <= 0 or total == 0:
        return np.zeros(counts.size, dtype=np.int64)
    exact = counts * (k / total)
    share = np.minimum(np.floor(exact).astype(np.int64), counts)
    rest = k - int(share.sum())
    order = np.lexsort((np.arange(counts.size), -(exact - share)))  # largest remainder first
    for g in order:
        if rest == 0:
            break
        if share[g] < counts[g]:
            share[g] += 1
            rest -= 1
    return share


def rebalance_yes_no(
    conversation,
    turn,
    classes,
    template_ids=None,
    target: float = 0.5,
    tolerance: float = 0.02,
    seed: int = 0,
    pairs_per_conversation=None,
) -> Rebalance:
    """Choose the yes (or no) question/answer pairs to remove so that the yes share among yes/no answers lands
    within ``target ± tolerance``, removing as few as possible (:func:`n_to_remove`).

    Inputs are parallel arrays with one row per answer turn: ``conversation`` (int id), ``turn`` (the answer
    turn's index in its conversation), ``classes`` (:func:`classify_answer`'s classes) and ``template_ids``
    (any ids, e.g. from ``templates.template_ids``; None: one template). Every answer turn of every
    conversation should be a row (all classes), so that a conversation whose rows all go is reported in
    ``emptied``; when only some turns are given, pass ``pairs_per_conversation`` (int array indexed by
    conversation id: how many pairs each has).

    Removals are split over templates in proportion to each template's count of the removed side (largest
    remainder), so every template keeps about the same fraction of its yes answers and none is stripped bare
    before the others. Within a template, pairs of single-pair conversations go last (removing them rejects a
    whole sample), and a seeded random order decides among the rest: the same inputs and seed give the same
    choice."""
    conv = np.asarray(conversation, dtype=np.int64).reshape(-1)
    turns = np.asarray(turn, dtype=np.int64).reshape(-1)
    cls = np.asarray(classes, dtype=str).reshape(-1)
    n = conv.size
    if turns.size != n or cls.size != n:
        raise ValueError(f"conversation, turn and classes must have one length, got {n}, {turns.size}, {cls.size}")
    stats = yes_no_stats(cls, template_ids)
    tids = np.zeros(n, dtype=np.int64) if template_ids is None else np.asarray(template_ids).reshape(-1)
    _, tinv = np.unique(tids, return_inverse=True)
    tinv = tinv.reshape(-1)
    side, k = n_to_remove(stats.n_yes, stats.n_no, target, tolerance)
    removed = np.zeros(n, dtype=bool)
    per_template = np.zeros(stats.templates.size, dtype=np.int64)
    feasible = k >= 0
    if side is not None and k > 0:
        rows = np.flatnonzero(cls == side)
        if pairs_per_conversation is None:
            n_pairs = np.bincount(conv, minlength=int(conv.max()) + 1 if n else 0)
        else:
            n_pairs = np.asarray(pairs_per_conversation, dtype=np.int64)
        alone = n_pairs[conv[rows]] <= 1
        priority = np.random.default_rng(seed).permutation(rows.size)
        counts = np.bincount(tinv[rows], minlength=stats.templates.size)
        per_template = _apportion(k, counts)
        order = np.lexsort((priority, alone, tinv[rows]))  # by template, then multi-pair first, then random
        sorted_t = tinv[rows][order]
        starts = np.searchsorted(sorted_t, np.arange(stats.templates.size))
        rank_in_template = np.arange(rows.size) - starts[sorted_t]
        removed[rows[order[rank_in_template < per_template[sorted_t]]]] = True
    kept_cls = cls[~removed]
    after = float(_ratio(np.count_nonzero(kept_cls == "yes"), np.count_nonzero(kept_cls == "no")))
    emptied = np.zeros(0, dtype=np.int64)
    if removed.any():
        gone = np.bincount(conv[removed], minlength=int(conv.max()) + 1)
        if pairs_per_conversation is None:
            have = np.bincount(conv, minlength=gone.size)
        else:
            have = np.asarray(pairs_per_conversation, dtype=np.int64)[: gone.size]
        emptied = np.flatnonzero((gone > 0) & (gone >= have)).astype(np.int64)
    return Rebalance(
        removed=removed,
        removed_conversation=conv[removed],
        removed_turn=turns[removed],
        emptied=emptied,
        yes_ratio_before=stats.yes_ratio,
        yes_ratio_after=after,
        feasible=bool(feasible),
        removed_class=side if removed.any() else None,
        templates=stats.templates,
        removed_per_template=per_template,
    )
