"""``pseudolabel semantic-*``: SeSAM's weak semantic labels, SAM pseudo-maps, their scores.

Folders of PNG label maps, one per image, named like the image with ``.png`` (the layout
``refine --semantic`` reads). Every stage skips maps already written, so a re-run resumes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pseudolabel.data.coco import load_coco
from pseudolabel.data.images import read_full_image
from pseudolabel.semantic.evaluate import SemanticScore
from pseudolabel.semantic.labels import (
    IGNORE,
    label_map,
    read_label_map,
    simulate,
    write_label_map,
)
from pseudolabel.semantic.sam_maps import N_POINTS, TAUS, sam_pseudo_map


def map_name(file_name: str) -> str:
    return Path(file_name).with_suffix(".png").name


def weaken_semantic(gt_path: str | Path, out_dir: str | Path, kind: str, *, seed: int = 0,
                    fine: bool = False, progress: bool = True) -> dict:
    """Weak (or, with ``fine``, fine) label maps of every image of a COCO file."""
    gt = load_coco(gt_path)
    out_dir = Path(out_dir)
    written = 0
    for img in tqdm(gt.images, desc=f"semantic {kind}", unit="img", disable=not progress):
        target = out_dir / map_name(img["file_name"])
        if target.is_file():
            continue
        labels = label_map(gt, img["id"])
        if not fine:
            labels = np.where(labels == IGNORE, IGNORE, simulate(
                labels, kind, np.random.default_rng([seed, img["id"]]))).astype(np.uint8)
        write_label_map(target, labels)
        written += 1
    return {"out": str(out_dir), "maps": len(gt.images), "written": written,
            "classes": ["background"] + [c["name"] for c in gt.categories],
            "skipped_input": [str(p) for p in gt.report.problems]}


def sam_maps(gt_path: str | Path, weak_dir: str | Path, image_root: str | Path,
             out_dir: str | Path, sam, *, prompt: str = "points", per: str = "component",
             sampling: str = "skeleton", n_points: int = N_POINTS,
             taus: tuple[float, float] = TAUS, seed: int = 0, progress: bool = True) -> dict:
    """SAM pseudo-maps of every image of ``gt_path`` whose weak map is in ``weak_dir``
    (crowd regions of the COCO file stay ignore); unusable images are skipped and listed."""
    gt = load_coco(gt_path)
    weak_dir, out_dir = Path(weak_dir), Path(out_dir)
    written, failed = 0, []
    for img in tqdm(gt.images, desc="SAM pseudo-maps", unit="img", disable=not progress):
        name = map_name(img["file_name"])
        if (out_dir / name).is_file():
            continue
        if not (weak_dir / name).is_file():
            failed.append({"image_id": img["id"], "reason": f"{weak_dir / name}: no weak map"})
            continue
        pixels, reason = read_full_image(image_root, img)
        if reason:
            failed.append({"image_id": img["id"], "reason": reason})
            continue
        weak = read_label_map(weak_dir / name)
        keep = label_map(gt, img["id"]) == IGNORE
        out = sam_pseudo_map(sam, pixels, weak, np.random.default_rng([seed, img["id"]]),
                             n_points=n_points, prompt=prompt, per=per, sampling=sampling,
                             taus=taus, keep_ignore=keep)
        write_label_map(out_dir / name, out)
        written += 1
    return {"out": str(out_dir), "written": written, "failed": failed}


def score_maps(gt_path: str | Path, maps_dir: str | Path) -> dict:
    """mIoU, precision, recall and F1 of a folder of maps against the COCO file's fine maps."""
    gt = load_coco(gt_path)
    score = SemanticScore(len(gt.categories) + 1)
    missing = 0
    for img in gt.images:
        path = Path(maps_dir) / map_name(img["file_name"])
        if not path.is_file():
            missing += 1
            continue
        score.add(read_label_map(path), label_map(gt, img["id"]))
    return {**score.result(), "maps": len(gt.images) - missing, "missing": missing}


def evaluate_semantic(model, val_path: str | Path, image_root: str | Path, size: int,
                      runtime=None) -> dict:
    """mIoU (and precision / recall / F1) of a semantic student on the fine maps of val."""
    from pseudolabel.runtime import CPU
    from pseudolabel.semantic.student import predict_map

    gt = load_coco(val_path)
    score = SemanticScore(len(gt.categories) + 1)
    for img in gt.images:
        pixels, reason = read_full_image(image_root, img)
        if reason:
            continue
        pred, _ = predict_map(model, pixels, size, runtime or CPU)
        score.add(pred, label_map(gt, img["id"]))
    return score.result()


def train_rounds(gt_path, val_path, weak_dir, image_root, run_dir, sam, cfg, *,
                 rounds: int = 1, confidence: float = 0.9, progress: bool = True,
                 runtime=None) -> list[dict]:
    """SeSAM's loop: SAM pseudo-maps from the weak labels, a student on them; in each later
    round the student's confident pixels (``confidence``) join the weak label where it has
    none, SAM is prompted again, and a new student trains (seed 004 §3, coarse labels).
    Each round writes ``round<k>/maps`` and ``round<k>/student``; everything resumes."""
    from pseudolabel.runtime import CPU
    from pseudolabel.semantic.student import predict_map, train_semantic

    runtime = runtime or CPU
    run_dir, weak_dir = Path(run_dir), Path(weak_dir)
    gt = load_coco(gt_path)
    results, model = [], None
    for r in range(rounds):
        here = run_dir / f"round{r}"
        prompts = weak_dir
        if r > 0:  # the weak label plus the previous student's confident pixels
            prompts = here / "weak+student"
            for img in gt.images:
                name = map_name(img["file_name"])
                if (prompts / name).is_file() or not (weak_dir / name).is_file():
                    continue
                pixels, reason = read_full_image(image_root, img)
                if reason:
                    continue
                weak = read_label_map(weak_dir / name)
                pred, conf = predict_map(model, pixels, cfg.size, runtime)
                add = (weak == IGNORE) & (conf >= confidence)
                write_label_map(prompts / name, np.where(add, pred, weak).astype(np.uint8))
        maps = sam_maps(gt_path, prompts, image_root, here / "maps", sam, progress=progress)
        trained = train_semantic(gt_path, here / "maps", image_root, here / "student", cfg,
                                 progress=progress, runtime=runtime)
        model = trained["model"]
        results.append({"round": r, "pseudo_maps": score_maps(gt_path, here / "maps"),
                        "student": evaluate_semantic(model, val_path, image_root, cfg.size,
                                                     runtime), "maps_failed": maps["failed"]})
        (here / "metrics.json").write_text(json.dumps(results[-1], indent=2) + "\n")
    return results
