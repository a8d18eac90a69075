"""COCO-N noise operations on hand-built masks (seed 003 §3.1-3.3)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk
from skimage.measure import euler_number

from pseudolabel.noise import (
    LEVELS,
    NoiseSpec,
    apply_spatial,
    approximation_noise,
    fill_rings,
    flip_class,
    localization_noise,
    mask_rings,
    parse_spec,
    plan_noise,
    scale_noise,
)


def square(h=40, w=40, y0=10, x0=10, s=12):
    m = np.zeros((h, w), bool)
    m[y0:y0 + s, x0:x0 + s] = True
    return m


def disc(h=60, w=60, c=(30, 30), r=15):
    m = np.zeros((h, w), bool)
    m[disk(c, r, shape=(h, w))] = True
    return m


def ring(h=60, w=60, c=(30, 30), r_out=20, r_in=8):
    return disc(h, w, c, r_out) & ~disc(h, w, c, r_in)


def at_border():
    m = np.zeros((30, 30), bool)
    m[0:12, 0:9] = True  # touches the top and left image borders
    return m


def two_pixels():
    m = np.zeros((10, 10), bool)
    m[4, 4:6] = True
    return m


def iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def holes(mask):
    """Number of holes: components minus the Euler number (8-connected foreground)."""
    from skimage.measure import label

    return int(label(mask, connectivity=2).max() - euler_number(mask, connectivity=2))


MASKS = {"square": square, "disc": disc, "ring": ring, "border": at_border, "two": two_pixels}


@pytest.mark.parametrize("name", list(MASKS))
def test_rings_round_trip_exactly(name):
    mask = MASKS[name]()
    assert (fill_rings(mask_rings(mask), mask.shape) == mask).all()


def test_rings_drop_collinear_vertices():
    (r,) = mask_rings(square(s=12))
    assert len(r) == 9  # 8 corner-cut vertices, closed


def test_rings_keep_holes():
    assert len(mask_rings(ring())) == 2
    assert holes(ring()) == 1


@pytest.mark.parametrize("k", [3, 5, 7])
def test_scale_on_a_square_moves_each_side_by_half_the_kernel(k):
    m = square(s=12)
    grown = scale_noise(m, k, dilate=True)
    shrunk = scale_noise(m, k, dilate=False)
    assert grown.sum() == (12 + k - 1) ** 2
    assert shrunk.sum() == (12 - k + 1) ** 2
    assert (shrunk <= m).all() and (m <= grown).all()


def test_erosion_does_not_pull_back_from_the_image_border():
    m = at_border()
    erodes = next(s for s in range(100) if np.random.default_rng(s).random() >= 0.5)
    shrunk, info = apply_spatial(m, "scale", 3, np.random.default_rng(erodes))
    assert info["op"] == "erode"
    assert (scale_noise(m, 3, dilate=False) == shrunk).all()
    expect = np.zeros_like(m)
    expect[0:11, 0:8] = True  # only the two inner sides move
    assert (shrunk == expect).all()


def test_erosion_can_empty_a_tiny_mask():
    assert not scale_noise(two_pixels(), 3, dilate=False).any()


@pytest.mark.parametrize("name", list(MASKS))
@pytest.mark.parametrize("kind,param", [("scale", 5), ("localization", 3.0),
                                        ("approximation", 5.0)])
def test_crop_gives_the_same_result_as_the_whole_image(name, kind, param):
    """apply_spatial works on a crop; the result must equal the operation on the full mask."""
    mask = MASKS[name]()
    got, info = apply_spatial(mask, kind, param, np.random.default_rng(7))
    rng = np.random.default_rng(7)
    if kind == "scale":
        dilate = rng.random() < 0.5
        assert info["op"] == ("dilate" if dilate else "erode")
        want = scale_noise(mask, param, dilate)
    elif kind == "localization":
        want = localization_noise(mask, param, rng)
    else:
        want = approximation_noise(mask, param)
    assert (got == want).all()


def test_localization_zero_sigma_is_identity_and_grows_with_sigma():
    m = disc(r=18)
    assert (localization_noise(m, 0.0, np.random.default_rng(0)) == m).all()
    mean_iou = {s: np.mean([iou(m, localization_noise(m, s, np.random.default_rng(i)))
                            for i in range(10)]) for s in (1.0, 2.0, 4.0)}
    assert 1.0 > mean_iou[1.0] > mean_iou[2.0] > mean_iou[4.0] > 0.5


def test_localization_moves_hole_vertices_too():
    m = ring(r_out=22, r_in=10)
    out = localization_noise(m, 2.0, np.random.default_rng(3))
    inner = disc(r=10)
    assert (out & inner).any() or (~out & inner).sum() != inner.sum()  # the hole changed
    assert holes(out) >= 1


def test_approximation_simplifies_but_keeps_topology():
    m = ring(r_out=22, r_in=9)
    assert (approximation_noise(m, 1e-3) == m).all()
    coarse = approximation_noise(m, 5.0)
    assert holes(coarse) == 1  # the hole survives
    assert 0.7 < iou(m, coarse) < 1.0
    # fewer vertices than the clean boundary
    assert sum(map(len, mask_rings(coarse))) < sum(map(len, mask_rings(m)))


def test_approximation_of_a_square_is_the_square():
    m = square(s=12)
    # corner-cut contour simplifies to (nearly) the same square; tolerance 0.5 keeps it exact
    assert iou(approximation_noise(m, 0.5), m) > 0.95


def test_approximation_of_tiny_masks_is_defined():
    out = approximation_noise(two_pixels(), 15.0)
    assert out.dtype == bool and out.shape == (10, 10)


def test_levels_are_table_7():
    assert LEVELS["easy"] == parse_spec("class=0.2,scale=0.2:3,localization=0.2:2,"
                                        "approximation=0.2:5")
    assert LEVELS["medium"] == parse_spec("class=0.3,scale=0.25:5,localization=0.25:3,"
                                          "approximation=0.25:10")
    assert LEVELS["hard"] == parse_spec("class=0.4,scale=0.3:7,localization=0.3:4,"
                                        "approximation=0.3:15")


@pytest.mark.parametrize("text,message", [
    ("class=1.5", "not in"), ("scale=0.5:4", "odd"), ("scale=0.5", "needs P:INTENSITY"),
    ("blur=0.2:3", "unknown noise"), ("class=0.2:3", "no intensity"),
    ("scale=0.5:3,localization=0.4:2,approximation=0.2:5", "sum to"), ("class", "expected"),
])
def test_bad_specs_are_named(text, message):
    with pytest.raises(ValueError, match=message):
        parse_spec(text)


def test_exact_plan_has_exact_counts_and_is_seeded():
    spec = LEVELS["hard"]
    plan = plan_noise(1000, spec, seed=4)
    assert plan.flip.sum() == 400
    for kind in ("scale", "localization", "approximation"):
        assert plan.spatial.count(kind) == 300
    again = plan_noise(1000, spec, seed=4)
    assert (again.flip == plan.flip).all() and again.spatial == plan.spatial
    other = plan_noise(1000, spec, seed=5)
    assert (other.flip != plan.flip).any()


def test_independent_plan_draws_each_instance():
    spec = LEVELS["medium"]
    n = 20000
    plan = plan_noise(n, spec, seed=0, independent=True)
    assert abs(plan.flip.mean() - 0.3) < 4 * np.sqrt(0.3 * 0.7 / n)
    for kind in ("scale", "localization", "approximation"):
        assert abs(plan.spatial.count(kind) / n - 0.25) < 4 * np.sqrt(0.25 * 0.75 / n)
    # class and spatial draws are independent of each other
    both = np.mean([f and s is not None for f, s in zip(plan.flip, plan.spatial, strict=True)])
    assert abs(both - 0.3 * 0.75) < 0.02


CATS = [{"id": 1, "name": "a", "supercategory": "x"}, {"id": 2, "name": "b", "supercategory": "x"},
        {"id": 3, "name": "c", "supercategory": "y"}, {"id": 4, "name": "d", "supercategory": "z"}]


def test_symmetric_flip_is_uniform_over_the_other_classes():
    rng = np.random.default_rng(0)
    draws = [flip_class(1, CATS, "symmetric", rng) for _ in range(3000)]
    assert 1 not in draws
    counts = np.bincount(draws, minlength=5)[2:]
    assert (abs(counts / 3000 - 1 / 3) < 0.04).all()


def test_asymmetric_flip_stays_in_the_supercategory():
    rng = np.random.default_rng(0)
    assert {flip_class(1, CATS, "asymmetric", rng) for _ in range(50)} == {2}
    assert flip_class(4, CATS, "asymmetric", rng) is None  # alone in its supercategory


def test_spec_rejects_spatial_sum_above_one():
    with pytest.raises(ValueError, match="sum to"):
        NoiseSpec(0.0, "symmetric", {"scale": (0.6, 3), "approximation": (0.6, 5)})
