"""Exact and near-duplicate conversations (mmcurate.curate.text_dedup): normalisation, shingles, MinHash,
LSH banding, grouping within image groups."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mmcurate.curate import text_dedup as td
from mmcurate.curate.hashing import mix64

U64 = np.uint64


def test_normalize_and_exact_keys():
    assert td.normalize_text("  <image>\nIs there a DOG?  ") == "is there a dog"
    assert td.normalize_text("“Yes.”") == "yes"
    assert td.normalize_text("ﬁne   day") == "fine day"  # NFKC
    a = ["Is there a dog?\nYes.", "is there a dog?  yes", "<image>\nIS THERE A DOG?\nYes", "Is there a cat?\nYes."]
    k = td.exact_keys(a)
    assert k.dtype == U64 and k[0] == k[1] == k[2] and k[0] != k[3]
    assert td.exact_keys(["Is there a dog, yes"])[0] != k[0]  # inner punctuation counts for exact duplicates


def test_exact_duplicate_groups_within_groups_and_scores():
    texts = ["Q?\nA", "q? a", "Q?\nA", "Other", "Q?\nA"]
    rep = td.exact_duplicate_groups(texts, group_ids=[0, 0, 0, 0, 1])
    assert rep.tolist() == [0, 0, 0, 3, 4]  # text 4 is in another image group: not a duplicate
    rep = td.exact_duplicate_groups(texts)
    assert rep.tolist() == [0, 0, 0, 3, 0]
    rep = td.exact_duplicate_groups(texts, scores=[0.1, 0.9, 0.5, 0, np.nan])
    assert rep.tolist() == [1, 1, 1, 3, 1]  # the best score represents; NaN is the least preferred


def _ref_words(text):
    return re.findall(r"\w+", td.normalize_text(text))


def _ref_word_hash(word: str) -> int:
    """The word hash written plainly: 8-byte little-endian blocks chained through mix64 from the length."""
    data = word.encode("utf-8")
    h = int(mix64(np.array([len(data)], dtype=U64))[0])
    for i in range(0, len(data), 8):
        block = int.from_bytes(data[i : i + 8], "little")
        h = int(mix64(np.array([h ^ block], dtype=U64))[0])
    return h


TEXTS = [
    "Is there a dog in the image?\nYes, there is a brown dog.",
    "",
    "  ...  ",
    "<image>\nWhat does the sign say?\nIt says 'STOP_NOW' in extraordinarily-long-lettering!",
    "one",
    "a b",
    "Café naïve “quoted” — 42",
]


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_word_shingles_match_reference(k):
    h, off = td.shingle_hashes(TEXTS, f"word{k}")
    assert off[0] == 0 and off[-1] == len(h) and np.all(np.diff(off) >= 0)
    for i, t in enumerate(TEXTS):
        words = [_ref_word_hash(w) for w in _ref_words(t)]
        if not words:
            expect = []
        else:
            windows = [words[j : j + k] for j in range(max(1, len(words) - k + 1))]
            expect = []
            for win in windows:
                acc = win[0]
                for j in range(1, k):
                    nxt = win[j] if j < len(win) else 0
                    acc = int(mix64(np.array([acc ^ nxt], dtype=U64))[0])
                expect.append(acc)
        assert h[off[i] : off[i + 1]].tolist() == expect, t


@pytest.mark.parametrize("k", [3, 5, 8])
def test_char_shingles_match_reference(k):
    h, off = td.shingle_hashes(TEXTS, f"char{k}")
    for i, t in enumerate(TEXTS):
        data = " ".join(_ref_words(t)).encode("utf-8")
        if not data:
            expect = []
        else:
            wins = [data[j : j + k] for j in range(max(1, len(data) - k + 1))]
            packed = np.array([int.from_bytes(w, "little") ^ k for w in wins], dtype=U64)
            expect = mix64(packed).tolist()
        assert h[off[i] : off[i + 1]].tolist() == expect, t


def test_shingle_errors():
    for bad in ["word0", "char9", "token3", "word"]:
        with pytest.raises(ValueError):
            td.shingle_hashes(["x"], bad)
    h, off = td.shingle_hashes([], "word3")
    assert h.size == 0 and off.tolist() == [0]


def test_hashes_stable_across_processes():
    code = (
        "from mmcurate.curate import text_dedup as td;"
        "h, o = td.shingle_hashes(['Is there a dog? Yes'], 'word3');"
        "print(td.minhash_signatures(h, o, 16, 3)[0].tolist(), td.exact_keys(['x'])[0])"
    )
    outs = set()
    root = Path(__file__).resolve().parents[2]
    for seed in ("1", "2"):
        env = {"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"}
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root)
        assert r.returncode == 0, r.stderr
        outs.add(r.stdout)
    assert len(outs) == 1


def _ref_minhash(hashes, offsets, num_perm, seed):
    a, b = td._perm_params(num_perm, seed)
    out = np.full((len(offsets) - 1, num_perm), 0xFFFFFFFF, dtype=np.uint32)
    for i in range(len(offsets) - 1):
        xs = [int(x) >> 32 for x in hashes[offsets[i] : offsets[i + 1]]]
        for p in range(num_perm):
            if xs:
                out[i, p] = min(((int(a[p]) * x + int(b[p])) % 2**64) >> 32 for x in xs)
    return out


def test_minhash_matches_reference():
    h, off = td.shingle_hashes(TEXTS * 3, "word2")
    got = td.minhash_signatures(h, off, 24, seed=7)
    assert got.dtype == np.uint32 and got.shape == (21, 24)
    assert np.array_equal(got, _ref_minhash(h, off, 24, 7))
    assert np.all(got[1] == 0xFFFFFFFF)  # empty text
    assert not np.array_equal(got, td.minhash_signatures(h, off, 24, seed=8))


def test_minhash_estimates_are_unbiased():
    """Sets of 200 random shingles with known Jaccard similarity: the estimate's mean error and spread match
    the binomial model sqrt(J(1-J)/num_perm)."""
    rng = np.random.default_rng(0)
    num_perm, jac = 128, [0.2, 0.5, 0.7, 0.9]
    hashes, offsets, truth = [], [0], []
    for j in jac:
        for _ in range(150):
            shared = int(round(200 * 2 * j / (1 + j)))  # |A|=|B|=200, |A&B| = 2*200*J/(1+J)
            pool = rng.integers(0, 2**63, 400 - shared, dtype=np.int64).astype(U64)
            a = np.concatenate([pool[:shared], pool[shared:200]])
            b = np.concatenate([pool[:shared], pool[200 : 400 - shared]])
            for s in (a, b):
                hashes.append(mix64(s))
                offsets.append(offsets[-1] + len(s))
            truth.append(shared / (400 - shared))
    sig = td.minhash_signatures(np.concatenate(hashes), np.array(offsets), num_perm, seed=1)
    pairs = np.arange(len(truth) * 2).reshape(-1, 2)
    est = td.estimated_jaccard(sig, pairs)
    exact = td.exact_jaccard(np.concatenate(hashes), np.array(offsets), pairs)
    assert np.allclose(exact, truth)
    err = (est - exact).reshape(len(jac), -1)
    for row, j in zip(err, jac):
        sd = np.sqrt(j * (1 - j) / num_perm)
        assert abs(row.mean()) < 4 * sd / np.sqrt(row.size), (j, row.mean())
        assert 0.7 * sd < row.std() < 1.3 * sd, (j, row.std(), sd)


def test_lsh_params_match_datasketch():
    datasketch = pytest.importorskip("datasketch")
    for t in (0.3, 0.5, 0.7, 0.8, 0.9):
        for w in ((0.5, 0.5), (0.1, 0.9)):
            lsh = datasketch.MinHashLSH(threshold=t, num_perm=128, weights=w)
            assert td.lsh_params(t, 128, *w) == (lsh.b, lsh.r)
    with pytest.raises(ValueError):
        td.lsh_params(0.0, 128)


# ----------------------------------------------------------------------------------------------
# near_duplicate_groups
# ----------------------------------------------------------------------------------------------

LONG = (
    "The image shows a man riding a red bicycle down a busy city street on a sunny afternoon, with tall "
    "buildings on both sides, a yellow taxi parked near the corner, and several people walking on the sidewalk."
)


def test_near_copies_linked_template_mates_not():
    texts = [
        "Describe the image.\n" + LONG,
        "describe the image\n" + LONG.replace("riding", "ridin").replace(" a sunny", " sunny"),  # typo, a word dropped
        "Is there a dog in the image?\nNo",
        "Is there a cat in the image?\nNo",  # the same template about another object: a different question
        "What color is the car?\nRed",
        "What color is the bus?\nRed",
        "What color is the car? Answer the question using a single word or phrase.\nRed",
        "<image>\nIs there a dog in the image?\nno.",  # a formatting copy of text 2
    ]
    r = td.near_duplicate_groups(texts, group_ids=[0] * len(texts))
    assert r.representative.tolist() == [0, 0, 2, 3, 4, 5, 6, 2]
    assert r.pairs.tolist() == [[0, 1], [2, 7]]
    assert np.all(r.similarity >= td.DEFAULT_THRESHOLD) and r.n_duplicates == 2
    # the same texts about different images are not duplicates
    r = td.near_duplicate_groups(texts, group_ids=[0, 1, 2, 3, 4, 5, 6, 7])
    assert r.n_duplicates == 0
    r = td.near_duplicate_groups(texts, group_ids=["a", "a", "b", "c", "d", "e", "f", "b"])
    assert r.representative.tolist() == [0, 0, 2, 3, 4, 5, 6, 2]


def test_representative_by_score_and_components():
    base = "Describe the image.\n" + LONG
    texts = [base, base.upper(), base + " Nice.", "Something else entirely different here"]
    r = td.near_duplicate_groups(texts, scores=[0.1, 0.9, 0.5, 1.0])
    assert r.representative.tolist() == [1, 1, 1, 3]
    r = td.near_duplicate_groups(texts)
    assert r.representative.tolist() == [0, 0, 0, 3]


def test_empty_texts_never_linked_and_verify_exact():
    texts = ["", "", "<image>", "Yes", "Yes."]
    r = td.near_duplicate_groups(texts)
    assert r.representative.tolist() == [0, 1, 2, 3, 3]
    r2 = td.near_duplicate_groups(texts, verify="exact")
    assert r2.representative.tolist() == [0, 1, 2, 3, 3] and r2.similarity.tolist() == [1.0]
    with pytest.raises(ValueError):
        td.near_duplicate_groups(texts, verify="fuzzy")
    assert td.near_duplicate_groups([]).representative.size == 0


def _family_corpus(n_families=300, seed=0):
    """Families of one long text of 80 words and copies with at most one word changed (so any two members
    differ in at most 2 words: word-3-gram Jaccard >= 0.85), two families per group."""
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(3000)]
    texts, groups, family = [], [], []
    for f in range(n_families):
        words = list(rng.choice(vocab, 80))
        for _ in range(int(rng.integers(1, 5))):
            w = list(words)
            for _ in range(int(rng.integers(0, 2))):
                w[int(rng.integers(len(w)))] = str(rng.choice(vocab))
            texts.append(" ".join(w))
            groups.append(f // 2)
            family.append(f)
    return texts, np.array(groups), np.array(family)


def test_lsh_path_matches_all_pairs_on_clear_duplicates():
    texts, groups, family = _family_corpus()
    all_pairs = td.near_duplicate_groups(texts, groups, threshold=0.7)
    lsh = td.near_duplicate_groups(texts, groups, threshold=0.7, all_pairs_max_group=0)
    assert lsh.n_candidates < all_pairs.n_candidates
    truth = {(i, j) for i in range(len(texts)) for j in range(i + 1, len(texts)) if family[i] == family[j]}
    found_all = set(map(tuple, all_pairs.pairs.tolist()))
    found_lsh = set(map(tuple, lsh.pairs.tolist()))
    assert found_all == truth
    # LSH links texts with identical signatures to the first of them only: fewer pairs, the same components
    assert found_lsh <= truth
    first_of_family = np.array([np.flatnonzero(family == f)[0] for f in family])
    assert np.array_equal(all_pairs.representative, first_of_family)
    assert np.array_equal(lsh.representative, first_of_family)


def test_partitioning_by_group_changes_nothing():
    texts, groups, _ = _family_corpus(120, seed=3)
    for max_group in (td.ALL_PAIRS_MAX_GROUP, 0):
        whole = td.near_duplicate_groups(texts, groups, all_pairs_max_group=max_group)
        rep = np.empty(len(texts), dtype=np.int64)
        for part in (groups % 3 == 0, groups % 3 == 1, groups % 3 == 2):
            idx = np.flatnonzero(part)
            r = td.near_duplicate_groups([texts[i] for i in idx], groups[idx], all_pairs_max_group=max_group)
            rep[idx] = idx[r.representative]
        assert np.array_equal(rep, whole.representative)


def test_flood_of_copies_in_one_large_group_is_linear():
    texts = ["Is there a dog in the image?\nYes"] * 20_000 + [f"Question {i} about thing {i}?\nNo" for i in range(200)]
    t0 = time.perf_counter()
    r = td.near_duplicate_groups(texts, group_ids=np.zeros(len(texts), dtype=int))
    assert time.perf_counter() - t0 < 30
    assert r.n_duplicates == 19_999 and np.all(r.representative[:20_000] == 0)
    assert r.n_candidates < 100_000  # a star on the first copy, not 2e8 pairs
