"""Pre-trained ResNet backbones for the students, from a local file or folder.

Accepted (``student.backbone_checkpoint`` / ``--backbone-checkpoint``):

* a torchvision ImageNet file, e.g. ``resnet50-11ad3fa6.pth`` or ``resnet101-cd907fc2.pth``
  (``conv1``, ``bn1``, ``layer1..4``, ``fc`` keys), or a safetensors file of the same keys;
* a timm folder (same key names as torchvision) or a transformers folder
  (``microsoft/resnet-50`` saved locally: ``embedder.*`` / ``encoder.stages.*`` keys, with or
  without the ``resnet.`` prefix of the classification model), holding ``model.safetensors``
  or ``pytorch_model.bin``.

Files are read safely (safetensors or ``torch.load(weights_only=True)``). The classifier is
dropped; everything else must fit the student's backbone exactly: CondInst's torchvision
ResNet takes torchvision names, Mask2Former's transformers ``ResNetBackbone`` takes
transformers names, and the two are mapped onto each other (bottleneck and basic blocks). A
file of another architecture fails with its missing and unexpected keys named.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from pseudolabel.models.checkpoints import load_state_dict, load_weights

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_TV_BLOCK = re.compile(r"^layer(\d+)\.(\d+)\.(conv|bn)(\d+)\.(.+)$")
_TV_DOWN = re.compile(r"^layer(\d+)\.(\d+)\.downsample\.([01])\.(.+)$")
_HF_BLOCK = re.compile(r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d+)\."
                       r"(convolution|normalization)\.(.+)$")
_HF_SHORT = re.compile(r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\."
                       r"(convolution|normalization)\.(.+)$")


def read_backbone(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a backbone file or folder, torchvision names, classifier dropped."""
    path = Path(path)
    if path.is_dir():
        files = [path / f for f in WEIGHT_FILES if (path / f).is_file()]
        if not files:
            raise ValueError(f"{path}: backbone folder holds none of {', '.join(WEIGHT_FILES)}")
        path = files[0]
    elif not path.is_file():
        raise ValueError(f"{path}: backbone checkpoint not found (student.backbone_checkpoint / "
                         "--backbone-checkpoint)")
    state = load_state_dict(path)
    if any(k.startswith(("embedder.", "resnet.embedder.", "encoder.stages.", "resnet.encoder."))
           for k in state):
        state = hf_to_torchvision({k.removeprefix("resnet."): v for k, v in state.items()})
    return {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier."))}


def torchvision_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision ResNet names -> transformers ``ResNetBackbone`` names (unknown keys kept,
    so strict loading names them)."""
    out = {}
    for k, v in state.items():
        if k.startswith("conv1."):
            out["embedder.embedder.convolution." + k[6:]] = v
        elif k.startswith("bn1."):
            out["embedder.embedder.normalization." + k[4:]] = v
        elif m := _TV_BLOCK.match(k):
            layer, block, kind, idx, rest = m.groups()
            part = "convolution" if kind == "conv" else "normalization"
            out[f"encoder.stages.{int(layer) - 1}.layers.{block}.layer.{int(idx) - 1}."
                f"{part}.{rest}"] = v
        elif m := _TV_DOWN.match(k):
            layer, block, idx, rest = m.groups()
            part = "convolution" if idx == "0" else "normalization"
            out[f"encoder.stages.{int(layer) - 1}.layers.{block}.shortcut.{part}.{rest}"] = v
        else:
            out[k] = v
    return out


def hf_to_torchvision(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`torchvision_to_hf`."""
    out = {}
    for k, v in state.items():
        if k.startswith("embedder.embedder.convolution."):
            out["conv1." + k.removeprefix("embedder.embedder.convolution.")] = v
        elif k.startswith("embedder.embedder.normalization."):
            out["bn1." + k.removeprefix("embedder.embedder.normalization.")] = v
        elif m := _HF_BLOCK.match(k):
            stage, block, idx, part, rest = m.groups()
            kind = "conv" if part == "convolution" else "bn"
            out[f"layer{int(stage) + 1}.{block}.{kind}{int(idx) + 1}.{rest}"] = v
        elif m := _HF_SHORT.match(k):
            stage, block, part, rest = m.groups()
            out[f"layer{int(stage) + 1}.{block}.downsample."
                f"{0 if part == 'convolution' else 1}.{rest}"] = v
        else:
            out[k] = v
    return out


def load_condinst_backbone(body: nn.Module, path: str | Path) -> None:
    """Strictly load ImageNet weights into CondInst's torchvision ResNet body."""
    load_weights(body, read_backbone(path), str(path))


def load_mask2former_backbone(model, path: str | Path) -> None:
    """Strictly load ImageNet weights into Mask2Former's transformers ResNet backbone."""
    encoder = model.model.pixel_level_module.encoder
    load_weights(encoder, torchvision_to_hf(read_backbone(path)), str(path))
