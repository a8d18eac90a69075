"""``pseudolabel evaluate --teacher / --detector``: foundation models on GT-simulated prompts."""

from __future__ import annotations

from pathlib import Path

from pseudolabel.data.coco import load_coco
from pseudolabel.evaluation.teacher import PROMPT_KINDS, detector_ap, teacher_miou
from pseudolabel.models import assets
from pseudolabel.models.grounding_dino import build_detector
from pseudolabel.models.predictor import PromptedSam, ZoomSpec
from pseudolabel.models.sam import build_sam
from pseudolabel.runtime import CPU, Runtime


def _image_ids(gt, max_images: int | None) -> list[int]:
    ids = [img["id"] for img in gt.images]
    return ids if max_images is None else ids[:max_images]


def evaluate_teacher(checkpoint: str, sam_model: str, gt_path: str | Path,
                     image_root: str | Path, prompts: tuple[str, ...] = PROMPT_KINDS,
                     max_images: int | None = None, seed: int = 0,
                     runtime: Runtime = CPU, zoom: ZoomSpec | None = None) -> dict:
    """mIoU per prompt kind of a (class-agnostic) SAM checkpoint; ``"default"`` = shipped.
    ``zoom`` (on) decodes box prompts on zoomed crops, as generate does."""
    unknown = [p for p in prompts if p not in PROMPT_KINDS]
    if unknown:
        raise ValueError(f"unknown prompt kinds {unknown}; expected some of {PROMPT_KINDS}")
    ckpt = assets.resolve_sam(sam_model, checkpoint)
    predictor = PromptedSam(build_sam(sam_model, checkpoint=ckpt).eval(), runtime=runtime)
    gt = load_coco(gt_path)
    result = teacher_miou(predictor, gt, image_root, prompts=prompts, seed=seed,
                          image_ids=_image_ids(gt, max_images), zoom=zoom)
    return {"teacher": str(checkpoint), "sam_model": sam_model, "gt": str(gt_path),
            "zoom": zoom.record() if zoom else None, "mIoU": result}


def evaluate_detector(detector: str, checkpoint: str | None, gt_path: str | Path,
                      image_root: str | Path, max_images: int | None = None,
                      runtime: Runtime = CPU) -> dict:
    """Box AP / AP50 of Grounding DINO prompted with the whole label space of ``gt``."""
    ckpt = assets.resolve(checkpoint, "gdino") if detector == "tiny" else None
    gt = load_coco(gt_path)
    result = detector_ap(build_detector(detector, checkpoint=ckpt, runtime=runtime), gt,
                         image_root,
                         image_ids=_image_ids(gt, max_images))
    return {"detector": detector, "checkpoint": str(checkpoint), "gt": str(gt_path), **result}


def evaluate_run_teachers(run_dir: str | Path, gt_path: str | Path, image_root: str | Path,
                          max_images: int | None = None, seed: int = 0,
                          progress: bool = True, runtime: Runtime = CPU,
                          zoom: ZoomSpec | None = None) -> dict:
    """Each trained teacher of a run on its own prompt kind, next to the zero-shot SAM
    (seed 001 Table 5's layout): ``{"zero-shot": {kind: mIoU}, "<teacher>": {kind: mIoU}}``."""
    from pseudolabel.teacher.model import load_base_sam, load_teacher, read_teacher_meta

    run_dir = Path(run_dir)
    stems = sorted(p.with_suffix("") for p in (run_dir / "teacher").glob("*/teacher.json"))
    if not stems:
        raise ValueError(f"{run_dir}: no trained teacher (expected teacher/<name>/teacher.json)")
    gt = load_coco(gt_path)
    ids = _image_ids(gt, max_images)
    rows = {c: r for r, c in enumerate(gt.category_ids)}
    result: dict[str, dict] = {}
    kinds = set()
    bases: dict[tuple, object] = {}  # one base SAM per checkpoint, shared by its teachers
    for stem in stems:
        m = read_teacher_meta(stem)
        key = (m["sam_model"], m["sam_checkpoint"])
        if key not in bases:
            bases[key] = load_base_sam(*key)
        base = bases[key]
        teacher, meta = load_teacher(stem, base, runtime)
        if meta["category_ids"] != gt.category_ids:
            raise ValueError(f"{stem}: trained on categories {meta['category_ids']}, but "
                             f"{gt_path} has {gt.category_ids}")
        kinds.add(meta["prompt"])
        r = teacher_miou(teacher, gt, image_root, prompts=(meta["prompt"],), seed=seed,
                         image_ids=ids, category_rows=rows if meta["class_aware"] else None,
                         progress=progress, zoom=zoom)
        result[meta["kind"]] = {k: v["mIoU"] for k, v in r.items()}
    zero = teacher_miou(PromptedSam(base, runtime=runtime), gt, image_root,
                        prompts=tuple(sorted(kinds)), seed=seed, image_ids=ids,
                        progress=progress, zoom=zoom)
    result = {"zero-shot": {k: v["mIoU"] for k, v in zero.items()}, **result}
    return {"run": str(run_dir), "gt": str(gt_path), "zoom": zoom.record() if zoom else None,
            "mIoU": result}
