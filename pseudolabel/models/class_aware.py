"""Class-aware prompt encoder (seed 001 §3.1, eq. 1-2), ControlNet-style.

    Z_text   = F_train(P_geom) + CLIP_text(P_cls)        (eq. 1)
    Z_merged = G_zero(Z_text) + F_locked(P_geom)          (eq. 2)

``F_locked`` is SAM's prompt encoder, frozen; ``F_train`` a trainable copy of it; the text
embedding is projected to SAM's prompt width and added to every sparse token of
``F_train``; ``G_zero`` is a linear layer initialised to zeros, so at initialisation the
output equals the plain prompt encoder's exactly. Dense (mask) embeddings come from
``F_locked``: the class prompt only enters through the sparse tokens.
"""

from __future__ import annotations

import copy

import torch
from segment_anything.modeling import PromptEncoder
from torch import nn


class ClassAwarePromptEncoder(nn.Module):
    def __init__(self, prompt_encoder: PromptEncoder, text_dim: int) -> None:
        super().__init__()
        embed_dim = prompt_encoder.embed_dim
        self.locked = prompt_encoder
        for p in self.locked.parameters():
            p.requires_grad_(False)
        self.trainable = copy.deepcopy(prompt_encoder)
        for p in self.trainable.parameters():
            p.requires_grad_(True)
        self.text_proj = nn.Linear(text_dim, embed_dim)
        self.g_zero = nn.Linear(embed_dim, embed_dim)
        nn.init.zeros_(self.g_zero.weight)
        nn.init.zeros_(self.g_zero.bias)

    def forward(self, points, boxes, masks, text_embeddings: torch.Tensor):
        """Sparse ``(N, T, C)`` and dense ``(N, C, h, w)`` embeddings for N prompts.

        ``text_embeddings``: ``(N, text_dim)``, one class embedding per prompt.
        """
        sparse_locked, dense = self.locked(points=points, boxes=boxes, masks=masks)
        sparse_train, _ = self.trainable(points=points, boxes=boxes, masks=masks)
        z_text = sparse_train + self.text_proj(text_embeddings)[:, None, :]
        return self.g_zero(z_text) + sparse_locked, dense
