import numpy as np

from pseudolabel.evaluation.teacher import error_breakdown, mask_iou


def _box(r0, r1, c0, c1, shape=(10, 20)):
    m = np.zeros(shape, dtype=bool)
    m[r0:r1, c0:c1] = True
    return m


def test_error_breakdown_splits_spill_by_what_lies_under_it():
    # instance 0 (class 1) is columns 0-4; a same-class neighbour at 5-9 and an other-class
    # object at 10-14; background beyond
    gt = np.stack([_box(0, 10, 0, 5), _box(0, 10, 5, 10), _box(0, 10, 10, 15)])
    pred = np.stack([
        _box(0, 10, 1, 17),   # misses column 0, spills over both neighbours and 2 columns of bg
        _box(0, 10, 5, 10),   # exact
        _box(0, 5, 10, 15),   # half of it, no spill
    ])
    got = error_breakdown(pred, gt, [1, 1, 2])
    assert got["intersection"].tolist() == [40, 50, 25]
    assert got["missed"].tolist() == [10, 0, 25]
    assert got["spill_same_class"].tolist() == [50, 0, 0]
    assert got["spill_other_class"].tolist() == [50, 0, 0]
    assert got["spill_background"].tolist() == [20, 0, 0]
    # every error pixel is counted once: union = intersection + missed + spill
    union = (pred | gt).reshape(3, -1).sum(1)
    spill = got["spill_same_class"] + got["spill_other_class"] + got["spill_background"]
    assert (got["intersection"] + got["missed"] + spill == union).all()
    # ruling out the other-class spill: 40 / (50 + 50 + 20) for instance 0; others unchanged
    np.testing.assert_allclose(got["iou_without_other_class_spill"],
                               [40 / 120, 1.0, 0.5])
    np.testing.assert_allclose(mask_iou(pred, gt)[1:], [1.0, 0.5])


def test_error_breakdown_counts_overlap_of_both_classes_as_same_class():
    # a pixel under a same-class and an other-class instance counts once, as same-class
    gt = np.stack([_box(0, 2, 0, 2), _box(0, 4, 2, 6), _box(2, 4, 2, 8)])
    pred = np.stack([_box(0, 4, 0, 8), gt[1], gt[2]])
    got = error_breakdown(pred, gt, [3, 3, 4])
    assert got["spill_same_class"][0] == 16         # all of instance 1 (4 x 4)
    assert got["spill_other_class"][0] == 4          # instance 2's pixels outside instance 1
    assert got["spill_background"][0] == 32 - 4 - 16 - 4


def test_error_breakdown_single_instance_has_only_background_spill():
    gt = _box(2, 4, 2, 4)[None]
    pred = _box(2, 4, 2, 6)[None]
    got = error_breakdown(pred, gt, [7])
    assert got["spill_background"].tolist() == [4]
    assert got["spill_same_class"].tolist() == got["spill_other_class"].tolist() == [0]
    np.testing.assert_allclose(got["iou_without_other_class_spill"], [0.5])
