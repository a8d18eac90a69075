import numpy as np
import pytest

from pseudolabel.data.instances import Instances


def test_empty_has_fixed_shapes():
    e = Instances.empty((7, 9))
    assert len(e) == 0
    assert e.boxes_xyxy.shape == (0, 4) and e.masks.shape == (0, 7, 9)
    assert e.labels.shape == (0,) and e.scores.shape == (0,)


def test_from_masks_boxes_and_selection():
    m = np.zeros((2, 10, 10), bool)
    m[0, 2:5, 3:8] = True
    m[1, 6:9, 0:2] = True
    inst = Instances.from_masks(m, [4, 5], [0.9, 0.1])
    np.testing.assert_array_equal(inst.boxes_xyxy, [[3, 2, 8, 5], [0, 6, 2, 9]])
    sel = inst[inst.scores > 0.5]
    assert len(sel) == 1 and sel.labels.tolist() == [4]
    assert inst[1].masks.shape == (1, 10, 10)
    assert len(inst.to_rles()) == 2


@pytest.mark.parametrize("kwargs, message", [
    # labels shorter than boxes
    (dict(boxes_xyxy=np.zeros((2, 4)), labels=[1]), "labels has 1 entries"),
    # mask count differs from box count
    (dict(boxes_xyxy=np.zeros((1, 4)), labels=[1], masks=np.zeros((2, 5, 5), bool)), "masks"),
    # masks of another size than the image
    (dict(boxes_xyxy=np.zeros((1, 4)), labels=[1], masks=np.zeros((1, 4, 5), bool)), "masks"),
    # non-bool masks
    (dict(boxes_xyxy=np.zeros((1, 4)), labels=[1], masks=np.zeros((1, 5, 5))), "bool"),
    # inverted box
    (dict(boxes_xyxy=[[5, 5, 1, 1]], labels=[1]), "x1 < x0"),
    # points of the wrong shape
    (dict(boxes_xyxy=np.zeros((1, 4)), labels=[1], points_xy=np.zeros((2, 2))), "points_xy"),
])
def test_validation_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Instances(image_size=(5, 5), **kwargs)
