"""Class-agnostic pre-training of the tiny SAM with SAM's interactive recipe.

Every object and every part of the source world is a valid target, so one point is
genuinely ambiguous. Prompts per target: a jittered box (std 10% of the side, at most 20
px, as SAM), a single point (multimask output, loss on the lowest-loss mask), or a point
with a coarse mask given as low-res logits. The IoU head is trained with MSE on the true
IoU of every output mask. Loss: BCE + dice on the low-res logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from pseudolabel.models.predictor import PromptedSam
from pseudolabel.pretrain.scenes import scene_at


@dataclass(frozen=True)
class SamPretrainConfig:
    steps: int = 3000
    batch_images: int = 8
    targets_per_image: int = 8
    lr: float = 4e-4
    warmup: int = 200
    weight_decay: float = 0.05
    size: int = 160
    data_seed: int = 1000
    seed: int = 0
    part_prob: float = 0.4  # chance a target is a part rather than a whole object
    sam_model: str = "tiny"  # or tiny_hr (the high-resolution encoder)
    init: str | None = None  # warm start: a plain tiny SAM's weights (for tiny_hr)


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-mask dice loss of ``(..., P)`` logits against ``(..., P)`` {0, 1} targets."""
    p = logits.sigmoid()
    num = 2 * (p * target).sum(-1)
    den = p.sum(-1) + target.sum(-1)
    return 1 - (num + 1) / (den + 1)


def mask_losses(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + dice per output: ``(N, M, L, L)`` logits vs ``(N, L, L)`` -> ``(N, M)``."""
    t = target[:, None].expand_as(logits).flatten(2)
    x = logits.flatten(2)
    bce = F.binary_cross_entropy_with_logits(x, t, reduction="none").mean(-1)
    return bce + dice_loss(x, t)


def true_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    pred = logits > 0
    t = target[:, None].bool()
    inter = (pred & t).flatten(2).sum(-1).float()
    union = (pred | t).flatten(2).sum(-1).float()
    return inter / union.clamp(min=1)


def to_low_res(masks: np.ndarray, predictor: PromptedSam) -> torch.Tensor:
    """``(N, H, W)`` bool masks -> ``(N, L, L)`` float targets in SAM's low-res frame, on the
    predictor's device."""
    t = torch.as_tensor(masks).to(predictor.device).float()[:, None]
    h, w = predictor.transform.get_preprocess_shape(masks.shape[1], masks.shape[2],
                                                    predictor.sam.image_encoder.img_size)
    t = F.interpolate(t, (h, w), mode="bilinear", align_corners=False)
    s = predictor.sam.image_encoder.img_size
    t = F.pad(t, (0, s - w, 0, s - h))
    low = predictor.low_res_size
    return (F.interpolate(t, (low, low), mode="area")[:, 0] > 0.5).float()


def coarse_logits(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A degraded copy of ``mask`` (dilated or eroded, blurred) as signed logits."""
    m = mask.copy()
    k = int(rng.integers(1, 4))
    m = ndimage.binary_dilation(m, iterations=k) if rng.random() < 0.5 else (
        ndimage.binary_erosion(m, iterations=k) if m.sum() > 30 else m)
    soft = ndimage.gaussian_filter(m.astype(np.float32), sigma=float(rng.uniform(0.5, 2.0)))
    return (soft * 2 - 1) * float(rng.uniform(4, 12))


def jitter_box(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)
    side = np.array([box[2] - box[0], box[3] - box[1]] * 2)
    box += np.clip(rng.normal(0, 0.1, 4) * side, -20, 20)
    h, w = mask.shape
    return np.clip(box, 0, [w, h, w, h])


def sample_targets(scene, k: int, part_prob: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Up to ``k`` target masks: whole objects, or (with ``part_prob``) one of their parts."""
    if not scene.objects:
        return []
    out = []
    for oi in rng.permutation(len(scene.objects))[:k]:
        obj = scene.objects[oi]
        parts = [p for p in obj.parts if p.sum() >= 6]
        if len(parts) > 1 and rng.random() < part_prob:
            out.append(parts[rng.integers(len(parts))])
        else:
            out.append(obj.mask)
    return out


def image_loss(predictor: PromptedSam, embedding: torch.Tensor, image_shape, targets,
               rng: np.random.Generator) -> tuple[torch.Tensor, dict]:
    """Loss of one image's targets, each with a randomly chosen prompt kind."""
    original = image_shape
    s = predictor.sam.image_encoder.img_size
    h, w = predictor.transform.get_preprocess_shape(original[0], original[1], s)
    kinds = rng.choice(["box", "point", "mask"], size=len(targets), p=[0.4, 0.45, 0.15])
    total, stats = embedding.new_zeros(()), {}
    for kind in ("box", "point", "mask"):
        idx = [i for i, k in enumerate(kinds) if k == kind]
        if not idx:
            continue
        masks = np.stack([targets[i] for i in idx])
        target = to_low_res(masks, predictor)
        points = boxes = mask_logits = None
        if kind == "box":
            boxes = np.stack([jitter_box(m, rng) for m in masks])
        else:
            pts = []
            for m in masks:
                ys, xs = np.nonzero(m)
                j = rng.integers(len(ys))
                pts.append([xs[j], ys[j]])
            points = np.asarray(pts, dtype=np.float64)
        if kind == "mask":
            coarse = np.stack([coarse_logits(m, rng) for m in masks])
            low = predictor.low_res_size
            t = torch.as_tensor(coarse).to(predictor.device)[:, None]
            t = F.interpolate(t, (h, w), mode="bilinear", align_corners=False)
            t = F.pad(t, (0, s - w, 0, s - h), value=-10.0)
            mask_logits = F.interpolate(t, (low, low), mode="bilinear", align_corners=False)
        pt, bx = predictor.prompt_tensors(original, points_xy=points, boxes_xyxy=boxes)
        multimask = kind == "point"
        logits, iou_pred = predictor.decode_tensors(embedding, pt, bx, mask_logits, None,
                                                    multimask)
        losses = mask_losses(logits, target)
        best = losses.min(dim=1).values if multimask else losses[:, 0]
        iou_loss = F.mse_loss(iou_pred, true_iou(logits.detach(), target))
        total = total + best.sum() + iou_loss * len(idx)
        stats[kind] = float(best.detach().mean())
    return total, stats


def lr_at(step: int, cfg: SamPretrainConfig) -> float:
    """Linear warm-up, then step decay x0.1 at 75% and 90% of the steps."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    factor = 0.1 ** ((step >= 0.75 * cfg.steps) + (step >= 0.9 * cfg.steps))
    return cfg.lr * factor


def train_step(predictor: PromptedSam, optimizer, step: int, cfg: SamPretrainConfig,
               scaler: torch.amp.GradScaler | None = None) -> dict:
    rng = np.random.default_rng([cfg.seed, step])
    scenes = [scene_at(cfg.data_seed, step * cfg.batch_images + i, cfg.size)
              for i in range(cfg.batch_images)]
    x, _, _ = predictor.preprocess([sc.image for sc in scenes])
    emb = predictor.encode_tensors(x)
    total, n, stats = emb.new_zeros(()), 0, {}
    for b, sc in enumerate(scenes):
        targets = sample_targets(sc, cfg.targets_per_image, cfg.part_prob, rng)
        if not targets:
            continue
        loss, st = image_loss(predictor, emb[b: b + 1], sc.image.shape[:2], targets, rng)
        total = total + loss
        n += len(targets)
        for k, v in st.items():
            stats.setdefault(k, []).append(v)
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, cfg)
    loss = total / max(n, 1)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite loss {float(loss)} at step {step}; stopping")
    optimizer.zero_grad(set_to_none=True)
    scaler = scaler or predictor.runtime.grad_scaler()
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(predictor.sam.parameters(), 1.0)
    scaler.step(optimizer)
    scaler.update()
    return {"loss": float(loss.detach()), **{k: float(np.mean(v)) for k, v in stats.items()}}
