"""The image preprocessing bound to a set of CLIP weights, stated once and used by every loader.

Geometry (resize + crop) happens on the host or in the decoder on uint8 pixels; normalisation
((x/255 - mean) / std) happens on the model's device, so pixels cross PCIe as bytes.
torch is imported only inside the functions that need it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Preprocess", "INTERPOLATIONS", "RESIZE_MODES"]

#: Interpolations open_clip's inference transform knows (it maps anything else to bicubic).
INTERPOLATIONS = ("bicubic", "bilinear")
#: Resize modes our resize kernel implements exactly (open_clip's "longest" pads and is not supported).
RESIZE_MODES = ("shortest", "squash")


def _triple(name: str, v) -> tuple[float, float, float]:
    if isinstance(v, (int, float)):
        v = (v, v, v)
    t = tuple(float(x) for x in v)
    if len(t) != 3:
        raise ValueError(f"{name} must have 3 values (R, G, B), got {v!r}")
    return t


@dataclass(frozen=True)
class Preprocess:
    """image_size: side of the square model input; resize_mode "shortest" = torchvision Resize(size) on the
    shorter side + CenterCrop(size) (CLIP), "squash" = resize straight to size x size."""

    image_size: int = 224
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"

    def __post_init__(self):
        if (
            not isinstance(self.image_size, (int, np.integer))
            or isinstance(self.image_size, bool)
            or self.image_size <= 0
        ):
            raise ValueError(f"image_size must be a positive int, got {self.image_size!r}")
        object.__setattr__(self, "image_size", int(self.image_size))
        object.__setattr__(self, "mean", _triple("mean", self.mean))
        object.__setattr__(self, "std", _triple("std", self.std))
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")

    # -- conversions ---------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        unknown = set(d) - {"image_size", "mean", "std", "interpolation", "resize_mode"}
        if unknown:
            raise ValueError(f"unknown preprocess keys {sorted(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_open_clip(cls, cfg: dict) -> Preprocess:
        """From open_clip's preprocess_cfg (keys size, mean, std, interpolation, resize_mode)."""
        size = cfg.get("size", 224)
        if isinstance(size, (tuple, list)):
            if len(size) != 2 or size[0] != size[1]:
                raise ValueError(f"only square model inputs are supported, got size={size!r}")
            size = size[0]
        return cls(
            image_size=int(size),
            mean=cfg.get("mean", cls.mean),
            std=cfg.get("std", cls.std),
            interpolation=cfg.get("interpolation", "bicubic"),
            resize_mode=cfg.get("resize_mode", "shortest"),
        )

    def to_open_clip(self) -> dict:
        return {
            "size": self.image_size,
            "mean": self.mean,
            "std": self.std,
            "interpolation": self.interpolation,
            "resize_mode": self.resize_mode,
        }

    def differences(self, other: Preprocess, atol: float = 1e-6) -> list[str]:
        """Human-readable list of the fields where two configs disagree (empty when they match)."""
        out = []
        for f in ("image_size", "interpolation", "resize_mode"):
            if getattr(self, f) != getattr(other, f):
                out.append(f"{f}: {getattr(self, f)!r} != {getattr(other, f)!r}")
        for f in ("mean", "std"):
            if not np.allclose(getattr(self, f), getattr(other, f), rtol=0, atol=atol):
                out.append(f"{f}: {getattr(self, f)} != {getattr(other, f)}")
        return out

    # -- normalisation ---------------------------------------------------------------------------------
    def normalize(self, pixels, dtype=None):
        """uint8 [n, S, S, 3] (torch, any device) -> float [n, 3, S, S], equal to ToTensor + Normalize.

        Computed in float32 on the tensor's device (then cast to dtype), the same arithmetic order as
        torchvision: (x / 255 - mean) / std."""
        import torch

        if not isinstance(pixels, torch.Tensor):
            raise TypeError(f"normalize takes a torch tensor, got {type(pixels).__name__}")
        s = self.image_size
        if pixels.dtype != torch.uint8 or pixels.ndim != 4 or tuple(pixels.shape[1:]) != (s, s, 3):
            raise ValueError(
                f"pixels must be uint8 [n, {s}, {s}, 3] (resized and cropped to image_size), "
                f"got {pixels.dtype} {tuple(pixels.shape)}"
            )
        mean = torch.tensor(self.mean, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
        x = pixels.permute(0, 3, 1, 2).to(torch.float32).div_(255.0).sub_(mean).div_(std)
        x = x.contiguous()
        return x if dtype is None else x.to(dtype)

    def open_clip_transform(self):
        """open_clip's own inference transform (PIL in, normalised tensor out) for this config: the oracle."""
        from open_clip.transform import PreprocessCfg, image_transform_v2

        return image_transform_v2(PreprocessCfg(**self.to_open_clip()), is_train=False)
