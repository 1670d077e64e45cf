"""mmcurate: GPU-accelerated curation of image-text pairs for multimodal LLM training.

`import mmcurate` imports neither torch nor CUDA: the native module is loaded on first use,
and the device is resolved when a kernel is called.
"""

from typing import TYPE_CHECKING

from mmcurate._version import __version__

if TYPE_CHECKING:  # what editors and type checkers see; at run time these load on first use (below)
    from mmcurate.api import CurateResult, Pipeline, curate_table

__all__ = ["CurateResult", "Pipeline", "__version__", "build_info", "curate_table", "ops", "run"]

# In-memory curation (mmcurate.api, docs/python_api.md), imported on first use so `import mmcurate` stays light.
_API_NAMES = ("CurateResult", "Pipeline", "curate_table")


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
    if name in _API_NAMES:
        from mmcurate import api

        return getattr(api, name)
    raise AttributeError(f"module 'mmcurate' has no attribute {name!r}")
