"""``pseudolabel report``: pictures and the cost/accuracy plot of a run directory.

* ``pseudo-<W>.png``: GT next to the pseudo-masks of ``pseudo/<W>.json`` on a few weakly
  labelled training images;
* ``student-<name>.png``: GT next to each trained student's masks on a few val images;
* ``ap_vs_hours.png``: student mask AP against the labelling hours of its setting (seed 001
  Figure 1), at COCO's per-image costs (Table 1) for the run's number of training images;
* ``report.md``: the students' figures and links to the pictures.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pseudolabel.data.coco import CocoDataset, load_coco  # noqa: E402
from pseudolabel.data.images import load_image, resolve_image_path  # noqa: E402
from pseudolabel.data.masks import rle_to_mask  # noqa: E402
from pseudolabel.stages.cost import labelling_cost  # noqa: E402

SCORE_THRESHOLD = 0.5  # student masks drawn in the pictures


def _paint(image: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
    """The image with each mask blended in its own colour."""
    out = image.astype(np.float32) / 255.0
    colours = plt.get_cmap("tab10")
    for k, m in enumerate(masks):
        c = np.asarray(colours(k % 10)[:3], dtype=np.float32)
        out[m] = 0.45 * out[m] + 0.55 * c
    return out


def panels(rows: list[tuple[np.ndarray, list[tuple[str, list[np.ndarray]]]]], path: Path
           ) -> None:
    """One row per image, one column per mask set (title, masks)."""
    cols = max(len(sets) for _, sets in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.6 * cols, 2.6 * len(rows)),
                             squeeze=False)
    for r, (image, sets) in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(sets):
                title, masks = sets[c]
                ax.imshow(_paint(image, masks))
                ax.set_title(f"{title} ({len(masks)})", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _masks(ds: CocoDataset, image_id: int, min_score: float | None = None) -> list[np.ndarray]:
    return [rle_to_mask(ds.rle(a)) for a in ds.anns_by_image.get(image_id, [])
            if not a.get("iscrowd", 0) and "segmentation" in a
            and (min_score is None or a.get("score", 1.0) >= min_score)]


def _student_predictions(student_dir: Path, val: CocoDataset, image_root: Path,
                         image_ids: list[int]) -> CocoDataset:
    from pseudolabel.stages.train_student import StudentConfig, load_student, predict

    settings = json.loads((student_dir / "settings.json").read_text())
    cfg = StudentConfig(**settings["config"])
    model = load_student(student_dir, len(settings["categories"]))
    images = [val.image_by_id[i] for i in image_ids]
    preds = predict(model, images, image_root, cfg, settings["categories"], progress=False)
    return CocoDataset("predictions", images, val.categories,
                       [{"id": k + 1, **p} for k, p in enumerate(preds)])


def _labelled_fraction(student_dir: Path, run_dir: Path) -> float:
    """Share of fully labelled images behind a student: its training file's ``info``
    (pseudo-label files record it), else the run's ``split.json``, else 0."""
    train_file = Path(json.loads((student_dir / "settings.json").read_text())["train"])
    if train_file.is_file():
        info = json.loads(train_file.read_text()).get("info") or {}
        if "fraction" in info:
            return float(info["fraction"])
    split = run_dir / "split.json"
    return float(json.loads(split.read_text())["fraction"]) if split.is_file() else 0.0


def write_report(run_dir: str | Path, train_path: str | Path, val_path: str | Path,
                 image_root: str | Path, out_dir: str | Path | None = None,
                 images: int = 4) -> dict:
    run_dir, image_root = Path(run_dir), Path(image_root)
    out = Path(out_dir) if out_dir else run_dir / "report"
    train, val = load_coco(train_path), load_coco(val_path)
    made: dict[str, list[str]] = {"pseudo": [], "student": []}
    for pseudo_path in sorted((run_dir / "pseudo").glob("*.json")):
        pseudo = load_coco(pseudo_path)
        weak_ids = [i["id"] for i in pseudo.images if i.get("kind") not in (None,
                                                                          "fully_labeled")]
        rows = []
        for i in weak_ids[:images]:
            img = load_image(resolve_image_path(image_root, pseudo.image_by_id[i]["file_name"]))
            rows.append((img, [("GT", _masks(train, i)), ("pseudo", _masks(pseudo, i))]))
        if rows:
            name = f"pseudo-{pseudo_path.stem.replace('+', '_')}.png"
            panels(rows, out / name)
            made["pseudo"].append(name)
    students = sorted(p.parent for p in (run_dir / "student").glob("*/metrics.json"))
    val_ids = [i["id"] for i in val.images if val.anns_by_image[i["id"]]][:images]
    points = []
    n_train = len(train.images)
    full_hours = labelling_cost("coco", "box+class", 1.0, n_train)["full_mask_hours"]
    for sdir in students:
        metrics = json.loads((sdir / "metrics.json").read_text())
        preds = _student_predictions(sdir, val, image_root, val_ids)
        rows = []
        for i in val_ids:
            img = load_image(resolve_image_path(image_root, val.image_by_id[i]["file_name"]))
            rows.append((img, [("GT", _masks(val, i)),
                               (sdir.name, _masks(preds, i, SCORE_THRESHOLD))]))
        name = f"student-{sdir.name}.png"
        panels(rows, out / name)
        made["student"].append(name)
        weak = sdir.name.split("-")[0].replace("_", "+")
        if weak == "full":
            hours = full_hours
        else:
            fraction = _labelled_fraction(sdir, run_dir)
            hours = labelling_cost("coco", weak, fraction, n_train)["hours"]
        points.append((sdir.name, hours, metrics["segm"]["AP"], metrics["boundary"]["AP"]))
    if points:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for name, hours, ap, _ in points:
            ax.scatter(hours, ap)
            ax.annotate(name, (hours, ap), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        ax.axvline(full_hours, color="grey", linestyle="--", linewidth=0.8)
        ax.annotate("all masks", (full_hours, 0), fontsize=7, xytext=(-3, 3), ha="right",
                    textcoords="offset points", xycoords=("data", "axes fraction"))
        ax.set_xlabel(f"labelling hours for {n_train} images (COCO per-image costs)")
        ax.set_ylabel("student mask AP")
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0, top=max(1.0, 1.15 * max(p[2] for p in points)))
        ax.set_title("accuracy vs labelling cost (seed 001 Fig. 1)", fontsize=9)
        fig.tight_layout()
        out.mkdir(parents=True, exist_ok=True)
        fig.savefig(out / "ap_vs_hours.png", dpi=100)
        plt.close(fig)
    table = ["| student | labelling hours | mask AP | boundary AP |", "|---|---|---|---|"]
    table += [f"| {n} | {h:,.1f} | {a:.1f} | {b:.1f} |" for n, h, a, b in points]
    lines = [f"# Report of {run_dir}", "", *table, ""]
    lines += [f"![{n}]({n})" for n in made["pseudo"] + made["student"]]
    if points:
        lines.append("![AP vs labelling hours](ap_vs_hours.png)")
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return {"out": str(out), **made, "plot": bool(points), "table": table if points else []}
