"""Shared fixtures and markers. CUDA tests are skipped at collection when no GPU build/GPU is present."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _cuda_usable() -> bool:
    try:
        from mmcurate._native import cuda_device_count

        return cuda_device_count() > 0
    except Exception:  # noqa: BLE001 - no native module or no driver: no GPU tests
        return False


CUDA_AVAILABLE = _cuda_usable()


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason="needs a CUDA build of mmcurate._C and a visible GPU")
    for item in items:
        if "needs_cuda" in item.keywords and not CUDA_AVAILABLE:
            item.add_marker(skip_cuda)


def cpu_and_cuda():
    """Parametrise a test over both devices; the CUDA case is skipped where it cannot run."""
    return pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.needs_cuda)])


# Real photographs shipped by scikit-image (no download needed).
PHOTO_NAMES = [
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "camera.png",
    "motorcycle_left.png",
    "brick.png",
    "coins.png",
    "page.png",
]


def skimage_data_dir() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data"


@pytest.fixture(scope="session")
def photo_paths() -> list[Path]:
    d = skimage_data_dir()
    paths = [d / n for n in PHOTO_NAMES if (d / n).exists()]
    assert len(paths) >= 8, f"scikit-image sample photos missing under {d}"
    return paths


@pytest.fixture(scope="session")
def photos_rgb(photo_paths) -> list[np.ndarray]:
    """Decoded by Pillow, RGB uint8."""
    from PIL import Image

    return [np.asarray(Image.open(p).convert("RGB")) for p in photo_paths]


@pytest.fixture(scope="module")
def demo_input(tmp_path_factory) -> Path:
    """The demo dataset as a run's input (111 samples in 6 webdataset shards), built once per test module."""
    from helpers import build_demo_input

    return build_demo_input(tmp_path_factory.mktemp("demo_input"))


@pytest.fixture(scope="module")
def tiny_clip():
    """The mmcurate-tiny CLIP model with random weights, on the CPU, loaded once per test module."""
    from mmcurate.models import load_clip

    return load_clip("mmcurate-tiny", weights="random", device="cpu")


def encode(arr: np.ndarray, fmt: str = "JPEG", **kw) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


# The report views' real run (one per session: the chromium check and the views' tests share it).
from report_runs import quality_run, semantic_run  # noqa: E402, F401
