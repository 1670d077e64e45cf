"""The DALI image loader: encoded bytes -> uint8 [n, S, S, 3] pixels for a model's preprocessing, decoded on
the GPU (``decoders.image(device="mixed")``: nvJPEG, hardware JPEG decoder where the GPU has one) and resized
and cropped there, so the pixels reach the model without a GPU -> host -> GPU round trip.

``device="cpu"`` builds the same graph with DALI's CPU operators (``device_id=None``, no GPU needed): the
CPU-only machines and the tests use it to check the graph and the bookkeeping.

Corrupt samples. One undecodable image makes DALI fail the whole batch and leaves the pipeline object
unusable (DALI #3913). So, per batch:

1. our native header probe runs first (no pixel decoding, microseconds per image): bytes that are not a
   JPEG/PNG/WebP, headers that do not parse and images over ``max_pixels`` are rejected with the probe's
   status and reason before DALI sees them. ``validate="full"`` also decodes every image with our CPU decoder
   at 1/8 scale (the whole entropy-coded stream is still read), which catches truncated files: DALI's decoders
   accept those silently and fill the missing rows. In the pipeline the ``integrity`` stage has done that
   already, which is why ``header`` is the default.
2. If DALI still fails the batch, the pipeline is rebuilt, the batch is decoded by our native CPU loader,
   whose per-sample status quarantines the bad samples with their reason, and the rest go through DALI
   again. Should DALI refuse the remainder too (bytes our decoder accepts and DALI does not), that batch
   keeps the native loader's pixels (copied to the device once). Nothing aborts the batch.

Geometry follows the weights' :class:`~mmcurate.models.Preprocess`: "shortest" = resize the shorter side to S
with antialiasing, then center-crop S x S (open_clip/torchvision's Resize + CenterCrop); "squash" = resize to
S x S. DALI's filters are not Pillow's bit for bit; embeddings agree with the native loader and open_clip's
own preprocess to cosine >= 0.995 (tests/test_dali_loader.py). Normalisation stays on the model's device
(:meth:`Preprocess.normalize`), as with the native loader.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator

import numpy as np

from mmcurate.models.cpu_loader import LoadedBatch, NativeImageLoader, Rejected, check_loader_args, prefetched_batches
from mmcurate.models.preprocess import Preprocess

__all__ = ["DaliImageLoader", "dali_available", "DaliUnavailableError", "VALIDATE_MODES"]

log = logging.getLogger(__name__)

#: "header": native header probe only; "full": also a full (1/8-scale) native decode of every image.
VALIDATE_MODES = ("header", "full")


class DaliUnavailableError(RuntimeError):
    """DALI is not installed (or cannot run on the requested device)."""


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def _import_dali():
    try:
        import nvidia.dali as dali
        import nvidia.dali.fn as fn
        import nvidia.dali.types as types
    except ImportError as exc:
        raise DaliUnavailableError(
            "the DALI loader needs NVIDIA DALI: pip install nvidia-dali-cuda130 (CUDA 13) or "
            "pip install 'mmcurate[dali]'; the native loader (loader: native) needs nothing extra"
        ) from exc
    return dali, fn, types


def _parse_device(device: str) -> int | None:
    """'cpu' -> None (DALI's CPU-only mode); 'cuda' / 'cuda:N' -> N."""
    if device == "cpu":
        return None
    if device == "cuda":
        return 0
    if isinstance(device, str) and device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")


class DaliImageLoader:
    """Same interface as :class:`NativeImageLoader` (``load`` / ``iter_batches`` yielding :class:`LoadedBatch`).

    ``pixels`` is a torch uint8 tensor on ``cuda:N`` for a GPU device, a numpy array for ``device="cpu"``.
    """

    def __init__(
        self,
        preprocess: Preprocess,
        batch_size: int = 256,
        device: str = "cuda",
        num_threads: int | None = None,
        max_pixels: int | None = None,
        exif: bool = True,
        validate: str = "header",
        prefetch: bool = True,
        hw_decoder_load: float = 0.65,
    ):
        from mmcurate.ops.decode import DEFAULT_MAX_PIXELS

        check_loader_args(preprocess, batch_size, num_threads)
        if validate not in VALIDATE_MODES:
            raise ValueError(f"validate must be one of {VALIDATE_MODES}, got {validate!r}")
        if not 0.0 <= float(hw_decoder_load) <= 1.0:
            raise ValueError(f"hw_decoder_load must be in [0, 1], got {hw_decoder_load!r}")
        self.device_id = _parse_device(device)
        self.device = "cpu" if self.device_id is None else f"cuda:{self.device_id}"
        _import_dali()  # fail at construction, with the install hint, rather than at the first batch
        if self.device_id is not None:
            import torch

            if not torch.cuda.is_available() or self.device_id >= torch.cuda.device_count():
                raise DaliUnavailableError(
                    f"the DALI loader was asked for {self.device} but torch sees "
                    f"{torch.cuda.device_count() if torch.cuda.is_available() else 0} "
                    "GPU(s); use device='cpu' or the native loader"
                )
        self.preprocess = preprocess
        self.batch_size = batch_size
        self.num_threads = num_threads or min(8, os.cpu_count() or 1)
        self.max_pixels = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
        self.exif = exif
        self.validate = validate
        self.prefetch = prefetch
        self.hw_decoder_load = float(hw_decoder_load)
        self._pipe = None
        # The fallback for batches DALI refuses: same preprocessing, full-size decode (no DCT scaling) so its
        # pixels are as close to DALI's as the filters allow.
        self._native = NativeImageLoader(
            preprocess,
            batch_size=batch_size,
            num_threads=num_threads,
            scaled_decode=False,
            max_pixels=self.max_pixels,
            exif=exif,
            prefetch=False,
        )
        self.stats = {"batches": 0, "dali_failures": 0, "native_fallback_batches": 0}

    def __repr__(self) -> str:
        return (
            f"DaliImageLoader(device={self.device!r}, batch_size={self.batch_size}, "
            f"validate={self.validate!r}, {self.preprocess})"
        )

    # -- the DALI graph --------------------------------------------------------------------------------------
    def _build(self):
        dali, fn, types = _import_dali()
        p = self.preprocess
        s = p.image_size
        gpu = self.device_id is not None
        interp = types.INTERP_CUBIC if p.interpolation == "bicubic" else types.INTERP_LINEAR

        @dali.pipeline_def(
            batch_size=self.batch_size,
            num_threads=self.num_threads,
            device_id=self.device_id,
            prefetch_queue_depth=1,
            exec_dynamic=True,
        )
        def graph():
            enc = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1, no_copy=False)
            # Per-sample geometry computed on the host from the header (see _geometry): exact torchvision
            # sizes and crop offsets, not DALI's own rounding of resize_shorter / crop_pos.
            size = fn.external_source(name="size", dtype=types.FLOAT, ndim=1)  # [h, w] after resize
            start = fn.external_source(name="start", dtype=types.INT32, ndim=1)  # [y, x] of the crop
            kw = {"hw_decoder_load": self.hw_decoder_load} if gpu else {}
            img = fn.decoders.image(
                enc, device="mixed" if gpu else "cpu", output_type=types.RGB, adjust_orientation=self.exif, **kw
            )
            img = fn.resize(img, resize_y=size[0], resize_x=size[1], interp_type=interp, antialias=True)
            return fn.slice(img, start=start, shape=[s, s], axis_names="HW")

        pipe = graph()
        pipe.build()
        return pipe

    def _geometry(self, hw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Displayed (h, w) per sample -> (resized [h, w] float32, crop start [y, x] int64), as torchvision's
        Resize(S) (longer side int(S * long / short)) + CenterCrop(S) (start int(round((side - S) / 2)))."""
        s = self.preprocess.image_size
        h, w = hw[:, 0].astype(np.int64), hw[:, 1].astype(np.int64)
        if self.preprocess.resize_mode == "squash":
            size = np.full((len(hw), 2), s, np.int64)
        else:
            short, long = np.minimum(h, w), np.maximum(h, w)
            new_long = (s * long) // short  # == int(s * long / short) for these magnitudes
            size = np.where(
                (w <= h)[:, None],
                np.stack([new_long, np.full_like(h, s)], 1),
                np.stack([np.full_like(h, s), new_long], 1),
            )
        # Python's round() is half-to-even: the crop offset torchvision's CenterCrop uses.
        start = np.array([[round((a - s) / 2.0), round((b - s) / 2.0)] for a, b in size], np.int32).reshape(-1, 2)
        return size.astype(np.float32), start

    def _run_dali(self, blobs: list, hw: np.ndarray):
        """Pixels for blobs (all must decode), or raise whatever DALI raised (the pipeline is then dropped).
        hw: the displayed (after EXIF orientation) (h, w) of each blob."""
        if self._pipe is None:
            self._pipe = self._build()
        try:
            size, start = self._geometry(hw)
            self._pipe.feed_input("encoded", [np.frombuffer(b, np.uint8) for b in blobs])
            self._pipe.feed_input("size", list(size))
            self._pipe.feed_input("start", list(start))
            (out,) = self._pipe.run()
            return self._to_output(out)
        except Exception:
            self._pipe = None  # DALI marks the pipeline object invalid after an error
            raise

    def _to_output(self, out):
        s = self.preprocess.image_size
        if self.device_id is None:
            return np.ascontiguousarray(out.as_array()).reshape(len(out), s, s, 3)
        import torch
        from nvidia.dali.plugin.pytorch import feed_ndarray

        dense = out.as_tensor()
        t = torch.empty((len(out), s, s, 3), dtype=torch.uint8, device=self.device)
        # Copies device to device on torch's current stream after DALI's work on its own stream is done.
        feed_ndarray(dense, t, cuda_stream=torch.cuda.current_stream(t.device))
        return t

    def _empty(self):
        s = self.preprocess.image_size
        if self.device_id is None:
            return np.empty((0, s, s, 3), np.uint8)
        import torch

        return torch.empty((0, s, s, 3), dtype=torch.uint8, device=self.device)

    def _upload(self, pixels: np.ndarray):
        if self.device_id is None:
            return pixels
        import torch

        return torch.from_numpy(np.ascontiguousarray(pixels)).pin_memory().to(self.device, non_blocking=True)

    # -- screening -------------------------------------------------------------------------------------------
    def _screen(self, blobs: list, offset: int) -> tuple[np.ndarray, list, np.ndarray]:
        """(positions that may go to DALI, rejections, displayed (h, w) of every blob) from the native probe
        (and full decode)."""
        from mmcurate.ops import Status, decode_images, probe_images

        status, errors, _formats, sizes, orientation = probe_images(blobs, with_errors=True)
        hw = sizes.astype(np.int64)
        if self.exif:  # orientations 5-8 transpose the image
            t = orientation >= 5
            hw[t] = hw[t][:, ::-1]
        status = status.astype(np.int64)
        reasons = list(errors)
        if self.max_pixels:
            big = (status == Status.ok) & (sizes[:, 0].astype(np.int64) * sizes[:, 1] > self.max_pixels)
            for i in np.flatnonzero(big):
                status[i] = Status.too_large
                reasons[i] = (
                    f"{int(sizes[i, 1])}x{int(sizes[i, 0])} = {int(sizes[i, 0]) * int(sizes[i, 1]):,} "
                    f"pixels > max_pixels {self.max_pixels:,}"
                )
        if self.validate == "full":
            cand = np.flatnonzero(status == Status.ok)
            if cand.size:
                res = decode_images(
                    [blobs[i] for i in cand],
                    mode="luma",
                    device="cpu",
                    target_size=1,
                    max_pixels=self.max_pixels,
                    exif=False,
                    fast=True,
                    num_threads=self.num_threads,
                )
                for j in np.flatnonzero(~res.ok):
                    status[cand[j]] = int(res.status[j])
                    reasons[cand[j]] = res.errors[j]
        ok = np.flatnonzero(status == Status.ok)
        rejected = [
            Rejected(offset + int(i), Status(int(status[i])).name, reasons[i] or Status(int(status[i])).name)
            for i in np.flatnonzero(status != Status.ok)
        ]
        return ok, rejected, hw

    # -- public API ------------------------------------------------------------------------------------------
    def load(self, blobs, offset: int = 0) -> LoadedBatch:
        """Decode and preprocess one batch (any length: DALI runs it batch_size at a time); indices are
        offset + position in blobs."""
        blobs = [b"" if b is None else b for b in blobs]
        if len(blobs) <= self.batch_size:
            return self._load_one(blobs, offset)
        parts = [
            self._load_one(blobs[i : i + self.batch_size], offset + i) for i in range(0, len(blobs), self.batch_size)
        ]
        if self.device_id is None:
            pixels = np.concatenate([b.pixels for b in parts])
        else:
            import torch

            pixels = torch.cat([b.pixels for b in parts])
        return LoadedBatch(pixels, np.concatenate([b.indices for b in parts]), [r for b in parts for r in b.rejected])

    def _load_one(self, blobs: list, offset: int) -> LoadedBatch:
        self.stats["batches"] += 1
        ok, rejected, hw = self._screen(blobs, offset)
        if ok.size == 0:
            return LoadedBatch(self._empty(), np.empty(0, np.int64), rejected)
        try:
            pixels = self._run_dali([blobs[i] for i in ok], hw[ok])
            return LoadedBatch(pixels, (ok + offset).astype(np.int64), rejected)
        except Exception as exc:  # noqa: BLE001 - DALI raises RuntimeError/IndexError; any failure takes the same way out
            self.stats["dali_failures"] += 1
            log.warning(
                "DALI failed on a batch (%s); quarantining per sample with the native decoder",
                str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else type(exc).__name__,
            )
        native = self._native.load([blobs[i] for i in ok], 0)
        rejected += [Rejected(offset + int(ok[r.index]), r.status, r.reason) for r in native.rejected]
        good = ok[native.indices]
        if good.size == 0:
            return LoadedBatch(self._empty(), np.empty(0, np.int64), sorted(rejected, key=lambda r: r.index))
        rejected.sort(key=lambda r: r.index)
        try:
            pixels = self._run_dali([blobs[i] for i in good], hw[good])
        except Exception:  # noqa: BLE001 - whatever DALI raises, the native loader's pixels stand in
            self.stats["native_fallback_batches"] += 1
            log.warning("DALI refused bytes the native decoder accepts; this batch uses the native loader's pixels")
            pixels = self._upload(native.pixels)
        return LoadedBatch(pixels, (good + offset).astype(np.int64), rejected)

    def iter_batches(self, blobs: Iterable) -> Iterator[LoadedBatch]:
        """Batches of batch_size inputs in order; with prefetch the next batch is decoded while the caller
        works on the current one."""
        load = self._load_synced if self.prefetch else self.load
        return prefetched_batches(load, blobs, self.batch_size, self.prefetch, "mmcurate-dali")

    def _load_synced(self, chunk, offset):
        b = self.load(chunk, offset)
        if self.device_id is not None:
            import torch

            # The consumer runs on another thread (another current stream): finish the copies first.
            torch.cuda.current_stream(self.device).synchronize()
        return b
