"""ClipModel: a loaded CLIP model with the preprocessing bound to its weights, embedding uint8 pixels and
captions into L2-normalised vectors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmcurate.models.preprocess import Preprocess
from mmcurate.models.registry import ModelEntry

__all__ = ["ClipModel", "EmbedResult", "embed_encoded_images"]


class ClipModel:
    """Made by :func:`mmcurate.models.load_clip`. Embeddings come back in the model's dtype (fp16 on a GPU,
    fp32 on the CPU) as numpy for numpy input and as torch tensors on the model's device for torch input."""

    def __init__(self, model, entry: ModelEntry, device: str, dtype, weights=None, allow_download: bool = False):
        self.model = model
        self.entry = entry
        self.device = device
        self.dtype = dtype
        self.weights = weights  # the checkpoint path, None for a random init
        self.allow_download = allow_download  # whether a Hugging Face tokenizer may be fetched from the hub
        self._tokenizer = None

    @property
    def random_weights(self) -> bool:
        """True for a random init (weights="random"): its embeddings and scores mean nothing."""
        return self.weights is None

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def preprocess(self) -> Preprocess:
        return self.entry.preprocess

    @property
    def embed_dim(self) -> int:
        return self.entry.embed_dim

    @property
    def tokenizer(self):
        """open_clip's tokenizer for the architecture (:func:`make_tokenizer`: nothing is downloaded unless the
        model was loaded with allow_download)."""
        if self._tokenizer is None:
            self._tokenizer = make_tokenizer(self.entry, self.weights, self.allow_download)
        return self._tokenizer

    def __repr__(self) -> str:
        src = self.weights or "random init"
        return f"ClipModel({self.name!r}, device={self.device!r}, dtype={self.dtype}, weights={str(src)!r})"

    def _finish(self, feats):
        import torch

        f = torch.nn.functional.normalize(feats.float(), dim=-1)  # normalise in fp32, then store in model dtype
        return f.to(self.dtype)

    def embed_images(self, pixels, batch_size: int = 256):
        """uint8 [n, S, S, 3] (S = preprocess.image_size, already resized and cropped) -> [n, d] L2-normalised.

        Normalisation runs on the model's device, so only bytes cross the host-device link."""
        import torch

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        as_numpy = isinstance(pixels, np.ndarray)
        if as_numpy:
            if pixels.dtype != np.uint8:
                raise TypeError(f"pixels must be uint8 (normalisation happens on the device), got {pixels.dtype}")
            src = torch.from_numpy(np.ascontiguousarray(pixels))
        elif isinstance(pixels, torch.Tensor):
            src = pixels
        else:
            raise TypeError(f"pixels must be a numpy array or torch tensor, got {type(pixels).__name__}")
        s = self.preprocess.image_size
        if src.dtype != torch.uint8 or src.ndim != 4 or tuple(src.shape[1:]) != (s, s, 3):
            raise ValueError(
                f"{self.name}: pixels must be uint8 [n, {s}, {s}, 3], got {src.dtype} "
                f"{tuple(src.shape)}; resize them with the model's preprocess "
                f"({self.preprocess.resize_mode}, {self.preprocess.interpolation}) first"
            )
        outs = []
        pin = as_numpy and self.device.startswith("cuda")
        with torch.inference_mode():
            for i in range(0, src.shape[0], batch_size):
                chunk = src[i : i + batch_size]
                if pin:
                    chunk = chunk.pin_memory()
                chunk = chunk.to(self.device, non_blocking=True)
                x = self.preprocess.normalize(chunk, dtype=self.dtype)
                outs.append(self._finish(self.model.encode_image(x)))
            out = torch.cat(outs) if outs else torch.empty((0, self.embed_dim), dtype=self.dtype, device=self.device)
        return _to_numpy(out) if as_numpy else out

    def embed_texts(self, texts: Sequence[str], batch_size: int = 1024) -> np.ndarray:
        """Captions -> [n, d] L2-normalised (open_clip's tokenizer; long captions are truncated by it)."""
        import torch

        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings; wrap a single caption as [text]")
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] must be a str, got {type(t).__name__}")
        outs = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                tokens = self.tokenizer(texts[i : i + batch_size]).to(self.device, non_blocking=True)
                outs.append(self._finish(self.model.encode_text(tokens)))
            out = torch.cat(outs) if outs else torch.empty((0, self.embed_dim), dtype=self.dtype)
        return _to_numpy(out)


#: Files of a Hugging Face tokenizer (a hub snapshot of a SigLIP model holds them beside the weights).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "spiece.model", "tokenizer.model")


def make_tokenizer(entry: ModelEntry, weights=None, allow_download: bool = False):
    """The text tokenizer of the entry's architecture. CLIP-style towers use open_clip's bundled BPE vocabulary.
    A tower whose config names a Hugging Face tokenizer (SigLIP, SigLIP2, multilingual models) reads it from the
    weights' directory when it holds the tokenizer files, else from the Hugging Face cache, and from the hub only
    with allow_download; it needs the ``transformers`` package. Errors say what to pass."""
    import open_clip

    from mmcurate.models.registry import ensure_open_clip_config

    arch = ensure_open_clip_config(entry)
    text_cfg = (open_clip.get_model_config(arch) or {}).get("text_cfg", {})
    hf_name = text_cfg.get("hf_tokenizer_name")
    if not hf_name:
        if "siglip" in arch.lower():  # open_clip would download a sentencepiece vocabulary from Google storage
            raise ValueError(
                f"{entry.name}: its config names no Hugging Face tokenizer; mmcurate cannot tokenize its text"
            )
        return open_clip.get_tokenizer(arch)
    source, local_only = hf_name, not allow_download
    if weights is not None:
        d = Path(weights).parent
        if any((d / f).is_file() for f in TOKENIZER_FILES):
            source, local_only = str(d), True
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise RuntimeError(
            f"{entry.name}'s text tokenizer is the Hugging Face tokenizer {hf_name!r}, which needs the transformers "
            "package (pip install transformers); or embed images only (clip_embed text: false)"
        ) from None
    from open_clip.tokenizer import HFTokenizer

    try:
        return HFTokenizer(
            source,
            context_length=text_cfg.get("context_length", 77),
            tokenizer_mode=text_cfg.get("tokenizer_mode"),
            local_files_only=local_only,
            **text_cfg.get("tokenizer_kwargs", {}),
        )
    except OSError as exc:
        raise RuntimeError(
            f"{entry.name}: the tokenizer {hf_name!r} is not in the Hugging Face cache"
            + ("" if source == hf_name else f" nor in {source}")
            + f"; put its files ({', '.join(TOKENIZER_FILES[:2])}...) beside the weights, or allow_download: true "
            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from None


def _to_numpy(t) -> np.ndarray:
    import torch

    if t.dtype == torch.bfloat16:  # numpy has no bfloat16
        t = t.float()
    return t.cpu().numpy()


@dataclass
class EmbedResult:
    """embeddings[j] belongs to input indices[j]; inputs that failed to decode are in rejected."""

    embeddings: np.ndarray
    indices: np.ndarray
    rejected: list


def embed_encoded_images(clip: ClipModel, blobs, loader=None, batch_size: int | None = None) -> EmbedResult:
    """Encoded images -> embeddings through a loader (default: the native CPU loader; a
    :class:`~mmcurate.models.DaliImageLoader` works too); decode and resize overlap the forward."""
    from mmcurate.models.cpu_loader import NativeImageLoader

    if loader is None:
        loader = NativeImageLoader(clip.preprocess, batch_size=batch_size or 256)
    elif loader.preprocess != clip.preprocess:
        raise ValueError(
            f"loader preprocessing {loader.preprocess} differs from {clip.name}'s "
            f"{clip.preprocess}: the embeddings would not match the weights"
        )
    embs, idx, rejected = [], [], []
    for b in loader.iter_batches(blobs):
        if len(b.indices):
            e = clip.embed_images(b.pixels)  # a device tensor when the loader (DALI) left pixels there
            embs.append(e if isinstance(e, np.ndarray) else _to_numpy(e))
            idx.append(b.indices)
        rejected.extend(b.rejected)
    dtype = np.float16 if str(clip.dtype) == "torch.float16" else np.float32
    emb = np.concatenate(embs) if embs else np.empty((0, clip.embed_dim), dtype=dtype)
    return EmbedResult(emb, np.concatenate(idx) if idx else np.empty(0, np.int64), rejected)
