"""The report's "Image quality" section: the signals the ``image_quality`` stage adds, fastdup-style outlier views.

Shown only when samples.parquet has at least one of the signal columns (:data:`QUALITY_SIGNALS`). For each signal
a histogram of the kept samples, with the stage's thresholds (its recipe parameters ``min_sharpness``,
``min_brightness``, ``max_brightness``) drawn as dashed lines; then galleries of the blurriest, darkest and
brightest kept samples and of those flagged ``low_information`` (lowest entropy first), each beside the
thumbnails the run kept of what the stage rejected for that reason (thumbs.parquet, first keys), with the
number rejected. Bounded at any size: histograms are binned, galleries hold :data:`MAX_TILES` images read from the
output shards (kept_images), picked with a top-k (ties by key, so deterministic).

This module depends on nothing of html_report (which imports it).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmcurate.report.charts import Histogram, Marker, format_number, histogram_svg
from mmcurate.report.html_parts import as_float, e, empty, section, tile
from mmcurate.report.kept_images import kept_thumbnails
from mmcurate.report.run_data import RunData, read_samples

__all__ = ["QUALITY_SECTION", "QUALITY_STAGE", "QUALITY_SIGNALS", "quality_section"]

QUALITY_SECTION = ("quality", "Image quality")
QUALITY_STAGE = "image_quality"
MAX_TILES = 7  # one row at the report's full width

#: column -> (title, x-axis label); the order of the cards.
QUALITY_SIGNALS = {
    "sharpness": ("Sharpness (variance of the Laplacian)", "variance of the Laplacian (low = blurry)"),
    "brightness": ("Brightness (mean luma)", "mean luma, 0–255"),
    "contrast": ("Contrast (luma standard deviation)", "luma standard deviation"),
    "colourfulness": ("Colourfulness (Hasler–Süsstrunk)", "Hasler–Süsstrunk M (0 = grey)"),
    "border_fraction": ("Border fraction", "share of the image that is uniform border"),
    "flat_fraction": ("Flat fraction", "share of the image in flat blocks"),
    "entropy": ("Entropy", "bits of the luma histogram, 0–8"),
}
LOW_INFORMATION = "low_information"


def _markers(column: str, params: dict) -> list[Marker]:
    """The stage's thresholds on this signal's axis; a null threshold (report only) draws nothing."""
    out = []
    if column == "sharpness" and as_float(params.get("min_sharpness")) is not None:
        out.append(Marker(as_float(params["min_sharpness"]), f"min_sharpness {format_number(params['min_sharpness'])}"))
    if column == "brightness":
        for name in ("min_brightness", "max_brightness"):
            if as_float(params.get(name)) is not None:
                out.append(Marker(as_float(params[name]), f"{name.split('_')[0]} {format_number(params[name])}"))
    return out


def _values(table: pa.Table, column: str) -> np.ndarray:
    col = table.column(column)
    return pc.filter(col, pc.is_valid(col)).to_numpy(zero_copy_only=False).astype(np.float64)


def _hist_card(column: str, values: np.ndarray, params: dict) -> str:
    title, x_label = QUALITY_SIGNALS[column]
    hist = Histogram.linear(values)
    svg = histogram_svg(hist, title, x_label, color="#2b8a8a", markers=_markers(column, params))
    stats = ""
    if values.size:
        q = np.quantile(values, [0.05, 0.5, 0.95])
        stats = (
            f'<div class="stats">n {values.size:,} · p5 {format_number(float(q[0]))} · median '
            f"{format_number(float(q[1]))} · p95 {format_number(float(q[2]))}</div>"
        )
    return f'<div class="card hist" data-hist="{e(column)}" data-n="{hist.total}"><h3>{e(title)}</h3>{svg}{stats}</div>'


def _extreme_rows(table: pa.Table, column: str, ascending: bool, where=None) -> list[dict]:
    """The MAX_TILES rows with the lowest (or highest) `column`, ties by key; `where` filters first."""
    t = table if where is None else table.filter(where)
    t = t.filter(pc.is_valid(t.column(column)))
    if t.num_rows == 0:
        return []
    order = "ascending" if ascending else "descending"
    idx = pc.select_k_unstable(t, k=min(MAX_TILES, t.num_rows), sort_keys=[(column, order), ("key", "ascending")])
    return t.take(idx).to_pylist()


def _reject_thumbs(data: RunData, reason: str) -> list[dict]:
    t = data.thumbs
    if t is None or t.num_rows == 0 or not {"kind", "stage", "reason"} <= set(t.column_names):
        return []
    mask = pc.and_(
        pc.and_(pc.equal(t.column("kind"), "reject"), pc.equal(t.column("stage"), QUALITY_STAGE)),
        pc.equal(t.column("reason"), reason),
    )
    return t.filter(mask).to_pylist()[:MAX_TILES]


def _rejected_counts(data: RunData) -> dict[str, int]:
    r = data.rejects
    if r is None or r.num_rows == 0 or not {"stage", "reason"} <= set(r.column_names):
        return {}
    sub = r.filter(pc.equal(r.column("stage"), QUALITY_STAGE))
    if sub.num_rows == 0:
        return {}
    counts = sub.group_by("reason").aggregate([([], "count_all")])
    return dict(zip(counts.column("reason").to_pylist(), counts.column("count_all").to_pylist()))


def _gallery(
    data: RunData,
    gid: str,
    title: str,
    rows: list[dict],
    column: str,
    reason: str,
    n_rejected: int,
    thumbs: dict,
) -> str:
    kept_tiles = "".join(
        tile(
            thumbs[r["key"]].jpeg,
            r["key"],
            [],
            badge=f"{column} {format_number(float(r[column]))}",
            decoded=thumbs[r["key"]].decoded,
            caption=thumbs[r["key"]].caption,
        )
        for r in rows
    )
    kept_html = (
        f'<div class="note">kept, {e("lowest" if gid != "brightest" else "highest")} {e(column)} first</div>'
        f'<div class="tiles">{kept_tiles}</div>'
        if rows
        else empty("no kept sample has this signal")
    )
    rejected_html = ""
    if n_rejected:
        shown = _reject_thumbs(data, reason)
        tiles = "".join(
            tile(
                t["jpeg"],
                t["key"],
                [],
                badge=reason,
                badge_cls="dup",
                decoded=t.get("decoded", True),
                caption=t.get("caption"),
            )
            for t in shown
        )
        rejected_html = (
            f'<div class="note">rejected as <b>{e(reason)}</b>: {n_rejected:,} '
            f'(<a href="#rejects">all in Rejects</a>; shown: the first keys the run kept thumbnails of)</div>'
            + (f'<div class="tiles">{tiles}</div>' if tiles else "")
        )
    return (
        f'<div class="card gallery" data-gallery="{e(gid)}" data-count="{len(rows)}"><h3>{e(title)}</h3>'
        f"{rejected_html}{kept_html}</div>"
    )


def quality_section(data: RunData) -> str:
    """The section's HTML, or "" when samples.parquet has no quality signal (the stage did not run)."""
    table = read_samples(data, ["key", *QUALITY_SIGNALS, LOW_INFORMATION])
    signals = [c for c in QUALITY_SIGNALS if table is not None and c in table.column_names]
    has_flag = table is not None and LOW_INFORMATION in table.column_names
    if not signals and not has_flag:
        return ""
    params = data.recipe_params(QUALITY_STAGE) or {}
    rejected = _rejected_counts(data)
    cards = [_hist_card(c, _values(table, c), params) for c in signals]
    flag_line = ""
    if has_flag:
        flag = table.column(LOW_INFORMATION)
        n_low, n = int(pc.sum(pc.cast(flag, pa.int64())).as_py() or 0), table.num_rows - flag.null_count
        flag_line = (
            f'<p class="note" data-low-information="{n_low}">{n_low:,} of {n:,} kept samples are flagged '
            f"low-information (flat, near-uniform or placeholder images)"
            + ("; the stage rejects them" if params.get("reject_low_information") else "; the stage reports them only")
            + ".</p>"
        )
    wanted: list[tuple[str, str, str, str, bool, object]] = []
    if "sharpness" in signals:
        wanted.append(("blurriest", "Blurriest", "sharpness", "blurry", True, None))
    if "brightness" in signals:
        wanted.append(("darkest", "Darkest", "brightness", "too_dark", True, None))
        wanted.append(("brightest", "Brightest", "brightness", "too_bright", False, None))
    if has_flag:
        order_by = "entropy" if "entropy" in signals else next(iter(signals), None)
        if order_by is not None:
            wanted.append(
                ("low_information", "Low information", order_by, "low_information", True, pc.field(LOW_INFORMATION))
            )
    galleries = [
        (g, title, col, reason, _extreme_rows(table, col, asc, where)) for g, title, col, reason, asc, where in wanted
    ]
    thumbs = kept_thumbnails(data, [r["key"] for *_, rows in galleries for r in rows])
    gallery_html = "".join(
        _gallery(data, g, title, rows, col, reason, rejected.get(reason, 0), thumbs)
        for g, title, col, reason, rows in galleries
    )
    thresholds = ", ".join(
        f"{k} {format_number(as_float(params[k]))}"
        for k in ("min_sharpness", "min_brightness", "max_brightness")
        if as_float(params.get(k)) is not None
    )
    intro = (
        "Signals of the kept samples (samples.parquet), measured in integrity's decode (or image_quality's); dashed "
        "lines mark image_quality's thresholds"
        + (f" ({thresholds})" if thresholds else " (none set: report only)")
        + ". Galleries: the kept samples at the extremes, beside what the stage rejected for that reason."
    )
    chips = " ".join(
        f'<span class="chip" data-reason="{e(r)}">{e(r)} <b>{n:,}</b></span>' for r, n in sorted(rejected.items())
    )
    head = f'<p class="note">rejected by {QUALITY_STAGE}: {chips}</p>' if chips else ""
    content = head + f'<div class="grid">{"".join(cards)}</div>' + flag_line + gallery_html
    return section(*QUALITY_SECTION, intro, content)
