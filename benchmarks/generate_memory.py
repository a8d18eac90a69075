"""Peak memory of ``generate`` does not grow with the number of images.

Runs the stage (default ``box+class``, tiny SAM, base weights) in a fresh process on N and
on 4N weakly labelled images of the synthetic default and prints each peak RSS and their
ratio (target: the 4N run within +15% of the N run). Parts go to disk as they finish and the
final file is streamed from them, so only the weak file itself grows with N.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _hardware import hardware  # noqa: E402


def child(setting: str, n: int) -> None:
    from pseudolabel.config import ensure_data, load_config
    from pseudolabel.data.coco import load_coco, save_json
    from pseudolabel.models import assets
    from pseudolabel.models.predictor import PromptedSam
    from pseudolabel.models.sam import build_sam
    from pseudolabel.stages.generate import GenerateOptions, Teachers, generate
    from pseudolabel.stages.synth import SynthConfig, synthesize
    from pseudolabel.stages.weaken import weaken

    cfg = load_config(None)
    work = Path(tempfile.mkdtemp(prefix="generate_memory-"))
    data = ensure_data(cfg)
    train, images = data.train, data.images
    gt = load_coco(train)
    if len(gt.images) < n:  # a larger synthetic set when the default is too small
        synthesize(work / "data", SynthConfig(train=n, val=0), progress=False)
        train, images = work / "data/annotations/train.json", work / "data/images"
        gt = load_coco(train)
    weak, _ = weaken(gt, setting, 0.0, seed=0)
    keep = {i["id"] for i in weak["images"][:n]}
    weak["images"] = [i for i in weak["images"] if i["id"] in keep]
    weak["annotations"] = [a for a in weak["annotations"] if a["image_id"] in keep]
    save_json(work / "weak.json", weak)
    del gt, weak
    sam = PromptedSam(build_sam(cfg.models.sam, checkpoint=assets.resolve_sam(
        cfg.models.sam, cfg.models.sam_checkpoint)))
    sam.sam.eval()
    teachers = Teachers({"box": sam}, {"box": False}, {})
    generate(work / "weak.json", images, work / "run", GenerateOptions(setting, zero_shot=True),
             teachers, progress=False)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--setting", default="box+class")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(args.setting, args.child)
        return
    peaks = {}
    for n in (args.images, 4 * args.images):
        out = subprocess.run([sys.executable, __file__, "--child", str(n), "--setting",
                              args.setting], capture_output=True, text=True, check=True)
        peaks[n] = int(out.stdout.strip().splitlines()[-1]) / 1024
    print(f"hardware: {hardware()}")
    for n, mib in peaks.items():
        print(f"  generate {args.setting} on {n:5d} images: peak RSS {mib:7.1f} MiB")
    a, b = peaks.values()
    print(f"peak memory ratio 4x/1x images: {b / a:.3f}")


if __name__ == "__main__":
    main()
