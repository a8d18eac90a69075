"""COCO mask AP and boundary AP (Cheng et al. 2021) through pycocotools."""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

from pseudolabel.data.coco import (
    CocoDataset,
    coco_from_dict,
    is_id,
    read_json,
    segmentation_problem,
)
from pseudolabel.data.masks import rle_area, segmentation_to_rle
from pseudolabel.data.report import Report
from pseudolabel.ops.boundary import DILATION_RATIO, boundary_band, boundary_width

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
COCO_SMALL, COCO_LARGE = 32**2, 96**2


class BoundaryCOCOeval(COCOeval):
    """COCOeval whose segm IoU is min(mask IoU, boundary IoU); crowd GT keeps mask IoU.

    The boundary of a mask is its inner band of width max(1, round(0.02 * image diagonal)).
    Boundaries are computed once per annotation and cached.
    """

    def __init__(self, coco_gt, coco_dt, dilation_ratio: float = DILATION_RATIO) -> None:
        super().__init__(coco_gt, coco_dt, "segm")
        self.dilation_ratio = dilation_ratio
        self._boundary_cache: dict[tuple[str, int], dict] = {}

    def _boundary_rle(self, which: str, ann: dict) -> dict:
        key = (which, ann["id"])
        if key not in self._boundary_cache:
            img = self.cocoGt.imgs[ann["image_id"]]
            width = boundary_width(img["height"], img["width"], self.dilation_ratio)
            band = boundary_band(mask_utils.decode(ann["segmentation"]).astype(bool), width)
            self._boundary_cache[key] = mask_utils.encode(np.asfortranarray(band.astype(np.uint8)))
        return self._boundary_cache[key]

    def computeIoU(self, imgId, catId):  # noqa: N802 (pycocotools' name)
        p = self.params
        if p.useCats:
            gt, dt = self._gts[imgId, catId], self._dts[imgId, catId]
        else:
            gt = [g for c in p.catIds for g in self._gts[imgId, c]]
            dt = [d for c in p.catIds for d in self._dts[imgId, c]]
        if len(gt) == 0 or len(dt) == 0:
            return []
        # Same detection order and truncation as COCOeval.computeIoU.
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in order[: p.maxDets[-1]]]
        crowd = [int(g["iscrowd"]) for g in gt]
        mask_iou = np.asarray(mask_utils.iou([d["segmentation"] for d in dt],
                                             [g["segmentation"] for g in gt], crowd))
        bd = [self._boundary_rle("dt", d) for d in dt]
        bg = [self._boundary_rle("gt", g) for g in gt]
        boundary_iou = np.asarray(mask_utils.iou(bd, bg, [0] * len(gt)))
        crowd_cols = np.asarray(crowd, dtype=bool)
        return np.where(crowd_cols[None, :], mask_iou, np.minimum(mask_iou, boundary_iou))


def area_ranges(scale: float) -> list[list[float]]:
    """COCO's all/small/medium/large area ranges with thresholds multiplied by ``scale``."""
    return [[0, 1e10], [0, COCO_SMALL * scale], [COCO_SMALL * scale, COCO_LARGE * scale],
            [COCO_LARGE * scale, 1e10]]


def load_predictions(path: str | Path, report: Report | None = None) -> list[dict]:
    """Mask predictions: a COCO results list, or a COCO file whose annotations are predictions.

    Annotations without a ``score`` get 1.0 (ground truth or unscored pseudo-masks). A
    prediction without integer ids and a segmentation, or with a score that is not a finite
    number, is skipped into ``report`` (named by its position and id); the others are kept.
    """
    data = read_json(path)
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        data = data["annotations"]
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a COCO results list or a COCO instances file")
    report = report if report is not None else Report()
    preds = []
    for i, d in enumerate(data):
        item = f"prediction #{i}" + (f" (id {d['id']})" if isinstance(d, dict) and "id" in d
                                     else "")
        if not isinstance(d, dict) or not {"image_id", "category_id", "segmentation"} <= d.keys():
            report.add(str(path), item, "needs image_id, category_id and segmentation")
            continue
        if not (is_id(d["image_id"]) and is_id(d["category_id"])):
            report.add(str(path), item, "image_id and category_id must be integers")
            continue
        score = d.get("score", 1.0)
        if isinstance(score, bool) or not isinstance(score, (int, float)) \
                or not math.isfinite(score):
            report.add(str(path), item, f"'score' must be a finite number, got {score!r}")
            continue
        if d.get("iscrowd", 0):
            continue  # ignore regions are not predictions
        preds.append({"image_id": d["image_id"], "category_id": d["category_id"],
                      "segmentation": d["segmentation"], "score": float(score),
                      "_item": item, "_file": str(path)})
    return preds


def _stats(ev: COCOeval) -> dict:
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # COCOeval gives -1 where nothing could be measured (no GT in that range): keep it.
    # Rounding to 1e-6 drops float noise (99.99999999999997) and nothing a paper reports.
    return {k: round(float(v) * 100, 6) if v >= 0 else -1.0
            for k, v in zip(STAT_NAMES, ev.stats[:6], strict=True)}


def evaluate_masks(gt: CocoDataset, predictions: list[dict], *, area_scale: float | None = None,
                   image_ids: list[int] | None = None, boundary: bool = True,
                   report: Report | None = None) -> dict:
    """COCO segm AP (and boundary AP) of ``predictions`` against ``gt``, on a 0-100 scale.

    ``area_scale`` multiplies COCO's 32^2 / 96^2 area thresholds; ``None`` takes
    ``gt.info["area_scale"]`` (written by ``pseudolabel synth``) or 1. ``image_ids``
    restricts evaluation to those images. Returns ``{"segm": {...}, "boundary": {...},
    "area_scale": s, "num_predictions": n}``. A prediction whose segmentation cannot be a
    mask of its image (empty or out-of-image polygon, bad RLE) is skipped into ``report``.
    """
    report = report if report is not None else Report()
    if area_scale is None:
        area_scale = float(gt.info.get("area_scale", 1.0))
    gt_dict = gt.to_dict()
    gt_anns = []
    for ann in gt_dict["annotations"]:
        if "segmentation" not in ann:
            continue  # box-only annotations cannot be scored for masks
        # as RLE made by our rasteriser (polygons clipped to the image first): pycocotools'
        # own polygon path walks every edge, and one vertex at 1e9 px crashed it
        rle = gt.rle(ann)
        ann = {**ann, "iscrowd": ann.get("iscrowd", 0), "segmentation": rle}
        ann.setdefault("area", rle_area(rle))
        gt_anns.append(ann)
    gt_dict["annotations"] = gt_anns
    coco_gt = coco_from_dict(gt_dict)
    known = set(coco_gt.imgs)
    keep = set(image_ids) if image_ids is not None else known
    preds = []
    for p in predictions:
        if p["image_id"] in keep and p["image_id"] in known:
            img = coco_gt.imgs[p["image_id"]]
            problem = segmentation_problem(p["segmentation"], img["height"], img["width"])
            if problem:
                report.add(p.get("_file", "predictions"),
                           p.get("_item", f"prediction on image {p['image_id']}"), problem)
                continue
            rle = segmentation_to_rle(p["segmentation"], img["height"], img["width"])
            preds.append({k: v for k, v in p.items() if not k.startswith("_")}
                         | {"segmentation": rle})
    result = {"area_scale": area_scale, "num_predictions": len(preds),
              "skipped_predictions": len(report)}
    kinds = {"segm": COCOeval, **({"boundary": BoundaryCOCOeval} if boundary else {})}
    for name, cls in kinds.items():
        if not preds:
            result[name] = dict.fromkeys(STAT_NAMES, 0.0)
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = coco_gt.loadRes([dict(p) for p in preds])  # loadRes adds fields
        ev = cls(coco_gt, coco_dt) if cls is BoundaryCOCOeval else cls(coco_gt, coco_dt, "segm")
        ev.params.areaRng = area_ranges(area_scale)
        ev.params.imgIds = sorted(keep & known)
        result[name] = _stats(ev)
    return result

