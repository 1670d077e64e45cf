"""CPU decode: bit-exactness against Pillow, EXIF orientation, DCT scaling, statuses, robustness, API contract."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

import data_gen as g
from mmcurate.ops import Status
from mmcurate.ops.decode import DecodeResult, decode_images, probe_images

# Measured parity with Pillow 13 (bundled libjpeg-turbo 3.2, libwebp 1.6) for the system libraries this
# build links (libjpeg-turbo 2.1.5, libpng 1.6.39, libwebp 1.2.4): identical pixels for every JPEG/PNG/WebP
# variant below, in both modes. The tests hold us to that (max abs diff 0).
MAX_ABS_DIFF = {"jpeg": 0, "png": 0, "webp": 0}


def pillow(blob: bytes, mode: str = "RGB", exif: bool = True) -> np.ndarray:
    im = Image.open(io.BytesIO(blob))
    if exif:
        im = ImageOps.exif_transpose(im)
    a = np.asarray(im.convert(mode))
    return a[..., None] if a.ndim == 2 else a


def decode(blobs, **kw) -> DecodeResult:
    kw.setdefault("device", "cpu")
    return decode_images(blobs, **kw)


def assert_matches_pillow(blobs: dict[str, bytes], fmt: str, modes=("RGB", "L")):
    names = list(blobs)
    for mode in modes:
        res = decode(list(blobs.values()), mode=mode)
        for name, blob, im, st, err in zip(names, blobs.values(), res.images, res.status, res.errors):
            assert st == Status.ok, f"{fmt}/{name}/{mode}: {Status(st).name}: {err}"
            ref = pillow(blob, mode)
            assert im.shape == ref.shape, f"{fmt}/{name}/{mode}"
            diff = int(np.abs(im.astype(np.int16) - ref).max())
            assert diff <= MAX_ABS_DIFF[fmt], f"{fmt}/{name}/{mode}: max abs diff {diff}"
            assert res.formats[names.index(name)] == fmt


def crop(a: np.ndarray, h: int = 120, w: int = 157) -> np.ndarray:
    return np.ascontiguousarray(a[:h, :w])


# ------------------------------------------------------------------------------------------------ parity


def test_jpeg_matches_pillow_on_photos(photos_rgb):
    for i, rgb in enumerate(photos_rgb):
        blobs = {f"photo{i}/{k}": v for k, v in g.jpeg_variants(rgb).items()}
        assert_matches_pillow(blobs, "jpeg")


@pytest.mark.filterwarnings("ignore:Palette images with Transparency")
def test_png_matches_pillow_every_layout(photos_rgb):
    for i, rgb in enumerate(photos_rgb[:4]):
        blobs = {f"photo{i}/{k}": v for k, v in g.png_variants(crop(rgb)).items()}
        assert_matches_pillow(blobs, "png")


def test_png_16bit_gray_is_clipped_like_pillow():
    # Pillow opens 16-bit gray as "I;16" and converts to L/RGB by clipping at 255 (not by the high byte).
    a = np.arange(40 * 30, dtype=np.uint16).reshape(40, 30) * 7
    blob = g.save(Image.fromarray(a), "PNG")
    res = decode([blob], mode="L")
    np.testing.assert_array_equal(res.images[0][..., 0], np.minimum(a, 255).astype(np.uint8))
    np.testing.assert_array_equal(res.images[0], pillow(blob, "L"))


def test_png_16bit_rgb_takes_high_byte():
    rgb16 = np.random.default_rng(1).integers(0, 65536, (9, 11, 3), dtype=np.uint16)
    res = decode([g.write_png(rgb16, color_type=2, bit_depth=16)])
    np.testing.assert_array_equal(res.images[0], (rgb16 >> 8).astype(np.uint8))


def test_webp_matches_pillow(photos_rgb):
    for i, rgb in enumerate(photos_rgb[:5]):
        blobs = {f"photo{i}/{k}": v for k, v in g.webp_variants(crop(rgb, 200, 233)).items()}
        assert_matches_pillow(blobs, "webp")


def test_animated_webp_decodes_first_frame_like_pillow():
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(3)]
    for kw in ({"lossless": True}, {"quality": 70}):
        blob = g.animated_webp(frames, **kw)
        assert Image.open(io.BytesIO(blob)).n_frames == 3
        res = decode([blob])
        assert res.status[0] == Status.ok, res.errors[0]
        np.testing.assert_array_equal(res.images[0], pillow(blob))
    # A frame smaller than the canvas, at an offset: Pillow composes it onto transparent black.
    rgba = [np.dstack([f, np.full(f.shape[:2], 255, np.uint8)]) for f in frames]
    rgba[0][:10] = 0  # transparent top rows make the encoder crop the first frame
    ims = [Image.fromarray(f) for f in rgba]
    blob = g.save(ims[0], "WEBP", save_all=True, append_images=ims[1:], lossless=True, duration=50)
    res = decode([blob])
    np.testing.assert_array_equal(res.images[0], pillow(blob))


@pytest.mark.parametrize("size", [(1, 1), (3, 7), (7, 3), (479, 641), (17, 1)])
def test_odd_sizes_all_formats(size):
    rgb = g.photo_like(*size, seed=size[0])
    blobs = {
        "jpeg420": g.save(Image.fromarray(rgb), "JPEG", quality=90),
        "jpeg_prog": g.save(Image.fromarray(rgb), "JPEG", quality=90, progressive=True),
        "png": g.save(Image.fromarray(rgb), "PNG"),
        "png_interlaced": g.write_png(rgb, color_type=2, bit_depth=8, interlace=True),
        "webp": g.save(Image.fromarray(rgb), "WEBP", quality=90),
        "webp_lossless": g.save(Image.fromarray(rgb), "WEBP", lossless=True),
    }
    res = decode(list(blobs.values()))
    for (name, blob), im, st in zip(blobs.items(), res.images, res.status):
        assert st == Status.ok, name
        assert im.shape == (*size, 3), name
        np.testing.assert_array_equal(im, pillow(blob), err_msg=name)
    np.testing.assert_array_equal(res.source_sizes, np.array([size] * len(blobs), dtype=np.int32))


def test_luma_mode():
    rgb = g.photo_like(64, 80)
    ycc = g.save(Image.fromarray(rgb), "JPEG", quality=90)
    gray = g.save(Image.fromarray(rgb).convert("L"), "JPEG", quality=90)
    png = g.save(Image.fromarray(rgb), "PNG")
    res = decode([ycc, gray, png], mode="luma")
    assert all(im.shape == (64, 80, 1) for im in res.images)
    # The Y plane is not Pillow's L computed from the decoded RGB, but within rounding of it.
    d = np.abs(res.images[0].astype(int) - pillow(ycc, "L"))
    assert d.max() <= 8 and d.mean() < 1.0
    np.testing.assert_array_equal(res.images[1], pillow(gray, "L"))  # gray JPEG: identical
    np.testing.assert_array_equal(res.images[2], pillow(png, "L"))  # non-JPEG: same as "L"


def test_fast_mode_is_close_to_pillow(photos_rgb):
    blob = g.save(Image.fromarray(photos_rgb[0]), "JPEG", quality=90)
    exact = decode([blob]).images[0]
    fast = decode([blob], fast=True).images[0]
    d = np.abs(fast.astype(int) - exact)
    assert fast.shape == exact.shape
    assert 0 < d.mean() < 1.5


# ------------------------------------------------------------------------------------------------ EXIF


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_all_exif_orientations(fmt):
    rgb = g.photo_like(24, 40, seed=5)  # non-square, so side swaps show
    kw = {"quality": 95} if fmt == "JPEG" else ({"lossless": True} if fmt == "WEBP" else {})
    blobs = [g.with_orientation(rgb, fmt, k, **kw) for k in range(1, 9)]
    on = decode(blobs)
    off = decode(blobs, exif=False)
    np.testing.assert_array_equal(on.orientation, np.arange(1, 9, dtype=np.int8))
    np.testing.assert_array_equal(off.orientation, np.arange(1, 9, dtype=np.int8))
    for k, blob in enumerate(blobs, start=1):
        np.testing.assert_array_equal(on.images[k - 1], pillow(blob), err_msg=f"orientation {k}")
        np.testing.assert_array_equal(off.images[k - 1], pillow(blob, exif=False), err_msg=f"orientation {k}")
        assert on.images[k - 1].shape[:2] == ((40, 24) if k >= 5 else (24, 40))
        assert tuple(on.source_sizes[k - 1]) == (24, 40)
    gray = decode(blobs, mode="L")
    for k, blob in enumerate(blobs, start=1):
        np.testing.assert_array_equal(gray.images[k - 1], pillow(blob, "L"))


def test_xmp_orientation_fallback_and_invalid_tags():
    rgb = g.photo_like(16, 24)
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'
    blob = g.save(Image.fromarray(rgb), "JPEG", xmp=xmp)
    bad = g.save(Image.fromarray(rgb), "JPEG", exif=g.exif_bytes(9))  # out of range: ignored by Pillow
    res = decode([blob, bad])
    assert list(res.orientation) == [6, 1]
    np.testing.assert_array_equal(res.images[0], pillow(blob))
    np.testing.assert_array_equal(res.images[1], pillow(bad))


# ------------------------------------------------------------------------------------------------ DCT scaling


def test_dct_scaled_sizes_and_pillow_draft(photos_rgb):
    rgb = photos_rgb[0]  # 512 x 512
    blob = g.save(Image.fromarray(rgb), "JPEG", quality=90)
    for target, expect in [
        (64, 64),
        (100, 128),
        (128, 128),
        (129, 192),
        (256, 256),
        (300, 320),
        (512, 512),
        (1000, 512),
        ((50, 200), 256),
    ]:
        res = decode([blob], target_size=target)
        im = res.images[0]
        assert im.shape == (expect, expect, 3), target
        assert tuple(res.source_sizes[0]) == (512, 512)
        if expect in (64, 128, 256, 512):
            # Pillow's draft() picks the same libjpeg scale: identical pixels.
            ref = Image.open(io.BytesIO(blob))
            ref.draft("RGB", (expect, expect))
            np.testing.assert_array_equal(im, np.asarray(ref.convert("RGB")), err_msg=str(target))
        else:
            # M/8 scales Pillow cannot draft: compare with a box-downscaled full decode.
            ref = np.asarray(Image.fromarray(pillow(blob)).resize((expect, expect), Image.BOX))
            assert np.abs(im.astype(int) - ref).mean() < 3.0, target
    # PNG and WebP ignore the target: full size.
    png = g.save(Image.fromarray(rgb), "PNG")
    assert decode([png], target_size=64).images[0].shape == (512, 512, 3)


def test_dct_scaling_matches_sides_after_rotation():
    rgb = g.photo_like(48, 64)  # stored 64 wide, 48 tall; orientation 6 shows 48 wide, 64 tall
    blob = g.with_orientation(rgb, "JPEG", 6, quality=95)
    res = decode([blob], target_size=(32, 24))  # (h, w) in the displayed orientation
    assert res.images[0].shape == (32, 24, 3)  # scale 4/8 of the stored 64x48, then rotated
    ref = Image.open(io.BytesIO(blob))
    ref.draft("RGB", (32, 24))
    np.testing.assert_array_equal(res.images[0], np.asarray(ImageOps.exif_transpose(ref).convert("RGB")))
    # Without applying the orientation the sides are matched as stored.
    res = decode([blob], target_size=(32, 24), exif=False)
    assert res.images[0].shape == (36, 48, 3)  # 6/8 of 48x64 is the smallest with height >= 32


# ------------------------------------------------------------------------------------------------ statuses


def small_blobs() -> dict[str, bytes]:
    rgb = g.photo_like(40, 52, seed=7)
    im = Image.fromarray(rgb)
    return {
        "jpeg": g.save(im, "JPEG", quality=85),
        "jpeg_prog": g.save(im, "JPEG", quality=85, progressive=True),
        "jpeg_cmyk": g.save(im.convert("CMYK"), "JPEG"),
        "png": g.save(im, "PNG"),
        "png_interlaced": g.write_png(rgb, color_type=2, bit_depth=8, interlace=True),
        "png_palette": g.save(im.quantize(64), "PNG"),
        "webp": g.save(im, "WEBP", quality=80),
        "webp_lossless": g.save(im, "WEBP", lossless=True),
        "webp_alpha": g.save(im.convert("RGBA"), "WEBP", quality=80),
        "webp_anim": g.animated_webp([rgb, rgb[::-1].copy()], lossless=True),
    }


def test_bad_inputs_get_statuses():
    b = small_blobs()
    jpeg, png, webp = b["jpeg"], b["png"], b["webp"]
    cases = {
        "zero": (b"", Status.empty),
        "none": (None, Status.empty),
        "garbage": (b"hello, this is not an image at all", Status.unsupported),
        "gif": (b"GIF89a" + bytes(40), Status.unsupported),
        "jpeg_half": (jpeg[: len(jpeg) // 2], Status.truncated),
        "jpeg_no_eoi": (jpeg[:-2], Status.truncated),
        "jpeg_header_only": (jpeg[:200], Status.truncated),
        "jpeg_magic_only": (jpeg[:3], Status.truncated),
        "png_half": (png[: len(png) // 2], Status.truncated),
        "png_sig_only": (png[:5], Status.truncated),
        "webp_half": (webp[: len(webp) // 2], Status.truncated),
        "jpeg_12bit": (g.with_precision(jpeg, 12), Status.unsupported),
        "jpeg_huge": (g.with_declared_size(jpeg, 60000, 60000), Status.too_large),
        "jpeg_no_sof": (jpeg[:2] + b"\xff\xd9", Status.corrupt),
        "png_bad_crc": (png[:30] + bytes([png[30] ^ 0xFF]) + png[31:], Status.corrupt),
        "webp_bad_start_code": (webp[:23] + bytes(3) + webp[26:], Status.corrupt),  # VP8 frame start code
    }
    res = decode([v for v, _ in cases.values()])
    for (name, (_, want)), st, im, err in zip(cases.items(), res.status, res.images, res.errors):
        assert Status(st) == want, f"{name}: {Status(st).name} ({err})"
        assert im is None and isinstance(err, str) and err, name
    assert res.formats[list(cases).index("garbage")] is None
    assert "12" in res.errors[list(cases).index("jpeg_12bit")]
    assert "max_pixels" in res.errors[list(cases).index("jpeg_huge")]
    assert tuple(res.source_sizes[list(cases).index("jpeg_huge")]) == (60000, 60000)


def test_oversized_header_is_refused_before_allocating():
    import resource

    jpeg = small_blobs()["jpeg"]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    res = decode([g.with_declared_size(jpeg, 65000, 65000)] * 4, max_pixels=89478485)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert (res.status == Status.too_large).all()
    assert all("exceeds max_pixels" in e for e in res.errors)  # the header check, not an allocation failure
    assert grown_mib < 200, f"peak RSS grew by {grown_mib:.0f} MiB for a 65000x65000 declared size"


def test_max_pixels_limit():
    blob = small_blobs()["png"]  # 40 x 52 = 2080 pixels
    assert decode([blob], max_pixels=2080).status[0] == Status.ok
    res = decode([blob], max_pixels=2079)
    assert res.status[0] == Status.too_large and tuple(res.source_sizes[0]) == (40, 52)
    huge = g.with_declared_size(small_blobs()["jpeg"], 20000, 20000)  # 4e8 > default limit
    assert decode([huge]).status[0] == Status.too_large
    # No limit: the declared size is believed. The entropy data ends at a real EOI, so libjpeg (and Pillow)
    # return the image with the rest filled in; only a stream that runs out of bytes counts as truncated.
    bigger = g.with_declared_size(small_blobs()["jpeg"], 400, 520)
    res = decode([bigger], max_pixels=None)
    assert res.status[0] == Status.ok
    np.testing.assert_array_equal(res.images[0], pillow(bigger))


def test_format_is_sniffed_not_taken_from_the_name(tmp_path):
    rgb = g.photo_like(20, 30)
    path = tmp_path / "actually_a_png.jpg"
    Image.fromarray(rgb).save(path, format="PNG")
    res = decode([path.read_bytes()])
    assert res.formats == ["png"] and res.status[0] == Status.ok
    np.testing.assert_array_equal(res.images[0], rgb)


def test_mixed_batch_keeps_good_samples_identical():
    good = small_blobs()
    bad = [b"", b"\xff\xd8\xff\xe0junk", good["png"][:60], None, b"RIFF\x00\x00\x00\x00WEBPVP8 "]
    batch, where = [], []
    for i, blob in enumerate(good.values()):
        batch.append(blob)
        where.append(len(batch) - 1)
        batch.append(bad[i % len(bad)])
    res = decode(batch, num_threads=2)
    alone = decode(list(good.values()), num_threads=1)
    assert len(res) == len(batch)
    for j, i in enumerate(where):
        assert res.status[i] == Status.ok
        np.testing.assert_array_equal(res.images[i], alone.images[j])
    assert not res.ok[1::2].any()


def test_fuzzed_streams_never_crash():
    rng = np.random.default_rng(11)
    samples = []
    for name, blob in small_blobs().items():
        n = len(blob)
        positions = np.unique(np.linspace(0, n - 1, 48).astype(int))
        for p in positions:
            mutated = bytearray(blob)
            mutated[p] ^= 0xFF
            samples.append(bytes(mutated))
            mutated[p] = int(rng.integers(0, 256))
            samples.append(g.fix_png_crcs(bytes(mutated)) if name.startswith("png") else bytes(mutated))
        for cut in np.unique(np.linspace(0, n - 1, 24).astype(int)):
            samples.append(blob[:cut])
        samples.append(blob + bytes(rng.integers(0, 256, 64, dtype=np.uint8)))  # trailing junk
    for mode in ("RGB", "L", "luma"):
        res = decode(samples, mode=mode, max_pixels=4_000_000)
        assert len(res) == len(samples)
        for im, st, err in zip(res.images, res.status, res.errors):
            assert st in {int(s) for s in Status}
            if st == Status.ok:
                assert im is not None and im.ndim == 3 and im.dtype == np.uint8 and err is None
            else:
                assert im is None and isinstance(err, str)
    status, formats, sizes, orient = probe_images(samples)
    assert len(status) == len(samples) and ((orient >= 1) & (orient <= 8)).all()


# ------------------------------------------------------------------------------------------------ contract


def test_result_contract():
    b = small_blobs()
    blobs = [b["jpeg"], b"", np.frombuffer(b["png"], dtype=np.uint8), memoryview(b["webp"]), bytearray(b["jpeg"])]
    for mode, ch in (("RGB", 3), ("L", 1), ("luma", 1)):
        res = decode(blobs, mode=mode)
        assert isinstance(res, DecodeResult) and len(res) == 5
        assert res.status.dtype == np.int8 and res.status.shape == (5,)
        assert res.orientation.dtype == np.int8 and res.orientation.shape == (5,)
        assert res.source_sizes.dtype == np.int32 and res.source_sizes.shape == (5, 2)
        assert res.ok.dtype == bool and list(res.ok) == [True, False, True, True, True]
        assert res.formats == ["jpeg", None, "png", "webp", "jpeg"]
        assert res.errors[0] is None and res.errors[1] == "zero-length input"
        for im in (res.images[i] for i in (0, 2, 3, 4)):
            assert im.dtype == np.uint8 and im.shape == (40, 52, ch) and im.flags.c_contiguous
        assert res.images[1] is None
        assert tuple(res.source_sizes[1]) == (0, 0)
    assert len(decode([])) == 0
    assert decode([cut := small_blobs()["jpeg"][:300]]).status[0] == Status.truncated  # cut inside the tables
    assert probe_images([cut])[0][0] == Status.truncated


def test_threads_do_not_change_results():
    blobs = list(small_blobs().values()) * 3
    one = decode(blobs, num_threads=1)
    many = decode(blobs, num_threads=4)
    np.testing.assert_array_equal(one.status, many.status)
    for a, b in zip(one.images, many.images):
        np.testing.assert_array_equal(a, b)


def test_probe_reads_headers_only():
    b = small_blobs()
    cut_after_sos = b["jpeg"][: b["jpeg"].index(b"\xff\xda") + 40]  # header complete, pixels missing
    blobs = [
        b["jpeg"],
        b["png"],
        b["webp"],
        b["webp_anim"],
        cut_after_sos,
        b"",
        b"nope",
        g.with_orientation(g.photo_like(10, 12), "JPEG", 8),
        g.with_declared_size(b["jpeg"], 60000, 60000),
    ]
    status, formats, sizes, orient = probe_images(blobs)
    assert list(status) == [0, 0, 0, 0, 0, Status.empty, Status.unsupported, 0, 0]
    assert formats == ["jpeg", "png", "webp", "webp", "jpeg", None, None, "jpeg", "jpeg"]
    assert sizes.dtype == np.int32 and [tuple(s) for s in sizes] == [
        (40, 52),
        (40, 52),
        (40, 52),
        (40, 52),
        (40, 52),
        (0, 0),
        (0, 0),
        (10, 12),
        (60000, 60000),
    ]
    assert list(orient) == [1, 1, 1, 1, 1, 1, 1, 8, 1]


def test_misuse_raises():
    blob = small_blobs()["jpeg"]
    with pytest.raises(TypeError):
        decode(blob)  # a single bytes object, not a batch
    with pytest.raises(TypeError):
        decode([123])
    with pytest.raises(TypeError):
        decode(["path/to/file.jpg"])
    with pytest.raises(ValueError, match="mode"):
        decode([blob], mode="RGBA")
    with pytest.raises(ValueError, match="mode"):
        decode([blob], mode="rgb")
    with pytest.raises(TypeError, match="target_size"):
        decode([blob], target_size=(1, 2, 3))
    with pytest.raises(ValueError, match="target_size"):
        decode([blob], target_size=0)
    with pytest.raises(ValueError, match="num_threads"):
        decode([blob], num_threads=0)
    with pytest.raises(ValueError, match="max_pixels"):
        decode([blob], max_pixels=-1)
    with pytest.raises(ValueError, match="device"):
        decode([blob], device="tpu")
    with pytest.raises(TypeError):
        probe_images(blob)
