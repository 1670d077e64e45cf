"""Loads the compiled module mmcurate._C, with an error that says how to build it."""

from __future__ import annotations

import functools


@functools.cache
def native():
    try:
        from mmcurate import _C
    except ImportError as exc:  # pragma: no cover - exercised only on broken installs
        raise ImportError(
            "mmcurate's native module mmcurate._C is not built or failed to load "
            f"({exc}). Build it with `pip install -e .` (or `python setup.py build_ext --inplace`) "
            "from the repository root; see README.md."
        ) from exc
    return _C


def has(symbol: str) -> bool:
    """Whether the native module exposes `symbol` (areas register their bindings independently)."""
    return hasattr(native(), symbol)


def build_info() -> dict:
    info = dict(native().native_build_info())
    info["cuda_devices"] = cuda_device_count()
    info["binding_areas"] = list(native().binding_areas)
    return info


def cuda_device_count() -> int:
    """Visible GPUs for a CUDA build; 0 for a CPU-only build or when no driver/GPU is present."""
    C = native()
    if not C.native_build_info()["cuda"] or not hasattr(C, "cuda_device_count"):
        return 0
    try:
        return int(C.cuda_device_count())
    except RuntimeError:
        return 0
