"""A deterministic stream of source-world scenes: scene ``i`` depends only on ``(seed, i)``."""

from __future__ import annotations

import numpy as np

from pseudolabel.stages.synth import image_shape
from pseudolabel.synthetic import STYLES, Scene, render_scene


def scene_at(seed: int, index: int, size: int = 160, style: str = "source") -> Scene:
    rng = np.random.default_rng([seed, 7, index])
    h, w = image_shape(rng, size)
    return render_scene(h, w, STYLES[style], rng)
