"""The report's "Modifying stages" section: what the stages that rewrite text changed, for a run with
caption_clean or pii_redact (no section otherwise).

- caption_clean: how many kept captions differ from the text it received (``caption_original``, which it
  keeps in samples.parquet), and before → after examples with the changes marked;
- pii_redact: personal data found, by kind (occurrences and samples, summed from the ``pii_redactions``
  column; with ``reject_if_found``, from the ``pii`` rejects' details), and redacted captions per kind with
  the replacement token marked.

Both come from the outputs, so they count the samples that were kept (a sample rejected later, e.g. as a
duplicate, is not in samples.parquet). Examples are spread evenly over samples.parquet (deterministic,
bounded), and every text shown passes :func:`~mmcurate.report.thumbnails.display_text`: redacted again and
cut, so no personal value reaches the report even when the recipe kept the originals
(``keep_original_text``). Only the counted columns are read; the comparison is one vectorised pass.
"""

from __future__ import annotations

import difflib
import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmcurate.curate import pii
from mmcurate.report.html_parts import e, empty, html_table
from mmcurate.report.paging import evenly_spaced
from mmcurate.report.run_data import SAMPLES, RunData
from mmcurate.report.thumbnails import display_text

__all__ = ["EDITS_SECTION", "EDITS_CSS", "edits_section"]

EDITS_SECTION = ("edits", "Modifying stages")
CAPTION_CLEAN, PII_REDACT = "caption_clean", "pii_redact"
MAX_CLEAN_EXAMPLES = 8
MAX_PII_EXAMPLES_PER_KIND = 3
MAX_EXAMPLE_CHARS = 300

EDITS_CSS = """
.pair{display:grid;grid-template-columns:1fr auto 1fr;gap:8px;align-items:start;padding:6px 0;
  border-top:1px solid #eef0f2}
.pair .arrow{color:var(--muted);padding-top:2px}
.pair .text{font-size:12.5px;word-break:break-word;white-space:pre-wrap}
.pair .key{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:11.5px;color:var(--muted);
  grid-column:1/-1}
.pair del{background:#fbe9e8;color:#8a2a27;text-decoration:line-through}
.pair ins{background:#e6f4ec;color:#1e6e49;text-decoration:none}
mark.pii{background:#fff3bf;color:#5c4a00;border-radius:3px;padding:0 2px;
  font-family:ui-monospace,Menlo,Consolas,monospace;
  font-size:11.5px}
table.pii{max-width:720px}
"""


def edits_section(data: RunData) -> str:
    """The section, or "" for a run without caption_clean or pii_redact."""
    names = {str(s.get("name")) for s in data.stages}
    if not names & {CAPTION_CLEAN, PII_REDACT}:
        return ""
    samples = _read_samples(data)
    cards = []
    if CAPTION_CLEAN in names:
        cards.append(_caption_clean_card(data, samples))
    if PII_REDACT in names:
        cards.append(_pii_card(data, samples))
    sid, title = EDITS_SECTION
    return (
        f'<section id="{sid}"><h2>{e(title)}</h2><p class="intro">What the stages that rewrite text changed in the '
        f"kept samples (samples.parquet). Every text shown is redacted and cut by the report itself.</p>"
        f"{''.join(cards)}</section>"
    )


def _read_samples(data: RunData) -> pa.Table | None:
    path = data.out_dir / SAMPLES
    if not path.exists():
        return None
    names = set(pq.read_schema(path).names)
    wanted = [c for c in ("key", "caption", "caption_original", "pii_redactions") if c in names]
    return pq.read_table(path, columns=wanted) if "caption" in wanted else None


def _stage(data: RunData, name: str) -> dict:
    found = [s for s in data.stages if s.get("name") == name]
    return found[-1] if found else {}


def _recipe_params(data: RunData, name: str) -> dict:
    """The recipe's parameters of the (last) stage `name`, {} when absent or not a mapping."""
    recipe = data.run.get("recipe")
    stages = recipe.get("stages") if isinstance(recipe, dict) else None
    params: dict = {}
    for entry in stages if isinstance(stages, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get(name), dict):
            params = entry[name]
    return params


def _count(v) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


# ---------------------------------------------------------------------------------------------------
# caption_clean


def _caption_clean_card(data: RunData, samples: pa.Table | None) -> str:
    st = _stage(data, CAPTION_CLEAN)
    facts = f"{_count(st.get('in')):,} captions in · {_count(st.get('rejected')):,} rejected (text_too_long)"
    head = f'<h3>caption_clean</h3><div class="stats">{e(facts)}</div>'
    if samples is None or "caption_original" not in samples.column_names:
        body = empty("samples.parquet has no caption_original column: nothing to compare")
        return f'<div class="card edits" data-stage="{CAPTION_CLEAN}">{head}{body}</div>'
    before, after = samples.column("caption_original"), samples.column("caption")
    compared = pc.is_valid(before)
    # null-safe: a caption removed or added counts as changed
    changed = pc.and_(compared, pc.invert(pc.fill_null(pc.equal(before, after), False)))
    n_compared, n_changed = pc.sum(compared).as_py() or 0, pc.sum(changed).as_py() or 0
    share = f" ({100.0 * n_changed / n_compared:.1f}%)" if n_compared else ""
    summary = (
        f'<p data-changed="{n_changed}" data-compared="{n_compared}"><b>{n_changed:,}</b> of {n_compared:,} kept '
        f"captions changed{share}.</p>"
    )
    if _recipe_params(data, PII_REDACT).get("keep_original_text") is True:
        summary += (
            '<p class="note">pii_redact kept caption_original as received (keep_original_text): the count includes '
            "captions changed only by redaction.</p>"
        )
    rows = np.flatnonzero(changed.to_numpy(zero_copy_only=False))
    picks = rows[evenly_spaced(len(rows), MAX_CLEAN_EXAMPLES)]
    keys = samples.column("key").take(picks).to_pylist() if "key" in samples.column_names else [""] * len(picks)
    pairs = [
        _pair(k, *_diff(_shown(b), _shown(a)))
        for k, b, a in zip(keys, before.take(picks).to_pylist(), after.take(picks).to_pylist())
    ]
    examples = (
        f'<div class="examples"><div class="note">{len(pairs):,} examples, spread over samples.parquet: removed text '
        f"struck through, added text green</div>{''.join(pairs)}</div>"
        if pairs
        else ""
    )
    return f'<div class="card edits" data-stage="{CAPTION_CLEAN}">{head}{summary}{examples}</div>'


def _shown(text) -> str:
    return display_text(text, MAX_EXAMPLE_CHARS) or ""


def _diff(before: str, after: str) -> tuple[str, str]:
    """Both texts as HTML, the removed parts of `before` in <del>, the added parts of `after` in <ins>."""
    b_out, a_out = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, before, after, autojunk=False).get_opcodes():
        b, a = e(before[i1:i2]), e(after[j1:j2])
        if op == "equal":
            b_out.append(b)
            a_out.append(a)
            continue
        if b:
            b_out.append(f"<del>{b}</del>")
        if a:
            a_out.append(f"<ins>{a}</ins>")
    return "".join(b_out), "".join(a_out)


def _pair(key: str, before_html: str, after_html: str, kind: str = "") -> str:
    kind_attr = f' data-kind="{e(kind)}"' if kind else ""
    return (
        f'<div class="pair" data-key="{e(key)}"{kind_attr}><div class="key">{e(key)}</div>'
        f'<div class="text before">{before_html}</div><div class="arrow">→</div>'
        f'<div class="text after">{after_html}</div></div>'
    )


# ---------------------------------------------------------------------------------------------------
# pii_redact


def _pii_tokens(data: RunData) -> dict[str, str]:
    tokens = dict(pii.DEFAULT_TOKENS)
    given = _recipe_params(data, PII_REDACT).get("tokens")
    if isinstance(given, dict):
        tokens.update({k: v for k, v in given.items() if k in tokens and isinstance(v, str) and v})
    return tokens


def _kind_counts(column: pa.ChunkedArray) -> tuple[dict[str, int], dict[str, int], int, list[dict]]:
    """(occurrences per kind, samples per kind, samples with any, each row's {kind: count}) of a pii_redactions
    column; only rows that found something are parsed."""
    found = pc.fill_null(pc.not_equal(column, "{}"), False)
    occurrences: dict[str, int] = {}
    per_sample: dict[str, int] = {}
    parsed: list[dict] = []
    for text in column.filter(found).to_pylist():
        try:
            counts = json.loads(text)
        except ValueError:
            counts = {}
        counts = {str(k): _count(v) for k, v in counts.items()} if isinstance(counts, dict) else {}
        parsed.append(counts)
        pii.merge_counts(occurrences, counts)
        pii.merge_counts(per_sample, {k: 1 for k, v in counts.items() if v})
    return occurrences, per_sample, len(parsed), parsed


def _rejected_kinds(data: RunData) -> dict[str, int]:
    """Occurrences per kind in the `pii` rejects of reject_if_found (detail "email=1, phone=2")."""
    r = data.rejects
    if r is None or not {"stage", "reason", "detail"} <= set(r.column_names):
        return {}
    mask = pc.and_(pc.equal(r.column("stage"), PII_REDACT), pc.equal(r.column("reason"), "pii"))
    out: dict[str, int] = {}
    for detail in r.column("detail").filter(mask).to_pylist():
        for part in (detail or "").split(","):
            kind, _, n = part.strip().partition("=")
            if kind in pii.KINDS:
                pii.merge_counts(out, {kind: _count(n)})
    return out


def _pii_card(data: RunData, samples: pa.Table | None) -> str:
    st = _stage(data, PII_REDACT)
    params = _recipe_params(data, PII_REDACT)
    mode = "rejects samples with personal data" if params.get("reject_if_found") is True else "redacts"
    facts = f"{_count(st.get('in')):,} samples in · {mode} · {_count(st.get('rejected')):,} rejected"
    head = f'<h3>pii_redact</h3><div class="stats">{e(facts)}</div>'
    column = (
        samples.column("pii_redactions") if samples is not None and "pii_redactions" in samples.column_names else None
    )
    occurrences, per_sample, n_any, parsed = _kind_counts(column) if column is not None else ({}, {}, 0, [])
    rejected = _rejected_kinds(data)
    kinds = [k for k in pii.KINDS if occurrences.get(k) or rejected.get(k)]
    kinds += sorted(set(occurrences) - set(kinds))
    if not kinds:
        body = empty("no personal data was found in the kept samples")
        return f'<div class="card edits" data-stage="{PII_REDACT}">{head}{body}</div>'
    tokens = _pii_tokens(data)
    with_rejected = any(rejected.values())  # reject_if_found: the samples holding a value were rejected
    rows = [
        f'<tr data-kind="{e(k)}"><td class="name">{e(k)}</td><td><code>{e(tokens.get(k, ""))}</code></td>'
        f'<td class="num" data-n="occurrences">{occurrences.get(k, 0):,}</td>'
        f'<td class="num" data-n="samples">{per_sample.get(k, 0):,}</td>'
        + (f'<td class="num" data-n="rejected">{rejected.get(k, 0):,}</td>' if with_rejected else "")
        + "</tr>"
        for k in kinds
    ]
    n_kept = samples.num_rows if samples is not None else 0
    headers = ["kind", "token", "values redacted", "kept samples"] + (
        ["values in rejected samples"] if with_rejected else []
    )
    table = html_table(headers, rows, "pii")
    summary = (
        f'<p data-samples-with-pii="{n_any}"><b>{n_any:,}</b> of {n_kept:,} kept samples had personal data '
        f"redacted. Values are counted where pii_redact found them: the caption, each string of meta, each "
        f"conversation turn (caption_original and a conversation's caption, its copies, not again).</p>"
    )
    return (
        f'<div class="card edits" data-stage="{PII_REDACT}">{head}{summary}{table}'
        f"{_pii_examples(samples, parsed, column, kinds, tokens)}</div>"
    )


def _pii_examples(samples, parsed, column, kinds, tokens) -> str:
    """Per kind, a few kept captions holding its token, the token marked; before: caption_original when kept."""
    if samples is None or column is None or not parsed:
        return ""
    found_rows = np.flatnonzero(pc.fill_null(pc.not_equal(column, "{}"), False).to_numpy(zero_copy_only=False))
    captions = samples.column("caption")
    originals = samples.column("caption_original") if "caption_original" in samples.column_names else None
    keys = samples.column("key") if "key" in samples.column_names else None
    blocks = []
    for kind in kinds:
        token = tokens.get(kind)
        if not token:
            continue
        with_kind = found_rows[[i for i, counts in enumerate(parsed) if counts.get(kind)]]
        if not len(with_kind):
            continue
        # the caption shows the token (in a conversation the value may have been in another turn)
        shows = pc.fill_null(pc.match_substring(captions.take(with_kind), token), False).to_numpy(zero_copy_only=False)
        candidates = with_kind[shows]
        picks = candidates[evenly_spaced(len(candidates), MAX_PII_EXAMPLES_PER_KIND)]
        for i in picks.tolist():
            after = _mark_tokens(_shown(captions[i].as_py()), tokens)
            before_text = originals[i].as_py() if originals is not None else None
            before = (
                _mark_tokens(_shown(before_text), tokens) if before_text is not None else '<span class="muted">–</span>'
            )
            blocks.append(_pair(keys[i].as_py() if keys is not None else "", before, after, kind))
    if not blocks:
        return ""
    return (
        f'<div class="examples"><div class="note">Examples per kind (caption_original → caption): the token marks '
        f"where a value was; the value itself is never stored nor shown.</div>{''.join(blocks)}</div>"
    )


def _mark_tokens(text: str, tokens: dict[str, str]) -> str:
    """The escaped text with every replacement token in <mark> (one pass: a token inside another is not marked
    twice)."""
    alternatives = "|".join(re.escape(e(t)) for t in sorted(set(tokens.values()), key=len, reverse=True))
    return re.sub(alternatives, lambda m: f'<mark class="pii">{m.group(0)}</mark>', e(text))
