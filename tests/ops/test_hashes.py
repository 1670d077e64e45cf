"""Perceptual hashes: bit-exact against imagehash 4.3.2 on the same pixels (and on the same bytes for the
fused decode path), tie behaviour, fast-path agreement, API contract and misuse."""

from __future__ import annotations

import io

import imagehash
import numpy as np
import pytest
import scipy.fftpack
from PIL import Image, ImageOps

import data_gen as g
from mmcurate._native import native
from mmcurate.ops import Status
from mmcurate.ops.hashes import PhashBytesResult, ahash, dhash, hash_to_hex, phash, phash_bytes, whash

OURS = {"phash": phash, "dhash": dhash, "ahash": ahash, "whash": whash}
REFERENCE = {
    "phash": imagehash.phash,
    "dhash": imagehash.dhash,
    "ahash": imagehash.average_hash,
    "whash": imagehash.whash,
}
PIL_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}

# Fast (DCT-scaled, luma-only, fast-IDCT) vs exact pHash on the sample photos as JPEG q50..q95, measured:
# mean 0.98 bits, max 6 (min side 64). The bounds leave room for other libjpeg-turbo builds.
FAST_MEAN_BOUND, FAST_MAX_BOUND = 2.0, 10


def to_pil(a: np.ndarray) -> Image.Image:
    c = 1 if a.ndim == 2 else a.shape[2]
    return Image.fromarray(a if c > 1 else a.reshape(a.shape[:2]), PIL_MODES[c])


def reference_hex(kind: str, images) -> list[str]:
    return [str(REFERENCE[kind](to_pil(a))) for a in images]


def assert_exact(kind: str, images, what: str):
    got = hash_to_hex(OURS[kind](images, device="cpu"))
    ref = reference_hex(kind, images)
    bad = [i for i, (x, y) in enumerate(zip(got, ref)) if x != y]
    assert not bad, (
        f"{kind} {what}: {len(bad)}/{len(images)} differ, first {bad[:5]}: {[(got[i], ref[i]) for i in bad[:3]]}"
    )


def photo_like_gray(rng, h, w):
    yy, xx = np.mgrid[0:h, 0:w]
    base = 128 + 60 * np.sin(xx / rng.uniform(3, 30)) * np.cos(yy / rng.uniform(3, 30)) + rng.normal(0, 20, (h, w))
    return np.clip(base, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("kind", sorted(OURS))
def test_photos_exact(photos_rgb, kind):
    images = []
    for rgb in photos_rgb:
        images += [
            rgb,
            np.asarray(Image.fromarray(rgb).convert("L")),
            np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)]),  # RGBA: alpha ignored by convert("L")
            np.ascontiguousarray(rgb[7:-3:2, 5:]),
        ]  # odd-size crop, strided rows
    assert_exact(kind, images, "photos")


@pytest.mark.parametrize("kind", sorted(OURS))
def test_random_and_textured_images_exact(kind):
    rng = np.random.default_rng(sorted(OURS).index(kind))
    images = []
    for i in range(150):
        h, w = (int(v) for v in rng.integers(3, 200, 2))
        if i % 3 == 0:
            images.append(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))  # noise
        elif i % 3 == 1:
            images.append(photo_like_gray(rng, h, w))  # smooth texture
        else:
            images.append(g.photo_like(h, w, seed=i))  # gradients + noise, RGB
    images += [rng.integers(0, 256, (h, w, 2), dtype=np.uint8) for h, w in [(17, 40), (64, 9)]]  # LA
    assert_exact(kind, images, "random/textured")


def test_hash_steps_on_small_gray_match_the_full_pipeline(photos_rgb):
    """The hash-only entry (for GPU parity) on imagehash's own resized pixels gives the same code."""
    C = native()

    def small(im, size, kind):
        return f"{C.hash_gray_small(np.asarray(im.resize(size, Image.Resampling.LANCZOS)), kind):016x}"

    for rgb in photos_rgb[:4]:
        im = Image.fromarray(rgb).convert("L")
        assert small(im, (32, 32), "phash") == str(imagehash.phash(im))
        assert small(im, (9, 8), "dhash") == str(imagehash.dhash(im))
        assert small(im, (8, 8), "ahash") == str(imagehash.average_hash(im))
        n = max(2 ** int(np.log2(min(im.size))), 8)
        assert small(im, (n, n), "whash") == str(imagehash.whash(im))


# ------------------------------------------------------------------------------------------------ ties


def tie_prone_images() -> list[np.ndarray]:
    x = np.linspace(0, 255, 96).astype(np.uint8)
    sym = (np.abs(np.arange(-40, 41))[None, :] * 3 + np.abs(np.arange(-30, 31))[:, None] * 2).astype(np.uint8)
    images = [np.full((64, 80), v, np.uint8) for v in (0, 1, 37, 128, 254, 255)]
    images += [
        np.full((33, 47, 3), (10, 200, 30), np.uint8),
        np.tile(x, (64, 1)),
        sym,
        np.tile(np.concatenate([x, x[::-1]]), (70, 1)),
        np.tile(x, (64, 1)).T.copy(),
    ]
    return images


def test_phash_ties_differ_only_at_the_median():
    """Where scipy's DCT and ours disagree by rounding, the disagreeing coefficient ties the median."""
    images = tie_prone_images()
    got = phash(images, device="cpu")
    for a, code in zip(images, got):
        small = np.asarray(to_pil(a).convert("L").resize((32, 32), Image.Resampling.LANCZOS))
        coefs = scipy.fftpack.dct(scipy.fftpack.dct(small, axis=0), axis=1)[:8, :8].ravel()
        med = np.median(coefs)
        ref_bits = coefs > med
        our_bits = np.array([(int(code) >> (63 - i)) & 1 for i in range(64)], bool)
        tol = 1e-9 * max(np.abs(coefs).max(), 1.0)
        for i in np.flatnonzero(ref_bits != our_bits):
            assert abs(coefs[i] - med) <= tol, f"bit {i}: coefficient {coefs[i]} is not a tie with median {med}"
    # and the exact comparisons still hold for the hashes with integer / replicated arithmetic
    for kind in ("dhash", "ahash", "whash"):
        assert_exact(kind, images, "tie-prone")


def test_ties_are_deterministic():
    flat = [np.full((50, 70, 3), 77, np.uint8)] * 6
    for kind, fn in OURS.items():
        codes = {int(c) for c in fn(flat, device="cpu", num_threads=3)}
        codes |= {int(c) for c in fn(flat[:1], device="cpu", num_threads=1)}
        assert len(codes) == 1, kind


# -------------------------------------------------------------------------------------- fused from bytes


def photo_blobs(photos_rgb) -> list[bytes]:
    blobs = []
    for rgb in photos_rgb:
        for q in (50, 75, 90, 95):
            blobs.append(g.save(Image.fromarray(rgb), "JPEG", quality=q))
    return blobs


def test_phash_bytes_exact_matches_imagehash_on_jpeg_and_png(photos_rgb):
    blobs = photo_blobs(photos_rgb)
    for rgb in photos_rgb:
        blobs += [
            g.save(Image.fromarray(rgb), "PNG"),
            g.save(Image.fromarray(rgb).convert("L"), "JPEG", quality=85),
            g.save(Image.fromarray(np.dstack([rgb, rgb[..., 1]])), "PNG"),
        ]
    codes, status = phash_bytes(blobs, exact=True, exif=False, device="cpu")
    assert (status == Status.ok).all()
    ref = [str(imagehash.phash(Image.open(io.BytesIO(b)))) for b in blobs]
    assert hash_to_hex(codes) == ref


def test_phash_bytes_applies_exif_orientation_like_exif_transpose(photos_rgb):
    rgb = np.ascontiguousarray(photos_rgb[0][:200, :160])
    blobs = [g.with_orientation(rgb, "JPEG", k, quality=90) for k in range(1, 9)]
    on, _ = phash_bytes(blobs, exact=True, exif=True, device="cpu")
    off, _ = phash_bytes(blobs, exact=True, exif=False, device="cpu")
    assert hash_to_hex(on) == [str(imagehash.phash(ImageOps.exif_transpose(Image.open(io.BytesIO(b))))) for b in blobs]
    assert hash_to_hex(off) == [str(imagehash.phash(Image.open(io.BytesIO(b)))) for b in blobs]
    assert len(set(hash_to_hex(on))) > 1  # orientations really change the hash


def test_phash_bytes_fast_is_close_to_exact(photos_rgb):
    blobs = photo_blobs(photos_rgb)
    exact, _ = phash_bytes(blobs, exact=True, exif=False, device="cpu")
    fast, status = phash_bytes(blobs, exact=False, exif=False, device="cpu")
    assert (status == Status.ok).all()
    dist = np.array([bin(int(a) ^ int(b)).count("1") for a, b in zip(exact, fast)])
    assert dist.mean() <= FAST_MEAN_BOUND and dist.max() <= FAST_MAX_BOUND, np.bincount(dist)
    # PNG (no DCT scaling) is hashed exactly in fast mode too
    png = [g.save(Image.fromarray(p), "PNG") for p in photos_rgb[:3]]
    np.testing.assert_array_equal(
        phash_bytes(png, exact=False, device="cpu").codes, phash_bytes(png, exact=True, device="cpu").codes
    )


def test_phash_bytes_bad_samples_get_statuses(photos_rgb):
    good = g.save(Image.fromarray(photos_rgb[0]), "JPEG", quality=90)
    blobs = [good, b"", b"not an image at all", good[: len(good) // 3], None, good]
    res = phash_bytes(blobs, device="cpu")
    assert isinstance(res, PhashBytesResult)
    codes, status = res
    assert codes.dtype == np.uint64 and status.dtype == np.int8 and codes.shape == status.shape == (6,)
    assert status[0] == status[5] == Status.ok and codes[0] == codes[5] != 0
    assert status[1] == Status.empty and status[4] == Status.empty
    assert status[2] == Status.unsupported
    assert status[3] in (Status.truncated, Status.corrupt)
    assert all(codes[i] == 0 and res.errors[i] for i in (1, 2, 4))
    assert res.errors[0] is None
    assert hash_to_hex(codes[:1]) == [str(imagehash.phash(Image.open(io.BytesIO(good))))]


# --------------------------------------------------------------------------------------------- contract


def test_contract():
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (5, 40, 30, 3), dtype=np.uint8)
    for fn in OURS.values():
        out = fn(batch, device="cpu")
        assert out.dtype == np.uint64 and out.shape == (5,)
        np.testing.assert_array_equal(out, fn(list(batch), device="cpu", num_threads=1))
        assert fn([], device="cpu").shape == (0,)
    assert hash_to_hex(np.array([0, 1, 2**64 - 1], np.uint64)) == [
        "0000000000000000",
        "0000000000000001",
        "ffffffffffffffff",
    ]


def test_misuse_raises():
    a = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(TypeError, match="uint8"):
        phash([a.astype(np.int16)], device="cpu")
    with pytest.raises(ValueError, match="channels"):
        phash([np.zeros((4, 4, 5), np.uint8)], device="cpu")
    with pytest.raises(ValueError):
        phash([a], device="gpu")
    with pytest.raises(ValueError):
        native().hash_images([a], "md5")
    with pytest.raises(TypeError, match="sequence"):
        phash_bytes(b"\xff\xd8", device="cpu")
    with pytest.raises(TypeError):
        hash_to_hex(np.array([0.5]))
