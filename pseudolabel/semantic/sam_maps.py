"""SAM pseudo-label maps from weak semantic labels (seed 004, SeSAM Fig. 3).

Per class, the weak label is split into connected components (SAM is an instance model and
fails on a class of several instances, Fig. 2 left); on each component N = 5 positive points
are drawn uniformly from its skeleton (``skimage.morphology.skeletonize``; all of it when it
is shorter; Fig. 6), and SAM decodes every component of an image in one batch, multimask.
Of the three outputs the one agreeing best with the weak label is kept:

    score = tau1 * precision + tau2 * coverage,   (tau1, tau2) = (0.3, 0.7)   (Fig. 7)

The summary of seed 004 gives the weights but not the two measures; chosen here, for labels as
sparse as points: *precision* is the share of the weak-labelled pixels the mask covers that
carry this class (a mask spilling onto another class's labels loses it), *coverage* the share
of the component's own weak pixels the mask covers. The map is painted from the selected
masks (where two overlap, the higher score wins), weak-labelled pixels keep their class, and
ignore pixels stay ignore. Pixels no mask claims stay unlabelled (255) unless
``fill_background``, which gives them the background class: the synthetic world's background
is one region, so this is how a student sees negatives there.

Ablations (Fig. 2, 8): ``prompt`` ``points`` / ``box`` (the component's box) / ``mask`` (the
component as SAM's mask prompt); ``per`` ``component`` / ``class`` (one prompt per class);
``sampling`` ``skeleton`` / ``random`` (uniform over the component).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from skimage.morphology import skeletonize

from pseudolabel.semantic.labels import BACKGROUND, IGNORE

N_POINTS = 5  # seed 004 Fig. 6
TAUS = (0.3, 0.7)  # (precision, coverage) weights, seed 004 Fig. 7
PROMPTS = ("points", "box", "mask")


def parse_taus(text: str) -> tuple[float, float]:
    """``"0.3,0.7"`` -> ``(0.3, 0.7)``: two finite, non-negative weights, not both zero."""
    try:
        taus = tuple(float(t) for t in text.split(","))
    except ValueError:
        taus = ()
    if len(taus) != 2 or not all(np.isfinite(taus)) or min(taus) < 0 or sum(taus) == 0:
        raise ValueError(f"--taus takes two non-negative weights 'precision,coverage', not "
                         f"{text!r}")
    return taus


def skeleton_points(component: np.ndarray, n: int, rng: np.random.Generator,
                    sampling: str = "skeleton") -> np.ndarray:
    """``min(n, |skeleton|)`` distinct ``(row, col)`` pixels drawn uniformly from the
    component's skeleton (``sampling="random"``: from the whole component)."""
    pool = skeletonize(component) if sampling == "skeleton" else component
    if not pool.any():  # a component too small to skeletonise
        pool = component
    ys, xs = np.nonzero(pool)
    pick = rng.choice(len(ys), size=min(n, len(ys)), replace=False)
    return np.stack([ys[pick], xs[pick]], axis=1)


def agreement(masks: np.ndarray, weak: np.ndarray, cls: int, component: np.ndarray,
              taus: tuple[float, float] = TAUS) -> np.ndarray:
    """``taus[0] * precision + taus[1] * coverage`` of each ``(M, H, W)`` candidate mask
    (see the module docstring)."""
    labelled = weak != IGNORE
    own = weak == cls
    scores = np.zeros(len(masks))
    comp_size = max(int(component.sum()), 1)
    for k, m in enumerate(masks):
        hit = int((m & labelled).sum())
        precision = (m & own).sum() / hit if hit else 0.0
        coverage = (m & component).sum() / comp_size
        scores[k] = taus[0] * precision + taus[1] * coverage
    return scores


def select_mask(masks: np.ndarray, weak: np.ndarray, cls: int, component: np.ndarray,
                taus: tuple[float, float] = TAUS) -> tuple[int, float]:
    """The candidate with the best weighted agreement, and its score."""
    s = agreement(masks, weak, cls, component, taus)
    best = int(np.argmax(s))
    return best, float(s[best])


def weak_components(weak: np.ndarray, per: str = "component") -> list[tuple[int, np.ndarray]]:
    """``(class, mask)`` prompts of a weak map: each connected component of each object class
    (``per="class"``: each class whole). Background is not prompted."""
    out = []
    for c in np.unique(weak):
        if c in (IGNORE, BACKGROUND):
            continue
        mask = weak == c
        if per == "class":
            out.append((int(c), mask))
            continue
        comp, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
        out += [(int(c), comp == k) for k in range(1, n + 1)]
    return out


def _prompts(comps, prompt: str, n_points: int, sampling: str, rng, sam, input_size):
    kw: dict = {}
    if prompt == "points":
        pts = [skeleton_points(m, n_points, rng, sampling) for _, m in comps]
        k = max(len(p) for p in pts)
        xy = np.zeros((len(comps), k, 2))
        lab = np.full((len(comps), k), -1)  # -1: SAM's padding point
        for i, p in enumerate(pts):
            xy[i, : len(p)] = p[:, ::-1]  # (x, y), SAM's pixel-index convention
            lab[i, : len(p)] = 1
        kw.update(points_xy=xy, point_labels=lab)
    elif prompt == "box":
        boxes = []
        for _, m in comps:
            ys, xs = np.nonzero(m)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        kw["boxes_xyxy"] = np.asarray(boxes, dtype=np.float64)
    elif prompt == "mask":
        from pseudolabel.samrefiner import to_low_res

        maps = np.stack([np.where(m, 8.0, -8.0) for _, m in comps]).astype(np.float32)
        kw["mask_logits"] = to_low_res(maps, sam, input_size, pad_value=-8.0)
    else:
        raise ValueError(f"unknown prompt {prompt!r}; expected one of {PROMPTS}")
    return kw


@torch.no_grad()
def sam_pseudo_map(sam, image: np.ndarray, weak: np.ndarray, rng: np.random.Generator, *,
                   n_points: int = N_POINTS, prompt: str = "points", per: str = "component",
                   sampling: str = "skeleton", taus: tuple[float, float] = TAUS,
                   fill_background: bool = True, keep_ignore: np.ndarray | None = None
                   ) -> np.ndarray:
    """The SAM pseudo-label map of one image from its weak label map (module docstring).

    ``sam``: a ``PromptedSam`` (anything with its ``encode`` and ``decode``). In the weak map
    255 means "not labelled" (to fill); ``keep_ignore`` marks pixels that must stay ignore
    (crowd regions), whatever SAM says.
    """
    out = weak.copy()
    comps = weak_components(weak, per)
    if comps:
        emb = sam.encode([image])
        kw = _prompts(comps, prompt, n_points, sampling, rng, sam, emb.input_sizes[0])
        masks = sam.decode(emb, multimask=True, **kw).masks.cpu().numpy()  # (N, M, H, W)
        best_score = np.full(weak.shape, -np.inf)
        for (cls, comp), cand in zip(comps, masks, strict=True):
            k, score = select_mask(cand, weak, cls, comp, taus)
            claim = cand[k] & (score > best_score) & (weak == IGNORE)
            out[claim] = cls
            best_score[claim] = score
    if fill_background:
        out[out == IGNORE] = BACKGROUND
    if keep_ignore is not None:
        out[keep_ignore] = IGNORE
    return out


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest resize of a label map."""
    t = torch.as_tensor(labels)[None, None].float()
    return F.interpolate(t, size, mode="nearest")[0, 0].byte().numpy()
