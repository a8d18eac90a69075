"""The Mask2Former student: augmentation, inference, resumable training, evaluation, CLI."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from pseudolabel.cli import app
from pseudolabel.stages.train_student import StudentConfig, evaluate_student, train_student
from pseudolabel.students.data import large_scale_jitter
from pseudolabel.students.mask2former import instance_inference

REPO = Path(__file__).resolve().parents[2]
TINY = StudentConfig(steps=4, batch=2, save_every=2, size=96, num_queries=8,
                     decoder_layers=2, num_points=64, topk=10)


def test_lsj_moves_masks_with_the_image_and_marks_padding():
    pixels = np.zeros((40, 80, 3), np.uint8)
    pixels[10:20, 60:70] = 255  # a white square where the mask is
    mask = np.zeros((1, 40, 80), bool)
    mask[0, 10:20, 60:70] = True
    for seed in range(6):
        s = large_scale_jitter(pixels, mask, np.array([2]), np.ones(1, np.float32),
                               np.random.default_rng(seed), 64, (0.5, 1.0))
        assert s.pixels.shape == (3, 64, 64) and s.valid.shape == (64, 64)
        assert not s.valid[-1].any()  # the 2:1 image never fills the square's bottom rows
        if len(s.masks):
            bright = s.pixels.mean(0) > 0.0  # above mid-grey
            inside = s.masks[0].bool()
            assert bright[inside].float().mean() > 0.9  # the mask covers the white square
            assert s.labels.tolist() == [2]


def test_instances_cropped_away_are_dropped():
    pixels = np.zeros((100, 100, 3), np.uint8)
    mask = np.zeros((1, 100, 100), bool)
    mask[0, 0:5, 0:5] = True
    dropped = 0
    for seed in range(20):
        s = large_scale_jitter(pixels, mask, np.array([0]), np.ones(1, np.float32),
                               np.random.default_rng(seed), 50, (1.5, 2.0))
        dropped += len(s.masks) == 0
        assert len(s.masks) == len(s.labels) == len(s.weights)
    assert dropped > 0


def test_instance_inference_scores_class_times_mask_quality():
    cls = torch.full((3, 4), -10.0)
    cls[0, 1] = 10.0  # query 0: class 1, confident
    cls[1, 3] = 10.0  # query 1: no object
    masks = torch.full((3, 8, 8), -10.0)
    masks[0, 1:3, 1:3] = 10.0
    binary, scores, labels = instance_inference(cls, masks, (16, 16), 32, (20, 20), topk=2)
    assert labels[0] == 1 and scores[0] > 0.9  # edges of the upsampled mask are softer
    expect = np.zeros((20, 20), bool)
    expect[5:15, 5:15] = True  # cells 1-2 of 8 -> px 4-12 of the 32-px input -> x 20/16
    assert (binary[0].numpy() == expect).mean() > 0.95
    assert scores[1] < 0.01


def test_training_resumes_to_the_same_weights_and_evaluates(synth_dir, tmp_path):
    train = synth_dir / "annotations" / "train.json"
    images = synth_dir / "images"
    train_student(train, images, tmp_path / "a", TINY, progress=False)
    train_student(train, images, tmp_path / "b", TINY, progress=False, stop_after=2)
    assert torch.load(tmp_path / "b" / "state.pt", weights_only=True)["step"] == 2
    train_student(train, images, tmp_path / "b", TINY, progress=False)  # resumes at step 2
    a = torch.load(tmp_path / "a" / "state.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "state.pt", weights_only=True)
    assert a["step"] == b["step"] == 4
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    m = evaluate_student(tmp_path / "a", synth_dir / "annotations" / "val.json", images,
                         progress=False, full_metrics=tmp_path / "a" / "metrics.json")
    assert set(m["segm"]) >= {"AP", "AP50"} and set(m["boundary"]) >= {"AP"}
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["segm"] == m["segm"]
    with pytest.raises(ValueError, match="other settings"):
        train_student(train, images, tmp_path / "a", StudentConfig(steps=5), progress=False)


def test_configs_hold_the_student_recipes():
    synthetic = yaml.safe_load((REPO / "configs" / "synthetic.yaml").read_text())["student"]
    default = asdict(StudentConfig())
    assert all(default[k] == v for k, v in synthetic.items())
    coco = StudentConfig(**yaml.safe_load((REPO / "configs" / "coco.yaml").read_text())
                         ["student"])
    assert (coco.preset, coco.batch, coco.lr, coco.weight_decay) == ("r50", 32, 1e-4, 0.05)
    assert (coco.scale_min, coco.scale_max, coco.size) == (0.1, 2.0, 1024)


def test_cli_train_student(synth_dir, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "data": {"synthetic": {"root": str(synth_dir),
                               "params": {"train": 30, "val": 10, "seed": 3, "size": 96}}},
        "run_dir": str(tmp_path / "run"),
        "student": {**{k: v for k, v in asdict(TINY).items()}, "steps": 2}}))
    runner = CliRunner()
    r = runner.invoke(app, ["train-student", "--weak", "box+class", "--config", str(cfg)])
    assert r.exit_code == 2 and "run pseudolabel generate --weak box+class first" in r.output
    r = runner.invoke(app, ["train-student", "--config", str(cfg)])
    assert r.exit_code == 2 and "exactly one of --weak" in r.output
    r = runner.invoke(app, ["train-student", "--full", "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    assert "trained 2 steps" in r.output and "mask" in r.output
    assert (tmp_path / "run" / "student" / "full-mask2former" / "metrics.json").is_file()
    r = runner.invoke(app, ["train-student", "--full", "--seed", "2", "--no-eval",
                            "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    seeded = json.loads((tmp_path / "run" / "student" / "full-mask2former-seed2"
                         / "settings.json").read_text())
    assert seeded["config"]["seed"] == 2
    r = runner.invoke(app, ["train-student", "--full", "--copy-paste", "best", "--config",
                            str(cfg)])
    assert r.exit_code == 2 and "expected off, random or quality" in r.output
    r = runner.invoke(app, ["train-student", "--full", "--copy-paste", "random", "--no-eval",
                            "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    pasted = json.loads((tmp_path / "run" / "student" / "full-mask2former-paste-random"
                         / "settings.json").read_text())
    assert pasted["copy_paste"] == "random"


def test_quality_weights_scale_each_mask_loss():
    from pseudolabel.students.mask2former import build_mask2former, use_quality_weights

    model = build_mask2former("tiny", 3, num_queries=6, decoder_layers=2, num_points=64)
    x = torch.randn(2, 3, 64, 64)
    masks = [torch.zeros(2, 64, 64), torch.zeros(1, 64, 64)]
    masks[0][0, 5:20, 5:20] = 1
    masks[0][1, 30:60, 10:40] = 1
    masks[1][0, 10:50, 10:50] = 1
    labels = [torch.tensor([0, 2]), torch.tensor([1])]

    model.eval()
    with torch.no_grad():
        out = model(pixel_values=x)

    def losses(weights):
        torch.manual_seed(0)  # the same sampled points every time
        if weights is not None:
            crit.instance_weights = [torch.tensor(w) for w in weights]
        d = model.criterion(masks_queries_logits=out.masks_queries_logits,
                            class_queries_logits=out.class_queries_logits,
                            mask_labels=masks, class_labels=labels)
        return {k: float(v) for k, v in d.items()}

    crit = None
    plain = losses(None)
    crit = use_quality_weights(model)
    crit.instance_weights = None
    assert losses(None) == pytest.approx(plain)
    ones = losses([[1.0, 1.0], [1.0]])
    assert ones == pytest.approx(plain, rel=1e-5)
    zero = losses([[0.0, 0.0], [0.0]])
    assert zero["loss_mask"] == 0 and zero["loss_dice"] == 0
    assert zero["loss_cross_entropy"] == pytest.approx(plain["loss_cross_entropy"])
    half = losses([[0.5, 0.5], [0.5]])
    assert half["loss_mask"] == pytest.approx(plain["loss_mask"] / 2, rel=1e-5)


def test_quality_weighted_training_reads_scores(synth_dir, tmp_path):
    from dataclasses import replace

    data = json.loads((synth_dir / "annotations" / "train.json").read_text())
    for i, a in enumerate(data["annotations"]):
        if i % 2:
            a["score"] = 0.25  # a pseudo-mask's predicted IoU; the others are GT (weight 1)
    path = tmp_path / "pseudo.json"
    path.write_text(json.dumps(data))
    cfg = replace(TINY, steps=2)
    s = train_student(path, synth_dir / "images", tmp_path / "q", cfg, quality_weighted=True,
                      progress=False)
    assert s["steps"] == 2 and np.isfinite(s["final_loss"])
    settings = json.loads((tmp_path / "q" / "settings.json").read_text())
    assert settings["quality_weighted"] is True
    with pytest.raises(ValueError, match="other settings"):  # not resumed unweighted
        train_student(path, synth_dir / "images", tmp_path / "q", cfg, progress=False)


def test_condinst_assigns_fcos_locations_and_gives_no_mask_loss_without_instances():
    from pseudolabel.students.condinst import CondInst

    xy = torch.tensor([[20.0, 20.0], [100.0, 100.0], [40.0, 40.0], [44.0, 44.0]])
    levels = torch.tensor([0, 0, 0, 0])
    boxes = torch.tensor([[0.0, 0.0, 60.0, 60.0], [30.0, 30.0, 50.0, 50.0]])
    idx = CondInst.assign(xy, levels, boxes)
    # (20, 20): near box 0's centre only; (100, 100): no box; (40, 40) and (44, 44): inside
    # both, and the smaller box wins
    assert idx.tolist() == [0, -1, 1, 1]
    model = CondInst(3)
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
              "masks": torch.zeros(0, 64, 64)}]
    losses = model.losses(torch.randn(1, 3, 64, 64), empty)
    assert float(losses["loss_mask"].detach()) == 0 and float(losses["loss_box"].detach()) == 0
    assert float(losses["loss_cls"].detach()) > 0  # every location is background: focal loss only
    losses["loss"].backward()


def test_condinst_trains_resumes_and_evaluates(synth_dir, tmp_path):
    from dataclasses import replace

    cfg = replace(TINY, arch="condinst")
    train = synth_dir / "annotations" / "train.json"
    images = synth_dir / "images"
    train_student(train, images, tmp_path / "a", cfg, progress=False)
    train_student(train, images, tmp_path / "b", cfg, progress=False, stop_after=2)
    train_student(train, images, tmp_path / "b", cfg, progress=False)
    a = torch.load(tmp_path / "a" / "state.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "state.pt", weights_only=True)["model"]
    assert all(torch.equal(v, b[k]) for k, v in a.items())
    m = evaluate_student(tmp_path / "a", synth_dir / "annotations" / "val.json", images,
                         progress=False)
    assert m["num_predictions"] > 0 and "AP" in m["segm"]


def test_copy_paste_student_resumes_to_the_same_weights(synth_dir, tmp_path):
    from dataclasses import replace

    from pseudolabel.students.copy_paste import PeerPool
    from pseudolabel.students.data import InstanceData
    from pseudolabel.students.loader import StepBatches

    cfg = replace(TINY, arch="condinst")
    train = synth_dir / "annotations" / "train.json"
    images = synth_dir / "images"
    data = InstanceData(train, images)
    kw = dict(batch=2, rank=0, world=1, seed=0, size=96, scale_range=(0.5, 1.5), start=0,
              end=3)
    plain, pasted = StepBatches(data, **kw), StepBatches(data, **kw,
                                                         peers=PeerPool(data, "quality"))
    grew = [len(p.masks) - len(s.masks) for k in range(3)
            for s, p in zip(plain[k][0], pasted[k][0], strict=True)]
    assert max(grew) == 1  # one peer per image at most (occluded objects may leave)

    train_student(train, images, tmp_path / "a", cfg, copy_paste="quality", progress=False)
    train_student(train, images, tmp_path / "b", cfg, copy_paste="quality", progress=False,
                  stop_after=2)
    train_student(train, images, tmp_path / "b", cfg, copy_paste="quality", progress=False)
    a = torch.load(tmp_path / "a" / "state.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "state.pt", weights_only=True)["model"]
    assert all(torch.equal(v, b[k]) for k, v in a.items())
    settings = json.loads((tmp_path / "a" / "settings.json").read_text())
    assert settings["copy_paste"] == "quality" and settings["peers"] > 0
    with pytest.raises(ValueError, match="other settings"):  # not resumed without the paste
        train_student(train, images, tmp_path / "a", cfg, progress=False)
