"""``generate`` images/s at fp32 and bf16, measured side by side in one run.

SAM with random weights (default ViT-H: cost only; the synthetic images are resized to its
1024-px input as real ones are) prompted with the GT boxes of the synthetic default
(``box+class``, zero-shot teachers), on ``--device`` (default ``auto``). Each precision runs
once to warm up (CUDA kernels, autotuning) and is then timed. Ends with
``bf16/fp32 throughput ratio: X``. ``scripts/gpu_check.sh`` runs it on a GPU; on this CPU,
``--sam tiny --images 8`` checks that it works.
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
from pseudolabel.models.predictor import PromptedSam  # noqa: E402
from pseudolabel.models.sam import build_sam  # noqa: E402
from pseudolabel.pseudo_masks import Teachers  # noqa: E402
from pseudolabel.runtime import setup_runtime  # noqa: E402
from pseudolabel.stages.generate import GenerateOptions, generate  # noqa: E402
from pseudolabel.stages.weaken import weaken  # noqa: E402


def _images_per_s(sam_name: str, device: str, precision: str, weak_path: Path,
                  image_root: Path, work: Path, n: int, encode_batch: int) -> float:
    rt = setup_runtime(device, precision)
    sam = PromptedSam(build_sam(sam_name, pretrained=False).eval(), runtime=rt)
    teachers = Teachers({"box": sam}, {"box": False}, {})
    opts = GenerateOptions("box+class", zero_shot=True, encode_batch=encode_batch)
    seconds = []
    for attempt in range(2):  # warm-up, then timed
        run = work / f"{precision}-{attempt}"
        if rt.device.type == "cuda":
            torch.cuda.synchronize(rt.device)
        t = time.perf_counter()
        generate(weak_path, image_root, run, opts, teachers, progress=False)
        if rt.device.type == "cuda":
            torch.cuda.synchronize(rt.device)
        seconds.append(time.perf_counter() - t)
        shutil.rmtree(run)
    return n / seconds[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sam", default="vit_h", help="vit_h, vit_l, vit_b or tiny (random)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--encode-batch", type=int, default=8)
    args = ap.parse_args()

    data = ensure_data(load_config(None))
    weak, _ = weaken(load_coco(data.train), "box+class", 0.0, seed=0)
    keep = {i["id"] for i in weak["images"][: args.images]}
    weak["images"] = [i for i in weak["images"] if i["id"] in keep]
    weak["annotations"] = [a for a in weak["annotations"] if a["image_id"] in keep]
    work = Path(tempfile.mkdtemp(prefix="gpu_throughput-"))
    save_json(work / "weak.json", weak)
    speed = {p: _images_per_s(args.sam, args.device, p, work / "weak.json", data.images, work,
                              len(keep), args.encode_batch) for p in ("fp32", "bf16")}
    shutil.rmtree(work)
    print(f"hardware: {hardware()}")
    print(f"generate box+class, SAM {args.sam} (random weights), {len(keep)} images, "
          f"encode batch {args.encode_batch}")
    for p, v in speed.items():
        print(f"  {p}: {v:.2f} img/s")
    print(f"bf16/fp32 throughput ratio: {speed['bf16'] / speed['fp32']:.2f}")


if __name__ == "__main__":
    main()
