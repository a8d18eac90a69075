"""One validated container for the instances of one image (STYLE 7)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pseudolabel.data.masks import masks_to_boxes_xyxy, masks_to_rles, rle_to_mask, xywh_to_xyxy


@dataclass
class Instances:
    """Instances of one image; every array has the same first dimension N.

    Attributes:
        image_size: ``(H, W)`` of the image the instances live in.
        boxes_xyxy: ``(N, 4)`` float32 boxes in pixels (pixel-edge convention, see ``masks``).
        labels: ``(N,)`` int64 category ids.
        masks: ``(N, H, W)`` bool masks, or ``None`` when the instances carry no masks
            (boxes only). Empty instances are ``(0, H, W)``.
        scores: ``(N,)`` float32 confidences in ``[0, 1]`` (1 for ground truth).
        points_xy: ``(N, 2)`` float32 points ``(x, y)`` in pixels, or ``None``.
        class_scores: ``(N, K)`` float32 score of each instance for each class of a label
            space (a detector's output), or ``None``.
    """

    image_size: tuple[int, int]
    boxes_xyxy: np.ndarray
    labels: np.ndarray
    masks: np.ndarray | None = None
    scores: np.ndarray | None = None
    points_xy: np.ndarray | None = None
    class_scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        h, w = (int(v) for v in self.image_size)
        if h <= 0 or w <= 0:
            raise ValueError(f"image_size must be positive (H, W), got {self.image_size}")
        self.image_size = (h, w)
        self.boxes_xyxy = np.asarray(self.boxes_xyxy, dtype=np.float32).reshape(-1, 4)
        n = len(self.boxes_xyxy)
        self.labels = _vector(self.labels, np.int64, n, "labels")
        self.scores = (
            np.ones(n, dtype=np.float32)
            if self.scores is None
            else _vector(self.scores, np.float32, n, "scores")
        )
        if self.masks is not None:
            masks = np.asarray(self.masks)
            if masks.dtype != bool:
                raise ValueError(f"masks must be bool, got {masks.dtype}")
            if masks.ndim != 3 or masks.shape != (n, h, w):
                raise ValueError(f"masks must have shape ({n}, {h}, {w}), got {masks.shape}")
            self.masks = masks
        if self.points_xy is not None:
            pts = np.asarray(self.points_xy, dtype=np.float32)
            if pts.shape != (n, 2):
                raise ValueError(f"points_xy must have shape ({n}, 2), got {pts.shape}")
            self.points_xy = pts
        if self.class_scores is not None:
            cs = np.asarray(self.class_scores, dtype=np.float32)
            if cs.ndim != 2 or len(cs) != n:
                raise ValueError(f"class_scores must have shape ({n}, K), got {cs.shape}")
            self.class_scores = cs
        bad = self.boxes_xyxy[:, 2:] < self.boxes_xyxy[:, :2]
        if bad.any():
            i = int(np.flatnonzero(bad.any(axis=1))[0])
            raise ValueError(f"box {i} has x1 < x0 or y1 < y0: {self.boxes_xyxy[i].tolist()}")

    def __len__(self) -> int:
        return len(self.boxes_xyxy)

    def __getitem__(self, index) -> Instances:
        """Select instances with an int, slice, index array or bool array."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Instances(
            image_size=self.image_size,
            boxes_xyxy=self.boxes_xyxy[index],
            labels=self.labels[index],
            masks=None if self.masks is None else self.masks[index],
            scores=self.scores[index],
            points_xy=None if self.points_xy is None else self.points_xy[index],
            class_scores=None if self.class_scores is None else self.class_scores[index],
        )

    @classmethod
    def empty(cls, image_size: tuple[int, int], with_masks: bool = True) -> Instances:
        h, w = image_size
        masks = np.zeros((0, h, w), dtype=bool) if with_masks else None
        return cls(image_size, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), masks)

    @classmethod
    def from_masks(
        cls, masks: np.ndarray, labels: np.ndarray, scores: np.ndarray | None = None
    ) -> Instances:
        """Build from ``(N, H, W)`` bool masks; boxes are the masks' tight boxes."""
        masks = np.asarray(masks, dtype=bool)
        return cls(masks.shape[1:], masks_to_boxes_xyxy(masks), labels, masks, scores)

    @classmethod
    def from_coco(cls, annotations: list[dict], height: int, width: int) -> Instances:
        """Build from validated COCO annotations carrying ``rle`` (see ``CocoDataset``).

        Crowd annotations are ignore regions, not instances: pass them separately.
        """
        masks = np.zeros((len(annotations), height, width), dtype=bool)
        for i, ann in enumerate(annotations):
            masks[i] = rle_to_mask(ann["rle"])
        boxes = xywh_to_xyxy([a["bbox"] for a in annotations]) if annotations else None
        return cls(
            (height, width),
            boxes if boxes is not None else np.zeros((0, 4)),
            [a["category_id"] for a in annotations],
            masks,
            [a.get("score", 1.0) for a in annotations],
        )

    def to_rles(self) -> list[dict]:
        """Compressed COCO RLE of each mask."""
        if self.masks is None:
            raise ValueError("these instances carry no masks")
        return masks_to_rles(self.masks)


def _vector(values, dtype, n: int, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=dtype).reshape(-1)
    if len(arr) != n:
        raise ValueError(f"{name} has {len(arr)} entries, expected {n} (one per box)")
    return arr
