"""CLIP text encoders through ``open_clip``, with embeddings of a label space cached.

``build_clip_text(model_name, pretrained)`` takes an open_clip model name and a pretrained
tag (e.g. ``ViT-B-32`` / ``laion2b_s34b_b79k``) or a local checkpoint path. The ``tiny``
preset is a small open_clip text tower with CLIP's tokenizer; its shipped weights
(``checkpoint="default"``) were trained contrastively on the synthetic source world's object
crops, so its class embeddings differ and carry what the classes look like.
"""

from __future__ import annotations

from pathlib import Path

import open_clip
import torch
from open_clip.transformer import TextTransformer
from torch import nn

from pseudolabel.models.checkpoints import load_state_dict, load_weights
from pseudolabel.models.registry import Registry
from pseudolabel.runtime import CPU, Runtime

TEXT_ENCODERS = Registry("text encoder")
TEMPLATE = "a photo of a {name}."


class TextEncoder:
    """Wraps an open_clip text tower: ``embed(names)`` -> ``(K, dim)`` float32 on the host,
    cached. The tower runs on ``runtime.device`` under its autocast.

    ``module`` is the underlying ``nn.Module`` (its weights).
    """

    def __init__(self, encode, tokenizer, dim: int, module: nn.Module, name: str,
                 runtime: Runtime = CPU) -> None:
        self.runtime = runtime
        self.module = module.to(runtime.device)
        self._encode = encode
        self.tokenizer = tokenizer
        self.dim = dim
        self.name = name
        self._cache: dict[tuple[str, str], torch.Tensor] = {}

    @torch.no_grad()
    def embed(self, names: list[str], template: str = TEMPLATE) -> torch.Tensor:
        """Text embeddings of ``template`` filled with each class name (each computed once)."""
        todo = [n for n in dict.fromkeys(names) if (template, n) not in self._cache]
        if todo:
            tokens = self.tokenizer([template.format(name=n) for n in todo])
            with self.runtime.autocast():
                out = self._encode(tokens.to(self.runtime.device))
            out = out.float().cpu()
            for n, e in zip(todo, out, strict=True):
                self._cache[(template, n)] = e
        if not names:
            return torch.zeros((0, self.dim))
        return torch.stack([self._cache[(template, n)] for n in names])


@TEXT_ENCODERS.register("tiny")
def build_text_tiny(*, checkpoint: str | Path | None = None,
                    runtime: Runtime = CPU) -> TextEncoder:
    """A 2-layer, 64-wide open_clip text tower: seeded random init with ``checkpoint=None``,
    ``"default"`` the project's tiny CLIP text tower (trained contrastively on source-world
    object crops, ``pretrain/clip.py``), or a weights file."""
    torch.manual_seed(0)
    tower = TextTransformer(context_length=16, vocab_size=49408, width=64, heads=2, layers=2,
                            output_dim=64)
    if checkpoint is not None:
        from pseudolabel.models import assets

        path = assets.resolve(checkpoint, "text")
        load_weights(tower, load_state_dict(path), str(path))
    tower.eval()
    tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=16)
    return TextEncoder(tower, tokenizer, 64, tower, "tiny", runtime)


def build_clip_text(model_name: str = "ViT-B-32",
                    pretrained: str | Path | None = "laion2b_s34b_b79k",
                    runtime: Runtime = CPU) -> TextEncoder:
    """An open_clip model's text tower; ``pretrained`` is a tag or a local checkpoint file."""
    if pretrained is not None and (Path(pretrained).suffix or "/" in str(pretrained)):
        if not Path(pretrained).is_file():
            raise ValueError(f"{pretrained}: CLIP checkpoint not found (--clip-pretrained)")
    try:
        model = open_clip.create_model(model_name, pretrained=str(pretrained) if pretrained
                                       else None, weights_only=True)
    except RuntimeError as exc:
        raise ValueError(
            f"CLIP weights {model_name}/{pretrained} could not be loaded ({exc}). Offline, "
            "download the checkpoint elsewhere and pass --clip-pretrained PATH."
        ) from None
    model.eval()
    tokenizer = open_clip.get_tokenizer(model_name)
    with torch.no_grad():  # the embedding width, whatever the projection's form
        dim = model.encode_text(tokenizer(["x"])).shape[-1]
    return TextEncoder(model.encode_text, tokenizer, int(dim), model, model_name, runtime)


def build_text_encoder(name: str, *, checkpoint: str | Path | None = None,
                       runtime: Runtime = CPU) -> TextEncoder:
    """``tiny`` (a registered preset) or an open_clip model name; ``checkpoint``: tag or path."""
    if name in TEXT_ENCODERS:
        return TEXT_ENCODERS.get(name)(checkpoint=checkpoint, runtime=runtime)
    if name not in open_clip.list_models():
        raise ValueError(f"unknown text encoder {name!r}; use 'tiny' or an open_clip model "
                         f"such as ViT-B-32")
    return build_clip_text(name, checkpoint, runtime)
