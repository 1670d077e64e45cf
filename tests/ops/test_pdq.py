"""PDQ-256: bit-exact against pdqhash 0.2.8 (Meta's C++ reference behind a Cython binding) on the same RGB
pixels, dihedral variants and quality included; the code layout; the fused decode path from bytes (exact
mode equal to the oracle on Pillow's pixels, fast mode's measured distance, statuses); the GPU twin."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

import data_gen as g
from conftest import CUDA_AVAILABLE, cpu_and_cuda
from mmcurate.ops import Status
from mmcurate.ops.pdq256 import PdqBytesResult, PdqResult, pdq, pdq_bytes, pdq_to_hex

pdqhash = pytest.importorskip("pdqhash")

# Fast (Y plane, fast IDCT, DCT scale keeping sides >= 128) vs exact on the sample photos as JPEG q50..q95,
# measured: mean 23 bits of 256, max 44 (at full scale the Y plane alone gives mean 0.9, max 4). PDQ's
# 64 x 64 downsample follows the decoded size (window ceil(side / 128)), so a reduced decode moves
# near-median coefficients; the bounds leave room for other libjpeg-turbo builds.
FAST_MEAN_BOUND, FAST_MAX_BOUND = 32.0, 64


def rgb_of(a: np.ndarray) -> np.ndarray:
    """The pixels pdqhash is given: RGB(A) as is (it reads channels 0..2), gray replicated to R = G = B."""
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[2] <= 2:
        a = np.repeat(a[..., :1], 3, axis=2)
    return np.ascontiguousarray(a)


def assert_exact(images, what: str) -> int:
    """pdq and pdq(dihedral=True) against compute and compute_dihedral; returns the number of bits compared."""
    codes, quality = pdq(images, device="cpu")
    dcodes, dquality = pdq(images, dihedral=True, device="cpu")
    bad = []
    for i, a in enumerate(images):
        rgb = rgb_of(a)
        bits, q = pdqhash.compute(rgb)
        dbits, dq = pdqhash.compute_dihedral(rgb)
        ok = np.array_equal(np.unpackbits(codes[i]), bits) and quality[i] == q and dquality[i] == dq
        ok = ok and all(np.array_equal(np.unpackbits(dcodes[i, k]), dbits[k]) for k in range(8))
        if not ok:
            bad.append((i, a.shape))
    assert not bad, f"{what}: {len(bad)}/{len(images)} differ, first {bad[:5]}"
    return len(images) * 256 * 9


def photo_variants(photos_rgb) -> list[np.ndarray]:
    images = []
    for rgb in photos_rgb:
        images += [
            rgb,
            np.asarray(Image.fromarray(rgb).convert("L")),
            np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)]),  # RGBA: alpha ignored
            rgb[7:-3:2, 5:],  # odd-size crop, strided rows
            np.ascontiguousarray(rgb[:, ::-1].transpose(1, 0, 2)),  # a real rotation
        ]
    return images


# ------------------------------------------------------------------------------------------- exactness


def test_photos_exact(photos_rgb):
    assert_exact(photo_variants(photos_rgb), "photos")


def test_random_sizes_tiny_and_extreme_aspect_exact():
    rng = np.random.default_rng(16)
    images = []
    for i in range(120):
        h, w = (int(v) for v in rng.integers(1, 300, 2))
        if i % 3 == 0:
            images.append(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        elif i % 3 == 1:
            images.append(g.photo_like(h, w, seed=i))
        else:
            images.append(rng.integers(0, 256, (h, w), dtype=np.uint8))  # gray
    for h, w in [(1, 1), (4, 100), (100, 4), (5, 5), (5, 7), (63, 64), (64, 64), (64, 65), (128, 128), (3, 2000)]:
        images.append(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    for h, w in [(6, 1500), (1500, 6), (2000, 13), (129, 257)]:
        images.append(g.photo_like(h, w, seed=h))
    images += [rng.integers(0, 256, (h, w, 2), dtype=np.uint8) for h, w in [(17, 40), (70, 9)]]  # LA
    images += [np.full((40, 50, 3), v, np.uint8) for v in (0, 77, 255)]  # flat: every coefficient ties
    assert_exact(images, "random/tiny/extreme")


def test_small_images_get_the_zero_code_and_quality_0():
    codes, quality = pdq([np.full((4, 300, 3), 90, np.uint8), np.zeros((300, 1), np.uint8)], device="cpu")
    assert not codes.any() and not quality.any()


def test_64x64_reference_quirk_is_reproduced():
    """pdqhash.compute takes a 64 x 64 image unfiltered, compute_dihedral filters it with window-1 boxes,
    whose running sums ((s + x1) - x0) can move a value by an ulp: each path is matched on its own."""
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(20)]
    images += [g.photo_like(64, 64, seed=s) for s in range(20)]
    assert_exact(images, "64x64")


# ---------------------------------------------------------------------------------------------- layout


def test_layout_bit_k_is_coefficient_k(photos_rgb):
    """Byte b bit p (LSB 0) is DCT coefficient 8 (31 - b) + p, i.e. unpackbits gives coefficients 255 .. 0:
    checked against pdqhash.compute_float (its coefficients in that same reversed order)."""
    for rgb in photos_rgb[:4]:
        coefs, _ = pdqhash.compute_float(rgb)
        median = np.sort(coefs)[127]  # Torben's median of 256 values: the lower middle one
        code = pdq([rgb], device="cpu").codes[0]
        np.testing.assert_array_equal(np.unpackbits(code), (coefs > median).astype(np.uint8))
        assert pdq_to_hex(code) == [code.tobytes().hex()]
        big = int.from_bytes(code.tobytes(), "big")
        assert all(((big >> k) & 1) == (coefs[255 - k] > median) for k in range(256))


def test_dihedral_variants_are_the_codes_of_the_transformed_images(photos_rgb):
    """The DCT-domain variants approximate hashing the rotated / flipped pixels (not bit-exact: the
    decimation grid is not symmetric), in compute_dihedral's order."""
    rgb = photos_rgb[0]
    transforms = [
        rgb,
        np.rot90(rgb, 1),
        np.rot90(rgb, 2),
        np.rot90(rgb, 3),
        rgb[::-1],
        rgb[:, ::-1],
        rgb.transpose(1, 0, 2),
        np.rot90(rgb, 2).transpose(1, 0, 2),
    ]
    variants = pdq([rgb], dihedral=True, device="cpu").codes[0]
    direct = pdq([np.ascontiguousarray(t) for t in transforms], device="cpu").codes
    dist = np.unpackbits(variants ^ direct, axis=1).sum(1)
    assert dist.max() <= 40, dist
    assert len({v.tobytes() for v in variants}) == 8


# -------------------------------------------------------------------------------------- fused from bytes


def reference_bytes(blob: bytes, exif: bool):
    im = Image.open(io.BytesIO(blob))
    if exif:
        im = ImageOps.exif_transpose(im)
    return pdqhash.compute(np.asarray(im.convert("RGB")))


def assert_bytes_exact(blobs, exif: bool, dihedral: bool = False):
    res = pdq_bytes(blobs, exact=True, exif=exif, dihedral=dihedral, device="cpu")
    assert (res.status == Status.ok).all(), res.errors
    for i, b in enumerate(blobs):
        if dihedral:
            im = Image.open(io.BytesIO(b))
            bits, q = pdqhash.compute_dihedral(np.asarray((ImageOps.exif_transpose(im) if exif else im).convert("RGB")))
            assert all(np.array_equal(np.unpackbits(res.codes[i, k]), bits[k]) for k in range(8)), i
        else:
            bits, q = reference_bytes(b, exif)
            assert np.array_equal(np.unpackbits(res.codes[i]), bits), i
        assert res.quality[i] == q, i


def test_pdq_bytes_exact_matches_pdqhash_on_pillows_pixels(photos_rgb):
    blobs = []
    for rgb in photos_rgb:
        im = Image.fromarray(rgb)
        blobs += [g.save(im, "JPEG", quality=q) for q in (50, 90)]
        blobs += [g.save(im, "PNG"), g.save(im.convert("L"), "JPEG", quality=85), g.save(im, "WEBP", quality=80)]
        blobs.append(g.save(Image.fromarray(np.dstack([rgb, rgb[..., 1]])), "PNG"))  # RGBA: alpha dropped
    blobs += list(g.jpeg_variants(photos_rgb[1]).values())  # progressive, subsamplings, gray, CMYK
    assert_bytes_exact(blobs, exif=False)
    assert_bytes_exact(blobs[:6], exif=False, dihedral=True)


@pytest.mark.filterwarnings("ignore:Palette images with Transparency")
def test_pdq_bytes_exact_on_every_png_and_jpeg_layout():
    """16-bit, palette, bilevel, 2/4-bit gray, interlaced, LA/RGBA PNGs, CMYK and gray JPEGs: PDQ equals the
    oracle on Pillow's convert("RGB"), and the fused pHash equals phash_bytes."""
    from mmcurate.ops import phash_bytes

    rgb = g.photo_like(120, 90, seed=1)
    blobs = list({**g.png_variants(rgb), **g.jpeg_variants(rgb)}.values())
    assert_bytes_exact(blobs, exif=False)
    both = pdq_bytes(blobs, exif=False, phash=True, device="cpu")
    np.testing.assert_array_equal(both.phash, phash_bytes(blobs, exif=False, device="cpu").codes)


def test_one_decode_gives_phash_and_pdq(photos_rgb):
    """phash=True: the pHash of the same decoded pixels, equal to phash_bytes' (and so imagehash's) in exact
    mode; the PDQ codes are unchanged by asking for it."""
    from mmcurate.ops import phash_bytes

    blobs = [g.save(Image.fromarray(rgb), "JPEG", quality=85) for rgb in photos_rgb]
    blobs += [g.save(Image.fromarray(photos_rgb[2]), "PNG"), g.save(Image.fromarray(photos_rgb[3]).convert("L"), "PNG")]
    blobs += [g.with_orientation(photos_rgb[0][:200, :160].copy(), "JPEG", 6, quality=90), b"broken"]
    both = pdq_bytes(blobs, phash=True, device="cpu")
    alone = pdq_bytes(blobs, device="cpu")
    ref = phash_bytes(blobs, exact=True, device="cpu")
    assert alone.phash is None and both.phash.dtype == np.uint64
    np.testing.assert_array_equal(both.phash, ref.codes)
    np.testing.assert_array_equal(both.codes, alone.codes)
    np.testing.assert_array_equal(both.status, ref.status)
    assert both.status[-1] != Status.ok and both.phash[-1] == 0


@pytest.mark.filterwarnings("ignore:Palette images with Transparency")
def test_pdq_bytes_pixel_variants_and_detail_equal_their_oracles(photos_rgb):
    """dihedral="pixels": the 8 codes and pHashes are pdq / phash of the 8 transformed pixel arrays
    (reference.dihedral of the decode: what decontamination's index holds), the identity ones equal the plain
    call's; detail=True: local_detail.detail_grid of the decode, to within 1 (a cell rounding at .5). Odd sizes,
    gray, RGBA, 64 x 64 (the reference quirk, per transform) and tiny images included."""
    from mmcurate.curate.local_detail import detail_grid
    from mmcurate.ops import decode_images, phash
    from mmcurate.reference import dihedral

    rgb = g.photo_like(121, 87, seed=2)
    blobs = [g.save(Image.fromarray(photos_rgb[0][:211, :157]), "JPEG", quality=90)]
    blobs += [g.save(Image.fromarray(rgb).convert("L"), "PNG"), g.save(Image.fromarray(rgb).convert("RGBA"), "PNG")]
    blobs += [g.save(Image.fromarray(rgb[:64, :64]), "PNG"), g.save(Image.fromarray(rgb[:9, :4]), "PNG"), b"broken"]
    got = pdq_bytes(blobs, dihedral="pixels", phash=True, detail=True, device="cpu")
    plain = pdq_bytes(blobs, phash=True, device="cpu")
    assert got.codes.shape == (len(blobs), 8, 32) and got.phash.shape == (len(blobs), 8)
    assert got.detail.shape == (len(blobs), 512) and got.detail.dtype == np.uint8
    np.testing.assert_array_equal(got.codes[:, 0], plain.codes)
    np.testing.assert_array_equal(got.phash[:, 0], plain.phash)
    np.testing.assert_array_equal(got.quality, plain.quality)
    decoded = decode_images(blobs, mode="RGB", device="cpu")
    for i, pixels in enumerate(decoded.images[:-1]):
        variants = dihedral(pixels)
        np.testing.assert_array_equal(got.codes[i], pdq(variants, device="cpu").codes, err_msg=f"blob {i}")
        np.testing.assert_array_equal(got.phash[i], phash(variants, device="cpu"), err_msg=f"blob {i}")
        diff = np.abs(got.detail[i].astype(int) - detail_grid(pixels))
        assert diff.max() <= 1 and np.count_nonzero(diff) <= 4, f"blob {i}"
    assert got.status[-1] != Status.ok and not got.codes[-1].any() and not got.detail[-1].any()
    assert pdq_bytes(blobs, detail=True, device="cpu").phash is None
    with pytest.raises(ValueError, match="dihedral"):
        pdq_bytes(blobs, dihedral="dct")


@pytest.mark.parametrize("side", [256, 40])
def test_pdq_bytes_luma_thumbnail_equals_its_oracle(photos_rgb, side):
    """luma_side: each decode's PDQ luma area-averaged to a longer side <= side (never enlarged), the keypoint pass's
    input from the same decode: curate.keypoints.luma_thumbnail_reference of the decoded pixels, to within 1 (a
    value rounding at .5); the same codes as without it; None where decoding failed; off by default."""
    from mmcurate.curate.keypoints import luma_thumbnail_reference
    from mmcurate.ops import decode_images

    rgb = g.photo_like(121, 87, seed=2)
    blobs = [g.save(Image.fromarray(photos_rgb[0]), "JPEG", quality=90), g.save(Image.fromarray(rgb), "PNG")]
    blobs += [g.save(Image.fromarray(rgb).convert("L"), "PNG"), g.save(Image.fromarray(rgb).convert("RGBA"), "PNG")]
    blobs += [g.save(Image.fromarray(photos_rgb[0][:3, :700]), "PNG"), g.save(Image.fromarray(rgb[:1, :1]), "PNG")]
    blobs += [b"broken"]
    got = pdq_bytes(blobs, phash=True, luma_side=side, device="cpu")
    plain = pdq_bytes(blobs, phash=True, device="cpu")
    assert plain.luma is None
    np.testing.assert_array_equal(got.codes, plain.codes)
    np.testing.assert_array_equal(got.phash, plain.phash)
    decoded = decode_images(blobs, mode="RGB", device="cpu")
    for i, pixels in enumerate(decoded.images[:-1]):
        want = luma_thumbnail_reference(pixels, side)
        assert got.luma[i].dtype == np.uint8 and got.luma[i].shape == want.shape, f"blob {i}"
        assert max(want.shape) <= max(side, 1) and min(want.shape) >= 1
        assert np.abs(got.luma[i].astype(int) - want).max() <= 1, f"blob {i}"
    assert got.luma[-1] is None and got.status[-1] != Status.ok
    assert got.luma[0].shape[1] == side  # a photo larger than side is brought down to it
    with pytest.raises(ValueError, match="luma_side"):
        pdq_bytes(blobs, luma_side=-1)


def test_pdq_bytes_applies_exif_orientation_like_exif_transpose(photos_rgb):
    rgb = np.ascontiguousarray(photos_rgb[0][:200, :160])
    blobs = [g.with_orientation(rgb, "JPEG", k, quality=90) for k in range(1, 9)]
    assert_bytes_exact(blobs, exif=True)
    assert_bytes_exact(blobs, exif=False)
    assert len({c.tobytes() for c in pdq_bytes(blobs, device="cpu").codes}) > 1


def test_pdq_bytes_fast_is_close_to_exact(photos_rgb):
    blobs = [g.save(Image.fromarray(rgb), "JPEG", quality=q) for rgb in photos_rgb for q in (50, 75, 90, 95)]
    exact = pdq_bytes(blobs, exact=True, exif=False, device="cpu")
    fast = pdq_bytes(blobs, exact=False, exif=False, device="cpu")
    assert (fast.status == Status.ok).all()
    dist = np.unpackbits(exact.codes ^ fast.codes, axis=1).sum(1)
    assert dist.mean() <= FAST_MEAN_BOUND and dist.max() <= FAST_MAX_BOUND, np.bincount(dist)
    assert np.abs(exact.quality - fast.quality).max() <= 10
    # PNG (no DCT scaling) is hashed exactly in fast mode too
    png = [g.save(Image.fromarray(p), "PNG") for p in photos_rgb[:3]]
    np.testing.assert_array_equal(
        pdq_bytes(png, exact=False, device="cpu").codes, pdq_bytes(png, exact=True, device="cpu").codes
    )


def test_pdq_bytes_bad_samples_get_statuses(photos_rgb):
    good = g.save(Image.fromarray(photos_rgb[0]), "JPEG", quality=90)
    blobs = [good, b"", b"not an image at all", good[: len(good) // 3], None, good]
    res = pdq_bytes(blobs, device="cpu")
    assert isinstance(res, PdqBytesResult)
    codes, quality, status = res
    assert codes.dtype == np.uint8 and codes.shape == (6, 32)
    assert quality.dtype == np.int32 and status.dtype == np.int8 and quality.shape == status.shape == (6,)
    assert status[0] == status[5] == Status.ok and (codes[0] == codes[5]).all() and codes[0].any()
    assert status[1] == Status.empty and status[4] == Status.empty
    assert status[2] == Status.unsupported
    assert status[3] in (Status.truncated, Status.corrupt)
    assert all(not codes[i].any() and quality[i] == 0 and res.errors[i] for i in (1, 2, 4))
    assert res.errors[0] is None
    bits, q = reference_bytes(good, exif=True)
    assert np.array_equal(np.unpackbits(codes[0]), bits) and quality[0] == q
    too_big = pdq_bytes([good], max_pixels=100, device="cpu")
    assert too_big.status[0] == Status.too_large and not too_big.codes.any()


# --------------------------------------------------------------------------------------------- contract


def test_contract():
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (5, 40, 30, 3), dtype=np.uint8)
    res = pdq(batch, device="cpu")
    assert isinstance(res, PdqResult)
    codes, quality = res
    assert codes.dtype == np.uint8 and codes.shape == (5, 32) and quality.dtype == np.int32 and quality.shape == (5,)
    np.testing.assert_array_equal(codes, pdq(list(batch), device="cpu", num_threads=1).codes)
    d = pdq(batch, dihedral=True, device="cpu", num_threads=3)
    assert d.codes.shape == (5, 8, 32)
    np.testing.assert_array_equal(d.quality, quality)
    assert pdq([], device="cpu").codes.shape == (0, 32)
    assert pdq([], dihedral=True, device="cpu").codes.shape == (0, 8, 32)
    assert pdq_bytes([], device="cpu").codes.shape == (0, 32)
    assert pdq_to_hex(np.zeros((2, 32), np.uint8)) == ["0" * 64] * 2


def test_misuse_raises():
    a = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(TypeError, match="uint8"):
        pdq([a.astype(np.int16)], device="cpu")
    with pytest.raises(ValueError, match="channels"):
        pdq([np.zeros((4, 4, 5), np.uint8)], device="cpu")
    with pytest.raises(ValueError):
        pdq([a], device="gpu")
    with pytest.raises(TypeError, match="sequence"):
        pdq_bytes(b"\xff\xd8", device="cpu")
    with pytest.raises(ValueError, match="fast_min_side"):
        pdq_bytes([b""], fast_min_side=10, device="cpu")
    with pytest.raises(ValueError, match="CPU"):
        pdq_bytes([b""], device="cuda")
    with pytest.raises(TypeError):
        pdq_to_hex(np.zeros((2, 4), np.uint64))
    for bad in ({"max_pixels": 2**70}, {"max_pixels": 1.5}, {"num_threads": 0}, {"fast_min_side": 2**40}):
        with pytest.raises((ValueError, TypeError), match="must"):
            pdq_bytes([b""], device="cpu", **bad)


# ------------------------------------------------------------------------------------------------- GPU


@pytest.mark.skipif(CUDA_AVAILABLE, reason="a GPU is visible")
def test_gpu_entry_point_says_what_to_do_without_gpu():
    from mmcurate._native import native
    from mmcurate.ops import _cuda

    built = bool(native().native_build_info()["cuda"])
    expected = "no CUDA device" if built else "rebuild with nvcc on PATH and MMCURATE_CUDA=1"
    with pytest.raises(RuntimeError, match=expected):
        _cuda.pdq_images([np.zeros((8, 8, 3), np.uint8)])


@cpu_and_cuda()
def test_devices_agree_bit_for_bit(device, photos_rgb):
    rng = np.random.default_rng(7)
    images = photo_variants(photos_rgb[:3]) + [
        rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(1, 1), (4, 9), (64, 64), (5, 700), (333, 97)]
    ]
    images = [np.ascontiguousarray(a) for a in images]
    for dihedral in (False, True):
        ref = pdq(images, dihedral=dihedral, device="cpu")
        got = pdq(images, dihedral=dihedral, device=device)
        np.testing.assert_array_equal(got.codes, ref.codes)
        np.testing.assert_array_equal(got.quality, ref.quality)
