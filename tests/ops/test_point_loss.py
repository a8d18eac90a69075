import torch

from pseudolabel.ops.point_loss import importance_points, point_mask_loss, point_sample


def test_point_sample_reads_the_right_pixels():
    maps = torch.zeros(1, 1, 4, 4)
    maps[0, 0, 1, 3] = 1.0  # row 1, col 3
    centre = torch.tensor([[[3.5 / 4, 1.5 / 4]]])  # (x, y) of that pixel's centre
    assert point_sample(maps, centre).item() == 1.0


def test_importance_points_prefer_uncertain_regions():
    logits = torch.full((1, 1, 32, 32), 10.0)
    logits[..., :, 16:] = 0.0  # right half uncertain
    coords = importance_points(logits, num_points=400, generator=torch.Generator().manual_seed(0))
    assert coords.shape == (1, 400, 2)
    right = (coords[0, :, 0] > 0.5).float().mean()
    assert right > 0.75  # 75% importance + half of the 25% uniform


def test_loss_small_for_confident_correct_logits_and_per_output():
    target = torch.zeros(2, 1, 16, 16)
    target[:, :, 4:12, 4:12] = 1
    good = (target * 2 - 1) * 20
    bad = -good
    logits = torch.cat([good, bad], dim=1)  # two outputs per prompt
    loss = point_mask_loss(logits, target, torch.Generator().manual_seed(0), num_points=256)
    assert loss.shape == (2, 2)
    # importance sampling puts most points on the boundary, where the bilinearly sampled
    # target is fractional, so even perfect logits keep a BCE floor there
    assert (loss[:, 0] * 3 < loss[:, 1]).all()
