"""The make targets' scripts: pipeline.sh refuses to start without its files; table2.py."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))


def test_coco_pipeline_lists_what_is_missing_and_runs_nothing(tmp_path):
    r = subprocess.run(["bash", "scripts/pipeline.sh", "configs/coco.yaml", "0.1",
                        str(tmp_path / "run")], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 1
    assert "training annotations (data.train) not found" in r.stdout
    assert "SAM checkpoint (models.sam_checkpoint) not found" in r.stdout
    assert not (tmp_path / "run").exists()


def test_pipeline_usage():
    r = subprocess.run(["bash", "scripts/pipeline.sh"], cwd=REPO, capture_output=True,
                       text=True)
    assert r.returncode == 2 and "usage" in r.stderr


def test_table2_collects_runs(synth_dir, tmp_path):
    import table2

    train = synth_dir / "annotations" / "train.json"
    for pct, ap in (("1pct", 10.0), ("10pct", 15.0)):
        run = tmp_path / pct
        (run / "student" / "box_class-mask2former").mkdir(parents=True)
        (run / "student" / "full-mask2former").mkdir(parents=True)
        (run / "eval").mkdir()
        (run / "student" / "box_class-mask2former" / "metrics.json").write_text(json.dumps(
            {"train": str(train), "segm": {"AP": ap}, "boundary": {"AP": ap / 2},
             "AP_percent_of_full": ap * 5}))
        (run / "student" / "full-mask2former" / "metrics.json").write_text(json.dumps(
            {"train": str(train), "segm": {"AP": 20.0}, "boundary": {"AP": 9.0}}))
        (run / "eval" / "pseudo_box+class.json").write_text(json.dumps({"mIoU": 0.5}))
    table = table2.collect(tmp_path)
    assert [(r["fraction"], r["weak"], r["AP"]) for r in table["rows"]] == [
        (0.01, "box+class", 10.0), (0.1, "box+class", 15.0)]
    hours = table["rows"][1]["hours"]  # 30 images: 3 with masks, 27 with boxes (Table 1 costs)
    assert abs(hours - (3 * 684.8 + 27 * 130.4) / 3600) < 1e-9
    text = table2.markdown(table)
    assert "| 10% | box+class | 0.500 | 15.0 | 7.5 | 75.0 |" in text
    assert "| 100% | masks | – | 20.0 | 9.0 | 100 | 5.7 |" in text  # 30 images x 684.8 s
    other = table2.collect(tmp_path, "condinst")  # pseudo-masks shared, no CondInst student
    assert other["full"] is None and [r["AP"] for r in other["rows"]] == [None, None]


def test_table2_reads_a_full_student_trained_beside_the_columns(synth_dir, tmp_path):
    """`make -j synthetic-table2`: the full student in <root>/full, no stored percentage."""
    import table2

    train = synth_dir / "annotations" / "train.json"
    student = tmp_path / "10pct" / "student" / "point_class-condinst"
    full = tmp_path / "full" / "student" / "full-condinst"
    student.mkdir(parents=True)
    full.mkdir(parents=True)
    (student / "metrics.json").write_text(json.dumps(
        {"train": str(train), "segm": {"AP": 6.0}, "boundary": {"AP": 2.0}}))
    (full / "metrics.json").write_text(json.dumps(
        {"train": str(train), "segm": {"AP": 8.0}, "boundary": {"AP": 4.0}}))
    table = table2.collect(tmp_path, "condinst")
    assert table["full"]["segm"]["AP"] == 8.0
    assert [(r["weak"], r["percent_of_full"]) for r in table["rows"]] == [("point+class", 75.0)]
    assert table2.collect(tmp_path, "mask2former")["rows"] == []
    # another seed's students (train-student --seed 1) beside them, read on their own
    for path, ap in ((student, 3.0), (full, 4.0)):
        seeded = path.with_name(path.name + "-seed1")
        seeded.mkdir()
        (seeded / "metrics.json").write_text(json.dumps(
            {"train": str(train), "segm": {"AP": ap}, "boundary": {"AP": 1.0}}))
    table = table2.collect(tmp_path, "condinst", seed=1)
    assert table["full"]["segm"]["AP"] == 4.0
    assert [(r["AP"], r["percent_of_full"]) for r in table["rows"]] == [(3.0, 75.0)]
    assert table2.collect(tmp_path, "condinst")["rows"][0]["AP"] == 6.0


RANDOM_INIT_TABLE = "### Table 2 with students from a random initialisation"


def test_demo_quotes_the_readme_table2_figures():
    """The demo prints its student's AP beside README Table 2's point+class (10%) and fully
    supervised CondInst students trained as it is, from a random initialisation."""
    import re

    demo = (REPO / "scripts" / "demo.sh").read_text()
    point_ap = re.search(r"^T2_POINT_AP=([\d.]+)$", demo, re.M).group(1)
    full_ap = re.search(r"^T2_FULL_AP=([\d.]+)$", demo, re.M).group(1)
    readme = (REPO / "README.md").read_text()
    readme = readme[readme.index(RANDOM_INIT_TABLE):]
    readme = readme[:readme.index("\n#")]  # to the next heading
    assert "--backbone-checkpoint" not in demo
    assert re.search(rf"^\| 10% \| point\+class \| [\d.]+ \| {re.escape(point_ap)} \|", readme,
                     re.M)
    assert re.search(rf"^\| 100% \| masks \| – \| {re.escape(full_ap)} \|", readme, re.M)
    assert "--student condinst" in demo


def test_export_of_a_continuation_keeps_the_stage_it_continued(synth_dir, tmp_path,
                                                                 monkeypatch):
    """`pretrain_synthetic_foundation.py gdino --init <shipped weights>` then `export`: the
    export overwrites the file the run started from, and the manifest still records that
    earlier stage (its hash is taken before the overwrite). Detector AP is not under test."""
    import pretrain_synthetic_foundation as pretrain

    from pseudolabel.models.checkpoints import save_safetensors
    from pseudolabel.models.grounding_dino import build_detector

    assets = tmp_path / "assets"
    assets.mkdir()
    shipped = assets / "gdino_tiny.safetensors"
    save_safetensors(shipped, build_detector("tiny").model.state_dict())
    (assets / "manifest.json").write_text(json.dumps(
        {"gdino": {"sha256": pretrain._sha256(shipped), "command": "stage 1", "steps": 5}}))
    work = tmp_path / "work" / "gdino"
    work.mkdir(parents=True)
    trained = build_detector("tiny").model.state_dict()
    first = next(k for k, v in trained.items() if v.is_floating_point())
    trained[first] = trained[first] + 1.0  # the continuation moved the weights
    torch.save({"model": trained, "step": 2, "seconds": 1.0,
                "history": [{"loss": 3.0}, {"loss": 2.0}]}, work / "state.pt")
    (work / "config.json").write_text(json.dumps(
        {"steps": 2, "seed": 0, "data_seed": 1001, "init": str(shipped), "warmup": 1,
         "lr": 1e-4}))
    monkeypatch.setattr(pretrain, "ASSETS", assets)
    monkeypatch.setattr(pretrain, "_val", lambda work: synth_dir)
    monkeypatch.setattr("pseudolabel.evaluation.teacher.detector_ap",
                        lambda *a, **k: {"AP": 0.0, "AP50": 0.0})
    monkeypatch.setattr(sys, "argv", ["x", "export", "--work", str(tmp_path / "work")])
    pretrain.main()
    entry = json.loads((assets / "manifest.json").read_text())["gdino"]
    assert entry["sha256"] == pretrain._sha256(shipped) != entry["earlier_stages"][0]["sha256"]
    assert entry["earlier_stages"][0]["command"] == "stage 1"
    assert "--init" in entry["command"] and "--lr 0.0001" in entry["command"]


def test_backbone_pretraining_writes_weights_the_students_load(tmp_path, monkeypatch):
    """`pretrain_synthetic_foundation.py backbone`: a split run writes no weights; the run
    that does the last step writes a ResNet-18 file and its figures, and both students load
    the file strictly (the classifier dropped)."""
    import pretrain_synthetic_foundation as pretrain

    from pseudolabel.pretrain import backbone as bb
    from pseudolabel.stages.train_student import StudentConfig, build_student

    monkeypatch.setattr(bb, "BackbonePretrainConfig",
                        functools.partial(bb.BackbonePretrainConfig, batch_images=3, crop=32))
    monkeypatch.setattr(bb, "crop_accuracy", lambda model, style: 0.5)
    args = ["x", "backbone", "--steps", "2", "--work", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", args + ["--stop-after", "1"])
    pretrain.main()
    out = tmp_path / "backbone"
    assert (out / "state.pt").is_file() and not (out / bb.BACKBONE_FILE).exists()
    monkeypatch.setattr(sys, "argv", args)
    pretrain.main()
    record = json.loads((out / "backbone.json").read_text())
    assert record["config"]["steps"] == 2 and record["figures"]["crop_accuracy_target"] == 0.5
    weights = load_file(out / bb.BACKBONE_FILE)
    for arch in ("condinst", "mask2former"):
        model = build_student(StudentConfig(arch=arch, num_queries=5,
                                            backbone_checkpoint=str(out / bb.BACKBONE_FILE)), 3)
        if arch == "condinst":
            torch.testing.assert_close(model.body.state_dict()["layer4.1.conv2.weight"],
                                       weights["layer4.1.conv2.weight"])
