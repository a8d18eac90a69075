"""Long runs against bad luck: failed images recorded and retried on request, training states
that would run code refused, one process per stage folder, one history line per step."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pseudolabel.lock import StageBusy, StageLock
from pseudolabel.pretrain.loop import train


class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/pseudolabel-pwned",))


def test_a_state_file_that_would_run_code_is_refused_with_one_message(tmp_path):
    path = tmp_path / "state.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": RunsCode()}, f)
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError) as err:
        train(model, opt, lambda s: {"loss": 0.0}, steps=2, state_path=path, progress=False)
    message = str(err.value)
    assert message.startswith(f"{path}: refused: this checkpoint's pickle would run code")
    assert "weights_only=False" not in message  # torch's advice to load it anyway is gone
    assert not Path("/tmp/pseudolabel-pwned").exists()


def _toy_training(tmp_path, steps, die_at=None):
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step_fn(step):
        if step == die_at:
            raise KeyboardInterrupt  # killed mid-run, after the checkpoint of step 4
        torch.manual_seed(step)
        loss = model(torch.randn(4, 2)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": float(loss.detach())}

    return train(model, opt, step_fn, steps=steps, state_path=tmp_path / "state.pt", every=2,
                 progress=False)


def test_history_holds_one_line_per_step_after_resumes(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _toy_training(tmp_path, 8, die_at=5)  # steps 0-4 logged, checkpoint at step 4
    lines = (tmp_path / "history.jsonl").read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in lines] == [0, 1, 2, 3, 4]
    _toy_training(tmp_path, 8)  # resumes at step 4: step 4 runs again
    lines = (tmp_path / "history.jsonl").read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in lines] == list(range(8))


def test_a_second_process_in_a_stage_folder_is_refused_naming_the_holder(tmp_path):
    code = (f"import sys, time; sys.path.insert(0, {str(Path.cwd())!r})\n"
            "from pseudolabel.lock import StageLock\n"
            f"with StageLock({str(tmp_path)!r}, 'train'):\n"
            "    print('held', flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StageBusy, match=f"in use by pid {holder.pid}"):
            with StageLock(tmp_path, "train"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with StageLock(tmp_path, "train") as lock:  # the holder died: its stale lock is taken
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not (tmp_path / ".train.lock").exists()


def test_failed_images_are_recorded_and_retried_only_when_asked(synth_dir, tmp_path):
    from pseudolabel.data.coco import load_coco, save_json
    from pseudolabel.stages.generate import GenerateOptions, generate, load_run_teachers
    from pseudolabel.stages.weaken import weaken

    gt = load_coco(synth_dir / "annotations" / "train.json")
    data, _ = weaken(gt, "box+class", 0.2, seed=0)
    weak_path = tmp_path / "weak.json"
    save_json(weak_path, data)
    images = tmp_path / "images"
    (images / "train").mkdir(parents=True)
    for img in data["images"]:
        (images / img["file_name"]).write_bytes((synth_dir / "images" /
                                                 img["file_name"]).read_bytes())
    victim = next(i for i in data["images"] if i["kind"] == "box+class")
    good = (images / victim["file_name"]).read_bytes()
    (images / victim["file_name"]).write_bytes(good[:100])  # truncated
    teachers = load_run_teachers(tmp_path, "box+class", gt.category_ids, zero_shot=True,
                                 sam_checkpoint=None)

    def run(**kw):
        opts = GenerateOptions("box+class", zero_shot=True, part_size=4, workers=1, **kw)
        return generate(weak_path, images, tmp_path / "run", opts, teachers, progress=False)

    first = run()  # the run goes on past the truncated image
    assert [f["image_id"] for f in first["failed"]] == [victim["id"]]
    assert "truncated" in first["failed"][0]["reason"]
    out = json.loads(Path(first["out"]).read_text())
    assert victim["id"] not in {i["id"] for i in out["images"]}
    assert out["info"]["pseudolabel"]["failed_images"] == first["failed"]
    (images / victim["file_name"]).write_bytes(good)  # the file is repaired
    again = run()
    assert again["generated_images"] == 0 and len(again["failed"]) == 1  # not retried
    retried = run(retry_failed=True)
    assert retried["generated_images"] == 4 and retried["failed"] == []  # its part only
    out = json.loads(Path(retried["out"]).read_text())
    assert victim["id"] in {a["image_id"] for a in out["annotations"]}
