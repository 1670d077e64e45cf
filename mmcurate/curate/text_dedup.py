"""Exact and near-duplicate conversations: normalised-text hashes, MinHash signatures with LSH banding, pairs
verified against a Jaccard threshold, connected components and one representative per group.

Duplicates are looked for *within a group* (the image group: conversations about the same image) unless no
groups are given: different questions about one image are different samples, and the same question about
two different images is too. Near-duplicates are near-copies of one conversation (case, spacing,
punctuation, a typo, a word changed in a long answer), not conversations that share a template.

Text normalisation (:func:`normalize_text`): Unicode NFKC, ``<image>`` placeholders removed, lowercase,
whitespace collapsed, punctuation stripped at both ends. Exact duplicates share the 64-bit BLAKE2b hash of the
normalised text (:func:`exact_keys`).

Shingles (:func:`shingle_hashes`): the text's words (maximal runs of letters, digits, "_" and combining marks
after the same normalisation, so inner punctuation goes too; computed over the whole corpus' bytes at once)
form ``"word<k>"`` shingles, k consecutive words (a text of fewer words is one shingle), or ``"char<k>"``
shingles, k consecutive UTF-8 bytes of the words joined by single spaces (k <= 8). Each shingle is a 64-bit
hash: a word's hash chains its 8-byte blocks through splitmix64's mixer, and a k-gram chains its words' hashes
in order; a byte window is packed into an integer and mixed. The default, word 2-grams at a threshold of 0.75,
was chosen by the precision/recall sweep of ``benchmarks/bench_text_dedup.py`` over labelled synthetic pairs
(``benchmarks/results/text_dedup.json``): F1 0.994 (near-copies vs different questions about the same image),
as good as byte 5-grams at 0.8 (0.995) with a fifth of the shingles; word 3-grams peak at 0.992 (t = 0.65).

MinHash (:func:`minhash_signatures`): ``num_perm`` hash functions ``h_i(x) = ((a_i x + b_i) mod 2^64) >> 32``
over the shingle hash's top 32 bits (Dietzfelbinger's multiply-add-shift, strongly universal for 32-bit
keys), ``a_i``, ``b_i`` drawn from ``numpy.random.default_rng(seed)``; a signature is the per-function minimum
over the text's shingles, uint32. Computed in numpy one function at a time over chunks of texts (fast because
each pass is one vectorised multiply-add-shift and one ``minimum.reduceat``). The estimate of the Jaccard
similarity of two texts is the share of equal signature values.

Candidates (:func:`near_duplicate_groups`): within a group of at most ``all_pairs_max_group`` texts every pair
is a candidate (image groups are small: exhaustive is cheap and misses nothing); larger groups use LSH banding
(``bands`` x ``rows`` values, each band hashed with the group id, texts sharing a band hash are candidates;
:func:`lsh_params` picks the banding for the threshold). Texts with identical signatures in a large group are
linked to the first of them before banding, so a flood of copies never makes a quadratic bucket. Either way the
result for a group depends only on that group's texts, so partitioning a data set by group changes nothing.
A candidate is kept when its estimated (``verify="minhash"``) or exact (``verify="exact"``, on the shingle
sets) Jaccard similarity is at least ``threshold``; kept pairs are joined into connected components, each
represented by its best-scored member (``scores``, higher is better), or its lowest index.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mmcurate.curate.dedup import exact_groups, link_groups
from mmcurate.curate.hashing import GOLDEN, mix64

# Chosen by bench_text_dedup.py's sweep (results/text_dedup.json): the best F1 among the word shingles, which
# cost a fifth of byte shingles for an F1 within 0.001 of theirs.
DEFAULT_SHINGLE = "word2"
DEFAULT_THRESHOLD = 0.75
DEFAULT_NUM_PERM = 128
ALL_PAIRS_MAX_GROUP = 32

_IMAGE_TOKEN = re.compile(r"<image>", re.IGNORECASE)
_SHINGLE = re.compile(r"(word|char)([1-9]\d*)")
_END_PUNCT = "".join(chr(c) for c in range(0x21, 0x7F) if not chr(c).isalnum()) + "\u201c\u201d\u2018\u2019\u2026"
_U64 = np.uint64
_CHUNK_SHINGLES = 1 << 16  # shingles per pass: keeps one pass's arrays in cache


def normalize_text(text: str) -> str:
    """NFKC, ``<image>`` removed, lowercase, whitespace collapsed, punctuation stripped at both ends."""
    text = unicodedata.normalize("NFKC", _IMAGE_TOKEN.sub(" ", text)).lower()
    return " ".join(text.split()).strip(_END_PUNCT + " ")


def _digest64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def exact_keys(texts: Sequence[str]) -> np.ndarray:
    """uint64 hash of each normalised text: equal keys, exact duplicates."""
    return np.fromiter((_digest64(normalize_text(t).encode("utf-8")) for t in texts), dtype=_U64, count=len(texts))


def _group_codes(group_ids, n: int) -> np.ndarray:
    if group_ids is None:
        return np.zeros(n, dtype=np.int64)
    g = np.asarray(group_ids)
    if g.shape != (n,):
        raise ValueError(f"group_ids must have shape ({n},), got {g.shape}")
    return np.unique(g, return_inverse=True)[1].reshape(-1).astype(np.int64)


def _rank(scores, n: int) -> np.ndarray:
    """Rank 0 = preferred: the highest score (NaN last), then the lowest index."""
    if scores is None:
        return np.arange(n, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (n,):
        raise ValueError(f"scores must have shape ({n},), got {s.shape}")
    primary = np.where(np.isnan(s), np.inf, -s)
    rank = np.empty(n, dtype=np.int64)
    rank[np.lexsort((np.arange(n), primary))] = np.arange(n)
    return rank


def exact_duplicate_groups(texts: Sequence[str], group_ids=None, scores=None) -> np.ndarray:
    """Representative of each text among the texts of its group with the same normalised text (the best
    score, else the lowest index); a text represents itself when it has no exact duplicate."""
    n = len(texts)
    key = exact_keys(texts) ^ mix64(_group_codes(group_ids, n).astype(_U64) + _U64(GOLDEN))
    return exact_groups(key, _rank(scores, n)).representative


# ----------------------------------------------------------------------------------------------
# Shingles and signatures
# ----------------------------------------------------------------------------------------------


def _parse_shingle(shingle: str) -> tuple[str, int]:
    m = _SHINGLE.fullmatch(shingle)
    if not m or (m.group(1) == "char" and int(m.group(2)) > 8):
        raise ValueError(f"shingle must be 'word<k>' or 'char<k>' (k <= 8), got {shingle!r}")
    return m.group(1), int(m.group(2))


def _windows(values: np.ndarray, lengths: np.ndarray, k: int, combine) -> tuple[np.ndarray, np.ndarray]:
    """k-windows of each text's values (concatenated; ``lengths`` per text): a text with fewer than k values
    (and at least one) gives one window over what it has, padded with zeros. ``combine(acc, next, j)``."""
    n = lengths.size
    starts = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    count = np.where(lengths >= k, lengths - k + 1, np.minimum(lengths, 1))
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(count, out=offsets[1:])
    doc = np.repeat(np.arange(n), count)
    pos = starts[doc] + (np.arange(offsets[-1]) - offsets[doc])  # first value of each window
    end = starts[doc + 1]
    padded = np.concatenate([values, np.zeros(k, dtype=values.dtype)])
    acc = padded[pos].astype(_U64)
    for j in range(1, k):
        nxt = np.where(pos + j < end, padded[np.minimum(pos + j, len(values))], 0).astype(_U64)
        acc = combine(acc, nxt, j)
    return acc, offsets


def _nonascii_separators(text: str) -> dict[int, str]:
    """str.translate table sending the non-ASCII punctuation, symbols, separators and control / format
    characters present in ``text`` to a space (they would otherwise count as word bytes)."""
    return {ord(c): " " for c in set(text) if ord(c) > 127 and unicodedata.category(c)[0] in "PSZC"}


_WORD_BYTE = np.zeros(256, dtype=bool)
_WORD_BYTE[[ord(c) for c in "0123456789abcdefghijklmnopqrstuvwxyz_"]] = True
_WORD_BYTE[128:] = True  # UTF-8 bytes of the remaining non-ASCII characters: letters, digits, marks


def _corpus_bytes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(bytes, text_starts)``: all texts normalised as one UTF-8 buffer (NFKC, ``<image>`` removed,
    lowercase, non-ASCII punctuation as spaces), texts separated by NUL bytes, and where each text starts. One
    pass of C-level string methods over the joined corpus instead of a Python loop over words."""
    joined = "\0".join(t.replace("\0", " ") for t in texts)
    joined = unicodedata.normalize("NFKC", _IMAGE_TOKEN.sub(" ", joined)).lower()
    if not joined.isascii():
        joined = joined.translate(_nonascii_separators(joined))
    b = np.frombuffer(joined.encode("utf-8"), dtype=np.uint8)
    text_starts = np.concatenate([[0], np.flatnonzero(b == 0) + 1]).astype(np.int64)
    return b, text_starts


def _words(texts: Sequence[str]):
    """``(b, text_starts, is_word, starts, ends, word_text)``: the corpus bytes (:func:`_corpus_bytes`), which
    bytes are word bytes, each word's byte range and text, in order. A word is a maximal run of ASCII letters,
    digits, "_" and non-ASCII characters other than punctuation, symbols, separators and controls (so
    non-ASCII letters, digits and combining marks): close to ``\\w+`` on :func:`normalize_text`'s output."""
    b, text_starts = _corpus_bytes(texts)
    w = _WORD_BYTE[b]
    edge = np.flatnonzero(w[1:] != w[:-1]) + 1
    bounds = np.concatenate([[0] if b.size and w[0] else [], edge, [b.size] if b.size and w[-1] else []])
    bounds = bounds.astype(np.int64)
    starts, ends = bounds[0::2], bounds[1::2]
    word_text = np.searchsorted(text_starts, starts, side="right") - 1
    return b, text_starts, w, starts, ends, word_text


def _word_hashes(b: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """uint64 hash of each word: its bytes read 8 at a time as little-endian integers (the last block masked
    to the word's end), chained through splitmix64's mixer from the word's length. Block by block over all
    words, so the Python loop is as long as the longest word / 8, not as long as the corpus."""
    length = ends - starts
    padded = np.concatenate([b, np.zeros(8, dtype=np.uint8)])
    # the 8 bytes starting at every byte offset, as one unaligned uint64 view of the buffer
    at = np.ndarray(shape=(b.size + 1,), dtype="<u8", buffer=padded, strides=(1,))
    h = mix64(length.astype(_U64))
    # the first block of every word on whole arrays; the few longer words then go on by index
    block = at[starts].astype(_U64)
    short = length < 8
    block[short] &= (_U64(1) << (8 * length[short]).astype(_U64)) - _U64(1)
    h = mix64(h ^ block)
    todo = np.flatnonzero(length > 8)
    j = 1
    while todo.size:
        left = length[todo] - 8 * j
        block = at[starts[todo] + 8 * j].astype(_U64)
        short = left < 8
        block[short] &= (_U64(1) << (8 * left[short]).astype(_U64)) - _U64(1)
        h[todo] = mix64(h[todo] ^ block)
        todo = todo[left > 8]
        j += 1
    return h


def shingle_hashes(texts: Sequence[str], shingle: str = DEFAULT_SHINGLE) -> tuple[np.ndarray, np.ndarray]:
    """``(hashes, offsets)``: the uint64 shingle hashes of all texts concatenated (a text's may repeat),
    text i's being ``hashes[offsets[i]:offsets[i + 1]]``. An empty text has none. Vectorised over the corpus'
    bytes (:func:`_words`, :func:`_word_hashes`)."""
    kind, k = _parse_shingle(shingle)
    n = len(texts)
    b, text_starts, w, starts, ends, word_text = _words(texts)
    if starts.size == 0:
        return np.zeros(0, dtype=_U64), np.zeros(n + 1, dtype=np.int64)
    with np.errstate(over="ignore"):
        if kind == "word":
            lengths = np.bincount(word_text, minlength=n).astype(np.int64)
            return _windows(_word_hashes(b, starts, ends), lengths, k, lambda acc, nxt, j: mix64(acc ^ nxt))
        # bytes: the words of each text joined by single spaces (one space before every word but a text's first)
        keep = w.copy()
        keep[starts[1:][word_text[1:] == word_text[:-1]] - 1] = True
        values = np.where(w, b, np.uint8(0x20))[keep]
        lengths = np.add.reduceat(keep, text_starts, dtype=np.int64) if b.size else np.zeros(n, dtype=np.int64)
        packed, offsets = _windows(values, lengths, k, lambda acc, nxt, j: acc | (nxt << _U64(8 * j)))
        return mix64(packed ^ _U64(k)), offsets


def _perm_params(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**64, size=num_perm, dtype=_U64, endpoint=False)
    b = rng.integers(0, 2**64, size=num_perm, dtype=_U64, endpoint=False)
    return a, b


def minhash_signatures(hashes, offsets, num_perm: int = DEFAULT_NUM_PERM, seed: int = 0) -> np.ndarray:
    """uint32[n, num_perm] MinHash signatures of the shingle sets (``shingle_hashes``'s layout). A text
    without shingles gets all values 0xFFFFFFFF (and is never a near-duplicate)."""
    if num_perm < 1:
        raise ValueError(f"num_perm must be >= 1, got {num_perm}")
    hashes = np.asarray(hashes, dtype=_U64)
    offsets = np.asarray(offsets, dtype=np.int64)
    n = offsets.size - 1
    a, b = _perm_params(num_perm, seed)
    sig = np.full((n, num_perm), 0xFFFFFFFF, dtype=np.uint32)
    nonempty = np.flatnonzero(offsets[1:] > offsets[:-1])
    ends = offsets[nonempty + 1]
    keys = hashes >> _U64(32)
    i = 0
    while i < nonempty.size:
        # a chunk of whole texts of about _CHUNK_SHINGLES shingles (at least one text)
        lo = offsets[nonempty[i]]
        j = int(np.searchsorted(ends, lo + _CHUNK_SHINGLES, side="right"))
        j = max(j, i + 1)
        docs = nonempty[i:j]
        x = keys[lo : offsets[docs[-1] + 1]]
        starts = offsets[docs] - lo
        v = np.empty(x.size, dtype=_U64)
        with np.errstate(over="ignore"):
            for p in range(num_perm):
                np.multiply(x, a[p], out=v)
                v += b[p]
                v >>= _U64(32)
                sig[docs, p] = np.minimum.reduceat(v, starts)
        i = j
    return sig


def lsh_params(threshold: float, num_perm: int, fp_weight: float = 0.1, fn_weight: float = 0.9) -> tuple[int, int]:
    """``(bands, rows)`` with bands * rows <= num_perm minimising ``fp_weight`` * (the probability mass of
    pairs below ``threshold`` that become candidates) + ``fn_weight`` * (that of pairs above it that do not),
    for Jaccard similarity uniform on [0, 1] (the criterion datasketch's MinHashLSH uses, with its weights
    0.5 / 0.5). Candidates are verified, so a false positive costs one comparison and a false negative a
    missed duplicate: hence the weight on recall (at 0.7 and 128 values: 20 bands of 6, a pair at the
    threshold becomes a candidate with probability 0.92 instead of datasketch's 14 x 9's 0.44)."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    s_lo = (np.arange(400) + 0.5) / 400 * threshold  # midpoint rule
    s_hi = threshold + (np.arange(400) + 0.5) / 400 * (1 - threshold)
    best, best_cost = (1, num_perm), np.inf
    for rows in range(1, num_perm + 1):
        for bands in range(1, num_perm // rows + 1):
            fp = np.mean(1 - (1 - s_lo**rows) ** bands) * threshold
            fn = np.mean((1 - s_hi**rows) ** bands) * (1 - threshold)
            cost = float(fp_weight * fp + fn_weight * fn)
            if cost < best_cost - 1e-15:
                best, best_cost = (bands, rows), cost
    return best


# ----------------------------------------------------------------------------------------------
# Pairs
# ----------------------------------------------------------------------------------------------


def _pairs_in_runs(keys: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """All pairs (i < j of ``ids``) sharing a key: runs of equal keys after a sort, pairs at distance d in the
    sorted order for d = 1, 2, ... up to the longest run."""
    order = np.lexsort((ids, keys))
    k, v = keys[order], ids[order]
    out = []
    d = 1
    while d < k.size:
        same = np.flatnonzero(k[d:] == k[:-d])
        if same.size == 0:
            break
        out.append(np.stack([v[same], v[same + d]], axis=1))
        d += 1
    if not out:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.concatenate(out)
    return np.sort(pairs, axis=1)


def _row_hash(sig: np.ndarray, salt: np.ndarray) -> np.ndarray:
    h = mix64(salt.astype(_U64) + _U64(GOLDEN))
    for c in range(sig.shape[1]):
        h = mix64(h ^ sig[:, c].astype(_U64))
    return h


def estimated_jaccard(sig: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Share of equal signature values of each pair (float64[m])."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    out = np.empty(len(pairs), dtype=np.float64)
    step = max(1, (1 << 22) // max(1, sig.shape[1]))
    for s in range(0, len(pairs), step):
        p = pairs[s : s + step]
        out[s : s + step] = np.count_nonzero(sig[p[:, 0]] == sig[p[:, 1]], axis=1) / sig.shape[1]
    return out


def exact_jaccard(hashes, offsets, pairs) -> np.ndarray:
    """Jaccard similarity of the shingle-hash *sets* of each pair (float64[m]); two empty sets: 0."""
    hashes = np.asarray(hashes, dtype=_U64)
    offsets = np.asarray(offsets, dtype=np.int64)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    sets: dict[int, np.ndarray] = {}

    def get(i: int) -> np.ndarray:
        s = sets.get(i)
        if s is None:
            s = sets[i] = np.unique(hashes[offsets[i] : offsets[i + 1]])
        return s

    out = np.empty(len(pairs), dtype=np.float64)
    for m, (i, j) in enumerate(pairs.tolist()):
        a, b = get(i), get(j)
        inter = np.intersect1d(a, b, assume_unique=True).size
        union = a.size + b.size - inter
        out[m] = inter / union if union else 0.0
    return out


def candidate_pairs(
    sig: np.ndarray, groups: np.ndarray, bands: int, rows: int, all_pairs_max_group: int = ALL_PAIRS_MAX_GROUP
) -> np.ndarray:
    """Candidate pairs (int64[m, 2], i < j, sorted, unique) within groups: every pair of a small group, and for
    larger groups identical signatures linked to their first and LSH band collisions of the rest."""
    n = sig.shape[0]
    if n == 0:
        return np.zeros((0, 2), dtype=np.int64)
    empty = (sig == 0xFFFFFFFF).all(axis=1)  # no shingles: nothing to compare
    live = np.flatnonzero(~empty)
    size = np.bincount(groups[live], minlength=int(groups.max()) + 1 if n else 0)
    small = size[groups[live]] <= all_pairs_max_group
    found = [_pairs_in_runs(groups[live[small]], live[small])]
    big = live[~small]
    if big.size:
        # identical signatures: a star on the first of them, then band only one of each
        full = _row_hash(sig[big], groups[big])
        order = np.lexsort((big, full))
        first = np.ones(big.size, dtype=bool)
        first[1:] = full[order][1:] != full[order][:-1]
        head = big[order][np.maximum.accumulate(np.where(first, np.arange(big.size), 0))]
        found.append(np.stack([head[~first], big[order][~first]], axis=1))
        uniq = big[order][first]
        for band in range(bands):
            key = _row_hash(sig[uniq, band * rows : (band + 1) * rows], groups[uniq] * bands + band)
            found.append(_pairs_in_runs(key, uniq))
    pairs = np.concatenate(found).astype(np.int64)
    if pairs.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = pairs[groups[pairs[:, 0]] == groups[pairs[:, 1]]]  # guards 64-bit band-hash collisions
    code = np.unique(pairs[:, 0] * n + pairs[:, 1])
    return np.stack([code // n, code % n], axis=1)


@dataclass
class NearDuplicates:
    """Per text i: ``representative[i]`` is the index of the kept text of its component (i itself when it has
    no near-duplicate). ``pairs`` are the verified pairs (i < j) and ``similarity`` their Jaccard similarity
    (estimated or exact, as verified). In a group past ``all_pairs_max_group``, texts with identical signatures
    are paired with the first of them only, so ``pairs`` may omit pairs whose components it already joins."""

    representative: np.ndarray  # int64[n]
    pairs: np.ndarray  # int64[m, 2]
    similarity: np.ndarray  # float64[m]
    n_candidates: int
    bands: int
    rows: int

    @property
    def is_duplicate(self) -> np.ndarray:
        return self.representative != np.arange(len(self.representative))

    @property
    def n_duplicates(self) -> int:
        return int(np.count_nonzero(self.is_duplicate))


def near_duplicate_groups(
    texts: Sequence[str],
    group_ids=None,
    threshold: float = DEFAULT_THRESHOLD,
    num_perm: int = DEFAULT_NUM_PERM,
    seed: int = 0,
    shingle: str = DEFAULT_SHINGLE,
    scores=None,
    verify: str = "minhash",
    bands: int | None = None,
    all_pairs_max_group: int = ALL_PAIRS_MAX_GROUP,
) -> NearDuplicates:
    """Near-duplicate texts within each group (module docstring): pairs with Jaccard similarity >=
    ``threshold``, their connected components, and one representative per component. ``texts`` are whole
    conversations (``conversations.conversation_text``); ``group_ids`` any ids (None: one group); ``bands``
    overrides the LSH banding (rows = num_perm // bands)."""
    if verify not in ("minhash", "exact"):
        raise ValueError(f"verify must be 'minhash' or 'exact', got {verify!r}")
    n = len(texts)
    groups = _group_codes(group_ids, n)
    rank = _rank(scores, n)
    if bands is None:
        bands, rows = lsh_params(threshold, num_perm)
    else:
        if not 1 <= bands <= num_perm:
            raise ValueError(f"bands must be in [1, {num_perm}], got {bands}")
        rows = num_perm // bands
    hashes, offsets = shingle_hashes(texts, shingle)
    sig = minhash_signatures(hashes, offsets, num_perm, seed)
    cand = candidate_pairs(sig, groups, bands, rows, all_pairs_max_group)
    sim = estimated_jaccard(sig, cand) if verify == "minhash" else exact_jaccard(hashes, offsets, cand)
    keep = sim >= threshold - 1e-12
    pairs, sim = cand[keep], sim[keep]
    return NearDuplicates(link_groups(n, pairs, rank), pairs, sim, len(cand), bands, rows)
