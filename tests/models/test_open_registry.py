"""The open model registry (issue 14): any open_clip ARCH/TAG, bare architectures, user entries from a recipe
mapping, weights from a local HF-style directory whose open_clip_config.json gives the preprocessing, SigLIP and
EVA towers (tiny stand-ins built from their open_clip configs), and random weights announced in the console, the
manifest and the report. Nothing is downloaded; every model has random weights."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from mmcurate.models import Preprocess, WeightsMismatchError, get_entry, load_clip, save_weights  # noqa: E402
from mmcurate.models.loader import check_provenance, entry_for  # noqa: E402
from mmcurate.models.registry import describe_models, ensure_open_clip_config, open_clip_entry  # noqa: E402
from mmcurate.pipeline.stage import StageError, registry  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]
SIGLIP_PP = {"mean": 0.5, "std": 0.5, "interpolation": "bicubic", "resize_mode": "squash"}


def _open_clip_preprocess(arch: str, tag: str) -> Preprocess:
    """What open_clip's create_model_and_transforms(arch, pretrained=tag) preprocesses with."""
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    size = open_clip.get_model_config(arch)["vision_cfg"]["image_size"]
    return Preprocess.from_open_clip(
        merge_preprocess_dict(PreprocessCfg(size=size), open_clip.get_pretrained_cfg(arch, tag))
    )


def _pixels(n=2, s=224):
    return np.random.default_rng(0).integers(0, 256, (n, s, s, 3), dtype=np.uint8)


# -- names open_clip knows ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    [
        "ViT-H-14/dfn5b",
        "ViT-H-14-378/dfn5b",
        "ViT-bigG-14/laion2b_s39b_b160k",
        "ViT-B-16-SigLIP/webli",
        "ViT-B-16-SigLIP2/webli",
        "ViT-SO400M-14-SigLIP-384/webli",
        "EVA02-B-16/merged2b_s8b_b131k",
        "EVA02-L-14-336/merged2b_s6b_b61k",
        "ViT-B-32/laion400m_e32",
        "ViT-B-32-quickgelu/metaclip_fullcc",
    ],
)
def test_open_clip_only_name_resolves_to_open_clips_cfg(name):
    arch, tag = name.split("/")
    e = get_entry(name)
    pcfg = open_clip.get_pretrained_cfg(arch, tag)
    assert e.source == "open_clip" and (e.arch, e.pretrained, e.name) == (arch, tag, name)
    assert e.preprocess.differences(_open_clip_preprocess(arch, tag), atol=0) == []
    assert e.embed_dim == open_clip.get_model_config(arch)["embed_dim"]
    assert e.quick_gelu == bool(pcfg.get("quick_gelu", False))
    assert e.hf_hub == pcfg["hf_hub"].rstrip("/") and e.url == (pcfg.get("url") or None)


def test_every_open_clip_pretrained_pair_resolves():
    for arch, tag in open_clip.list_pretrained():
        e = get_entry(f"{arch}/{tag}")
        assert e.preprocess.differences(_open_clip_preprocess(arch, tag), atol=0) == [], (arch, tag)


def test_hub_file_named_in_open_clips_cfg_is_the_weight_file():
    e = get_entry("ViTamin-S/datacomp1b")  # hf_hub "jienengchen/ViTamin-S/pytorch_model.bin"
    assert e.hf_hub == "jienengchen/ViTamin-S" and e.files == ("pytorch_model.bin",)


def test_curated_vit_h_14_is_the_default_and_equals_open_clip():
    e = get_entry("ViT-H-14")
    assert e.name == "ViT-H-14/laion2b_s32b_b79k" and e.default and e.source == "registry" and e.embed_dim == 1024
    o = open_clip_entry("ViT-H-14", "laion2b_s32b_b79k")
    assert (e.preprocess, e.hf_hub, e.files, e.quick_gelu) == (o.preprocess, o.hf_hub, o.files, o.quick_gelu)


def test_bare_architecture_without_default_lists_its_tags():
    with pytest.raises(KeyError, match="ViT-B-16-SigLIP2/webli"):
        get_entry("ViT-B-16-SigLIP2")
    with pytest.raises(KeyError, match="dfn5b"):
        get_entry("ViT-H-14/not-a-tag")
    with pytest.raises(KeyError, match="any ARCH/TAG"):
        get_entry("ViT-X-99/foo")


def test_quickgelu_weights_build_with_quickgelu():
    assert ensure_open_clip_config(get_entry("ViT-H-14/dfn5b")) == "ViT-H-14-quickgelu"
    # an architecture that already is the QuickGELU twin is built as is
    assert ensure_open_clip_config(get_entry("ViT-B-32-quickgelu/metaclip_fullcc")) == "ViT-B-32-quickgelu"


def test_open_clip_only_name_builds_with_random_weights():
    clip = load_clip("ViT-B-32/laion400m_e32", weights="random", device="cpu")
    assert clip.random_weights and clip.preprocess == _open_clip_preprocess("ViT-B-32", "laion400m_e32")
    e = clip.embed_images(_pixels())
    assert e.shape == (2, 512) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    assert clip.embed_texts(["a photo of a cat"]).shape == (1, 512)


def test_describe_models_lists_curated_entries_and_the_open_clip_note():
    d = describe_models()
    names = [x["name"] for x in d]
    assert "ViT-H-14/laion2b_s32b_b79k" in names and "mmcurate-tiny" in names
    assert d[-1]["name"] == "ARCH/TAG" and "open_clip" in d[-1]["note"]
    assert all(set(x["preprocess"]) == {"image_size", "mean", "std", "interpolation", "resize_mode"} for x in d[:-1])
    json.dumps(d)


# -- SigLIP and EVA towers (tiny stand-ins of the real configs: the real ones take ~20 s each to build here) -----
@pytest.fixture(scope="module")
def tiny_configs(tmp_path_factory):
    """mmc-test-siglip (ViT-B-16-SigLIP's config: timm MAP-pooled tower, logit_bias, SigLIP text tower and HF
    tokenizer, shrunk) and mmc-test-eva (EVA02-B-16's: timm EVA tower, shrunk)."""
    d = tmp_path_factory.mktemp("configs")
    sig = open_clip.get_model_config("ViT-B-16-SigLIP")
    sig["embed_dim"] = 192
    sig["vision_cfg"]["timm_model_name"] = "vit_tiny_patch16_224"
    sig["text_cfg"].update(width=192, heads=3, layers=1)
    (d / "mmc-test-siglip.json").write_text(json.dumps(sig))
    eva = open_clip.get_model_config("EVA02-B-16")
    eva["embed_dim"] = 64
    eva["vision_cfg"]["timm_model_name"] = "eva02_tiny_patch14_224"
    eva["text_cfg"].update(width=64, heads=2, layers=1)
    (d / "mmc-test-eva.json").write_text(json.dumps(eva))
    return d


def test_siglip_tower_embeds_images_and_refuses_text_without_its_tokenizer(tiny_configs):
    model = {"arch": "mmc-test-siglip", "config": str(tiny_configs / "mmc-test-siglip.json"), "preprocess": SIGLIP_PP}
    clip = load_clip(model, weights="random", device="cpu")
    assert clip.model.logit_bias is not None and clip.preprocess.resize_mode == "squash"
    e = clip.embed_images(_pixels())
    assert e.shape == (2, 192) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    try:
        import transformers  # noqa: F401

        has_transformers = True
    except ImportError:
        has_transformers = False
    if not has_transformers:  # the SigLIP tokenizer is a Hugging Face one; nothing is downloaded
        with pytest.raises(RuntimeError, match="transformers"):
            clip.embed_texts(["a cat"])
        with pytest.raises(StageError, match="text: true but .*transformers"):
            registry.create("clip_embed", {"model": model, "weights": "random", "device": "cpu"}).setup()
    st = registry.create("clip_embed", {"model": model, "weights": "random", "device": "cpu", "text": False})
    st.setup()
    assert st.clip.embed_dim == 192


def test_eva_tower_embeds_images_and_texts(tiny_configs):
    model = {
        "arch": "mmc-test-eva",
        "config": str(tiny_configs / "mmc-test-eva.json"),
        "preprocess": {"mean": OPENAI_MEAN, "std": OPENAI_STD, "interpolation": "bicubic", "resize_mode": "shortest"},
    }
    clip = load_clip(model, weights="random", device="cpu")
    assert type(clip.model.visual.trunk).__name__ == "Eva"
    img, txt = clip.embed_images(_pixels()), clip.embed_texts(["a cat", "a dog"])
    assert img.shape == (2, 64) and txt.shape == (2, 64)
    assert np.allclose(np.linalg.norm(txt, axis=1), 1, atol=1e-5)


# -- weights from a local HF-style directory ------------------------------------------------------------
def _hf_dir(tmp_path, preprocess_cfg: dict, model_cfg: dict | None = None, checkpoint=None):
    d = tmp_path / "snapshot"
    d.mkdir(parents=True, exist_ok=True)
    tiny_cfg = json.loads((get_entry("mmcurate-tiny").config).read_text())
    cfg = {"model_cfg": model_cfg if model_cfg is not None else tiny_cfg, "preprocess_cfg": preprocess_cfg}
    (d / "open_clip_config.json").write_text(json.dumps(cfg))
    if checkpoint is not None:
        checkpoint(d / "open_clip_model.safetensors")
    return d


def test_local_hf_directory_gives_its_preprocessing(tmp_path):
    pp = {"mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bilinear", "resize_mode": "squash"}
    # a checkpoint written by an entry with that preprocessing (save_weights records it in the file)
    src = load_clip({"arch": "mmcurate-tiny", "preprocess": pp}, weights="random", device="cpu", seed=3)
    d = _hf_dir(tmp_path, pp, checkpoint=lambda p: save_weights(src, p))
    clip = load_clip({"arch": "mmcurate-tiny"}, weights=d, device="cpu")  # no preprocess: the directory's
    assert clip.weights == d / "open_clip_model.safetensors" and not clip.random_weights
    assert clip.preprocess == Preprocess(image_size=224, **pp)
    assert np.allclose(clip.embed_images(_pixels()), src.embed_images(_pixels()), atol=1e-6)
    # the stage takes the same mapping, and its loader uses the directory's preprocessing
    st = registry.create("clip_embed", {"model": {"arch": "mmcurate-tiny"}, "weights": str(d), "device": "cpu"})
    st.setup()
    assert st.loader.preprocess == clip.preprocess and st.describe()["weights"] == str(clip.weights)


def test_bare_architecture_takes_the_directorys_preprocessing(tmp_path):
    siglip_pp = {"mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic", "resize_mode": "squash"}
    d = _hf_dir(tmp_path, siglip_pp, model_cfg=open_clip.get_model_config("ViT-B-16-SigLIP2"))
    e = entry_for("ViT-B-16-SigLIP2", d)  # no curated default: the checkpoint's own config decides
    assert e.source == "weights" and e.preprocess == Preprocess(**{"image_size": 224, **siglip_pp})
    # a bare architecture with a curated default: the directory's config wins over the default...
    d2 = _hf_dir(tmp_path / "b", {"mean": [0.5] * 3, "std": [0.5] * 3}, model_cfg={"embed_dim": 512})
    e2 = entry_for("ViT-B-32", d2)
    assert e2.source == "weights" and e2.preprocess.mean == (0.5, 0.5, 0.5) and e2.preprocess.resize_mode == "shortest"
    # ...and the default itself when they agree (a hub config states mean and std only)
    d3 = _hf_dir(tmp_path / "c", {"mean": OPENAI_MEAN, "std": OPENAI_STD}, model_cfg={"embed_dim": 512})
    assert entry_for("ViT-B-32", d3) == get_entry("ViT-B-32")


def test_named_model_disagreeing_with_the_directory_is_refused(tmp_path):
    d = _hf_dir(tmp_path, {"mean": [0.5] * 3, "std": [0.5] * 3}, model_cfg={"embed_dim": 512})
    ckpt = d / "open_clip_pytorch_model.bin"
    ckpt.write_bytes(b"\0")  # refused before it is read
    for name in ("ViT-B-32/laion2b_s34b_b79k", "ViT-B-32/laion400m_e32"):
        assert entry_for(name, d).name == name  # the name states its weights: its own preprocessing
        with pytest.raises(WeightsMismatchError, match="mean"):
            load_clip(name, weights=d, device="cpu")
    # only the keys the config states are compared: mean and std agreeing is enough
    d2 = _hf_dir(tmp_path / "b", {"mean": OPENAI_MEAN, "std": OPENAI_STD}, model_cfg={"embed_dim": 512})
    check_provenance(get_entry("ViT-B-32/laion400m_e32"), d2 / "x.bin")
    # a checkpoint config that says QuickGELU for a name built without it
    d3 = _hf_dir(
        tmp_path / "c", {"mean": OPENAI_MEAN, "std": OPENAI_STD}, model_cfg={"embed_dim": 512, "quick_gelu": True}
    )
    with pytest.raises(WeightsMismatchError, match="QuickGELU"):
        check_provenance(get_entry("ViT-B-32/laion2b_s34b_b79k"), d3 / "x.bin")
    check_provenance(get_entry("ViT-B-32/openai"), d3 / "x.bin")
    # a user mapping stating a preprocessing that the directory contradicts
    with pytest.raises(KeyError, match="disagrees with .*open_clip_config.json"):
        entry_for({"arch": "ViT-B-32", "preprocess": {"mean": OPENAI_MEAN}}, d)


def test_checkpoint_of_another_open_clip_tag_is_refused(tmp_path):
    p = tmp_path / "models--apple--DFN5B-CLIP-ViT-H-14" / "snapshots" / "abc" / "open_clip_pytorch_model.bin"
    p.parent.mkdir(parents=True)
    p.write_bytes(b"\0")
    with pytest.raises(WeightsMismatchError, match="load it as 'ViT-H-14/dfn5b'"):
        check_provenance(get_entry("ViT-H-14/metaclip_fullcc"), p)
    with pytest.raises(WeightsMismatchError, match="load it as 'ViT-H-14/dfn5b'"):
        check_provenance(get_entry("ViT-H-14"), p)  # the curated default, laion2b_s32b_b79k


def test_hugging_face_text_tower_is_not_fetched_unasked(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(Exception, match="xlm-roberta-base.*allow_download"):
        load_clip("xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k", weights="random", device="cpu")


# -- user entries --------------------------------------------------------------------------------------
def test_user_entry_takes_defaults_from_a_known_tag():
    e = get_entry({"arch": "ViT-B-16-SigLIP", "pretrained": "webli"})
    assert e.source == "user" and e.preprocess == get_entry("ViT-B-16-SigLIP/webli").preprocess
    assert e.embed_dim == 768 and e.hf_hub == "timm/ViT-B-16-SigLIP"
    e2 = get_entry({"arch": "ViT-B-32", "embed_dim": 512, "preprocess": {**SIGLIP_PP, "image_size": 224}})
    assert e2.preprocess.resize_mode == "squash" and e2.pretrained is None and e2.name == "ViT-B-32"


@pytest.mark.parametrize(
    "raw,match",
    [
        ({"arch": "ViT-B-32", "preprocess": SIGLIP_PP, "foo": 1}, "unknown key"),
        ({"preprocess": SIGLIP_PP}, "arch must be"),
        ({"arch": "ViT-B-32/openai"}, "arch must be"),
        ({"arch": "ViT-Nope-1", "preprocess": SIGLIP_PP}, "no architecture 'ViT-Nope-1'"),
        ({"arch": "ViT-B-32"}, "preprocess .* is required"),
        ({"arch": "ViT-B-32", "preprocess": {"mean": 0.5}}, "preprocess lacks"),
        ({"arch": "ViT-B-32", "preprocess": {**SIGLIP_PP, "resize_mode": "longest"}}, "resize_mode"),
        ({"arch": "ViT-B-32", "preprocess": {**SIGLIP_PP, "size": 224}}, "unknown preprocess key"),
        ({"arch": "ViT-B-32", "preprocess": {**SIGLIP_PP, "image_size": 256}}, "takes 224"),
        ({"arch": "ViT-B-32", "preprocess": SIGLIP_PP, "embed_dim": 768}, "config says 512"),
        ({"arch": "ViT-B-32", "preprocess": SIGLIP_PP, "embed_dim": "512"}, "positive int"),
        ({"arch": "ViT-B-16-SigLIP", "pretrained": "webli", "preprocess": {"resize_mode": "shortest"}}, "disagrees"),
        ({"arch": "ViT-B-32", "preprocess": "openai"}, "must be a mapping"),
        ({"arch": "my-arch", "preprocess": SIGLIP_PP, "config": "/nonexistent/my-arch.json"}, "is not a file"),
    ],
)
def test_bad_user_entries_give_one_line_errors(raw, match):
    with pytest.raises(KeyError, match=match) as ei:
        get_entry(raw)
    assert "\n" not in ei.value.args[0]
    # the stage says the same, prefixed with the parameter
    with pytest.raises(StageError, match=r"stage 'clip_embed': model: model mapping: ") as si:
        registry.create("clip_embed", {"model": raw, "weights": "random"})
    assert "\n" not in str(si.value)


def test_user_config_file_must_be_named_after_its_arch(tmp_path, tiny_configs):
    cfg = tmp_path / "other.json"
    cfg.write_text((tiny_configs / "mmc-test-eva.json").read_text())
    with pytest.raises(KeyError, match="must be named my-eva.json"):
        get_entry({"arch": "my-eva", "config": str(cfg), "preprocess": SIGLIP_PP})
    partial = tmp_path / "my-eva.json"
    partial.write_text(json.dumps({"embed_dim": 64, "vision_cfg": {}}))
    with pytest.raises(KeyError, match=r"it lacks \['text_cfg'\]"):
        get_entry({"arch": "my-eva", "config": str(partial), "preprocess": SIGLIP_PP})
    with pytest.raises(KeyError, match="already an open_clip config"):
        get_entry(
            {"arch": "ViT-B-32", "config": str(_renamed(tmp_path, cfg, "ViT-B-32.json")), "preprocess": SIGLIP_PP}
        )


def _renamed(tmp_path, src, name):
    dst = tmp_path / name
    dst.write_text(src.read_text())
    return dst


def test_stage_rejects_pretrained_beside_a_mapping():
    with pytest.raises(StageError, match="model.pretrained"):
        registry.create("clip_embed", {"model": {"arch": "ViT-B-32"}, "pretrained": "openai"})


# -- random weights are announced ------------------------------------------------------------------------
def test_random_weights_in_console_describe_manifest_and_report(tmp_path, capsys):
    from mmcurate.io.demo_dataset import build_demo_dataset
    from mmcurate.pipeline.executor import LocalExecutor
    from mmcurate.pipeline.recipe import default_recipe_dict, parse_recipe
    from mmcurate.report.html_report import write_report

    st = registry.create("clip_embed", {"model": "mmcurate-tiny", "weights": "random", "device": "cpu"})
    assert st.describe()["weights"] == "random"
    st.setup()
    assert st.describe()["weights"] == "random" and st.describe()["model"] == "mmcurate-tiny"
    assert "RANDOM weights" in capsys.readouterr().err

    build_demo_dataset(tmp_path / "in", n_samples=24, shard_size=12)
    r = default_recipe_dict()
    r["input"]["path"] = str(tmp_path / "in")
    r["output"]["path"] = str(tmp_path / "out")
    r["output"]["report"] = False
    user_tiny = {
        "arch": "mmcurate-tiny",
        "preprocess": {"mean": OPENAI_MEAN, "std": OPENAI_STD, "interpolation": "bicubic", "resize_mode": "shortest"},
    }
    r["stages"] += [{"clip_embed": {"model": user_tiny, "weights": "random", "device": "cpu"}}]
    manifest = LocalExecutor(parse_recipe(r), progress=False).run()
    assert manifest["counts"]["accounting_ok"]
    warning = manifest["warnings"][0]
    assert warning.startswith("stage clip_embed ran with random weights: its embeddings, scores and everything")
    assert "set weights: PATH" in warning
    html = write_report(tmp_path / "out").read_text()
    assert 'data-check="random-weights"' in html and "stage clip_embed ran with random weights" in html


def test_no_random_weights_no_warning():
    from mmcurate.pipeline.diagnosis import random_weight_stages, run_warnings

    m = {"run": {"recipe": {"stages": [{"clip_embed": {"model": "ViT-B-32", "weights": "/w.safetensors"}}]}}}
    assert random_weight_stages(m) == [] and run_warnings(m) == []
    m["run"]["recipe"]["stages"].append({"negative_synthesis": {"weights": "random"}})
    assert random_weight_stages(m) == ["negative_synthesis"]
