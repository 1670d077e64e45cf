"""The native CPU loader against open_clip's own PIL preprocessing, and per-sample quarantine.

Parity (a): normalised tensors, ours vs open_clip preprocess_val, with and without DCT-scaled decode.
Parity (b): embeddings through our loader vs open_clip preprocess -> the same model (cosine >= 0.995,
DESIGN.md), tiny random and ViT-B-32 random weights. (c): bad blobs are reported, the rest embed the same.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from conftest import encode  # noqa: E402
from helpers import bad_image_blobs  # noqa: E402
from mmcurate.models import NativeImageLoader, Preprocess, embed_encoded_images, get_entry, load_clip  # noqa: E402

PIXEL_MAX_ABS_FULL = 1e-5  # full decode: Pillow-exact decode + resize, only float rounding remains
PIXEL_MEAN_ABS_SCALED = 0.05  # DCT-scaled decode: in normalised units (1/255/std ~ 0.015 per uint8 level)
COSINE_MIN = 0.995


@pytest.fixture(scope="module")
def encoded_photos(photo_paths, photos_rgb):
    """The scikit-image photos as stored (PNG and JPEG), plus JPEG re-encodes so DCT scaling is exercised."""
    files = [p.read_bytes() for p in photo_paths]
    jpegs = [encode(a, "JPEG", quality=90) for a in photos_rgb if min(a.shape[:2]) >= 300]
    return files + jpegs


def open_clip_val(entry):
    """open_clip's inference transform exactly as create_model_and_transforms(arch, pretrained=tag) builds it."""
    from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict

    model_cfg = open_clip.get_model_config(entry.arch)
    cfg = merge_preprocess_dict(
        PreprocessCfg(size=model_cfg["vision_cfg"]["image_size"]),
        open_clip.get_pretrained_cfg(entry.arch, entry.pretrained) if entry.pretrained else {},
    )
    return image_transform_v2(PreprocessCfg(**cfg), is_train=False)


_REF_CACHE: dict = {}


def reference_tensors(entry, blobs):
    """open_clip preprocess_val on PIL images of the blobs (cached per entry: the PIL path is the slow part)."""
    from PIL import Image

    key = (entry.name, len(blobs))
    if key not in _REF_CACHE:
        tf = open_clip_val(entry)
        _REF_CACHE[key] = torch.stack([tf(Image.open(io.BytesIO(b))) for b in blobs])
    return _REF_CACHE[key]


def reference_uint8(entry, blobs):
    """The geometry half of preprocess_val (Resize + CenterCrop on PIL) as uint8 pixels."""
    from PIL import Image

    geometry = open_clip_val(entry).transforms[:2]
    out = []
    for b in blobs:
        im = Image.open(io.BytesIO(b)).convert("RGB")
        for t in geometry:
            im = t(im)
        out.append(np.asarray(im))
    return np.stack(out)


@pytest.fixture(scope="module")
def vitb32():
    return load_clip("ViT-B-32", weights="random", device="cpu")


@pytest.mark.parametrize("scaled", [False, True])
def test_pixels_match_open_clip_preprocess(encoded_photos, scaled, capsys):
    entry = get_entry("ViT-B-32")
    ref = reference_tensors(entry, encoded_photos)
    b = NativeImageLoader(entry.preprocess, scaled_decode=scaled).load(encoded_photos)
    assert b.rejected == [] and b.pixels.shape == (len(encoded_photos), 224, 224, 3) and b.pixels.dtype == np.uint8
    ours = entry.preprocess.normalize(torch.from_numpy(b.pixels))
    diff = (ours - ref).abs()
    d8 = np.abs(b.pixels.astype(np.int16) - reference_uint8(entry, encoded_photos))
    with capsys.disabled():
        print(
            f"\n[parity a] scaled_decode={scaled}: normalised max abs diff {diff.max().item():.3g}, "
            f"mean {diff.mean().item():.3g}; uint8 max {d8.max()}, mean {d8.mean():.3f} ({len(encoded_photos)} photos)"
        )
    if scaled:
        assert diff.mean().item() <= PIXEL_MEAN_ABS_SCALED
    else:
        assert diff.max().item() <= PIXEL_MAX_ABS_FULL


@pytest.mark.parametrize("model_fixture", ["tiny_clip", "vitb32"])
@pytest.mark.parametrize("scaled", [False, True])
def test_embeddings_match_open_clip_pipeline(request, encoded_photos, model_fixture, scaled, capsys):
    clip = request.getfixturevalue(model_fixture)
    ref_x = reference_tensors(clip.entry, encoded_photos)
    with torch.inference_mode():
        ref = torch.nn.functional.normalize(clip.model.encode_image(ref_x), dim=-1).numpy()
    r = embed_encoded_images(
        clip, encoded_photos, loader=NativeImageLoader(clip.preprocess, batch_size=8, scaled_decode=scaled)
    )
    assert r.rejected == [] and np.array_equal(r.indices, np.arange(len(encoded_photos)))
    cos = (r.embeddings * ref).sum(1)
    with capsys.disabled():
        print(f"\n[parity b] {clip.name} scaled_decode={scaled}: min cosine {cos.min():.6f}")
    assert cos.min() >= COSINE_MIN


def test_bad_samples_are_quarantined_and_the_rest_embed_identically(encoded_photos, tiny_clip):
    good = encoded_photos[:6]
    bad = bad_image_blobs(encoded_photos[-1])
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
    ]
    loader = NativeImageLoader(tiny_clip.preprocess, batch_size=len(mixed))
    b = loader.load(mixed)
    assert b.indices.tolist() == [0, 2, 4, 6, 8, 10]
    rejected = {r.index: r for r in b.rejected}
    assert sorted(rejected) == [1, 3, 5, 7, 9]
    assert rejected[5].status == "empty" and rejected[7].status == "empty"
    assert rejected[3].status in ("corrupt", "unsupported")
    for i in (1, 9):
        assert rejected[i].status in ("truncated", "corrupt") and rejected[i].reason
    clean = loader.load(good)
    assert np.array_equal(b.pixels, clean.pixels)
    assert np.allclose(tiny_clip.embed_images(b.pixels), tiny_clip.embed_images(clean.pixels), atol=0, rtol=0)
    # through the embedding helper, over several batches
    r = embed_encoded_images(tiny_clip, mixed, loader=NativeImageLoader(tiny_clip.preprocess, batch_size=4))
    assert r.indices.tolist() == [0, 2, 4, 6, 8, 10] and len(r.rejected) == 5
    assert np.allclose(r.embeddings, tiny_clip.embed_images(clean.pixels), atol=1e-6)


def test_all_bad_batch_yields_empty_pixels():
    b = NativeImageLoader(Preprocess()).load([b"", b"xx"], offset=10)
    assert b.pixels.shape == (0, 224, 224, 3) and len(b) == 0
    assert [r.index for r in b.rejected] == [10, 11]


@pytest.mark.parametrize("prefetch", [False, True])
def test_iter_batches_covers_every_sample_in_order(encoded_photos, prefetch):
    pp = Preprocess(image_size=96, interpolation="bilinear")
    whole = NativeImageLoader(pp).load(encoded_photos)
    stream = (b for b in encoded_photos[:3] + [b"bad"] + encoded_photos[3:])  # a generator works too
    batches = list(NativeImageLoader(pp, batch_size=4, prefetch=prefetch).iter_batches(stream))
    assert [len(b) + len(b.rejected) for b in batches][:-1] == [4] * (len(batches) - 1)
    idx = np.concatenate([b.indices for b in batches])
    assert idx.tolist() == [i for i in range(len(encoded_photos) + 1) if i != 3]
    assert [r.index for b in batches for r in b.rejected] == [3]
    assert np.array_equal(np.concatenate([b.pixels for b in batches]), whole.pixels)


def test_squash_mode_and_other_sizes(photos_rgb):
    from PIL import Image

    pp = Preprocess(image_size=64, interpolation="bilinear", resize_mode="squash")
    blobs = [encode(a, "PNG") for a in photos_rgb[:3]]
    b = NativeImageLoader(pp, scaled_decode=False).load(blobs)
    ref = np.stack([np.asarray(Image.fromarray(a).resize((64, 64), Image.BILINEAR)) for a in photos_rgb[:3]])
    assert np.array_equal(b.pixels, ref)


def test_loader_misuse():
    with pytest.raises(TypeError, match="Preprocess"):
        NativeImageLoader({"image_size": 224})
    with pytest.raises(ValueError, match="batch_size"):
        NativeImageLoader(Preprocess(), batch_size=0)
    with pytest.raises(ValueError, match="num_threads"):
        NativeImageLoader(Preprocess(), num_threads=0)
    with pytest.raises(TypeError, match="wrap a single image"):
        NativeImageLoader(Preprocess()).load(b"\xff\xd8")


def test_embed_helper_refuses_a_loader_with_other_preprocessing(tiny_clip):
    with pytest.raises(ValueError, match="would not match the weights"):
        embed_encoded_images(tiny_clip, [], loader=NativeImageLoader(Preprocess(mean=0.5, std=0.5)))
