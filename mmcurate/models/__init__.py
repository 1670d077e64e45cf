"""CLIP models: the registry (architecture + pretrained tag + the preprocessing bound to those weights: curated
entries, any open_clip ARCH/TAG, user mappings),
weight loading from explicit sources, embedding, the native CPU image loader, and scoring heads on the
embeddings (NSFW / watermark / aesthetic).

Importing this package imports neither torch nor open_clip; they load when a model is built.
"""

from __future__ import annotations

from mmcurate._lazy import lazy_exports

_EXPORTS = {
    "Preprocess": "mmcurate.models.preprocess",
    "ModelEntry": "mmcurate.models.registry",
    "get_entry": "mmcurate.models.registry",
    "list_models": "mmcurate.models.registry",
    "describe_models": "mmcurate.models.registry",
    "resolve_model": "mmcurate.models.registry",
    "entry_for": "mmcurate.models.loader",
    "load_clip": "mmcurate.models.loader",
    "resolve_weights": "mmcurate.models.loader",
    "save_weights": "mmcurate.models.loader",
    "WeightsNotFoundError": "mmcurate.models.loader",
    "WeightsMismatchError": "mmcurate.models.loader",
    "ClipModel": "mmcurate.models.embed",
    "EmbedResult": "mmcurate.models.embed",
    "embed_encoded_images": "mmcurate.models.embed",
    "NativeImageLoader": "mmcurate.models.cpu_loader",
    "DaliImageLoader": "mmcurate.models.dali_loader",
    "LoadedBatch": "mmcurate.models.cpu_loader",
    "Rejected": "mmcurate.models.cpu_loader",
    "load_head": "mmcurate.models.heads",
    "EmbeddingHead": "mmcurate.models.heads",
    "HeadFormatError": "mmcurate.models.heads",
    "HeadWeightsNotFoundError": "mmcurate.models.heads",
}

__getattr__, __dir__, __all__ = lazy_exports("mmcurate.models", globals(), _EXPORTS)
