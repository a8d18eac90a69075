"""Object templates of the synthetic world: each class is a set of coloured polygon parts.

Templates live in an object-local frame where the object spans about ``[-0.5, 0.5]`` on
each axis; ``render`` scales, rotates and places them. Parts that touch are deliberately
given different colours, so a point on one part is ambiguous between the part and the
whole object (DESIGN "Synthetic world").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Shared palette: objects and backgrounds draw from the same colours (textured backgrounds
# whose colours also occur on objects).
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (200, 45, 40),
    "orange": (230, 130, 35),
    "yellow": (232, 210, 55),
    "green": (70, 165, 65),
    "darkgreen": (35, 100, 45),
    "blue": (50, 90, 200),
    "lightblue": (125, 180, 230),
    "brown": (120, 80, 40),
    "grey": (128, 128, 128),
    "white": (235, 235, 230),
    "black": (35, 32, 30),
    "pink": (230, 135, 170),
    "purple": (130, 60, 160),
    "tan": (210, 180, 130),
}


@dataclass(frozen=True)
class ClassSpec:
    """A class: name, supercategory, part names with colour choices, and rotation range."""

    name: str
    supercategory: str
    part_colours: tuple[tuple[str, ...], ...]
    max_rotation_deg: float


CLASSES: tuple[ClassSpec, ...] = (
    ClassSpec("flower", "plant", (("red", "pink", "white", "purple", "yellow"),
                                  ("yellow", "orange", "brown")), 180),
    ClassSpec("tree", "plant", (("brown",), ("green", "darkgreen", "orange")), 12),
    ClassSpec("house", "building", (("white", "tan", "yellow", "lightblue"),
                                    ("red", "brown", "grey", "darkgreen"),
                                    ("brown", "blue", "black")), 8),
    ClassSpec("car", "vehicle", (("red", "blue", "yellow", "white", "green", "black"),
                                 ("lightblue",), ("black",)), 15),
    ClassSpec("boat", "vehicle", (("brown", "white", "blue", "red"),
                                  ("white", "yellow", "orange")), 15),
    ClassSpec("fish", "animal", (("orange", "blue", "yellow", "grey"),
                                 ("red", "orange", "yellow", "purple")), 180),
    ClassSpec("turtle", "animal", (("darkgreen", "brown"), ("green", "tan")), 180),
    ClassSpec("ball", "toy", (("red", "blue", "yellow", "white", "orange"),
                              ("red", "blue", "yellow", "white", "green")), 180),
    ClassSpec("kite", "toy", (("red", "yellow", "blue", "purple"),
                              ("white", "orange", "green", "pink")), 40),
)


def _circle(cx: float, cy: float, rx: float, ry: float | None = None, angle: float = 0.0,
            n: int = 28) -> np.ndarray:
    ry = rx if ry is None else ry
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    pts = np.stack([rx * np.cos(t), ry * np.sin(t)], axis=1)
    c, s = np.cos(angle), np.sin(angle)
    return pts @ np.array([[c, s], [-s, c]]) + (cx, cy)


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], dtype=np.float64)


def template(name: str, rng: np.random.Generator) -> list[list[np.ndarray]]:
    """Polygons of each part of one instance of class ``name``, in the object-local frame.

    Returns a list over parts (in the order of ``ClassSpec.part_colours``, painted in that
    order); each part is a list of ``(K, 2)`` ``(x, y)`` polygons.
    """
    if name == "flower":
        n = int(rng.integers(5, 9))
        petals = [_circle(0.3 * np.cos(a), 0.3 * np.sin(a), 0.2, 0.11, a)
                  for a in np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, 1)]
        return [petals, [_circle(0, 0, 0.16)]]
    if name == "tree":
        if rng.random() < 0.5:  # round crown
            crown = [_circle(0, -0.15, 0.33)]
        else:  # conifer
            crown = [np.array([(0, -0.5), (0.32, 0.1), (-0.32, 0.1)])]
        return [[_rect(-0.08, 0.0, 0.08, 0.5)], crown]
    if name == "house":
        return [[_rect(-0.35, -0.05, 0.35, 0.5)],
                [np.array([(-0.45, -0.04), (0.45, -0.04), (0, -0.5)])],
                [_rect(-0.09, 0.2, 0.09, 0.5)]]
    if name == "car":
        return [[_rect(-0.5, -0.05, 0.5, 0.22)],
                [np.array([(-0.3, -0.04), (0.25, -0.04), (0.15, -0.3), (-0.2, -0.3)])],
                [_circle(-0.3, 0.24, 0.12), _circle(0.3, 0.24, 0.12)]]
    if name == "boat":
        return [[np.array([(-0.5, 0.15), (0.5, 0.15), (0.35, 0.42), (-0.35, 0.42)])],
                [np.array([(0.02, 0.13), (0.02, -0.5), (0.38, 0.13)])]]
    if name == "fish":
        return [[_circle(-0.12, 0, 0.36, 0.21)],
                [np.array([(0.18, 0), (0.5, -0.24), (0.5, 0.24)])]]
    if name == "turtle":
        limbs = [_circle(0.42, 0, 0.11)] + [
            _circle(sx * 0.22, sy * 0.25, 0.08) for sx in (-1, 1) for sy in (-1, 1)]
        return [[_circle(0, 0, 0.33, 0.25)], limbs]
    if name == "ball":
        half = np.array([(0.5 * np.cos(t), 0.5 * np.sin(t))
                         for t in np.linspace(0, np.pi, 15)])
        return [[_circle(0, 0, 0.5)], [half]]
    if name == "kite":
        return [[np.array([(0, -0.5), (0.3, -0.05), (0, 0.5), (-0.3, -0.05)])],
                [np.array([(0, -0.5), (0.3, -0.05), (0, 0.5)])]]
    raise ValueError(f"unknown class {name!r}; known: {[c.name for c in CLASSES]}")
