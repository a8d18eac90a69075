"""Semantic label maps and the weak labels SeSAM (seed 004) starts from.

A label map is an ``(H, W)`` uint8 array: 0 background, ``k`` the k-th category of the COCO
file's label space (1-based), 255 ignore (crowd regions, and pixels a weak label says nothing
about). Weak labels are label maps too, sparse ones: every pixel they do not label is 255.

Simulated kinds, seeded and reproducible (one generator per image):

* ``point``: ``points`` pixels of every region (connected component of a class, background
  included) drawn uniformly from it;
* ``scribble``: each region's skeleton (scikit-image), drawn ``width`` px wide and clipped to
  the region: a scribble along the middle of the object;
* ``coarse``: each region shrunk by ``margin`` px and its outline simplified (a polygon with
  tolerance ``tolerance`` px), with an ignore band where it was shrunk: a hurried outline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.draw import polygon as draw_polygon
from skimage.measure import approximate_polygon, find_contours
from skimage.morphology import skeletonize

from pseudolabel.data.coco import CocoDataset
from pseudolabel.data.masks import rle_to_mask

BACKGROUND, IGNORE = 0, 255
WEAK_KINDS = ("point", "scribble", "coarse")


def label_map(coco: CocoDataset, image_id: int) -> np.ndarray:
    """The fine label map of an image: instances painted in annotation order (later over
    earlier, as the synthetic world occludes), crowd regions ignore."""
    img = coco.image_by_id[image_id]
    rows = {c: k + 1 for k, c in enumerate(coco.category_ids)}
    if len(rows) >= IGNORE:
        raise ValueError(f"{coco.path}: {len(rows)} categories do not fit a uint8 label map")
    out = np.zeros((img["height"], img["width"]), np.uint8)
    crowd = np.zeros_like(out, dtype=bool)
    for a in coco.anns_by_image[image_id]:
        if "segmentation" not in a:
            continue
        m = rle_to_mask(coco.rle(a))
        if a.get("iscrowd", 0):
            crowd |= m
        else:
            out[m] = rows[a["category_id"]]
    out[crowd] = IGNORE
    return out


def regions(labels: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """``(class, mask)`` of every 8-connected region of every class (background included,
    ignore excluded)."""
    out = []
    for c in np.unique(labels):
        if c == IGNORE:
            continue
        comp, n = ndimage.label(labels == c, structure=np.ones((3, 3), bool))
        out += [(int(c), comp == k) for k in range(1, n + 1)]
    return out


def simulate(labels: np.ndarray, kind: str, rng: np.random.Generator, *, points: int = 1,
             width: int = 3, margin: int = 3, tolerance: float = 2.0) -> np.ndarray:
    """A weak label map of ``kind`` from a fine one (see the module docstring)."""
    if kind not in WEAK_KINDS:
        raise ValueError(f"unknown weak kind {kind!r}; expected one of {WEAK_KINDS}")
    weak = np.full(labels.shape, IGNORE, np.uint8)
    for c, region in regions(labels):
        if kind == "point":
            ys, xs = np.nonzero(region)
            pick = rng.choice(len(ys), size=min(points, len(ys)), replace=False)
            weak[ys[pick], xs[pick]] = c
        elif kind == "scribble":
            line = skeletonize(region)
            if width > 1:
                line = ndimage.binary_dilation(line, iterations=width // 2) & region
            weak[line] = c
        else:
            weak[_coarse(region, margin, tolerance)] = c
    return weak


def _coarse(region: np.ndarray, margin: int, tolerance: float) -> np.ndarray:
    """The region shrunk by ``margin`` px, its outline simplified; a region too thin to
    shrink keeps its skeleton."""
    inner = ndimage.binary_erosion(region, iterations=margin)
    if not inner.any():
        return skeletonize(region)
    out = np.zeros_like(region)
    for contour in find_contours(np.pad(inner, 1).astype(float), 0.5):
        poly = approximate_polygon(contour, tolerance) - 1
        if len(poly) >= 3:
            rr, cc = draw_polygon(poly[:, 0], poly[:, 1], region.shape)
            out[rr, cc] = True
    return (out | inner) & region if out.any() else inner


def read_label_map(path: str | Path) -> np.ndarray:
    with Image.open(path) as im:
        arr = np.asarray(im)
    if arr.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel label map, got shape {arr.shape}")
    return arr.astype(np.uint8)


def write_label_map(path: str | Path, labels: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    Image.fromarray(labels.astype(np.uint8)).save(tmp)
    tmp.replace(path)
