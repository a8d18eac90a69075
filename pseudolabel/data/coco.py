"""COCO instances files: validated loading, atomic saving, and pycocotools interop.

Loading never stops at a bad item: an image, category or annotation that is malformed,
duplicated or points to something unknown is skipped and recorded in the dataset's
``report`` with the file and the item named. A file that is not COCO at all raises
``ValueError``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from pycocotools.coco import COCO

from pseudolabel.data.masks import (
    MAX_POLYGON_VERTICES,
    clip_polygon,
    rle_problem,
    segmentation_to_rle,
)
from pseudolabel.data.report import Report

WEAK_KINDS = ("none", "class", "point+class", "box+class")
IMAGE_KINDS = ("fully_labeled", *WEAK_KINDS)
BOX_TOLERANCE_PX = 1.0  # boxes may overhang the image by float rounding, not by more
INT64 = 2**63  # ids must fit a signed 64-bit integer (pycocotools, numpy, torch hold them so)
MAX_SIDE = 65_535  # an image record's width or height (masks of it are allocated whole)
MAX_PIXELS = 2**28  # 268 MP per image record


@dataclass
class CocoDataset:
    """A validated COCO instances file.

    ``images``, ``categories`` and ``annotations`` hold the original dicts of the valid
    items, in file order. ``extra`` keeps the other top-level keys (``info``, ``licenses``).
    """

    path: str
    images: list[dict]
    categories: list[dict]
    annotations: list[dict]
    extra: dict = field(default_factory=dict)
    report: Report = field(default_factory=Report)

    def __post_init__(self) -> None:
        self.image_by_id = {img["id"]: img for img in self.images}
        self.category_by_id = {cat["id"]: cat for cat in self.categories}
        self.anns_by_image: dict[int, list[dict]] = {img["id"]: [] for img in self.images}
        for ann in self.annotations:
            self.anns_by_image[ann["image_id"]].append(ann)

    @property
    def category_ids(self) -> list[int]:
        return [c["id"] for c in self.categories]

    @property
    def info(self) -> dict:
        return self.extra.get("info", {})

    def rle(self, ann: dict) -> dict:
        """Compressed RLE of an annotation's segmentation, sized to its image."""
        img = self.image_by_id[ann["image_id"]]
        return segmentation_to_rle(ann["segmentation"], img["height"], img["width"])

    def to_dict(self) -> dict:
        return {
            **self.extra,
            "images": self.images,
            "categories": self.categories,
            "annotations": self.annotations,
        }

    def to_pycocotools(self) -> COCO:
        """A ``pycocotools.coco.COCO`` over the valid items (no console chatter)."""
        return coco_from_dict(self.to_dict())


def coco_from_dict(data: dict) -> COCO:
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def read_json(path: str | Path):
    """Parse a JSON file, raising ``ValueError`` that names the file and the position."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a UTF-8 text file ({exc})") from None


def load_coco(path: str | Path) -> CocoDataset:
    """Load and validate a COCO instances file; bad items are skipped into ``report``."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: not a COCO instances file (top level is a {type(data).__name__}, "
            "expected an object with 'images', 'annotations' and 'categories')"
        )
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            problem = "missing" if key not in data else "not a list"
            raise ValueError(f"{path}: not a COCO instances file ('{key}' is {problem})")
    report = Report()
    file = str(path)
    categories = _valid_categories(data["categories"], file, report)
    cat_ids = {c["id"] for c in categories}
    images = _valid_images(data["images"], cat_ids, file, report)
    sizes = {img["id"]: (img["height"], img["width"]) for img in images}
    annotations = _valid_annotations(data["annotations"], sizes, cat_ids, file, report)
    extra = {k: v for k, v in data.items() if k not in ("images", "annotations", "categories")}
    return CocoDataset(str(path), images, categories, annotations, extra, report)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_id(v) -> bool:
    """An integer (not a bool) that fits a signed 64-bit id."""
    return _is_int(v) and -INT64 <= v < INT64


_is_id = is_id


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _finite_numbers(values, n: int | None = None) -> bool:
    if not isinstance(values, list) or (n is not None and len(values) != n):
        return False
    return all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        for v in values
    )


def _valid_categories(raw: list, file: str, report: Report) -> list[dict]:
    out, seen = [], set()
    for i, cat in enumerate(raw):
        if not isinstance(cat, dict) or not _is_id(cat.get("id")):
            report.add(file, f"category #{i}", "needs an integer 'id' (64-bit)")
        elif not isinstance(cat.get("name"), str) or not cat["name"].strip():
            report.add(file, f"category {cat['id']}", "needs a non-empty 'name'")
        elif cat["id"] in seen:
            report.add(file, f"category {cat['id']}", "duplicate category id")
        else:
            seen.add(cat["id"])
            out.append(cat)
    return out


def _valid_images(raw: list, cat_ids: set, file: str, report: Report) -> list[dict]:
    out, seen = [], set()
    for i, img in enumerate(raw):
        if not isinstance(img, dict) or not _is_id(img.get("id")):
            report.add(file, f"image #{i}", "needs an integer 'id' (64-bit)")
            continue
        item = f"image {img['id']}"
        if img["id"] in seen:
            report.add(file, item, "duplicate image id")
            continue
        if not isinstance(img.get("file_name"), str) or not img["file_name"]:
            report.add(file, item, "needs a non-empty 'file_name'")
            continue
        if not (_is_int(img.get("width")) and _is_int(img.get("height"))) or min(
            img["width"], img["height"]
        ) <= 0:
            report.add(file, item, "needs positive integer 'width' and 'height'")
            continue
        if max(img["width"], img["height"]) > MAX_SIDE or \
                img["width"] * img["height"] > MAX_PIXELS:
            report.add(file, item, f"{img['width']}x{img['height']} is larger than supported "
                       f"(sides up to {MAX_SIDE}, {MAX_PIXELS:,} pixels)")
            continue
        kind = img.get("kind")
        if kind is not None and kind not in IMAGE_KINDS:
            report.add(file, item, f"unknown kind {kind!r} (expected one of {IMAGE_KINDS})")
            continue
        tags = img.get("tags")
        if tags is not None and (
            not isinstance(tags, list) or any(not _is_int(t) or t not in cat_ids for t in tags)
        ):
            report.add(file, item, f"'tags' must list known category ids, got {tags!r}")
            continue
        seen.add(img["id"])
        out.append(img)
    return out


def _valid_annotations(
    raw: list, sizes: dict, cat_ids: set, file: str, report: Report
) -> list[dict]:
    out, seen = [], set()
    for i, ann in enumerate(raw):
        if not isinstance(ann, dict) or not _is_id(ann.get("id")):
            report.add(file, f"annotation #{i}", "needs an integer 'id' (64-bit)")
            continue
        item = f"annotation {ann['id']}"
        if ann["id"] in seen:
            report.add(file, item, "duplicate annotation id")
            continue
        reason = _annotation_problem(ann, sizes, cat_ids)
        if reason:
            report.add(file, item, reason)
            continue
        seen.add(ann["id"])
        out.append(ann)
    return out


def _annotation_problem(ann: dict, sizes: dict, cat_ids: set) -> str | None:
    """Why an annotation is unusable, or ``None`` when it is valid."""
    if ann.get("image_id") not in sizes:
        return f"refers to unknown image_id {ann.get('image_id')!r}"
    if ann.get("category_id") not in cat_ids:
        return f"refers to unknown category_id {ann.get('category_id')!r}"
    if ann.get("iscrowd", 0) not in (0, 1) or isinstance(ann.get("iscrowd"), float):
        return f"'iscrowd' must be 0 or 1, got {ann.get('iscrowd')!r}"
    for key in ("area", "score"):
        if key in ann and not _finite(ann[key]):
            return f"'{key}' must be a finite number, got {ann[key]!r}"
    if "area" in ann and ann["area"] < 0:
        return f"negative 'area' {ann['area']}"
    h, w = sizes[ann["image_id"]]
    if "segmentation" in ann:
        reason = _segmentation_problem(ann["segmentation"], h, w)
        if reason:
            return reason
    if "bbox" in ann:
        box = ann["bbox"]
        if not _finite_numbers(box, 4):
            return f"'bbox' must be 4 finite numbers [x, y, w, h], got {box!r}"
        x, y, bw, bh = box
        if bw <= 0 or bh <= 0:
            return f"zero-area bbox {box}"
        t = BOX_TOLERANCE_PX
        if x < -t or y < -t or x + bw > w + t or y + bh > h + t:
            return f"bbox {box} lies outside the {w}x{h} image"
    if "point" in ann:
        pt = ann["point"]
        if not _finite_numbers(pt, 2):
            return f"'point' must be [x, y] finite numbers, got {pt!r}"
        if not (0 <= pt[0] <= w and 0 <= pt[1] <= h):
            return f"point {pt} lies outside the {w}x{h} image"
    return None


def _segmentation_problem(seg, h: int, w: int) -> str | None:
    return segmentation_problem(seg, h, w)


def segmentation_problem(seg, h: int, w: int) -> str | None:
    """Why a COCO ``segmentation`` cannot be a mask of an ``h x w`` image, or ``None``.

    Polygons: even counts >= 6 of finite coordinates, at most ``MAX_POLYGON_VERTICES``
    vertices, some area inside the image (parts outside are clipped when rasterised). RLE: see
    ``masks.rle_problem``.
    """
    if isinstance(seg, list):
        if not seg:
            return "empty polygon list"
        for poly in seg:
            if not _finite_numbers(poly) or len(poly) < 6 or len(poly) % 2:
                return "degenerate polygon (needs an even number >= 6 of finite coordinates)"
        if sum(len(p) for p in seg) // 2 > MAX_POLYGON_VERTICES:
            return f"more than {MAX_POLYGON_VERTICES:,} polygon vertices"
        if all(_polygon_area(p) == 0 for p in seg):
            return "degenerate polygon with zero area"
        clipped = [clip_polygon(p, w, h, margin=0.0) for p in seg]
        if all(len(c) < 6 or _polygon_area(c) == 0 for c in clipped):
            return f"polygon lies outside the {w}x{h} image"
        return None
    if isinstance(seg, dict) and {"size", "counts"} <= seg.keys():
        return rle_problem(seg, h, w)
    return "unrecognised 'segmentation' (expected polygons or an RLE dict)"


def _polygon_area(flat: list[float]) -> float:
    xs, ys = flat[0::2], flat[1::2]
    n = len(xs)
    return abs(sum(xs[i] * ys[(i + 1) % n] - xs[(i + 1) % n] * ys[i] for i in range(n))) / 2


def save_json(path: str | Path, data) -> None:
    """Write JSON atomically (temp file + rename), so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, separators=(",", ":"))
    os.replace(tmp, path)


class CocoStreamWriter:
    """Streams a COCO file: header (``info``, other top-level keys, images (``images``, by
    default ``gt``'s), categories of ``gt``), then annotations one by one; ``close`` finishes
    it and moves it into place, ``abort`` removes the partial file. Memory does not grow with
    the annotations."""

    def __init__(self, out: Path, gt: CocoDataset, info: dict | None,
                 images: list[dict] | None = None) -> None:
        """``info=None``: ``info`` is given to ``close`` instead (known only at the end)."""
        out.parent.mkdir(parents=True, exist_ok=True)
        self.out = out
        self.tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        self.f = open(self.tmp, "w")
        self.info_at_end = info is None
        self.f.write('{"images": ' + json.dumps(gt.images if images is None else images))
        if info is not None:
            self.f.write(', "info": ' + json.dumps(info))
        for key, value in gt.extra.items():
            if key != "info":
                self.f.write(f", {json.dumps(key)}: " + json.dumps(value))
        self.f.write(', "categories": ' + json.dumps(gt.categories))
        self.f.write(', "annotations": [')
        self.first = True

    def write(self, ann: dict) -> None:
        self.f.write(("" if self.first else ", ") + json.dumps(ann))
        self.first = False

    def close(self, info: dict | None = None) -> None:
        self.f.write("]")
        if self.info_at_end:
            self.f.write(', "info": ' + json.dumps(info or {}))
        self.f.write("}\n")
        self.f.close()
        os.replace(self.tmp, self.out)

    def abort(self) -> None:
        self.f.close()
        self.tmp.unlink(missing_ok=True)
