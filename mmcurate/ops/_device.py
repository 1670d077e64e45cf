"""Device resolution, done at call time (never at import or construction)."""
from __future__ import annotations

from mmcurate._native import build_info, cuda_device_count, native

VALID_DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str, data=None) -> str:
    """'auto' -> 'cuda' when this build has CUDA and a GPU is visible (or the data already lives on a GPU),
    else 'cpu'. 'cuda' on a build or machine without it raises an error that says what to do."""
    if device is None:
        device = "auto"
    if isinstance(device, str) and device.startswith("cuda:"):
        device = "cuda"
    if device not in VALID_DEVICES:
        raise ValueError(f"device must be one of {VALID_DEVICES} (or 'cuda:N'), got {device!r}")
    if device == "cpu":
        return "cpu"
    cuda_ok = cuda_device_count() > 0
    if device == "auto":
        if data is not None and hasattr(data, "__cuda_array_interface__") and cuda_ok:
            return "cuda"
        return "cuda" if cuda_ok else "cpu"
    if not native().native_build_info()["cuda"]:
        raise RuntimeError(
            "device='cuda' requested but mmcurate._C was built without CUDA kernels. Rebuild with nvcc on PATH "
            "and MMCURATE_CUDA=1 (the default): `pip install nvidia-nvjpeg && pip install -e . --no-build-isolation`."
        )
    if not cuda_ok:
        raise RuntimeError("device='cuda' requested but no CUDA GPU is visible (check nvidia-smi / CUDA_VISIBLE_DEVICES)")
    return "cuda"


__all__ = ["resolve_device", "build_info", "VALID_DEVICES"]
