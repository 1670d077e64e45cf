"""CLIP stages: clip_embed (image and caption embeddings, CLIP score), clip_score_filter.

clip_embed
----------
A MapStage. ``setup()`` loads the model once per worker (:func:`mmcurate.models.load_clip`, whose explicit
weight rules apply: ``weights`` = a file or directory, ``"random"`` (tests), or None = the local caches, then
the hub only with ``allow_download: true``) and builds a :class:`mmcurate.models.NativeImageLoader` from the
preprocessing bound to the loaded weights (never another one). ``loader``: ``native`` (our CPU decode + resize),
``dali`` (:class:`mmcurate.models.DaliImageLoader`: nvJPEG decode, resize and crop on the model's GPU, so pixels
never cross back to the host; on a CPU device it runs DALI's CPU operators) or ``auto`` (DALI when the model is
on a GPU and DALI is installed, native otherwise). DALI is screened with our header probe; ``dali_validate:
full`` also runs our full decode to catch truncated files, which DALI decodes silently; with ``integrity``
earlier in the recipe that has been done, hence the default ``header``. ``process(batch)`` decodes and preprocesses the
``image`` bytes; a sample that does not decode is rejected with the decoder's status as reason (``corrupt``,
``truncated``, ``empty``...; ``missing_image`` for a null image) and its message as detail. The rest get

* ``image_embedding``: ``fixed_size_list<float16, d>``, L2-normalised (fp16 halves the storage);
* ``text_embedding``: the same for the text of ``text_field`` (``text: true``); null for a null/blank text (kept);
* ``clip_score``: float32 cosine(image, text), computed from the full-precision embeddings; null with no text.

``text_field`` picks the text: ``caption`` (default; on LLaVA data the first answer), or on instruction data
(the llava reader's columns) ``question`` (the first question, without ``<image>``: relevance between the image
and what is asked), ``answer`` (the first answer) or ``question_answer`` (both, joined by a space). A field whose
column the input lacks is an error. Text-only samples of instruction data (``has_image`` false:
stages.batch.text_only_rows) pass untouched: null ``image_embedding``, ``text_embedding`` and ``clip_score``, no
reject (``clip_heads`` and ``clip_score_filter`` pass them too).

``model`` is a registry name (``ViT-B-32``, ``ViT-H-14``: a curated default), any pair open_clip knows
(``ViT-B-16-SigLIP2/webli``, ``EVA02-L-14/merged2b_s4b_b131k``, ``ViT-bigG-14/laion2b_s39b_b160k``), or a mapping
``{arch, pretrained, embed_dim, preprocess: {image_size, mean, std, interpolation, resize_mode}, config}`` for a
model of your own (:func:`mmcurate.models.registry.user_entry`). With ``weights`` a directory holding an
open_clip_config.json (a hub snapshot, an open_clip export), its preprocess_cfg is used where the model name leaves
the preprocessing open and checked where the name states it. SigLIP models: ``clip_score`` is the cosine of the
embeddings, as for CLIP (SigLIP's sigmoid(scale * cosine + logit_bias) orders pairs the same way, so
``keep_fraction`` cuts are unaffected, but thresholds are model-specific); their text tokenizer is a Hugging Face
one, which needs the ``transformers`` package and its files (beside the weights, in the HF cache, or
``allow_download``), or ``text: false``.

``weights: random`` (tests only) is announced: a console line when the model loads, ``"weights": "random"`` in
``describe()``, a run warning in manifest.json and a banner in the report (pipeline.diagnosis).

The loaded model is not pickled (``__getstate__`` drops it); a worker calls ``setup()`` itself.

clip_score_filter
-----------------
A GlobalStage over ``clip_score``: ``threshold`` (keep score >= threshold; LAION used 0.28 with ViT-B/32) or
``keep_fraction`` (keep the top fraction of the scored samples over the whole run, ``round(f * n)`` of them,
half up; DataComp's best single filter keeps the top 30% by ViT-L/14 score). Ties at the cut go to the smaller
key, so the result is deterministic and independent of the row order. Samples without a score (null/NaN) are
rejected ``no_clip_score``; the others below the cut ``clip_score``. Text-only samples (``has_image`` false) are
kept and not counted among the scored (stats: ``text_only``).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmcurate.curate.percentiles import percentile_summary
from mmcurate.pipeline.params import (
    check_bool,
    check_choice,
    check_device,
    check_number,
    check_seed,
    check_text,
    check_threads,
)
from mmcurate.pipeline.reuse import fingerprint
from mmcurate.pipeline.schema import rejects_table
from mmcurate.pipeline.stage import (
    SAMPLE_ID,
    GlobalResult,
    GlobalStage,
    MapStage,
    Resources,
    StageError,
    StageResult,
    StepStats,
    id_shards,
    registry,
    with_sample_ids,
)
from mmcurate.stages.batch import (
    MISSING_IMAGE,
    blob_views,
    cpu_resources,
    kept_and_rejected,
    text_only_rows,
    with_column,
)
from mmcurate.stages.embeddings import embedding_array

#: Image loaders for clip_embed: "auto" = DALI on a GPU when DALI is installed, the native loader otherwise.
LOADERS = ("auto", "native", "dali")
#: What clip_embed's text embedding (and clip_score) is of: the caption, or instruction data's question/answer.
TEXT_FIELDS = ("caption", "question", "answer", "question_answer")


# ---------------------------------------------------------------------------------------------------------
# clip_embed


@registry.register
class ClipEmbed(MapStage):
    """Image (and caption) embeddings with a registry CLIP model, plus clip_score. See the module docstring."""

    name = "clip_embed"
    requires = ("key", "source", "image")
    batch_size = 256

    @dataclass
    class Params:
        model: str | dict = "ViT-B-32"
        pretrained: str | None = None
        weights: str | None = None
        allow_download: bool = False
        device: str = "auto"
        scaled_decode: bool = True
        loader: str = "auto"
        dali_validate: str = "header"
        text: bool = True
        text_field: str = "caption"
        num_threads: int | None = None
        seed: int = 0

        def validate(self):
            check_text("weights", self.weights, "a path or 'random'", optional=True)
            check_model(self.model, self.pretrained, self.weights)
            for key in ("allow_download", "scaled_decode", "text"):
                check_bool(key, getattr(self, key))
            check_device(self.device, allow_index=True)
            check_choice("loader", self.loader, LOADERS)
            check_choice("text_field", self.text_field, TEXT_FIELDS)
            from mmcurate.models.dali_loader import VALIDATE_MODES

            check_choice("dali_validate", self.dali_validate, VALIDATE_MODES)
            check_threads(self.num_threads)
            check_seed(self.seed)

        def model_name(self) -> str | dict:
            """The model as load_clip takes it: "ARCH/TAG" (or a name), or the user mapping."""
            return model_spec(self.model, self.pretrained)

    def __init__(self, **params):
        super().__init__(**params)
        self._clip = None
        self._loader = None
        self.resources = self._resources(self.params.device)

    def _resources(self, device: str) -> Resources:
        if device.startswith("cuda"):
            return Resources(cpus=1.0, gpus=1.0)
        return cpu_resources(self.params.num_threads)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_clip"] = None  # loaded again by setup() in the worker
        state["_loader"] = None
        return state

    def setup(self) -> None:
        if self._clip is not None:
            return
        from mmcurate.models import load_clip
        from mmcurate.models.loader import WeightsMismatchError, WeightsNotFoundError

        p = self.params
        if p.num_threads:
            import torch

            torch.set_num_threads(p.num_threads)
        try:
            clip = load_clip(
                p.model_name(), weights=p.weights, allow_download=p.allow_download, device=p.device, seed=p.seed
            )
        except (WeightsNotFoundError, WeightsMismatchError) as exc:
            raise StageError(f"stage '{self.name}': cannot load weights for {p.model_name()!r}: {exc}") from exc
        except (RuntimeError, ValueError, KeyError) as exc:
            raise StageError(f"stage '{self.name}': cannot load {p.model_name()!r}: {exc}") from exc
        announce_model(self.name, clip)
        if p.text:  # a tokenizer that cannot load (SigLIP without transformers) fails here, not mid-run
            try:
                clip.tokenizer  # noqa: B018
            except (RuntimeError, ValueError, OSError) as exc:
                raise StageError(f"stage '{self.name}': text: true but {exc}") from exc
        self._clip = clip
        self.resources = self._resources(clip.device)
        # The preprocessing bound to the loaded weights, never another one.
        self._loader = self._make_loader(clip)

    def _make_loader(self, clip):
        from mmcurate.models import NativeImageLoader
        from mmcurate.models.dali_loader import DaliImageLoader, DaliUnavailableError, dali_available

        p = self.params
        use_dali = p.loader == "dali" or (p.loader == "auto" and clip.device.startswith("cuda") and dali_available())
        if use_dali:
            # On a GPU, DALI decodes into the model's device memory: the pixels never visit the host.
            try:
                return DaliImageLoader(
                    clip.preprocess,
                    batch_size=self.batch_size,
                    device=clip.device,
                    num_threads=p.num_threads,
                    validate=p.dali_validate,
                    prefetch=False,
                )
            except DaliUnavailableError as exc:
                raise StageError(f"stage '{self.name}': loader: dali: {exc}") from exc
        return NativeImageLoader(
            clip.preprocess,
            batch_size=self.batch_size,
            num_threads=p.num_threads,
            scaled_decode=p.scaled_decode,
            prefetch=False,
        )

    @property
    def clip(self):
        return self._clip

    def describe(self) -> dict:
        """The base description plus the model's name and ``weights``: "random" for a random init (its
        embeddings and scores mean nothing), else the checkpoint loaded (or the parameter before setup())."""
        d = super().describe()
        p = self.params
        d["model"] = self._clip.name if self._clip is not None else p.model_name()
        if self._clip is not None:
            d["weights"] = RANDOM_WEIGHTS if self._clip.random_weights else str(self._clip.weights)
        else:
            d["weights"] = p.weights
        return d

    @property
    def loader(self):
        return self._loader

    # -- reuse of stored embeddings (pipeline.reuse) --------------------------------------------------------
    def column_fingerprints(self) -> dict[str, dict]:
        """The embeddings depend on the model, its weights (a local file: its path, size and modification time;
        random ones: the seed) and the decode; the text side on the text field too, and row by row on the text
        itself, which ``clip_text_digest`` records (reuse checks it)."""
        p = self.params
        model = {"model": p.model_name(), "weights": _weights_identity(p.weights, p.seed)}
        fps = {"image_embedding": fingerprint("clip_image", **model, scaled_decode=p.scaled_decode)}
        if p.text:
            text = fingerprint("clip_text", **model, scaled_decode=p.scaled_decode, text_field=p.text_field)
            fps.update(dict.fromkeys(("text_embedding", "clip_score", TEXT_DIGEST), text))
        return fps

    def reuse(self, batch: pa.Table) -> StageResult | None:
        """Stored embeddings hold when every row's text is the one they were computed from; else None (embed)."""
        if self.params.text:
            texts = self._texts(batch)
            now = text_digests(texts) if texts is not None else [None] * batch.num_rows
            if now != batch.column(TEXT_DIGEST).to_pylist():
                return None
        return StageResult(batch)

    def process(self, batch: pa.Table) -> StageResult:
        if self._clip is None:
            self.setup()
        clip, n = self._clip, batch.num_rows
        texts = self._texts(batch) if self.params.text else None
        text_only = text_only_rows(batch)  # no image: passed untouched, with null columns
        blobs = blob_views(batch.column("image"))
        missing = np.array([b is None for b in blobs], dtype=bool) & ~text_only
        image_rows = np.flatnonzero(~text_only)
        loaded = self._loader.load([b"" if blobs[i] is None else blobs[i] for i in image_rows])
        indices = image_rows[np.asarray(loaded.indices, dtype=np.int64)]
        rejected = ~text_only
        rejected[indices] = False
        reasons, details = [None] * n, [None] * n
        for r in loaded.rejected:
            i = int(image_rows[r.index])
            reasons[i], details[i] = r.status, r.reason or r.status
        for i in np.flatnonzero(missing):
            rejected[i] = True
            reasons[i], details[i] = MISSING_IMAGE
        for i in np.flatnonzero(rejected):
            if reasons[i] is None:  # defensive: the loader reported neither success nor failure
                reasons[i], details[i] = "corrupt", "the image did not decode"

        d = clip.embed_dim
        img = np.zeros((n, d), dtype=np.float32)
        ok = indices[~missing[indices]]
        if len(indices):
            e = _host_float32(clip.embed_images(loaded.pixels, batch_size=self.batch_size))
            img[indices] = e
        batch = with_column(batch, "image_embedding", embedding_array(img, ~text_only))
        if self.params.text:
            txt = np.zeros((n, d), dtype=np.float32)
            has_text = np.zeros(n, dtype=bool)
            if texts is not None:
                rows = [i for i in ok if isinstance(texts[i], str) and texts[i].strip()]
                if rows:
                    t = clip.embed_texts([texts[i] for i in rows])
                    txt[rows] = np.asarray(t, dtype=np.float32)
                    has_text[rows] = True
            score = np.einsum("nd,nd->n", img, txt).astype(np.float32)
            batch = with_column(batch, "text_embedding", embedding_array(txt, has_text))
            batch = with_column(batch, "clip_score", pa.array(score, pa.float32(), mask=~has_text))
            digests = text_digests(texts) if texts is not None else [None] * n
            batch = with_column(batch, TEXT_DIGEST, pa.array(digests, pa.string()))
        return kept_and_rejected(batch, self.name, rejected, reasons, details)

    def _texts(self, batch: pa.Table) -> list | None:
        """Each row's text to embed (text_field), None for a row without one; None without a caption column."""
        field = self.params.text_field
        if field == "caption":
            return batch.column("caption").to_pylist() if "caption" in batch.column_names else None
        names = ("question", "answer") if field == "question_answer" else (field,)
        lacking = [c for c in names if c not in batch.column_names]
        if lacking:
            raise StageError(
                f"stage '{self.name}': text_field {field!r} needs the column(s) {', '.join(lacking)}, which only "
                f"instruction data has (the llava reader); use text_field: caption for this input"
            )
        columns = [batch.column(c).to_pylist() for c in names]
        if len(columns) == 1:
            return columns[0]
        return [" ".join(t for t in row if isinstance(t, str) and t.strip()) for row in zip(*columns)]


RANDOM_WEIGHTS = "random"
#: clip_embed's record of the text each row's text embedding is of (pipeline.reuse: stored embeddings are reused
#: only for the same text, e.g. not after a changed caption_clean).
TEXT_DIGEST = "clip_text_digest"


def text_digests(texts: list) -> list[str | None]:
    """A short digest (BLAKE2b, 64 bits, hex) per text; None where there is no text."""
    return [
        hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
        if isinstance(t, str) and t.strip()
        else None
        for t in texts
    ]


def _weights_identity(weights, seed: int):
    """What stands for the weights in a fingerprint: a local file or directory by path, size and modification
    time (a changed checkpoint is another model); random weights by their seed; a cache lookup (None) by the
    model name alone."""
    import os

    if weights == RANDOM_WEIGHTS:
        return {"random_seed": seed}
    if weights is None:
        return None
    path = os.path.abspath(os.path.expanduser(str(weights)))
    try:
        st = os.stat(path)
    except OSError:
        return {"path": path}
    return {"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def model_spec(model, pretrained):
    """A stage's ``model`` + ``pretrained`` parameters as load_clip takes them: "ARCH/TAG", a name, or the user
    mapping (whose tag is its own ``pretrained`` key)."""
    if isinstance(model, dict):
        return model
    return f"{model}/{pretrained}" if pretrained else model


def check_model(model, pretrained, weights) -> None:
    """The checks every stage that takes a CLIP ``model`` makes on it (one-line ValueErrors): a registry name,
    any open_clip ARCH/TAG, or a mapping {arch, pretrained, embed_dim, preprocess, config}; resolved with the
    weights' open_clip_config.json when ``weights`` is a directory holding one (a file only read, nothing built)."""
    from mmcurate.models.loader import WeightsMismatchError, entry_for

    if isinstance(model, dict):
        if pretrained is not None:
            raise ValueError(f"model is a mapping: give its tag as model.pretrained, not pretrained={pretrained!r}")
    else:
        check_text("model", model, "a registry name, an open_clip ARCH/TAG or a mapping {arch, preprocess, ...}")
        check_text("pretrained", pretrained, "a tag", optional=True)
        if pretrained is not None and "/" in model:
            raise ValueError(f"model {model!r} already names a tag; drop pretrained={pretrained!r}")
    try:
        entry_for(model_spec(model, pretrained), weights)
    except KeyError as exc:
        raise ValueError(f"model: {exc.args[0]}") from None
    except WeightsMismatchError as exc:
        raise ValueError(f"weights: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"model: {exc}") from None


def announce_model(stage: str, clip) -> None:
    """The console line a stage gives when its model loaded with random weights (nothing otherwise)."""
    from mmcurate.pipeline.output_dir import log

    if clip.random_weights:
        log(
            f"WARNING: stage {stage}: {clip.name} loaded with RANDOM weights (weights: random): its embeddings and "
            "scores are meaningless; set weights: PATH for real results"
        )


def _host_float32(emb) -> np.ndarray:
    """Embeddings (numpy, or a torch tensor on the model's device from the DALI loader) -> float32 numpy."""
    if isinstance(emb, np.ndarray):
        return emb.astype(np.float32, copy=False)
    return emb.float().cpu().numpy()


# ---------------------------------------------------------------------------------------------------------
# clip_score_filter


#: Percentiles of the scores in clip_score_filter's stats (with min, max and mean, 6 decimals).
SCORE_PERCENTILES = (1, 5, 25, 50, 75, 95, 99)


def _score_percentiles(scores: np.ndarray) -> dict:
    return percentile_summary(scores, SCORE_PERCENTILES, digits=6, min_max=True)


@registry.register
class ClipScoreFilter(GlobalStage):
    """Keep samples by CLIP score: ``threshold`` or the run-wide top ``keep_fraction`` (exactly one).
    See the module docstring."""

    name = "clip_score_filter"
    requires = ("key", "source", "clip_score")
    reads_if_present = ("has_image",)  # instruction data: text-only samples pass

    @dataclass
    class Params:
        threshold: float | None = None
        keep_fraction: float | None = None

        def validate(self):
            if (self.threshold is None) == (self.keep_fraction is None):
                raise ValueError(
                    "give exactly one of threshold (e.g. 0.28) or keep_fraction (e.g. 0.3), got "
                    f"threshold={self.threshold!r}, keep_fraction={self.keep_fraction!r}"
                )
            if self.threshold is not None:
                check_number("threshold", self.threshold, -1.0, 1.0)
            if self.keep_fraction is not None:
                check_number("keep_fraction", self.keep_fraction, 0.0, 1.0, lo_open=True)

    def run(self, ctx) -> GlobalResult:
        """Pass 1 per shard: (id, score) of the scored samples (and the rejects, with a threshold). keep_fraction:
        the cut on all scores, keys fetched only for the samples tied at the cut score; pass 2 per shard builds
        the rejects from that shard's kept ids. The driver holds 16 bytes per scored sample."""
        if "clip_score" not in ctx.column_names:
            raise StageError(
                f"stage '{self.name}': input lacks column clip_score (run clip_embed with text: true before it)"
            )
        t0 = time.perf_counter()
        p = self.params
        views = ctx.views()
        text_only = "has_image" in ctx.column_names
        outs = list(ctx.map_fn(_clip_scan_task, [(v, self, text_only) for v in views]))
        ids = np.concatenate([o[0] for o in outs]) if outs else np.zeros(0, np.int64)
        scores = np.concatenate([o[1] for o in outs]) if outs else np.zeros(0, np.float64)
        n = sum(o[2] for o in outs)
        if p.threshold is not None:
            cut = float(p.threshold)
            rejected = [o[3] for o in outs]
            kept_scores = scores[scores >= cut]
        else:
            n_keep = int(math.floor(p.keep_fraction * ids.size + 0.5))
            kept, cut = keep_fraction_cut(
                ids, scores, n_keep, lambda some: ctx.fetch(some, ["key"]).column("key").combine_chunks()
            )
            shard = id_shards(kept)
            rejected = list(
                ctx.map_fn(_clip_reject_task, [(v, self, text_only, kept[shard == v.index], cut) for v in views])
            )
            kept_scores = scores[_in_sorted(kept, ids)]
        rejected = (
            pa.concat_tables(rejected)
            if rejected
            else with_sample_ids(clip_score_rejects(self.name, [], [], np.zeros(0), cut, None), [])
        )
        stats = self.result_stats(cut, n, scores, kept_scores, t0)
        if text_only:
            stats.text_only = sum(o[4] for o in outs)
        return GlobalResult(rejected=rejected, stats=stats)

    def cut_label(self) -> str | None:
        """The keep_fraction cut's name in reject details (None in threshold mode)."""
        p = self.params
        return None if p.keep_fraction is None else f"top-{p.keep_fraction * 100:g}%"

    def result_stats(
        self, cut, n: int, scored_scores: np.ndarray, kept_scores: np.ndarray, t0: float
    ) -> ClipScoreFilterStats:
        """The step's stats from the scores of the scored and of the kept samples (float64, in sample order)."""
        p = self.params
        n_kept, n_scored = int(kept_scores.size), int(scored_scores.size)
        return ClipScoreFilterStats(
            mode="threshold" if p.threshold is not None else "keep_fraction",
            cut=None if cut is None else round(float(cut), 6),
            kept=n_kept,
            rejected=n - n_kept,
            rejected_below_cut=n_scored - n_kept,
            no_clip_score=n - n_scored,
            scores=_score_percentiles(scored_scores),
            kept_scores=_score_percentiles(kept_scores),
            keep_fraction=p.keep_fraction,
            seconds=round(time.perf_counter() - t0, 6),
        )


@dataclass
class ClipScoreFilterStats(StepStats):
    mode: str | None = None  # "threshold" or "keep_fraction"
    cut: float | None = None  # the score a sample needed
    kept: int | None = None
    rejected: int | None = None
    rejected_below_cut: int | None = None
    no_clip_score: int | None = None
    scores: dict | None = None  # percentiles of the scored samples' scores
    kept_scores: dict | None = None  # and of the kept ones'
    keep_fraction: float | None = None
    text_only: int | None = None  # instruction data: samples without an image, kept unscored


# clip_score_filter's tasks (module level: they travel to worker processes and Ray workers by reference)
def _clip_scores(view, text_only: bool):
    """One shard's (key, source, clip_score, SAMPLE_ID), its scores as float64 (NaN: unscored) and its text-only
    rows (text_only: the input has `has_image`), which pass."""
    t = view.read(["key", "source", "clip_score", *(["has_image"] if text_only else [])])
    scores = np.asarray(pc.cast(t.column("clip_score"), pa.float64()).to_numpy(zero_copy_only=False), np.float64)
    return t, scores, text_only_rows(t)


def _clip_rejects(stage, t, scores, keep, cut, label) -> pa.Table:
    idx = pa.array(np.flatnonzero(~keep))
    rejected = clip_score_rejects(
        stage.name, t.column("key").take(idx), t.column("source").take(idx), scores[np.flatnonzero(~keep)], cut, label
    )
    return with_sample_ids(rejected, t.column(SAMPLE_ID).take(idx).to_numpy())


def _clip_scan_task(task):
    """(ids, scores) of the shard's scored samples, its row count (text-only rows left out); with a threshold also
    its rejects; the count of its text-only rows."""
    view, stage, text_only = task
    t, scores, passing = _clip_scores(view, text_only)
    scored = ~np.isnan(scores) & ~passing
    rejects = None
    if stage.params.threshold is not None:
        cut = float(stage.params.threshold)
        rejects = _clip_rejects(stage, t, scores, (scored & (scores >= cut)) | passing, cut, None)
    ids = t.column(SAMPLE_ID).to_numpy().astype(np.int64)
    n_passing = int(passing.sum())
    return ids[scored], scores[scored], t.num_rows - n_passing, rejects, n_passing


def _clip_reject_task(task):
    view, stage, text_only, kept_ids, cut = task
    t, scores, passing = _clip_scores(view, text_only)
    keep = _in_sorted(kept_ids, t.column(SAMPLE_ID).to_numpy().astype(np.int64)) | passing
    return _clip_rejects(stage, t, scores, keep, cut, stage.cut_label())


def _in_sorted(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """ids' membership in an ascending id array by binary search (np.isin hashes or sorts both sides)."""
    if not sorted_ids.size:
        return np.zeros(ids.size, bool)
    pos = np.minimum(np.searchsorted(sorted_ids, ids), sorted_ids.size - 1)
    return sorted_ids[pos] == ids


def keep_fraction_cut(ids: np.ndarray, scores: np.ndarray, n_keep: int, fetch_keys):
    """The top n_keep samples (score descending, then key ascending) as a sorted id array, and the cut (the last
    kept sample's score). ``fetch_keys(ids)`` -> the keys of those (ascending) ids, asked only for the samples
    whose score equals the cut score: only they need the key tie-break."""
    if n_keep <= 0 or ids.size == 0:
        return np.zeros(0, np.int64), None
    cut_score = np.sort(scores)[::-1][n_keep - 1]
    above = ids[scores > cut_score]
    tied = np.sort(ids[scores == cut_score])
    need = n_keep - above.size
    keys = fetch_keys(tied)
    order = np.asarray(pc.sort_indices(keys))  # Arrow's string order
    chosen = tied[order[:need]]
    cut = float(scores[ids == chosen[-1]][0])
    return np.sort(np.concatenate([above, chosen])), cut


def clip_score_rejects(stage_name: str, keys, sources, scores: np.ndarray, cut, label) -> pa.Table:
    """clip_score_filter's rejects for the rejected samples (keys, sources, float64 scores, NaN: unscored); the
    cut and label as run() has them (label None: threshold mode)."""
    reasons, details = [], []
    for s in scores.tolist():
        if math.isnan(s):
            reasons.append("no_clip_score")
            details.append("clip_score is null (no caption to score)")
        else:
            reasons.append("clip_score")
            if label is None:
                details.append(f"{s:.3f} < {cut:.3f}")
            elif cut is None:
                details.append(f"{s:.3f}: the {label} keeps no sample")
            else:
                tie = " (tie at the cut, later key)" if s == cut else ""
                details.append(f"{s:.3f} below the {label} cut {cut:.3f}{tie}")
    keys = keys.to_pylist() if hasattr(keys, "to_pylist") else list(keys)
    sources = sources.to_pylist() if hasattr(sources, "to_pylist") else list(sources)
    return rejects_table(keys, sources, stage_name, reasons, details)


#: The score at the start of a ``clip_score`` reject's detail, as clip_score_rejects writes it ("0.213 < 0.280").
REJECT_SCORE_PATTERN = r"^(?P<score>-?\d+\.\d+)"


def reject_scores(details) -> np.ndarray:
    """The scores (float64, 3 decimals; NaN where absent) that clip_score_rejects wrote into the details of its
    ``clip_score`` rejects: what is left of a rejected sample's score once the run is over (the report charts it)."""
    arr = details.combine_chunks() if isinstance(details, pa.ChunkedArray) else pa.array(details, pa.string())
    if len(arr) == 0:
        return np.zeros(0, np.float64)
    scores = pc.struct_field(pc.extract_regex(arr, REJECT_SCORE_PATTERN), [0])
    return np.asarray(pc.cast(scores, pa.float64()).to_numpy(zero_copy_only=False), np.float64)
