"""Pseudo-masks of one weakly labelled image (seed 001 §3.2-3.5).

An image's weak label kind picks its prompts:

* ``none`` (§3.2): Grounding DINO with the whole label space; boxes with confidence >= 0.3
  after NMS at 0.9 prompt the ``box-cls`` teacher with Grounding DINO's class.
* ``class`` (§3.3): the same with the prompt restricted to the image's tags.
* ``point+class`` (§3.4): ``point-cls`` (P-SAM) masks of the given points give boxes
  ``B_sam``; Grounding DINO on the image's tags (no threshold: Algorithm 1 applies its own
  τc); Algorithm 1 merges both box sets (:func:`pseudolabel.refine.merge_prompt_boxes`);
  ``boxpoint-cls`` (BP-SAM) prompted with the merged boxes and the points gives the
  pseudo-masks. ``refine=False`` keeps P-SAM's masks (seed 001 Table 5's "point" row).
* ``box+class`` (§3.5): the ``box`` teacher prompted with the given boxes.

Multimask outputs keep the mask with the highest predicted IoU, which becomes the
pseudo-mask's ``score``. Everything here depends on the image and its own weak labels only,
never on the other images processed beside it, so one image gives the same pseudo-masks in a
single-setting run, a several-settings run or a mixed-kind file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pseudolabel.data.masks import mask_to_rle, masks_to_boxes_xyxy, xywh_to_xyxy, xyxy_to_xywh
from pseudolabel.models.grounding_dino import filter_detections
from pseudolabel.models.predictor import (
    ImageEmbeddings,
    PromptedSam,
    ZoomSpec,
    pixel_centre_to_sam,
)
from pseudolabel.refine import merge_prompt_boxes
from pseudolabel.samrefiner import refine_masks

SETTINGS = ("none", "class", "point+class", "box+class")
# The teachers each setting prompts (seed 001 §3.2-3.5).
SETTING_TEACHERS = {"none": ("box-cls",), "class": ("box-cls",),
                    "point+class": ("point-cls", "boxpoint-cls"), "box+class": ("box",)}
STABILITY_OFFSET = 1.0  # SAM's stability score: IoU of the masks at logit +-1


def teachers_for(kinds, refine: bool = True) -> tuple[str, ...]:
    """The teachers the weak kinds ``kinds`` prompt, in a fixed order."""
    names: list[str] = []
    for kind in SETTINGS:
        if kind not in kinds:
            continue
        wanted = ("point-cls",) if kind == "point+class" and not refine \
            else SETTING_TEACHERS[kind]
        names += [n for n in wanted if n not in names]
    return tuple(names)


def uses_detector(kind: str, refine: bool = True) -> bool:
    return kind in ("none", "class") or (kind == "point+class" and refine)


@dataclass
class Teachers:
    """The prompted models of one run: ``models[name]`` and, per name, whether it takes
    class prompts, plus ``rows`` (category id -> class-embedding row) and ``describe`` (what
    identifies each teacher in a parts fingerprint)."""

    models: dict[str, PromptedSam]
    class_aware: dict[str, bool]
    rows: dict[int, int]
    describe: dict[str, dict] = field(default_factory=dict)

    @property
    def encoder(self) -> PromptedSam:
        """Any of the models: they share one frozen image encoder (checked on load)."""
        return next(iter(self.models.values()))

    def subset(self, names) -> Teachers:
        return Teachers({n: self.models[n] for n in names},
                        {n: self.class_aware[n] for n in names}, self.rows,
                        {n: self.describe[n] for n in names if n in self.describe})


@dataclass(frozen=True)
class DetectionRequest:
    """What Grounding DINO is asked about one image: its prompt's categories (the whole label
    space for ``none``, the tags otherwise) within a label space."""

    label_space: tuple[int, ...]
    prompt: tuple[int, ...]


def detection_request(kind: str, tags, label_space: tuple[int, ...],
                      refine: bool = True) -> DetectionRequest | None:
    if not uses_detector(kind, refine):
        return None
    prompt = label_space if kind == "none" else tuple(int(t) for t in (tags or []))
    return DetectionRequest(tuple(label_space), prompt)


def detections_for(kind: str, raw, box_threshold: float, nms_iou: float | None):
    """The detections a kind uses, from Grounding DINO's unfiltered output: §4.1's
    threshold and NMS for ``none`` / ``class``; every box for ``point+class`` (Algorithm 1
    applies its own τc)."""
    if raw is None or kind == "point+class":
        return raw
    return filter_detections(raw, box_threshold, nms_iou)


@dataclass
class Proposal:
    """What prompts one pseudo-mask, before decoding."""

    category_id: int
    weak: dict
    box: np.ndarray | None = None  # XYXY, continuous pixels
    point: np.ndarray | None = None  # (x, y), continuous pixels


def _decode(teachers: Teachers, name: str, emb: ImageEmbeddings, props: list[Proposal],
            boxes: np.ndarray | None, points: np.ndarray | None,
            image: np.ndarray | None = None, zoom: ZoomSpec | None = None):
    """Best mask, predicted IoU and stability of each prompt for teacher ``name``, on the
    host (one transfer for the image's prompts). With ``zoom`` on, box prompts are decoded on
    zoomed crops of ``image`` (the decoded frame's pixels)."""
    model = teachers.models[name]
    classes = ([teachers.rows[p.category_id] for p in props] if teachers.class_aware[name]
               else None)
    multimask = points is not None and boxes is None  # one point is ambiguous
    sam_points = None if points is None else pixel_centre_to_sam(points)
    if zoom is not None and zoom.on and boxes is not None:
        if image is None:
            raise ValueError("zoomed decoding needs the image's pixels")
        out = model.decode_zoomed(image, zoom, boxes_xyxy=boxes, points_xy=sam_points,
                                  class_ids=classes, multimask=multimask, best_only=True,
                                  stability_offset=STABILITY_OFFSET)
    else:
        out = model.decode(emb, boxes_xyxy=boxes, points_xy=sam_points, class_ids=classes,
                           multimask=multimask, best_only=True,
                           stability_offset=STABILITY_OFFSET).cpu()
    return (out.masks[:, 0].numpy(), out.iou_predictions[:, 0].numpy(),
            out.stability[:, 0].numpy())


def _consistency(mask: np.ndarray, prop: Proposal, tags: list[int] | None) -> dict:
    """How the pseudo-mask agrees with the weak label it came from."""
    out: dict = {}
    if prop.point is not None:
        x, y = prop.point
        r, c = int(np.floor(y)), int(np.floor(x))
        out["point_in_mask"] = bool(0 <= r < mask.shape[0] and 0 <= c < mask.shape[1]
                                    and mask[r, c])
    if prop.box is not None:
        x0, y0, x1, y1 = prop.box
        ys, xs = np.nonzero(mask)
        inside = (xs + 0.5 >= x0) & (xs + 0.5 <= x1) & (ys + 0.5 >= y0) & (ys + 0.5 <= y1)
        out["outside_box"] = round(float(1 - inside.mean()), 6) if len(xs) else 0.0
    out["class_in_tags"] = None if tags is None else prop.category_id in tags
    return out


def _record_box(box_xyxy: np.ndarray, scale: tuple[float, float]) -> list[float]:
    """A box of the decoded image as COCO ``xywh`` in the record's frame."""
    sy, sx = scale
    b = np.asarray(box_xyxy, dtype=np.float64) / [sx, sy, sx, sy]
    return [round(float(v), 4) for v in xyxy_to_xywh(b[None])[0]]


def _proposals(kind: str, weak_anns: list[dict], detection, scale: tuple[float, float]
               ) -> tuple[list[Proposal], str, str]:
    """Prompts in the decoded image's frame (``scale``: its size over the record's)."""
    sy, sx = scale
    if kind in ("none", "class"):
        props = [Proposal(int(c), {"detector_box": _record_box(b, scale),
                                   "detector_score": round(float(s), 6)}, box=b)
                 for b, c, s in zip(detection.boxes_xyxy, detection.labels, detection.scores,
                                    strict=True)]
        return props, "box-cls", "box"
    if kind == "box+class":
        return [Proposal(a["category_id"], {"id": a["id"], "bbox": a["bbox"]},
                         box=xywh_to_xyxy([a["bbox"]])[0] * [sx, sy, sx, sy])
                for a in weak_anns], "box", "box"
    if kind == "point+class":
        return [Proposal(a["category_id"], {"id": a["id"], "point": a["point"]},
                         point=np.asarray(a["point"], dtype=np.float64) * [sx, sy])
                for a in weak_anns], "point-cls", "point"
    raise ValueError(f"unknown setting {kind!r}; expected one of {SETTINGS}")


def to_record_frame(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A mask of a reduced decode, nearest-sampled up to the record's ``(H, W)``."""
    if mask.shape == tuple(size):
        return mask
    rows = np.minimum(((np.arange(size[0]) + 0.5) * mask.shape[0] / size[0]).astype(int),
                      mask.shape[0] - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * mask.shape[1] / size[1]).astype(int),
                      mask.shape[1] - 1)
    return mask[rows][:, cols]


def needs_whole_image(setting: str, zoom: ZoomSpec | None, samrefiner: bool) -> bool:
    """Whether ``setting``'s pseudo-masks decode on the whole image's embedding: always
    without zoom; with it, P-SAM's lone points and SAMRefiner still do (box prompts are
    decoded on their own crops)."""
    return zoom is None or not zoom.on or samrefiner or setting == "point+class"


def image_pseudo_masks(setting: str, teachers: Teachers, emb: ImageEmbeddings | None,
                       weak_anns: list[dict], tags: list[int] | None, detection,
                       refine: bool = True, samrefiner: bool = False,
                       record_size: tuple[int, int] | None = None,
                       image: np.ndarray | None = None, zoom: ZoomSpec | None = None
                       ) -> tuple[list[dict], int]:
    """Pseudo-annotations (no ids) of one weakly labelled image of kind ``setting``, and how
    many prompts gave an empty mask (dropped).

    ``detection``: the image's Grounding DINO output as :func:`detections_for` gives it.
    ``record_size``: the image record's ``(H, W)`` when the image was decoded reduced (a huge
    file): prompts are scaled into the decoded frame and masks and boxes back to the
    record's.
    ``samrefiner`` refines the final masks with SAMRefiner (seed 002: point + elastic box +
    Gaussian mask prompts mined from each mask, decoded in one batch from the same image
    embedding, or each on its crop around its elastic box under ``zoom``; without class
    prompts); the quality record keeps its predicted IoU.
    ``zoom`` (on) decodes the box-carrying prompts (``box``, ``box-cls`` and BP-SAM's box +
    point) on zoomed crops of ``image``, the decoded frame's pixels; P-SAM's lone points
    have no box to crop around and use the whole image. ``emb`` may be ``None`` where
    nothing decodes on the whole image (zoomed box prompts, no SAMRefiner).
    """
    if emb is None and (image is None or needs_whole_image(setting, zoom, samrefiner)):
        raise ValueError(f"{setting}: decoding without the whole image's embedding needs the "
                         "image's pixels, zoomed box prompts and no P-SAM or SAMRefiner pass")
    decoded = tuple(image.shape[:2]) if emb is None else emb.original_sizes[0]
    record_size = tuple(record_size or decoded)
    scale = (decoded[0] / record_size[0], decoded[1] / record_size[1])
    props, name, prompt = _proposals(setting, weak_anns, detection, scale)
    if not props:
        return [], 0
    boxes = np.stack([p.box for p in props]) if props[0].box is not None else None
    points = np.stack([p.point for p in props]) if props[0].point is not None else None
    masks, iou, stability = _decode(teachers, name, emb, props, boxes, points, image,
                                     zoom)
    if setting == "point+class" and refine:
        sam_boxes = masks_to_boxes_xyxy(masks).astype(np.float64)
        empty = ~masks.reshape(len(masks), -1).any(1)
        sam_boxes[empty] = np.repeat(points[empty], 2, axis=1)  # a point-sized box
        merged = merge_prompt_boxes(detection.boxes_xyxy, detection.scores,
                                    detection.labels, points,
                                    [p.category_id for p in props], sam_boxes)
        for p, b in zip(props, merged, strict=True):
            p.box = b
            p.weak["refined_box"] = _record_box(b, scale)
        name, prompt = "boxpoint-cls", "box+point"
        masks, iou, stability = _decode(teachers, name, emb, props, merged, points,
                                         image, zoom)
    refined_iou = [None] * len(props)
    if samrefiner:
        r = refine_masks(teachers.encoder, emb, masks, zoom=zoom, image=image)
        masks, refined_iou = r.masks, [round(float(v), 6) for v in r.scores]
    return _annotations(props, masks, iou, stability, refined_iou, prompt, name, tags,
                        samrefiner, record_size)


def _annotations(props, masks, iou, stability, refined_iou, prompt, name, tags, samrefiner,
                 record_size):
    out, empty = [], 0
    for p, m, q, s, rq in zip(props, masks, iou, stability, refined_iou, strict=True):
        if not m.any():
            empty += 1
            continue
        consistency = _consistency(m, p, tags)  # in the decoded frame, as the prompts
        m = to_record_frame(m, record_size)
        rle = mask_to_rle(m)
        ys, xs = np.nonzero(m)
        out.append({
            "category_id": int(p.category_id), "segmentation": rle,
            "bbox": [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()),
                     float(ys.max() + 1 - ys.min())],
            "area": float(m.sum()), "iscrowd": 0, "score": round(float(q), 6),
            "quality": {"predicted_iou": round(float(q), 6), "stability": round(float(s), 6),
                        "prompt": prompt, "teacher": name,
                        **({"samrefiner_iou": rq} if samrefiner else {})},
            "weak": p.weak, "source": "pseudo",
            "consistency": consistency,
        })
    return out, empty
