"""Overhead of ``generate``: its wall time over the model forwards it cannot avoid.

For one setting (default ``box+class``, at 10% fully labelled on the synthetic default) this
times, in one run: (a) the whole generate stage from scratch (image loading, encoding,
decoding, RLE, parts, merge) and (b) only the forwards it needs anyway, one image-encoder
pass per weakly labelled image in the same batches (plus the Grounding DINO passes for the
settings that use it). Target: (a) / (b) <= 1.3.

``--sam vit_b`` builds SAM ViT-B with random weights (cost only; images are resized to its
1024-px input like real ones), to show the ratio where the encoder is as heavy as in practice.
The teachers are the base SAM (``--zero-shot``): same forwards as fine-tuned ones.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _hardware import hardware  # noqa: E402

from pseudolabel.config import ensure_data, load_config  # noqa: E402
from pseudolabel.data.coco import load_coco, save_json  # noqa: E402
from pseudolabel.data.images import load_image, resolve_image_path  # noqa: E402
from pseudolabel.models import assets  # noqa: E402
from pseudolabel.models.grounding_dino import build_detector  # noqa: E402
from pseudolabel.models.predictor import PromptedSam  # noqa: E402
from pseudolabel.models.sam import build_sam  # noqa: E402
from pseudolabel.stages.generate import (  # noqa: E402
    SETTING_TEACHERS,
    GenerateOptions,
    Teachers,
    generate,
)
from pseudolabel.stages.weaken import weaken  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setting", default="box+class")
    ap.add_argument("--sam", default="tiny", help="tiny (shipped weights) or vit_b (random)")
    ap.add_argument("--images", type=int, default=120, help="weakly labelled images to use")
    args = ap.parse_args()

    cfg = load_config(None)
    data = ensure_data(cfg)
    weak, _ = weaken(load_coco(data.train), args.setting, 0.1, seed=0)
    keep = [i["id"] for i in weak["images"] if i["kind"] == args.setting][: args.images]
    keep_set = set(keep)
    weak["images"] = [i for i in weak["images"] if i["id"] in keep_set]
    weak["annotations"] = [a for a in weak["annotations"] if a["image_id"] in keep_set]
    work = Path(tempfile.mkdtemp(prefix="generate_overhead-"))
    weak_path = work / "weak.json"
    save_json(weak_path, weak)

    ckpt = assets.resolve(cfg.models.sam_checkpoint, "sam") if args.sam == "tiny" else None
    sam = PromptedSam(build_sam(args.sam, checkpoint=ckpt, pretrained=False))
    sam.sam.eval()
    names = SETTING_TEACHERS[args.setting]
    teachers = Teachers({n: sam for n in names}, {n: False for n in names}, {})
    detector = None
    if args.setting != "box+class":
        detector = build_detector("tiny")  # random weights: the cost is the same
    opts = GenerateOptions(args.setting, zero_shot=True)

    # (b) the forwards generate cannot avoid, batched as generate batches them
    paths = [resolve_image_path(data.images, i["file_name"]) for i in weak["images"]]
    images = [load_image(p) for p in paths]
    cat_ids = [c["id"] for c in weak["categories"]]
    cat_names = [c["name"] for c in weak["categories"]]
    with torch.no_grad():
        t = time.perf_counter()
        for s in range(0, len(images), opts.part_size):
            part = images[s: s + opts.part_size]
            for e in range(0, len(part), opts.encode_batch):
                sam.encode(part[e: e + opts.encode_batch])
            if detector is not None:
                detector.detect(part, cat_ids, cat_names)
        forwards = time.perf_counter() - t

    # (a) the whole stage
    t = time.perf_counter()
    summary = generate(weak_path, data.images, work / "run", opts, teachers, detector,
                       progress=False)
    wall = time.perf_counter() - t
    shutil.rmtree(work)

    print(f"hardware: {hardware()}")
    print(f"generate {args.setting}, {args.sam} SAM, {len(images)} images, "
          f"{summary['pseudo_masks']} pseudo-masks")
    print(f"  unavoidable forwards {forwards:7.2f} s  ({len(images) / forwards:.2f} img/s)")
    print(f"  generate             {wall:7.2f} s  ({len(images) / wall:.2f} img/s)")
    print(f"generate / forwards ratio: {wall / forwards:.2f}")


if __name__ == "__main__":
    main()
