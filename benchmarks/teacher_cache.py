"""Teacher fine-tuning speed: optimiser steps per second with the embedding cache vs running
the frozen image encoder on every step (same teacher, same batch, one run)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _hardware import hardware  # noqa: E402

from pseudolabel.config import ensure_data, load_config  # noqa: E402
from pseudolabel.data.coco import load_coco  # noqa: E402
from pseudolabel.data.images import load_image, resolve_image_path  # noqa: E402
from pseudolabel.models import assets  # noqa: E402
from pseudolabel.models.sam import build_sam  # noqa: E402
from pseudolabel.models.text import build_text_encoder  # noqa: E402
from pseudolabel.stages.weaken import select_fully_labeled  # noqa: E402
from pseudolabel.teacher.cache import EmbeddingCache, file_key  # noqa: E402
from pseudolabel.teacher.model import TEACHERS, build_teacher, trainable  # noqa: E402
from pseudolabel.teacher.train import FinetuneConfig, Sample, train_step  # noqa: E402


class EncodeEveryStep:
    """Drop-in for the cache that runs the frozen encoder on every step: each distinct image
    of a step's batch is encoded once (as a loop without a cache would), then forgotten."""

    def __init__(self, predictor, paths):
        self.predictor, self.paths, self.step = predictor, paths, {}

    def new_step(self):
        self.step = {}

    def get(self, key):
        if key not in self.step:
            with torch.no_grad():
                self.step[key] = self.predictor.encode([load_image(self.paths[key])])
        return self.step[key]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--sam", default="tiny_hr",
                    help="tiny_hr (the shipped weights) or vit_b (random weights: cost only)")
    args = ap.parse_args()
    cfg = load_config(None)
    data = ensure_data(cfg)
    gt = load_coco(data.train)
    ids = select_fully_labeled([i["id"] for i in gt.images], 0.1, 0)
    paths, samples = {}, []
    rows = {c: r for r, c in enumerate(gt.category_ids)}
    for i in ids:
        p = resolve_image_path(data.images, gt.image_by_id[i]["file_name"])
        key = f"{i}-{file_key(p)}"
        paths[key] = p
        samples += [Sample(key, gt.rle(a), rows[a["category_id"]]) for a in gt.anns_by_image[i]]
    names = [gt.category_by_id[c]["name"] for c in gt.category_ids]
    text = build_text_encoder("tiny").embed(names)
    ckpt = assets.resolve_sam(args.sam, cfg.models.sam_checkpoint) \
        if args.sam.startswith("tiny") else None
    fcfg = FinetuneConfig(steps=args.steps, batch=args.batch, lr=cfg.teacher.lr,
                          num_points=cfg.teacher.num_points)
    kind = TEACHERS["point-cls"]
    rates = {}
    for mode in ("cached", "encode every step"):
        torch.manual_seed(0)
        teacher = build_teacher(build_sam(args.sam, checkpoint=ckpt, pretrained=False), True,
                                text)
        params = [p for p in trainable(teacher).parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=fcfg.lr)
        if mode == "cached":
            pe = teacher.sam.prompt_encoder
            source = EmbeddingCache(Path("runs/bench/teacher_cache") / args.sam, "bench",
                                    len(paths), (pe.embed_dim, *pe.image_embedding_size))
            source.fill(list(paths.items()), teacher, progress=False)  # once, before timing
        else:
            source = EncodeEveryStep(teacher, paths)
        train_step(teacher, kind, source, samples, opt, params, 0, fcfg)  # warm-up
        t = time.perf_counter()
        for s in range(1, args.steps + 1):
            if isinstance(source, EncodeEveryStep):
                source.new_step()
            train_step(teacher, kind, source, samples, opt, params, s, fcfg)
        rates[mode] = args.steps / (time.perf_counter() - t)
    print(f"hardware: {hardware()}")
    print(f"teacher point-cls, {args.sam} SAM, {fcfg.num_points} points per mask, batch "
          f"{args.batch} instances from {len(paths)} fully labelled images, "
          f"{args.steps} steps each")
    for mode, r in rates.items():
        print(f"  {mode:<18} {r:8.4f} steps/s")
    print(f"cached/encode-every-step ratio: {rates['cached'] / rates['encode every step']:.2f}")


if __name__ == "__main__":
    main()
