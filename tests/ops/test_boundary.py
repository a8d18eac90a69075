import numpy as np
import pytest
from scipy import ndimage

from pseudolabel.ops.boundary import boundary_band, boundary_width


def _reference(mask, width):
    # Cheng et al.'s definition: zero-pad, erode with a 3x3 square `width` times, subtract.
    padded = np.pad(mask, 1)
    eroded = ndimage.binary_erosion(padded, np.ones((3, 3)), iterations=width)[1:-1, 1:-1]
    return mask & ~eroded


@pytest.mark.parametrize("width", [1, 2, 5])
def test_matches_repeated_erosion_on_random_masks(width):
    rng = np.random.default_rng(width)
    for _ in range(5):
        m = ndimage.binary_opening(rng.random((40, 50)) > 0.4)
        np.testing.assert_array_equal(boundary_band(m, width), _reference(m, width))


def test_square_ring_and_border_contact():
    m = np.zeros((10, 10), bool)
    m[2:8, 2:8] = True
    band = boundary_band(m, 1)
    assert band.sum() == 36 - 16  # 6x6 square minus its 4x4 interior
    full = np.ones((6, 6), bool)  # touching every image border: the border counts as outside
    assert boundary_band(full, 1).sum() == 36 - 16
    assert boundary_band(np.zeros((4, 4), bool), 3).sum() == 0


def test_width_from_diagonal():
    assert boundary_width(480, 640) == 16  # round(0.02 * 800)
    assert boundary_width(10, 10) == 1     # at least one pixel
