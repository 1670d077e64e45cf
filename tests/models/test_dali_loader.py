"""The DALI loader: geometry and pixels against the Pillow-exact native loader, embeddings against open_clip's own
preprocess, per-sample quarantine where DALI itself would fail the whole batch, and clip_embed with
``loader: dali``.

On this CPU-only machine the graph runs with DALI's CPU operators (device_id=None); the GPU (``mixed``) decoder
is exercised by the needs_cuda tests at the bottom on a GPU machine.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")
pytest.importorskip("nvidia.dali")

from conftest import encode  # noqa: E402
from data_gen import with_orientation  # noqa: E402
from helpers import bad_image_blobs  # noqa: E402
from mmcurate.models import DaliImageLoader, NativeImageLoader, Preprocess, embed_encoded_images, get_entry, load_clip  # noqa: E402

# DALI's antialiased filters are not Pillow's bit for bit: measured mean |diff| 0.07-0.19 levels, max 6.
PIXEL_MEAN_ABS = 0.5
PIXEL_MAX_ABS = 16
COSINE_MIN = 0.995
needs_cuda = pytest.mark.needs_cuda


@pytest.fixture(scope="module")
def mixed_blobs(photo_paths, photos_rgb):
    """The scikit-image photos as stored (PNG and JPEG, gray and colour, many aspect ratios), JPEG and WebP
    re-encodes, and EXIF-rotated JPEGs (orientations 3, 6 and 8 transpose or flip the displayed image)."""
    files = [p.read_bytes() for p in photo_paths]
    jpegs = [encode(a, "JPEG", quality=90) for a in photos_rgb[:4]]
    webp = [encode(photos_rgb[1], "WEBP", quality=90)]
    rotated = [with_orientation(photos_rgb[2], "JPEG", o, quality=90) for o in (3, 6, 8)]
    return files + jpegs + webp + rotated


def test_pixels_match_the_native_loader(mixed_blobs, capsys):
    pp = get_entry("ViT-B-32").preprocess
    d = DaliImageLoader(pp, batch_size=8, device="cpu").load(mixed_blobs)
    n = NativeImageLoader(pp, scaled_decode=False).load(mixed_blobs)
    assert d.rejected == [] and np.array_equal(d.indices, np.arange(len(mixed_blobs)))
    assert isinstance(d.pixels, np.ndarray) and d.pixels.dtype == np.uint8
    assert d.pixels.shape == (len(mixed_blobs), 224, 224, 3)
    diff = np.abs(d.pixels.astype(np.int16) - n.pixels)
    per_image = diff.reshape(len(mixed_blobs), -1).mean(1)
    with capsys.disabled():
        print(
            f"\n[dali pixels] vs Pillow-exact native: mean |diff| per image max {per_image.max():.3f}, "
            f"overall {diff.mean():.3f}, max {diff.max()} ({len(mixed_blobs)} images)"
        )
    # a misplaced crop or a wrong orientation shows up as a mean difference of tens of levels
    assert per_image.max() <= PIXEL_MEAN_ABS and diff.max() <= PIXEL_MAX_ABS


def test_squash_and_bilinear_geometry(photos_rgb):
    pp = Preprocess(image_size=96, interpolation="bilinear", resize_mode="squash")
    blobs = [encode(a, "PNG") for a in photos_rgb[:4]]
    d = DaliImageLoader(pp, device="cpu").load(blobs)
    n = NativeImageLoader(pp, scaled_decode=False).load(blobs)
    assert d.pixels.shape == (4, 96, 96, 3)
    assert np.abs(d.pixels.astype(np.int16) - n.pixels).reshape(4, -1).mean(1).max() <= PIXEL_MEAN_ABS


def test_geometry_is_torchvision_resize_and_center_crop():
    loader = DaliImageLoader(Preprocess(image_size=224), device="cpu")
    size, start = loader._geometry(np.array([[300, 451], [640, 427], [224, 224], [225, 1000]]))
    # torchvision: longer side int(224 * long / short), crop start int(round((side - 224) / 2)) half-to-even
    assert size.tolist() == [[224, 336], [335, 224], [224, 224], [224, 995]]
    assert start.tolist() == [[0, 56], [56, 0], [0, 0], [0, 386]]


def _open_clip_reference(clip, blobs) -> np.ndarray:
    """open_clip's inference transform on PIL images (EXIF-transposed, as both loaders display them)."""
    import io

    from PIL import Image, ImageOps

    tf = clip.preprocess.open_clip_transform()
    x = torch.stack([tf(ImageOps.exif_transpose(Image.open(io.BytesIO(b)))) for b in blobs])
    with torch.inference_mode():
        return torch.nn.functional.normalize(clip.model.encode_image(x), dim=-1).numpy()


def test_embeddings_match_open_clip_preprocess_and_the_native_loader(mixed_blobs, tiny_clip, capsys):
    ref = _open_clip_reference(tiny_clip, mixed_blobs)
    r = embed_encoded_images(
        tiny_clip, mixed_blobs, loader=DaliImageLoader(tiny_clip.preprocess, batch_size=8, device="cpu")
    )
    nat = embed_encoded_images(tiny_clip, mixed_blobs, loader=NativeImageLoader(tiny_clip.preprocess, batch_size=8))
    assert r.rejected == [] and np.array_equal(r.indices, np.arange(len(mixed_blobs)))
    cos_ref = (r.embeddings * ref).sum(1)
    cos_nat = (r.embeddings * nat.embeddings).sum(1)
    # Random weights map different photos close together too (up to ~0.99 here), so also require that each
    # DALI embedding's nearest reference embedding is its own image's.
    nearest = np.argmax(r.embeddings @ ref.T, axis=1)
    with capsys.disabled():
        print(
            f"\n[dali embeddings] {tiny_clip.name}: min cosine vs open_clip preprocess {cos_ref.min():.6f}, "
            f"vs native loader {cos_nat.min():.6f}"
        )
    assert cos_ref.min() >= COSINE_MIN and cos_nat.min() >= COSINE_MIN
    assert np.array_equal(nearest, np.arange(len(mixed_blobs)))


def test_bad_samples_are_quarantined_not_the_batch(mixed_blobs):
    pp = Preprocess(image_size=64)
    good = mixed_blobs[:6]
    bad = bad_image_blobs(encode(np.random.default_rng(1).integers(0, 255, (300, 400, 3), dtype=np.uint8), "JPEG"))
    mixed = [
        good[0],
        bad["truncated"],
        good[1],
        bad["corrupt"],
        good[2],
        bad["empty"],
        good[3],
        bad["none"],
        good[4],
        bad["header_only"],
        good[5],
        bad["html"],
    ]
    loader = DaliImageLoader(pp, batch_size=len(mixed), device="cpu")
    b = loader.load(mixed, offset=100)
    assert b.indices.tolist() == [100, 102, 104, 106, 108, 110]
    rejected = {r.index - 100: r for r in b.rejected}
    assert sorted(rejected) == [1, 3, 5, 7, 9, 11]
    assert rejected[5].status == "empty" and rejected[7].status == "empty"
    assert rejected[11].status == "unsupported" and "magic" in rejected[11].reason
    assert rejected[3].status in ("corrupt", "unsupported")
    for i in (1, 9):
        assert rejected[i].status in ("truncated", "corrupt") and rejected[i].reason
    # The truncated JPEG passes the header probe, so DALI failed that batch once and the rest went through it
    # again: the good samples' pixels equal a clean run's.
    assert loader.stats["dali_failures"] == 1 and loader.stats["native_fallback_batches"] == 0
    clean = DaliImageLoader(pp, device="cpu").load(good)
    assert np.array_equal(b.pixels, clean.pixels)
    # the pipeline was rebuilt: the next batch works
    again = loader.load(good)
    assert np.array_equal(again.pixels, clean.pixels)


def test_full_validation_rejects_truncated_files_before_dali(mixed_blobs):
    pp = Preprocess(image_size=64)
    good = encode(np.random.default_rng(2).integers(0, 255, (200, 300, 3), dtype=np.uint8), "JPEG")
    trunc = good[: len(good) // 2]
    loader = DaliImageLoader(pp, device="cpu", validate="full")
    b = loader.load([mixed_blobs[0], trunc, mixed_blobs[1]])
    assert b.indices.tolist() == [0, 2]
    assert [(r.index, r.status) for r in b.rejected] == [(1, "truncated")]
    assert loader.stats["dali_failures"] == 0


def test_too_large_images_are_refused_from_the_header(photos_rgb):
    blob = encode(photos_rgb[0], "PNG")
    b = DaliImageLoader(Preprocess(image_size=32), device="cpu", max_pixels=1000).load([blob])
    assert len(b) == 0 and b.rejected[0].status == "too_large" and "max_pixels" in b.rejected[0].reason


@pytest.mark.parametrize("prefetch", [False, True])
def test_iter_batches_and_long_loads_keep_order(mixed_blobs, prefetch):
    pp = Preprocess(image_size=48, interpolation="bilinear")
    loader = DaliImageLoader(pp, batch_size=4, device="cpu", prefetch=prefetch)
    whole = loader.load(mixed_blobs[:3] + [b"bad"] + mixed_blobs[3:])  # longer than batch_size: chunked inside
    stream = (b for b in mixed_blobs[:3] + [b"bad"] + mixed_blobs[3:])
    batches = list(loader.iter_batches(stream))
    idx = np.concatenate([b.indices for b in batches])
    assert idx.tolist() == [i for i in range(len(mixed_blobs) + 1) if i != 3] == whole.indices.tolist()
    assert [r.index for b in batches for r in b.rejected] == [3] == [r.index for r in whole.rejected]
    assert np.array_equal(np.concatenate([b.pixels for b in batches]), whole.pixels)


def test_all_bad_batch_and_misuse():
    loader = DaliImageLoader(Preprocess(), device="cpu")
    b = loader.load([b"", b"xx"], offset=5)
    assert b.pixels.shape == (0, 224, 224, 3) and [r.index for r in b.rejected] == [5, 6]
    with pytest.raises(TypeError, match="Preprocess"):
        DaliImageLoader({"image_size": 224}, device="cpu")
    with pytest.raises(ValueError, match="device"):
        DaliImageLoader(Preprocess(), device="gpu")
    with pytest.raises(ValueError, match="validate"):
        DaliImageLoader(Preprocess(), device="cpu", validate="some")
    with pytest.raises(ValueError, match="batch_size"):
        DaliImageLoader(Preprocess(), device="cpu", batch_size=0)


def test_clip_embed_stage_with_the_dali_loader_matches_the_native_loader():
    import pyarrow as pa

    from mmcurate.pipeline.schema import INPUT_SCHEMA
    from mmcurate.pipeline.stage import registry
    from mmcurate.stages.embeddings import embeddings_to_numpy

    rng = np.random.default_rng(5)
    imgs = [encode(rng.integers(0, 255, (60 + 7 * i, 80, 3), dtype=np.uint8), "JPEG") for i in range(5)]
    rows = [
        ("a", imgs[0], "a cat"),
        ("b", b"junk", "x"),
        ("c", imgs[1], "a dog"),
        ("d", None, "y"),
        ("e", imgs[2], None),
        ("f", imgs[3][:300], "z"),
        ("g", imgs[4], "a car"),
    ]
    batch = pa.table(
        {
            "key": [r[0] for r in rows],
            "source": ["s"] * len(rows),
            "image": [r[1] for r in rows],
            "image_ext": ["jpg"] * len(rows),
            "caption": [r[2] for r in rows],
            "meta": ["{}"] * len(rows),
        },
        schema=INPUT_SCHEMA,
    )
    out = {}
    for loader in ("native", "dali"):
        stage = registry.create(
            "clip_embed",
            {"model": "mmcurate-tiny", "weights": "random", "device": "cpu", "loader": loader, "scaled_decode": False},
        )
        stage.setup()
        assert type(stage.loader).__name__ == ("DaliImageLoader" if loader == "dali" else "NativeImageLoader")
        out[loader] = stage.process(batch)
    nat, dal = out["native"], out["dali"]
    assert nat.kept.column("key").to_pylist() == dal.kept.column("key").to_pylist() == ["a", "c", "e", "g"]
    assert nat.rejected.column("reason").to_pylist() == dal.rejected.column("reason").to_pylist()
    a = embeddings_to_numpy(nat.kept.column("image_embedding"))
    b = embeddings_to_numpy(dal.kept.column("image_embedding"))
    assert (a * b).sum(1).min() >= COSINE_MIN


def test_clip_embed_loader_param_is_validated():
    from mmcurate.pipeline.stage import registry

    with pytest.raises(ValueError, match="loader must be one of"):
        registry.create("clip_embed", {"model": "mmcurate-tiny", "weights": "random", "loader": "fast"})
    with pytest.raises(ValueError, match="dali_validate"):
        registry.create("clip_embed", {"model": "mmcurate-tiny", "weights": "random", "dali_validate": "no"})


# -- GPU: the mixed (nvJPEG) decoder --------------------------------------------------------------------------


@needs_cuda
def test_gpu_pixels_stay_on_the_device_and_match_the_cpu_graph(mixed_blobs):
    pp = get_entry("ViT-B-32").preprocess
    g = DaliImageLoader(pp, batch_size=8, device="cuda").load(mixed_blobs)
    c = DaliImageLoader(pp, batch_size=8, device="cpu").load(mixed_blobs)
    assert isinstance(g.pixels, torch.Tensor) and g.pixels.is_cuda and g.pixels.dtype == torch.uint8
    assert np.array_equal(g.indices, c.indices)
    # nvJPEG's IDCT and chroma upsampling differ slightly from libjpeg-turbo's
    diff = np.abs(g.pixels.cpu().numpy().astype(np.int16) - c.pixels)
    assert diff.reshape(len(c), -1).mean(1).max() <= 2 * PIXEL_MEAN_ABS


@needs_cuda
def test_gpu_quarantine_and_embeddings(mixed_blobs):
    clip = load_clip("mmcurate-tiny", weights="random", device="cuda")
    bad = bad_image_blobs(mixed_blobs[-1])
    mixed = [mixed_blobs[0], bad["corrupt"], mixed_blobs[1], bad["header_only"], mixed_blobs[2], bad["empty"]]
    r = embed_encoded_images(clip, mixed, loader=DaliImageLoader(clip.preprocess, batch_size=6, device="cuda"))
    assert r.indices.tolist() == [0, 2, 4] and len(r.rejected) == 3
    nat = embed_encoded_images(clip, [mixed_blobs[0], mixed_blobs[1], mixed_blobs[2]])
    assert (r.embeddings.astype(np.float32) * nat.embeddings.astype(np.float32)).sum(1).min() >= 0.99
