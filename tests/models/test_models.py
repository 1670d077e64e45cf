"""CLIP registry, weight loading (explicit file -> cache -> opt-in download), provenance checks and embedding.

Models are randomly initialised (HF_HUB_OFFLINE=1, nothing is downloaded); the tiny architecture keeps it fast.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from mmcurate.models import (  # noqa: E402
    Preprocess,
    WeightsMismatchError,
    WeightsNotFoundError,
    get_entry,
    list_models,
    load_clip,
    resolve_weights,
    save_weights,
)
from mmcurate.models.loader import META_TAG, check_provenance  # noqa: E402
from mmcurate.models.registry import entries  # noqa: E402

TINY = "mmcurate-tiny"


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory, tiny_clip):
    return save_weights(tiny_clip, tmp_path_factory.mktemp("w") / "mmcurate-tiny.safetensors")


def _pixels(n=4, seed=0, s=224):
    return np.random.default_rng(seed).integers(0, 256, (n, s, s, 3), dtype=np.uint8)


# -- registry ------------------------------------------------------------------------------------------
def test_registry_names_and_defaults():
    names = list_models()
    for arch in ("ViT-B-32", "ViT-B-16", "ViT-L-14", TINY):
        e = get_entry(arch)  # a bare architecture resolves to its default entry
        assert e.arch == arch and e.default and e.name in names
    assert get_entry("ViT-B-32/openai").pretrained == "openai"
    with pytest.raises(KeyError, match="unknown CLIP model"):
        get_entry("ViT-X-99")


@pytest.mark.parametrize("name", [e.name for e in entries() if e.pretrained])
def test_registry_matches_open_clip_pretrained_cfg(name):
    """The preprocessing, activation and weight location equal what open_clip's own
    create_model_and_transforms(arch, pretrained=tag) would use."""
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    e = get_entry(name)
    pcfg = open_clip.get_pretrained_cfg(e.arch, e.pretrained)
    assert pcfg, f"open_clip does not know {e.arch}/{e.pretrained}"
    model_cfg = open_clip.get_model_config(e.arch)
    merged = merge_preprocess_dict(PreprocessCfg(size=model_cfg["vision_cfg"]["image_size"]), pcfg)
    assert e.preprocess.differences(Preprocess.from_open_clip(merged), atol=0) == []
    assert e.embed_dim == model_cfg["embed_dim"]
    assert e.quick_gelu == bool(pcfg.get("quick_gelu", False))
    assert e.hf_hub == pcfg["hf_hub"].rstrip("/")
    assert (e.url or "") == pcfg.get("url", "")


def test_tiny_config_is_registered_with_open_clip(tiny_clip):
    assert TINY in open_clip.list_models()
    assert tiny_clip.embed_dim == 64 and tiny_clip.preprocess == Preprocess()
    n_params = sum(p.numel() for p in tiny_clip.model.visual.parameters())
    assert n_params < 500_000  # a fast test model


def test_preprocess_validation():
    with pytest.raises(ValueError, match="interpolation"):
        Preprocess(interpolation="lanczos")
    with pytest.raises(ValueError, match="resize_mode"):
        Preprocess(resize_mode="longest")
    with pytest.raises(ValueError, match="std"):
        Preprocess(std=(0.5, 0.0, 0.5))
    with pytest.raises(ValueError, match="3 values"):
        Preprocess(mean=(0.5, 0.5))
    p = Preprocess(image_size=256, mean=0.5, std=0.5)
    assert Preprocess.from_dict(p.to_dict()) == p
    assert Preprocess.from_open_clip(p.to_open_clip()) == p
    assert p.differences(Preprocess()) != []


# -- normalisation and embedding --------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ViT-L-14/laion2b_s32b_b82k", TINY])
def test_normalize_equals_totensor_normalize(name):
    from torchvision.transforms import Normalize, ToTensor

    pp = get_entry(name).preprocess
    px = _pixels(3, seed=1)
    ref = torch.stack([Normalize(pp.mean, pp.std)(ToTensor()(a)) for a in px])
    ours = pp.normalize(torch.from_numpy(px))
    assert ours.shape == (3, 3, 224, 224) and ours.dtype == torch.float32
    assert torch.allclose(ours, ref, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="uint8"):
        pp.normalize(torch.from_numpy(px).float())


def test_embed_images_normalised_batched_and_typed(tiny_clip):
    px = _pixels(5)
    e = tiny_clip.embed_images(px)
    assert isinstance(e, np.ndarray) and e.shape == (5, 64) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    # batching does not change results; torch in -> torch out
    assert np.allclose(tiny_clip.embed_images(px, batch_size=2), e, atol=1e-5)
    t = tiny_clip.embed_images(torch.from_numpy(px))
    assert isinstance(t, torch.Tensor) and np.allclose(t.numpy(), e, atol=1e-6)
    # against open_clip's encode_image on ToTensor+Normalize input
    x = tiny_clip.preprocess.normalize(torch.from_numpy(px))
    with torch.no_grad():
        ref = torch.nn.functional.normalize(tiny_clip.model.encode_image(x), dim=-1).numpy()
    assert np.allclose(e, ref, atol=1e-5)
    assert tiny_clip.embed_images(px[:0]).shape == (0, 64)


def test_embed_images_misuse(tiny_clip):
    with pytest.raises(TypeError, match="uint8"):
        tiny_clip.embed_images(_pixels(1).astype(np.float32))
    with pytest.raises(ValueError, match=r"\[n, 224, 224, 3\]"):
        tiny_clip.embed_images(_pixels(1, s=200))
    with pytest.raises(TypeError):
        tiny_clip.embed_images([[0]])


def test_embed_texts(tiny_clip):
    e = tiny_clip.embed_texts(["a photo of a cat", "a dog", "a photo of a cat"])
    assert e.shape == (3, 64) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    assert np.allclose(e[0], e[2]) and not np.allclose(e[0], e[1])
    tokens = open_clip.get_tokenizer(TINY)(["a dog"])
    with torch.no_grad():
        ref = torch.nn.functional.normalize(tiny_clip.model.encode_text(tokens), dim=-1).numpy()
    assert np.allclose(e[1], ref[0], atol=1e-5)
    assert np.allclose(tiny_clip.embed_texts(["a photo of a cat", "a dog"], batch_size=1), e[:2], atol=1e-5)
    assert tiny_clip.embed_texts([]).shape == (0, 64)
    with pytest.raises(TypeError, match="list of strings"):
        tiny_clip.embed_texts("a dog")
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        tiny_clip.embed_texts(["a", None])


def test_random_init_is_seeded_and_leaves_global_rng_alone(tiny_clip):
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    again = load_clip(TINY, weights="random", device="cpu", seed=0)
    after = torch.rand(1)
    assert torch.equal(before, after)
    px = _pixels(2)
    assert np.array_equal(again.embed_images(px), tiny_clip.embed_images(px))
    other = load_clip(TINY, weights="random", device="cpu", seed=1)
    assert not np.allclose(other.embed_images(px), tiny_clip.embed_images(px))


def test_precision_and_device_resolution():
    from mmcurate.models.loader import resolve_precision, resolve_torch_device

    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("auto", "cuda") == "fp16"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("int8", "cpu")
    with pytest.raises(ValueError, match="device"):
        resolve_torch_device("tpu")
    if not torch.cuda.is_available():
        assert resolve_torch_device("auto") == "cpu"
        with pytest.raises(RuntimeError, match="no CUDA"):
            resolve_torch_device("cuda")


# -- weight sources -----------------------------------------------------------------------------------
def test_load_from_file_and_directory(tiny_clip, tiny_file):
    px = _pixels(3)
    ref = tiny_clip.embed_images(px)
    from_file = load_clip(TINY, weights=tiny_file, device="cpu", seed=7)  # seed irrelevant: weights loaded
    assert from_file.weights == tiny_file
    assert np.array_equal(from_file.embed_images(px), ref)
    from_dir = load_clip(TINY, weights=tiny_file.parent, device="cpu", seed=7)
    assert np.array_equal(from_dir.embed_images(px), ref)


def test_load_torch_bin_with_weights_only(tmp_path, tiny_clip):
    path = tmp_path / "ckpt.bin"
    torch.save({"state_dict": {"module." + k: v for k, v in tiny_clip.model.state_dict().items()}}, path)
    m = load_clip(TINY, weights=path, device="cpu", seed=3)
    assert np.array_equal(m.embed_images(_pixels(2)), tiny_clip.embed_images(_pixels(2)))
    # a pickle that is more than tensors is refused by weights_only=True
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": tiny_clip.model.state_dict(), "obj": _Pickled()}, evil)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        load_clip(TINY, weights=evil, device="cpu")


class _Pickled:
    pass


def test_load_from_flat_cache_dir(tmp_path, tiny_clip, tiny_file):
    (tmp_path / tiny_file.name).write_bytes(tiny_file.read_bytes())
    m = load_clip(TINY, cache_dir=tmp_path, device="cpu", seed=5)
    assert m.weights == tmp_path / tiny_file.name
    assert np.array_equal(m.embed_images(_pixels(2)), tiny_clip.embed_images(_pixels(2)))


def test_load_from_hf_hub_cache_layout(tmp_path, tiny_clip, tiny_file):
    """A hub snapshot already in the cache is used without any network access."""
    entry = dataclasses.replace(
        get_entry(TINY), name="tiny-hub", hf_hub="someorg/tiny-clip", files=("open_clip_model.safetensors",)
    )
    repo = tmp_path / "models--someorg--tiny-clip"
    snap = repo / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    (snap / "open_clip_model.safetensors").write_bytes(tiny_file.read_bytes())
    assert resolve_weights(entry, cache_dir=tmp_path) == snap / "open_clip_model.safetensors"
    m = load_clip(entry, cache_dir=tmp_path, device="cpu", seed=9)
    assert np.array_equal(m.embed_images(_pixels(2)), tiny_clip.embed_images(_pixels(2)))


def test_missing_weights_error_says_what_to_pass(tmp_path):
    with pytest.raises(WeightsNotFoundError) as ei:
        load_clip("ViT-B-32/laion2b_s34b_b79k", cache_dir=tmp_path, device="cpu")
    msg = str(ei.value)
    assert "open_clip_model.safetensors" in msg and "open_clip_pytorch_model.bin" in msg
    assert str(tmp_path) in msg and "allow_download=True" in msg and "weights=" in msg
    assert "laion/CLIP-ViT-B-32-laion2B-s34B-b79K" in msg
    with pytest.raises(WeightsNotFoundError, match="no released weights"):
        load_clip(TINY, cache_dir=tmp_path, device="cpu")
    with pytest.raises(WeightsNotFoundError, match="neither a file nor a directory"):
        load_clip(TINY, weights=tmp_path / "nope.safetensors", device="cpu")
    with pytest.raises(WeightsNotFoundError, match="no checkpoint"):
        load_clip(TINY, weights=tmp_path, device="cpu")


def test_openai_entries_use_quickgelu_configs():
    from mmcurate.models.registry import ensure_open_clip_config

    assert ensure_open_clip_config(get_entry("ViT-B-32/openai")) == "ViT-B-32-quickgelu"
    assert ensure_open_clip_config(get_entry("ViT-B-32")) == "ViT-B-32"


# -- provenance (open_clip #1068) ---------------------------------------------------------------------
def _resave_with_meta(src, dst, **meta):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(src), framework="pt") as f:
        m = dict(f.metadata())
    m.update(meta)
    save_file(load_file(str(src)), str(dst), metadata=m)
    return dst


def test_checkpoint_of_another_tag_is_refused(tmp_path, tiny_file):
    bad = _resave_with_meta(tiny_file, tmp_path / "x.safetensors", **{META_TAG: "laion2b_s34b_b79k"})
    with pytest.raises(WeightsMismatchError, match="tag 'laion2b_s34b_b79k'"):
        load_clip(TINY, weights=bad, device="cpu")
    pp = json.dumps(Preprocess(mean=0.5, std=0.5).to_dict())
    bad2 = _resave_with_meta(tiny_file, tmp_path / "y.safetensors", **{"mmcurate.preprocess": pp})
    with pytest.raises(WeightsMismatchError, match="mean"):
        load_clip(TINY, weights=bad2, device="cpu")


def test_open_clip_config_beside_checkpoint_is_checked(tmp_path, tiny_file):
    d = tmp_path / "export"
    d.mkdir()
    (d / "open_clip_model.safetensors").write_bytes(tiny_file.read_bytes())
    cfg = {
        "model_cfg": {"embed_dim": 64},
        "preprocess_cfg": {
            "size": 224,
            "mean": [0.5] * 3,
            "std": [0.5] * 3,
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        },
    }
    (d / "open_clip_config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsMismatchError, match="preprocessing"):
        load_clip(TINY, weights=d, device="cpu")
    cfg["preprocess_cfg"].update(mean=list(Preprocess().mean), std=list(Preprocess().std))
    (d / "open_clip_config.json").write_text(json.dumps(cfg))
    assert load_clip(TINY, weights=d, device="cpu").weights == d / "open_clip_model.safetensors"


@pytest.mark.parametrize(
    "entry,stored_as",
    [
        ("ViT-L-14/datacomp_xl_s13b_b90k", "models--laion--CLIP-ViT-L-14-laion2B-s32B-b82K"),
        ("ViT-B-32/laion2b_s34b_b79k", "models--timm--vit_base_patch32_clip_224.openai"),
    ],
)
def test_checkpoint_stored_under_another_entrys_name_is_refused(tmp_path, entry, stored_as):
    p = tmp_path / stored_as / "snapshots" / "abc" / "open_clip_pytorch_model.bin"
    p.parent.mkdir(parents=True)
    p.write_bytes(b"\0")
    with pytest.raises(WeightsMismatchError, match="load it as"):
        check_provenance(get_entry(entry), p)
    with pytest.raises(WeightsMismatchError):  # refused before any model is built
        load_clip(entry, weights=p, device="cpu")


def test_checkpoint_of_another_architecture_is_refused(tmp_path, tiny_clip):
    sd = tiny_clip.model.state_dict()
    sd.pop("text_projection")
    path = tmp_path / "partial.bin"
    torch.save(sd, path)
    with pytest.raises(WeightsMismatchError, match="does not fit"):
        load_clip(TINY, weights=path, device="cpu")


def test_import_models_loads_no_torch():
    code = (
        "import sys, mmcurate.models, mmcurate.models.registry, mmcurate.models.cpu_loader; "
        "mmcurate.models.get_entry('ViT-B-32'); mmcurate.models.describe_models(); "
        "print('torch' in sys.modules, 'open_clip' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.needs_cuda
def test_cuda_fp16_matches_cpu(tiny_clip):
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    g = load_clip(TINY, weights="random", device="cuda")
    assert g.dtype == torch.float16
    px = _pixels(8)
    e = g.embed_images(px)
    assert e.dtype == np.float16
    cos = (e.astype(np.float32) * tiny_clip.embed_images(px)).sum(1)
    assert cos.min() >= 0.999
    t = g.embed_images(torch.from_numpy(px).cuda())
    assert t.device.type == "cuda"
