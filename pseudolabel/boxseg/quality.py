"""BoxSeg's Quality-Aware Module (seed 000 §3.3) and its quality-weighted mask loss (§3.2).

For each GT box ``i`` the EMA teacher's candidates (pre-NMS detections, each with a box, a
box score ``s`` and a soft mask) are ranked by their box IoU ``u`` with the GT box
(Box-Quality Ranking, not by score: the GT box is exact, early scores are not), the top K
kept, and their masks fused with weights ``1(s > tau) * sqrt(s * u)``, normalised (eq. 2).
K follows the GT box's area (eq. 4). The fused mask's quality ``w = sqrt(s_hat * m_hat)``
(eq. 5) combines the candidates' mean score above ``tau`` with the fused mask's mean
probability inside the GT box over its pixels above ``tau``; it weighs the student's mask loss
(eq. 1).
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou

TAU = 0.5  # tau_m (seed 000 §3.3, "Discussion for Key Parameters")
K_MIN, K_MAX = 2, 10  # eq. 4
AREA_SMALL, AREA_LARGE = 32**2, 96**2  # A_s, A_l: COCO's small / large thresholds


def adaptive_k(box_areas, *, k_min: int = K_MIN, k_max: int = K_MAX,
               area_small: float = AREA_SMALL, area_large: float = AREA_LARGE) -> np.ndarray:
    """Eq. 4: K per GT box from its area ``a``: ``k_min`` up to ``area_small``, ``k_max`` from
    ``area_large``, linear in ``sqrt(a)`` between; rounded half up. ``(N,)`` ints."""
    a = np.asarray(box_areas, dtype=np.float64)
    ramp = (np.sqrt(np.clip(a, 0, None)) - np.sqrt(area_small)) / (
        np.sqrt(area_large) - np.sqrt(area_small))
    k = k_min + (k_max - k_min) * np.clip(ramp, 0.0, 1.0)
    return np.floor(k + 0.5).astype(np.int64)


def box_quality_ranking(candidate_boxes_xyxy: torch.Tensor, gt_box_xyxy: torch.Tensor,
                        k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Box-Quality Ranking: indices of the ``k`` candidates with the largest box IoU with the
    GT box (all of them, best first, when there are fewer) and those IoUs."""
    if len(candidate_boxes_xyxy) == 0 or k <= 0:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0)
    ious = box_iou(candidate_boxes_xyxy.float(), gt_box_xyxy.float().reshape(1, 4))[:, 0]
    top = ious.argsort(descending=True, stable=True)[:k]
    return top, ious[top]


def fuse_candidates(masks, box_scores, box_ious, box_mask, *, tau: float = TAU
                    ) -> tuple[np.ndarray, float]:
    """Quality-aware Masks Fusion (eq. 2) and Mask-Quality Scoring (eq. 5).

    Args:
        masks: ``(K, H, W)`` soft candidate masks in ``[0, 1]``.
        box_scores: ``(K,)`` box scores ``s``; box_ious: ``(K,)`` IoUs ``u`` with the GT box.
        box_mask: ``(H, W)`` bool, the GT box's pixels.
    Returns:
        The fused ``(H, W)`` float mask ``sum_n 1(s_n > tau) sqrt(s_n u_n) m_n / sum(...)``
        and ``w = sqrt(s_hat * m_hat)``. No candidate above ``tau``: a zero mask and 0.0.
    """
    m = np.asarray(masks, dtype=np.float64)
    s = np.asarray(box_scores, dtype=np.float64).reshape(-1)
    u = np.asarray(box_ious, dtype=np.float64).reshape(-1)
    b = np.asarray(box_mask, dtype=bool)
    shape = b.shape if m.ndim != 3 else m.shape[1:]
    valid = s > tau
    if not valid.any():
        return np.zeros(shape), 0.0
    weights = np.where(valid, np.sqrt(np.clip(s * u, 0, None)), 0.0)
    if weights.sum() <= 0:  # candidates above tau, all with zero IoU
        return np.zeros(shape), 0.0
    fused = np.tensordot(weights / weights.sum(), m, axes=1)
    s_hat = float(s[valid].mean())
    confident = (fused > tau) & b
    m_hat = float(fused[confident].sum() / confident.sum()) if confident.any() else 0.0
    return fused, float(np.sqrt(s_hat * m_hat))


def quality_weighted_dice(student_logits: torch.Tensor, fused: torch.Tensor,
                          weights: torch.Tensor) -> torch.Tensor:
    """Eq. 1 with dice as ``L_pixel``: ``1/N sum_i w_i dice(m_i^s, m_i^t)`` over the N boxes
    that have a fused mask (``weights > 0``); ``(N, H, W)`` logits and fused targets."""
    keep = weights > 0
    if not keep.any():
        return student_logits.sum() * 0.0
    p = student_logits[keep].sigmoid().flatten(1)
    t = fused[keep].flatten(1).to(p.dtype)
    dice = 1 - 2 * (p * t).sum(1) / ((p * p).sum(1) + (t * t).sum(1)).clamp_min(1e-5)
    return (weights[keep].to(dice.dtype) * dice).sum() / keep.sum()
