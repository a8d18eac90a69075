"""SAMRefiner throughput: all masks of an image in one batch vs one mask at a time.

Same images, same prompts (point + elastic box + Gaussian mask), same encodings: each
image is encoded once outside the timed region, then its masks are refined in one
``refine_masks`` call, or in one call per mask. Prints masks per second for both and their
ratio. ``--sam vit_b`` measures SAM ViT-B with random weights (speed only).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _hardware import hardware  # noqa: E402

from pseudolabel.config import ensure_data, load_config  # noqa: E402
from pseudolabel.data.coco import load_coco  # noqa: E402
from pseudolabel.data.images import load_image, resolve_image_path  # noqa: E402
from pseudolabel.data.masks import rle_to_mask  # noqa: E402
from pseudolabel.models.predictor import PromptedSam  # noqa: E402
from pseudolabel.models.sam import build_sam  # noqa: E402
from pseudolabel.samrefiner import refine_masks  # noqa: E402
from pseudolabel.stages.refine import load_refiner  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--sam", default="tiny_hr", choices=["tiny_hr", "vit_b"],
                    help="tiny_hr (the shipped weights) or vit_b (random weights)")
    args = ap.parse_args()

    data = ensure_data(load_config(None))
    gt = load_coco(data.val)
    sam = load_refiner() if args.sam == "tiny_hr" else \
        PromptedSam(build_sam("vit_b", pretrained=False).eval())
    work = []
    for img in [i for i in gt.images if len(gt.anns_by_image[i["id"]]) >= 2][: args.images]:
        pixels = load_image(resolve_image_path(data.images, img["file_name"]))
        masks = np.stack([rle_to_mask(gt.rle(a)) for a in gt.anns_by_image[img["id"]]])
        work.append((sam.encode([pixels]), masks))
    n = sum(len(m) for _, m in work)
    t = time.perf_counter()
    for emb, masks in work:
        refine_masks(sam, emb, masks)
    batched = n / (time.perf_counter() - t)
    t = time.perf_counter()
    for emb, masks in work:
        for i in range(len(masks)):
            refine_masks(sam, emb, masks[i:i + 1])
    single = n / (time.perf_counter() - t)
    print(f"hardware: {hardware()}")
    print(f"SAM {args.sam}, {n} masks on {len(work)} images (encoding not timed)")
    print(f"  batched per image : {batched:8.1f} masks/s")
    print(f"  one mask at a time: {single:8.1f} masks/s")
    print(f"batched / one-at-a-time throughput ratio: {batched / single:.2f}")


if __name__ == "__main__":
    main()
