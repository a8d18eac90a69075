"""``pseudolabel check``: validate a COCO file and every image it names, skipping bad items."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from pseudolabel.data.coco import load_coco
from pseudolabel.data.images import ImageLoadError, load_image_bounded, resolve_image_path
from pseudolabel.data.report import Report


def check_dataset(annotations: str | Path, image_root: str | Path | None,
                  progress: bool = True) -> tuple[dict, Report]:
    """Load ``annotations`` and, if ``image_root`` is given, decode every image.

    An image that is missing, unreadable, truncated, escapes the root or whose size differs
    from its record is reported and skipped. Returns counts and the report of all problems.
    """
    ds = load_coco(annotations)
    report = Report()
    report.extend(ds.report)
    ok_images = 0
    if image_root is not None:
        for img in tqdm(ds.images, desc="check images", unit="img", disable=not progress):
            try:  # decoded whole (truncation shows), kept reduced when huge
                _, (h, w) = load_image_bounded(resolve_image_path(image_root, img["file_name"]))
            except ImageLoadError as exc:
                report.add(str(annotations), f"image {img['id']}", str(exc))
                continue
            if (h, w) != (img["height"], img["width"]):
                report.add(str(annotations), f"image {img['id']}",
                           f"{img['file_name']} is {w}x{h} but the file records "
                           f"{img['width']}x{img['height']}")
                continue
            ok_images += 1
    counts = {"images": len(ds.images), "annotations": len(ds.annotations),
              "categories": len(ds.categories), "readable_images": ok_images,
              "skipped": len(report)}
    return counts, report
