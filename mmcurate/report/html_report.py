"""The self-contained HTML quality report of a run: ``write_report(out_dir)`` -> ``out_dir/report.html``.

One file that works offline: inline CSS, inline SVG charts (charts.py), thumbnails as ``data:`` URIs,
no scripts and no fonts or anything else fetched. Every string that comes from the data (keys,
captions, reasons, decoder messages, recipe values, paths) goes through :func:`html.escape`.

Sections: run facts, the funnel (samples in/out per stage with reasons), distributions of the kept
samples (width, height, aspect ratio, caption length) and of pHash distances between duplicates, the
kept captions (captions_section.py), what caption_clean and pii_redact changed (edits_section.py; only
when they ran), a gallery of duplicate groups and their paged listing (duplicate_listing.py), semantic
clusters (cluster sizes before/after balance, SemDeDup's clusters; from the manifest's stage stats),
instruction data (instruction_section.py; only for a run on conversations), a gallery of rejected
samples per reason and their paged listing (reject_listing.py), and the timing per stage. Only when the run
has what they show: image quality (quality_section.py), CLIP scores, cluster samples and the embedding map
(clip_section.py), splits and their leakage check (splits_section.py). The header carries the provenance
(provenance_header.py). docs/report.md describes them for users.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmcurate.curate.balance import MAX_LISTED_CLUSTER_SIZES
from mmcurate.report.captions_section import CAPTIONS_CSS, CAPTIONS_SECTION, captions_section
from mmcurate.report.charts import (
    PALETTE,
    BarRow,
    Histogram,
    Segment,
    Series,
    bar_chart_svg,
    format_number,
    histogram_svg,
    rank_size_svg,
)
from mmcurate.report.clip_section import CLIP_SECTION, clip_section
from mmcurate.report.duplicate_listing import DUPLICATE_LISTING_CSS, DuplicateListing
from mmcurate.report.edits_section import EDITS_CSS, EDITS_SECTION, edits_section
from mmcurate.report.html_parts import as_float, e, empty, fixed, html_table, num
from mmcurate.report.html_parts import section as _section
from mmcurate.report.html_parts import tile as _tile
from mmcurate.report.instruction_section import INSTRUCTION_CSS, INSTRUCTION_SECTION, instruction_section
from mmcurate.report.paging import PAGING_CSS
from mmcurate.report.provenance_header import PROVENANCE_CSS, provenance_header
from mmcurate.report.quality_section import QUALITY_SECTION, quality_section
from mmcurate.report.reject_listing import REJECT_LISTING_CSS, reject_listing, reject_listing_id
from mmcurate.report.run_data import RunData, load_run
from mmcurate.report.splits_section import SPLITS_SECTION, splits_section
from mmcurate.stages.semantic import BalanceStats, SemanticDedupStats

__all__ = ["write_report", "render_report", "REPORT_NAME"]

REPORT_NAME = "report.html"
# The report shows at most this many tiles, whatever thumbs.parquet holds (keeps the file small).
MAX_TILES_PER_REASON = 24
MAX_GROUPS = 24
MAX_TILES_PER_GROUP = 12
MAX_LISTED_FILES = 50

SECTIONS = [
    ("run", "Run"),
    ("funnel", "Funnel"),
    ("distributions", "Distributions"),
    ("duplicates", "Duplicates"),
    ("clusters", "Semantic clusters"),
    ("rejects", "Rejects"),
    ("timing", "Timing"),
]


# ---------------------------------------------------------------------------------------------------
# entry points


def write_report(out_dir, path=None) -> Path:
    """Render the report of the run in `out_dir` and write it atomically (temp file + rename).

    Returns the path written (``out_dir/report.html`` unless `path` is given)."""
    out_dir = Path(out_dir)
    data = load_run(out_dir)
    target = Path(path) if path is not None else out_dir / REPORT_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    # links to rejects.parquet / duplicates.parquet point at the run directory from wherever the report is
    try:
        rel = Path(os.path.relpath(out_dir.resolve(), target.parent.resolve())).as_posix()
        data.files_href = "" if rel == "." else quote(rel) + "/"
    except ValueError:  # another drive (Windows): no relative path
        data.files_href = out_dir.resolve().as_uri() + "/"
    html = render_report(data)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(html)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def render_report(data: RunData) -> str:
    """The report as one HTML string."""
    t0 = time.perf_counter()
    title = f"mmcurate report · {data.out_dir.resolve().name}"
    instruction = instruction_section(data)  # "" for a run without instruction data
    captions = captions_section(data)  # "" without captions
    edits = edits_section(data)  # "" for a run without caption_clean / pii_redact
    # Optional sections: "" when the run lacks what they show; each is listed in the nav before `before`.
    optional = [
        (QUALITY_SECTION, quality_section(data), "duplicates"),
        (CLIP_SECTION, clip_section(data), "rejects"),
        (SPLITS_SECTION, splits_section(data), "rejects"),
    ]
    shown = [(sid, before) for sid, html, before in optional if html]
    html_of = {sid[0]: html for sid, html, _ in optional}
    body = [
        _header(data),
        _nav(with_instruction=bool(instruction), with_captions=bool(captions), with_edits=bool(edits), optional=shown),
        _section_run(data),
        _section_funnel(data),
        _section_distributions(data),
        captions,
        edits,
        html_of[QUALITY_SECTION[0]],
        _section_duplicates(data),
        _section_clusters(data),
        html_of[CLIP_SECTION[0]],
        html_of[SPLITS_SECTION[0]],
        instruction,
        _section_rejects(data),
        _section_timing(data),
    ]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # Nothing may be fetched: the policy makes the browser refuse it, should a resource slip in.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src data:; style-src 'unsafe-inline'\">"
        f"<title>{e(title)}</title><style>{_CSS}{INSTRUCTION_CSS}{PAGING_CSS}{CAPTIONS_CSS}{EDITS_CSS}"
        f"{REJECT_LISTING_CSS}{DUPLICATE_LISTING_CSS}{PROVENANCE_CSS}</style></head>\n<body><main>\n" + "\n".join(body)
    )
    built = (len(page.encode("utf-8")), time.perf_counter() - t0)  # the footer adds a few hundred bytes
    return page + "\n" + _footer(data, built) + "\n</main></body></html>\n"


# ---------------------------------------------------------------------------------------------------
# formatting helpers


def _int(v, default: int = 0) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def _timestamp(v) -> str:
    if v is None or v == "":
        return "–"
    f = as_float(v)
    if f is not None and not isinstance(v, str):
        return _dt.datetime.fromtimestamp(f, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(v)


def _pct(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "–"


def _rate(n: float, seconds: float | None) -> str:
    return f"{format_number(n / seconds)}/s" if seconds and seconds > 0 else "–"


def _kind_chip(kind) -> str:
    return f'<span class="kind">{e(kind)}</span>' if kind else ""


# ---------------------------------------------------------------------------------------------------
# header


def _header(data: RunData) -> str:
    run, counts = data.run, data.counts
    read, kept, rejected = _int(counts.get("read")), _int(counts.get("kept")), _int(counts.get("rejected"))
    duration = as_float(run.get("duration_s"))
    n_dup = data.duplicates.num_rows if data.duplicates is not None else None
    balanced = kept + rejected == read
    check = (
        f'<span class="badge ok" data-check="balanced">every sample accounted for: '
        f"{kept:,} kept + {rejected:,} rejected = {read:,} read</span>"
        if balanced
        else f'<span class="badge bad" data-check="unbalanced">accounting mismatch: {kept:,} kept + {rejected:,} '
        f"rejected ≠ {read:,} read ({read - kept - rejected:+,} unaccounted)</span>"
    )
    kpis = [
        ("read", "Read", f"{read:,}", "samples in"),
        ("kept", "Kept", f"{kept:,}", _pct(kept, read)),
        ("rejected", "Rejected", f"{rejected:,}", _pct(rejected, read)),
        ("duplicates", "Duplicates", "–" if n_dup is None else f"{n_dup:,}", "exact + near"),
        ("duration", "Duration", _duration(duration), _rate(read, duration).replace("/s", " samples/s")),
    ]
    cards = "".join(
        f'<div class="kpi" data-kpi="{k}"><div class="kpi-label">{e(label)}</div>'
        f'<div class="kpi-value">{e(value)}</div><div class="kpi-sub">{e(sub)}</div></div>'
        for k, label, value, sub in kpis
    )
    started, finished = _timestamp(run.get("started")), _timestamp(run.get("finished"))
    return (
        f'<header><div class="title"><h1>Curation report</h1>'
        f'<div class="subtitle"><code>{e(data.out_dir.resolve())}</code> · {e(started)} → {e(finished)}</div>'
        f'</div>{provenance_header(data)}<div class="kpis">{cards}</div><div class="check">{check}</div>'
        f"{_random_weights_banner(data)}</header>"
    )


def _random_weights_banner(data: RunData) -> str:
    """A warning on top of the report when a stage ran a model with weights: random (its results mean nothing)."""
    from mmcurate.pipeline.diagnosis import random_weight_stages, random_weights_warning

    stages = random_weight_stages(data.manifest)
    if not stages:
        return ""
    lines = "<br>".join(e(random_weights_warning(s)) for s in stages)
    return (
        f'<div class="check"><span class="badge bad" data-check="random-weights">RANDOM WEIGHTS: the results below '
        f"are not real curation results.<br>{lines}</span></div>"
    )


def _nav(with_instruction: bool = False, with_captions: bool = False, with_edits: bool = False, optional=()) -> str:
    sections = list(SECTIONS)
    for present, section in ((with_captions, CAPTIONS_SECTION), (with_edits, EDITS_SECTION)):
        if present:
            sections.insert(sections.index(("duplicates", "Duplicates")), section)
    for section, before in optional:
        sections.insert([sid for sid, _ in sections].index(before), section)
    if with_instruction:
        sections.insert(sections.index(("rejects", "Rejects")), INSTRUCTION_SECTION)
    links = "".join(f'<a href="#{sid}">{e(title)}</a>' for sid, title in sections)
    return f'<nav aria-label="sections">{links}</nav>'


def _footer(data: RunData, built: tuple[int, float] | None = None) -> str:
    version = data.run.get("mmcurate_version") or "?"
    missing = f" Not in this output directory: {', '.join(e(m) for m in data.missing)}." if data.missing else ""
    bound = ""
    if built is not None:
        size, seconds = built
        bound = (
            f' <span data-built-bytes="{size}" data-built-seconds="{seconds:.3f}">This page: '
            f"{size / 1e6:.2f} MB, rendered in {_duration(seconds)}. Its size and build time stay bounded whatever "
            "the run's size: histograms are binned, galleries, the embedding map and long tables sampled or capped "
            "(with what is left out counted and the Parquet file that has it all named); docs/report.md gives the "
            "figures at 1M samples.</span>"
        )
    return (
        f"<footer>Generated by mmcurate {e(version)} on "
        f"{e(_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'))} from "
        f"<code>{e(data.out_dir.resolve())}</code>.{missing} This page is self-contained and works offline.{bound}"
        f"</footer>"
    )


# ---------------------------------------------------------------------------------------------------
# run facts


def _recipe_text(recipe) -> str:
    try:
        import yaml

        return yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True, default_flow_style=False)
    except Exception:  # noqa: BLE001 - no PyYAML, or a value YAML cannot represent: JSON says the same
        return json.dumps(recipe, indent=2, ensure_ascii=False, default=str)


def _kv_table(d: dict) -> str:
    rows = []
    for k, v in d.items():
        if isinstance(v, (dict, list)):
            v = json.dumps(v, ensure_ascii=False, default=str)
        rows.append(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>")
    return f'<table class="kv">{"".join(rows)}</table>'


def _files_table(items) -> str:
    if not isinstance(items, list) or not items:
        return empty("none listed")
    dicts = [i if isinstance(i, dict) else {"path": i} for i in items]
    columns: list[str] = []
    for d in dicts:
        for k in d:
            if k not in columns:
                columns.append(k)
    columns = columns[:6]
    rows = []
    for d in dicts[:MAX_LISTED_FILES]:
        cells = []
        for c in columns:
            v = d.get(c)
            if isinstance(v, (dict, list)):
                v = json.dumps(v, ensure_ascii=False, default=str)
            cells.append(f'<td class="{"mono" if c in ("sha256", "path", "hash") else ""}">{e(v)}</td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    more = (
        f'<p class="note">… and {len(dicts) - MAX_LISTED_FILES:,} more (see manifest.json)</p>'
        if len(dicts) > MAX_LISTED_FILES
        else ""
    )
    return html_table(columns, rows, "files") + more


def _section_run(data: RunData) -> str:
    run = data.run
    build = run.get("build_info") if isinstance(run.get("build_info"), dict) else {}
    device = ("CUDA" if build.get("cuda") else "CPU") if build else "–"
    facts = {
        "Started": _timestamp(run.get("started")),
        "Finished": _timestamp(run.get("finished")),
        "Duration": _duration(as_float(run.get("duration_s"))),
        "mmcurate": run.get("mmcurate_version") or build.get("version") or "–",
        "Native build": (f"{device}; {build.get('jpeg', '?')}; SIMD {build.get('simd', '?')}" if build else "–"),
        "Inputs": f"{len(data.manifest.get('inputs') or []):,} file(s)",
        "Outputs": f"{len(data.manifest.get('outputs') or []):,} file(s)",
    }
    recipe = run.get("recipe")
    details = []
    if recipe is not None:
        details.append(
            f'<details data-detail="recipe"><summary>Recipe (resolved)</summary>'
            f'<pre class="code">{e(_recipe_text(recipe))}</pre></details>'
        )
    if build:
        details.append(f'<details data-detail="build"><summary>Build information</summary>{_kv_table(build)}</details>')
    details.append(
        f'<details data-detail="inputs"><summary>Input files</summary>'
        f"{_files_table(data.manifest.get('inputs'))}</details>"
    )
    details.append(
        f'<details data-detail="outputs"><summary>Output files</summary>'
        f"{_files_table(data.manifest.get('outputs'))}</details>"
    )
    return _section("run", "Run", "", _kv_table(facts) + _run_warnings(data.manifest) + "".join(details))


def _run_warnings(manifest: dict) -> str:
    """The run's warnings (shards read only in part, a reason rejecting most samples) and every shard error."""
    warnings = manifest.get("warnings") or []
    errors = manifest.get("shard_errors") or []
    if not warnings and not errors:
        return ""
    items = "".join(f"<li>{e(w)}</li>" for w in warnings)
    html = f'<div class="warnings" data-detail="warnings"><strong>Warnings</strong><ul>{items}</ul></div>'
    if errors:
        rows = "".join(
            f"<tr><td>{e(str(x.get('shard')))}</td><td>{e(str(x.get('reason')))}</td>"
            f"<td>{e(str(x.get('detail')))}</td></tr>"
            for x in errors
        )
        html += (
            f'<details open data-detail="shard-errors"><summary>Shards read only in part ({len(errors)})'
            f"</summary><table><thead><tr><th>shard</th><th>reason</th><th>detail</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></details>"
        )
    return html


# ---------------------------------------------------------------------------------------------------
# funnel


def _reasons_by_stage(data: RunData) -> dict[str, dict[str, int]]:
    """stage -> reason -> count, from the rejects log when present, else from the manifest."""
    out: dict[str, dict[str, int]] = {}
    if data.rejects is not None and data.rejects.num_rows and {"stage", "reason"} <= set(data.rejects.column_names):
        grouped = data.rejects.group_by(["stage", "reason"]).aggregate([([], "count_all")])
        for stage, reason, n in zip(*(grouped.column(c).to_pylist() for c in ("stage", "reason", "count_all"))):
            out.setdefault(stage, {})[reason] = int(n)
    else:
        for s in data.stages:
            reasons = s.get("reasons")
            if isinstance(reasons, dict):
                out[str(s.get("name"))] = {str(k): _int(v) for k, v in reasons.items()}
    return {stage: dict(sorted(r.items(), key=lambda kv: (-kv[1], kv[0]))) for stage, r in out.items()}


def _reason_chips(reasons: dict[str, int]) -> str:
    return (
        " ".join(f'<span class="chip" data-reason="{e(r)}">{e(r)} <b>{n:,}</b></span>' for r, n in reasons.items())
        or '<span class="muted">–</span>'
    )


def _section_funnel(data: RunData) -> str:
    stages = data.stages
    read = _int(data.counts.get("read")) or (_int(stages[0].get("in")) if stages else 0)
    if not stages:
        return _section("funnel", "Funnel", "", empty("the manifest lists no stages"))
    reasons = _reasons_by_stage(data)
    bars = [BarRow("read", [Segment(read, PALETTE["primary"], f"read: {read:,}")], f"{read:,}")]
    rows = []
    for s in stages:
        name = str(s.get("name", "?"))
        n_in, kept, rej = _int(s.get("in")), _int(s.get("kept")), _int(s.get("rejected"))
        bars.append(
            BarRow(
                name,
                [
                    Segment(kept, PALETTE["kept"], f"{name}: {kept:,} kept"),
                    Segment(rej, PALETTE["rejected"], f"{name}: {rej:,} rejected"),
                ],
                f"{n_in:,} → {kept:,}" + (f"  (−{rej:,})" if rej else ""),
            )
        )
        rows.append(
            f'<tr data-stage="{e(name)}" data-in="{n_in}" data-kept="{kept}" data-rejected="{rej}">'
            f'<td class="name">{e(name)}</td><td>{_kind_chip(s.get("kind"))}</td>'
            f'<td class="num">{n_in:,}</td><td class="num">{kept:,}</td><td class="num">{rej:,}</td>'
            f'<td class="num">{_pct(rej, n_in)}</td><td>{_reason_chips(reasons.get(name, {}))}</td></tr>'
        )
    kept_total = _int(data.counts.get("kept"))
    bars.append(
        BarRow(
            "kept",
            [Segment(kept_total, PALETTE["kept"], f"kept: {kept_total:,}")],
            f"{kept_total:,} ({_pct(kept_total, read)})",
        )
    )
    legend = (
        f'<div class="legend"><span><i style="background:{PALETTE["kept"]}"></i>kept by the stage</span>'
        f'<span><i style="background:{PALETTE["rejected"]}"></i>rejected by the stage</span></div>'
    )
    chart = bar_chart_svg(bars, "samples in and out per stage", scale_max=read or None)
    table = html_table(["stage", "kind", "in", "kept", "rejected", "% rejected", "reasons"], rows, "funnel")
    return _section(
        "funnel",
        "Funnel",
        "Samples entering each stage, in recipe order, and where they went.",
        f'<div class="card chart">{chart}{legend}</div>{table}',
    )


# ---------------------------------------------------------------------------------------------------
# distributions


def _stats_line(values: np.ndarray, unit: str = "") -> str:
    v = values[np.isfinite(values)] if values.size else values
    if v.size == 0:
        return ""
    q = np.quantile(v, [0.05, 0.5, 0.95])
    u = f" {unit}" if unit else ""
    return (
        f'<div class="stats">n {v.size:,} · min {format_number(float(v.min()))} · p5 {format_number(q[0])} · '
        f"median {format_number(q[1])} · p95 {format_number(q[2])} · max {format_number(float(v.max()))}{e(u)}</div>"
    )


def _hist_card(
    key: str,
    title: str,
    hist: Histogram,
    values: np.ndarray,
    x_label: str,
    note: str = "",
    color: str = PALETTE["primary"],
    ratio_stats: bool = False,
) -> str:
    svg = histogram_svg(hist, title, x_label, color=color)
    stats = _ratio_stats(values) if ratio_stats else _stats_line(values)
    note_html = f'<div class="note">{e(note)}</div>' if note else ""
    return (
        f'<div class="card hist" data-hist="{e(key)}" data-n="{hist.total}"><h3>{e(title)}</h3>{svg}'
        f"{stats}{note_html}</div>"
    )


def _ratio_stats(values: np.ndarray) -> str:
    v = values[np.isfinite(values) & (values > 0)] if values.size else values
    if v.size == 0:
        return ""
    wide, tall = int((v > 1.0001).sum()), int((v < 0.9999).sum())
    return (
        f'<div class="stats">n {v.size:,} · median {format_number(float(np.median(v)))} · landscape {wide:,} · '
        f"portrait {tall:,} · square {v.size - wide - tall:,} · extremes {format_number(float(v.min()))}–"
        f"{format_number(float(v.max()))}</div>"
    )


def _column(table: pa.Table | None, name: str) -> pa.ChunkedArray | None:
    if table is None or name not in table.column_names:
        return None
    return table.column(name)


def _section_distributions(data: RunData) -> str:
    cards = []
    width, height = _column(data.samples, "width"), _column(data.samples, "height")
    if width is not None and height is not None:
        valid = pc.and_(pc.is_valid(width), pc.is_valid(height))
        w = pc.filter(width, valid).to_numpy().astype(np.float64)
        h = pc.filter(height, valid).to_numpy().astype(np.float64)
        cards.append(_hist_card("width", "Width", Histogram.linear(w), w, "pixels"))
        cards.append(_hist_card("height", "Height", Histogram.linear(h), h, "pixels"))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(h > 0, w / np.where(h > 0, h, 1), np.nan)
        cards.append(
            _hist_card(
                "aspect",
                "Aspect ratio (width : height)",
                Histogram.aspect(ratio),
                ratio,
                "log scale; ratios beyond 8:1 are counted in the end bins",
                ratio_stats=True,
            )
        )
    caption = _column(data.samples, "caption")
    if caption is not None:
        caption = pc.filter(caption, pc.is_valid(caption))
        chars = pc.utf8_length(caption).to_numpy(zero_copy_only=False).astype(np.float64)
        words = (
            pc.list_value_length(pc.utf8_split_whitespace(caption)).to_numpy(zero_copy_only=False).astype(np.float64)
        )
        missing = data.samples.num_rows - len(caption)
        note = f"{missing:,} kept samples have no caption" if missing else ""
        cards.append(
            _hist_card(
                "caption_chars",
                "Caption length (characters)",
                Histogram.linear(chars),
                chars,
                "characters",
                note,
                color="#7b61a8",
            )
        )
        cards.append(
            _hist_card(
                "caption_words",
                "Caption length (words)",
                Histogram.integers(words, 40),
                words,
                "words",
                note,
                color="#7b61a8",
            )
        )
    for kind, label, bits in (("phash", "pHash", 64), ("pdq", "PDQ", 256)):
        distances = _near_distances(data, kind)
        if distances is not None and (kind == "phash" or len(distances)):  # a PDQ card only when PDQ linked
            cards.append(
                _hist_card(
                    f"{kind}_distance",
                    f"{label} distance of near-duplicates",
                    Histogram.integers(distances, bits + 1),
                    distances,
                    f"Hamming distance to the representative (bits of {bits})",
                    color=PALETTE["rejected"],
                )
            )
    intro = "Kept samples (samples.parquet); the last chart shows detected near-duplicates (duplicates.parquet)."
    content = f'<div class="grid">{"".join(cards)}</div>' if cards else empty("samples.parquet is missing")
    return _section("distributions", "Distributions", intro, content)


def _near_distances(data: RunData, link_kind: str) -> np.ndarray | None:
    """The distances of the duplicate links of one kind (phash, pdq), None without duplicates.parquet."""
    kind, dist = _column(data.duplicates, "kind"), _column(data.duplicates, "distance")
    if kind is None or dist is None:
        return None
    d = pc.filter(dist, pc.equal(kind, link_kind))
    return pc.filter(d, pc.is_valid(d)).to_numpy().astype(np.float64)


# ---------------------------------------------------------------------------------------------------
# thumbnails and galleries


def _thumb_rows(data: RunData, kind: str) -> list[dict]:
    t = data.thumbs
    if t is None or t.num_rows == 0 or "kind" not in t.column_names:
        return []
    return pc.filter(t, pc.equal(t.column("kind"), kind)).to_pylist()


def _section_duplicates(data: RunData) -> str:
    dup = data.duplicates
    if dup is None:
        return _section("duplicates", "Duplicates", "", empty("no duplicates.parquet: the recipe ran no dedup stage"))
    if dup.num_rows == 0:
        return _section("duplicates", "Duplicates", "", empty("no duplicates were found"))
    # summary per kind: duplicates, groups, largest group (members + representative)
    sizes = dup.group_by(["kind", "duplicate_of"]).aggregate([([], "count_all")])
    per_kind = sizes.group_by("kind").aggregate([("count_all", "sum"), ("count_all", "count"), ("count_all", "max")])
    rows = []
    for kind, n, groups, largest in zip(
        *(per_kind.column(c).to_pylist() for c in ("kind", "count_all_sum", "count_all_count", "count_all_max"))
    ):
        rows.append(
            f'<tr data-kind="{e(kind)}" data-duplicates="{n}" data-groups="{groups}"><td>{e(kind)}</td>'
            f'<td class="num">{n:,}</td><td class="num">{groups:,}</td><td class="num">{largest + 1:,}</td></tr>'
        )
    summary = html_table(["kind", "duplicates removed", "groups", "largest group"], rows, "dups")
    group_size = {
        (k, r): n for k, r, n in zip(*(sizes.column(c).to_pylist() for c in ("kind", "duplicate_of", "count_all")))
    }
    listing = DuplicateListing.from_run(data)
    return _section(
        "duplicates",
        "Duplicates",
        "Each group keeps one representative (green) and drops its duplicates; the distance is in "
        "pHash bits (0 for byte-identical copies). Members with the largest distance are shown first.",
        summary + _duplicate_gallery(data, group_size, listing) + listing.html(),
    )


def _duplicate_gallery(data: RunData, group_size: dict, listing: DuplicateListing) -> str:
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in _thumb_rows(data, "duplicate"):
        gid = (row.get("reason") or "", row.get("group") or "")
        if gid not in groups and len(groups) >= MAX_GROUPS:
            continue
        groups.setdefault(gid, []).append(row)
    if not groups:
        return empty("no thumbnails of duplicate groups were collected")
    out = []
    for (kind, rep), rows in groups.items():
        tiles = []
        shown = 0
        for row in rows[:MAX_TILES_PER_GROUP]:
            is_rep = row["key"] == rep
            dist = row.get("distance")
            if is_rep:
                badge = "kept"
            elif kind == "exact":
                badge = "same bytes"
            else:
                badge = f"d = {dist:g}" if dist is not None else kind
            tiles.append(
                _tile(
                    row["jpeg"],
                    row["key"],
                    [("note", row.get("note") or "")],
                    badge,
                    "kept" if is_rep else "dup",
                    row.get("decoded", True),
                    row.get("caption"),
                    "rep" if is_rep else "",
                )
            )
            shown += 0 if is_rep else 1
        total = group_size.get((kind, rep), shown)
        href = listing.href(kind, rep)
        more_text = f"+{total - shown:,} more" + (" · listed below" if href else " in duplicates.parquet")
        more_html = f'<a href="{href}">{e(more_text)}</a>' if href else e(more_text)
        more = f'<div class="more">{more_html}</div>' if total > shown else ""
        out.append(
            f'<div class="group" data-group="{e(rep)}" data-kind="{e(kind)}" data-size="{total + 1}">'
            f'<div class="group-head"><span class="kind">{e(kind)}</span> group of {total + 1:,} · '
            f'representative <code>{e(rep)}</code></div><div class="tiles">{"".join(tiles)}{more}</div></div>'
        )
    return "".join(out)


def _details_for(data: RunData, keys: list[str]) -> dict[tuple[str, str, str], str]:
    r = data.rejects
    if r is None or not keys or not {"key", "stage", "reason", "detail"} <= set(r.column_names):
        return {}
    sub = r.filter(pc.is_in(r.column("key"), value_set=pa.array(sorted(set(keys)), pa.string())))
    return {
        (k, s, rs): d for k, s, rs, d in zip(*(sub.column(c).to_pylist() for c in ("key", "stage", "reason", "detail")))
    }


def _section_rejects(data: RunData) -> str:
    reasons = _reasons_by_stage(data)
    if not any(reasons.values()):
        return _section("rejects", "Rejects", "", empty("nothing was rejected"))
    thumbs: dict[tuple[str, str], list[dict]] = {}
    for row in _thumb_rows(data, "reject"):
        thumbs.setdefault((row.get("stage") or "", row.get("reason") or ""), []).append(row)
    details = _details_for(data, [row["key"] for rows in thumbs.values() for row in rows])
    kinds = {str(s.get("name")): s.get("kind") for s in data.stages}
    order = [str(s.get("name")) for s in data.stages] + sorted(set(reasons) - set(kinds))
    has_log = data.rejects is not None and data.rejects.num_rows > 0  # else the counts come from the manifest
    cards = []
    for stage in order:
        for reason, n in reasons.get(stage, {}).items():
            rows = thumbs.get((stage, reason), [])[:MAX_TILES_PER_REASON]
            # every reason is listed below the cards when the rejects log is there (reject_listing)
            listed = f'<a href="#{reject_listing_id(stage, reason)}">listed below</a>' if has_log else ""
            if rows:
                tiles = "".join(
                    _tile(
                        row["jpeg"],
                        row["key"],
                        [("detail", details.get((row["key"], stage, reason), ""))],
                        decoded=row.get("decoded", True),
                        caption=row.get("caption"),
                    )
                    for row in rows
                )
                body = f'<div class="tiles">{tiles}</div>'
                if n > len(rows):
                    more = f" · {listed}" if listed else ""
                    body += f'<p class="note">showing {len(rows):,} of {n:,} (the first by key){more}</p>'
            else:
                if kinds.get(stage) == "global":
                    body = empty("see the duplicate groups above for pictures of what this stage removed")
                else:
                    body = empty("no thumbnails were collected for this reason")
                body += f'<p class="note">{listed}</p>' if listed else ""
            cards.append(
                f'<div class="card reason" data-stage="{e(stage)}" data-reason="{e(reason)}" data-count="{n}">'
                f'<h3><span class="stage">{e(stage)}</span> · {e(reason)} <span class="count">{n:,}</span>'
                f"</h3>{body}</div>"
            )
    return _section(
        "rejects",
        "Rejects",
        "Rejected samples per stage and reason, with the stage's detail.",
        f'<div class="reasons">{"".join(cards)}</div>'
        + reject_listing(data, [(stage, reason) for stage in order for reason in reasons.get(stage, {})]),
    )


# ---------------------------------------------------------------------------------------------------
# semantic clusters (from the stage stats of balance and semantic_dedup in the manifest)

BALANCE_STAGE = "balance"
SEMANTIC_DEDUP_STAGE = "semantic_dedup"
_PERCENTILE_NAMES = {"p0": "smallest", "p50": "median", "p100": "largest"}


def _cluster_sizes(side: dict) -> list[float] | None:
    """The per-cluster sizes cluster_balance_stats lists (only up to MAX_LISTED_CLUSTER_SIZES clusters),
    or None when absent or not all numbers (a hand-edited manifest)."""
    sizes = side.get("sizes")
    if not isinstance(sizes, list) or not sizes:
        return None
    values = [as_float(v) for v in sizes]
    return None if any(v is None for v in values) else values


def _largest_median(side: dict) -> tuple[float | None, float | None]:
    sizes = _cluster_sizes(side)
    if sizes is not None:
        return max(sizes), float(np.median(sizes))
    pct = side.get("size_percentiles") if isinstance(side.get("size_percentiles"), dict) else {}
    return as_float(pct.get("p100")), as_float(pct.get("p50"))


def _balance_card(stage: dict) -> str:
    stats = BalanceStats.from_dict(stage["stats"])
    levels = stats.levels
    facts = [f"method {stats.method or '–'}", f"strategy {stats.strategy or '–'}"]
    if isinstance(levels, list) and levels:
        facts.append("levels " + " → ".join(num(k) for k in levels))
    facts.append(f"selected {num(stats.selected)} of {num(stats.n)} (target {num(stats.target)})")
    head = f'<h3>balance</h3><div class="stats">{e(" · ".join(facts))}</div>'
    sides = [("before", stats.before), ("after", stats.after)]
    if not all(isinstance(side, dict) for _, side in sides):
        return (
            f'<div class="card clusters" data-stage="{e(BALANCE_STAGE)}">{head}'
            f"{empty('no cluster statistics: no sample had an embedding, so nothing was clustered')}</div>"
        )
    metrics = [
        ("clusters", "clusters", lambda s: num(s.get("n_clusters"))),
        ("samples", "samples", lambda s: num(s.get("n_samples"))),
        ("gini", "Gini (0 = equal sizes)", lambda s: fixed(s.get("gini"))),
        ("normalized_entropy", "normalised entropy (1 = equal sizes)", lambda s: fixed(s.get("normalized_entropy"))),
        ("largest", "largest cluster", lambda s: num(_largest_median(s)[0])),
        ("median", "median cluster", lambda s: num(_largest_median(s)[1])),
    ]
    rows = [
        f'<tr data-metric="{key}"><td class="name">{e(label)}</td>'
        + "".join(f'<td class="num" data-side="{name}">{e(fmt(side))}</td>' for name, side in sides)
        + "</tr>"
        for key, label, fmt in metrics
    ]
    table = html_table(["", "before", "after"], rows, "balance")
    sizes = {name: _cluster_sizes(side) for name, side in sides}
    if all(v is not None for v in sizes.values()):
        chart = rank_size_svg(
            [Series("before", sizes["before"], PALETTE["before"]), Series("after", sizes["after"], PALETTE["primary"])],
            "top-level cluster sizes before and after balance",
        )
        chart_html = f'<div class="chart">{chart}</div>'
    else:
        chart_html = (
            f'<p class="note">The manifest lists per-cluster sizes only for up to '
            f"{MAX_LISTED_CLUSTER_SIZES:,} clusters (this run has {e(num(sides[0][1].get('n_clusters')))}),"
            f" so only the summary is shown.</p>"
        )
    return f'<div class="card clusters" data-stage="{e(BALANCE_STAGE)}">{head}{chart_html}{table}</div>'


def _semantic_dedup_card(stage: dict) -> str:
    stats = SemanticDedupStats.from_dict(stage["stats"])
    dups, n_in = as_float(stats.duplicates), as_float(stage.get("in"))
    keep = stats.keep
    if isinstance(keep, dict):
        keep = ", ".join(f"{k} {v}" for k, v in keep.items())
    facts = {
        "clusters": num(stats.clusters),
        "duplicates removed": num(dups) + (f" ({_pct(dups, n_in)} of {num(n_in)})" if dups and n_in else ""),
        "eps (cosine ≥ 1 − eps is a duplicate)": fixed(stats.eps, 3),
        "keeps": keep if keep not in (None, "") else "–",
        "without an embedding": num(stats.no_embedding),
    }
    pct = stats.cluster_size_percentiles
    if isinstance(pct, dict) and pct:
        cells = "".join(f'<td class="num" data-percentile="{e(k)}">{e(num(v))}</td>' for k, v in pct.items())
        row = f"<tr>{cells}</tr>"
        sizes = '<div class="note">cluster sizes (samples per cluster)</div>' + html_table(
            [_PERCENTILE_NAMES.get(str(k), str(k)) for k in pct], [row], "percentiles"
        )
    else:
        sizes = empty("no cluster-size percentiles (nothing was clustered)")
    return (
        f'<div class="card clusters" data-stage="{e(SEMANTIC_DEDUP_STAGE)}"><h3>semantic_dedup</h3>'
        f"{_kv_table(facts)}{sizes}</div>"
    )


def _section_clusters(data: RunData) -> str:
    cards = [_balance_card(s) for s in data.stages_with_stats(BALANCE_STAGE)] + [
        _semantic_dedup_card(s) for s in data.stages_with_stats(SEMANTIC_DEDUP_STAGE)
    ]
    if not cards:
        return _section(
            "clusters",
            "Semantic clusters",
            "",
            empty("no semantic stage ran (semantic_dedup, balance): no clusters to show"),
        )
    return _section(
        "clusters",
        "Semantic clusters",
        "Cluster sizes from the stages' statistics in the manifest. balance: its top-level clusters "
        "before and after sampling, largest first (Gini 0 and normalised entropy 1 mean equal sizes). "
        "semantic_dedup: the k-means clusters it searched for duplicates within.",
        "".join(cards),
    )


# ---------------------------------------------------------------------------------------------------
# timing


def _section_timing(data: RunData) -> str:
    stages = [s for s in data.stages if as_float(s.get("seconds")) is not None]
    if not stages:
        return _section("timing", "Timing", "", empty("the manifest has no per-stage timings"))
    total = as_float(data.run.get("duration_s"))
    staged = sum(as_float(s.get("seconds")) for s in stages)
    entries = [
        (str(s.get("name", "?")), as_float(s.get("seconds")), _int(s.get("in")), s.get("kind", "")) for s in stages
    ]
    if total is not None and total > staged * 1.001:
        # Reading shards, writing outputs and scheduling are not any stage's time, but they are the run's.
        entries.append(("other (read, write, overhead)", total - staged, None, ""))
    denom = total if total else staged
    bars, rows = [], []
    for name, sec, n_in, kind in entries:
        bars.append(
            BarRow(
                name,
                [
                    Segment(
                        sec, PALETTE["primary"] if n_in is not None else PALETTE["muted"], f"{name}: {_duration(sec)}"
                    )
                ],
                f"{_duration(sec)} · {_pct(sec, denom)}",
            )
        )
        rows.append(
            f'<tr data-stage="{e(name)}" data-seconds="{sec:.6g}"><td class="name">{e(name)}</td>'
            f'<td>{_kind_chip(kind)}</td><td class="num">{_duration(sec)}</td>'
            f'<td class="num">{_pct(sec, denom)}</td><td class="num">{"–" if n_in is None else f"{n_in:,}"}</td>'
            f'<td class="num">{"–" if n_in is None else _rate(n_in, sec)}</td></tr>'
        )
    read = _int(data.counts.get("read"))
    rows.append(
        f'<tr class="total"><td class="name">run</td><td></td><td class="num">{_duration(denom)}</td>'
        f'<td class="num">100%</td><td class="num">{read:,}</td><td class="num">{_rate(read, denom)}</td></tr>'
    )
    chart = bar_chart_svg(bars, "time per stage", value_format=lambda s: _duration(s) if s else "0")
    table = html_table(["stage", "kind", "time", "share", "samples in", "samples/s"], rows, "timing")
    return _section(
        "timing",
        "Timing",
        "Wall time per stage; samples/s counts the samples entering the stage.",
        f'<div class="card chart">{chart}</div>{table}',
    )


# ---------------------------------------------------------------------------------------------------

_CSS = """
:root{--fg:#212529;--muted:#6c757d;--line:#dee2e6;--bg:#f8f9fa;--card:#fff;--accent:#3b6ea8;--ok:#2f9e6b;--bad:#d9534f}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1240px;margin:0 auto;padding:24px 28px 48px}
code,pre,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace;font-size:12.5px}
h1{font-size:26px;margin:0 0 4px;letter-spacing:-.01em}
h2{font-size:19px;margin:0 0 6px;padding-bottom:6px;border-bottom:1px solid var(--line)}
h3{font-size:14px;margin:0 0 8px}
header{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:20px 22px;margin-bottom:14px}
.subtitle{color:var(--muted);word-break:break-all}
.kpis{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px;margin:16px 0 12px}
.kpi{border:1px solid var(--line);border-radius:8px;padding:10px 14px;background:var(--bg)}
.kpi-label{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.05em}
.kpi-value{font-size:24px;font-weight:650;font-variant-numeric:tabular-nums}
.kpi-sub{color:var(--muted);font-size:12px}
.kpi[data-kpi=kept] .kpi-value{color:var(--ok)}.kpi[data-kpi=rejected] .kpi-value{color:var(--bad)}
.badge{display:inline-block;padding:3px 10px;border-radius:999px;font-size:12.5px;font-weight:600}
.badge.ok{background:#e6f4ec;color:#1e6e49}.badge.bad{background:#fbe9e8;color:#a12d2a}
nav{position:sticky;top:0;z-index:2;display:flex;gap:4px;flex-wrap:wrap;background:rgba(248,249,250,.95);padding:8px 0;margin-bottom:6px;border-bottom:1px solid var(--line)}
nav a{color:var(--accent);text-decoration:none;padding:4px 10px;border-radius:6px;font-weight:550}
nav a:hover{background:#e7eef7}
section{margin:22px 0 30px;scroll-margin-top:48px}
.intro{color:var(--muted);margin:0 0 12px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 16px;margin-bottom:12px}
.chart svg{display:block;max-width:100%}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:12px}
.grid .card{margin:0}
.stats{color:var(--muted);font-size:12px;font-variant-numeric:tabular-nums;margin-top:4px}
.note{color:var(--muted);font-size:12px;margin:6px 0 0}
.empty{color:var(--muted);font-style:italic}
.muted{color:var(--muted)}
.legend{display:flex;gap:18px;color:var(--muted);font-size:12px;margin-top:6px}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px;vertical-align:-1px}
table{border-collapse:collapse;width:100%;background:var(--card);border:1px solid var(--line);border-radius:10px;overflow:hidden;margin-bottom:12px;font-variant-numeric:tabular-nums}
th,td{padding:7px 10px;border-bottom:1px solid #eef0f2;text-align:left;vertical-align:top}
thead th{background:#f1f3f5;font-size:12px;color:#495057;text-transform:uppercase;letter-spacing:.04em}
tbody tr:last-child td{border-bottom:none}
tr.total td{font-weight:650;background:#f8f9fa}
td.num{text-align:right;white-space:nowrap}
td.name{font-weight:600}
table.kv th{width:170px;color:#495057;font-weight:600;background:#fafbfc}
table.kv td{word-break:break-word}
table.files td{word-break:break-all}
table.balance,table.percentiles{max-width:720px}
table.balance thead th+th,table.percentiles th{text-align:right}
.clusters .chart{margin:6px 0 10px}
.kind{display:inline-block;font-size:11px;padding:1px 7px;border-radius:999px;background:#e9ecef;color:#495057}
.chip{display:inline-block;margin:1px 4px 1px 0;padding:1px 8px;border-radius:999px;background:#fbe9e8;color:#8a2a27;font-size:12px}
details{background:var(--card);border:1px solid var(--line);border-radius:8px;margin:8px 0;padding:6px 12px}
details summary{cursor:pointer;font-weight:600;padding:4px 0}
details table{margin-top:6px}
pre.code{background:#f6f8fa;border:1px solid #eef0f2;border-radius:6px;padding:10px 12px;overflow:auto;max-height:420px;white-space:pre}
.group{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 14px;margin-bottom:12px}
.group-head{margin-bottom:8px;color:#495057}
.tiles{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
.tile{margin:0;width:140px}
.frame{position:relative;width:140px;height:140px;display:flex;align-items:center;justify-content:center;background:#f1f3f5;border:1px solid var(--line);border-radius:6px;overflow:hidden}
.frame img{max-width:128px;max-height:128px;display:block}
.tile.rep .frame{border:2px solid var(--ok)}
.tile.placeholder .frame{background:#e9ecef}
.noimg{color:var(--muted);font-size:12px}
.badge-tile{position:absolute;left:4px;top:4px;font-size:11px;font-weight:650;padding:1px 6px;border-radius:4px;background:rgba(33,37,41,.78);color:#fff}
.badge-tile.kept{background:var(--ok)}
figcaption{font-size:11.5px;margin-top:4px;line-height:1.35}
figcaption .key{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-weight:600;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
figcaption .detail,figcaption .note{color:var(--muted);overflow:hidden;display:-webkit-box;-webkit-line-clamp:2;-webkit-box-orient:vertical;word-break:break-word}
figcaption .caption{color:#495057;font-style:italic;overflow:hidden;display:-webkit-box;-webkit-line-clamp:3;-webkit-box-orient:vertical;word-break:break-word}
.more{align-self:center;color:var(--muted);padding:0 10px}
.reasons{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:12px;align-items:start}
.reasons .card{margin:0}
.reason h3 .stage{color:var(--accent)}
.reason h3 .count{float:right;font-weight:650;color:var(--bad)}
footer{color:var(--muted);font-size:12px;border-top:1px solid var(--line);padding-top:12px;margin-top:30px}
@media print{nav{position:static}.tile{break-inside:avoid}}
"""
