"""``pseudolabel weaken``: simulate weak labels from ground truth (seed 001 §3.2-3.5, §4.1).

A fraction of the images stays fully labelled; every other image keeps only the weak label
of the chosen setting. The file format is documented in ``docs/weak-labels.md``.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np

from pseudolabel.data.coco import WEAK_KINDS, CocoDataset
from pseudolabel.data.masks import rle_to_mask, rle_to_xywh
from pseudolabel.data.report import Report


def num_fully_labeled(fraction: float, num_images: int) -> int:
    """round(F * N) images (half rounds up), at least one when F > 0 and images exist."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    if fraction == 0.0 or num_images == 0:
        return 0
    return max(1, min(num_images, math.floor(fraction * num_images + 0.5)))


def select_fully_labeled(image_ids: list[int], fraction: float, seed: int) -> list[int]:
    """The fully labelled images of a run, sorted by id.

    Depends only on the set of ids, ``fraction`` and ``seed``, so every weak setting (and
    every later stage) of one run sees the same split (seed 001 §4.1 samples 1% / 10%).
    """
    ids = np.array(sorted(set(image_ids)), dtype=np.int64)
    k = num_fully_labeled(fraction, len(ids))
    chosen = np.random.default_rng(seed).permutation(ids)[:k]
    return sorted(int(i) for i in chosen)


def sample_point(mask: np.ndarray, rng: np.random.Generator) -> list[float] | None:
    """One pixel drawn uniformly from ``mask``, returned as its centre ``[x, y]``; None if empty."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return None
    i = int(rng.integers(len(ys)))
    return [float(xs[i]) + 0.5, float(ys[i]) + 0.5]


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _weak_annotation(gt: CocoDataset, ann: dict, weak: str, rng: np.random.Generator,
                     report: Report) -> dict | None:
    base = {"id": ann["id"], "image_id": ann["image_id"], "category_id": ann["category_id"],
            "iscrowd": 0}
    if weak == "box+class":
        box = ann.get("bbox")
        if box is None:
            if "segmentation" not in ann:
                report.add(gt.path, f"annotation {ann['id']}", "has neither bbox nor segmentation")
                return None
            box = rle_to_xywh(gt.rle(ann))
        return {**base, "bbox": [float(v) for v in box]}
    # point+class: one positive point drawn uniformly from the instance mask (§3.4)
    if "segmentation" not in ann:
        report.add(gt.path, f"annotation {ann['id']}", "has no segmentation to draw a point from")
        return None
    point = sample_point(rle_to_mask(gt.rle(ann)), rng)
    if point is None:
        report.add(gt.path, f"annotation {ann['id']}", "empty mask: no point can be drawn")
        return None
    return {**base, "point": point}


def weaken(gt: CocoDataset, weak: str, fraction: float, seed: int = 0) -> tuple[dict, Report]:
    """Weak-label file for setting ``weak`` as a COCO dict, and the items skipped.

    * fully labelled images (``kind: fully_labeled``) keep every annotation unchanged;
    * ``none`` keeps nothing; ``class`` keeps the image's category ids as ``tags``;
      ``point+class`` keeps one uniform point per instance plus its class; ``box+class``
      keeps each instance's box plus its class. Weak annotations keep their GT ``id``.
    * crowd annotations stay as ignore regions (``iscrowd: 1``) and never become prompts.
    """
    if weak not in WEAK_KINDS:
        raise ValueError(f"unknown weak setting {weak!r}; expected one of {WEAK_KINDS}")
    report = Report()
    report.extend(gt.report)  # what loading the GT skipped is skipped here too
    full = set(select_fully_labeled([img["id"] for img in gt.images], fraction, seed))
    images, annotations = [], []
    for img in gt.images:
        anns = gt.anns_by_image[img["id"]]
        if img["id"] in full:
            images.append({**img, "kind": "fully_labeled"})
            annotations.extend(anns)
            continue
        record = {**img, "kind": weak}
        if weak != "none":
            record["tags"] = sorted({a["category_id"] for a in anns})
        images.append(record)
        # Per-image generator: the points of an image do not depend on the other images.
        rng = np.random.default_rng([seed, img["id"]])
        for ann in anns:
            if ann.get("iscrowd", 0):
                annotations.append(ann)
            elif weak in ("point+class", "box+class"):
                new = _weak_annotation(gt, ann, weak, rng, report)
                if new is not None:
                    annotations.append(new)
    info = {
        "description": f"weak labels ({weak}) simulated by pseudolabel weaken",
        "weak": weak,
        "fraction": fraction,
        "seed": seed,
        "fully_labeled": len(full),
        "gt": str(gt.path),
        "gt_sha256": file_sha256(gt.path),
        "gt_info": gt.info,
    }
    extra = {k: v for k, v in gt.extra.items() if k != "info"}
    return {**extra, "info": info, "images": images, "categories": gt.categories,
            "annotations": annotations}, report
