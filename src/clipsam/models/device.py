"""Which device the models of a run use: ``auto``, ``cpu`` or ``cuda``.

``auto`` is CUDA when torch sees a CUDA device, else the CPU; on a machine that cannot have one
(no NVIDIA driver loaded on Linux, macOS) it is the CPU without importing torch, so the ONNX
path starts fast. Asking for ``cuda`` on a machine
without one is an error, never a silent run on the CPU. Loaders move their torch modules to the
resolved device and report the device they actually use in their ``device`` attribute.
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path

from clipsam.config import DEVICES
from clipsam.errors import InputError

NVIDIA_DRIVER = "/proc/driver/nvidia/version"  # present while the NVIDIA kernel module is loaded


def resolve_device(requested: str) -> str:
    """``"cpu"`` or ``"cuda"`` for a requested device (see the module notes)."""
    if requested not in DEVICES:
        raise InputError(f"unknown device {requested!r}; choose one of {', '.join(DEVICES)}")
    if requested == "cpu" or (requested == "auto" and not cuda_possible()):
        return "cpu"
    import torch

    available = torch.cuda.is_available()
    if requested == "cuda" and not available:
        raise InputError("device 'cuda' requested but torch sees no CUDA device on this "
                         "machine; use device 'cpu' or 'auto'")
    return "cuda" if available else "cpu"


def cuda_possible() -> bool:
    """False when this machine cannot have a CUDA device: macOS, or Linux (not WSL) with no
    NVIDIA kernel driver loaded. Decided without importing torch."""
    if sys.platform == "darwin":
        return False
    if sys.platform.startswith("linux") and "microsoft" not in platform.release().lower():
        return Path(NVIDIA_DRIVER).exists()
    return True


def module_device(module: object) -> str:
    """The device of a torch module's first parameter (``"cpu"``, ``"cuda:0"``...)."""
    first = next(module.parameters(), None)  # type: ignore[attr-defined]
    return "cpu" if first is None else str(first.device)


def use_torch_threads(threads: int | None) -> None:
    """Set torch's intra-op threads (process-wide) when ``threads`` is given."""
    if threads:
        import torch

        torch.set_num_threads(threads)
