"""A deterministic stream of source-world scenes: scene ``i`` depends only on ``(seed, i)``."""

from __future__ import annotations

import numpy as np

from pseudolabel.stages.synth import image_shape
from pseudolabel.synthetic import STYLES, Scene, render_scene


def scene_at(seed: int, index: int, size: int = 160, style: str = "source") -> Scene:
    rng = np.random.default_rng([seed, 7, index])
    h, w = image_shape(rng, size)
    return render_scene(h, w, STYLES[style], rng)


def grown_box(mask: np.ndarray, rng: np.random.Generator, grow_max: float
              ) -> tuple[int, int, int, int] | None:
    """``(y0, y1, x0, x1)``: the mask's box grown by a random share (up to ``grow_max``) of
    each side, clipped to the image; None for a mask of under 4 pixels (no draw is made)."""
    ys, xs = np.nonzero(mask)
    if len(ys) < 4:
        return None
    h, w = mask.shape
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    grow = rng.uniform(0.0, grow_max)
    dy, dx = int((y1 - y0) * grow / 2) + 1, int((x1 - x0) * grow / 2) + 1
    return max(0, y0 - dy), min(h, y1 + dy), max(0, x0 - dx), min(w, x1 + dx)
