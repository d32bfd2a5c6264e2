"""Which device the models of a run use: ``auto``, ``cpu`` or ``cuda``.

``auto`` is CUDA when torch sees a CUDA device, else the CPU. Asking for ``cuda`` on a machine
without one is an error, never a silent run on the CPU. Loaders move their torch modules to the
resolved device and report the device they actually use in their ``device`` attribute.
"""

from __future__ import annotations

from clipsam.config import DEVICES
from clipsam.errors import InputError


def resolve_device(requested: str) -> str:
    """``"cpu"`` or ``"cuda"`` for a requested device (see the module notes)."""
    if requested not in DEVICES:
        raise InputError(f"unknown device {requested!r}; choose one of {', '.join(DEVICES)}")
    if requested == "cpu":
        return "cpu"
    import torch

    available = torch.cuda.is_available()
    if requested == "cuda" and not available:
        raise InputError("device 'cuda' requested but torch sees no CUDA device on this "
                         "machine; use device 'cpu' or 'auto'")
    return "cuda" if available else "cpu"


def module_device(module: object) -> str:
    """The device of a torch module's first parameter (``"cpu"``, ``"cuda:0"``...)."""
    first = next(module.parameters(), None)  # type: ignore[attr-defined]
    return "cpu" if first is None else str(first.device)
