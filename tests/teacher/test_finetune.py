"""Teacher fine-tuning on the synthetic data with a random-weight tiny SAM (fast)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pseudolabel.models.checkpoints import load_state_dict
from pseudolabel.stages.teacher_finetune import finetune_teachers
from pseudolabel.teacher.model import load_teacher, trainable
from pseudolabel.teacher.train import FinetuneConfig

CFG = FinetuneConfig(steps=4, batch=6, lr=1e-3, lr_final=1e-4, num_points=256)


def _run(synth_dir, run_dir, **kw):
    args = dict(gt_path=synth_dir / "annotations" / "train.json",
                image_root=synth_dir / "images", run_dir=run_dir, fraction=0.2,
                sam_model="tiny", sam_checkpoint=None, cfg=CFG, progress=False)
    args.update(kw)
    return finetune_teachers(**args)


def test_killed_run_resumes_to_the_same_weights(synth_dir, tmp_path):
    _run(synth_dir, tmp_path / "a", teachers=("point-cls",))
    stopped = _run(synth_dir, tmp_path / "b", teachers=("point-cls",), stop_after=2)
    assert stopped["teachers"]["point-cls"]["status"] == "stopped at step 2"
    _run(synth_dir, tmp_path / "b", teachers=("point-cls",))
    a = load_state_dict(tmp_path / "a/teacher/point-cls/teacher.safetensors")
    b = load_state_dict(tmp_path / "b/teacher/point-cls/teacher.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)


def test_only_decoder_and_prompt_parts_train(synth_dir, tmp_path):
    from pseudolabel.models.sam import build_sam

    summary = _run(synth_dir, tmp_path, teachers=("box", "boxpoint-cls"))
    assert summary["fully_labeled"] == round(0.2 * 30)
    base = build_sam("tiny")
    for name in ("box", "boxpoint-cls"):
        teacher, meta = load_teacher(tmp_path / "teacher" / name / "teacher")
        assert meta["steps"] == CFG.steps and meta["split_hash"] == summary["split"]["hash"]
        for k, v in base.image_encoder.state_dict().items():   # frozen encoder
            assert torch.equal(v, teacher.sam.image_encoder.state_dict()[k]), k
        changed = [k for k, v in base.mask_decoder.state_dict().items()
                   if not torch.equal(v, teacher.sam.mask_decoder.state_dict()[k])]
        assert changed  # the decoder learnt
        if meta["class_aware"]:  # the locked prompt encoder stays SAM's
            for k, v in base.prompt_encoder.state_dict().items():
                assert torch.equal(v, teacher.class_encoder.locked.state_dict()[k]), k
            assert teacher.class_embeddings.shape == (9, 64)
            assert not torch.all(trainable(teacher)["class_encoder"].g_zero.weight == 0)


def test_split_is_stored_and_guarded(synth_dir, tmp_path):
    _run(synth_dir, tmp_path, teachers=("box",), cfg=FinetuneConfig(steps=1, batch=2,
                                                                    num_points=64))
    split = json.loads((tmp_path / "split.json").read_text())
    from pseudolabel.stages.weaken import select_fully_labeled
    ids = [i + 1 for i in range(30)]
    assert split["fully_labeled"] == select_fully_labeled(ids, 0.2, 0)
    with pytest.raises(ValueError, match="use another --run-dir"):
        _run(synth_dir, tmp_path, teachers=("box",), fraction=0.5)


def test_no_class_aware_ablation_names(synth_dir, tmp_path):
    summary = _run(synth_dir, tmp_path, teachers=("point-cls",), class_aware=False,
                   cfg=FinetuneConfig(steps=1, batch=2, num_points=64))
    assert list(summary["teachers"]) == ["point"]
    _, meta = load_teacher(tmp_path / "teacher" / "point" / "teacher")
    assert meta["class_aware"] is False and meta["prompt"] == "point"


def test_unknown_teacher(synth_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown teachers \\['mask'\\]"):
        _run(synth_dir, tmp_path, teachers=("mask",))


def test_two_torchrun_processes_train_one_teacher(synth_dir, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"data: {{train: {synth_dir}/annotations/train.json, val: {synth_dir}/annotations/"
        f"val.json, images: {synth_dir}/images}}\nrun_dir: {tmp_path / 'run'}\n"
        "models: {sam_checkpoint: null}\nteacher: {steps: 2, batch: 4, num_points: 64}\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "29533", "-m", "pseudolabel", "teacher-finetune", "--fraction",
           "0.2", "--teachers", "box-cls", "--config", str(cfg)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "run/teacher/box-cls/teacher.safetensors").is_file()
    assert out.stdout.count("split ") == 1  # only rank 0 reports


def test_resume_with_other_settings_is_refused(synth_dir, tmp_path):
    _run(synth_dir, tmp_path, teachers=("box",), stop_after=1)
    other = FinetuneConfig(steps=4, batch=6, lr=5e-4, lr_final=1e-4, num_points=256)
    with pytest.raises(ValueError, match="trained with other settings \\(config differ\\)"):
        _run(synth_dir, tmp_path, teachers=("box",), cfg=other)
    _run(synth_dir, tmp_path, teachers=("box",))  # the original settings still resume


def test_class_path_new_layers_take_their_own_lr_factor():
    from pseudolabel.models.sam import build_sam
    from pseudolabel.teacher.model import build_teacher, on_shared_encoder, trainable
    from pseudolabel.teacher.train import lr_at, param_groups

    base = build_sam("tiny")
    aware = trainable(build_teacher(on_shared_encoder(base), True, torch.randn(3, 32)))
    cfg = FinetuneConfig(steps=10, lr=1e-4, class_lr_factor=30.0)
    rest, path = param_groups(aware, cfg)
    enc = aware.class_encoder
    new_ids = {id(p) for m in (enc.text_proj, enc.g_zero) for p in m.parameters()}
    assert {id(p) for p in path["params"]} == new_ids  # G_zero and text_proj only
    copy_ids = {id(p) for p in enc.trainable.parameters()}
    assert copy_ids <= {id(p) for p in rest["params"]}  # the prompt copy trains at the lr
    assert not new_ids & {id(p) for p in rest["params"]}
    assert path["lr_factor"] * lr_at(0, cfg) == pytest.approx(3e-3)
    plain = trainable(build_teacher(on_shared_encoder(base), False))
    assert len(param_groups(plain, cfg)) == 1  # no class path, one group
