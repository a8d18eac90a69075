"""SAMRefiner++ IoU adaption (seed 002 §3.3): a LoRA adaptor on the last layer of SAM's IoU
head, trained with a pairwise ranking loss against each output's IoU with the coarse mask.

SAM itself stays frozen, so the masks SAM generates do not change; only which of the three
multimask outputs ranks first does. Training uses single prompts (a point or a box) and
needs no annotation: the coarse masks are the only supervision (A.2: SGD, lr 0.01, batch 5,
one epoch, lr / 10 at steps 60 and 100, margin 0.02, rank 4).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from pseudolabel.models.checkpoints import load_state_dict, save_safetensors

RANK = 4
MARGIN = 0.02


class LoraLinear(nn.Module):
    """``base(x) + up(down(x)) * alpha / rank`` with ``base`` frozen and ``up`` starting at
    zero, so an untrained adaptor leaves the layer unchanged (Hu et al. 2021)."""

    def __init__(self, base: nn.Linear, rank: int = RANK, alpha: float | None = None) -> None:
        super().__init__()
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.rank = rank
        self.scale = (alpha if alpha is not None else rank) / rank
        self.down = nn.Linear(base.in_features, rank, bias=False)
        self.up = nn.Linear(rank, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.up(self.down(x)) * self.scale

    def adapter_state(self) -> dict[str, torch.Tensor]:
        return {"down.weight": self.down.weight.detach(), "up.weight": self.up.weight.detach()}


def attach_iou_adapter(sam, state: dict[str, torch.Tensor] | None = None,
                       rank: int = RANK) -> LoraLinear:
    """Put a LoRA adaptor on the last layer of ``sam``'s IoU head (in place) and return it.

    Every other SAM parameter is frozen. ``state`` (from ``load_iou_adapter``) sets its
    weights; attaching twice is an error.
    """
    head = sam.mask_decoder.iou_prediction_head.layers
    if isinstance(head[-1], LoraLinear):
        raise ValueError("this SAM already has an IoU adapter")
    if state is not None:
        rank = state["down.weight"].shape[0]
    lora = LoraLinear(head[-1], rank=rank)
    if state is not None:
        for name in ("down.weight", "up.weight"):
            target = getattr(lora, name.split(".")[0]).weight
            if state[name].shape != target.shape:
                raise ValueError(f"IoU adapter {name} has shape {tuple(state[name].shape)}, "
                                 f"this SAM needs {tuple(target.shape)}")
            target.data.copy_(state[name])
    for p in sam.parameters():
        p.requires_grad_(False)
    lora.down.weight.requires_grad_(True)
    lora.up.weight.requires_grad_(True)
    head[-1] = lora.to(next(sam.parameters()).device)
    return lora


def save_iou_adapter(path: str | Path, lora: LoraLinear, metadata: dict | None = None) -> None:
    save_safetensors(path, lora.adapter_state(), {"rank": lora.rank, **(metadata or {})})


def load_iou_adapter(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: IoU adapter file not found")
    state = load_state_dict(path)
    missing = [k for k in ("down.weight", "up.weight") if k not in state]
    if missing:
        raise ValueError(f"{path}: not an IoU adapter (missing {missing})")
    return state


def ranking_loss(pred_iou: torch.Tensor, coarse_iou: torch.Tensor,
                 margin: float = MARGIN) -> torch.Tensor:
    """Eq. 4, averaged over prompts: ``sum_{i != j} max(0, x_i - x_j + m)`` where ``j`` is the
    output with the highest IoU with the coarse mask. ``(N, M)`` inputs."""
    j = coarse_iou.argmax(dim=1, keepdim=True)
    best = pred_iou.gather(1, j)
    hinge = (pred_iou - best + margin).clamp_min(0)
    others = torch.ones_like(hinge).scatter_(1, j, 0.0)
    return (hinge * others).sum(dim=1).mean()
