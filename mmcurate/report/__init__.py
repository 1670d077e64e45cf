"""Self-contained HTML quality report of a run, and the thumbnails the executor collects for it.

    from mmcurate.report import ThumbnailCollector, write_report

Names resolve lazily, so the executor can import the collector without loading the renderer.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "write_report": "mmcurate.report.html_report",
    "render_report": "mmcurate.report.html_report",
    "ThumbnailCollector": "mmcurate.report.thumbnails",
    "THUMBS_SCHEMA": "mmcurate.report.thumbnails",
    "make_thumbnails": "mmcurate.report.thumbnails",
    "load_run": "mmcurate.report.run_data",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mmcurate.report' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
