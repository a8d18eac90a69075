"""Mask and box format conversions.

Conventions used throughout the package:

* Boxes ``xywh`` are COCO boxes ``[x, y, width, height]``; boxes ``xyxy`` are
  ``[x0, y0, x1, y1]``. Both are in continuous pixel coordinates with the origin at the
  top-left corner of the top-left pixel, so pixel (row r, col c) covers
  ``[c, c + 1) x [r, r + 1)``. A box computed from a mask therefore has ``x1 = max col + 1``,
  which is what ``pycocotools.mask.toBbox`` returns.
* Bitmasks are ``(H, W)`` or ``(N, H, W)`` ``bool`` arrays.
* RLEs are COCO compressed RLE dicts ``{"size": [H, W], "counts": str}`` (JSON-safe).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_utils


def xywh_to_xyxy(boxes_xywh: np.ndarray) -> np.ndarray:
    """``(N, 4)`` COCO ``[x, y, w, h]`` -> ``(N, 4)`` ``[x0, y0, x1, y1]`` (float64)."""
    b = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


def xyxy_to_xywh(boxes_xyxy: np.ndarray) -> np.ndarray:
    """``(N, 4)`` ``[x0, y0, x1, y1]`` -> ``(N, 4)`` COCO ``[x, y, w, h]`` (float64)."""
    b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)


def _jsonable(rle: dict) -> dict:
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": counts}


def mask_to_rle(mask: np.ndarray) -> dict:
    """``(H, W)`` bool mask -> compressed COCO RLE with a ``str`` ``counts`` (JSON-safe)."""
    if mask.ndim != 2:
        raise ValueError(f"mask_to_rle expects an (H, W) mask, got shape {mask.shape}")
    return _jsonable(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8))))


def masks_to_rles(masks: np.ndarray) -> list[dict]:
    """``(N, H, W)`` bool masks -> list of N compressed RLEs (one pycocotools call)."""
    if masks.ndim != 3:
        raise ValueError(f"masks_to_rles expects (N, H, W) masks, got shape {masks.shape}")
    if len(masks) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return [_jsonable(r) for r in rles]


def rle_to_mask(rle: dict) -> np.ndarray:
    """Compressed or uncompressed COCO RLE -> ``(H, W)`` bool mask."""
    return mask_utils.decode(_compressed(rle)).astype(bool)


def _compressed(rle: dict) -> dict:
    h, w = rle["size"]
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed RLE, as COCO uses for crowd regions
        return mask_utils.frPyObjects(rle, h, w)
    if isinstance(counts, str):
        return {"size": [h, w], "counts": counts.encode("ascii")}
    return rle


# pycocotools rasterises a polygon by walking its edges at 5x resolution, so its work and
# memory grow with the edges' length: one vertex at 1e9 px took 24 GB. Polygons are clipped to
# the image (plus this margin) first, and an annotation may hold at most this many vertices.
CLIP_MARGIN_PX = 1.0
MAX_POLYGON_VERTICES = 200_000


def clip_polygon(flat: Sequence[float], width: int, height: int,
                 margin: float = CLIP_MARGIN_PX) -> list[float]:
    """A flat ``[x0, y0, ...]`` polygon clipped to ``[-m, w + m] x [-m, h + m]``
    (Sutherland-Hodgman): the same pixels inside the image, edges of bounded length. May
    return fewer than 3 vertices when the polygon lies outside."""
    pts = np.asarray(flat, dtype=np.float64).reshape(-1, 2)
    lo, hi = -margin, (width + margin, height + margin)
    for axis, bound, keep_below in ((0, lo, False), (0, hi[0], True), (1, lo, False),
                                    (1, hi[1], True)):
        if len(pts) == 0:
            break
        inside = pts[:, axis] <= bound if keep_below else pts[:, axis] >= bound
        if inside.all():
            continue
        prev = np.roll(pts, 1, axis=0)
        prev_in = np.roll(inside, 1)
        out = []
        for p, q, p_in, q_in in zip(prev, pts, prev_in, inside, strict=True):
            if p_in != q_in:  # the edge crosses the bound: keep the crossing point
                t = (bound - p[axis]) / (q[axis] - p[axis])
                out.append(p + t * (q - p))
            if q_in:
                out.append(q)
        pts = np.asarray(out).reshape(-1, 2)
    return pts.reshape(-1).tolist()


def polygons_to_rle(polygons: Sequence[Sequence[float]], height: int, width: int) -> dict:
    """COCO polygons (list of flat ``[x0, y0, x1, y1, ...]`` lists) -> one compressed RLE.

    Each polygon is clipped to the image first (``clip_polygon``). Raises ``ValueError`` for
    a polygon with fewer than 3 vertices or an odd coordinate count, and for more than
    ``MAX_POLYGON_VERTICES`` vertices in all.
    """
    if len(polygons) == 0:
        raise ValueError("empty polygon list")
    if sum(len(p) for p in polygons) // 2 > MAX_POLYGON_VERTICES:
        raise ValueError(f"more than {MAX_POLYGON_VERTICES:,} polygon vertices")
    for poly in polygons:
        if len(poly) < 6 or len(poly) % 2:
            raise ValueError(
                f"degenerate polygon with {len(poly)} coordinates (need an even count >= 6)"
            )
    clipped = [c for c in (clip_polygon(p, width, height) for p in polygons) if len(c) >= 6]
    if not clipped:
        return mask_to_rle(np.zeros((height, width), dtype=bool))
    rles = mask_utils.frPyObjects(clipped, height, width)
    return _jsonable(mask_utils.merge(rles))


def compressed_counts(counts: str) -> np.ndarray | None:
    """The run lengths of a COCO compressed RLE string (pycocotools' ``rleFrString``), or
    ``None`` when the string is not one (a character out of range, a run that overflows)."""
    v = np.frombuffer(counts.encode("ascii", "replace"), dtype=np.uint8).astype(np.int64) - 48
    if len(v) == 0:
        return np.zeros(0, dtype=np.int64)
    if v.min() < 0 or v.max() >= 64:
        return None
    more = (v & 0x20) != 0
    if more[-1]:
        return None  # the last run is cut off
    ends = np.flatnonzero(~more)
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    if lengths.max() > 12:
        return None  # more than 60 bits: not a run length
    group = np.repeat(np.arange(len(ends)), lengths)
    offset = np.arange(len(v)) - starts[group]
    x = np.bincount(group, weights=(v & 0x1F) << (5 * offset)).astype(np.int64)
    negative = (v[ends] & 0x10) != 0  # sign bit of each run's last chunk
    x[negative] -= np.left_shift(1, 5 * lengths[negative])
    # run m > 2 is stored as its difference to run m - 2
    runs = x.copy()
    runs[1::2] = np.cumsum(x[1::2])
    runs[2::2] = np.cumsum(x[2::2])
    return runs


def rle_problem(seg: dict, height: int, width: int) -> str | None:
    """Why an RLE dict is not a ``height x width`` mask, or ``None``: its ``size`` must be
    ``[height, width]``, its runs non-negative and summing to ``height * width``."""
    size = seg.get("size")
    if not (isinstance(size, (list, tuple)) and len(size) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in size)):
        return f"RLE 'size' must be [height, width] integers, got {size!r}"
    if list(size) != [height, width]:
        return f"RLE size {list(size)} does not match the image size [{height}, {width}]"
    counts = seg.get("counts")
    if isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            return "uncompressed RLE 'counts' must be non-negative integers"
        runs = counts
    elif isinstance(counts, str):
        runs = compressed_counts(counts)
        if runs is None:
            return "RLE 'counts' is not a COCO compressed RLE string"
        if len(runs) and runs.min() < 0:
            return "RLE 'counts' holds a negative run"
    else:
        return "RLE 'counts' must be a string or a list of integers"
    total = int(np.sum(runs, dtype=np.int64)) if len(runs) else 0
    if total != height * width:
        return f"RLE runs cover {total} pixels, the {width}x{height} image has {height * width}"
    return None


def segmentation_to_rle(segmentation, height: int, width: int) -> dict:
    """Any COCO ``segmentation`` (polygons, uncompressed or compressed RLE) -> compressed RLE."""
    if isinstance(segmentation, list):
        return polygons_to_rle(segmentation, height, width)
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        if [int(v) for v in segmentation["size"]] != [height, width]:
            raise ValueError(
                f"RLE size {segmentation['size']} does not match the image size "
                f"[{height}, {width}]"
            )
        return _jsonable(_compressed(segmentation))
    raise ValueError(f"unrecognised segmentation of type {type(segmentation).__name__}")


def mask_to_polygons(mask: np.ndarray, tolerance: float = 0.0) -> list[list[float]]:
    """``(H, W)`` bool mask -> COCO polygons (outer contours of each component).

    Contours come from ``skimage.measure.find_contours`` on the zero-padded mask at level 0.5,
    so they run along pixel edges; ``tolerance`` > 0 simplifies them (Douglas-Peucker, pixels).
    Holes are not representable as COCO polygons and are filled; use RLE to keep them.
    """
    from skimage import measure

    padded = np.pad(mask.astype(np.uint8), 1)
    polygons = []
    for contour in measure.find_contours(padded, 0.5):
        if tolerance > 0:
            contour = measure.approximate_polygon(contour, tolerance)
        if len(contour) < 3:
            continue
        # (row, col) on the padded grid, pixel centres at integers -> (x, y) continuous coords
        xy = contour[:, ::-1] - 1 + 0.5
        polygons.append([round(float(v), 2) for v in xy.reshape(-1)])
    return polygons


def rle_area(rle: dict) -> int:
    """Number of foreground pixels of a compressed RLE."""
    return int(mask_utils.area(_compressed(rle)))


def rle_to_xywh(rle: dict) -> list[float]:
    """Tight COCO box ``[x, y, w, h]`` of an RLE; ``[0, 0, 0, 0]`` for an empty mask."""
    return [float(v) for v in mask_utils.toBbox(_compressed(rle))]


def masks_to_boxes_xyxy(masks: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` bool masks -> ``(N, 4)`` float32 tight ``xyxy`` boxes (pixel-edge convention).

    An empty mask gives ``[0, 0, 0, 0]``.
    """
    n = len(masks)
    boxes = np.zeros((n, 4), dtype=np.float32)
    if n == 0:
        return boxes
    rows = masks.any(axis=2)
    cols = masks.any(axis=1)
    for i in range(n):
        ys = np.flatnonzero(rows[i])
        xs = np.flatnonzero(cols[i])
        if len(ys):
            boxes[i] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return boxes

