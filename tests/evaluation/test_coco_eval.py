import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy import ndimage

from pseudolabel.data.coco import load_coco
from pseudolabel.data.masks import mask_to_rle, rle_to_mask
from pseudolabel.evaluation.coco_eval import (
    STAT_NAMES,
    area_ranges,
    evaluate_masks,
    load_predictions,
)
from tests.conftest import square_rle, tiny_coco


@pytest.fixture(scope="module")
def val(synth_dir):
    return synth_dir / "annotations" / "val.json"


def _noisy_predictions(gt_path, tmp_path):
    """Predictions with eroded/dilated masks, dropped instances and shuffled scores."""
    gt = load_coco(gt_path)
    rng = np.random.default_rng(0)
    preds = []
    for ann in gt.annotations:
        if rng.random() < 0.15:
            continue
        m = rle_to_mask(gt.rle(ann))
        m = ndimage.binary_dilation(m) if rng.random() < 0.5 else ndimage.binary_erosion(m)
        if not m.any():
            continue
        cat = ann["category_id"] if rng.random() > 0.1 else gt.category_ids[0]
        preds.append({"image_id": ann["image_id"], "category_id": cat,
                      "segmentation": mask_to_rle(m), "score": float(rng.random())})
    path = tmp_path / "pred.json"
    path.write_text(json.dumps(preds))
    return path


def test_gt_against_itself_is_100(val):
    r = evaluate_masks(load_coco(val), load_predictions(val))
    assert all(r["segm"][k] in (100.0, -1.0) for k in STAT_NAMES)
    assert r["segm"]["AP"] == 100.0 and r["boundary"]["AP"] == 100.0


@pytest.mark.parametrize("scale", [1.0, None])  # COCO ranges, and the synthetic info's scale
def test_segm_equals_direct_pycocotools(val, tmp_path, scale):
    pred = _noisy_predictions(val, tmp_path)
    ours = evaluate_masks(load_coco(val), load_predictions(pred), area_scale=scale)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(val))
        ev = COCOeval(coco_gt, coco_gt.loadRes(str(pred)), "segm")
        if scale is None:
            ev.params.areaRng = area_ranges(coco_gt.dataset["info"]["area_scale"])
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    direct = [v * 100 if v >= 0 else -1.0 for v in ev.stats[:6]]
    assert [ours["segm"][k] for k in STAT_NAMES] == pytest.approx(direct, abs=1e-6)
    assert 0 < ours["segm"]["AP"] < 100
    # boundary IoU <= mask IoU per pair, so boundary AP cannot exceed mask AP
    assert ours["boundary"]["AP"] <= ours["segm"]["AP"] + 1e-9


def test_boundary_ap_penalises_boundary_errors_more(write_json, tmp_path):
    # A big square predicted one pixel too small keeps mask IoU high but loses boundary IoU.
    h = w = 100
    gt = {"images": [{"id": 1, "file_name": "a.png", "height": h, "width": w}],
          "categories": [{"id": 1, "name": "box"}], "annotations": []}
    m = np.zeros((h, w), bool)
    m[10:90, 10:90] = True
    gt["annotations"].append({"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                              "segmentation": mask_to_rle(m), "area": int(m.sum()),
                              "bbox": [10, 10, 80, 80]})
    shrunk = np.zeros_like(m)
    shrunk[12:88, 12:88] = True  # mask IoU 0.90, boundary IoU ~0.4 with a 3-px band
    preds = [{"image_id": 1, "category_id": 1, "segmentation": mask_to_rle(shrunk), "score": 1.0}]
    r = evaluate_masks(load_coco(write_json(gt)), preds, area_scale=1.0)
    assert r["segm"]["AP50"] == 100.0 and r["segm"]["AP75"] == 100.0
    assert r["boundary"]["AP50"] == 0.0


def test_crowd_gt_keeps_mask_iou(write_json):
    # A detection inside a crowd region is ignored (not a false positive) under both metrics.
    data = tiny_coco()
    ds = load_coco(write_json(data))
    inside = np.zeros((20, 30), bool)
    inside[1:4, 1:4] = True
    preds = load_predictions(write_json(data, "p.json")) + [
        {"image_id": 2, "category_id": 1, "segmentation": mask_to_rle(inside), "score": 0.99}]
    r = evaluate_masks(ds, preds, area_scale=1.0)
    assert r["segm"]["AP"] == 100.0 and r["boundary"]["AP"] == 100.0


def test_empty_and_malformed_predictions(write_json):
    ds = load_coco(write_json(tiny_coco()))
    assert evaluate_masks(ds, [])["segm"]["AP"] == 0.0
    from pseudolabel.data.report import Report

    report = Report()
    assert load_predictions(write_json([{"image_id": 1}], "bad.json"), report) == []
    assert "bad.json: prediction #0: needs image_id" in str(report.problems[0])


@pytest.mark.parametrize("bad, reason", [
    ({"score": float("nan")}, "'score' must be a finite number"),    # NaN: AP 100 before
    ({"score": float("inf")}, "'score' must be a finite number"),
    ({"segmentation": []}, "empty polygon list"),                     # aborted everything
    ({"segmentation": {"size": [20, 30], "counts": "!!"}}, "not a COCO compressed RLE"),
    ({"image_id": 2**70}, "must be integers"),                        # beyond 64 bits
])
def test_bad_predictions_are_skipped_by_name_and_the_rest_scored(write_json, bad, reason):
    from pseudolabel.data.report import Report

    ds = load_coco(write_json(tiny_coco()))
    good = [{"id": 1, "image_id": 1, "category_id": 1, "score": 0.9,
             "segmentation": square_rle(20, 30, 2, 2, 10, 10)}]
    path = write_json(good + [{**good[0], "id": 7, **bad}], "preds.json")
    report = Report()
    result = evaluate_masks(ds, load_predictions(path, report), report=report)
    assert result["num_predictions"] == 1 and result["segm"]["AP50"] > 0  # the good one
    assert len(report) == 1 and "(id 7)" in str(report.problems[0])
    assert reason in str(report.problems[0])
