"""Writes the bad-input corpus beside this file (re-run to re-create it; its output is committed).

    python tests/data/bad/make_corpus.py

``good.json`` is a small valid dataset (4 images of 48 x 64, two categories, polygon and RLE
masks). Every ``ann-*.json`` / ``img-*.json`` / ``weak-*.json`` / ``pred-*.json`` is
``good.json`` (or its weak or prediction form) plus ONE bad item; ``cases.json`` says, per
file, the commands it goes through and the text that must name the bad item. Image files of
the image-level cases live in ``images/``; the test adds ``huge.png`` (10,000 x 10,000) and
``escape.png`` (a symlink to a file outside the image root) to its copy.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

HERE = Path(__file__).resolve().parent
H, W = 48, 64


def rle(mask: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [H, W], "counts": r["counts"].decode()}


def square(x0, y0, x1, y1) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def good() -> dict:
    images, anns = [], []
    rng = np.random.default_rng(0)
    (HERE / "images").mkdir(exist_ok=True)
    for i in range(4):
        pixels = np.full((H, W, 3), 40, np.uint8)
        pixels[8:24, 8:28] = (220, 40, 40)
        pixels[26:44, 36:60] = (40, 40, 220)
        pixels += rng.integers(0, 10, pixels.shape, dtype=np.uint8)
        Image.fromarray(pixels).save(HERE / "images" / f"good{i}.png")
        images.append({"id": i + 1, "file_name": f"good{i}.png", "height": H, "width": W})
        anns.append({"id": 10 * i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                     "segmentation": [[8, 8, 28, 8, 28, 24, 8, 24]], "bbox": [8, 8, 20, 16],
                     "area": 320})
        anns.append({"id": 10 * i + 2, "image_id": i + 1, "category_id": 2, "iscrowd": 0,
                     "segmentation": rle(square(36, 26, 60, 44)), "bbox": [36, 26, 24, 18],
                     "area": 432})
    return {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "kite"}, {"id": 2, "name": "boat"}]}


def with_annotation(base: dict, **fields) -> dict:
    data = copy.deepcopy(base)
    ann = {"id": 9001, "image_id": 1, "category_id": 1, "iscrowd": 0,
           "segmentation": [[30, 2, 40, 2, 40, 6, 30, 6]], "bbox": [30, 2, 10, 4], "area": 40}
    ann.update(fields)
    data["annotations"].append({k: v for k, v in ann.items() if v is not ...})
    return data


def with_image(base: dict, box=(8, 8, 28, 24), **fields) -> dict:
    data = copy.deepcopy(base)
    img = {"id": 7, "file_name": "good0.png", "height": H, "width": W}
    img.update(fields)
    data["images"].append({k: v for k, v in img.items() if v is not ...})
    x0, y0, x1, y1 = box
    data["annotations"].append({"id": 9007, "image_id": 7, "category_id": 1, "iscrowd": 0,
                                "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
                                "bbox": [x0, y0, x1 - x0, y1 - y0],
                                "area": (x1 - x0) * (y1 - y0)})
    return data


def weak_point(base: dict) -> dict:
    """``good`` as a point+class weak file: image 1 fully labelled, the others pointed."""
    data = copy.deepcopy(base)
    for img in data["images"]:
        img["kind"] = "fully_labeled" if img["id"] == 1 else "point+class"
        img["tags"] = [1, 2]
    for a in data["annotations"]:
        if a["image_id"] != 1:
            x, y, w, h = a["bbox"]
            for k in ("segmentation", "bbox", "area"):
                a.pop(k)
            a["point"] = [x + w / 2, y + h / 2]
    return data


def main() -> None:
    base = good()
    cases: dict[str, dict] = {}

    def add(name: str, data, names: str, commands: list[str], raw: str | None = None):
        path = HERE / name
        path.write_text(raw if raw is not None else json.dumps(data))
        cases[name] = {"names": names, "commands": commands}

    gt_cmds = ["check", "weaken", "evaluate", "noise", "refine"]
    far = [[0, 0, 1e9, 0, 1e9, 1e9]]
    # clipped to the image, not rejected (nothing to name): 24 GB in weaken before
    add("ann-polygon-far-outside.json", with_annotation(base, segmentation=far), "", gt_cmds)
    add("ann-polygon-outside.json", with_annotation(
        base, segmentation=[[100, 100, 120, 100, 120, 120]]), "annotation 9001", gt_cmds)
    add("ann-polygon-empty.json", with_annotation(base, segmentation=[]), "annotation 9001",
        gt_cmds)
    add("ann-polygon-odd.json", with_annotation(base, segmentation=[[1, 2, 3, 4, 5]]),
        "annotation 9001", gt_cmds)
    add("ann-polygon-zero-area.json", with_annotation(
        base, segmentation=[[1, 1, 5, 1, 9, 1]]), "annotation 9001", gt_cmds)
    add("ann-polygon-string.json", with_annotation(base, segmentation=[["a", "b", "c"]]),
        "annotation 9001", gt_cmds)
    add("ann-rle-size-not-list.json", with_annotation(
        base, segmentation={"size": "48x64", "counts": rle(square(0, 0, 2, 2))["counts"]}),
        "annotation 9001", gt_cmds)
    add("ann-rle-size-mismatch.json", with_annotation(
        base, segmentation={"size": [40, 40], "counts": "P10"}), "annotation 9001", gt_cmds)
    add("ann-rle-unparsable.json", with_annotation(
        base, segmentation={"size": [H, W], "counts": "}}}}~~~"}), "annotation 9001", gt_cmds)
    add("ann-rle-wrong-sum.json", with_annotation(
        base, segmentation={"size": [H, W], "counts": "52"}), "annotation 9001", gt_cmds)
    add("ann-rle-negative-run.json", with_annotation(
        base, segmentation={"size": [H, W], "counts": [3000, -10, 82]}), "annotation 9001",
        gt_cmds)
    add("ann-rle-counts-number.json", with_annotation(
        base, segmentation={"size": [H, W], "counts": 5}), "annotation 9001", gt_cmds)
    add("ann-area-string.json", with_annotation(base, area="big"), "annotation 9001", gt_cmds)
    add("ann-area-negative.json", with_annotation(base, area=-4), "annotation 9001", gt_cmds)
    add("ann-id-beyond-64-bit.json", with_annotation(base, id=2**70), "annotation #8",
        gt_cmds)
    add("ann-unknown-image.json", with_annotation(base, image_id=99), "annotation 9001",
        gt_cmds)
    add("ann-unknown-category.json", with_annotation(base, category_id=42), "annotation 9001",
        gt_cmds)
    add("ann-duplicate-id.json", with_annotation(base, id=1), "annotation 1", gt_cmds)
    add("ann-bbox-zero-area.json", with_annotation(base, bbox=[30, 2, 0, 4]),
        "annotation 9001", gt_cmds)
    add("ann-bbox-outside.json", with_annotation(base, bbox=[300, 2, 10, 4]),
        "annotation 9001", gt_cmds)
    add("ann-bbox-nan.json", None, "annotation 9001", gt_cmds,
        raw=json.dumps(with_annotation(base, bbox=[float("nan"), 2, 10, 4])))
    add("ann-iscrowd-two.json", with_annotation(base, iscrowd=2), "annotation 9001", gt_cmds)
    add("ann-no-id.json", with_annotation(base, id="x"), "annotation #8", gt_cmds)
    add("cat-no-name.json", {**copy.deepcopy(base), "categories": base["categories"]
                             + [{"id": 3}]}, "category 3", gt_cmds)
    add("img-no-file-name.json", with_image(base, file_name=""), "image 7", gt_cmds)
    add("img-negative-size.json", with_image(base, height=-48), "image 7", gt_cmds)
    add("img-huge-record.json", with_image(base, height=1_000_000, width=1_000_000), "image 7",
        gt_cmds)
    add("img-unknown-kind.json", with_image(base, kind="scribble"), "image 7", gt_cmds)
    add("img-unknown-tag.json", with_image(base, tags=[1, 77]), "image 7", gt_cmds)
    add("file-not-coco.json", [1, 2, 3], "file-not-coco.json", gt_cmds)
    add("file-truncated.json", None, "file-truncated.json", gt_cmds,
        raw=json.dumps(base)[:200])
    # image files: the record is fine, the file is not
    img_cmds = ["check", "noise-wan", "refine"]  # generate: the weak-* twins below
    (HERE / "images" / "truncated.png").write_bytes(
        (HERE / "images" / "good0.png").read_bytes()[:120])
    (HERE / "images" / "empty.png").write_bytes(b"")
    (HERE / "images" / "text.png").write_text("not an image\n")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(HERE / "images" / "wrong-size.png")
    # escape.png (a symlink out of the image root) and huge.png are made by the test
    for name, file_name in (("img-file-truncated.json", "truncated.png"),
                            ("img-file-empty.json", "empty.png"),
                            ("img-file-not-an-image.json", "text.png"),
                            ("img-file-wrong-size.json", "wrong-size.png"),
                            ("img-file-missing.json", "missing.png"),
                            ("img-file-dotdot.json", "../make_corpus.py"),
                            ("img-file-absolute.json", "/etc/hostname"),
                            ("img-file-symlink-out.json", "escape.png")):
        data = with_image(base, file_name=file_name)
        add(name, data, "image 7", img_cmds)
        weak = weak_point(data)
        add("weak-" + name.removeprefix("img-"), weak, "image 7", ["generate"])
    # huge.png (made by the test) is dark with a bright square at 3,000-7,000
    huge = with_image(base, box=(3000, 3000, 7000, 7000), file_name="huge.png",
                      height=10_000, width=10_000)
    add("img-file-huge.json", huge, "", img_cmds)
    add("weak-huge.json", weak_point(huge), "", ["generate"])  # decoded reduced
    # weak labels
    weak = weak_point(base)
    bad_point = copy.deepcopy(weak)
    bad_point["annotations"].append({"id": 9001, "image_id": 2, "category_id": 1,
                                     "iscrowd": 0, "point": [500, 5]})
    add("weak-point-outside.json", bad_point, "annotation 9001", ["check", "generate"])
    nan_point = copy.deepcopy(weak)
    nan_point["annotations"].append({"id": 9001, "image_id": 2, "category_id": 1,
                                     "iscrowd": 0, "point": [float("nan"), 5]})
    add("weak-point-nan.json", None, "annotation 9001", ["check", "generate"],
        raw=json.dumps(nan_point))
    # predictions scored against good.json
    preds = [{"id": a["id"], "image_id": a["image_id"], "category_id": a["category_id"],
              "segmentation": a["segmentation"], "score": 0.9} for a in base["annotations"]]
    for name, bad in (("pred-score-nan.json", {"score": float("nan")}),
                      ("pred-score-inf.json", {"score": float("inf")}),
                      ("pred-score-string.json", {"score": "high"}),
                      ("pred-empty-polygon.json", {"segmentation": []}),
                      ("pred-bad-rle.json", {"segmentation": {"size": [H, W], "counts": "!"}}),
                      ("pred-no-segmentation.json", {"segmentation": ...})):
        p = {**preds[0], "id": 9001, **bad}
        add(name, None, "(id 9001)", ["evaluate"],
            raw=json.dumps(preds + [{k: v for k, v in p.items() if v is not ...}]))
    (HERE / "good.json").write_text(json.dumps(base))
    (HERE / "cases.json").write_text(json.dumps(cases, indent=1) + "\n")
    print(f"{len(cases)} cases in {HERE}")


if __name__ == "__main__":
    main()
