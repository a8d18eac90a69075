"""``pseudolabel noise``: noisy copies of a COCO instances file (seed 003, COCO-N and COCO-WAN).

One streaming pass over the images: annotations are noised in order and written as they come
(the final file replaces a temporary one at the end). Every random draw is fixed by the seed
and the instance's position, so ``--workers N`` gives the same file as one worker.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Iterator
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pseudolabel.data.coco import CocoDataset, CocoStreamWriter, load_coco
from pseudolabel.data.masks import (
    mask_to_rle,
    rle_area,
    rle_to_mask,
    rle_to_xywh,
    segmentation_to_rle,
)
from pseudolabel.noise import (
    LEVELS,
    SPATIAL_TYPES,
    NoiseSpec,
    Plan,
    apply_spatial,
    flip_class,
    plan_noise,
)

CHUNK_IMAGES = 32  # images per worker task
WAN_LEVELS = ("easy", "medium", "hard")
WAN_CLASS_NOISE = 0.4  # seed 003 §3.4: the hard level adds 40% symmetric class noise


def _instance_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, 2, index])


def noise_annotation(ann: dict, image: dict, index: int, flip: bool, spatial: str | None,
                     spec: NoiseSpec, categories: list[dict], seed: int) -> tuple[dict, dict]:
    """The noisy copy of one (non-crowd) annotation and what was done to it.

    A spatial operation that would leave an empty mask keeps the clean mask
    (``kept_clean``). ``bbox`` and ``area`` are recomputed from the final mask.
    """
    rng = _instance_rng(seed, index)
    record = {"class_from": None, "spatial": spatial,
              "param": spec.spatial[spatial][1] if spatial else None, "op": None,
              "kept_clean": False}
    out = dict(ann)
    if flip:
        new = flip_class(ann["category_id"], categories, spec.class_mode, rng)
        if new is not None:
            record["class_from"] = ann["category_id"]
            out["category_id"] = new
    rle = _rle(ann, image)
    if spatial is not None:
        mask = rle_to_mask(rle)
        noisy, info = apply_spatial(mask, spatial, record["param"], rng)
        record["op"] = info["op"]
        if noisy.any():
            rle = mask_to_rle(noisy)
        else:
            record["kept_clean"] = True
    out["segmentation"] = rle
    out["bbox"] = rle_to_xywh(rle)
    out["area"] = rle_area(rle)
    out["noise"] = record
    return out, record


def _rle(ann: dict, image: dict) -> dict:
    return segmentation_to_rle(ann["segmentation"], image["height"], image["width"])


# -- worker plumbing ---------------------------------------------------------------------------
_WORKER: dict = {}


def _init_worker(spec: NoiseSpec, categories: list[dict], seed: int) -> None:
    _WORKER.update(spec=spec, categories=categories, seed=seed)


def _noise_chunk(task: list[tuple]) -> list[tuple[dict, dict | None]]:
    """``task``: ``(image, ann, index, flip, spatial)`` rows; crowd rows have ``index`` None."""
    out = []
    for image, ann, index, flip, spatial in task:
        if index is None:
            out.append((ann, None))  # crowd regions are left alone
        else:
            out.append(noise_annotation(ann, image, index, flip, spatial, _WORKER["spec"],
                                        _WORKER["categories"], _WORKER["seed"]))
    return out


def _tasks(gt: CocoDataset, plan: Plan) -> Iterator[list[tuple]]:
    index = 0
    task: list[tuple] = []
    for k, image in enumerate(gt.images):
        for ann in gt.anns_by_image[image["id"]]:
            if ann.get("iscrowd", 0):
                task.append((image, ann, None, False, None))
            else:
                task.append((image, ann, index, bool(plan.flip[index]), plan.spatial[index]))
                index += 1
        if (k + 1) % CHUNK_IMAGES == 0 and task:
            yield task
            task = []
    if task:
        yield task


def _bounded_imap(pool, fn, tasks: Iterator, window: int) -> Iterator:
    """``pool.imap`` in order, with at most ``window`` tasks in flight (``imap`` would queue
    the whole input at once, a second copy of a COCO train file in memory)."""
    pending: deque = deque()
    for task in tasks:
        pending.append(pool.apply_async(fn, (task,)))
        if len(pending) >= window:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def _non_crowd(gt: CocoDataset) -> int:
    return sum(1 for a in gt.annotations if not a.get("iscrowd", 0))


def resolve_spec(level: str | None, spec: str | None) -> tuple[str, NoiseSpec]:
    """``(name, spec)`` from ``--level`` or ``--spec`` (exactly one)."""
    from pseudolabel.noise import parse_spec

    if (level is None) == (spec is None):
        raise ValueError("give exactly one of --level (easy, medium, hard) or --spec")
    if level is not None:
        if level not in LEVELS:
            raise ValueError(f"unknown noise level {level!r}; expected one of {list(LEVELS)}")
        return level, LEVELS[level]
    return "custom", parse_spec(spec)


def noise_file(gt_path: str | Path, out: str | Path, spec: NoiseSpec, *, name: str = "custom",
               seed: int = 0, independent: bool = False, workers: int = 1,
               evaluate: bool = True, progress: bool = True) -> dict:
    """Write a noisy copy of ``gt_path`` to ``out`` and return the summary.

    The summary holds the realised rates (class flips, each spatial type, masks kept clean
    because the operation would have emptied them) and, with ``evaluate``, the mask AP and
    boundary AP of the noisy labels scored against the clean ones (seed 003 Figure 8).
    """
    t0 = time.perf_counter()
    gt = load_coco(gt_path)
    n = _non_crowd(gt)
    plan = plan_noise(n, spec, seed, independent=independent)
    manifest = {"gt": str(gt_path), "level": name, "spec": spec.as_dict(), "seed": seed,
                "sampling": "independent" if independent else "exact",
                "reference": "seed 003 (COCO-N), Table 7"}
    info = {**gt.info, "pseudolabel_noise": manifest}
    counts: Counter = Counter()
    writer = CocoStreamWriter(Path(out), gt, info)
    bar = tqdm(total=len(gt.annotations), desc=f"noise {name}", unit="inst",
               disable=not progress)
    pool = None
    try:
        if workers > 1:
            pool = get_context("spawn").Pool(workers, _init_worker,
                                             (spec, gt.categories, seed))
            results = _bounded_imap(pool, _noise_chunk, _tasks(gt, plan), 4 * workers)
        else:
            _init_worker(spec, gt.categories, seed)
            results = map(_noise_chunk, _tasks(gt, plan))
        for chunk in results:
            for ann, record in chunk:
                writer.write(ann)
                if record is None:
                    counts["crowd_untouched"] += 1
                else:
                    counts["class_flipped"] += record["class_from"] is not None
                    if record["spatial"]:
                        counts[record["spatial"]] += 1
                        counts["kept_clean"] += record["kept_clean"]
            bar.update(len(chunk))
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()  # every result is in: nothing left to wait for
            pool.join()
    writer.close()
    seconds = time.perf_counter() - t0
    summary = {"out": str(out), "level": name, "seed": seed, "instances": n,
               "skipped_input": [str(p) for p in gt.report.problems],
               "crowd_untouched": counts["crowd_untouched"],
               "class_flip_planned": int(plan.flip.sum()),
               "class_flipped": counts["class_flipped"],
               "class_rate": counts["class_flipped"] / max(n, 1),
               "spatial": {k: {"count": counts[k], "rate": counts[k] / max(n, 1),
                               "expected": spec.spatial[k][0]}
                           for k in SPATIAL_TYPES if k in spec.spatial},
               "spatial_rate": sum(counts[k] for k in SPATIAL_TYPES) / max(n, 1),
               "kept_clean": counts["kept_clean"],
               "seconds": round(seconds, 2)}
    if evaluate:
        summary["vs_clean"] = _versus_clean(gt, Path(out))
    return summary


def _versus_clean(gt: CocoDataset, out: Path) -> dict:
    """Mask AP and boundary AP of the noisy file's annotations scored against ``gt``."""
    from pseudolabel.evaluation.coco_eval import evaluate_masks, load_predictions

    result = evaluate_masks(gt, load_predictions(out))
    return {"mask_AP": result["segm"]["AP"], "boundary_AP": result["boundary"]["AP"]}


# -- COCO-WAN ----------------------------------------------------------------------------------
def wan_file(gt_path: str | Path, image_root: str | Path, out: str | Path, level: str, *,
             sam_model: str = "tiny_hr", checkpoint: str | None = "default", seed: int = 0,
             encode_batch: int = 8, evaluate: bool = True, progress: bool = True,
             runtime=None) -> dict:
    """COCO-WAN (seed 003 §3.4): every instance's mask replaced by a zero-shot SAM mask.

    ``easy`` prompts SAM with the GT box (one mask); ``medium`` with the box centre as a
    single positive point (multimask, the mask with the highest predicted IoU, as the
    benchmark's script does); ``hard`` is ``medium`` plus 40% symmetric class noise (eq. 1).
    The GT box is the tight box of the GT mask. An empty SAM mask keeps the GT mask
    (``kept_clean``). Each image is encoded once and all its prompts decoded in one batch,
    on ``runtime``'s device (default: CPU, fp32).
    """
    from pseudolabel.data.images import read_full_image
    from pseudolabel.data.masks import xywh_to_xyxy
    from pseudolabel.models import assets
    from pseudolabel.models.predictor import PromptedSam
    from pseudolabel.models.sam import build_sam
    from pseudolabel.runtime import CPU

    if level not in WAN_LEVELS:
        raise ValueError(f"unknown COCO-WAN level {level!r}; expected one of {WAN_LEVELS}")
    t0 = time.perf_counter()
    gt = load_coco(gt_path)
    ckpt = assets.resolve_sam(sam_model, checkpoint)
    sam = PromptedSam(build_sam(sam_model, checkpoint=ckpt).eval(), runtime=runtime or CPU)
    n = _non_crowd(gt)
    spec = NoiseSpec(WAN_CLASS_NOISE if level == "hard" else 0.0)
    plan = plan_noise(n, spec, seed)
    prompt = "box" if level == "easy" else "point"
    manifest = {"gt": str(gt_path), "wan": level, "prompt": prompt, "sam_model": sam_model,
                "checkpoint": str(checkpoint), "class_noise": spec.class_p, "seed": seed,
                "reference": "seed 003 §3.4 (COCO-WAN)"}
    writer = CocoStreamWriter(Path(out), gt, None)  # info, with failures, at the end
    counts: Counter = Counter()
    failed: list[dict] = []
    index = 0
    bar = tqdm(total=len(gt.images), desc=f"COCO-WAN {level}", unit="img",
               disable=not progress)
    try:
        for s in range(0, len(gt.images), encode_batch):
            batch = gt.images[s: s + encode_batch]
            # only images with an instance to prompt are read and encoded
            todo = [img for img in batch if any(not a.get("iscrowd", 0)
                                                for a in gt.anns_by_image[img["id"]])]
            loaded = [read_full_image(image_root, img) for img in todo]
            bad = {img["id"]: reason for img, (_, reason) in zip(todo, loaded, strict=True)
                   if reason}
            failed += [{"image_id": i, "reason": r} for i, r in bad.items()]
            pixels = [px for px, reason in loaded if not reason]
            todo = [img for img in todo if img["id"] not in bad]
            emb = sam.encode(pixels) if todo else None
            slot = {img["id"]: b for b, img in enumerate(todo)}
            for img in batch:
                anns = gt.anns_by_image[img["id"]]
                if img["id"] in bad:  # unusable image: its masks stay clean, counted as such
                    for ann in anns:
                        writer.write(ann)
                        if not ann.get("iscrowd", 0):
                            index += 1
                            counts["kept_clean"] += 1
                    continue
                live = [a for a in anns if not a.get("iscrowd", 0)]
                rles = [gt.rle(a) for a in live]
                if live:
                    boxes = xywh_to_xyxy(np.array([rle_to_xywh(r) for r in rles]))
                    one = emb[slot[img["id"]]]
                    if prompt == "box":
                        dec = sam.decode(one, boxes_xyxy=boxes)
                        masks, ious = dec.masks[:, 0], dec.iou_predictions[:, 0]
                    else:
                        centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2,
                                            (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
                        masks, ious = sam.decode(one, points_xy=centres, multimask=True).best()
                    masks, ious = masks.cpu(), ious.cpu()  # one transfer per image
                k = 0
                for ann in anns:
                    if ann.get("iscrowd", 0):
                        writer.write(ann)
                        counts["crowd_untouched"] += 1
                        continue
                    out_ann = dict(ann)
                    record = {"class_from": None, "wan": level, "prompt": prompt,
                              "predicted_iou": round(float(ious[k]), 4), "kept_clean": False}
                    if plan.flip[index]:
                        new = flip_class(ann["category_id"], gt.categories, "symmetric",
                                         _instance_rng(seed, index))
                        if new is not None:
                            record["class_from"] = ann["category_id"]
                            out_ann["category_id"] = new
                            counts["class_flipped"] += 1
                    mask = masks[k].numpy()
                    rle = mask_to_rle(mask) if mask.any() else rles[k]
                    record["kept_clean"] = not mask.any()
                    counts["kept_clean"] += record["kept_clean"]
                    out_ann.update(segmentation=rle, bbox=rle_to_xywh(rle), area=rle_area(rle),
                                   noise=record)
                    writer.write(out_ann)
                    k += 1
                    index += 1
            bar.update(len(batch))
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    writer.close({**gt.info, "pseudolabel_noise": {**manifest, "failed_images": failed}})
    summary = {"out": str(out), "wan": level, "instances": n, "failed": failed,
               "crowd_untouched": counts["crowd_untouched"],
               "class_flipped": counts["class_flipped"],
               "class_rate": counts["class_flipped"] / max(n, 1),
               "kept_clean": counts["kept_clean"],
               "seconds": round(time.perf_counter() - t0, 2)}
    if evaluate:
        summary["vs_clean"] = _versus_clean(gt, Path(out))
    return summary
