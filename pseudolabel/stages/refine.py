"""``pseudolabel refine``: SAMRefiner (seed 002) over a COCO file or a folder of label maps.

Each image is encoded once and all its masks are refined in one batched decode
(``pseudolabel.samrefiner.refine_masks``); with ``zoom`` on, each mask is decoded on its own
crop around its box prompt (the whole image is still encoded when CEBox needs its features).

* COCO instance masks: the output is the same COCO file with each non-crowd mask replaced by
  its refined mask (``bbox``, ``area`` recomputed) and a ``refine`` record (predicted IoU,
  box prompt, whether CEBox grew it). It is streamed as it is written.
* Semantic label maps (one PNG per image, class values, ``background`` and ``ignore``
  values): each class's mask is split into regions and merged (split-then-merge, §3.2);
  every region is refined like an instance; the refined regions are painted back, the one
  with the higher predicted IoU winning where two overlap; ignore pixels stay ignore. The
  options are recorded in the output folder's ``refine.json``; output PNGs already present
  are skipped, so an interrupted run resumes, and a run with other options refuses a folder
  that holds maps made with different ones.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from pseudolabel.data.coco import CocoStreamWriter, load_coco
from pseudolabel.data.images import load_image, read_full_image
from pseudolabel.data.masks import mask_to_rle, rle_area, rle_to_mask, rle_to_xywh
from pseudolabel.models import assets
from pseudolabel.models.predictor import PromptedSam, ZoomSpec
from pseudolabel.models.sam import build_sam
from pseudolabel.runtime import CPU, Runtime
from pseudolabel.samrefiner import PROMPTS, needs_embedding, refine_masks, split_then_merge

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def load_refiner(sam_model: str = "tiny_hr", checkpoint: str | None = "default",
                 adapter: str | Path | None = None, runtime: Runtime = CPU) -> PromptedSam:
    """SAM for refinement (``default``: the shipped tiny SAM), with an IoU adapter if given,
    on ``runtime``'s device."""
    ckpt = assets.resolve_sam(sam_model, checkpoint)
    sam = build_sam(sam_model, checkpoint=ckpt).eval()
    if adapter is not None:
        from pseudolabel.models.iou_adapter import attach_iou_adapter, load_iou_adapter

        attach_iou_adapter(sam, load_iou_adapter(adapter))
    return PromptedSam(sam, runtime=runtime)


def _options(prompts: tuple[str, ...], iters: int, cebox: bool, zoom: ZoomSpec | None
             ) -> dict:
    unknown = [p for p in prompts if p not in PROMPTS]
    if unknown or not prompts:
        raise ValueError(f"--prompts {','.join(prompts)}: choose from {','.join(PROMPTS)}")
    if iters < 1:
        raise ValueError(f"--iters must be >= 1, got {iters}")
    # a mask is zoomed around its box prompt; without one it decodes on the whole image
    zoomed = zoom is not None and zoom.on and "box" in prompts
    return {"prompts": tuple(prompts), "iters": iters, "cebox": cebox,
            "zoom": zoom if zoomed else None}


def _record(source: str, opts: dict, manifest: dict | None, **extra) -> dict:
    """What a refined output records: its input, the options, ``manifest`` (the SAM)."""
    return {"coarse": source, **opts, "prompts": list(opts["prompts"]),
            "zoom": opts["zoom"].record() if opts["zoom"] else None, **extra,
            **(manifest or {}), "reference": "seed 002 (SAMRefiner)"}


def _refine(sam: PromptedSam, pixels: np.ndarray, masks: np.ndarray, opts: dict):
    """``refine_masks`` on one image, encoding it whole only where that is used."""
    whole = needs_embedding(opts.get("prompts", PROMPTS), opts.get("cebox", True),
                            opts.get("zoom"))
    return refine_masks(sam, sam.encode([pixels]) if whole else None, masks, image=pixels,
                        **opts)


def refine_coco(coarse_path: str | Path, image_root: str | Path, out: str | Path,
                sam: PromptedSam, *, prompts: tuple[str, ...] = PROMPTS, iters: int = 1,
                cebox: bool = True, zoom: ZoomSpec | None = None, progress: bool = True,
                manifest: dict | None = None) -> dict:
    """Refine every non-crowd mask of ``coarse_path``; write the refined COCO file to ``out``."""
    opts = _options(prompts, iters, cebox, zoom)
    t0 = time.perf_counter()
    coarse = load_coco(coarse_path)
    manifest = _record(str(coarse_path), opts, manifest)
    writer = CocoStreamWriter(Path(out), coarse, None)  # info, with failures, at the end
    counts: Counter = Counter()
    failed: list[dict] = []
    bar = tqdm(coarse.images, desc="refine", unit="img", disable=not progress)
    try:
        for img in bar:
            anns = coarse.anns_by_image[img["id"]]
            live = [a for a in anns if not a.get("iscrowd", 0)]
            refined = None
            if live:
                pixels, reason = read_full_image(image_root, img)
                if reason:  # the image's coarse masks are kept as they are
                    failed.append({"image_id": img["id"], "file_name": img["file_name"],
                                   "reason": reason})
                    for ann in anns:
                        writer.write(ann)
                    continue
                masks = np.stack([rle_to_mask(coarse.rle(a)) for a in live])
                refined = _refine(sam, pixels, masks, opts)
            k = 0
            for ann in anns:
                if ann.get("iscrowd", 0):
                    writer.write(ann)
                    continue
                rle = mask_to_rle(refined.masks[k])
                writer.write({**ann, "segmentation": rle, "bbox": rle_to_xywh(rle),
                              "area": rle_area(rle),
                              "refine": {"predicted_iou": round(float(refined.scores[k]), 4),
                                         "box": [float(v) for v in refined.boxes[k]],
                                         "box_expanded": bool(refined.expanded[k])}})
                counts["refined"] += 1
                counts["box_expanded"] += bool(refined.expanded[k])
                counts["unchanged"] += bool((refined.masks[k] == masks[k]).all())
                k += 1
    except BaseException:
        writer.abort()
        raise
    writer.close({**coarse.info, "pseudolabel_refine": {**manifest, "failed_images": failed}})
    seconds = time.perf_counter() - t0
    return {"out": str(out), **counts, "images": len(coarse.images), "failed": failed,
            "skipped_input": [str(p) for p in coarse.report.problems],
            "seconds": round(seconds, 2)}




def _image_for(stem: str, image_root: Path) -> Path:
    for suffix in IMAGE_SUFFIXES:
        path = image_root / f"{stem}{suffix}"
        if path.is_file():
            return path
    raise ValueError(f"{image_root}: no image named {stem} "
                     f"(looked for {', '.join(IMAGE_SUFFIXES)})")


def refine_label_map(sam: PromptedSam, pixels: np.ndarray, labels: np.ndarray, *,
                     background: int = 0, ignore: int = 255, min_area: int = 10,
                     **opts) -> tuple[np.ndarray, int]:
    """One semantic label map refined: split-then-merge regions per class, refined together.

    Returns the refined map and the number of regions.
    """
    classes = [int(c) for c in np.unique(labels) if c not in (background, ignore)]
    regions, owner = [], []
    for c in classes:
        for region in split_then_merge(labels == c, min_area=min_area):
            regions.append(region)
            owner.append(c)
    out = np.full(labels.shape, background, dtype=labels.dtype)
    if regions:
        refined = _refine(sam, pixels, np.stack(regions), opts)
        best = np.full(labels.shape, -np.inf)
        for mask, score, c in zip(refined.masks, refined.scores, owner, strict=True):
            win = mask & (score > best)
            out[win] = c
            best[win] = score
    out[labels == ignore] = ignore
    return out, len(regions)


def refine_semantic(coarse_dir: str | Path, image_root: str | Path, out_dir: str | Path,
                    sam: PromptedSam, *, prompts: tuple[str, ...] = PROMPTS, iters: int = 1,
                    cebox: bool = True, zoom: ZoomSpec | None = None, background: int = 0,
                    ignore: int = 255, min_area: int = 10, progress: bool = True,
                    manifest: dict | None = None) -> dict:
    """Refine every ``*.png`` label map of ``coarse_dir`` into ``out_dir`` (same names).

    ``manifest`` (e.g. the SAM model and checkpoint) is recorded beside the options in
    ``out_dir/refine.json``; maps already in ``out_dir`` are kept only when that record
    matches (else ``ValueError``: they were refined otherwise)."""
    opts = _options(prompts, iters, cebox, zoom)
    coarse_dir, image_root, out_dir = Path(coarse_dir), Path(image_root), Path(out_dir)
    files = sorted(coarse_dir.glob("*.png"))
    if not files:
        raise ValueError(f"{coarse_dir}: no .png label maps found")
    record = _record(str(coarse_dir.resolve()), opts, manifest, background=background,
                     ignore=ignore, min_area=min_area)
    _claim_folder(out_dir, record, [f.name for f in files])
    counts: Counter = Counter()
    failed = []
    for path in tqdm(files, desc="refine semantic", unit="img", disable=not progress):
        target = out_dir / path.name
        if target.is_file():
            counts["skipped_existing"] += 1
            continue
        try:
            labels, pixels = _label_map_and_image(path, image_root)
        except ValueError as exc:  # this map is skipped and recorded; the others go on
            failed.append({"label_map": path.name, "reason": str(exc)})
            continue
        refined, n = refine_label_map(sam, pixels, labels, background=background,
                                      ignore=ignore, min_area=min_area, **opts)
        tmp = target.with_name(target.name + ".tmp.png")
        Image.fromarray(refined).save(tmp)
        tmp.replace(target)
        counts["images"] += 1
        counts["regions"] += n
    return {"out": str(out_dir), **counts, "failed": failed}


def _claim_folder(out_dir: Path, record: dict, names: list[str]) -> None:
    """Write ``record`` to ``out_dir/refine.json``, or check it against the one there when
    ``out_dir`` already holds some of ``names``."""
    path = out_dir / "refine.json"
    done = [n for n in names if (out_dir / n).is_file()]
    if done:
        old = json.loads(path.read_text()) if path.is_file() else None
        if old != json.loads(json.dumps(record)):
            what = ("were refined with other options: " + ", ".join(
                f"{k} {old.get(k)!r} -> {record.get(k)!r}" for k in sorted(
                    set(old) | set(record)) if old.get(k) != record.get(k))
                    if old is not None else "carry no refine.json record of their options")
            raise ValueError(f"{out_dir}: {len(done)} label maps there {what}; pass another "
                             "--out or delete them")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)


def _label_map_and_image(path: Path, image_root: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with Image.open(path) as im:
            labels = np.asarray(im)
    except OSError as exc:
        raise ValueError(f"{path}: not a readable label map ({exc})") from None
    if labels.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel label map, got shape "
                         f"{labels.shape}")
    pixels = load_image(_image_for(path.stem, image_root))
    if pixels.shape[:2] != labels.shape:
        raise ValueError(f"{path}: label map is {labels.shape[1]}x{labels.shape[0]}, its "
                         f"image {pixels.shape[1]}x{pixels.shape[0]}")
    return labels, pixels


def adapt_iou(coarse_path: str | Path, image_root: str | Path, out: str | Path,
              sam: PromptedSam, *, seed: int = 0, batch: int = 5, lr: float = 0.01,
              milestones: tuple[int, ...] = (60, 100), margin: float = 0.02, rank: int = 4,
              max_images: int | None = None, progress: bool = True) -> dict:
    """SAMRefiner++ (§3.3, A.2): train an IoU adaptor on ``coarse_path``'s masks, one epoch.

    Each coarse mask gets one single prompt, a point (distance-guided positive point) or its
    tight box, drawn at random; SAM's three outputs are ranked by their IoU with the coarse
    mask and eq. 4 trains the adaptor to rank the best one first. An optimizer step is taken
    each time ``batch`` masks have contributed. Writes the adaptor (safetensors) to ``out``.
    """
    import torch

    from pseudolabel.data.masks import masks_to_boxes_xyxy
    from pseudolabel.models.iou_adapter import attach_iou_adapter, ranking_loss, save_iou_adapter
    from pseudolabel.samrefiner import distance_points

    coarse = load_coco(coarse_path)
    lora = attach_iou_adapter(sam.sam, rank=rank).to(sam.device)
    params = [lora.down.weight, lora.up.weight]
    opt = torch.optim.SGD(params, lr=lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(milestones), gamma=0.1)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    images = coarse.images if max_images is None else coarse.images[:max_images]
    pending, steps, losses, seen, skipped = 0, 0, [], 0, []
    bar = tqdm(images, desc="refine-adapt", unit="img", disable=not progress)
    for img in bar:
        live = [a for a in coarse.anns_by_image[img["id"]] if not a.get("iscrowd", 0)]
        masks = [rle_to_mask(coarse.rle(a)) for a in live]
        masks = [m for m in masks if m.any()]
        if not masks:
            continue
        pixels, reason = read_full_image(image_root, img)
        if reason:
            skipped.append({"image_id": img["id"], "reason": reason})
            continue
        emb = sam.encode([pixels])
        original, input_size = emb.original_sizes[0], emb.input_sizes[0]
        stack = np.stack(masks)
        use_box = rng.random(len(masks)) < 0.5
        loss_sum = 0.0
        for kind in (False, True):
            idx = np.flatnonzero(use_box == kind)
            if not len(idx):
                continue
            if kind:
                points, boxes = sam.prompt_tensors(original,
                                                   boxes_xyxy=masks_to_boxes_xyxy(stack[idx]))
            else:
                xy = np.array([distance_points(stack[i])[0][::-1] for i in idx], dtype=float)
                points, boxes = sam.prompt_tensors(original, points_xy=xy)
            low_res, pred_iou = sam.decode_tensors(emb.embeddings, points, boxes, None, None,
                                                   multimask=True)
            with torch.no_grad():
                out_masks = sam.sam.postprocess_masks(low_res, input_size, original) \
                    > sam.sam.mask_threshold
                target = torch.as_tensor(stack[idx]).to(out_masks.device)[:, None]
                inter = (out_masks & target).flatten(2).sum(-1).float()
                union = (out_masks | target).flatten(2).sum(-1).float().clamp_min(1)
                coarse_iou = inter / union
            loss = ranking_loss(pred_iou, coarse_iou, margin) * len(idx) / batch
            loss.backward()
            loss_sum += float(loss.detach()) * batch
        pending += len(masks)
        seen += len(masks)
        losses.append(loss_sum / len(masks))
        if pending >= batch:
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            steps += 1
            pending = 0
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", steps=steps)
    if pending:
        opt.step()
        steps += 1
    meta = {"coarse": str(coarse_path), "masks": seen, "steps": steps, "lr": lr,
            "batch": batch, "milestones": list(milestones), "margin": margin, "seed": seed}
    save_iou_adapter(out, lora, meta)
    return {"out": str(out), **meta, "mean_loss": float(np.mean(losses)) if losses else 0.0,
            "failed": skipped, "skipped_input": [str(p) for p in coarse.report.problems]}
