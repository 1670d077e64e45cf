"""Question skeletons: which questions come from one template, how collapsed a data set's questions are, and a
cap per template.

Generated instruction data often asks one question with the object swapped ("Is there a dog in the image?",
"Is there a cat in the image?"). :func:`skeleton` maps such questions to one string by masking what varies:

1. ``<image>`` placeholders go, the text is lowercased and whitespace collapsed.
2. Quoted text ("...", “...”, '...' not inside a word) becomes ``{text}``.
3. Tokens: words (with an inner apostrophe), numbers (with inner ``.`` or ``,``), single punctuation marks.
4. A number becomes ``{num}``, a colour word (:data:`COLORS`) ``{color}``; a word in :data:`KEEP_WORDS`
   (function words, question words, auxiliaries, pronouns, prepositions, spatial words and the vocabulary of
   instruction templates: image, describe, answer, single, phrase, ...) stays; any other word is taken to be
   content (a noun, an adjective, a content verb) and becomes ``{obj}``. No part-of-speech tagger: the keep
   list is the heuristic, and it errs towards masking, so that templates merge rather than split.
5. A run of adjacent masks becomes one slot, named by its kind when all of it is one kind, else ``{obj}``
   ("a red double decker bus" and "a car" are both "a {obj}").

So "What color is the car?" and "What color is the fire truck?" are both "what color is the {obj}?".
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from mmcurate.curate.conversations import strip_image_tokens

COLORS = frozenset(
    "red orange yellow green blue purple violet pink brown black white gray grey silver gold golden beige tan "
    "maroon navy teal turquoise cyan magenta crimson lavender cream ivory olive khaki blond blonde".split()
)
KEEP_WORDS = frozenset(
    # articles, determiners, quantifiers
    "a an the this that these those some any each every all both either neither no none another other "
    "such much many more most few fewer less least several one ones single "
    # pronouns
    "i me my mine you your yours he him his she her hers it its we us our they them their theirs "
    "there here someone something anyone anything everyone everything nobody nothing "
    # question words
    "what which who whom whose when where why how "
    # auxiliaries and copulas
    "is are am was were be been being do does did done have has had having can could will would shall "
    "should may might must isn't aren't wasn't weren't don't doesn't didn't can't couldn't won't wouldn't "
    "hasn't haven't shouldn't it's there's that's what's "
    # prepositions, conjunctions, adverbs of degree
    "in on at of to for from with without by about above below under over behind between among near next "
    "beside besides inside outside into onto through across along around against toward towards up down "
    "off out than as like and or but nor so if because while then also too very not just only "
    "either whether same different "
    # spatial words
    "left right top bottom middle center centre front back side foreground background corner upper lower "
    "far close closest nearest "
    # the vocabulary of instruction templates
    "image images picture pictures photo photos photograph photographs scene scenes figure frame view "
    "shown show shows showing depicted visible see seen look looks looking appear appears seem seems "
    "describe description detail details detailed explain explanation provide give tell write identify "
    "answer answers question questions using use word words phrase phrases sentence sentences brief briefly "
    "short concise concisely caption summarize summary option options choice choices letter given following "
    "select choose correct best based please directly happening doing located kind type sort number color "
    "colour name called bounding box boxes coordinate coordinates region describes refer refers "
    # common verbs of questions, so that "what is the man holding" and "... wearing" stay apart
    "say says said read reads written wear wears wearing hold holds holding sit sits sitting stand stands "
    "standing eat eats eating play plays playing make makes made used going happen happens contain contains "
    "mean means think feel reason purpose might".split()
)

_QUOTED = re.compile(r"\"[^\"\n]*\"|\u201c[^\u201d\n]*\u201d|(?<!\w)'[^'\n]+'(?!\w)")
_TOKEN = re.compile(r"\{text\}|[a-z]+(?:['\u2019][a-z]+)?|\d+(?:[.,]\d+)*|[^\sa-z\d]")
_SPACE_BEFORE = re.compile(r" (?=[?.,!:;)\]])")
_SPACE_AFTER = re.compile(r"(?<=[(\[]) ")


def _kind(token: str) -> str | None:
    """The mask kind of a token, or None when it stays."""
    if token == "{text}":
        return "text"
    if token[0].isdigit():
        return "num"
    if not token[0].isalpha():
        return None
    if token in COLORS:
        return "color"
    return None if token.replace("\u2019", "'") in KEEP_WORDS else "obj"


def skeleton(question: str) -> str:
    """The question's template string (rules in the module docstring)."""
    text = " ".join(strip_image_tokens(question).lower().split())
    text = _QUOTED.sub(" {text} ", text)
    out: list[str] = []
    run: set[str] = set()
    for tok in _TOKEN.findall(text):
        kind = _kind(tok)
        if kind is not None:
            run.add(kind)
            continue
        if run:
            out.append("{" + (run.pop() if len(run) == 1 else "obj") + "}")
            run = set()
        out.append(tok)
    if run:
        out.append("{" + (run.pop() if len(run) == 1 else "obj") + "}")
    return _SPACE_AFTER.sub("", _SPACE_BEFORE.sub("", " ".join(out)))


def template_ids(questions: Iterable[str]) -> tuple[np.ndarray, list[str]]:
    """``(ids, skeletons)``: each question's template id, an index into ``skeletons`` (the distinct skeletons
    in sorted order, so ids do not depend on the order of the questions). Equal questions are masked once."""
    cache: dict[str, str] = {}
    sk = [cache.get(q) or cache.setdefault(q, skeleton(q)) for q in questions]
    if not sk:
        return np.zeros(0, dtype=np.int64), []
    names, ids = np.unique(np.asarray(sk, dtype=str), return_inverse=True)
    return ids.reshape(-1).astype(np.int64), names.tolist()


@dataclass
class TemplateStats:
    """How varied a set of questions is.

    - ``distinct_skeletons``: number of templates; ``top10_share``: share of the questions in the 10 most used
      (near 1: template collapse); ``top``: those templates with their counts.
    - ``distinct_2``: distinct word bigrams / all word bigrams over the questions (lower: more repetitive).
    - ``compression_ratio``: zlib-compressed size / raw size of the questions joined by newlines (lower: more
      repetitive; zlib sees repeats within 32 KB, which is enough for templates repeated throughout)."""

    n: int
    distinct_skeletons: int
    top10_share: float
    distinct_2: float
    compression_ratio: float
    top: list[tuple[str, int]]


_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def template_stats(questions: Iterable[str]) -> TemplateStats:
    """:class:`TemplateStats` of the questions (``<image>`` placeholders removed first)."""
    qs = [strip_image_tokens(q) for q in questions]
    ids, names = template_ids(qs)
    counts = np.bincount(ids, minlength=len(names)) if len(names) else np.zeros(0, dtype=np.int64)
    order = np.lexsort((np.arange(counts.size), -counts))[:10]
    top = [(names[i], int(counts[i])) for i in order]
    bigrams: Counter[tuple[str, str]] = Counter()
    for q in qs:
        words = _WORD.findall(q.lower())
        bigrams.update(zip(words, words[1:]))
    total = sum(bigrams.values())
    raw = "\n".join(qs).encode("utf-8")
    return TemplateStats(
        n=len(qs),
        distinct_skeletons=len(names),
        top10_share=float(counts[order].sum() / len(qs)) if qs else 0.0,
        distinct_2=len(bigrams) / total if total else 0.0,
        compression_ratio=len(zlib.compress(raw, 9)) / len(raw) if raw else 0.0,
        top=top,
    )


def cap_per_template(skeleton_ids, max_per_template: int, seed: int = 0, priority=None) -> np.ndarray:
    """Keep mask that keeps at most ``max_per_template`` questions of each template id. Which ones: the lowest
    ``priority`` (e.g. a hash of the sample key, so the choice does not depend on the order or the sharding),
    else a seeded random order; deterministic either way."""
    if max_per_template < 0:
        raise ValueError(f"max_per_template must be >= 0, got {max_per_template}")
    ids = np.asarray(skeleton_ids).reshape(-1)
    n = ids.size
    if priority is None:
        prio = np.random.default_rng(seed).permutation(n)
    else:
        prio = np.asarray(priority).reshape(-1)
        if prio.size != n:
            raise ValueError(f"priority must have {n} values, got {prio.size}")
    _, group = np.unique(ids, return_inverse=True)
    group = group.reshape(-1)
    order = np.lexsort((np.arange(n), prio, group))  # by template, then priority, then position
    sorted_group = group[order]
    first = np.searchsorted(sorted_group, sorted_group, side="left")
    keep = np.zeros(n, dtype=bool)
    keep[order[np.arange(n) - first < max_per_template]] = True
    return keep
