"""Self-contained HTML quality report of a run, and the thumbnails the executor collects for it.

    from mmcurate.report import ThumbnailCollector, write_report

Names resolve lazily, so the executor can import the collector without loading the renderer.
"""

from __future__ import annotations

from mmcurate._lazy import lazy_exports

_EXPORTS = {
    "write_report": "mmcurate.report.html_report",
    "render_report": "mmcurate.report.html_report",
    "ThumbnailCollector": "mmcurate.report.thumbnails",
    "THUMBS_SCHEMA": "mmcurate.report.thumbnails",
    "make_thumbnails": "mmcurate.report.thumbnails",
    "load_run": "mmcurate.report.run_data",
}

__getattr__, __dir__, __all__ = lazy_exports("mmcurate.report", globals(), _EXPORTS)
