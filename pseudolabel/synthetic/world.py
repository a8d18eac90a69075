"""Procedural scenes: textured backgrounds, distractors and overlapping part-based objects.

A scene is fully determined by its ``numpy`` generator, so a dataset built from
``default_rng([seed, split, index])`` is reproducible image by image.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from skimage.draw import polygon as draw_polygon

from pseudolabel.synthetic.shapes import CLASSES, PALETTE, template


@dataclass(frozen=True)
class WorldStyle:
    """What distinguishes one synthetic domain from another.

    ``extent_range`` is the object extent as a fraction of the image's longest side, drawn
    log-uniformly; ``same_class_overlap`` is the chance that an object is a same-class
    neighbour overlapping the previous one.
    """

    name: str
    hue_shift: float
    backgrounds: tuple[str, ...]
    extent_range: tuple[float, float]
    objects_range: tuple[int, int]
    distractors_range: tuple[int, int]
    same_class_overlap: float


# The default (target) world, and the source world the synthetic foundation models are
# pre-trained on: other colours, backgrounds and scale mix, so fine-tuning has a gap to close.
STYLES = {
    "target": WorldStyle("target", 0.0, ("noise", "stripes", "checker"), (0.05, 0.5),
                         (3, 8), (1, 4), 0.35),
    # The source world is broader than the target (as SA-1B is broader than COCO): wider
    # scale range, more objects, textured backgrounds of its own (waves, dots), other hues.
    "source": WorldStyle("source", 0.45, ("flat", "gradient", "noise", "waves", "dots"),
                         (0.04, 0.6), (1, 8), (0, 4), 0.3),
}


@dataclass
class SceneObject:
    """One annotated object: class index into ``CLASSES``, visible mask and visible parts."""

    class_index: int
    mask: np.ndarray
    parts: list[np.ndarray] = field(default_factory=list)


@dataclass
class Scene:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    objects: list[SceneObject]


def _colour(name: str, style: WorldStyle) -> np.ndarray:
    rgb = np.array(PALETTE[name], dtype=np.float64) / 255
    if style.hue_shift:
        h, s, v = colorsys.rgb_to_hsv(*rgb)
        rgb = np.array(colorsys.hsv_to_rgb((h + style.hue_shift) % 1.0, s, v))
    return rgb * 255


def _background(h: int, w: int, style: WorldStyle, rng: np.random.Generator) -> np.ndarray:
    names = list(PALETTE)
    c1, c2 = (_colour(names[i], style) for i in rng.choice(len(names), 2, replace=False))
    kind = style.backgrounds[rng.integers(len(style.backgrounds))]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    if kind == "noise":  # smooth blotches, like foliage or terrain
        t = ndimage.gaussian_filter(rng.standard_normal((h, w)), sigma=rng.uniform(3, 9))
        t = np.clip(0.5 + t / (4 * t.std() + 1e-9), 0, 1)
    elif kind == "stripes":
        a = rng.uniform(0, np.pi)
        period = rng.uniform(6, 24)
        t = 0.5 + 0.5 * np.sign(np.sin((xx * np.cos(a) + yy * np.sin(a)) * 2 * np.pi / period))
    elif kind == "checker":
        cell = rng.integers(8, 24)
        t = ((xx // cell + yy // cell) % 2).astype(np.float64)
    elif kind == "gradient":
        a = rng.uniform(0, 2 * np.pi)
        t = xx * np.cos(a) + yy * np.sin(a)
        t = (t - t.min()) / (np.ptp(t) + 1e-9)
    elif kind == "waves":  # curved bands with soft edges
        a, period = rng.uniform(0, np.pi), rng.uniform(10, 30)
        u = xx * np.cos(a) + yy * np.sin(a)
        v = -xx * np.sin(a) + yy * np.cos(a)
        bend = rng.uniform(2, 8) * np.sin(v * 2 * np.pi / rng.uniform(20, 60))
        t = 0.5 + 0.5 * np.sin((u + bend) * 2 * np.pi / period)
    elif kind == "dots":  # scattered discs on a plain ground
        t = np.zeros((h, w))
        for _ in range(int(rng.integers(5, 30))):
            r = rng.uniform(1.5, 6)
            t[(xx - rng.uniform(0, w)) ** 2 + (yy - rng.uniform(0, h)) ** 2 <= r * r] = 1.0
    elif kind == "flat":
        t = np.zeros((h, w))
    else:
        raise ValueError(f"unknown background kind {kind!r}")
    return t[..., None] * c1 + (1 - t[..., None]) * c2


def _polygon_mask(poly_xy: np.ndarray, h: int, w: int) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    # Pixel (r, c) has its centre at (c + 0.5, r + 0.5) in continuous coordinates.
    rr, cc = draw_polygon(poly_xy[:, 1] - 0.5, poly_xy[:, 0] - 0.5, shape=(h, w))
    mask[rr, cc] = True
    return mask


def _place(polys: list[np.ndarray], cx: float, cy: float, extent: float, angle: float,
           stretch: float, flip: bool) -> list[np.ndarray]:
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, s], [-s, c]])
    out = []
    for p in polys:
        q = p * (-1 if flip else 1, 1) * (stretch, 1 / stretch)
        out.append(q @ rot * extent + (cx, cy))
    return out


def _paint(canvas: np.ndarray, mask: np.ndarray, rgb: np.ndarray, rng: np.random.Generator):
    # A gentle linear shading across the part, so objects carry texture too.
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return
    a = rng.uniform(0, 2 * np.pi)
    ramp = (xs - xs.mean()) * np.cos(a) + (ys - ys.mean()) * np.sin(a)
    ramp = ramp / (np.abs(ramp).max() + 1e-9)
    canvas[ys, xs] = rgb * (1 + 0.12 * ramp[:, None])


def _sample_objects(h: int, w: int, style: WorldStyle, rng: np.random.Generator):
    """Class, centre and extent of each object; some are same-class overlapping neighbours."""
    longest = max(h, w)
    lo, hi = np.log(style.extent_range[0] * longest), np.log(style.extent_range[1] * longest)
    n = int(rng.integers(style.objects_range[0], style.objects_range[1] + 1))
    objs = []
    for i in range(n):
        if i > 0 and rng.random() < style.same_class_overlap:
            k, px, py, pe = objs[-1]
            extent = pe * rng.uniform(0.8, 1.2)
            a = rng.uniform(0, 2 * np.pi)
            d = pe * rng.uniform(0.4, 0.75)
            cx, cy = px + d * np.cos(a), py + d * np.sin(a)
        else:
            k = int(rng.integers(len(CLASSES)))
            extent = float(np.exp(rng.uniform(lo, hi)))
            cx, cy = rng.uniform(0.05 * w, 0.95 * w), rng.uniform(0.05 * h, 0.95 * h)
        objs.append((k, float(np.clip(cx, 0, w)), float(np.clip(cy, 0, h)), extent))
    return objs


def render_scene(height: int, width: int, style: WorldStyle, rng: np.random.Generator,
                 min_visible_px: int = 6, min_visible_frac: float = 0.25) -> Scene:
    """Render one scene of ``height`` x ``width`` pixels.

    Objects are painted back to front; each object's mask is its *visible* region (later
    objects occlude earlier ones, as COCO masks do). Objects with fewer than
    ``min_visible_px`` visible pixels or less than ``min_visible_frac`` of their full area
    visible are painted but not annotated (they become background clutter).
    """
    h, w = height, width
    canvas = _background(h, w, style, rng)
    names = list(PALETTE)
    for _ in range(int(rng.integers(style.distractors_range[0], style.distractors_range[1] + 1))):
        e = rng.uniform(0.05, 0.25) * max(h, w)
        sides = int(rng.integers(3, 9))
        t = np.sort(rng.uniform(0, 2 * np.pi, sides))
        poly = np.stack([np.cos(t), np.sin(t)], 1) * e / 2 + (rng.uniform(0, w), rng.uniform(0, h))
        _paint(canvas, _polygon_mask(poly, h, w), _colour(names[rng.integers(len(names))], style),
               rng)

    drawn = []  # (class index, full mask, [part masks]) in paint order
    for k, cx, cy, extent in _sample_objects(h, w, style, rng):
        spec = CLASSES[k]
        parts_polys = template(spec.name, rng)
        angle = np.deg2rad(rng.uniform(-spec.max_rotation_deg, spec.max_rotation_deg))
        stretch, flip = rng.uniform(0.85, 1.15), bool(rng.random() < 0.5)
        colour_names: list[str] = []
        part_masks = []
        for polys, choices in zip(parts_polys, spec.part_colours, strict=True):
            free = [c for c in choices if c not in colour_names] or list(choices)
            colour_names.append(free[rng.integers(len(free))])
            m = np.zeros((h, w), dtype=bool)
            for p in _place(polys, cx, cy, extent, angle, stretch, flip):
                m |= _polygon_mask(p, h, w)
            _paint(canvas, m, _colour(colour_names[-1], style), rng)
            part_masks.append(m)
        # Later parts cover earlier ones (a door on a wall).
        for i in range(len(part_masks)):
            for later in part_masks[i + 1:]:
                part_masks[i] &= ~later
        drawn.append((k, np.logical_or.reduce(part_masks), part_masks))

    objects = []
    covered = np.zeros((h, w), dtype=bool)
    for k, full, parts in reversed(drawn):
        visible = full & ~covered
        covered |= full
        area = int(visible.sum())
        if area >= min_visible_px and area >= min_visible_frac * full.sum():
            parts = [p & visible for p in parts]
            objects.append(SceneObject(k, visible, [p for p in parts if p.any()]))
    objects.reverse()

    canvas = ndimage.gaussian_filter(canvas, sigma=(0.6, 0.6, 0))  # soft, anti-aliased edges
    canvas += rng.normal(0, 5, canvas.shape)
    image = np.clip(canvas, 0, 255).round().astype(np.uint8)
    return Scene(image, objects)
