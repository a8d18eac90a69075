import json

import numpy as np
import pytest

from pseudolabel.data.coco import load_coco, save_json
from pseudolabel.data.masks import rle_to_mask
from pseudolabel.stages.weaken import num_fully_labeled, select_fully_labeled, weaken
from tests.conftest import tiny_coco


@pytest.fixture(scope="module")
def gt(synth_dir):
    return load_coco(synth_dir / "annotations" / "train.json")


@pytest.mark.parametrize("fraction, n, expected", [
    (0.1, 30, 3),      # round(3.0)
    (0.01, 30, 1),     # round(0.3) = 0, but at least one
    (0.05, 30, 2),     # round(1.5) rounds half up
    (0.0, 30, 0),      # the 0% rows of seed 001 Table 2
    (1.0, 30, 30),
    (0.5, 0, 0),       # no images
])
def test_fully_labeled_count(fraction, n, expected):
    assert num_fully_labeled(fraction, n) == expected


def test_fraction_out_of_range():
    with pytest.raises(ValueError, match="fraction must be in"):
        num_fully_labeled(1.5, 10)


def test_same_split_for_every_setting_and_seed_dependent(gt):
    splits = {}
    for w in ("none", "class", "point+class", "box+class"):
        data, _ = weaken(gt, w, 0.1, seed=4)
        splits[w] = sorted(i["id"] for i in data["images"] if i["kind"] == "fully_labeled")
    assert len({tuple(v) for v in splits.values()}) == 1
    assert len(splits["none"]) == round(0.1 * len(gt.images))
    assert splits["none"] == select_fully_labeled([i["id"] for i in gt.images], 0.1, 4)
    assert select_fully_labeled(list(range(1, 31)), 0.1, 5) != splits["none"]


def _weak_images(data):
    return [i for i in data["images"] if i["kind"] != "fully_labeled"]


def test_points_lie_inside_their_masks(gt):
    data, report = weaken(gt, "point+class", 0.1, seed=0)
    assert len(report) == 0
    gt_by_id = {a["id"]: a for a in gt.annotations}
    weak_ids = {i["id"] for i in _weak_images(data)}
    n = 0
    for ann in data["annotations"]:
        if ann["image_id"] not in weak_ids:
            assert ann == gt_by_id[ann["id"]]  # fully labelled images keep full annotations
            continue
        src = gt_by_id[ann["id"]]
        assert ann["category_id"] == src["category_id"] and "segmentation" not in ann
        x, y = ann["point"]
        assert rle_to_mask(gt.rle(src))[int(y), int(x)]
        n += 1
    expected = sum(len(gt.anns_by_image[i]) for i in weak_ids)
    assert n == expected > 0


def test_boxes_equal_gt_boxes(gt):
    data, _ = weaken(gt, "box+class", 0.1)
    gt_by_id = {a["id"]: a for a in gt.annotations}
    for ann in data["annotations"]:
        assert ann["bbox"] == gt_by_id[ann["id"]]["bbox"]


def test_tags_equal_gt_categories_and_none_keeps_nothing(gt):
    data, _ = weaken(gt, "class", 0.1)
    for img in _weak_images(data):
        assert img["tags"] == sorted({a["category_id"] for a in gt.anns_by_image[img["id"]]})
    assert {a["image_id"] for a in data["annotations"]} <= {
        i["id"] for i in data["images"] if i["kind"] == "fully_labeled"}
    none, _ = weaken(gt, "none", 0.1)
    assert all("tags" not in i for i in _weak_images(none))
    assert len(none["annotations"]) == len(data["annotations"])


def test_same_seed_same_output_file(gt, tmp_path):
    a, _ = weaken(gt, "point+class", 0.1, seed=2)
    b, _ = weaken(gt, "point+class", 0.1, seed=2)
    c, _ = weaken(gt, "point+class", 0.1, seed=3)
    save_json(tmp_path / "a.json", a)
    save_json(tmp_path / "b.json", b)
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert a["annotations"] != c["annotations"]


def test_crowd_stays_an_ignore_region(write_json):
    gt = load_coco(write_json(tiny_coco()))
    data, _ = weaken(gt, "point+class", 0.0)
    crowd = [a for a in data["annotations"] if a.get("iscrowd")]
    assert [a["id"] for a in crowd] == [12] and "point" not in crowd[0]
    assert all("point" in a for a in data["annotations"] if not a.get("iscrowd"))


def test_empty_mask_is_skipped_and_reported(write_json):
    raw = tiny_coco()
    raw["annotations"][0]["segmentation"] = {"size": [20, 30], "counts": "0"}  # wrong
    empty = np.zeros((20, 30), bool)
    from pseudolabel.data.masks import mask_to_rle
    raw["annotations"][0]["segmentation"] = mask_to_rle(empty)
    gt = load_coco(write_json(raw, "empty.json"))
    data, report = weaken(gt, "point+class", 0.0)
    assert [p.item for p in report.problems] == ["annotation 10"]
    assert "empty mask" in report.problems[0].reason and "empty.json" in report.problems[0].file
    assert sorted(a["id"] for a in data["annotations"]) == [11, 12]


def test_output_records_provenance(gt):
    data, _ = weaken(gt, "class", 0.1, seed=9)
    info = data["info"]
    assert info["weak"] == "class" and info["seed"] == 9 and len(info["gt_sha256"]) == 64
    json.dumps(data)  # JSON-safe
