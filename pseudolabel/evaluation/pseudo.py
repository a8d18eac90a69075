"""Pseudo-mask quality on the weakly labelled images of a pseudo-label file.

Pairing (one IoU per GT instance, unmatched GT counted as IoU 0):

* prompted settings: a pseudo-mask made from a weak annotation carries ``weak: {"id": k}``;
  simulated weak annotations keep their GT id, so the mask is paired with GT instance ``k``;
* unprompted settings (no ``weak.id``): per image and class, Hungarian matching on mask IoU
  (``scipy.optimize.linear_sum_assignment``). Matching within a class keeps a mask of the
  wrong class from counting as a good one.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from pycocotools import mask as mask_utils
from scipy.optimize import linear_sum_assignment

from pseudolabel.data.coco import CocoDataset
from pseudolabel.evaluation.coco_eval import evaluate_masks


def _rle(ds: CocoDataset, ann: dict) -> dict:
    rle = ds.rle(ann)
    return {"size": rle["size"], "counts": rle["counts"].encode("ascii")}


def weak_image_ids(pseudo: CocoDataset, gt: CocoDataset) -> list[int]:
    """Images of ``pseudo`` that are not fully labelled (all, if no image has a ``kind``)."""
    return [img["id"] for img in pseudo.images
            if img.get("kind", "unknown") != "fully_labeled" and img["id"] in gt.image_by_id]


def _pair_ious(gt_anns: list[dict], pseudo_anns: list[dict], gt: CocoDataset,
               pseudo: CocoDataset, prompted: bool) -> tuple[list[float], int]:
    """IoU per GT instance (in ``gt_anns`` order) and the number of unmatched pseudo-masks."""
    ious = [0.0] * len(gt_anns)
    if prompted:
        by_weak = {a["weak"]["id"]: a for a in pseudo_anns if isinstance(a.get("weak"), dict)
                   and "id" in a["weak"]}
        used = 0
        for j, g in enumerate(gt_anns):
            p = by_weak.get(g["id"])
            if p is not None:
                used += 1
                ious[j] = float(mask_utils.iou([_rle(pseudo, p)], [_rle(gt, g)], [0])[0, 0])
        return ious, len(pseudo_anns) - used
    unmatched = 0
    classes = {a["category_id"] for a in gt_anns} | {a["category_id"] for a in pseudo_anns}
    for c in classes:
        gi = [j for j, a in enumerate(gt_anns) if a["category_id"] == c]
        ps = [a for a in pseudo_anns if a["category_id"] == c]
        if gi and ps:
            m = np.asarray(mask_utils.iou([_rle(pseudo, p) for p in ps],
                                          [_rle(gt, gt_anns[j]) for j in gi], [0] * len(gi)))
            rows, cols = linear_sum_assignment(-m)
            for r, col in zip(rows, cols, strict=True):
                ious[gi[col]] = float(m[r, col])
            unmatched += len(ps) - len(rows)
        else:
            unmatched += len(ps)
    return ious, unmatched


def evaluate_pseudo(pseudo: CocoDataset, gt: CocoDataset, area_scale: float | None = None) -> dict:
    """Quality of the pseudo-masks of ``pseudo`` against ``gt`` on weakly labelled images.

    Returns ``{"mIoU", "num_instances", "unmatched_pseudo", "prompted", "per_class": {name:
    {"mIoU", "num_instances"}}, "segm": {...}, "boundary": {...}}`` (IoU in [0, 1], AP 0-100).
    """
    ids = weak_image_ids(pseudo, gt)
    prompted = any(isinstance(a.get("weak"), dict) and "id" in a["weak"]
                   for i in ids for a in pseudo.anns_by_image[i])
    per_class: dict[int, list[float]] = defaultdict(list)
    unmatched = 0
    for i in ids:
        g = [a for a in gt.anns_by_image[i] if not a.get("iscrowd", 0) and "segmentation" in a]
        p = [a for a in pseudo.anns_by_image[i] if not a.get("iscrowd", 0)
             and "segmentation" in a and a.get("source", "pseudo") != "gt"]
        ious, n_unmatched = _pair_ious(g, p, gt, pseudo, prompted)
        unmatched += n_unmatched
        for a, iou in zip(g, ious, strict=True):
            per_class[a["category_id"]].append(iou)
    all_ious = [v for vs in per_class.values() for v in vs]
    preds = [{"image_id": a["image_id"], "category_id": a["category_id"],
              "segmentation": a["segmentation"], "score": float(a.get("score", 1.0))}
             for i in ids for a in pseudo.anns_by_image[i]
             if not a.get("iscrowd", 0) and "segmentation" in a]
    result = {
        "num_images": len(ids),
        "num_instances": len(all_ious),
        "mIoU": float(np.mean(all_ious)) if all_ious else 0.0,
        "unmatched_pseudo": unmatched,
        "prompted": prompted,
        "per_class": {
            gt.category_by_id[c]["name"]: {"mIoU": float(np.mean(v)), "num_instances": len(v)}
            for c, v in sorted(per_class.items())
        },
    }
    result.update(evaluate_masks(gt, preds, area_scale=area_scale, image_ids=ids))
    return result


def twin_agreement(a: CocoDataset, b: CocoDataset, iou: float = 0.9) -> dict:
    """How two pseudo-label files of the same weak labels agree, mask by mask (e.g. bf16 vs
    fp32): each pseudo-mask of ``a`` is paired with the one of ``b`` made from the same
    prompt (``weak.id``; in order within an image for unprompted settings), a mask only one
    file has counting as IoU 0. Returns the mean IoU of the pairs, the share at ``iou`` or
    more and the number of pairs."""
    def keyed(ds: CocoDataset) -> dict:
        out, seen = {}, defaultdict(int)
        for ann in ds.annotations:
            if ann.get("source") != "pseudo":
                continue
            weak = ann.get("weak") or {}
            key = ("id", weak["id"]) if "id" in weak else (ann["image_id"],
                                                           seen[ann["image_id"]])
            seen[ann["image_id"]] += 1
            out[key] = _rle(ds, ann)
        return out

    ka, kb = keyed(a), keyed(b)
    ious = []
    for key in sorted(set(ka) | set(kb), key=str):
        if key in ka and key in kb:
            ious.append(float(mask_utils.iou([ka[key]], [kb[key]], [0])[0, 0]))
        else:
            ious.append(0.0)
    arr = np.asarray(ious)
    return {"pairs": len(arr), "mean_iou": float(arr.mean()) if len(arr) else 1.0,
            f"share_iou_{iou:g}": float((arr >= iou).mean()) if len(arr) else 1.0}
