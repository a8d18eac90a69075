"""Segment Anything builders on the official ``segment_anything`` model classes.

One public ``build_sam_<variant>(*, checkpoint=None)`` per variant (STYLE 2). Official variants
without a checkpoint path fetch the official file into the torch hub cache; offline, the error
names the file and ``--sam-checkpoint``. Weights are loaded safely and strictly.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from pseudolabel.models.checkpoints import fetch_to_cache, load_state_dict, load_weights
from pseudolabel.models.hybrid_encoder import HybridImageEncoder
from pseudolabel.models.registry import Registry

SAM_MODELS = Registry("SAM model")
OFFICIAL_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
OFFICIAL_FILES = {
    "vit_h": "sam_vit_h_4b8939.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_b": "sam_vit_b_01ec64.pth",
}
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


def _build_sam(
    *,
    hybrid_width: int | None = None,
    encoder_embed_dim: int,
    encoder_depth: int,
    encoder_num_heads: int,
    encoder_global_attn_indexes: tuple[int, ...],
    image_size: int = 1024,
    patch_size: int = 16,
    window_size: int = 14,
    prompt_embed_dim: int = 256,
    mask_in_chans: int = 16,
    decoder_mlp_dim: int = 2048,
    decoder_num_heads: int = 8,
    iou_head_hidden_dim: int = 256,
    checkpoint: str | Path | None = None,
) -> Sam:
    embedding_size = image_size // patch_size * (2 if hybrid_width else 1)
    vit = ImageEncoderViT(
        depth=encoder_depth,
        embed_dim=encoder_embed_dim,
        img_size=image_size,
        mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=encoder_num_heads,
        patch_size=patch_size,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=encoder_global_attn_indexes,
        window_size=window_size,
        out_chans=prompt_embed_dim,
    )
    sam = Sam(
        image_encoder=HybridImageEncoder(vit, prompt_embed_dim, hybrid_width)
        if hybrid_width else vit,
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_embed_dim,
            image_embedding_size=(embedding_size, embedding_size),
            input_image_size=(image_size, image_size),
            mask_in_chans=mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=prompt_embed_dim,
                                          mlp_dim=decoder_mlp_dim, num_heads=decoder_num_heads),
            transformer_dim=prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=iou_head_hidden_dim,
        ),
        pixel_mean=list(SAM_PIXEL_MEAN),
        pixel_std=list(SAM_PIXEL_STD),
    )
    sam.eval()
    if checkpoint is not None:
        load_weights(sam, load_state_dict(checkpoint), str(checkpoint))
    return sam


def _official_checkpoint(variant: str, checkpoint: str | Path | None) -> Path:
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise ValueError(f"{checkpoint}: SAM checkpoint not found (--sam-checkpoint)")
        return Path(checkpoint)
    name = OFFICIAL_FILES[variant]
    return fetch_to_cache(OFFICIAL_URL + name, name, "--sam-checkpoint")


@SAM_MODELS.register("vit_h")
def build_sam_vit_h(*, checkpoint: str | Path | None = None, pretrained: bool = True) -> Sam:
    """SAM ViT-H (official). ``pretrained=False`` gives random weights (tests, benchmarks)."""
    ckpt = _official_checkpoint("vit_h", checkpoint) if pretrained else None
    return _build_sam(encoder_embed_dim=1280, encoder_depth=32, encoder_num_heads=16,
                      encoder_global_attn_indexes=(7, 15, 23, 31), checkpoint=ckpt)


@SAM_MODELS.register("vit_l")
def build_sam_vit_l(*, checkpoint: str | Path | None = None, pretrained: bool = True) -> Sam:
    """SAM ViT-L (official)."""
    ckpt = _official_checkpoint("vit_l", checkpoint) if pretrained else None
    return _build_sam(encoder_embed_dim=1024, encoder_depth=24, encoder_num_heads=16,
                      encoder_global_attn_indexes=(5, 11, 17, 23), checkpoint=ckpt)


@SAM_MODELS.register("vit_b")
def build_sam_vit_b(*, checkpoint: str | Path | None = None, pretrained: bool = True) -> Sam:
    """SAM ViT-B (official)."""
    ckpt = _official_checkpoint("vit_b", checkpoint) if pretrained else None
    return _build_sam(encoder_embed_dim=768, encoder_depth=12, encoder_num_heads=12,
                      encoder_global_attn_indexes=(2, 5, 8, 11), checkpoint=ckpt)


@SAM_MODELS.register("tiny")
def build_sam_tiny(*, checkpoint: str | Path | None = None, pretrained: bool = True) -> Sam:
    """Same classes as SAM, small dimensions, for the synthetic world and tests.

    160-px input (the synthetic world's image size), 8-px patches (20x20 embedding, 80x80
    low-res logits), 4 encoder blocks of width 96, prompt/decoder width 64.
    ``checkpoint=None`` gives seeded random weights.
    """
    del pretrained  # the tiny model has no official weights to fetch
    if checkpoint is None:
        torch.manual_seed(0)
    return _build_sam(encoder_embed_dim=96, encoder_depth=4, encoder_num_heads=4,
                      encoder_global_attn_indexes=(1, 3), image_size=160, patch_size=8,
                      window_size=10, prompt_embed_dim=64, decoder_mlp_dim=256,
                      decoder_num_heads=4, iou_head_hidden_dim=64, checkpoint=checkpoint)


@SAM_MODELS.register("tiny_hr")
def build_sam_tiny_hr(*, checkpoint: str | Path | None = None, pretrained: bool = True) -> Sam:
    """The tiny SAM with a stride-4 convolutional detail path beside its ViT
    (``HybridImageEncoder``): 40 x 40 embedding, 160 x 160 logits, for objects of 8-80 px.

    ``checkpoint=None`` gives seeded random weights.
    """
    del pretrained
    if checkpoint is None:
        torch.manual_seed(0)
    return _build_sam(encoder_embed_dim=96, encoder_depth=4, encoder_num_heads=4,
                      encoder_global_attn_indexes=(1, 3), image_size=160, patch_size=8,
                      window_size=10, prompt_embed_dim=64, decoder_mlp_dim=256,
                      decoder_num_heads=4, iou_head_hidden_dim=64, hybrid_width=48,
                      checkpoint=checkpoint)


def warm_start_from_plain(sam: Sam, plain_state: dict[str, torch.Tensor]) -> None:
    """Load a plain tiny SAM's weights into a ``tiny_hr`` SAM: its ViT, prompt encoder and
    mask decoder (grid-size free); the detail path keeps its initialisation."""
    state = {("image_encoder.vit." + k.removeprefix("image_encoder.")
              if k.startswith("image_encoder.") else k): v for k, v in plain_state.items()}
    result = sam.load_state_dict(state, strict=False)
    foreign = [k for k in result.missing_keys if not k.startswith(
        ("image_encoder.stem", "image_encoder.blocks", "image_encoder.fuse"))]
    if result.unexpected_keys or foreign:
        raise ValueError(f"warm start: missing {foreign}, unexpected {result.unexpected_keys}")


def warm_start(sam: Sam, state: dict[str, torch.Tensor]) -> str:
    """Initialise ``sam`` from ``state`` before training: the same model's weights load
    exactly (a continuation, returns ``"continue"``); a plain tiny SAM's load into a
    ``tiny_hr`` by :func:`warm_start_from_plain` (returns ``"plain"``)."""
    if state.keys() == sam.state_dict().keys():
        sam.load_state_dict(state)
        return "continue"
    warm_start_from_plain(sam, state)
    return "plain"


def build_sam(name: str, *, checkpoint: str | Path | None = None, pretrained: bool = True) -> Sam:
    """Build a registered SAM variant (``vit_h``, ``vit_l``, ``vit_b``, ``tiny``,
    ``tiny_hr``)."""
    return SAM_MODELS.get(name)(checkpoint=checkpoint, pretrained=pretrained)
