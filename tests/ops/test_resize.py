"""Resize and gray conversion: bit-exact against Pillow 13 (Image.resize / convert("L")) and against
torchvision's Resize + CenterCrop on PIL images; API contract and misuse."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mmcurate._native import native
from mmcurate.ops.resize import INTERPOLATIONS, resize_images, to_gray

PIL_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "area": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
PIL_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def pil_resize(a: np.ndarray, h: int, w: int, interpolation: str) -> np.ndarray:
    c = 1 if a.ndim == 2 else a.shape[2]
    im = Image.fromarray(a if c > 1 else a.reshape(a.shape[:2]), PIL_MODES[c])
    out = np.asarray(im.resize((w, h), PIL_FILTERS[interpolation]))
    return out.reshape(h, w, c)


def squash(a: np.ndarray, h: int, w: int, interpolation: str) -> np.ndarray:
    return resize_images([a], (h, w), interpolation=interpolation, mode="squash", device="cpu")[0]


def assert_same(got: np.ndarray, ref: np.ndarray, what: str):
    assert got.shape == ref.shape, what
    diff = int(np.abs(got.astype(np.int16) - ref).max())
    assert diff == 0, f"{what}: max abs diff {diff}"


def random_image(rng, h, w, c):
    shape = (h, w) if c == 1 else (h, w, c)
    return rng.integers(0, 256, shape, dtype=np.uint8)


# ------------------------------------------------------------------------------------------- Pillow parity


@pytest.mark.parametrize("interpolation", sorted(PIL_FILTERS))
def test_random_images_odd_sizes_match_pillow(interpolation):
    rng = np.random.default_rng(sorted(PIL_FILTERS).index(interpolation))
    for trial in range(40):
        c = (1, 3)[trial % 2]
        h, w = (int(v) for v in rng.integers(1, 97, 2))
        oh, ow = (int(v) for v in rng.integers(1, 131, 2))  # up, down and mixed in each axis
        a = random_image(rng, h, w, c)
        assert_same(
            squash(a, oh, ow, interpolation),
            pil_resize(a, oh, ow, interpolation),
            f"{interpolation} c={c} {h}x{w} -> {oh}x{ow}",
        )


@pytest.mark.parametrize("interpolation", sorted(PIL_FILTERS))
def test_photos_match_pillow(photos_rgb, interpolation):
    for i, rgb in enumerate(photos_rgb):
        gray = np.asarray(Image.fromarray(rgb).convert("L"))
        h, w = rgb.shape[:2]
        for oh, ow in [(224, 224), (h // 3 + 1, w // 5 + 3), (h + 37, w * 2 - 1)]:
            assert_same(
                squash(rgb, oh, ow, interpolation),
                pil_resize(rgb, oh, ow, interpolation),
                f"photo {i} RGB -> {oh}x{ow}",
            )
        assert_same(squash(gray, 61, 47, interpolation), pil_resize(gray, 61, 47, interpolation), f"photo {i} L")


@pytest.mark.parametrize(
    "size_in,size_out",
    [
        ((300, 40), (20, 60)),  # height shrinks > 2x the width's change: Pillow runs the vertical pass first
        ((200, 120), (30, 100)),  # both shrink, height much more: vertical first
        ((120, 200), (100, 30)),  # horizontal first
        ((90, 90), (30, 30)),  # equal change: horizontal first
        ((64, 50), (64, 17)),  # horizontal pass only
        ((64, 50), (9, 50)),  # vertical pass only
        ((64, 50), (64, 50)),  # same size: a copy
    ],
)
def test_pass_order_and_skipped_passes_match_pillow(size_in, size_out):
    rng = np.random.default_rng(7)
    for c in (1, 3):
        a = random_image(rng, *size_in, c)
        for interpolation in ("bicubic", "lanczos", "area"):
            assert_same(
                squash(a, *size_out, interpolation),
                pil_resize(a, *size_out, interpolation),
                f"{interpolation} c={c} {size_in} -> {size_out}",
            )


@pytest.mark.parametrize("channels", [2, 4])
def test_alpha_is_premultiplied_like_pillow(channels):
    rng = np.random.default_rng(channels)
    for _ in range(12):
        h, w = (int(v) for v in rng.integers(2, 70, 2))
        a = random_image(rng, h, w, channels)
        a[..., -1][rng.random((h, w)) < 0.3] = 0  # fully transparent pixels carry colour Pillow must not bleed
        a[..., -1][rng.random((h, w)) < 0.3] = 255
        oh, ow = (int(v) for v in rng.integers(1, 90, 2))
        for interpolation in PIL_FILTERS:
            assert_same(
                squash(a, oh, ow, interpolation),
                pil_resize(a, oh, ow, interpolation),
                f"{interpolation} c={channels} {h}x{w} -> {oh}x{ow}",
            )


def test_strided_views_match_contiguous():
    rng = np.random.default_rng(3)
    rgba = random_image(rng, 80, 90, 4)
    views = [rgba[..., :3], rgba[::2, ::3, :3], rgba[:, :, 0], rgba[5:70:3, 7::2, 1]]
    for v in views:
        ref = resize_images([np.ascontiguousarray(v)], (33, 21), "bicubic", "squash", device="cpu")
        got = resize_images([v], (33, 21), "bicubic", "squash", device="cpu")
        np.testing.assert_array_equal(got, ref)
    chw_view = np.ascontiguousarray(rgba[..., :3].transpose(2, 0, 1)).transpose(1, 2, 0)  # channel stride != 1
    np.testing.assert_array_equal(
        resize_images([chw_view], 16, device="cpu"), resize_images([np.ascontiguousarray(chw_view)], 16, device="cpu")
    )


# ---------------------------------------------------------------- vector-pass edges (AVX2 and scalar paths)
# Shapes aimed at the AVX2 passes: rows not a multiple of the 16-tap chunks or the 32-column vertical
# step (scalar tails), 1 to ~1000 taps per output, negative coefficients (upscaling), extreme aspect
# ratios, single pixels, both pass orders and single-pass resizes.
EDGE_RESIZES = [
    ((1, 1), (5, 7)),  # one pixel, upscaled
    ((5, 7), (1, 1)),  # to one pixel
    ((1, 1000), (1, 7)),  # one long row: ~430 LANCZOS taps per output, horizontal pass only
    ((1000, 1), (3, 1)),  # one long column: vertical pass only
    ((3, 997), (2, 13)),
    ((17, 33), (31, 15)),  # sizes off the 16/32 multiples
    ((15, 31), (15, 47)),  # horizontal upscale only: negative lobes, clipping
    ((40, 9), (130, 9)),  # vertical upscale only
    ((97, 100), (3, 99)),  # vertical pass first
    ((64, 513), (64, 32)),  # the pHash-like 16x downscale on a ragged row
    ((48, 40), (33, 32)),  # 32 output columns exactly, mild downscale
    ((7, 3), (200, 150)),  # strong upscale in both axes
]


def edge_images(rng, h, w, c):
    """Noise, and a 0/255 checkerboard: the largest overshoot of negative lobes, so clipping is hit."""
    board = ((np.indices((h, w)).sum(0) % 2) * 255).astype(np.uint8)
    board = board if c == 1 else np.repeat(board[..., None], c, axis=2)
    return [random_image(rng, h, w, c), board]


@pytest.fixture(params=[True, False], ids=["simd", "scalar"])
def resample_path(request):
    """Runs a test on the AVX2 passes (where built) and on the scalar reference passes."""
    C = native()
    previous = C.set_resample_simd(request.param)
    yield request.param
    C.set_resample_simd(previous)


@pytest.mark.parametrize("interpolation", [f for f in sorted(PIL_FILTERS) if f != "nearest"])
def test_pass_edges_match_pillow(interpolation, resample_path):
    rng = np.random.default_rng(11)
    for (h, w), (oh, ow) in EDGE_RESIZES:
        for c in (1, 3, 4):
            for k, a in enumerate(edge_images(rng, h, w, c)):
                if c == 4:
                    a[..., 3] = rng.integers(0, 256, (h, w), dtype=np.uint8)
                assert_same(
                    squash(a, oh, ow, interpolation),
                    pil_resize(a, oh, ow, interpolation),
                    f"{interpolation} c={c} image {k} {h}x{w} -> {oh}x{ow}",
                )


@pytest.mark.parametrize("interpolation", [f for f in sorted(PIL_FILTERS) if f != "nearest"])
def test_fused_gray_resize_matches_pillow(interpolation, resample_path):
    """The hashes' fused convert("L") + resize, on every channel count and the edge shapes."""
    rng = np.random.default_rng(12)
    f = PIL_FILTERS[interpolation]
    for (h, w), (oh, ow) in EDGE_RESIZES + [((512, 512), (32, 32)), ((341, 512), (8, 9))]:
        for c in (1, 2, 3, 4):
            a = random_image(rng, h, w, c)
            ref = np.asarray(
                Image.fromarray(a if c > 1 else a.reshape(h, w), PIL_MODES[c]).convert("L").resize((ow, oh), f)
            )
            assert_same(
                native().gray_resize([a], oh, ow, int(f))[0], ref, f"{interpolation} c={c} {h}x{w} -> {oh}x{ow}"
            )
    view = random_image(rng, 90, 120, 4)[3::2, 5::3, :3]  # strided pixels and rows
    ref = np.asarray(Image.fromarray(np.ascontiguousarray(view)).convert("L").resize((17, 16), f))
    assert_same(native().gray_resize([view], 16, 17, int(f))[0], ref, f"{interpolation} strided view")


def test_many_sizes_in_one_thread_use_the_right_tables():
    """More distinct axes than the per-thread table cache holds, revisited in a different order."""
    rng = np.random.default_rng(13)
    a = random_image(rng, 70, 90, 3)
    sizes = [(int(h), int(w)) for h, w in rng.integers(1, 60, (40, 2))]
    for oh, ow in sizes + sizes[::-1]:
        assert_same(squash(a, oh, ow, "lanczos"), pil_resize(a, oh, ow, "lanczos"), f"-> {oh}x{ow}")


def test_simd_switch_reports_the_previous_setting():
    C = native()
    previous = C.set_resample_simd(False)
    try:
        assert C.set_resample_simd(False) is False
        assert C.set_resample_simd(True) is False
        assert C.set_resample_simd(True) is True
    finally:
        C.set_resample_simd(previous)
    assert isinstance(C.resample_simd_built(), bool)


# ------------------------------------------------------------------------------- CLIP geometry (torchvision)


def test_shortest_matches_torchvision_resize_centercrop(photos_rgb):
    from torchvision import transforms as T

    rng = np.random.default_rng(11)
    images = list(photos_rgb)
    # Aspect ratios on both sides of square, and long-side excesses of both parities (round half to even).
    for h, w in [
        (300, 401),
        (401, 300),
        (225, 226),
        (227, 224),
        (230, 233),
        (97, 120),
        (500, 97),
        (224, 224),
        (150, 151),
        (151, 150),
    ]:
        images.append(random_image(rng, h, w, 3))
    for size in (224, 97):
        ref_tf = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size)])
        got = resize_images(images, size, interpolation="bicubic", mode="shortest", device="cpu")
        assert got.shape == (len(images), size, size, 3) and got.dtype == np.uint8
        for i, a in enumerate(images):
            ref = np.asarray(ref_tf(Image.fromarray(a)))
            assert_same(got[i], ref, f"image {i} {a.shape} size {size}")


def test_shortest_other_interpolations_match_torchvision():
    from torchvision import transforms as T

    rng = np.random.default_rng(5)
    a = random_image(rng, 173, 131, 3)
    modes = {
        "bilinear": T.InterpolationMode.BILINEAR,
        "nearest": T.InterpolationMode.NEAREST,
        "lanczos": T.InterpolationMode.LANCZOS,
        "area": T.InterpolationMode.BOX,
        "hamming": T.InterpolationMode.HAMMING,
    }
    for name, mode in modes.items():
        ref = np.asarray(T.Compose([T.Resize(64, interpolation=mode), T.CenterCrop(64)])(Image.fromarray(a)))
        assert_same(resize_images([a], 64, interpolation=name, device="cpu")[0], ref, name)


# --------------------------------------------------------------------------------------------------- gray


def test_to_gray_matches_pillow_convert_L():
    rng = np.random.default_rng(2)
    for c in (1, 2, 3, 4):
        a = random_image(rng, 37, 53, c)
        ref = np.asarray(Image.fromarray(a, PIL_MODES[c]).convert("L"))
        np.testing.assert_array_equal(to_gray([a])[0], ref, err_msg=f"channels {c}")
    # Exhaustive over the L24 formula's inputs that matter: every value in every channel.
    v = np.arange(256, dtype=np.uint8)
    rgb = np.stack(np.meshgrid(v, v[::-1], v[::7], indexing="ij"), -1).reshape(256, -1, 3)
    np.testing.assert_array_equal(to_gray([rgb])[0], np.asarray(Image.fromarray(rgb).convert("L")))


def test_to_gray_keeps_the_container_kind():
    batch = np.zeros((3, 10, 12, 3), np.uint8)
    out = to_gray(batch)
    assert isinstance(out, np.ndarray) and out.shape == (3, 10, 12) and out.dtype == np.uint8
    out = to_gray([np.zeros((5, 6, 4), np.uint8), np.zeros((7, 8), np.uint8)])
    assert isinstance(out, list) and [o.shape for o in out] == [(5, 6), (7, 8)]


# --------------------------------------------------------------------------------------------- contract


def test_batch_contract_and_mixed_sizes():
    rng = np.random.default_rng(0)
    imgs = [random_image(rng, h, w, 3) for h, w in [(40, 60), (61, 33), (20, 20)]]
    out = resize_images(imgs, (24, 30), interpolation="bilinear", mode="squash", device="cpu")
    assert out.shape == (3, 24, 30, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    for i, a in enumerate(imgs):
        assert_same(out[i], pil_resize(a, 24, 30, "bilinear"), f"image {i}")
    gray = resize_images([random_image(rng, 30, 30, 1)], 8, device="cpu")
    assert gray.shape == (1, 8, 8, 1)
    arr = resize_images(np.stack(imgs[2:] * 4), 10, device="cpu")  # (N, H, W, C) input
    assert arr.shape == (4, 10, 10, 3)
    assert resize_images([], 16, device="cpu").shape == (0, 16, 16, 3)


def test_threads_do_not_change_results():
    rng = np.random.default_rng(4)
    imgs = [random_image(rng, int(h), int(w), 3) for h, w in rng.integers(20, 120, (24, 2))]
    one = resize_images(imgs, 32, "lanczos", device="cpu", num_threads=1)
    many = resize_images(imgs, 32, "lanczos", device="cpu", num_threads=4)
    np.testing.assert_array_equal(one, many)


def test_misuse_raises():
    a = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(ValueError, match="same number of channels"):
        resize_images([a, np.zeros((10, 10), np.uint8)], 4, device="cpu")
    with pytest.raises(ValueError, match="interpolation"):
        resize_images([a], 4, interpolation="cubic", device="cpu")
    with pytest.raises(ValueError, match="mode"):
        resize_images([a], 4, mode="crop", device="cpu")
    with pytest.raises(ValueError, match="shortest"):
        resize_images([a], (4, 5), mode="shortest", device="cpu")
    with pytest.raises(ValueError, match="positive"):
        resize_images([a], 0, device="cpu")
    with pytest.raises(TypeError):
        resize_images([a], 4.5, device="cpu")
    with pytest.raises(TypeError, match="uint8"):
        resize_images([a.astype(np.float32)], 4, device="cpu")
    with pytest.raises(ValueError):
        resize_images([a], 4, device="tpu")
    assert set(INTERPOLATIONS) == {"nearest", "area", "bilinear", "hamming", "bicubic", "lanczos"}
