import hashlib
import json

import numpy as np
from PIL import Image

from pseudolabel.data.coco import load_coco
from pseudolabel.data.masks import rle_to_mask
from pseudolabel.stages.synth import SynthConfig, area_scale, synthesize
from tests.conftest import SMALL


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_same_seed_byte_identical_other_seed_differs(tmp_path):
    cfg = SynthConfig(train=6, val=2, seed=11, size=64)
    synthesize(tmp_path / "a", cfg, progress=False)
    synthesize(tmp_path / "b", cfg, progress=False)
    synthesize(tmp_path / "c", SynthConfig(train=6, val=2, seed=12, size=64), progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    # Rewriting a world in place (make's t2-data beside a running job) changes no byte and
    # leaves no temp file behind.
    synthesize(tmp_path / "a", cfg, progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert not [p for p in (tmp_path / "a").rglob("*") if p.name.startswith(".")]


def test_files_are_valid_coco_matching_images(synth_dir):
    for split, n in (("train", SMALL.train), ("val", SMALL.val)):
        ds = load_coco(synth_dir / "annotations" / f"{split}.json")
        assert len(ds.images) == n and len(ds.report) == 0
        assert len(ds.categories) >= 5
        img = ds.images[0]
        arr = np.asarray(Image.open(synth_dir / "images" / img["file_name"]))
        assert arr.shape == (img["height"], img["width"], 3)
        assert max(img["height"], img["width"]) == SMALL.size
        for ann in ds.annotations[:20]:
            m = rle_to_mask(ds.rle(ann))
            assert m.sum() == ann["area"] > 0
            ys, xs = np.nonzero(m)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                   ys.max() - ys.min() + 1]


def test_small_medium_large_in_scaled_coco_sense(synth_dir):
    data = json.loads((synth_dir / "annotations" / "train.json").read_text())
    s = data["info"]["area_scale"]
    assert s == area_scale(SMALL.size)
    areas = np.array([a["area"] for a in data["annotations"]])
    small = (areas < 32**2 * s).mean()
    large = (areas > 96**2 * s).mean()
    assert small > 0.05 and large > 0.05 and 1 - small - large > 0.05
