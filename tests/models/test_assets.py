"""The shipped synthetic foundation weights load through the public builders and still
measure what their manifest says, on the first val images of the target world."""

import hashlib

import pytest

from pseudolabel.config import Models
from pseudolabel.data.coco import load_coco
from pseudolabel.evaluation.teacher import teacher_miou
from pseudolabel.models import assets
from pseudolabel.models.predictor import PromptedSam
from pseudolabel.models.sam import build_sam
from pseudolabel.stages.synth import SynthConfig, synthesize

MANIFEST = assets.manifest()


@pytest.fixture(scope="module")
def target_val(tmp_path_factory):
    n = MANIFEST["sam"]["subset_images"]
    root = tmp_path_factory.mktemp("target")
    # Images are generated one generator per index, so these are the default set's first n.
    synthesize(root, SynthConfig(train=0, val=n), progress=False)
    return load_coco(root / "annotations" / "val.json"), root / "images"


@pytest.mark.parametrize("kind", ["sam", "gdino", "text"])
def test_manifest_matches_files(kind):
    entry = MANIFEST["clip" if kind == "text" else kind]
    path = assets.shipped_path(kind)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
    assert entry["steps"] == entry["config"]["steps"] and entry["train_seconds"] > 0
    assert entry["command"].startswith("python scripts/pretrain_synthetic_foundation.py")
    assert sum(p.stat().st_size for p in assets.ASSETS.iterdir()) < 20 * 2**20


def test_shipped_sam_reproduces_manifest(target_val):
    gt, images = target_val
    model = MANIFEST["sam"]["sam_model"]
    assert model == Models().sam == "tiny_hr"  # the default config runs the shipped SAM
    sam = build_sam(model, checkpoint=assets.resolve_sam(model, "default"))
    got = teacher_miou(PromptedSam(sam), gt, images, progress=False)
    for kind, ref in MANIFEST["sam"]["metrics_subset"].items():
        assert got[kind]["num_instances"] == ref["num_instances"]
        assert got[kind]["mIoU"] == pytest.approx(ref["mIoU"], abs=0.01), kind
    # the point ambiguity is real: a single point is clearly worse than a box
    full = MANIFEST["sam"]["metrics"]
    assert full["point"]["mIoU"] <= full["box"]["mIoU"] - 0.10


def test_shipped_detector_reproduces_manifest(target_val):
    from pseudolabel.evaluation.teacher import detector_ap
    from pseudolabel.models.grounding_dino import build_detector

    gt, images = target_val
    detector = build_detector("tiny", checkpoint=assets.resolve("default", "gdino"))
    got = detector_ap(detector, gt, images, progress=False)
    ref = MANIFEST["gdino"]["metrics_subset"]
    assert got["AP50"] == pytest.approx(ref["AP50"], abs=1.0)
    assert got["AP"] == pytest.approx(ref["AP"], abs=1.0)


def test_resolve_errors(tmp_path):
    with pytest.raises(ValueError, match="checkpoint not found"):
        assets.resolve(tmp_path / "x.safetensors", "sam")
    with pytest.raises(ValueError, match="no shipped weights"):
        assets.shipped_path("clip")
    assert assets.resolve(None, "sam") is None


def test_shipped_text_tower_separates_the_classes():
    """The tiny CLIP text tower's class embeddings differ (the random tower's were nearly
    parallel) and load through the public builder."""
    from pseudolabel.pretrain.clip import class_cosines

    state = assets.resolve("default", "text")
    from pseudolabel.models.checkpoints import load_state_dict

    got = class_cosines(load_state_dict(state))
    assert got == pytest.approx(MANIFEST["clip"]["metrics"]["class_cosine"], abs=1e-3)
    assert got < 0.5 < class_cosines()
