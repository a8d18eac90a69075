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


# Seconds to label one image for semantic segmentation, per label kind, with their sources.
# Seed 004's summary gives only budget ratios (Fig. 1, 4), so the per-image times come from
# the studies those budgets build on:
#   pascal: Bearman et al., "What's the Point" (ECCV 2016), PASCAL VOC 2012 timings:
#           one point per class 22.1 s, squiggles (scribbles) 34.9 s, full masks 239.7 s;
#           coarse masks were not timed there.
#   cityscapes: Cordts et al., "The Cityscapes Dataset" (CVPR 2016): fine 1.5 h, coarse
#           polygons limited to 7 min per image; points and scribbles were not timed there.
SEMANTIC_SECONDS_PER_IMAGE = {
    "pascal": {"point": 22.1, "scribble": 34.9, "fine": 239.7},
    "cityscapes": {"coarse": 420.0, "fine": 5400.0},
}
SEMANTIC_SOURCES = {
    "pascal": "Bearman et al. 2016 (What's the Point), PASCAL VOC 2012",
    "cityscapes": "Cordts et al. 2016 (The Cityscapes Dataset)",
}
SEMANTIC_TRAIN_IMAGES = {"pascal": 10_582, "cityscapes": 2_975}  # VOC aug train, CS train


def semantic_labelling_cost(dataset: str, kind: str, images: int | None = None) -> dict:
    """Hours to label ``images`` images with ``kind`` semantic labels, and versus fine maps.

    Raises ``ValueError`` naming the datasets that have a timing for ``kind`` when the chosen
    source never timed it (no per-image figure is invented).
    """
    if dataset not in SEMANTIC_SECONDS_PER_IMAGE:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of "
                         f"{list(SEMANTIC_SECONDS_PER_IMAGE)}")
    table = SEMANTIC_SECONDS_PER_IMAGE[dataset]
    if kind not in table:
        timed = [d for d, t in SEMANTIC_SECONDS_PER_IMAGE.items() if kind in t]
        hint = (f"; {kind} labels are timed for {', '.join(timed)}" if timed
                else "; expected point, scribble, coarse or fine")
        raise ValueError(f"{SEMANTIC_SOURCES[dataset]} gives no time for {kind!r} labels{hint}")
    n = SEMANTIC_TRAIN_IMAGES[dataset] if images is None else images
    if n < 0:
        raise ValueError(f"--images must be >= 0, got {n}")
    seconds, fine = n * table[kind], n * table["fine"]
    return {"dataset": dataset, "kind": kind, "images": n, "source": SEMANTIC_SOURCES[dataset],
            "seconds_per_image": table[kind], "hours": seconds / 3600,
            "fine_hours": fine / 3600, "budget_share": table[kind] / table["fine"]}
