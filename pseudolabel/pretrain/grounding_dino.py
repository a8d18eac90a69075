"""Pre-training of the tiny Grounding DINO on the source world's boxes.

Each batch gets one prompt: the label space in a random order, or (half the time) a random
subset that holds the batch's classes plus some absent ones, as the ``class`` setting prompts
with an image's tags. One prompt per batch rather than per image works around transformers'
``GroundingDinoLoss._get_target_classes_one_hot``, which offsets image i's labels by the size
of its own label map instead of the sizes of all earlier ones (wrong for a batch of more than
two images whose prompts differ; harmless when every image has the same prompt).
``class_labels`` index the phrases of that prompt; the transformers model computes the DETR
losses (Hungarian matching, focal, L1, GIoU) with auxiliary decoder losses. What helps
DETR-style models converge: two-stage query selection, auxiliary losses, linear warm-up
then step decay, gradient clipping at 0.1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pseudolabel.models.grounding_dino import GroundingDino, build_detector
from pseudolabel.pretrain.scenes import scene_at
from pseudolabel.synthetic import CLASSES


@dataclass(frozen=True)
class GdinoPretrainConfig:
    steps: int = 6000
    batch_images: int = 8
    lr: float = 2e-4
    warmup: int = 300
    weight_decay: float = 1e-4
    clip_norm: float = 0.1
    size: int = 160
    data_seed: int = 2000
    seed: int = 0
    init: str | None = None  # start from these weights (a continuation), else from scratch


def lr_at(step: int, cfg: GdinoPretrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    return cfg.lr * (0.1 if step >= 0.8 * cfg.steps else 1.0)


def batch_prompt(scenes, rng: np.random.Generator) -> list[int]:
    """Class indices of the batch's prompt, in prompt order."""
    present = sorted({o.class_index for sc in scenes for o in sc.objects})
    k = len(CLASSES)
    if rng.random() < 0.5:
        absent = [c for c in range(k) if c not in present]
        extra = rng.choice(absent, size=int(rng.integers(0, len(absent) + 1)), replace=False)
        classes = present + [int(c) for c in extra]
    else:
        classes = list(range(k))
    order = [classes[i] for i in rng.permutation(len(classes))]
    return order or [int(rng.integers(k))]  # an empty batch still needs a prompt


def scene_targets(scene, order: list[int]) -> dict:
    """DETR targets of one scene: phrase indices in ``order`` and normalised cxcywh boxes."""
    h, w = scene.image.shape[:2]
    labels, boxes = [], []
    for obj in scene.objects:
        ys, xs = np.nonzero(obj.mask)
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        labels.append(order.index(obj.class_index))
        boxes.append([(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h])
    return {"class_labels": torch.tensor(labels, dtype=torch.long),
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)}


def make_step(cfg: GdinoPretrainConfig):
    """The detector (``cfg.init``'s weights, or random), its optimizer and
    ``step_fn(step) -> stats`` for ``pretrain.loop.train``."""
    detector = build_detector("tiny", checkpoint=cfg.init)
    model = detector.model
    model.config.auxiliary_loss = True
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def step_fn(step: int) -> dict:
        rng = np.random.default_rng([cfg.seed, step])
        scenes = [scene_at(cfg.data_seed, step * cfg.batch_images + i, cfg.size)
                  for i in range(cfg.batch_images)]
        order = batch_prompt(scenes, rng)
        text = GroundingDino._prompt([(c, CLASSES[c].name) for c in order]).text
        labels = [scene_targets(sc, order) for sc in scenes]
        pix = detector.image_processor(images=[sc.image for sc in scenes], return_tensors="pt")
        tok = detector.tokenizer([text] * len(scenes), return_tensors="pt")
        out = model(pixel_values=pix["pixel_values"], pixel_mask=pix["pixel_mask"],
                    input_ids=tok["input_ids"], attention_mask=tok["attention_mask"],
                    token_type_ids=tok["token_type_ids"], labels=labels)
        loss = out.loss
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {float(loss)} at step {step}; stopping")
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
        opt.step()
        stats = {"loss": float(loss.detach())}
        for k in ("loss_ce", "loss_bbox", "loss_giou"):
            if out.loss_dict and k in out.loss_dict:
                stats[k] = float(out.loss_dict[k].detach())
        return stats

    return detector, opt, step_fn
