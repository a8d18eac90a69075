"""``pseudolabel evaluate --teacher / --detector``: foundation models on GT-simulated prompts."""

from __future__ import annotations

from pathlib import Path

from pseudolabel.data.coco import load_coco
from pseudolabel.evaluation.teacher import PROMPT_KINDS, detector_ap, teacher_miou
from pseudolabel.models import assets
from pseudolabel.models.grounding_dino import build_detector
from pseudolabel.models.predictor import PromptedSam
from pseudolabel.models.sam import build_sam


def _image_ids(gt, max_images: int | None) -> list[int]:
    ids = [img["id"] for img in gt.images]
    return ids if max_images is None else ids[:max_images]


def evaluate_teacher(checkpoint: str, sam_model: str, gt_path: str | Path,
                     image_root: str | Path, prompts: tuple[str, ...] = PROMPT_KINDS,
                     max_images: int | None = None, seed: int = 0) -> dict:
    """mIoU per prompt kind of a (class-agnostic) SAM checkpoint; ``"default"`` = shipped."""
    unknown = [p for p in prompts if p not in PROMPT_KINDS]
    if unknown:
        raise ValueError(f"unknown prompt kinds {unknown}; expected some of {PROMPT_KINDS}")
    ckpt = assets.resolve(checkpoint, "sam") if sam_model == "tiny" or checkpoint != "default" \
        else None
    predictor = PromptedSam(build_sam(sam_model, checkpoint=ckpt))
    gt = load_coco(gt_path)
    result = teacher_miou(predictor, gt, image_root, prompts=prompts, seed=seed,
                          image_ids=_image_ids(gt, max_images))
    return {"teacher": str(checkpoint), "sam_model": sam_model, "gt": str(gt_path),
            "mIoU": result}


def evaluate_detector(detector: str, checkpoint: str | None, gt_path: str | Path,
                      image_root: str | Path, max_images: int | None = None) -> dict:
    """Box AP / AP50 of Grounding DINO prompted with the whole label space of ``gt``."""
    ckpt = assets.resolve(checkpoint, "gdino") if detector == "tiny" else None
    gt = load_coco(gt_path)
    result = detector_ap(build_detector(detector, checkpoint=ckpt), gt, image_root,
                         image_ids=_image_ids(gt, max_images))
    return {"detector": detector, "checkpoint": str(checkpoint), "gt": str(gt_path), **result}
