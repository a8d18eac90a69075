"""``pseudolabel synth``: write the synthetic dataset as PNG images + COCO instances JSON."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from pseudolabel.data.coco import save_json
from pseudolabel.data.masks import masks_to_rles, rle_area, rle_to_xywh
from pseudolabel.synthetic import CLASSES, STYLES, render_scene

COCO_LONGEST_SIDE = 640  # COCO's images, whose area thresholds are 32^2 and 96^2
SPLIT_INDEX = {"train": 0, "val": 1}
# The image's short side, as a fraction of the long side, is drawn from these.
ASPECTS = (0.75, 0.875, 1.0)


@dataclass(frozen=True)
class SynthConfig:
    """The default set is what every command uses without ``--config``."""

    train: int = 400
    val: int = 100
    seed: int = 0
    size: int = 160
    style: str = "target"


def categories() -> list[dict]:
    return [{"id": i + 1, "name": c.name, "supercategory": c.supercategory}
            for i, c in enumerate(CLASSES)]


def area_scale(size: int) -> float:
    """Factor on COCO's small/medium/large area thresholds for images of longest side ``size``."""
    return (size / COCO_LONGEST_SIDE) ** 2


def image_shape(rng: np.random.Generator, size: int) -> tuple[int, int]:
    short = int(round(size * ASPECTS[rng.integers(len(ASPECTS))]))
    return (short, size) if rng.random() < 0.5 else (size, short)


def write_split(out: Path, split: str, n: int, cfg: SynthConfig, progress: bool = True) -> dict:
    """Render ``n`` images of one split into ``out/images/<split>/`` and return its COCO dict."""
    if split not in SPLIT_INDEX:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLIT_INDEX)}")
    style = STYLES[cfg.style]
    image_dir = out / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in tqdm(range(n), desc=f"synth {split}", unit="img", disable=not progress):
        # One generator per image: any image can be regenerated alone, in any order.
        rng = np.random.default_rng([cfg.seed, SPLIT_INDEX[split], i])
        h, w = image_shape(rng, cfg.size)
        scene = render_scene(h, w, style, rng)
        image_id = i + 1
        file_name = f"{split}/{image_id:06d}.png"
        # Temp file + rename: a process reading the world while it is rewritten (same bytes)
        # never sees half an image.
        path = out / "images" / file_name
        tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
        Image.fromarray(scene.image).save(tmp)
        os.replace(tmp, path)
        images.append({"id": image_id, "file_name": file_name, "height": h, "width": w})
        masks = (np.stack([o.mask for o in scene.objects]) if scene.objects
                 else np.zeros((0, h, w), bool))
        for obj, rle in zip(scene.objects, masks_to_rles(masks), strict=True):
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": obj.class_index + 1,
                "segmentation": rle,
                "area": rle_area(rle),
                "bbox": rle_to_xywh(rle),
                "iscrowd": 0,
            })
    return {
        "info": {
            "description": f"pseudolabel synthetic world ({cfg.style}), {split} split",
            "generator": "pseudolabel synth",
            "seed": cfg.seed,
            "size": cfg.size,
            "style": cfg.style,
            # COCO's APs/APm/APl thresholds (32^2, 96^2 px) scaled to these smaller images;
            # `pseudolabel evaluate` reads this.
            "area_scale": area_scale(cfg.size),
        },
        "images": images,
        "categories": categories(),
        "annotations": annotations,
    }


def synthesize(out: str | Path, cfg: SynthConfig = SynthConfig(), progress: bool = True) -> dict:
    """Write the dataset to ``out`` (images/ + annotations/{train,val}.json).

    Returns counts per split. The same ``cfg`` always gives byte-identical files.
    """
    if cfg.style not in STYLES:
        raise ValueError(f"unknown style {cfg.style!r}; expected one of {list(STYLES)}")
    if cfg.size < 32:
        raise ValueError(f"--size must be at least 32 px, got {cfg.size}")
    if cfg.train < 0 or cfg.val < 0:
        raise ValueError(f"image counts must be >= 0, got train={cfg.train}, val={cfg.val}")
    out = Path(out)
    counts = {}
    for split, n in (("train", cfg.train), ("val", cfg.val)):
        data = write_split(out, split, n, cfg, progress)
        save_json(out / "annotations" / f"{split}.json", data)
        counts[split] = {"images": len(data["images"]), "instances": len(data["annotations"])}
    return counts
