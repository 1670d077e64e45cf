"""Pure-NumPy reference of the image-quality signals (mmcurate.ops.quality), the tests' oracle.

It restates csrc/kernels/quality.h independently, in float64 with matrix products: the 64 x 64 canonical planes
are ``Wy @ plane @ Wx.T`` with area-overlap weight matrices, the statistics vectorised. Against the native kernel
(float32 planes) the tests allow: brightness, contrast, colourfulness 1e-3 relative (+1e-3 absolute), sharpness
1e-3 relative (+1e-2 absolute); entropy 0.02 bits and flat/border fractions 1/64 (a cell whose value sits on a
rounding or threshold edge can fall either way in float32 vs float64).
"""

from __future__ import annotations

import numpy as np

SIDE = 64
FLAT_RANGE = 2.0
BAR_RANGE = 3.0
LOW_INFO = {"entropy": 2.0, "flat": 0.9, "border": 0.75}


def area_weights(n: int, side: int = SIDE) -> np.ndarray:
    """(side, n) matrix: row o averages source samples [o n / side, (o + 1) n / side) by their overlap."""
    edges = np.arange(side + 1) * n / side
    src = np.arange(n + 1, dtype=np.float64)
    lo = np.maximum(edges[:-1, None], src[None, :-1])
    hi = np.minimum(edges[1:, None], src[None, 1:])
    return np.clip(hi - lo, 0, None) / (n / side)


def canonical(image: np.ndarray, ycbcr: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three 64 x 64 canonical planes (luma, rg, yb): the decoded channels area-averaged, then converted (the
    conversions are linear, so averaging first changes nothing but the cost)."""
    a = image if image.ndim == 3 else image[:, :, None]
    h, w = a.shape[:2]
    wy, wx = area_weights(h), area_weights(w)
    m = [wy @ a[:, :, c].astype(np.float64) @ wx.T for c in range(min(a.shape[2], 3) if a.shape[2] >= 3 else 1)]
    if len(m) == 1:
        return m[0], np.zeros_like(m[0]), np.zeros_like(m[0])
    if ycbcr:
        cb, cr = m[1] - 128.0, m[2] - 128.0
        return m[0], 0.344136 * cb + 2.116136 * cr, 0.343932 * cr - 1.944068 * cb
    r, g, b = m
    return 0.299 * r + 0.587 * g + 0.114 * b, r - g, 0.5 * (r + g) - b


def _bars(lum: np.ndarray, rows: bool) -> int:
    lines = lum if rows else lum.T

    def is_bar(k: int, edge: int) -> bool:
        return np.ptp(lines[k]) <= BAR_RANGE and abs(lines[k].mean() - lines[edge].mean()) <= BAR_RANGE

    first = 0
    while first < SIDE and is_bar(first, 0):
        first += 1
    if first == SIDE:
        return SIDE
    last = 0
    while last < SIDE - first and is_bar(SIDE - 1 - last, SIDE - 1):
        last += 1
    return first + last


def image_quality_reference(image: np.ndarray, ycbcr: bool = False) -> dict:
    """Every signal of one decoded image, as a dict of Python floats (low_information a bool)."""
    lum, rg, yb = canonical(image, ycbcr)
    b = lum.reshape(SIDE // 2, 2, SIDE // 2, 2).mean(axis=(1, 3))
    lap = b[:-2, 1:-1] + b[2:, 1:-1] + b[1:-1, :-2] + b[1:-1, 2:] - 4 * b[1:-1, 1:-1]
    hist = np.bincount(np.clip(np.floor(lum + 0.5), 0, 255).astype(np.int64).ravel(), minlength=256)
    p = hist[hist > 0] / lum.size
    padded = np.pad(lum, 1, mode="edge")  # edge padding leaves a clipped 3 x 3 window's max and min unchanged
    win = np.stack([padded[dy : dy + SIDE, dx : dx + SIDE] for dy in range(3) for dx in range(3)])
    flat = float(np.mean(win.max(0) - win.min(0) <= FLAT_RANGE))
    rows, cols = _bars(lum, True), _bars(lum, False)
    out = {
        "sharpness": float(lap.var()),
        "brightness": float(lum.mean()),
        "contrast": float(lum.std()),
        "colourfulness": float(np.sqrt(rg.var() + yb.var()) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)),
        "border_fraction": 1.0 - (SIDE - rows) * (SIDE - cols) / SIDE**2,
        "flat_fraction": flat,
        "entropy": float(-(p * np.log2(p)).sum()),
    }
    out["low_information"] = bool(
        out["entropy"] < LOW_INFO["entropy"]
        or out["flat_fraction"] > LOW_INFO["flat"]
        or out["border_fraction"] > LOW_INFO["border"]
    )
    return out
