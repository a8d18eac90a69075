"""``pseudolabel noise``: COCO-N files and COCO-WAN (seed 003)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from pseudolabel.cli import app
from pseudolabel.data.masks import rle_area, rle_to_mask, rle_to_xywh, segmentation_to_rle
from pseudolabel.noise import LEVELS
from pseudolabel.stages.noise import noise_file, wan_file
from pseudolabel.stages.synth import SynthConfig, synthesize
from tests.conftest import tiny_coco


@pytest.fixture(scope="module")
def default_train(tmp_path_factory):
    """The synthetic default's training annotations (400 images, ~2,100 instances)."""
    out = tmp_path_factory.mktemp("syn-default")
    synthesize(out, SynthConfig(val=0), progress=False)
    return out / "annotations" / "train.json"


@pytest.mark.parametrize("level", ["easy", "medium", "hard"])
@pytest.mark.parametrize("independent", [False, True])
def test_realised_rates_match_the_level(default_train, tmp_path, level, independent):
    spec = LEVELS[level]
    s = noise_file(default_train, tmp_path / "n.json", spec, name=level, seed=0,
                   independent=independent, evaluate=False, progress=False)
    n = s["instances"]
    assert n > 2000

    def tolerance(p):  # exact counts: the issue's +-0.02; independent draws: 4 binomial sigmas
        return 4 * (p * (1 - p) / n) ** 0.5 if independent else 0.02

    assert abs(s["class_rate"] - spec.class_p) <= tolerance(spec.class_p)
    for kind, row in s["spatial"].items():
        assert abs(row["rate"] - spec.spatial[kind][0]) <= tolerance(spec.spatial[kind][0])
    total = sum(q for q, _ in spec.spatial.values())
    assert abs(s["spatial_rate"] - total) <= tolerance(total)
    if not independent:  # exact counts: off by rounding only
        assert abs(s["class_rate"] - spec.class_p) <= 1 / n
        assert all(abs(r["rate"] - spec.spatial[k][0]) <= 1 / n for k, r in s["spatial"].items())


def test_every_annotation_records_its_noise_and_matches_its_mask(synth_dir, tmp_path):
    gt_path = synth_dir / "annotations" / "train.json"
    gt = json.loads(gt_path.read_text())
    out = tmp_path / "hard.json"
    noise_file(gt_path, out, LEVELS["hard"], name="hard", seed=1, progress=False,
               evaluate=False)
    noisy = json.loads(out.read_text())
    assert noisy["images"] == gt["images"] and noisy["categories"] == gt["categories"]
    assert noisy["info"]["pseudolabel_noise"]["level"] == "hard"
    clean = {a["id"]: a for a in gt["annotations"]}
    assert sorted(clean) == sorted(a["id"] for a in noisy["annotations"])
    sizes = {i["id"]: (i["height"], i["width"]) for i in gt["images"]}
    changed = 0
    for a in noisy["annotations"]:
        rec = a["noise"]
        assert set(rec) == {"class_from", "spatial", "param", "op", "kept_clean"}
        assert a["bbox"] == rle_to_xywh(a["segmentation"])
        assert a["area"] == rle_area(a["segmentation"]) > 0
        c = clean[a["id"]]
        if rec["class_from"] is None:
            assert a["category_id"] == c["category_id"]
        else:
            assert rec["class_from"] == c["category_id"] != a["category_id"]
        before = rle_to_mask(segmentation_to_rle(c["segmentation"], *sizes[a["image_id"]]))
        after = rle_to_mask(a["segmentation"])
        if rec["spatial"] is None or rec["kept_clean"]:
            assert (before == after).all()
        else:
            changed += not (before == after).all()
        if rec["spatial"] == "scale":
            assert rec["op"] in ("dilate", "erode") and rec["param"] == 7
            grows = (after >= before).all()
            assert grows if rec["op"] == "dilate" else (after <= before).all()
    assert changed > 0


def test_same_seed_same_bytes_and_workers_agree(synth_dir, tmp_path):
    gt = synth_dir / "annotations" / "train.json"
    spec = LEVELS["medium"]
    a, b, c, d = (tmp_path / f"{k}.json" for k in "abcd")
    noise_file(gt, a, spec, seed=3, progress=False, evaluate=False)
    noise_file(gt, b, spec, seed=3, progress=False, evaluate=False)
    noise_file(gt, c, spec, seed=3, workers=2, progress=False, evaluate=False)
    noise_file(gt, d, spec, seed=4, progress=False, evaluate=False)
    assert a.read_bytes() == b.read_bytes() == c.read_bytes()
    assert a.read_bytes() != d.read_bytes()


def test_crowd_regions_are_left_alone_and_vanishing_masks_kept(write_json, tmp_path):
    data = tiny_coco()
    # a 2-pixel instance that a 7x7 erosion would empty
    tiny = np.zeros((20, 30), bool)
    tiny[15, 20:22] = True
    from pseudolabel.data.masks import mask_to_rle

    data["annotations"].append({"id": 13, "image_id": 2, "category_id": 2, "iscrowd": 0,
                                "segmentation": mask_to_rle(tiny), "bbox": [20, 15, 2, 1],
                                "area": 2})
    gt = write_json(data)
    spec = LEVELS["hard"].__class__(1.0, "symmetric", {"scale": (1.0, 7)})
    kept = 0
    for seed in range(6):  # some seeds erode the 2-pixel mask, which must then stay clean
        out = tmp_path / f"o{seed}.json"
        s = noise_file(gt, out, spec, seed=seed, progress=False, evaluate=False)
        anns = {a["id"]: a for a in json.loads(out.read_text())["annotations"]}
        assert anns[12] == data["annotations"][2]  # the crowd region, byte for byte
        assert s["crowd_untouched"] == 1 and s["class_flipped"] == 3
        rec = anns[13]["noise"]
        if rec["op"] == "erode":
            assert rec["kept_clean"] and anns[13]["area"] == 2
            kept += 1
        assert s["kept_clean"] == sum(a.get("noise", {}).get("kept_clean", False)
                                      for a in anns.values())
    assert kept > 0


def test_noisy_labels_score_below_clean_ones(synth_dir, tmp_path):
    gt = synth_dir / "annotations" / "train.json"
    easy = noise_file(gt, tmp_path / "e.json", LEVELS["easy"], progress=False)
    hard = noise_file(gt, tmp_path / "h.json", LEVELS["hard"], progress=False)
    none = noise_file(gt, tmp_path / "z.json", LEVELS["easy"].__class__(), progress=False)
    assert none["vs_clean"] == {"mask_AP": 100.0, "boundary_AP": 100.0}
    assert 100 > easy["vs_clean"]["mask_AP"] > hard["vs_clean"]["mask_AP"]
    assert easy["vs_clean"]["boundary_AP"] < easy["vs_clean"]["mask_AP"]


def test_wan_levels_replace_masks_with_sam_masks(synth_dir, tmp_path):
    gt_path = synth_dir / "annotations" / "val.json"
    gt = json.loads(gt_path.read_text())
    runs = {}
    for level in ("easy", "medium", "hard"):
        out = tmp_path / f"wan-{level}.json"
        runs[level] = (wan_file(gt_path, synth_dir / "images", out, level, seed=0,
                                progress=False), json.loads(out.read_text()))
    n = sum(1 for a in gt["annotations"] if not a["iscrowd"])
    for level, (summary, data) in runs.items():
        assert summary["instances"] == n == len(data["annotations"])
        prompts = {a["noise"]["prompt"] for a in data["annotations"]}
        assert prompts == {"box" if level == "easy" else "point"}
        for a in data["annotations"]:
            assert a["bbox"] == rle_to_xywh(a["segmentation"]) and a["area"] > 0
    # SAM's masks are not the GT masks, and box prompts beat centre points
    assert runs["easy"][0]["vs_clean"]["mask_AP"] < 100
    assert runs["easy"][0]["vs_clean"]["mask_AP"] > runs["medium"][0]["vs_clean"]["mask_AP"]
    # hard = medium's masks + 40% class noise
    med, hard = runs["medium"][1]["annotations"], runs["hard"][1]["annotations"]
    assert [a["segmentation"] for a in med] == [a["segmentation"] for a in hard]
    assert runs["hard"][0]["class_flipped"] == round(0.4 * n)
    assert runs["medium"][0]["class_flipped"] == 0


def test_cli_noise_errors_name_the_problem(synth_dir, tmp_path):
    runner = CliRunner()
    gt = str(synth_dir / "annotations" / "train.json")
    r = runner.invoke(app, ["noise", "--gt", gt, "--out", str(tmp_path / "x.json")])
    assert r.exit_code == 2 and "exactly one of --level" in r.output
    r = runner.invoke(app, ["noise", "--gt", gt, "--spec", "blur=0.1:3",
                            "--out", str(tmp_path / "x.json")])
    assert r.exit_code == 2 and "unknown noise 'blur'" in r.output
    r = runner.invoke(app, ["noise", "--gt", str(tmp_path / "missing.json"), "--level", "easy",
                            "--out", str(tmp_path / "x.json")])
    assert r.exit_code == 2 and "missing.json" in r.output
    assert not (tmp_path / "x.json").exists()
    r = runner.invoke(app, ["noise", "--gt", gt, "--level", "easy", "--no-eval",
                            "--out", str(tmp_path / "e.json"), "--json", str(tmp_path / "s.json")])
    assert r.exit_code == 0, r.output
    assert "class noise" in r.output and "scale" in r.output
    assert json.loads((tmp_path / "s.json").read_text())["level"] == "easy"
