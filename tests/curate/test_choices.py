"""Multiple-choice parsing, reordering and the correct-letter distribution (mmcurate.curate.choices)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmcurate.curate.choices import (
    is_negative_option,
    is_referential_option,
    letter_distribution,
    parse_multiple_choice,
    reorder_dataset,
    reorder_options,
)

MMBENCH = (
    "<image>\nWhat is the color of the bus?\nA. red\nB. blue\nC. yellow\nD. green\n"
    "Answer with the option's letter from the given choices directly."
)


@pytest.mark.parametrize(
    "question, answer, texts, correct, layout",
    [
        (MMBENCH, "B", ["red", "blue", "yellow", "green"], "B", "lines"),
        (MMBENCH, "(B)", ["red", "blue", "yellow", "green"], "B", "lines"),
        (MMBENCH, "B. blue", ["red", "blue", "yellow", "green"], "B", "lines"),
        (MMBENCH, "blue", ["red", "blue", "yellow", "green"], "B", "lines"),
        (MMBENCH, "Blue.", ["red", "blue", "yellow", "green"], "B", "lines"),
        (MMBENCH, "Option C", ["red", "blue", "yellow", "green"], "C", "lines"),
        (MMBENCH, "The answer is D.", ["red", "blue", "yellow", "green"], "D", "lines"),
        (MMBENCH, "b", ["red", "blue", "yellow", "green"], "B", "lines"),  # the other case
        (MMBENCH, "purple", ["red", "blue", "yellow", "green"], None, "lines"),
        (MMBENCH, "E", ["red", "blue", "yellow", "green"], None, "lines"),  # beyond the options
        (MMBENCH, "B. red", ["red", "blue", "yellow", "green"], None, "lines"),  # label and text disagree
        ("Which is it?\n(a) a cat\n(b) a dog", "(b)", ["a cat", "a dog"], "b", "lines"),
        ("Which is it? (a) a cat (b) a dog (c) a bird", "(c) a bird", ["a cat", "a dog", "a bird"], "c", "inline"),
        ("What is shown? A) sky B) sea", "A", ["sky", "sea"], "A", "inline"),
        ("Pick: Options: A: red, B: blue, C: green", "C", ["red", "blue", "green"], "C", "inline"),
        ("Is it (A) day or (B) night? Answer with the letter.", "B", ["day", "night"], "B", "inline"),
        ("Which animal?\n1. cat\n2. dog\n3. cow", "3", ["cat", "dog", "cow"], "3", "lines"),
        ("Which animal?\n1) cat\n2) dog", "dog", ["cat", "dog"], "2", "lines"),
        ("- A. left\n- B. right", "A", ["left", "right"], "A", "lines"),
    ],
)
def test_parse(question, answer, texts, correct, layout):
    mc = parse_multiple_choice(question, answer)
    assert mc is not None
    assert mc.texts == texts
    assert mc.correct == correct
    assert mc.layout == layout
    assert [question[a:b] for a, b in mc.spans] == texts


@pytest.mark.parametrize(
    "question",
    [
        "Is there a dog in the image?",
        "What does the sign say?",
        "Describe plan A. It is good.",  # one label only
        "There are 1. many 2. things",  # inline numbers are not options
        "What is in the image? A) a dog",  # a single option
        "Name the objects: a) the cat and then c) the dog",  # does not count up from a
        "",
    ],
)
def test_not_multiple_choice(question):
    assert parse_multiple_choice(question, "A") is None


def test_last_run_wins_and_sentence_end_of_inline_options():
    q = "In the caption (A) means the first. Choose (A) cat (B) dog. Reply with a letter."
    mc = parse_multiple_choice(q, "B")
    assert mc.texts == ["cat", "dog"] and mc.spans[0][0] > q.index("Choose")


def test_negative_and_referential_options():
    for t in ["None", "none of the above", "No.", "Not present", "Neither", "Cannot be determined", "nothing"]:
        assert is_negative_option(t), t
    for t in ["Nobody knows the cat", "north", "a dog", "Not a cat"]:
        assert not is_negative_option(t), t
    assert is_referential_option("None of the above") and is_referential_option("All of these")
    assert not is_referential_option("a dog")


def test_shuffle_keeps_format_and_meaning():
    mc = parse_multiple_choice(MMBENCH, "B. blue")
    r = reorder_options(mc, "shuffle", np.random.default_rng(1), correct_slot=3)
    assert r.correct_index == 3
    assert r.answer == "D. blue"
    assert r.question.startswith("<image>\nWhat is the color of the bus?\nA. ")
    assert r.question.endswith("\nAnswer with the option's letter from the given choices directly.")
    back = parse_multiple_choice(r.question, r.answer)
    assert back.texts[back.correct_index] == "blue"
    assert sorted(back.texts) == sorted(mc.texts)


def test_negative_last_and_pinned_referential():
    q = "What is on the table?\n(A) None\n(B) a cup\n(C) a plate"
    r = reorder_options(parse_multiple_choice(q, "(B)"), "negative_last")
    assert r.question == "What is on the table?\n(A) a cup\n(B) a plate\n(C) None"
    assert r.answer == "(A)"
    q = "What is on the table?\nA. a cup\nB. None of the above\nC. a plate\nD. a fork"
    for seed in range(20):
        r = reorder_options(parse_multiple_choice(q, "A"), "shuffle", np.random.default_rng(seed))
        assert r.question.split("\n")[2] == "B. None of the above"  # refers to the others: stays put
    r = reorder_options(parse_multiple_choice(q, "B"), "shuffle_negative_last", np.random.default_rng(0))
    assert r.answer == "B" and r.order[1] == 1
    q = "What is on the table?\nA. nothing\nB. a cup\nC. a plate"
    for seed in range(10):
        r = reorder_options(parse_multiple_choice(q, "A"), "shuffle_negative_last", np.random.default_rng(seed))
        assert r.question.endswith("C. nothing") and r.answer == "C"


def test_bad_policy():
    with pytest.raises(ValueError, match="policy"):
        reorder_options(parse_multiple_choice(MMBENCH, "A"), "sort")


def test_reorder_dataset_balances_letters():
    rng = np.random.default_rng(0)
    items = []
    for i in range(1000):
        k = int(rng.integers(2, 6))
        opts = "\n".join(f"{chr(65 + j)}. option {i} {j}" for j in range(k))
        items.append(parse_multiple_choice(f"Question {i}?\n{opts}", "A"))  # all correct answers are A
    before = letter_distribution([mc.correct for mc in items], [mc.n_options for mc in items])
    assert before.p_value < 1e-10
    out = reorder_dataset(items, "shuffle", seed=1)
    assert out == reorder_dataset(items, "shuffle", seed=1)
    after = letter_distribution([r.correct_index for r in out], [mc.n_options for mc in items])
    assert after.p_value > 0.99 and np.abs(after.counts - after.expected).max() <= 2
    for k in range(2, 6):  # uniform within each option count, not only overall
        slots = [r.correct_index for r, mc in zip(out, items) if mc.n_options == k]
        assert np.ptp(np.bincount(slots, minlength=k)) <= 1
    for mc, r in zip(items, out):
        back = parse_multiple_choice(r.question, r.answer)
        assert back.texts[back.correct_index] == mc.texts[mc.correct_index]


def test_letter_distribution():
    d = letter_distribution(["A", "B", "C", "D"] * 25)
    assert d.counts.tolist() == [25] * 4 and d.chi2 == 0 and d.p_value == pytest.approx(1.0) and d.dof == 3
    d = letter_distribution(["A"] * 70 + ["B"] * 10 + ["C"] * 10 + ["D"] * 10)
    assert d.p_value < 1e-10
    # mixed option counts: 2-option items are uniform over A/B only
    d = letter_distribution(["A", "B", "A", "B", "C", "D"], n_options=[2, 2, 4, 4, 4, 4])
    assert d.expected.tolist() == [2.0, 2.0, 1.0, 1.0]
    assert letter_distribution(["(b)", "c", 0, "1"]).counts.tolist() == [2, 1, 1]
    with pytest.raises(ValueError):
        letter_distribution(["C"], n_options=[2])


# ----------------------------------------------------------------------------------------------
# Property: whatever the format and the order, the answer names the same option text
# ----------------------------------------------------------------------------------------------

WORDS = ["red", "blue", "cat", "dog", "a tall tree", "two", "the left one", "none", "nothing", "maybe yes"]
LABEL_FORMATS = {"paren": "({})", "close": "{})", "dot": "{}.", "colon": "{}:"}


@st.composite
def mc_items(draw):
    k = draw(st.integers(2, 6))
    texts = draw(st.lists(st.sampled_from(WORDS), min_size=k, max_size=k, unique=True))
    style = draw(st.sampled_from(sorted(LABEL_FORMATS)))
    kind = draw(st.sampled_from(["upper", "lower", "digit"]))
    layout = "lines" if kind == "digit" else draw(st.sampled_from(["lines", "inline"]))
    labels = [str(j + 1) if kind == "digit" else chr((65 if kind == "upper" else 97) + j) for j in range(k)]
    opts = [f"{LABEL_FORMATS[style].format(lab)} {t}" for lab, t in zip(labels, texts)]
    sep = draw(st.sampled_from([", ", "; ", " "]))
    body = "\n".join(opts) if layout == "lines" else sep.join(opts)
    question = f"<image>\nWhat is it?\n{body}\nAnswer with the letter."
    c = draw(st.integers(0, k - 1))
    answer = draw(
        st.sampled_from([labels[c], f"({labels[c]})", f"{labels[c]}. {texts[c]}", texts[c], f"Answer: {labels[c]}"])
    )
    return question, answer, texts, c, labels


@settings(max_examples=300, deadline=None)
@given(
    item=mc_items(),
    policy=st.sampled_from(["shuffle", "negative_last", "shuffle_negative_last"]),
    seed=st.integers(0, 10**6),
)
def test_property_reorder_keeps_answer_meaning(item, policy, seed):
    question, answer, texts, c, labels = item
    mc = parse_multiple_choice(question, answer)
    assert mc is not None and mc.texts == texts and mc.correct_index == c and mc.labels == labels
    rng = np.random.default_rng(seed)
    slot = int(rng.integers(len(texts)))
    r = reorder_options(mc, policy, rng, correct_slot=slot)
    back = parse_multiple_choice(r.question, r.answer)
    assert back is not None
    assert back.texts[back.correct_index] == texts[c]  # the answer points at the same option text
    assert sorted(back.texts) == sorted(texts) and back.labels == labels
    assert [back.texts[s] for s in range(len(texts))] == [texts[i] for i in r.order]
    # outside the option texts, the question is unchanged (labels, separators, line breaks)
    strip = [mc.question[: mc.spans[0][0]]] + [
        mc.question[mc.spans[i][1] : mc.spans[i + 1][0]] for i in range(len(texts) - 1)
    ]
    strip_back = [r.question[: back.spans[0][0]]] + [
        r.question[back.spans[i][1] : back.spans[i + 1][0]] for i in range(len(texts) - 1)
    ]
    assert strip == strip_back and r.question.endswith("\nAnswer with the letter.")
    if policy.endswith("negative_last"):
        neg = [is_negative_option(t) for t in back.texts]
        assert neg == sorted(neg)  # negatives after all the others
