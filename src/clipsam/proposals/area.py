"""Keep proposals by the share of the image they cover (label-free).

SaLIP (Aleem et al., CVPRW 2024) drops the large masks of "segment everything" (background,
the whole field of view) before CLIP retrieves the target among the rest; the paper sets that
limit per data set. Our defaults, 0.6 of the image at most and 0.2 % at least, fit no data set
and match :class:`clipsam.config.SalipConfig`.
"""

from __future__ import annotations

from clipsam.errors import InputError
from clipsam.proposals.result import Proposals

MAX_AREA_FRACTION = 0.6
MIN_AREA_FRACTION = 0.002


def area_filter(
    proposals: Proposals,
    max_fraction: float = MAX_AREA_FRACTION,
    min_fraction: float = MIN_AREA_FRACTION,
) -> Proposals:
    """The proposals covering at least ``min_fraction`` and at most ``max_fraction`` of the
    image, in their original order."""
    if not 0.0 <= min_fraction <= max_fraction:
        raise InputError(f"need 0 <= min_fraction <= max_fraction, got {min_fraction}, "
                         f"{max_fraction}")
    height, width = proposals.image_size
    share = proposals.areas / float(height * width)
    return proposals.take((share >= min_fraction) & (share <= max_fraction))
