"""Seed 000's Quality-Aware Module and BoxInst losses on hand-computed cases."""

import numpy as np
import pytest
import torch

from pseudolabel.boxseg import (
    adaptive_k,
    box_quality_ranking,
    fuse_candidates,
    quality_weighted_dice,
)
from pseudolabel.boxseg.losses import (
    color_similarity,
    pairwise_loss,
    projection_loss,
    varifocal_loss,
)


@pytest.mark.parametrize("area, k", [
    (0, 2), (32**2, 2),            # up to A_s: K_min
    (96**2, 10), (500**2, 10),     # from A_l: K_max
    (64**2, 6),                    # sqrt 64 is halfway between 32 and 96: 2 + 8 * 0.5
    (40**2, 3),                    # 2 + 8 * 8/64 = 3.0
    (36**2, 3),                    # 2 + 8 * 4/64 = 2.5: rounded half up
])
def test_adaptive_k_eq4(area, k):
    assert adaptive_k([area])[0] == k


def test_adaptive_k_scales_with_the_world():
    # the synthetic world's thresholds scale with info.area_scale (160-px images: 1/16)
    s = (160 / 640) ** 2
    assert adaptive_k([16**2], area_small=32**2 * s, area_large=96**2 * s)[0] == 6


def test_fusion_eq2_and_quality_eq5_by_hand():
    box = np.zeros((2, 4), bool)
    box[:, :2] = True  # the GT box: the left half
    masks = np.array([[[1.0, 1.0, 0, 0], [1.0, 1.0, 0, 0]],
                      [[0.6, 0.2, 0, 0], [0.6, 0.2, 0, 0]],
                      [[1.0, 1.0, 1, 1], [1.0, 1.0, 1, 1]]])
    s = np.array([0.9, 0.8, 0.4])  # the third is below tau = 0.5: no weight
    u = np.array([0.9, 0.2, 1.0])
    fused, w = fuse_candidates(masks, s, u, box)
    w1, w2 = np.sqrt(0.81), np.sqrt(0.16)  # 0.9 and 0.4
    expect = (w1 * masks[0] + w2 * masks[1]) / (w1 + w2)
    np.testing.assert_allclose(fused, expect)
    # s_hat = mean(0.9, 0.8); m_hat = mean fused prob over box pixels with fused > 0.5
    conf = fused[box & (fused > 0.5)]
    assert w == pytest.approx(np.sqrt(0.85 * conf.mean()))


def test_no_candidate_above_tau_gives_a_zero_mask_and_zero_quality():
    fused, w = fuse_candidates(np.ones((2, 3, 3)), [0.4, 0.5], [1.0, 1.0], np.ones((3, 3)))
    assert w == 0.0 and not fused.any() and fused.shape == (3, 3)


def test_an_empty_box_has_zero_quality():
    fused, w = fuse_candidates(np.ones((1, 3, 3)), [0.9], [0.8], np.zeros((3, 3), bool))
    assert w == 0.0 and fused.all()


def test_box_quality_ranking_keeps_all_when_k_exceeds_the_candidates():
    gt = torch.tensor([0.0, 0.0, 10.0, 10.0])
    cands = torch.tensor([[0.0, 0, 5, 5], [0.0, 0, 10, 10], [20.0, 20, 30, 30]])
    idx, ious = box_quality_ranking(cands, gt, k=10)
    assert idx.tolist() == [1, 0, 2]  # by IoU, not by index or score
    assert ious.tolist() == pytest.approx([1.0, 0.25, 0.0])
    idx, _ = box_quality_ranking(cands, gt, k=1)
    assert idx.tolist() == [1]
    assert len(box_quality_ranking(cands[:0], gt, k=3)[0]) == 0


def test_quality_weighted_dice_eq1_averages_over_boxes_with_a_fused_mask():
    target = torch.zeros(3, 4, 4)
    target[:, :2] = 1
    perfect = torch.where(target > 0, 30.0, -30.0)
    wrong = -perfect
    logits = torch.stack([perfect[0], wrong[1], wrong[2]])
    w = torch.tensor([0.5, 0.25, 0.0])  # the third has no fused mask: not counted
    loss = quality_weighted_dice(logits, target, w)
    assert float(loss) == pytest.approx((0.5 * 0.0 + 0.25 * 1.0) / 2, abs=1e-6)


def test_projection_loss_is_zero_for_a_rectangle_filling_its_box():
    box = torch.zeros(1, 12, 16)
    box[0, 3:9, 4:12] = 1
    rect = torch.where(box > 0, 30.0, -30.0)
    assert float(projection_loss(rect, box)[0]) < 1e-6
    # a mask covering only part of the box's extent is penalised
    half = torch.full_like(box, -30.0)
    half[0, 3:9, 4:8] = 30.0
    assert float(projection_loss(half, box)[0]) > 0.1


def test_pairwise_loss_is_zero_for_a_constant_colour_box_and_constant_mask():
    image = np.full((12, 16, 3), 120, np.uint8)  # one colour: every edge is similar
    sim = color_similarity(image)
    assert sim.shape == (8, 12, 16) and float(sim.min()) >= 0
    box = torch.zeros(1, 12, 16, dtype=torch.bool)
    box[0, 2:10, 3:13] = True
    assert float(pairwise_loss(torch.full((1, 12, 16), 30.0), sim, box)[0]) < 1e-6
    assert float(pairwise_loss(torch.full((1, 12, 16), -30.0), sim, box)[0]) < 1e-6
    split = torch.full((1, 12, 16), 30.0)
    split[0, :, 8:] = -30.0  # a label change inside a single-colour region costs
    assert float(pairwise_loss(split, sim, box)[0]) > 1.0


def test_pairwise_edges_follow_colour_changes():
    image = np.zeros((12, 16, 3), np.uint8)
    image[:, 8:] = 255  # black | white: no similar edge crosses the border
    box = torch.ones(1, 12, 16, dtype=torch.bool)
    split = torch.full((1, 12, 16), 30.0)
    split[0, :, 8:] = -30.0
    assert float(pairwise_loss(split, color_similarity(image), box)[0]) < 1e-6


def test_varifocal_targets_weigh_positives_by_iou():
    logits = torch.zeros(1, 3)  # p = 0.5 everywhere
    target = torch.tensor([[0.0, 0.8, 0.0]])
    loss = varifocal_loss(logits, target)
    bce_pos = -(0.8 * np.log(0.5) + 0.2 * np.log(0.5))
    bce_neg = -np.log(0.5)
    expect = 0.8 * bce_pos + 2 * 0.75 * 0.25 * bce_neg
    assert float(loss) == pytest.approx(expect, rel=1e-5)
