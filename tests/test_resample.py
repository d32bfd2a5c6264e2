"""The numpy bilinear resampling of the ONNX path against torch's interpolate (the reference)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipsam.models.resample import resize_bilinear


@pytest.mark.parametrize(("source", "target", "antialias"), [
    ((1000, 800), (256, 205), True),   # downscale, the image path
    ((300, 500), (154, 256), True),
    ((100, 80), (256, 205), True),     # upscale with antialias
    ((1, 7), (3, 20), True),
    ((256, 256), (1000, 800), False),  # logits back to the original size
    ((200, 170), (120, 90), False),    # a small original: logits downscaled
    ((37, 256), (500, 3000), False),
])
def test_resize_matches_torch_interpolate(source, target, antialias):
    planes = np.random.default_rng(0).random((3, *source), dtype=np.float32) * 255
    reference = F.interpolate(torch.from_numpy(planes)[None], size=target, mode="bilinear",
                              align_corners=False, antialias=antialias)[0].numpy()
    ours = resize_bilinear(planes, target, antialias)
    assert ours.shape == reference.shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, rtol=0, atol=255 * 1e-5)


def test_same_size_is_a_copy():
    planes = np.ones((2, 4, 5), np.float32)
    out = resize_bilinear(planes, (4, 5), antialias=True)
    out[0, 0, 0] = 7
    assert planes[0, 0, 0] == 1
