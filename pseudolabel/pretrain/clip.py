"""The project's own tiny CLIP: a text tower trained contrastively on source-world object crops.

The class-aware prompt encoder (seed 001 §3.1) adds a CLIP text embedding of each prompt's
class. With a randomly initialised tiny text tower the nine class embeddings were nearly
parallel (mean cosine 0.97), so the class path carried no class identity. As SAM and
Grounding DINO are the project's own tiny models pre-trained on the *source* style, so is this
CLIP: an image tower (a small CNN over object crops) and the tiny open_clip text tower
(``models.text.build_text_tiny``) trained with CLIP's contrastive loss, every crop against the
captions of every class in the label space (with nine classes, a batch holds each many
times, so the loss is the image-to-text cross-entropy over the class captions plus its
text-to-image twin over the batch). Captions use several templates so the tower does not
key on one sentence. Only the text tower ships; the image tower exists to train it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pseudolabel.models.text import TEMPLATE, build_text_tiny
from pseudolabel.pretrain.scenes import grown_box, scene_at
from pseudolabel.synthetic import CLASSES

TEMPLATES = (TEMPLATE, "a {name}.", "a picture of a {name}.", "the {name}.",
             "a small {name}.", "a photo of the {name}.")
CROP = 32


@dataclass(frozen=True)
class ClipPretrainConfig:
    steps: int = 3000
    batch_images: int = 8  # scenes per step; every object of them is a crop
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.01
    size: int = 160
    data_seed: int = 1000
    seed: int = 0


class CropEncoder(nn.Module):
    """``(B, 3, 32, 32)`` crops -> ``(B, dim)`` embeddings: four conv blocks, pooled."""

    def __init__(self, dim: int = 64) -> None:
        super().__init__()
        layers, c_in = [], 3
        for c in (32, 64, 96, 128):
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.GroupNorm(8, c), nn.GELU(),
                       nn.MaxPool2d(2)]
            c_in = c
        self.body = nn.Sequential(*layers)
        self.proj = nn.Linear(128, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.body(x).mean((2, 3)))


class TinyClip(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.text = build_text_tiny()
        self.image = CropEncoder(self.text.dim)
        self.logit_scale = nn.Parameter(torch.tensor(np.log(1 / 0.07), dtype=torch.float32))
        self.tower = self.text.module  # registered: trained and saved

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.tower(tokens), dim=-1)

    def encode_image(self, crops: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image(crops), dim=-1)


def object_crops(scene, rng: np.random.Generator) -> tuple[list[np.ndarray], list[int]]:
    """Each object's box (grown by up to 20%, jittered) as a ``CROP x CROP`` RGB crop."""
    crops, labels = [], []
    for obj in scene.objects:
        if (box := grown_box(obj.mask, rng, 0.2)) is None:
            continue
        y0, y1, x0, x1 = box
        patch = torch.as_tensor(scene.image[y0:y1, x0:x1]).permute(2, 0, 1)[None].float()
        crops.append(F.interpolate(patch, (CROP, CROP), mode="bilinear", align_corners=False,
                                   antialias=True)[0].numpy())
        labels.append(obj.class_index)
    return crops, labels


def train_step(model: TinyClip, optimizer, step: int, cfg: ClipPretrainConfig) -> dict:
    rng = np.random.default_rng([cfg.seed, step])
    crops, labels = [], []
    for i in range(cfg.batch_images):
        c, lab = object_crops(scene_at(cfg.data_seed, step * cfg.batch_images + i, cfg.size),
                              rng)
        crops += c
        labels += lab
    x = torch.as_tensor(np.stack(crops)) / 127.5 - 1.0
    y = torch.as_tensor(labels)
    template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    tokens = model.text.tokenizer([template.format(name=c.name) for c in CLASSES])
    text = model.encode_text(tokens)
    img = model.encode_image(x)
    logits = model.logit_scale.exp().clamp(max=100) * img @ text.T  # (B, K)
    loss_i = F.cross_entropy(logits, y)
    # text -> image: each class caption against the batch's crops (its crops are positives)
    present = torch.unique(y)
    log_p = logits.T[present].log_softmax(dim=1)
    positives = (y[None, :] == present[:, None]).float()
    loss_t = -(log_p * positives).sum(1).div(positives.sum(1)).mean()
    loss = (loss_i + loss_t) / 2
    lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup) * (0.1 if step >= 0.8 * cfg.steps else 1)
    for g in optimizer.param_groups:
        g["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    acc = float((logits.argmax(1) == y).float().mean())
    return {"loss": float(loss.detach()), "accuracy": acc}


def class_cosines(text_state: dict | None = None) -> float:
    """Mean pairwise cosine of the nine class embeddings (the default template)."""
    enc = build_text_tiny()
    if text_state is not None:
        enc.module.load_state_dict(text_state)
    e = F.normalize(enc.embed([c.name for c in CLASSES]), dim=-1)
    cos = e @ e.T
    k = len(e)
    return float((cos.sum() - k) / (k * (k - 1)))


@torch.no_grad()
def crop_accuracy(state: dict, scenes: int = 100, seed: int = 7) -> float:
    """Zero-shot classification accuracy of the trained CLIP (image tower vs the class
    captions, the default template) on object crops of *target*-style scenes."""
    model = TinyClip()
    model.load_state_dict(state)
    model.eval()
    rng = np.random.default_rng(seed)
    crops, labels = [], []
    for i in range(scenes):
        c, lab = object_crops(scene_at(seed, i, 160, style="target"), rng)
        crops += c
        labels += lab
    tokens = model.text.tokenizer([TEMPLATE.format(name=c.name) for c in CLASSES])
    img = model.encode_image(torch.as_tensor(np.stack(crops)) / 127.5 - 1.0)
    pred = (img @ model.encode_text(tokens).T).argmax(1)
    return float((pred == torch.as_tensor(labels)).float().mean())
