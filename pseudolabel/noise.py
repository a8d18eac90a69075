"""Label noise for instance masks, as the COCO-N benchmark defines it (seed 003 §3.1-3.3).

Per instance, at most one spatial operation (eq. 2 / eq. 4) and, independently, class noise:

* class: symmetric (eq. 1: with probability p the label becomes a uniformly drawn *other*
  class) or asymmetric (eq. 3, here: a uniformly drawn other class of the same
  supercategory);
* scale: dilation or erosion, chosen at random, with a k x k square kernel;
* boundary localization: Gaussian displacement (std sigma, pixels) of the polygon vertices;
* boundary approximation: topology-preserving polygon simplification, tolerance d pixels.

Masks are ``(H, W)`` bool arrays. Polygons are the mask's boundary rings (outer boundaries
and holes) from ``skimage.measure.find_contours`` in pixel-centre coordinates (pixel (r, c) is
the point (r, c)); a ring set is rasterised with the even-odd rule, so holes survive and a
mask turned into rings and back is unchanged. Collinear vertices are dropped, so vertices sit
where the boundary turns, as with the reference code's ``CHAIN_APPROX_SIMPLE`` contours.

Deviations from the public generator (github.com/eden500/Noisy-Labels-Instance-Segmentation),
on purpose: it draws class noise from ``p * uniform + (1 - p) * I``, so its realised flip rate
is ``p (K - 1) / K``, not eq. 1's ``p``; it keeps only outer contours (holes are filled by
localization and approximation noise); its draws are not fully seeded.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import reduce

import numpy as np
from scipy import ndimage
from skimage import measure

SPATIAL_TYPES = ("scale", "localization", "approximation")


@dataclass(frozen=True)
class NoiseSpec:
    """A noise mix: class-noise probability and, per spatial type, (probability, intensity).

    ``class_mode`` is ``symmetric`` (eq. 1) or ``asymmetric`` (eq. 3, within the
    supercategory). Spatial probabilities are per type; their sum is the share of instances
    that get one spatial operation (eq. 2), so it must not exceed 1.
    """

    class_p: float = 0.0
    class_mode: str = "symmetric"
    spatial: dict = field(default_factory=dict)  # type -> (probability, intensity)

    def __post_init__(self) -> None:
        if not 0.0 <= self.class_p <= 1.0:
            raise ValueError(f"class noise probability {self.class_p} is not in [0, 1]")
        if self.class_mode not in ("symmetric", "asymmetric"):
            raise ValueError(f"class noise mode {self.class_mode!r}: expected symmetric or "
                             "asymmetric")
        for kind, (q, intensity) in self.spatial.items():
            if kind not in SPATIAL_TYPES:
                raise ValueError(f"unknown spatial noise {kind!r}; expected one of "
                                 f"{list(SPATIAL_TYPES)}")
            if not 0.0 <= q <= 1.0:
                raise ValueError(f"{kind}: probability {q} is not in [0, 1]")
            if kind == "scale" and (intensity != int(intensity) or intensity < 1
                                    or int(intensity) % 2 == 0):
                raise ValueError(f"scale: kernel size {intensity} must be an odd integer >= 1")
            if intensity < 0:
                raise ValueError(f"{kind}: intensity {intensity} must be >= 0")
        total = sum(q for q, _ in self.spatial.values())
        if total > 1.0 + 1e-9:
            raise ValueError(f"spatial noise probabilities sum to {total:g} > 1 (at most one "
                             "spatial operation per instance)")

    def as_dict(self) -> dict:
        return {"class": self.class_p, "class_mode": self.class_mode,
                **{k: {"p": q, "param": v} for k, (q, v) in self.spatial.items()}}


def _level(class_p: float, q: float, k: int, sigma: float, d: float) -> NoiseSpec:
    return NoiseSpec(class_p, "symmetric",
                     {"scale": (q, k), "localization": (q, sigma), "approximation": (q, d)})


# Seed 003 Table 7 (Appendix C): class noise, per-type spatial probability, k, sigma, d.
LEVELS = {
    "easy": _level(0.2, 0.2, 3, 2.0, 5.0),
    "medium": _level(0.3, 0.25, 5, 3.0, 10.0),
    "hard": _level(0.4, 0.3, 7, 4.0, 15.0),
}

_SPEC_KEYS = {"class": "symmetric", "class_asym": "asymmetric"}


def parse_spec(text: str) -> NoiseSpec:
    """``class=0.3,scale=0.25:5,localization=0.25:3,approximation=0.25:10``.

    ``class_asym=P`` gives asymmetric (within-supercategory) class noise instead of ``class``.
    """
    class_p, mode, spatial = 0.0, "symmetric", {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        m = re.fullmatch(r"([a-z_]+)=([0-9.eE+-]+)(?::([0-9.eE+-]+))?", item)
        if m is None:
            raise ValueError(f"noise spec item {item!r}: expected NAME=P or NAME=P:INTENSITY")
        name, p, intensity = m.group(1), float(m.group(2)), m.group(3)
        if name in _SPEC_KEYS:
            if intensity is not None:
                raise ValueError(f"noise spec item {item!r}: class noise takes no intensity")
            class_p, mode = p, _SPEC_KEYS[name]
        elif name in SPATIAL_TYPES:
            if intensity is None:
                raise ValueError(f"noise spec item {item!r}: {name} needs P:INTENSITY")
            spatial[name] = (p, float(intensity))
        else:
            raise ValueError(f"noise spec item {item!r}: unknown noise {name!r}; expected "
                             f"class, class_asym or one of {list(SPATIAL_TYPES)}")
    return NoiseSpec(class_p, mode, spatial)


# -- rings -----------------------------------------------------------------------------------
def _drop_collinear(ring: np.ndarray) -> np.ndarray:
    """A closed ring without the vertices where the boundary goes straight on."""
    pts = ring[:-1]
    before, after = pts - np.roll(pts, 1, axis=0), np.roll(pts, -1, axis=0) - pts
    turn = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
    pts = pts[np.abs(turn) > 1e-9]
    return np.vstack([pts, pts[:1]])


def mask_rings(mask: np.ndarray) -> list[np.ndarray]:
    """Boundary rings of a mask (outer boundaries and holes): ``(K, 2)`` ``(row, col)`` arrays
    in pixel-centre coordinates, closed (first vertex repeated), collinear vertices dropped."""
    padded = np.pad(mask.astype(np.uint8), 1)
    rings = []
    for contour in measure.find_contours(padded, 0.5):
        ring = _drop_collinear(contour - 1.0)
        if len(ring) >= 4:  # a closed ring of at least 3 distinct vertices
            rings.append(ring)
    return rings


def fill_rings(rings: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Rasterise rings with the even-odd rule: a pixel is set when its centre lies inside an
    odd number of rings.

    A vectorised scanline fill over all edges at once: on each pixel row, every edge that
    crosses it toggles the pixels from the crossing to the right; the parity of the toggles
    is the even-odd rule, so rings need no nesting order. An edge spans the rows
    ``[min(r0, r1), max(r0, r1))`` so a vertex on a row is counted once.
    """
    h, w = shape
    out = np.zeros((h, w), dtype=bool)
    if not rings:
        return out
    start = np.concatenate([r[:-1] for r in rings])
    end = np.concatenate([r[1:] for r in rings])
    lo, hi = np.minimum(start[:, 0], end[:, 0]), np.maximum(start[:, 0], end[:, 0])
    sloped = hi > lo  # horizontal edges cross no row
    start, end, lo, hi = start[sloped], end[sloped], lo[sloped], hi[sloped]
    if not len(start):
        return out
    y0, y1 = max(int(np.ceil(lo.min())), 0), min(int(np.ceil(hi.max())), h)
    if y0 >= y1:
        return out
    rows = np.arange(y0, y1, dtype=np.float64)
    crosses = (lo[:, None] <= rows[None, :]) & (rows[None, :] < hi[:, None])  # (E, R)
    e, r = np.nonzero(crosses)
    t = (rows[r] - start[e, 0]) / (end[e, 0] - start[e, 0])
    x = start[e, 1] + t * (end[e, 1] - start[e, 1])
    col = np.clip(np.ceil(x), 0, w).astype(np.int64)  # first pixel centre at or right of x
    toggles = np.zeros((len(rows), w + 1), dtype=np.int32)
    np.add.at(toggles, (r, col), 1)
    out[y0:y1] = (np.cumsum(toggles, axis=1)[:, :w] % 2).astype(bool)
    return out


# -- spatial operations (each returns a new mask; it may be empty) ---------------------------
def scale_noise(mask: np.ndarray, k: int, dilate: bool) -> np.ndarray:
    """Dilate or erode with a ``k x k`` square (§3.2 "Scale Noise").

    Erosion treats outside the image as foreground (as OpenCV's default border does): an
    object cut by the image border is not pulled back from it.
    """
    structure = np.ones((int(k), int(k)), dtype=bool)
    if dilate:
        return ndimage.binary_dilation(mask, structure=structure)
    return ndimage.binary_erosion(mask, structure=structure, border_value=1)


def localization_noise(mask: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Move every polygon vertex by ``N(0, sigma^2)`` pixels in x and y (§3.2 "Boundary
    Localization Noise"), holes included."""
    rings = mask_rings(mask)
    moved = []
    for ring in rings:
        body = ring[:-1] + rng.normal(0.0, sigma, size=ring[:-1].shape)
        moved.append(np.vstack([body, body[:1]]))
    return fill_rings(moved, mask.shape)


def approximation_noise(mask: np.ndarray, d: float) -> np.ndarray:
    """Topology-preserving simplification (tolerance ``d`` px) of the mask's polygons
    (§3.2 "Boundary Approximation Noise"), with shapely (Douglas-Peucker that keeps rings
    simple and holes inside their shells)."""
    from shapely.geometry import Polygon

    rings = mask_rings(mask)
    if not rings:
        return np.zeros_like(mask, dtype=bool)
    # even-odd union of the rings: shells minus holes, as the mask has them
    shape = reduce(lambda a, b: a.symmetric_difference(b),
                   (Polygon(r[:, ::-1]).buffer(0) for r in rings))
    simple = shape.simplify(d, preserve_topology=True)
    out_rings = []
    for poly in getattr(simple, "geoms", [simple]):
        if poly.is_empty or poly.geom_type != "Polygon":
            continue
        out_rings.append(np.asarray(poly.exterior.coords)[:, ::-1])
        out_rings += [np.asarray(h.coords)[:, ::-1] for h in poly.interiors]
    return fill_rings(out_rings, mask.shape)


def _margin(kind: str, param: float) -> int:
    """How far an operation can move the boundary, to work on a crop around the mask."""
    if kind == "scale":
        return int(param) // 2 + 1
    if kind == "localization":
        return int(math.ceil(6 * param)) + 2  # 6 sigma: a vertex beyond it is ~1e-9 likely
    return 1


def apply_spatial(mask: np.ndarray, kind: str, param: float, rng: np.random.Generator
                  ) -> tuple[np.ndarray, dict]:
    """One spatial operation on a full-image mask, computed on a crop around it.

    Returns the new mask and what was done (``op`` for scale: ``dilate`` or ``erode``).
    The random draws depend only on ``rng``, never on the crop.
    """
    info: dict = {"op": None}
    dilate = None
    if kind == "scale":
        dilate = bool(rng.random() < 0.5)
        info["op"] = "dilate" if dilate else "erode"
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return mask.copy(), info
    m = _margin(kind, param)
    h, w = mask.shape
    y0, y1 = max(rows[0] - m, 0), min(rows[-1] + m + 1, h)
    x0, x1 = max(cols[0] - m, 0), min(cols[-1] + m + 1, w)
    crop = mask[y0:y1, x0:x1]
    if kind == "scale":
        # Erosion's outside-is-foreground border must only apply at the image border.
        pad = [(0 if y0 == 0 else 1, 0 if y1 == h else 1), (0 if x0 == 0 else 1,
                                                           0 if x1 == w else 1)]
        padded = np.pad(crop, pad)
        out = scale_noise(padded, int(param), dilate)
        out = out[pad[0][0]: out.shape[0] - pad[0][1], pad[1][0]: out.shape[1] - pad[1][1]]
    elif kind == "localization":
        out = localization_noise(crop, param, rng)
    elif kind == "approximation":
        out = approximation_noise(crop, param)
    else:
        raise ValueError(f"unknown spatial noise {kind!r}")
    full = np.zeros_like(mask, dtype=bool)
    full[y0:y1, x0:x1] = out
    return full, info


# -- which instance gets what ----------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """Per instance (in processing order): class flip or not, and the spatial type or None."""

    flip: np.ndarray  # (n,) bool
    spatial: list  # n entries: a type of SPATIAL_TYPES or None


def plan_noise(n: int, spec: NoiseSpec, seed: int, *, independent: bool = False) -> Plan:
    """Decide which of ``n`` instances get class noise and which spatial type.

    By default the counts are exact: ``round(p * n)`` instances (a seeded random subset) get
    class noise and ``round(q_t * n)`` get spatial type t, so the realised rates equal the
    level's definition and every instance still has probability p (q_t) of each. With
    ``independent`` each instance draws on its own, as eq. 1-2 state literally; the realised
    rates then scatter around p (q_t) by about ``sqrt(p (1 - p) / n)``.
    """
    rng_c = np.random.default_rng([seed, 0])
    rng_s = np.random.default_rng([seed, 1])
    kinds = [k for k in SPATIAL_TYPES if k in spec.spatial]
    probs = [spec.spatial[k][0] for k in kinds]
    spatial: list = [None] * n
    if independent:
        flip = rng_c.random(n) < spec.class_p
        which = np.searchsorted(np.cumsum(probs), rng_s.random(n), side="right")
        spatial = [kinds[t] if t < len(kinds) else None for t in which]
        return Plan(flip, spatial)
    flip = np.zeros(n, dtype=bool)
    flip[rng_c.permutation(n)[: int(round(spec.class_p * n))]] = True
    order = rng_s.permutation(n)
    start = 0
    for kind, q in zip(kinds, probs, strict=True):
        count = int(round(q * n))
        for i in order[start: start + count]:
            spatial[int(i)] = kind
        start += count
    return Plan(flip, spatial)


def flip_class(category_id: int, categories: list[dict], mode: str,
               rng: np.random.Generator) -> int | None:
    """A uniformly drawn other class (symmetric) or other class of the same supercategory
    (asymmetric); ``None`` when there is no other class to draw."""
    if mode == "asymmetric":
        sup = {c["id"]: c.get("supercategory") for c in categories}
        pool = [c["id"] for c in categories
                if c["id"] != category_id and c.get("supercategory") == sup.get(category_id)]
    else:
        pool = [c["id"] for c in categories if c["id"] != category_id]
    if not pool:
        return None
    return int(pool[int(rng.integers(len(pool)))])
