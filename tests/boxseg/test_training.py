"""BoxSeg training parts: copy-paste targets, the EMA update, teacher targets, the CLI run."""

import json

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from pseudolabel.boxseg.copy_paste import MemoryBank, paste_peer
from pseudolabel.boxseg.trainer import BoxSegConfig, ema_update, teacher_targets
from pseudolabel.cli import app


def _bank_with_one_peer(rng_seed=0):
    bank = MemoryBank(80)
    pixels = np.full((40, 40, 3), 200, np.uint8)
    boxes = np.array([[8.0, 8.0, 24.0, 24.0]])  # alone in its image: a peer tutor
    fused = np.zeros((1, 10, 10), np.float32)
    fused[0, 2:6, 2:6] = 0.9  # grid cells of the box (stride 4)
    bank.collect(pixels=pixels, boxes=boxes, labels=np.array([1]), fused=fused,
                 weights=np.array([0.8]), factor=1.0, mode="quality", tau=0.5)
    return bank


def test_memory_bank_takes_only_good_lonely_objects_and_is_fifo():
    bank = _bank_with_one_peer()
    assert len(bank) == 1
    pixels = np.zeros((40, 40, 3), np.uint8)
    fused = np.ones((2, 10, 10), np.float32)
    overlapping = np.array([[0.0, 0, 20, 20], [10.0, 10, 30, 30]])
    bank.collect(pixels=pixels, boxes=overlapping, labels=np.array([0, 0]), fused=fused,
                 weights=np.array([0.9, 0.9]), factor=1.0, mode="quality", tau=0.5)
    assert len(bank) == 1  # both overlap another object
    low = np.array([[0.0, 0, 20, 20]])
    bank.collect(pixels=pixels, boxes=low, labels=np.array([0]), fused=fused[:1],
                 weights=np.array([0.4]), factor=1.0, mode="quality", tau=0.5)
    assert len(bank) == 1  # w below tau
    small = MemoryBank(2)
    for _ in range(3):
        small.items.append(("x",))
    assert len(small) == 2


def test_copy_paste_removes_every_pasted_pixel_from_the_occluded_target():
    bank = _bank_with_one_peer()
    size = 64
    x = torch.zeros(3, size, size)
    rgb = np.zeros((size, size, 3), np.uint8)
    boxes = np.array([[20.0, 20.0, 44.0, 44.0]], np.float32)
    fused = np.zeros((1, size, size), np.float32)
    fused[0, 20:44, 20:44] = 1.0  # the learner's target fills its box
    out = paste_peer(bank, x, rgb, boxes, np.array([0]), fused, np.array([0.7]),
                     np.random.default_rng(0), 1.0, "quality")
    x2, rgb2, boxes2, labels2, fused2, weights2 = out
    pasted = fused2[-1] > 0
    assert pasted.any() and len(boxes2) == 2 and labels2.tolist() == [0, 1]
    assert not (fused2[0] > 0)[pasted].any()  # every pasted pixel left the learner's target
    assert (pasted & (fused[0] > 0)).any()  # the peer does overlap the learner
    assert weights2.tolist() == pytest.approx([0.7, 0.8])
    assert (rgb2[pasted] == 200).all() and (rgb2[~pasted] == 0).all()
    ys, xs = np.nonzero(pasted)
    assert boxes2[-1].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_ema_update_is_exact():
    teacher, student = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in teacher.parameters()]
    ema_update(teacher, student, 0.999)
    for t, b, s in zip(teacher.parameters(), before, student.parameters(), strict=True):
        torch.testing.assert_close(t, 0.999 * b + 0.001 * s, rtol=0, atol=1e-7)


def test_teacher_targets_follow_the_ablation():
    grid = 16
    cand = {"boxes": torch.tensor([[0.0, 0, 32, 32], [4.0, 4, 30, 30], [40.0, 40, 60, 60]]),
            "scores": torch.tensor([[0.9], [0.95], [0.99]]),
            "mask_logits": torch.full((3, grid, grid), -10.0)}
    cand["mask_logits"][0, :8, :8] = 10.0
    cand["mask_logits"][1, 1:7, 1:7] = 10.0
    gt = np.array([[0.0, 0, 32, 32]])
    off = teacher_targets(cand, gt, np.array([0]), BoxSegConfig(qam="off"), 1.0)
    assert off[1].tolist() == [0.0]
    bqr = teacher_targets(cand, gt, np.array([0]), BoxSegConfig(qam="bqr"), 1.0)
    assert bqr[1][0] == 1.0 and (bqr[0][0] > 0.5).sum() == 64  # the best-IoU candidate
    bpma = teacher_targets(cand, gt, np.array([0]), BoxSegConfig(qam="bpma"), 1.0)
    assert (bpma[0][0] > 0.5).sum() == 36  # the best score among IoU >= 0.5
    full = teacher_targets(cand, gt, np.array([0]), BoxSegConfig(qam="full",
                                                                 adaptive_k=False, k=2), 1.0)
    assert 0 < full[1][0] < 1 and full[2][0] == pytest.approx(0.925)


def test_boxseg_cli_runs_end_to_end(synth_dir, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "data": {"synthetic": {"root": str(synth_dir),
                               "params": {"train": 30, "val": 10, "seed": 3, "size": 96}}},
        "run_dir": str(tmp_path / "run"),
        "student": {"steps": 20, "batch": 2, "size": 64, "save_every": 10}}))
    runner = CliRunner()
    r = runner.invoke(app, ["weaken", "--weak", "box+class", "--fraction", "0", "--config",
                            str(cfg)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["train-student", "--student", "condinst", "--boxseg", "--weak",
                            "box+class", "--config", str(cfg), "--export-pseudo",
                            str(tmp_path / "fused.json")])
    assert r.exit_code == 0, r.output
    out = tmp_path / "run" / "student" / "box_class-condinst-boxseg-full-quality"
    metrics = json.loads((out / "metrics.json").read_text())
    assert "AP" in metrics["segm"]
    assert json.loads((tmp_path / "fused.json").read_text())["info"]["pseudolabel_boxseg"]
    # the pairwise loss ramps up from zero over the first 11% of the schedule (BoxInst)
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert history[0]["loss_pairwise"] == 0.0 and history[-1]["loss_pairwise"] > 0.0
    r = runner.invoke(app, ["train-student", "--boxseg", "--weak", "box+class", "--config",
                            str(cfg)])
    assert r.exit_code == 2 and "--student condinst" in r.output
