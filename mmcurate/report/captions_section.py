"""The report's "Captions" section: what the kept captions say and how, for a run whose samples.parquet has
captions (no section otherwise).

- languages: the ``language`` column caption_filter adds when language identification ran (``languages`` or
  ``detect_language``), with the captions it rejected for their language;
- the most frequent words (common English function words left out), bigrams and trigrams, as the share of
  captions holding them: templates and scraped boilerplate show up here first;
- boilerplate: what caption_filter rejected as boilerplate, and the kept captions that still match one of
  its built-in patterns (curate.captions.match_boilerplate);
- special characters: the share of a caption's characters that are neither letters, digits, marks nor
  whitespace, as a histogram over every kept caption.

Bounded at any size: the histogram and language counts are vectorised passes over the column; n-grams and
boilerplate look at :data:`MAX_TEXT_SAMPLE` captions spread evenly over samples.parquet, each redacted by
:func:`~mmcurate.report.thumbnails.display_text` first (a top n-gram must never be someone's e-mail).
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmcurate.curate.captions import match_boilerplate
from mmcurate.report.charts import PALETTE, BarRow, Histogram, Segment, bar_chart_svg, format_number, histogram_svg
from mmcurate.report.html_parts import e, html_table
from mmcurate.report.paging import evenly_spaced
from mmcurate.report.run_data import SAMPLES, RunData
from mmcurate.report.thumbnails import display_text

__all__ = ["CAPTIONS_SECTION", "CAPTIONS_CSS", "MAX_TEXT_SAMPLE", "captions_section", "special_char_ratio"]

CAPTIONS_SECTION = ("captions", "Captions")
CAPTION_FILTER = "caption_filter"
MAX_TEXT_SAMPLE = 20_000
MAX_TEXT_CHARS = 1000  # of each sampled caption
TOP_NGRAMS = 15
MAX_LANGUAGES = 12
SPECIAL_THRESHOLD = 0.25  # a caption over this share of special characters is counted apart
# Letters, digits, combining marks (Devanagari vowel signs are no symbols) and whitespace are not special.
_SPECIAL = r"[^\p{L}\p{N}\p{M}\s]"
# Redaction tokens ("<EMAIL>") are one token; words keep inner apostrophes ("don't").
_TOKEN = re.compile(r"<[A-Z_]+>|[^\W_]+(?:['’][^\W_]+)*")
_STOPWORDS = frozenset(
    "a an the and or of in on at to for with by from as is are was were be been it its this that these those "
    "there their his her he she they we you i my our your into over under near next up down out off".split()
)

CAPTIONS_CSS = """
#captions table.ngrams td.gram{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px;
  word-break:break-word}
#captions table.ngrams{max-width:1000px}
#captions .grid .wide{grid-column:1/-1}
"""


def special_char_ratio(captions: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Per caption, the share of its characters that are not letters, digits, marks or whitespace (NaN for
    an empty or missing caption)."""
    special = pc.count_substring_regex(captions, _SPECIAL).to_numpy(zero_copy_only=False).astype(np.float64)
    length = pc.utf8_length(captions).to_numpy(zero_copy_only=False).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(length > 0, special / np.where(length > 0, length, 1), np.nan)


def captions_section(data: RunData) -> str:
    """The section, or "" when samples.parquet has no caption."""
    caption = _captions(data)
    if caption is None or len(caption) == 0:
        return ""
    sample = _text_sample(caption)
    cards = [_languages_card(data), _style_card(data, caption, sample), _ngram_card(sample, len(caption))]
    sid, title = CAPTIONS_SECTION
    return (
        f'<section id="{sid}"><h2>{e(title)}</h2><p class="intro">The kept captions (samples.parquet): languages, '
        f"frequent words and phrases, boilerplate and special characters.</p>"
        f'<div class="grid">{"".join(c for c in cards if c)}</div></section>'
    )


def _captions(data: RunData) -> pa.ChunkedArray | None:
    if data.samples is None or "caption" not in data.samples.column_names:
        return None
    caption = data.samples.column("caption")
    return caption.filter(pc.is_valid(caption))


def _text_sample(caption: pa.ChunkedArray) -> list[str]:
    """Up to MAX_TEXT_SAMPLE captions spread evenly over the column, redacted and cut."""
    picks = evenly_spaced(len(caption), MAX_TEXT_SAMPLE)
    return [display_text(t, MAX_TEXT_CHARS) or "" for t in caption.take(pa.array(picks, pa.int64())).to_pylist()]


def _card(key: str, title: str, body: str) -> str:
    return f'<div class="card captions" data-card="{e(key)}"><h3>{e(title)}</h3>{body}</div>'


# ---------------------------------------------------------------------------------------------------
# languages


def _language_column(data: RunData) -> pa.ChunkedArray | None:
    path = data.out_dir / SAMPLES
    if not path.exists() or "language" not in pq.read_schema(path).names:
        return None
    return pq.read_table(path, columns=["language"]).column("language")


def _language_rejects(data: RunData) -> int:
    n = 0
    for s in data.stages:
        reasons = s.get("reasons")
        if s.get("name") == CAPTION_FILTER and isinstance(reasons, dict):
            try:
                n += int(reasons.get("language", 0))
            except (TypeError, ValueError):
                pass
    return n


def _languages_card(data: RunData) -> str:
    lang = _language_column(data)
    if lang is None or lang.null_count == len(lang):
        return ""  # language identification did not run
    counts = pc.value_counts(lang.drop_null())
    pairs = sorted(
        zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()), key=lambda p: (-p[1], p[0])
    )
    total = len(lang)
    rows = [(str(code), int(n)) for code, n in pairs[:MAX_LANGUAGES]]
    other = sum(n for _, n in pairs[MAX_LANGUAGES:])
    if other:
        rows.append((f"{len(pairs) - MAX_LANGUAGES} other", other))
    if lang.null_count:
        rows.append(("not identified", lang.null_count))
    bars = [
        BarRow(code, [Segment(n, PALETTE["primary"], f"{code}: {n:,}")], f"{n:,} ({100.0 * n / total:.1f}%)")
        for code, n in rows
    ]
    chart = bar_chart_svg(bars, "languages of the kept captions", label_width=110, annotation_width=130)
    rejected = _language_rejects(data)
    note = (
        f'<div class="note" data-language-rejects="{rejected}">{rejected:,} captions rejected by caption_filter '
        f"for their language.</div>"
        if rejected
        else ""
    )
    stats = f'<div class="stats">{len(pairs):,} languages among {total:,} kept captions (ISO 639 codes)</div>'
    return _card("languages", "Languages", f'<div class="chart">{chart}</div>{stats}{note}')


# ---------------------------------------------------------------------------------------------------
# n-grams


def _tokens(text: str) -> list[str]:
    return [t if t.startswith("<") else t.lower() for t in _TOKEN.findall(text)]


def top_ngrams(texts: list[str], n: int, top: int = TOP_NGRAMS) -> list[tuple[str, int]]:
    """The `top` n-grams by the number of texts holding them (ties by the n-gram), words of one text counted
    once; single words leave out common English function words."""
    df: Counter[str] = Counter()
    for text in texts:
        toks = _tokens(text)
        if n == 1:
            grams = {t for t in toks if t not in _STOPWORDS}
        else:
            grams = {" ".join(toks[i : i + n]) for i in range(len(toks) - n + 1)}
        df.update(grams)
    return sorted(df.items(), key=lambda kv: (-kv[1], kv[0]))[:top]


def _ngram_card(sample: list[str], n_captions: int) -> str:
    columns = [top_ngrams(sample, n) for n in (1, 2, 3)]
    depth = max((len(c) for c in columns), default=0)
    if depth == 0:
        return ""
    rows = []
    for i in range(depth):
        cells = []
        for col in columns:
            if i < len(col):
                gram, n = col[i]
                cells.append(
                    f'<td class="gram">{e(gram)}</td><td class="num" title="{n:,} captions">'
                    f"{100.0 * n / len(sample):.1f}%</td>"
                )
            else:
                cells.append("<td></td><td></td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    table = html_table(["word", "captions", "bigram", "captions", "trigram", "captions"], rows, "ngrams")
    basis = (
        f"all {n_captions:,} kept captions"
        if len(sample) == n_captions
        else f"{len(sample):,} of {n_captions:,} kept captions, spread evenly"
    )
    note = f'<div class="note" data-sampled="{len(sample)}">Share of captions holding each; {e(basis)}.</div>'
    return (
        f'<div class="card captions wide" data-card="ngrams"><h3>Most frequent words and '
        f"phrases</h3>{table}{note}</div>"
    )


# ---------------------------------------------------------------------------------------------------
# boilerplate and special characters


def _boilerplate_rejects(data: RunData) -> tuple[int, int] | None:
    """(boilerplate rejects, captions in) of caption_filter; None when it did not run."""
    entries = [s for s in data.stages if s.get("name") == CAPTION_FILTER]
    if not entries:
        return None
    n = n_in = 0
    for s in entries:
        reasons = s.get("reasons") if isinstance(s.get("reasons"), dict) else {}
        try:
            n += int(reasons.get("boilerplate", 0))
            n_in += int(s.get("in", 0))
        except (TypeError, ValueError):
            pass
    return n, n_in


def _style_card(data: RunData, caption: pa.ChunkedArray, sample: list[str]) -> str:
    ratio = special_char_ratio(caption)
    finite = ratio[np.isfinite(ratio)]
    hist = Histogram.linear(finite, max_bins=20)
    svg = histogram_svg(hist, "special-character share", "share of characters (0–1)", color="#7b61a8")
    heavy = int((finite > SPECIAL_THRESHOLD).sum())
    median = format_number(float(np.median(finite))) if finite.size else "–"
    stats = (
        f'<div class="stats" data-special-heavy="{heavy}">median {median} · {heavy:,} captions '
        f"({100.0 * heavy / max(finite.size, 1):.1f}%) over {SPECIAL_THRESHOLD:.0%} special characters</div>"
    )
    matched = Counter(name for name in (match_boilerplate(t) for t in sample) if name is not None)
    kept_bp = sum(matched.values())
    lines = []
    rejected = _boilerplate_rejects(data)
    if rejected is not None:
        n, n_in = rejected
        share = f" ({100.0 * n / n_in:.1f}%)" if n_in else ""
        lines.append(f"caption_filter rejected {n:,} of {n_in:,} captions as boilerplate{share}.")
    patterns = ", ".join(f"{name} {k:,}" for name, k in matched.most_common(5))
    lines.append(
        f"{kept_bp:,} of {len(sample):,} kept captions looked at ({100.0 * kept_bp / max(len(sample), 1):.1f}%) match "
        f"a built-in boilerplate pattern" + (f": {patterns}." if patterns else ".")
    )
    boiler = "".join(f'<p class="note">{e(line)}</p>' for line in lines)
    return (
        f'<div class="card captions hist" data-card="style" data-boilerplate-kept="{kept_bp}">'
        f"<h3>Special characters and boilerplate</h3>{svg}{stats}{boiler}</div>"
    )
