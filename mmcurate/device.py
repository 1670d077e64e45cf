"""The "auto" / "cpu" / "cuda" device choice, stated once for every backend (native kernels, faiss, torch).

A backend says how it counts GPUs and what to do when it has none; the rule is the same everywhere:
"cpu" -> "cpu"; "auto" -> "cuda" when the backend sees a GPU, else "cpu"; "cuda" (or "cuda:N" where the
backend takes an index) -> itself when the backend sees a GPU, else a RuntimeError saying what to do.
Nothing is imported or initialised here: a backend's GPU check runs only when the choice needs it.
"""

from __future__ import annotations

from typing import Callable

DEVICES = ("auto", "cpu", "cuda")


def check_device(device, allow_index: bool = False) -> str:
    """``device`` if it is one of DEVICES (or "cuda:N" with allow_index), else ValueError naming the choices."""
    if isinstance(device, str) and (device in DEVICES or (allow_index and device.startswith("cuda:"))):
        return device
    extra = " (or 'cuda:N')" if allow_index else ""
    raise ValueError(f"device must be one of {', '.join(DEVICES)}{extra}, got {device!r}")


def choose_device(
    device: str, has_gpu: Callable[[], bool], no_gpu: Callable[[], str], allow_index: bool = False
) -> str:
    """The device a backend runs on: see the module doc. ``has_gpu()`` is asked only for "auto" and "cuda";
    ``no_gpu()`` is the RuntimeError's message when "cuda" was asked for and there is none."""
    device = check_device(device, allow_index)
    if device == "cpu":
        return "cpu"
    if has_gpu():
        return "cuda" if device == "auto" else device
    if device == "auto":
        return "cpu"
    raise RuntimeError(no_gpu())
