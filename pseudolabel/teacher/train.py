"""One fine-tuning step of a teacher on cached embeddings (seed 001 §3.1-3.5, §4.1).

Each step draws ``batch`` GT instances of the fully labelled images, builds the teacher's
prompts from their masks (tight box, one uniformly drawn positive point, the class), decodes
them on the cached image embeddings, and applies the point-sampled 5 x BCE + 5 x dice loss;
single-point prompts use multimask output and the lowest-loss mask; the IoU head is fitted
with MSE to each output's true IoU.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from pseudolabel.data.masks import rle_to_mask
from pseudolabel.models.predictor import PromptedSam
from pseudolabel.ops.point_loss import NUM_POINTS, point_mask_loss
from pseudolabel.pretrain.sam import to_low_res, true_iou
from pseudolabel.teacher.model import TeacherKind


@dataclass(frozen=True)
class FinetuneConfig:
    """§4.1: AdamW, lr 1e-5 dropping to 1e-6 at 75% of the steps, batch 32, 12,544 points."""

    steps: int = 36874
    batch: int = 32
    lr: float = 1e-5
    lr_final: float = 1e-6
    drop_at: float = 0.75
    weight_decay: float = 0.01
    num_points: int = NUM_POINTS
    seed: int = 0


def lr_at(step: int, cfg: FinetuneConfig) -> float:
    """``lr`` until step floor(drop_at * steps), then ``lr_final`` (COCO: step 27,655)."""
    return cfg.lr if step < int(cfg.drop_at * cfg.steps) else cfg.lr_final


@dataclass
class Sample:
    """One GT instance: the cache key of its image, its mask RLE and its class row."""

    image_key: str
    rle: dict
    class_row: int


def input_frame_targets(masks: np.ndarray, predictor: PromptedSam) -> torch.Tensor:
    """``(N, H, W)`` bool -> ``(N, 1, S, S)`` float in SAM's padded input frame (on the
    predictor's device: the masks travel as bytes, the resizing runs there)."""
    s = predictor.sam.image_encoder.img_size
    h, w = predictor.transform.get_preprocess_shape(masks.shape[1], masks.shape[2], s)
    t = torch.as_tensor(masks).to(predictor.device).float()[:, None]
    t = F.interpolate(t, (h, w), mode="bilinear", align_corners=False)
    return F.pad(t, (0, s - w, 0, s - h))


def _prompts(masks: np.ndarray, kind: TeacherKind, rng: np.random.Generator):
    boxes = points = None
    if kind.box:
        boxes = np.zeros((len(masks), 4))
        for i, m in enumerate(masks):
            ys, xs = np.nonzero(m)
            boxes[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    if kind.point:
        points = np.zeros((len(masks), 2))
        for i, m in enumerate(masks):
            ys, xs = np.nonzero(m)
            j = rng.integers(len(ys))
            points[i] = (xs[j], ys[j])  # SAM's pixel-index convention
    return boxes, points


def train_step(teacher: PromptedSam, kind: TeacherKind, cache, samples: list[Sample],
               optimizer, params: list[torch.nn.Parameter], step: int,
               cfg: FinetuneConfig, scaler: torch.amp.GradScaler | None = None) -> dict:
    """One optimiser step on ``teacher.runtime``'s device (autocast inside the decoder,
    losses in fp32; ``scaler`` for fp16)."""
    runtime = teacher.runtime
    rank, world = runtime.rank, runtime.world_size
    dev = runtime.device
    rng = np.random.default_rng([cfg.seed, step, rank])
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    per_rank = max(1, cfg.batch // world)
    chosen = rng.choice(len(samples), size=per_rank, replace=len(samples) < per_rank)
    by_image: dict[str, list[Sample]] = defaultdict(list)
    for i in chosen:
        by_image[samples[i].image_key].append(samples[i])
    # Prompts and targets per image (coordinates depend on its size), then one decode for
    # the whole batch: row i of ``embs`` is the cached embedding of prompt i's image.
    embs, points, boxes, classes, targets, low_targets = [], [], [], [], [], []
    for key, group in by_image.items():
        emb = cache.get(key)
        masks = np.stack([rle_to_mask(s.rle) for s in group])
        b, p = _prompts(masks, kind, rng)
        pt, bx = teacher.prompt_tensors(emb.original_sizes[0], p, None, b)
        embs.append(emb.embeddings.to(dev).expand(len(group), -1, -1, -1))
        points.append(pt)
        boxes.append(bx)
        classes += [s.class_row for s in group]
        targets.append(input_frame_targets(masks, teacher))
        low_targets.append(to_low_res(masks, teacher))
    pt = None if not kind.point else (torch.cat([p[0] for p in points]),
                                      torch.cat([p[1] for p in points]))
    bx = torch.cat(boxes) if kind.box else None
    use_classes = classes if kind.class_aware and teacher.class_encoder else None
    multimask = kind.point and not kind.box  # a single point is ambiguous
    logits, iou_pred = teacher.decode_tensors(torch.cat(embs), pt, bx, None, use_classes,
                                              multimask)  # fp32 out
    losses = point_mask_loss(logits, torch.cat(targets), gen, cfg.num_points)
    mask_loss = losses.min(dim=1).values if multimask else losses[:, 0]
    iou_loss = F.mse_loss(iou_pred, true_iou(logits.detach(), torch.cat(low_targets).to(dev)),
                          reduction="none").mean(1)
    total = (mask_loss + iou_loss).sum()
    loss = total / len(chosen)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite loss {float(loss)} at step {step}; stopping")
    for g in optimizer.param_groups:
        g["lr"] = lr_at(step, cfg)
    optimizer.zero_grad(set_to_none=True)
    scaler = scaler or runtime.grad_scaler()
    scaler.scale(loss).backward()
    if world > 1:  # the same average DDP would compute, over every rank's instances
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad /= world
    scaler.step(optimizer)
    scaler.update()
    return {"loss": float(loss.detach())}
