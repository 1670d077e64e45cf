"""CLIP models: the registry (architecture + pretrained tag + the preprocessing bound to those weights),
weight loading from explicit sources, embedding, and the native CPU image loader.

Importing this package imports neither torch nor open_clip; they load when a model is built.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "Preprocess": "mmcurate.models.preprocess",
    "ModelEntry": "mmcurate.models.registry",
    "get_entry": "mmcurate.models.registry",
    "list_models": "mmcurate.models.registry",
    "load_clip": "mmcurate.models.loader",
    "resolve_weights": "mmcurate.models.loader",
    "save_weights": "mmcurate.models.loader",
    "WeightsNotFoundError": "mmcurate.models.loader",
    "WeightsMismatchError": "mmcurate.models.loader",
    "ClipModel": "mmcurate.models.embed",
    "EmbedResult": "mmcurate.models.embed",
    "embed_encoded_images": "mmcurate.models.embed",
    "NativeImageLoader": "mmcurate.models.cpu_loader",
    "LoadedBatch": "mmcurate.models.cpu_loader",
    "Rejected": "mmcurate.models.cpu_loader",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mmcurate.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
