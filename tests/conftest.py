"""Shared fixtures: a small synthetic dataset generated once per test session (per worker)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pseudolabel.stages.synth import SynthConfig, synthesize

SMALL = SynthConfig(train=30, val=10, seed=3, size=96)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    synthesize(out, SMALL, progress=False)
    return out


@pytest.fixture()
def write_json(tmp_path):
    def _write(data, name: str = "ann.json") -> Path:
        path = tmp_path / name
        path.write_text(json.dumps(data))
        return path

    return _write


def square_rle(h: int, w: int, x0: int, y0: int, x1: int, y1: int) -> dict:
    from pseudolabel.data.masks import mask_to_rle

    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return mask_to_rle(m)


def tiny_coco() -> dict:
    """Two 20x30 images, two categories, three square instances (one crowd)."""
    return {
        "images": [{"id": 1, "file_name": "a.png", "height": 20, "width": 30},
                   {"id": 2, "file_name": "b.png", "height": 20, "width": 30}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0,
             "segmentation": square_rle(20, 30, 2, 2, 10, 10), "bbox": [2, 2, 8, 8], "area": 64},
            {"id": 11, "image_id": 1, "category_id": 2, "iscrowd": 0,
             "segmentation": [[12, 3, 20, 3, 20, 12, 12, 12]], "bbox": [12, 3, 8, 9], "area": 72},
            {"id": 12, "image_id": 2, "category_id": 1, "iscrowd": 1,
             "segmentation": square_rle(20, 30, 0, 0, 5, 5), "bbox": [0, 0, 5, 5], "area": 25},
        ],
    }
