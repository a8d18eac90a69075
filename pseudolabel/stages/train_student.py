"""``pseudolabel train-student``: a student on GT + pseudo-masks (seed 001 §4.1).

Mask2Former (seed 001's student) or CondInst (seed 000's), both trained by the same loop.

The student trains on a run's ``pseudo/<W>.json`` (GT masks on the fully labelled images,
pseudo-masks elsewhere) or, with ``--full``, on every GT mask (Table 2's 100% row), then is
evaluated on the validation set (mask AP and boundary AP). Training is resumable (fixed-key
checkpoints every ``save_every`` steps; re-running the command continues), stops on a
non-finite loss, and derives every random draw from the step number.

Optimiser as in Mask2Former: AdamW, lr 1e-4, weight decay 0.05, backbone lr x 0.1, poly
schedule (power 0.9), the whole model's gradient norm clipped at 0.01. CondInst uses the same
recipe here (its paper trains with SGD, lr 0.01), so both students differ only in the model.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from pseudolabel.data.coco import load_coco
from pseudolabel.data.images import load_image, resolve_image_path
from pseudolabel.data.masks import masks_to_boxes_xyxy, masks_to_rles
from pseudolabel.evaluation.coco_eval import evaluate_masks
from pseudolabel.pretrain.loop import load_state, train
from pseudolabel.runtime import CPU, Runtime
from pseudolabel.students.condinst import CondInst
from pseudolabel.students.data import InstanceData, large_scale_jitter, resize_for_inference
from pseudolabel.students.mask2former import (
    build_mask2former,
    instance_inference,
    use_quality_weights,
)


@dataclass(frozen=True)
class StudentConfig:
    """Mask2Former training. Defaults: the CPU-sized synthetic recipe; ``configs/coco.yaml``
    holds the paper's (50 epochs, batch 32, LSJ 0.1-2.0 at 1024 px, 100 queries)."""

    arch: str = "mask2former"  # or "condinst"
    preset: str = "tiny"
    steps: int = 600
    batch: int = 8
    lr: float = 3e-4  # tiny preset from scratch: 3e-4 beat 1e-4 (loss 28.3 vs 33.8 at 600)
    weight_decay: float = 0.05
    backbone_lr_factor: float = 1.0  # 0.1 protects a pre-trained backbone; this one is not
    poly_power: float = 0.9
    clip_norm: float = 0.01
    size: int = 160
    scale_min: float = 0.5
    scale_max: float = 1.5
    num_queries: int | None = None
    decoder_layers: int | None = None
    num_points: int | None = None
    topk: int = 50
    save_every: int = 100
    seed: int = 0


def _batch(data: InstanceData, step: int, cfg: StudentConfig) -> list:
    """The step's images (a seeded permutation per epoch, consecutive slices) after LSJ."""
    per_epoch = max(1, len(data) // cfg.batch)
    perm = np.random.default_rng([cfg.seed, 1, step // per_epoch]).permutation(len(data))
    start = (step % per_epoch) * cfg.batch
    rng = np.random.default_rng([cfg.seed, 0, step])
    return [large_scale_jitter(*data.load(int(perm[(start + i) % len(data)])), rng, cfg.size,
                               (cfg.scale_min, cfg.scale_max)) for i in range(cfg.batch)]


ARCHS = ("mask2former", "condinst")


def build_student(cfg: StudentConfig, num_labels: int) -> torch.nn.Module:
    if cfg.arch == "mask2former":
        return build_mask2former(cfg.preset, num_labels, num_queries=cfg.num_queries,
                                 decoder_layers=cfg.decoder_layers, num_points=cfg.num_points)
    if cfg.arch == "condinst":
        torch.manual_seed(0)
        return CondInst(num_labels, cfg.preset)
    raise ValueError(f"unknown student {cfg.arch!r}; expected one of {ARCHS}")


def _student_loss(model, samples: list, cfg: StudentConfig, runtime: Runtime) -> torch.Tensor:
    """The batch's loss: the network under autocast, the loss itself in fp32."""
    dev = runtime.device
    pixels = torch.stack([s.pixels for s in samples]).to(dev, non_blocking=True)
    if cfg.arch == "condinst":
        targets = [{"boxes": torch.as_tensor(masks_to_boxes_xyxy(s.masks.bool().numpy()))
                    .float().to(dev), "labels": s.labels.to(dev), "masks": s.masks.to(dev),
                    "weights": s.weights.to(dev)} for s in samples]
        with runtime.autocast():
            heads = model(pixels)
        return model.losses_from_heads(heads, targets)["loss"]
    valid = torch.stack([s.valid for s in samples]).long().to(dev)
    with runtime.autocast():
        out = model(pixel_values=pixels, pixel_mask=valid, output_auxiliary_logits=True)
    aux = [{k: v.float() for k, v in a.items()} for a in out.auxiliary_logits]
    losses = model.get_loss_dict(out.masks_queries_logits.float(),
                                 out.class_queries_logits.float(),
                                 [s.masks.to(dev) for s in samples],
                                 [s.labels.to(dev) for s in samples], aux)
    return model.get_loss(losses)


def _optimizer(model, cfg: StudentConfig) -> torch.optim.Optimizer:
    backbone = [p for n, p in model.named_parameters()
                if ".pixel_level_module.encoder." in n or n.startswith("body.")]
    ids = {id(p) for p in backbone}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return torch.optim.AdamW([{"params": backbone, "lr_factor": cfg.backbone_lr_factor},
                              {"params": rest, "lr_factor": 1.0}],
                             lr=cfg.lr, weight_decay=cfg.weight_decay)


def train_student(train_path: str | Path, image_root: str | Path, out_dir: str | Path,
                  cfg: StudentConfig = StudentConfig(), *, quality_weighted: bool = False,
                  progress: bool = True, stop_after: int | None = None,
                  runtime: Runtime = CPU) -> dict:
    """Train (or resume) a student (``cfg.arch``) on ``train_path``; checkpoint in ``out_dir``.

    ``quality_weighted`` scales each mask's loss by its annotation's ``score`` (the teacher's
    predicted IoU of a pseudo-mask; GT masks, which have none, weigh 1). The model trains on
    ``runtime.device`` under its autocast (fp16 with a gradient scaler).
    """
    out_dir = Path(out_dir)
    data = InstanceData(train_path, image_root, weight_key="score" if quality_weighted else None)
    model = build_student(cfg, len(data.coco.category_ids)).to(runtime.device)
    # Mask2Former takes the weights through its criterion; CondInst reads them from targets
    criterion = use_quality_weights(model) if quality_weighted and cfg.arch == "mask2former" \
        else None
    model.train()
    opt = _optimizer(model, cfg)
    scaler = runtime.grad_scaler()
    settings = {"config": asdict(cfg), "train": str(train_path),
                "categories": data.coco.category_ids, "quality_weighted": quality_weighted}
    settings_path = out_dir / "settings.json"
    if settings_path.is_file() and json.loads(settings_path.read_text()) != settings:
        raise ValueError(f"{out_dir}: holds a student trained with other settings; use "
                         "another output folder or delete it")
    out_dir.mkdir(parents=True, exist_ok=True)
    settings_path.write_text(json.dumps(settings, indent=2) + "\n")

    def step_fn(step: int) -> dict:
        # the loss samples points with torch's generator: seed it from the step so a resumed
        # run draws what an uninterrupted one would
        torch.manual_seed(cfg.seed * 1_000_003 + step)
        samples = _batch(data, step, cfg)
        if criterion is not None:  # seed 000 eq. 1: each mask's loss times its score
            criterion.instance_weights = [smp.weights.to(runtime.device) for smp in samples]
        factor = (1 - step / cfg.steps) ** cfg.poly_power
        for g in opt.param_groups:
            g["lr"] = cfg.lr * factor * g["lr_factor"]
        loss = _student_loss(model, samples, cfg, runtime)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite student loss {float(loss)} at step {step}; "
                                     "stopping (lower the learning rate or check the labels)")
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)  # clip the true gradients
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
        scaler.step(opt)
        scaler.update()
        return {"loss": float(loss.detach())}

    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    history = train(model, opt, step_fn, steps=cfg.steps, state_path=out_dir / "state.pt",
                    every=cfg.save_every, desc="student", stop_after=stop_after,
                    progress=progress, scaler=scaler)
    return {"out": str(out_dir), "steps": len(history), "seconds": time.perf_counter() - t0,
            "final_loss": history[-1]["loss"] if history else None}


def load_student(out_dir: str | Path, num_labels: int, runtime: Runtime = CPU
                 ) -> torch.nn.Module:
    """The trained student of ``out_dir`` (its ``state.pt``), in eval mode, on the device."""
    out_dir = Path(out_dir)
    settings = json.loads((out_dir / "settings.json").read_text())
    cfg = StudentConfig(**settings["config"])
    model = build_student(cfg, num_labels).to(runtime.device)
    load_state(out_dir / "state.pt", model, _optimizer(model, cfg))
    return model.eval()


@torch.no_grad()
def predict(model, images: list[dict], image_root: str | Path, cfg: StudentConfig,
            categories: list[int], progress: bool = True, runtime: Runtime = CPU) -> list[dict]:
    """COCO results (RLE) of ``model`` on ``images`` (COCO image dicts)."""
    results = []
    dev = runtime.device
    for img in tqdm(images, desc="student predict", unit="img", disable=not progress):
        pixels = load_image(resolve_image_path(image_root, img["file_name"]))
        x, valid, vsize = resize_for_inference(pixels, cfg.size)
        x, valid = x.to(dev), valid.to(dev)
        if cfg.arch == "condinst":
            with runtime.autocast():
                det = model.detect(x[None], topk=cfg.topk)[0]
            logits = F.interpolate(det["mask_logits"][None], scale_factor=4, mode="bilinear",
                                   align_corners=False)[0][:, : vsize[0], : vsize[1]]
            logits = F.interpolate(logits[None], pixels.shape[:2], mode="bilinear",
                                   align_corners=False)[0]
            masks, scores, labels = logits > 0, det["scores"], det["labels"]
        else:
            with runtime.autocast():
                out = model(pixel_values=x[None], pixel_mask=valid[None].long())
            masks, scores, labels = instance_inference(
                out.class_queries_logits[0].float(), out.masks_queries_logits[0].float(), vsize,
                cfg.size, pixels.shape[:2], cfg.topk)
        masks, scores, labels = masks.cpu(), scores.cpu(), labels.cpu()  # once per image
        keep = masks.flatten(1).any(1)
        for rle, s, c in zip(masks_to_rles(masks[keep].numpy()), scores[keep], labels[keep],
                             strict=True):
            results.append({"image_id": img["id"], "category_id": int(categories[int(c)]),
                            "segmentation": rle, "score": round(float(s), 6)})
    return results


def evaluate_student(out_dir: str | Path, val_path: str | Path, image_root: str | Path,
                     progress: bool = True, full_metrics: str | Path | None = None,
                     runtime: Runtime = CPU) -> dict:
    """Mask AP / boundary AP of the student in ``out_dir`` on ``val_path``; writes
    ``metrics.json`` there. With ``full_metrics`` (the fully supervised student's
    ``metrics.json``), also AP as a percentage of it."""
    out_dir = Path(out_dir)
    settings = json.loads((out_dir / "settings.json").read_text())
    cfg = StudentConfig(**settings["config"])
    categories = settings["categories"]
    model = load_student(out_dir, len(categories), runtime)
    val = load_coco(val_path)
    preds = predict(model, val.images, image_root, cfg, categories, progress, runtime)
    result = evaluate_masks(val, preds)
    metrics = {"train": settings["train"], "val": str(val_path), "segm": result["segm"],
               "boundary": result["boundary"], "num_predictions": len(preds)}
    if full_metrics is not None and Path(full_metrics).is_file():
        full = json.loads(Path(full_metrics).read_text())["segm"]["AP"]
        metrics["AP_percent_of_full"] = round(100 * result["segm"]["AP"] / full, 2) \
            if full > 0 else None
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
