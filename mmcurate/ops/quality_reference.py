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


def _planes(image: np.ndarray, ycbcr: bool = False):
    """(luma, rg, yb) float64 planes of a decoded uint8 image (H, W[, C])."""
    a = image if image.ndim == 3 else image[:, :, None]
    if a.shape[2] < 3:
        lum = a[:, :, 0].astype(np.float64)
        return lum, np.zeros_like(lum), np.zeros_like(lum)
    p = a[:, :, :3].astype(np.float64)
    if ycbcr:
        y, cb, cr = p[:, :, 0], p[:, :, 1] - 128.0, p[:, :, 2] - 128.0
        r = np.clip(y + 1.402 * cr, 0, 255)
        g = np.clip(y - 0.344136 * cb - 0.714136 * cr, 0, 255)
        b = np.clip(y + 1.772 * cb, 0, 255)
        lum = y
    else:
        r, g, b = p[:, :, 0], p[:, :, 1], p[:, :, 2]
        u = a[:, :, :3].astype(np.uint32)
        lum = ((u[:, :, 0] * 19595 + u[:, :, 1] * 38470 + u[:, :, 2] * 7471 + 0x8000) >> 16).astype(np.float64)
    return lum, r - g, 0.5 * (r + g) - b


def area_weights(n: int, side: int = SIDE) -> np.ndarray:
    """(side, n) matrix: row o averages source samples [o n / side, (o + 1) n / side) by their overlap."""
    edges = np.arange(side + 1) * n / side
    src = np.arange(n + 1, dtype=np.float64)
    lo = np.maximum(edges[:-1, None], src[None, :-1])
    hi = np.minimum(edges[1:, None], src[None, 1:])
    return np.clip(hi - lo, 0, None) / (n / side)


def canonical(image: np.ndarray, ycbcr: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three 64 x 64 canonical planes (luma, rg, yb)."""
    h, w = image.shape[:2]
    wy, wx = area_weights(h), area_weights(w)
    return tuple(wy @ p @ wx.T for p in _planes(image, ycbcr))


def _bars(planes, rows: bool) -> int:
    lines = [p if rows else p.T for p in planes]

    def is_bar(k: int, edge: int) -> bool:
        return all(np.ptp(q[k]) <= BAR_RANGE and abs(q[k].mean() - q[edge].mean()) <= BAR_RANGE for q in lines)

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
    rows, cols = _bars((lum, rg, yb), True), _bars((lum, rg, yb), False)
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
