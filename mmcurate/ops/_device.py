"""Device resolution for the native kernels, done at call time (never at import or construction)."""

from __future__ import annotations

from mmcurate._native import build_info, cuda_device_count, native
from mmcurate.device import DEVICES as VALID_DEVICES
from mmcurate.device import choose_device


def _no_cuda() -> str:
    if not native().native_build_info()["cuda"]:
        return (
            "device='cuda' requested but mmcurate._C was built without CUDA kernels. Rebuild with nvcc on PATH "
            "and MMCURATE_CUDA=1 (the default): "
            "`pip install nvidia-nvjpeg && pip install -e . --no-build-isolation`."
        )
    return "device='cuda' requested but no CUDA GPU is visible (check nvidia-smi / CUDA_VISIBLE_DEVICES)"


def resolve_device(device: str, data=None) -> str:
    """'auto' -> 'cuda' when this build has CUDA and a GPU is visible, else 'cpu' (``data`` already on a GPU
    changes nothing: a GPU array needs a visible GPU too). 'cuda' (or 'cuda:N', which the kernels run as
    'cuda' on the current device) on a build or machine without it raises an error that says what to do.
    The rule itself is mmcurate.device's."""
    if device is None:
        device = "auto"
    if isinstance(device, str) and device.startswith("cuda:"):
        device = "cuda"
    return choose_device(device, lambda: cuda_device_count() > 0, _no_cuda, allow_index=True)


__all__ = ["resolve_device", "build_info", "VALID_DEVICES"]
