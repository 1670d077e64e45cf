"""negative_synthesis (instruction data; optional, not in the llava recipe): POPE-style negative question/answer
pairs appended to conversations.

For each sample with an image (an `image_embedding` from clip_embed earlier in the recipe; text-only samples and
samples without an embedding are left alone), ``per_sample`` pairs "Is there a {object} in the image?" -> "No" are
appended, about objects absent from the image. The algorithm is curate.negatives':

1. The object vocabulary: the nouns (curate.negatives.object_nouns, a documented rule) of every survivor's
   questions, answers and caption (the conversation as the earlier global steps left it), kept when found in at
   least ``min_df`` samples, the ``max_vocabulary`` most frequent.
2. Candidates per sample, never a word of the sample's own text, ordered by ``strategy``: ``random``,
   ``popularity`` or ``co_occurrence`` (POPE's random / popular / adversarial settings; co-occurrence counts over
   the vocabulary, computed in a second pass).
3. The absent check: the CLIP score (cosine) of the image embedding and the embedding of the object's prompt ("a
   photo of a dog.", embedded once per vocabulary word with the step's model: ``model``/``pretrained``/``weights``/
   ``device`` as clip_embed's, and it must be the model clip_embed used) must be below ``max_score``; a candidate
   at or above it is never asked about. The first ``per_sample`` candidates that pass are used.
4. Phrasing: a question template of ``templates`` (12 built in) and the answer "No" or, with ``open_answers``, an
   LRV-style "There is no dog in the image.", drawn from a generator seeded by the sample's key and ``seed``.

Output: the pairs are appends in the `negative_synthesis_turn_edits` column (pipeline.write_phase: turn -1), which
the write phase applies, so the output shard's JSON, samples.parquet and the LLaVA export hold them, each appended
element of `conversations` marked ``"synthetic": true``; `negatives_added` (int32) counts them per sample (null:
none). Later global steps (answer_balance, template_stats, ...) see them. Nothing is rejected. The results depend on
the sample's key and the data set's vocabulary only: the same in memory and sharded mode, in any task order.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from mmcurate.curate import negatives as neg
from mmcurate.curate.conversations import strip_image_tokens
from mmcurate.pipeline.params import (
    check_bool,
    check_choice,
    check_device,
    check_int,
    check_number,
    check_seed,
    check_text,
)
from mmcurate.pipeline.schema import REJECTS_SCHEMA
from mmcurate.pipeline.stage import (
    SAMPLE_ID,
    GlobalResult,
    GlobalStage,
    StageError,
    StepStats,
    registry,
    with_sample_ids,
)
from mmcurate.pipeline.write_phase import APPEND_TURN, TURN_EDITS_SUFFIX, TURN_EDITS_TYPE, turn_edit_columns
from mmcurate.stages.clip import check_model, model_spec
from mmcurate.stages.embeddings import embedding_matrix
from mmcurate.stages.instruction import current_turns, present

IMAGE_EMBEDDING = "image_embedding"
#: Objects listed in the stats.
TOP_OBJECTS = 20


@dataclass
class NegativeSynthesisStats(StepStats):
    strategy: str | None = None
    max_score: float | None = None
    open_answers: bool | None = None
    vocabulary_size: int | None = None
    top_objects: list | None = None  # [[object, samples naming it], ...], most frequent first
    samples_with_image: int | None = None  # samples with a usable image embedding
    samples_edited: int | None = None  # samples that got pairs
    pairs_added: int | None = None
    candidates_above_threshold: int | None = None  # candidates not asked about: CLIP score >= max_score
    samples_short: int | None = None  # samples that got fewer than per_sample pairs (no candidate left)
    question_templates: dict | None = None  # template -> pairs phrased with it
    objects_asked: int | None = None  # distinct objects in the added questions
    warning: str | None = None


class _Plan(NamedTuple):
    """What every shard's task needs: the vocabulary, its prompt embeddings and the choice rules."""

    vocab: neg.Vocabulary
    text_emb: np.ndarray  # float32 [V, d], unit rows
    cooc: list | None
    strategy: str
    per_sample: int
    max_score: float
    templates: tuple
    open_answers: bool
    seed: int


@registry.register
class NegativeSynthesis(GlobalStage):
    """POPE-style negative pairs appended to conversations with an image (module docstring). Rejects nothing."""

    name = "negative_synthesis"
    requires = ("key", "source", "turns", IMAGE_EMBEDDING)
    reads_if_present = ("caption", "has_image")  # vocabulary from captions too; text-only samples are left alone

    @dataclass
    class Params:
        per_sample: int = 1  # pairs added per sample with an image
        strategy: str = "random"  # random | popularity | co_occurrence (POPE's settings)
        max_score: float = 0.22  # the absent check: CLIP score below this (ViT-B/32 scale)
        templates: list | None = None  # question templates naming {object} / {a_object}; null: the 12 built in
        open_answers: bool = False  # "There is no dog in the image." instead of "No"
        seed: int = 0
        min_df: int = 3  # samples that must name an object for it to enter the vocabulary
        max_vocabulary: int = 2000
        model: str | dict = "ViT-B-32"
        pretrained: str | None = None
        weights: str | None = None
        allow_download: bool = False
        device: str = "auto"

        def validate(self):
            check_int("per_sample", self.per_sample, 1, 100)
            check_choice("strategy", self.strategy, neg.STRATEGIES)
            check_number("max_score", self.max_score, -1, 1)
            if self.templates is not None:
                neg.check_templates(self.templates)
            check_bool("open_answers", self.open_answers)
            check_seed(self.seed)
            check_int("min_df", self.min_df, 1)
            check_int("max_vocabulary", self.max_vocabulary, 1)
            check_text("weights", self.weights, "a path or 'random'", optional=True)
            check_model(self.model, self.pretrained, self.weights)  # clip_embed's rules: names, ARCH/TAG, mappings
            check_bool("allow_download", self.allow_download)
            check_device(self.device, allow_index=True)

        def model_name(self) -> str | dict:
            return model_spec(self.model, self.pretrained)

    def _check_columns(self, ctx) -> None:
        missing = [c for c in self.requires if c not in ctx.column_names]
        if missing:
            hint = " (run clip_embed earlier in the recipe)" if IMAGE_EMBEDDING in missing else ""
            raise StageError(f"stage '{self.name}': input lacks column(s) {', '.join(missing)}{hint}")

    def embed_prompts(self, words: list[str]) -> np.ndarray:
        """The prompt embeddings of the vocabulary (float32 unit rows) with the step's CLIP model."""
        from mmcurate.models import load_clip
        from mmcurate.models.loader import WeightsMismatchError, WeightsNotFoundError

        p = self.params
        try:
            clip = load_clip(p.model_name(), weights=p.weights, allow_download=p.allow_download, device=p.device)
        except (WeightsNotFoundError, WeightsMismatchError) as exc:
            raise StageError(f"stage '{self.name}': cannot load weights for {p.model_name()!r}: {exc}") from exc
        except (RuntimeError, ValueError, KeyError) as exc:
            raise StageError(f"stage '{self.name}': cannot load {p.model_name()!r}: {exc}") from exc
        x = np.asarray(clip.embed_texts([neg.prompt(w) for w in words]), dtype=np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    def run(self, ctx) -> GlobalResult:
        self._check_columns(ctx)
        t0 = time.perf_counter()
        p = self.params
        edit_cols = turn_edit_columns(ctx.column_names)
        extra = [c for c in ("caption", "has_image") if c in ctx.column_names]
        views = list(ctx.views())
        df: Counter = Counter()
        for c in ctx.map_fn(_vocab_task, [(v, edit_cols, extra) for v in views]):
            df.update(c)
        vocab = neg.build_vocabulary(df, p.min_df, p.max_vocabulary)
        templates = tuple(p.templates) if p.templates is not None else neg.QUESTION_TEMPLATES
        stats = NegativeSynthesisStats(
            strategy=p.strategy,
            max_score=p.max_score,
            open_answers=p.open_answers,
            vocabulary_size=len(vocab.words),
            top_objects=[[w, int(c)] for w, c in zip(vocab.words[:TOP_OBJECTS], vocab.df[:TOP_OBJECTS].tolist())],
        )
        rejected = with_sample_ids(REJECTS_SCHEMA.empty_table(), [])
        if not vocab.words:
            stats.warning = f"no object is named by {p.min_df} or more samples: nothing was added"
            stats.samples_edited = stats.pairs_added = 0
            stats.seconds = round(time.perf_counter() - t0, 4)
            return GlobalResult(rejected=rejected, columns=None, stats=stats)
        cooc = None
        if p.strategy == "co_occurrence":
            pairs: Counter = Counter()
            for c in ctx.map_fn(_cooc_task, [(v, edit_cols, extra, vocab.words) for v in views]):
                pairs.update(c)
            cooc = neg.cooccurrence_lists(pairs, len(vocab.words))
        plan = _Plan(
            vocab,
            self.embed_prompts(vocab.words),
            cooc,
            p.strategy,
            p.per_sample,
            p.max_score,
            templates,
            p.open_answers,
            p.seed,
        )
        outs = list(ctx.map_fn(_negatives_task, [(v, edit_cols, extra, plan) for v in views]))
        ids = np.concatenate([o[0] for o in outs]) if outs else np.zeros(0, np.int64)
        edits = [e for o in outs for e in o[1]]
        added = np.concatenate([o[2] for o in outs]) if outs else np.zeros(0, np.int32)
        used: Counter = Counter()
        objects: set = set()
        for o in outs:
            used.update(o[3])
            objects |= o[4]
        stats.samples_with_image = int(sum(o[5] for o in outs))
        stats.candidates_above_threshold = int(sum(o[6] for o in outs))
        stats.samples_short = int(sum(o[7] for o in outs))
        stats.samples_edited = int(ids.size)
        stats.pairs_added = int(added.sum())
        stats.question_templates = {templates[t]: int(used[t]) for t in range(len(templates)) if used[t]}
        stats.objects_asked = len(objects)
        if any(o[8] for o in outs):
            stats.warning = "image embeddings of another dimension than the step's model: those samples were skipped"
        columns = None
        if ids.size:
            order = np.argsort(ids, kind="stable")
            columns = pa.table(
                {
                    self.name + TURN_EDITS_SUFFIX: pa.array([edits[i] for i in order], TURN_EDITS_TYPE),
                    "negatives_added": pa.array(added[order], pa.int32()),
                    SAMPLE_ID: pa.array(ids[order], pa.int64()),
                }
            )
        stats.seconds = round(time.perf_counter() - t0, 4)
        return GlobalResult(rejected=rejected, columns=columns, stats=stats)


# ---------------------------------------------------------------------------------------------------------
# tasks (module level: they travel to worker processes and Ray)


def _texts(t: pa.Table, edit_cols, extra) -> list[list[str]]:
    """Per row, its texts: every present turn (placeholders removed) and the caption."""
    convs = current_turns(t, edit_cols)
    captions = t.column("caption").to_pylist() if "caption" in extra else [None] * t.num_rows
    out = []
    for conv, cap in zip(convs, captions):
        texts = [strip_image_tokens(x["text"]) for x in present(conv) if isinstance(x.get("text"), str)]
        if isinstance(cap, str):
            texts.append(cap)
        out.append(texts)
    return out


def _vocab_task(task) -> Counter:
    """One shard: noun -> samples naming it."""
    view, edit_cols, extra = task
    t = view.read(["turns", *edit_cols, *extra])
    df: Counter = Counter()
    for texts in _texts(t, edit_cols, extra):
        df.update(neg.sample_nouns(texts))
    return df


def _cooc_task(task) -> Counter:
    """One shard: (i, j) -> samples naming both vocabulary words."""
    view, edit_cols, extra, words = task
    index = {w: i for i, w in enumerate(words)}
    t = view.read(["turns", *edit_cols, *extra])
    return neg.cooccurrence_counts(
        [index[n] for n in neg.sample_nouns(texts) if n in index] for texts in _texts(t, edit_cols, extra)
    )


def _negatives_task(task):
    """One shard: (ids of edited samples, their edits, pairs added each, template counter, objects asked, samples
    with an image, candidates above the threshold, samples short of per_sample, dimension mismatch)."""
    view, edit_cols, extra, plan = task
    t = view.read(["key", "turns", IMAGE_EMBEDDING, *edit_cols, *extra])
    ids = t.column(SAMPLE_ID).to_numpy().astype(np.int64)
    keys = t.column("key").to_pylist()
    d = plan.text_emb.shape[1]
    x, ok, details = embedding_matrix(t.column(IMAGE_EMBEDDING), IMAGE_EMBEDDING, "negative_synthesis", dim=d)
    mismatch = any(dt is not None and "has length" in dt for dt in details)
    rows_x = np.full(t.num_rows, -1, np.int64)  # row -> its row of x
    rows_x[ok] = np.arange(int(ok.sum()))
    if "has_image" in extra:  # text-only samples are left alone
        ok = ok & np.array([v is not False for v in t.column("has_image").to_pylist()], bool)
    texts = _texts(t, edit_cols, extra)
    convs = current_turns(t, edit_cols)
    vocab = plan.vocab
    index = vocab.index()
    n_words = len(vocab.words)
    out_ids, out_edits, out_added = [], [], []
    used: Counter = Counter()
    objects: set = set()
    above = short = 0
    for r in np.flatnonzero(ok).tolist():
        if not present(convs[r]):
            continue
        scores = plan.text_emb @ x[rows_x[r]]
        excluded = np.zeros(n_words, bool)
        for w in neg.text_words(texts[r]):
            if w in index:
                excluded[index[w]] = True
        own = [index[n] for n in neg.sample_nouns(texts[r]) if n in index]
        rng = neg.sample_rng(keys[r], plan.seed)
        order = neg.candidate_order(plan.strategy, vocab, excluded, own, rng, plan.cooc)
        chosen = []
        for i in order.tolist():
            if scores[i] >= plan.max_score:
                above += 1
                continue
            chosen.append(i)
            if len(chosen) == plan.per_sample:
                break
        if len(chosen) < plan.per_sample:
            short += 1
        if not chosen:
            continue
        edits = []
        for i in chosen:
            q, a, k = neg.negative_pair(vocab.words[i], rng, plan.templates, plan.open_answers)
            edits += [{"turn": APPEND_TURN, "text": q}, {"turn": APPEND_TURN, "text": a}]
            used[k] += 1
            objects.add(vocab.words[i])
        out_ids.append(int(ids[r]))
        out_edits.append(edits)
        out_added.append(len(chosen))
    return (
        np.asarray(out_ids, np.int64),
        out_edits,
        np.asarray(out_added, np.int32),
        used,
        objects,
        int(ok.sum()),
        above,
        short,
        mismatch,
    )
