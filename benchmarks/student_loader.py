"""Student training with DataLoader workers vs loading inline, measured side by side.

The synthetic world rendered at a COCO-like size (default longest side 640 px, 160 images),
large-scale jitter 0.1-2.0 to ``--size`` (512) as the COCO recipe does, CondInst tiny,
``--steps`` steps each way from the same start, in one run:

* inline: each step's images are decoded, their RLE masks decoded and jittered in the
  training process, then the model steps;
* workers: ``--workers`` DataLoader processes prepare the next steps meanwhile.

The training process uses one torch thread in both modes, so the ratio isolates the overlap
of loading with training on this 2-core machine. Here the model step runs on the same CPU, so
the workers can at best hide the loading share of a step: ``1 + L / M`` with L the loading and
M the model time. On a GPU the training process's CPU is free while the model runs; the
second measurement stands in for that: the model step is a fixed wait (``--device-step``
seconds, the CPU free), and the loader feeds it inline or from workers. Prints ``loader
ratio: X`` (steps/s with workers / steps/s inline, simulated accelerator step) and the CPU
training ratio beside it.

Memory: a 20,000-annotation file (the 640-px annotations repeated under new ids, the same
image files) is loaded by the training data, and the peak proportional set size (PSS: shared
pages counted once) of the training process plus its workers is sampled while they prepare
batches, against the same data loaded inline. Prints ``worker memory ratio: X``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _hardware import hardware  # noqa: E402

from pseudolabel.stages.synth import SynthConfig, synthesize  # noqa: E402
from pseudolabel.stages.train_student import StudentConfig, train_student  # noqa: E402
from pseudolabel.students.data import InstanceData  # noqa: E402
from pseudolabel.students.loader import StepBatches, step_loader  # noqa: E402


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree_pss_kb() -> int:
    me = os.getpid()
    pids = [me]
    try:
        with open(f"/proc/{me}/task/{me}/children") as f:
            pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return sum(_pss_kb(p) for p in pids)


class PeakSampler:
    def __init__(self) -> None:
        self.peak, self._stop = 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_pss_kb())
            time.sleep(0.05)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _tree_pss_kb())


def _simulated(data: InstanceData, cfg: StudentConfig, workers: int, steps: int,
               device_step: float) -> float:
    """Steps/s of a loader feeding a model step that is a wait of ``device_step`` seconds
    (an accelerator computing while this CPU is free)."""
    ds = StepBatches(data, batch=cfg.batch, rank=0, world=1, seed=0, size=cfg.size,
                     scale_range=(cfg.scale_min, cfg.scale_max), start=0, end=steps + 2)
    it = iter(step_loader(ds, workers))
    for _ in range(2):  # warm-up: workers start, first batches
        next(it)
        time.sleep(device_step)
    t = time.perf_counter()
    for _ in range(steps):
        next(it)
        time.sleep(device_step)
    return steps / (time.perf_counter() - t)


def _big_file(train: Path, out: Path, annotations: int) -> Path:
    data = json.loads(train.read_text())
    images, anns = [], []
    copy = 0
    while len(anns) < annotations:
        for img in data["images"]:
            images.append({**img, "id": img["id"] + copy * 1_000_000})
        for a in data["annotations"]:
            anns.append({**a, "id": len(anns) + 1, "image_id": a["image_id"] + copy * 1_000_000})
        copy += 1
    data.update(images=images, annotations=anns[:annotations])
    out.write_text(json.dumps(data))
    return out


def _memory(path: Path, images: Path, cfg: StudentConfig, workers: int, batches: int) -> int:
    with PeakSampler() as sampler:
        data = InstanceData(path, images)
        ds = StepBatches(data, batch=cfg.batch, rank=0, world=1, seed=0, size=cfg.size,
                         scale_range=(cfg.scale_min, cfg.scale_max), start=0, end=batches)
        for _ in step_loader(ds, workers):
            pass
    return sampler.peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image-size", type=int, default=640)
    ap.add_argument("--images", type=int, default=160)
    ap.add_argument("--size", type=int, default=160, help="student input size")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--annotations", type=int, default=20_000)
    ap.add_argument("--device-step", type=float, default=0.25,
                    help="seconds of a simulated accelerator step")
    args = ap.parse_args()
    torch.set_num_threads(1)

    work = Path(tempfile.mkdtemp(prefix="student_loader-"))
    synthesize(work / "data", SynthConfig(train=args.images, val=0, size=args.image_size),
               progress=False)
    train, images = work / "data" / "annotations" / "train.json", work / "data" / "images"
    cfg = StudentConfig(arch="condinst", steps=args.steps, batch=args.batch, size=args.size,
                        scale_min=0.1, scale_max=2.0, save_every=args.steps)
    speed = {}
    for mode, workers in (("inline", 0), ("workers", args.workers)):
        run = work / mode
        train_student(train, images, run, replace(cfg, steps=2), progress=False,
                      workers=workers)  # warm-up: allocations, first-touch
        t = time.perf_counter()
        train_student(train, images, run / "timed", cfg, progress=False, workers=workers)
        speed[mode] = args.steps / (time.perf_counter() - t)

    data = InstanceData(train, images)
    simulated = {mode: _simulated(data, cfg, w, args.steps, args.device_step)
                 for mode, w in (("inline", 0), ("workers", args.workers))}
    big = _big_file(train, work / "big.json", args.annotations)
    batches = 3 * max(1, args.workers)
    mem = {"inline": _memory(big, images, cfg, 0, batches),
           "workers": _memory(big, images, cfg, args.workers, batches)}

    print(f"hardware: {hardware()}")
    print(f"synthetic world at {args.image_size} px ({args.images} images), LSJ 0.1-2.0 to "
          f"{args.size} px, CondInst tiny, batch {args.batch}, {args.steps} steps each way, "
          "1 torch thread in the training process")
    for mode in ("inline", "workers"):
        print(f"  {mode:<8} CPU training {speed[mode]:.3f} steps/s, with a "
              f"{args.device_step:.2f} s accelerator step {simulated[mode]:.3f} steps/s, peak "
              f"PSS with {args.annotations:,} annotations {mem[mode] / 2**20:.2f} GB")
    print(f"CPU training loader ratio: {speed['workers'] / speed['inline']:.2f}")
    print(f"worker memory ratio: {mem['workers'] / mem['inline']:.2f}")
    print(f"loader ratio: {simulated['workers'] / simulated['inline']:.2f}")


if __name__ == "__main__":
    main()
