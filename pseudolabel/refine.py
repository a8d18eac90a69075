"""Prompt refinement for the point + class setting (seed 001 §3.4, Algorithm 1).

P-SAM turns each GT point into a mask whose box is ``B_sam``; Grounding DINO, prompted with
the image's tags, proposes boxes ``B_dino``. Hungarian matching assigns Grounding DINO boxes
to the GT instances; an instance keeps its SAM box unless its match is a confident box of
its own class that contains its point.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_iou

# seed 001 §4.1: alpha = 5, beta = 2, tau_c = 0.1
ALPHA = 5.0
BETA = 2.0
TAU_C = 0.1


def points_in_boxes(points_xy: np.ndarray, boxes_xyxy: np.ndarray) -> np.ndarray:
    """``(N', 2)`` points, ``(N, 4)`` boxes -> ``(N, N')``: point j inside box i (edges count)."""
    p = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)[None]
    b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)[:, None]
    return ((b[..., 0] <= p[..., 0]) & (p[..., 0] <= b[..., 2])
            & (b[..., 1] <= p[..., 1]) & (p[..., 1] <= b[..., 3]))


def merge_prompt_boxes(dino_boxes_xyxy, dino_scores, dino_labels, gt_points_xy, gt_labels,
                       sam_boxes_xyxy, *, alpha: float = ALPHA, beta: float = BETA,
                       tau_c: float = TAU_C) -> np.ndarray:
    """Algorithm 1: one prompt box per GT instance, ``(N', 4)`` XYXY.

    Args:
        dino_boxes_xyxy: ``(N, 4)`` Grounding DINO boxes.
        dino_scores: ``(N,)`` their confidences ``C_dino``.
        dino_labels: ``(N,)`` class ids, or ``(N, K)`` class scores (``Y_dino``; the arg-max
            column is the class, columns indexed like ``gt_labels``).
        gt_points_xy: ``(N', 2)`` the GT points.
        gt_labels: ``(N',)`` the GT classes.
        sam_boxes_xyxy: ``(N', 4)`` boxes of the P-SAM masks of those points.

    Cost ``C[i, j] = alpha * [Y_dino[i] != Y_gt[j] or P_gt[j] not in B_dino[i]]
    - IoU(B_dino[i], B_sam[j]) - beta * C_dino[i]``; rows with ``C_dino[i] < tau_c`` cost
    infinity, so they are left out of the assignment. Instance j takes its matched Grounding
    DINO box only if it has the instance's class and contains its point (on the edge counts
    as inside); an instance with no match, or with an invalid one, keeps its SAM box.
    """
    sam = np.asarray(sam_boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    points = np.asarray(gt_points_xy, dtype=np.float64).reshape(-1, 2)
    gt_y = np.asarray(gt_labels).reshape(-1)
    if not len(sam) == len(points) == len(gt_y):
        raise ValueError(f"{len(sam)} SAM boxes, {len(points)} points and {len(gt_y)} labels: "
                         "one of each per GT instance")
    dino = np.asarray(dino_boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(dino_scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(dino_labels)
    dino_y = labels.argmax(1) if labels.ndim == 2 else labels.reshape(-1)
    if not len(dino) == len(scores) == len(dino_y):
        raise ValueError(f"{len(dino)} Grounding DINO boxes, {len(scores)} scores and "
                         f"{len(dino_y)} labels")
    merged = sam.copy()
    keep = np.flatnonzero(scores >= tau_c)  # lines 3-5: low-confidence rows are excluded
    if not len(keep) or not len(sam):
        return merged
    dino, scores, dino_y = dino[keep], scores[keep], dino_y[keep]
    valid = (dino_y[:, None] == gt_y[None]) & points_in_boxes(points, dino)  # (N, N')
    iou = box_iou(torch.as_tensor(dino), torch.as_tensor(sam)).numpy()
    cost = alpha * ~valid - iou - beta * scores[:, None]  # lines 8-12
    rows, cols = linear_sum_assignment(cost)  # line 14
    for i, j in zip(rows, cols, strict=True):  # lines 16-22
        if valid[i, j]:
            merged[j] = dino[i]
    return merged
