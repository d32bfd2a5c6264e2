"""clipsam's built-in offline text-grounding model (the default text stage)."""

from clipsam.models.grounding.heads import GroundingHeads, HeadsConfig
from clipsam.models.grounding.model import (
    GroundingModel,
    PresenceRule,
    builtin_model_dir,
    load_grounding_model,
)
from clipsam.models.grounding.text_encoder import SentenceEncoder

__all__ = ["GroundingHeads", "GroundingModel", "HeadsConfig", "PresenceRule", "SentenceEncoder",
           "builtin_model_dir", "load_grounding_model"]
