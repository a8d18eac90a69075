import math

import pytest

from pseudolabel.stages.cost import labelling_cost


@pytest.mark.parametrize("dataset, weak, fraction, factor", [
    # seed 001 §4.2: boxes with 1% masks cut COCO's cost "by at least 5 times"
    ("coco", "box+class", 0.01, 684.8 / (0.01 * 684.8 + 0.99 * 130.4)),
    # points: "more than 7x for COCO and ADE20K"
    ("coco", "point+class", 0.01, 684.8 / (0.01 * 684.8 + 0.99 * 88.7)),
    ("ade20k", "point+class", 0.01, 859.5 / (0.01 * 859.5 + 0.99 * 110.9)),
])
def test_saving_factor_follows_table_1(dataset, weak, fraction, factor):
    c = labelling_cost(dataset, weak, fraction, images=10_000)
    assert c["saving_factor"] == pytest.approx(factor)
    assert c["fully_labeled"] == 100


def test_hours_and_claims():
    assert labelling_cost("coco", "box+class", 0.01)["saving_factor"] > 5
    assert labelling_cost("coco", "point+class", 0.01)["saving_factor"] > 7
    assert labelling_cost("cityscapes", "point+class", 0.01)["saving_factor"] > 50 * 0.4
    c = labelling_cost("coco", "class", 0.1, images=100)
    assert c["hours"] == pytest.approx((10 * 684.8 + 90 * 80) / 3600)
    assert math.isinf(labelling_cost("coco", "none", 0.0, images=10)["saving_factor"])


@pytest.mark.parametrize("args, message", [
    (("imagenet", "none", 0.1), "unknown dataset"),
    (("coco", "mask", 0.1), "unknown weak setting"),
    (("coco", "none", 2.0), "fraction must be in"),
])
def test_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        labelling_cost(*args)
