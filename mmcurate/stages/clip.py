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
* ``text_embedding``: the same for ``caption`` (``text: true``); null for a null/blank caption (kept);
* ``clip_score``: float32 cosine(image, text), computed from the full-precision embeddings; null with no text.

The loaded model is not pickled (``__getstate__`` drops it); a worker calls ``setup()`` itself.

clip_score_filter
-----------------
A GlobalStage over ``clip_score``: ``threshold`` (keep score >= threshold; LAION used 0.28 with ViT-B/32) or
``keep_fraction`` (keep the top fraction of the scored samples over the whole run, ``round(f * n)`` of them,
half up; DataComp's best single filter keeps the top 30% by ViT-L/14 score). Ties at the cut go to the smaller
key, so the result is deterministic and independent of the row order. Samples without a score (null/NaN) are
rejected ``no_clip_score``; the others below the cut ``clip_score``.
"""
from __future__ import annotations

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
from mmcurate.pipeline.schema import rejects_table
from mmcurate.pipeline.stage import (GlobalResult, GlobalStage, MapStage, Resources, StageError,
                                     StageResult, registry)
from mmcurate.stages.batch import MISSING_IMAGE, blob_views, cpu_resources, kept_and_rejected, with_column
from mmcurate.stages.embeddings import embedding_array

#: Image loaders for clip_embed: "auto" = DALI on a GPU when DALI is installed, the native loader otherwise.
LOADERS = ("auto", "native", "dali")


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
        model: str = "ViT-B-32"
        pretrained: str | None = None
        weights: str | None = None
        allow_download: bool = False
        device: str = "auto"
        scaled_decode: bool = True
        loader: str = "auto"
        dali_validate: str = "header"
        text: bool = True
        num_threads: int | None = None
        seed: int = 0

        def validate(self):
            from mmcurate.models.registry import get_entry

            check_text("model", self.model, "a registry name")
            check_text("pretrained", self.pretrained, "a tag", optional=True)
            if self.pretrained is not None and "/" in self.model:
                raise ValueError(f"model {self.model!r} already names a tag; drop pretrained={self.pretrained!r}")
            try:
                get_entry(self.model_name())
            except KeyError as exc:
                raise ValueError(f"model: {exc.args[0]}") from None
            check_text("weights", self.weights, "a path or 'random'", optional=True)
            for key in ("allow_download", "scaled_decode", "text"):
                check_bool(key, getattr(self, key))
            check_device(self.device, allow_index=True)
            check_choice("loader", self.loader, LOADERS)
            from mmcurate.models.dali_loader import VALIDATE_MODES

            check_choice("dali_validate", self.dali_validate, VALIDATE_MODES)
            check_threads(self.num_threads)
            check_seed(self.seed)

        def model_name(self) -> str:
            return f"{self.model}/{self.pretrained}" if self.pretrained else self.model

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
        state["_clip"] = None      # loaded again by setup() in the worker
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
            clip = load_clip(p.model_name(), weights=p.weights, allow_download=p.allow_download,
                             device=p.device, seed=p.seed)
        except (WeightsNotFoundError, WeightsMismatchError) as exc:
            raise StageError(f"stage '{self.name}': cannot load weights for {p.model_name()!r}: {exc}") from exc
        except (RuntimeError, ValueError, KeyError) as exc:
            raise StageError(f"stage '{self.name}': cannot load {p.model_name()!r}: {exc}") from exc
        self._clip = clip
        self.resources = self._resources(clip.device)
        # The preprocessing bound to the loaded weights, never another one.
        self._loader = self._make_loader(clip)

    def _make_loader(self, clip):
        from mmcurate.models import NativeImageLoader
        from mmcurate.models.dali_loader import DaliImageLoader, DaliUnavailableError, dali_available

        p = self.params
        use_dali = p.loader == "dali" or (p.loader == "auto" and clip.device.startswith("cuda")
                                          and dali_available())
        if use_dali:
            # On a GPU, DALI decodes into the model's device memory: the pixels never visit the host.
            try:
                return DaliImageLoader(clip.preprocess, batch_size=self.batch_size, device=clip.device,
                                       num_threads=p.num_threads, validate=p.dali_validate, prefetch=False)
            except DaliUnavailableError as exc:
                raise StageError(f"stage '{self.name}': loader: dali: {exc}") from exc
        return NativeImageLoader(clip.preprocess, batch_size=self.batch_size, num_threads=p.num_threads,
                                 scaled_decode=p.scaled_decode, prefetch=False)

    @property
    def clip(self):
        return self._clip

    @property
    def loader(self):
        return self._loader

    def process(self, batch: pa.Table) -> StageResult:
        if self._clip is None:
            self.setup()
        clip, n = self._clip, batch.num_rows
        blobs = blob_views(batch.column("image"))
        missing = np.array([b is None for b in blobs], dtype=bool)
        loaded = self._loader.load([b"" if b is None else b for b in blobs])
        rejected = np.ones(n, dtype=bool)
        rejected[loaded.indices] = False
        reasons, details = [None] * n, [None] * n
        for r in loaded.rejected:
            reasons[r.index], details[r.index] = r.status, r.reason or r.status
        for i in np.flatnonzero(missing):
            rejected[i] = True
            reasons[i], details[i] = MISSING_IMAGE
        for i in np.flatnonzero(rejected):
            if reasons[i] is None:   # defensive: the loader reported neither success nor failure
                reasons[i], details[i] = "corrupt", "the image did not decode"

        d = clip.embed_dim
        img = np.zeros((n, d), dtype=np.float32)
        ok = loaded.indices[~missing[loaded.indices]]
        if len(loaded.indices):
            e = _host_float32(clip.embed_images(loaded.pixels, batch_size=self.batch_size))
            img[loaded.indices] = e
        batch = with_column(batch, "image_embedding", embedding_array(img))
        if self.params.text:
            txt = np.zeros((n, d), dtype=np.float32)
            has_text = np.zeros(n, dtype=bool)
            if "caption" in batch.column_names:
                captions = batch.column("caption").to_pylist()
                rows = [i for i in ok if isinstance(captions[i], str) and captions[i].strip()]
                if rows:
                    t = clip.embed_texts([captions[i] for i in rows])
                    txt[rows] = np.asarray(t, dtype=np.float32)
                    has_text[rows] = True
            score = np.einsum("nd,nd->n", img, txt).astype(np.float32)
            batch = with_column(batch, "text_embedding", embedding_array(txt, has_text))
            batch = with_column(batch, "clip_score", pa.array(score, pa.float32(), mask=~has_text))
        return kept_and_rejected(batch, self.name, rejected, reasons, details)


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

    @dataclass
    class Params:
        threshold: float | None = None
        keep_fraction: float | None = None

        def validate(self):
            if (self.threshold is None) == (self.keep_fraction is None):
                raise ValueError("give exactly one of threshold (e.g. 0.28) or keep_fraction (e.g. 0.3), got "
                                 f"threshold={self.threshold!r}, keep_fraction={self.keep_fraction!r}")
            if self.threshold is not None:
                check_number("threshold", self.threshold, -1.0, 1.0)
            if self.keep_fraction is not None:
                check_number("keep_fraction", self.keep_fraction, 0.0, 1.0, lo_open=True)

    def run(self, table: pa.Table) -> GlobalResult:
        missing_cols = [c for c in self.requires if c not in table.column_names]
        if missing_cols:
            raise StageError(f"stage '{self.name}': input lacks column(s) {', '.join(missing_cols)} "
                             "(run clip_embed with text: true before it)")
        t0 = time.perf_counter()
        p = self.params
        n = table.num_rows
        scores = pc.cast(table.column("clip_score"), pa.float64()).to_numpy(zero_copy_only=False)
        scores = np.asarray(scores, dtype=np.float64)   # nulls -> NaN
        scored = ~np.isnan(scores)
        keep = np.zeros(n, dtype=bool)
        n_scored = int(scored.sum())
        if p.threshold is not None:
            cut = float(p.threshold)
            keep = scored & (scores >= cut)
            label = None
        else:
            n_keep = int(math.floor(p.keep_fraction * n_scored + 0.5))
            idx = np.flatnonzero(scored)
            if n_keep and idx.size:
                # score descending, then key ascending: Arrow's stable multi-key sort
                sub = pa.table({"s": pa.array(scores[idx]), "k": table.column("key").take(pa.array(idx)),
                                "i": pa.array(idx)})
                order = pc.sort_indices(sub, sort_keys=[("s", "descending"), ("k", "ascending")])
                chosen = sub.column("i").take(order).to_numpy()[:n_keep]
                keep[chosen] = True
                cut = float(scores[chosen[-1]])
            else:
                cut = None
            label = self.cut_label()
        reject = ~keep
        idx = np.flatnonzero(reject)
        rejected = clip_score_rejects(self.name, table.column("key").take(pa.array(idx)),
                                      table.column("source").take(pa.array(idx)), scores[idx], cut, label)
        stats = self.result_stats(cut, n, scores[scored], scores[keep], t0)
        return GlobalResult(rejected=rejected, stats=stats)

    def cut_label(self) -> str | None:
        """The keep_fraction cut's name in reject details (None in threshold mode)."""
        p = self.params
        return None if p.keep_fraction is None else f"top-{p.keep_fraction * 100:g}%"

    def result_stats(self, cut, n: int, scored_scores: np.ndarray, kept_scores: np.ndarray, t0: float) -> dict:
        """The step's stats from the scores of the scored and of the kept samples (float64, in sample order)."""
        p = self.params
        n_kept, n_scored = int(kept_scores.size), int(scored_scores.size)
        stats = {
            "mode": "threshold" if p.threshold is not None else "keep_fraction",
            "cut": None if cut is None else round(float(cut), 6),
            "kept": n_kept, "rejected": n - n_kept,
            "rejected_below_cut": n_scored - n_kept, "no_clip_score": n - n_scored,
            "scores": _score_percentiles(scored_scores),
            "kept_scores": _score_percentiles(kept_scores),
            "seconds": round(time.perf_counter() - t0, 6),
        }
        if p.keep_fraction is not None:
            stats["keep_fraction"] = p.keep_fraction
        return stats

    def run_sharded(self, ctx) -> GlobalResult:
        """Per-shard tasks; the driver holds (sample id, score) of the scored samples and the keys of the samples
        tied at a keep_fraction cut only: see stages.sharded_steps."""
        from mmcurate.stages.sharded_steps import clip_score_filter_sharded

        return clip_score_filter_sharded(self, ctx)


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
