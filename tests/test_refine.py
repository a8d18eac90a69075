import numpy as np
import pytest

from pseudolabel.refine import merge_prompt_boxes, points_in_boxes

SAM = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], dtype=float)
POINTS = np.array([[5, 5], [25, 25]], dtype=float)
LABELS = np.array([1, 2])


def test_confident_matching_boxes_replace_sam_boxes():
    dino = np.array([[21, 19, 31, 29], [1, 0, 11, 9]], dtype=float)  # listed in the other order
    out = merge_prompt_boxes(dino, [0.9, 0.8], [2, 1], POINTS, LABELS, SAM)
    np.testing.assert_array_equal(out, dino[[1, 0]])


def test_mismatched_class_keeps_sam_box():
    dino = np.array([[1, 0, 11, 9], [21, 19, 31, 29]], dtype=float)
    out = merge_prompt_boxes(dino, [0.9, 0.9], [1, 3], POINTS, LABELS, SAM)
    np.testing.assert_array_equal(out, [dino[0], SAM[1]])


def test_point_outside_box_keeps_sam_box():
    dino = np.array([[6, 0, 16, 10]], dtype=float)  # overlaps SAM box 0 but misses (5, 5)
    out = merge_prompt_boxes(dino, [0.95], [1], POINTS, LABELS, SAM)
    np.testing.assert_array_equal(out, SAM)


def test_point_on_the_edge_is_inside():
    dino = np.array([[5, 5, 12, 12]], dtype=float)
    out = merge_prompt_boxes(dino, [0.5], [1], POINTS, LABELS, SAM)
    np.testing.assert_array_equal(out[0], dino[0])
    assert points_in_boxes([[12, 12], [12.01, 5]], dino).tolist() == [[True, False]]


def test_fewer_dino_boxes_than_instances():
    dino = np.array([[19, 19, 31, 31]], dtype=float)
    out = merge_prompt_boxes(dino, [0.6], [2], POINTS, LABELS, SAM)
    np.testing.assert_array_equal(out, [SAM[0], dino[0]])


def test_all_below_tau_c_keep_sam_boxes():
    dino = np.array([[1, 0, 11, 9], [21, 19, 31, 29]], dtype=float)
    out = merge_prompt_boxes(dino, [0.09, 0.05], [1, 2], POINTS, LABELS, SAM)
    np.testing.assert_array_equal(out, SAM)
    # at exactly tau_c the box counts
    out = merge_prompt_boxes(dino, [0.1, 0.05], [1, 2], POINTS, LABELS, SAM)
    np.testing.assert_array_equal(out, [dino[0], SAM[1]])


def test_confidence_and_iou_decide_between_candidates():
    # two valid candidates for instance 0: beta * score outweighs a slightly better IoU
    dino = np.array([[0, 0, 10, 10], [0, 0, 12, 12]], dtype=float)
    out = merge_prompt_boxes(dino, [0.2, 0.9], [1, 1], POINTS[:1], LABELS[:1], SAM[:1])
    np.testing.assert_array_equal(out[0], dino[1])
    # with beta = 0 the IoU with the SAM box decides
    out = merge_prompt_boxes(dino, [0.2, 0.9], [1, 1], POINTS[:1], LABELS[:1], SAM[:1], beta=0)
    np.testing.assert_array_equal(out[0], dino[0])


def test_class_scores_matrix_and_empty_inputs():
    dino = np.array([[1, 0, 11, 9]], dtype=float)
    scores = np.array([[0.1, 0.7, 0.2]])  # arg-max column 1
    out = merge_prompt_boxes(dino, [0.7], scores, POINTS, LABELS, SAM)
    np.testing.assert_array_equal(out, [dino[0], SAM[1]])
    assert merge_prompt_boxes(np.zeros((0, 4)), [], [], POINTS, LABELS, SAM).tolist() == \
        SAM.tolist()
    assert merge_prompt_boxes(dino, [0.7], [1], np.zeros((0, 2)), [], np.zeros((0, 4))).shape \
        == (0, 4)


def test_inconsistent_lengths_are_refused():
    with pytest.raises(ValueError, match="one of each per GT instance"):
        merge_prompt_boxes(np.zeros((0, 4)), [], [], POINTS, LABELS[:1], SAM)
