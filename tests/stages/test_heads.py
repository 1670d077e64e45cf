"""Scoring heads (mmcurate.models.heads) and the clip_heads stage: every format against an independent
nn.Module written here the way LAION defines it, auto-detection, clear errors, the stage's thresholds and
bookkeeping, and a recipe run clip_embed -> clip_heads through the real executor. Random weights throughout."""

from __future__ import annotations

import os
import pickle
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from helpers import run_local
from mmcurate.models import EmbeddingHead, load_head
from mmcurate.models.heads import HeadFormatError, HeadWeightsNotFoundError
from mmcurate.pipeline.stage import StageError, registry
from mmcurate.stages.embeddings import embedding_array

os.environ.setdefault("HF_HUB_OFFLINE", "1")

D = 64  # mmcurate-tiny's embed_dim


# ---------------------------------------------------------------------------------------------------------
# Reference modules, written from the published definitions (not from mmcurate's specs)


class AestheticV1(nn.Module):  # LAION aesthetic predictor v1: a bare nn.Linear(d, 1)
    def __init__(self, d):
        super().__init__()
        self.lin = nn.Linear(d, 1)

    def forward(self, x):
        return self.lin(x)

    def state(self):
        return self.lin.state_dict()


class AestheticV2(nn.Module):  # improved-aesthetic-predictor's MLP
    def __init__(self, d):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(d, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, x):
        return self.layers(x)


class NsfwH14(nn.Module):  # CLIP-based-NSFW-Detector H14_NSFW_Detector
    def __init__(self, d):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(d, 1024),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(1024, 2048),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(2048, 1024),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(1024, 256),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(256, 128),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(128, 16),
            nn.Linear(16, 1),
        )

    def forward(self, x):
        return self.layers(x)


class Normalization(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("variance", torch.ones(d))

    def forward(self, x):
        return (x - self.mean) / self.variance.sqrt()


class NsfwAutokeras(nn.Module):  # the PyTorch port of the autokeras detectors (L14 and B32 widths)
    def __init__(self, d, widths=(64, 512, 256)):
        super().__init__()
        self.norm = Normalization(d)
        dims = (d, *widths, 1)
        self.n = len(dims) - 1
        for k in range(self.n):
            setattr(self, f"linear_{k + 1}", nn.Linear(dims[k], dims[k + 1]))

    def forward(self, x):
        x = self.norm(x)
        for k in range(1, self.n):
            x = torch.relu(getattr(self, f"linear_{k}")(x))
        return torch.sigmoid(getattr(self, f"linear_{self.n}")(x))


class GenericMlp(nn.Module):  # a user-trained head: Linear, act, Dropout, Linear, act, Linear
    def __init__(self, d, activation, output):
        super().__init__()
        act = nn.ReLU() if activation == "relu" else nn.Identity()
        self.layers = nn.Sequential(nn.Linear(d, 32), act, nn.Dropout(0.1), nn.Linear(32, 8), act, nn.Linear(8, 1))
        self.output = output

    def forward(self, x):
        y = self.layers(x)
        return torch.sigmoid(y) if self.output == "sigmoid" else y


def _randomize(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("variance"):
                t.copy_(torch.rand(t.shape, generator=g) * 0.02 + 0.001)
            elif name.endswith("mean"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.05)
            else:
                # larger than the default init so the scores spread (and sigmoids leave 0.5)
                t.copy_(torch.randn(t.shape, generator=g) * (2.0 / max(1, t.shape[-1]) ** 0.5))
    return model.eval()


def _state(model):
    return model.state() if isinstance(model, AestheticV1) else model.state_dict()


def _save(model, path):
    sd = {k: v.contiguous() for k, v in _state(model).items()}
    if str(path).endswith(".safetensors"):
        save_file(sd, str(path))
    else:
        torch.save(sd, str(path))
    return path


def _embeddings(n=37, d=D, seed=0, dtype=np.float16):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(dtype)


def _reference(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(np.asarray(x, dtype=np.float32))).numpy()[:, 0]


CASES = [
    ("linear", lambda: AestheticV1(D)),
    ("aesthetic-mlp", lambda: AestheticV2(D)),
    ("nsfw-h14", lambda: NsfwH14(D)),
    ("nsfw-autokeras", lambda: NsfwAutokeras(D)),
    ("nsfw-autokeras", lambda: NsfwAutokeras(D, widths=(32, 32))),  # the B32 port's shape
    ("mlp:relu:sigmoid", lambda: GenericMlp(D, "relu", "sigmoid")),
    ("mlp:relu:raw", lambda: GenericMlp(D, "relu", "raw")),
    ("mlp:none:sigmoid", lambda: GenericMlp(D, "none", "sigmoid")),
    ("mlp:none:raw", lambda: GenericMlp(D, "none", "raw")),
]


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_every_format_matches_its_reference(tmp_path, case, suffix):
    fmt, make = CASES[case]
    model = _randomize(make(), seed=case)
    path = _save(model, tmp_path / f"head{suffix}")
    x16, x32 = _embeddings(dtype=np.float16), _embeddings(dtype=np.float32)
    head = load_head(path, format=fmt)
    assert isinstance(head, EmbeddingHead) and head.format == fmt and head.in_dim == D
    for x in (x16, x32):
        got = head(x, batch_size=8)  # several batches
        assert got.dtype == np.float32 and got.shape == (len(x),)
        np.testing.assert_allclose(got, _reference(model, x), atol=1e-5, rtol=1e-5)
    assert np.std(head(x32)) > 1e-3  # the weights make scores that differ
    if not fmt.startswith("mlp"):
        auto = load_head(path)  # recognised from the keys
        assert auto.format == fmt
        np.testing.assert_array_equal(auto(x32), head(x32))
    assert head(np.zeros((0, D), np.float32)).shape == (0,)


def test_roles_and_repr(tmp_path):
    roles = {}
    for fmt, make in CASES:
        path = _save(_randomize(make(), 0), tmp_path / "h.pth")
        h = load_head(path, format=fmt)
        roles[fmt] = h.role
    assert roles == {
        "linear": "aesthetic",
        "aesthetic-mlp": "aesthetic",
        "nsfw-h14": "nsfw",
        "nsfw-autokeras": "nsfw",
        "mlp:relu:sigmoid": None,
        "mlp:relu:raw": None,
        "mlp:none:sigmoid": None,
        "mlp:none:raw": None,
    }
    h = load_head(_save(_randomize(AestheticV2(D), 0), tmp_path / "a.pth"))
    assert h.widths == [D, 1024, 128, 64, 16, 1] and "aesthetic-mlp" in repr(h)


# ---------------------------------------------------------------------------------------------------------
# errors


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(HeadWeightsNotFoundError, match="nope.pth"):
        load_head(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_head(tmp_path / "nope.safetensors")


def test_unknown_keys_name_the_keys_and_the_formats(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"fc.weight": torch.zeros(1, D), "fc.bias": torch.zeros(1)}, path)
    with pytest.raises(HeadFormatError) as e:
        load_head(path)
    msg = str(e.value)
    assert "fc.weight" in msg and "fc.bias" in msg
    for fmt in ("linear", "aesthetic-mlp", "nsfw-h14", "nsfw-autokeras", "mlp:"):
        assert fmt in msg
    # a generic Sequential cannot be auto-detected: its activation and output are not in the keys
    path = _save(_randomize(GenericMlp(D, "relu", "sigmoid"), 0), tmp_path / "g.pth")
    with pytest.raises(HeadFormatError, match="mlp:<relu|none>:<raw|sigmoid>"):
        load_head(path)
    # a named format whose keys do not match
    with pytest.raises(HeadFormatError, match="missing"):
        load_head(path, format="nsfw-h14")
    with pytest.raises(HeadFormatError, match="nsfw-autokeras"):
        load_head(path, format="nsfw-autokeras")


@pytest.mark.parametrize("bad", ["mlp", "mlp:gelu:raw", "mlp:relu:softmax", "h14", "", None])
def test_bad_format_names(tmp_path, bad):
    path = _save(_randomize(AestheticV1(D), 0), tmp_path / "h.pth")
    with pytest.raises(ValueError, match="format"):
        load_head(path, format=bad)


def test_shape_errors(tmp_path):
    # a layer whose input does not chain to the previous output
    sd = _randomize(AestheticV2(D), 0).state_dict()
    sd["layers.2.weight"] = torch.zeros(128, 1000)
    torch.save(sd, tmp_path / "chain.pth")
    with pytest.raises(HeadFormatError, match=r"layers\.2 takes 1000 inputs but the layer before it gives 1024"):
        load_head(tmp_path / "chain.pth")
    # a bias that does not match its weight
    sd = _randomize(AestheticV2(D), 0).state_dict()
    sd["layers.4.bias"] = torch.zeros(63)
    torch.save(sd, tmp_path / "bias.pth")
    with pytest.raises(HeadFormatError, match=r"layers\.4\.bias has shape \[63\]"):
        load_head(tmp_path / "bias.pth")
    # a final layer wider than 1
    m = _randomize(GenericMlp(D, "relu", "raw"), 0)
    sd = m.state_dict()
    sd["layers.5.weight"], sd["layers.5.bias"] = torch.zeros(2, 8), torch.zeros(2)
    torch.save(sd, tmp_path / "wide.pth")
    with pytest.raises(HeadFormatError, match="last layer gives 2 outputs"):
        load_head(tmp_path / "wide.pth", format="mlp:relu:raw")
    # the known widths of a LAION format
    sd = _randomize(NsfwH14(D), 0).state_dict()
    sd["layers.0.weight"], sd["layers.0.bias"] = torch.zeros(512, D), torch.zeros(512)
    sd["layers.3.weight"] = torch.zeros(2048, 512)
    torch.save(sd, tmp_path / "h14.pth")
    with pytest.raises(HeadFormatError, match="gives 512 outputs; format 'nsfw-h14'"):
        load_head(tmp_path / "h14.pth")
    # autokeras normalisation of the wrong width
    sd = _randomize(NsfwAutokeras(D), 0).state_dict()
    sd["norm.mean"] = torch.zeros(D + 1)
    save_file(sd, str(tmp_path / "ak.safetensors"))
    with pytest.raises(HeadFormatError, match="norm.mean has 65 values"):
        load_head(tmp_path / "ak.safetensors")
    # a 1-D linear weight
    torch.save({"weight": torch.zeros(D), "bias": torch.zeros(1)}, tmp_path / "flat.pth")
    with pytest.raises(HeadFormatError, match=r"weight has shape \[64\]"):
        load_head(tmp_path / "flat.pth")


def test_dim_mismatch_names_both_dims_and_models(tmp_path):
    head = load_head(_save(_randomize(NsfwAutokeras(768), 0), tmp_path / "l14.pth"))
    with pytest.raises(ValueError) as e:
        head(_embeddings(4, 512))
    msg = str(e.value)
    assert "768" in msg and "ViT-L-14" in msg and "512" in msg and "ViT-B-32" in msg
    head = load_head(_save(_randomize(AestheticV1(1024), 0), tmp_path / "h.pth"))
    with pytest.raises(ValueError, match="ViT-H-14"):
        head(_embeddings(4, 768))


def test_keras_savedmodel_is_refused_with_conversion_help(tmp_path):
    zpath = tmp_path / "clip_autokeras_binary_nsfw.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("clip_autokeras_binary_nsfw/saved_model.pb", b"\x00")
    d = tmp_path / "clip_autokeras_binary_nsfw"
    d.mkdir()
    (d / "saved_model.pb").write_bytes(b"\x00")
    for p in (zpath, d):
        with pytest.raises(HeadFormatError) as e:
            load_head(p)
        msg = str(e.value)
        assert "TensorFlow" in msg and "nsfw-autokeras" in msg
        assert "norm.mean" in msg and "norm.variance" in msg and "linear_k.weight" in msg and "transposed" in msg


def test_unreadable_and_unsafe_files(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(HeadFormatError, match="junk.pth"):
        load_head(tmp_path / "junk.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"garbage!")
    with pytest.raises(HeadFormatError, match="safetensors"):
        load_head(tmp_path / "junk.safetensors")
    torch.save(nn.Linear(D, 1), tmp_path / "module.pth")  # a pickled module, not a state dict
    with pytest.raises(HeadFormatError, match="state_dict"):
        load_head(tmp_path / "module.pth")
    torch.save({"state_dict": AestheticV1(D).state(), "epoch": 3}, tmp_path / "ckpt.pth")
    with pytest.raises(HeadFormatError, match="state_dict"):
        load_head(tmp_path / "ckpt.pth")
    (tmp_path / "h.onnx").write_bytes(b"x")
    with pytest.raises(HeadFormatError, match="unsupported file type"):
        load_head(tmp_path / "h.onnx")


# ---------------------------------------------------------------------------------------------------------
# the clip_heads stage


@pytest.fixture(scope="module")
def head_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("heads")
    models = {
        "nsfw": _randomize(NsfwAutokeras(D), 1),
        "watermark": _randomize(GenericMlp(D, "relu", "sigmoid"), 2),
        "aesthetic": _randomize(AestheticV2(D), 3),
    }
    paths = {
        "nsfw": _save(models["nsfw"], d / "nsfw.pth"),
        "watermark": _save(models["watermark"], d / "watermark.safetensors"),
        "aesthetic": _save(models["aesthetic"], d / "aesthetic.pth"),
    }
    return models, paths


def _emb_batch(n=40, seed=5, null_rows=(3, 17)):
    x = _embeddings(n, D, seed=seed, dtype=np.float32)
    valid = np.ones(n, bool)
    valid[list(null_rows)] = False
    return pa.table(
        {"key": [f"k{i:03d}" for i in range(n)], "source": ["s0"] * n, "image_embedding": embedding_array(x, valid)}
    ), valid


def _stored(batch):
    """What the stage sees: the fp16 column back in float32, re-normalised."""
    from mmcurate.stages.embeddings import embeddings_to_numpy

    x = embeddings_to_numpy(batch.column("image_embedding"))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_stage_scores_thresholds_and_reasons(head_files):
    models, paths = head_files
    batch, valid = _emb_batch()
    x = _stored(batch)
    ref = {h: _reference(m, np.nan_to_num(x)) for h, m in models.items()}
    # thresholds from the data so each filter removes some rows
    nsfw_max = float(np.quantile(ref["nsfw"][valid], 0.8))
    wm_max = float(np.quantile(ref["watermark"][valid], 0.85))
    aes_min = float(np.quantile(ref["aesthetic"][valid], 0.2))
    st = registry.create(
        "clip_heads",
        {
            "nsfw_weights": str(paths["nsfw"]),
            "nsfw_max": nsfw_max,
            "watermark_weights": str(paths["watermark"]),
            "watermark_format": "mlp:relu:sigmoid",
            "watermark_max": wm_max,
            "aesthetic_weights": str(paths["aesthetic"]),
            "aesthetic_min": aes_min,
            "device": "cpu",
        },
    )
    res = st.process(batch)  # sets itself up
    n = batch.num_rows
    assert res.kept.num_rows + res.rejected.num_rows == n

    expect_reason = {}
    for i in range(n):
        if not valid[i]:
            expect_reason[i] = "no_embedding"
        elif not ref["nsfw"][i] < nsfw_max:
            expect_reason[i] = "nsfw"
        elif not ref["watermark"][i] < wm_max:
            expect_reason[i] = "watermark"
        elif not ref["aesthetic"][i] >= aes_min:
            expect_reason[i] = "aesthetic"
    got = dict(zip(res.rejected.column("key").to_pylist(), res.rejected.column("reason").to_pylist()))
    assert got == {f"k{i:03d}": r for i, r in expect_reason.items()}
    assert {"nsfw", "watermark", "aesthetic", "no_embedding"} <= set(got.values())
    assert set(res.rejected.column("stage").to_pylist()) == {"clip_heads"}

    kept_idx = [int(k[1:]) for k in res.kept.column("key").to_pylist()]
    assert kept_idx == [i for i in range(n) if i not in expect_reason]
    for h in ("nsfw", "watermark", "aesthetic"):
        col = res.kept.column(f"{h}_score")
        assert col.type == pa.float32() and col.null_count == 0
        np.testing.assert_allclose(col.to_numpy(), ref[h][kept_idx], atol=1e-5, rtol=1e-5)

    details = dict(zip(res.rejected.column("key").to_pylist(), res.rejected.column("detail").to_pylist()))
    for i, r in expect_reason.items():
        d = details[f"k{i:03d}"]
        if r == "no_embedding":
            assert d == "no image_embedding value"
        elif r == "aesthetic":
            score, op, cut = d.split(" ")
            assert op == "<" and abs(float(score) - ref[r][i]) < 1e-3 and abs(float(cut) - aes_min) < 1e-5
        else:
            score, op, cut = d.split(" ")
            cut_ref = nsfw_max if r == "nsfw" else wm_max
            assert op == ">=" and abs(float(score) - ref[r][i]) < 1e-3 and abs(float(cut) - cut_ref) < 1e-5


def test_stage_defaults_and_only_given_heads(head_files):
    models, paths = head_files
    batch, valid = _emb_batch(null_rows=())
    st = registry.create("clip_heads", {"aesthetic_weights": str(paths["aesthetic"]), "device": "cpu"})
    res = st.process(batch)
    assert res.rejected.num_rows == 0  # no aesthetic_min: scored, not filtered
    assert [c for c in res.kept.column_names if c.endswith("_score")] == ["aesthetic_score"]
    st = registry.create("clip_heads", {"nsfw_weights": str(paths["nsfw"]), "device": "cpu"})
    assert st.params.nsfw_max == 0.5 and st.params.watermark_max == 0.8
    res = st.process(batch)
    ref = _reference(models["nsfw"], _stored(batch))
    assert res.rejected.num_rows == int((ref >= 0.5).sum())


def test_stage_pickling_and_setup(head_files):
    _, paths = head_files
    st = registry.create("clip_heads", {"nsfw_weights": str(paths["nsfw"]), "device": "cpu"})
    clone = pickle.loads(pickle.dumps(st))  # before setup
    clone.setup()
    assert set(clone.heads) == {"nsfw"} and clone.heads["nsfw"].format == "nsfw-autokeras"
    after = pickle.loads(pickle.dumps(clone))  # after setup: the heads are not pickled
    assert after.heads is None and clone.heads is not None
    batch, _ = _emb_batch()
    np.testing.assert_array_equal(
        after.process(batch).kept.column("nsfw_score").to_numpy(),
        clone.process(batch).kept.column("nsfw_score").to_numpy(),
    )
    assert clone.resources.gpus == 0


def test_stage_errors(head_files, tmp_path):
    _, paths = head_files
    with pytest.raises(StageError, match="h14_nsfw.pth") as e:
        registry.create("clip_heads", {})
    assert "sac+logos+ava1-l14-linearMSE.pth" in str(e.value) and "no head weights" in str(e.value)
    with pytest.raises(StageError, match="nsfw_format"):
        registry.create("clip_heads", {"nsfw_weights": "x.pth", "nsfw_format": "h14"})
    with pytest.raises(StageError, match="aesthetic_min is set but aesthetic_weights is not"):
        registry.create("clip_heads", {"nsfw_weights": "x.pth", "aesthetic_min": 5})
    with pytest.raises(StageError, match="watermark_max"):
        registry.create("clip_heads", {"nsfw_weights": "x.pth", "watermark_max": "high"})
    with pytest.raises(StageError, match="device"):
        registry.create("clip_heads", {"nsfw_weights": "x.pth", "device": "tpu"})
    with pytest.raises(StageError, match="unknown parameter"):
        registry.create("clip_heads", {"nsfw_weights": "x.pth", "nsfw_threshold": 0.5})
    # a missing file names the path, at setup
    st = registry.create("clip_heads", {"nsfw_weights": str(tmp_path / "h14_nsfw.pth"), "device": "cpu"})
    with pytest.raises(StageError, match=str(tmp_path / "h14_nsfw.pth")):
        st.setup()
    # an aesthetic predictor given as the NSFW head (auto format) is caught
    st = registry.create("clip_heads", {"nsfw_weights": str(paths["aesthetic"]), "device": "cpu"})
    with pytest.raises(StageError, match="aesthetic-mlp head, which scores aesthetic, not nsfw"):
        st.setup()
    # a watermark head is user-trained: auto-detection says to name the format
    st = registry.create("clip_heads", {"watermark_weights": str(paths["aesthetic"]), "device": "cpu"})
    with pytest.raises(StageError, match="watermark_format"):
        st.setup()
    # no embedding column: run clip_embed first
    st = registry.create("clip_heads", {"nsfw_weights": str(paths["nsfw"]), "device": "cpu"})
    with pytest.raises(StageError, match="clip_embed"):
        st.process(pa.table({"key": ["a"], "source": ["s"], "image": [b"x"]}))
    # embeddings of another width
    other = pa.table({"key": ["a"], "source": ["s"], "image_embedding": embedding_array(_embeddings(1, 512))})
    with pytest.raises(StageError, match="512-d"):
        st.process(other)


def test_stage_rejects_unusable_embeddings(head_files):
    _, paths = head_files
    x = _embeddings(4, D, dtype=np.float32)
    x[1] = 0.0
    x[2, 5] = np.nan
    batch = pa.table({"key": ["a", "b", "c", "d"], "source": ["s"] * 4, "image_embedding": embedding_array(x)})
    st = registry.create("clip_heads", {"nsfw_weights": str(paths["nsfw"]), "nsfw_max": 2.0, "device": "cpu"})
    res = st.process(batch)
    assert res.kept.column("key").to_pylist() == ["a", "d"]
    assert res.rejected.column("reason").to_pylist() == ["no_embedding", "no_embedding"]
    assert res.rejected.column("detail").to_pylist() == [
        "image_embedding is all zeros",
        "image_embedding is not finite",
    ]


# ---------------------------------------------------------------------------------------------------------
# end to end: clip_embed -> clip_heads through the executor


def _run_heads_recipe(tmp_path, name, heads_params):
    """The default recipe plus clip_embed (tiny, random weights) and clip_heads(heads_params) on the demo dataset
    (built in tmp_path/in on the first call), output in tmp_path/name: (manifest, samples, rejects)."""
    from mmcurate.io.demo_dataset import build_demo_dataset
    from mmcurate.pipeline.recipe import default_recipe_dict

    if not (tmp_path / "in").exists():
        build_demo_dataset(tmp_path / "in", shard_size=40)
    r = default_recipe_dict()
    r["input"]["path"] = str(tmp_path / "in")
    r["output"]["path"] = str(tmp_path / name)
    r["output"]["report"] = False
    r["stages"] += [
        {"clip_embed": {"model": "mmcurate-tiny", "weights": "random", "device": "cpu", "text": False}},
        {"clip_heads": heads_params},
    ]
    manifest = run_local(r)
    out = tmp_path / name
    return manifest, pq.read_table(out / "samples.parquet"), pq.read_table(out / "rejects.parquet")


def test_recipe_end_to_end(tmp_path, head_files):
    _, paths = head_files
    base = {
        "nsfw_weights": str(paths["nsfw"]),
        "watermark_weights": str(paths["watermark"]),
        "watermark_format": "mlp:relu:sigmoid",
        "aesthetic_weights": str(paths["aesthetic"]),
        "device": "cpu",
    }
    # first pass: nothing filtered (thresholds above any sigmoid), to learn the score distribution
    m1, s1, _ = _run_heads_recipe(tmp_path, "out1", dict(base, nsfw_max=2.0, watermark_max=2.0))
    assert m1["counts"]["accounting_ok"]
    scores = {h: s1.column(f"{h}_score").to_numpy(zero_copy_only=False) for h in ("nsfw", "watermark", "aesthetic")}
    for h, v in scores.items():
        assert s1.column(f"{h}_score").type == pa.float32() and not np.isnan(v).any()
    # second pass: thresholds inside the distribution
    cuts = {
        "nsfw_max": float(np.quantile(scores["nsfw"], 0.75)),
        "watermark_max": float(np.quantile(scores["watermark"], 0.8)),
        "aesthetic_min": float(np.quantile(scores["aesthetic"], 0.25)),
    }
    m2, s2, rejects = _run_heads_recipe(tmp_path, "out2", dict(base, **cuts))
    counts = m2["counts"]
    assert counts["accounting_ok"]
    assert s2.num_rows + rejects.num_rows == counts["read"]
    mine = rejects.filter(pc.equal(rejects.column("stage"), "clip_heads"))
    reasons = mine.column("reason").to_pylist()
    assert {"nsfw", "watermark", "aesthetic"} <= set(reasons)

    # exactly the first pass's survivors that fail a threshold, in check order
    def ids(t):  # a sample is (source, key): demo shards reuse keys
        return list(zip(t.column("source").to_pylist(), t.column("key").to_pylist()))

    s1_scores = dict(zip(ids(s1), zip(scores["nsfw"], scores["watermark"], scores["aesthetic"])))
    expect = {}
    for k, (ns, wm, ae) in s1_scores.items():
        if not ns < cuts["nsfw_max"]:
            expect[k] = "nsfw"
        elif not wm < cuts["watermark_max"]:
            expect[k] = "watermark"
        elif not ae >= cuts["aesthetic_min"]:
            expect[k] = "aesthetic"
    got = dict(zip(ids(mine), reasons))
    # samples the first run's dedup steps removed were still scored (clip_heads runs in the map phase,
    # before the global steps), so compare on the first run's survivors and check the rest by their detail
    assert {k: got[k] for k in s1_scores if k in got} == expect
    limit = {"nsfw": cuts["nsfw_max"], "watermark": cuts["watermark_max"], "aesthetic": cuts["aesthetic_min"]}
    for k, reason, detail in zip(ids(mine), reasons, mine.column("detail").to_pylist()):
        if k not in s1_scores:
            score, op, _ = detail.split(" ")
            assert (float(score) < limit[reason] + 1e-3) if op == "<" else (float(score) >= limit[reason] - 1e-3)
    assert not set(ids(s2)) & set(expect)
    kept = s2.column("nsfw_score").to_numpy(zero_copy_only=False)
    assert (kept < cuts["nsfw_max"]).all()
    assert (s2.column("aesthetic_score").to_numpy(zero_copy_only=False) >= cuts["aesthetic_min"]).all()
