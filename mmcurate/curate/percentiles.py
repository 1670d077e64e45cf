"""Percentile summaries of a set of numbers (scores, cluster sizes) for stage stats and the manifest, stated once."""

from __future__ import annotations

import numpy as np


def percentile_summary(values, qs, digits: int | None = None, min_max: bool = False) -> dict:
    """``{"p<q>": q-th percentile for q in qs, ["min": .., "max": ..,] "mean": ..}`` of ``values`` (computed in
    float64, numpy's linear interpolation), as Python floats, rounded to ``digits`` decimals when given.
    ``{}`` for no values.

    The callers' copies this replaced differed only in their settings, which they keep: clip_score_filter's
    scores (p1..p99, min/max, 6 decimals), semantic_dedup's cluster sizes (p0, p50, p90, p99, p100) and
    balance's cluster sizes (p0..p100), mean last in each."""
    v = np.asarray(values)
    if v.size == 0:
        return {}
    v = v.astype(np.float64, copy=False)

    def num(x) -> float:
        return float(x) if digits is None else round(float(x), digits)

    out = {f"p{q}": num(x) for q, x in zip(qs, np.percentile(v, list(qs)))}
    if min_max:
        out.update(min=num(v.min()), max=num(v.max()))
    out["mean"] = num(v.mean())
    return out
