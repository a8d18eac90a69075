"""The generate stage with random-weight tiny models (mechanics, not quality)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pseudolabel.stages.generate as gen
from pseudolabel.data.coco import load_coco, save_json
from pseudolabel.data.masks import rle_to_mask, xywh_to_xyxy
from pseudolabel.models.grounding_dino import build_detector
from pseudolabel.models.predictor import ZoomSpec
from pseudolabel.stages.generate import GenerateOptions, generate, load_run_teachers
from pseudolabel.stages.weaken import weaken

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def weak_files(synth_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("weak")
    gt = load_coco(synth_dir / "annotations" / "train.json")
    paths = {}
    for setting in ("none", "class", "point+class", "box+class"):
        data, _ = weaken(gt, setting, 0.2, seed=0)
        paths[setting] = out / f"{setting}.json"
        save_json(paths[setting], data)
    return paths


@pytest.fixture(scope="module")
def detector():
    return build_detector("tiny")


def _teachers(setting, weak_path, refine=True):
    cats = load_coco(weak_path).category_ids
    return load_run_teachers(Path("unused"), setting, cats, refine=refine, zero_shot=True,
                             sam_checkpoint=None)


def _generate(setting, weak_files, synth_dir, run_dir, detector=None, **kw):
    opts = GenerateOptions(setting, part_size=4, workers=1, box_threshold=0.0,
                           **{k: kw.pop(k) for k in ("refine", "samrefiner", "zoom") if k in kw})
    return generate(weak_files[setting], synth_dir / "images", run_dir, opts,
                    _teachers(setting, weak_files[setting], opts.refine), detector,
                    detector_sha="random", progress=False, **kw)


def test_box_class_file_keeps_gt_and_prompts_every_box(weak_files, synth_dir, tmp_path):
    summary = _generate("box+class", weak_files, synth_dir, tmp_path)
    out = json.loads(Path(summary["out"]).read_text())
    weak = load_coco(weak_files["box+class"])
    full = {i["id"] for i in weak.images if i["kind"] == "fully_labeled"}
    gt = [a for a in out["annotations"] if a["source"] == "gt"]
    pseudo = [a for a in out["annotations"] if a["source"] == "pseudo"]
    assert {a["image_id"] for a in gt} <= full and len(gt) == summary["gt_masks"]
    prompts = [a for a in weak.annotations if a["image_id"] not in full]
    assert len(pseudo) + summary["empty_dropped"] == len(prompts)
    assert [a["id"] for a in out["annotations"]] == list(range(1, len(out["annotations"]) + 1))
    by_id = {a["id"]: a for a in prompts}
    for a in pseudo:
        m = rle_to_mask(a["segmentation"])
        assert m.any() and a["area"] == m.sum()
        assert a["weak"]["bbox"] == by_id[a["weak"]["id"]]["bbox"]
        assert a["category_id"] == by_id[a["weak"]["id"]]["category_id"]
        assert a["quality"]["teacher"] == "box" and a["quality"]["prompt"] == "box"
        assert 0 <= a["consistency"]["outside_box"] <= 1 and a["consistency"]["class_in_tags"]
    assert out["info"]["pseudolabel"]["setting"] == "box+class"


def test_zoom_decodes_each_box_on_its_crop(weak_files, synth_dir, tmp_path):
    zoom = ZoomSpec(context=2.0, min_side=0.2)
    first = _generate("box+class", weak_files, synth_dir, tmp_path)
    plain = json.loads(Path(first["out"]).read_text())
    summary = _generate("box+class", weak_files, synth_dir, tmp_path, zoom=zoom,
                        out_path=tmp_path / "zoomed.json")
    zoomed = json.loads(Path(summary["out"]).read_text())
    assert plain["info"]["pseudolabel"]["zoom"] is None
    assert zoomed["info"]["pseudolabel"]["zoom"] == {"context": 2.0, "min_side": 0.2}
    assert summary["parts_dir"] != first["parts_dir"]  # its own fingerprint: no mixing
    pseudo = [a for a in zoomed["annotations"] if a["source"] == "pseudo"]
    assert pseudo
    sizes = {i["id"]: (i["height"], i["width"]) for i in zoomed["images"]}
    for a in pseudo:
        box = xywh_to_xyxy([a["weak"]["bbox"]])
        x0, y0, x1, y1 = zoom.windows(box, sizes[a["image_id"]])[0]
        m = rle_to_mask(a["segmentation"])
        assert m[y0:y1, x0:x1].sum() == m.sum()  # nothing outside the box's crop
    masks = {a["weak"]["id"]: a["segmentation"]["counts"] for a in plain["annotations"]
             if a["source"] == "pseudo"}
    assert any(masks.get(a["weak"]["id"]) != a["segmentation"]["counts"] for a in pseudo)


@pytest.mark.parametrize("setting, whole", [("box+class", False), ("point+class", True)])
def test_zoom_skips_the_whole_image_encode_only_when_nothing_uses_it(
        setting, whole, weak_files, synth_dir, tmp_path, detector, monkeypatch):
    from pseudolabel.models.predictor import PreparedImage, PromptedSam

    calls = {"whole": 0, "crops": 0}
    encode = PromptedSam.encode

    def counting(self, images, *args, **kwargs):
        key = "whole" if isinstance(images[0], PreparedImage) else "crops"
        calls[key] += len(images)
        return encode(self, images, *args, **kwargs)

    monkeypatch.setattr(PromptedSam, "encode", counting)
    summary = _generate(setting, weak_files, synth_dir, tmp_path, detector,
                        zoom=ZoomSpec(context=2.0, min_side=0.2))
    weak = load_coco(weak_files[setting])
    weakly = sum(i["kind"] != "fully_labeled" for i in weak.images)
    assert summary["pseudo_masks"] > 0 and calls["crops"] > 0
    assert calls["whole"] == (weakly if whole else 0)  # P-SAM's points need the whole image


def test_samrefiner_refines_the_pseudo_masks(weak_files, synth_dir, tmp_path):
    plain = json.loads(Path(_generate("box+class", weak_files, synth_dir, tmp_path / "a")
                            ["out"]).read_text())
    summary = _generate("box+class", weak_files, synth_dir, tmp_path / "b", samrefiner=True)
    refined = json.loads(Path(summary["out"]).read_text())
    assert refined["info"]["pseudolabel"]["samrefiner"] is True
    pa = {a["weak"]["id"]: a for a in plain["annotations"] if a["source"] == "pseudo"}
    pb = {a["weak"]["id"]: a for a in refined["annotations"] if a["source"] == "pseudo"}
    assert set(pb) <= set(pa) and pb
    assert all("samrefiner_iou" in a["quality"] for a in pb.values())
    assert any(pa[k]["segmentation"] != pb[k]["segmentation"] for k in pb)
    # a different option, a different parts directory: nothing of the plain run is reused
    assert len(list((tmp_path / "b" / "pseudo" / ".parts").iterdir())) == 1


def test_samrefiner_follows_the_zoom(weak_files, synth_dir, tmp_path, monkeypatch):
    import pseudolabel.pseudo_masks as pm

    real, seen = pm.refine_masks, []

    def spy(sam, emb, masks, **kw):
        seen.append((kw.get("zoom"), kw.get("image") is not None and emb is not None))
        return real(sam, emb, masks, **kw)

    monkeypatch.setattr(pm, "refine_masks", spy)
    zoom = ZoomSpec(context=2.0, min_side=0.2)
    summary = _generate("box+class", weak_files, synth_dir, tmp_path, samrefiner=True,
                        zoom=zoom)
    assert summary["pseudo_masks"] > 0
    assert seen and set(seen) == {(zoom, True)}  # CEBox reads the whole image's features


def test_killed_run_resumes_to_identical_bytes(weak_files, synth_dir, tmp_path, monkeypatch):
    whole = _generate("box+class", weak_files, synth_dir, tmp_path / "a")
    real, calls = gen.run_part, []

    def dies_on_third_part(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(gen, "run_part", dies_on_third_part)
    with pytest.raises(KeyboardInterrupt):
        _generate("box+class", weak_files, synth_dir, tmp_path / "b")
    monkeypatch.setattr(gen, "run_part", real)
    parts = list(Path(whole["parts_dir"].replace(str(tmp_path / "a"), str(tmp_path / "b")))
                 .glob("part-*.json"))
    assert len(parts) == 2  # what was finished stays on disk
    resumed = _generate("box+class", weak_files, synth_dir, tmp_path / "b")
    assert resumed["generated_images"] < whole["generated_images"]
    assert Path(resumed["out"]).read_bytes() == Path(whole["out"]).read_bytes()


def test_shards_then_merge_equal_one_run(weak_files, synth_dir, tmp_path):
    whole = _generate("box+class", weak_files, synth_dir, tmp_path / "a")
    for i in range(3):
        s = _generate("box+class", weak_files, synth_dir, tmp_path / "b", shard=(i, 3),
                      merge=False)
        assert "out" not in s
    merged = _generate("box+class", weak_files, synth_dir, tmp_path / "b", only_merge=True)
    assert Path(merged["out"]).read_bytes() == Path(whole["out"]).read_bytes()


def test_merge_names_missing_parts(weak_files, synth_dir, tmp_path):
    _generate("box+class", weak_files, synth_dir, tmp_path, shard=(0, 2), merge=False)
    with pytest.raises(ValueError, match="are missing .* run the remaining shards"):
        _generate("box+class", weak_files, synth_dir, tmp_path, only_merge=True)


def test_point_class_refines_with_detector_boxes(weak_files, synth_dir, tmp_path, detector):
    summary = _generate("point+class", weak_files, synth_dir, tmp_path, detector)
    pseudo = [a for a in json.loads(Path(summary["out"]).read_text())["annotations"]
              if a["source"] == "pseudo"]
    assert pseudo
    for a in pseudo:
        assert a["quality"]["teacher"] == "boxpoint-cls" and "refined_box" in a["weak"]
        assert isinstance(a["consistency"]["point_in_mask"], bool)
    plain = _generate("point+class", weak_files, synth_dir, tmp_path / "plain", refine=False)
    for a in json.loads(Path(plain["out"]).read_text())["annotations"]:
        if a["source"] == "pseudo":
            assert a["quality"]["teacher"] == "point-cls" and "refined_box" not in a["weak"]


@pytest.mark.parametrize("setting", ["none", "class"])
def test_detector_settings(setting, weak_files, synth_dir, tmp_path, detector):
    summary = _generate(setting, weak_files, synth_dir, tmp_path, detector)
    out = json.loads(Path(summary["out"]).read_text())
    weak = load_coco(weak_files[setting])
    tags = {i["id"]: i.get("tags") for i in weak.images}
    pseudo = [a for a in out["annotations"] if a["source"] == "pseudo"]
    assert pseudo and all("detector_box" in a["weak"] and "id" not in a["weak"] for a in pseudo)
    if setting == "class":  # Grounding DINO was prompted with the image's tags only
        assert all(a["category_id"] in tags[a["image_id"]] for a in pseudo)
        assert summary["class_not_in_tags"] == 0


def test_missing_teacher_and_wrong_weak_file(weak_files, synth_dir, tmp_path):
    cats = load_coco(weak_files["box+class"]).category_ids
    with pytest.raises(ValueError, match="teacher 'box' not found.*teacher-finetune"):
        load_run_teachers(tmp_path, "box+class", cats)
    opts = GenerateOptions("box+class")
    with pytest.raises(ValueError, match="needs a box\\+class weak file"):
        generate(weak_files["point+class"], synth_dir / "images", tmp_path, opts,
                 _teachers("box+class", weak_files["box+class"]), progress=False)


def test_two_torchrun_processes_write_the_same_file(weak_files, synth_dir, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"data: {{train: {synth_dir}/annotations/train.json, val: {synth_dir}/annotations/"
        f"val.json, images: {synth_dir}/images}}\nrun_dir: {tmp_path / 'run'}\n"
        "models: {sam_checkpoint: null, detector_checkpoint: null}\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["generate", "--weak", "box+class", "--weak-file", str(weak_files["box+class"]),
              "--zero-shot", "--part-size", "4", "--config", str(cfg)]
    one = subprocess.run([sys.executable, "-m", "pseudolabel", *common, "--out",
                          str(tmp_path / "one.json")], capture_output=True, text=True, env=env,
                         timeout=300, cwd=ROOT)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29534", "-m", "pseudolabel", *common,
                          "--run-dir", str(tmp_path / "run2"), "--out",
                          str(tmp_path / "two.json")],
                         capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert two.returncode == 0, two.stderr[-3000:]
    assert (tmp_path / "one.json").read_bytes() == (tmp_path / "two.json").read_bytes()
    assert two.stdout.count("wrote ") == 1


def test_weak_file_from_another_split_is_refused(weak_files, synth_dir, tmp_path):
    (tmp_path / "split.json").write_text(json.dumps({"fully_labeled": [1, 2, 3],
                                                     "fraction": 0.1, "seed": 5}))
    opts = GenerateOptions("box+class")
    teachers = _teachers("box+class", weak_files["box+class"])
    with pytest.raises(ValueError, match="not the 3 the teachers .*fraction 0.1, seed 5"):
        generate(weak_files["box+class"], synth_dir / "images", tmp_path, opts, teachers,
                 progress=False)


class ScriptedDetector:
    """Returns, for each image, the GT boxes of the train set (class and score 0.9) and one
    confident box of a class absent from the image, recording the prompts it was given."""

    def __init__(self, gt):
        self.gt, self.calls = gt, []

    def detect(self, images, category_ids, names, *, image_categories=None, box_threshold=0.3,
               nms_iou=0.9, batch_size=None):
        from pseudolabel.data.instances import Instances
        from pseudolabel.data.masks import xywh_to_xyxy

        self.calls.append(image_categories)
        out = []
        for image in images:
            img = next(i for i in self.gt.images
                       if (i["height"], i["width"]) == image.shape[:2]
                       and np.array_equal(image, self._image(i)))
            anns = self.gt.anns_by_image[img["id"]]
            boxes = xywh_to_xyxy([a["bbox"] for a in anns])
            labels = np.array([a["category_id"] for a in anns])
            absent = next(c for c in category_ids if c not in set(labels.tolist()))
            boxes = np.concatenate([boxes, [[0, 0, image.shape[1], image.shape[0]]]])
            labels = np.append(labels, absent)
            out.append(Instances(image.shape[:2], boxes.astype(np.float32), labels,
                                 scores=np.full(len(labels), 0.9, np.float32)))
        return out

    def _image(self, img):
        from pseudolabel.data.images import load_image

        return load_image(self.root / img["file_name"])


def test_point_class_takes_matching_detector_boxes(weak_files, synth_dir, tmp_path):
    gt = load_coco(synth_dir / "annotations" / "train.json")
    det = ScriptedDetector(gt)
    det.root = synth_dir / "images"
    summary = _generate("point+class", weak_files, synth_dir, tmp_path, det)
    pseudo = [a for a in json.loads(Path(summary["out"]).read_text())["annotations"]
              if a["source"] == "pseudo"]
    assert pseudo
    # each instance's own GT box is a valid match (its class, contains its point), so the
    # assignment gives every instance a valid detector box: a same-class GT box holding its
    # point (overlapping same-class neighbours may swap), never the absent-class full box
    for a in pseudo:
        x, y = a["weak"]["point"]
        bx, by, bw, bh = a["weak"]["refined_box"]
        assert bx <= x <= bx + bw and by <= y <= by + bh
        same = [g["bbox"] for g in gt.anns_by_image[a["image_id"]]
                if g["category_id"] == a["category_id"]]
        assert any(np.allclose(a["weak"]["refined_box"], b, atol=1e-3) for b in same)
    weak = load_coco(weak_files["point+class"])
    assert all(c is not None for call in det.calls for c in call)  # prompted with tags
    assert det.calls[0][0] == weak.image_by_id[sorted(
        i["id"] for i in weak.images if i["kind"] == "point+class")[0]]["tags"]


# -- several settings in one pass, mixed-kind files -------------------------------------------
def _copy_weak(weak_files, run_dir):
    (run_dir / "weak").mkdir(parents=True, exist_ok=True)
    for s, p in weak_files.items():
        (run_dir / "weak" / f"{s}.json").write_bytes(p.read_bytes())


def _all_teachers(weak_files, kinds=("none", "class", "point+class", "box+class")):
    cats = load_coco(weak_files["none"]).category_ids
    return load_run_teachers(Path("unused"), kinds, cats, zero_shot=True, sam_checkpoint=None)


def test_weak_all_writes_the_files_of_four_separate_runs(weak_files, synth_dir, tmp_path,
                                                         detector, monkeypatch):
    from pseudolabel.stages.generate import generate_many, jobs_for

    encodes = []
    teachers = _all_teachers(weak_files)
    real_encode = type(teachers.encoder).encode
    monkeypatch.setattr(type(teachers.encoder), "encode",
                        lambda self, images: encodes.append(len(images))
                        or real_encode(self, images))
    _copy_weak(weak_files, tmp_path / "all")
    opts = GenerateOptions("all", part_size=4, workers=1, box_threshold=0.0)
    jobs = jobs_for("all", tmp_path / "all", None, opts, teachers, "random", None)
    together = generate_many(jobs, synth_dir / "images", teachers, detector,
                             detector_sha="random", progress=False)
    weak_images = sum(i["kind"] != "fully_labeled" for i in load_coco(weak_files["none"]).images)
    assert sum(encodes) == weak_images  # each image encoded once for the four settings
    for summary in together:
        setting = summary["setting"]
        copies = {s: tmp_path / "all" / "weak" / f"{s}.json" for s in weak_files}
        alone = _generate(setting, copies, synth_dir, tmp_path / setting,
                          detector if setting != "box+class" else None)
        assert Path(summary["out"]).read_bytes() == Path(alone["out"]).read_bytes(), setting


def test_mixed_kind_file_gives_each_image_its_own_settings_masks(weak_files, synth_dir,
                                                                  tmp_path, detector):
    """A dataset labelled over time: some images tagged, some pointed, some boxed."""
    settings = ("none", "class", "point+class", "box+class")
    weak = {s: load_coco(p) for s, p in weak_files.items()}
    mixed = weak["none"].to_dict()
    kind_of, images, anns = {}, [], []
    for k, img in enumerate(mixed["images"]):
        kind = "fully_labeled" if img["kind"] == "fully_labeled" else settings[k % 4]
        source = weak["box+class" if kind == "fully_labeled" else kind]
        images.append(source.image_by_id[img["id"]])
        anns += source.anns_by_image[img["id"]]
        kind_of[img["id"]] = kind
    mixed.update(images=images, annotations=anns)
    assert len(set(kind_of.values())) == 5
    path = tmp_path / "mixed.json"
    save_json(path, mixed)
    opts = GenerateOptions("mixed", part_size=4, workers=1, box_threshold=0.0)
    out = generate(path, synth_dir / "images", tmp_path / "run", opts, _all_teachers(weak_files),
                   detector, detector_sha="random", progress=False)
    assert out["out"].endswith("mixed.json")
    got = json.loads(Path(out["out"]).read_text())
    assert got["info"]["pseudolabel"]["kinds"] == sorted(settings)

    def per_image(annotations):
        keyed: dict = {}
        for a in annotations:
            if a["source"] == "pseudo":
                keyed.setdefault(a["image_id"], []).append(
                    {k: v for k, v in a.items() if k != "id"})
        return keyed

    mine = per_image(got["annotations"])
    for setting in settings:
        alone = _generate(setting, weak_files, synth_dir, tmp_path / setting,
                          detector if setting != "box+class" else None)
        theirs = per_image(json.loads(Path(alone["out"]).read_text())["annotations"])
        for image_id, kind in kind_of.items():
            if kind == setting:
                assert mine.get(image_id) == theirs.get(image_id), (setting, image_id)


@pytest.mark.parametrize("weak, message", [
    ("points", "expected all, mixed, or settings"),
    ("mixed", "takes one weak file"),
])
def test_bad_weak_values_are_named(weak, message):
    from pseudolabel.stages.generate import parse_settings

    with pytest.raises(ValueError, match=message):
        parse_settings(weak)
