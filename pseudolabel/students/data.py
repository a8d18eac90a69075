"""Student training data: COCO instances (GT + pseudo-masks) with large-scale jitter.

Large-scale jitter (LSJ, Ghiasi et al. 2021; the Mask2Former recipe): the image is resized so
its longest side is ``scale * size`` with ``scale`` drawn uniformly from ``scale_range``,
flipped horizontally with probability 0.5, then randomly cropped (or padded) to
``size x size``. Instances whose mask leaves the crop are dropped. Crowd regions are not
training targets. Every draw comes from the generator passed in, so a step is reproducible.

Memory: only the part of the image and of the masks that the crop keeps is resized (at 2x
LSJ on COCO a full resize would make 2,048-px float maps per instance); masks stay uint8/bool
(area-weighted, antialiased resizing, then >= 0.5). :class:`AnnotationIndex` holds the
annotations as flat numpy arrays (RLE bytes + offsets), which ``DataLoader`` workers share
page by page after the fork: no per-annotation Python objects whose reference counts would
copy them into every worker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

from pseudolabel.data.coco import CocoDataset, load_coco
from pseudolabel.data.images import load_image, resolve_image_path

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Sample:
    """One training image after augmentation: ``pixels`` ``(3, S, S)`` normalised,
    ``valid`` ``(S, S)`` bool (False on padding), ``masks`` ``(N, S, S)`` bool,
    ``labels`` ``(N,)`` class indices, ``weights`` ``(N,)`` per-instance mask-loss weights."""

    pixels: torch.Tensor
    valid: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor
    weights: torch.Tensor

    def pin_memory(self) -> Sample:  # DataLoader(pin_memory=True) calls this
        return Sample(*(t.pin_memory() for t in (self.pixels, self.valid, self.masks,
                                                  self.labels, self.weights)))


class _Strings:
    """Many strings in one byte buffer with offsets (no Python object per string)."""

    def __init__(self, items: list[bytes]) -> None:
        self.offsets = np.zeros(len(items) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in items], out=self.offsets[1:])
        self.buffer = np.frombuffer(b"".join(items), dtype=np.uint8).copy()

    def __getitem__(self, i: int) -> bytes:
        return self.buffer[self.offsets[i]: self.offsets[i + 1]].tobytes()


class AnnotationIndex:
    """Images of a COCO file and their non-crowd instance masks in flat arrays.

    ``weight_key`` (e.g. ``"score"``) takes each annotation's mask-loss weight from that
    field (seed 000 eq. 1); annotations without it (GT) weigh 1. ``quality`` holds every
    annotation's ``score`` (1 without one) for copy-paste's choice of peers. Polygons and
    uncompressed RLE are stored as compressed RLE.
    """

    def __init__(self, coco: CocoDataset, weight_key: str | None = None,
                 box_only: bool = False) -> None:
        """``box_only``: also keep annotations without a mask (box-supervised training;
        their mask rows are empty and ``has_mask`` says which rows are masks)."""
        self.category_ids = list(coco.category_ids)
        class_index = {c: k for k, c in enumerate(self.category_ids)}
        images = coco.images
        self.ids = np.array([img["id"] for img in images], dtype=np.int64)
        self.sizes = np.array([(img["height"], img["width"]) for img in images], dtype=np.int32)
        self.file_names = _Strings([img["file_name"].encode() for img in images])
        starts, labels, weights, quality, rles, boxes, ids = [0], [], [], [], [], [], []
        for img in images:
            for a in coco.anns_by_image[img["id"]]:
                has_mask = "segmentation" in a
                if a.get("iscrowd", 0) or not (has_mask or (box_only and "bbox" in a)):
                    continue
                labels.append(class_index[a["category_id"]])
                weights.append(float(a.get(weight_key, 1.0)) if weight_key else 1.0)
                quality.append(float(a.get("score", 1.0)))
                rles.append(coco.rle(a)["counts"].encode("ascii") if has_mask else b"")
                boxes.append(a["bbox"] if "bbox" in a else [0.0, 0.0, 0.0, 0.0])
                ids.append(a["id"])
            starts.append(len(labels))
        self.starts = np.asarray(starts, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.weights = np.asarray(weights, dtype=np.float32)
        self.quality = np.asarray(quality, dtype=np.float32)
        self.rles = _Strings(rles)
        self.has_mask = np.asarray([len(r) > 0 for r in rles], dtype=bool)
        self.boxes_xywh = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        self.ann_ids = np.asarray(ids, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def file_name(self, i: int) -> str:
        return self.file_names[i].decode()

    def instances(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks ``(N, H, W)`` bool, class indices ``(N,)`` and weights ``(N,)`` of image i."""
        a, b = self.starts[i], self.starts[i + 1]
        h, w = (int(v) for v in self.sizes[i])
        masks = np.zeros((b - a, h, w), bool)
        with_mask = [k for k in range(a, b) if self.has_mask[k]]
        if with_mask:
            rles = [{"size": [h, w], "counts": self.rles[k]} for k in with_mask]
            masks[np.asarray(with_mask) - a] = mask_utils.decode(rles).astype(bool) \
                .transpose(2, 0, 1)
        return masks, self.labels[a:b], self.weights[a:b]


class InstanceData:
    """The images of a COCO file with their instances, ready for LSJ (see module doc)."""

    def __init__(self, ann_path: str | Path, image_root: str | Path,
                 weight_key: str | None = None, dataset: CocoDataset | None = None) -> None:
        coco = dataset if dataset is not None else load_coco(ann_path)
        if not coco.images:
            raise ValueError(f"{ann_path}: no images to train on")
        self.index = AnnotationIndex(coco, weight_key)
        self.category_ids = self.index.category_ids
        self.image_root = Path(image_root)

    def __len__(self) -> int:
        return len(self.index)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Image ``(H, W, 3)``, masks ``(N, H, W)`` bool, class indices, weights."""
        pixels = load_image(resolve_image_path(self.image_root, self.index.file_name(i)))
        masks, labels, weights = self.index.instances(i)
        return pixels, masks, labels, weights


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` float in [0, 255] (or ``(H, W, 3)`` uint8) -> ImageNet-normalised."""
    if isinstance(pixels, np.ndarray):
        pixels = torch.as_tensor(pixels).permute(2, 0, 1).float()
    return standardise(pixels / 255.0)


def standardise(x: torch.Tensor) -> torch.Tensor:
    """``(..., 3, H, W)`` float in [0, 1] -> ImageNet-normalised."""
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return (x - mean) / std


def _resize_window(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(C, h, w)`` uint8 -> ``(C, *size)`` uint8, bilinear with antialiasing (area-like
    when shrinking)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x[None], size, mode="bilinear", align_corners=False,
                         antialias=True)[0]


def large_scale_jitter(pixels: np.ndarray, masks: np.ndarray, labels: np.ndarray,
                       weights: np.ndarray, rng: np.random.Generator, size: int,
                       scale_range: tuple[float, float]) -> Sample:
    """LSJ as described in the module docstring.

    The crop window is mapped back to the original image (whole source pixels covering it)
    and only that window is resized, image and masks alike, so both stay aligned; the
    window's whole-pixel bounds perturb the drawn scale by under one source pixel.
    """
    h, w = pixels.shape[:2]
    scale = rng.uniform(*scale_range) * size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    flip = rng.random() < 0.5
    y0 = int(rng.integers(0, nh - size + 1)) if nh > size else 0
    x0 = int(rng.integers(0, nw - size + 1)) if nw > size else 0
    ch, cw = min(size, nh - y0), min(size, nw - x0)
    ux0 = nw - x0 - cw if flip else x0  # the window in the unflipped resized image
    sy, sx = h / nh, w / nw  # source pixels per resized pixel
    r0, r1 = int(math.floor(y0 * sy)), min(h, max(int(math.ceil((y0 + ch) * sy)), 1))
    c0, c1 = int(math.floor(ux0 * sx)), min(w, max(int(math.ceil((ux0 + cw) * sx)), 1))
    r0, c0 = min(r0, r1 - 1), min(c0, c1 - 1)

    window = torch.as_tensor(np.ascontiguousarray(pixels[r0:r1, c0:c1])).permute(2, 0, 1)
    x = F.interpolate(window[None].float(), (ch, cw), mode="bilinear", align_corners=False,
                      antialias=True)[0]
    m = torch.as_tensor(np.ascontiguousarray(masks[:, r0:r1, c0:c1])).to(torch.uint8) * 255
    m = _resize_window(m, (ch, cw)) >= 128 if len(m) else torch.zeros((0, ch, cw), dtype=bool)
    if flip:
        x, m = x.flip(-1), m.flip(-1)
    pixels_out = torch.zeros((3, size, size))
    pixels_out[:, :ch, :cw] = normalise(x)
    valid = torch.zeros((size, size), dtype=torch.bool)
    valid[:ch, :cw] = True
    masks_out = torch.zeros((len(m), size, size), dtype=torch.bool)
    masks_out[:, :ch, :cw] = m
    keep = masks_out.flatten(1).any(1) if len(m) else torch.zeros(0, dtype=torch.bool)
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
