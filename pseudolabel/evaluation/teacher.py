"""Prompted-mask quality of a SAM teacher and box AP of a detector (seed 001 Table 5's measure).

Prompts are simulated from ground truth exactly as ``pseudolabel weaken`` does: the tight GT
box, and one point drawn uniformly from the mask with the generator ``default_rng([seed,
image_id])`` in annotation order, so "point" here is the point a user's weak file holds.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import torch
from pycocotools.cocoeval import COCOeval
from tqdm import tqdm

from pseudolabel.data.coco import CocoDataset, coco_from_dict
from pseudolabel.data.images import load_image, resolve_image_path
from pseudolabel.data.masks import rle_to_mask, xywh_to_xyxy
from pseudolabel.models.predictor import PromptedSam, ZoomSpec, pixel_centre_to_sam
from pseudolabel.stages.weaken import sample_point

PROMPT_KINDS = ("box", "point", "box+point")


def gt_prompts(gt: CocoDataset, image_id: int, seed: int):
    """GT masks ``(N, H, W)``, boxes ``(N, 4)`` XYXY and points ``(N, 2)`` (pixel centres)."""
    img = gt.image_by_id[image_id]
    anns = [a for a in gt.anns_by_image[image_id] if not a.get("iscrowd", 0)]
    rng = np.random.default_rng([seed, image_id])
    masks = np.zeros((len(anns), img["height"], img["width"]), dtype=bool)
    points = np.zeros((len(anns), 2))
    for i, a in enumerate(anns):
        masks[i] = rle_to_mask(gt.rle(a))
        points[i] = sample_point(masks[i], rng)
    boxes = xywh_to_xyxy([a["bbox"] for a in anns]) if anns else np.zeros((0, 4))
    return anns, masks, boxes, points


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-pair IoU of ``(N, H, W)`` bool masks; 0 where both are empty."""
    inter = (pred & gt).reshape(len(gt), -1).sum(1)
    union = (pred | gt).reshape(len(gt), -1).sum(1)
    return np.divide(inter, union, out=np.zeros(len(gt)), where=union > 0)


ERROR_KINDS = ("missed", "spill_same_class", "spill_other_class", "spill_background")


def error_breakdown(pred: np.ndarray, gt: np.ndarray, category_ids) -> dict[str, np.ndarray]:
    """Where each predicted mask goes wrong, in pixels per instance.

    ``pred`` and ``gt`` are ``(N, H, W)`` bool masks of one image's N instances (prediction i
    for instance i), ``category_ids`` their N classes. ``missed`` counts GT pixels the
    prediction leaves out; a prediction's pixels outside its GT ("spill") are split by what
    lies under them: another instance of the same class, an instance of another class only,
    or no annotated instance. Spill onto other-class instances is what a class prompt can
    rule out; ``iou_without_other_class_spill`` is the IoU had it been ruled out.
    """
    cats = np.asarray(category_ids)
    n = len(gt)
    out = {k: np.zeros(n, dtype=np.int64) for k in ("intersection", "area", *ERROR_KINDS)}
    for i in range(n):
        others = np.arange(n) != i
        same = np.logical_or.reduce(gt[others & (cats == cats[i])], axis=0) \
            if (others & (cats == cats[i])).any() else np.zeros_like(gt[i])
        other = np.logical_or.reduce(gt[others & (cats != cats[i])], axis=0) \
            if (others & (cats != cats[i])).any() else np.zeros_like(gt[i])
        spill = pred[i] & ~gt[i]
        out["intersection"][i] = (pred[i] & gt[i]).sum()
        out["area"][i] = gt[i].sum()
        out["missed"][i] = (gt[i] & ~pred[i]).sum()
        out["spill_same_class"][i] = (spill & same).sum()
        out["spill_other_class"][i] = (spill & other & ~same).sum()
        out["spill_background"][i] = (spill & ~same & ~other).sum()
    union = out["area"] + out["spill_same_class"] + out["spill_background"]
    out["iou_without_other_class_spill"] = np.divide(
        out["intersection"], union, out=np.zeros(n), where=union > 0)
    return out


def _zoomed(kind: str, zoom: ZoomSpec | None) -> bool:
    """Whether prompts of ``kind`` are decoded on zoomed crops (the box kinds, zoom on)."""
    return kind in ("box", "box+point") and zoom is not None and zoom.on


def predict_prompted(predictor: PromptedSam, embeddings, kind: str, boxes, points,
                     class_ids=None, image: np.ndarray | None = None,
                     zoom: ZoomSpec | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Masks ``(N, H, W)`` and predicted IoUs for one prompt kind (§4.1's prompt sets).

    A single point is ambiguous, so it is decoded multimask and the mask with the highest
    predicted IoU is kept; boxes (with or without the point) are decoded single-mask, on
    zoomed crops of ``image`` when ``zoom`` is on (as generate decodes them).
    """
    pts = pixel_centre_to_sam(points)
    if _zoomed(kind, zoom):
        out = predictor.decode_zoomed(image, zoom, boxes_xyxy=boxes, class_ids=class_ids,
                                      points_xy=pts if kind == "box+point" else None)
    elif kind == "box":
        out = predictor.decode(embeddings, boxes_xyxy=boxes, class_ids=class_ids)
    elif kind == "point":
        out = predictor.decode(embeddings, points_xy=pts, class_ids=class_ids, multimask=True)
    elif kind == "box+point":
        out = predictor.decode(embeddings, points_xy=pts, boxes_xyxy=boxes, class_ids=class_ids)
    else:
        raise ValueError(f"unknown prompt kind {kind!r}; expected one of {PROMPT_KINDS}")
    masks, iou = out.best()
    return masks.cpu().numpy(), iou.cpu().numpy()


@torch.no_grad()
def teacher_miou(predictor: PromptedSam, gt: CocoDataset, image_root: str | Path, *,
                 prompts=PROMPT_KINDS, seed: int = 0, image_ids: list[int] | None = None,
                 category_rows: dict[int, int] | None = None, progress: bool = True,
                 zoom: ZoomSpec | None = None) -> dict:
    """Mean IoU between GT instances and the teacher's mask for a GT-simulated prompt.

    ``category_rows`` maps category ids to rows of the predictor's class embeddings (a
    class-aware teacher); ``None`` prompts without classes. ``zoom`` decodes the box kinds
    on zoomed crops. Returns ``{kind: {"mIoU": m, "num_instances": n}}``.
    """
    ids = image_ids if image_ids is not None else [img["id"] for img in gt.images]
    ious: dict[str, list[float]] = {k: [] for k in prompts}
    for image_id in tqdm(ids, desc="teacher mIoU", unit="img", disable=not progress):
        anns, masks, boxes, points = gt_prompts(gt, image_id, seed)
        if not anns:
            continue
        image = load_image(resolve_image_path(image_root, gt.image_by_id[image_id]["file_name"]))
        # the whole image's embedding only where some kind decodes on it
        emb = (predictor.encode([image]) if not all(_zoomed(k, zoom) for k in prompts)
               else None)
        cls = None if category_rows is None else [category_rows[a["category_id"]] for a in anns]
        for kind in prompts:
            pred, _ = predict_prompted(predictor, emb, kind, boxes, points, cls, image, zoom)
            ious[kind].extend(mask_iou(pred, masks).tolist())
    return {k: {"mIoU": float(np.mean(v)) if v else 0.0, "num_instances": len(v)}
            for k, v in ious.items()}


@torch.no_grad()
def detector_ap(detector, gt: CocoDataset, image_root: str | Path, *,
                image_ids: list[int] | None = None, batch_size: int = 8,
                progress: bool = True) -> dict:
    """COCO box AP / AP50 (0-100) of a Grounding DINO prompted with the whole label space."""
    ids = image_ids if image_ids is not None else [img["id"] for img in gt.images]
    cat_ids = gt.category_ids
    names = [gt.category_by_id[c]["name"] for c in cat_ids]
    results = []
    for s in tqdm(range(0, len(ids), batch_size), desc="detector AP", unit="batch",
                  disable=not progress):
        batch = ids[s: s + batch_size]
        images = [load_image(resolve_image_path(image_root, gt.image_by_id[i]["file_name"]))
                  for i in batch]
        for image_id, det in zip(batch, detector.detect(images, cat_ids, names,
                                                        box_threshold=0.0, nms_iou=None),
                                 strict=True):
            for box, label, score in zip(det.boxes_xyxy, det.labels, det.scores, strict=True):
                x0, y0, x1, y1 = (float(v) for v in box)
                results.append({"image_id": image_id, "category_id": int(label),
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(score)})
    if not results:
        return {"AP": 0.0, "AP50": 0.0}
    data = gt.to_dict()
    coco_gt = coco_from_dict(data)
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        ev.params.imgIds = ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"AP": round(float(ev.stats[0]) * 100, 4), "AP50": round(float(ev.stats[1]) * 100, 4)}
