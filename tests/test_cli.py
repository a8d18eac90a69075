"""Each command end to end, in-process, on a small synthetic dataset."""

import json

import pytest
from typer.testing import CliRunner

from pseudolabel.cli import app

runner = CliRunner()


def _run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli")
    text = _run("synth", "--out", out, "--train", 12, "--val", 4, "--size", 80, "--seed", 1)
    assert "train: 12 images" in text
    return out


def test_weaken_every_setting_and_evaluate(data, tmp_path):
    gt = data / "annotations" / "train.json"
    for weak in ("none", "class", "point+class", "box+class"):
        out = tmp_path / f"{weak}.json"
        text = _run("weaken", "--gt", gt, "--weak", weak, "--fraction", 0.25, "--out", out)
        assert "3 fully_labeled" in text
        kinds = {i["kind"] for i in json.loads(out.read_text())["images"]}
        assert kinds == {"fully_labeled", weak}
    report = tmp_path / "eval.json"
    text = _run("evaluate", "--pred", data / "annotations" / "val.json", "--gt",
                data / "annotations" / "val.json", "--json", report)
    assert "AP=100.00" in text
    figures = json.loads(report.read_text())
    assert figures["segm"]["AP"] == 100.0 and figures["boundary"]["AP"] == 100.0
    text = _run("evaluate", "--pseudo", gt, "--gt", gt)
    assert "mIoU 1.000" in text


def test_cost_prints_hours():
    text = _run("cost", "--weak", "point+class", "--fraction", 0.01)
    assert "118287 images" in text and "7.23x cheaper" in text


def test_semantic_cost_uses_timed_kinds_only():
    text = _run("semantic-cost", "--kind", "scribble", "--images", 100)
    assert "1.0 h vs 6.7 h" in text and "14.6% of the budget" in text  # 34.9 s vs 239.7 s
    text = _run("semantic-cost", "--kind", "coarse", "--dataset", "cityscapes")
    assert "7.8% of the budget" in text  # 7 min vs 90 min per image


@pytest.mark.parametrize("args, message", [
    (["weaken", "--weak", "scribble", "--fraction", "0.1", "--gt", "{gt}"], "unknown weak setting"),
    (["evaluate", "--gt", "{gt}"], "exactly one of --pred, --pseudo, --teacher or --detector"),
    (["evaluate", "--pred", "{missing}", "--gt", "{gt}"], "file not found"),
    (["cost", "--weak", "none", "--fraction", "0.1", "--dataset", "voc"], "unknown dataset"),
    (["semantic-cost", "--kind", "coarse"], "coarse labels are timed for cityscapes"),
])
def test_errors_are_clear_and_exit_2(data, args, message):
    fill = {"gt": str(data / "annotations" / "train.json"), "missing": str(data / "nope.json")}
    result = runner.invoke(app, [a.format(**fill) for a in args])
    assert result.exit_code == 2
    assert message in result.output


def test_check_lists_problems_and_fails(data, tmp_path):
    raw = json.loads((data / "annotations" / "val.json").read_text())
    raw["annotations"][0]["category_id"] = 999
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(raw))
    result = runner.invoke(app, ["check", str(path), "--images", str(data / "images")])
    assert result.exit_code == 1
    assert "unknown category_id 999" in result.output and "bad.json" in result.output


def test_evaluate_teacher_and_detector(data, tmp_path):
    from pseudolabel.models.checkpoints import save_safetensors
    from pseudolabel.models.sam import build_sam

    gt = data / "annotations" / "val.json"
    out = tmp_path / "teacher.json"
    weights = tmp_path / "sam.safetensors"
    save_safetensors(weights, build_sam("tiny").state_dict())
    text = _run("evaluate", "--teacher", weights, "--sam-model", "tiny", "--gt", gt,
                "--images", data / "images", "--prompts", "box,point", "--max-images", 2,
                "--json", out)
    assert "box" in text and "mIoU" in text
    assert set(json.loads(out.read_text())["mIoU"]) == {"box", "point"}
    # the tiny detector with random weights: the code path, not a quality figure
    text = _run("evaluate", "--detector", "tiny", "--gt", gt, "--images", data / "images",
                "--max-images", 2)
    assert "box AP50" in text
    bad = runner.invoke(app, ["evaluate", "--teacher", str(weights), "--sam-model", "tiny",
                              "--gt", str(gt), "--images", str(data / "images"), "--prompts",
                              "scribble"])
    assert bad.exit_code == 2 and "unknown prompt kinds" in bad.output
