"""SAMRefiner throughput: all masks of an image in one batch vs one mask at a time.

Same images, same prompts (point + elastic box + Gaussian mask), same encodings: each
image is encoded once outside the timed region, then its masks are refined in one
``refine_masks`` call, or in one call per mask. Prints masks per second for both and their
ratio. ``--sam vit_b`` measures SAM ViT-B with random weights (speed only); ``--size``
resizes the synthetic images (bilinear) and masks (nearest) to a COCO-like side first.

Then CEBox's similarity maps (eq. 1-2) of the same masks, two ways: upsampling the
``(C, h, w)`` embedding to ``(C, H, W)`` and normalising it, as eq. 1 reads, against
``samrefiner.pixel_features`` / ``similarity_maps`` (the same numbers from the grid, all of an
image's masks in one batch; checked here to agree). Per image: one feature map, every mask's
map.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _hardware import hardware  # noqa: E402

from pseudolabel.config import ensure_data, load_config  # noqa: E402
from pseudolabel.data.coco import load_coco  # noqa: E402
from pseudolabel.data.images import load_image, resolve_image_path  # noqa: E402
from pseudolabel.data.masks import rle_to_mask  # noqa: E402
from pseudolabel.models.predictor import PromptedSam  # noqa: E402
from pseudolabel.models.sam import build_sam  # noqa: E402
from pseudolabel.samrefiner import (  # noqa: E402
    SIM_THRESHOLD,
    grid_size,
    pixel_features,
    refine_masks,
    similarity_maps,
)
from pseudolabel.stages.refine import load_refiner  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--sam", default="tiny_hr", choices=["tiny_hr", "vit_b"],
                    help="tiny_hr (the shipped weights) or vit_b (random weights)")
    ap.add_argument("--size", type=int, default=None,
                    help="resize images and masks to this longest side (default: as stored)")
    args = ap.parse_args()

    data = ensure_data(load_config(None))
    gt = load_coco(data.val)
    sam = load_refiner() if args.sam == "tiny_hr" else \
        PromptedSam(build_sam("vit_b", pretrained=False).eval())
    work = []
    for img in [i for i in gt.images if len(gt.anns_by_image[i["id"]]) >= 2][: args.images]:
        pixels = load_image(resolve_image_path(data.images, img["file_name"]))
        masks = np.stack([rle_to_mask(gt.rle(a)) for a in gt.anns_by_image[img["id"]]])
        if args.size:
            pixels, masks = resized(pixels, masks, args.size)
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
    direct, factorised = similarity_times(sam, work)
    print(f"CEBox similarity maps (one feature map per image, one map per mask): upsampled "
          f"(C, H, W) {direct:.1f} ms/image, from the grid {factorised:.1f} ms/image")
    print(f"batched / one-at-a-time throughput ratio: {batched / single:.2f}")
    print(f"upsampled / from-the-grid similarity time ratio: {direct / factorised:.2f}")


def resized(pixels: np.ndarray, masks: np.ndarray, size: int):
    h, w = pixels.shape[:2]
    s = size / max(h, w)
    wh = (round(w * s), round(h * s))
    up = np.asarray(Image.fromarray(pixels).resize(wh, Image.BILINEAR))
    return up, np.stack([np.asarray(Image.fromarray(m).resize(wh, Image.NEAREST)) for m in masks])


def direct_similarity(feats: torch.Tensor, grid, mask: np.ndarray, pixels: torch.Tensor):
    """Eq. 1-2 as written: every pixel's upsampled, normalised feature against the query."""
    f = feats[:, :grid[0], :grid[1]].float()
    w = F.interpolate(torch.as_tensor(mask, dtype=torch.float32)[None, None], grid,
                      mode="area")[0, 0]
    query = F.normalize((f * w).sum((1, 2)) / w.sum().clamp_min(1e-12), dim=0)
    return (torch.einsum("chw,c->hw", pixels, query) > SIM_THRESHOLD).numpy()


def similarity_times(sam: PromptedSam, work) -> tuple[float, float]:
    """ms per image of both ways; raises if their maps disagree on more than 0.01% pixels."""
    times, maps = [0.0, 0.0], [[], []]
    for emb, masks in work:
        feats, grid = emb.embeddings[0], grid_size(sam, emb.input_sizes[0])
        shape = masks.shape[1:]
        t = time.perf_counter()
        up = F.normalize(F.interpolate(feats[None, :, :grid[0], :grid[1]].float(), shape,
                                       mode="bilinear", align_corners=False)[0], dim=0)
        maps[0] += [direct_similarity(feats, grid, m, up) for m in masks]
        t1 = time.perf_counter()
        pix = pixel_features(feats, grid, shape)
        maps[1] += list(similarity_maps(pix, masks))
        times[0] += t1 - t
        times[1] += time.perf_counter() - t1
    differ = np.mean([np.mean(a != b) for a, b in zip(*maps, strict=True)])
    if differ > 1e-4:
        raise SystemExit(f"the two similarity maps disagree on {differ:.4%} of pixels")
    return times[0] * 1000 / len(work), times[1] * 1000 / len(work)


if __name__ == "__main__":
    main()
