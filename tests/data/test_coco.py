"""Bad input: each case names the file and the item, and the valid items still load."""

import copy
import json

import pytest

from pseudolabel.data.coco import load_coco, save_json
from tests.conftest import tiny_coco


def test_valid_file_loads(write_json):
    ds = load_coco(write_json(tiny_coco()))
    assert len(ds.images) == 2 and len(ds.annotations) == 3 and len(ds.report) == 0
    assert [a["id"] for a in ds.anns_by_image[1]] == [10, 11]


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "top level is a list"),
    ('{"images": [], "categories": []}', "'annotations' is missing"),
    ('{"images": {}, "annotations": [], "categories": []}', "'images' is not a list"),
])
def test_not_coco_raises_with_file_name(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as e:
        load_coco(path)
    assert "bad.json" in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="nothere.json: file not found"):
        load_coco(tmp_path / "nothere.json")


def _ann(**kw):
    base = {"id": 99, "image_id": 1, "category_id": 1, "iscrowd": 0,
            "bbox": [1, 1, 4, 4], "segmentation": [[1, 1, 5, 1, 5, 5, 1, 5]]}
    base.update(kw)
    return base


BAD_ANNOTATIONS = [
    # annotation pointing to an unknown image
    (_ann(image_id=7), "unknown image_id 7"),
    # unknown category
    (_ann(category_id=5), "unknown category_id 5"),
    # empty polygon list
    (_ann(segmentation=[]), "empty polygon list"),
    # polygon with two vertices
    (_ann(segmentation=[[1, 1, 5, 5]]), "degenerate polygon"),
    # collinear polygon: zero area
    (_ann(segmentation=[[1, 1, 2, 2, 3, 3]]), "zero area"),
    # zero-area box
    (_ann(bbox=[3, 3, 0, 5]), "zero-area bbox"),
    # box outside the 30x20 image
    (_ann(bbox=[28, 1, 10, 4]), "outside the 30x20 image"),
    # point outside the image
    (_ann(point=[31.0, 2.0]), "point .* outside the 30x20 image"),
    # RLE of the wrong size
    (_ann(segmentation={"size": [5, 5], "counts": "abc"}), "does not match the image size"),
    # duplicate annotation id (10 exists)
    (_ann(id=10), "duplicate annotation id"),
    # non-finite box
    (_ann(bbox=[1, 1, float("nan"), 3]), "finite"),
]


@pytest.mark.parametrize("bad, message", BAD_ANNOTATIONS)
def test_bad_annotation_is_skipped_and_named(write_json, bad, message):
    data = tiny_coco()
    data["annotations"].insert(1, bad)
    ds = load_coco(write_json(data, "with_bad.json"))
    assert [a["id"] for a in ds.annotations] == [10, 11, 12]  # the others still load
    assert len(ds.report) == 1
    problem = ds.report.problems[0]
    assert problem.file.endswith("with_bad.json")
    assert problem.item == f"annotation {bad['id']}"
    assert __import__("re").search(message, problem.reason), problem.reason


def test_duplicate_image_and_category_ids(write_json):
    data = tiny_coco()
    data["images"].append({"id": 2, "file_name": "c.png", "height": 5, "width": 5})
    data["categories"].append({"id": 1, "name": "again"})
    ds = load_coco(write_json(data))
    reasons = sorted(str(p) for p in ds.report.problems)
    assert any("image 2: duplicate image id" in r for r in reasons)
    assert any("category 1: duplicate category id" in r for r in reasons)
    assert len(ds.images) == 2 and len(ds.annotations) == 3
    assert ds.image_by_id[2]["file_name"] == "b.png"  # the first occurrence wins


@pytest.mark.parametrize("image, message", [
    ({"id": 5, "file_name": "x.png", "height": 0, "width": 5}, "positive integer"),
    ({"id": 5, "height": 4, "width": 5}, "file_name"),
    ({"id": 5, "file_name": "x.png", "height": 4, "width": 5, "kind": "maybe"}, "unknown kind"),
    ({"id": 5, "file_name": "x.png", "height": 4, "width": 5, "tags": [42]}, "tags"),
])
def test_bad_image_records(write_json, image, message):
    data = tiny_coco()
    data["images"].append(image)
    ds = load_coco(write_json(data))
    assert len(ds.images) == 2 and len(ds.report) == 1
    assert message in ds.report.problems[0].reason


def test_save_json_round_trip_is_atomic(tmp_path):
    data = copy.deepcopy(tiny_coco())
    path = tmp_path / "sub" / "out.json"
    save_json(path, data)
    assert json.loads(path.read_text()) == data
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]  # no temp file left
