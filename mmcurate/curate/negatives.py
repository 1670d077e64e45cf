"""POPE-style negative questions for instruction data (the negative_synthesis stage): the data set's own object
vocabulary, the choice of absent objects (POPE's random / popular / adversarial settings) and the phrasing. Pure:
no model, no Arrow; the stage supplies the CLIP scores.

The noun rule (``object_nouns``). A text is lower-cased and split into words (``[a-z]+`` with inner hyphens or
apostrophes). A word that follows a *determiner* (a, an, the, of, some, any, every, each, another, no, many, several,
two ... ten) is a candidate; words in ``MODIFIERS`` (colours, sizes, numbers, common adjectives) are skipped, at most
two, so "a big red bus" gives "bus". The candidate is normalised to its singular (``singular``: -ies -> -y; -ses,
-xes, -ches, -shes lose -es; a final -s goes unless the word ends in ss/us/is or has 3 letters or fewer) and dropped
when it is in ``STOP_WORDS`` (words that follow articles in questions without naming an object: image, picture,
colour, number, left, side, ...) or shorter than 3 letters. The vocabulary is every such noun found in at least
``min_df`` samples (document frequency: a sample counts once), the ``max_size`` most frequent kept (ties by word).

Choosing absent objects for one sample (``candidate_order``): never a vocabulary word that appears anywhere in the
sample's own text (``text_words``); then
- ``random``: a uniformly random order (POPE random);
- ``popularity``: the most frequent objects of the data set first (POPE popular);
- ``co_occurrence``: the objects that most often appear in the same sample as the sample's own objects first (the sum
  of their co-occurrence counts), then by popularity (POPE adversarial); without co-occurring objects, popularity.
The stage walks that order and keeps the first candidates whose CLIP image–text score is below its threshold.

Phrasing: a question from ``QUESTION_TEMPLATES`` (12 of them, so the new questions do not become one template),
the answer "No" or, with open answers, one of ``OPEN_ANSWER_TEMPLATES`` (LRV-style: "There is no dog in the
image."). Every choice is drawn from ``sample_rng(key, seed)``: the same key and seed, the same pairs, wherever the
sample sits.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

STRATEGIES = ("random", "popularity", "co_occurrence")

DETERMINERS = frozenset(
    "a an the of some any every each another no many several two three four five six seven eight nine ten".split()
)
MODIFIERS = frozenset(
    """
    red orange yellow green blue purple pink brown black white gray grey silver gold golden beige dark light bright
    big small large little tiny huge giant tall short long wide narrow thick thin round square old young new
    one two three four five six seven eight nine ten single double few couple lot bunch pair group number
    wooden metal plastic glass stone brick open closed empty full clean dirty wet dry hot cold other same different
    main first second third last only very most more such certain whole entire
    """.split()
)
STOP_WORDS = frozenset(
    """
    image images picture pictures photo photograph photos scene view shot frame camera
    color colour colors colours shape size type kind sort style part piece side sides top bottom middle center
    centre front back left right background foreground corner edge area place spot way time day year lot bit
    thing things something anything nothing everything someone anyone answer question word words letter text
    option options choice following above below this that these those what which who whom whose where when why
    how there here it its his her their our your my they them he she we you i me us him
    is are was were be been being do does did have has had can could will would should may might must
    and or but not with without in on at to for from by as into onto over under between behind near
    presence absence amount total count picture's image's
    """.split()
)

_WORD = re.compile(r"[a-z]+(?:[-'][a-z]+)*")

QUESTION_TEMPLATES = (
    "Is there {a_object} in the image?",
    "Is there {a_object} in this picture?",
    "Can you see {a_object} in the image?",
    "Does the image contain {a_object}?",
    "Is {a_object} visible in this photo?",
    "Do you see {a_object} anywhere in the picture?",
    "Does this photo show {a_object}?",
    "Can {a_object} be found in the image?",
    "Is {a_object} present in the scene?",
    "Does the picture include {a_object}?",
    "Is there {a_object} anywhere in the image?",
    "Are we able to spot {a_object} in this image?",
)
CLOSED_ANSWER = "No"
OPEN_ANSWER_TEMPLATES = (
    "There is no {object} in the image.",
    "No, there is no {object} in the image.",
    "No, the image does not contain {a_object}.",
    "No, I cannot see {a_object} in this picture.",
)
#: The text CLIP embeds for an object (the absent check): the usual zero-shot prompt.
PROMPT_TEMPLATE = "a photo of {a_object}."


def words(text: str | None) -> list[str]:
    """The lower-cased words of a text."""
    return _WORD.findall(text.lower()) if text else []


def singular(word: str) -> str:
    """The noun rule's singular (module docstring)."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ses", "xes", "ches", "shes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def object_nouns(text: str | None) -> set[str]:
    """The objects a text names by the noun rule (module docstring)."""
    ws = words(text)
    out = set()
    for i, w in enumerate(ws):
        if w not in DETERMINERS:
            continue
        j = i + 1
        while j < len(ws) and j <= i + 2 and ws[j] in MODIFIERS:
            j += 1
        if j >= len(ws) or ws[j] in DETERMINERS or ws[j] in MODIFIERS:
            continue
        n = singular(ws[j])
        if len(n) >= 3 and n not in STOP_WORDS and ws[j] not in STOP_WORDS and "'" not in n:
            out.add(n)
    return out


def sample_nouns(texts: Iterable[str | None]) -> set[str]:
    """The objects of a sample: the union over its texts (questions, answers, caption)."""
    out: set[str] = set()
    for t in texts:
        out |= object_nouns(t)
    return out


def text_words(texts: Iterable[str | None]) -> set[str]:
    """Every word of a sample's texts, as written and singular: a candidate among them is not absent."""
    out: set[str] = set()
    for t in texts:
        for w in words(t):
            out.add(w)
            out.add(singular(w))
    return out


@dataclass
class Vocabulary:
    """The data set's objects, most frequent first (ties by word), with their document frequencies."""

    words: list[str]
    df: np.ndarray  # int64, one per word

    def index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}


def build_vocabulary(df: Counter, min_df: int, max_size: int | None = None) -> Vocabulary:
    """The vocabulary from document frequencies (a Counter of noun -> samples naming it)."""
    kept = sorted(((-c, w) for w, c in df.items() if c >= min_df))
    if max_size is not None:
        kept = kept[:max_size]
    return Vocabulary([w for _, w in kept], np.array([-c for c, _ in kept], np.int64))


def cooccurrence_counts(samples: Iterable[Iterable[int]]) -> Counter:
    """(i, j) -> samples holding both vocabulary words i < j, from each sample's vocabulary indices."""
    out: Counter = Counter()
    for idx in samples:
        s = sorted(set(idx))
        for a in range(len(s)):
            for b in range(a + 1, len(s)):
                out[(s[a], s[b])] += 1
    return out


def cooccurrence_lists(pairs: Counter, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per vocabulary word, (neighbour indices, counts): the symmetric co-occurrence rows, sorted by neighbour."""
    rows: list[dict[int, int]] = [{} for _ in range(size)]
    for (i, j), c in pairs.items():
        rows[i][j] = rows[i].get(j, 0) + c
        rows[j][i] = rows[j].get(i, 0) + c
    out = []
    for r in rows:
        k = np.array(sorted(r), np.int64)
        out.append((k, np.array([r[x] for x in k.tolist()], np.int64)))
    return out


def sample_rng(key: str, seed: int) -> np.random.Generator:
    """A generator from the sample's key and the seed (blake2b): no sharding or order changes it."""
    h = hashlib.blake2b(f"{int(seed)}\x00{key}".encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(h, "little"))


def popularity_order(vocab: Vocabulary) -> np.ndarray:
    """Vocabulary indices by document frequency, most frequent first (the vocabulary's own order)."""
    return np.arange(len(vocab.words), dtype=np.int64)


def candidate_order(
    strategy: str,
    vocab: Vocabulary,
    excluded: np.ndarray,
    own: Iterable[int],
    rng: np.random.Generator,
    cooc: list | None = None,
) -> np.ndarray:
    """The vocabulary indices to try for one sample, in order (module docstring). excluded: bool per word (the words
    of the sample's text); own: the sample's objects (vocabulary indices), for co_occurrence."""
    n = len(vocab.words)
    if strategy == "random":
        order = rng.permutation(n)
    elif strategy == "popularity":
        order = popularity_order(vocab)
    elif strategy == "co_occurrence":
        if cooc is None:
            raise ValueError("the co_occurrence strategy needs the co-occurrence lists")
        score = np.zeros(n, np.int64)
        for i in own:
            k, c = cooc[i]
            score[k] += c
        # by co-occurrence, then popularity (index order): lexsort's last key is the primary one
        order = np.lexsort((np.arange(n), -score))
    else:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    return order[~excluded[order]]


def with_article(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def fill(template: str, noun: str) -> str:
    return template.replace("{a_object}", with_article(noun)).replace("{object}", noun)


def prompt(noun: str) -> str:
    """What CLIP embeds for an object."""
    return fill(PROMPT_TEMPLATE, noun)


def negative_pair(
    noun: str, rng: np.random.Generator, templates=QUESTION_TEMPLATES, open_answers: bool = False
) -> tuple[str, str, int]:
    """(question, answer, template index) of a negative question about ``noun``."""
    t = int(rng.integers(len(templates)))
    question = fill(templates[t], noun)
    if open_answers:
        answer = fill(OPEN_ANSWER_TEMPLATES[int(rng.integers(len(OPEN_ANSWER_TEMPLATES)))], noun)
    else:
        answer = CLOSED_ANSWER
    return question, answer, t


def check_templates(templates) -> None:
    """ValueError unless templates is a non-empty list of distinct strings, each naming {object} or {a_object}."""
    if not isinstance(templates, (list, tuple)) or not templates:
        raise ValueError("templates must be a non-empty list of question templates")
    for t in templates:
        if not isinstance(t, str) or ("{object}" not in t and "{a_object}" not in t):
            raise ValueError(f"templates: {t!r} must be a string naming {{object}} or {{a_object}}")
    if len(set(templates)) != len(templates):
        raise ValueError("templates: each template once")
