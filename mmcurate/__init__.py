"""mmcurate: GPU-accelerated curation of image-text pairs for multimodal LLM training.

`import mmcurate` imports neither torch nor CUDA: the native module is loaded on first use,
and the device is resolved when a kernel is called.
"""

from mmcurate._version import __version__

__all__ = ["__version__", "build_info", "ops", "run"]


def build_info() -> dict:
    """What this build of the native core contains: version, CUDA, archs, nvJPEG, SIMD, codec versions."""
    from mmcurate._native import build_info as _build_info

    return _build_info()


def run(recipe, **options) -> dict:
    """Run a recipe (a YAML/JSON path, a mapping or a parsed Recipe) as ``mmcurate run`` does, the report
    included; returns the manifest. Options: see :func:`mmcurate.api.make_executor`."""
    from mmcurate.api import run as _run

    return _run(recipe, **options)


def __getattr__(name):
    if name == "ops":
        import importlib

        return importlib.import_module("mmcurate.ops")
    raise AttributeError(f"module 'mmcurate' has no attribute {name!r}")
