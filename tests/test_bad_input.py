"""The bad-input corpus (tests/data/bad, made by its make_corpus.py) through check, weaken,
generate, evaluate, noise (COCO-N and COCO-WAN) and refine.

Every run: no Python traceback, the bad item named where it is refused, every good item
beside it still processed; the process that ran them all stays under 2 GB.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CASES = json.loads((REPO / "tests" / "data" / "bad" / "cases.json").read_text())
WHOLE_FILE = {"file-not-coco.json", "file-truncated.json"}  # no item: the file is refused


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    work = tmp_path_factory.mktemp("bad")
    out = work / "results.json"
    r = subprocess.run([sys.executable, str(REPO / "tests" / "bad_corpus_run.py"),
                        str(work / "w"), str(out)], capture_output=True, text=True,
                       cwd=REPO, timeout=1200, env={"PYTHONPATH": str(REPO),
                                                    "OMP_NUM_THREADS": "1", "PATH": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(out.read_text())


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 30
    assert {c for spec in CASES.values() for c in spec["commands"]} >= {
        "check", "weaken", "generate", "evaluate", "noise", "noise-wan", "refine"}


def test_no_traceback_and_bounded_memory(corpus):
    for r in corpus["runs"]:
        assert not r["crashed"], (r["case"], r["command"], r["exception"])
        assert "Traceback" not in r["output"], (r["case"], r["command"])
    assert corpus["peak_rss_bytes"] <= 2 * 2**30, corpus["peak_rss_bytes"] / 2**30


def _ap(output: str) -> float:
    return float(re.search(r"mask\s+AP=\s*([-\d.]+)", output).group(1))


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_case_names_its_item_and_keeps_the_good_ones(corpus, case):
    runs = [r for r in corpus["runs"] if r["case"] == case]
    assert [r["command"] for r in runs] == CASES[case]["commands"]
    name = CASES[case]["names"]
    for r in runs:
        where = (case, r["command"], r["output"][-500:])
        if case in WHOLE_FILE:  # a file that is not COCO at all: an error naming it (a list
            # is a results file to evaluate: its items are named instead)
            assert (r["exit_code"] == 2 and case in r["output"]) or "prediction #0" in \
                r["output"], where
            continue
        if r["command"] == "evaluate":
            # as predictions against good.json: a refused one is named by its position and
            # id, the good ones are scored
            if "predictions: skipped" in r["output"]:
                assert "(id 9001)" in r["output"], where
            assert _ap(r["output"]) > 50, where
            continue
        assert name in r["output"], where
        files = r["files"]
        if r["command"] == "check":
            good = 9 if case.startswith("img-file") else 8
            assert re.search(rf"\b({good}|{good + 1}) annotations", r["output"]), where
        elif r["command"] in ("noise", "refine", "noise-wan"):
            (data,) = files.values()
            assert len(data["annotations"]) >= 8, where
        elif r["command"] == "weaken":
            assert r["exit_code"] == 0 and r["written"] == ["weak.json"], where
        elif r["command"] == "generate":
            assert r["exit_code"] == 0, where
            pseudo = files["pseudo.json"]
            made = {a["image_id"] for a in pseudo["annotations"] if a["source"] == "pseudo"}
            assert made >= {2, 3, 4}, where  # the good weakly labelled images
            if case.startswith("weak-file"):
                failed = pseudo["info"]["pseudolabel"]["failed_images"]
                assert [f["image_id"] for f in failed] == [7], where
                assert 7 not in {img["id"] for img in pseudo["images"]}, where


def test_a_huge_image_is_decoded_reduced_by_generate(corpus):
    """A 10,000 x 10,000 image (record and file agree): generate decodes it reduced and
    writes its pseudo-mask at the record's size; refine and COCO-WAN, which work on
    full-resolution masks, leave it out, naming the pixel budget."""
    (gen,) = [r for r in corpus["runs"] if r["case"] == "weak-huge.json"]
    pseudo = gen["files"]["pseudo.json"]
    assert pseudo["info"]["pseudolabel"]["failed_images"] == []
    masks = [a for a in pseudo["annotations"] if a["image_id"] == 7 and a["source"] == "pseudo"]
    assert masks and all(a["segmentation"]["size"] == [10_000, 10_000] for a in masks)
    for r in corpus["runs"]:
        if r["case"] == "img-file-huge.json" and r["command"] in ("refine", "noise-wan"):
            assert "pixel budget" in r["output"], r["output"][-400:]
