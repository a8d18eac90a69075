"""Student training data: COCO instances (GT + pseudo-masks) with large-scale jitter.

Large-scale jitter (LSJ, Ghiasi et al. 2021; the Mask2Former recipe): the image is resized so
its longest side is ``scale * size`` with ``scale`` drawn uniformly from ``scale_range``,
flipped horizontally with probability 0.5, then randomly cropped (or padded) to
``size x size``. Instances whose mask leaves the crop are dropped. Crowd regions are not
training targets. Every draw comes from the generator passed in, so a step is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pseudolabel.data.coco import CocoDataset, load_coco
from pseudolabel.data.images import load_image, resolve_image_path
from pseudolabel.data.masks import rle_to_mask

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Sample:
    """One training image after augmentation: ``pixels`` ``(3, S, S)`` normalised,
    ``valid`` ``(S, S)`` bool (False on padding), ``masks`` ``(N, S, S)`` float,
    ``labels`` ``(N,)`` class indices, ``weights`` ``(N,)`` per-instance mask-loss weights."""

    pixels: torch.Tensor
    valid: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor
    weights: torch.Tensor


class InstanceData:
    """Images of a COCO file with their non-crowd instance masks.

    ``weight_key`` (e.g. ``"score"``) takes each annotation's mask-loss weight from that
    field (seed 000 eq. 1); annotations without it (GT) weigh 1.
    """

    def __init__(self, ann_path: str | Path, image_root: str | Path,
                 weight_key: str | None = None, dataset: CocoDataset | None = None) -> None:
        self.coco = dataset if dataset is not None else load_coco(ann_path)
        self.image_root = Path(image_root)
        self.weight_key = weight_key
        self.class_index = {c: k for k, c in enumerate(self.coco.category_ids)}
        self.ids = [img["id"] for img in self.coco.images]
        if not self.ids:
            raise ValueError(f"{ann_path}: no images to train on")

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Image ``(H, W, 3)``, masks ``(N, H, W)`` bool, class indices, weights."""
        img = self.coco.image_by_id[self.ids[index]]
        pixels = load_image(resolve_image_path(self.image_root, img["file_name"]))
        anns = [a for a in self.coco.anns_by_image[img["id"]]
                if not a.get("iscrowd", 0) and "segmentation" in a]
        h, w = pixels.shape[:2]
        masks = (np.stack([rle_to_mask(self.coco.rle(a)) for a in anns]) if anns
                 else np.zeros((0, h, w), bool))
        labels = np.array([self.class_index[a["category_id"]] for a in anns], dtype=np.int64)
        weights = np.array([float(a.get(self.weight_key, 1.0)) if self.weight_key else 1.0
                            for a in anns], dtype=np.float32)
        return pixels, masks, labels, weights


def normalise(pixels: np.ndarray) -> torch.Tensor:
    x = torch.as_tensor(pixels).permute(2, 0, 1).float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return (x - mean) / std


def large_scale_jitter(pixels: np.ndarray, masks: np.ndarray, labels: np.ndarray,
                       weights: np.ndarray, rng: np.random.Generator, size: int,
                       scale_range: tuple[float, float]) -> Sample:
    """LSJ as described in the module docstring."""
    h, w = pixels.shape[:2]
    scale = rng.uniform(*scale_range) * size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    x = F.interpolate(normalise(pixels)[None], (nh, nw), mode="bilinear",
                      align_corners=False, antialias=True)[0]
    m = torch.as_tensor(masks, dtype=torch.float32)
    if len(m):
        m = F.interpolate(m[None], (nh, nw), mode="bilinear", align_corners=False,
                          antialias=True)[0]  # as the image, so both edges agree
    if rng.random() < 0.5:
        x, m = x.flip(-1), m.flip(-1)
    y0 = int(rng.integers(0, nh - size + 1)) if nh > size else 0
    x0 = int(rng.integers(0, nw - size + 1)) if nw > size else 0
    x, m = x[:, y0:y0 + size, x0:x0 + size], m[:, y0:y0 + size, x0:x0 + size]
    ch, cw = x.shape[-2:]
    pixels_out = torch.zeros((3, size, size))
    pixels_out[:, :ch, :cw] = x
    valid = torch.zeros((size, size), dtype=torch.bool)
    valid[:ch, :cw] = True
    masks_out = torch.zeros((len(m), size, size))
    masks_out[:, :ch, :cw] = (m > 0.5).float()
    keep = masks_out.flatten(1).sum(1) > 0 if len(m) else torch.zeros(0, dtype=torch.bool)
    return Sample(pixels_out, valid, masks_out[keep], torch.as_tensor(labels)[keep],
                  torch.as_tensor(weights)[keep])


def resize_for_inference(pixels: np.ndarray, size: int) -> tuple[torch.Tensor, torch.Tensor,
                                                                 tuple[int, int]]:
    """Longest side to ``size``, padded to a square: input, valid mask, resized (h, w)."""
    h, w = pixels.shape[:2]
    s = size / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    x = F.interpolate(normalise(pixels)[None], (nh, nw), mode="bilinear",
                      align_corners=False, antialias=True)[0]
    out = torch.zeros((3, size, size))
    out[:, :nh, :nw] = x
    valid = torch.zeros((size, size), dtype=torch.bool)
    valid[:nh, :nw] = True
    return out, valid, (nh, nw)
