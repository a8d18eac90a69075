"""Peer-assisted Copy-paste (seed 000 §3.4, Algorithm 1).

A FIFO memory bank (length H = 80) collects *peer tutors*: objects whose fused pseudo-mask
scores ``w > tau`` and whose box overlaps no other object of their image. Each training image
then gets one peer pasted over one of its objects (the *learner*): the pasted pixels leave
every occluded object's target, and the peer joins the image as a new instance with its own
mask and weight. ``random`` mode (Table 5's second row) banks any object with a fused mask
and pastes it anywhere.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch
import torch.nn.functional as F

from pseudolabel.students.copy_paste import overlapping
from pseudolabel.students.data import normalise


class MemoryBank:
    """Peers as ``(rgb crop (h, w, 3) uint8, mask (h, w) bool, class index, w)``, in the
    teacher's frame, the oldest dropped beyond ``size``."""

    def __init__(self, size: int) -> None:
        self.items: deque = deque(maxlen=size)

    def __len__(self) -> int:
        return len(self.items)

    def collect(self, *, pixels: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                fused: np.ndarray, weights: np.ndarray, factor: float, mode: str,
                tau: float) -> None:
        """Add an image's peers: ``fused`` ``(N, G, G)`` on the teacher's stride-4 grid of a
        ``4G`` canvas where the image is scaled by ``factor``; ``boxes`` in image pixels."""
        if mode == "off" or not len(boxes):
            return
        size = fused.shape[-1] * 4
        nh, nw = (max(1, round(v * factor)) for v in pixels.shape[:2])
        rgb = F.interpolate(torch.as_tensor(pixels).permute(2, 0, 1)[None].float(), (nh, nw),
                            mode="bilinear", align_corners=False, antialias=True)[0]
        masks = F.interpolate(torch.as_tensor(fused)[None], (size, size), mode="bilinear",
                              align_corners=False)[0, :, :nh, :nw] > 0.5
        busy = overlapping(np.asarray(boxes, dtype=np.float64))
        for i, (box, w) in enumerate(zip(boxes, weights, strict=True)):
            if mode == "quality" and (w <= tau or busy[i]):
                continue
            if mode == "random" and w <= 0:
                continue
            x0, y0, x1, y1 = (int(round(v * factor)) for v in box)
            x0, y0 = max(0, x0), max(0, y0)
            x1, y1 = min(nw, max(x1, x0 + 1)), min(nh, max(y1, y0 + 1))
            mask = masks[i, y0:y1, x0:x1].numpy()
            if mask.sum() < 4:
                continue
            crop = rgb[:, y0:y1, x0:x1].permute(1, 2, 0).clamp(0, 255).byte().numpy()
            self.items.append((crop, mask, int(labels[i]), float(w)))

    def sample(self, rng: np.random.Generator):
        return self.items[int(rng.integers(len(self.items)))]

    def state(self) -> dict:
        """For the training checkpoint (plain tensors: loaded with ``weights_only``)."""
        return {"crops": [torch.as_tensor(c) for c, _, _, _ in self.items],
                "masks": [torch.as_tensor(m) for _, m, _, _ in self.items],
                "labels": [lab for _, _, lab, _ in self.items],
                "weights": [w for _, _, _, w in self.items]}

    def load(self, state: dict) -> None:
        self.items.clear()
        for c, m, lab, w in zip(state["crops"], state["masks"], state["labels"],
                                state["weights"], strict=True):
            self.items.append((c.numpy(), m.numpy(), int(lab), float(w)))


def paste_peer(bank: MemoryBank, x: torch.Tensor, rgb: np.ndarray, boxes: np.ndarray,
               labels: np.ndarray, fused: np.ndarray, weights: np.ndarray,
               rng: np.random.Generator, scale: float, mode: str):
    """Paste one peer into a student image (``x`` ``(3, S, S)`` normalised, ``rgb`` its
    uint8 canvas, ``boxes`` / ``fused`` ``(N, S, S)`` in its frame). Returns the new
    ``x, rgb, boxes, labels, fused, weights``: every pasted pixel is removed from the other
    objects' targets, and the peer is appended as an instance (its tight box, its class, its
    mask as target, its weight)."""
    if mode == "off" or not len(bank) or not len(boxes):
        return x, rgb, boxes, labels, fused, weights
    crop, mask, label, w = bank.sample(rng)
    h = max(1, round(crop.shape[0] * scale))
    wd = max(1, round(crop.shape[1] * scale))
    crop_t = F.interpolate(torch.as_tensor(crop).permute(2, 0, 1)[None].float(), (h, wd),
                           mode="bilinear", align_corners=False)[0]
    mask_t = F.interpolate(torch.as_tensor(mask)[None, None].float(), (h, wd),
                           mode="nearest")[0, 0] > 0.5
    size = x.shape[-1]
    if mode == "quality":  # over a learner: the peer's centre inside the learner's box
        lx0, ly0, lx1, ly1 = boxes[int(rng.integers(len(boxes)))]
        cx, cy = rng.uniform(lx0, max(lx1, lx0 + 1)), rng.uniform(ly0, max(ly1, ly0 + 1))
        top, left = int(round(cy - h / 2)), int(round(cx - wd / 2))
    else:
        top, left = int(rng.integers(0, max(1, size - h))), int(rng.integers(0, max(1,
                                                                                  size - wd)))
    # the part of the peer that lands on the canvas
    y0, x0 = max(0, top), max(0, left)
    y1, x1 = min(size, top + h), min(size, left + wd)
    if y1 <= y0 or x1 <= x0:
        return x, rgb, boxes, labels, fused, weights
    m = mask_t[y0 - top: y1 - top, x0 - left: x1 - left]
    if not m.any():
        return x, rgb, boxes, labels, fused, weights
    patch = crop_t[:, y0 - top: y1 - top, x0 - left: x1 - left]
    x = x.clone()
    x[:, y0:y1, x0:x1] = torch.where(m, normalise(patch), x[:, y0:y1, x0:x1])
    rgb = rgb.copy()
    rgb[y0:y1, x0:x1][m.numpy()] = patch.permute(1, 2, 0).clamp(0, 255).byte().numpy()[
        m.numpy()]
    pasted = np.zeros((size, size), bool)
    pasted[y0:y1, x0:x1] = m.numpy()
    fused = fused.copy()
    fused[:, pasted] = 0.0  # the occluded objects lose the pasted pixels
    ys, xs = np.nonzero(pasted)
    box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=np.float32)
    return (x, rgb, np.concatenate([boxes, box]), np.append(labels, label),
            np.concatenate([fused, pasted[None].astype(np.float32)]), np.append(weights, w))
