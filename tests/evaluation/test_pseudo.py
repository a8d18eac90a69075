import json

import numpy as np
import pytest

from pseudolabel.data.coco import load_coco
from pseudolabel.data.masks import mask_to_rle, rle_to_mask
from pseudolabel.evaluation.pseudo import evaluate_pseudo
from tests.conftest import square_rle, tiny_coco


def _pseudo_from(gt_raw, transform, prompted=True, kind="point+class"):
    """A pseudo-label file built from GT by ``transform(mask) -> mask``."""
    out = json.loads(json.dumps(gt_raw))
    for img in out["images"]:
        img["kind"] = kind
    anns = []
    for a in out["annotations"]:
        if a["iscrowd"]:
            continue
        h, w = 20, 30
        from pseudolabel.data.masks import segmentation_to_rle
        m = transform(rle_to_mask(segmentation_to_rle(a["segmentation"], h, w)))
        new = {**a, "segmentation": mask_to_rle(m), "source": "pseudo", "score": 0.8}
        if prompted:
            new["weak"] = {"id": a["id"]}
        anns.append(new)
    out["annotations"] = anns
    return out


def test_gt_as_pseudo_gives_iou_one(write_json):
    gt = load_coco(write_json(tiny_coco(), "gt.json"))
    for prompted in (True, False):
        p = load_coco(write_json(_pseudo_from(tiny_coco(), lambda m: m, prompted), "p.json"))
        r = evaluate_pseudo(p, gt, area_scale=1.0)
        assert r["mIoU"] == pytest.approx(1.0) and r["num_instances"] == 2
        assert r["prompted"] is prompted and r["unmatched_pseudo"] == 0
        assert r["segm"]["AP"] == 100.0


def test_prompted_pairing_uses_weak_id(write_json):
    gt_raw = tiny_coco()
    gt = load_coco(write_json(gt_raw, "gt.json"))
    pseudo = _pseudo_from(gt_raw, lambda m: m)
    # Swap the masks of the two instances: prompted pairing must see IoU 0 for both.
    a, b = pseudo["annotations"]
    a["segmentation"], b["segmentation"] = b["segmentation"], a["segmentation"]
    r = evaluate_pseudo(load_coco(write_json(pseudo, "p.json")), gt, area_scale=1.0)
    assert r["mIoU"] == 0.0


def test_hungarian_pairing_counts_missing_and_extra(write_json):
    gt_raw = tiny_coco()
    gt = load_coco(write_json(gt_raw, "gt.json"))
    pseudo = _pseudo_from(gt_raw, lambda m: m, prompted=False)
    half = np.zeros((20, 30), bool)
    half[2:10, 2:6] = True  # half of instance 10's square
    pseudo["annotations"][0]["segmentation"] = mask_to_rle(half)
    pseudo["annotations"].pop(1)  # instance 11 gets no pseudo-mask
    pseudo["annotations"].append({"id": 50, "image_id": 1, "category_id": 1, "iscrowd": 0,
                                  "segmentation": square_rle(20, 30, 20, 12, 28, 18),
                                  "source": "pseudo"})  # an extra mask
    r = evaluate_pseudo(load_coco(write_json(pseudo, "p.json")), gt, area_scale=1.0)
    assert r["per_class"]["cat"]["mIoU"] == pytest.approx(0.5)
    assert r["per_class"]["dog"]["mIoU"] == 0.0
    assert r["mIoU"] == pytest.approx(0.25) and r["unmatched_pseudo"] == 1


def test_fully_labeled_images_are_excluded(write_json):
    gt_raw = tiny_coco()
    gt = load_coco(write_json(gt_raw, "gt.json"))
    pseudo = _pseudo_from(gt_raw, lambda m: m)
    pseudo["images"][0]["kind"] = "fully_labeled"
    r = evaluate_pseudo(load_coco(write_json(pseudo, "p.json")), gt, area_scale=1.0)
    assert r["num_images"] == 1 and r["num_instances"] == 0  # image 2 holds only a crowd region


def test_twin_agreement_pairs_masks_by_prompt(tmp_path):
    from pseudolabel.evaluation.pseudo import twin_agreement

    def file(name, squares):
        anns = [{"id": k + 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 1,
                 "bbox": [0, 0, 1, 1], "segmentation": square_rle(10, 10, *sq),
                 "source": "pseudo", "weak": {"id": wid}}
                for k, (wid, sq) in enumerate(squares)]
        path = tmp_path / name
        path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png", "height": 10,
                                                "width": 10}],
                                    "categories": [{"id": 1, "name": "x"}],
                                    "annotations": anns}))
        return load_coco(path)

    a = file("a.json", [(7, (0, 0, 4, 4)), (8, (5, 5, 9, 9))])
    b = file("b.json", [(8, (5, 5, 9, 9)), (7, (0, 0, 4, 2))])  # other order, one differs
    got = twin_agreement(a, b)
    assert got["pairs"] == 2 and got["share_iou_0.9"] == 0.5
    assert abs(got["mean_iou"] - (1 + 0.5) / 2) < 1e-9
    c = file("c.json", [(7, (0, 0, 4, 4))])  # a mask only one file has counts as 0
    assert twin_agreement(a, c)["mean_iou"] == 0.5
