"""The report's "Instruction data" section, for runs on LLaVA-style conversations (issue 13).

Shown only when the run has instruction data: one of the instruction stages in the manifest, or a non-null
`turns` column in samples.parquet. From the manifest's stage stats (each read by field through its stats
dataclass, values formatted defensively: a manifest may come from anywhere):

- task mix (task_mix: ``counts`` before, ``counts_after`` once capped) beside the task types of the kept samples;
- yes-ratio before and after rebalancing (answer_balance), overall, per task type and per question template;
- the correct letter of multiple-choice questions before and after (option_order), with the chi-square p-values;
- the most frequent question skeletons and their shares, top-10 share, distinct-2, compression ratio
  (template_stats);
- instruction_dedup's image groups and duplicate conversations.

From the run's outputs: answer lengths per task type (the kept samples' ``turns`` and ``task_type`` only, read
from samples.parquet batch by batch), and example rejects per reason (rejects.parquet's key/reason/detail; the
text shown is what the outputs already hold: the kept duplicate's conversation from samples.parquet for a
duplicate, else the first answer thumbs.parquet kept), redacted and cut by thumbnails.display_text.

Every string from the data is HTML-escaped. This module depends on nothing of html_report (which imports it).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmcurate.curate.tasks import TASK_TYPES
from mmcurate.report.charts import PALETTE, BarRow, Histogram, Segment, bar_chart_svg, format_number, histogram_svg
from mmcurate.report.html_parts import as_float, e, empty, fixed, html_table, num
from mmcurate.report.run_data import SAMPLES, RunData
from mmcurate.report.thumbnails import display_text
from mmcurate.stages.instruction import (
    AnswerBalanceStats,
    InstructionDedupStats,
    OptionOrderStats,
    TaskMixStats,
    TemplateStepStats,
)

__all__ = [
    "INSTRUCTION_SECTION",
    "INSTRUCTION_STAGES",
    "INSTRUCTION_CSS",
    "has_instruction_data",
    "instruction_section",
]

INSTRUCTION_SECTION = ("instruction", "Instruction data")
# A run with any of these in its manifest is an instruction-data run.
INSTRUCTION_STAGES = frozenset(
    {
        "conversation_check",
        "conversation_clean",
        "instruction_dedup",
        "answer_balance",
        "option_order",
        "template_stats",
        "task_mix",
    }
)
ANSWER_ROLES = ("gpt", "assistant")  # curate.conversations.GPT_ROLES, in a fixed order
MAX_LISTED = 20  # rows of a per-template / per-type / per-letter table
MAX_SKELETONS = 10
MAX_HIST_TYPES = 12
MAX_EXAMPLES_PER_REASON = 3
MAX_EXAMPLE_TURNS = 6
MAX_TURN_CHARS = 300
MAX_KEY_CHARS = 120
BATCH_ROWS = 4096
# The order task types are listed in.
_TYPE_ORDER = TASK_TYPES

INSTRUCTION_CSS = """
#instruction .grid{margin-bottom:12px}
#instruction table.mix,#instruction table.yes,#instruction table.letters,#instruction table.skeletons{max-width:900px}
#instruction td.skeleton{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px;word-break:break-word}
.conversation{margin:6px 0 10px;padding:8px 10px;background:#f8f9fa;border:1px solid #eef0f2;border-radius:6px}
.conversation{font-size:12.5px}
.conversation .turn{white-space:pre-wrap;word-break:break-word;margin:2px 0}
.conversation .role{font-weight:650;color:#495057;margin-right:6px}
.conversation .from{color:var(--muted);font-size:11.5px;margin-bottom:4px}
.example .key{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-weight:600;word-break:break-all}
.example .detail{color:var(--muted);word-break:break-word}
"""


# ---------------------------------------------------------------------------------------------------
# small helpers (html_report has its own: it imports this module, so this one cannot import it)


def _share(v) -> str:
    f = as_float(v)
    return "–" if f is None else f"{100.0 * f:.1f}%"


def _p_value(v) -> str:
    f = as_float(v)
    if f is None:
        return "–"
    return f"{f:.2e}" if 0 < f < 1e-3 else f"{f:.3f}"


def _counts(d) -> dict[str, float]:
    """A {name: count} dict of a manifest, the entries that are numbers (names as text)."""
    if not isinstance(d, dict):
        return {}
    out = {}
    for k, v in d.items():
        f = as_float(v)
        if f is not None:
            out[str(k)] = f
    return out


def _type_key(name: str) -> tuple[int, str]:
    return (_TYPE_ORDER.index(name) if name in _TYPE_ORDER else len(_TYPE_ORDER), name)


def _kv(facts: list[tuple[str, str]]) -> str:
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in facts)
    return f'<table class="kv">{rows}</table>'


def _card(key: str, title: str, body: str) -> str:
    return f'<div class="card instruction" data-card="{e(key)}"><h3>{e(title)}</h3>{body}</div>'


def _legend(items: list[tuple[str, str]]) -> str:
    spans = "".join(f'<span><i style="background:{c}"></i>{e(t)}</span>' for t, c in items)
    return f'<div class="legend">{spans}</div>'


def _text(v, limit: int) -> str:
    """Text from the data as the report shows it: redacted, cut, escaped."""
    return e(display_text(None if v is None else str(v), limit))


def _last_stats(data: RunData, name: str) -> dict | None:
    entries = data.stages_with_stats(name)
    return entries[-1]["stats"] if entries else None


# ---------------------------------------------------------------------------------------------------
# detection and the samples.parquet pass


def _samples_path(data: RunData):
    path = data.out_dir / SAMPLES
    return path if path.is_file() else None


def _samples_columns(data: RunData) -> set[str]:
    path = _samples_path(data)
    if path is None:
        return set()
    try:
        return set(pq.read_schema(path).names)
    except (OSError, pa.ArrowException):
        return set()


def _samples_have_turns(data: RunData) -> bool:
    path = _samples_path(data)
    if path is None or "turns" not in _samples_columns(data):
        return False
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS, columns=["turns"]):
            if batch.column(0).null_count < batch.num_rows:
                return True
    except (OSError, pa.ArrowException):
        return False
    return False


def has_instruction_data(data: RunData) -> bool:
    """Whether the run is on instruction data: an instruction stage in its manifest, or conversations in its
    kept samples."""
    if any(str(s.get("name")) in INSTRUCTION_STAGES for s in data.stages):
        return True
    return _samples_have_turns(data)


def _scan_samples(data: RunData, wanted_keys: set[str]) -> tuple[dict[str, np.ndarray], dict[str, int], dict]:
    """One pass over samples.parquet's key, turns and task_type, a batch at a time: (answer lengths in words per
    task type, kept samples per task type, the turns of the wanted keys)."""
    path = _samples_path(data)
    names = _samples_columns(data)
    if path is None or "turns" not in names:
        return {}, {}, {}
    columns = ["turns"] + [c for c in ("task_type", "key") if c in names]
    lengths: dict[str, list[np.ndarray]] = {}
    kept: dict[str, int] = {}
    found: dict[str, list] = {}
    wanted = pa.array(sorted(wanted_keys), pa.string())
    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS, columns=columns)
        for batch in batches:
            turns = batch.column("turns")
            if "task_type" in columns:
                types = pc.fill_null(pc.cast(batch.column("task_type"), pa.string()), "(none)")
            else:
                types = pa.array(["all"] * batch.num_rows, pa.string())
            has_conv = pc.is_valid(turns)
            for t, n in zip(*pc.value_counts(pc.filter(types, has_conv)).flatten()):
                kept[t.as_py()] = kept.get(t.as_py(), 0) + n.as_py()
            flat = pc.list_flatten(turns)
            if len(flat):
                parents = pc.list_parent_indices(turns)
                role, text = flat.field("role"), flat.field("text")
                is_answer = pc.fill_null(pc.is_in(role, value_set=pa.array(ANSWER_ROLES, pa.string())), False)
                words = pc.list_value_length(pc.utf8_split_whitespace(pc.fill_null(pc.filter(text, is_answer), "")))
                words_np = words.to_numpy(zero_copy_only=False).astype(np.int32)
                answer_types = pc.take(types, pc.filter(parents, is_answer))
                for t in pc.unique(answer_types).to_pylist():
                    mask = pc.equal(answer_types, t).to_numpy(zero_copy_only=False)
                    lengths.setdefault(t, []).append(words_np[mask])
            if wanted_keys and "key" in columns:
                keys = batch.column("key")
                hit = pc.is_in(keys, value_set=wanted)
                for k, conv in zip(pc.filter(keys, hit).to_pylist(), pc.filter(turns, hit).to_pylist()):
                    found[k] = conv
    except (OSError, pa.ArrowException, KeyError, TypeError):
        pass  # a damaged or foreign samples.parquet: show what was read
    return {t: np.concatenate(v) for t, v in lengths.items()}, kept, found


# ---------------------------------------------------------------------------------------------------
# the cards from the manifest


def _paired_bars(names: list[str], before: dict, after: dict | None, title: str, label_after: str) -> str:
    rows = []
    for name in names:
        b = before.get(name, 0.0)
        rows.append(BarRow(name, [Segment(b, PALETTE["before"], f"{name}: {format_number(b)}")], format_number(b)))
        if after is not None:
            a = after.get(name, 0.0)
            rows.append(
                BarRow(
                    "",
                    [Segment(a, PALETTE["primary"], f"{name} {label_after}: {format_number(a)}")],
                    format_number(a),
                )
            )
    return bar_chart_svg(rows, title)


def _task_mix_card(stats_dict: dict, kept: dict[str, int]) -> str:
    stats = TaskMixStats.from_dict(stats_dict)
    before, after = _counts(stats.counts), _counts(stats.counts_after)
    target, caps = _counts(stats.target), _counts(stats.caps)
    capped = bool(after)
    after_side = after if capped else before
    names = sorted(set(before) | set(after) | set(kept), key=_type_key)[:MAX_LISTED]
    if not names:
        return _card("task_mix", "Task mix", empty("task_mix reported no counts"))
    total_before = sum(before.values())
    total_after = sum(after_side.values())
    rows = []
    for n in names:
        b, a = before.get(n), after_side.get(n)
        rows.append(
            f'<tr data-type="{e(n)}"><td class="name">{e(n)}</td>'
            f'<td class="num" data-side="before">{num(b)}</td>'
            f'<td class="num">{_share(b / total_before if b is not None and total_before else None)}</td>'
            f'<td class="num">{_share(target.get(n))}</td><td class="num">{num(caps.get(n))}</td>'
            f'<td class="num" data-side="after">{num(a)}</td>'
            f'<td class="num">{_share(a / total_after if a is not None and total_after else None)}</td>'
            f'<td class="num" data-side="kept">{num(kept.get(n)) if kept else "–"}</td></tr>'
        )
    table = html_table(
        ["task type", "before", "share", "target", "cap", "after", "share", "kept"],
        rows,
        "mix",
    )
    chart = _paired_bars(names, before, after_side, "conversations per task type, before and after", "after")
    note = (
        "after: what task_mix kept once its target mix capped the types above their share."
        if capped
        else "No target mix: task_mix capped nothing, so after equals before."
    )
    note += " kept: the task types of the samples written (samples.parquet), after every later stage."
    legend = _legend([("before", PALETTE["before"]), ("after", PALETTE["primary"])])
    return _card(
        "task_mix", "Task mix", f'<div class="chart">{chart}{legend}</div>{table}<p class="note">{e(note)}</p>'
    )


def _kept_types_card(kept: dict[str, int]) -> str:
    """Without task_mix: the task types the kept samples carry (a `task_type` column; "all" without one)."""
    names = sorted(kept, key=_type_key)[:MAX_LISTED]
    total = sum(kept.values())
    rows = [
        f'<tr data-type="{e(n)}"><td class="name">{e(n)}</td><td class="num" data-side="kept">{num(kept[n])}</td>'
        f'<td class="num">{_share(kept[n] / total if total else None)}</td></tr>'
        for n in names
    ]
    bars = [BarRow(n, [Segment(kept[n], PALETTE["primary"], f"{n}: {kept[n]:,}")], f"{kept[n]:,}") for n in names]
    chart = bar_chart_svg(bars, "kept conversations per task type")
    note = "task_mix did not run: the task types of the kept samples (samples.parquet)."
    return _card(
        "task_mix",
        "Task mix",
        f'<div class="chart">{chart}</div>{html_table(["task type", "kept", "share"], rows, "mix")}'
        f'<p class="note">{e(note)}</p>',
    )


def _yes_after(entry: dict, removed_class) -> float | None:
    yes, no, removed = as_float(entry.get("yes")), as_float(entry.get("no")), as_float(entry.get("removed")) or 0.0
    if yes is None or no is None:
        return None
    if removed_class == "yes":
        yes = max(0.0, yes - removed)
    elif removed_class == "no":
        no = max(0.0, no - removed)
    elif removed:
        return None
    return yes / (yes + no) if yes + no else None


def _answer_balance_card(stats_dict: dict) -> str:
    stats = AnswerBalanceStats.from_dict(stats_dict)
    facts = [
        ("yes-ratio before", fixed(stats.yes_ratio_before)),
        ("yes-ratio after", fixed(stats.yes_ratio_after)),
        (
            "target",
            "report only (no rebalancing)"
            if as_float(stats.target) is None
            else f"{fixed(stats.target)} ± {fixed(stats.tolerance)}",
        ),
        ("yes / no answers (before)", f"{num(stats.yes)} / {num(stats.no)}"),
        ("question/answer pairs", num(stats.pairs)),
        (
            "pairs removed",
            num(stats.pairs_removed) + (f" ({stats.removed_class})" if isinstance(stats.removed_class, str) else ""),
        ),
        ("conversations edited", num(stats.conversations_edited)),
        ("samples rejected (no pair left)", num(stats.samples_rejected)),
    ]
    classes = _counts(stats.answer_classes)
    if classes:
        facts.append(("answer classes", ", ".join(f"{k} {format_number(v)}" for k, v in sorted(classes.items()))))
    if stats.warning is not None:
        facts.append(("warning", str(stats.warning)))
    body = _kv(facts)
    per_type = stats.per_task_type if isinstance(stats.per_task_type, dict) else {}
    rows = []
    for name in sorted((str(k) for k in per_type), key=_type_key)[:MAX_LISTED]:
        entry = per_type.get(name)
        entry = entry if isinstance(entry, dict) else {}
        rows.append(
            f'<tr data-type="{e(name)}"><td class="name">{e(name)}</td><td class="num">{num(entry.get("yes"))}</td>'
            f'<td class="num">{num(entry.get("no"))}</td>'
            f'<td class="num" data-side="before">{fixed(entry.get("yes_ratio"))}</td>'
            f'<td class="num">{num(entry.get("removed"))}</td>'
            f'<td class="num" data-side="after">{fixed(_yes_after(entry, stats.removed_class))}</td></tr>'
        )
    if rows:
        body += '<div class="note">per task type</div>' + html_table(
            ["task type", "yes", "no", "yes-ratio before", "removed", "yes-ratio after"], rows, "yes"
        )
    per_template = stats.per_template if isinstance(stats.per_template, list) else []
    rows = []
    for entry in per_template[:MAX_LISTED]:
        if not isinstance(entry, dict):
            continue
        rows.append(
            f'<tr><td class="skeleton">{_text(entry.get("template"), 200)}</td>'
            f'<td class="num">{num(entry.get("yes"))}</td><td class="num">{num(entry.get("no"))}</td>'
            f'<td class="num">{fixed(entry.get("yes_ratio"))}</td><td class="num">{num(entry.get("removed"))}</td>'
            f'<td class="num">{fixed(_yes_after(entry, stats.removed_class))}</td></tr>'
        )
    if rows:
        n_templates = num(stats.templates)
        body += (
            f'<details data-detail="yes-templates"><summary>Yes/no question templates (largest of {n_templates})'
            f"</summary>"
            + html_table(["template", "yes", "no", "yes-ratio before", "removed", "yes-ratio after"], rows, "yes")
            + "</details>"
        )
    return _card("answer_balance", "Yes-ratio (answer_balance)", body)


def _letter_key(k: str) -> tuple[int, str]:
    return (len(k), k)


def _option_order_card(stats_dict: dict) -> str:
    stats = OptionOrderStats.from_dict(stats_dict)
    before, after = _counts(stats.letters_before), _counts(stats.letters_after)
    facts = [
        ("policy", str(stats.policy) if stats.policy is not None else "–"),
        ("multiple-choice pairs", f"{num(stats.multiple_choice)} ({num(stats.with_answer)} with an answer)"),
        ("χ² against uniform, before", f"{fixed(stats.chi2_before, 2)} (p = {_p_value(stats.p_value_before)})"),
        ("χ² against uniform, after", f"{fixed(stats.chi2_after, 2)} (p = {_p_value(stats.p_value_after)})"),
        ("questions reordered", num(stats.reordered)),
        ("answers remapped", num(stats.answers_remapped)),
        ("with a none / not-present option", num(stats.negative_options)),
        ("reorders left undone (unverified)", num(stats.unverified)),
    ]
    options = _counts(stats.options)
    if options:
        facts.append(("options per question", ", ".join(f"{k}: {format_number(v)}" for k, v in options.items())))
    letters = sorted(set(before) | set(after), key=_letter_key)[:MAX_LISTED]
    if not letters:
        return _card("option_order", "Correct letter (option_order)", _kv(facts) + empty("no multiple-choice answer"))
    tb, ta = sum(before.values()), sum(after.values())
    rows = [
        f'<tr data-letter="{e(k)}"><td class="name">{e(k)}</td>'
        f'<td class="num" data-side="before">{num(before.get(k))}</td>'
        f'<td class="num">{_share(before[k] / tb if k in before and tb else None)}</td>'
        f'<td class="num" data-side="after">{num(after.get(k))}</td>'
        f'<td class="num">{_share(after[k] / ta if k in after and ta else None)}</td></tr>'
        for k in letters
    ]
    chart = _paired_bars(letters, before, after or None, "correct letter, before and after", "after")
    legend = _legend([("before", PALETTE["before"]), ("after", PALETTE["primary"])])
    table = html_table(["letter", "before", "share", "after", "share"], rows, "letters")
    note = "A small p-value means the correct letter is far from uniform: a model can learn the position."
    return _card(
        "option_order",
        "Correct letter (option_order)",
        f'<div class="chart">{chart}{legend}</div>{table}{_kv(facts)}<p class="note">{e(note)}</p>',
    )


def _template_card(stats_dict: dict) -> str:
    stats = TemplateStepStats.from_dict(stats_dict)
    facts = [
        ("questions", num(stats.questions)),
        ("distinct skeletons", num(stats.distinct_skeletons)),
        ("top-10 share", _share(stats.top10_share)),
        ("distinct-2", fixed(stats.distinct_2)),
        ("compression ratio", fixed(stats.compression_ratio)),
    ]
    if stats.max_per_template is not None:
        facts.append(
            (
                "max per template",
                f"{num(stats.max_per_template)} ({num(stats.templates_capped)} templates capped, "
                f"{num(stats.samples_capped)} samples rejected)",
            )
        )
    top = stats.top if isinstance(stats.top, list) else []
    rows = []
    for i, entry in enumerate(x for x in top if isinstance(x, dict)):
        if i >= MAX_SKELETONS:
            break
        rows.append(
            f'<tr><td class="num">{i + 1}</td><td class="skeleton">{_text(entry.get("skeleton"), 300)}</td>'
            f'<td class="num">{num(entry.get("questions"))}</td>'
            f'<td class="num" data-share="{e(fixed(entry.get("share"), 4))}">{_share(entry.get("share"))}</td></tr>'
        )
    table = html_table(["#", "question skeleton", "questions", "share"], rows, "skeletons") if rows else ""
    note = (
        "Skeletons mask objects, numbers, colours and quoted text. A high top-10 share, a low distinct-2 (distinct "
        "word pairs per word pair) or a low compression ratio (compressed size / size) means few templates."
    )
    return _card(
        "template_stats",
        "Question templates (template_stats)",
        f'{_kv(facts)}{table}<p class="note">{e(note)}</p>',
    )


def _dedup_card(stats_dict: dict) -> str:
    stats = InstructionDedupStats.from_dict(stats_dict)
    facts = [
        ("conversations", num(stats.samples)),
        ("text-only", num(stats.text_only)),
        ("image groups", f"{num(stats.image_groups)} ({num(stats.shared_image_groups)} with several conversations)"),
        ("largest image group", num(stats.largest_image_group)),
        ("exact duplicate conversations", num(stats.duplicate_conversations)),
        ("near-duplicate conversations", num(stats.near_duplicate_conversations)),
        ("near-duplicate threshold", f"Jaccard ≥ {fixed(stats.threshold, 2)} over {stats.shingle or '–'}"),
    ]
    return _card("instruction_dedup", "Conversations and image groups (instruction_dedup)", _kv(facts))


# ---------------------------------------------------------------------------------------------------
# from the outputs


def _answer_length_cards(lengths: dict[str, np.ndarray]) -> str:
    cards = []
    for name in sorted(lengths, key=_type_key)[:MAX_HIST_TYPES]:
        v = lengths[name].astype(np.float64)
        if v.size == 0:
            continue
        tail = float(np.quantile(v, 0.995))
        hist = Histogram.integers(v, 41) if tail <= 40 else Histogram.linear(v)
        q = np.quantile(v, [0.5, 0.95])
        stats = (
            f'<div class="stats">answers {v.size:,} · median {format_number(float(q[0]))} · p95 '
            f"{format_number(float(q[1]))} · max {format_number(float(v.max()))} words</div>"
        )
        svg = histogram_svg(hist, f"answer length, {name}", "words per answer", color="#7b61a8")
        cards.append(
            f'<div class="card hist" data-hist="answer_words" data-type="{e(name)}" data-n="{hist.total}">'
            f"<h3>Answer length · {e(name)}</h3>{svg}{stats}</div>"
        )
    if not cards:
        return ""
    more = (
        f'<p class="note">{len(lengths) - MAX_HIST_TYPES:,} more task types not shown</p>'
        if len(lengths) > MAX_HIST_TYPES
        else ""
    )
    return (
        '<h3>Answer length per task type</h3><p class="note">Every answer turn of the kept conversations '
        f'(samples.parquet), in words.</p><div class="grid">{"".join(cards)}</div>{more}'
    )


def _reject_examples(data: RunData) -> dict[tuple[str, str], list[dict]]:
    """(stage, reason) -> the first MAX_EXAMPLES_PER_REASON rejects by key: key, detail."""
    r = data.rejects
    if r is None or r.num_rows == 0 or not {"key", "stage", "reason"} <= set(r.column_names):
        return {}
    cols = ["key", "stage", "reason"] + (["detail"] if "detail" in r.column_names else [])
    r = r.select(cols)
    out: dict[tuple[str, str], list[dict]] = {}
    pairs = r.group_by(["stage", "reason"]).aggregate([([], "count_all")])
    for stage, reason, n in zip(*(pairs.column(c).to_pylist() for c in ("stage", "reason", "count_all"))):
        sub = r.filter(pc.and_(pc.equal(r.column("stage"), stage), pc.equal(r.column("reason"), reason)))
        k = min(MAX_EXAMPLES_PER_REASON, sub.num_rows)
        first = sub.take(pc.select_k_unstable(sub, k, [("key", "ascending")])).sort_by("key")
        out[(stage, reason)] = [dict(row, count=n) for row in first.to_pylist()]
    return out


def _duplicate_of(data: RunData, keys: set[str]) -> dict[str, str]:
    d = data.duplicates
    if d is None or not keys or not {"key", "duplicate_of"} <= set(d.column_names):
        return {}
    sub = d.filter(pc.is_in(d.column("key"), value_set=pa.array(sorted(keys), pa.string())))
    return {k: v for k, v in zip(sub.column("key").to_pylist(), sub.column("duplicate_of").to_pylist()) if v}


def _first_answers(data: RunData, keys: set[str]) -> dict[str, str]:
    t = data.thumbs
    if t is None or not keys or not {"key", "caption"} <= set(t.column_names):
        return {}
    sub = t.select(["key", "caption"])
    sub = sub.filter(pc.is_in(sub.column("key"), value_set=pa.array(sorted(keys), pa.string())))
    keys, captions = sub.column("key").to_pylist(), sub.column("caption").to_pylist()
    return {k: c for k, c in zip(keys, captions) if isinstance(c, str) and c.strip()}


def _conversation_html(turns, heading: str) -> str:
    if not isinstance(turns, list) or not turns:
        return ""
    parts = []
    for t in turns[:MAX_EXAMPLE_TURNS]:
        t = t if isinstance(t, dict) else {}
        parts.append(
            f'<div class="turn"><span class="role">{_text(t.get("role"), 20)}</span>'
            f"{_text(t.get('text'), MAX_TURN_CHARS)}</div>"
        )
    if len(turns) > MAX_EXAMPLE_TURNS:
        parts.append(f'<div class="turn muted">… {len(turns) - MAX_EXAMPLE_TURNS:,} more turns</div>')
    return f'<div class="conversation"><div class="from">{e(heading)}</div>{"".join(parts)}</div>'


def _examples_html(
    examples: dict[tuple[str, str], list[dict]],
    dup_of: dict[str, str],
    conversations: dict,
    first_answers: dict[str, str],
    stage_order: list[str],
) -> str:
    if not examples:
        return ""
    order = {s: i for i, s in enumerate(stage_order)}
    cards = []
    for stage, reason in sorted(examples, key=lambda sr: (order.get(sr[0], len(order)), sr[0], sr[1])):
        rows = examples[(stage, reason)]
        items = []
        for row in rows:
            key = str(row.get("key"))
            body = ""
            rep = dup_of.get(key)
            if rep is not None and rep in conversations:
                body = _conversation_html(conversations[rep], f"the kept conversation it duplicates: {rep}")
            elif key in first_answers:
                body = (
                    f'<div class="conversation"><div class="from">first answer (the full conversation is not in the '
                    f'outputs)</div><div class="turn"><span class="role">gpt</span>'
                    f"{_text(first_answers[key], MAX_TURN_CHARS)}</div></div>"
                )
            items.append(
                f'<div class="example" data-key="{e(key)}"><div class="key">{_text(key, MAX_KEY_CHARS)}</div>'
                f'<div class="detail">{_text(row.get("detail"), 500)}</div>{body}</div>'
            )
        n = int(rows[0].get("count") or len(rows)) if rows else 0
        more = f'<p class="note">showing {len(rows):,} of {n:,} (the first by key)</p>' if n > len(rows) else ""
        cards.append(
            f'<div class="card reason" data-stage="{e(stage)}" data-reason="{e(reason)}" data-count="{n}">'
            f'<h3><span class="stage">{e(stage)}</span> · {e(reason)} <span class="count">{n:,}</span></h3>'
            f"{''.join(items)}{more}</div>"
        )
    return (
        '<h3>Example rejects per reason</h3><p class="note">The text shown is what the run\'s outputs hold: for a '
        "duplicate, the kept conversation it duplicates (samples.parquet); otherwise the first answer when a "
        "thumbnail was collected. Personal data is redacted.</p>"
        f'<div class="reasons">{"".join(cards)}</div>'
    )


# ---------------------------------------------------------------------------------------------------
# the section


def instruction_section(data: RunData) -> str:
    """The section's HTML, or "" when the run has no instruction data."""
    if not has_instruction_data(data):
        return ""
    examples = _reject_examples(data)
    reject_keys = {str(row["key"]) for rows in examples.values() for row in rows}
    dup_of = _duplicate_of(data, reject_keys)
    lengths, kept, conversations = _scan_samples(data, set(dup_of.values()))
    first_answers = _first_answers(data, reject_keys)

    cards = []
    mix = _last_stats(data, "task_mix")
    if mix is not None:
        cards.append(_task_mix_card(mix, kept))
    elif kept:
        cards.append(_kept_types_card(kept))
    balance = _last_stats(data, "answer_balance")
    if balance is not None:
        cards.append(_answer_balance_card(balance))
    options = _last_stats(data, "option_order")
    if options is not None:
        cards.append(_option_order_card(options))
    templates = _last_stats(data, "template_stats")
    if templates is not None:
        cards.append(_template_card(templates))
    dedup = _last_stats(data, "instruction_dedup")
    if dedup is not None:
        cards.append(_dedup_card(dedup))
    if not cards:
        cards.append(empty("no instruction stage reported statistics"))
    stage_order = [str(s.get("name")) for s in data.stages]
    content = (
        "".join(cards)
        + _answer_length_cards(lengths)
        + _examples_html(examples, dup_of, conversations, first_answers, stage_order)
    )
    sid, title = INSTRUCTION_SECTION
    intro = (
        "Conversations (LLaVA-style instruction data): task mix, yes/no balance, multiple-choice letters and "
        "question templates from the stages' statistics in the manifest; answer lengths of the kept conversations."
    )
    return f'<section id="{sid}"><h2>{e(title)}</h2><p class="intro">{e(intro)}</p>{content}</section>'
