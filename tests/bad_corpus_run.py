"""Runs every case of tests/data/bad through its commands, in this one process (one import
of torch), and writes what happened as JSON. tests/test_bad_input.py runs it in a subprocess
and reads the peak memory of that process.

    python tests/bad_corpus_run.py WORK_DIR RESULTS.json
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from pseudolabel.cli import app

CORPUS = Path(__file__).resolve().parent / "data" / "bad"
REPO = Path(__file__).resolve().parents[1]


def peak_rss_bytes() -> int:
    """This process's peak resident set. ``VmHWM`` belongs to the address space made at exec;
    ``ru_maxrss`` would also count the parent's resident set at fork (Linux records the old
    address space's high-water mark on exec), so a test run from a large pytest worker read as
    that worker's size."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def prepare(work: Path) -> tuple[Path, Path, Path]:
    """The corpus copied under ``work``, plus the two image files it does not commit, and a
    config running every model from random tiny weights."""
    shutil.copytree(CORPUS, work / "bad", ignore=shutil.ignore_patterns("*.py"))
    images = work / "bad" / "images"
    huge = np.full((10_000, 10_000, 3), 30, np.uint8)
    huge[3000:7000, 3000:7000] = (230, 60, 60)
    Image.fromarray(huge).save(images / "huge.png")
    del huge
    os.symlink(REPO / "pyproject.toml", images / "escape.png")  # a file outside the root
    cfg = work / "config.yaml"
    good = work / "bad" / "good.json"
    cfg.write_text(f"data: {{train: {good}, val: {good}, images: {images}}}\n"
                   f"run_dir: {work / 'run'}\n"
                   "models: {detector_checkpoint: null}\n")
    return work / "bad", images, cfg


def commands(case: str, command: str, corpus: Path, images: Path, cfg: Path, out: Path):
    f = str(corpus / case)
    return {
        "check": ["check", f, "--images", str(images)],
        "weaken": ["weaken", "--gt", f, "--weak", "point+class", "--fraction", "0.5",
                   "--out", str(out / "weak.json"), "--config", str(cfg)],
        "evaluate": ["evaluate", "--pred", f, "--gt", str(corpus / "good.json")],
        "noise": ["noise", "--level", "hard", "--gt", f, "--out", str(out / "noise.json"),
                  "--config", str(cfg)],
        "noise-wan": ["noise", "--wan", "easy", "--gt", f, "--images", str(images),
                      "--out", str(out / "wan.json"), "--no-eval", "--config", str(cfg)],
        "refine": ["refine", "--coarse", f, "--images", str(images), "--out",
                   str(out / "refined.json"), "--config", str(cfg)],
        "generate": ["generate", "--weak-file", f, "--zero-shot", "--run-dir",
                     str(out / "run"), "--out", str(out / "pseudo.json"), "--workers", "0",
                     "--config", str(cfg)],
    }[command]


def main() -> None:
    work, results_path = Path(sys.argv[1]), Path(sys.argv[2])
    corpus, images, cfg = prepare(work)
    cases = json.loads((corpus / "cases.json").read_text())
    runner = CliRunner()
    results = []
    for case, spec in cases.items():
        for command in spec["commands"]:
            out = work / "out" / case / command
            out.mkdir(parents=True)
            print(case, command, file=sys.stderr, flush=True)
            r = runner.invoke(app, commands(case, command, corpus, images, cfg, out))
            crashed = r.exception is not None and not isinstance(r.exception, SystemExit)
            written = sorted(p.name for p in out.glob("*.json"))
            results.append({"case": case, "command": command, "exit_code": r.exit_code,
                            "peak_so_far": peak_rss_bytes(),
                            "output": r.output, "crashed": crashed,
                            "exception": repr(r.exception) if crashed else None,
                            "written": written,
                            "files": {name: json.loads((out / name).read_text())
                                      for name in written if name != "weak.json"}})
    results_path.write_text(json.dumps({"peak_rss_bytes": peak_rss_bytes(), "runs": results}))


if __name__ == "__main__":
    main()
