"""SAM decoding: N box prompts of one image decoded in one batched call vs one at a time.

The image is encoded once either way; only the prompt encoder + mask decoder are timed.
Default: vit_b with random weights (no checkpoint needed), 20 prompts, 640x480 image.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _hardware import hardware  # noqa: E402

from pseudolabel.models.predictor import PromptedSam  # noqa: E402
from pseudolabel.models.sam import build_sam  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="vit_b")
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    torch.manual_seed(0)
    predictor = PromptedSam(build_sam(args.model, pretrained=False))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    emb = predictor.encode([image])
    x0, y0 = rng.uniform(0, 500, args.prompts), rng.uniform(0, 350, args.prompts)
    boxes = np.stack([x0, y0, x0 + rng.uniform(20, 140, args.prompts),
                      y0 + rng.uniform(20, 130, args.prompts)], 1)

    chunk = predictor.decode_chunk

    def batched():  # one decode call; the predictor splits it into cache-sized chunks
        predictor.decode(emb, boxes_xyxy=boxes)

    def one_call():  # all prompts in a single decoder call
        predictor.decode_chunk = args.prompts
        predictor.decode(emb, boxes_xyxy=boxes)
        predictor.decode_chunk = chunk

    def looped():
        for b in boxes:
            predictor.decode(emb, boxes_xyxy=b[None])

    batched(), looped(), one_call()  # warm-up
    times = {}
    for name, fn in (("batched", batched), ("one-call", one_call), ("looped", looped)):
        runs = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t)
        times[name] = float(np.median(runs))
    print(f"hardware: {hardware()}")
    print(f"{args.model}, random weights, {args.prompts} box prompts on a 640x480 image, "
          f"median of {args.repeats}; batched = decode() in chunks of {chunk}, one-call = "
          f"all prompts in one decoder call, looped = one decode() per prompt")
    for name, t in times.items():
        print(f"  {name:<8} {t * 1000:8.1f} ms  ({args.prompts / t:7.1f} prompts/s)")
    print(f"one-call speed-up over looped: {times['looped'] / times['one-call']:.2f}")
    print(f"batched/looped decode ratio: {times['looped'] / times['batched']:.2f}")


if __name__ == "__main__":
    main()
