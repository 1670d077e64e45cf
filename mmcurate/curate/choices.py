"""Multiple-choice questions: parse the options and the correct one, measure the correct-letter distribution,
and reorder the options with the answer's letter remapped.

Parsing (:func:`parse_multiple_choice`). An option is a *label* followed by its text. Label styles: ``(A)``
("paren"), ``A)`` ("close"), ``A.`` ("dot", needs whitespace after it) and ``A:`` ("colon", likewise); label
kinds: capital letters, lowercase letters, or numbers ("1." / "1)": only one option per line, because inline
numbers are too often not options). A label must start a line or follow whitespace or one of ``,;:``. The
options are the longest run of labels of one style and kind counting up from A / a / 1 (at least two); among
equally long runs the last one wins (the stem may quote a single label). Layout: "lines" when every label
starts a line (an option's text is the rest of its line), else "inline" (a text runs to the next label; the
last one to the end of its line or its sentence, and separators ``,`` ``;`` "or" between options are not
text).

The answer names the correct option as a label ("B", "(b)", "B.", "B)", "Option B", "Answer: B", "The answer
is B"), as a label with the option's text ("B. blue", "(B) blue"), or as the option's text alone ("blue", case
and end punctuation ignored). A letter answer may use the other case than the labels. An answer that names
no option leaves ``correct`` None (still a multiple-choice question).

Reordering (:func:`reorder_options`) only moves option *texts* between the label slots, so everything else in
the question (labels, separators, line breaks, the stem, instructions after the options) stays byte for byte;
the answer's label is rewritten in its own case and bracket style, and a text answer stays as it is.
Options that refer to the others ("None of the above", "All of these", "Both of them") never move under
shuffling: what they mean depends on their place.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

POLICIES = ("shuffle", "negative_last", "shuffle_negative_last")

_LABEL_CHARS = {"upper": "[A-Z]", "lower": "[a-z]", "digit": "[1-9]"}
_STYLE = {
    "paren": (r"\(", r"\)"),
    "close": ("", r"\)"),
    "dot": ("", r"\.(?=[ \t])"),
    "colon": ("", r":(?=[ \t])"),
}
_BEFORE = r"(?:^|(?<=[\s,;:]))"  # start of text, whitespace or a list separator
_PATTERNS = {
    (style, kind): re.compile(_BEFORE + f"{pre}({chars}){post}", re.MULTILINE)
    for style, (pre, post) in _STYLE.items()
    for kind, chars in _LABEL_CHARS.items()
}
_TRAILING_SEP = re.compile(r"(?:[\s,;]|\bor\b|\band\b)+$", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.?!](?=\s+[A-Z])")
_WRAPPING = " \t\r\n\"'`*_"
_ANSWER_PREFIX = re.compile(
    r"(?:answer\s*:|(?:the\s+)?(?:correct\s+|right\s+)?(?:answer|option|choice)\s+is\s*:?|option|choice)\s*",
    re.IGNORECASE,
)
_NEGATIVE = re.compile(
    r"(?:none|no|nothing|neither|nobody|no one|none of (?:the above|these|them|the options|the choices)"
    r"|neither of (?:them|these|the above)|not (?:present|visible|shown|applicable|sure|in the image)"
    r"|there is no(?:ne| such \w+)?|cannot be determined|can't tell|unknown|not enough information)",
    re.IGNORECASE,
)
_REFERENTIAL = re.compile(r"\b(?:of the above|of these|of them|of the options|of the choices)\b", re.IGNORECASE)


@dataclass
class MultipleChoice:
    """A parsed multiple-choice question. ``labels[i]`` / ``texts[i]`` are option i's label as written ("B",
    "b", "2") and text; ``spans[i]`` is where the text sits in ``question``. ``correct`` is the correct label
    (None when the answer names no option) and ``answer_span`` where the label sits in ``answer`` (None when
    the answer is the option's text)."""

    question: str
    answer: str
    labels: list[str]
    texts: list[str]
    spans: list[tuple[int, int]]
    style: str  # "paren", "close", "dot", "colon"
    kind: str  # "upper", "lower", "digit"
    layout: str  # "lines", "inline"
    correct_index: int | None
    answer_span: tuple[int, int] | None

    @property
    def options(self) -> dict[str, str]:
        return dict(zip(self.labels, self.texts))

    @property
    def correct(self) -> str | None:
        return None if self.correct_index is None else self.labels[self.correct_index]

    @property
    def n_options(self) -> int:
        return len(self.labels)


class Reordered(NamedTuple):
    """The rewritten question and answer; ``order[slot]`` is the original index of the option now in ``slot``
    and ``correct_index`` the slot of the correct option."""

    question: str
    answer: str
    order: list[int]
    correct_index: int | None


def _label_index(label: str) -> int:
    return int(label) - 1 if label.isdigit() else ord(label.lower()) - ord("a")


def _index_label(i: int, kind: str) -> str:
    return str(i + 1) if kind == "digit" else chr((ord("A") if kind == "upper" else ord("a")) + i)


def _at_line_start(text: str, pos: int) -> bool:
    line_start = text.rfind("\n", 0, pos) + 1
    return text[line_start:pos].strip(" \t-*>") == ""


def _chains(matches: list[re.Match]) -> list[list[re.Match]]:
    """Runs of labels counting up from the first label (A / a / 1), each label the first of its index after
    the previous one."""
    chains = []
    for i, m in enumerate(matches):
        if _label_index(m.group(1)) != 0:
            continue
        chain = [m]
        for m2 in matches[i + 1 :]:
            if _label_index(m2.group(1)) == len(chain):
                chain.append(m2)
        chains.append(chain)
    return chains


def _normalise(text: str) -> str:
    return " ".join(text.strip(_WRAPPING + ".,;:!?").lower().split())


def find_options(question: str):
    """The best option run in a question: ``(style, kind, layout, labels, spans)`` or None (see the module
    docstring for the rules)."""
    best = None
    best_key: tuple[int, int] = (0, -1)
    for (style, kind), rx in _PATTERNS.items():
        matches = list(rx.finditer(question))
        if len(matches) < 2:
            continue
        for chain in _chains(matches):
            if len(chain) < 2:
                continue
            lines = all(_at_line_start(question, m.start()) for m in chain)
            if kind == "digit" and not lines:
                continue
            # one label per line in "lines" layout: a second label on a line is text, and ends the run
            if lines and len({question.count("\n", 0, m.start()) for m in chain}) < len(chain):
                continue
            key = (len(chain), chain[0].start())
            if key > best_key:
                best, best_key = (style, kind, "lines" if lines else "inline", chain), key
    if best is None:
        return None
    style, kind, layout, chain = best
    spans = []
    for j, m in enumerate(chain):
        start = m.end()
        line_end = question.find("\n", start)
        line_end = len(question) if line_end < 0 else line_end
        end = min(chain[j + 1].start(), line_end) if j + 1 < len(chain) else line_end
        if layout == "inline" and j + 1 == len(chain):
            s = _SENTENCE_END.search(question, start, end)
            end = s.start() if s else end
        seg = question[start:end]
        if layout == "inline":
            seg = _TRAILING_SEP.sub("", seg)
        lead = len(seg) - len(seg.lstrip())
        seg = seg.strip()
        if layout == "inline" and j + 1 == len(chain) and seg.endswith("."):
            seg = seg[:-1]
        if not seg:
            return None  # an empty option: not a list of options
        spans.append((start + lead, start + lead + len(seg)))
    return style, kind, layout, [m.group(1) for m in chain], spans


def _resolve_answer(answer: str, labels: list[str], texts: list[str], kind: str):
    """``(correct_index, answer_span)`` of the option the answer names, or ``(None, None)``."""
    norm_texts = [_normalise(t) for t in texts]
    whole = _normalise(answer)
    if whole and norm_texts.count(whole) == 1:
        return norm_texts.index(whole), None
    offset = len(answer) - len(answer.lstrip(_WRAPPING))
    m = _ANSWER_PREFIX.match(answer, offset)
    offset = m.end() if m else offset
    chars = "[1-9]" if kind == "digit" else "[A-Za-z]"
    lm = re.compile(r"\(\s*(" + chars + r")\s*\)|(" + chars + r")([.):]?)(?=\s|$)").match(answer, offset)
    if not lm:
        return None, None
    group = 1 if lm.group(1) else 2
    index = _label_index(lm.group(group))
    if index >= len(labels):
        return None, None
    rest = _normalise(answer[lm.end() :])
    delimited = group == 1 or lm.group(3) != ""
    # "B", "B. blue", "B blue", or "(B) because ..." name B; "A dog" and "B. red" (red being another option) don't
    if rest and not rest.startswith(norm_texts[index]) and (not delimited or rest in norm_texts):
        return None, None
    return index, lm.span(group)


def parse_multiple_choice(question: str, answer: str = "") -> MultipleChoice | None:
    """The options and the correct one, or None when the question lists no options (module docstring)."""
    found = find_options(question)
    if found is None:
        return None
    style, kind, layout, labels, spans = found
    texts = [question[a:b] for a, b in spans]
    index, span = _resolve_answer(answer, labels, texts, kind)
    return MultipleChoice(question, answer, labels, texts, spans, style, kind, layout, index, span)


def is_negative_option(text: str) -> bool:
    """Whether an option says that nothing applies: none / no / neither / nothing / not present / none of the
    above / cannot be determined (the whole text, case and end punctuation ignored)."""
    return _NEGATIVE.fullmatch(_normalise(text)) is not None


def is_referential_option(text: str) -> bool:
    """Whether an option refers to the other options ("None of the above", "All of these", "Both of them")."""
    return _REFERENTIAL.search(text) is not None


def _check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")


def _layout_slots(mc: MultipleChoice, policy: str):
    """``(fixed, negatives_at, free, movable)``: option indices that keep their slot, where the negative
    options go, the free slots, and the options that fill the free slots."""
    n = mc.n_options
    shuffle = policy.startswith("shuffle")
    fixed = {i for i in range(n) if shuffle and is_referential_option(mc.texts[i])}
    negatives = []
    if policy.endswith("negative_last"):
        negatives = [i for i in range(n) if i not in fixed and is_negative_option(mc.texts[i])]
    open_slots = [s for s in range(n) if s not in fixed]
    negatives_at = open_slots[len(open_slots) - len(negatives) :] if negatives else []
    free = open_slots[: len(open_slots) - len(negatives)]
    movable = [i for i in range(n) if i not in fixed and i not in negatives]
    return fixed, dict(zip(negatives, negatives_at)), free, movable


def free_correct_slots(mc: MultipleChoice, policy: str = "shuffle") -> list[int]:
    """The slots where the correct option may land under ``policy`` (one slot when it is pinned)."""
    _check_policy(policy)
    if mc.correct_index is None:
        return []
    fixed, negatives, free, _ = _layout_slots(mc, policy)
    c = mc.correct_index
    if c in fixed:
        return [c]
    if c in negatives:
        return [negatives[c]]
    if policy.startswith("shuffle"):
        return list(free)
    return [reorder_options(mc, policy).order.index(c)]


def reorder_options(
    mc: MultipleChoice, policy: str = "shuffle", rng: np.random.Generator | None = None, correct_slot=None
) -> Reordered:
    """The question and answer with the options reordered by ``policy``:

    - ``"shuffle"``: a random order (``rng``; a fresh seeded one when None), options that refer to the others
      kept in place; the correct option goes to ``correct_slot`` when given and free (see
      :func:`free_correct_slots`), which is how :func:`reorder_dataset` balances the letters.
    - ``"negative_last"``: the negative options (:func:`is_negative_option`) moved to the end, the others in
      their order.
    - ``"shuffle_negative_last"``: both.

    The answer's label is remapped to the correct option's new slot, so it names the same option text."""
    _check_policy(policy)
    rng = np.random.default_rng(0) if rng is None else rng
    n = mc.n_options
    fixed, negatives_at, free, movable = _layout_slots(mc, policy)
    order = [-1] * n
    for i in fixed:
        order[i] = i
    for i, s in negatives_at.items():
        order[s] = i
    if policy.startswith("shuffle"):
        movable = [movable[j] for j in rng.permutation(len(movable))]
        c = mc.correct_index
        if correct_slot is not None and c in movable and correct_slot in free:
            at = free.index(correct_slot)
            j = movable.index(c)
            movable[at], movable[j] = movable[j], movable[at]
    for s, i in zip(free, movable):
        order[s] = i
    new_slot = {i: s for s, i in enumerate(order)}
    pieces, last = [], 0
    for s, (a, b) in enumerate(mc.spans):
        pieces += [mc.question[last:a], mc.texts[order[s]]]
        last = b
    question = "".join(pieces) + mc.question[last:]
    answer = mc.answer
    correct = None if mc.correct_index is None else new_slot[mc.correct_index]
    if correct is not None and mc.answer_span is not None:
        a, b = mc.answer_span
        old = mc.answer[a:b]
        kind = "digit" if old.isdigit() else "upper" if old.isupper() else "lower"
        answer = mc.answer[:a] + _index_label(correct, kind) + mc.answer[b:]
    return Reordered(question, answer, order, correct)


def reorder_dataset(items: Sequence[MultipleChoice], policy: str = "shuffle", seed: int = 0) -> list[Reordered]:
    """:func:`reorder_options` over a data set with the correct letters balanced. Items are pooled by their
    option count and the slots their correct option may take (:func:`free_correct_slots`); visited in a seeded
    random order, each item's correct option goes to the least used slot of its pool so far (ties at random).
    So among the items with k options the correct letter is uniform over the k letters (what
    :func:`letter_distribution` with ``n_options`` tests), as far as pinned options allow. Items without a
    correct option are reordered without a target. Deterministic for a seed."""
    _check_policy(policy)
    rng = np.random.default_rng(seed)
    pools: dict[tuple[int, tuple[int, ...]], dict[int, int]] = {}
    out: list[Reordered] = [Reordered("", "", [], None)] * len(items)
    for i in rng.permutation(len(items)):
        mc = items[i]
        slots = free_correct_slots(mc, policy) if policy.startswith("shuffle") else []
        target = None
        if slots:
            used = pools.setdefault((mc.n_options, tuple(slots)), dict.fromkeys(slots, 0))
            least = min(used.values())
            best = [s for s in slots if used[s] == least]
            target = best[int(rng.integers(len(best)))]
        r = reorder_options(mc, policy, rng, correct_slot=target)
        if target is not None and r.correct_index == target:
            used[target] += 1
        out[i] = r
    return out


# ----------------------------------------------------------------------------------------------
# The correct-letter distribution
# ----------------------------------------------------------------------------------------------


@dataclass
class LetterDistribution:
    """Correct-letter counts (slot 0 = A), the counts uniform choice would give, and Pearson's chi-square test
    of the one against the other (a small p-value: the letters are not balanced)."""

    counts: np.ndarray  # int64 per slot
    expected: np.ndarray  # float64 per slot
    chi2: float
    p_value: float
    dof: int

    @property
    def shares(self) -> np.ndarray:
        return self.counts / max(1, int(self.counts.sum()))


def _slot_of(letter) -> int:
    if isinstance(letter, (int, np.integer)):
        return int(letter)
    s = str(letter).strip().strip("().:").strip()
    if len(s) != 1 and not s.isdigit():
        raise ValueError(f"not an option label: {letter!r}")
    return _label_index(s)


def letter_distribution(letters, n_options=None) -> LetterDistribution:
    """Counts of the correct labels (letters "A" / "b" / "(C)", numbers "1", or slot ints) and a chi-square
    test against uniform. With ``n_options`` (per item) an item of k options is uniform over its own first k
    slots, so a data set mixing 2- and 4-option items is judged fairly; without it, every item is taken to
    have as many options as the highest label seen."""
    from scipy.stats import chisquare

    slots = np.asarray([_slot_of(x) for x in letters], dtype=np.int64)
    if n_options is None:
        k = np.full(slots.size, int(slots.max()) + 1 if slots.size else 0, dtype=np.int64)
    else:
        k = np.asarray(n_options, dtype=np.int64).reshape(-1)
        if k.shape != slots.shape:
            raise ValueError(f"n_options must have shape {slots.shape}, got {k.shape}")
        if np.any(slots >= k) or np.any(slots < 0):
            raise ValueError("a correct label is beyond its item's options")
    width = int(k.max()) if k.size else 0
    counts = np.bincount(slots, minlength=width).astype(np.int64)
    # expected[j] = sum over items with more than j options of 1/k
    per_k = np.bincount(k, minlength=width + 1).astype(np.float64)
    weights = np.divide(per_k, np.arange(width + 1), out=np.zeros(width + 1), where=np.arange(width + 1) > 0)
    expected = np.cumsum(weights[::-1])[::-1][1 : width + 1] if width else np.zeros(0)
    used = expected > 0
    if used.sum() < 2:
        return LetterDistribution(counts, expected, 0.0, 1.0, 0)
    chi2, p = chisquare(counts[used], expected[used])
    return LetterDistribution(counts, expected, float(chi2), float(p), int(used.sum()) - 1)
