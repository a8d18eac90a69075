"""``pseudolabel teacher-finetune``: fine-tune the teachers on the fully labelled split."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from pseudolabel.data.coco import load_coco, save_json
from pseudolabel.data.images import resolve_image_path
from pseudolabel.models import assets
from pseudolabel.models.predictor import PromptedSam
from pseudolabel.models.text import build_text_encoder
from pseudolabel.pretrain.loop import train
from pseudolabel.runtime import CPU, Runtime
from pseudolabel.stages.weaken import file_sha256, select_fully_labeled
from pseudolabel.teacher.cache import EmbeddingCache, file_key
from pseudolabel.teacher.model import (
    TEACHERS,
    build_teacher,
    load_base_sam,
    on_shared_encoder,
    save_teacher,
    trainable,
)
from pseudolabel.teacher.train import FinetuneConfig, Sample, param_groups, train_step


def ablation_name(name: str) -> str:
    """The teacher trained without the class module: ``point-cls`` -> ``point`` (box-cls -> box)."""
    return name.removesuffix("-cls")


def write_split(run_dir: Path, gt_path: Path, image_ids: list[int], fraction: float,
                seed: int) -> dict:
    """Store the run's fully labelled images; a run directory keeps one split for good."""
    ids = select_fully_labeled(image_ids, fraction, seed)
    split = {"fraction": fraction, "seed": seed, "gt": str(gt_path),
             "gt_sha256": file_sha256(gt_path), "fully_labeled": ids,
             "hash": hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:16]}
    path = run_dir / "split.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if (old["fraction"], old["seed"], old["fully_labeled"]) != (fraction, seed, ids):
            raise ValueError(f"{path}: this run was split with fraction {old['fraction']} and "
                             f"seed {old['seed']}; use another --run-dir for fraction "
                             f"{fraction}, seed {seed}")
        return old
    save_json(path, split)
    return split


def _text_identity(text_encoder: str, checkpoint: str | None) -> str:
    """What a class-aware teacher's text embeddings came from (weights' sha256 if a file)."""
    if checkpoint and text_encoder in ("tiny",):
        return f"{text_encoder}:{file_sha256(assets.resolve(checkpoint, 'text'))[:16]}"
    return f"{text_encoder}:{checkpoint}"


def encoder_key(sam_model: str, checkpoint: Path | None) -> str:
    return f"{sam_model}-{file_sha256(checkpoint)[:16] if checkpoint else 'random'}"


def _check_resume(out: Path, settings: dict, main: bool) -> None:
    """A teacher directory resumes only the training it was started with."""
    path = out / "settings.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old != json.loads(json.dumps(settings)):
            diff = sorted(k for k in settings if old.get(k) != json.loads(json.dumps(settings[k])))
            raise ValueError(f"{out}: was trained with other settings ({', '.join(diff)} "
                             "differ); use another --run-dir or delete that directory")
    elif main:
        out.mkdir(parents=True, exist_ok=True)
        save_json(path, settings)


def finetune_teachers(*, gt_path: str | Path, image_root: str | Path, run_dir: str | Path,
                      fraction: float, seed: int = 0, teachers: tuple[str, ...] = tuple(TEACHERS),
                      class_aware: bool = True, sam_model: str = "tiny_hr",
                      sam_checkpoint: str | None = "default", text_encoder: str = "tiny",
                      text_checkpoint: str | None = "default",
                      cfg: FinetuneConfig = FinetuneConfig(),
                      stop_after: int | None = None, progress: bool = True,
                      runtime: Runtime = CPU) -> dict:
    """Train ``teachers`` on the fully labelled images of ``gt_path``; returns what was written.

    The base SAM is loaded once onto ``runtime.device``; every teacher trains its own copy
    of the prompt encoder and mask decoder on it (the image encoder is frozen and shared).
    """
    gt_path, run_dir = Path(gt_path), Path(run_dir)
    unknown = [t for t in teachers if t not in TEACHERS]
    if unknown:
        raise ValueError(f"unknown teachers {unknown}; expected some of {list(TEACHERS)}")
    main = runtime.is_main
    gt = load_coco(gt_path)
    if main:
        write_split(run_dir, gt_path, [i["id"] for i in gt.images], fraction, seed)
    runtime.barrier()  # the other ranks read the split rank 0 wrote
    split = json.loads((run_dir / "split.json").read_text())
    if not split["fully_labeled"]:
        raise ValueError(f"fraction {fraction} leaves no fully labelled image to train on")
    ckpt = assets.resolve_sam(sam_model, sam_checkpoint)
    base = load_base_sam(sam_model, sam_checkpoint).to(runtime.device)
    pe = base.prompt_encoder
    cache = EmbeddingCache(run_dir / "cache", encoder_key(sam_model, ckpt), 0,
                           (pe.embed_dim, *pe.image_embedding_size))
    keys, samples = {}, []
    rows = {c: r for r, c in enumerate(gt.category_ids)}
    for image_id in split["fully_labeled"]:
        img = gt.image_by_id[image_id]
        path = resolve_image_path(image_root, img["file_name"])
        keys[image_id] = (f"{image_id}-{file_key(path)}", path)
        for ann in gt.anns_by_image[image_id]:
            if not ann.get("iscrowd", 0) and "segmentation" in ann:
                samples.append(Sample(keys[image_id][0], gt.rle(ann), rows[ann["category_id"]]))
    # every rank encodes its share of the images (image k by rank k mod world), then all read
    cache.fill(list(keys.values()), PromptedSam(base, runtime=runtime),
               progress=progress and main, rank=runtime.rank, world=runtime.world_size,
               barrier=runtime.barrier)
    names = [gt.category_by_id[c]["name"] for c in gt.category_ids]
    needs_text = class_aware and any(TEACHERS[t].class_aware for t in teachers)
    text = build_text_encoder(text_encoder, checkpoint=text_checkpoint,
                              runtime=runtime).embed(names) \
        if needs_text else None
    written = {}
    for name in teachers:
        kind = TEACHERS[name]
        if not class_aware and kind.class_aware:
            kind = type(kind)(ablation_name(name), kind.box, kind.point, False)
        torch.manual_seed(cfg.seed)
        teacher = build_teacher(on_shared_encoder(base), kind.class_aware, text, runtime)
        module = trainable(teacher)
        model = module
        if runtime.distributed:  # gradients averaged over ranks; the frozen encoder stays out
            model = DistributedDataParallel(
                module, device_ids=[runtime.device.index] if runtime.device.type == "cuda"
                else None, find_unused_parameters=True)  # e.g. a box teacher's point embeds
        params = [p for p in module.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(param_groups(module, cfg), lr=cfg.lr,
                                weight_decay=cfg.weight_decay)
        scaler = runtime.grad_scaler()
        out = run_dir / "teacher" / kind.name
        _check_resume(out, {"config": cfg.__dict__, "sam_model": sam_model,
                            "sam_sha256": file_sha256(ckpt) if ckpt else None,
                            "text_encoder": _text_identity(text_encoder, text_checkpoint)
                            if kind.class_aware else None,
                            "split_hash": split["hash"]}, main)
        history = train(module, opt,
                        lambda s, t=teacher, k=kind, o=opt, p=params, sc=scaler, m=model:
                        train_step(t, k, cache, samples, o, p, s, cfg, sc, m),
                        steps=cfg.steps, state_path=out / "state.pt", every=max(1, cfg.steps // 10),
                        desc=f"teacher {kind.name}", stop_after=stop_after,
                        progress=progress and main, save=main, scaler=scaler)
        if len(history) < cfg.steps:
            written[kind.name] = {"status": f"stopped at step {len(history)}"}
            continue
        meta = {"kind": kind.name, "prompt": kind.prompt, "class_aware": kind.class_aware,
                "sam_model": sam_model, "sam_checkpoint": sam_checkpoint,
                "sam_sha256": file_sha256(ckpt) if ckpt else None,
                "text_encoder": text_encoder if kind.class_aware else None,
                "category_ids": gt.category_ids, "category_names": names,
                "config": cfg.__dict__, "steps": len(history),
                "final_loss": sum(h["loss"] for h in history[-20:]) / len(history[-20:]),
                "split_hash": split["hash"], "fraction": fraction, "seed": seed}
        if main:
            save_teacher(out / "teacher", teacher, meta)
        written[kind.name] = {"status": "done", "path": str(out / "teacher.safetensors"),
                              "final_loss": meta["final_loss"]}
    return {"split": {k: split[k] for k in ("fraction", "seed", "hash")},
            "fully_labeled": len(split["fully_labeled"]), "instances": len(samples),
            "teachers": written}
