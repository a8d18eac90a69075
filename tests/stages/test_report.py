"""``pseudolabel report``: pictures that open and the AP-vs-hours plot."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

from PIL import Image

from pseudolabel.data.coco import load_coco, save_json
from pseudolabel.stages.cost import labelling_cost
from pseudolabel.stages.report import write_report
from pseudolabel.stages.train_student import evaluate_student, train_student
from pseudolabel.stages.weaken import weaken
from tests.stages.test_train_student import TINY


def test_report_draws_pseudo_masks_students_and_the_cost_plot(synth_dir, tmp_path):
    train = synth_dir / "annotations" / "train.json"
    val = synth_dir / "annotations" / "val.json"
    images = synth_dir / "images"
    run = tmp_path / "run"
    weak, _ = weaken(load_coco(train), "box+class", 0.2, seed=0)
    pseudo = dict(weak)  # stand-in pseudo-labels: GT masks on every image
    gt = json.loads(train.read_text())
    pseudo["annotations"] = [{**a, "source": "pseudo"} for a in gt["annotations"]]
    save_json(run / "pseudo" / "box+class.json", pseudo)
    sdir = run / "student" / "box_class-mask2former"
    train_student(run / "pseudo" / "box+class.json", images, sdir, replace(TINY, steps=2),
                  progress=False)
    evaluate_student(sdir, val, images, progress=False)
    shutil.copytree(sdir, run / "student" / "full-mask2former")
    s = write_report(run, train, val, images, images=2)  # no split.json: the file's info
    out = run / "report"
    assert s["pseudo"] == ["pseudo-box_class.png"]
    assert sorted(s["student"]) == ["student-box_class-mask2former.png",
                                    "student-full-mask2former.png"]
    for name in s["pseudo"] + s["student"] + ["ap_vs_hours.png"]:
        with Image.open(out / name) as im:
            im.verify()
    text = (out / "report.md").read_text()
    assert "ap_vs_hours.png" in text
    n = len(gt["images"])  # hours at the 20% the pseudo-label file's info records
    hours = labelling_cost("coco", "box+class", 0.2, n)["hours"]
    assert f"| box_class-mask2former | {hours:,.1f} |" in text
    full = labelling_cost("coco", "box+class", 1.0, n)["full_mask_hours"]
    assert f"| full-mask2former | {full:,.1f} |" in text and s["table"][2:] == text.split(
        "\n")[4:6]
