"""Local detail: tell a template variant from a near-duplicate among image pairs a global hash links.

Web data is full of templates: the same T-shirt, mug or phone-case mockup with another print, banners with one
layout and other text. A global perceptual hash (PDQ, pHash) sees the shared layout and links them. Whether such a
variant should go is a curation policy, so the pair is labelled instead of silently deleted.

The signal: a grid of ``GRID x GRID`` cells over the image (fractions of its width and height, exact area
averages, so a resized copy has the same cells), each cell's luma mean and standard deviation
(``uint8[2 * GRID * GRID]``: 512 bytes per sample, of PDQ's luma, from the decode that hashed the image: the
native ``ops.pdq_bytes(detail=True)``, for which this module is the oracle). For a pair linked under
a dihedral transform, the first image's grid is transformed the same way (the grid of a rotated or flipped image is
the rotated or flipped grid). The second image's means are fitted to the first's by an affine map (brightness and
contrast shifts), refitted on the cells that agree; a cell *changed* when
its mean or its deviation (scaled by the fit) moves by more than ``CHANGE`` luma levels.

A **template** pair is one where each image has local detail the other lacks: among the changed cells, at least
``TWO_SIDED`` of them (and at least one) go each way, i.e. one image is brighter / more textured in some changed
cells and the other in others. A different print or text replaces content (changes both ways); an overlay
(watermark, logo) or a crop adds or moves content mostly one way, and re-encodes, resizes and colour shifts change
no cell. Measured on the labelled set (benchmarks/README_near_dup.md, "Templates").

The rule runs for every verified PDQ link, and in a cluster of template variants for each member against an anchor
(and for every pair of the members no anchor takes), so it is a native kernel (:func:`template_pairs`,
csrc/cpu/local_detail_cpu.cpp, parallel over pairs); its NumPy statement (:func:`template_pairs_reference`) is the
kernel's oracle (tests/curate/test_local_detail.py: the same decisions) and takes other grid sides and thresholds
for experiments.
"""

from __future__ import annotations

import functools

import numpy as np

GRID = 16
DETAIL_BYTES = 2 * GRID * GRID
#: luma levels (of 255) a cell's mean or deviation must move by to count as changed
CHANGE = 8.0
#: the share of changed cells that must go each way for a template
TWO_SIDED = 0.2
_FIT_ROUNDS = 3
#: a residual counts past a threshold only by more than this: uint8 cells under an exact affine fit give integer
#: residuals, and which side of a threshold they land on must not depend on the summation order (NumPy's pairwise
#: sums, the kernel's sequential ones)
_TIE = 1e-6


def _cell_means(y: np.ndarray, axis: int) -> np.ndarray:
    """Exact area averages of y over GRID equal cells along ``axis`` (a pixel a cell boundary cuts counts by its
    covered fraction): the integral of the pixels at each cell edge, from a cumulative sum (no BLAS: its threads
    would fight the map stage's native pool)."""
    y = np.moveaxis(y, axis, 0)
    n = y.shape[0]
    edges = np.arange(GRID + 1) * (n / GRID)
    whole = np.floor(edges).astype(np.int64)
    frac = (edges - whole).reshape(-1, *([1] * (y.ndim - 1)))
    cum = np.concatenate([np.zeros((1, *y.shape[1:])), np.cumsum(y, axis=0)])
    integral = cum[whole] + frac * y[np.minimum(whole, n - 1)]
    return np.moveaxis(np.diff(integral, axis=0) / (n / GRID), 0, axis)


def pdq_luma(image: np.ndarray) -> np.ndarray:
    """float64[h, w]: PDQ's luma (kernels/pdq.h) of a decoded image (HxW or HxWxC uint8; RGB(A) or gray):
    (R * 0.299 + G * 0.587) + B * 0.114 in float64, rounded to float32, as the native kernels compute it."""
    a = np.asarray(image)
    rgb = (
        (a[..., 0], a[..., 1], a[..., 2])
        if a.ndim == 3 and a.shape[2] >= 3
        else ((a[..., 0] if a.ndim == 3 else a),) * 3
    )
    return ((rgb[0] * 0.299 + rgb[1] * 0.587) + rgb[2] * 0.114).astype(np.float32).astype(np.float64)


def detail_grid(image: np.ndarray) -> np.ndarray:
    """The grid of one decoded image (HxW or HxWxC uint8; RGB(A) or gray): uint8[DETAIL_BYTES], the GRID x GRID
    cell means (row-major) then the cell standard deviations, rounded. Cells are exact area averages (a pixel a
    cell boundary cuts counts by its covered fraction), so a resized copy has the same cells and a transposed or
    rotated one the transformed grid."""
    y = pdq_luma(image)
    both = _cell_means(_cell_means(np.stack([y, y * y], axis=-1), 0), 1)
    mean = both[..., 0]
    std = np.sqrt(np.maximum(both[..., 1] - mean * mean, 0.0))
    return np.concatenate([mean.ravel(), std.ravel()]).round().clip(0, 255).astype(np.uint8)


def _transform(cells: np.ndarray, k: int) -> np.ndarray:
    """Dihedral transform k (mmcurate.reference.TRANSFORMS' order) of [..., G, G] cell arrays."""
    ax = (-2, -1)
    if k < 4:
        return np.rot90(cells, k, axes=ax)
    if k == 4:
        return cells[..., ::-1, :]
    if k == 5:
        return cells[..., :, ::-1]
    if k == 6:
        return cells.swapaxes(-2, -1)
    return np.rot90(cells, 2, axes=ax).swapaxes(-2, -1)


def transformed(grids: np.ndarray, transform, grid: int = GRID) -> np.ndarray:
    """Grids (uint8[m, 2 * grid * grid]) of the images transformed by ``transform[i]`` (0..7), as
    float64[m, 2, grid, grid]."""
    g = np.asarray(grids, np.float64).reshape(-1, 2, grid, grid)
    t = np.broadcast_to(np.asarray(transform, np.int64), (len(g),))
    out = g.copy()
    for k in np.unique(t):
        if k:
            sel = t == k
            out[sel] = _transform(g[sel], int(k))
    return out


@functools.cache
def _cell_perms() -> np.ndarray:
    """int32[8, GRID * GRID]: the source cell of each cell of a grid under each transform (_transform's)."""
    cells = np.arange(GRID * GRID).reshape(GRID, GRID)
    return np.stack([_transform(cells, k).ravel() for k in range(8)]).astype(np.int32)


def _grid_rows(grids, name: str) -> np.ndarray:
    """uint8[m, DETAIL_BYTES] from uint8 (or integer 0..255) grids of shape (DETAIL_BYTES,), (m, DETAIL_BYTES) or
    (m, 2, GRID, GRID)."""
    a = np.asarray(grids)
    if a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.integer) or (a.size and (a.min() < 0 or a.max() > 255)):
            raise ValueError(f"{name} must hold uint8 grid cells (0..255), got {a.dtype}")
        a = a.astype(np.uint8)
    if a.shape[-1:] != (DETAIL_BYTES,) and a.shape[-3:] != (2, GRID, GRID):
        shapes = f"(m, {DETAIL_BYTES}) or (m, 2, {GRID}, {GRID})"
        raise ValueError(f"{name} must be grids of {DETAIL_BYTES} bytes, {shapes}, got shape {a.shape}")
    return np.ascontiguousarray(a.reshape(-1, DETAIL_BYTES))


def template_pairs(grids_a, grids_b, transform=0, num_threads=None) -> np.ndarray:
    """bool[m]: pair i is a template pair (module docstring), image a seen under ``transform[i]`` (the dihedral
    transform mapping a onto b; 0 = identity). The native kernel (csrc/cpu/local_detail_cpu.cpp, parallel over
    pairs; :func:`template_pairs_reference` is its oracle; benchmarks/results/template_rule.json) over uint8 grids
    (DETAIL_BYTES each)."""
    from mmcurate._native import native
    from mmcurate.ops._inputs import call_native, check_threads

    a, b = _grid_rows(grids_a, "grids_a"), _grid_rows(grids_b, "grids_b")
    if len(a) != len(b):
        raise ValueError(f"grids_a and grids_b must pair up, got {len(a)} and {len(b)}")
    t = np.asarray(transform)
    if not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"transform must be integers 0..7, got {t.dtype}")
    t = np.ascontiguousarray(np.broadcast_to(t.astype(np.int64), (len(a),)))
    fn = native().template_pairs
    threads = check_threads(num_threads)
    return call_native(fn, a, b, t, _cell_perms(), CHANGE, TWO_SIDED, _FIT_ROUNDS, _TIE, threads)


def template_pairs_reference(
    grids_a, grids_b, transform=0, change: float = CHANGE, two_sided: float = TWO_SIDED, grid: int = GRID
) -> np.ndarray:
    """The template rule in NumPy, vectorised over the pairs: :func:`template_pairs`' oracle, and the rule for
    other grids (``grid`` cells a side, float cells allowed) and thresholds (benchmarks)."""
    a = transformed(grids_a, transform, grid)
    b = np.asarray(grids_b, np.float64).reshape(-1, 2, grid, grid)
    if len(a) != len(b):
        raise ValueError(f"grids_a and grids_b must pair up, got {len(a)} and {len(b)}")
    if not len(a):
        return np.zeros(0, bool)
    x, y = a[:, 0].reshape(len(a), -1), b[:, 0].reshape(len(b), -1)
    sx, sy = a[:, 1].reshape(len(a), -1), b[:, 1].reshape(len(b), -1)
    w = np.ones_like(x)
    for _ in range(_FIT_ROUNDS):  # weighted least squares y ~ alpha x + beta, then drop the cells that disagree
        n = w.sum(1)
        mx, my = (w * x).sum(1) / n, (w * y).sum(1) / n
        vx = (w * (x - mx[:, None]) ** 2).sum(1)
        alpha = np.where(vx > 1e-9, (w * (x - mx[:, None]) * (y - my[:, None])).sum(1) / np.maximum(vx, 1e-9), 1.0)
        beta = my - alpha * mx
        res = y - (alpha[:, None] * x + beta[:, None])
        r = np.abs(res)
        w = (r <= np.maximum(3 * np.median(r, axis=1), 4.0)[:, None] + _TIE).astype(np.float64)
    dev = sy - np.abs(alpha)[:, None] * sx
    past = change + _TIE
    gain_b = (res > past) | (dev > past)
    gain_a = (res < -past) | (dev < -past)
    changed = (gain_a | gain_b).sum(1)
    each_way = np.minimum(gain_a.sum(1), gain_b.sum(1))
    return (each_way >= 1) & (each_way >= two_sided * changed)


__all__ = [
    "GRID",
    "DETAIL_BYTES",
    "CHANGE",
    "TWO_SIDED",
    "detail_grid",
    "transformed",
    "template_pairs",
    "template_pairs_reference",
]
