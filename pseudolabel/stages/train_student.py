"""``pseudolabel train-student``: a student on GT + pseudo-masks (seed 001 §4.1).

Mask2Former (seed 001's student) or CondInst (seed 000's), both trained by the same loop.

The student trains on a run's ``pseudo/<W>.json`` (GT masks on the fully labelled images,
pseudo-masks elsewhere) or, with ``--full``, on every GT mask (Table 2's 100% row), then is
evaluated on the validation set (mask AP and boundary AP). Training is resumable (fixed-key
checkpoints every ``save_every`` steps; re-running the command continues), stops on a
non-finite loss, and derives every random draw from the step number.

Under ``torchrun`` the model is wrapped in DistributedDataParallel; every rank takes its share
of each global batch (``pseudolabel.students.loader``) and the losses normalise by counts
averaged over ranks, so two ranks reach the weights one process reaches with the same global
batch. Only rank 0 writes checkpoints, history and metrics. Images are prepared in
``DataLoader`` workers. Evaluation splits the validation images across ranks, predicts in
batches, and gathers the results on rank 0.

Optimiser as in Mask2Former: AdamW, lr 1e-4, weight decay 0.05, backbone lr x 0.1 (only for a
pre-trained backbone, ``backbone_checkpoint``), poly schedule (power 0.9), the whole model's
gradient norm clipped at 0.01. CondInst uses the same recipe here (its paper trains with SGD,
lr 0.01), so both students differ only in the model.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from pseudolabel.data.coco import load_coco
from pseudolabel.data.images import load_image, resolve_image_path
from pseudolabel.data.masks import masks_to_boxes_xyxy, masks_to_rles
from pseudolabel.evaluation.coco_eval import evaluate_masks
from pseudolabel.pretrain.loop import load_state, train
from pseudolabel.runtime import CPU, Runtime
from pseudolabel.students.condinst import CondInst
from pseudolabel.students.copy_paste import PeerPool
from pseudolabel.students.data import InstanceData, resize_for_inference
from pseudolabel.students.loader import StepBatches, step_loader
from pseudolabel.students.mask2former import (
    build_mask2former,
    instance_inference,
    use_student_loss,
)
from pseudolabel.students.norm import freeze_batch_norm, sync_batch_norm


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
    backbone_lr_factor: float = 0.1  # the paper's; applied only with backbone_checkpoint
    backbone_checkpoint: str | None = None  # ImageNet ResNet file or folder (backbones.py)
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
    eval_batch: int = 8
    seed: int = 0


ARCHS = ("mask2former", "condinst")


def build_student(cfg: StudentConfig, num_labels: int, pretrained: bool = True
                  ) -> torch.nn.Module:
    """The student of ``cfg`` (random init from ``cfg.seed``; the backbone's ImageNet weights
    when ``backbone_checkpoint`` is set and ``pretrained``: a checkpoint will overwrite them)."""
    backbone = cfg.backbone_checkpoint if pretrained else None
    if cfg.arch == "mask2former":
        model = build_mask2former(cfg.preset, num_labels, num_queries=cfg.num_queries,
                                  decoder_layers=cfg.decoder_layers,
                                  num_points=cfg.num_points, backbone=backbone, seed=cfg.seed)
        use_student_loss(model)
        body = model.model.pixel_level_module.encoder
    elif cfg.arch == "condinst":
        torch.manual_seed(cfg.seed)
        model = CondInst(num_labels, cfg.preset, backbone=backbone)
        body = model.body
    else:
        raise ValueError(f"unknown student {cfg.arch!r}; expected one of {ARCHS}")
    if cfg.backbone_checkpoint:  # an ImageNet backbone keeps its BN (detectron2's FrozenBN)
        freeze_batch_norm(body)
    return model


def _student_loss(model, module, samples: list, seeds: list[int], cfg: StudentConfig,
                  runtime: Runtime) -> torch.Tensor:
    """The batch's loss: the network (``model``, DDP-wrapped or not) under autocast, the loss
    itself in fp32 (``module``: the unwrapped model)."""
    dev = runtime.device
    pixels = torch.stack([s.pixels for s in samples]).to(dev, non_blocking=True)
    masks = [s.masks.to(dev, non_blocking=True).float() for s in samples]
    labels = [s.labels.to(dev) for s in samples]
    if cfg.arch == "condinst":
        targets = [{"boxes": torch.as_tensor(masks_to_boxes_xyxy(s.masks.numpy()))
                    .float().to(dev), "labels": lab, "masks": m, "weights": s.weights.to(dev)}
                   for s, m, lab in zip(samples, masks, labels, strict=True)]
        with runtime.autocast():
            heads = model(pixels)
        return module.losses_from_heads(heads, targets)["loss"]
    valid = torch.stack([s.valid for s in samples]).long().to(dev)
    with runtime.autocast():
        out = model(pixel_values=pixels, pixel_mask=valid, output_auxiliary_logits=True)
    module.criterion.image_seeds = seeds
    aux = [{k: v.float() for k, v in a.items()} for a in out.auxiliary_logits]
    losses = module.get_loss_dict(out.masks_queries_logits.float(),
                                  out.class_queries_logits.float(), masks, labels, aux)
    return module.get_loss(losses)


def student_folder(name: str, arch: str, seed: int = 0, suffix: str = "") -> str:
    """Folder of a student under ``<run_dir>/student``: ``<name>-<arch>[<suffix>][-seedN]``
    (``name`` the weak setting with ``+`` as ``_``, or ``full``; ``suffix`` a variant such
    as ``-quality``). Seed 0 has no seed suffix."""
    return f"{name.replace('+', '_')}-{arch}{suffix}" + (f"-seed{seed}" if seed else "")


def percent_of_full(ap: float, full_ap: float) -> float | None:
    """A student's mask AP as a percentage of the fully supervised student's (seed 001
    Table 2); None when the full student scored 0."""
    return round(100 * ap / full_ap, 2) if full_ap > 0 else None


def _optimizer(model, cfg: StudentConfig) -> torch.optim.Optimizer:
    factor = cfg.backbone_lr_factor if cfg.backbone_checkpoint else 1.0
    backbone = [p for n, p in model.named_parameters()
                if ".pixel_level_module.encoder." in n or n.startswith("body.")]
    ids = {id(p) for p in backbone}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return torch.optim.AdamW([{"params": backbone, "lr_factor": factor},
                              {"params": rest, "lr_factor": 1.0}],
                             lr=cfg.lr, weight_decay=cfg.weight_decay)


def _check_settings(out_dir: Path, settings: dict, runtime: Runtime) -> None:
    path = out_dir / "settings.json"
    if path.is_file() and json.loads(path.read_text()) != settings:
        raise ValueError(f"{out_dir}: holds a student trained with other settings; use "
                         "another output folder or delete it")
    if runtime.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=2) + "\n")


def train_student(train_path: str | Path, image_root: str | Path, out_dir: str | Path,
                  cfg: StudentConfig = StudentConfig(), *, quality_weighted: bool = False,
                  copy_paste: str = "off", progress: bool = True, stop_after: int | None = None,
                  runtime: Runtime = CPU, workers: int = 0) -> dict:
    """Train (or resume) a student (``cfg.arch``) on ``train_path``; checkpoint in ``out_dir``.

    ``quality_weighted`` scales each mask's loss by its annotation's ``score`` (the teacher's
    predicted IoU of a pseudo-mask; GT masks, which have none, weigh 1). ``copy_paste``
    (``off``, ``random`` or ``quality``) pastes a peer into every image (seed 000 Algorithm 1,
    see ``students.copy_paste``; ``quality`` peers score above 0.5). The model trains on
    ``runtime.device`` under its autocast (fp16 with a gradient scaler), under DDP when the
    runtime has several ranks; ``workers`` DataLoader processes prepare the batches.
    """
    out_dir = Path(out_dir)
    data = InstanceData(train_path, image_root, weight_key="score" if quality_weighted else None)
    peers = PeerPool(data, copy_paste) if copy_paste != "off" else None
    module = build_student(cfg, len(data.category_ids)).to(runtime.device)
    if runtime.distributed:  # BN over the global batch (ranks train as one process)
        sync_batch_norm(module, runtime.device)
    module.train()
    settings = {"config": asdict(cfg), "train": str(train_path),
                "categories": data.category_ids, "quality_weighted": quality_weighted}
    if peers is not None:  # absent when off: students trained before the option still resume
        settings |= {"copy_paste": copy_paste, "peers": len(peers)}
    _check_settings(out_dir, settings, runtime)
    runtime.barrier()
    model = module
    if runtime.distributed:
        model = DistributedDataParallel(
            module, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None,
            find_unused_parameters=True)  # a rank without positives skips CondInst's mask head
    opt = _optimizer(module, cfg)
    scaler = runtime.grad_scaler()
    state: dict = {}

    def batches(step: int):
        """This rank's share of ``step``, from a loader started at the first step asked for."""
        if "it" not in state:
            end = cfg.steps if stop_after is None else min(cfg.steps, step + stop_after)
            ds = StepBatches(data, batch=cfg.batch, rank=runtime.rank,
                             world=runtime.world_size, seed=cfg.seed, size=cfg.size,
                             scale_range=(cfg.scale_min, cfg.scale_max), start=step, end=end,
                             peers=peers)
            state["it"] = iter(step_loader(ds, workers, runtime.device.type == "cuda"))
            state["next"] = step
        if step != state["next"]:
            raise RuntimeError(f"steps out of order: {step} after {state['next'] - 1}")
        state["next"] += 1
        return next(state["it"])

    def step_fn(step: int) -> dict:
        # the loss samples points with torch's generator: seed it from the step so a resumed
        # run draws what an uninterrupted one would
        torch.manual_seed(cfg.seed * 1_000_003 + step)
        samples, seeds = batches(step)
        if quality_weighted and cfg.arch == "mask2former":  # seed 000 eq. 1
            module.criterion.instance_weights = [smp.weights.to(runtime.device)
                                                 for smp in samples]
        factor = (1 - step / cfg.steps) ** cfg.poly_power
        for g in opt.param_groups:
            g["lr"] = cfg.lr * factor * g["lr_factor"]
        loss = _student_loss(model, module, samples, seeds, cfg, runtime)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite student loss {float(loss)} at step {step}; "
                                     "stopping (lower the learning rate or check the labels)")
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)  # clip the true gradients
        torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.clip_norm)
        scaler.step(opt)
        scaler.update()
        value = loss.detach().float()
        if runtime.distributed:  # the history holds the global batch's loss
            dist.all_reduce(value)
            value /= runtime.world_size
        return {"loss": float(value)}

    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    history = train(module, opt, step_fn, steps=cfg.steps, state_path=out_dir / "state.pt",
                    every=cfg.save_every, desc="student", stop_after=stop_after,
                    progress=progress and runtime.is_main, save=runtime.is_main,
                    scaler=scaler)
    runtime.barrier()  # rank 0's last checkpoint is on disk before anyone reads it
    return {"out": str(out_dir), "steps": len(history), "seconds": time.perf_counter() - t0,
            "final_loss": history[-1]["loss"] if history else None}


def load_student(out_dir: str | Path, num_labels: int, runtime: Runtime = CPU
                 ) -> torch.nn.Module:
    """The trained student of ``out_dir`` (its ``state.pt``), in eval mode, on the device."""
    out_dir = Path(out_dir)
    settings = json.loads((out_dir / "settings.json").read_text())
    cfg = StudentConfig(**settings["config"])
    model = build_student(cfg, num_labels, pretrained=False).to(runtime.device)
    if "boxseg" in settings:  # the checkpoint holds student and EMA teacher: the student
        from pseudolabel.models.checkpoints import safe_torch_load

        state = safe_torch_load(out_dir / "state.pt")["model"]
        model.load_state_dict({k.removeprefix("student."): v for k, v in state.items()
                               if k.startswith("student.")})
        return model.eval()
    load_state(out_dir / "state.pt", model, _optimizer(model, cfg))
    return model.eval()


@torch.no_grad()
def predict(model, images: list[dict], image_root: str | Path, cfg: StudentConfig,
            categories: list[int], progress: bool = True, runtime: Runtime = CPU) -> list[dict]:
    """COCO results (RLE) of ``model`` on ``images`` (COCO image dicts), ``cfg.eval_batch``
    images per forward; results leave the device once per image."""
    results = []
    dev = runtime.device
    bar = tqdm(total=len(images), desc="student predict", unit="img", disable=not progress)
    for s in range(0, len(images), cfg.eval_batch):
        batch = images[s: s + cfg.eval_batch]
        pixels = [load_image(resolve_image_path(image_root, img["file_name"])) for img in batch]
        prepared = [resize_for_inference(p, cfg.size) for p in pixels]
        x = torch.stack([p[0] for p in prepared]).to(dev)
        valid = torch.stack([p[1] for p in prepared]).to(dev)
        with runtime.autocast():
            out = model.detect(x, topk=cfg.topk) if cfg.arch == "condinst" \
                else model(pixel_values=x, pixel_mask=valid.long())
        for b, (img, px, (_, _, vsize)) in enumerate(zip(batch, pixels, prepared, strict=True)):
            if cfg.arch == "condinst":
                det = out[b]
                logits = F.interpolate(det["mask_logits"][None].float(), scale_factor=4,
                                       mode="bilinear", align_corners=False)[0]
                logits = F.interpolate(logits[None, :, : vsize[0], : vsize[1]], px.shape[:2],
                                       mode="bilinear", align_corners=False)[0]
                masks, scores, labels = logits > 0, det["scores"].float(), det["labels"]
            else:
                masks, scores, labels = instance_inference(
                    out.class_queries_logits[b].float(), out.masks_queries_logits[b].float(),
                    vsize, cfg.size, px.shape[:2], cfg.topk)
            masks, scores, labels = masks.cpu(), scores.cpu(), labels.cpu()
            keep = masks.flatten(1).any(1)
            for rle, sc, c in zip(masks_to_rles(masks[keep].numpy()), scores[keep],
                                  labels[keep], strict=True):
                results.append({"image_id": img["id"], "category_id": int(categories[int(c)]),
                                "segmentation": rle, "score": round(float(sc), 6)})
        bar.update(len(batch))
    bar.close()
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
    mine = val.images[runtime.rank::runtime.world_size]  # each rank its share, gathered
    preds = predict(model, mine, image_root, cfg, categories, progress and runtime.is_main,
                    runtime)
    if runtime.distributed:
        parts = [None] * runtime.world_size
        dist.all_gather_object(parts, preds)
        preds = [p for part in parts for p in part]
    if not runtime.is_main:
        return {}
    result = evaluate_masks(val, preds)
    metrics = {"train": settings["train"], "val": str(val_path), "segm": result["segm"],
               "boundary": result["boundary"], "num_predictions": len(preds)}
    if full_metrics is not None and Path(full_metrics).is_file():
        full = json.loads(Path(full_metrics).read_text())["segm"]["AP"]
        metrics["AP_percent_of_full"] = percent_of_full(result["segm"]["AP"], full)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
