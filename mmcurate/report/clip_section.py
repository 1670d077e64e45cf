"""The report's "CLIP" section: scores around the cut, what the semantic clusters hold, and a map of the embeddings.

Shown only when the run has something of CLIP's: a ``clip_score``, a cluster column (``semantic_cluster`` from
semantic_dedup, ``balance_cluster`` from balance) or an ``image_embedding`` column in samples.parquet, or a
clip_score_filter stage in the manifest.

- **Scores**: a histogram of the CLIP scores of the kept samples (samples.parquet) and of those clip_score_filter
  rejected below its cut (their score is in the reject's detail: stages.clip.reject_scores), the cut drawn; the
  stage's own percentiles over every scored sample; the kept samples just above the cut and the rejected ones
  just below it (the report observer keeps the thumbnails of the rejects scored highest: observer.nearest_the_cut).
- **Clusters**: a grid of sample images per cluster (of the kept samples): the largest and smallest clusters and
  a few drawn at random (seeded), each row showing members chosen by a hash of their key.
- **Map**: the embeddings of at most :data:`MAP_POINTS` kept samples (run_data.read_samples_spread: rows of row
  groups evenly spaced through samples.parquet),
  projected on their first two principal components (PCA in NumPy), coloured by cluster (the
  :data:`MAP_COLOURED` largest; the rest grey).

Bounded at any size: the histogram is binned, the map sampled, galleries hold a fixed number of images. This
module depends on nothing of html_report (which imports it).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmcurate.report.charts import PALETTE, Histogram, Marker, format_number, histogram_svg, scatter_svg
from mmcurate.report.html_parts import as_float, e, empty, fixed, html_table, num, section, tile
from mmcurate.report.kept_images import kept_thumbnails
from mmcurate.report.run_data import RunData, read_samples, read_samples_spread, samples_columns

__all__ = ["CLIP_SECTION", "clip_section", "pca_2d", "CLUSTER_COLUMNS"]

CLIP_SECTION = ("clip", "CLIP")
CLIP_FILTER_STAGE = "clip_score_filter"
CLUSTER_COLUMNS = ("balance_cluster", "semantic_cluster")  # the first present is drawn
EMBEDDING_COLUMN = "image_embedding"
MAX_EXAMPLES = 7  # one row at the report's full width
MAP_POINTS = 1500
MAP_COLOURED = 10
GRID_LARGEST, GRID_SMALLEST, GRID_RANDOM = 2, 2, 4
GRID_TILES = 6
PCA_BLOCK, PCA_ITERATIONS = 8, 30
# Colours of the largest clusters on the map (distinct at a glance, colour-blind safe first); the rest grey.
_CLUSTER_COLOURS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#393b79",
)


def pca_2d(x: np.ndarray, iterations: int = PCA_ITERATIONS) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `x` (n x d) on their first two principal components, and the share of the total variance each
    explains. Signs are fixed (the largest loading of each component positive), so a map is reproducible.

    Block power iteration with Rayleigh-Ritz (Halko et al. 2011), seeded: only n x d x 8 products and a QR of
    d x 8, no d x d eigendecomposition, whose multithreaded LAPACK call takes seconds on a loaded machine (0.14 s
    on one thread, 1-10 s on two busy cores, for d = 512). An 8-vector block converges on the top two
    components at the rate of (lambda_9 / lambda_2) per iteration."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] == 0:
        return np.zeros((x.shape[0] if x.ndim == 2 else 0, 2)), np.zeros(2)
    centred = x - x.mean(axis=0)
    total = float((centred**2).sum())
    block = min(PCA_BLOCK, *centred.shape)
    q = np.linalg.qr(np.random.default_rng(0).normal(size=(centred.shape[1], block)))[0]
    for _ in range(iterations):
        q = np.linalg.qr(centred.T @ (centred @ q))[0]
    small = centred @ q  # n x block: the data in the block's subspace
    eigval, eigvec = np.linalg.eigh(small.T @ small)  # block x block
    order = np.argsort(eigval)[::-1][:2]
    comps = (q @ eigvec[:, order]).T  # k x d, unit rows
    k = comps.shape[0]
    signs = np.sign(comps[np.arange(k), np.abs(comps).argmax(axis=1)])
    comps = comps * np.where(signs == 0, 1, signs)[:, None]
    proj = np.zeros((x.shape[0], 2))
    proj[:, :k] = centred @ comps.T
    share = np.zeros(2)
    share[:k] = np.clip(eigval[order], 0, None) / total if total > 0 else 0
    return proj, share


# ---------------------------------------------------------------------------------------------------
# scores


def _filter_stats(data: RunData) -> dict | None:
    stages = data.stages_with_stats(CLIP_FILTER_STAGE)
    return stages[-1]["stats"] if stages else None


def _rejected_scores(data: RunData) -> np.ndarray:
    """Scores of clip_score_filter's `clip_score` rejects (from their details)."""
    from mmcurate.stages.clip import reject_scores

    r = data.rejects
    if r is None or r.num_rows == 0 or not {"key", "stage", "reason", "detail"} <= set(r.column_names):
        return np.zeros(0)
    sub = r.filter(pc.and_(pc.equal(r.column("stage"), CLIP_FILTER_STAGE), pc.equal(r.column("reason"), "clip_score")))
    scores = reject_scores(sub.column("detail"))
    return scores[np.isfinite(scores)]


def _reject_tiles(data: RunData) -> list[dict]:
    """Thumbnails of clip_score rejects the run kept, highest score (nearest the cut) first."""
    from mmcurate.stages.clip import reject_scores

    t = data.thumbs
    if t is None or t.num_rows == 0 or not {"kind", "stage", "reason"} <= set(t.column_names):
        return []
    rows = t.filter(
        pc.and_(pc.equal(t.column("stage"), CLIP_FILTER_STAGE), pc.equal(t.column("reason"), "clip_score"))
    ).to_pylist()
    details = _details(data, [r["key"] for r in rows])
    scores = reject_scores([details.get(r["key"]) for r in rows])
    for r, s in zip(rows, scores.tolist()):
        r["score"] = s
        r["detail"] = details.get(r["key"])
    return sorted(rows, key=lambda r: (-(r["score"] if np.isfinite(r["score"]) else -np.inf), r["key"]))[:MAX_EXAMPLES]


def _details(data: RunData, keys: list[str]) -> dict[str, str]:
    r = data.rejects
    if r is None or not keys:
        return {}
    sub = r.filter(
        pc.and_(
            pc.is_in(r.column("key"), value_set=pa.array(sorted(set(keys)), pa.string())),
            pc.equal(r.column("stage"), CLIP_FILTER_STAGE),
        )
    )
    return dict(zip(sub.column("key").to_pylist(), sub.column("detail").to_pylist()))


def _cut(data: RunData, stats: dict | None) -> float | None:
    if stats is not None and as_float(stats.get("cut")) is not None:
        return as_float(stats["cut"])
    params = data.recipe_params(CLIP_FILTER_STAGE) or {}
    return as_float(params.get("threshold"))


def _scores_card(data: RunData, kept: np.ndarray, rejected: np.ndarray, stats: dict | None, cut: float | None) -> str:
    values = np.concatenate([kept, rejected])
    markers = [Marker(cut, f"cut {cut:.3f}")] if cut is not None else []
    svg = histogram_svg(
        Histogram.linear(values, max_bins=40), "CLIP score", "cosine(image, caption)", markers=markers, width=760
    )
    facts = [f"kept {kept.size:,}"]
    if stats is not None:
        mode = stats.get("mode")
        how = (
            f"top {format_number(100 * as_float(stats.get('keep_fraction')))}%"
            if mode == "keep_fraction" and as_float(stats.get("keep_fraction")) is not None
            else f"threshold {fixed(stats.get('cut'))}"
        )
        facts.append(f"rejected below the cut {rejected.size:,} ({how})")
        if as_float(stats.get("no_clip_score")):
            facts.append(f"no score {num(stats.get('no_clip_score'))}")
    note = (
        "Kept samples (samples.parquet) and samples clip_score_filter rejected (score from the reject detail); samples "
        "that a later stage removed are in neither."
    )
    pct = ""
    if stats is not None and isinstance(stats.get("scores"), dict) and stats["scores"]:
        p = stats["scores"]
        cells = "".join(f'<td class="num">{e(fixed(v))}</td>' for v in p.values())
        pct = '<div class="note">every scored sample, from the stage\'s statistics</div>' + html_table(
            [str(k) for k in p], [f"<tr>{cells}</tr>"], "percentiles"
        )
    return (
        f'<div class="card hist" data-hist="clip_score" data-n="{values.size}"><h3>CLIP score</h3>{svg}'
        f'<div class="stats">{e(" · ".join(facts))}</div><div class="note">{e(note)}</div>{pct}</div>'
    )


def _examples_card(data: RunData, table: pa.Table, cut: float | None) -> str:
    scored = table.filter(pc.is_valid(table.column("clip_score")))
    above = []
    if scored.num_rows:
        idx = pc.select_k_unstable(
            scored,
            k=min(MAX_EXAMPLES, scored.num_rows),
            sort_keys=[("clip_score", "ascending"), ("key", "ascending")],
        )
        above = scored.take(idx).to_pylist()
    thumbs = kept_thumbnails(data, [r["key"] for r in above])
    above_tiles = "".join(
        tile(
            thumbs[r["key"]].jpeg,
            r["key"],
            [],
            badge=f"{r['clip_score']:.3f}",
            badge_cls="kept",
            decoded=thumbs[r["key"]].decoded,
            caption=thumbs[r["key"]].caption,
        )
        for r in above
    )
    below = _reject_tiles(data)
    below_tiles = "".join(
        tile(
            r["jpeg"],
            r["key"],
            [("detail", r.get("detail") or "")],
            badge=f"{r['score']:.3f}" if np.isfinite(r["score"]) else "rejected",
            decoded=r.get("decoded", True),
            caption=r.get("caption"),
        )
        for r in below
    )
    above_html = (
        f'<div class="tiles" data-side="above">{above_tiles}</div>' if above else empty("no kept sample is scored")
    )
    if cut is None:  # clip_embed without clip_score_filter: no cut, the lowest scores are still worth a look
        return (
            '<div class="card gallery" data-gallery="clip_lowest"><h3>Lowest CLIP scores</h3>'
            f'<div class="note">kept samples with the lowest scores (no clip_score_filter ran)</div>{above_html}</div>'
        )
    return (
        f'<div class="card gallery" data-gallery="clip_cut"><h3>Around the cut ({cut:.3f})</h3>'
        f'<div class="note">kept with the lowest scores, just above the cut</div>{above_html}'
        '<div class="note">rejected just below the cut, highest score first</div>'
        + (f'<div class="tiles" data-side="below">{below_tiles}</div>' if below else empty("no rejected thumbnails"))
        + "</div>"
    )


# ---------------------------------------------------------------------------------------------------
# clusters


def _key_order(keys: pa.Array) -> np.ndarray:
    """A deterministic, spread-out order of samples: by a hash of the key (not by the key, which groups shards)."""
    from mmcurate.pipeline.global_sharded import string_hash64

    return np.argsort(string_hash64(keys), kind="stable")


def _chosen_clusters(ids: np.ndarray, sizes: np.ndarray) -> list[tuple[int, int, str]]:
    """(cluster, size, why) for the largest, the smallest and a seeded random few of the clusters."""
    order = np.lexsort((ids, -sizes))  # largest first, ties by id
    chosen: dict[int, str] = {}
    for i in order[:GRID_LARGEST]:
        chosen.setdefault(int(i), "largest")
    for i in order[::-1][:GRID_SMALLEST]:
        chosen.setdefault(int(i), "smallest")
    rest = np.array([i for i in order if int(i) not in chosen], dtype=np.int64)
    if rest.size:
        pick = np.random.default_rng(0).choice(rest, size=min(GRID_RANDOM, rest.size), replace=False)
        for i in sorted(pick.tolist(), key=lambda j: (-sizes[j], ids[j])):
            chosen.setdefault(int(i), "random")
    ranked = sorted(chosen, key=lambda i: (-sizes[i], ids[i]))
    return [(int(ids[i]), int(sizes[i]), chosen[i]) for i in ranked]


def _grid_card(data: RunData, table: pa.Table, column: str) -> str:
    t = table.filter(pc.is_valid(table.column(column)))
    if t.num_rows == 0:
        return ""
    counts = pc.value_counts(t.column(column).combine_chunks())
    ids = counts.field(0).to_numpy(zero_copy_only=False).astype(np.int64)
    sizes = counts.field(1).to_numpy().astype(np.int64)
    chosen = _chosen_clusters(ids, sizes)
    rows_by_cluster = {}
    for cid, _, _ in chosen:
        members = t.filter(pc.equal(t.column(column), cid))
        pick = _key_order(members.column("key"))[:GRID_TILES]
        rows_by_cluster[cid] = members.take(pa.array(pick)).to_pylist()
    thumbs = kept_thumbnails(data, [r["key"] for rows in rows_by_cluster.values() for r in rows])
    out = []
    for cid, size, why in chosen:
        tiles = "".join(
            tile(
                thumbs[r["key"]].jpeg, r["key"], [], decoded=thumbs[r["key"]].decoded, caption=thumbs[r["key"]].caption
            )
            for r in rows_by_cluster[cid]
        )
        more = f'<div class="more">+{size - len(rows_by_cluster[cid]):,} more</div>' if size > GRID_TILES else ""
        out.append(
            f'<div class="group" data-cluster="{cid}" data-size="{size}" data-why="{e(why)}"><div class="group-head">'
            f'<span class="kind">{e(why)}</span> cluster {cid} · {size:,} kept samples</div>'
            f'<div class="tiles">{tiles}{more}</div></div>'
        )
    return (
        f'<div class="card" data-grid="{e(column)}"><h3>Samples per cluster ({e(column)}, {ids.size:,} clusters)</h3>'
        f'<div class="note">the {GRID_LARGEST} largest and {GRID_SMALLEST} smallest clusters of the kept samples and '
        f"{GRID_RANDOM} drawn at random (seed 0); members picked by a hash of their key</div>{''.join(out)}</div>"
    )


def _map_card(data: RunData, column: str | None) -> str:
    columns = [EMBEDDING_COLUMN] + ([column] if column else [])
    sample = read_samples_spread(data, columns, MAP_POINTS)
    if sample is None or EMBEDDING_COLUMN not in sample.column_names:
        return ""
    emb = sample.column(EMBEDDING_COLUMN)
    valid = pc.is_valid(emb)
    if column:
        valid = pc.and_(valid, pc.is_valid(sample.column(column)))
    sample = sample.filter(valid)
    if sample.num_rows < 3:
        return ""
    flat = pc.list_flatten(sample.column(EMBEDDING_COLUMN)).to_numpy(zero_copy_only=False)
    x = np.asarray(flat, dtype=np.float32).reshape(sample.num_rows, -1)
    keep = np.isfinite(x).all(axis=1)
    proj, share = pca_2d(x[keep])
    if column:
        cl = sample.column(column).to_numpy(zero_copy_only=False).astype(np.int64)[keep]
        ids, counts = np.unique(cl, return_counts=True)
        top = ids[np.lexsort((ids, -counts))][:MAP_COLOURED]
        rank = {int(c): i + 1 for i, c in enumerate(top)}
        groups = np.array([rank.get(int(c), 0) for c in cl], dtype=np.int64)
        others = ids.size - top.size
        labels = [f"{others:,} other clusters"] + [f"cluster {int(c)} ({int(counts[ids == c][0]):,})" for c in top]
        colours = [PALETTE["muted"], *_CLUSTER_COLOURS[: top.size]]
    else:
        groups = np.zeros(proj.shape[0], dtype=np.int64)
        labels, colours = ["kept samples"], [PALETTE["primary"]]
    svg = scatter_svg(
        proj,
        groups,
        colours,
        labels,
        "embedding map (PCA)",
        x_label=f"PC1 ({share[0]:.0%} of the variance)",
        y_label=f"PC2 ({share[1]:.0%})",
    )
    total = data.counts.get("kept")
    return (
        f'<div class="card chart" data-map="pca" data-n="{proj.shape[0]}"><h3>Embedding map</h3>{svg}'
        f'<div class="note">{proj.shape[0]:,} of {e(num(total))} kept samples (spread over samples.parquet), '
        f"{e(EMBEDDING_COLUMN)} projected on its first two principal components"
        + (f"; coloured by {e(column)}, the {MAP_COLOURED} largest clusters in the sample" if column else "")
        + ".</div></div>"
    )


def clip_section(data: RunData) -> str:
    """The section's HTML, or "" when the run has neither CLIP scores, clusters nor embeddings."""
    table = read_samples(data, ["key", "clip_score", *CLUSTER_COLUMNS])
    names = set(table.column_names) if table is not None else set()
    stats = _filter_stats(data)
    cluster_column = next((c for c in CLUSTER_COLUMNS if c in names), None)
    has_embedding = EMBEDDING_COLUMN in samples_columns(data)
    if "clip_score" not in names and stats is None and cluster_column is None and not has_embedding:
        return ""
    cards = []
    if "clip_score" in names or stats is not None:
        cut = _cut(data, stats)
        kept = np.zeros(0)
        if "clip_score" in names:
            col = table.column("clip_score")
            kept = pc.filter(col, pc.is_valid(col)).to_numpy(zero_copy_only=False).astype(np.float64)
        rejected = _rejected_scores(data)
        cards.append(_scores_card(data, kept, rejected, stats, cut))
        if "clip_score" in names:
            cards.append(_examples_card(data, table, cut))
    if cluster_column is not None and "key" in names:
        cards.append(_grid_card(data, table, cluster_column))
    cards.append(_map_card(data, cluster_column))
    intro = "CLIP scores around the filter's cut, what the semantic clusters hold, and a 2-D map of the embeddings."
    body = "".join(c for c in cards if c) or empty("nothing to show")
    return section(*CLIP_SECTION, intro, body)
