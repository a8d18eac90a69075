"""Peer-assisted copy-paste for the pseudo-mask student (seed 000 Algorithm 1)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pseudolabel.data.masks import mask_to_rle
from pseudolabel.students.copy_paste import PeerPool, overlapping
from pseudolabel.students.data import InstanceData, Sample, normalise


def _world(tmp_path, anns):
    """One 40 x 40 image: grey, with each annotation's square painted its colour."""
    pixels = np.full((40, 40, 3), 128, np.uint8)
    coco_anns = []
    for k, (box, colour, score, label) in enumerate(anns):
        x0, y0, x1, y1 = box
        pixels[y0:y1, x0:x1] = colour
        m = np.zeros((40, 40), bool)
        m[y0:y1, x0:x1] = True
        a = {"id": k + 1, "image_id": 1, "category_id": label + 1, "iscrowd": 0,
             "segmentation": mask_to_rle(m), "bbox": [x0, y0, x1 - x0, y1 - y0],
             "area": int(m.sum())}
        if score is not None:
            a["score"] = score
        coco_anns.append(a)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "height": 40, "width": 40}],
        "annotations": coco_anns,
        "categories": [{"id": c, "name": f"c{c}"} for c in range(1, 4)]}))
    return InstanceData(path, tmp_path)


def test_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [5, 5, 15, 15], [20, 20, 30, 30], [10, 0, 20, 5]],
                     float)
    # touching edges (box 3 starts where box 0 ends) do not overlap
    assert overlapping(boxes).tolist() == [True, True, False, False]
    assert overlapping(boxes[:1]).tolist() == [False]


def test_quality_peers_score_above_tau_and_overlap_nothing(tmp_path):
    data = _world(tmp_path, [
        ((2, 2, 8, 8), (255, 0, 0), 0.9, 0),      # a peer
        ((12, 2, 18, 8), (0, 255, 0), 0.3, 1),    # isolated but scored low
        ((2, 20, 12, 30), (0, 0, 255), 0.9, 2),   # confident but overlapped by the next
        ((8, 25, 16, 35), (0, 0, 255), 0.9, 2),
        ((25, 25, 35, 35), (255, 255, 0), None, 1),  # GT: quality 1
    ])
    assert PeerPool(data, "quality").rows.tolist() == [0, 4]
    assert PeerPool(data, "random").rows.tolist() == [0, 1, 2, 3, 4]
    assert len(PeerPool(data, "off")) == 0
    crop, mask, label, weight = PeerPool(data, "quality").peer(0)
    assert crop.shape == (6, 6, 3) and mask.all() and label == 0 and weight == 1.0
    assert (crop == (255, 0, 0)).all()
    with pytest.raises(ValueError, match="copy-paste 'best'"):
        PeerPool(data, "best")


def _sample(size=32, learner=(10, 10, 20, 20), pad_from=21):
    valid = torch.zeros((size, size), dtype=torch.bool)
    valid[:, :pad_from] = True
    masks = torch.zeros((1, size, size), dtype=torch.bool)
    x0, y0, x1, y1 = learner
    masks[0, y0:y1, x0:x1] = True
    return Sample(torch.zeros((3, size, size)), valid, masks, torch.tensor([2]),
                  torch.tensor([0.7]))


def test_paste_puts_the_peer_over_a_learner_and_takes_its_pixels(tmp_path):
    data = _world(tmp_path, [((2, 2, 8, 8), (255, 0, 0), 0.9, 0)])
    pool = PeerPool(data, "quality")
    red = normalise(torch.tensor([255.0, 0, 0])[:, None, None])[:, 0, 0]
    seen = 0
    for seed in range(20):
        s = _sample()
        out = pool.paste(s, np.random.default_rng(seed), (0.5, 1.5))
        assert len(out.masks) == len(out.labels) == len(out.weights)
        if len(out.masks) == 1:  # the learner vanished under the peer
            assert out.labels.tolist() == [0]
            continue
        seen += 1
        learner, peer = out.masks
        assert out.labels.tolist() == [2, 0] and out.weights.tolist() == pytest.approx([0.7, 1])
        assert not (learner & peer).any()  # the occluded object loses the pasted pixels
        assert (learner | peer)[s.masks[0]].all()  # and keeps the rest
        assert torch.allclose(out.pixels[:, peer], red[:, None], atol=1e-5)
        assert torch.equal(out.pixels[:, ~peer], s.pixels[:, ~peer])
        assert not peer[~s.valid].any()  # never onto the padding
        ys, xs = torch.nonzero(peer, as_tuple=True)  # centred inside the learner's box
        # (the peer, 6 px at LSJ scale 0.5-1.5 of its 40-px image on this 32-px canvas, is
        # 2-8 px wide, so its visible part keeps within 4 px of the learner's box)
        assert xs.float().mean() > 6 and xs.float().mean() < 24
        assert ys.float().mean() > 6 and ys.float().mean() < 24
    assert seen > 10


def test_paste_is_a_function_of_the_generator(tmp_path):
    data = _world(tmp_path, [((2, 2, 8, 8), (255, 0, 0), 0.9, 0),
                             ((25, 25, 35, 35), (0, 255, 0), 0.9, 1)])
    for mode in ("quality", "random"):
        pool = PeerPool(data, mode)
        a = pool.paste(_sample(), np.random.default_rng(3), (0.5, 1.5))
        b = pool.paste(_sample(), np.random.default_rng(3), (0.5, 1.5))
        assert torch.equal(a.pixels, b.pixels) and torch.equal(a.masks, b.masks)
    # quality mode needs a learner; random mode pastes anyway
    empty = Sample(torch.zeros((3, 32, 32)), torch.ones((32, 32), dtype=torch.bool),
                   torch.zeros((0, 32, 32), dtype=torch.bool), torch.zeros(0, dtype=torch.long),
                   torch.zeros(0))
    assert len(PeerPool(data, "quality").paste(empty, np.random.default_rng(0),
                                               (1, 1)).masks) == 0
    assert len(PeerPool(data, "random").paste(empty, np.random.default_rng(0),
                                              (1, 1)).masks) == 1
