"""CUDA kernels: parity with their CPU twins, GPU array interop, nvJPEG decode with per-sample fallback.

Tests marked needs_cuda run only with a CUDA build and a visible GPU (conftest skips them otherwise). The
others check what a machine without one must do: report 0 devices, resolve "auto" to the CPU, and raise an
error that says what to do when a GPU entry point is called anyway.
"""

from __future__ import annotations

import numpy as np
import pytest

import data_gen as g
from conftest import CUDA_AVAILABLE, encode
from mmcurate._native import native
from mmcurate.ops import Status

needs_cuda = pytest.mark.needs_cuda


def _built_with_cuda() -> bool:
    return bool(native().native_build_info()["cuda"])


def _torch_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    return torch


# ------------------------------------------------------------------------------------------ no GPU here
@pytest.mark.skipif(CUDA_AVAILABLE, reason="a GPU is visible")
def test_no_gpu_reports_zero_devices_and_auto_resolves_to_cpu():
    from mmcurate.ops import resolve_device

    assert native().cuda_device_count() == 0
    assert resolve_device("auto") == "cpu"
    with pytest.raises(RuntimeError):
        resolve_device("cuda")


@pytest.mark.skipif(CUDA_AVAILABLE, reason="a GPU is visible")
@pytest.mark.parametrize(
    "call",
    ["to_device", "hamming_pairs", "hamming_knn", "decode_images", "resize_images", "hash_images", "phash_bytes"],
)
def test_gpu_entry_points_say_what_to_do_without_gpu(call):
    from mmcurate.ops import _cuda

    codes = np.arange(8, dtype=np.uint64)
    calls = {
        "to_device": lambda: _cuda.to_device(codes),
        "hamming_pairs": lambda: _cuda.hamming_pairs(codes, 3),
        "hamming_knn": lambda: _cuda.hamming_knn(codes, 2, None),
        "decode_images": lambda: _cuda.decode_images([b"\xff\xd8"], "RGB", None, 0, True),
        "resize_images": lambda: _cuda.resize_images([np.zeros((4, 4, 3), np.uint8)], 2, "bicubic", "squash"),
        "hash_images": lambda: _cuda.hash_images([np.zeros((4, 4, 3), np.uint8)], "phash"),
        "phash_bytes": lambda: _cuda.phash_bytes([b"\xff\xd8"], True),
    }
    expected = "no CUDA device" if _built_with_cuda() else "rebuild with nvcc on PATH and MMCURATE_CUDA=1"
    with pytest.raises(RuntimeError, match=expected):
        calls[call]()


def test_every_build_exposes_the_gpu_symbols():
    C = native()
    for name in (
        "DeviceArray",
        "cuda_device_count",
        "cuda_hamming_pairs",
        "cuda_hamming_knn",
        "cuda_decode_images",
        "cuda_nvjpeg_load",
        "cuda_resize_images",
        "cuda_hash_images",
        "cuda_phash_bytes",
        "cuda_pdq_images",
    ):
        assert hasattr(C, name), name
    info = C.cuda_nvjpeg_load([])
    assert set(info) == {"compiled", "loaded", "path", "error", "version", "hardware_backend"}
    if not _built_with_cuda():
        assert not info["loaded"] and "without CUDA" in info["error"]


# ------------------------------------------------------------------------------------------ DeviceArray
@needs_cuda
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.int64, np.uint64, np.float32])
def test_device_array_host_round_trip_and_interface(dtype):
    from mmcurate.ops import _cuda

    host = (np.arange(2 * 3 * 5) * 7 % 251).astype(dtype).reshape(2, 3, 5)
    dev = _cuda.to_device(host)
    assert dev.shape == host.shape and dev.dtype == host.dtype and dev.nbytes == host.nbytes
    np.testing.assert_array_equal(dev.numpy(), host)
    np.testing.assert_array_equal(np.asarray(dev), host)
    cai = dev.__cuda_array_interface__
    assert cai["version"] == 3 and cai["shape"] == host.shape and cai["strides"] is None
    assert np.dtype(cai["typestr"]) == host.dtype
    assert cai["data"][0] == dev.ptr and cai["data"][1] is False
    assert cai["stream"] is None  # produced on an owned stream, synchronised
    assert dev.__dlpack_device__() == (2, dev.device)
    # A device-to-device copy through our own CAI reader.
    np.testing.assert_array_equal(_cuda.to_device(dev).numpy(), host)


@needs_cuda
def test_device_array_with_torch_both_ways():
    torch = _torch_cuda()
    from mmcurate.ops import _cuda

    host = np.random.default_rng(0).integers(0, 255, size=(4, 6, 3), dtype=np.uint8)
    dev = _cuda.to_device(host)
    t = torch.from_dlpack(dev)  # DLPack export, zero copy
    assert t.is_cuda and t.dtype == torch.uint8 and tuple(t.shape) == host.shape
    assert t.data_ptr() == dev.ptr
    np.testing.assert_array_equal(t.cpu().numpy(), host)
    t2 = torch.as_tensor(dev, device="cuda")  # __cuda_array_interface__
    np.testing.assert_array_equal(t2.cpu().numpy(), host)
    del dev  # the consumer keeps the memory alive
    torch.cuda.synchronize()
    np.testing.assert_array_equal(t.cpu().numpy(), host)

    # Inputs: CAI tensors (contiguous and strided) and a stream handed in by the caller.
    src = torch.arange(60, dtype=torch.int64, device="cuda").reshape(6, 10)
    np.testing.assert_array_equal(_cuda.to_device(src).numpy(), src.cpu().numpy())
    strided = src[:, ::3]
    np.testing.assert_array_equal(_cuda.to_device(strided).numpy(), strided.cpu().numpy())
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        y = src * 2
        out = _cuda.to_device(y, stream=s.cuda_stream)
    assert out.__cuda_array_interface__["stream"] == s.cuda_stream  # pending work is advertised
    np.testing.assert_array_equal(out.numpy(), (src * 2).cpu().numpy())


# ------------------------------------------------------------------------------------------ Hamming
def _codes_with_near_duplicates(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 2**63, size=n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, n, dtype=np.uint64)
    # Plant near-duplicates (1..6 flipped bits) and exact duplicates so every radius has work to do.
    src = rng.integers(0, n, size=n // 4)
    dst = rng.integers(0, n, size=n // 4)
    for s, d in zip(src, dst):
        flips = rng.choice(64, size=rng.integers(0, 7), replace=False)
        mask = np.uint64(0)
        for b in flips:
            mask |= np.uint64(1) << np.uint64(b)
        codes[d] = codes[s] ^ mask
    return codes


@needs_cuda
@pytest.mark.parametrize("radius", [0, 3, 10])
def test_hamming_pairs_match_cpu(radius):
    from mmcurate.ops import _cuda, hamming_pairs

    codes = _codes_with_near_duplicates(3000)
    ref_pairs, ref_dist = hamming_pairs(codes, radius, device="cpu")
    pairs, dist = _cuda.hamming_pairs(codes, radius)
    assert pairs.dtype == np.int64 and dist.dtype == np.uint8 and pairs.shape == (len(dist), 2)
    assert len(ref_dist) > 0
    np.testing.assert_array_equal(pairs, ref_pairs)
    np.testing.assert_array_equal(dist, ref_dist)
    # The op dispatches to the same kernel.
    p2, d2 = hamming_pairs(codes, radius, device="cuda")
    np.testing.assert_array_equal(p2, ref_pairs)
    np.testing.assert_array_equal(d2, ref_dist)


@needs_cuda
def test_hamming_pairs_overflow_rerun_and_device_input():
    from mmcurate.ops import _cuda, hamming_pairs

    # 600 identical codes: 179,700 pairs, more than the first output guess (65,536), forcing the re-run.
    codes = np.concatenate([np.full(600, 0x0123456789ABCDEF, dtype=np.uint64), _codes_with_near_duplicates(400, 1)])
    ref_pairs, ref_dist = hamming_pairs(codes, 2, device="cpu")
    assert len(ref_dist) > 65536
    pairs, dist = _cuda.hamming_pairs(_cuda.to_device(codes), 2)
    np.testing.assert_array_equal(pairs, ref_pairs)
    np.testing.assert_array_equal(dist, ref_dist)


@needs_cuda
@pytest.mark.parametrize("k", [1, 5, 40])
def test_hamming_knn_self_matches_cpu(k):
    from mmcurate.ops import _cuda, hamming_knn

    codes = _codes_with_near_duplicates(2000, 2)
    ref_d, ref_i = hamming_knn(codes, k, device="cpu")
    d, i = _cuda.hamming_knn(codes, k, None)
    assert d.dtype == np.int32 and i.dtype == np.int64 and d.shape == (2000, k)
    np.testing.assert_array_equal(d, ref_d)
    np.testing.assert_array_equal(i, ref_i)
    assert not np.any(i == np.arange(2000)[:, None])  # never its own neighbour


@needs_cuda
def test_hamming_knn_queries_padding_and_torch_input():
    from mmcurate.ops import _cuda, hamming_knn

    codes = _codes_with_near_duplicates(50, 3)
    queries = _codes_with_near_duplicates(30, 4)
    for k in (7, 50, 64):  # 64 > n: padded with -1 / -1
        ref_d, ref_i = hamming_knn(codes, k, queries, device="cpu")
        d, i = _cuda.hamming_knn(codes, k, queries)
        np.testing.assert_array_equal(d, ref_d)
        np.testing.assert_array_equal(i, ref_i)
    d, i = _cuda.hamming_knn(codes, 60, None)  # self-search: 49 candidates, 11 pads
    assert np.all(d[:, 49:] == -1) and np.all(i[:, 49:] == -1)


@needs_cuda
def test_hamming_knn_takes_torch_int64_codes():
    torch = _torch_cuda()
    from mmcurate.ops import _cuda, hamming_knn

    codes = _codes_with_near_duplicates(500, 5)
    t = torch.from_numpy(codes.view(np.int64)).cuda()  # int64 on the device: the same bits
    ref_d, ref_i = hamming_knn(codes, 5, device="cpu")
    d, i = _cuda.hamming_knn(t, 5, None)
    np.testing.assert_array_equal(d, ref_d)
    np.testing.assert_array_equal(i, ref_i)


# ------------------------------------------------------------------------------------------ resize, hashes
INTERPOLATIONS = ["nearest", "area", "bilinear", "hamming", "bicubic", "lanczos"]


def _with_alpha(rgb: np.ndarray) -> np.ndarray:
    h, w, _ = rgb.shape
    alpha = ((np.add.outer(np.arange(h), np.arange(w)) * 255) // max(h + w - 2, 1)).astype(np.uint8)
    alpha[: h // 4, : w // 4] = 0  # fully transparent corner: colour must not bleed out of it
    return np.dstack([rgb, alpha])


@needs_cuda
@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_resize_matches_cpu_bit_exact(photos_rgb, interpolation):
    from mmcurate.ops import _cuda, resize_images

    ragged = photos_rgb[:6]
    for mode, size in [("shortest", 224), ("shortest", 37), ("squash", (96, 160)), ("squash", (600, 700))]:
        ref = resize_images(ragged, size, interpolation, mode, device="cpu")
        out = _cuda.resize_images(ragged, size, interpolation, mode)
        assert isinstance(out, np.ndarray) and out.dtype == np.uint8
        np.testing.assert_array_equal(out, ref, err_msg=f"{interpolation} {mode} {size}")


@needs_cuda
@pytest.mark.parametrize("channels", [1, 2, 4])
def test_resize_gray_and_alpha_match_cpu(photos_rgb, channels):
    from mmcurate.ops import _cuda, resize_images, to_gray

    rgb = photos_rgb[:4]
    if channels == 4:
        images = [_with_alpha(a) for a in rgb]
    else:
        gray = to_gray(rgb)
        images = gray if channels == 1 else [np.dstack([g_, _with_alpha(a)[..., 3]]) for g_, a in zip(gray, rgb)]
    for interpolation in ("bicubic", "lanczos", "nearest"):
        ref = resize_images(images, 64, interpolation, "shortest", device="cpu")
        np.testing.assert_array_equal(_cuda.resize_images(images, 64, interpolation, "shortest"), ref)


@needs_cuda
def test_resize_batch_array_and_device_inputs():
    from mmcurate.ops import _cuda, resize_images

    batch = np.stack([g.photo_like(120, 90, seed=s) for s in range(5)])  # (N, H, W, C)
    ref = resize_images(batch, 48, "bicubic", "shortest", device="cpu")
    np.testing.assert_array_equal(_cuda.resize_images(batch, 48, "bicubic", "shortest"), ref)
    dev = _cuda.resize_images(_cuda.to_device(batch), 48, "bicubic", "shortest")
    assert not isinstance(dev, np.ndarray) and dev.shape == ref.shape  # GPU in, GPU out
    np.testing.assert_array_equal(dev.numpy(), ref)
    dev_list = _cuda.resize_images([_cuda.to_device(b) for b in batch], 48, "bicubic", "shortest")
    np.testing.assert_array_equal(dev_list.numpy(), ref)


@needs_cuda
@pytest.mark.parametrize("kind", ["phash", "dhash", "ahash", "whash"])
def test_hashes_match_cpu_bit_exact(photos_rgb, kind):
    import mmcurate.ops as ops
    from mmcurate.ops import _cuda

    cpu_hash = getattr(ops, kind)
    rng = np.random.default_rng(11)
    ragged = list(photos_rgb) + [
        rng.integers(0, 256, (33, 47, 3), dtype=np.uint8),
        rng.integers(0, 256, (300, 20), dtype=np.uint8),
        _with_alpha(photos_rgb[0][:100, :140]),
    ]
    np.testing.assert_array_equal(_cuda.hash_images(ragged, kind), cpu_hash(ragged, device="cpu"))
    batch = np.stack([g.photo_like(96, 128, seed=s) for s in range(6)])
    np.testing.assert_array_equal(_cuda.hash_images(batch, kind), cpu_hash(batch, device="cpu"))
    np.testing.assert_array_equal(_cuda.hash_images(_cuda.to_device(batch), kind), cpu_hash(batch, device="cpu"))


@needs_cuda
def test_phash_bytes_close_to_cpu_with_equal_statuses(photos_rgb):
    from mmcurate.ops import _cuda, hamming_distance, phash_bytes

    blobs = [encode(p, "JPEG", quality=90) for p in photos_rgb]
    blobs += [encode(photos_rgb[0], "PNG"), b"", b"garbage" * 20, blobs[0][: len(blobs[0]) // 3]]
    for exact, bound in ((True, 4), (False, 8)):
        ref_codes, ref_status = phash_bytes(blobs, exact=exact, device="cpu")
        codes, status = _cuda.phash_bytes(blobs, exact)
        np.testing.assert_array_equal(status, ref_status)
        ok = status == 0
        assert np.all(codes[~ok] == 0)
        dist = hamming_distance(codes[ok], ref_codes[ok])
        assert dist.max() <= bound, f"exact={exact}: distances {dist.tolist()}"
        png = len(photos_rgb)  # decoded by the CPU fallback: the same pixels, the same code
        assert codes[png] == ref_codes[png]


# ------------------------------------------------------------------------------------------ decode
JPEG_MEAN_TOL, JPEG_MAX_TOL = 2.0, 4  # nvJPEG vs libjpeg-turbo colour conversion (DALI uses the same bound)


def _cpu_decode(blobs, **kw):
    from mmcurate.ops import decode_images

    return decode_images(blobs, device="cpu", **kw)


def _gpu_decode(blobs, mode="RGB", target_size=None, max_pixels=89478485, exif=True):
    from mmcurate.ops import _cuda

    return _cuda.decode_images(blobs, mode, target_size, max_pixels, exif)


def _assert_close(gpu_img, cpu_img, what, mean_tol=JPEG_MEAN_TOL, max_tol=JPEG_MAX_TOL):
    a = gpu_img.numpy() if hasattr(gpu_img, "numpy") else np.asarray(gpu_img)
    assert a.shape == cpu_img.shape, what
    diff = np.abs(a.astype(np.int16) - cpu_img.astype(np.int16))
    assert diff.mean() <= mean_tol and diff.max() <= max_tol, f"{what}: mean {diff.mean():.3f} max {diff.max()}"


@needs_cuda
@pytest.mark.parametrize("mode", ["RGB", "L", "luma"])
def test_nvjpeg_decode_matches_cpu_on_photos(photos_rgb, mode):
    blobs = [encode(p, "JPEG", quality=90) for p in photos_rgb]
    blobs += [encode(p, "JPEG", quality=85, progressive=True) for p in photos_rgb[:3]]
    blobs += [encode(p, "JPEG", quality=95, subsampling=0) for p in photos_rgb[:3]]
    cpu = _cpu_decode(blobs, mode=mode)
    gpu = _gpu_decode(blobs, mode=mode)
    np.testing.assert_array_equal(gpu.status, cpu.status)
    assert gpu.formats == cpu.formats == ["jpeg"] * len(blobs)
    np.testing.assert_array_equal(gpu.source_sizes, cpu.source_sizes)
    for k, (gi, ci) in enumerate(zip(gpu.images, cpu.images)):
        _assert_close(gi, ci, f"{mode} sample {k}")


@needs_cuda
def test_nvjpeg_decode_variants_and_orientations():
    rgb = g.photo_like(96, 160, seed=5)
    variants = g.jpeg_variants(rgb)
    names = list(variants)
    blobs = list(variants.values()) + [g.with_orientation(rgb, "JPEG", o, quality=92) for o in range(1, 9)]
    cpu = _cpu_decode(blobs)
    gpu = _gpu_decode(blobs)
    np.testing.assert_array_equal(gpu.status, cpu.status)
    np.testing.assert_array_equal(gpu.orientation, cpu.orientation)
    for k, (gi, ci) in enumerate(zip(gpu.images, cpu.images)):
        name = names[k] if k < len(names) else f"orientation {k - len(names) + 1}"
        # CMYK is decoded by the CPU fallback and uploaded: identical.
        _assert_close(gi, ci, name, *((0, 0) if name == "cmyk" else (JPEG_MEAN_TOL, JPEG_MAX_TOL)))


@needs_cuda
def test_mixed_batch_keeps_per_sample_statuses():
    rgb = g.photo_like(64, 80, seed=7)
    good = encode(rgb, "JPEG", quality=90)
    blobs = [
        good,
        b"",  # empty
        b"not an image at all" * 10,  # unknown format
        good[: len(good) // 2],  # truncated JPEG
        good[:2] + bytes(100) + good[102:],  # corrupt header (markers overwritten)
        encode(rgb, "PNG"),  # PNG: CPU fallback
        g.jpeg_variants(rgb)["cmyk"],  # CMYK JPEG: CPU fallback
        g.with_precision(good, 12),  # 12-bit JPEG
        g.with_declared_size(good, 40000, 40000),  # too_large from the header
        None,
        good,
    ]
    cpu = _cpu_decode(blobs)
    gpu = _gpu_decode(blobs)
    assert len(gpu) == len(blobs)
    np.testing.assert_array_equal(gpu.status, cpu.status)
    assert gpu.errors == cpu.errors
    assert gpu.formats == cpu.formats
    np.testing.assert_array_equal(gpu.source_sizes, cpu.source_sizes)
    np.testing.assert_array_equal(gpu.orientation, cpu.orientation)
    assert gpu.status[0] == Status.ok and gpu.status[1] == Status.empty and gpu.status[8] == Status.too_large
    for k, (gi, ci, st) in enumerate(zip(gpu.images, cpu.images, cpu.status)):
        if st != Status.ok:
            assert gi is None, k
        else:
            _assert_close(gi, ci, f"sample {k}")


@needs_cuda
def test_nvjpeg_decode_target_size_gives_the_cpu_shapes(photos_rgb):
    blobs = [encode(p, "JPEG", quality=90) for p in photos_rgb[:4]]
    blobs.append(g.with_orientation(photos_rgb[0], "JPEG", 6, quality=90))
    for size in [(64, 64), (100, 37)]:
        cpu = _cpu_decode(blobs, target_size=size)
        gpu = _gpu_decode(blobs, target_size=size)
        for gi, ci in zip(gpu.images, cpu.images):
            # DCT-domain scaling is approximated by area averaging on the GPU: same size, close pixels.
            _assert_close(gi, ci, f"target {size}", mean_tol=4.0, max_tol=255)


@needs_cuda
def test_decode_dispatch_and_device_outputs():
    from mmcurate.ops import decode_images

    rgb = g.photo_like(48, 64, seed=9)
    res = decode_images([encode(rgb, "JPEG", quality=90)], device="cuda")
    img = res.images[0]
    assert img.shape == (48, 64, 3) and img.dtype == np.uint8
    assert img.__cuda_array_interface__["data"][0] == img.ptr
