"""``pseudolabel generate``: pseudo-masks for weak files, streaming, resumable, sharded.

One call generates any number of weak files (*jobs*): the four settings of a run
(``--weak all``), some of them, or a file whose images carry different kinds (a dataset
labelled over time; seed 001 §6 names mixed weak labels as future work), each image by its
own kind (:mod:`pseudolabel.pseudo_masks`). Jobs over the same images run in one pass: each
image is loaded, encoded and shown to Grounding DINO once for all of them, and the teachers
share one frozen image encoder. Fully labelled images keep their GT masks.
``zero_shot=True`` prompts the base SAM (no fine-tuning, no class prompt) instead.

Work is cut into parts of ``part_size`` weakly labelled images (sorted by id). Each job's
part is written to ``<run>/pseudo/.parts/<setting>-<fingerprint>/`` as soon as it is done; a
re-run skips finished parts, and the final file is merged from them in image order, so an
interrupted run, a resumed run, a sharded run and a several-settings run all write the same
bytes as one plain run. Shard ``i/n`` takes parts ``k`` with ``k % n == i``. Images load and
are resized for SAM in background threads while the models work on the previous part.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pseudolabel.data.coco import CocoDataset, CocoStreamWriter, load_coco
from pseudolabel.data.images import MAX_PIXELS, load_image_bounded, resolve_image_path
from pseudolabel.lock import StageLock
from pseudolabel.models.predictor import PromptedSam, ZoomSpec
from pseudolabel.pseudo_masks import (
    SETTINGS,
    Teachers,
    detection_request,
    detections_for,
    image_pseudo_masks,
    needs_whole_image,
    teachers_for,
    uses_detector,
)
from pseudolabel.runtime import CPU, Runtime
from pseudolabel.stages.weaken import file_sha256

MIXED = "mixed"  # the setting name of a weak file whose images carry different kinds


def load_detector(models, checkpoint: str | None = None, runtime: Runtime = CPU):
    """The config's Grounding DINO (``models``: a ``config.Models``) on the runtime's device
    and the identity its generate parts are keyed by: the weights' sha256, or the hub name.

    Keying by the file's content, not its path, keeps new weights at the same path from
    reusing parts made with the old ones. ``checkpoint`` overrides the config's (tiny only).
    """
    from pseudolabel.models.grounding_dino import build_detector

    ckpt, identity = detector_identity(models, checkpoint)
    return build_detector(models.detector, checkpoint=ckpt, runtime=runtime), identity


def detector_identity(models, checkpoint: str | None = None) -> tuple[Path | None, str]:
    """The detector's weights file (tiny) and what parts are keyed by, without loading it."""
    from pseudolabel.models import assets

    if models.detector != "tiny":
        return None, models.detector
    ckpt = assets.resolve(checkpoint or models.detector_checkpoint, "gdino")
    return ckpt, file_sha256(ckpt) if ckpt else models.detector


def load_run_teachers(run_dir: Path, setting, category_ids: list[int], *,
                      refine: bool = True, zero_shot: bool = False, sam_model: str = "tiny_hr",
                      sam_checkpoint: str | None = "default", runtime: Runtime = CPU,
                      weights: bool = True) -> Teachers:
    """The teachers ``setting`` needs (a setting name or a collection of weak kinds) from
    ``run_dir/teacher/``, or the base SAM with ``zero_shot``.

    Every teacher sits on one base SAM, loaded once: its image encoder is shared. With
    ``weights=False`` only ``describe`` (what parts are fingerprinted by) is filled, from the
    teachers' metadata and file hashes, without building a model (``pseudolabel merge``).
    """
    from pseudolabel.models import assets
    from pseudolabel.teacher.model import load_base_sam, load_teacher, read_teacher_meta

    kinds = (setting,) if isinstance(setting, str) else tuple(setting)
    names = teachers_for(kinds, refine)
    label = setting if isinstance(setting, str) else "+".join(kinds)
    if zero_shot:
        ckpt = assets.resolve_sam(sam_model, sam_checkpoint)
        base = PromptedSam(load_base_sam(sam_model, sam_checkpoint), runtime=runtime) \
            if weights else None
        return Teachers({n: base for n in names}, {n: False for n in names}, {},
                        {n: {"zero_shot": True, "sam_model": sam_model,
                             "sam_sha256": file_sha256(ckpt) if ckpt else None} for n in names})
    metas, describe = {}, {}
    for name in names:
        stem = run_dir / "teacher" / name / "teacher"
        if not stem.with_suffix(".json").is_file():
            raise ValueError(f"{stem.with_suffix('.json')}: teacher {name!r} not found; the "
                             f"{label} setting needs {', '.join(names)} (run pseudolabel "
                             f"teacher-finetune --teachers {','.join(names)}, or pass "
                             "--zero-shot)")
        meta = metas[name] = read_teacher_meta(stem)
        if meta["class_aware"] and meta["category_ids"] != category_ids:
            raise ValueError(f"{stem}: trained on categories {meta['category_ids']}, the weak "
                             f"file has {category_ids}")
        describe[name] = {"sam_model": meta["sam_model"], "sam_sha256": meta.get("sam_sha256"),
                          "teacher_sha256": file_sha256(stem.with_suffix(".safetensors")),
                          "steps": meta["steps"], "split_hash": meta.get("split_hash")}
    encoders = {(m["sam_model"], m.get("sam_sha256")) for m in metas.values()}
    if len(encoders) > 1:
        raise ValueError(f"{run_dir}: the teachers of {label} were fine-tuned from different "
                         f"SAM checkpoints {sorted(map(str, encoders))}; they must share one "
                         "frozen encoder")
    models, aware = {}, {}
    if weights and names:
        first = metas[names[0]]
        base = load_base_sam(first["sam_model"], first["sam_checkpoint"])
        for name in names:
            models[name], _ = load_teacher(run_dir / "teacher" / name / "teacher", base,
                                           runtime)
    aware = {n: bool(metas[n]["class_aware"]) for n in names}
    return Teachers(models, aware, {c: r for r, c in enumerate(category_ids)}, describe)


# -- options and jobs ------------------------------------------------------------------------
@dataclass
class GenerateOptions:
    setting: str  # a setting, or MIXED: each image by its own kind
    refine: bool = True
    zero_shot: bool = False
    samrefiner: bool = False
    part_size: int = 16
    workers: int = 2
    encode_batch: int = 8  # images per encoder call (one forward on a GPU)
    # Grounding DINO images per forward. 1: an image's detections do not depend on its
    # batch-mates to the last bit (batched products round differently, ~1e-7), so a
    # mixed-kind file and single-setting runs agree exactly; more is faster on a GPU.
    detect_batch: int = 1
    max_pixels: int = MAX_PIXELS  # larger images are decoded reduced (memory stays bounded)
    retry_failed: bool = False  # redo the parts that recorded failed images
    box_threshold: float = 0.3  # seed 001 §4.1 (none, class)
    nms_iou: float = 0.9  # seed 001 §4.1 (none, class)
    # Box prompts decoded on zoomed crops (ours, off in seed 001; see ZoomSpec).
    zoom: ZoomSpec = field(default_factory=ZoomSpec)


@dataclass
class Job:
    """One weak file to generate: its images (weakly labelled, sorted), each image's kind,
    where its parts go and where its file goes."""

    weak_path: Path
    weak: CocoDataset
    opts: GenerateOptions
    ids: list[int]
    kinds: dict[int, str]
    fingerprint: str
    parts_dir: Path
    out_path: Path

    def part_file(self, k: int) -> Path:
        return self.parts_dir / f"part-{k:06d}.json"

    @property
    def label_space(self) -> tuple[int, ...]:
        return tuple(self.weak.category_ids)


def _fingerprint(weak_path: Path, opts: GenerateOptions, describe: dict,
                 detector_sha: str | None) -> str:
    blob = json.dumps({"weak": file_sha256(weak_path), "setting": opts.setting,
                       "refine": opts.refine, "zero_shot": opts.zero_shot,
                       **({"samrefiner": True} if opts.samrefiner else {}),
                       **({"detect_batch": opts.detect_batch} if opts.detect_batch != 1
                          else {}),
                       **({"zoom": [opts.zoom.context, opts.zoom.min_side]} if opts.zoom.on
                          else {}),
                       "part_size": opts.part_size, "box_threshold": opts.box_threshold,
                       "nms_iou": opts.nms_iou, "teachers": describe,
                       "detector": detector_sha}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def parts_dir(run_dir: Path, setting: str, fingerprint: str) -> Path:
    return run_dir / "pseudo" / ".parts" / f"{setting.replace('+', '_')}-{fingerprint}"


def weak_kinds(weak: CocoDataset, setting: str) -> dict[int, str]:
    """Kind of every weakly labelled image of ``weak``; the file must hold ``setting`` only,
    or any of the four settings when ``setting`` is ``mixed``."""
    kinds = {img["id"]: img.get("kind") for img in weak.images
             if img.get("kind") != "fully_labeled"}
    found = set(kinds.values())
    if setting == MIXED:
        unknown = found - set(SETTINGS)
        if unknown:
            raise ValueError(f"{weak.path}: image kinds {sorted(map(str, unknown))} are not "
                             f"weak settings ({', '.join(SETTINGS)}, fully_labeled)")
    elif found - {setting}:
        raise ValueError(f"{weak.path}: holds {sorted(k for k in found if k)} images; "
                         f"generate --weak {setting} needs a {setting} weak file")
    return kinds


def file_setting(weak: CocoDataset) -> str:
    """The setting a weak file holds: its one weak kind, or ``mixed``."""
    kinds = {img.get("kind") for img in weak.images} - {"fully_labeled"}
    return kinds.pop() if len(kinds) == 1 and None not in kinds else MIXED


def _check_split(run_dir: Path, weak: CocoDataset, opts: GenerateOptions) -> None:
    """Fine-tuned teachers must have seen exactly the weak file's fully labelled images."""
    path = run_dir / "split.json"
    if opts.zero_shot or not path.is_file():
        return
    split = json.loads(path.read_text())
    full = {img["id"] for img in weak.images if img.get("kind") == "fully_labeled"}
    if set(split["fully_labeled"]) != full:
        raise ValueError(f"{weak.path}: its {len(full)} fully labelled images are not the "
                         f"{len(split['fully_labeled'])} the teachers in {run_dir} were trained "
                         f"on (fraction {split['fraction']}, seed {split['seed']}); weaken with "
                         "the same --fraction and --seed, or use another --run-dir")


def make_job(weak_path: str | Path, run_dir: Path, opts: GenerateOptions, teachers: Teachers,
             detector_sha: str | None, out_path: str | Path | None = None) -> Job:
    weak_path = Path(weak_path)
    if opts.setting not in SETTINGS + (MIXED,):
        raise ValueError(f"unknown setting {opts.setting!r}; expected one of "
                         f"{SETTINGS + (MIXED,)}")
    weak = load_coco(weak_path)
    kinds = weak_kinds(weak, opts.setting)
    _check_split(run_dir, weak, opts)
    names = teachers_for(set(kinds.values()) if opts.setting == MIXED else {opts.setting},
                         opts.refine)
    describe = {n: teachers.describe[n] for n in names if n in teachers.describe}
    fp = _fingerprint(weak_path, opts, describe, detector_sha)
    name = opts.setting if opts.setting != MIXED else weak_path.stem
    out = Path(out_path) if out_path else run_dir / "pseudo" / f"{name}.json"
    return Job(weak_path, weak, opts, sorted(kinds), kinds, fp,
               parts_dir(run_dir, opts.setting, fp), out)


# -- one part --------------------------------------------------------------------------------
@dataclass
class LoadedImage:
    """One image ready for the models: ``pixels`` (reduced when the file exceeds the pixel
    budget) and SAM's resize of them; ``failed`` says why the image cannot be used."""

    pixels: np.ndarray | None = None
    prepared: object = None
    failed: str | None = None


def _load_one(path: Path, record: dict, sam: PromptedSam | None, max_pixels: int
              ) -> LoadedImage:
    try:
        pixels, full = load_image_bounded(path, max_pixels)
    except ValueError as exc:  # missing, unreadable, truncated, outside the root
        return LoadedImage(failed=str(exc))
    if full != (record["height"], record["width"]):
        return LoadedImage(failed=f"{record['file_name']} is {full[1]}x{full[0]}, its record "
                                  f"says {record['width']}x{record['height']}; skipped (fix "
                                  "the record or the file)")
    return LoadedImage(pixels, sam.prepare(pixels) if sam is not None else None)


def _load_images(pool: ThreadPoolExecutor | None, weak: CocoDataset, image_root: Path,
                 ids: list[int], sam: PromptedSam | None, max_pixels: int):
    """Start loading a part's images (decoded and resized for SAM in ``pool``'s threads;
    PIL and torch release the GIL). A bad image becomes a ``LoadedImage`` saying why."""
    def load(image_id):
        record = weak.image_by_id[image_id]
        try:
            path = resolve_image_path(image_root, record["file_name"])
        except ValueError as exc:
            return LoadedImage(failed=str(exc))
        return _load_one(path, record, sam, max_pixels)

    if pool is None:
        return [load(i) for i in ids]
    return [pool.submit(load, i) for i in ids]


def _detect(jobs: list[Job], part_ids: list[int], pixels: list, detector,
            opts: GenerateOptions):
    """Grounding DINO's unfiltered detections for every (image, request) the jobs need, each
    asked once: an image that ``class`` and ``point+class`` both prompt with its tags is run
    once for both."""
    wanted: dict[tuple, int] = {}  # (request, image position) -> slot
    for job in jobs:
        for i, image_id in enumerate(part_ids):
            req = detection_request(job.kinds[image_id], job.weak.image_by_id[image_id].get(
                "tags"), job.label_space, opts.refine)
            if req is not None:
                wanted.setdefault((req, i), len(wanted))
    if not wanted:
        return {}
    if detector is None:
        raise ValueError("the none, class and point+class settings need Grounding DINO")
    results = {}
    for space in {req.label_space for req, _ in wanted}:
        keys = [k for k in wanted if k[0].label_space == space]
        weak = next(j.weak for j in jobs if j.label_space == space)
        names = [weak.category_by_id[c]["name"] for c in space]
        dets = detector.detect([pixels[i] for _, i in keys], list(space), names,
                               image_categories=[list(req.prompt) for req, _ in keys],
                               box_threshold=0.0, nms_iou=None, batch_size=opts.detect_batch)
        results.update(zip(keys, dets, strict=True))
    return results


def run_part(part_ids: list[int], jobs: list[Job], images: list, opts: GenerateOptions,
             teachers: Teachers, detector) -> list[dict]:
    """One part of every job in ``jobs`` (all over ``part_ids``): per job, its image ids and
    pseudo-annotations in image id order, empty masks dropped, and the images that could not
    be used (``failed``: id, file, reason).

    ``images`` are ``LoadedImage`` objects or futures of them (loaded in the background).
    """
    images = [im.result() if hasattr(im, "result") else im for im in images]
    weak = jobs[0].weak
    failed = [{"image_id": i, "file_name": weak.image_by_id[i]["file_name"],
               "reason": im.failed} for i, im in zip(part_ids, images, strict=True) if im.failed]
    ok = [(i, im) for i, im in zip(part_ids, images, strict=True) if not im.failed]
    ok_ids = [i for i, _ in ok]
    # the whole image's embedding, for the images some job decodes on it (not every prompt
    # of a zoomed box kind: each of those is encoded on its own crop)
    whole = [k for k, image_id in enumerate(ok_ids)
             if any(needs_whole_image(j.kinds[image_id], opts.zoom, opts.samrefiner)
                    for j in jobs)]
    embs: list = [None] * len(ok)
    for s in range(0, len(whole), opts.encode_batch):
        batch = whole[s: s + opts.encode_batch]
        e = teachers.encoder.encode([ok[k][1].prepared for k in batch])
        for n, k in enumerate(batch):
            embs[k] = e[n]
    raw = _detect(jobs, ok_ids, [im.pixels for _, im in ok], detector, opts)
    out = []
    with torch.no_grad():
        for job in jobs:
            anns_out, empty = [], 0
            for i, image_id in enumerate(ok_ids):
                kind = job.kinds[image_id]
                record = job.weak.image_by_id[image_id]
                tags = record.get("tags")
                req = detection_request(kind, tags, job.label_space, opts.refine)
                det = detections_for(kind, raw.get((req, i)), opts.box_threshold, opts.nms_iou)
                anns = [a for a in job.weak.anns_by_image[image_id] if not a.get("iscrowd", 0)]
                made, n_empty = image_pseudo_masks(
                    kind, teachers, embs[i], anns, tags if kind != "none" else None, det,
                    opts.refine, opts.samrefiner, (record["height"], record["width"]),
                    ok[i][1].pixels, opts.zoom)
                anns_out += [{"image_id": image_id, **a} for a in made]
                empty += n_empty
            out.append({"images": part_ids, "annotations": anns_out, "empty_dropped": empty,
                        "failed": failed})
    return out


def _forget_failed_parts(job: Job, index: int, count: int) -> None:
    """``--retry-failed``: this shard's parts that recorded failed images are done again."""
    for path in sorted(job.parts_dir.glob("part-*.json")):
        k = int(path.stem.split("-")[1])
        if k % count == index and json.loads(path.read_text()).get("failed"):
            path.unlink()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


# -- the stage -------------------------------------------------------------------------------
def generate(weak_path: str | Path, image_root: str | Path, run_dir: str | Path,
             opts: GenerateOptions, teachers: Teachers, detector=None, *,
             detector_sha: str | None = None, out_path: str | Path | None = None,
             shard: tuple[int, int] = (0, 1), merge: bool = True, progress: bool = True,
             barrier=None, only_merge: bool = False) -> dict:
    """Generate one weak file (``opts.setting``; ``mixed``: each image by its own kind) and,
    if ``merge``, write its pseudo-label file. See :func:`generate_many`."""
    job = make_job(weak_path, Path(run_dir), opts, teachers, detector_sha, out_path)
    return generate_many([job], image_root, teachers, detector, detector_sha=detector_sha,
                         shard=shard, merge=merge, progress=progress, barrier=barrier,
                         only_merge=only_merge)[0]


def generate_many(jobs: list[Job], image_root: str | Path, teachers: Teachers, detector=None,
                  *, detector_sha: str | None = None, shard: tuple[int, int] = (0, 1),
                  merge: bool = True, progress: bool = True, barrier=None,
                  only_merge: bool = False) -> list[dict]:
    """Run (this shard of) every job, then, if ``merge``, write each job's file.

    Jobs over the same image ids share a pass: each part's images are loaded, encoded and
    detected once for all of them. ``barrier`` (a callable) is called after this shard's
    parts are written and before the merge: under ``torchrun`` every rank generates and rank
    0 merges. ``only_merge`` writes the files from parts already on disk (``pseudolabel
    merge``) and generates nothing.
    """
    image_root = Path(image_root)
    index, count = shard
    with contextlib.ExitStack() as locks:
        if not only_merge:  # one process per (parts folder, shard)
            for job in sorted(jobs, key=lambda j: str(j.parts_dir)):
                locks.enter_context(StageLock(job.parts_dir, f"generate-{index}of{count}"))
        return _generate_many(jobs, image_root, teachers, detector, detector_sha, shard, merge,
                              progress, barrier, only_merge)


def _generate_many(jobs, image_root, teachers, detector, detector_sha, shard, merge, progress,
                   barrier, only_merge) -> list[dict]:
    for job in jobs:
        job.parts_dir.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple[int, ...], list[Job]] = {}
    for job in jobs:
        groups.setdefault(tuple(job.ids), []).append(job)
    index, count = shard
    if jobs[0].opts.retry_failed and not only_merge:
        for job in jobs:
            _forget_failed_parts(job, index, count)
    work = []  # (jobs of a group, part ids, part index), in order
    total = done_before = 0
    for ids, group in groups.items():
        opts = group[0].opts
        parts = [list(ids[s: s + opts.part_size]) for s in range(0, len(ids), opts.part_size)]
        for k in range(len(parts)):
            if k % count != index:
                continue
            total += len(parts[k])
            pending = [j for j in group if not j.part_file(k).is_file()]
            if pending and not only_merge:
                work.append((pending, parts[k], k))
            else:
                done_before += len(parts[k])
    t0, done = time.perf_counter(), 0
    names = ", ".join(j.opts.setting if j.opts.setting != MIXED else j.weak_path.stem
                      for j in jobs)
    bar = tqdm(total=total, desc=f"generate {names}", unit="img",
               disable=not progress or only_merge, initial=done_before)
    opts = jobs[0].opts
    sam = teachers.encoder if teachers.models else None
    pool = ThreadPoolExecutor(opts.workers) if opts.workers > 0 else None
    try:
        # the next part's images load while this part is on the models
        pending = _load_images(pool, work[0][0][0].weak, image_root, work[0][1], sam,
                               opts.max_pixels) if work else None
        for n, (group, part_ids, k) in enumerate(work):
            images = pending
            if n + 1 < len(work):
                nxt = work[n + 1]
                pending = _load_images(pool, nxt[0][0].weak, image_root, nxt[1], sam,
                                       opts.max_pixels)
            for job, part in zip(group, run_part(part_ids, group, images, opts, teachers,
                                                 detector), strict=True):
                _write_atomic(job.part_file(k), json.dumps(part))
            done += len(part_ids)
            bar.update(len(part_ids))
            bar.set_postfix(img_s=f"{done / (time.perf_counter() - t0):.2f}")
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    bar.close()
    summaries = [{"setting": j.opts.setting, "parts_dir": str(j.parts_dir),
                  "skipped_input": [str(p) for p in j.weak.report.problems],
                  "parts": -(-len(j.ids) // j.opts.part_size), "shard": f"{index}/{count}",
                  "generated_images": sum(len(p) for g, p, _ in work if j in g)}
                 for j in jobs]
    if barrier is not None:
        barrier()
    if merge:
        for job, summary in zip(jobs, summaries, strict=True):
            summary.update(merge_parts(job.weak, job.parts_dir, summary["parts"], job.out_path,
                                       _manifest(job, teachers, detector_sha)))
    return summaries


def _manifest(job: Job, teachers: Teachers, detector_sha: str | None) -> dict:
    o = job.opts
    names = teachers_for(set(job.kinds.values()), o.refine)
    kinds = sorted(set(job.kinds.values()))
    return {"setting": o.setting, **({"kinds": kinds} if o.setting == MIXED else {}),
            "weak_file": str(job.weak_path), "weak_sha256": file_sha256(job.weak_path),
            "refine": o.refine, "zero_shot": o.zero_shot, "samrefiner": o.samrefiner,
            "zoom": o.zoom.record(),
            "teachers": {n: teachers.describe[n] for n in names if n in teachers.describe},
            "detector_sha256": detector_sha if any(uses_detector(k, o.refine) for k in kinds)
            else None,
            "thresholds": {"box": o.box_threshold, "nms_iou": o.nms_iou,
                           "algorithm1": {"alpha": 5.0, "beta": 2.0, "tau_c": 0.1}},
            "fingerprint": job.fingerprint}


def merge_parts(weak: CocoDataset, pdir: Path, num_parts: int, out_path: Path,
                manifest: dict) -> dict:
    """Stream the final COCO file: GT of fully labelled images, crowd regions, then every
    part's pseudo-masks in image order; annotation ids are assigned here (1, 2, ...).

    Images that failed (unreadable, truncated, size unlike their record) are left out of the
    file's ``images`` (they carry no labels, and an unlabelled image would teach a student
    that its objects are background) and listed in ``info.pseudolabel.failed_images``.
    """
    missing = [k for k in range(num_parts) if not (pdir / f"part-{k:06d}.json").is_file()]
    if missing:
        raise ValueError(f"{pdir}: parts {missing[:10]}{'...' if len(missing) > 10 else ''} "
                         f"are missing ({len(missing)} of {num_parts}); run the remaining "
                         "shards first")
    failed = [f for k in range(num_parts)
              for f in json.loads((pdir / f"part-{k:06d}.json").read_text()).get("failed", [])]
    stats = {"pseudo_masks": 0, "gt_masks": 0, "empty_dropped": 0,
             "point_outside_mask": 0, "mostly_outside_box": 0, "class_not_in_tags": 0,
             "failed_images": len(failed)}
    next_id = 1
    dropped = {f["image_id"] for f in failed}
    kept_ids = {a["image_id"] for a in weak.annotations} - dropped
    writer = CocoStreamWriter(out_path, weak, {**weak.info, "pseudolabel": {
        **manifest, "failed_images": failed}},
        images=[img for img in weak.images if img["id"] not in dropped])

    def emit(ann: dict) -> None:
        nonlocal next_id
        writer.write({"id": next_id, **{k: v for k, v in ann.items() if k != "id"}})
        next_id += 1

    try:
        full = {img["id"] for img in weak.images if img.get("kind") == "fully_labeled"}
        for image_id in sorted(kept_ids):  # GT masks and every crowd region, as given
            for a in weak.anns_by_image[image_id]:
                if image_id in full or a.get("iscrowd", 0):
                    emit({**a, "source": "gt"})
                    stats["gt_masks"] += image_id in full and not a.get("iscrowd", 0)
        for k in range(num_parts):
            part = json.loads((pdir / f"part-{k:06d}.json").read_text())
            for a in part["annotations"]:
                c = a["consistency"]
                stats["pseudo_masks"] += 1
                stats["point_outside_mask"] += c.get("point_in_mask") is False
                stats["mostly_outside_box"] += c.get("outside_box", 0.0) > 0.5
                stats["class_not_in_tags"] += c.get("class_in_tags") is False
                emit(a)
            stats["empty_dropped"] += part["empty_dropped"]
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return {"out": str(out_path), **stats, "failed": failed}


def jobs_for(weak: str, run_dir: Path, weak_file: Path | None, opts: GenerateOptions,
             teachers: Teachers, detector_sha: str | None, out: Path | None) -> list[Job]:
    """The jobs of a ``--weak`` value (``all``, a comma list, or ``mixed`` with a file)."""
    settings = parse_settings(weak, weak_file)
    if len(settings) > 1 and (weak_file is not None or out is not None):
        raise ValueError("--weak-file and --out name one file; with several settings the "
                         "weak files are <run_dir>/weak/<setting>.json")
    jobs = []
    for setting in settings:
        path = weak_file if weak_file is not None else run_dir / "weak" / f"{setting}.json"
        jobs.append(make_job(path, run_dir, replace(opts, setting=setting), teachers,
                             detector_sha, out))
    return jobs


def parse_settings(weak: str | None, weak_file: Path | None = None) -> list[str]:
    """``all`` / ``a,b`` / one setting / ``mixed``; none given: the weak file's own."""
    if weak is None:
        if weak_file is None:
            raise ValueError("give --weak (a setting, a comma list or all) or --weak-file")
        return [file_setting(load_coco(weak_file))]
    if weak.strip() == "all":
        return list(SETTINGS)
    settings = list(dict.fromkeys(s.strip() for s in weak.split(",") if s.strip()))
    unknown = [s for s in settings if s not in SETTINGS + (MIXED,)]
    if unknown or not settings:
        raise ValueError(f"--weak {weak!r}: expected all, mixed, or settings from "
                         f"{', '.join(SETTINGS)} (comma-separated)")
    if MIXED in settings and (len(settings) > 1 or weak_file is None):
        raise ValueError("--weak mixed takes one weak file (--weak-file) whose images carry "
                         "different kinds")
    return settings
