"""One fine-tuning step of a teacher on cached embeddings (seed 001 §3.1-3.5, §4.1).

Each step draws ``batch`` GT instances of the fully labelled images, builds the teacher's
prompts from their masks (tight box, one uniformly drawn positive point, the class), decodes
them on the cached image embeddings, and applies the point-sampled 5 x BCE + 5 x dice loss;
single-point prompts use multimask output and the lowest-loss mask; the IoU head is fitted
with MSE to each output's true IoU.

The global batch is a function of ``(seed, step)``; under ``torchrun`` rank r takes its
slice of it, and each instance's point and loss samples come from ``(seed, step, position)``,
so with DistributedDataParallel averaging the ranks' gradients, two ranks take the step one
process takes with the same global batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

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
    class_lr_factor: float = 1.0  # lr multiplier of the class path's new layers (text_proj, G_zero)


# the layers the class-aware prompt encoder adds from scratch (§3.1 eq. 1-2); its trainable
# prompt-encoder copy starts from SAM's weights like every other fine-tuned part
NEW_CLASS_LAYERS = ("class_encoder.text_proj.", "class_encoder.g_zero.")


def param_groups(module: torch.nn.Module, cfg: FinetuneConfig) -> list[dict]:
    """AdamW groups: the class path's new layers (``text_proj`` and the zero-initialised
    ``G_zero``, §3.1) at ``class_lr_factor`` x the lr, everything else (the trainable prompt
    encoder copy included) at the lr.

    The factor is ours: §4.1 gives one lr for everything over 36,874 steps. Adam moves a
    weight by at most about the lr per step, so ``G_zero`` can leave zero by ~0.29 in §4.1's
    schedule (1e-5 x 27,655 + 1e-6 x 9,219) but by only ~0.007 in the synthetic default's
    300 steps at 3e-5 (measured: ``G_zero``'s weight norm 0.04 after them, the class moving a
    point token by ~1% of its norm, and class-aware = plain teacher). A factor of
    about 40 restores §4.1's budget for the new layers without speeding up the pre-trained
    copy."""
    new, rest = [], []
    for name, p in module.named_parameters():  # TeacherParts: class_encoder.* is the path
        if p.requires_grad:
            (new if name.startswith(NEW_CLASS_LAYERS) else rest).append(p)
    groups = [{"params": rest, "lr_factor": 1.0}]
    if new:
        groups.append({"params": new, "lr_factor": cfg.class_lr_factor})
    return groups


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


def _prompts(mask: np.ndarray, kind: TeacherKind, rng: np.random.Generator):
    """One instance's box ``(1, 4)`` and point ``(1, 2)`` (SAM's pixel-index convention)."""
    ys, xs = np.nonzero(mask)
    boxes = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=np.float64) \
        if kind.box else None
    points = None
    if kind.point:
        j = rng.integers(len(ys))
        points = np.array([[xs[j], ys[j]]], dtype=np.float64)
    return boxes, points


def batch_positions(num_samples: int, step: int, cfg: FinetuneConfig, rank: int,
                    world: int) -> list[tuple[int, int]]:
    """This rank's ``(position in the global batch, sample index)`` pairs of ``step``."""
    if cfg.batch % world:
        raise ValueError(f"teacher batch {cfg.batch} does not split over {world} ranks; use "
                         "a multiple of the number of processes")
    rng = np.random.default_rng([cfg.seed, step])
    chosen = rng.choice(num_samples, size=cfg.batch, replace=num_samples < cfg.batch)
    per_rank = cfg.batch // world
    return [(p, int(chosen[p])) for p in range(rank * per_rank, (rank + 1) * per_rank)]


def train_step(teacher: PromptedSam, kind: TeacherKind, cache, samples: list[Sample],
               optimizer, params: list[torch.nn.Parameter], step: int,
               cfg: FinetuneConfig, scaler: torch.amp.GradScaler | None = None,
               model: torch.nn.Module | None = None) -> dict:
    """One optimiser step on ``teacher.runtime``'s device (autocast inside the decoder,
    losses in fp32; ``scaler`` for fp16). ``model`` is the trainable parts' forward
    (``TeacherParts``, DDP-wrapped under ``torchrun``); without it the teacher decodes."""
    runtime = teacher.runtime
    dev = runtime.device
    mine = batch_positions(len(samples), step, cfg, runtime.rank, runtime.world_size)
    embs, points, boxes, classes, targets, low_targets, gens = [], [], [], [], [], [], []
    for pos, index in mine:
        sample = samples[index]
        rng = np.random.default_rng([cfg.seed, step, pos])
        gens.append(torch.Generator().manual_seed(int(rng.integers(2**62))))
        emb = cache.get(sample.image_key)
        mask = rle_to_mask(sample.rle)[None]
        b, p = _prompts(mask[0], kind, rng)
        pt, bx = teacher.prompt_tensors(emb.original_sizes[0], p, None, b)
        embs.append(emb.embeddings)
        points.append(pt)
        boxes.append(bx)
        classes.append(sample.class_row)
        targets.append(input_frame_targets(mask, teacher))
        low_targets.append(to_low_res(mask, teacher))
    pt = None if not kind.point else (torch.cat([p[0] for p in points]),
                                      torch.cat([p[1] for p in points]))
    bx = torch.cat(boxes) if kind.box else None
    use_classes = classes if kind.class_aware and teacher.class_encoder else None
    multimask = kind.point and not kind.box  # a single point is ambiguous
    embeddings = torch.cat(embs).to(dev, non_blocking=True)
    forward = model if model is not None else (
        lambda *a: teacher.decode_tensors(a[0], a[1], a[2], None, a[3], a[4]))
    logits, iou_pred = forward(embeddings, pt, bx, use_classes, multimask)  # fp32 out
    losses = point_mask_loss(logits, torch.cat(targets), num_points=cfg.num_points,
                             prompt_generators=gens)
    mask_loss = losses.min(dim=1).values if multimask else losses[:, 0]
    iou_loss = F.mse_loss(iou_pred, true_iou(logits.detach(), torch.cat(low_targets).to(dev)),
                          reduction="none").mean(1)
    # this rank's share of the global mean: DDP averages the ranks' gradients
    loss = (mask_loss + iou_loss).sum() / len(mine)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite loss {float(loss)} at step {step}; stopping")
    for g in optimizer.param_groups:
        g["lr"] = lr_at(step, cfg) * g.get("lr_factor", 1.0)
    optimizer.zero_grad(set_to_none=True)
    scaler = scaler or runtime.grad_scaler()
    scaler.scale(loss).backward()
    if runtime.distributed and not isinstance(model, DistributedDataParallel):
        for p in params:  # no DDP wrapper: the same average, by hand
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad /= runtime.world_size
    scaler.step(optimizer)
    scaler.update()
    value = loss.detach().float()
    if runtime.distributed:
        dist.all_reduce(value)
        value /= runtime.world_size
    return {"loss": float(value)}
