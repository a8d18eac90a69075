"""A SAM image encoder with a high-resolution convolutional path (the ``tiny_hr`` preset).

SAM's mask decoder upsamples the image embedding 4x and can only sharpen what the embedding
grid resolves. The tiny ViT sees 8-px patches of a 160-px image (a 20 x 20 grid) while the
synthetic target's objects are 8-80 px: reconstructing its masks from a 20 x 20 grid caps
mIoU near 0.53, from 40 x 40 at 0.81. A 4-px-patch ViT would cost 8x per step (attention
over 1,600 tokens), so, as SAM-HQ and EdgeSAM add convolutional detail beside a coarse
transformer, this encoder keeps the ViT at 8-px patches for context and adds a cheap
stride-4 convolutional path for detail:

    out = up2(ViT(x)) + fuse([up2(ViT(x)), conv_path(x)])      # (B, 64, 40, 40)

``fuse`` ends in a zero-initialised 1x1 convolution, so at initialisation the output is the
ViT's embedding upsampled, and weights of the plain tiny SAM warm-start the ViT, the prompt
encoder and the mask decoder (none of which depends on the grid size). The embedding is
still SAM's interface (a 64-channel grid) feeding the official prompt encoder and mask
decoder, whose logits are then 160 x 160: full resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT
from segment_anything.modeling.common import LayerNorm2d
from torch import nn


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7, channel LayerNorm, pointwise MLP (x4), residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = LayerNorm2d(channels)
        self.pw1 = nn.Conv2d(channels, 4 * channels, 1)
        self.pw2 = nn.Conv2d(4 * channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pw2(F.gelu(self.pw1(self.norm(self.dw(x)))))


class HybridImageEncoder(nn.Module):
    """``vit``'s embedding at twice its grid, plus a stride-4 convolutional detail path.

    ``img_size`` and ``attention_tokens`` (the ViT's tokens per image, what the CPU encode
    cap counts) follow the ViT. Output: ``(B, out_chans, 2g, 2g)`` for the ViT's ``g x g``.
    """

    def __init__(self, vit: ImageEncoderViT, out_chans: int, width: int = 48,
                 blocks: int = 2) -> None:
        super().__init__()
        self.vit = vit
        self.img_size = vit.img_size
        stride = vit.patch_embed.proj.stride[0]
        if stride != 8:
            raise ValueError(f"the detail path doubles an 8-px-patch grid; got patch {stride}")
        self.attention_tokens = (vit.img_size // stride) ** 2
        self.stem = nn.Sequential(
            nn.Conv2d(3, width // 2, 3, stride=2, padding=1), LayerNorm2d(width // 2), nn.GELU(),
            nn.Conv2d(width // 2, width, 3, stride=2, padding=1), LayerNorm2d(width), nn.GELU())
        self.blocks = nn.Sequential(*[ConvNeXtBlock(width) for _ in range(blocks)])
        self.fuse = nn.Sequential(nn.Conv2d(width + out_chans, out_chans, 3, padding=1),
                                  LayerNorm2d(out_chans), nn.GELU(),
                                  nn.Conv2d(out_chans, out_chans, 1))
        nn.init.zeros_(self.fuse[-1].weight)
        nn.init.zeros_(self.fuse[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        coarse = F.interpolate(self.vit(x), scale_factor=2, mode="bilinear", align_corners=False)
        detail = self.blocks(self.stem(x))
        return coarse + self.fuse(torch.cat([coarse, detail], dim=1))
