"""Semantic label-map quality: mIoU per class, and precision / recall / F1 of a (pseudo-)label
map against the fine one (the measures of seed 004 Fig. 6-7). Ignore (255) in the fine map is
never scored; 255 in the predicted map means "no label" (it lowers recall, not precision)."""

from __future__ import annotations

import numpy as np

from pseudolabel.semantic.labels import IGNORE


class SemanticScore:
    """Accumulates a confusion matrix over images; classes ``0 .. num_classes - 1``."""

    def __init__(self, num_classes: int) -> None:
        self.k = num_classes
        self.confusion = np.zeros((num_classes, num_classes), np.int64)
        self.unlabelled = 0  # fine pixels the prediction left at 255

    def add(self, pred: np.ndarray, fine: np.ndarray) -> None:
        valid = fine != IGNORE
        labelled = valid & (pred != IGNORE)
        self.unlabelled += int((valid & (pred == IGNORE)).sum())
        idx = fine[labelled].astype(np.int64) * self.k + pred[labelled].astype(np.int64)
        self.confusion += np.bincount(idx, minlength=self.k * self.k).reshape(self.k, self.k)

    def result(self) -> dict:
        c = self.confusion
        tp = np.diag(c).astype(np.float64)
        denom = c.sum(0) + c.sum(1) - tp
        present = c.sum(1) > 0
        iou = np.divide(tp, denom, out=np.zeros(self.k), where=denom > 0)
        correct, labelled = tp.sum(), c.sum()
        precision = correct / labelled if labelled else 0.0
        recall = correct / (labelled + self.unlabelled) if labelled + self.unlabelled else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"mIoU": float(iou[present].mean()) if present.any() else 0.0,
                "per_class_IoU": [float(v) for v in iou],
                "precision": float(precision), "recall": float(recall), "F1": float(f1)}
