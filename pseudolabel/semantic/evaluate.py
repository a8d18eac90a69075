"""Semantic label-map quality: mIoU per class, and precision / recall / F1 of a (pseudo-)label
map against the fine one (the measures of seed 004 Fig. 6-7). Ignore (255) in the fine map is
never scored; 255 in the predicted map means "no label" (it lowers recall, not precision).

``precision`` / ``recall`` are over all scored pixels: for a map that labels every pixel (as a
SAM pseudo-map with background filled in does) both equal pixel accuracy. ``fg_precision`` /
``fg_recall`` / ``fg_F1`` are the per-class means over the foreground classes of the fine
maps (class 0, background, left out): the precision and recall of the masks SAM adds, the
trade-off seed 004 Fig. 6-7 plot."""

from __future__ import annotations

import numpy as np

from pseudolabel.semantic.labels import IGNORE


class SemanticScore:
    """Accumulates a confusion matrix over images; classes ``0 .. num_classes - 1``."""

    def __init__(self, num_classes: int) -> None:
        self.k = num_classes
        self.confusion = np.zeros((num_classes, num_classes), np.int64)
        self.unlabelled = 0  # fine pixels the prediction left at 255
        self.unlabelled_per_class = np.zeros(num_classes, np.int64)

    def add(self, pred: np.ndarray, fine: np.ndarray) -> None:
        valid = fine != IGNORE
        labelled = valid & (pred != IGNORE)
        missed = valid & (pred == IGNORE)
        self.unlabelled += int(missed.sum())
        self.unlabelled_per_class += np.bincount(fine[missed].astype(np.int64),
                                                 minlength=self.k)[: self.k]
        idx = fine[labelled].astype(np.int64) * self.k + pred[labelled].astype(np.int64)
        self.confusion += np.bincount(idx, minlength=self.k * self.k).reshape(self.k, self.k)

    def result(self) -> dict:
        c = self.confusion
        tp = np.diag(c).astype(np.float64)
        denom = c.sum(0) + c.sum(1) - tp
        iou = np.divide(tp, denom, out=np.zeros(self.k), where=denom > 0)
        correct, labelled = tp.sum(), c.sum()
        precision = correct / labelled if labelled else 0.0
        recall = correct / (labelled + self.unlabelled) if labelled + self.unlabelled else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        predicted = c.sum(0)
        in_fine = c.sum(1) + self.unlabelled_per_class
        fg = np.flatnonzero(in_fine[1:] > 0) + 1
        fg_p = float(np.mean(np.divide(tp[fg], predicted[fg], out=np.zeros(fg.size),
                                       where=predicted[fg] > 0))) if fg.size else 0.0
        fg_r = float(np.mean(tp[fg] / in_fine[fg])) if fg.size else 0.0
        present = in_fine > 0
        return {"fg_precision": fg_p, "fg_recall": fg_r,
                "fg_F1": 2 * fg_p * fg_r / (fg_p + fg_r) if fg_p + fg_r else 0.0,
                "mIoU": float(iou[present].mean()) if present.any() else 0.0,
                "per_class_IoU": [float(v) for v in iou],
                "precision": float(precision), "recall": float(recall), "F1": float(f1)}
