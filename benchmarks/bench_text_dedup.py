"""Benchmark: near-duplicate conversations (mmcurate.curate.text_dedup) on synthetic LLaVA-style data.

One deterministic corpus of --n conversations in image groups of 1-8 (short VQA turns from templates, detailed
descriptions, reasoning answers, multi-turn dialogues), about 12% of them altered copies of another
conversation of their group, labelled by kind:

- near-copies (duplicates): ``format`` (case, spacing, punctuation, ``<image>`` moved), ``typo`` (1-3 letters
  changed), ``edit`` (1-3 words replaced, dropped or inserted in a conversation of 40+ words);
- hard positives, reported apart and counted neither way in precision/recall: ``paraphrase`` (questions
  reworded, same answers), ``turn_drop`` (one pair of 4+ dropped);
- hard negatives (not duplicates): ``variant`` (the same templates about other objects with other answers:
  different questions about the same image), ``partial`` (a multi-pair conversation sharing half its pairs).

Parts:
1. ``sweep``: every within-group pair, labelled, with its exact and MinHash-estimated (128 values) Jaccard
   similarity for word 2/3/5-gram and byte 5/7-gram shingles: precision / recall / F1 of "estimate >= t" for
   t = 0.30 ... 0.95, recall per positive kind and false-positive rate per negative kind; the best threshold
   per shingle (max F1, ties to the higher threshold), the best shingle, and ``rule``: the library default,
   the best F1 among the shingle kinds with at most 1.5x the fewest shingles (text_dedup.DEFAULT_*).
2. ``engines``: the MinHash engine on the whole corpus at the chosen shingle and threshold: our numpy
   signatures vs rensa's (``RMinHash.digest_matrix_from_flat_token_hashes`` on the same shingle hashes) vs
   datasketch's (``MinHash`` + ``MinHashLSH``, on --datasketch-n conversations, extrapolated), seconds per
   step (a peer that is not installed is recorded as such: rensa is not in the requirements), and the
   agreement of each engine's pairs with the pairs whose exact Jaccard is >= t (within groups; recall counts
   an exact pair as found when its texts end up in one component), and with the labels.
3. ``candidates``: all pairs within small groups (the default) vs LSH banding alone: pairs found and recall of
   the exact pairs.

Usage: python benchmarks/bench_text_dedup.py [--n 100000] [--datasketch-n 20000] [--seed 0]
       [--out benchmarks/results/text_dedup.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmcurate.curate import text_dedup as td  # noqa: E402
from mmcurate.curate.conversations import conversation_text  # noqa: E402
from mmcurate.curate.dedup import connected_components  # noqa: E402

NEAR_COPY = ("format", "typo", "edit")
HARD_POSITIVE = ("paraphrase", "turn_drop")
HARD_NEGATIVE = ("variant", "partial")
SHINGLES = ("word2", "word3", "word5", "char5", "char7")
THRESHOLDS = [round(0.30 + 0.05 * i, 2) for i in range(14)]

OBJECTS = (
    "dog cat car bus truck bicycle man woman child boy girl horse cow sheep bird kite frisbee umbrella bench "
    "table chair laptop phone book clock vase bottle cup pizza cake sandwich banana apple orange train boat "
    "plane skateboard surfboard ball tree building sign fence bed couch television window door lamp bag hat "
    "shirt jacket tie elephant giraffe zebra bear toilet sink oven refrigerator street beach field road"
).split()
COLORS = "red blue green yellow white black brown gray orange pink purple silver".split()
VERBS = "sitting standing running walking eating playing sleeping holding riding looking parked flying".split()
PLACES = "on the grass|on the street|near the window|in the kitchen|on the beach|in the park|on a table".split("|")
ADJS = "large small old new wooden metal bright dark busy empty colorful crowded quiet modern".split()
SUFFIX = "\nAnswer the question using a single word or phrase."

# (question template, answer kind); paraphrases of each question for the "paraphrase" copies
VQA = [
    ("What color is the {o}?", "color", "What is the color of the {o}?"),
    ("Is there a {o} in the image?", "yesno", "Does the image contain a {o}?"),
    ("How many {o}s are there?", "count", "What is the number of {o}s in the picture?"),
    ("What is the {o} doing?", "verb", "What activity is the {o} engaged in?"),
    ("Where is the {o}?", "place", "Where is the {o} located?"),
    ("Is the {o} {c}?", "yesno", "Would you say the {o} is {c}?"),
    ("What is next to the {o}?", "object", "Which object is beside the {o}?"),
]


class _Rng:
    """The few draws the generator needs, on random.Random (numpy's per-scalar draws are 20x slower here)."""

    def __init__(self, seed: int):
        self.r = random.Random(seed)

    def integers(self, lo, hi=None):
        return self.r.randrange(lo) if hi is None else self.r.randrange(lo, hi)

    def random(self):
        return self.r.random()

    def geometric(self, p):
        k = 1
        while self.r.random() > p:
            k += 1
        return k

    def choice(self, xs, size=None, replace=True, p=None):
        if size is not None:
            return self.r.sample(list(xs), size)
        if p is not None:
            return self.r.choices(list(xs), weights=list(p))[0]
        return self.r.choice(list(xs))


class Gen:
    def __init__(self, seed: int):
        self.rng = _Rng(seed)

    def pick(self, xs):
        return xs[self.rng.r.randrange(len(xs))]

    def sentence(self, objs):
        r = self.rng
        o1, o2 = self.pick(objs), self.pick(objs)
        forms = [
            f"A {self.pick(ADJS)} {self.pick(COLORS)} {o1} is {self.pick(VERBS)} {self.pick(PLACES)}.",
            f"Next to the {o1} there is a {self.pick(ADJS)} {o2}.",
            f"The {o1} appears to be {self.pick(VERBS)} while the {o2} stays {self.pick(PLACES)}.",
            f"In the background, {int(r.integers(2, 9))} {o2}s can be seen {self.pick(PLACES)}.",
            f"The scene looks {self.pick(ADJS)}, with a {self.pick(COLORS)} {o1} in the foreground.",
            f"This suggests that the {o1} belongs to someone nearby, perhaps {self.pick(VERBS)} {self.pick(PLACES)}.",
        ]
        return self.pick(forms)

    def paragraph(self, objs, lo, hi):
        words, out = int(self.rng.integers(lo, hi)), []
        while sum(len(s.split()) for s in out) < words:
            out.append(self.sentence(objs))
        return " ".join(out)

    def answer(self, kind):
        if kind == "color":
            return self.pick(COLORS).capitalize()
        if kind == "yesno":
            return self.pick(["Yes", "No"])
        if kind == "count":
            return str(self.rng.integers(1, 9))
        if kind == "verb":
            return self.pick(VERBS).capitalize()
        if kind == "place":
            return self.pick(PLACES).capitalize() + "."
        return f"A {self.pick(OBJECTS)}"

    def vqa_pair(self, objs, para=False, suffix=False):
        q, kind, pq = self.pick(VQA)
        o, c = self.pick(objs), self.pick(COLORS)
        question = (pq if para else q).format(o=o, c=c)
        answer = self.answer(kind)
        return [("human", question + (SUFFIX if suffix else "")), ("gpt", answer)], (q, kind, pq, o, c)

    def conversation(self, objs):
        """(turns, kind, specs): specs keep each VQA pair's template for paraphrases and variants."""
        r = self.rng
        u = r.random()
        if u < 0.55:  # multi-turn short VQA (LLaVA-1.5's VQAv2 / GQA style)
            turns, specs = [], []
            for p in range(int(r.integers(1, 7))):
                t, spec = self.vqa_pair(objs, suffix=p == 0)
                turns += t
                specs.append((spec, t[1][1]))
            return turns, "vqa", specs
        if u < 0.75:
            q = self.pick(["Describe the image in detail.", "What do you see in this picture?", "Write a caption."])
            return [("human", q), ("gpt", self.paragraph(objs, 40, 130))], "detail", None
        if u < 0.88:
            o = self.pick(objs)
            q = f"Why might the {o} be {self.pick(VERBS)} {self.pick(PLACES)}?"
            return [("human", q), ("gpt", self.paragraph(objs, 30, 80))], "reasoning", None
        turns = []
        for _ in range(int(r.integers(3, 6))):
            o = self.pick(objs)
            q = self.pick(
                [f"What is the {o} doing?", f"Can you tell me about the {o}?", f"Is the {o} {self.pick(ADJS)}?"]
            )
            turns += [("human", q), ("gpt", self.paragraph(objs, 8, 30))]
        return turns, "dialogue", None


def _typo(g: Gen, text: str) -> str:
    chars = list(text)
    letters = [i for i, ch in enumerate(chars) if ch.isalpha()]
    for _ in range(int(g.rng.integers(1, 4))):
        i = g.pick(letters)
        chars[i] = g.pick("abcdefghijklmnopqrstuvwxyz")
    return "".join(chars)


def alter(g: Gen, turns, conv_kind, specs, objs, kind):
    """An altered copy of a conversation, or None when the kind does not apply to it."""
    r = g.rng
    n_words = sum(len(t.split()) for _, t in turns)
    if kind == "format":
        out = []
        for i, (role, t) in enumerate(turns):
            t = t.lower() if r.random() < 0.5 else t.upper() if r.random() < 0.1 else t
            t = t.replace(" ", "  ", 1).replace(",", " ,") if r.random() < 0.5 else t
            t = t.rstrip(".?") if r.random() < 0.5 else t + " "
            if i == 0:
                t = ("<image>\n" + t) if r.random() < 0.5 else (t + "\n<image>")
            out.append((role, t))
        return out
    if kind == "typo":
        long_turns = [i for i, (role, t) in enumerate(turns) if role == "gpt" and len(t.split()) >= 8]
        if not long_turns:
            return None
        i = g.pick(long_turns)
        out = list(turns)
        out[i] = (out[i][0], _typo(g, out[i][1]))
        return out
    if kind == "edit":
        if n_words < 40:
            return None
        out = list(turns)
        editable = [j for j, (role, t) in enumerate(out) if len(t.split()) > 3]
        for _ in range(int(r.integers(1, 4))):
            i = g.pick(editable)
            words = out[i][1].split()
            j = int(r.integers(len(words)))
            op = r.random()
            if op < 0.4:
                words[j] = g.pick(ADJS)
            elif op < 0.7:
                del words[j]
            else:
                words.insert(j, g.pick(ADJS))
            out[i] = (out[i][0], " ".join(words))
        return out
    if kind == "paraphrase":
        if specs is None:
            return None
        out = []
        for p, ((_, _, pq, o, c), answer) in enumerate(specs):
            out += [("human", pq.format(o=o, c=c) + (SUFFIX if p == 0 else "")), ("gpt", answer)]
        return out
    if kind == "turn_drop":
        if len(turns) < 8:
            return None
        p = int(r.integers(len(turns) // 2))
        return turns[: 2 * p] + turns[2 * p + 2 :]
    if kind == "variant":  # the same templates about other objects, other answers
        if specs is None or len(specs) > 3:
            return None
        out = []
        for p, ((q, k, _, o, c), answer) in enumerate(specs):
            o2 = g.pick([x for x in OBJECTS if x != o])
            new_answer = g.answer(k)
            if new_answer == answer:
                new_answer = {"Yes": "No", "No": "Yes"}.get(answer, answer + "s")
            out += [("human", q.format(o=o2, c=c) + (SUFFIX if p == 0 else "")), ("gpt", new_answer)]
        return out
    if kind == "partial":
        if specs is None or len(specs) < 4:
            return None
        keep = len(turns) // 4 * 2
        extra = []
        for _ in range(len(specs) - keep // 2):
            extra += g.vqa_pair(objs)[0]
        return turns[:keep] + extra
    raise ValueError(kind)


def make_corpus(n: int, seed: int = 0):
    """texts, group ids, root (the conversation a copy derives from, itself for originals), kind per text."""
    g = Gen(seed)
    texts, groups, root, kinds, derived = [], [], [], [], []
    kinds_all = NEAR_COPY + HARD_POSITIVE + HARD_NEGATIVE
    weights = np.array([3, 3, 2, 1, 1, 1.5, 1])
    weights /= weights.sum()
    gid = 0
    while len(texts) < n:
        size = min(int(g.rng.geometric(0.35)), 8)
        objs = g.rng.choice(OBJECTS, 6, replace=False)
        made = []
        for _ in range(size):
            if len(texts) >= n:
                break
            if made and g.rng.random() < 0.35:
                src = g.pick(made)
                kind = str(g.rng.choice(kinds_all, p=weights))
                turns = alter(g, src[0], src[1], src[2], objs, kind)
                if turns is None:
                    continue
                texts.append(conversation_text(turns))
                groups.append(gid)
                root.append(src[3])
                kinds.append(kind)
                derived.append(src[3])
                # copies of copies keep the root; variants and partials start families of their own
                if kind in HARD_NEGATIVE:
                    root[-1] = len(texts) - 1
                    made.append((turns, src[1], None, len(texts) - 1))
                continue
            turns, conv_kind, specs = g.conversation(objs)
            texts.append(conversation_text(turns))
            groups.append(gid)
            root.append(len(texts) - 1)
            kinds.append("original")
            derived.append(-1)
            made.append((turns, conv_kind, specs, len(texts) - 1))
        gid += 1
    return texts, np.array(groups), np.array(root), np.array(kinds), np.array(derived)


def within_group_pairs(groups: np.ndarray) -> np.ndarray:
    """Every pair (i < j) of conversations in one group: the benchmark's ground set."""
    order = np.argsort(groups, kind="stable")
    pairs = [np.zeros((0, 2), dtype=np.int64)]
    g = groups[order]
    for d in range(1, 8):  # groups have at most 8 conversations
        same = np.flatnonzero(g[d:] == g[:-d])
        pairs.append(np.stack([order[same], order[same + d]], axis=1))
    return np.unique(np.sort(np.concatenate(pairs), axis=1), axis=0)


def label_pairs(pairs, root, kinds, derived):
    """Per pair: label 'pos' (one family: the original and near-copies), 'hard' (one family, with a
    paraphrase or turn_drop in it: counted neither way), 'neg'; the kind of the copy for family pairs, and
    for negatives 'variant' / 'partial' (one made from the other's family) or 'other'."""
    a, b = pairs[:, 0], pairs[:, 1]
    same = root[a] == root[b]
    hard = same & (np.isin(kinds[a], HARD_POSITIVE) | np.isin(kinds[b], HARD_POSITIVE))
    label = np.where(same, np.where(hard, "hard", "pos"), "neg")
    hard_kind = np.where(np.isin(kinds[a], HARD_POSITIVE), kinds[a], kinds[b])
    copy_kind = np.where(same, np.where(hard, hard_kind, np.where(kinds[a] == "original", kinds[b], kinds[a])), "")
    made_a = np.isin(kinds[a], HARD_NEGATIVE) & (derived[a] == root[b])
    made_b = np.isin(kinds[b], HARD_NEGATIVE) & (derived[b] == root[a])
    neg_kind = np.where(made_a, kinds[a], np.where(made_b, kinds[b], np.where(same, "", "other")))
    return label, copy_kind, neg_kind


def pr(pred, label):
    """Precision / recall / F1 of predicted pairs against the labels ('hard' pairs count neither way)."""
    tp = int(np.count_nonzero(pred & (label == "pos")))
    fp = int(np.count_nonzero(pred & (label == "neg")))
    fn = int(np.count_nonzero(~pred & (label == "pos")))
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": round(p, 5), "recall": round(r, 5), "f1": round(f1, 5), "tp": tp, "fp": fp, "fn": fn}


def sweep(texts, pairs, label, copy_kind, neg_kind, num_perm, seed):
    out = {}
    for sh in SHINGLES:
        t0 = time.perf_counter()
        h, o = td.shingle_hashes(texts, sh)
        sig = td.minhash_signatures(h, o, num_perm, seed)
        seconds = time.perf_counter() - t0
        est = td.estimated_jaccard(sig, pairs)
        exact = td.exact_jaccard(h, o, pairs)
        rows = []
        for t in THRESHOLDS:
            pred = est >= t - 1e-12
            row = {"threshold": t, **pr(pred, label)}
            row["recall_by_kind"] = {k: round(float(pred[copy_kind == k].mean()), 4) for k in NEAR_COPY + HARD_POSITIVE}
            row["fpr_by_negative"] = {
                k: round(float(pred[neg_kind == k].mean()), 5) for k in HARD_NEGATIVE + ("other",)
            }
            row["exact_jaccard"] = pr(exact >= t - 1e-12, label)
            rows.append(row)
        best = max(rows, key=lambda r: (r["f1"], r["threshold"]))
        err = est - exact
        out[sh] = {
            "shingles_and_signatures_s": round(seconds, 2),
            "shingles": int(len(h)),
            "best_threshold": best["threshold"],
            "best_f1": best["f1"],
            "estimate_error": {
                "mean": round(float(err.mean()), 5),
                "std": round(float(err.std()), 5),
                "p99_abs": round(float(np.quantile(np.abs(err), 0.99)), 4),
            },
            "rows": rows,
        }
        print(
            f"  {sh}: {seconds:.1f} s, best t={best['threshold']} F1={best['f1']} P={best['precision']} "
            f"R={best['recall']}",
            flush=True,
        )
    return out


def agreement(found, truth, n):
    """Found pairs against the pairs whose exact Jaccard is >= the threshold: precision over the found pairs,
    recall as the share of exact pairs whose two texts end up in one component (texts with identical
    signatures in a large group are linked to the first of them only, so comparing pair sets would count
    pairs the components already join as missed)."""
    fs, ts = set(map(tuple, found.tolist())), set(map(tuple, truth.tolist()))
    comp = connected_components(n, found)
    joined = int(np.count_nonzero(comp[truth[:, 0]] == comp[truth[:, 1]])) if len(truth) else 0
    return {
        "pairs": len(fs),
        "exact_pairs": len(ts),
        "precision_vs_exact": round(len(fs & ts) / max(1, len(fs)), 5),
        "recall_vs_exact": round(joined / max(1, len(ts)), 5),
    }


def verified_pairs(sig, groups, threshold, num_perm, times, all_pairs_max_group=td.ALL_PAIRS_MAX_GROUP):
    bands, rows = td.lsh_params(threshold, num_perm)
    t0 = time.perf_counter()
    cand = td.candidate_pairs(sig, groups, bands, rows, all_pairs_max_group)
    found = cand[td.estimated_jaccard(sig, cand) >= threshold - 1e-12]
    times["candidates_verify_s"] = time.perf_counter() - t0
    times["candidates"] = int(len(cand))
    return found


def engine_rensa(h, o, num_perm, seed, times):
    import rensa

    t0 = time.perf_counter()
    m = rensa.RMinHash.digest_matrix_from_flat_token_hashes(h, o.astype(np.uint64), num_perm=num_perm, seed=seed)
    times["signatures_native_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    sig = np.asarray(m.to_rows(), dtype=np.uint32)  # the matrix offers no buffer: one Python list per row
    times["to_numpy_s"] = time.perf_counter() - t0
    times["signatures_s"] = times["signatures_native_s"] + times["to_numpy_s"]
    return sig


def engine_datasketch(h, o, groups, threshold, num_perm, seed, n_docs):
    """datasketch as users run it: one MinHash per text (fed our 32-bit shingle keys, its own permutations),
    MinHashLSH at the same threshold, candidates filtered to the same group and verified by the estimate."""
    from datasketch import MinHash, MinHashLSH

    times = {}
    x = (h >> np.uint64(32)).tolist()
    t0 = time.perf_counter()
    mhs = []
    for i in range(n_docs):
        mh = MinHash(num_perm=num_perm, seed=seed, hashfunc=int)
        if o[i + 1] > o[i]:
            mh.update_batch(x[o[i] : o[i + 1]])
        mhs.append(mh)
    times["signatures_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    live = [i for i in range(n_docs) if o[i + 1] > o[i]]
    for i in live:
        lsh.insert(i, mhs[i])
    found = []
    for i in live:
        for j in lsh.query(mhs[i]):
            if j > i and groups[j] == groups[i] and mhs[i].jaccard(mhs[j]) >= threshold - 1e-12:
                found.append((i, j))
    times["candidates_verify_s"] = time.perf_counter() - t0
    times["lsh_bands_rows"] = [lsh.b, lsh.r]
    return np.array(sorted(found), dtype=np.int64).reshape(-1, 2), times


def _rounded(d):
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in d.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--datasketch-n", type=int, default=20_000)
    ap.add_argument("--num-perm", type=int, default=td.DEFAULT_NUM_PERM)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/text_dedup.json")
    args = ap.parse_args()

    t0 = time.perf_counter()
    texts, groups, root, kinds, derived = make_corpus(args.n, args.seed)
    gen_s = time.perf_counter() - t0
    pairs = within_group_pairs(groups)
    label, copy_kind, neg_kind = label_pairs(pairs, root, kinds, derived)
    print(
        f"corpus: {len(texts)} conversations, {groups.max() + 1} groups, {len(pairs)} within-group pairs "
        f"({gen_s:.1f} s)",
        flush=True,
    )
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "loadavg_start": os.getloadavg()},
        "corpus": {
            "conversations": len(texts),
            "groups": int(groups.max() + 1),
            "mean_words": round(float(np.mean([len(t.split()) for t in texts])), 1),
            "kinds": {
                k: int(np.count_nonzero(kinds == k)) for k in ("original",) + NEAR_COPY + HARD_POSITIVE + HARD_NEGATIVE
            },
            "within_group_pairs": int(len(pairs)),
            "labelled_pairs": {k: int(np.count_nonzero(label == k)) for k in ("pos", "hard", "neg")},
            "hard_negative_pairs": {k: int(np.count_nonzero(neg_kind == k)) for k in HARD_NEGATIVE},
        },
        "num_perm": args.num_perm,
    }
    print("sweep (estimated Jaccard >= t over every within-group pair):", flush=True)
    result["sweep"] = sweep(texts, pairs, label, copy_kind, neg_kind, args.num_perm, args.seed)
    best_sh = max(SHINGLES, key=lambda s: result["sweep"][s]["best_f1"])
    result["best"] = {"shingle": best_sh, **{k: result["sweep"][best_sh][k] for k in ("best_threshold", "best_f1")}}
    # the rule for the library default: the best F1 among the shingle kinds with at most 1.5x the fewest
    # shingles (byte shingles are 5x as many as word shingles, and cost as much more in time)
    fewest = min(result["sweep"][s]["shingles"] for s in SHINGLES)
    cheap = [s for s in SHINGLES if result["sweep"][s]["shingles"] <= 1.5 * fewest]
    rule_sh = max(cheap, key=lambda s: result["sweep"][s]["best_f1"])
    result["rule"] = {
        "text": "best F1 among the shingle kinds with at most 1.5x the fewest shingles",
        "shingle": rule_sh,
        **{k: result["sweep"][rule_sh][k] for k in ("best_threshold", "best_f1")},
    }
    shingle, threshold = td.DEFAULT_SHINGLE, td.DEFAULT_THRESHOLD
    result["chosen"] = {
        "shingle": shingle,
        "threshold": threshold,
        "lsh_bands_rows": list(td.lsh_params(threshold, args.num_perm)),
        "f1_at_chosen": next(r["f1"] for r in result["sweep"][shingle]["rows"] if r["threshold"] == threshold),
    }
    print(f"best {result['best']}; library defaults {result['chosen']}", flush=True)

    # the engines on the whole corpus, at the library's shingle and threshold
    times = {}
    t0 = time.perf_counter()
    h, o = td.shingle_hashes(texts, shingle)
    times["shingles_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    sig = td.minhash_signatures(h, o, args.num_perm, args.seed)
    times["signatures_s"] = time.perf_counter() - t0
    exact = td.exact_jaccard(h, o, pairs)
    truth = pairs[exact >= threshold - 1e-12]
    found = verified_pairs(sig, groups, threshold, args.num_perm, times)
    code = pairs[:, 0] * len(texts) + pairs[:, 1]
    numpy_engine = {**_rounded(times), **agreement(found, truth, len(texts))}
    numpy_engine["vs_labels"] = pr(np.isin(code, found[:, 0] * len(texts) + found[:, 1]), label)
    numpy_engine["total_s"] = round(times["shingles_s"] + times["signatures_s"] + times["candidates_verify_s"], 3)
    numpy_engine["estimate_error_std"] = round(float(np.std(td.estimated_jaccard(sig, pairs) - exact)), 5)
    t0 = time.perf_counter()
    r = td.near_duplicate_groups(texts, groups, threshold, args.num_perm, args.seed, shingle)
    numpy_engine["near_duplicate_groups_s"] = round(time.perf_counter() - t0, 3)
    numpy_engine["duplicates"] = r.n_duplicates
    t0 = time.perf_counter()
    td.exact_duplicate_groups(texts, groups)
    numpy_engine["exact_duplicate_groups_s"] = round(time.perf_counter() - t0, 3)
    engines = {"numpy": numpy_engine}
    print("numpy:", numpy_engine, flush=True)
    try:
        tr = {"shingles_s": times["shingles_s"]}
        sig_r = engine_rensa(h, o, args.num_perm, args.seed, tr)
        found = verified_pairs(sig_r, groups, threshold, args.num_perm, tr)
        engines["rensa"] = {**_rounded(tr), **agreement(found, truth, len(texts))}
        engines["rensa"]["vs_labels"] = pr(np.isin(code, found[:, 0] * len(texts) + found[:, 1]), label)
        engines["rensa"]["total_s"] = round(tr["shingles_s"] + tr["signatures_s"] + tr["candidates_verify_s"], 3)
        engines["rensa"]["estimate_error_std"] = round(float(np.std(td.estimated_jaccard(sig_r, pairs) - exact)), 5)
        print("rensa:", engines["rensa"], flush=True)
    except ImportError:
        engines["rensa"] = "not installed"
    try:
        nd = min(args.datasketch_n, len(texts))
        if nd < len(texts):  # whole groups only, so the subset's exact pairs are the full ones within it
            nd = int(np.searchsorted(groups, groups[nd], side="left"))
        found, tdk = engine_datasketch(h, o, groups, threshold, args.num_perm, args.seed, nd)
        engines["datasketch"] = {"conversations": nd, **_rounded(tdk), **agreement(found, truth[truth[:, 1] < nd], nd)}
        per_text = (tdk["signatures_s"] + tdk["candidates_verify_s"]) / nd
        engines["datasketch"]["total_s_extrapolated"] = round(times["shingles_s"] + per_text * len(texts), 1)
        print("datasketch:", engines["datasketch"], flush=True)
    except ImportError:
        engines["datasketch"] = "not installed"
    result["engines"] = engines

    lsh_times = {}
    found_lsh = verified_pairs(sig, groups, threshold, args.num_perm, lsh_times, all_pairs_max_group=0)
    result["candidates"] = {
        "all_pairs_in_groups_up_to_32": agreement(
            verified_pairs(sig, groups, threshold, args.num_perm, {}), truth, len(texts)
        ),
        "lsh_only": {**agreement(found_lsh, truth, len(texts)), **_rounded(lsh_times)},
        "lsh_only_datasketch_weights": {},
    }
    b, rr = td.lsh_params(threshold, args.num_perm, 0.5, 0.5)
    cand = td.candidate_pairs(sig, groups, b, rr, 0)
    result["candidates"]["lsh_only_datasketch_weights"] = {
        "bands_rows": [b, rr],
        "candidates": int(len(cand)),
        **agreement(cand[td.estimated_jaccard(sig, cand) >= threshold - 1e-12], truth, len(texts)),
    }
    result["machine"]["loadavg_end"] = os.getloadavg()
    print("candidates:", result["candidates"], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
