"""Collect seed 001 Table 2 from pipeline runs: one run directory per mask fraction.

    python scripts/table2.py runs/table2 --student condinst --out runs/table2/table2
    python scripts/table2.py runs/table2 --student condinst --seed 1 --out runs/table2/table2-seed1

reads ``<root>/<N>pct/`` (written by ``scripts/pipeline.sh``): each setting's pseudo-mask
quality (``eval/pseudo_<W>.json``) and student metrics (``student/*/metrics.json``), the
fully supervised student from a column or from ``<root>/full/`` (``make synthetic-table2``
trains it there, beside the columns), and
writes ``table2.md`` and ``table2.json``: per fraction and weak setting, pseudo-mask mIoU,
student mask AP and boundary AP, AP as a percentage of the fully supervised student, and the
labelling hours of the setting at COCO's per-image costs (seed 001 Table 1) for this many
training images. ``--seed N`` reads the students of that seed (``train-student --seed N``
folders, ``<name>-<student>-seedN``), pseudo-masks being shared by every seed.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from pseudolabel.data.coco import load_coco
from pseudolabel.stages.cost import labelling_cost
from pseudolabel.stages.train_student import percent_of_full, student_folder

SETTINGS = ("none", "class", "point+class", "box+class")


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def collect(root: Path, student_name: str = "mask2former", seed: int = 0) -> dict:
    runs = sorted(root.glob("*pct"), key=lambda p: float(re.sub(r"pct$", "", p.name)))
    # the full student: copied into a column by pipeline.sh, or in <root>/full when
    # `make -j synthetic-table2` trains it beside the columns
    fulls = (_read(p / "student" / student_folder("full", student_name, seed) / "metrics.json")
             for p in [*runs, root / "full"])
    full = next((m for m in fulls if m), None)
    rows = []
    for run in runs:
        fraction = float(run.name[:-3]) / 100
        for weak in SETTINGS:
            student = _read(run / "student" / student_folder(weak, student_name, seed)
                            / "metrics.json")
            pseudo = _read(run / "eval" / f"pseudo_{weak}.json")
            if student is None and pseudo is None:
                continue
            percent = student.get("AP_percent_of_full") if student else None
            if student and percent is None and full:  # trained beside the full student
                percent = percent_of_full(student["segm"]["AP"], full["segm"]["AP"])
            n_images = len(load_coco(student["train"]).images) if student else None
            rows.append({
                "fraction": fraction, "weak": weak,
                "pseudo_mIoU": pseudo["mIoU"] if pseudo else None,
                "AP": student["segm"]["AP"] if student else None,
                "boundary_AP": student["boundary"]["AP"] if student else None,
                "percent_of_full": percent,
                "hours": labelling_cost("coco", weak, fraction, n_images)["hours"]
                if n_images else None,
            })
    full_hours = None  # masks on every image the full student trained on
    if full:
        n = len(load_coco(full["train"]).images)
        full_hours = labelling_cost("coco", "none", 1.0, n)["full_mask_hours"]
    return {"student": student_name, "seed": seed, "rows": rows, "full": full,
            "full_hours": full_hours}


def markdown(table: dict) -> str:
    def f(v, fmt):
        return "–" if v is None else format(v, fmt)

    lines = ["| masks | weak labels | pseudo-mask mIoU | mask AP | boundary AP | % of full "
             "| labelling hours |", "|---|---|---|---|---|---|---|"]
    for r in table["rows"]:
        lines.append(f"| {r['fraction']:.0%} | {r['weak']} | {f(r['pseudo_mIoU'], '.3f')} | "
                     f"{f(r['AP'], '.1f')} | {f(r['boundary_AP'], '.1f')} | "
                     f"{f(r['percent_of_full'], '.1f')} | {f(r['hours'], ',.1f')} |")
    if table["full"]:
        lines.append(f"| 100% | masks | – | {table['full']['segm']['AP']:.1f} | "
                     f"{table['full']['boundary']['AP']:.1f} | 100 | "
                     f"{f(table.get('full_hours'), ',.1f')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path)
    ap.add_argument("--student", default="mask2former", choices=("mask2former", "condinst"),
                    help="which pipeline students to read (scripts/pipeline.sh's STUDENT)")
    ap.add_argument("--seed", type=int, default=0,
                    help="the students of this seed (train-student --seed; default 0)")
    ap.add_argument("--out", type=Path, default=None, help="prefix for .md and .json")
    args = ap.parse_args()
    table = collect(args.root, args.student, args.seed)
    if not table["rows"]:
        raise SystemExit(f"{args.root}: no <N>pct run directories with results")
    text = markdown(table)
    print(text, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main()
