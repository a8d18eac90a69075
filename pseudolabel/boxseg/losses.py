"""Box-supervised mask losses (BoxInst, Tian et al. 2021), as seed 000 §3.2 inherits them, and
VarifocalNet's IoU-aware classification target for the box score ``s``.

* Projection loss: the predicted mask's max-projections on the x and y axes must match the GT
  box's (dice on each axis).
* Pairwise loss: neighbouring pixels (8 neighbours at dilation 2) whose colours are similar
  in LAB space (``exp(-||c_i - c_j|| / 2) >= 0.3``) should share a label; for such edges
  inside the GT box, ``-log P(same) = -log(p_i p_j + (1 - p_i)(1 - p_j))``, averaged.
* Varifocal loss (Zhang et al. 2021): a positive location's class target is the IoU of its
  predicted box with the GT box, so the score ``s`` ranks boxes by localisation quality.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from skimage.color import rgb2lab

PAIRWISE_SIZE, PAIRWISE_DILATION = 3, 2  # 8 neighbours, every other pixel
COLOR_THRESHOLD = 0.3  # tau of BoxInst's colour similarity


def _dice(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """BoxInst's dice: ``1 - 2 sum(x t) / (sum(x^2) + sum(t^2))`` over the last axis."""
    return 1 - 2 * (x * t).sum(-1) / ((x * x).sum(-1) + (t * t).sum(-1)).clamp_min(1e-5)


def projection_loss(mask_logits: torch.Tensor, box_masks: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` mask logits vs ``(N, H, W)`` {0, 1} GT-box masks -> ``(N,)`` losses."""
    p = mask_logits.sigmoid()
    b = box_masks.to(p.dtype)
    return _dice(p.amax(dim=1), b.amax(dim=1)) + _dice(p.amax(dim=2), b.amax(dim=2))


def _neighbours(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, C, 8, H, W)``: each pixel's 8 neighbours at dilation 2
    (zeros beyond the border)."""
    k, d = PAIRWISE_SIZE, PAIRWISE_DILATION
    n, c, h, w = x.shape
    cols = F.unfold(x, k, dilation=d, padding=d * (k // 2)).view(n, c, k * k, h, w)
    centre = k * k // 2
    return torch.cat([cols[:, :, :centre], cols[:, :, centre + 1:]], dim=2)


def color_similarity(image_rgb: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 RGB -> ``(8, H, W)`` LAB similarity ``exp(-||c_i - c_j|| / 2)``
    of each pixel with its 8 neighbours at dilation 2 (BoxInst); 0 for a neighbour beyond the
    image border."""
    lab = torch.as_tensor(rgb2lab(image_rgb), dtype=torch.float32).permute(2, 0, 1)[None]
    diff = lab[:, :, None] - _neighbours(lab)
    inside = _neighbours(torch.ones_like(lab[:, :1]))[:, 0] > 0  # no edge leaves the image
    return (torch.exp(-diff.norm(dim=1) * 0.5) * inside)[0]


def pairwise_loss(mask_logits: torch.Tensor, similarity: torch.Tensor,
                  box_masks: torch.Tensor, threshold: float = COLOR_THRESHOLD) -> torch.Tensor:
    """``(N, H, W)`` logits, ``(8, H, W)`` colour similarity of their image, ``(N, H, W)``
    GT-box masks -> ``(N,)`` mean ``-log P(same label)`` over the similar edges in the box."""
    neigh = _neighbours(mask_logits[:, None])[:, 0]  # (N, 8, H, W)
    centre = mask_logits[:, None]
    # log(p_i p_j + (1 - p_i)(1 - p_j)) in log space, stably
    log_same = torch.logsumexp(torch.stack([
        F.logsigmoid(centre) + F.logsigmoid(neigh),
        F.logsigmoid(-centre) + F.logsigmoid(-neigh)]), dim=0)
    edges = (similarity[None] >= threshold) & box_masks[:, None].bool()
    edges = edges.to(log_same.dtype)
    return -(log_same * edges).flatten(1).sum(1) / edges.flatten(1).sum(1).clamp_min(1.0)


def varifocal_loss(logits: torch.Tensor, iou_targets: torch.Tensor, alpha: float = 0.75,
                   gamma: float = 2.0) -> torch.Tensor:
    """VarifocalNet's loss, summed: ``logits`` and ``iou_targets`` of one shape; a target is
    the IoU of the location's box with its GT box at the GT class, 0 elsewhere. Positives
    weigh their target, negatives ``alpha * p^gamma``."""
    p = logits.sigmoid()
    positive = (iou_targets > 0).to(p.dtype)
    weight = iou_targets * positive + alpha * p.detach().pow(gamma) * (1 - positive)
    bce = F.binary_cross_entropy_with_logits(logits, iou_targets, reduction="none")
    return (weight * bce).sum()
