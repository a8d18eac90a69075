"""Pre-train the synthetic "foundation" models on the source world and export them.

    python scripts/pretrain_synthetic_foundation.py sam   --steps 3000 --work runs/pretrain
    python scripts/pretrain_synthetic_foundation.py sam   --sam-model tiny_hr \
        --init pseudolabel/assets/sam_tiny.safetensors --steps 8000 --work runs/pretrain_hr
    python scripts/pretrain_synthetic_foundation.py sam   --sam-model tiny_hr \
        --init pseudolabel/assets/sam_tiny_hr.safetensors --steps 2400 --lr 1e-4 \
        --data-seed 1001 --seed 1 --work runs/pretrain_hr2  # continues them (shipped: from 52b6864)
    python scripts/pretrain_synthetic_foundation.py gdino --steps 6000 --work runs/pretrain
    python scripts/pretrain_synthetic_foundation.py gdino --steps 8000 --lr 1e-4 --warmup 100 \
        --init pseudolabel/assets/gdino_tiny.safetensors --data-seed 1001 --work runs/gd2  # more
    python scripts/pretrain_synthetic_foundation.py clip  --steps 3000 --work runs/pretrain
    python scripts/pretrain_synthetic_foundation.py backbone --steps 2000 --work runs/pretrain
    python scripts/pretrain_synthetic_foundation.py export --work runs/pretrain

Each run is seeded, resumable (re-run the same command after an interruption; ``--stop-after
N`` splits training across runs) and shows a progress bar. ``export`` evaluates both models
zero-shot on the target world's val split (the CLIP text tower by its class embeddings'
cosines and its crop classification) and writes ``pseudolabel/assets/`` (safetensors weights +
manifest.json). Models whose folder is absent keep their manifest entries. ``backbone`` (the
synthetic students' ResNet-18, in ImageNet's place) is not shipped: it writes
``<work>/backbone/resnet18_source.safetensors`` and ``backbone.json`` itself when its last step
is done (``make synthetic-table2`` runs it first).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from pseudolabel.data.coco import load_coco
from pseudolabel.models.checkpoints import load_state_dict, save_safetensors
from pseudolabel.models.predictor import PromptedSam
from pseudolabel.models.sam import build_sam
from pseudolabel.pretrain.loop import train
from pseudolabel.stages.synth import SynthConfig, synthesize

ASSETS = Path(__file__).resolve().parents[1] / "pseudolabel" / "assets"
SUBSET = 16  # the tests re-measure the shipped weights on the first SUBSET val images


def _val(work: Path) -> Path:
    root = work / "target"
    if not (root / "annotations" / "val.json").is_file():
        synthesize(root, SynthConfig(train=0, val=100), progress=False)
    return root


def run_sam(args) -> None:
    from pseudolabel.models.sam import warm_start
    from pseudolabel.pretrain.sam import SamPretrainConfig, train_step

    cfg = SamPretrainConfig(steps=args.steps, seed=args.seed, data_seed=args.data_seed,
                            sam_model=args.sam_model, init=args.init,
                            **({"warmup": args.warmup} if args.warmup is not None else {}),
                            **({"lr": args.lr} if args.lr is not None else {}))
    torch.manual_seed(cfg.seed)
    sam = build_sam(cfg.sam_model)
    if cfg.init:
        warm_start(sam, load_state_dict(cfg.init))
    predictor = PromptedSam(sam)
    predictor.sam.train()
    opt = torch.optim.AdamW(predictor.sam.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    out = args.work / "sam"
    train(predictor.sam, opt, lambda s: train_step(predictor, opt, s, cfg), steps=cfg.steps,
          state_path=out / "state.pt", every=100, desc="tiny SAM", stop_after=args.stop_after)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))


def run_clip(args) -> None:
    from pseudolabel.pretrain.clip import ClipPretrainConfig, TinyClip, train_step

    cfg = ClipPretrainConfig(steps=args.steps, seed=args.seed, data_seed=args.data_seed)
    torch.manual_seed(cfg.seed)
    model = TinyClip()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    out = args.work / "clip"
    train(model, opt, lambda s: train_step(model, opt, s, cfg), steps=cfg.steps,
          state_path=out / "state.pt", every=100, desc="tiny CLIP", stop_after=args.stop_after)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))


def run_backbone(args) -> None:
    from pseudolabel.pretrain.backbone import (
        BACKBONE_FILE,
        BackbonePretrainConfig,
        build_backbone,
        crop_accuracy,
        train_step,
    )

    cfg = BackbonePretrainConfig(steps=args.steps, seed=args.seed, data_seed=args.data_seed,
                                 **({"warmup": args.warmup} if args.warmup is not None else {}),
                                 **({"lr": args.lr} if args.lr is not None else {}))
    torch.manual_seed(cfg.seed)
    model = build_backbone()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    out = args.work / "backbone"
    history = train(model, opt, lambda s: train_step(model, opt, s, cfg), steps=cfg.steps,
                    state_path=out / "state.pt", every=100, desc="student backbone",
                    stop_after=args.stop_after)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    if len(history) < cfg.steps:
        return  # split run: the weights are written once the last step is done
    # not in pseudolabel/assets: 22 MB even in fp16 (the assets stay under 20 MB)
    save_safetensors(out / BACKBONE_FILE, model.state_dict())
    seconds = torch.load(out / "state.pt", weights_only=True)["seconds"]
    figures = {"crop_accuracy_target": round(crop_accuracy(model, "target"), 4),
               "crop_accuracy_source": round(crop_accuracy(model, "source"), 4)}
    (out / "backbone.json").write_text(json.dumps(
        {"command": " ".join(sys.argv), "config": asdict(cfg), "seconds": round(seconds),
         "threads": torch.get_num_threads(), "machine": platform.processor() or
         platform.machine(), "figures": figures}, indent=2))
    print(f"wrote {out / BACKBONE_FILE}: crop accuracy target "
          f"{figures['crop_accuracy_target']:.3f}, source {figures['crop_accuracy_source']:.3f}")


def run_gdino(args) -> None:
    from pseudolabel.pretrain.grounding_dino import GdinoPretrainConfig, make_step

    cfg = GdinoPretrainConfig(steps=args.steps, seed=args.seed, data_seed=args.data_seed,
                              init=args.init,
                              **({"warmup": args.warmup} if args.warmup is not None else {}),
                              **({"lr": args.lr} if args.lr is not None else {}))
    torch.manual_seed(cfg.seed)
    detector, opt, step_fn = make_step(cfg)
    out = args.work / "gdino"
    train(detector.model, opt, step_fn, steps=cfg.steps, state_path=out / "state.pt",
          every=100, desc="tiny Grounding DINO", stop_after=args.stop_after)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_export(args) -> None:
    from pseudolabel.evaluation.teacher import detector_ap, teacher_miou
    from pseudolabel.models.grounding_dino import build_detector

    val_root = _val(args.work)
    gt = load_coco(val_root / "annotations" / "val.json")
    ASSETS.mkdir(parents=True, exist_ok=True)
    # Models not re-exported keep their entries (their weights are left as they are).
    manifest = json.loads((ASSETS / "manifest.json").read_text()) \
        if (ASSETS / "manifest.json").is_file() else {}
    manifest.update({"machine": f"{platform.processor() or platform.machine()}, "
                                f"{torch.get_num_threads()} threads, no GPU",
                     "eval": "target synthetic val (pseudolabel synth defaults, seed 0), "
                             "zero-shot"})
    for name in ("sam", "gdino", "clip"):
        state_file = args.work / name / "state.pt"
        if not state_file.is_file():
            print(f"skipping {name}: {state_file} not found", file=sys.stderr)
            continue
        state = torch.load(state_file, map_location="cpu", weights_only=True)
        cfg = json.loads((args.work / name / "config.json").read_text())
        sam_model = cfg.get("sam_model", "tiny")
        file = {"sam": f"sam_{sam_model}.safetensors", "gdino": "gdino_tiny.safetensors",
                "clip": "text_tiny.safetensors"}[name]
        weights = state["model"]
        if name == "clip":  # only the text tower ships, in fp16 (loaded back as fp32)
            weights = {k.removeprefix("tower."): v.half() for k, v in weights.items()
                       if k.startswith("tower.")}
        # the weights a continuation started from, hashed before the export may overwrite them
        init = Path(cfg.get("init") or "")
        init_sha = _sha256(init) if init.is_file() else None
        save_safetensors(ASSETS / file, weights)
        history = state["history"]
        entry = {
            "file": file, "sha256": _sha256(ASSETS / file),
            "command": f"python scripts/pretrain_synthetic_foundation.py {name} "
                       f"--steps {cfg['steps']} --seed {cfg['seed']} "
                       f"--data-seed {cfg['data_seed']}"
                       + (f" --sam-model {sam_model}" if name == "sam" else "")
                       + (f" --init {cfg['init']}" if cfg.get("init") else "")
                       + (f" --warmup {cfg['warmup']} --lr {cfg['lr']:g}"
                          if name in ("sam", "gdino") else ""),
            "config": cfg, "steps": state["step"],
            "training_note": args.note.get(name, ""),
            "train_seconds": round(state["seconds"], 1),
            "loss_curve": [round(sum(h["loss"] for h in history[i: i + 100])
                                 / len(history[i: i + 100]), 4)
                           for i in range(0, len(history), 100)],
        }
        t = time.perf_counter()
        subset = [img["id"] for img in gt.images[:SUBSET]]
        if name == "clip":
            from pseudolabel.pretrain.clip import class_cosines, crop_accuracy

            entry["metrics"] = {"class_cosine": class_cosines(load_state_dict(ASSETS / file)),
                                "class_cosine_random_tower": class_cosines(),
                                "target_crop_accuracy": crop_accuracy(state["model"])}
        elif name == "sam":
            entry["sam_model"] = sam_model
            predictor = PromptedSam(build_sam(sam_model, checkpoint=ASSETS / file))
            entry["metrics"] = teacher_miou(predictor, gt, val_root / "images")
            entry["metrics_subset"] = teacher_miou(predictor, gt, val_root / "images",
                                                   image_ids=subset, progress=False)
        else:
            detector = build_detector("tiny", checkpoint=ASSETS / file)
            entry["metrics"] = detector_ap(detector, gt, val_root / "images")
            entry["metrics_subset"] = detector_ap(detector, gt, val_root / "images",
                                                  image_ids=subset, progress=False)
        entry["eval_seconds"] = round(time.perf_counter() - t, 1)
        entry["subset_images"] = SUBSET
        old = manifest.get(name)
        if name in ("sam", "gdino") and old and init_sha == old.get("sha256"):
            # a continuation of the weights shipped so far: keep the stages that led to them
            entry["earlier_stages"] = old.pop("earlier_stages", []) + [
                {k: old[k] for k in ("sha256", "command", "steps", "training_note",
                                     "train_seconds", "metrics") if k in old}]
        manifest[name] = entry
        print(name, json.dumps(entry["metrics"]))
    (ASSETS / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {ASSETS / 'manifest.json'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["sam", "gdino", "clip", "backbone", "export"])
    ap.add_argument("--work", type=Path, default=Path("runs/pretrain"))
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-seed", type=int, default=1000)
    ap.add_argument("--note", type=json.loads, default={},
                    help='export: JSON {"sam": "...", "gdino": "..."} on how each was trained')
    ap.add_argument("--sam-model", default="tiny", help="sam: tiny or tiny_hr")
    ap.add_argument("--init", default=None,
                    help="sam: start from weights: a plain tiny SAM's (into tiny_hr: all but "
                         "the detail path) or the same model's (a continuation); gdino: the "
                         "tiny Grounding DINO's (a continuation)")
    ap.add_argument("--warmup", type=int, default=None,
                    help="sam, gdino, backbone: warm-up steps")
    ap.add_argument("--lr", type=float, default=None,
                    help="sam, gdino, backbone: peak learning rate")
    ap.add_argument("--stop-after", type=int, default=None,
                    help="stop this run after N steps (resume later with the same command)")
    args = ap.parse_args()
    {"sam": run_sam, "gdino": run_gdino, "clip": run_clip,
     "backbone": run_backbone, "export": run_export}[args.what](args)


if __name__ == "__main__":
    main()
