"""The synthetic world carries the ambiguities the method exists for (DESIGN, issue 2.3)."""

import numpy as np

from pseudolabel.synthetic import CLASSES, STYLES, render_scene
from pseudolabel.synthetic.shapes import PALETTE


def _scenes(n=60, style="target", size=128):
    return [render_scene(size, size, STYLES[style], np.random.default_rng([7, i]))
            for i in range(n)]


def test_at_least_five_common_word_classes():
    names = [c.name for c in CLASSES]
    assert len(set(names)) >= 5 and all(n.isalpha() and n.islower() for n in names)


def test_objects_have_visibly_different_parts():
    multi = 0
    for scene in _scenes(20):
        for obj in scene.objects:
            parts = [p for p in obj.parts if p.sum() >= 20]
            if len(parts) >= 2:
                means = [scene.image[p].mean(axis=0) for p in parts]
                multi += int(np.abs(means[0] - means[1]).sum() > 40)
            assert obj.mask.sum() >= sum(p.sum() for p in obj.parts) > 0
    assert multi >= 20  # many objects whose parts differ clearly in colour


def test_same_class_instances_overlap():
    touching = 0
    for scene in _scenes():
        objs = scene.objects
        for i in range(len(objs)):
            for j in range(i + 1, len(objs)):
                if objs[i].class_index == objs[j].class_index:
                    grown = np.zeros_like(objs[i].mask)
                    grown[1:] |= objs[i].mask[:-1]
                    grown[:-1] |= objs[i].mask[1:]
                    touching += int((grown & objs[j].mask).any())
    assert touching >= 5


def test_masks_are_disjoint_visible_regions():
    for scene in _scenes(10):
        if scene.objects:
            total = np.sum([o.mask for o in scene.objects], axis=0)
            assert total.max() <= 1


def test_background_uses_object_colours():
    # Pixels outside every object often lie close to a palette colour that objects use.
    close = 0
    palette = np.array(list(PALETTE.values()), float)
    for scene in _scenes(10):
        bg = np.ones(scene.image.shape[:2], bool)
        for o in scene.objects:
            bg &= ~o.mask
        px = scene.image[bg].astype(float)[::7]
        d = np.linalg.norm(px[:, None] - palette[None], axis=2).min(axis=1)
        close += int((d < 30).mean() > 0.3)
    assert close >= 5


def test_source_style_differs_from_target():
    t = np.mean([s.image.mean(axis=(0, 1)) for s in _scenes(20, "target")], axis=0)
    s = np.mean([s.image.mean(axis=(0, 1)) for s in _scenes(20, "source")], axis=0)
    assert np.abs(t - s).sum() > 10
