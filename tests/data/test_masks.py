import numpy as np
import pytest
from pycocotools import mask as mask_utils

from pseudolabel.data.masks import (
    mask_to_polygons,
    mask_to_rle,
    masks_to_boxes_xyxy,
    masks_to_rles,
    polygons_to_rle,
    rle_area,
    rle_to_mask,
    rle_to_xywh,
    segmentation_to_rle,
    xywh_to_xyxy,
    xyxy_to_xywh,
)


def test_box_formats_round_trip():
    xywh = np.array([[1, 2, 3, 4], [0, 0, 10, 5]], float)
    np.testing.assert_allclose(xywh_to_xyxy(xywh), [[1, 2, 4, 6], [0, 0, 10, 5]])
    np.testing.assert_allclose(xyxy_to_xywh(xywh_to_xyxy(xywh)), xywh)
    assert xywh_to_xyxy(np.zeros((0, 4))).shape == (0, 4)


def test_rle_round_trip_and_json_safe():
    rng = np.random.default_rng(0)
    m = rng.random((17, 23)) > 0.5
    rle = mask_to_rle(m)
    assert isinstance(rle["counts"], str) and rle["size"] == [17, 23]
    np.testing.assert_array_equal(rle_to_mask(rle), m)
    assert rle_area(rle) == m.sum()


def test_masks_to_rles_matches_single():
    rng = np.random.default_rng(1)
    ms = rng.random((3, 9, 11)) > 0.6
    assert masks_to_rles(ms) == [mask_to_rle(m) for m in ms]
    assert masks_to_rles(np.zeros((0, 9, 11), bool)) == []


def test_polygon_square_area_and_box():
    rle = polygons_to_rle([[2, 2, 10, 2, 10, 10, 2, 10]], 20, 30)
    assert rle_area(rle) == pytest.approx(64, abs=9)  # pycocotools rasterises edges
    x, y, w, h = rle_to_xywh(rle)
    assert (x, y) == (2, 2) and w == pytest.approx(8, abs=1)


@pytest.mark.parametrize("poly", [
    [],                      # empty list
    [[1, 1, 5, 5]],          # two vertices
    [[1, 1, 5, 5, 7]],       # odd coordinate count
])
def test_degenerate_polygons_raise(poly):
    with pytest.raises(ValueError):
        polygons_to_rle(poly, 10, 10)


def test_uncompressed_rle_and_size_check():
    m = np.zeros((6, 5), bool)
    m[1:3, 2:4] = True
    compressed = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    uncompressed = {"size": [6, 5], "counts": [13, 2, 4, 2, 9]}  # column-major runs
    np.testing.assert_array_equal(rle_to_mask(segmentation_to_rle(uncompressed, 6, 5)), m)
    assert segmentation_to_rle(compressed, 6, 5)["counts"] == mask_to_rle(m)["counts"]
    with pytest.raises(ValueError, match="does not match the image size"):
        segmentation_to_rle(uncompressed, 5, 6)


def test_boxes_from_masks_match_coco_boxes():
    ms = np.zeros((3, 12, 14), bool)
    ms[0, 3:7, 2:9] = True
    ms[1, 0, 0] = True  # single pixel at the corner
    boxes = masks_to_boxes_xyxy(ms)
    np.testing.assert_array_equal(boxes[0], [2, 3, 9, 7])
    np.testing.assert_array_equal(boxes[1], [0, 0, 1, 1])
    np.testing.assert_array_equal(boxes[2], [0, 0, 0, 0])  # empty mask
    for m, b in zip(ms[:2], boxes[:2], strict=True):
        np.testing.assert_allclose(xywh_to_xyxy([rle_to_xywh(mask_to_rle(m))])[0], b)


def test_mask_to_polygons_round_trip():
    m = np.zeros((30, 30), bool)
    m[5:20, 8:25] = True
    polys = mask_to_polygons(m)
    back = rle_to_mask(polygons_to_rle(polys, 30, 30))
    iou = (back & m).sum() / (back | m).sum()
    assert iou > 0.9
