"""Answer classes, yes/no questions and yes-ratio rebalancing (mmcurate.curate.answers)."""

from __future__ import annotations

import numpy as np
import pytest

from mmcurate.curate import answers
from mmcurate.curate.answers import classify_answer, n_to_remove, question_is_yes_no, rebalance_yes_no
from mmcurate.curate.conversations import conversation_text, qa_pairs, strip_image_tokens


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Yes", "yes"),
        ("yes.", "yes"),
        ("Yes, there is a dog on the left side of the picture.", "yes"),
        ("YEAH", "yes"),
        ("Yep", "yes"),
        ('"Yes"', "yes"),
        ("**Yes**", "yes"),
        ("No", "no"),
        ("no.", "no"),
        ("No, there is no dog in the image.", "no"),
        ("Nope", "no"),
        ("No dogs are visible.", "no"),
        ("No one", "short"),  # a person answer, not a negation
        ("No one is sitting on the bench today.", "long"),
        ("None", "short"),
        ("True", "short"),
        ("Yesterday", "short"),  # the first *word* decides, not a prefix
        ("Noon", "short"),
        ("Nothing is on the table in this picture.", "long"),
        ("B", "option"),
        ("B.", "option"),
        ("(b)", "option"),
        ("(B) red", "option"),
        ("B) red", "option"),
        ("B. red", "option"),
        ("b)", "option"),
        ("Option B", "option"),
        ("option (c)", "option"),
        ("Answer: C", "option"),
        ("The answer is D.", "option"),
        ("A dog", "short"),  # an article, not a letter
        ("A", "option"),
        ("a dog running on the beach next to the ocean", "long"),
        ("I", "short"),  # beyond A-H: a pronoun
        ("3", "number"),
        ("3.5", "number"),
        ("-2", "number"),
        ("1,024", "number"),
        ("50%", "number"),
        ("1/2", "number"),
        ("three", "number"),
        ("Three.", "number"),
        ("twenty-one", "number"),
        ("3 dogs", "short"),
        ("red", "short"),
        ("a red double decker bus", "long"),
        ("a red double bus", "short"),
        ("", "short"),
        ("The man is holding a frisbee in his right hand.", "long"),
    ],
)
def test_classify_answer(text, expected):
    assert classify_answer(text) == expected


def test_classify_answers_matches_scalar():
    texts = ["Yes", "no", "B", "3", "red", "Yes", "a long answer with many words"]
    got = answers.classify_answers(texts)
    assert got.tolist() == [classify_answer(t) for t in texts]


@pytest.mark.parametrize(
    "question, expected",
    [
        ("Is there a dog in the image?", True),
        ("<image>\nAre the people happy?", True),
        ("Does the man wear a hat?\nAnswer the question using a single word or phrase.", True),
        ("Can you see any cars?", True),
        ("Was the photo taken at night?", True),
        ("Isn't the sky blue?", True),
        ("Question: Has the train arrived?", True),
        ("Is it day or night?", False),  # an alternative question
        ("Is the man holding a bat or a ball?", False),
        ("What is the man holding?", False),
        ("How many dogs are there?", False),
        ("Describe the image.", False),
        ("Island life: what do you see?", False),  # "Is" as a prefix of another word
        ("", False),
    ],
)
def test_question_is_yes_no(question, expected):
    assert question_is_yes_no(question) is expected


def test_conversation_helpers():
    conv = [
        ("human", "<image>\nIs there a dog?"),
        ("gpt", "Yes"),
        ("human", "What colour is it?"),
        ("gpt", " Brown "),
        {"from": "human", "value": "Dangling question"},
    ]
    pairs = qa_pairs(conv)
    assert [(p.question, p.answer, p.answer_turn) for p in pairs] == [
        ("Is there a dog?", "Yes", 1),
        ("What colour is it?", "Brown", 3),
    ]
    assert qa_pairs([("gpt", "hello"), ("human", "q")]) == []
    assert strip_image_tokens("Q?\n<image>") == "Q?"
    assert conversation_text(conv[:2]) == "Is there a dog?\nYes"
    as_structs = [{"role": "human", "text": "Q?"}, {"role": "gpt", "text": "A"}]  # the reader's turns column
    assert [tuple(p) for p in qa_pairs(as_structs)] == [("Q?", "A", 1)]


# ----------------------------------------------------------------------------------------------
# Rebalancing
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_yes, n_no", [(80, 20), (700, 300), (55, 45), (1, 1), (30, 70), (523, 11), (3, 1000)])
@pytest.mark.parametrize("target, tol", [(0.5, 0.02), (0.5, 0.0), (0.4, 0.05)])
def test_n_to_remove_is_minimal(n_yes, n_no, target, tol):
    side, k = n_to_remove(n_yes, n_no, target, tol)

    def inside(y, n):
        return target - tol - 1e-12 <= y / (y + n) <= target + tol + 1e-12

    if side is None:
        assert inside(n_yes, n_no)
        return
    y, n = (n_yes - k, n_no) if side == "yes" else (n_yes, n_no - k)
    y1, n1 = (y + 1, n) if side == "yes" else (y, n + 1)  # one removal fewer is outside, on the far side
    assert not inside(y1, n1)
    assert (y1 / (y1 + n1) > target) == (side == "yes")
    if not inside(y, n):  # the band is narrower than one step here: k just crosses it
        assert (y / (y + n) < target) == (side == "yes")
        assert min(n_yes, n_no) < 5


def test_n_to_remove_infeasible_and_empty():
    assert n_to_remove(10, 0) == ("yes", -1)
    assert n_to_remove(0, 0) == (None, 0)
    assert n_to_remove(50, 50) == (None, 0)


def _synthetic(seed=0, n_conv=2000):
    """Conversations of 1-4 pairs; three templates with yes shares 0.9, 0.7 and 0.5, plus non-yes/no rows."""
    rng = np.random.default_rng(seed)
    conv, turn, cls, tmpl = [], [], [], []
    share = [0.9, 0.7, 0.5]
    for c in range(n_conv):
        for p in range(rng.integers(1, 5)):
            t = int(rng.integers(0, 4))
            conv.append(c)
            turn.append(2 * p + 1)
            tmpl.append(t)
            cls.append("short" if t == 3 else ("yes" if rng.random() < share[t] else "no"))
    return np.array(conv), np.array(turn), np.array(cls), np.array(tmpl)


def test_rebalance_lands_in_band_minimally_and_proportionally():
    conv, turn, cls, tmpl = _synthetic()
    before = answers.yes_no_stats(cls, tmpl)
    assert before.yes_ratio > 0.6
    r = rebalance_yes_no(conv, turn, cls, tmpl, target=0.5, tolerance=0.02, seed=3)
    assert r.feasible and r.removed_class == "yes"
    assert abs(r.yes_ratio_after - 0.52) < 1e-3  # lands on the near edge of the band
    _, k = n_to_remove(before.n_yes, before.n_no, 0.5, 0.02)
    assert r.removed.sum() == k
    assert set(cls[r.removed]) == {"yes"}
    # in proportion to each template's yes count: every template keeps about the same fraction
    kept_frac = 1 - r.removed_per_template[:3] / before.template_yes[:3]
    assert np.ptp(kept_frac) < 0.01
    assert r.removed_per_template[3] == 0
    assert np.array_equal(np.bincount(tmpl[r.removed], minlength=4), r.removed_per_template)
    # pairs: conversation and answer turn of the removed rows
    assert np.array_equal(r.removed_conversation, conv[r.removed])
    assert np.array_equal(r.removed_question_turn, turn[r.removed] - 1)


def test_rebalance_deterministic_and_seeded():
    conv, turn, cls, tmpl = _synthetic(1)
    a = rebalance_yes_no(conv, turn, cls, tmpl, seed=5)
    b = rebalance_yes_no(conv, turn, cls, tmpl, seed=5)
    c = rebalance_yes_no(conv, turn, cls, tmpl, seed=6)
    assert np.array_equal(a.removed, b.removed)
    assert not np.array_equal(a.removed, c.removed)
    assert a.removed.sum() == c.removed.sum()


def test_rebalance_prefers_multi_pair_conversations_and_reports_emptied():
    # 6 yes in single-pair conversations, 6 yes in one 6-pair conversation, 4 no in single-pair conversations.
    conv = np.array([0, 1, 2, 3, 4, 5] + [6] * 6 + [7, 8, 9, 10])
    turn = np.array([1] * 6 + [1, 3, 5, 7, 9, 11] + [1] * 4)
    cls = np.array(["yes"] * 12 + ["no"] * 4)
    r = rebalance_yes_no(conv, turn, cls, target=0.5, tolerance=0.0)
    assert r.removed.sum() == 8
    assert set(r.removed_conversation.tolist()) >= {6}  # the 6-pair conversation goes first
    assert np.count_nonzero(r.removed_conversation == 6) == 6
    assert r.emptied.tolist() == sorted(set(r.removed_conversation.tolist()))  # 6 lost all, and 2 singles
    assert len(r.emptied) == 3
    assert r.yes_ratio_after == 0.5


def test_rebalance_no_side_and_noop_and_infeasible():
    conv = np.arange(10)
    turn = np.ones(10, dtype=int)
    r = rebalance_yes_no(conv, turn, ["yes"] * 2 + ["no"] * 8, target=0.5, tolerance=0.0)
    assert r.removed_class == "no" and r.removed.sum() == 6 and r.yes_ratio_after == 0.5
    r = rebalance_yes_no(conv, turn, ["yes"] * 5 + ["no"] * 5)
    assert not r.removed.any() and r.removed_class is None and r.feasible
    r = rebalance_yes_no(conv, turn, ["yes"] * 10)
    assert not r.removed.any() and not r.feasible


def test_rebalance_pairs_per_conversation():
    # only the yes/no rows given; conversation 0 has 3 pairs in total, so it is not emptied
    r = rebalance_yes_no([0, 1], [1, 1], ["yes", "no"], target=0.0, tolerance=0.0, pairs_per_conversation=[3, 1])
    assert r.removed.tolist() == [True, False]
    assert r.emptied.size == 0


def test_rebalance_speed_100k():
    import time

    rng = np.random.default_rng(0)
    n = 300_000
    conv = np.repeat(np.arange(100_000), 3)
    turn = np.tile([1, 3, 5], 100_000)
    cls = np.where(rng.random(n) < 0.7, "yes", "no")
    tmpl = rng.integers(0, 500, n)
    t0 = time.perf_counter()
    r = rebalance_yes_no(conv, turn, cls, tmpl)
    assert time.perf_counter() - t0 < 5
    assert abs(r.yes_ratio_after - 0.52) < 1e-3
