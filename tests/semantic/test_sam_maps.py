"""SeSAM's pieces on hand-built maps: skeleton sampling, selection, split-and-repaint, ignore."""

import numpy as np
import pytest
import torch
from skimage.morphology import skeletonize

from pseudolabel.models.predictor import Decoded, ImageEmbeddings
from pseudolabel.semantic.labels import IGNORE, regions, simulate
from pseudolabel.semantic.sam_maps import (
    parse_taus,
    sam_pseudo_map,
    select_mask,
    skeleton_points,
    weak_components,
)


@pytest.mark.parametrize("shape, n", [
    ((slice(5, 25), slice(4, 40)), 5),   # a bar: a long skeleton, 5 points
    ((slice(5, 8), slice(5, 8)), 5),     # a 3 x 3 square: a 1-pixel skeleton, 1 point
    ((slice(2, 30), slice(2, 30)), 50),  # more asked than the skeleton holds: all of it
])
def test_skeleton_sampling_returns_distinct_points_on_the_skeleton(shape, n):
    comp = np.zeros((32, 48), bool)
    comp[shape] = True
    skel = skeletonize(comp)
    pts = skeleton_points(comp, n, np.random.default_rng(0))
    assert len(pts) == min(n, int(skel.sum()))
    assert len({tuple(p) for p in pts}) == len(pts)  # distinct
    assert skel[pts[:, 0], pts[:, 1]].all()          # all on the skeleton


def test_selection_picks_the_best_weighted_agreement():
    weak = np.full((10, 10), IGNORE, np.uint8)
    weak[2:5, 2:5] = 1   # the component being prompted (class 1)
    weak[7:9, 7:9] = 2   # another class's labels
    comp = weak == 1
    small = np.zeros((10, 10), bool)
    small[3, 3] = True                   # precision 1, coverage 1/9: 0.3 + 0.7/9 = 0.378
    spill = np.ones((10, 10), bool)      # coverage 1, precision 9/13: 0.208 + 0.7 = 0.908
    exact = comp.copy()                  # precision 1, coverage 1: 1.0
    k, score = select_mask(np.stack([small, spill, exact]), weak, 1, comp)
    assert k == 2 and score == pytest.approx(1.0)
    k, score = select_mask(np.stack([small, spill]), weak, 1, comp)
    assert k == 1 and score == pytest.approx(0.3 * 9 / 13 + 0.7)
    # Precision-heavy weights (Fig. 7's other end) prefer the mask that never spills.
    k, score = select_mask(np.stack([small, spill]), weak, 1, comp, taus=(0.9, 0.1))
    assert k == 0 and score == pytest.approx(0.9 + 0.1 / 9)


@pytest.mark.parametrize("text", ["0.3", "a,b", "-1,2", "0,0", "nan,1", "1,2,3"])
def test_bad_selection_weights_are_refused(text):
    with pytest.raises(ValueError, match="--taus"):
        parse_taus(text)
    assert parse_taus("0.5,0.5") == (0.5, 0.5)


class ComponentSam:
    """A SAM that answers every prompt with the component it came from (all 3 outputs)."""

    def __init__(self, comps):
        self.comps = comps

    def encode(self, images):
        h, w = images[0].shape[:2]
        return ImageEmbeddings(torch.zeros(1, 1, 1, 1), [(h, w)], [(h, w)])

    def decode(self, emb, multimask=True, **kw):
        masks = torch.as_tensor(np.stack([m for _, m in self.comps]))[:, None].repeat(1, 3, 1, 1)
        n = len(masks)
        return Decoded(masks, torch.ones(n, 3), torch.zeros(n, 3, 4, 4))


def test_a_label_map_round_trips_through_split_and_repaint():
    fine = np.zeros((24, 32), np.uint8)
    fine[2:10, 2:12] = 1
    fine[14:22, 4:10] = 1            # a second instance of class 1: its own component
    fine[3:20, 18:28] = 2
    fine[0:2, 28:32] = IGNORE         # a crowd region
    keep = fine == IGNORE
    comps = weak_components(fine)
    assert [c for c, _ in comps] == [1, 1, 2]
    weak = simulate(fine, "scribble", np.random.default_rng(0))  # one scribble per region
    assert [c for c, _ in weak_components(weak)] == [1, 1, 2]
    got = sam_pseudo_map(ComponentSam(comps), np.zeros((24, 32, 3), np.uint8), weak,
                         np.random.default_rng(0), keep_ignore=keep)
    np.testing.assert_array_equal(got, fine)
    assert (got[keep] == IGNORE).all()  # ignore stays ignore


def test_ignore_pixels_stay_ignore_whatever_sam_says():
    weak = np.full((16, 16), IGNORE, np.uint8)
    weak[4:8, 4:8] = 1
    keep = np.zeros((16, 16), bool)
    keep[5:7, :] = True  # a crowd band across the object
    everything = [(1, np.ones((16, 16), bool))]
    got = sam_pseudo_map(ComponentSam(everything), np.zeros((16, 16, 3), np.uint8), weak,
                         np.random.default_rng(0), keep_ignore=keep)
    assert (got[keep] == IGNORE).all() and (got[~keep] == 1).all()


@pytest.mark.parametrize("kind", ["point", "scribble", "coarse"])
def test_simulated_weak_labels_are_sparse_correct_and_seeded(kind):
    fine = np.zeros((40, 40), np.uint8)
    fine[5:30, 5:25] = 3
    fine[8:20, 28:38] = 1
    a = simulate(fine, kind, np.random.default_rng(1))
    b = simulate(fine, kind, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    labelled = a != IGNORE
    assert labelled.any() and (a[labelled] == fine[labelled]).all()  # never a wrong class
    assert labelled.sum() < (fine != IGNORE).sum()  # sparser than the fine map
    assert {int(c) for c in np.unique(a[labelled])} == {0, 1, 3}  # every region labelled
    assert len(regions(fine)) == 3


def test_semantic_scores_by_hand():
    from pseudolabel.semantic.evaluate import SemanticScore

    fine = np.array([[0, 0, 1, 1], [0, 0, 1, IGNORE]], np.uint8)
    pred = np.array([[0, 1, 1, IGNORE], [0, 0, 1, 1]], np.uint8)
    s = SemanticScore(2)
    s.add(pred, fine)
    r = s.result()
    # class 0: tp 3, fn 1 (predicted 1); class 1: tp 2, fp 1, one fine pixel unlabelled
    assert r["per_class_IoU"] == pytest.approx([3 / 4, 2 / 3])
    assert r["precision"] == pytest.approx(5 / 6) and r["recall"] == pytest.approx(5 / 7)
    # foreground (class 1 only): 2 of its 3 predicted pixels right, 2 of its 3 fine pixels found
    assert r["fg_precision"] == pytest.approx(2 / 3) and r["fg_recall"] == pytest.approx(2 / 3)
    assert r["fg_F1"] == pytest.approx(2 / 3)


def test_semantic_commands_run_end_to_end(synth_dir, tmp_path):
    import json

    import yaml
    from typer.testing import CliRunner

    from pseudolabel.cli import app

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "data": {"synthetic": {"root": str(synth_dir),
                               "params": {"train": 30, "val": 10, "seed": 3, "size": 96}}},
        "run_dir": str(tmp_path / "run")}))
    runner = CliRunner()
    r = runner.invoke(app, ["semantic-weaken", "--kind", "scribble", "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    weak = tmp_path / "run" / "semantic" / "scribble"
    assert len(list(weak.glob("*.png"))) == 30
    r = runner.invoke(app, ["semantic-train", "--weak", str(weak), "--steps", "3",
                            "--rounds", "2", "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    assert "round 1: pseudo-maps mIoU" in r.output
    m = json.loads((tmp_path / "run" / "semantic" / "sesam-scribble" / "round1" /
                    "metrics.json").read_text())
    assert 0 <= m["student"]["mIoU"] <= 1 and m["pseudo_maps"]["F1"] > 0
