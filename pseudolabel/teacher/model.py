"""Teachers: which prompts each one takes, how it is built, saved and loaded.

A teacher checkpoint is ``<name>.safetensors`` (the trainable parts: prompt encoder(s), mask
decoder, class projection and ``G_zero``, plus the class-embedding table) and
``<name>.json`` (kind, base SAM and its sha256, label space, config, steps, losses, split).
The frozen image encoder is not stored: it is the base SAM checkpoint's. Teachers loaded
together share one base SAM's image encoder (:func:`load_base_sam`, :func:`on_shared_encoder`):
its weights are read and held once, however many teachers a setting prompts.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from segment_anything.modeling import Sam
from torch import nn

from pseudolabel.models import assets
from pseudolabel.models.checkpoints import load_state_dict, load_weights, save_safetensors
from pseudolabel.models.class_aware import ClassAwarePromptEncoder
from pseudolabel.models.predictor import PromptedSam
from pseudolabel.models.sam import build_sam
from pseudolabel.runtime import CPU, Runtime


@dataclass(frozen=True)
class TeacherKind:
    """Prompts a teacher is trained with (seed 001: §3.2 box-cls, §3.4 P-SAM / BP-SAM, §3.5 box)."""

    name: str
    box: bool
    point: bool
    class_aware: bool

    @property
    def prompt(self) -> str:
        """The evaluation prompt kind of ``evaluation.teacher`` this teacher answers."""
        return {(True, False): "box", (False, True): "point", (True, True): "box+point"}[
            (self.box, self.point)]


TEACHERS = {
    "box": TeacherKind("box", box=True, point=False, class_aware=False),
    "box-cls": TeacherKind("box-cls", box=True, point=False, class_aware=True),
    "point-cls": TeacherKind("point-cls", box=False, point=True, class_aware=True),
    "boxpoint-cls": TeacherKind("boxpoint-cls", box=True, point=True, class_aware=True),
}


def teacher_kind(name: str) -> TeacherKind:
    if name not in TEACHERS:
        raise ValueError(f"unknown teacher {name!r}; expected one of {list(TEACHERS)}")
    return TEACHERS[name]


def load_base_sam(sam_model: str, sam_checkpoint: str | None) -> Sam:
    """The base SAM of a run (``"default"``: the shipped weights; ``None``: random)."""
    ckpt = assets.resolve_sam(sam_model, sam_checkpoint)
    return build_sam(sam_model, checkpoint=ckpt, pretrained=ckpt is not None).eval()


def on_shared_encoder(base: Sam) -> Sam:
    """A SAM holding ``base``'s image encoder (the same module, not a copy) and its own copies
    of the prompt encoder and mask decoder, which a teacher trains or loads."""
    sam = Sam(image_encoder=base.image_encoder,
              prompt_encoder=copy.deepcopy(base.prompt_encoder),
              mask_decoder=copy.deepcopy(base.mask_decoder),
              pixel_mean=base.pixel_mean.flatten().cpu().tolist(),
              pixel_std=base.pixel_std.flatten().cpu().tolist())
    return sam.to(base.pixel_mean.device).train(base.training)


def build_teacher(sam: Sam, class_aware: bool,
                  class_embeddings: torch.Tensor | None = None,
                  runtime: Runtime = CPU) -> PromptedSam:
    """Freeze the image encoder; add the class-aware prompt encoder when asked (§3.1, §4.1)."""
    for p in sam.image_encoder.parameters():
        p.requires_grad_(False)
    if not class_aware:
        return PromptedSam(sam, runtime=runtime)
    if class_embeddings is None:
        raise ValueError("a class-aware teacher needs class embeddings")
    encoder = ClassAwarePromptEncoder(sam.prompt_encoder, class_embeddings.shape[1])
    return PromptedSam(sam, encoder, class_embeddings, runtime=runtime)


class TeacherParts(nn.ModuleDict):
    """What fine-tuning updates and a teacher checkpoint stores (the mask decoder and the
    plain or class-aware prompt encoder), with a forward that decodes through them, so
    DistributedDataParallel can wrap exactly these parts (not the frozen image encoder)."""

    def __init__(self, teacher: PromptedSam) -> None:
        parts = {"mask_decoder": teacher.sam.mask_decoder}
        if teacher.class_encoder is None:
            parts["prompt_encoder"] = teacher.sam.prompt_encoder
        else:
            parts["class_encoder"] = teacher.class_encoder
        super().__init__(parts)
        self._teacher = [teacher]  # a plain reference, not a submodule

    def forward(self, embeddings, points, boxes, class_ids, multimask: bool):
        """``PromptedSam.decode_tensors`` of the teacher (one embedding per prompt)."""
        return self._teacher[0].decode_tensors(embeddings, points, boxes, None, class_ids,
                                               multimask)


def trainable(teacher: PromptedSam) -> TeacherParts:
    """What fine-tuning updates and a teacher checkpoint stores."""
    return TeacherParts(teacher)


def save_teacher(path_stem: Path, teacher: PromptedSam, meta: dict) -> None:
    state = dict(trainable(teacher).state_dict())
    if teacher.class_embeddings is not None:
        state["class_embeddings"] = teacher.class_embeddings
    save_safetensors(path_stem.with_suffix(".safetensors"), state)
    path_stem.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")


def read_teacher_meta(path_stem: str | Path) -> dict:
    meta_path = Path(path_stem).with_suffix(".json")
    if not meta_path.is_file():
        raise ValueError(f"{meta_path}: teacher metadata not found")
    return json.loads(meta_path.read_text())


def load_teacher(path_stem: str | Path, base: Sam | None = None,
                 runtime: Runtime = CPU) -> tuple[PromptedSam, dict]:
    """Rebuild a saved teacher on ``base`` (shared image encoder; by default the base SAM its
    meta names, loaded here), then its stored parts (strict)."""
    path_stem = Path(path_stem)
    meta = read_teacher_meta(path_stem)
    state = load_state_dict(path_stem.with_suffix(".safetensors"))
    if base is None:
        base = load_base_sam(meta["sam_model"], meta["sam_checkpoint"])
    emb = state.pop("class_embeddings", None)
    teacher = build_teacher(on_shared_encoder(base), meta["class_aware"], emb, runtime)
    load_weights(trainable(teacher), state, str(path_stem.with_suffix(".safetensors")))
    teacher.sam.eval()
    return teacher, meta
