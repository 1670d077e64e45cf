"""curate/negatives.py: the noun rule, the vocabulary, POPE's three candidate orders and the phrasing."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from mmcurate.curate import negatives as neg
from mmcurate.curate.templates import skeleton


def test_noun_rule_takes_the_word_after_a_determiner_skipping_modifiers():
    assert neg.object_nouns("Is there a big red bus next to the dogs?") == {"bus", "dog"}
    assert neg.object_nouns("What is the color of the car in the image?") == {"car"}
    assert neg.object_nouns("A man riding a horse on the beach.") == {"man", "horse", "beach"}
    assert neg.object_nouns("Two cats and some boxes of glasses") == {"cat", "box", "glass"}
    assert neg.object_nouns("What is on the left side of the picture?") == set()  # stop words
    assert neg.object_nouns("") == set() and neg.object_nouns(None) == set()


@pytest.mark.parametrize(
    ("word", "expected"),
    [("dogs", "dog"), ("ponies", "pony"), ("buses", "bus"), ("benches", "bench"), ("bus", "bus"), ("glass", "glass")],
)
def test_singular(word, expected):
    assert neg.singular(word) == expected


def test_vocabulary_keeps_min_df_most_frequent_first():
    df: Counter = Counter()
    for texts in (["a dog and a cat"], ["the dog"], ["a dog on a bench"], ["a cat"], ["a kite"]):
        df.update(neg.sample_nouns(texts))
    vocab = neg.build_vocabulary(df, min_df=2)
    assert vocab.words == ["dog", "cat"] and vocab.df.tolist() == [3, 2]
    assert neg.build_vocabulary(df, min_df=1, max_size=3).words == ["dog", "cat", "bench"]  # ties by word
    # one sample naming a noun twice counts once
    assert neg.sample_nouns(["a dog", "the dog", "two dogs"]) == {"dog"}


def _vocab(words):
    return neg.Vocabulary(list(words), np.arange(len(words), 0, -1).astype(np.int64))


def test_popularity_order_skips_the_samples_own_words():
    vocab = _vocab(["person", "car", "dog", "tree"])
    excluded = np.array([True, False, False, False])
    order = neg.candidate_order("popularity", vocab, excluded, [], neg.sample_rng("k", 0))
    assert order.tolist() == [1, 2, 3]


def test_co_occurrence_order_puts_objects_seen_with_the_samples_objects_first():
    vocab = _vocab(["person", "car", "dog", "tree", "kite"])
    samples = [[0, 4], [0, 4], [0, 3], [1, 2]]  # kite appears with person most, then tree
    cooc = neg.cooccurrence_lists(neg.cooccurrence_counts(samples), 5)
    excluded = np.array([True, False, False, False, False])  # the sample shows a person
    order = neg.candidate_order("co_occurrence", vocab, excluded, [0], neg.sample_rng("k", 0), cooc)
    assert order.tolist()[:2] == [4, 3]
    assert order.tolist()[2:] == [1, 2]  # no co-occurrence: by popularity
    assert neg.cooccurrence_counts([[2, 1, 1]]) == Counter({(1, 2): 1})


def test_random_order_is_seeded_by_key():
    vocab = _vocab([f"w{i}" for i in range(30)])
    excluded = np.zeros(30, bool)
    a = neg.candidate_order("random", vocab, excluded, [], neg.sample_rng("key1", 0))
    b = neg.candidate_order("random", vocab, excluded, [], neg.sample_rng("key1", 0))
    c = neg.candidate_order("random", vocab, excluded, [], neg.sample_rng("key2", 0))
    d = neg.candidate_order("random", vocab, excluded, [], neg.sample_rng("key1", 1))
    assert a.tolist() == b.tolist() and sorted(a.tolist()) == list(range(30))
    assert a.tolist() != c.tolist() and a.tolist() != d.tolist()
    with pytest.raises(ValueError, match="strategy"):
        neg.candidate_order("adversarial", vocab, excluded, [], neg.sample_rng("k", 0))


def test_questions_come_from_at_least_ten_templates_and_answers_say_no():
    assert len(neg.QUESTION_TEMPLATES) >= 10
    used, skeletons = Counter(), set()
    for i in range(400):
        q, a, t = neg.negative_pair("apple", neg.sample_rng(f"k{i}", 0))
        assert "an apple" in q and a == "No"
        used[t] += 1
        skeletons.add(skeleton(q))
    assert len(used) == len(neg.QUESTION_TEMPLATES) and len(skeletons) >= 10
    assert max(used.values()) / 400 < 0.2
    q, a, _ = neg.negative_pair("dog", neg.sample_rng("k", 0), open_answers=True)
    assert "dog" in a and a.startswith(("There is no", "No,"))
    assert neg.prompt("umbrella") == "a photo of an umbrella."


def test_check_templates():
    neg.check_templates(["Is there {a_object}?"])
    for bad in ([], ["no placeholder"], ["{object}?", "{object}?"], "Is there {object}?"):
        with pytest.raises(ValueError):
            neg.check_templates(bad)
