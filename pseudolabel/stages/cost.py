"""``pseudolabel cost``: labelling hours of a setting (seed 001, Table 1)."""

from __future__ import annotations

from pseudolabel.stages.weaken import num_fully_labeled

# Seconds to label one image, per annotation type (seed 001, Table 1).
SECONDS_PER_IMAGE = {
    "coco": {"none": 0.0, "class": 80.0, "point+class": 88.7, "box+class": 130.4,
             "mask": 684.8},
    "ade20k": {"none": 0.0, "class": 100.0, "point+class": 110.9, "box+class": 163.3,
               "mask": 859.5},
    "cityscapes": {"none": 0.0, "class": 8.0, "point+class": 24.7, "box+class": 123.5,
                   "mask": 1341.7},
}
# Training-set sizes: COCO train2017, ADE20K train, Cityscapes train (fine).
TRAIN_IMAGES = {"coco": 118_287, "ade20k": 20_210, "cityscapes": 2_975}


def labelling_cost(dataset: str, weak: str, fraction: float, images: int | None = None) -> dict:
    """Hours to label ``images`` images with masks on round(F * N) of them and ``weak`` elsewhere.

    Returns the hours of this setting, of full masks everywhere, the hours saved and the
    saving factor (full / setting; ``inf`` when the setting costs nothing).
    """
    if dataset not in SECONDS_PER_IMAGE:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {list(SECONDS_PER_IMAGE)}")
    table = SECONDS_PER_IMAGE[dataset]
    if weak not in table or weak == "mask":
        raise ValueError(f"unknown weak setting {weak!r}; expected none, class, point+class, "
                         "box+class")
    n = TRAIN_IMAGES[dataset] if images is None else images
    if n < 0:
        raise ValueError(f"--images must be >= 0, got {n}")
    n_full = num_fully_labeled(fraction, n)
    seconds = n_full * table["mask"] + (n - n_full) * table[weak]
    full_seconds = n * table["mask"]
    return {
        "dataset": dataset, "weak": weak, "fraction": fraction, "images": n,
        "fully_labeled": n_full,
        "hours": seconds / 3600, "full_mask_hours": full_seconds / 3600,
        "hours_saved": (full_seconds - seconds) / 3600,
        "saving_factor": full_seconds / seconds if seconds > 0 else float("inf"),
    }
