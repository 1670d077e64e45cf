"""Inline SVG charts for the report: histograms, horizontal bar charts and rank-size line charts.

No JavaScript and no external resources: each chart is a self-contained ``<svg>`` element with its
colours as attributes, tooltips as ``<title>`` children, and every label HTML-escaped. Binning lives
here too (:class:`Histogram`), so a chart and its numbers cannot disagree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Callable

import numpy as np

__all__ = [
    "Histogram",
    "Segment",
    "BarRow",
    "Series",
    "histogram_svg",
    "Marker",
    "scatter_svg",
    "bar_chart_svg",
    "rank_size_svg",
    "nice_step",
    "format_number",
    "PALETTE",
    "LOG_Y_MIN_RANGE",
]

PALETTE = {
    "primary": "#3b6ea8",
    "kept": "#2f9e6b",
    "rejected": "#d9534f",
    "muted": "#adb5bd",
    "grid": "#e9ecef",
    "axis": "#6c757d",
    "text": "#343a40",
    "before": "#d9822b",
}
# rank_size_svg switches to a log y axis when the largest value is at least this many times the smallest
# positive one (a linear axis would flatten everything but the head).
LOG_Y_MIN_RANGE = 30.0
_FONT = "font-family=\"system-ui,-apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif\""


def nice_step(raw: float) -> float:
    """The smallest 1, 2, 2.5 or 5 x 10^k that is >= raw (raw > 0)."""
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    exp = math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        step = m * 10.0**exp
        if step >= raw * (1 - 1e-9):
            return step
    return 10.0 ** (exp + 1)


def format_number(v: float) -> str:
    """Compact human number: 1234 -> "1,234", 12345678 -> "12.3M", 0.25 -> "0.25"."""
    if v is None or not math.isfinite(v):
        return "–"
    a = abs(v)
    if a >= 10_000_000:
        return f"{v / 1e6:.1f}M"
    if a >= 100_000:
        return f"{v / 1e3:.0f}k"
    if float(v).is_integer():
        return f"{int(v):,}"
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 1:
        return f"{v:.3g}"
    return f"{v:.2g}"


@dataclass
class Histogram:
    """Bin counts with their edges: counts[i] counts edges[i] <= v < edges[i+1].

    `overflow` means the last bin also holds everything above its upper edge (a long tail is folded in
    so that one outlier does not squeeze the rest into a single bar)."""

    edges: np.ndarray
    counts: np.ndarray
    total: int
    overflow: bool = False
    integer: bool = False  # bins are single integers (labels at bin centres)
    log2: bool = False  # edges are log2 of the value (aspect ratios)

    @classmethod
    def linear(cls, values, max_bins: int = 30, tail_quantile: float = 0.995) -> Histogram:
        v = _finite(values)
        if v.size == 0:
            return cls(np.array([0.0, 1.0]), np.zeros(1, np.int64), 0)
        lo, top = float(v.min()), float(v.max())
        hi = float(np.quantile(v, tail_quantile))
        overflow = top > hi * 1.5 and hi > lo
        if not overflow:
            hi = top
        step = nice_step((hi - lo) / max_bins) if hi > lo else 1.0
        start = math.floor(lo / step) * step
        n = max(1, math.ceil((hi - start) / step + 1e-9))
        if start + n * step <= hi:  # hi must fall inside the last bin
            n += 1
        edges = start + step * np.arange(n + 1)
        counts = np.histogram(np.clip(v, start, edges[-1] - step * 1e-6), bins=edges)[0]
        return cls(edges, counts, int(v.size), overflow=overflow)

    @classmethod
    def integers(cls, values, max_bins: int = 40) -> Histogram:
        """One bin per integer from the minimum (or 0) up; above max_bins bins the tail is folded."""
        v = _finite(values)
        if v.size == 0:
            return cls(np.array([0.0, 1.0]), np.zeros(1, np.int64), 0, integer=True)
        v = np.rint(v).astype(np.int64)
        lo = min(0, int(v.min()))
        hi = int(v.max())
        overflow = hi - lo + 1 > max_bins
        if overflow:
            hi = lo + max_bins - 1
        edges = np.arange(lo, hi + 2, dtype=np.float64)
        counts = np.bincount(np.clip(v, lo, hi) - lo, minlength=hi - lo + 1)
        return cls(edges, counts, int(v.size), overflow=overflow, integer=True)

    @classmethod
    def aspect(cls, ratios, max_ratio: float = 8.0, bins_per_octave: int = 4) -> Histogram:
        """Aspect ratios (width / height) on a log2 axis from 1/max_ratio to max_ratio; the extremes are
        folded into the end bins (counted, never dropped)."""
        v = _finite(ratios)
        v = v[v > 0]
        lim = math.log2(max_ratio)
        edges = np.linspace(-lim, lim, int(2 * lim * bins_per_octave) + 1)
        if v.size == 0:
            return cls(edges, np.zeros(len(edges) - 1, np.int64), 0, log2=True)
        lv = np.clip(np.log2(v), -lim, lim - 1e-9)
        counts = np.histogram(lv, bins=edges)[0]
        return cls(edges, counts, int(v.size), log2=True)

    def label(self, i: int) -> str:
        """Range label of bin i, e.g. "200–300", "7", "≥ 1,000", "1:2–1:1.7"."""
        lo, hi = self.edges[i], self.edges[i + 1]
        last = i == len(self.counts) - 1
        if self.integer:
            return f"≥ {format_number(lo)}" if last and self.overflow else format_number(lo)
        if self.log2:
            return f"{_ratio_label(lo)} – {_ratio_label(hi)}"
        if last and self.overflow:
            return f"≥ {format_number(lo)}"
        return f"{format_number(lo)} – {format_number(hi)}"


def _finite(values) -> np.ndarray:
    v = np.asarray(values if values is not None else [], dtype=np.float64).ravel()
    return v[np.isfinite(v)]


def _ratio_label(log2_value: float) -> str:
    r = 2.0**log2_value
    if abs(r - 1) < 1e-9:
        return "1:1"
    if r > 1:
        return f"{r:.3g}:1"
    return f"1:{1 / r:.3g}"


def _svg_open(width: int, height: int, label: str) -> str:
    return (
        f'<svg viewBox="0 0 {width} {height}" width="100%" '
        f'preserveAspectRatio="xMinYMin meet" role="img" aria-label="{escape(label)}" {_FONT} font-size="11">'
    )


def _text(x: float, y: float, s: str, anchor: str = "start", fill: str = PALETTE["text"], extra: str = "") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" fill="{fill}"{(" " + extra) if extra else ""}>'
        f"{escape(s)}</text>"
    )


def _y_ticks(vmax: float, n: int = 4) -> list[float]:
    step = nice_step(vmax / n) if vmax > 0 else 1.0
    if step < 1:
        step = 1.0  # counts are integers
    return [step * i for i in range(int(math.floor(vmax / step + 1e-9)) + 1)]


@dataclass
class Marker:
    """A vertical line across a histogram at `value` (in the histogram's units, not log2), e.g. a threshold."""

    value: float
    label: str
    color: str = PALETTE["rejected"]


def _marker_x(hist: Histogram, value: float, left: float, pw: float) -> tuple[float, bool]:
    """x of `value` on the histogram's axis, clamped to it, and whether it had to be clamped."""
    v = math.log2(value) if hist.log2 and value > 0 else value
    lo, hi = float(hist.edges[0]), float(hist.edges[-1])
    frac = (v - lo) / (hi - lo) if hi > lo else 0.5
    inside = 0.0 <= frac <= 1.0
    return left + pw * min(1.0, max(0.0, frac)), not inside


def histogram_svg(
    hist: Histogram,
    title: str,
    x_label: str,
    color: str = PALETTE["primary"],
    width: int = 400,
    height: int = 210,
    markers: Sequence[Marker] = (),
) -> str:
    """A vertical-bar histogram: y = count, x = the binned value, a tooltip per bar; `markers` draw dashed
    vertical lines (thresholds) with their label, a marker off the axis at its end (its label says so)."""
    if hist.total == 0:
        return _svg_open(width, 60, title) + _text(width / 2, 34, "no data", "middle", PALETTE["axis"]) + "</svg>"
    left, right, top, bottom = 44, 14, 10 + (14 if markers else 0), 40
    pw, ph = width - left - right, height - top - bottom
    n = len(hist.counts)
    ymax = max(1, int(hist.counts.max()))
    ticks = _y_ticks(ymax)
    ytop = max(ymax, ticks[-1])
    parts = [_svg_open(width, height, title)]
    for t in ticks:
        y = top + ph - ph * t / ytop
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="{PALETTE["grid"]}"/>')
        parts.append(_text(left - 6, y + 3.5, format_number(t), "end", PALETTE["axis"]))
    bw = pw / n
    gap = min(2.0, bw * 0.15)
    for i, c in enumerate(hist.counts):
        h = ph * int(c) / ytop
        x = left + i * bw
        parts.append(
            f'<rect x="{x + gap / 2:.1f}" y="{top + ph - h:.1f}" width="{max(0.5, bw - gap):.1f}" '
            f'height="{h:.1f}" fill="{color}"><title>{escape(hist.label(i))}: {int(c):,}</title></rect>'
        )
    parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" stroke="{PALETTE["axis"]}"/>')
    parts.extend(_x_labels(hist, left, top + ph, bw))
    parts.append(_text(left + pw / 2, height - 6, x_label, "middle", PALETTE["axis"]))
    for m in markers:
        x, clamped = _marker_x(hist, m.value, left, pw)
        label = m.label + (" (off the axis)" if clamped else "")
        anchor = "end" if x > left + pw * 0.6 else "start"
        parts.append(
            f'<g data-marker="{escape(m.label)}"><line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 4}" y2="{top + ph}" '
            f'stroke="{m.color}" stroke-width="1.5" stroke-dasharray="4 3"><title>{escape(label)}</title></line>'
            + _text(x + (-3 if anchor == "end" else 3), top - 6, label, anchor, m.color)
            + "</g>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _x_labels(hist: Histogram, left: float, y0: float, bw: float) -> list[str]:
    n = len(hist.counts)
    every = max(1, math.ceil(n / 7))
    out = []
    if hist.integer:
        for i in range(0, n, every):
            lbl = format_number(hist.edges[i]) + ("+" if hist.overflow and i == n - 1 else "")
            out.append(_text(left + (i + 0.5) * bw, y0 + 14, lbl, "middle", PALETTE["axis"]))
        return out
    if hist.log2:  # label whole octaves (1:4, 1:2, 1:1, 2:1, ...), not the bin edges between them
        marks = [i for i in range(n + 1) if abs(hist.edges[i] - round(hist.edges[i])) < 1e-9]
    else:
        marks = list(range(0, n + 1, every))
    for i in marks:
        v = hist.edges[i]
        lbl = _ratio_label(v) if hist.log2 else format_number(v)
        if hist.overflow and i == n:
            lbl += "+"
        out.append(
            f'<line x1="{left + i * bw:.1f}" x2="{left + i * bw:.1f}" y1="{y0}" y2="{y0 + 4}" '
            f'stroke="{PALETTE["axis"]}"/>'
        )
        out.append(_text(left + i * bw, y0 + 15, lbl, "middle", PALETTE["axis"]))
    return out


@dataclass
class Segment:
    value: float
    color: str
    tooltip: str


@dataclass
class BarRow:
    label: str
    segments: Sequence[Segment]
    annotation: str = ""  # text right of the bar (e.g. "1,234 → 1,100")


def bar_chart_svg(
    rows: Sequence[BarRow],
    title: str,
    scale_max: float | None = None,
    value_format: Callable[[float], str] = format_number,
    width: int = 760,
    label_width: int = 150,
    annotation_width: int = 170,
    row_height: int = 26,
) -> str:
    """Horizontal stacked bars, one row per entry, on a shared linear scale with gridlines."""
    if not rows:
        return _svg_open(width, 40, title) + _text(width / 2, 24, "no data", "middle", PALETTE["axis"]) + "</svg>"
    top, bottom = 8, 22
    height = top + bottom + row_height * len(rows)
    left = label_width
    pw = width - left - annotation_width - 8
    vmax = scale_max if scale_max else max((sum(s.value for s in r.segments) for r in rows), default=0.0)
    vmax = vmax if vmax > 0 else 1.0
    step = nice_step(vmax / 5)
    ticks = [step * i for i in range(int(math.floor(vmax / step + 1e-9)) + 1)]
    parts = [_svg_open(width, height, title)]
    for t in ticks:
        x = left + pw * t / vmax
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{height - bottom}" stroke="{PALETTE["grid"]}"/>')
        parts.append(_text(x, height - 6, value_format(t), "middle", PALETTE["axis"]))
    for j, row in enumerate(rows):
        y = top + j * row_height
        label = row.label if len(row.label) <= 24 else row.label[:23] + "…"
        parts.append(_text(left - 8, y + row_height / 2 + 4, label, "end", extra=""))
        x = float(left)
        for seg in row.segments:
            w = pw * max(0.0, seg.value) / vmax
            if w > 0:
                parts.append(
                    f'<rect x="{x:.1f}" y="{y + 4}" width="{w:.1f}" height="{row_height - 8}" '
                    f'fill="{seg.color}" rx="2"><title>{escape(seg.tooltip)}</title></rect>'
                )
            x += w
        if row.annotation:
            parts.append(_text(x + 6, y + row_height / 2 + 4, row.annotation, "start", PALETTE["axis"]))
    parts.append("</svg>")
    return "".join(parts)


@dataclass
class Series:
    label: str
    values: Sequence[float]
    color: str


def _nice_floor(v: float) -> float:
    """The largest 1, 2 or 5 x 10^k that is <= v (v > 0)."""
    k = math.floor(math.log10(v))
    return next(m * 10.0**k for m in (5, 2, 1) if m * 10.0**k <= v * (1 + 1e-9))


def _nice_ceil(v: float) -> float:
    """The smallest 1, 2 or 5 x 10^k that is >= v (v > 0)."""
    k = math.floor(math.log10(v))
    return next(m * 10.0**k for m in (1, 2, 5, 10) if m * 10.0**k >= v * (1 - 1e-9))


def _log_ticks(lo: float, hi: float) -> list[float]:
    # few decades: 1, 2 and 5 x 10^k, so the axis has enough labels; many: powers of ten only
    mults = (1, 2, 5) if math.log10(hi / lo) <= 3 else (1,)
    ticks = [m * 10.0**k for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1) for m in mults]
    return [t for t in ticks if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]


def _envelope(n: int, pw: float) -> np.ndarray:
    """Indices of a monotone series of n points worth drawing on pw pixels: the first and last point of
    every pixel column (they are its extremes), so a long series keeps its exact shape in few points."""
    idx = np.arange(n)
    if n <= 2 * pw:
        return idx
    cols = (idx * int(pw)) // max(1, n - 1)
    change = cols[1:] != cols[:-1]
    return idx[np.r_[True, change] | np.r_[change, True]]


def rank_size_svg(
    series: Sequence[Series],
    title: str,
    y_label: str = "samples per cluster",
    x_label: str = "cluster rank (largest first)",
    log_y: bool | None = None,
    width: int = 760,
    height: int = 270,
    marker_limit: int = 64,
) -> str:
    """A rank-size plot: each series' values sorted descending, drawn as a line over rank 1..n, all on
    one y axis (log when the values span at least LOG_Y_MIN_RANGE, unless `log_y` says). Zeros (empty
    clusters) cannot sit on a log axis: a series' line ends at its last positive value and the legend
    counts the zeros. Series of at most `marker_limit` points also get a dot (with a tooltip) per point."""
    data = []
    for s in series:
        v = np.sort(_finite(s.values))[::-1]
        if v.size:
            data.append((s, v))
    if not data:
        return _svg_open(width, 60, title) + _text(width / 2, 34, "no data", "middle", PALETTE["axis"]) + "</svg>"
    n = max(v.size for _, v in data)
    vmax = max(float(v[0]) for _, v in data)
    positive = [float(v[v > 0].min()) for _, v in data if (v > 0).any()]
    vmin_pos = min(positive) if positive else 1.0
    if log_y is None:
        log_y = vmax > 0 and vmax / vmin_pos >= LOG_Y_MIN_RANGE
    left, right, top, bottom = 56, 16, 30, 40
    pw, ph = width - left - right, height - top - bottom
    if log_y:
        lo, hi = _nice_floor(vmin_pos), _nice_ceil(max(vmax, vmin_pos))
        if hi <= lo:
            hi = lo * 10
        ticks = _log_ticks(lo, hi)

        def ypos(val: float) -> float:
            return top + ph - ph * math.log10(val / lo) / math.log10(hi / lo)
    else:
        ticks = _y_ticks(max(vmax, 0.0))
        ytop = max(vmax, ticks[-1], 1.0)

        def ypos(val: float) -> float:
            return top + ph - ph * val / ytop

    def xpos(rank: int) -> float:  # rank counts from 0 here
        return left + (pw / 2 if n == 1 else pw * rank / (n - 1))

    parts = [_svg_open(width, height, title)]
    for t in ticks:
        y = ypos(t)
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="{PALETTE["grid"]}"/>')
        parts.append(_text(left - 6, y + 3.5, format_number(t), "end", PALETTE["axis"]))
    step = max(1, int(nice_step(n / 6)))
    for r in sorted({1, *range(step, n + 1, step)}):
        x = xpos(r - 1)
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + ph}" y2="{top + ph + 4}" stroke="{PALETTE["axis"]}"/>'
        )
        parts.append(_text(x, top + ph + 15, format_number(r), "middle", PALETTE["axis"]))
    parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" stroke="{PALETTE["axis"]}"/>')
    parts.append(_text(left + pw / 2, height - 6, x_label, "middle", PALETTE["axis"]))
    parts.append(
        _text(
            12,
            top + ph / 2,
            y_label + (" (log scale)" if log_y else ""),
            "middle",
            PALETTE["axis"],
            f'transform="rotate(-90 12 {top + ph / 2:.1f})"',
        )
    )
    legend_x = left + 8
    for s, v in data:
        drawn = v[v > 0] if log_y else v
        zeros = int(v.size - drawn.size)
        summary = (
            f"{s.label}: {v.size:,} values, largest {format_number(float(v[0]))}, median "
            f"{format_number(float(np.median(v)))}, smallest {format_number(float(v[-1]))}"
        )
        label = s.label + (f" ({zeros:,} empty, not drawn on the log axis)" if zeros else "")
        parts.append(f'<g data-series="{escape(s.label)}" data-n="{v.size}">')
        if drawn.size:
            keep = _envelope(drawn.size, pw)
            pts = " ".join(f"{xpos(int(i)):.1f},{ypos(float(drawn[i])):.1f}" for i in keep)
            parts.append(
                f'<polyline points="{pts}" fill="none" stroke="{s.color}" stroke-width="2" '
                f'stroke-linejoin="round"><title>{escape(summary)}</title></polyline>'
            )
            if v.size <= marker_limit:
                for i, val in enumerate(drawn):
                    parts.append(
                        f'<circle cx="{xpos(i):.1f}" cy="{ypos(float(val)):.1f}" r="2.5" fill="{s.color}">'
                        f"<title>{escape(f'{s.label} #{i + 1}: {format_number(float(val))}')}</title>"
                        f"</circle>"
                    )
        parts.append(
            f'<line x1="{legend_x}" x2="{legend_x + 18}" y1="{top - 14}" y2="{top - 14}" stroke="{s.color}" '
            f'stroke-width="3"/>'
        )
        parts.append(_text(legend_x + 24, top - 10, label))
        parts.append("</g>")
        legend_x += 24 + 7 * len(label) + 22
    parts.append("</svg>")
    return "".join(parts)


def scatter_svg(
    points: np.ndarray,
    groups: np.ndarray,
    colors: Sequence[str],
    labels: Sequence[str],
    title: str,
    x_label: str = "",
    y_label: str = "",
    width: int = 760,
    height: int = 420,
    radius: float = 2.2,
) -> str:
    """A scatter plot of `points` (n x 2) coloured by `groups` (n ints indexing `colors` and `labels`), one
    ``<g>`` per group (drawn in group order: put the background group first) and a legend. Coordinates are
    rounded to 0.1 px and points carry no tooltips: the size stays about 40 bytes a point."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    grp = np.asarray(groups, dtype=np.int64).reshape(-1)
    ok = np.isfinite(pts).all(axis=1)
    pts, grp = pts[ok], grp[ok]
    if pts.shape[0] == 0:
        return _svg_open(width, 60, title) + _text(width / 2, 34, "no data", "middle", PALETTE["axis"]) + "</svg>"
    shown = [g for g in range(len(colors)) if (grp == g).any()]  # the legend lists the groups drawn
    legend_h = 18 * math.ceil(len(shown) / 4)
    left, right, top, bottom = 16, 16, 10 + legend_h, 26
    pw, ph = width - left - right, height - top - bottom
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    xy = np.empty_like(pts)
    pad = 3 * radius  # dots at the extremes stay inside the frame
    xy[:, 0] = left + pad + (pw - 2 * pad) * (pts[:, 0] - lo[0]) / span[0]
    xy[:, 1] = top + ph - pad - (ph - 2 * pad) * (pts[:, 1] - lo[1]) / span[1]
    parts = [_svg_open(width, height, title)]
    parts.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="{PALETTE["grid"]}"/>')
    for g in range(len(colors)):
        sel = xy[grp == g]
        if not sel.size:
            continue
        dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius}"/>' for x, y in sel)
        parts.append(
            f'<g data-group="{escape(str(labels[g]))}" data-n="{sel.shape[0]}" fill="{colors[g]}" '
            f'fill-opacity="0.75">{dots}</g>'
        )
    for i, g in enumerate(shown):
        lx, ly = left + (i % 4) * (pw / 4), 14 + 18 * (i // 4)
        label = labels[g] if len(labels[g]) <= 30 else labels[g][:29] + "…"
        parts.append(f'<rect x="{lx:.1f}" y="{ly - 9}" width="10" height="10" rx="2" fill="{colors[g]}"/>')
        parts.append(_text(lx + 15, ly, label))
    if x_label:
        parts.append(_text(left + pw / 2, height - 8, x_label, "middle", PALETTE["axis"]))
    if y_label:
        y0 = top + ph / 2
        parts.append(_text(10, y0, y_label, "middle", PALETTE["axis"], f'transform="rotate(-90 10 {y0:.1f})"'))
    parts.append("</svg>")
    return "".join(parts)
