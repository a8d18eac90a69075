from pathlib import Path

import pytest

from pseudolabel.config import load_config

REPO = Path(__file__).resolve().parents[1]


def test_default_is_the_synthetic_world_and_configs_file_matches():
    default = load_config(None)
    spelled = load_config(REPO / "configs" / "synthetic.yaml")
    assert default.synthetic == spelled.synthetic and default.data == spelled.data
    assert default.run_dir == spelled.run_dir and default.models == spelled.models
    assert default.generate == spelled.generate and default.generate.zoom().context == 3.0


def test_real_data_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {train: t.json, val: v.json, images: imgs}\nrun_dir: r\n")
    cfg = load_config(path)
    assert cfg.synthetic is None and cfg.data.images == Path("imgs") and cfg.run_dir == Path("r")
    assert not cfg.generate.zoom().on  # box prompts on the whole image, as seed 001
    assert cfg.generate.zoom(2.5).context == 2.5  # --zoom-context overrides


@pytest.mark.parametrize("text, message", [
    ("data: {train: t.json}", "needs keys \\['val', 'images'\\]"),
    ("models: {sam: tiny, colour: red}", "models.colour: unknown key"),
    ("rundir: runs/x", "rundir: unknown top-level key"),                # a typo, not ignored
    ("teacher: {steps: -5}", "teacher.steps: expected a positive integer, got -5"),
    ("teacher: {steps: twenty}", "teacher.steps: expected an integer, got 'twenty'"),
    ("teacher: {lr: .nan}", "teacher.lr: expected a number"),
    ("teacher: {drop_at: 1.5}", "teacher.drop_at: expected a number in \\(0, 1\\]"),
    ("student: {batch: 0}", "student.batch: expected a positive integer"),
    ("student: {arch: yolo}", "student.arch: expected one of mask2former, condinst"),
    ("student: {scale_min: 2.0, scale_max: 1.0}", "student.scale_min: 2.0 is above"),
    ("runtime: {device: gpu}", "runtime.device: expected auto, cpu, cuda or cuda:N"),
    ("runtime: {precision: fp8}", "runtime.precision: expected one of fp32"),
    ("runtime: {gpus: 2}", "runtime.gpus: unknown key"),
    ("generate: {zoom_context: -1}", "generate.zoom_context: expected a number >= 0"),
    ("generate: {zoom_min_side: 0}", "generate.zoom_min_side: expected a number in"),
    ("generate: {zoom: 3}", "generate.zoom: unknown key"),
    ("data: {synthetic: {root: r, params: {train: -1}}}", "params.train: expected an integer"),
    ("data: {synthetic: {root: r, params: {style: x}}}", "style: expected one of target"),
    ("data: {train: t, val: v, images: i, imgs: j}", "data.imgs: unknown key"),
    ("- a list", "mapping"),
    ("data: [unclosed", "not valid YAML"),
])
def test_bad_configs(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        load_config(path)
    assert str(path) in str(err.value)  # the file is named
    with pytest.raises(ValueError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_coco_config_carries_the_paper_values_and_names_missing_files():
    from pseudolabel.config import check_paths

    cfg = load_config(REPO / "configs" / "coco.yaml")
    assert not cfg.generate.zoom().on
    t = cfg.teacher
    assert (t.steps, t.batch, t.lr, t.lr_final, t.num_points) == (36874, 32, 1e-5, 1e-6, 12544)
    from pseudolabel.teacher.train import FinetuneConfig, lr_at

    f = FinetuneConfig(**t.__dict__)
    assert lr_at(27654, f) == 1e-5 and lr_at(27655, f) == 1e-6  # seed 001 §4.1
    assert cfg.models.sam == "vit_h" and cfg.models.detector.endswith("grounding-dino-base")
    problems = check_paths(cfg)
    named = " ".join(problems)
    backbone = cfg.raw["student"]["backbone_checkpoint"]
    for path in (cfg.data.train, cfg.data.val, cfg.data.images, cfg.models.sam_checkpoint,
                 cfg.models.detector, backbone):  # the detector folder and the backbone too
        assert str(path) in named
    assert all(" not found: " in p for p in problems)
