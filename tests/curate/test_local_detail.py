"""The template rule's native kernel against its NumPy oracle (curate.local_detail.template_pairs_reference)."""

from __future__ import annotations

import numpy as np
import pytest

from mmcurate.curate import local_detail as ld

G, CELLS = ld.GRID, ld.GRID * ld.GRID


def _pairs(rng, m: int):
    """Grid pairs of every kind the rule sees: near-copies (noise, brightness/contrast shifts), one-way changes
    (an overlay: a block brighter and more textured in b), two-way changes (another print in a block), unrelated
    grids, flat grids; each under a random dihedral transform, b built from a's transformed grid."""
    a = rng.integers(0, 256, (m, 2, G, G)).astype(np.float64)
    a[:, 1] = rng.integers(0, 60, (m, G, G))
    t = rng.integers(0, 8, m)
    b = ld.transformed(a.reshape(m, -1).astype(np.uint8), t)
    kind = rng.integers(0, 5, m)
    b += rng.normal(0, 2, b.shape)
    gain, shift = rng.uniform(0.7, 1.3, m), rng.uniform(-30, 30, m)
    b[:, 0] = b[:, 0] * gain[:, None, None] + shift[:, None, None]
    r0, c0 = rng.integers(0, G - 6, m), rng.integers(0, G - 6, m)
    for i in range(m):
        blk = np.s_[r0[i] : r0[i] + 6, c0[i] : c0[i] + 6]
        if kind[i] == 1:  # overlay: one way
            b[i, 0][blk] += 40
            b[i, 1][blk] += 30
        elif kind[i] == 2:  # another print: both ways
            b[i, :, blk[0], blk[1]] = rng.integers(0, 256, (2, 6, 6))
        elif kind[i] == 3:
            b[i] = rng.integers(0, 256, (2, G, G))
        elif kind[i] == 4:
            a[i, 0], a[i, 1], b[i, 1] = 128, 0, 0
            b[i, 0] = 128
    return (
        a.reshape(m, -1).round().clip(0, 255).astype(np.uint8),
        b.reshape(m, -1).round().clip(0, 255).astype(np.uint8),
        t,
    )


@pytest.mark.parametrize("seed", range(3))
def test_native_template_rule_equals_the_numpy_oracle(seed):
    a, b, t = _pairs(np.random.default_rng(seed), 3000)
    ref = ld.template_pairs_reference(a, b, t)
    assert 0.2 < ref.mean() < 0.8  # both decisions well represented
    np.testing.assert_array_equal(ld.template_pairs(a, b, t), ref)
    np.testing.assert_array_equal(ld.template_pairs(a, b, t, num_threads=1), ref)


def test_template_rule_scalars_shapes_and_errors():
    a, b, t = _pairs(np.random.default_rng(9), 8)
    assert ld.template_pairs(a[:0], b[:0]).shape == (0,)
    one = ld.template_pairs(a[0], b[0], int(t[0]))
    assert one.tolist() == ld.template_pairs_reference(a[:1], b[:1], t[:1]).tolist()
    with pytest.raises(ValueError, match="pair up"):
        ld.template_pairs(a, b[:3])
    with pytest.raises(ValueError, match="0..7"):
        ld.template_pairs(a, b, 8)
    with pytest.raises(ValueError, match="0..7"):
        ld.template_pairs(a, b, 2.5)
    with pytest.raises(ValueError, match="uint8"):
        ld.template_pairs(a + 0.6, b)
    with pytest.raises(ValueError, match="uint8"):
        ld.template_pairs(a.astype(np.int64) + 256, b)
    with pytest.raises(ValueError, match="shape"):
        ld.template_pairs(a.reshape(-1, CELLS), b.reshape(-1, CELLS))
    assert ld.template_pairs(a.astype(np.int64), b, t).tolist() == ld.template_pairs(a, b, t).tolist()
    four_d = a.reshape(-1, 2, G, G)[:, :, ::-1][:, :, ::-1]  # (m, 2, G, G), not contiguous
    assert ld.template_pairs(four_d, b, t).tolist() == ld.template_pairs(a, b, t).tolist()


def test_residuals_on_a_threshold_are_decided_alike():
    """Exact affine maps of uint8 grids (gains 0.5-2, integer offsets) give residuals on whole or half levels;
    cells moved by exactly CHANGE must not be decided by the last bits of the fit's sums (NumPy's pairwise sums
    against the kernel's)."""
    rng = np.random.default_rng(0)
    m = 4000
    t = rng.integers(0, 8, m)
    a = rng.integers(20, 100, (m, ld.DETAIL_BYTES)).astype(np.uint8)
    ta = ld.transformed(a, t).reshape(m, 2, CELLS)
    gain, offset = rng.choice([0.5, 1.0, 1.5, 2.0], m)[:, None], rng.integers(-10, 10, m)[:, None]
    means = ta[:, 0] * gain + offset
    moved = rng.random((m, CELLS)) < 0.15
    means = np.where(moved, means + rng.choice([-8, 8, -8.5, 8.5, -16, 16], (m, CELLS)), means)
    devs = ta[:, 1] * gain + np.where(rng.random((m, CELLS)) < 0.05, rng.choice([-8, 8], (m, CELLS)), 0)
    b = np.concatenate([means, devs], 1).round().clip(0, 255).astype(np.uint8)
    np.testing.assert_array_equal(ld.template_pairs(a, b, t), ld.template_pairs_reference(a, b, t))
