"""Missing, corrupt, truncated and escaping images are skipped, named and counted."""

import json
import shutil

from PIL import Image

from pseudolabel.stages.check import check_dataset


def test_bad_images_are_reported_and_others_read(synth_dir, tmp_path):
    root = tmp_path / "images"
    shutil.copytree(synth_dir / "images", root)
    data = json.loads((synth_dir / "annotations" / "val.json").read_text())
    imgs = data["images"]
    (root / imgs[0]["file_name"]).unlink()                                  # missing
    (root / imgs[1]["file_name"]).write_bytes(b"\x89PNG garbage")           # corrupt
    png = (root / imgs[2]["file_name"]).read_bytes()
    (root / imgs[2]["file_name"]).write_bytes(png[: len(png) // 3])         # truncated
    imgs[3]["file_name"] = "../outside.png"                                 # escapes the root
    Image.new("RGB", (7, 5)).save(root / imgs[4]["file_name"])             # wrong size
    ann = tmp_path / "val.json"
    ann.write_text(json.dumps(data))

    counts, report = check_dataset(ann, root, progress=False)
    reasons = {p.item: p.reason for p in report.problems}
    assert "image file not found" in reasons[f"image {imgs[0]['id']}"]
    assert imgs[1]["file_name"] in reasons[f"image {imgs[1]['id']}"]
    assert "truncated" in reasons[f"image {imgs[2]['id']}"]
    assert "escapes the image root" in reasons[f"image {imgs[3]['id']}"]
    assert "but the file records" in reasons[f"image {imgs[4]['id']}"]
    assert all(p.file == str(ann) for p in report.problems)
    assert counts["readable_images"] == len(imgs) - 5 and counts["skipped"] == 5
