"""SAMRefiner prompt excavation, split-then-merge and the IoU adapter (seed 002)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pseudolabel.models.iou_adapter import (
    attach_iou_adapter,
    load_iou_adapter,
    ranking_loss,
    save_iou_adapter,
)
from pseudolabel.samrefiner import (
    OMEGA,
    cosine_maps,
    distance_points,
    elastic_box,
    gaussian_mask_prompt,
    pixel_features,
    similarity_map,
    split_then_merge,
)


def rect(h, w, y0, x0, y1, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_positive_point_is_the_centre_and_a_full_box_has_no_negative():
    pos, neg = distance_points(rect(21, 21, 5, 5, 16, 16))
    assert pos == (10, 10) and neg is None


def test_negative_point_is_the_box_pixel_farthest_from_the_mask():
    ring = rect(40, 40, 5, 5, 35, 35) & ~rect(40, 40, 12, 12, 28, 28)
    pos, neg = distance_points(ring)
    assert ring[pos] and not ring[neg]
    assert neg in {(r, c) for r in (19, 20) for c in (19, 20)}  # the hole's centre
    ell = rect(30, 30, 0, 0, 30, 10) | rect(30, 30, 20, 0, 30, 30)  # L: empty top-right
    _, neg = distance_points(ell)
    assert neg[0] < 12 and neg[1] > 18


def test_points_of_an_empty_mask_are_an_error():
    with pytest.raises(ValueError, match="empty mask"):
        distance_points(np.zeros((5, 5), bool))


def test_elastic_box_grows_into_similar_context_only():
    obj = rect(60, 60, 20, 10, 40, 50)  # the whole object
    coarse = rect(60, 60, 20, 10, 40, 30)  # its left half
    box, grew = elastic_box(coarse, obj)
    assert grew and box[0] == 10 and box[1] == 20 and box[3] == 40
    assert 48 <= box[2] <= 52  # grown to the object's right edge (within one step)
    box, grew = elastic_box(coarse, np.zeros_like(obj))
    assert not grew and list(box) == [10, 20, 30, 40]


def test_elastic_box_stops_at_the_image_and_bounds_each_step():
    coarse = rect(100, 100, 40, 40, 60, 60)
    box, grew = elastic_box(coarse, np.ones_like(coarse))
    assert grew and list(box) == [0, 0, 100, 100]
    box, _ = elastic_box(coarse, np.ones_like(coarse), max_rounds=1, max_step=3)
    assert list(box) == [38, 38, 62, 62]  # 10% of 20 px is 2 px; the cap of 3 does not bind
    box, _ = elastic_box(coarse, np.ones_like(coarse), max_rounds=1, max_step=1)
    assert list(box) == [39, 39, 61, 61]  # the cap binds
    box, _ = elastic_box(rect(200, 200, 50, 50, 150, 150), np.ones((200, 200), bool),
                         max_rounds=1)
    assert list(box) == [40, 40, 160, 160]  # 10% of 100 px would be 10: the default cap


def test_elastic_box_needs_more_than_lambda_of_the_strip():
    coarse = rect(50, 50, 20, 20, 30, 30)
    similar = np.zeros((50, 50), bool)
    similar[20, 19] = True  # 1 of the 10 pixels of the left strip: share 0.1, not above
    assert not elastic_box(coarse, similar, max_rounds=1)[1]
    similar[21, 19] = True  # 0.2 > 0.1
    box, grew = elastic_box(coarse, similar, max_rounds=1)
    assert grew and box[0] == 19


def test_similarity_map_separates_orthogonal_features():
    feats = torch.zeros(4, 10, 10)
    feats[0] = 1.0  # background feature e0
    feats[0, 2:6, 2:6], feats[1, 2:6, 2:6] = 0.0, 1.0  # object feature e1
    mask = np.zeros((40, 40), bool)
    mask[10:22, 10:22] = True  # inside the object's cells (4 px per cell)
    sim = similarity_map(feats, mask, (10, 10))
    assert sim[12:20, 12:20].all() and not sim[:5].any() and not sim[:, 30:].any()


@pytest.mark.parametrize("grid, shape", [((7, 9), (45, 61)), ((10, 10), (40, 40)),
                                         ((1, 6), (5, 37))])
def test_cosine_map_equals_upsampling_the_features_first(grid, shape):
    """The per-pixel cosine without the (C, H, W) upsampled features: same numbers."""
    torch.manual_seed(0)
    feats = torch.randn(8, 10, 10)
    masks = np.zeros((2, *shape), bool)
    masks[0, shape[0] // 4: shape[0] // 2 + 1, shape[1] // 3: shape[1] // 2 + 1] = True
    masks[1, -2:, :3] = True  # a corner
    got = cosine_maps(pixel_features(feats, grid, shape), masks)
    f = feats[:, :grid[0], :grid[1]]
    up = F.normalize(F.interpolate(f[None], shape, mode="bilinear", align_corners=False)[0],
                     dim=0)
    for mask, one in zip(masks, got, strict=True):
        w = F.interpolate(torch.as_tensor(mask, dtype=torch.float32)[None, None], grid,
                          mode="area")[0, 0]
        query = F.normalize((f * w).sum((1, 2)) / w.sum(), dim=0)
        torch.testing.assert_close(one, torch.einsum("chw,c->hw", up, query), atol=1e-5,
                                   rtol=0)


def test_gaussian_mask_prompt_is_eq_3_inside_and_minus_omega_outside():
    m = rect(30, 30, 5, 5, 25, 25)
    g = gaussian_mask_prompt(m, (15, 15))
    assert g[15, 15] == pytest.approx(OMEGA)
    assert (g[~m] == -OMEGA).all()
    assert g[15, 24] == pytest.approx(OMEGA * np.exp(-81 / (400 * 4)))
    assert g[15, 20] > g[15, 22] > g[15, 24] > 0


def test_split_then_merge_merges_close_regions_and_drops_tiny_ones():
    m = rect(60, 60, 10, 10, 30, 20) | rect(60, 60, 10, 22, 30, 32)  # 2-px gap
    m |= rect(60, 60, 50, 50, 52, 52)  # 4 px: tiny
    regions = split_then_merge(m, min_area=10)
    assert len(regions) == 1 and regions[0].sum() == 400
    far = rect(60, 60, 0, 0, 10, 10) | rect(60, 60, 50, 50, 60, 60)
    assert len(split_then_merge(far)) == 2  # merged box 3,600 px, boxes 200 < 1,800


def test_split_then_merge_rule_at_the_threshold():
    # boxes 10x10 each; merged box 10 x (20 + gap); merge iff 200 > 0.5 * 10 * (20 + gap)
    for gap, merged in ((19, True), (20, False), (21, False)):
        m = rect(20, 80, 5, 0, 15, 10) | rect(20, 80, 5, 10 + gap, 15, 20 + gap)
        assert (len(split_then_merge(m)) == 1) is merged, gap


def test_ranking_loss_is_eq_4():
    pred = torch.tensor([[0.5, 0.7, 0.6]])
    coarse = torch.tensor([[0.9, 0.2, 0.1]])  # j = 0
    # max(0, 0.7 - 0.5 + 0.02) + max(0, 0.6 - 0.5 + 0.02)
    assert float(ranking_loss(pred, coarse, 0.02)) == pytest.approx(0.22 + 0.12)
    good = torch.tensor([[0.9, 0.5, 0.1]])
    assert float(ranking_loss(good, coarse, 0.02)) == 0.0


def test_iou_adapter_starts_as_identity_trains_only_itself_and_round_trips(tmp_path):
    from pseudolabel.models.sam import build_sam

    sam = build_sam("tiny", pretrained=False)
    tokens = torch.randn(3, sam.mask_decoder.iou_prediction_head.layers[0].in_features)
    before = sam.mask_decoder.iou_prediction_head(tokens)
    lora = attach_iou_adapter(sam)
    assert torch.equal(sam.mask_decoder.iou_prediction_head(tokens), before)
    trainable = [n for n, p in sam.named_parameters() if p.requires_grad]
    assert sorted(trainable) == ["mask_decoder.iou_prediction_head.layers.2.down.weight",
                                 "mask_decoder.iou_prediction_head.layers.2.up.weight"]
    with pytest.raises(ValueError, match="already"):
        attach_iou_adapter(sam)
    lora.up.weight.data.normal_()
    changed = sam.mask_decoder.iou_prediction_head(tokens)
    save_iou_adapter(tmp_path / "a.safetensors", lora, {"steps": 1})
    other = build_sam("tiny", pretrained=False)
    attach_iou_adapter(other, load_iou_adapter(tmp_path / "a.safetensors"))
    other.mask_decoder.load_state_dict(sam.mask_decoder.state_dict())
    assert torch.allclose(other.mask_decoder.iou_prediction_head(tokens), changed)
    with pytest.raises(ValueError, match="not found"):
        load_iou_adapter(tmp_path / "missing.safetensors")
