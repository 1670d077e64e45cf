"""clip_heads: NSFW, watermark and aesthetic scores from small heads on the CLIP image embeddings.

A MapStage placed after ``clip_embed`` in the recipe. It reads ``image_embedding``
(``fixed_size_list<float16, d>``), re-normalises each row to unit length (fp16 storage loses a little of the
norm the heads were trained on), and runs the heads it was given (:func:`mmcurate.models.load_head`; the
formats are described in :mod:`mmcurate.models.heads`):

* NSFW: ``nsfw_weights`` -> ``nsfw_score``; kept when score < ``nsfw_max`` (0.5, as LAION and DataComp);
* watermark: ``watermark_weights`` -> ``watermark_score``; kept when score < ``watermark_max`` (0.8, LAION);
* aesthetic: ``aesthetic_weights`` -> ``aesthetic_score``; kept when score >= ``aesthetic_min`` (default
  none: no aesthetic filtering, the score is still written).

Only the heads given add a column (float32). A sample is rejected with reason ``nsfw``, ``watermark`` or
``aesthetic`` (the first that fails, in that order) and a detail such as ``0.83 >= 0.5``; a NaN score fails
too. A row with a null, non-finite or all-zero embedding is rejected ``no_embedding``, except a text-only sample
of instruction data (``has_image`` false: stages.batch.text_only_rows), which passes untouched (null scores).
Without any ``*_weights`` the stage is a configuration error saying which files to pass.

With ``*_format: auto`` the file's format is recognised from its keys, and a LAION file of the other kind
(an aesthetic predictor given as ``nsfw_weights``) is an error; naming the format skips that check. There is
no LAION watermark head on embeddings (LAION's watermark detector is an image model), so a watermark head
is a user-trained one whose format is named, e.g. ``watermark_format: mlp:relu:sigmoid``.

The heads load in ``setup()`` on ``device`` (``auto``: CUDA when torch sees one) and are not pickled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from mmcurate.pipeline.params import check_device, check_number, check_text
from mmcurate.pipeline.stage import MapStage, Resources, StageError, StageResult, registry
from mmcurate.stages.batch import kept_and_rejected, text_only_rows, with_column
from mmcurate.stages.embeddings import DEFAULT_EMBEDDING_COLUMN, embedding_matrix

EMBEDDING_COLUMN = DEFAULT_EMBEDDING_COLUMN  # what the heads read: clip_embed's image embeddings
HEADS = ("nsfw", "watermark", "aesthetic")  # the order in which they are checked
DEFAULT_NSFW_MAX = 0.5
DEFAULT_WATERMARK_MAX = 0.8
_WHAT_TO_PASS = (
    "nsfw_weights (LAION h14_nsfw.pth for ViT-H-14, or clip_ViT-L-14_openai_binary_nsfw_head.pth / "
    "clip_ViT-B-32_openai_binary_nsfw_head.pth), aesthetic_weights (LAION "
    "sac+logos+ava1-l14-linearMSE.pth, sa_0_4_vit_l_14_linear.pth or sa_0_4_vit_b_32_linear.pth), "
    "or watermark_weights (a head you trained on CLIP image embeddings, with watermark_format "
    "e.g. mlp:relu:sigmoid)"
)


@registry.register
class ClipHeads(MapStage):
    """NSFW / watermark / aesthetic scores and thresholds on ``image_embedding``. See the module docstring."""

    name = "clip_heads"
    requires = ("key", "source", EMBEDDING_COLUMN)

    @dataclass
    class Params:
        nsfw_weights: str | None = None
        nsfw_format: str = "auto"
        nsfw_max: float = DEFAULT_NSFW_MAX
        watermark_weights: str | None = None
        watermark_format: str = "auto"
        watermark_max: float = DEFAULT_WATERMARK_MAX
        aesthetic_weights: str | None = None
        aesthetic_format: str = "auto"
        aesthetic_min: float | None = None
        device: str = "auto"

        def validate(self):
            from mmcurate.models.heads import check_format

            for head in HEADS:
                check_text(f"{head}_weights", getattr(self, f"{head}_weights"), "a path", optional=True)
                try:
                    check_format(getattr(self, f"{head}_format"))
                except ValueError as exc:
                    raise ValueError(f"{head}_format: {exc}") from None
            for key in ("nsfw_max", "watermark_max"):
                check_number(key, getattr(self, key))
            check_number("aesthetic_min", self.aesthetic_min, optional=True)
            if not self.heads():
                raise ValueError(f"no head weights given; pass at least one of {_WHAT_TO_PASS}")
            # A threshold or format for a head that is not there is a recipe mistake, not a no-op.
            unused = {
                "nsfw": (self.nsfw_max != DEFAULT_NSFW_MAX, self.nsfw_format != "auto"),
                "watermark": (self.watermark_max != DEFAULT_WATERMARK_MAX, self.watermark_format != "auto"),
                "aesthetic": (self.aesthetic_min is not None, self.aesthetic_format != "auto"),
            }
            for head, (threshold_set, format_set) in unused.items():
                if getattr(self, f"{head}_weights") is None and (threshold_set or format_set):
                    what = f"{head}_{'min' if head == 'aesthetic' else 'max'}" if threshold_set else f"{head}_format"
                    raise ValueError(f"{what} is set but {head}_weights is not; give the {head} head's weight file")
            check_device(self.device, allow_index=True)

        def heads(self) -> list[str]:
            return [h for h in HEADS if getattr(self, f"{h}_weights") is not None]

    def __init__(self, **params):
        super().__init__(**params)
        self._heads = None  # {head: EmbeddingHead}, loaded by setup()
        self.resources = self._resources(self.params.device)

    @staticmethod
    def _resources(device: str) -> Resources:
        return Resources(cpus=1.0, gpus=1.0 if device.startswith("cuda") else 0.0)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_heads"] = None  # loaded again by setup() in the worker
        return state

    @property
    def heads(self) -> dict | None:
        return self._heads

    def setup(self) -> None:
        if self._heads is not None:
            return
        from mmcurate.models.heads import HeadFormatError, HeadWeightsNotFoundError, load_head

        p = self.params
        heads = {}
        for head in p.heads():
            path, fmt = getattr(p, f"{head}_weights"), getattr(p, f"{head}_format")
            try:
                loaded = load_head(path, format=fmt, device=p.device)
            except (HeadWeightsNotFoundError, HeadFormatError) as exc:
                raise StageError(f"stage '{self.name}': {head}_weights: {exc}") from exc
            except (RuntimeError, ValueError) as exc:  # e.g. device='cuda' without a GPU
                raise StageError(f"stage '{self.name}': cannot load {head}_weights {path!r}: {exc}") from exc
            if fmt == "auto" and loaded.role != head:
                hint = (
                    f"name {head}_format to use it anyway"
                    if head != "watermark"
                    else "a watermark head on CLIP embeddings is one you trained; name watermark_format "
                    "(e.g. mlp:relu:sigmoid)"
                )
                raise StageError(
                    f"stage '{self.name}': {head}_weights {path!r} was recognised as a "
                    f"{loaded.format} head, which scores {loaded.role}, not {head}; {hint}"
                )
            heads[head] = loaded
        self._heads = heads
        self.resources = self._resources(next(iter(heads.values())).device)

    def process(self, batch: pa.Table) -> StageResult:
        if EMBEDDING_COLUMN not in batch.column_names:
            raise StageError(
                f"stage '{self.name}': the input has no '{EMBEDDING_COLUMN}' column; put clip_embed "
                f"before clip_heads in the recipe"
            )
        if self._heads is None:
            self.setup()
        column = batch.column(EMBEDDING_COLUMN)
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        t = column.type
        if not pa.types.is_fixed_size_list(t) or not pa.types.is_floating(t.value_type):
            raise StageError(
                f"stage '{self.name}': '{EMBEDDING_COLUMN}' must be a fixed_size_list of floats "
                f"(as clip_embed writes it), got {t}"
            )
        for head, model in self._heads.items():
            try:
                model.check_dim(t.list_size)
            except ValueError as exc:
                raise StageError(f"stage '{self.name}': {head}_weights: {exc}") from None

        n = batch.num_rows
        # unit rows of the usable embeddings; details say why the others (null, non-finite, zero) are not
        x, ok, details = embedding_matrix(column, EMBEDDING_COLUMN, self.name)
        text_only = text_only_rows(batch)  # no image, no embedding: passed untouched
        rejected = ~ok & ~text_only
        reasons = ["no_embedding" if bad else None for bad in rejected]
        for i in np.flatnonzero(text_only):
            details[i] = None
        p = self.params
        for head in HEADS:
            model = self._heads.get(head)
            if model is None:
                continue
            scores = np.full(n, np.nan, dtype=np.float32)
            scores[ok] = model(x)
            batch = with_column(batch, f"{head}_score", pa.array(scores, pa.float32(), mask=~ok))
            if head == "aesthetic":
                if p.aesthetic_min is None:
                    continue
                cut, passes, op = p.aesthetic_min, scores >= p.aesthetic_min, "<"
            else:
                cut = getattr(p, f"{head}_max")
                passes, op = scores < cut, ">="
            fails = ~rejected & ~text_only & ~passes  # NaN scores fail: neither comparison holds
            for i in np.flatnonzero(fails):
                reasons[i] = head
                details[i] = f"{head} score is NaN" if np.isnan(scores[i]) else f"{scores[i]:.4g} {op} {cut:g}"
            rejected |= fails
        return kept_and_rejected(batch, self.name, rejected, reasons, details)
