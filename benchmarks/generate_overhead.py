"""Overhead of ``generate``: its wall time over the image-encoder passes it cannot avoid.

On the synthetic default at 10% fully labelled, for one setting (default ``box+class``) or
several (``--weak all`` or a comma list, generated in one call), this times in one run:
(a) the whole generate stage from scratch (image loading, encoding, Grounding DINO, decoding
of every setting, RLE, parts, merge) and (b) one image-encoder pass per weakly labelled
image, batched as generate batches it (timed before and after (a), averaged). With several
settings, (a) / (b) says what the extra settings cost once each image is encoded (separate
runs would encode every image once per setting: ratio >= the number of settings).

``--sam vit_b`` builds SAM ViT-B with random weights (cost only; images are resized to its
1024-px input like real ones), to show the ratio where the encoder is as heavy as in practice.
The teachers are the base SAM (``--zero-shot``): same forwards as fine-tuned ones; the
detector is the tiny Grounding DINO with random weights when the shipped one is not used.
"""

from __future__ import annotations

import argparse
import resource
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
from pseudolabel.pseudo_masks import SETTINGS, Teachers, teachers_for, uses_detector  # noqa: E402
from pseudolabel.stages.generate import (  # noqa: E402
    GenerateOptions,
    generate_many,
    jobs_for,
    parse_settings,
)
from pseudolabel.stages.weaken import weaken  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weak", default="box+class", help="a setting, a comma list, or all")
    ap.add_argument("--sam", default="tiny_hr",
                    help="tiny_hr (shipped weights) or vit_b (random)")
    ap.add_argument("--images", type=int, default=120, help="weakly labelled images to use")
    args = ap.parse_args()
    settings = parse_settings(args.weak)

    cfg = load_config(None)
    data = ensure_data(cfg)
    gt = load_coco(data.train)
    work = Path(tempfile.mkdtemp(prefix="generate_overhead-"))
    (work / "run" / "weak").mkdir(parents=True)
    keep = None
    for setting in settings:
        weak, _ = weaken(gt, setting, 0.1, seed=0)
        if keep is None:  # the same weakly labelled images for every setting
            keep = set([i["id"] for i in weak["images"] if i["kind"] == setting][: args.images])
        weak["images"] = [i for i in weak["images"] if i["id"] in keep]
        weak["annotations"] = [a for a in weak["annotations"] if a["image_id"] in keep]
        save_json(work / "run" / "weak" / f"{setting}.json", weak)

    ckpt = assets.resolve_sam(args.sam, cfg.models.sam_checkpoint) \
        if args.sam.startswith("tiny") else None
    sam = PromptedSam(build_sam(args.sam, checkpoint=ckpt, pretrained=False).eval())
    names = teachers_for(set(settings))
    teachers = Teachers({n: sam for n in names}, {n: False for n in names}, {})
    detector = None
    if any(uses_detector(s) for s in settings):
        detector = build_detector("tiny", checkpoint=assets.resolve("default", "gdino"))
    opts = GenerateOptions(settings[0], zero_shot=True)

    # (b) one encoder pass per weakly labelled image, batched as generate batches it
    first = load_coco(work / "run" / "weak" / f"{settings[0]}.json")
    ids = sorted(i["id"] for i in first.images if i["kind"] != "fully_labeled")
    images = [load_image(resolve_image_path(data.images, first.image_by_id[i]["file_name"]))
              for i in ids]
    def encoder_pass() -> float:
        with torch.no_grad():
            t = time.perf_counter()
            for s in range(0, len(images), opts.part_size):
                part = images[s: s + opts.part_size]
                for e in range(0, len(part), opts.encode_batch):
                    sam.encode(part[e: e + opts.encode_batch])
            return time.perf_counter() - t

    before = encoder_pass()
    # (a) the whole stage, every setting in one call
    t = time.perf_counter()
    jobs = jobs_for(",".join(settings), work / "run", None, opts, teachers, "bench", None)
    summaries = generate_many(jobs, data.images, teachers, detector, detector_sha="bench",
                              progress=False)
    wall = time.perf_counter() - t
    after = encoder_pass()  # (b) before and after (a): a drift in machine load shows
    encoder = (before + after) / 2
    shutil.rmtree(work)

    masks = sum(s["pseudo_masks"] for s in summaries)
    print(f"hardware: {hardware()}")
    print(f"generate {', '.join(settings)} in one call, {args.sam} SAM, {len(images)} images, "
          f"{masks} pseudo-masks; peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GB")
    print(f"  one encoder pass per image {encoder:8.2f} s  ({len(images) / encoder:.2f} img/s; "
          f"{before:.2f} s before the stage, {after:.2f} s after)")
    print(f"  generate                   {wall:8.2f} s  ({len(images) / wall:.2f} img/s)")
    if len(settings) == len(SETTINGS) or len(settings) > 1:
        print(f"all-settings wall / one encoder pass per image ratio: {wall / encoder:.2f}")
    else:
        print(f"generate / encoder pass ratio: {wall / encoder:.2f}")


if __name__ == "__main__":
    main()
