"""Device, precision and rank: the runtime object and where every model of every stage runs."""

import json

import pytest
import torch
from typer.testing import CliRunner

from pseudolabel.cli import app
from pseudolabel.data.coco import load_coco, save_json
from pseudolabel.runtime import Runtime, resolve_device, setup_runtime
from pseudolabel.stages.weaken import weaken
from tests.device_sim import DeviceMismatch, ModuleDeviceCheck, SimulatedDevice, on_device

runner = CliRunner()
MODEL_COMMANDS = ["teacher-finetune", "generate", "train-student", "evaluate", "noise",
                  "refine", "refine-adapt"]


@pytest.mark.parametrize("spec, expected", [
    ("cpu", "cpu"),
    ("auto", "cuda:0" if torch.cuda.is_available() else "cpu"),  # no GPU here: cpu
    ("CPU", "cpu"),                                                 # case-insensitive
])
def test_resolve_device(spec, expected):
    assert str(resolve_device(spec)) == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
@pytest.mark.parametrize("spec", ["cuda", "cuda:1"])
def test_cuda_without_cuda_names_the_flag(spec):
    with pytest.raises(ValueError, match=f"--device {spec}: CUDA is not available"):
        resolve_device(spec)


@pytest.mark.parametrize("spec", ["gpu", "cuda:x"])
def test_unknown_device_is_an_error(spec):
    with pytest.raises(ValueError, match="--device"):
        resolve_device(spec)


def test_flags_override_the_config_block_and_bad_precision_fails():
    rt = setup_runtime(None, "bf16", {"device": "cpu", "precision": "fp16"})
    assert rt == Runtime(torch.device("cpu"), "bf16", 0, 1)
    assert setup_runtime(None, None, {"precision": "fp16"}).precision == "fp16"
    with pytest.raises(ValueError, match="--precision 'fp8'"):
        setup_runtime("cpu", "fp8")


def test_autocast_and_scaler_follow_the_precision():
    x = torch.randn(4, 8)
    w = torch.randn(8, 8)
    with Runtime(precision="bf16").autocast():
        assert (x @ w).dtype == torch.bfloat16
    with Runtime().autocast():
        assert (x @ w).dtype == torch.float32
    assert Runtime(precision="fp16").grad_scaler().is_enabled()
    assert not Runtime(precision="bf16").grad_scaler().is_enabled()


@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_every_model_command_takes_device_and_precision(command):
    out = runner.invoke(app, [command, "--help"], terminal_width=200)
    assert out.exit_code == 0
    assert "--device" in out.output and "--precision" in out.output
    assert "cuda:$LOCAL_RANK" in out.output and "bf16" in out.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_cli_device_cuda_without_cuda_fails_naming_the_flag(tmp_path):
    out = runner.invoke(app, ["evaluate", "--detector", "default", "--device", "cuda"])
    assert out.exit_code == 2
    assert "--device cuda: CUDA is not available" in out.output


def test_config_runtime_block_rejects_unknown_keys(tmp_path):
    from pseudolabel.config import load_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {train: a, val: b, images: c}\nruntime: {device: cpu, gpus: 2}\n")
    with pytest.raises(ValueError, match="runtime.gpus: unknown key"):
        load_config(cfg)


# -- every stage's models on the selected device ----------------------------------------------
DEVICE = Runtime(device=torch.device("meta"))


def test_the_simulated_device_catches_a_model_left_on_the_host():
    """The check itself: what CUDA refuses, the simulation refuses."""
    model = torch.nn.Linear(3, 2)
    with SimulatedDevice():
        x = torch.randn(1, 3).to(DEVICE.device)
        with pytest.raises(DeviceMismatch):
            model(x)  # weights on the host, input on the device
        model.to(DEVICE.device)
        assert on_device(model(x)) and on_device(model.weight)
        with pytest.raises(DeviceMismatch, match="host generator"):
            torch.rand(3, generator=torch.Generator(), device=DEVICE.device)
        with pytest.raises(RuntimeError):
            model(x).detach().numpy()  # results leave the device with .cpu() first
        assert model(x).detach().cpu().numpy().shape == (1, 2)


@pytest.fixture(scope="module")
def small_weak(synth_dir, tmp_path_factory):
    """Weak files of every setting over the same 3 weakly labelled images."""
    out = tmp_path_factory.mktemp("weak-sim")
    gt = load_coco(synth_dir / "annotations" / "train.json")
    paths = {}
    for setting in ("none", "class", "point+class", "box+class"):
        data, _ = weaken(gt, setting, 0.2, seed=0)
        weak_ids = [i["id"] for i in data["images"] if i["kind"] == setting][:3]
        full_ids = [i["id"] for i in data["images"] if i["kind"] == "fully_labeled"][:2]
        keep = set(weak_ids + full_ids)
        data["images"] = [i for i in data["images"] if i["id"] in keep]
        data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
        paths[setting] = out / f"{setting}.json"
        save_json(paths[setting], data)
    return paths


# load_state_dict skips copying into parameters that report ``meta`` (a simulation artefact:
# on a GPU the weights are copied), so the simulated runs compute with the initial weights
SKIPPED_LOAD = "ignore:.*copying from a non-meta parameter:UserWarning"


def _run_on_device(fn):
    """Run ``fn`` on the simulated device; every module call must be on it."""
    with SimulatedDevice() as mode, ModuleDeviceCheck() as check:
        result = fn()
    assert not check.bad, sorted(set(check.bad))[:10]
    assert check.modules > 0 and mode.ops > 100  # the work ran, and ran there
    return result


def test_generate_runs_every_model_on_the_device(small_weak, synth_dir, tmp_path):
    from pseudolabel.models.grounding_dino import build_detector
    from pseudolabel.stages.generate import (
        GenerateOptions,
        generate_many,
        jobs_for,
        load_run_teachers,
    )

    def run():
        teachers = load_run_teachers(tmp_path, ("none", "class", "point+class", "box+class"),
                                     load_coco(small_weak["none"]).category_ids,
                                     zero_shot=True, sam_checkpoint=None, runtime=DEVICE)
        detector = build_detector("tiny", runtime=DEVICE)
        for model in (teachers.encoder.sam, detector.model):
            assert all(on_device(p) for p in model.parameters())
        (tmp_path / "weak").mkdir(exist_ok=True)
        for s, p in small_weak.items():
            (tmp_path / "weak" / f"{s}.json").write_bytes(p.read_bytes())
        opts = GenerateOptions("all", zero_shot=True, part_size=2, workers=1,
                               box_threshold=0.0)
        jobs = jobs_for("all", tmp_path, None, opts, teachers, "random", None)
        return generate_many(jobs, synth_dir / "images", teachers, detector,
                             detector_sha="random", progress=False)

    summaries = _run_on_device(run)
    assert [s["setting"] for s in summaries] == ["none", "class", "point+class", "box+class"]
    assert all(s["pseudo_masks"] > 0 for s in summaries)


def test_teacher_finetune_runs_on_the_device(synth_dir, tmp_path):
    from pseudolabel.stages.teacher_finetune import finetune_teachers
    from pseudolabel.teacher.train import FinetuneConfig

    summary = _run_on_device(lambda: finetune_teachers(
        gt_path=synth_dir / "annotations" / "train.json", image_root=synth_dir / "images",
        run_dir=tmp_path, fraction=0.1, teachers=("box", "point-cls"), sam_checkpoint=None,
        cfg=FinetuneConfig(steps=2, batch=4, num_points=64), progress=False,
        runtime=DEVICE))
    assert all(r["status"] == "done" for r in summary["teachers"].values())


@pytest.mark.filterwarnings(SKIPPED_LOAD)
@pytest.mark.parametrize("arch", ["condinst", "mask2former"])
def test_student_trains_and_predicts_on_the_device(arch, synth_dir, tmp_path):
    from pseudolabel.stages.train_student import StudentConfig, evaluate_student, train_student

    cfg = StudentConfig(arch=arch, steps=1, batch=2, size=64, save_every=1, num_queries=5,
                        num_points=64)

    def run():
        train_student(synth_dir / "annotations" / "train.json", synth_dir / "images",
                      tmp_path, cfg, progress=False, runtime=DEVICE)
        val = load_coco(synth_dir / "annotations" / "val.json").to_dict()
        val["images"] = val["images"][:1]
        save_json(tmp_path / "val1.json", val)
        return evaluate_student(tmp_path, tmp_path / "val1.json", synth_dir / "images",
                                progress=False, runtime=DEVICE)

    metrics = _run_on_device(run)
    assert "segm" in metrics


@pytest.mark.filterwarnings(SKIPPED_LOAD)
def test_refine_adapt_wan_and_evaluation_run_on_the_device(synth_dir, tmp_path):
    from pseudolabel.models.predictor import ZoomSpec
    from pseudolabel.stages.model_eval import evaluate_detector, evaluate_teacher
    from pseudolabel.stages.noise import wan_file
    from pseudolabel.stages.refine import adapt_iou, load_refiner, refine_coco

    val = load_coco(synth_dir / "annotations" / "val.json").to_dict()
    val["images"] = val["images"][:2]
    val["annotations"] = [a for a in val["annotations"]
                          if a["image_id"] in {i["id"] for i in val["images"]}]
    gt = tmp_path / "val2.json"
    save_json(gt, val)
    images = synth_dir / "images"

    def run():
        sam = load_refiner("tiny", None, runtime=DEVICE)
        refine_coco(gt, images, tmp_path / "refined.json", sam, progress=False)
        refine_coco(gt, images, tmp_path / "refined-zoom.json", sam, zoom=ZoomSpec(3.0),
                    progress=False)  # points, CEBox and the Gaussian mask on each crop
        adapt_iou(gt, images, tmp_path / "adapter.safetensors", sam, progress=False)
        wan_file(gt, images, tmp_path / "wan.json", "medium", checkpoint=None,
                 evaluate=False, progress=False, runtime=DEVICE)
        evaluate_teacher("default", "tiny_hr", gt, images, runtime=DEVICE)
        evaluate_detector("tiny", None, gt, images, runtime=DEVICE)

    _run_on_device(run)
    assert json.loads((tmp_path / "wan.json").read_text())["annotations"]


# -- precision ---------------------------------------------------------------------------------
def test_bf16_generate_agrees_with_fp32(synth_dir, tmp_path):
    """bf16 autocast (the CPU shares this path with CUDA) vs fp32 on the shipped tiny SAM:
    pseudo-mask mIoU within 0.01 of fp32's against GT, and >= 95% of masks at IoU >= 0.9
    with their fp32 twins."""
    from pseudolabel.evaluation.pseudo import evaluate_pseudo, twin_agreement
    from pseudolabel.stages.generate import GenerateOptions, generate, load_run_teachers

    gt_path = synth_dir / "annotations" / "train.json"
    gt = load_coco(gt_path)
    data, _ = weaken(gt, "box+class", 0.1, seed=0)
    weak_path = tmp_path / "box.json"
    save_json(weak_path, data)
    files = {}
    for precision in ("fp32", "bf16"):
        rt = Runtime(precision=precision)
        teachers = load_run_teachers(tmp_path, "box+class", gt.category_ids, zero_shot=True,
                                     runtime=rt)
        files[precision] = generate(weak_path, synth_dir / "images", tmp_path / precision,
                                    GenerateOptions("box+class", zero_shot=True, workers=1),
                                    teachers, progress=False)["out"]
    scores = {p: evaluate_pseudo(load_coco(f), gt)["mIoU"] for p, f in files.items()}
    assert scores["fp32"] > 0.3 and abs(scores["bf16"] - scores["fp32"]) <= 0.01, scores
    agree = twin_agreement(load_coco(files["fp32"]), load_coco(files["bf16"]))
    assert agree["pairs"] > 50 and agree["share_iou_0.9"] >= 0.95, agree
