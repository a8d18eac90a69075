"""BoxSeg training (seed 000 §3): a CondInst student on boxes, an EMA teacher, the Quality-Aware
Module and Peer-assisted Copy-paste.

Each step, for every image of the batch:

1. the teacher (an EMA of the student, momentum 0.999) sees the plain image and returns its
   pre-NMS candidates (box, IoU-aware box score ``s``, mask);
2. per GT box, the Quality-Aware Module (``quality.py``) ranks candidates by box IoU ``u``,
   fuses the top K masks (eq. 2, K by area, eq. 4) and scores the result (eq. 5);
3. the student sees the image augmented (multi-scale 0.8-1.0 of the input size, horizontal
   flip, colour jitter, grayscale, Gaussian blur); the fused masks are warped by the same
   scale and flip into its frame;
4. Peer-assisted Copy-paste (Algorithm 1) pastes a peer from the memory bank over one of the
   image's objects;
5. the student's loss is CondInst's detection loss with VarifocalNet's IoU-aware score,
   BoxInst's projection and pairwise losses on every GT box, and the quality-weighted dice of
   eq. 1 against the fused masks; then the teacher takes its EMA step.

Fully labelled images (1% / 10%) keep their GT masks as targets (weight 1). Ablations
(seed 000 Tables 4-5): ``qam`` ``off`` (BoxInst: box losses only), ``bpma`` (BoxTeacher's
assignment: the highest-scoring candidate with IoU >= 0.5, weight 1), ``bqr`` (the best-IoU
candidate), ``bqr+qmf`` (fused, weight 1), ``full`` (fused, weight ``w``); ``copy_paste``
``off``, ``random`` (any object from the bank, pasted anywhere) or ``quality`` (objects with
``w > bank_tau`` overlapping no other object, pasted over one of the image's objects).

Choices the paper leaves open, made here: the bank's threshold ``bank_tau`` = 0.5 (= tau_m);
the learner (the object the peer overlaps) is drawn uniformly; the peer's centre is drawn
uniformly inside the learner's box; one peer per image; the teacher runs in eval mode.
The pairwise loss ramps up linearly over the first ``pairwise_warmup`` of the schedule, as
BoxInst's does over its first 10,000 of 90,000 iterations: without it, the tiny student's
masks saturated to one label everywhere within ten steps (pairwise loss ~0, projection loss
stuck) and never recovered.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from pseudolabel.boxseg.copy_paste import MemoryBank, paste_peer
from pseudolabel.boxseg.losses import color_similarity, pairwise_loss, projection_loss
from pseudolabel.boxseg.quality import (
    AREA_LARGE,
    AREA_SMALL,
    adaptive_k,
    box_quality_ranking,
    fuse_candidates,
    quality_weighted_dice,
)
from pseudolabel.data.coco import load_coco
from pseudolabel.data.images import load_image, resolve_image_path
from pseudolabel.data.masks import mask_to_rle
from pseudolabel.pretrain.loop import train
from pseudolabel.runtime import CPU, Runtime
from pseudolabel.students.copy_paste import MODES as PASTE_MODES
from pseudolabel.students.data import AnnotationIndex, resize_for_inference
from pseudolabel.students.loader import global_batch, image_seed

QAM_MODES = ("off", "bpma", "bqr", "bqr+qmf", "full")
COPY_PASTE_MODES = PASTE_MODES


@dataclass(frozen=True)
class BoxSegConfig:
    qam: str = "full"
    copy_paste: str = "quality"
    adaptive_k: bool = True
    k: int = 10  # fixed K (adaptive_k=False); K_max of eq. 4 otherwise
    tau: float = 0.5  # tau_m
    ema: float = 0.999
    bank_size: int = 80  # H
    bank_tau: float = 0.5
    candidates: int = 100
    scale_min: float = 0.8  # 640-800 of 800 px
    pairwise_weight: float = 1.0
    pairwise_warmup: float = 10_000 / 90_000  # share of the schedule (BoxInst: 10k of 90k)
    mask_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.qam not in QAM_MODES:
            raise ValueError(f"--qam {self.qam!r}: expected one of {', '.join(QAM_MODES)}")
        if self.copy_paste not in COPY_PASTE_MODES:
            raise ValueError(f"--copy-paste {self.copy_paste!r}: expected one of "
                             f"{', '.join(COPY_PASTE_MODES)}")


# -- teacher targets ------------------------------------------------------------------------
def _box_grid_mask(box_xyxy, grid: int, stride: int) -> np.ndarray:
    """Cells of a ``grid x grid`` map (cell centres at ``stride * i + stride / 2``) inside a
    box."""
    c = np.arange(grid) * stride + stride / 2
    x0, y0, x1, y1 = box_xyxy
    return ((c[:, None] >= y0) & (c[:, None] < y1)) & ((c[None, :] >= x0) & (c[None, :] < x1))


def teacher_targets(cand: dict, boxes_xyxy: np.ndarray, labels: np.ndarray, cfg: BoxSegConfig,
                    area_scale: float, stride: int = 4) -> tuple[np.ndarray, np.ndarray,
                                                                 np.ndarray]:
    """Fused masks ``(N, G, G)`` on the teacher's stride-4 grid, their weights ``(N,)`` and
    mean box scores ``s_hat`` ``(N,)`` for one image's GT boxes (teacher frame)."""
    grid = cand["mask_logits"].shape[-1]
    n = len(boxes_xyxy)
    fused = np.zeros((n, grid, grid), np.float32)
    weights, s_hat = np.zeros(n, np.float32), np.zeros(n, np.float32)
    if cfg.qam == "off" or n == 0:
        return fused, weights, s_hat
    probs = cand["mask_logits"].sigmoid().cpu().numpy()
    areas = (boxes_xyxy[:, 2] - boxes_xyxy[:, 0]) * (boxes_xyxy[:, 3] - boxes_xyxy[:, 1])
    if cfg.qam in ("bqr+qmf", "full"):
        ks = adaptive_k(areas, k_max=cfg.k, area_small=AREA_SMALL * area_scale,
                        area_large=AREA_LARGE * area_scale) if cfg.adaptive_k \
            else np.full(n, cfg.k)
    else:
        ks = np.ones(n, dtype=np.int64)
    cand_boxes = cand["boxes"].cpu()
    for i in range(n):
        scores = cand["scores"][:, int(labels[i])].cpu()
        box_mask = _box_grid_mask(boxes_xyxy[i], grid, stride)
        if cfg.qam == "bpma":  # BoxTeacher: the best score among IoU >= 0.5
            idx, ious = box_quality_ranking(cand_boxes, torch.as_tensor(boxes_xyxy[i]),
                                            len(cand_boxes))
            ok = ious >= 0.5
            if not ok.any():
                continue
            best = idx[ok][scores[idx[ok]].argmax()]
            fused[i], weights[i] = probs[int(best)], 1.0
            s_hat[i] = float(scores[best])
            continue
        idx, ious = box_quality_ranking(cand_boxes, torch.as_tensor(boxes_xyxy[i]), int(ks[i]))
        f, w = fuse_candidates(probs[idx.numpy()], scores[idx].numpy(), ious.numpy(), box_mask,
                               tau=cfg.tau)
        valid = scores[idx] > cfg.tau
        s_hat[i] = float(scores[idx][valid].mean()) if valid.any() else 0.0
        fused[i] = f
        weights[i] = w if cfg.qam == "full" else float(w > 0)
    return fused, weights, s_hat


def _masks_to_grid(masks: np.ndarray, factor: float, size: int) -> np.ndarray:
    """Image-size masks ``(N, H, W)`` -> the teacher's stride-4 grid ``(N, size/4, size/4)``
    (scaled by ``factor`` onto the top-left of a ``size`` canvas, area-averaged)."""
    nh, nw = (max(1, round(v * factor)) for v in masks.shape[1:])
    small = F.interpolate(torch.as_tensor(masks)[None].float(), (nh, nw), mode="area")[0]
    canvas = torch.zeros((len(masks), size, size))
    canvas[:, :nh, :nw] = small[:, :size, :size]
    return F.avg_pool2d(canvas[None], 4)[0].numpy()


def _grid_to_frame(grid_masks: np.ndarray, size: int, scale: float, flip: bool) -> np.ndarray:
    """Teacher-grid masks ``(N, G, G)`` -> ``(N, size, size)`` in a student frame scaled by
    ``scale`` (top-left anchored, padded) and flipped."""
    if len(grid_masks) == 0:
        return np.zeros((0, size, size), np.float32)
    t = torch.as_tensor(grid_masks)[None]
    full = F.interpolate(t, (size, size), mode="bilinear", align_corners=False)
    inner = max(1, round(size * scale))
    out = torch.zeros((1, len(grid_masks), size, size))
    out[..., :inner, :inner] = F.interpolate(full, (inner, inner), mode="bilinear",
                                             align_corners=False)
    if flip:
        out = out.flip(-1)
    return out[0].numpy()


# -- student input -------------------------------------------------------------------------
def photometric(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour jitter (brightness, contrast, saturation +-40%), grayscale (20%), Gaussian
    blur (50%, sigma 0.1-2) on ``(H, W, 3)`` uint8."""
    x = pixels.astype(np.float32)
    x = x * rng.uniform(0.6, 1.4)
    mean = x.mean()
    x = (x - mean) * rng.uniform(0.6, 1.4) + mean
    grey = x.mean(2, keepdims=True)
    x = (x - grey) * rng.uniform(0.6, 1.4) + grey
    if rng.random() < 0.2:
        x = np.repeat(x.mean(2, keepdims=True), 3, axis=2)
    if rng.random() < 0.5:
        x = ndimage.gaussian_filter(x, sigma=(rng.uniform(0.1, 2.0),) * 2 + (0,))
    return np.clip(x, 0, 255).astype(np.uint8)


def student_frame(pixels: np.ndarray, size: int, scale: float, flip: bool
                  ) -> tuple[torch.Tensor, np.ndarray]:
    """The augmented image on a ``size x size`` canvas (content ``scale`` of it, top-left,
    flipped) and its uint8 RGB canvas (for the colour affinities)."""
    x, _, (nh, nw) = resize_for_inference(pixels, max(1, round(size * scale)))
    canvas = torch.zeros((3, size, size))
    canvas[:, : x.shape[1], : x.shape[2]] = x
    rgb = np.zeros((size, size, 3), np.uint8)
    small = F.interpolate(torch.as_tensor(pixels).permute(2, 0, 1)[None].float(), (nh, nw),
                          mode="bilinear", align_corners=False, antialias=True)[0]
    rgb[:nh, :nw] = small.permute(1, 2, 0).clamp(0, 255).byte().numpy()
    if flip:
        canvas, rgb = canvas.flip(-1), rgb[:, ::-1].copy()
    return canvas, rgb


def frame_boxes(boxes_xyxy: np.ndarray, factor: float, size: int, flip: bool) -> np.ndarray:
    b = np.asarray(boxes_xyxy, dtype=np.float32) * factor
    if flip:
        b = np.stack([size - b[:, 2], b[:, 1], size - b[:, 0], b[:, 3]], axis=1)
    return b.reshape(-1, 4)


# -- the loss --------------------------------------------------------------------------------
def boxseg_mask_loss(weights: tuple[float, float]):
    """CondInst's mask-loss hook: projection + pairwise on every positive's GT box, and the
    quality-weighted dice (eq. 1) against its fused target."""
    pairwise_weight, mask_weight = weights

    def loss(model, rows, par, xy, mask_feats, targets, zero) -> dict:
        if not rows:
            return {"loss_proj": zero, "loss_pairwise": zero, "loss_fused": zero}
        proj, pair, masks, fused, wts = [], [], [], [], []
        for b, tgt, logits in model.stride4_masks(rows, par, xy, mask_feats):
            t = targets[b]
            g = logits.shape[-1]
            box_masks = t["box_masks"][tgt][:, :g, :g]
            proj.append(projection_loss(logits, box_masks))
            pair.append(pairwise_loss(logits, t["similarity"][:, :g, :g], box_masks))
            masks.append(logits)
            fused.append(t["fused"][tgt][:, 2::4, 2::4][:, :g, :g])
            wts.append(t["weights"][tgt])
        return {"loss_proj": torch.cat(proj).mean(),
                "loss_pairwise": pairwise_weight * torch.cat(pair).mean(),
                "loss_fused": mask_weight * quality_weighted_dice(
                    torch.cat(masks), torch.cat(fused), torch.cat(wts))}

    return loss


def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``teacher = m * teacher + (1 - m) * student`` for parameters; buffers copied."""
    with torch.no_grad():
        for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
            t.mul_(momentum).add_(s.detach(), alpha=1 - momentum)
        for t, s in zip(teacher.buffers(), student.buffers(), strict=True):
            t.copy_(s)


# -- the stage -------------------------------------------------------------------------------
class BoxSegRun:
    """Student, teacher, memory bank and data of one BoxSeg training run."""

    def __init__(self, train_path, image_root, scfg, bcfg: BoxSegConfig, runtime: Runtime):
        from pseudolabel.stages.train_student import build_student

        coco = load_coco(train_path)
        self.index = AnnotationIndex(coco, box_only=True)
        self.area_scale = float(coco.info.get("area_scale", 1.0) or 1.0)
        self.image_root = Path(image_root)
        self.scfg, self.bcfg, self.runtime = scfg, bcfg, runtime
        self.student = build_student(scfg, len(self.index.category_ids)).to(runtime.device)
        self.teacher = copy.deepcopy(self.student).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.bank = MemoryBank(bcfg.bank_size)
        self.both = nn.ModuleDict({"student": self.student, "teacher": self.teacher})

    def image(self, i: int):
        """Pixels, GT boxes (xyxy, image px), class indices, GT masks and which rows have one."""
        pixels = load_image(resolve_image_path(self.image_root, self.index.file_name(i)))
        masks, labels, _ = self.index.instances(i)
        a, b = self.index.starts[i], self.index.starts[i + 1]
        xywh = self.index.boxes_xywh[a:b]
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        return pixels, boxes, labels, masks, self.index.has_mask[a:b], self.index.ann_ids[a:b]

    def step_targets(self, step: int):
        """Student inputs and targets of ``step`` (one process: the whole global batch)."""
        size = self.scfg.size
        ids = global_batch(len(self.index), step, self.scfg.batch, self.scfg.seed)
        plain, per_image = [], []
        for pos, i in enumerate(ids):
            rng = np.random.default_rng(image_seed(self.scfg.seed, step, pos))
            pixels, boxes, labels, masks, has_mask, _ = self.image(i)
            x, _, (nh, nw) = resize_for_inference(pixels, size)
            plain.append(x)
            per_image.append((rng, pixels, boxes, labels, masks, has_mask,
                              nh / pixels.shape[0]))
        with self.runtime.autocast():
            cands = self.teacher.candidates(torch.stack(plain).to(self.runtime.device),
                                            self.bcfg.candidates)
        images, targets = [], []
        for (rng, pixels, boxes, labels, masks, has_mask, factor), cand in zip(
                per_image, cands, strict=True):
            tb = frame_boxes(boxes, factor, size, False)
            fused, weights, _ = teacher_targets(cand, tb, labels, self.bcfg, self.area_scale)
            if has_mask.any():  # fully labelled: the GT mask is the target
                fused[has_mask] = _masks_to_grid(masks[has_mask], factor, size)
                weights[has_mask] = 1.0
            self.bank.collect(pixels=pixels, boxes=boxes, labels=labels,
                              fused=fused, weights=weights, factor=factor,
                              mode=self.bcfg.copy_paste, tau=self.bcfg.bank_tau)
            scale = rng.uniform(self.bcfg.scale_min, 1.0)
            flip = bool(rng.random() < 0.5)
            x, rgb = student_frame(photometric(pixels, rng), size, scale, flip)
            sb = frame_boxes(boxes, factor * scale, size, flip)
            sf = _grid_to_frame(fused, size, scale, flip)
            x, rgb, sb, labels_s, sf, sw = paste_peer(
                self.bank, x, rgb, sb, labels, sf, weights.copy(), rng, scale,
                self.bcfg.copy_paste)
            images.append(x)
            targets.append(self._target(sb, labels_s, sf, sw, rgb))
        return torch.stack(images), targets

    def _target(self, boxes, labels, fused, weights, rgb) -> dict:
        dev, size = self.runtime.device, self.scfg.size
        grid = size // 4
        box_masks = np.stack([_box_grid_mask(b, grid, 4) for b in boxes]) if len(boxes) \
            else np.zeros((0, grid, grid), bool)
        small = F.interpolate(torch.as_tensor(rgb).permute(2, 0, 1)[None].float(),
                              (grid, grid), mode="area")[0].permute(1, 2, 0)
        return {"boxes": torch.as_tensor(boxes, dtype=torch.float32).to(dev),
                "labels": torch.as_tensor(labels, dtype=torch.long).to(dev),
                "fused": torch.as_tensor(fused, dtype=torch.float32).to(dev),
                "weights": torch.as_tensor(weights, dtype=torch.float32).to(dev),
                "box_masks": torch.as_tensor(box_masks).to(dev),
                "similarity": color_similarity(small.clamp(0, 255).byte().numpy()).to(dev)}


def train_boxseg(train_path, image_root, out_dir, scfg, bcfg: BoxSegConfig, *,
                 progress: bool = True, stop_after: int | None = None,
                 runtime: Runtime = CPU) -> dict:
    """Train (or resume) a BoxSeg CondInst student; checkpoint (student, teacher, memory bank)
    in ``out_dir``; ``state.pt``'s ``student.*`` weights are what evaluation loads."""
    from pseudolabel.stages.train_student import _optimizer

    out_dir = Path(out_dir)
    if scfg.arch != "condinst":
        raise ValueError("--boxseg trains a CondInst student (--student condinst)")
    run = BoxSegRun(train_path, image_root, scfg, bcfg, runtime)
    settings = {"config": asdict(scfg), "boxseg": asdict(bcfg), "train": str(train_path),
                "categories": run.index.category_ids, "quality_weighted": False}
    path = out_dir / "settings.json"
    if path.is_file() and json.loads(path.read_text()) != settings:
        raise ValueError(f"{out_dir}: holds a student trained with other settings; use "
                         "another output folder or delete it")
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2) + "\n")
    run.student.train()
    opt = _optimizer(run.student, scfg)
    warmup = max(bcfg.pairwise_warmup * scfg.steps, 1.0)

    def step_fn(step: int) -> dict:
        loss_fn = boxseg_mask_loss((bcfg.pairwise_weight * min(step / warmup, 1.0),
                                    bcfg.mask_weight))
        torch.manual_seed(scfg.seed * 1_000_003 + step)
        images, targets = run.step_targets(step)
        factor = (1 - step / scfg.steps) ** scfg.poly_power
        for g in opt.param_groups:
            g["lr"] = scfg.lr * factor * g["lr_factor"]
        with runtime.autocast():
            heads = run.student(images.to(runtime.device))
        parts = run.student.losses_from_heads(heads, targets, iou_scores=True,
                                              mask_loss=loss_fn)
        loss = parts["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite BoxSeg loss {float(loss)} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(run.student.parameters(), scfg.clip_norm)
        opt.step()
        ema_update(run.teacher, run.student, bcfg.ema)
        return {k: float(v.detach()) for k, v in parts.items()} | {"bank": len(run.bank)}

    torch.manual_seed(scfg.seed)
    t0 = time.perf_counter()
    history = train(run.both, opt, step_fn, steps=scfg.steps, state_path=out_dir / "state.pt",
                    every=scfg.save_every, desc="BoxSeg student", stop_after=stop_after,
                    progress=progress, extra=(run.bank.state, run.bank.load))
    return {"out": str(out_dir), "steps": len(history), "seconds": time.perf_counter() - t0,
            "final_loss": history[-1]["loss"] if history else None, "run": run}


@torch.no_grad()
def export_pseudo_masks(run: BoxSegRun, train_path, out_path, progress: bool = True) -> dict:
    """The teacher's fused masks of every GT box of the training images as a COCO pseudo-label
    file: ``score`` = ``w`` (eq. 5), ``quality.box_score`` = ``s_hat``."""
    from tqdm import tqdm

    from pseudolabel.data.coco import CocoStreamWriter

    coco = load_coco(train_path)
    writer = CocoStreamWriter(Path(out_path), coco, {**coco.info, "pseudolabel_boxseg": {
        "boxseg": asdict(run.bcfg), "reference": "seed 000 (BoxSeg), eq. 2 and 5"}})
    size, next_id, n = run.scfg.size, 1, 0
    for i in tqdm(range(len(run.index)), desc="export fused masks", disable=not progress):
        pixels, boxes, labels, _, _, ann_ids = run.image(i)
        x, _, (nh, nw) = resize_for_inference(pixels, size)
        cand = run.teacher.candidates(x[None].to(run.runtime.device), run.bcfg.candidates)[0]
        factor = nh / pixels.shape[0]
        fused, weights, s_hat = teacher_targets(cand, frame_boxes(boxes, factor, size, False),
                                                labels, run.bcfg, run.area_scale)
        if not len(boxes):
            continue
        up = F.interpolate(torch.as_tensor(fused)[None], (size, size), mode="bilinear",
                           align_corners=False)[0, :, :nh, :nw]
        full = F.interpolate(up[None], pixels.shape[:2], mode="bilinear",
                             align_corners=False)[0].numpy() > 0.5
        image_id = int(run.index.ids[i])
        for k in range(len(boxes)):
            if weights[k] <= 0 or not full[k].any():
                continue
            x0, y0, x1, y1 = (float(v) for v in boxes[k])
            writer.write({"id": next_id, "image_id": image_id,
                          "category_id": int(run.index.category_ids[int(labels[k])]),
                          "segmentation": mask_to_rle(full[k]), "bbox": [x0, y0, x1 - x0,
                                                                         y1 - y0],
                          "area": float(full[k].sum()), "iscrowd": 0,
                          "score": round(float(weights[k]), 6), "source": "pseudo",
                          "quality": {"w": round(float(weights[k]), 6),
                                      "box_score": round(float(s_hat[k]), 6),
                                      "teacher": "boxseg"},
                          "weak": {"id": int(ann_ids[k]), "bbox": [x0, y0, x1 - x0,
                                                                     y1 - y0]}})
            next_id += 1
            n += 1
    writer.close()
    return {"out": str(out_path), "pseudo_masks": n}

