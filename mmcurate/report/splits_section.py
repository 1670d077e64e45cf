"""The report's "Splits" section: the train/val/test assignment of the ``split`` stage, and a leakage check.

Shown only when the manifest has a split stage with statistics or samples.parquet a ``split`` column. From the
stage's statistics (stages.split.SplitStats) and recipe parameters: the samples, achieved and target ratio of
each split, the groups kept whole (pHash neighbours, group columns, image groups), the largest group, the pHash
radius and its expected chance links. From samples.parquet: the strata (``stratify_by``) per split, the largest
:data:`MAX_STRATA` listed and the others counted, and the leakage check.

The leakage check is made here, on the written outputs, not taken from the stage: for each signal the split
keeps together and samples.parquet holds — identical bytes (``sha256``), identical pHash (``phash``; the split
also joins pHash neighbours within its radius, which only the stage can check at scale), each ``group_columns``
value and instruction data's ``image_group`` — the values found in more than one split. None is the expected
result; any is listed with a few example values. Bounded: one group-by per signal.

This module depends on nothing of html_report (which imports it).
"""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pyarrow.compute as pc

from mmcurate.report.html_parts import as_float, e, empty, fixed, html_table, num, section
from mmcurate.report.run_data import RunData, read_samples

__all__ = ["SPLITS_SECTION", "splits_section", "leakage_check"]

SPLITS_SECTION = ("splits", "Splits")
SPLIT_STAGE = "split"
SPLIT_COLUMN = "split"
MAX_STRATA = 12
MAX_LEAK_EXAMPLES = 5
#: Signals the leakage check always looks for, with what they mean.
LEAK_SIGNALS = {"sha256": "identical bytes (sha256)", "phash": "identical pHash", "image_group": "image group"}


def leakage_check(table: pa.Table, columns: list[str]) -> list[dict]:
    """Per column of `columns` that `table` has (with a ``split`` column): the distinct values, the values found
    in more than one split, the samples holding them, and a few of those values (smallest first)."""
    out = []
    for col in columns:
        if col not in table.column_names or col == SPLIT_COLUMN:
            continue
        t = table.select([col, SPLIT_COLUMN])
        if t.column(col).null_count or t.column(SPLIT_COLUMN).null_count:  # no copy when nothing is null
            t = t.filter(pc.and_(pc.is_valid(t.column(col)), pc.is_valid(t.column(SPLIT_COLUMN))))
        g = t.group_by(col).aggregate([(SPLIT_COLUMN, "count_distinct"), ([], "count_all")])
        shared = g.filter(pc.greater(g.column(f"{SPLIT_COLUMN}_count_distinct"), 1))
        examples = pc.sort_indices(shared, sort_keys=[(col, "ascending")])[:MAX_LEAK_EXAMPLES]
        out.append(
            {
                "column": col,
                "values": g.num_rows,
                "shared": shared.num_rows,
                "samples": int(pc.sum(shared.column("count_all")).as_py() or 0),
                "examples": [str(v) for v in shared.column(col).take(examples).to_pylist()],
            }
        )
    return out


def _split_names(stats, table: pa.Table | None) -> list[str]:
    from mmcurate.curate.splits import SPLIT_NAMES

    names = list(SPLIT_NAMES)
    counts = stats.counts if isinstance(stats.counts, dict) else {}
    names += [str(k) for k in counts if str(k) not in names]
    if table is not None and SPLIT_COLUMN in table.column_names:
        names += [
            str(v) for v in pc.unique(table.column(SPLIT_COLUMN)).to_pylist() if v is not None and str(v) not in names
        ]
    return names


def _sizes_table(stats, params: dict, table: pa.Table | None) -> str:
    from mmcurate.curate.splits import SPLIT_NAMES

    counts = stats.counts if isinstance(stats.counts, dict) else {}
    if not counts and table is not None and SPLIT_COLUMN in table.column_names:
        vc = pc.value_counts(table.column(SPLIT_COLUMN).combine_chunks())
        counts = dict(zip(vc.field(0).to_pylist(), vc.field(1).to_pylist()))
    achieved = stats.ratios_achieved if isinstance(stats.ratios_achieved, dict) else {}
    total = sum(v for v in (as_float(c) for c in counts.values()) if v is not None)
    ratios = params.get("ratios")
    target = dict(zip(SPLIT_NAMES, ratios)) if isinstance(ratios, list) and len(ratios) == len(SPLIT_NAMES) else {}
    rows = []
    for name in _split_names(stats, table):
        n = as_float(counts.get(name))
        got = as_float(achieved.get(name))
        if got is None and n is not None and total:
            got = n / total
        want = as_float(target.get(name))
        diff = "–"
        if got is not None and want is not None:
            points = round((got - want) * 100, 1)
            diff = "0.0 pt" if points == 0 else f"{points:+.1f} pt"
        count = f"{int(n):,}" if n is not None and n.is_integer() else num(n)  # exact: sizes are compared
        rows.append(
            f'<tr data-split="{e(name)}" data-count="{e(int(n) if n is not None else "")}"><td class="name">'
            f"{e(name)}</td>"
            f'<td class="num">{e(count)}</td><td class="num">{e(fixed(got, 4))}</td>'
            f'<td class="num">{e(fixed(want, 4))}</td><td class="num">{e(diff)}</td></tr>'
        )
    return html_table(["split", "samples", "achieved ratio", "target ratio", "difference"], rows, "splits")


def _facts(stats, params: dict) -> str:
    group_columns = params.get("group_columns")
    facts = {
        "groups kept whole": num(stats.groups),
        "largest group": num(stats.largest_group),
        "pHash radius": num(stats.phash_radius) if stats.phash_radius is not None else "– (no pHash grouping)",
        "pHash links": num(stats.phash_links),
        "expected chance links per sample": num(stats.expected_chance_links_per_sample),
        "group columns": ", ".join(map(str, group_columns))
        if isinstance(group_columns, list) and group_columns
        else "–",
        "stratified by": str(params.get("stratify_by") or "–"),
        "seed": num(params.get("seed", 0)),
    }
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in facts.items())
    warning = (
        f'<div class="check"><span class="badge bad" data-check="split-warning">{e(stats.warning)}</span></div>'
        if stats.warning
        else ""
    )
    return f'<table class="kv">{rows}</table>{warning}'


def _strata_card(table: pa.Table, column: str, names: list[str]) -> str:
    t = table.select([column, SPLIT_COLUMN]).filter(pc.is_valid(table.column(SPLIT_COLUMN)))
    g = t.group_by([column, SPLIT_COLUMN]).aggregate([([], "count_all")])
    per: dict = {}
    for value, split, n in zip(*(g.column(c).to_pylist() for c in (column, SPLIT_COLUMN, "count_all"))):
        per.setdefault(value, {})[split] = n
    order = sorted(per, key=lambda v: (-sum(per[v].values()), str(v)))
    rows = []
    for value in order[:MAX_STRATA]:
        counts = per[value]
        total = sum(counts.values())
        cells = "".join(
            f'<td class="num">{counts.get(s, 0):,} <span class="muted">({counts.get(s, 0) / total:.0%})</span></td>'
            for s in names
        )
        rows.append(
            f'<tr data-stratum="{e(value)}"><td class="name">{e(value)}</td><td class="num">{total:,}</td>{cells}</tr>'
        )
    more = (
        f'<p class="note">… and {len(order) - MAX_STRATA:,} smaller strata (every sample\'s {e(column)} and split are '
        f"in samples.parquet)</p>"
        if len(order) > MAX_STRATA
        else ""
    )
    return (
        f'<div class="card" data-strata="{e(column)}"><h3>Strata ({e(column)}, {len(order):,} values)</h3>'
        + html_table(["stratum", "samples", *names], rows, "strata")
        + more
        + "</div>"
    )


def _leakage_card(results: list[dict]) -> str:
    if not results:
        return (
            '<div class="card" data-leakage="unchecked"><h3>Leakage check</h3>'
            + empty("samples.parquet has none of the signals to check (sha256, phash, group columns)")
            + "</div>"
        )
    leaks = [r for r in results if r["shared"]]
    checked = ", ".join(LEAK_SIGNALS.get(r["column"], r["column"]) for r in results)
    badge = (
        f'<span class="badge bad" data-check="leakage">leakage: {sum(r["shared"] for r in leaks):,} value(s) found in '
        f"more than one split</span>"
        if leaks
        else f'<span class="badge ok" data-check="no-leakage">no leakage: no {e(checked)} in two splits</span>'
    )
    rows = [
        f'<tr data-signal="{e(r["column"])}" data-shared="{r["shared"]}"><td class="name">'
        f'{e(LEAK_SIGNALS.get(r["column"], r["column"]))}</td><td class="num">{r["values"]:,}</td>'
        f'<td class="num">{r["shared"]:,}</td><td class="num">{r["samples"]:,}</td>'
        f'<td class="mono">{e(", ".join(r["examples"]))}</td></tr>'
        for r in results
    ]
    return (
        f'<div class="card" data-leakage="{"found" if leaks else "none"}"><h3>Leakage check</h3>'
        f'<div class="check">{badge}</div>'
        + html_table(["signal", "distinct values", "in more than one split", "samples", "examples"], rows, "leakage")
        + '<p class="note">Checked on the kept samples (samples.parquet). pHash neighbours within the radius are '
        "joined by the stage itself; identical codes are checked here.</p></div>"
    )


def splits_section(data: RunData) -> str:
    """The section's HTML, or "" when the run made no split."""
    from mmcurate.stages.split import Split, SplitStats

    entries = data.stages_with_stats(SPLIT_STAGE)
    # What the recipe left out ran with the stage's defaults.
    params = {**dataclasses.asdict(Split.Params()), **(data.recipe_params(SPLIT_STAGE) or {})}
    group_columns = [c for c in params.get("group_columns") or [] if isinstance(c, str)]
    stratify = params.get("stratify_by") if isinstance(params.get("stratify_by"), str) else None
    table = read_samples(data, [SPLIT_COLUMN, *([stratify] if stratify else [])])
    has_column = table is not None and SPLIT_COLUMN in table.column_names
    if not entries and not has_column:
        return ""
    stats = SplitStats.from_dict(entries[-1]["stats"] if entries else {})
    cards = [f'<div class="card"><h3>Sizes</h3>{_sizes_table(stats, params, table)}{_facts(stats, params)}</div>']
    if has_column:
        names = _split_names(stats, table)
        if stratify and stratify in table.column_names:
            cards.append(_strata_card(table, stratify, names))
        results = []
        for col in dict.fromkeys([*LEAK_SIGNALS, *group_columns]):  # one signal's column in memory at a time
            signal = read_samples(data, [SPLIT_COLUMN, col])
            results += leakage_check(signal, [col]) if signal is not None else []
        cards.append(_leakage_card(results))
    intro = (
        "Train/val/test assignment by the split stage: near-duplicates and groups go whole into one split, "
        "stratified when the recipe asks; the leakage check looks at the written samples."
    )
    return section(*SPLITS_SECTION, intro, "".join(cards))
