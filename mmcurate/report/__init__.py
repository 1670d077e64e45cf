"""Self-contained HTML quality report of a run, and the thumbnails collected for it while the run writes.

    from mmcurate.report import ReportObserver, ThumbnailCollector, write_report

An executor given a ReportObserver (the CLI gives one) collects the thumbnails and writes report.html; the
pipeline itself does not know the report. Names resolve lazily, so the collector loads without the renderer.
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
    "ReportObserver": "mmcurate.report.observer",
}

__getattr__, __dir__, __all__ = lazy_exports("mmcurate.report", globals(), _EXPORTS)
