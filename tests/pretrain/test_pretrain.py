"""The pre-training steps learn something, and a split run resumes to the same weights."""

import numpy as np
import torch

from pseudolabel.models.predictor import PromptedSam
from pseudolabel.models.sam import build_sam
from pseudolabel.pretrain import sam as sam_pretrain
from pseudolabel.pretrain.grounding_dino import GdinoPretrainConfig, batch_prompt, make_step
from pseudolabel.pretrain.loop import train
from pseudolabel.pretrain.scenes import scene_at

SMALL_SAM = sam_pretrain.SamPretrainConfig(steps=4, batch_images=2, targets_per_image=3,
                                           warmup=1)


def _sam_run(tmp, stop_after=None):
    torch.manual_seed(0)
    predictor = PromptedSam(build_sam("tiny"))
    predictor.sam.train()
    opt = torch.optim.AdamW(predictor.sam.parameters(), lr=SMALL_SAM.lr)
    history = train(predictor.sam, opt,
                    lambda s: sam_pretrain.train_step(predictor, opt, s, SMALL_SAM),
                    steps=SMALL_SAM.steps, state_path=tmp / "state.pt", every=2,
                    stop_after=stop_after, progress=False)
    return predictor.sam, history


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    straight, hist = _sam_run(tmp_path / "a")
    _sam_run(tmp_path / "b", stop_after=2)          # "killed" after its first checkpoint
    resumed, hist_b = _sam_run(tmp_path / "b")      # same command again
    assert len(hist) == len(hist_b) == SMALL_SAM.steps
    for (k, v), w in zip(straight.state_dict().items(), resumed.state_dict().values(),
                         strict=True):
        torch.testing.assert_close(v, w, msg=k)
    assert all(np.isfinite(h["loss"]) for h in hist)


def test_low_res_targets_align_with_postprocessing():
    predictor = PromptedSam(build_sam("tiny"))
    mask = np.zeros((120, 160), bool)
    mask[30:90, 40:100] = True
    target = sam_pretrain.to_low_res(mask[None], predictor)
    logits = (target * 20 - 10)[:, None]
    back = predictor.sam.postprocess_masks(logits, (120, 160), (120, 160))[0, 0] > 0
    assert (back.numpy() == mask).mean() > 0.99


def test_targets_include_parts_and_prompts_fit():
    rng = np.random.default_rng(0)
    scene = scene_at(1, 3)
    targets = sam_pretrain.sample_targets(scene, 20, part_prob=1.0, rng=rng)
    wholes = [o.mask for o in scene.objects]
    assert any(not any((t == w).all() for w in wholes) for t in targets)  # some are parts
    for t in targets:
        box = sam_pretrain.jitter_box(t, rng)
        assert (box[2:] > box[:2]).all()


def test_grounding_dino_step_and_batch_prompt():
    cfg = GdinoPretrainConfig(steps=2, batch_images=3, warmup=1)
    torch.manual_seed(0)
    detector, opt, step_fn = make_step(cfg)
    before = [p.detach().clone() for p in detector.model.parameters()]
    stats = step_fn(0)
    assert np.isfinite(stats["loss"]) and "loss_giou" in stats
    assert any(not torch.equal(a, b) for a, b in zip(before, detector.model.parameters(),
                                                      strict=True))
    scenes = [scene_at(2, i) for i in range(4)]
    order = batch_prompt(scenes, np.random.default_rng(0))
    present = {o.class_index for sc in scenes for o in sc.objects}
    assert present <= set(order) and len(order) == len(set(order))


def test_grounding_dino_continues_from_init_weights(tmp_path):
    from pseudolabel.models.checkpoints import save_safetensors

    torch.manual_seed(0)
    first, _, step_fn = make_step(GdinoPretrainConfig(steps=2, batch_images=2, warmup=1))
    step_fn(0)
    path = tmp_path / "gdino.safetensors"
    save_safetensors(path, first.model.state_dict())
    torch.manual_seed(1)  # a different random init, replaced by the file's weights
    again, _, _ = make_step(GdinoPretrainConfig(init=str(path)))
    for (name, a), b in zip(first.model.state_dict().items(), again.model.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name


def test_backbone_crops_are_deterministic_and_labelled():
    from pseudolabel.pretrain.backbone import BackbonePretrainConfig, batch_at

    cfg = BackbonePretrainConfig(batch_images=2, crop=32)
    x, y = batch_at(3, cfg)
    x2, y2 = batch_at(3, cfg)
    torch.testing.assert_close(x, x2)
    assert torch.equal(y, y2)
    n = sum(len(scene_at(cfg.data_seed, 3 * 2 + i).objects) for i in range(2))
    assert x.shape[1:] == (3, 32, 32) and 0 < len(y) <= n
    assert not torch.equal(batch_at(4, cfg)[0][:1], x[:1])


def test_backbone_steps_fit_a_batch():
    """A few steps on one step's crops lower its loss (the classifier learns)."""
    from pseudolabel.pretrain import backbone as bb

    cfg = bb.BackbonePretrainConfig(batch_images=2, crop=32, warmup=1, steps=8, lr=1e-3)
    torch.manual_seed(0)
    model = bb.build_backbone()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    losses = [bb.train_step(model, opt, 0, cfg)["loss"] for _ in range(8)]
    assert losses[-1] < 0.5 * losses[0]
