"""Pseudo-masks for one weak setting (seed 001 §3.2-3.5): streaming, resumable, sharded.

Settings and their prompts:

* ``none`` (§3.2): Grounding DINO with the whole label space; boxes with confidence >= 0.3
  after NMS at 0.9 prompt the ``box-cls`` teacher with Grounding DINO's class.
* ``class`` (§3.3): the same with the prompt restricted to the image's tags.
* ``point+class`` (§3.4): ``point-cls`` (P-SAM) masks of the given points give boxes
  ``B_sam``; Grounding DINO on the image's tags; Algorithm 1 merges both box sets
  (:func:`pseudolabel.refine.merge_prompt_boxes`); ``boxpoint-cls`` (BP-SAM) prompted with
  the merged boxes and the points gives the pseudo-masks. ``refine=False`` keeps P-SAM's
  masks (seed 001 Table 5's "point" row).
* ``box+class`` (§3.5): the ``box`` teacher prompted with the given boxes.

Fully labelled images keep their GT masks. Multimask outputs keep the mask with the highest
predicted IoU, which becomes the pseudo-mask's ``score``. ``zero_shot=True`` prompts the base
SAM (no fine-tuning, no class prompt) instead of the teachers.

Work is cut into parts of ``part_size`` weakly labelled images (sorted by id). Each part is
written to ``<run>/pseudo/.parts/<setting>-<fingerprint>/`` as soon as it is done; a re-run
skips finished parts, and the final file is merged from them in image order, so an
interrupted run, a resumed run and a sharded run all write the same bytes. Shard ``i/n``
takes parts ``k`` with ``k % n == i``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from segment_anything.utils.amg import calculate_stability_score
from tqdm import tqdm

from pseudolabel.data.coco import CocoDataset, CocoStreamWriter, load_coco
from pseudolabel.data.images import load_image, resolve_image_path
from pseudolabel.data.masks import mask_to_rle, masks_to_boxes_xyxy, xywh_to_xyxy, xyxy_to_xywh
from pseudolabel.models.predictor import ImageEmbeddings, PromptedSam, pixel_centre_to_sam
from pseudolabel.refine import merge_prompt_boxes
from pseudolabel.samrefiner import refine_masks
from pseudolabel.stages.weaken import file_sha256

SETTINGS = ("none", "class", "point+class", "box+class")
# The teachers each setting prompts (seed 001 §3.2-3.5).
SETTING_TEACHERS = {"none": ("box-cls",), "class": ("box-cls",),
                    "point+class": ("point-cls", "boxpoint-cls"), "box+class": ("box",)}
STABILITY_OFFSET = 1.0  # SAM's stability score: IoU of the masks at logit +-1


@dataclass
class Teachers:
    """The prompted models of one run: ``models[name]`` and, per name, whether it takes
    class prompts, plus ``rows`` (category id -> class-embedding row)."""

    models: dict[str, PromptedSam]
    class_aware: dict[str, bool]
    rows: dict[int, int]
    describe: dict[str, dict] = field(default_factory=dict)

    @property
    def encoder(self) -> PromptedSam:
        """Any of the models: they share one frozen image encoder (checked on load)."""
        return next(iter(self.models.values()))


def load_detector(models, checkpoint: str | None = None):
    """The config's Grounding DINO (``models``: a ``config.Models``) and the identity its
    generate parts are keyed by: the weights' sha256, or the hub name.

    Keying by the file's content, not its path, keeps new weights at the same path from
    reusing parts made with the old ones. ``checkpoint`` overrides the config's (tiny only).
    """
    from pseudolabel.models import assets
    from pseudolabel.models.grounding_dino import build_detector

    name = models.detector
    ckpt = assets.resolve(checkpoint or models.detector_checkpoint, "gdino") \
        if name == "tiny" else None
    return build_detector(name, checkpoint=ckpt), file_sha256(ckpt) if ckpt else name


def load_run_teachers(run_dir: Path, setting: str, category_ids: list[int], *,
                      refine: bool = True, zero_shot: bool = False, sam_model: str = "tiny",
                      sam_checkpoint: str | None = "default") -> Teachers:
    """The teachers ``setting`` needs from ``run_dir/teacher/`` (or the base SAM)."""
    from pseudolabel.models import assets
    from pseudolabel.models.sam import build_sam
    from pseudolabel.teacher.model import load_teacher

    names = SETTING_TEACHERS[setting]
    if setting == "point+class" and not refine:
        names = ("point-cls",)
    if zero_shot:
        ckpt = assets.resolve(sam_checkpoint, "sam") if sam_checkpoint else None
        base = PromptedSam(build_sam(sam_model, checkpoint=ckpt, pretrained=ckpt is not None))
        base.sam.eval()
        return Teachers({n: base for n in names}, {n: False for n in names}, {},
                        {n: {"zero_shot": True, "sam_model": sam_model,
                             "sam_sha256": file_sha256(ckpt) if ckpt else None} for n in names})
    models, aware, describe, encoders = {}, {}, {}, set()
    for name in names:
        stem = run_dir / "teacher" / name / "teacher"
        if not stem.with_suffix(".json").is_file():
            raise ValueError(f"{stem.with_suffix('.json')}: teacher {name!r} not found; the "
                             f"{setting} setting needs {', '.join(names)} (run pseudolabel "
                             f"teacher-finetune --teachers {','.join(names)}, or pass "
                             "--zero-shot)")
        model, meta = load_teacher(stem)
        if meta["class_aware"] and meta["category_ids"] != category_ids:
            raise ValueError(f"{stem}: trained on categories {meta['category_ids']}, the weak "
                             f"file has {category_ids}")
        encoders.add((meta["sam_model"], meta.get("sam_sha256")))
        models[name], aware[name] = model, bool(meta["class_aware"])
        describe[name] = {"sam_model": meta["sam_model"], "sam_sha256": meta.get("sam_sha256"),
                          "teacher_sha256": file_sha256(stem.with_suffix(".safetensors")),
                          "steps": meta["steps"], "split_hash": meta.get("split_hash")}
    if len(encoders) > 1:
        raise ValueError(f"{run_dir}: the teachers of {setting} were fine-tuned from different "
                         f"SAM checkpoints {sorted(map(str, encoders))}; they must share one "
                         "frozen encoder")
    return Teachers(models, aware, {c: r for r, c in enumerate(category_ids)}, describe)


# -- one image -------------------------------------------------------------------------------
@dataclass
class Proposal:
    """What prompts one pseudo-mask, before decoding."""

    category_id: int
    weak: dict
    box: np.ndarray | None = None  # XYXY, continuous pixels
    point: np.ndarray | None = None  # (x, y), continuous pixels


def _decode(teachers: Teachers, name: str, emb: ImageEmbeddings, props: list[Proposal],
            boxes: np.ndarray | None, points: np.ndarray | None):
    """Best mask, predicted IoU and stability of each prompt for teacher ``name``."""
    model = teachers.models[name]
    classes = ([teachers.rows[p.category_id] for p in props] if teachers.class_aware[name]
               else None)
    multimask = points is not None and boxes is None  # one point is ambiguous
    out = model.decode(emb, boxes_xyxy=boxes,
                       points_xy=None if points is None else pixel_centre_to_sam(points),
                       class_ids=classes, multimask=multimask, keep_logits=True)
    iou = out.iou_predictions
    best = iou.argmax(dim=1)
    rows = torch.arange(len(best))
    stability = calculate_stability_score(out.logits[rows, best], model.sam.mask_threshold,
                                          STABILITY_OFFSET).numpy()
    return out.masks[rows, best].numpy(), iou[rows, best].numpy(), stability


def _consistency(mask: np.ndarray, prop: Proposal, tags: list[int] | None) -> dict:
    """How the pseudo-mask agrees with the weak label it came from."""
    out: dict = {}
    if prop.point is not None:
        x, y = prop.point
        r, c = int(np.floor(y)), int(np.floor(x))
        out["point_in_mask"] = bool(0 <= r < mask.shape[0] and 0 <= c < mask.shape[1]
                                    and mask[r, c])
    if prop.box is not None:
        x0, y0, x1, y1 = prop.box
        ys, xs = np.nonzero(mask)
        inside = (xs + 0.5 >= x0) & (xs + 0.5 <= x1) & (ys + 0.5 >= y0) & (ys + 0.5 <= y1)
        out["outside_box"] = round(float(1 - inside.mean()), 6) if len(xs) else 0.0
    out["class_in_tags"] = None if tags is None else prop.category_id in tags
    return out


def image_pseudo_masks(setting: str, teachers: Teachers, emb: ImageEmbeddings,
                       weak_anns: list[dict], tags: list[int] | None, detection,
                       refine: bool = True, samrefiner: bool = False) -> tuple[list[dict], int]:
    """Pseudo-annotations (no ids) of one weakly labelled image, and how many prompts gave an
    empty mask (dropped).

    ``samrefiner`` refines the final masks with SAMRefiner (seed 002: point + elastic box +
    Gaussian mask prompts mined from each mask, decoded in one batch from the same image
    embedding, without class prompts); the quality record keeps its predicted IoU.
    """
    if setting in ("none", "class"):
        props = [Proposal(int(c), {"detector_box": [round(float(v), 4) for v in
                                                    xyxy_to_xywh(b[None])[0]],
                                   "detector_score": round(float(s), 6)}, box=b)
                 for b, c, s in zip(detection.boxes_xyxy, detection.labels, detection.scores,
                                    strict=True)]
        name, prompt = "box-cls", "box"
    elif setting == "box+class":
        props = [Proposal(a["category_id"], {"id": a["id"], "bbox": a["bbox"]},
                          box=xywh_to_xyxy([a["bbox"]])[0]) for a in weak_anns]
        name, prompt = "box", "box"
    elif setting == "point+class":
        props = [Proposal(a["category_id"], {"id": a["id"], "point": a["point"]},
                          point=np.asarray(a["point"], dtype=np.float64)) for a in weak_anns]
        name, prompt = "point-cls", "point"
    else:
        raise ValueError(f"unknown setting {setting!r}; expected one of {SETTINGS}")
    if not props:
        return [], 0
    boxes = np.stack([p.box for p in props]) if props[0].box is not None else None
    points = np.stack([p.point for p in props]) if props[0].point is not None else None
    masks, iou, stability = _decode(teachers, name, emb, props, boxes, points)
    if setting == "point+class" and refine:
        sam_boxes = masks_to_boxes_xyxy(masks).astype(np.float64)
        empty = ~masks.reshape(len(masks), -1).any(1)
        sam_boxes[empty] = np.repeat(points[empty], 2, axis=1)  # a point-sized box
        merged = merge_prompt_boxes(detection.boxes_xyxy, detection.scores,
                                    detection.labels, points,
                                    [p.category_id for p in props], sam_boxes)
        for p, b in zip(props, merged, strict=True):
            p.box = b
            p.weak["refined_box"] = [round(float(v), 4) for v in xyxy_to_xywh(b[None])[0]]
        name, prompt = "boxpoint-cls", "box+point"
        masks, iou, stability = _decode(teachers, name, emb, props, merged, points)
    refined_iou = [None] * len(props)
    if samrefiner:
        r = refine_masks(teachers.encoder, emb, masks)
        masks, refined_iou = r.masks, [round(float(v), 6) for v in r.scores]
    out, empty = [], 0
    for p, m, q, s, rq in zip(props, masks, iou, stability, refined_iou, strict=True):
        if not m.any():
            empty += 1
            continue
        rle = mask_to_rle(m)
        ys, xs = np.nonzero(m)
        out.append({
            "category_id": int(p.category_id), "segmentation": rle,
            "bbox": [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()),
                     float(ys.max() + 1 - ys.min())],
            "area": float(m.sum()), "iscrowd": 0, "score": round(float(q), 6),
            "quality": {"predicted_iou": round(float(q), 6), "stability": round(float(s), 6),
                        "prompt": prompt, "teacher": name,
                        **({"samrefiner_iou": rq} if samrefiner else {})},
            "weak": p.weak, "source": "pseudo",
            "consistency": _consistency(m, p, tags),
        })
    return out, empty


# -- the stage -------------------------------------------------------------------------------
@dataclass
class GenerateOptions:
    setting: str
    refine: bool = True
    zero_shot: bool = False
    samrefiner: bool = False
    part_size: int = 16
    workers: int = 2
    encode_batch: int = 8
    box_threshold: float = 0.3  # seed 001 §4.1 (none, class)
    nms_iou: float = 0.9  # seed 001 §4.1 (none, class)


def _fingerprint(weak_path: Path, opts: GenerateOptions, teachers: Teachers,
                 detector_sha: str | None) -> str:
    blob = json.dumps({"weak": file_sha256(weak_path), "setting": opts.setting,
                       "refine": opts.refine, "zero_shot": opts.zero_shot,
                       **({"samrefiner": True} if opts.samrefiner else {}),
                       "part_size": opts.part_size, "box_threshold": opts.box_threshold,
                       "nms_iou": opts.nms_iou, "teachers": teachers.describe,
                       "detector": detector_sha}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def parts_dir(run_dir: Path, setting: str, fingerprint: str) -> Path:
    return run_dir / "pseudo" / ".parts" / f"{setting.replace('+', '_')}-{fingerprint}"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _weak_images(weak: CocoDataset, setting: str) -> list[int]:
    kinds = {img.get("kind") for img in weak.images} - {"fully_labeled"}
    if kinds - {setting}:
        raise ValueError(f"{weak.path}: holds {sorted(k for k in kinds if k)} images; "
                         f"generate --weak {setting} needs a {setting} weak file")
    return sorted(img["id"] for img in weak.images if img.get("kind") == setting)


def _check_split(run_dir: Path, weak: CocoDataset, opts: GenerateOptions) -> None:
    """Fine-tuned teachers must have seen exactly the weak file's fully labelled images."""
    path = run_dir / "split.json"
    if opts.zero_shot or not path.is_file():
        return
    split = json.loads(path.read_text())
    full = {img["id"] for img in weak.images if img.get("kind") == "fully_labeled"}
    if set(split["fully_labeled"]) != full:
        raise ValueError(f"{weak.path}: its {len(full)} fully labelled images are not the "
                         f"{len(split['fully_labeled'])} the teachers in {run_dir} were trained "
                         f"on (fraction {split['fraction']}, seed {split['seed']}); weaken with "
                         "the same --fraction and --seed, or use another --run-dir")


def _load_part(pool: ThreadPoolExecutor | None, weak: CocoDataset, image_root: Path,
               part_ids: list[int]):
    """Start loading one part's images (in ``pool``'s threads; PIL releases the GIL)."""
    paths = [resolve_image_path(image_root, weak.image_by_id[i]["file_name"]) for i in part_ids]
    if pool is None:
        return [load_image(p) for p in paths]
    return [pool.submit(load_image, p) for p in paths]


def run_part(part_ids: list[int], weak: CocoDataset, images: list, opts: GenerateOptions,
             teachers: Teachers, detector) -> dict:
    """One part: its image ids, pseudo-annotations in image id order, empty masks dropped.

    ``images`` are arrays or futures of them (loaded in the background).
    """
    images = [im.result() if hasattr(im, "result") else im for im in images]
    embs = []
    for s in range(0, len(images), opts.encode_batch):
        e = teachers.encoder.encode(images[s: s + opts.encode_batch])
        embs += [e[k] for k in range(len(e.original_sizes))]
    detections = [None] * len(images)
    uses_detector = opts.setting in ("none", "class") or (opts.setting == "point+class"
                                                         and opts.refine)
    tags = [weak.image_by_id[i].get("tags") for i in part_ids]
    if uses_detector:
        if detector is None:
            raise ValueError(f"the {opts.setting} setting needs Grounding DINO")
        per_image = None if opts.setting == "none" else [list(t or []) for t in tags]
        refine_all = opts.setting == "point+class"  # Algorithm 1 applies its own tau_c
        detections = detector.detect(
            images, weak.category_ids, [weak.category_by_id[c]["name"] for c in weak.category_ids],
            image_categories=per_image, box_threshold=0.0 if refine_all else opts.box_threshold,
            nms_iou=None if refine_all else opts.nms_iou)
    out, empty = [], 0
    with torch.no_grad():
        for i, image_id in enumerate(part_ids):
            anns = [a for a in weak.anns_by_image[image_id] if not a.get("iscrowd", 0)]
            made, n_empty = image_pseudo_masks(opts.setting, teachers, embs[i], anns,
                                               tags[i] if opts.setting != "none" else None,
                                               detections[i], opts.refine, opts.samrefiner)
            out += [{"image_id": image_id, **a} for a in made]
            empty += n_empty
    return {"images": part_ids, "annotations": out, "empty_dropped": empty}


def generate(weak_path: str | Path, image_root: str | Path, run_dir: str | Path,
             opts: GenerateOptions, teachers: Teachers, detector=None, *,
             detector_sha: str | None = None, out_path: str | Path | None = None,
             shard: tuple[int, int] = (0, 1), merge: bool = True, progress: bool = True,
             barrier=None, only_merge: bool = False) -> dict:
    """Run (this shard of) ``opts.setting`` and, if ``merge``, write the pseudo-label file.

    ``barrier`` (a callable) is called after this shard's parts are written and before the
    merge: under ``torchrun`` every rank generates and rank 0 merges. ``only_merge`` writes
    the file from parts already on disk (``pseudolabel merge``) and generates nothing.
    """
    weak_path, image_root, run_dir = Path(weak_path), Path(image_root), Path(run_dir)
    if opts.setting not in SETTINGS:
        raise ValueError(f"unknown setting {opts.setting!r}; expected one of {SETTINGS}")
    weak = load_coco(weak_path)
    ids = _weak_images(weak, opts.setting)
    _check_split(run_dir, weak, opts)
    fp = _fingerprint(weak_path, opts, teachers, detector_sha)
    pdir = parts_dir(run_dir, opts.setting, fp)
    pdir.mkdir(parents=True, exist_ok=True)
    parts = [ids[s: s + opts.part_size] for s in range(0, len(ids), opts.part_size)]
    index, count = shard
    mine = [k for k in range(len(parts)) if k % count == index]
    todo = [] if only_merge else [k for k in mine
                                  if not (pdir / f"part-{k:06d}.json").is_file()]
    t0, done_images = time.perf_counter(), 0
    bar = tqdm(total=sum(len(parts[k]) for k in mine), desc=f"generate {opts.setting}",
               unit="img", disable=not progress or only_merge,
               initial=sum(len(parts[k]) for k in mine if k not in todo))
    pool = ThreadPoolExecutor(opts.workers) if opts.workers > 0 else None
    try:
        # the next part's images load while this part is on the models
        pending = _load_part(pool, weak, image_root, parts[todo[0]]) if todo else None
        for n, k in enumerate(todo):
            images = pending
            if n + 1 < len(todo):
                pending = _load_part(pool, weak, image_root, parts[todo[n + 1]])
            part = run_part(parts[k], weak, images, opts, teachers, detector)
            _write_atomic(pdir / f"part-{k:06d}.json", json.dumps(part))
            done_images += len(parts[k])
            bar.update(len(parts[k]))
            bar.set_postfix(img_s=f"{done_images / (time.perf_counter() - t0):.1f}")
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    bar.close()
    summary = {"setting": opts.setting, "parts_dir": str(pdir), "parts": len(parts),
               "shard": f"{index}/{count}", "generated_images": done_images}
    if barrier is not None:
        barrier()
    if merge:
        out_path = Path(out_path) if out_path else run_dir / "pseudo" / f"{opts.setting}.json"
        manifest = {"setting": opts.setting, "weak_file": str(weak_path),
                    "weak_sha256": file_sha256(weak_path), "refine": opts.refine,
                    "zero_shot": opts.zero_shot, "samrefiner": opts.samrefiner,
                    "teachers": teachers.describe,
                    "detector_sha256": detector_sha,
                    "thresholds": {"box": opts.box_threshold, "nms_iou": opts.nms_iou,
                                   "algorithm1": {"alpha": 5.0, "beta": 2.0, "tau_c": 0.1}},
                    "fingerprint": fp}
        summary.update(merge_parts(weak, pdir, len(parts), out_path, manifest))
    return summary


def merge_parts(weak: CocoDataset, pdir: Path, num_parts: int, out_path: Path,
                manifest: dict) -> dict:
    """Stream the final COCO file: GT of fully labelled images, crowd regions, then every
    part's pseudo-masks in image order; annotation ids are assigned here (1, 2, ...)."""
    missing = [k for k in range(num_parts) if not (pdir / f"part-{k:06d}.json").is_file()]
    if missing:
        raise ValueError(f"{pdir}: parts {missing[:10]}{'...' if len(missing) > 10 else ''} "
                         f"are missing ({len(missing)} of {num_parts}); run the remaining "
                         "shards first")
    stats = {"pseudo_masks": 0, "gt_masks": 0, "empty_dropped": 0,
             "point_outside_mask": 0, "mostly_outside_box": 0, "class_not_in_tags": 0}
    next_id = 1
    kept_ids = {a["image_id"] for a in weak.annotations}
    writer = CocoStreamWriter(out_path, weak, {**weak.info, "pseudolabel": manifest})

    def emit(ann: dict) -> None:
        nonlocal next_id
        writer.write({"id": next_id, **{k: v for k, v in ann.items() if k != "id"}})
        next_id += 1

    try:
        full = {img["id"] for img in weak.images if img.get("kind") == "fully_labeled"}
        for image_id in sorted(kept_ids):  # GT masks and every crowd region, as given
            for a in weak.anns_by_image[image_id]:
                if image_id in full or a.get("iscrowd", 0):
                    emit({**a, "source": "gt"})
                    stats["gt_masks"] += image_id in full and not a.get("iscrowd", 0)
        for k in range(num_parts):
            part = json.loads((pdir / f"part-{k:06d}.json").read_text())
            for a in part["annotations"]:
                c = a["consistency"]
                stats["pseudo_masks"] += 1
                stats["point_outside_mask"] += c.get("point_in_mask") is False
                stats["mostly_outside_box"] += c.get("outside_box", 0.0) > 0.5
                stats["class_not_in_tags"] += c.get("class_in_tags") is False
                emit(a)
            stats["empty_dropped"] += part["empty_dropped"]
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return {"out": str(out_path), **stats}
