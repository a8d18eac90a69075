"""Run by tests/test_distributed.py, as one process or under torchrun: teachers, both
students and their evaluation on the small synthetic set, into OUT.

    python tests/dist_worker.py SYNTH_DIR OUT [--stop-after N]

On every rank but 0, writing anywhere in OUT except the embedding cache (whose rows each
rank fills) raises, so the run fails if a non-main rank writes an output.
"""

from __future__ import annotations

import argparse
import builtins
import json
import os
from dataclasses import replace
from pathlib import Path

import torch

from pseudolabel.runtime import setup_runtime
from pseudolabel.stages.teacher_finetune import finetune_teachers
from pseudolabel.stages.train_student import (
    StudentConfig,
    _student_loss,
    build_student,
    evaluate_student,
    train_student,
)
from pseudolabel.students.copy_paste import PeerPool
from pseudolabel.students.data import InstanceData
from pseudolabel.students.loader import StepBatches
from pseudolabel.students.norm import sync_batch_norm
from pseudolabel.teacher.train import FinetuneConfig

TEACHER = FinetuneConfig(steps=3, batch=4, num_points=64, lr=1e-3, lr_final=1e-4)
STUDENT = StudentConfig(steps=3, batch=4, save_every=1, size=64, num_queries=6,
                        decoder_layers=2, num_points=64, topk=10, eval_batch=2)


def guard_writes(out: Path) -> None:
    """Refuse writes under ``out`` outside the cache (non-main ranks)."""
    out = out.resolve()

    def check(path) -> None:
        p = Path(path).resolve()
        if out in p.parents and "cache" not in p.parts:
            raise RuntimeError(f"rank {os.environ.get('RANK')} wrote {p}")

    real_open, real_save, real_replace = builtins.open, torch.save, os.replace

    def open_(file, mode="r", *a, **k):
        if any(c in mode for c in "wax+"):
            check(file)
        return real_open(file, mode, *a, **k)

    def save(obj, f, *a, **k):
        check(f)
        return real_save(obj, f, *a, **k)

    def replace_(src, dst, *a, **k):
        check(dst)
        return real_replace(src, dst, *a, **k)

    builtins.open, torch.save, os.replace = open_, save, replace_


def first_step_gradients(arch: str, rt, train: Path, images: Path, out: Path) -> None:
    """The gradient of step 0 as train_student computes it (after DDP's average), saved by
    rank 0 to ``out/grad-<arch>.pt``; CondInst's batch has copy-paste peers (so ranks must
    draw the peers one process would)."""
    cfg = replace(STUDENT, arch=arch)
    data = InstanceData(train, images)
    module = build_student(cfg, len(data.category_ids))
    if rt.distributed:
        sync_batch_norm(module, rt.device)
    module.train()
    model = torch.nn.parallel.DistributedDataParallel(module, find_unused_parameters=True) \
        if rt.distributed else module
    samples, seeds = StepBatches(data, batch=cfg.batch, rank=rt.rank, world=rt.world_size,
                                 seed=cfg.seed, size=cfg.size,
                                 scale_range=(cfg.scale_min, cfg.scale_max), start=0,
                                 end=1, peers=PeerPool(data, "quality")
                                 if arch == "condinst" else None)[0]
    torch.manual_seed(cfg.seed * 1_000_003)
    _student_loss(model, module, samples, seeds, cfg, rt).backward()
    if rt.is_main:
        out.mkdir(parents=True, exist_ok=True)
        torch.save({n: p.grad for n, p in module.named_parameters() if p.grad is not None},
                   out / f"grad-{arch}.pt")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("synth", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--stop-after", type=int, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rt = setup_runtime("cpu", "fp32")
    if not rt.is_main:
        guard_writes(args.out)
    train = args.synth / "annotations" / "train.json"
    images = args.synth / "images"
    finetune_teachers(gt_path=train, image_root=images, run_dir=args.out, fraction=0.2,
                      teachers=("point-cls",), sam_checkpoint=None, cfg=TEACHER,
                      stop_after=args.stop_after, progress=False, runtime=rt)
    metrics = {}
    for arch in ("condinst", "mask2former"):
        if args.stop_after is None:
            first_step_gradients(arch, rt, train, images, args.out)
        cfg = replace(STUDENT, arch=arch)
        summary = train_student(train, images, args.out / arch, cfg, progress=False,
                                stop_after=args.stop_after, runtime=rt, workers=1)
        if summary["steps"] == cfg.steps:
            metrics[arch] = evaluate_student(args.out / arch, args.synth / "annotations" /
                                             "val.json", images, progress=False, runtime=rt)
    if rt.is_main:
        (args.out / "metrics.json").write_text(json.dumps(metrics))


if __name__ == "__main__":
    main()
