"""Instruction-data stages (LLaVA-style conversations read by io/llava.py): instruction_dedup, answer_balance,
option_order, template_stats, task_mix. Every one is a global step (``run(ctx)``) whose tasks are the module-level
functions at the end; results are keyed by SAMPLE_ID and never depend on the context (one partition in RAM, N
partitions on disk, tasks in any order). Whatever a step chooses among samples it chooses in the order of their
keys (the context's key ranks) or by a hash of the key, never by where a sample sits.

The unit is the conversation: a sample is one record with all its turns (`turns`: list<struct<role, text>>).

Conversation edits. A global step cannot rewrite a column the map phase wrote, so answer_balance and option_order
return their edits as a per-sample column `<step>_turn_edits` (pipeline.write_phase.TURN_EDITS_TYPE: a list of
{turn, text}, text null removing the turn; indices into the turns as the map phase left them). Each step here reads
the conversation with the earlier steps' edits applied (``current_turns``), and the write phase applies them all
to the kept samples through stages.batch.set_turns, so `turns`, `question`/`answer`, the caption and the record in
`meta` (output shards, samples.parquet, the LLaVA export) agree.

- instruction_dedup: image groups (samples whose first image is byte-identical: sha256; or perceptually the same:
  pHash within ``phash_radius``, through the context's Hamming primitive) get an `image_group` column, which split
  groups by. Within an image group, conversations whose normalised text (text_dedup.normalize_text over all turns)
  is the same are exact duplicates (reason ``duplicate_conversation``, kind ``conversation`` in duplicates.parquet),
  and those within MinHash Jaccard ``threshold`` of another (word 2-grams at 0.75: the sweep of
  benchmarks/bench_text_dedup.py) are near duplicates (``near_duplicate_conversation``, kind
  ``near_conversation``, distance 1 - Jaccard of their shingle sets). The kept one is the one with the smallest key.
  A question asked of two different images is never a duplicate; text-only conversations form one group
  (``text_only: together``, so a copied ShareGPT conversation is found) or none (``apart``).
- answer_balance: every answer classified (curate.answers.classify_answer); the yes-ratio among yes/no answers
  overall, per question template (curate.templates.skeleton) and per task type; with ``yes_ratio`` set, the fewest
  yes (or no) question/answer pairs removed to bring it within ``tolerance`` (curate.answers.rebalance_yes_no,
  seeded, spread over templates). A pair holding the `<image>` placeholder hands it to the next remaining question.
  A sample left with no pair is rejected (``answer_balance``).
- option_order: multiple-choice questions (curate.choices.parse_multiple_choice), the correct-letter distribution
  and its chi-square test against uniform; policy ``report`` (nothing changes), ``shuffle`` (letters balanced over
  the data set: choices.reorder_dataset), ``negative_last`` (a none/not-present option moved last) or
  ``shuffle_negative_last``. Every rewritten question is parsed again and kept only if its answer still names the
  same option text.
- template_stats: question skeletons (distinct, top-10 share, distinct-2, compression ratio, top skeletons); with
  ``max_per_template``, at most that many samples per skeleton of their first question (``template_cap``).
- task_mix: the task type of every conversation (curate.tasks.task_type) as the `task_type` column, counts in the
  stats; with ``target`` (a share per type), a type above its share is capped (``task_mix_cap``). A global step
  rather than a map stage so that the types and counts are those of the conversations written (after dedup and
  the edits of answer_balance and option_order).

No stage here rejects an answer for being short: "Yes", "No", "3", "Red" and "B" are answers.
"""

from __future__ import annotations

import functools
import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from mmcurate.curate import text_dedup
from mmcurate.curate.answers import classify_answer, rebalance_yes_no, yes_no_stats
from mmcurate.curate.choices import (
    POLICIES,
    is_negative_option,
    letter_distribution,
    parse_multiple_choice,
    reorder_dataset,
)
from mmcurate.curate.conversations import GPT_ROLES, HUMAN_ROLES, conversation_text, strip_image_tokens, turn_role_text
from mmcurate.curate.dedup import connected_components
from mmcurate.curate.hashing import GOLDEN, mix64
from mmcurate.curate.tasks import TASK_TYPES, task_type, turn_task_type
from mmcurate.curate.templates import cap_per_template, skeleton, template_stats
from mmcurate.io.conversations import IMAGE_TOKEN
from mmcurate.pipeline.global_sharded import string_hash64
from mmcurate.pipeline.params import (
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_seed,
    check_threads,
    is_int,
)
from mmcurate.pipeline.schema import DUPLICATES_SCHEMA, REJECTS_SCHEMA, conform_duplicates, rejects_table
from mmcurate.pipeline.stage import (
    SAMPLE_ID,
    GlobalResult,
    GlobalStage,
    MapStage,
    StageError,
    StageResult,
    StepStats,
    registry,
    with_sample_ids,
)
from mmcurate.pipeline.write_phase import TURN_EDITS_SUFFIX, TURN_EDITS_TYPE, edited_turns, turn_edit_columns
from mmcurate.stages.image import DEFAULT_PHASH_MAX_DISTANCE, PerceptualHash, Sha256, phash_codes
from mmcurate.stages.split import auto_phash_radius

# ---------------------------------------------------------------------------------------------------------
# shared pieces


class Pair(NamedTuple):
    """A question/answer pair of a conversation: the indices of its turns (in the turns as the map phase left them)
    and their text as written (`<image>` placeholders kept)."""

    question_turn: int
    answer_turn: int
    question: str
    answer: str


def current_turns(table: pa.Table, edit_cols) -> list:
    """Each row's turns as the earlier global steps left them: their edit columns (``edit_cols``) applied, a removed
    turn as None so that indices still name the original turns."""
    turns = table.column("turns").to_pylist()
    if not edit_cols:
        return turns
    lists = [table.column(c).to_pylist() for c in edit_cols]
    return [
        edited_turns(t, [e[r] for e in lists], keep_removed=True) if any(e[r] for e in lists) else t
        for r, t in enumerate(turns)
    ]


def present(turns) -> list[dict]:
    """The turns that are there (removed ones, None, left out)."""
    return [t for t in turns or () if t is not None]


def conversation_pairs(turns) -> list[Pair]:
    """The question/answer pairs of a conversation whose removed turns are None: a human turn immediately followed
    (among the turns still there) by a gpt turn, as curate.conversations.qa_pairs pairs them."""
    live = [(k, t) for k, t in enumerate(turns or ()) if t is not None]
    out = []
    for (kq, q), (ka, a) in zip(live, live[1:]):
        rq, tq = turn_role_text(q)
        ra, ta = turn_role_text(a)
        if ra in GPT_ROLES and rq in HUMAN_ROLES:
            out.append(Pair(kq, ka, tq, ta))
    return out


def edit_list(edits: dict[int, str | None]) -> list[dict]:
    """{turn: new text or None (removed)} as a TURN_EDITS_TYPE value, by turn."""
    return [{"turn": int(k), "text": v} for k, v in sorted(edits.items())]


def edits_column(step: str, ids, edits: list) -> pa.Table | None:
    """SAMPLE_ID + `<step>_turn_edits` of the edited samples (ids ascending), None when there are none."""
    if not len(ids):
        return None
    return pa.table(
        {
            step + TURN_EDITS_SUFFIX: pa.array(edits, TURN_EDITS_TYPE),
            SAMPLE_ID: pa.array(np.asarray(ids, np.int64), pa.int64()),
        }
    )


def key_priority(keys, seed: int) -> np.ndarray:
    """A uint64 per key from the key's text and the seed: a random-looking order that no sharding changes."""
    salt = mix64(np.array([int(seed) % (1 << 64)], np.uint64) + np.uint64(GOLDEN))[0]
    return mix64(string_hash64(keys) ^ salt)


def key_ranks(ctx, step: str, ids: np.ndarray) -> np.ndarray:
    """The rank of each survivor's key (``ids``: the survivors ascending, as the tasks returned them)."""
    key_ids, rank = ctx.key_ranks(step)
    if not np.array_equal(key_ids, ids):
        raise RuntimeError(f"{step}: the key sort did not return every survivor once")
    return rank


def reject_table(ctx, stage: str, ids, reasons: list, details: list) -> pa.Table:
    """The rejects of samples ``ids`` (any order) with their reasons and details, keys and sources fetched."""
    ids = np.asarray(ids, np.int64)
    if not ids.size:
        return with_sample_ids(REJECTS_SCHEMA.empty_table(), [])
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    t = ctx.fetch(ids, ["key", "source"])
    return with_sample_ids(
        rejects_table(
            t.column("key").to_pylist(),
            t.column("source").to_pylist(),
            stage,
            [reasons[i] for i in order],
            [details[i] for i in order],
        ),
        ids,
    )


def no_rejects() -> pa.Table:
    return with_sample_ids(REJECTS_SCHEMA.empty_table(), [])


def _ratio(yes: int, no: int) -> float | None:
    return round(yes / (yes + no), 4) if yes + no else None


def _letters(slots, n_options) -> tuple[dict, float | None, float | None]:
    """({"A": n, ...}, chi2, p) of the correct slots; the test is letter_distribution's (uniform per option count)."""
    if not len(slots):
        return {}, None, None
    d = letter_distribution(list(slots), n_options=list(n_options))
    return (
        {chr(ord("A") + i): int(c) for i, c in enumerate(d.counts)},
        round(float(d.chi2), 4),
        float(f"{d.p_value:.4g}"),
    )


def _check_columns(ctx, stage) -> None:
    missing = [c for c in stage.requires if c not in ctx.column_names]
    if missing:
        raise StageError(f"stage '{stage.name}': input lacks column(s) {', '.join(missing)}")


# ---------------------------------------------------------------------------------------------------------
# instruction_dedup


class _ImageSha256(Sha256):
    name = "instruction_dedup"


class _ImagePhash(PerceptualHash):
    name = "instruction_dedup"


class ImageHashes(MapStage):
    """instruction_dedup's map part: `sha256` of the first image's bytes (unless an earlier stage added it) and its
    `phash` (integrity's fast pHash is reused; computed here when no stage made it). Text-only rows get nulls and
    stay; a missing image is rejected (missing_image)."""

    name = "instruction_dedup"
    requires = ("key", "source", "image")

    @dataclass
    class Params:
        phash: bool = True
        num_threads: int | None = None

        def validate(self):
            check_bool("phash", self.phash)
            check_threads(self.num_threads)

    def __init__(self, **params):
        super().__init__(**params)
        p = self.params
        self._sha = _ImageSha256(num_threads=p.num_threads)
        self._phash = _ImagePhash(num_threads=p.num_threads) if p.phash else None
        self.resources = self._sha.resources

    def column_fingerprints(self) -> dict[str, dict]:
        return {**self._sha.column_fingerprints(), **(self._phash.column_fingerprints() if self._phash else {})}

    def process(self, batch: pa.Table) -> StageResult:
        res = StageResult(batch) if "sha256" in batch.column_names else self._sha.process(batch)
        if self._phash is None:
            return res
        res2 = self._phash.process(res.kept)
        if not res2.rejected.num_rows:
            return StageResult(res2.kept, res.rejected)
        return StageResult(res2.kept, pa.concat_tables([res.rejected, res2.rejected]))


@dataclass
class InstructionDedupStats(StepStats):
    samples: int | None = None
    text_only: int | None = None
    image_groups: int | None = None  # distinct images (exact and perceptual duplicates counted once)
    shared_image_groups: int | None = None  # images with more than one conversation
    largest_image_group: int | None = None
    same_bytes_links: int | None = None  # samples linked to another by their image's sha256
    phash_radius: int | None = None
    phash_pairs: int | None = None
    compared: int | None = None  # conversations in groups of two or more, whose texts were compared
    duplicate_conversations: int | None = None
    near_duplicate_conversations: int | None = None
    threshold: float | None = None
    shingle: str | None = None
    partitions: int | None = None


#: Rows of (sha256, id) per grouping partition, and of conversation texts per dedup partition.
SHA_ROWS_PER_PARTITION = 1 << 20
TEXT_ROWS_PER_PARTITION = 1 << 18
TEXT_ONLY_GROUPING = ("together", "apart")


@registry.register
class InstructionDedup(GlobalStage):
    """Exact and near-duplicate conversations within image groups, and the `image_group` column (module
    docstring). Reasons: duplicate_conversation, near_duplicate_conversation."""

    name = "instruction_dedup"

    @dataclass
    class Params:
        threshold: float = text_dedup.DEFAULT_THRESHOLD  # Jaccard similarity of near duplicates (the sweep's)
        shingle: str = text_dedup.DEFAULT_SHINGLE  # word<k> or char<k>
        num_perm: int = text_dedup.DEFAULT_NUM_PERM
        near: bool = True  # false: exact duplicates only
        # image groups: pHash within this many bits (auto: split's chance-link budget, at most phash_dedup's
        # measured 10), or null: byte-identical images only
        phash_radius: int | str | None = "auto"
        text_only: str = "together"  # together: text-only conversations are one group; apart: never duplicates
        seed: int = 0  # MinHash functions
        num_threads: int | None = None  # sha256 / pHash of the map part

        def validate(self):
            check_number("threshold", self.threshold, 0, 1, lo_open=True)
            text_dedup.shingle_hashes(["x"], self.shingle)  # ValueError naming the valid forms
            check_int("num_perm", self.num_perm, 1, 4096)
            check_bool("near", self.near)
            if self.phash_radius not in ("auto", None) and not (
                is_int(self.phash_radius) and 0 <= self.phash_radius <= 64
            ):
                raise ValueError(f"phash_radius must be an integer 0..64, 'auto' or null, got {self.phash_radius!r}")
            check_choice("text_only", self.text_only, TEXT_ONLY_GROUPING)
            check_seed(self.seed)
            check_threads(self.num_threads)

    def __init__(self, **params):
        super().__init__(**params)
        p = self.params
        self.requires = ("key", "source", "turns", "sha256") + (("phash",) if p.phash_radius is not None else ())
        self.map_part = ImageHashes(phash=p.phash_radius is not None, num_threads=p.num_threads)

    def run(self, ctx) -> GlobalResult:
        """Pass 1 per shard: ids, which have an image, (sha256, id) shuffled by digest; equal digests linked per
        partition; pHash links from the context's primitive; connected components = image groups. Pass 2 per shard:
        the conversation texts of samples in groups of two or more, shuffled by group. Pass 3 per partition: exact
        then near duplicates per group, in key order. The driver holds int arrays and the duplicates."""
        _check_columns(ctx, self)
        t0 = time.perf_counter()
        p = self.params
        views = ctx.views()
        edit_cols = turn_edit_columns(ctx.column_names)
        store = ctx.partitions(self.name)
        n_sha = ctx.n_partitions(SHA_ROWS_PER_PARTITION)
        with_phash = p.phash_radius is not None
        scans = list(ctx.map_fn(_dedup_scan_task, [(v, with_phash, n_sha, store.sub("sha")) for v in views]))
        ids = np.concatenate([s[0] for s in scans]) if scans else np.zeros(0, np.int64)
        has_image = np.concatenate([s[1] for s in scans]) if scans else np.zeros(0, bool)
        n = ids.size
        counts = sum((s[2] for s in scans), np.zeros(n_sha, np.int64))
        n_codes = sum(s[3] for s in scans)
        links = [np.zeros((0, 2), np.int64)]
        links += list(ctx.map_fn(_equal_links_task, [(store.sub("sha"), q) for q in np.flatnonzero(counts)]))
        same_bytes = int(sum(len(x) for x in links))
        radius, n_phash_pairs = None, 0
        if p.phash_radius is not None and n_codes:
            radius = (
                min(DEFAULT_PHASH_MAX_DISTANCE, auto_phash_radius(n_codes))
                if p.phash_radius == "auto"
                else int(p.phash_radius)
            )
            phash_links, n_phash_pairs = ctx.near_links(
                self.name, [functools.partial(phash_codes, v) for v in views], radius
            )
            links.append(phash_links)
        comp = connected_components(n, np.searchsorted(ids, np.concatenate(links)))
        group = comp.copy()
        text_only = ~has_image
        if p.text_only == "together":
            group[text_only] = n  # one more label: every text-only conversation
        sizes = np.bincount(group, minlength=n + 1) if n else np.zeros(1, np.int64)
        candidate = sizes[group] >= 2 if n else np.zeros(0, bool)
        # pass 2: texts of the candidates, by group
        n_text = ctx.n_partitions(TEXT_ROWS_PER_PARTITION)
        bounds = np.cumsum([0] + [len(s[0]) for s in scans])
        tasks = []
        for v, a, b in zip(views, bounds[:-1], bounds[1:]):
            g = np.where(candidate[a:b], group[a:b], -1)
            if (g >= 0).any():
                tasks.append((v, edit_cols, g, n_text, store.sub("text")))
        text_counts = sum(ctx.map_fn(_dedup_text_task, tasks), np.zeros(n_text, np.int64))
        found = list(
            ctx.map_fn(
                _dedup_group_task,
                [
                    (store.sub("text"), q, p.threshold, p.shingle, p.num_perm, p.seed, p.near)
                    for q in np.flatnonzero(text_counts)
                ],
            )
        )
        dups = pa.concat_tables(found).sort_by(SAMPLE_ID) if found else None
        if dups is None or not dups.num_rows:
            rejected, duplicates = no_rejects(), DUPLICATES_SCHEMA.empty_table()
            dup_ids = np.zeros(0, np.int64)
            n_exact = n_near = 0
        else:
            dup_ids = dups.column(SAMPLE_ID).to_numpy().astype(np.int64)
            kinds = dups.column("kind").to_pylist()
            reps = dups.column("duplicate_of").to_pylist()
            dist = dups.column("distance").to_numpy()
            reasons = [
                "duplicate_conversation" if k == "conversation" else "near_duplicate_conversation" for k in kinds
            ]
            details = [
                f"same conversation as {r}" if k == "conversation" else f"near copy of {r} (Jaccard {1 - d:.2f})"
                for k, r, d in zip(kinds, reps, dist)
            ]
            rejected = with_sample_ids(
                rejects_table(
                    dups.column("key").to_pylist(), dups.column("source").to_pylist(), self.name, reasons, details
                ),
                dup_ids,
            )
            duplicates = conform_duplicates(dups.select(["key", "duplicate_of", "kind", "distance"]))
            n_exact = kinds.count("conversation")
            n_near = len(kinds) - n_exact
        # image_group: the image components numbered in the order of their smallest key
        columns = None
        image_rows = np.flatnonzero(has_image)
        n_groups = shared = largest = 0
        if image_rows.size:
            rank = key_ranks(ctx, self.name, ids)
            labels, inv = np.unique(comp[image_rows], return_inverse=True)
            inv = inv.reshape(-1)
            first = np.full(labels.size, np.iinfo(np.int64).max)
            np.minimum.at(first, inv, rank[image_rows])
            number = np.argsort(np.argsort(first, kind="stable"), kind="stable")[inv]
            gsize = np.bincount(inv)
            n_groups, shared, largest = int(labels.size), int((gsize > 1).sum()), int(gsize.max())
            alive = ~np.isin(ids[image_rows], dup_ids)
            columns = pa.table(
                {
                    "image_group": pa.array(number[alive].astype(np.int64), pa.int64()),
                    SAMPLE_ID: pa.array(ids[image_rows][alive], pa.int64()),
                }
            )
        stats = InstructionDedupStats(
            samples=int(n),
            text_only=int(text_only.sum()),
            image_groups=n_groups,
            shared_image_groups=shared,
            largest_image_group=largest,
            same_bytes_links=same_bytes,
            phash_radius=radius,
            phash_pairs=int(n_phash_pairs),
            compared=int(candidate.sum()),
            duplicate_conversations=int(n_exact),
            near_duplicate_conversations=int(n_near),
            threshold=float(p.threshold) if p.near else None,
            shingle=p.shingle if p.near else None,
            partitions=int(n_text),
            seconds=round(time.perf_counter() - t0, 4),
        )
        return GlobalResult(rejected=rejected, duplicates=duplicates, columns=columns, stats=stats)


# ---------------------------------------------------------------------------------------------------------
# answer_balance


@dataclass
class AnswerBalanceStats(StepStats):
    pairs: int | None = None  # question/answer pairs
    answer_classes: dict | None = None  # classify_answer's classes over every answer
    yes: int | None = None
    no: int | None = None
    yes_ratio_before: float | None = None
    yes_ratio_after: float | None = None
    target: float | None = None
    tolerance: float | None = None
    pairs_removed: int | None = None
    removed_class: str | None = None
    conversations_edited: int | None = None  # samples that lost pairs and stay
    samples_rejected: int | None = None  # samples left without a pair (reason answer_balance)
    per_task_type: dict | None = None  # {type: {yes, no, yes_ratio, removed}}
    templates: int | None = None  # question templates among the yes/no questions
    per_template: list | None = None  # the largest yes/no templates: {template, yes, no, yes_ratio, removed}
    warning: str | None = None


@registry.register
class AnswerBalance(GlobalStage):
    """Answer classes and the yes-ratio, overall, per question template and per task type; with ``yes_ratio``, the
    fewest yes (or no) pairs removed to reach it within ``tolerance`` (module docstring). Reason: answer_balance (a
    sample whose every pair went)."""

    name = "answer_balance"
    requires = ("key", "source", "turns")

    @dataclass
    class Params:
        yes_ratio: float | None = None  # target share of yes among yes/no answers; null: measure only
        tolerance: float = 0.02
        seed: int = 0
        report_templates: int = 10  # templates listed in the stats

        def validate(self):
            check_number("yes_ratio", self.yes_ratio, 0, 1, optional="measure only")
            check_number("tolerance", self.tolerance, 0, 0.5)
            check_seed(self.seed)
            check_int("report_templates", self.report_templates, 0)

    def run(self, ctx) -> GlobalResult:
        _check_columns(ctx, self)
        t0 = time.perf_counter()
        p = self.params
        edit_cols = turn_edit_columns(ctx.column_names)
        scans = list(ctx.map_fn(_answer_scan_task, [(v, edit_cols) for v in ctx.views()]))
        ids = np.concatenate([s[0] for s in scans]) if scans else np.zeros(0, np.int64)
        n_pairs = np.concatenate([s[1] for s in scans]) if scans else np.zeros(0, np.int64)
        offsets = np.cumsum([0] + [len(s[0]) for s in scans])
        sample = np.concatenate([s[2] + o for s, o in zip(scans, offsets)]) if scans else np.zeros(0, np.int64)
        q_turn = np.concatenate([s[3] for s in scans]) if scans else np.zeros(0, np.int64)
        a_turn = np.concatenate([s[4] for s in scans]) if scans else np.zeros(0, np.int64)
        cls = np.concatenate([s[5] for s in scans]) if scans else np.zeros(0, "<U3")
        skel = [x for s in scans for x in s[6]]
        ttype = [x for s in scans for x in s[7]]
        classes: Counter = Counter()
        for s in scans:
            classes.update(s[8])
        stats = AnswerBalanceStats(
            pairs=int(n_pairs.sum()),
            answer_classes={c: int(classes[c]) for c in sorted(classes)},
            target=p.yes_ratio,
            tolerance=p.tolerance if p.yes_ratio is not None else None,
        )
        rejected, columns = no_rejects(), None
        removed = np.zeros(cls.size, bool)
        if cls.size:
            rank = key_ranks(ctx, self.name, ids)
            conv = rank[sample]
            order = np.lexsort((a_turn, conv))  # by key, then turn: no context changes it
            sample, conv, q_turn, a_turn, cls = sample[order], conv[order], q_turn[order], a_turn[order], cls[order]
            skel = [skel[i] for i in order]
            ttype = [ttype[i] for i in order]
            names, tids = np.unique(np.asarray(skel, dtype=str), return_inverse=True)
            tids = tids.reshape(-1)
            if p.yes_ratio is not None:
                per_conv = np.zeros(ids.size, np.int64)
                per_conv[rank] = n_pairs
                reb = rebalance_yes_no(conv, a_turn, cls, tids, p.yes_ratio, p.tolerance, p.seed, per_conv)
                removed = reb.removed
                if not reb.feasible:
                    side = "no" if reb.yes_ratio_before > p.yes_ratio else "yes"
                    stats.warning = (
                        f"there are no '{side}' answers: only removing every other yes/no answer would reach "
                        f"yes_ratio {p.yes_ratio}; nothing was removed"
                    )
                rejected, columns, stats.conversations_edited = self._apply(
                    ctx, ids, sample, q_turn, a_turn, removed, cls, edit_cols
                )
                stats.removed_class = reb.removed_class
            before = yes_no_stats(cls, tids)
            after = yes_no_stats(cls[~removed], tids[~removed]) if removed.any() else before
            stats.yes, stats.no = before.n_yes, before.n_no
            stats.yes_ratio_before = _ratio(before.n_yes, before.n_no)
            stats.yes_ratio_after = _ratio(after.n_yes, after.n_no)
            stats.pairs_removed = int(removed.sum())
            stats.samples_rejected = int(rejected.num_rows)
            by_type: dict = {}
            for t, c, r in zip(ttype, cls.tolist(), removed.tolist()):
                d = by_type.setdefault(t, {"yes": 0, "no": 0, "removed": 0})
                d[c] += 1
                d["removed"] += int(r)
            stats.per_task_type = {
                t: {**by_type[t], "yes_ratio": _ratio(by_type[t]["yes"], by_type[t]["no"])}
                for t in TASK_TYPES
                if t in by_type
            }
            total = before.template_yes + before.template_no
            gone = np.bincount(tids[removed], minlength=names.size)
            top = np.lexsort((np.arange(total.size), -total))[: p.report_templates]
            stats.templates = int(names.size)
            stats.per_template = [
                {
                    "template": str(names[i]),
                    "yes": int(before.template_yes[i]),
                    "no": int(before.template_no[i]),
                    "yes_ratio": _ratio(int(before.template_yes[i]), int(before.template_no[i])),
                    "removed": int(gone[i]),
                }
                for i in top
            ]
        else:
            stats.yes = stats.no = stats.pairs_removed = stats.samples_rejected = 0
        stats.seconds = round(time.perf_counter() - t0, 4)
        return GlobalResult(rejected=rejected, columns=columns, stats=stats)

    def _apply(self, ctx, ids, sample, q_turn, a_turn, removed, cls, edit_cols):
        """(rejects of the samples left without a pair, the edits of the others, how many were edited)."""
        if not removed.any():
            return no_rejects(), None, 0
        rows = np.flatnonzero(removed)
        by_sample: dict[int, list[int]] = {}
        for r in rows.tolist():
            by_sample.setdefault(int(sample[r]), []).append(r)
        touched = np.array(sorted(by_sample), np.int64)
        t = ctx.fetch(ids[touched], ["turns", *edit_cols])
        turns = current_turns(t, edit_cols)
        gone_ids, gone_details, edit_ids, edits = [], [], [], []
        for j, s in enumerate(touched.tolist()):
            rs = by_sample[s]
            conv = turns[j]
            n_left = len(conversation_pairs(conv)) - len(rs)
            if n_left <= 0:
                gone_ids.append(int(ids[s]))
                what = Counter(cls[rs].tolist())
                gone_details.append(
                    f"its {len(rs)} question/answer pair(s) ({', '.join(f'{k} {v}' for k, v in sorted(what.items()))}) "
                    f"were removed to balance the yes-ratio to {self.params.yes_ratio} ± {self.params.tolerance}"
                )
                continue
            edit_ids.append(int(ids[s]))
            edits.append(edit_list(removal_edits(conv, q_turn[rs].tolist(), a_turn[rs].tolist())))
        rejected = reject_table(ctx, self.name, gone_ids, ["answer_balance"] * len(gone_ids), gone_details)
        return rejected, edits_column(self.name, edit_ids, edits), len(edit_ids)


def removal_edits(turns: list, question_turns: list[int], answer_turns: list[int]) -> dict[int, str | None]:
    """{turn: None} for the pairs removed from a conversation (removed turns as None), and the `<image>`
    placeholders those questions held handed to the next remaining question (before its text, as LLaVA writes them;
    after the previous one's text when none follows), so the conversation still names every image."""
    gone = set(question_turns) | set(answer_turns)
    edits: dict[int, str | None] = dict.fromkeys(gone)
    humans = [k for k, t in enumerate(turns) if t is not None and k not in gone and turn_role_text(t)[0] in HUMAN_ROLES]
    for q in sorted(question_turns):
        text = turns[q]["text"] or ""
        count = text.count(IMAGE_TOKEN)
        if not count:
            continue
        after = [k for k in humans if k > q]
        before = [k for k in humans if k < q]
        if after:
            k = after[0]
            edits[k] = IMAGE_TOKEN * count + "\n" + (edits.get(k) or turns[k]["text"] or "")
        elif before:
            k = before[-1]
            edits[k] = (edits.get(k) or turns[k]["text"] or "") + "\n" + IMAGE_TOKEN * count
    return edits


# ---------------------------------------------------------------------------------------------------------
# option_order


@dataclass
class OptionOrderStats(StepStats):
    policy: str | None = None
    multiple_choice: int | None = None  # multiple-choice question/answer pairs
    with_answer: int | None = None  # whose answer names an option
    options: dict | None = None  # pairs by number of options
    negative_options: int | None = None  # pairs with a none / not-present option
    letters_before: dict | None = None  # the correct letter's counts
    chi2_before: float | None = None
    p_value_before: float | None = None
    letters_after: dict | None = None
    chi2_after: float | None = None
    p_value_after: float | None = None
    reordered: int | None = None  # questions whose options moved
    answers_remapped: int | None = None  # answers whose letter changed
    unverified: int | None = None  # reorders left undone: the rewritten pair no longer parsed to the same answer


OPTION_POLICIES = ("report", *POLICIES)


@registry.register
class OptionOrder(GlobalStage):
    """Multiple-choice questions: the correct-letter distribution (chi-square against uniform per option count) and
    the ``policy`` (module docstring); the answer's letter is remapped with the options, checked on every pair."""

    name = "option_order"
    requires = ("key", "source", "turns")

    @dataclass
    class Params:
        policy: str = "report"  # report | shuffle | negative_last | shuffle_negative_last
        seed: int = 0

        def validate(self):
            check_choice("policy", self.policy, OPTION_POLICIES)
            check_seed(self.seed)

    def run(self, ctx) -> GlobalResult:
        _check_columns(ctx, self)
        t0 = time.perf_counter()
        p = self.params
        edit_cols = turn_edit_columns(ctx.column_names)
        scans = list(ctx.map_fn(_option_scan_task, [(v, edit_cols) for v in ctx.views()]))
        ids = np.concatenate([s[0] for s in scans]) if scans else np.zeros(0, np.int64)
        offsets = np.cumsum([0] + [len(s[0]) for s in scans])
        found = [(int(pos + o), q, a, mc) for s, o in zip(scans, offsets) for pos, q, a, mc in s[1]]
        columns = None
        stats = OptionOrderStats(policy=p.policy, multiple_choice=len(found))
        if found:
            rank = key_ranks(ctx, self.name, ids)
            found.sort(key=lambda f: (rank[f[0]], f[2]))
            items = [f[3] for f in found]
            answered = [mc for mc in items if mc.correct_index is not None]
            stats.with_answer = len(answered)
            stats.options = {str(k): v for k, v in sorted(Counter(mc.n_options for mc in items).items())}
            stats.negative_options = sum(any(is_negative_option(t) for t in mc.texts) for mc in items)
            stats.letters_before, stats.chi2_before, stats.p_value_before = _letters(
                [mc.correct_index for mc in answered], [mc.n_options for mc in answered]
            )
            after = [mc.correct_index for mc in items]
            if p.policy != "report":
                by_sample: dict[int, dict] = {}
                reordered = remapped = unverified = 0
                for k, (r, (s, q, a, mc)) in enumerate(zip(reorder_dataset(items, p.policy, p.seed), found)):
                    if r.question == mc.question and r.answer == mc.answer:
                        continue
                    if not consistent(mc, r):
                        unverified += 1
                        continue
                    edit = by_sample.setdefault(s, {})
                    edit[q] = r.question
                    reordered += 1
                    if r.answer != mc.answer:
                        edit[a] = r.answer
                        remapped += 1
                    after[k] = r.correct_index
                stats.reordered, stats.answers_remapped, stats.unverified = reordered, remapped, unverified
                edited = sorted(by_sample)
                columns = edits_column(self.name, ids[edited], [edit_list(by_sample[s]) for s in edited])
            done = [(c, mc.n_options) for c, mc in zip(after, items) if c is not None]
            stats.letters_after, stats.chi2_after, stats.p_value_after = _letters(
                [c for c, _ in done], [k for _, k in done]
            )
        stats.seconds = round(time.perf_counter() - t0, 4)
        return GlobalResult(rejected=no_rejects(), columns=columns, stats=stats)


def consistent(mc, reordered) -> bool:
    """Whether the rewritten question and answer parse to the same options, and the answer names the same option
    text as before (None: it named none and still names none)."""
    new = parse_multiple_choice(reordered.question, reordered.answer)
    if new is None or new.n_options != mc.n_options or sorted(new.texts) != sorted(mc.texts):
        return False
    if mc.correct_index is None:
        return new.correct_index is None
    return new.correct_index == reordered.correct_index and new.texts[new.correct_index] == mc.texts[mc.correct_index]


# ---------------------------------------------------------------------------------------------------------
# template_stats


@dataclass
class TemplateStepStats(StepStats):
    questions: int | None = None
    samples: int | None = None  # samples with a question
    distinct_skeletons: int | None = None
    top10_share: float | None = None
    distinct_2: float | None = None
    compression_ratio: float | None = None
    top: list | None = None  # [{skeleton, questions, share}]
    max_per_template: int | None = None
    templates_capped: int | None = None
    samples_capped: int | None = None


@registry.register
class TemplateStats(GlobalStage):
    """Question skeletons over every question of the kept conversations (curate.templates.template_stats), and with
    ``max_per_template`` a cap on the samples per skeleton of their first question (which ones stay: the lowest
    hash of key and seed). Reason: template_cap."""

    name = "template_stats"
    requires = ("key", "source", "turns")

    @dataclass
    class Params:
        max_per_template: int | None = None  # null: measure only
        seed: int = 0
        top: int = 10  # skeletons listed in the stats

        def validate(self):
            check_int("max_per_template", self.max_per_template, 1, optional="no cap")
            check_seed(self.seed)
            check_int("top", self.top, 0)

    def run(self, ctx) -> GlobalResult:
        _check_columns(ctx, self)
        t0 = time.perf_counter()
        p = self.params
        edit_cols = turn_edit_columns(ctx.column_names)
        cap = p.max_per_template
        scans = list(ctx.map_fn(_template_scan_task, [(v, edit_cols, cap is not None, p.seed) for v in ctx.views()]))
        ids = np.concatenate([s[0] for s in scans]) if scans else np.zeros(0, np.int64)
        n_q = np.concatenate([s[1] for s in scans]) if scans else np.zeros(0, np.int64)
        questions = [q for s in scans for q in s[2]]
        rejected = no_rejects()
        stats = TemplateStepStats(questions=len(questions), samples=int((n_q > 0).sum()), max_per_template=cap)
        if questions:
            rank = key_ranks(ctx, self.name, ids)
            owner = np.repeat(rank, n_q)
            order = np.argsort(owner, kind="stable")  # by key, then pair: the compression ratio reads them in order
            ts = template_stats([questions[i] for i in order])
            stats.distinct_skeletons = ts.distinct_skeletons
            stats.top10_share = round(ts.top10_share, 4)
            stats.distinct_2 = round(ts.distinct_2, 4)
            stats.compression_ratio = round(ts.compression_ratio, 4)
            stats.top = [{"skeleton": sk, "questions": c, "share": round(c / ts.n, 4)} for sk, c in ts.top[: p.top]]
        if cap is not None:
            first = [x for s in scans for x in s[3]]
            prio = np.concatenate([s[4] for s in scans]) if scans else np.zeros(0, np.uint64)
            has = np.flatnonzero(np.array([f is not None for f in first], bool))
            stats.templates_capped = stats.samples_capped = 0
            if has.size:
                names, tids = np.unique(np.asarray([first[i] for i in has], dtype=str), return_inverse=True)
                tids = tids.reshape(-1)
                keep = cap_per_template(tids, cap, priority=prio[has])
                out = np.flatnonzero(~keep)
                stats.samples_capped = int(out.size)
                stats.templates_capped = int(np.unique(tids[out]).size)
                details = [
                    f"template {_short(str(names[tids[i]]))!r} keeps {cap} samples (max_per_template)" for i in out
                ]
                rejected = reject_table(ctx, self.name, ids[has[out]], ["template_cap"] * out.size, details)
        stats.seconds = round(time.perf_counter() - t0, 4)
        return GlobalResult(rejected=rejected, stats=stats)


def _short(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


# ---------------------------------------------------------------------------------------------------------
# task_mix


@dataclass
class TaskMixStats(StepStats):
    counts: dict | None = None  # conversations per task type
    shares: dict | None = None
    target: dict | None = None
    caps: dict | None = None  # the most samples a capped type keeps
    counts_after: dict | None = None
    dialogue_min_pairs: int | None = None


@registry.register
class TaskMix(GlobalStage):
    """The task type of every conversation (curate.tasks: grounding, multiple_choice, counting, ocr, yes_no,
    captioning, reasoning, short_vqa, open_vqa, dialogue, empty) as the `task_type` column, and the counts. With
    ``target`` ({type: share}), a type holding more than its share of the kept samples is capped to it (types not
    listed are not capped; which samples stay: the lowest hash of key and seed). Reason: task_mix_cap."""

    name = "task_mix"
    requires = ("key", "source", "turns")

    @dataclass
    class Params:
        target: dict | None = None  # {task type: the most it may hold of the kept samples, in (0, 1]}; null: count
        dialogue_min_pairs: int = 3  # pairs of two or more types from which a conversation is a dialogue
        seed: int = 0

        def validate(self):
            if self.target is not None:
                if not isinstance(self.target, dict) or not self.target:
                    raise ValueError(f"target must be a mapping {{task type: share}} or null, got {self.target!r}")
                for t, s in self.target.items():
                    if t not in TASK_TYPES:
                        raise ValueError(f"target: unknown task type {t!r}; valid: {', '.join(TASK_TYPES)}")
                    check_number(f"target.{t}", s, 0, 1, lo_open=True)
                if sum(self.target.values()) > 1 + 1e-9:
                    raise ValueError(f"target shares add up to {sum(self.target.values()):g}, more than 1")
            check_int("dialogue_min_pairs", self.dialogue_min_pairs, 1)
            check_seed(self.seed)

    def run(self, ctx) -> GlobalResult:
        _check_columns(ctx, self)
        t0 = time.perf_counter()
        p = self.params
        edit_cols = turn_edit_columns(ctx.column_names)
        scans = list(ctx.map_fn(_task_scan_task, [(v, edit_cols, p.dialogue_min_pairs, p.seed) for v in ctx.views()]))
        ids = np.concatenate([s[0] for s in scans]) if scans else np.zeros(0, np.int64)
        types = np.concatenate([s[1] for s in scans]) if scans else np.zeros(0, "<U15")
        prio = np.concatenate([s[2] for s in scans]) if scans else np.zeros(0, np.uint64)
        counts = Counter(types.tolist())
        stats = TaskMixStats(
            counts={t: counts[t] for t in TASK_TYPES if counts[t]},
            shares={t: round(counts[t] / ids.size, 4) for t in TASK_TYPES if counts[t]},
            target=p.target,
            dialogue_min_pairs=p.dialogue_min_pairs,
        )
        keep = np.ones(ids.size, bool)
        rejected = no_rejects()
        if p.target is not None and ids.size:
            caps = mix_caps(dict(counts), p.target)
            stats.caps = {t: caps[t] for t in TASK_TYPES if t in caps}
            rank = key_ranks(ctx, self.name, ids)
            details_of = {}
            for t, c in caps.items():
                rows = np.flatnonzero(types == t)
                if rows.size <= c:
                    continue
                order = rows[np.lexsort((rank[rows], prio[rows]))]
                keep[order[c:]] = False
                details_of[t] = f"{t} above its target share {p.target[t]} (keeps {c})"
            out = np.flatnonzero(~keep)
            rejected = reject_table(
                ctx, self.name, ids[out], ["task_mix_cap"] * out.size, [details_of[types[i]] for i in out]
            )
            after = Counter(types[keep].tolist())
            stats.counts_after = {t: after[t] for t in TASK_TYPES if after[t]}
        columns = pa.table({"task_type": pa.array(types[keep].tolist(), pa.string()), SAMPLE_ID: pa.array(ids[keep])})
        stats.seconds = round(time.perf_counter() - t0, 4)
        return GlobalResult(rejected=rejected, columns=columns, stats=stats)


def mix_caps(counts: dict, target: dict) -> dict[str, int]:
    """The most samples each targeted type may keep so that it holds at most its share of what is kept: the largest
    total N with N = sum over types of min(count, floor(share * N)) (untargeted types: count), found by iterating
    down from the total. Only the types whose count exceeds their cap are returned."""
    n = sum(counts.values())
    for _ in range(100000):
        caps = {t: math.floor(s * n + 1e-9) for t, s in target.items()}
        n2 = sum(min(c, caps[t]) if t in caps else c for t, c in counts.items())
        if n2 >= n:
            break
        n = n2
    return {t: c for t, c in caps.items() if counts.get(t, 0) > c}


# ---------------------------------------------------------------------------------------------------------
# tasks (module level: they travel to worker processes and Ray workers by reference)


def _dedup_scan_task(task):
    """One shard: ids, has-image, its (sha256, id) rows routed by digest hash, its count of pHashes."""
    view, with_phash, n_part, store = task
    cols = ["sha256"] + (["phash"] if with_phash else [])
    t = view.read(cols)
    ids = t.column(SAMPLE_ID).to_numpy().astype(np.int64)
    has_image = t.column("sha256").is_valid().to_numpy(zero_copy_only=False)
    n_codes = int(t.column("phash").is_valid().to_numpy(zero_copy_only=False).sum()) if "phash" in cols else 0
    g = pa.table({"v": t.column("sha256"), "id": t.column(SAMPLE_ID)}).filter(pa.array(has_image))
    part = (string_hash64(g.column("v")) % np.uint64(n_part)).astype(np.int64) if n_part > 1 else None
    counts = store.write(g, part, n_part, f"s{view.index:05d}")
    return ids, has_image, counts, n_codes


def _equal_links_task(task):
    """Links of one partition of (sha256, id): every sample to the smallest id of its digest."""
    import pyarrow.compute as pc

    store, q = task
    t = store.read(q)
    ids = t.column("id").to_numpy().astype(np.int64)
    codes = pc.dictionary_encode(t.column("v")).combine_chunks().indices.to_numpy().astype(np.int64)
    first = np.full(int(codes.max()) + 1 if codes.size else 0, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, codes, ids)
    links = np.stack([ids, first[codes]], axis=1)
    return links[links[:, 0] != links[:, 1]]


def _dedup_text_task(task):
    """One shard's candidates (group >= 0): (id, key, source, group, conversation text), routed by group."""
    view, edit_cols, group, n_part, store = task
    sel = np.flatnonzero(group >= 0)
    t = view.read(["key", "source", "turns", *edit_cols]).take(pa.array(sel))
    texts = [conversation_text(present(c)) for c in current_turns(t, edit_cols)]
    g = group[sel].astype(np.int64)
    out = pa.table(
        {
            SAMPLE_ID: t.column(SAMPLE_ID),
            "key": t.column("key"),
            "source": t.column("source"),
            "group": pa.array(g, pa.int64()),
            "text": pa.array(texts, pa.string()),
        }
    )
    part = (mix64(g.astype(np.uint64) + np.uint64(GOLDEN)) % np.uint64(n_part)).astype(np.int64) if n_part > 1 else None
    return store.write(out, part, n_part, f"s{view.index:05d}")


def _dedup_group_task(task):
    """One partition's groups: exact, then near duplicates within each group, members in key order (what a group
    finds depends on its own texts only). Rows: SAMPLE_ID, key, source, duplicate_of (key), kind, distance."""
    store, q, threshold, shingle, num_perm, seed, near = task
    t = store.read(q).sort_by([("group", "ascending"), ("key", "ascending")])
    texts = t.column("text").to_pylist()
    group = t.column("group").to_numpy()
    n = len(texts)
    rep = text_dedup.exact_duplicate_groups(texts, group_ids=group)
    dup = np.flatnonzero(rep != np.arange(n))
    target, kind, dist = list(rep[dup]), ["conversation"] * dup.size, [0.0] * dup.size
    dup = list(dup)
    if near:
        live = np.flatnonzero(rep == np.arange(n))
        nd = text_dedup.near_duplicate_groups(
            [texts[i] for i in live],
            group_ids=group[live],
            threshold=threshold,
            num_perm=num_perm,
            seed=seed,
            shingle=shingle,
        )
        d = np.flatnonzero(nd.is_duplicate)
        if d.size:
            r = nd.representative[d]
            pair_texts = [texts[live[i]] for i in d] + [texts[live[i]] for i in r]
            hashes, offsets = text_dedup.shingle_hashes(pair_texts, shingle)
            jac = text_dedup.exact_jaccard(
                hashes, offsets, np.stack([np.arange(d.size), d.size + np.arange(d.size)], 1)
            )
            dup += list(live[d])
            target += list(live[r])
            kind += ["near_conversation"] * d.size
            dist += [round(1.0 - float(j), 4) for j in jac]
    dup_a, target_a = pa.array(np.asarray(dup, np.int64)), pa.array(np.asarray(target, np.int64))
    return pa.table(
        {
            SAMPLE_ID: t.column(SAMPLE_ID).take(dup_a),
            "key": t.column("key").take(dup_a),
            "source": t.column("source").take(dup_a),
            "duplicate_of": t.column("key").take(target_a),
            "kind": pa.array(kind, pa.string()),
            "distance": pa.array(dist, pa.float64()),
        }
    )


def _answer_scan_task(task):
    """One shard: ids, pairs per sample, and per yes/no pair its sample's position, question and answer turn, class,
    question skeleton and task type; the answer classes of every pair."""
    view, edit_cols = task
    t = view.read(["turns", *edit_cols])
    ids = t.column(SAMPLE_ID).to_numpy().astype(np.int64)
    n_pairs = np.zeros(ids.size, np.int64)
    pos, qs, as_, cls, skel, ttype = [], [], [], [], [], []
    classes: Counter = Counter()
    seen: dict[str, str] = {}
    for j, conv in enumerate(current_turns(t, edit_cols)):
        pairs = conversation_pairs(conv)
        n_pairs[j] = len(pairs)
        for pr in pairs:
            answer = pr.answer.strip()
            c = seen.get(answer) or seen.setdefault(answer, classify_answer(answer))
            classes[c] += 1
            if c not in ("yes", "no"):
                continue
            question = strip_image_tokens(pr.question)
            pos.append(j)
            qs.append(pr.question_turn)
            as_.append(pr.answer_turn)
            cls.append(c)
            skel.append(skeleton(question))
            ttype.append(turn_task_type(question, answer))
    return (
        ids,
        n_pairs,
        np.asarray(pos, np.int64),
        np.asarray(qs, np.int64),
        np.asarray(as_, np.int64),
        np.asarray(cls, dtype="<U3"),
        skel,
        ttype,
        classes,
    )


def _option_scan_task(task):
    """One shard: ids, and (position, question turn, answer turn, MultipleChoice) of every multiple-choice pair."""
    view, edit_cols = task
    t = view.read(["turns", *edit_cols])
    ids = t.column(SAMPLE_ID).to_numpy().astype(np.int64)
    found = []
    for j, conv in enumerate(current_turns(t, edit_cols)):
        for pr in conversation_pairs(conv):
            mc = parse_multiple_choice(pr.question, pr.answer)
            if mc is not None:
                found.append((j, pr.question_turn, pr.answer_turn, mc))
    return ids, found


def _template_scan_task(task):
    """One shard: ids, questions per sample, the questions, and (for the cap) each sample's first-question skeleton
    and its key's priority."""
    view, edit_cols, for_cap, seed = task
    t = view.read(["key", "turns", *edit_cols])
    ids = t.column(SAMPLE_ID).to_numpy().astype(np.int64)
    n_q = np.zeros(ids.size, np.int64)
    questions, first = [], []
    for j, conv in enumerate(current_turns(t, edit_cols)):
        qs = [strip_image_tokens(pr.question) for pr in conversation_pairs(conv)]
        n_q[j] = len(qs)
        questions += qs
        if for_cap:
            first.append(skeleton(qs[0]) if qs else None)
    prio = key_priority(t.column("key"), seed) if for_cap else None
    return ids, n_q, questions, first, prio


def _task_scan_task(task):
    """One shard: ids, the task type of each conversation, its key's priority."""
    view, edit_cols, min_pairs, seed = task
    t = view.read(["key", "turns", *edit_cols])
    ids = t.column(SAMPLE_ID).to_numpy().astype(np.int64)
    types = [task_type(present(conv), min_pairs) for conv in current_turns(t, edit_cols)]
    return ids, np.asarray(types, dtype="<U15"), key_priority(t.column("key"), seed)
