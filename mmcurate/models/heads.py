"""Scoring heads on CLIP image embeddings: NSFW, watermark and aesthetic scores from small linear/MLP weight
files in the formats LAION published them in.

:func:`load_head` reads a torch state dict (``.pt`` / ``.pth`` / ``.bin`` through ``torch.load(weights_only=
True)``, never an arbitrary pickle) or a ``.safetensors`` file and returns an :class:`EmbeddingHead`, which
maps L2-normalised embeddings ``[n, d]`` (float16 or float32) to float32 scores ``[n]``. Each format is
written once below as an explicit layer spec (which keys are Linear layers, the activation after each, the
output function); a file is checked against its spec (key set, shapes, layer chaining, final width 1), never
guessed layer by layer.

Formats (``format=``):

``linear``
    ``{weight [1, d], bias [1]}``: an ``nn.Linear(d, 1)``, raw output. LAION aesthetic predictor v1
    (``sa_0_4_vit_b_32_linear.pth``, ``sa_0_4_vit_l_14_linear.pth``).
``aesthetic-mlp``
    LAION improved-aesthetic-predictor v2 (``sac+logos+ava1-l14-linearMSE.pth``, ViT-L/14): an
    ``nn.Sequential`` keyed ``layers.{0,2,4,6,7}``, Linear d->1024->128->64->16->1 with Dropouts between and
    no activations; raw output (a 1-10 rating).
``nsfw-h14``
    LAION CLIP-based-NSFW-Detector ``h14_nsfw.pth`` (ViT-H-14; clip-retrieval and NeMo Curator's
    ``NsfwClassifier`` load this file): ``nn.Sequential``
    keyed ``layers.{0,3,6,9,12,15,16}``, Linear d->1024->2048->1024->256->128->16->1, ReLU after the first
    five (Dropouts between); raw output, used directly as the NSFW probability.
``nsfw-autokeras``
    The PyTorch port of LAION's autokeras detectors (``clip_ViT-L-14_openai_binary_nsfw_head.pth``: d->64->
    512->256->1; ``clip_ViT-B-32_openai_binary_nsfw_
    head.pth``: 512->32->32->1): ``norm.mean``, ``norm.variance`` ``[d]`` and ``linear_1..linear_K``;
    ``x = (x - mean) / sqrt(variance)``, ReLU after every Linear but the last, sigmoid at the end. The
    original ``clip_autokeras_*.zip`` is a Keras SavedModel that cannot be read without TensorFlow; it is
    refused with instructions to convert it.
``mlp:<activation>:<output>``
    A generic ``nn.Sequential`` of Linear layers keyed ``layers.N.weight/bias`` (any indices, so Dropouts
    may sit between), ``activation`` ``relu`` or ``none`` between the Linears, ``output`` ``raw`` or
    ``sigmoid``: e.g. ``mlp:relu:sigmoid`` for a user-trained binary head. This is the format for a
    watermark head on CLIP embeddings: LAION's own watermark detector (LAION-5B-WatermarkDetection) is an
    image model (a timm backbone on pixels), not an embedding head, so there is no LAION file to load here.

``format="auto"`` recognises ``linear``, ``aesthetic-mlp``, ``nsfw-h14`` and ``nsfw-autokeras`` from the
exact key set and layer indices (then the spec checks the shapes); a generic MLP has to be named, because
its activation and output cannot be read from the keys.

Importing this module does not import torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_TORCH_SUFFIXES = (".pt", ".pth", ".bin")
_SAFETENSORS_SUFFIX = ".safetensors"
_ACTIVATIONS = ("relu", "none")
_OUTPUTS = ("raw", "sigmoid")
_GENERIC_FORMATS = tuple(f"mlp:{a}:{o}" for a in _ACTIVATIONS for o in _OUTPUTS)
# Keras's Normalization layer divides by max(sqrt(variance), epsilon); the same guard here keeps a zero
# variance from dividing by zero and changes nothing for any real variance.
_KERAS_EPSILON = 1e-7

# Which CLIP image towers produce an embedding of a given width (for dimension-mismatch messages).
CLIP_MODELS_BY_DIM = {
    512: "ViT-B-32 / ViT-B-16 / EVA02-B-16",
    768: "ViT-L-14 / EVA02-L-14 / ViT-B-16-SigLIP(2)",
    1024: "ViT-H-14 / ViT-g-14 / EVA02-E-14 / ViT-L-16-SigLIP",
    1152: "ViT-SO400M-14-SigLIP(2)",
    1280: "ViT-bigG-14",
    1536: "ViT-gopt-16-SigLIP2",
}


class HeadFormatError(ValueError):
    """A head weight file that does not match its format (or any known format)."""


class HeadWeightsNotFoundError(FileNotFoundError):
    """The head weight file does not exist."""


def models_for_dim(d: int) -> str:
    return CLIP_MODELS_BY_DIM.get(int(d), "no common CLIP model")


# ---------------------------------------------------------------------------------------------------------
# The known formats, each one explicit layer spec.


@dataclass(frozen=True)
class _Format:
    name: str
    role: str | None  # what the LAION file scores: "nsfw" | "aesthetic" | None (generic)
    linears: tuple[str, ...]  # key prefixes of the Linear layers, in order ("" = top-level weight/bias)
    widths: tuple[int, ...] | None  # out width of each Linear (None: any, chained, last 1)
    relu_after: tuple[bool, ...]  # ReLU after Linear k (never after the last)
    output: str  # "raw" | "sigmoid"
    normalize: bool = False  # norm.mean / norm.variance applied first
    source: str = ""


_LINEAR = _Format(
    "linear", "aesthetic", ("",), (1,), (False,), "raw", source="LAION aesthetic predictor v1 (sa_0_4_vit_*_linear.pth)"
)
_AESTHETIC_MLP = _Format(
    "aesthetic-mlp",
    "aesthetic",
    tuple(f"layers.{i}" for i in (0, 2, 4, 6, 7)),
    (1024, 128, 64, 16, 1),
    (False,) * 5,
    "raw",
    source="LAION improved-aesthetic-predictor v2 (sac+logos+ava1-l14-linearMSE.pth)",
)
_NSFW_H14 = _Format(
    "nsfw-h14",
    "nsfw",
    tuple(f"layers.{i}" for i in (0, 3, 6, 9, 12, 15, 16)),
    (1024, 2048, 1024, 256, 128, 16, 1),
    (True,) * 5 + (False,) * 2,
    "raw",
    source="LAION CLIP-based-NSFW-Detector h14_nsfw.pth",
)
_KNOWN = {f.name: f for f in (_LINEAR, _AESTHETIC_MLP, _NSFW_H14)}
AUTOKERAS = "nsfw-autokeras"
KNOWN_FORMATS = ("linear", "aesthetic-mlp", "nsfw-h14", AUTOKERAS, "mlp:<relu|none>:<raw|sigmoid>")
FORMAT_ROLES = {"linear": "aesthetic", "aesthetic-mlp": "aesthetic", "nsfw-h14": "nsfw", AUTOKERAS: "nsfw"}

_LAYER_KEY = re.compile(r"^layers\.(\d+)\.(weight|bias)$")
_AUTOKERAS_KEY = re.compile(r"^linear_(\d+)\.(weight|bias)$")


def _autokeras_format(n_linears: int) -> _Format:
    return _Format(
        AUTOKERAS,
        "nsfw",
        tuple(f"linear_{k}" for k in range(1, n_linears + 1)),
        None,
        (True,) * (n_linears - 1) + (False,),
        "sigmoid",
        normalize=True,
        source="LAION CLIP-based-NSFW-Detector autokeras port (clip_ViT-*_openai_binary_nsfw_head.pth)",
    )


def _generic_format(name: str, indices: list[int]) -> _Format:
    _, activation, output = name.split(":")
    n = len(indices)
    return _Format(
        name, None, tuple(f"layers.{i}" for i in indices), None, (activation == "relu",) * (n - 1) + (False,), output
    )


def check_format(format: str) -> str:
    """Validates a format name ("auto", a known format or mlp:<activation>:<output>); returns it."""
    if not isinstance(format, str):
        raise ValueError(f"head format must be a string, got {format!r}")
    if format == "auto" or format in _KNOWN or format == AUTOKERAS or format in _GENERIC_FORMATS:
        return format
    if format == "mlp" or format.startswith("mlp:"):
        raise ValueError(
            f"format {format!r}: a generic MLP names its activation and output, one of {', '.join(_GENERIC_FORMATS)}"
        )
    raise ValueError(f"unknown head format {format!r}; valid: auto, {', '.join(KNOWN_FORMATS)}")


# ---------------------------------------------------------------------------------------------------------
# Reading the file


def _keras_help(path: Path) -> str:
    return (
        f"{path} is a Keras SavedModel (LAION's clip_autokeras_*.zip NSFW detector), which cannot be read "
        "without TensorFlow. Convert it once to a PyTorch state dict (LAION ships the converted heads as "
        "models/clip_ViT-L-14_openai_binary_nsfw_head.pth and clip_ViT-B-32_openai_binary_nsfw_head.pth, "
        "made by its convert_heads_to_pytorch.py) and load that with format 'nsfw-autokeras'. The keys: "
        "the Normalization layer's mean and variance -> norm.mean, norm.variance [d]; the k-th Dense "
        "layer's kernel [in, out] transposed -> linear_k.weight [out, in], its bias -> linear_k.bias"
    )


def _read_state_dict(path: Path) -> dict:
    if path.suffix.lower() == ".zip" or (
        path.is_dir() and ((path / "saved_model.pb").exists() or (path / "keras_metadata.pb").exists())
    ):
        raise HeadFormatError(_keras_help(path))
    if path.is_dir():
        raise HeadFormatError(
            f"head weights {path} is a directory; pass the weight file "
            f"({', '.join(_TORCH_SUFFIXES)} or {_SAFETENSORS_SUFFIX})"
        )
    if not path.exists():
        raise HeadWeightsNotFoundError(f"head weights not found: {path}")
    suffix = path.suffix.lower()
    if suffix == _SAFETENSORS_SUFFIX:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except (SafetensorError, OSError, ValueError) as exc:
            raise HeadFormatError(f"cannot read {path} as safetensors: {exc}") from exc
    if suffix in _TORCH_SUFFIXES:
        import pickle

        import torch

        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise HeadFormatError(
                f"cannot read {path} as a torch state dict: torch.load(weights_only=True) "
                "refuses it (a pickled nn.Module or other object, or not a torch file); "
                "save model.state_dict() instead"
            ) from exc
        except (RuntimeError, EOFError, OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise HeadFormatError(f"cannot read {path} as a torch state dict: {first}") from exc
        if not isinstance(obj, dict):
            raise HeadFormatError(f"{path} holds a {type(obj).__name__}, not a state dict (save model.state_dict())")
        if isinstance(obj.get("state_dict"), dict):
            raise HeadFormatError(
                f"{path} is a training checkpoint with a nested 'state_dict'; save "
                "checkpoint['state_dict'] (the head's own keys) as the weight file"
            )
        bad = sorted(str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor))
        if bad:
            raise HeadFormatError(f"{path}: entries {bad[:8]} are not tensors; a head file is a state dict")
        return dict(obj)
    raise HeadFormatError(
        f"head weights {path}: unsupported file type {path.suffix or '(none)'!r}; use "
        f"{', '.join(_TORCH_SUFFIXES)} (torch state dict) or {_SAFETENSORS_SUFFIX}"
    )


def _keys_text(keys) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:12])
    return shown + (f", ... ({len(keys)} keys)" if len(keys) > 12 else "")


def _layer_indices(keys: set, pattern: re.Pattern) -> list[int] | None:
    """The layer numbers when every key is <prefix>N.weight / <prefix>N.bias with both present, else None."""
    found: dict[int, set] = {}
    for k in keys:
        m = pattern.match(k)
        if m is None:
            return None
        found.setdefault(int(m.group(1)), set()).add(m.group(2))
    if not found or any(v != {"weight", "bias"} for v in found.values()):
        return None
    return sorted(found)


def _detect(keys: set) -> str | None:
    if keys == {"weight", "bias"}:
        return "linear"
    if {"norm.mean", "norm.variance"} <= keys:
        idx = _layer_indices(keys - {"norm.mean", "norm.variance"}, _AUTOKERAS_KEY)
        if idx is not None and idx == list(range(1, len(idx) + 1)) and len(idx) >= 2:
            return AUTOKERAS
    idx = _layer_indices(keys, _LAYER_KEY)
    if idx is not None:
        for f in (_AESTHETIC_MLP, _NSFW_H14):
            if [int(p.split(".")[1]) for p in f.linears] == idx:
                return f.name
    return None


def _spec_for(format: str, keys: set, path: Path) -> _Format:
    if format in _KNOWN:
        return _KNOWN[format]
    if format == AUTOKERAS:
        idx = _layer_indices(keys - {"norm.mean", "norm.variance"}, _AUTOKERAS_KEY)
        if (
            not {"norm.mean", "norm.variance"} <= keys
            or idx is None
            or idx != list(range(1, len(idx) + 1))
            or len(idx) < 2
        ):
            raise HeadFormatError(
                f"{path} is not an nsfw-autokeras head: expected norm.mean, norm.variance and "
                f"linear_1..linear_K (K >= 2) weight/bias, found keys {_keys_text(keys)}"
            )
        return _autokeras_format(len(idx))
    idx = _layer_indices(keys, _LAYER_KEY)
    if idx is None:
        raise HeadFormatError(
            f"{path} is not a {format} head: expected only layers.N.weight / layers.N.bias "
            f"(an nn.Sequential of Linear layers), found keys {_keys_text(keys)}"
        )
    return _generic_format(format, idx)


# ---------------------------------------------------------------------------------------------------------
# Validating the layers against the spec


def _build_layers(spec: _Format, sd: dict, path: Path):
    """[(name, weight [out, in], bias [out])] as float32 tensors, checked: exact keys, 2-D weights,
    matching biases, each layer's input = the previous output, the spec's widths, final width 1."""
    import torch

    expected = {f"{p}.{w}" if p else w for p in spec.linears for w in ("weight", "bias")}
    if spec.normalize:
        expected |= {"norm.mean", "norm.variance"}
    keys = set(sd)
    if keys != expected:
        missing, extra = sorted(expected - keys), sorted(keys - expected)
        raise HeadFormatError(
            f"{path} does not match format {spec.name!r} ({spec.source or 'generic MLP'}): "
            + (f"missing {missing}" if missing else "")
            + ("; " if missing and extra else "")
            + (f"unexpected {_keys_text(extra)}" if extra else "")
        )
    for k, v in sd.items():
        if not v.is_floating_point():
            raise HeadFormatError(f"{path}: {k} has dtype {v.dtype}; head weights are floating point")
    layers = []
    prev_out = None
    for k, prefix in enumerate(spec.linears):
        wk, bk = (f"{prefix}.weight", f"{prefix}.bias") if prefix else ("weight", "bias")
        w, b = sd[wk].float(), sd[bk].float()
        label = prefix or "the linear layer"
        if w.ndim != 2:
            raise HeadFormatError(f"{path}: {wk} has shape {list(w.shape)}; a Linear weight is [out, in]")
        out_dim, in_dim = w.shape
        if tuple(b.shape) != (out_dim,):
            raise HeadFormatError(
                f"{path}: {bk} has shape {list(b.shape)}, expected [{out_dim}] to match {wk} {list(w.shape)}"
            )
        if prev_out is not None and in_dim != prev_out:
            raise HeadFormatError(
                f"{path}: {label} takes {in_dim} inputs but the layer before it gives {prev_out} ({wk} {list(w.shape)})"
            )
        if spec.widths is not None and out_dim != spec.widths[k]:
            raise HeadFormatError(
                f"{path}: {label} gives {out_dim} outputs; format {spec.name!r} "
                f"({spec.source}) has {spec.widths[k]} there ({wk} {list(w.shape)}); another "
                "nn.Sequential of Linear layers is format 'mlp:<relu|none>:<raw|sigmoid>'"
            )
        layers.append((label, w.contiguous(), b.contiguous()))
        prev_out = out_dim
    if prev_out != 1:
        raise HeadFormatError(f"{path}: the last layer gives {prev_out} outputs; a scoring head ends in 1")
    norm = None
    if spec.normalize:
        d = layers[0][1].shape[1]
        mean, var = sd["norm.mean"].float().reshape(-1), sd["norm.variance"].float().reshape(-1)
        for name, t in (("norm.mean", mean), ("norm.variance", var)):
            if t.numel() != d:
                raise HeadFormatError(f"{path}: {name} has {t.numel()} values; the first layer takes {d}")
        if not torch.isfinite(var).all() or (var < 0).any():
            raise HeadFormatError(f"{path}: norm.variance has negative or non-finite values")
        norm = (mean, var.sqrt().clamp_min(_KERAS_EPSILON))
    return layers, norm


# ---------------------------------------------------------------------------------------------------------
# The head


class EmbeddingHead:
    """A loaded scoring head: ``head(embeddings)`` -> float32 scores ``[n]``. Build with :func:`load_head`.

    ``embeddings`` are L2-normalised image embeddings ``[n, in_dim]`` (float16 or float32 numpy, as
    ``clip_embed`` stores them); the computation is float32 in torch, ``batch_size`` rows at a time.
    """

    def __init__(self, spec: _Format, layers, norm, path: Path, device: str):
        self.format = spec.name
        self.role = spec.role
        self.output = spec.output
        self.path = path
        self.device = device
        self._relu_after = spec.relu_after
        self._layers = [(name, w.to(device), b.to(device)) for name, w, b in layers]
        self._norm = None if norm is None else tuple(t.to(device) for t in norm)

    @property
    def in_dim(self) -> int:
        return int(self._layers[0][1].shape[1])

    @property
    def widths(self) -> list[int]:
        return [self.in_dim] + [int(w.shape[0]) for _, w, _ in self._layers]

    def __repr__(self) -> str:
        return (
            f"EmbeddingHead({self.format}, {'->'.join(map(str, self.widths))}, output={self.output}, "
            f"device={self.device!r}, path={str(self.path)!r})"
        )

    def check_dim(self, d: int) -> None:
        """Raises ValueError when embeddings of width ``d`` cannot go through this head."""
        if int(d) != self.in_dim:
            raise ValueError(
                f"head {self.path.name} ({self.format}) takes {self.in_dim}-d embeddings "
                f"({models_for_dim(self.in_dim)}), but the embeddings are {int(d)}-d "
                f"({models_for_dim(d)}); use the head trained for the CLIP model that made them"
            )

    def __call__(self, embeddings, batch_size: int = 8192) -> np.ndarray:
        import torch

        x = np.asarray(embeddings)
        if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"embeddings must be a float array [n, d], got {x.dtype} with shape {x.shape}")
        self.check_dim(x.shape[1])
        out = np.empty(x.shape[0], dtype=np.float32)
        last = len(self._layers) - 1
        with torch.inference_mode():
            for start in range(0, x.shape[0], batch_size):
                h = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size])).to(self.device)
                h = h.float()
                if self._norm is not None:
                    h = (h - self._norm[0]) / self._norm[1]
                for k, (_, w, b) in enumerate(self._layers):
                    h = torch.nn.functional.linear(h, w, b)
                    if k < last and self._relu_after[k]:
                        h = torch.relu(h)
                if self.output == "sigmoid":
                    h = torch.sigmoid(h)
                out[start : start + h.shape[0]] = h[:, 0].cpu().numpy()
        return out


def load_head(path, format: str = "auto", device: str = "cpu") -> EmbeddingHead:
    """Loads a scoring head from ``path`` (a torch state dict .pt/.pth/.bin or .safetensors).

    ``format``: ``"auto"`` (recognised from the keys: linear, aesthetic-mlp, nsfw-h14, nsfw-autokeras), one
    of those names, or ``"mlp:<relu|none>:<raw|sigmoid>"``. ``device``: ``"cpu"``, ``"cuda"``,
    ``"cuda:N"`` or ``"auto"``. Raises :class:`HeadWeightsNotFoundError` for a missing file and
    :class:`HeadFormatError` for a file that matches no format or not the one named.
    """
    from mmcurate.models.loader import resolve_torch_device

    check_format(format)
    dev = resolve_torch_device(device)
    path = Path(path).expanduser()
    sd = _read_state_dict(path)
    keys = set(sd)
    if format == "auto":
        detected = _detect(keys)
        if detected is None:
            raise HeadFormatError(
                f"cannot tell the head format of {path} from its keys {_keys_text(keys)}; "
                f"known formats: {', '.join(KNOWN_FORMATS)} (a generic nn.Sequential of "
                f"Linear layers keyed layers.N needs format 'mlp:<relu|none>:<raw|sigmoid>')"
            )
        format = detected
    spec = _spec_for(format, keys, path)
    layers, norm = _build_layers(spec, sd, path)
    return EmbeddingHead(spec, layers, norm, path, dev)
