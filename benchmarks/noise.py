"""Throughput of ``pseudolabel noise --level hard``: 1 worker vs 2, same file, one run.

Builds a synthetic set (default 800 images with a 480-px longest side, objects scaled with
the image, nearer COCO's 640 px than the 160-px default) and noises it with 1 and then 2
worker processes, without the AP evaluation. Prints instances per second for each, their
ratio, and checks that both files are byte-identical.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=800)
    ap.add_argument("--size", type=int, default=480)
    ap.add_argument("--level", default="hard")
    args = ap.parse_args()

    from pseudolabel.noise import LEVELS
    from pseudolabel.stages.noise import noise_file
    from pseudolabel.stages.synth import SynthConfig, synthesize

    work = Path(tempfile.mkdtemp(prefix="noise-bench-"))
    synthesize(work, SynthConfig(train=args.images, val=0, size=args.size), progress=False)
    gt = work / "annotations" / "train.json"
    rates, files = {}, {}
    for workers in (1, 2):
        out = work / f"noisy-{workers}.json"
        t = time.perf_counter()
        s = noise_file(gt, out, LEVELS[args.level], name=args.level, workers=workers,
                       evaluate=False, progress=False)
        rates[workers] = s["instances"] / (time.perf_counter() - t)
        files[workers] = out.read_bytes()
    from _hardware import hardware  # imports torch: not at module level, where the
    # worker processes (spawned, so they re-import this file) would pay for it too

    print(f"hardware: {hardware()}")
    print(f"{s['instances']} instances on {args.images} images of {args.size} px, "
          f"level {args.level}")
    for workers, rate in rates.items():
        print(f"  {workers} worker{'s' if workers > 1 else ' '}: {rate:8.0f} instances/s")
    print(f"  files identical: {files[1] == files[2]}")
    print(f"2 / 1 workers throughput ratio: {rates[2] / rates[1]:.2f}")


if __name__ == "__main__":
    main()
