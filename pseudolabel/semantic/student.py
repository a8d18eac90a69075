"""SeSAM's semantic student: DeepLabV3+ (``segmentation-models-pytorch``) on label maps.

Cross-entropy on every labelled pixel of the training maps (weak pixels and SAM pixels; 255
ignored). Presets: ``tiny`` (ResNet-18 encoder, random init: the synthetic world) and ``r50``
(ResNet-50; ``encoder_checkpoint`` takes a local torchvision ImageNet file, loaded strictly
as for the instance students). Augmentation: random scale 0.75-1.25 of the input size, flip,
crop. Every draw follows from the seed and the step (resumable through
``pretrain.loop.train``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pseudolabel.data.coco import load_coco
from pseudolabel.data.images import load_image, resolve_image_path
from pseudolabel.pretrain.loop import train
from pseudolabel.runtime import CPU, Runtime
from pseudolabel.semantic.labels import IGNORE, read_label_map
from pseudolabel.students.data import normalise

PRESETS = {"tiny": "resnet18", "r50": "resnet50"}


@dataclass(frozen=True)
class SemanticConfig:
    preset: str = "tiny"
    steps: int = 1000
    batch: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    size: int = 160
    seed: int = 0
    encoder_checkpoint: str | None = None


def build_deeplab(cfg: SemanticConfig, num_classes: int) -> torch.nn.Module:
    import segmentation_models_pytorch as smp

    if cfg.preset not in PRESETS:
        raise ValueError(f"unknown preset {cfg.preset!r}; expected one of {list(PRESETS)}")
    torch.manual_seed(cfg.seed)
    model = smp.DeepLabV3Plus(encoder_name=PRESETS[cfg.preset], encoder_weights=None,
                              classes=num_classes)
    if cfg.encoder_checkpoint:
        from pseudolabel.models.checkpoints import load_weights
        from pseudolabel.students.backbones import read_backbone

        load_weights(model.encoder, read_backbone(cfg.encoder_checkpoint),
                     cfg.encoder_checkpoint)
    return model


def _sample(pixels: np.ndarray, labels: np.ndarray, rng: np.random.Generator, size: int):
    h, w = labels.shape
    s = rng.uniform(0.75, 1.25) * size / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    x = F.interpolate(normalise(pixels)[None], (nh, nw), mode="bilinear",
                      align_corners=False, antialias=True)[0]
    y = F.interpolate(torch.as_tensor(labels)[None, None].float(), (nh, nw),
                      mode="nearest")[0, 0].long()
    if rng.random() < 0.5:
        x, y = x.flip(-1), y.flip(-1)
    y0 = int(rng.integers(0, nh - size + 1)) if nh > size else 0
    x0 = int(rng.integers(0, nw - size + 1)) if nw > size else 0
    x, y = x[:, y0:y0 + size, x0:x0 + size], y[y0:y0 + size, x0:x0 + size]
    xi = torch.zeros((3, size, size))
    yi = torch.full((size, size), IGNORE, dtype=torch.long)
    xi[:, : x.shape[1], : x.shape[2]] = x
    yi[: y.shape[0], : y.shape[1]] = y
    return xi, yi


def train_semantic(gt_path, maps_dir, image_root, out_dir, cfg: SemanticConfig, *,
                   progress: bool = True, stop_after: int | None = None,
                   runtime: Runtime = CPU) -> dict:
    """Train (or resume) a DeepLabV3+ on the images of ``gt_path`` and the maps of
    ``maps_dir`` (named like the images, ``.png``)."""
    from pseudolabel.stages.semantic import map_name

    gt = load_coco(gt_path)
    records = [img for img in gt.images
               if (Path(maps_dir) / map_name(img["file_name"])).is_file()]
    if not records:
        raise ValueError(f"{maps_dir}: no label map for any image of {gt_path}")
    num_classes = len(gt.categories) + 1
    out_dir = Path(out_dir)
    settings = {"config": asdict(cfg), "maps": str(maps_dir), "classes": num_classes}
    path = out_dir / "settings.json"
    if path.is_file() and json.loads(path.read_text()) != settings:
        raise ValueError(f"{out_dir}: holds a student trained with other settings")
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2) + "\n")
    model = build_deeplab(cfg, num_classes).to(runtime.device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def step_fn(step: int) -> dict:
        rng = np.random.default_rng([cfg.seed, step])
        xs, ys = [], []
        for k in rng.choice(len(records), size=cfg.batch, replace=len(records) < cfg.batch):
            img = records[int(k)]
            pixels = load_image(resolve_image_path(image_root, img["file_name"]))
            labels = read_label_map(Path(maps_dir) / map_name(img["file_name"]))
            x, y = _sample(pixels, labels, rng, cfg.size)
            xs.append(x)
            ys.append(y)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * (1 - step / cfg.steps) ** 0.9
        with runtime.autocast():
            logits = model(torch.stack(xs).to(runtime.device))
        loss = F.cross_entropy(logits.float(), torch.stack(ys).to(runtime.device),
                               ignore_index=IGNORE)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": float(loss.detach())}

    history = train(model, opt, step_fn, steps=cfg.steps, state_path=out_dir / "state.pt",
                    every=100, desc="semantic student", stop_after=stop_after,
                    progress=progress)
    return {"out": str(out_dir), "steps": len(history), "model": model, "classes": num_classes}


@torch.no_grad()
def predict_map(model, pixels: np.ndarray, size: int, runtime: Runtime = CPU
                ) -> tuple[np.ndarray, np.ndarray]:
    """The student's label map and its per-pixel confidence, at the image's size."""
    h, w = pixels.shape[:2]
    s = size / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    x = torch.zeros((1, 3, size, size))
    x[0, :, :nh, :nw] = F.interpolate(normalise(pixels)[None], (nh, nw), mode="bilinear",
                                      align_corners=False, antialias=True)[0]
    model.eval()
    with runtime.autocast():
        logits = model(x.to(runtime.device))
    prob = F.interpolate(logits.float()[:, :, :nh, :nw], (h, w), mode="bilinear",
                         align_corners=False).softmax(1)[0].cpu()
    conf, label = prob.max(0)
    return label.byte().numpy(), conf.numpy()
