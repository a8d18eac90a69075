"""The students' pre-trained backbone on the synthetic world: a ResNet-18 classifier of
source-world object crops, in the place of ImageNet.

Seed 001's students start from an ImageNet ResNet-50 (§4.1); no machine here reaches ImageNet,
so the synthetic students trained from a random initialisation. As the project's tiny SAM,
Grounding DINO and CLIP are pre-trained on the *source* style, so is this backbone: the tiny
students' torchvision ResNet-18 (``students.condinst`` preset ``tiny``, and Mask2Former's
``tiny`` of the same layout) learns to name the class of object crops of source scenes, as an
ImageNet model learns to name the object of a photo. No masks and no target-style image are
seen; the classifier is dropped when a student loads the weights
(``students.backbones``).

Crops are object boxes grown by a random context (0–100% of each side) and resized to
``crop`` pixels, flipped at random, normalised with the ImageNet statistics the students use.
AdamW with warm-up and a cosine decay; BatchNorm trains here and is frozen in the student.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18

from pseudolabel.pretrain.scenes import grown_box, scene_at
from pseudolabel.students.data import standardise
from pseudolabel.synthetic import CLASSES

BACKBONE_FILE = "resnet18_source.safetensors"


@dataclass(frozen=True)
class BackbonePretrainConfig:
    steps: int = 2000
    batch_images: int = 16  # scenes per step; every object of them is a crop
    crop: int = 64
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.05
    size: int = 160
    data_seed: int = 1000  # the source scenes of the other pre-trainings
    seed: int = 0


def build_backbone() -> nn.Module:
    """torchvision ResNet-18 with a nine-way classifier (the students' tiny backbone)."""
    return resnet18(num_classes=len(CLASSES))


def context_crops(scene, rng: np.random.Generator, crop: int
                  ) -> tuple[list[torch.Tensor], list[int]]:
    """Each object's box grown by a random context, as a flipped-at-random ``crop``² tensor."""
    crops, labels = [], []
    image = torch.as_tensor(scene.image).permute(2, 0, 1).float()[None] / 255.0
    for obj in scene.objects:
        if (box := grown_box(obj.mask, rng, 1.0)) is None:
            continue
        y0, y1, x0, x1 = box
        patch = F.interpolate(image[:, :, y0:y1, x0:x1], (crop, crop), mode="bilinear",
                              align_corners=False, antialias=True)[0]
        if rng.random() < 0.5:
            patch = patch.flip(-1)
        crops.append(patch)
        labels.append(obj.class_index)
    return crops, labels


def batch_at(step: int, cfg: BackbonePretrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Step ``step``'s crops and labels (depend only on the seeds and ``step``)."""
    rng = np.random.default_rng([cfg.seed, step, 0])
    crops, labels = [], []
    for i in range(cfg.batch_images):
        c, lab = context_crops(scene_at(cfg.data_seed, step * cfg.batch_images + i, cfg.size),
                               rng, cfg.crop)
        crops += c
        labels += lab
    return standardise(torch.stack(crops)), torch.as_tensor(labels)


def lr_at(step: int, cfg: BackbonePretrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * t))


def train_step(model: nn.Module, optimizer, step: int, cfg: BackbonePretrainConfig) -> dict:
    x, y = batch_at(step, cfg)
    model.train()
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    for g in optimizer.param_groups:
        g["lr"] = lr_at(step, cfg)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": float(loss.detach()), "accuracy": float((logits.argmax(1) == y).float().mean())}


@torch.no_grad()
def crop_accuracy(model: nn.Module, style: str = "target", scenes: int = 100,
                  seed: int = 7, crop: int = 64) -> float:
    """Top-1 accuracy on object crops of ``scenes`` scenes of ``style`` (chance 1/9)."""
    model.eval()
    rng = np.random.default_rng(seed)
    right = total = 0
    for i in range(scenes):
        c, lab = context_crops(scene_at(seed, i, 160, style), rng, crop)
        if not c:
            continue
        pred = model(standardise(torch.stack(c))).argmax(1)
        right += int((pred == torch.as_tensor(lab)).sum())
        total += len(lab)
    return right / max(1, total)
