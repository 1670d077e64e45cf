"""Package-level contract: what was built is reported, and importing initialises no framework or GPU."""

import json
import subprocess
import sys

import mmcurate


def test_build_info_reports_the_build():
    info = mmcurate.build_info()
    for key in ("version", "cuda", "cuda_archs", "nvjpeg_header", "simd", "jpeg", "png", "webp", "cuda_devices"):
        assert key in info, key
    assert info["version"] == mmcurate.__version__
    assert isinstance(info["cuda"], bool)
    assert "libjpeg-turbo" in info["jpeg"]
    assert info["png"].startswith("libpng ") and info["webp"].startswith("libwebp ")
    # every kernel area registered its bindings
    assert {"decode", "resize", "hashes", "hamming", "cuda"} <= set(info["binding_areas"])


def test_import_loads_no_torch_no_cuda_and_no_native_code():
    code = (
        "import sys, mmcurate, mmcurate.ops; "
        "print(__import__('json').dumps({m: m in sys.modules for m in "
        "['torch', 'cupy', 'mmcurate._C', 'PIL', 'scipy']}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    assert loaded == {"torch": False, "cupy": False, "mmcurate._C": False, "PIL": False, "scipy": False}


def test_resolve_device_is_lazy_and_explicit():
    from mmcurate import ops

    assert ops.resolve_device("cpu") == "cpu"
    expected = "cuda" if mmcurate.build_info()["cuda_devices"] > 0 else "cpu"
    assert ops.resolve_device("auto") == expected
    try:
        ops.resolve_device("tpu")
    except ValueError as e:
        assert "device must be one of" in str(e)
    else:
        raise AssertionError("invalid device accepted")


def test_cli_info_prints_build_info_json():
    out = subprocess.run([sys.executable, "-m", "mmcurate.cli", "info"], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["version"] == mmcurate.__version__
