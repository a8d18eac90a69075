"""Peer-assisted copy-paste for the pseudo-mask student (seed 000 §3.4, Algorithm 1).

Seed 000 calls the module general ("can be applied to any BSIS framework, such as SIM
(teacher-student framework)"). Here the student trains on a fixed pseudo-label file, so the
peers are that file's objects:

* **peer tutors** (``quality``): masks whose quality exceeds ``tau`` (the annotation's
  ``score``, the teacher's predicted IoU; GT masks count 1) and whose box overlaps no other
  object of their image; ``random`` (Table 5's second row) admits every mask and pastes it
  anywhere;
* **teaching a learner**: after an image's large-scale jitter, one peer, under its own LSJ
  scale and flip, is pasted with its centre drawn uniformly inside the box of one of the
  image's objects (the learner, drawn uniformly); the pasted pixels leave every occluded
  object's target (an object left without pixels is dropped) and the peer joins as an
  instance with its class, its mask and its loss weight.

Deviation: Algorithm 1's memory bank is a FIFO of the last H = 80 peers because its EMA
teacher's masks change as training goes; these pseudo-masks are fixed, so a peer is drawn
uniformly from all of them (a FIFO would hold a moving window of the same pool and would
have to be checkpointed and kept equal across ``DataLoader`` workers and ranks).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

from pseudolabel.data.images import load_image, resolve_image_path
from pseudolabel.students.data import InstanceData, Sample, normalise

MODES = ("off", "random", "quality")


def overlapping(boxes: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: which of ``boxes`` (xyxy) overlap another box of the set."""
    if len(boxes) < 2:
        return np.zeros(len(boxes), bool)
    b = boxes[:, None]
    o = boxes[None]
    hit = ((o[..., 0] < b[..., 2]) & (o[..., 2] > b[..., 0]) & (o[..., 1] < b[..., 3])
           & (o[..., 3] > b[..., 1]))
    np.fill_diagonal(hit, False)
    return hit.any(1)


class PeerPool:
    """The annotations of ``data`` that may be pasted (see the module doc)."""

    def __init__(self, data: InstanceData, mode: str, tau: float = 0.5) -> None:
        if mode not in MODES:
            raise ValueError(f"copy-paste {mode!r}: expected one of {', '.join(MODES)}")
        self.data, self.mode = data, mode
        index = data.index
        rows, kept = [], []
        for i in range(len(index) if mode != "off" else 0):
            a, b = int(index.starts[i]), int(index.starts[i + 1])
            if a == b:
                continue
            h, w = (int(v) for v in index.sizes[i])
            xywh = mask_utils.toBbox([{"size": [h, w], "counts": index.rles[k]}
                                      for k in range(a, b)])
            boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
            ok = (xywh[:, 2] >= 2) & (xywh[:, 3] >= 2)  # at least 2 x 2 px (and a mask)
            if mode == "quality":
                ok &= (index.quality[a:b] > tau) & ~overlapping(boxes)
            rows.append(np.flatnonzero(ok) + a)
            kept.append(boxes[ok])
        self.rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        # xyxy in whole pixels: the crop a paste takes from the peer's image
        self.boxes = (np.concatenate(kept) if kept else np.zeros((0, 4))).astype(np.int64)
        self.image_of = np.searchsorted(index.starts, self.rows, side="right") - 1

    def __len__(self) -> int:
        return len(self.rows)

    def peer(self, j: int) -> tuple[np.ndarray, np.ndarray, int, float]:
        """Peer j: its box's pixels ``(h, w, 3)`` uint8, mask ``(h, w)`` bool, class index
        and loss weight."""
        index, k, i = self.data.index, int(self.rows[j]), int(self.image_of[j])
        h, w = (int(v) for v in index.sizes[i])
        mask = mask_utils.decode({"size": [h, w], "counts": index.rles[k]}).astype(bool)
        x0, y0, x1, y1 = self.boxes[j]
        pixels = load_image(resolve_image_path(self.data.image_root, index.file_name(i)))
        return (pixels[y0:y1, x0:x1], mask[y0:y1, x0:x1], int(index.labels[k]),
                float(index.weights[k]))

    def paste(self, sample: Sample, rng: np.random.Generator,
              scale_range: tuple[float, float]) -> Sample:
        """``sample`` with one peer pasted (unchanged when the pool or, in ``quality``
        mode, the image has no object)."""
        if not len(self) or (self.mode == "quality" and not len(sample.masks)):
            return sample
        j = int(rng.integers(len(self)))
        crop, mask, label, weight = self.peer(j)
        size = sample.pixels.shape[-1]
        # the peer is scaled as LSJ scales its own image (module doc)
        longest = max(int(v) for v in self.data.index.sizes[int(self.image_of[j])])
        scale = rng.uniform(*scale_range) * size / longest
        h, w = max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale))
        patch = F.interpolate(torch.as_tensor(np.ascontiguousarray(crop)).permute(2, 0, 1)
                              [None].float(), (h, w), mode="bilinear", align_corners=False,
                              antialias=True)[0]
        m = F.interpolate(torch.as_tensor(mask)[None, None].float(), (h, w),
                          mode="bilinear", align_corners=False)[0, 0] >= 0.5
        if rng.random() < 0.5:
            patch, m = patch.flip(-1), m.flip(-1)
        if self.mode == "quality":  # the peer's centre inside a learner's box
            ys, xs = torch.nonzero(sample.masks[int(rng.integers(len(sample.masks)))],
                                   as_tuple=True)
            cy = rng.uniform(int(ys.min()), int(ys.max()) + 1)
            cx = rng.uniform(int(xs.min()), int(xs.max()) + 1)
            top, left = int(round(cy - h / 2)), int(round(cx - w / 2))
        else:
            top = int(rng.integers(0, max(1, size - h + 1)))
            left = int(rng.integers(0, max(1, size - w + 1)))
        pasted = torch.zeros((size, size), dtype=torch.bool)
        y0, x0, y1, x1 = max(0, top), max(0, left), min(size, top + h), min(size, left + w)
        if y1 <= y0 or x1 <= x0:
            return sample
        pasted[y0:y1, x0:x1] = m[y0 - top:y1 - top, x0 - left:x1 - left]
        pasted &= sample.valid  # never onto the padding
        if not pasted.any():
            return sample
        canvas = torch.zeros_like(sample.pixels)
        canvas[:, y0:y1, x0:x1] = normalise(patch[:, y0 - top:y1 - top, x0 - left:x1 - left])
        pixels = torch.where(pasted, canvas, sample.pixels)
        masks = sample.masks & ~pasted
        keep = masks.flatten(1).any(1)
        return Sample(pixels, sample.valid, torch.cat([masks[keep], pasted[None]]),
                      torch.cat([sample.labels[keep], torch.tensor([label])]),
                      torch.cat([sample.weights[keep],
                                 torch.tensor([weight], dtype=sample.weights.dtype)]))
