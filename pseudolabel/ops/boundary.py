"""Mask boundary bands for Boundary IoU (Cheng et al., CVPR 2021)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

DILATION_RATIO = 0.02  # band width as a fraction of the image diagonal (Cheng et al. 2021)


def boundary_width(height: int, width: int, ratio: float = DILATION_RATIO) -> int:
    """max(1, round(ratio * image diagonal)) pixels."""
    return max(1, int(round(ratio * float(np.hypot(height, width)))))


def boundary_band(mask: np.ndarray, width_px: int) -> np.ndarray:
    """Pixels of ``mask`` within ``width_px`` (chessboard distance) of its outside.

    Pixels beyond the image border count as outside, as in the reference implementation
    (zero padding, then 3x3 erosion ``width_px`` times). Only the mask's bounding box is
    processed, since the band lies inside it. Input and output are ``(H, W)`` bool.
    """
    band = np.zeros(mask.shape, dtype=bool)
    rows = np.flatnonzero(mask.any(axis=1))
    if len(rows) == 0:
        return band
    cols = np.flatnonzero(mask.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = np.pad(mask[r0:r1, c0:c1], 1)
    # distance_transform_cdt gives each foreground pixel's chessboard distance to background;
    # eroding k times with a 3x3 square removes exactly the pixels at distance <= k.
    dist = ndimage.distance_transform_cdt(crop, metric="chessboard")[1:-1, 1:-1]
    band[r0:r1, c0:c1] = (dist > 0) & (dist <= width_px)
    return band
