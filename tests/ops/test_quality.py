"""Image-quality signals (mmcurate.ops.quality): the native kernel against the NumPy reference on the same pixels,
the fused decode (phash_bytes(quality=True)) against the kernel on decoded pixels, codes unchanged by the option,
and the low-information flag on generated blank / placeholder / letterboxed images vs real photos."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw
from skimage import data

from conftest import cpu_and_cuda
from mmcurate.ops import decode_images, image_quality, phash_bytes
from mmcurate.ops.quality import QUALITY_COLUMNS, QUALITY_SIGNALS
from mmcurate.ops.quality_reference import canonical, image_quality_reference
from mmcurate.sample_data import build_sample

# The reference's stated tolerances (mmcurate/ops/quality_reference.py): float32 planes vs float64 ones.
RTOL = {"brightness": 1e-3, "contrast": 1e-3, "colourfulness": 1e-3, "sharpness": 1e-3}
ATOL = {"brightness": 1e-3, "contrast": 1e-3, "colourfulness": 1e-3, "sharpness": 1e-2}
ENTROPY_ATOL = 0.02
FRACTION_ATOL = 1 / 64


def encode(a: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format=fmt, **kw)
    return buf.getvalue()


def assert_matches_reference(q, i: int, ref: dict) -> None:
    for name in RTOL:
        np.testing.assert_allclose(getattr(q, name)[i], ref[name], rtol=RTOL[name], atol=ATOL[name], err_msg=name)
    assert abs(q.entropy[i] - ref["entropy"]) <= ENTROPY_ATOL
    assert abs(q.flat_fraction[i] - ref["flat_fraction"]) <= FRACTION_ATOL
    assert abs(q.border_fraction[i] - ref["border_fraction"]) <= FRACTION_ATOL
    assert q.low_information[i] == ref["low_information"]


def letterboxed(photo: np.ndarray, content: float, bar: int = 0) -> np.ndarray:
    """photo squeezed to `content` of the height and padded with bars (img2dataset's resize_mode=border)."""
    side = 256
    h = int(round(side * content))
    inner = np.asarray(Image.fromarray(photo).resize((side, h), Image.BILINEAR))
    out = np.full((side, side, 3), bar, np.uint8)
    top = (side - h) // 2
    out[top : top + h] = inner
    return out


def placeholder(text: str = "No image available") -> np.ndarray:
    img = Image.new("RGB", (300, 300), (228, 228, 228))
    draw = ImageDraw.Draw(img)
    draw.rectangle((110, 80, 190, 140), outline=(150, 150, 150), width=3)
    draw.text((70, 170), text, fill=(120, 120, 120))
    return np.asarray(img)


def star_on_black() -> np.ndarray:
    img = Image.new("RGB", (256, 256), (0, 0, 0))
    pts = [(128 + r * np.cos(a), 128 + r * np.sin(a)) for k in range(10) for a, r in [(k * np.pi / 5, (50, 20)[k % 2])]]
    ImageDraw.Draw(img).polygon(pts, fill=(230, 20, 20))
    return np.asarray(img)


@pytest.fixture(scope="module")
def photos() -> dict:
    return {"astronaut": data.astronaut(), "coffee": data.coffee(), "camera": data.camera(), "chelsea": data.chelsea()}


def test_kernel_matches_the_numpy_reference(photos):
    rng = np.random.default_rng(0)
    rgba = np.dstack([photos["coffee"], np.full(photos["coffee"].shape[:2], 7, np.uint8)])
    la = np.dstack([photos["camera"], np.zeros_like(photos["camera"])])
    images = [
        *photos.values(),
        photos["astronaut"][13:110, 5:208],  # odd sizes: fractional cell footprints
        rng.integers(0, 256, (40, 23, 3), dtype=np.uint8),  # smaller than the canonical grid: upsampled cells
        rng.integers(0, 256, (1, 1, 3), dtype=np.uint8),  # degenerate sizes: every cell one pixel's fraction
        rng.integers(0, 256, (1, 300), dtype=np.uint8),
        rng.integers(0, 256, (700, 3, 4), dtype=np.uint8),
        rgba,
        la,
        np.full((90, 70), 200, np.uint8),
        letterboxed(photos["chelsea"], 0.2),
        placeholder(),
    ]
    q = image_quality(images, device="cpu")
    assert len(q) == len(images)
    for name in QUALITY_SIGNALS:
        assert getattr(q, name).dtype == np.float32 and getattr(q, name).shape == (len(images),)
    assert q.low_information.dtype == bool
    for i, im in enumerate(images):
        assert_matches_reference(q, i, image_quality_reference(im))


def test_integer_cell_sums_equal_the_float_cells(photos):
    """Small contiguous images take the integer cell sums, others quality_cell's float sums (the CUDA twin's
    arithmetic): the same cell means, so the same signals, bit for bit. A channel view of an RGBA array (pixel
    stride 4) forces the float path on the same pixels."""
    rng = np.random.default_rng(3)
    images = [
        np.asarray(Image.fromarray(photos["astronaut"]).resize((125, 94), Image.BILINEAR)),
        np.asarray(Image.fromarray(photos["coffee"]).resize((63, 47), Image.BILINEAR)),
        rng.integers(0, 256, (200, 256, 3), dtype=np.uint8),  # > 4 taps per cell on neither axis, 3 on both
        rng.integers(0, 256, (40, 23, 3), dtype=np.uint8),
        rng.integers(0, 256, (3, 250, 3), dtype=np.uint8),
        np.full((77, 91, 3), 200, np.uint8),
    ]
    for im in images:
        rgba = np.concatenate([im, np.full(im.shape[:2] + (1,), 255, np.uint8)], axis=2)
        fast, slow = image_quality([im], device="cpu"), image_quality([rgba[:, :, :3]], device="cpu")
        for name in QUALITY_SIGNALS:
            assert getattr(fast, name)[0] == getattr(slow, name)[0], (im.shape, name)


def test_reference_definitions_on_known_images():
    """The reference itself, on images whose signals are known in closed form."""
    flat = np.full((128, 96, 3), (10, 200, 30), np.uint8)
    r = image_quality_reference(flat)
    assert r["sharpness"] < 1e-9 and r["contrast"] < 1e-6 and r["entropy"] == 0
    assert r["flat_fraction"] == 1 and r["border_fraction"] == 1 and r["low_information"]
    assert r["colourfulness"] == pytest.approx(0.3 * np.hypot(10 - 200, 0.5 * 210 - 30))
    halves = np.zeros((64, 64), np.uint8)
    halves[:, 32:] = 255
    r = image_quality_reference(halves)
    assert r["brightness"] == pytest.approx(127.5) and r["contrast"] == pytest.approx(127.5)
    assert r["entropy"] == pytest.approx(1.0)  # two equally likely levels
    lum, _, _ = canonical(halves)
    assert lum.shape == (64, 64)
    bars = np.zeros((256, 256), np.uint8)
    bars[64:192] = np.random.default_rng(1).integers(0, 256, (128, 256))
    assert image_quality_reference(bars)["border_fraction"] == pytest.approx(0.5)


def test_fused_decode_equals_the_kernel_on_the_decoded_pixels(photos):
    """PNG: the fused call decodes RGB at full size, so its signals are image_quality's on those pixels exactly."""
    blobs = [encode(photos["astronaut"]), encode(photos["camera"]), encode(placeholder())]
    fused = phash_bytes(blobs, exact=False, quality=True, device="cpu").quality
    decoded = decode_images(blobs, mode="RGB", device="cpu").images
    direct = image_quality(decoded, device="cpu")
    for name in QUALITY_COLUMNS:
        np.testing.assert_array_equal(getattr(fused, name), getattr(direct, name), err_msg=name)


def test_fused_jpeg_signals_come_from_the_reduced_ycbcr_decode(photos):
    """JPEG, fast mode: Y, Cb, Cr at the reduced DCT scale. Against the RGB decode of the same scale (which
    rounds and clamps each channel) the luma signals agree closely, the colour ones within the rounding."""
    blobs = [encode(photos["astronaut"], "JPEG", quality=92), encode(photos["coffee"], "JPEG", quality=92)]
    fused = phash_bytes(blobs, exact=False, quality=True, device="cpu").quality
    rgb = decode_images(blobs, mode="RGB", target_size=64, fast=True, device="cpu").images
    assert all(min(im.shape[:2]) < 200 for im in rgb)  # the reduced scale, not the full size
    for i, im in enumerate(rgb):
        ref = image_quality_reference(im)
        assert abs(fused.brightness[i] - ref["brightness"]) < 1.0
        assert fused.contrast[i] == pytest.approx(ref["contrast"], rel=0.02)
        assert fused.sharpness[i] == pytest.approx(ref["sharpness"], rel=0.05)
        assert fused.colourfulness[i] == pytest.approx(ref["colourfulness"], rel=0.03)
        assert abs(fused.entropy[i] - ref["entropy"]) < 0.1


def test_signals_agree_across_formats_and_sizes(photos):
    """The canonical grid makes a JPEG decoded at 2/8 scale and a PNG decoded at full size comparable: within 1-3 %,
    sharpness within 25 % (the scaled IDCT's softer low-pass; benchmarks/README.md, "Image quality")."""
    a = photos["chelsea"]
    blobs = [encode(a, "PNG"), encode(a, "JPEG", quality=95), encode(a, "WEBP", lossless=True)]
    q = phash_bytes(blobs, exact=False, quality=True, device="cpu").quality
    for name, rel in (("brightness", 0.01), ("contrast", 0.03), ("colourfulness", 0.03), ("sharpness", 0.25)):
        v = getattr(q, name)
        assert np.ptp(v) <= rel * np.abs(v).max(), (name, v)
    assert np.ptp(q.entropy) < 0.05


def test_quality_option_leaves_codes_and_statuses_unchanged():
    sample = build_sample(max_photos=3)
    blobs = [s.data for s in sample]
    gray_jpeg = encode(data.camera(), "JPEG", quality=85)
    cmyk = io.BytesIO()
    Image.fromarray(data.coffee()).convert("CMYK").save(cmyk, format="JPEG")
    blobs += [gray_jpeg, cmyk.getvalue(), encode(data.coffee(), "WEBP"), encode(data.camera())]
    for exact in (False, True):
        plain = phash_bytes(blobs, exact=exact, device="cpu")
        with_q = phash_bytes(blobs, exact=exact, quality=True, device="cpu")
        np.testing.assert_array_equal(plain.codes, with_q.codes)
        np.testing.assert_array_equal(plain.status, with_q.status)
        assert plain.quality is None and len(with_q.quality) == len(blobs)
        failed = np.asarray(with_q.status) != 0
        assert failed.any() and (with_q.quality.sharpness[failed] == 0).all()
    # the gray JPEG has no chroma, the CMYK one has colour
    assert with_q.quality.colourfulness[-4] == 0 and with_q.quality.colourfulness[-3] > 10


def test_low_information_flag(photos):
    flagged = {
        "black": np.zeros((200, 300, 3), np.uint8),
        "white": np.full((256, 256, 3), 255, np.uint8),
        "near_uniform": np.random.default_rng(0).integers(120, 123, (256, 256, 3), dtype=np.uint8),
        "placeholder": placeholder(),
        "star_on_black": star_on_black(),
        "letterboxed_15pc": letterboxed(photos["coffee"], 0.15),
        "letterboxed_white_15pc": letterboxed(photos["astronaut"], 0.15, bar=255),
    }
    kept = {**photos, "letterboxed_16_9": letterboxed(photos["coffee"], 9 / 16)}
    blobs = [encode(a, "JPEG", quality=90) for a in (*flagged.values(), *kept.values())]
    q = phash_bytes(blobs, exact=False, quality=True, device="cpu").quality
    n = len(flagged)
    assert q.low_information[:n].all(), dict(zip(flagged, q.low_information[:n]))
    assert not q.low_information[n:].any(), dict(zip(kept, q.low_information[n:]))
    lb = q.border_fraction[list(kept).index("letterboxed_16_9") + n]
    assert 0.35 < lb < 0.5  # 16:9 content in a square: 44 % of the area is bars
    assert q.border_fraction[list(flagged).index("letterboxed_15pc")] > 0.75


def test_inputs_and_errors():
    q = image_quality([], device="cpu")
    assert len(q) == 0 and q.sharpness.dtype == np.float32
    with pytest.raises(TypeError):
        image_quality([np.zeros((8, 8), np.float32)], device="cpu")
    with pytest.raises(ValueError, match="CPU"):
        phash_bytes([b""], quality=True, device="cuda")


@cpu_and_cuda()
def test_devices_agree(device, photos):
    """The CUDA twin runs the same helpers: planes bit for bit, statistics up to the device's log2/sqrt."""
    images = [*photos.values(), placeholder(), np.full((50, 70, 3), 9, np.uint8)]
    cpu = image_quality(images, device="cpu")
    other = image_quality(images, device=device)
    for name in QUALITY_SIGNALS:
        np.testing.assert_allclose(getattr(other, name), getattr(cpu, name), rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(other.low_information, cpu.low_information)
