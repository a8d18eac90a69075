"""Command line: parses options, builds arguments, calls one library function per command."""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Turn cheap annotations (tags, points, boxes) into instance masks with prompted "
    "foundation models. Without --config, commands run on the embedded synthetic dataset.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # plain click help: paragraphs rewrapped to the terminal
)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="YAML config naming the dataset and run directory "
                 "(default: the embedded synthetic world)."),
]
WEAK_HELP = "Weak setting: none, class, point+class or box+class."
RunDirOpt = Annotated[Path | None, typer.Option(help="Run directory (default: config).")]
WeakFileOpt = Annotated[Path | None, typer.Option(
    help="Weak-label file (default: <run_dir>/weak/<weak>.json).")]
PseudoOutOpt = Annotated[Path | None, typer.Option(
    help="Output file (default: <run_dir>/pseudo/<weak>.json).")]
DeviceOpt = Annotated[str | None, typer.Option(
    help="Device: auto (cuda:$LOCAL_RANK when CUDA is available, else cpu), cpu, cuda or "
    "cuda:N. Default: the config's runtime.device, else auto.")]
PrecisionOpt = Annotated[str | None, typer.Option(
    help="Precision of model forwards: fp32, bf16 or fp16 (autocast; thresholds, IoUs and "
    "loss reductions stay fp32; fp16 training uses a gradient scaler). Default: the "
    "config's runtime.precision, else fp32.")]
ZoomOpt = Annotated[float | None, typer.Option(
    help="Decode every box prompt (generate: box+class, none, class, BP-SAM's refined "
    "boxes and SAMRefiner's; evaluate: box, box+point; refine: each mask's box) on a crop "
    "this many times the box's longer side, "
    "resized to SAM's input; 0 decodes on the whole image as seed 001. One encoder pass "
    "per box. Default: the config's generate.zoom_context (3 in the synthetic default, 0 "
    "otherwise).")]
SamRefinerOpt = Annotated[bool, typer.Option(
    "--samrefiner", help="Refine every pseudo-mask with SAMRefiner (seed 002: point, "
    "elastic box and Gaussian mask prompts mined from it).")]


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _config(path):
    """The config (``None``: the synthetic default), its image-path policy applied."""
    from pseudolabel.config import load_config
    from pseudolabel.data.images import set_follow_symlinks

    cfg = load_config(path)
    set_follow_symlinks(cfg.follow_symlinks)
    return cfg


def _runtime(device: str | None, precision: str | None, cfg):
    """The command's runtime (device, precision, rank): flags, then the config's block."""
    from pseudolabel.runtime import setup_runtime

    return setup_runtime(device, precision, cfg.runtime)


def _print_json(data: dict, out: Path | None) -> None:
    text = json.dumps(data, indent=2)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
        typer.echo(f"wrote {out}")


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v",
                                               help="Log every skipped item.")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.ERROR,
                        format="%(levelname)s %(message)s", stream=sys.stderr)


@app.command()
def synth(
    out: Annotated[Path, typer.Option(help="Output folder (images/ and annotations/).")] = Path(
        "runs/data/synthetic"),
    train: Annotated[int, typer.Option(help="Number of training images.")] = 400,
    val: Annotated[int, typer.Option(help="Number of validation images.")] = 100,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, byte-identical files.")] = 0,
    size: Annotated[int, typer.Option(help="Longest image side in pixels.")] = 160,
    style: Annotated[str, typer.Option(
        help="World style: target (default) or source (the domain the synthetic foundation "
        "models train on).")] = "target",
) -> None:
    """Write the synthetic dataset: PNG images + COCO annotations/train.json and val.json."""
    from pseudolabel.stages.synth import SynthConfig, synthesize

    try:
        counts = synthesize(out, SynthConfig(train=train, val=val, seed=seed, size=size,
                                             style=style))
    except ValueError as exc:
        _fail(str(exc))
    for split, c in counts.items():
        typer.echo(f"{split}: {c['images']} images, {c['instances']} instances")
    typer.echo(f"wrote {out}/annotations/train.json, {out}/annotations/val.json")


@app.command()
def weaken(
    weak: Annotated[str, typer.Option(help=WEAK_HELP)],
    fraction: Annotated[float, typer.Option(help="Share of images that keep full masks, "
                                            "e.g. 0.01 or 0.1 (0 for none).")],
    gt: Annotated[Path | None, typer.Option(help="Ground-truth COCO file (default: the "
                                            "config's training annotations).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split and of the points.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Output file (default: "
                                             "<run_dir>/weak/<weak>.json).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Simulate weak labels from ground truth as seed 001 does (§3.2-3.5)."""
    from pseudolabel.config import ensure_data
    from pseudolabel.data.coco import load_coco, save_json
    from pseudolabel.stages.weaken import weaken as run_weaken

    try:
        cfg = _config(config)
        gt = gt if gt is not None else ensure_data(cfg).train
        out = out if out is not None else cfg.run_dir / "weak" / f"{weak}.json"
        data, report = run_weaken(load_coco(gt), weak, fraction, seed)
    except ValueError as exc:
        _fail(str(exc))
    save_json(out, data)
    kinds: dict[str, int] = {}
    for img in data["images"]:
        kinds[img["kind"]] = kinds.get(img["kind"], 0) + 1
    typer.echo(f"{weak} @ {fraction:g}: " + ", ".join(f"{n} {k}" for k, n in kinds.items())
               + f" images, {len(data['annotations'])} annotations")
    if len(report):
        typer.echo(report.summary())
    typer.echo(f"wrote {out}")


def _format_ap(name: str, stats: dict) -> str:
    return f"{name:<9}" + "".join(f"{k}={v:6.2f}  " for k, v in stats.items())


@app.command()
def evaluate(
    pred: Annotated[Path | None, typer.Option(help="Mask predictions: COCO results list or "
                                              "COCO file.")] = None,
    pseudo: Annotated[Path | None, typer.Option(help="Pseudo-label file to score on its "
                                                "weakly labelled images.")] = None,
    teacher: Annotated[str | None, typer.Option(
        help="SAM weights to score with GT-simulated prompts ('default': the shipped "
        "synthetic foundation SAM), or a run directory: each fine-tuned teacher next to "
        "the zero-shot SAM.")] = None,
    detector: Annotated[str | None, typer.Option(
        help="Grounding DINO weights to score by box AP50 with the whole label space as "
        "prompt ('default': the shipped tiny model; or a hub id / folder).")] = None,
    gt: Annotated[Path | None, typer.Option(help="Ground truth (default: the config's "
                                            "validation annotations; training annotations "
                                            "for --pseudo).")] = None,
    images: Annotated[Path | None, typer.Option(help="Image root for --teacher/--detector "
                                                "(default: the config's).")] = None,
    prompts: Annotated[str, typer.Option(help="Prompt kinds for --teacher, comma-separated: "
                                         "box, point, box+point.")] = "box,point,box+point",
    sam_model: SamModelOpt = None,
    zoom_context: ZoomOpt = None,
    max_images: Annotated[int | None, typer.Option(help="Score only the first N images.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json",
                                                  help="Write the figures as JSON.")] = None,
    area_scale: Annotated[float | None, typer.Option(help="Multiply COCO's small/large area "
                          "thresholds (default: the GT's info.area_scale, else 1).")] = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Score predictions (mask AP + boundary AP), pseudo-masks, a SAM teacher or a detector.

    --device and --precision apply to --teacher and --detector (the models run there).
    """
    from pseudolabel.config import ensure_data

    chosen = [n for n, v in (("--pred", pred), ("--pseudo", pseudo), ("--teacher", teacher),
                             ("--detector", detector)) if v is not None]
    if len(chosen) != 1:
        _fail("give exactly one of --pred, --pseudo, --teacher or --detector")
    try:
        cfg = _config(config)
        data = ensure_data(cfg) if gt is None or images is None else None
        gt = gt if gt is not None else (data.train if pseudo is not None else data.val)
        images = images if images is not None else (data.images if data else None)
        if teacher is not None:
            _evaluate_teacher(teacher, sam_model or cfg.models.sam, gt, images, prompts,
                              max_images, json_out, _runtime(device, precision, cfg),
                              cfg.generate.zoom(zoom_context))
        elif detector is not None:
            _evaluate_detector(detector, gt, images, max_images, json_out,
                               _runtime(device, precision, cfg))
        else:
            _evaluate_masks(pred, pseudo, gt, area_scale, json_out)
    except ValueError as exc:
        _fail(str(exc))


def _evaluate_teacher(teacher, sam_model, gt, images, prompts, max_images, json_out,
                      runtime, zoom) -> None:
    from pseudolabel.stages.model_eval import evaluate_run_teachers, evaluate_teacher

    if zoom.on:
        typer.echo(f"box prompts zoomed (context {zoom.context:g}, min side "
                   f"{zoom.min_side:g}); --zoom-context 0 scores them on the whole image")
    if Path(teacher).is_dir():
        result = evaluate_run_teachers(teacher, gt, images, max_images, runtime=runtime,
                                       zoom=zoom)
        for name, row in result["mIoU"].items():
            typer.echo(f"{name:<14}" + "  ".join(f"{k} {v:.3f}" for k, v in row.items()))
        _print_json(result, json_out)
        return
    kinds = tuple(p.strip() for p in prompts.split(",") if p.strip())
    result = evaluate_teacher(teacher, sam_model, gt, images, kinds, max_images,
                              runtime=runtime, zoom=zoom)
    for kind, r in result["mIoU"].items():
        typer.echo(f"{kind:<10} mIoU {r['mIoU']:.3f}  ({r['num_instances']} instances)")
    _print_json(result, json_out)


def _evaluate_detector(detector, gt, images, max_images, json_out, runtime) -> None:
    from pseudolabel.stages.model_eval import evaluate_detector

    name, ckpt = ("tiny", detector) if detector == "default" or Path(detector).is_file() \
        else (detector, None)
    result = evaluate_detector(name, ckpt, gt, images, max_images, runtime=runtime)
    typer.echo(f"box AP50 {result['AP50']:.2f}  AP {result['AP']:.2f}")
    _print_json(result, json_out)


def _evaluate_masks(pred, pseudo, gt, area_scale, json_out) -> None:
    from pseudolabel.data.coco import load_coco
    from pseudolabel.data.report import Report
    from pseudolabel.evaluation.coco_eval import evaluate_masks, load_predictions
    from pseudolabel.evaluation.pseudo import evaluate_pseudo

    gt_ds = load_coco(gt)
    skipped = Report()
    if pred is not None:
        result = evaluate_masks(gt_ds, load_predictions(pred, skipped), area_scale=area_scale,
                                report=skipped)
    else:
        result = evaluate_pseudo(load_coco(pseudo), gt_ds, area_scale=area_scale)
        typer.echo(f"pseudo-masks on {result['num_images']} weakly labelled images: "
                   f"mIoU {result['mIoU']:.3f} over {result['num_instances']} GT instances, "
                   f"{result['unmatched_pseudo']} unmatched pseudo-masks")
        for name, c in result["per_class"].items():
            typer.echo(f"  {name:<12} mIoU {c['mIoU']:.3f}  ({c['num_instances']} instances)")
    typer.echo(_format_ap("mask", result["segm"]))
    typer.echo(_format_ap("boundary", result["boundary"]))
    if len(gt_ds.report):
        typer.echo(gt_ds.report.summary())
    if len(skipped):
        typer.echo(f"predictions: {skipped.summary()}")
        result["skipped"] = [str(p) for p in skipped.problems]
    _print_json(result, json_out)


@app.command("teacher-finetune")
def teacher_finetune(
    fraction: Annotated[float, typer.Option(help="Share of images with full masks "
                                            "(the split weaken uses for the same seed).")],
    seed: Annotated[int, typer.Option(help="Seed of the split and of training.")] = 0,
    teachers: Annotated[str, typer.Option(
        help="Comma-separated subset of box, box-cls, point-cls, boxpoint-cls.")] =
        "box,box-cls,point-cls,boxpoint-cls",
    class_aware: Annotated[bool, typer.Option(
        "--class-aware/--no-class-aware",
        help="--no-class-aware trains the ablation without the class module.")] = True,
    steps: Annotated[int | None, typer.Option(help="Override the config's steps.")] = None,
    sam_model: Annotated[str | None, typer.Option(help="SAM variant (default: config).")] = None,
    sam_checkpoint: Annotated[str | None, typer.Option(
        help="SAM weights file ('default': shipped; default: config).")] = None,
    run_dir: RunDirOpt = None,
    stop_after: Annotated[int | None, typer.Option(
        help="Stop each teacher after N steps; the same command resumes.")] = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Fine-tune class-aware SAM teachers on the fully labelled images (seed 001 §3, §4.1).

    Under torchrun every rank takes its share of each global batch.
    """
    from dataclasses import asdict

    from pseudolabel.config import ensure_data
    from pseudolabel.stages.teacher_finetune import finetune_teachers
    from pseudolabel.teacher.train import FinetuneConfig

    try:
        cfg = _config(config)
        rt = _runtime(device, precision, cfg)
        data = ensure_data(cfg) if rt.is_main else cfg.data
        rt.barrier()  # rank 0 may be writing the synthetic data
        tcfg = asdict(cfg.teacher)
        if steps is not None:
            tcfg["steps"] = steps
        summary = finetune_teachers(
            gt_path=data.train, image_root=data.images, run_dir=run_dir or cfg.run_dir,
            fraction=fraction, seed=seed,
            teachers=tuple(t.strip() for t in teachers.split(",") if t.strip()),
            class_aware=class_aware, sam_model=sam_model or cfg.models.sam,
            sam_checkpoint=sam_checkpoint or cfg.models.sam_checkpoint,
            text_encoder=cfg.models.text_encoder, text_checkpoint=cfg.models.text_checkpoint,
            cfg=FinetuneConfig(seed=seed, **tcfg), stop_after=stop_after, runtime=rt)
    except ValueError as exc:
        _fail(str(exc))
    if not rt.is_main:
        return
    typer.echo(f"split {summary['split']['hash']}: {summary['fully_labeled']} fully labelled "
               f"images, {summary['instances']} instances")
    for name, r in summary["teachers"].items():
        typer.echo(f"  {name:<14} {r['status']}" + (f"  final loss {r['final_loss']:.3f}"
                                                   if "final_loss" in r else ""))


def _parse_shard(shard: str | None) -> tuple[int, int] | None:
    if shard is None:
        return None
    try:
        i, n = (int(v) for v in shard.split("/"))
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        _fail(f"--shard {shard!r}: expected i/n with 0 <= i < n, e.g. 0/4")
    return i, n


def _generate_setup(cfg, weak, weak_file, run_dir, out, opts, runtime, weights=True):
    """Data, jobs, teachers and detector of one generate / merge call."""
    from pseudolabel.config import ensure_data
    from pseudolabel.data.coco import load_coco
    from pseudolabel.pseudo_masks import uses_detector
    from pseudolabel.stages.generate import (
        detector_identity,
        jobs_for,
        load_detector,
        load_run_teachers,
        parse_settings,
    )

    data = ensure_data(cfg) if runtime.is_main else cfg.data
    runtime.barrier()  # rank 0 may be writing the synthetic data
    run_dir = run_dir or cfg.run_dir
    settings = parse_settings(weak, weak_file)
    paths = [weak_file] if weak_file else [run_dir / "weak" / f"{s}.json" for s in settings]
    for setting, path in zip(settings, paths, strict=True):
        if not Path(path).is_file():
            _fail(f"{path}: weak-label file not found (write it with pseudolabel weaken --weak "
                  f"{setting} --fraction F, or pass --weak-file)")
    weak_sets = [load_coco(p) for p in paths]
    for path, w in zip(paths, weak_sets, strict=True):
        plain = [img["id"] for img in w.images if img.get("kind") is None]
        if plain:
            _fail(f"{path}: images {plain[:5]}{'...' if len(plain) > 5 else ''} have no 'kind': "
                  "generate needs a weak-label file (write one with pseudolabel weaken, or "
                  "mark each image's kind; see docs/weak-labels.md)")
    kinds = {img.get("kind") for w in weak_sets for img in w.images} - {"fully_labeled"}
    categories = weak_sets[0].category_ids
    teachers = load_run_teachers(run_dir, kinds, categories, refine=opts.refine,
                                 zero_shot=opts.zero_shot, sam_model=cfg.models.sam,
                                 sam_checkpoint=cfg.models.sam_checkpoint, runtime=runtime,
                                 weights=weights)
    detector = detector_sha = None
    if any(uses_detector(k, opts.refine) for k in kinds):
        if weights:
            detector, detector_sha = load_detector(cfg.models, runtime=runtime)
        else:
            _, detector_sha = detector_identity(cfg.models)
    jobs = jobs_for(None if weak_file and weak is None else weak, run_dir, weak_file, opts,
                    teachers, detector_sha, out)
    return data, jobs, teachers, detector, detector_sha


WeakListOpt = Annotated[str | None, typer.Option(
    help="Weak setting(s): none, class, point+class, box+class, a comma list of them, or "
    "all; mixed for a --weak-file whose images carry different kinds. Default: what "
    "--weak-file holds.")]


@app.command()
def generate(
    weak: WeakListOpt = None,
    weak_file: WeakFileOpt = None,
    run_dir: RunDirOpt = None,
    out: PseudoOutOpt = None,
    refine: Annotated[bool, typer.Option(
        "--refine/--no-refine",
        help="point+class: --no-refine keeps P-SAM's masks (no Grounding DINO, no "
             "Algorithm 1).")] = True,
    zero_shot: Annotated[bool, typer.Option(
        "--zero-shot", help="Prompt the base SAM instead of the fine-tuned teachers.")] = False,
    samrefiner: SamRefinerOpt = False,
    zoom_context: ZoomOpt = None,
    shard: Annotated[str | None, typer.Option(
        help="i/n: do only shard i of n (a job array); merge with pseudolabel merge.")] = None,
    part_size: Annotated[int, typer.Option(help="Images per part written to disk.")] = 16,
    workers: Annotated[int, typer.Option(help="Image-loading threads (decode and resize "
                                         "ahead of the model).")] = 2,
    encode_batch: Annotated[int, typer.Option(
        help="Images per image-encoder call (one forward on a GPU; a CPU splits it to bound "
        "memory).")] = 8,
    detect_batch: Annotated[int, typer.Option(
        help="Images per Grounding DINO forward. 1 keeps each image's detections "
        "independent of the images beside it to the last bit; more is faster on a GPU.")
                            ] = 1,
    retry_failed: Annotated[bool, typer.Option(
        "--retry-failed", help="Redo the parts in which an image failed (unreadable, "
        "truncated, size unlike its record); a plain re-run keeps them as they are.")] = False,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Write pseudo-masks for weak settings (seed 001 §3.2-3.5); resumable.

    --weak all (or a comma list) generates every setting in one pass: each image is loaded,
    encoded and detected once for all of them, and one file per setting is written,
    identical to separate runs. A weak file whose images carry different kinds is generated
    in one call, each image by its own kind (--weak-file F, or --weak mixed --weak-file F).
    Parts are written as they finish; re-running the same command after an interruption
    continues where it stopped. Under torchrun every rank takes its own parts and rank 0
    writes the files.
    """
    from pseudolabel.stages.generate import GenerateOptions, generate_many

    parsed = _parse_shard(shard)
    try:
        cfg = _config(config)
        cfg_rt = _runtime(device, precision, cfg)
        if cfg_rt.distributed and parsed:
            _fail("--shard and torchrun both split the work; use one of them")
        opts = GenerateOptions(weak or "", refine=refine, zero_shot=zero_shot,
                               samrefiner=samrefiner, part_size=part_size, workers=workers,
                               encode_batch=encode_batch, detect_batch=detect_batch,
                               retry_failed=retry_failed, zoom=cfg.generate.zoom(zoom_context))
        data, jobs, teachers, detector, dsha = _generate_setup(
            cfg, weak, weak_file, run_dir, out, opts, cfg_rt)
        part = (cfg_rt.rank, cfg_rt.world_size) if cfg_rt.distributed else (parsed or (0, 1))
        summaries = generate_many(jobs, data.images, teachers, detector, detector_sha=dsha,
                                  shard=part, merge=parsed is None and cfg_rt.is_main,
                                  progress=cfg_rt.is_main,
                                  barrier=cfg_rt.barrier if cfg_rt.distributed else None)
    except ValueError as exc:
        _fail(str(exc))
    if not cfg_rt.is_main:
        return
    for summary in summaries:
        if "out" not in summary:
            typer.echo(f"{summary['setting']}: shard {summary['shard']} done, parts in "
                       f"{summary['parts_dir']}; run pseudolabel merge with the same --weak "
                       "when every shard has finished")
            continue
        typer.echo(f"{summary['setting']}: {summary['pseudo_masks']} pseudo-masks "
                   f"({summary['empty_dropped']} empty dropped), {summary['gt_masks']} GT masks")
        typer.echo(f"  consistency: {summary['point_outside_mask']} point outside its mask, "
                   f"{summary['mostly_outside_box']} more than half outside the prompt box, "
                   f"{summary['class_not_in_tags']} class not among the image tags")
        _echo_failed(summary)
        _echo_skipped({"skipped_input": summary.get("skipped_input")})
        typer.echo(f"wrote {summary['out']}")


@app.command()
def merge(
    weak: WeakListOpt = None,
    weak_file: WeakFileOpt = None,
    run_dir: RunDirOpt = None,
    out: PseudoOutOpt = None,
    refine: Annotated[bool, typer.Option("--refine/--no-refine",
                                         help="As given to generate.")] = True,
    zero_shot: Annotated[bool, typer.Option("--zero-shot", help="As given to generate.")] = False,
    samrefiner: Annotated[bool, typer.Option("--samrefiner", help="As given to generate.")
                          ] = False,
    zoom_context: Annotated[float | None, typer.Option(help="As given to generate.")] = None,
    part_size: Annotated[int, typer.Option(help="As given to generate.")] = 16,
    detect_batch: Annotated[int, typer.Option(help="As given to generate.")] = 1,
    config: ConfigOpt = None,
) -> None:
    """Merge the parts of sharded generate jobs (generate --shard i/n) into the files.

    Loads no model: the parts are found by the teachers' and detector's file hashes.
    """
    from pseudolabel.runtime import CPU
    from pseudolabel.stages.generate import GenerateOptions, generate_many

    try:
        cfg = _config(config)
        opts = GenerateOptions(weak or "", refine=refine, zero_shot=zero_shot,
                               samrefiner=samrefiner, part_size=part_size,
                               detect_batch=detect_batch, zoom=cfg.generate.zoom(zoom_context))
        data, jobs, teachers, _, dsha = _generate_setup(cfg, weak, weak_file,
                                                        run_dir, out, opts, CPU, weights=False)
        summaries = generate_many(jobs, data.images, teachers, None, detector_sha=dsha,
                                  merge=True, progress=False, only_merge=True)
    except ValueError as exc:
        _fail(str(exc))
    for summary in summaries:
        typer.echo(f"{summary['setting']}: {summary['pseudo_masks']} pseudo-masks, "
                   f"{summary['gt_masks']} GT masks")
        _echo_failed(summary)
        typer.echo(f"wrote {summary['out']}")


def _echo_skipped(summary: dict) -> None:
    """Input items skipped when loading and images that could not be used, by name."""
    skipped = summary.get("skipped_input") or []
    if skipped:
        typer.echo(f"skipped {len(skipped)} item(s) of the input; first: {skipped[0]}")
    failed = summary.get("failed") or []
    if failed:
        first = failed[0]
        what = f"image {first['image_id']}" if "image_id" in first else first.get("label_map")
        typer.echo(f"{len(failed)} image(s) could not be used (recorded in the output), e.g. "
                   f"{what}: {first['reason']}")


def _echo_failed(summary: dict) -> None:
    failed = summary.get("failed") or []
    if failed:
        typer.echo(f"  {len(failed)} image(s) failed and were left out (listed in the file's "
                   f"info.pseudolabel.failed_images; generate --retry-failed tries them "
                   f"again), e.g. image {failed[0]['image_id']}: {failed[0]['reason']}")


@app.command()
def noise(
    level: Annotated[str | None, typer.Option(
        help="COCO-N level (seed 003 Table 7): easy, medium or hard.")] = None,
    spec: Annotated[str | None, typer.Option(
        help="Custom mix instead of --level, e.g. 'class=0.3,scale=0.25:5,"
        "localization=0.25:3,approximation=0.25:10' (probability:kernel / sigma / "
        "tolerance in pixels; class_asym=P flips within the supercategory).")] = None,
    wan: Annotated[str | None, typer.Option(
        help="COCO-WAN level instead (seed 003 §3.4): easy (SAM on the GT box), medium "
        "(SAM on the box centre), hard (medium + 40% class noise).")] = None,
    gt: Annotated[Path | None, typer.Option(help="Clean COCO instances file (default: the "
                                            "config's training annotations).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output file (default: "
                                             "<run_dir>/noise/<level>.json).")] = None,
    seed: Annotated[int, typer.Option(help="Same seed, byte-identical file.")] = 0,
    workers: Annotated[int, typer.Option(help="Processes for COCO-N (same file as one).")] = 1,
    independent: Annotated[bool, typer.Option(
        "--independent", help="Draw each instance's noise independently (eq. 1-2 literally) "
        "instead of exact counts; realised rates then scatter around the level's.")] = False,
    evaluate: Annotated[bool, typer.Option(
        "--eval/--no-eval", help="Score the noisy labels against the clean ones (mask AP, "
        "boundary AP).")] = True,
    images: Annotated[Path | None, typer.Option(help="Image root for --wan (default: the "
                                                "config's).")] = None,
    sam_model: SamModelOpt = None,
    sam_checkpoint: Annotated[str, typer.Option(
        help="SAM weights for --wan ('default': the shipped tiny SAM, or the official "
        "file of the variant).")] = "default",
    json_out: Annotated[Path | None, typer.Option("--json",
                                                  help="Write the summary as JSON.")] = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Noisy copies of a COCO file: COCO-N class + spatial noise, or COCO-WAN SAM masks.

    --device and --precision apply to --wan (SAM runs there).
    """
    from pseudolabel.config import ensure_data
    from pseudolabel.stages.noise import noise_file, resolve_spec, wan_file

    try:
        cfg = _config(config)
        data = ensure_data(cfg) if gt is None or (wan and images is None) else None
        gt = gt if gt is not None else data.train
        if wan is not None:
            if level is not None or spec is not None:
                raise ValueError("--wan replaces --level/--spec; give one of them")
            out = out if out is not None else cfg.run_dir / "noise" / f"wan-{wan}.json"
            summary = wan_file(gt, images if images is not None else data.images, out, wan,
                               sam_model=sam_model or cfg.models.sam,
                               checkpoint=sam_checkpoint, seed=seed,
                               evaluate=evaluate, runtime=_runtime(device, precision, cfg))
        else:
            name, noise_spec = resolve_spec(level, spec)
            out = out if out is not None else cfg.run_dir / "noise" / f"{name}.json"
            summary = noise_file(gt, out, noise_spec, name=name, seed=seed,
                                 independent=independent, workers=workers, evaluate=evaluate)
    except ValueError as exc:
        _fail(str(exc))
    n = summary["instances"]
    typer.echo(f"{n} instances: class noise {summary['class_flipped']} "
               f"({summary['class_rate']:.3f})")
    for kind, row in summary.get("spatial", {}).items():
        typer.echo(f"  {kind:<14} {row['count']:>7} ({row['rate']:.3f}, level {row['expected']})")
    if "spatial_rate" in summary:
        typer.echo(f"  spatial total  {summary['spatial_rate']:.3f}")
    typer.echo(f"kept clean (the noisy mask would have been empty): {summary['kept_clean']}; "
               f"crowd regions untouched: {summary['crowd_untouched']}")
    if "vs_clean" in summary:
        v = summary["vs_clean"]
        typer.echo(f"noisy vs clean: mask AP {v['mask_AP']:.1f}, boundary AP "
                   f"{v['boundary_AP']:.1f}")
    _echo_skipped(summary)
    _print_json(summary, json_out)
    typer.echo(f"wrote {summary['out']}")


SamModelOpt = Annotated[str | None, typer.Option(
    help="SAM variant: tiny, tiny_hr, vit_b, vit_l, vit_h (default: the config's models.sam).")]
SamCkptOpt = Annotated[str, typer.Option(
    help="SAM weights ('default': the shipped tiny SAM, or the official file of the "
    "variant).")]


@app.command()
def refine(
    coarse: Annotated[Path | None, typer.Option(help="Coarse COCO instance masks.")] = None,
    semantic: Annotated[Path | None, typer.Option(
        help="Instead of --coarse: a folder of coarse semantic label maps (one PNG per "
        "image, named like the image).")] = None,
    images: Annotated[Path | None, typer.Option(help="Image root (default: the config's).")
                      ] = None,
    out: Annotated[Path | None, typer.Option(help="Output COCO file, or folder for "
                                             "--semantic.")] = None,
    iters: Annotated[int, typer.Option(help="Refinement rounds; each uses the previous "
                                       "round's masks as the coarse masks.")] = 1,
    prompts: Annotated[str, typer.Option(help="Prompts mined from each coarse mask, "
                                         "comma-separated: point, box, mask.")
                       ] = "point,box,mask",
    cebox: Annotated[bool, typer.Option("--cebox/--no-cebox", help="Grow the box prompt "
                                        "with the context-aware elastic box (or use the "
                                        "tight box).")] = True,
    adapter: Annotated[Path | None, typer.Option(help="IoU adapter from refine-adapt "
                                                 "(SAMRefiner++).")] = None,
    background: Annotated[int, typer.Option(help="--semantic: background value.")] = 0,
    ignore: Annotated[int, typer.Option(help="--semantic: ignore value (kept as is).")] = 255,
    min_area: Annotated[int, typer.Option(help="--semantic: drop regions smaller than this "
                                          "(px) before merging.")] = 10,
    zoom_context: ZoomOpt = None,
    sam_model: SamModelOpt = None,
    sam_checkpoint: SamCkptOpt = "default",
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Refine coarse masks with SAM (SAMRefiner, seed 002): prompts mined from each mask."""
    from pseudolabel.config import ensure_data
    from pseudolabel.stages.refine import load_refiner, refine_coco, refine_semantic

    if (coarse is None) == (semantic is None):
        _fail("give exactly one of --coarse (COCO) or --semantic (folder of label maps)")
    kinds = tuple(p.strip() for p in prompts.split(",") if p.strip())
    try:
        cfg = _config(config)
        images = images if images is not None else ensure_data(cfg).images
        sam_model = sam_model or cfg.models.sam
        sam = load_refiner(sam_model, sam_checkpoint, adapter, _runtime(device, precision, cfg))
        zoom = cfg.generate.zoom(zoom_context)
        refiner = {"sam_model": sam_model, "sam_checkpoint": sam_checkpoint,
                   "adapter": str(adapter) if adapter else None}
        if zoom.on and "box" in kinds:
            typer.echo(f"each mask decoded on a crop around its box prompt (zoom context "
                       f"{zoom.context:g}); --zoom-context 0 decodes on the whole image")
        if semantic is not None:
            out = out if out is not None else cfg.run_dir / "refined" / semantic.name
            summary = refine_semantic(semantic, images, out, sam, prompts=kinds, iters=iters,
                                      cebox=cebox, zoom=zoom, background=background,
                                      ignore=ignore, min_area=min_area, manifest=refiner)
            typer.echo(f"{summary.get('images', 0)} label maps, {summary.get('regions', 0)} "
                       f"regions refined; {summary.get('skipped_existing', 0)} already done")
        else:
            out = out if out is not None else cfg.run_dir / "refined" / coarse.name
            summary = refine_coco(coarse, images, out, sam, prompts=kinds, iters=iters,
                                  cebox=cebox, zoom=zoom, manifest=refiner)
            typer.echo(f"{summary.get('refined', 0)} masks refined on {summary['images']} "
                       f"images ({summary.get('box_expanded', 0)} boxes grown by CEBox) in "
                       f"{summary['seconds']:.1f} s")
    except ValueError as exc:
        _fail(str(exc))
    _echo_skipped(summary)
    typer.echo(f"wrote {summary['out']}")


@app.command("refine-adapt")
def refine_adapt(
    coarse: Annotated[Path, typer.Option(help="Coarse COCO instance masks to adapt on.")],
    out: Annotated[Path, typer.Option(help="Adapter file to write (.safetensors).")],
    images: Annotated[Path | None, typer.Option(help="Image root (default: the config's).")
                      ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the prompt draws.")] = 0,
    max_images: Annotated[int | None, typer.Option(help="Use only the first N images.")
                          ] = None,
    sam_model: SamModelOpt = None,
    sam_checkpoint: SamCkptOpt = "default",
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Train SAMRefiner++'s IoU adapter (seed 002 §3.3) on coarse masks, no annotation."""
    from pseudolabel.config import ensure_data
    from pseudolabel.stages.refine import adapt_iou, load_refiner

    try:
        cfg = _config(config)
        images = images if images is not None else ensure_data(cfg).images
        sam = load_refiner(sam_model or cfg.models.sam, sam_checkpoint,
                           runtime=_runtime(device, precision, cfg))
        summary = adapt_iou(coarse, images, out, sam, seed=seed, max_images=max_images)
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(f"{summary['masks']} masks, {summary['steps']} steps, mean ranking loss "
               f"{summary['mean_loss']:.4f}")
    _echo_skipped(summary)
    typer.echo(f"wrote {summary['out']}")


@app.command("train-student")
def train_student(
    weak: Annotated[str | None, typer.Option(
        help=WEAK_HELP + " Trains on <run_dir>/pseudo/<weak>.json.")] = None,
    full: Annotated[bool, typer.Option(
        "--full", help="Train on every GT mask instead (the 100% row of seed 001 Table 2).")
                    ] = False,
    student: Annotated[str, typer.Option(help="Student model: mask2former or condinst.")
                       ] = "mask2former",
    pseudo: Annotated[Path | None, typer.Option(help="Pseudo-label file (default: "
                                                "<run_dir>/pseudo/<weak>.json).")] = None,
    run_dir: RunDirOpt = None,
    steps: Annotated[int | None, typer.Option(help="Optimiser steps (default: the config's)."
                                              )] = None,
    seed: Annotated[int | None, typer.Option(
        help="Seed of the student's init, batch order and augmentation (default: the "
        "config's student.seed, 0). A seed other than 0 trains into its own folder "
        "(student/<name>-<student>-seed<N>) and is compared with the full student of that "
        "seed.", min=0)] = None,
    quality_weighted: Annotated[bool, typer.Option(
        "--quality-weighted", help="Scale each pseudo-mask's loss by its score (seed 000 "
        "eq. 1).")] = False,
    evaluate: Annotated[bool, typer.Option("--eval/--no-eval",
                                           help="Evaluate on the validation set.")] = True,
    backbone_checkpoint: Annotated[str | None, typer.Option(
        help="ImageNet ResNet weights for the backbone: a torchvision file (e.g. "
        "resnet50-11ad3fa6.pth) or a timm / transformers folder (default: the config's "
        "student.backbone_checkpoint; none: random init).")] = None,
    workers: Annotated[int, typer.Option(
        help="DataLoader processes preparing batches (decode, LSJ) ahead of the model; 0 "
        "prepares them in the training process.")] = 2,
    boxseg: Annotated[bool, typer.Option(
        "--boxseg", help="BoxSeg (seed 000): train CondInst from boxes with an EMA teacher, "
        "quality-aware fused pseudo-masks and peer-assisted copy-paste (a box+class weak file, "
        "or a pseudo-label file whose fully labelled images keep their masks).")] = False,
    qam: Annotated[str, typer.Option(
        help="--boxseg: Quality-Aware Module: off (BoxInst losses only), bpma, bqr, bqr+qmf "
        "or full (seed 000 Table 4).")] = "full",
    copy_paste: Annotated[str | None, typer.Option(
        help="Peer-assisted copy-paste (seed 000 Algorithm 1, Table 5): off, random (any "
        "mask, anywhere) or quality (masks scoring > 0.5 that overlap nothing, pasted over an "
        "object). Default: quality with --boxseg, off otherwise.")] = None,
    fixed_k: Annotated[int | None, typer.Option(
        help="--boxseg: a fixed number of fused candidates instead of eq. 4's adaptive K.")
                       ] = None,
    export_pseudo: Annotated[Path | None, typer.Option(
        help="--boxseg: write the teacher's fused masks of the training boxes as a COCO "
        "pseudo-label file (score = the mask-quality score w).")] = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Train a student on GT + pseudo-masks and evaluate it (seed 001 §4.1); resumable.

    Under torchrun: DistributedDataParallel, each rank its share of every global batch, rank
    0 writes; evaluation is split across ranks.

    Re-running the same command after an interruption continues from the last checkpoint.
    """
    from dataclasses import replace

    from pseudolabel.config import ensure_data
    from pseudolabel.stages.train_student import StudentConfig, evaluate_student, student_folder
    from pseudolabel.stages.train_student import train_student as run_train

    if student not in ("mask2former", "condinst"):
        _fail(f"unknown student {student!r}; available: mask2former, condinst")
    if full == (weak is not None):
        _fail("give exactly one of --weak W or --full")
    if copy_paste is None:
        copy_paste = "quality" if boxseg else "off"
    from pseudolabel.students.copy_paste import MODES as PASTE_MODES

    if copy_paste not in PASTE_MODES:
        _fail(f"--copy-paste {copy_paste!r}: expected {', '.join(PASTE_MODES[:-1])} or "
              f"{PASTE_MODES[-1]}")
    if boxseg and (full or student != "condinst"):
        _fail("--boxseg trains a CondInst student from boxes: give --student condinst and "
              "--weak box+class (or --pseudo FILE)")
    try:
        cfg = _config(config)
        rt = _runtime(device, precision, cfg)
        run_dir = run_dir if run_dir is not None else cfg.run_dir
        try:
            scfg = StudentConfig(**(cfg.raw.get("student") or {}))
        except TypeError as exc:
            raise ValueError(f"bad 'student' section in the config ({exc})") from None
        scfg = replace(scfg, arch=student)
        if steps is not None:
            scfg = replace(scfg, steps=steps)
        if seed is not None:
            scfg = replace(scfg, seed=seed)
        if backbone_checkpoint is not None:
            scfg = replace(scfg, backbone_checkpoint=backbone_checkpoint)
        if not full:  # checked before the data is made: a typo costs nothing
            default = run_dir / ("weak" if boxseg else "pseudo") / f"{weak}.json"
            train_file = pseudo if pseudo is not None else default
            name = weak.replace("+", "_")
            if not Path(train_file).is_file():
                raise ValueError(f"{train_file}: {'weak labels' if boxseg else 'pseudo-labels'}"
                                 f" not found; run pseudolabel "
                                 f"{'weaken' if boxseg else 'generate'} --weak {weak} first")
        data = ensure_data(cfg) if rt.is_main else cfg.data
        rt.barrier()  # rank 0 may be writing the synthetic data
        if full:
            train_file, name = data.train, "full"
        out_dir = run_dir / "student" / student_folder(
            name, student, scfg.seed, ("-quality" if quality_weighted else "")
            + (f"-boxseg-{qam}-{copy_paste}" if boxseg else "")
            + (f"-paste-{copy_paste}" if copy_paste != "off" and not boxseg else ""))
        if boxseg:
            summary = _train_boxseg(train_file, data.images, out_dir, scfg, qam, copy_paste,
                                    fixed_k, export_pseudo, rt)
        else:
            summary = run_train(train_file, data.images, out_dir, scfg,
                                quality_weighted=quality_weighted, copy_paste=copy_paste,
                                runtime=rt,
                                progress=rt.is_main, workers=workers)
        if rt.is_main:
            typer.echo(f"trained {summary['steps']} steps in {summary['seconds']:.0f} s "
                       f"(final loss {summary['final_loss']:.3f}); checkpoint in {out_dir}")
        if evaluate:
            full_metrics = (run_dir / "student" / student_folder("full", student, scfg.seed)
                            / "metrics.json")
            m = evaluate_student(out_dir, data.val, data.images, progress=rt.is_main,
                                 full_metrics=None if full else full_metrics, runtime=rt)
            if not rt.is_main:
                return
            typer.echo(_format_ap("mask", m["segm"]))
            typer.echo(_format_ap("boundary", m["boundary"]))
            if m.get("AP_percent_of_full") is not None:
                typer.echo(f"{m['AP_percent_of_full']:.1f}% of the fully supervised student")
            typer.echo(f"wrote {out_dir / 'metrics.json'}")
    except ValueError as exc:
        _fail(str(exc))


def _train_boxseg(train_file, images, out_dir, scfg, qam, copy_paste, fixed_k, export, rt):
    from pseudolabel.boxseg.trainer import BoxSegConfig, export_pseudo_masks, train_boxseg

    if rt.distributed:
        raise ValueError("--boxseg trains in one process (its EMA teacher and memory bank are "
                         "per process); run it without torchrun")
    bcfg = BoxSegConfig(qam=qam, copy_paste=copy_paste, adaptive_k=fixed_k is None,
                        **({"k": fixed_k} if fixed_k else {}))
    summary = train_boxseg(train_file, images, out_dir, scfg, bcfg, runtime=rt)
    if export is not None:
        made = export_pseudo_masks(summary["run"], train_file, export)
        typer.echo(f"{made['pseudo_masks']} fused pseudo-masks (score = w) in {made['out']}")
    return summary


@app.command()
def report(
    run_dir: RunDirOpt = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: "
                                             "<run_dir>/report).")] = None,
    images: Annotated[int, typer.Option(help="Images per picture.")] = 4,
    config: ConfigOpt = None,
) -> None:
    """Pictures of a run (GT vs pseudo-masks, GT vs each student) and AP vs labelling hours."""
    from pseudolabel.config import ensure_data
    from pseudolabel.stages.report import write_report

    try:
        cfg = _config(config)
        data = ensure_data(cfg)
        summary = write_report(run_dir or cfg.run_dir, data.train, data.val, data.images,
                               out, images)
    except ValueError as exc:
        _fail(str(exc))
    for line in summary["table"]:
        typer.echo(line)
    for name in summary["pseudo"] + summary["student"]:
        typer.echo(f"  {name}")
    typer.echo(f"wrote {summary['out']}/report.md")


@app.command("semantic-weaken")
def semantic_weaken(
    kind: Annotated[str, typer.Option(help="point, scribble or coarse (seed 004), or fine.")],
    gt: Annotated[Path | None, typer.Option(help="COCO instances file (default: the "
                                            "config's training annotations).")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder of PNG label maps (default: "
                                             "<run_dir>/semantic/<kind>).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the simulated labels.")] = 0,
    config: ConfigOpt = None,
) -> None:
    """Semantic label maps of a COCO file (0 background, k the k-th category, 255 ignore):
    simulated point, scribble or coarse labels (SeSAM, seed 004), or the fine maps."""
    from pseudolabel.config import ensure_data
    from pseudolabel.stages.semantic import weaken_semantic

    if kind not in ("point", "scribble", "coarse", "fine"):
        _fail(f"--kind {kind!r}: expected point, scribble, coarse or fine")
    try:
        cfg = _config(config)
        gt = gt if gt is not None else ensure_data(cfg).train
        out = out if out is not None else cfg.run_dir / "semantic" / kind
        summary = weaken_semantic(gt, out, kind, seed=seed, fine=kind == "fine")
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(f"{summary['maps']} label maps ({summary['written']} new); classes: "
               + ", ".join(f"{k}={n}" for k, n in enumerate(summary["classes"])))
    _echo_skipped(summary)
    typer.echo(f"wrote {summary['out']}")


@app.command("semantic-maps")
def semantic_maps(
    weak: Annotated[Path, typer.Option(help="Folder of weak PNG label maps.")],
    gt: Annotated[Path | None, typer.Option(help="COCO file of the images (default: the "
                                            "config's training annotations).")] = None,
    images: Annotated[Path | None, typer.Option(help="Image root (default: the config's).")
                      ] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: "
                                             "<run_dir>/semantic/sam-<weak folder>).")] = None,
    prompt: Annotated[str, typer.Option(help="points (skeleton points, seed 004), box or "
                                        "mask.")] = "points",
    per: Annotated[str, typer.Option(help="component (each connected component) or class."
                                     )] = "component",
    sampling: Annotated[str, typer.Option(help="skeleton or random point sampling.")
                        ] = "skeleton",
    points: Annotated[int, typer.Option(help="Positive points per component (seed 004 Fig. 6: "
                                        "5).", min=1)] = 5,
    taus: Annotated[str, typer.Option(help="Selection weights 'precision,coverage' of a SAM "
                                      "mask against the weak label (Fig. 7: 0.3,0.7).")
                    ] = "0.3,0.7",
    sam_model: SamModelOpt = None,
    sam_checkpoint: SamCkptOpt = "default",
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    config: ConfigOpt = None,
) -> None:
    """SAM pseudo-label maps from weak semantic labels (SeSAM, seed 004): per class and
    connected component, skeleton points prompt SAM; the output agreeing best with the weak
    label is painted. Resumable."""
    from pseudolabel.config import ensure_data
    from pseudolabel.semantic.sam_maps import parse_taus
    from pseudolabel.stages.refine import load_refiner
    from pseudolabel.stages.semantic import sam_maps, score_maps

    try:
        weights = parse_taus(taus)
        cfg = _config(config)
        data = ensure_data(cfg) if gt is None or images is None else None
        gt = gt if gt is not None else data.train
        images = images if images is not None else data.images
        out = out if out is not None else cfg.run_dir / "semantic" / f"sam-{weak.name}"
        sam = load_refiner(sam_model or cfg.models.sam, sam_checkpoint,
                           runtime=_runtime(device, precision, cfg))
        summary = sam_maps(gt, weak, images, out, sam, prompt=prompt, per=per,
                           sampling=sampling, n_points=points, taus=weights)
        scores = score_maps(gt, out)
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(f"{summary['written']} maps written; against the fine maps: mIoU "
               f"{scores['mIoU']:.3f}, precision {scores['precision']:.3f}, recall "
               f"{scores['recall']:.3f}, F1 {scores['F1']:.3f}")
    _echo_skipped(summary)
    typer.echo(f"wrote {summary['out']}")


@app.command("semantic-train")
def semantic_train(
    weak: Annotated[Path, typer.Option(help="Folder of weak PNG label maps (semantic-weaken).")
                    ],
    rounds: Annotated[int, typer.Option(help="SeSAM rounds: each later round adds the "
                                        "student's confident pixels to the weak label and "
                                        "prompts SAM again.")] = 1,
    steps: Annotated[int, typer.Option(help="Student steps per round.")] = 1000,
    preset: Annotated[str, typer.Option(help="DeepLabV3+ preset: tiny (ResNet-18) or r50.")
                      ] = "tiny",
    encoder_checkpoint: Annotated[str | None, typer.Option(
        help="Local ImageNet weights for the encoder (torchvision file or folder).")] = None,
    run_dir: RunDirOpt = None,
    sam_model: SamModelOpt = None,
    sam_checkpoint: SamCkptOpt = "default",
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    config: ConfigOpt = None,
) -> None:
    """SeSAM (seed 004): SAM pseudo-maps from weak semantic labels and a DeepLabV3+ student
    trained on them, scored on the validation set (mIoU); resumable."""
    from pseudolabel.config import ensure_data
    from pseudolabel.semantic.student import SemanticConfig
    from pseudolabel.stages.refine import load_refiner
    from pseudolabel.stages.semantic import train_rounds

    try:
        cfg = _config(config)
        data = ensure_data(cfg)
        rt = _runtime(device, precision, cfg)
        out = (run_dir or cfg.run_dir) / "semantic" / f"sesam-{weak.name}"
        results = train_rounds(data.train, data.val, weak, data.images, out,
                               load_refiner(sam_model or cfg.models.sam, sam_checkpoint,
                                            runtime=rt),
                               SemanticConfig(preset=preset, steps=steps,
                                              encoder_checkpoint=encoder_checkpoint),
                               rounds=rounds, runtime=rt)
    except ValueError as exc:
        _fail(str(exc))
    for r in results:
        typer.echo(f"round {r['round']}: pseudo-maps mIoU {r['pseudo_maps']['mIoU']:.3f} "
                   f"(F1 {r['pseudo_maps']['F1']:.3f}); student val mIoU "
                   f"{r['student']['mIoU']:.3f}")
    typer.echo(f"wrote {out}")


@app.command("check-config")
def check_config(config: ConfigOpt = None) -> None:
    """List every file a config names that is missing (data, checkpoints)."""
    from pseudolabel.config import check_paths

    try:
        problems = check_paths(_config(config))
    except ValueError as exc:
        _fail(str(exc))
    for p in problems:
        typer.echo(p)
    if problems:
        raise typer.Exit(1)
    typer.echo("all paths present")


@app.command()
def cost(
    weak: Annotated[str, typer.Option(help=WEAK_HELP)],
    fraction: Annotated[float, typer.Option(help="Share of images with full masks.")],
    dataset: Annotated[str, typer.Option(help="coco, ade20k or cityscapes.")] = "coco",
    images: Annotated[int | None, typer.Option(help="Number of images (default: the "
                                               "dataset's training set).")] = None,
) -> None:
    """Annotation hours of a setting, from seed 001 Table 1, and the saving versus full masks."""
    from pseudolabel.stages.cost import labelling_cost

    try:
        c = labelling_cost(dataset, weak, fraction, images)
    except ValueError as exc:
        _fail(str(exc))
    factor = ("no labelling cost" if math.isinf(c["saving_factor"])
              else f"{c['saving_factor']:.2f}x cheaper")
    typer.echo(f"{dataset}, {c['images']} images, masks on {c['fully_labeled']}, "
               f"{weak} on the rest: {c['hours']:,.0f} h vs {c['full_mask_hours']:,.0f} h "
               f"with full masks ({factor}, {c['hours_saved']:,.0f} h saved)")


@app.command("semantic-cost")
def semantic_cost(
    kind: Annotated[str, typer.Option(help="point, scribble, coarse or fine.")],
    dataset: Annotated[str, typer.Option(help="pascal (point, scribble, fine timed) or "
                                         "cityscapes (coarse, fine timed).")] = "pascal",
    images: Annotated[int | None, typer.Option(help="Number of images (default: the "
                                               "dataset's training set).")] = None,
) -> None:
    """Annotation hours of weak semantic labels and their share of the fine-label budget."""
    from pseudolabel.stages.cost import semantic_labelling_cost

    try:
        c = semantic_labelling_cost(dataset, kind, images)
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(f"{dataset}, {c['images']} images of {kind} labels: {c['hours']:,.1f} h vs "
               f"{c['fine_hours']:,.1f} h of fine maps ({100 * c['budget_share']:.1f}% of the "
               f"budget; {c['seconds_per_image']:g} s per image, {c['source']})")


@app.command()
def check(
    annotations: Annotated[Path, typer.Argument(help="COCO instances file to validate.")],
    images: Annotated[Path | None, typer.Option(help="Image root; every image is decoded "
                                                "and its size compared.")] = None,
    follow_symlinks: Annotated[bool, typer.Option(
        "--follow-symlinks", help="Allow image files that are symlinks leading out of the "
        "image root (refused by default, as by the other commands).")] = False,
) -> None:
    """Validate a COCO file (and its images) and list every item that later stages would skip."""
    from pseudolabel.data.images import set_follow_symlinks
    from pseudolabel.stages.check import check_dataset

    set_follow_symlinks(follow_symlinks)
    try:
        counts, report = check_dataset(annotations, images)
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(", ".join(f"{v} {k}" for k, v in counts.items()))
    for p in report.problems:
        typer.echo(f"  {p}")
    if len(report):
        raise typer.Exit(1)
