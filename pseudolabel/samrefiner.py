"""SAMRefiner (seed 002): prompts mined from coarse masks, decoded by SAM into refined masks.

Prompt excavation, §3.2:

* **distance-guided points**: the positive point is the mask pixel farthest from the
  background (Euclidean distance transform); the negative point is the pixel of the mask's
  tight box farthest from the foreground (none when the box holds no background);
* **context-aware elastic box (CEBox)**: from the tight box, each side grows by 10% of its
  length (at most ``max_step`` px) while more than ``lam`` of the new strip's pixels resemble
  the mask (cosine similarity > 0.5 between SAM's image features and the mask's mean
  feature, eq. 1-2); the growth repeats until no side grows;
* **Gaussian-style mask prompt** (eq. 3): ``omega * exp(-d^2 / (|M| * gamma))`` inside the
  coarse mask, with ``d`` the distance to the positive point, and ``-omega`` outside, as
  SAM's low-resolution mask logits.

SAM runs in multimask mode and keeps, per mask, the output with the highest predicted IoU
(§3.1); ``iters`` repeats with the refined mask as the new coarse mask. All masks of an image
are decoded in one batch from one image encoding, or (ours, off unless a ``ZoomSpec`` is
given) each mask on its own crop around its box prompt, resized to SAM's input, as the
pseudo-mask teachers decode box prompts on the synthetic world (``models.predictor.ZoomSpec``).

Deviations from the authors' code (github.com/linyq2117/SAMRefiner), where the paper is
followed instead: their Gaussian uses ``|M| / gamma`` and the distance-transform value rather
than eq. 3's ``|M| * gamma`` and the distance to the centre point; their CEBox grows once,
where §3.2 grows "progressively" over several iterations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from segment_anything.utils.transforms import ResizeLongestSide

from pseudolabel.data.masks import masks_to_boxes_xyxy
from pseudolabel.models.predictor import ImageEmbeddings, PromptedSam, ZoomSpec

PROMPTS = ("point", "box", "mask")
LAMBDA = 0.1  # §4.1: CEBox threshold
SIM_THRESHOLD = 0.5  # eq. 2
OMEGA, GAMMA = 15.0, 4.0  # §4.1: Gaussian amplitude and span
STEP_SHARE = 0.1  # §3.2: each side grows by 10% of its length
MAX_STEP = 10  # px per growth step (the authors' bound)
MAX_ROUNDS = 20


# -- points ----------------------------------------------------------------------------------
def distance_points(mask: np.ndarray) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """``(row, col)`` of the positive point and of the negative point (or ``None``).

    Positive: the foreground pixel with the largest distance to the background (first in
    row-major order on ties). Negative: the background pixel of the tight box with the
    largest distance to the foreground.
    """
    if not mask.any():
        raise ValueError("empty mask: no prompt can be mined from it")
    x0, y0, x1, y1 = (int(v) for v in masks_to_boxes_xyxy(mask[None])[0])
    box = mask[y0:y1, x0:x1]
    # the tight box, padded by one background pixel, gives the image's distances: every
    # pixel outside the box is background, and a ring pixel is as near as any of them
    inside = ndimage.distance_transform_edt(np.pad(box, 1))[1:-1, 1:-1]
    pos = np.unravel_index(int(np.argmax(inside)), box.shape)
    pos = (int(pos[0] + y0), int(pos[1] + x0))
    if box.all():
        return pos, None
    outside = ndimage.distance_transform_edt(~box)
    neg = np.unravel_index(int(np.argmax(outside)), box.shape)
    return pos, (int(neg[0] + y0), int(neg[1] + x0))


# -- context-aware elastic box ---------------------------------------------------------------
def interpolation_matrix(n_out: int, n_in: int, device=None) -> torch.Tensor:
    """``(n_out, n_in)``: 1-D bilinear resizing (``align_corners=False``) as a matrix, so
    ``U_y @ x @ U_x.T`` is ``F.interpolate`` of a 2-D ``x`` (resizing the identity along
    one axis leaves the other axis as it is)."""
    eye = torch.eye(n_in, device=device)[None, None]
    return F.interpolate(eye, (n_out, n_in), mode="bilinear", align_corners=False)[0, 0]


@dataclass
class PixelFeatures:
    """What eq. 1's per-pixel cosine needs of one image, without its ``(C, H, W)`` upsampled
    features: the grid ``features`` ``(C, gh, gw)`` (the part covering the image), the
    resizing matrices ``uy`` ``(H, gh)`` and ``ux`` ``(W, gw)``, and ``norms`` ``(H, W)``,
    each pixel's upsampled feature norm. Bilinear upsampling is linear, so a pixel's dot
    product with a query is the upsampled grid of dot products; its norm needs only the
    channel sums of products of vertically adjacent cells (below). Exact up to rounding, on
    the embedding's device; costs ``O(C gh W)`` per image and ``O(C gh gw + H W)`` per mask
    instead of ``O(C H W)`` each (a 256-channel 640 x 640 map is 420 MB)."""

    features: torch.Tensor
    uy: torch.Tensor
    ux: torch.Tensor
    norms: torch.Tensor


def pixel_features(features: torch.Tensor, grid_size: tuple[int, int],
                   shape: tuple[int, int]) -> PixelFeatures:
    """Per-image part of eq. 1-2 for the ``(C, h, w)`` embedding ``features`` whose first
    ``grid_size`` cells cover an image of ``shape``; shared by all the image's masks."""
    gh, gw = grid_size
    f = features[:, :gh, :gw].float()
    uy = interpolation_matrix(shape[0], gh, f.device)
    ux = interpolation_matrix(shape[1], gw, f.device)
    rows = torch.einsum("cab,xb->cax", f, ux)  # resized along x: (C, gh, W)
    # |U_y g|^2 at (y, x): sum over a, a' of U_y[y, a] U_y[y, a'] <g[:, a, x], g[:, a', x]>;
    # a row of U_y has at most two neighbouring non-zeros, so the band |a - a'| <= 1 suffices
    same = (rows * rows).sum(0)
    next_row = (rows[:, :-1] * rows[:, 1:]).sum(0)
    sq = (uy * uy) @ same
    if gh > 1:
        sq = sq + 2 * (uy[:, :-1] * uy[:, 1:]) @ next_row
    return PixelFeatures(f, uy, ux, sq.clamp_min(0).sqrt())


def similarity_map(features: torch.Tensor, mask: np.ndarray, grid_size: tuple[int, int],
                   pixels: PixelFeatures | None = None) -> np.ndarray:
    """Eq. 1-2: cosine similarity > 0.5 between each pixel's feature (the embedding
    upsampled bilinearly to the image) and the mask's mean feature.

    ``features``: ``(C, h, w)`` image embedding; ``grid_size``: the part of the grid that
    covers the image (SAM pads the input to a square). The mean feature weights each cell
    by the share of it the mask covers, so masks smaller than a cell still have one.
    ``pixels``: ``pixel_features`` of this image, when already computed.
    """
    if pixels is None:
        pixels = pixel_features(features, grid_size, mask.shape)
    return similarity_maps(pixels, mask[None])[0]


# masks per batch of cosine maps: (N, H, W) fp32 on the device, 16 MB per mask at 2048 px
SIMILARITY_CHUNK = 16


def similarity_maps(pixels: PixelFeatures, masks: np.ndarray) -> np.ndarray:
    """:func:`similarity_map` of ``(N, H, W)`` masks of one image, computed in batches on
    the embedding's device with one transfer back per batch."""
    out = np.zeros(masks.shape, dtype=bool)
    for s in range(0, len(masks), SIMILARITY_CHUNK):
        sim = cosine_maps(pixels, masks[s: s + SIMILARITY_CHUNK])
        out[s: s + SIMILARITY_CHUNK] = (sim > SIM_THRESHOLD).cpu().numpy()
    return out


def cosine_maps(pixels: PixelFeatures, masks: np.ndarray) -> torch.Tensor:
    """Eq. 1: ``(N, H, W)`` cosine similarity of each pixel's feature to each mask's mean."""
    f = pixels.features
    m = torch.as_tensor(np.asarray(masks, dtype=bool)).to(f.device).float()[:, None]
    weights = F.interpolate(m, f.shape[1:], mode="area")[:, 0]  # (N, gh, gw)
    query = torch.einsum("chw,nhw->nc", f, weights) / weights.sum((1, 2)).clamp_min(1e-12)[:, None]
    dots = torch.einsum("chw,nc->nhw", f, F.normalize(query, dim=1))
    return (pixels.uy @ dots @ pixels.ux.T) / pixels.norms.clamp_min(1e-12)  # normalize's eps


def elastic_box(mask: np.ndarray, similar: np.ndarray, *, lam: float = LAMBDA,
                step_share: float = STEP_SHARE, max_step: int = MAX_STEP,
                max_rounds: int = MAX_ROUNDS) -> tuple[np.ndarray, bool]:
    """CEBox (§3.2): the tight box, grown side by side while the context resembles the mask.

    Returns the ``[x0, y0, x1, y1]`` box (pixel edges) and whether it grew. A side grows by
    ``min(step_share * side length, max_step)`` px (at least 1) when more than ``lam`` of
    the pixels of the new strip are in ``similar``.
    """
    h, w = mask.shape
    x0, y0, x1, y1 = (int(v) for v in masks_to_boxes_xyxy(mask[None])[0])
    start = (x0, y0, x1, y1)
    for _ in range(max_rounds):
        grew = False
        sx = max(1, min(int(step_share * (x1 - x0)), max_step))
        sy = max(1, min(int(step_share * (y1 - y0)), max_step))
        strips = {  # side: (new coordinate, strip rows, strip cols)
            "left": (max(x0 - sx, 0), slice(y0, y1), slice(max(x0 - sx, 0), x0)),
            "right": (min(x1 + sx, w), slice(y0, y1), slice(x1, min(x1 + sx, w))),
            "top": (max(y0 - sy, 0), slice(max(y0 - sy, 0), y0), slice(x0, x1)),
            "bottom": (min(y1 + sy, h), slice(y1, min(y1 + sy, h)), slice(x0, x1)),
        }
        new = {}
        for side, (coord, rs, cs) in strips.items():
            strip = similar[rs, cs]
            if strip.size and strip.mean() > lam:
                new[side] = coord
        if new:
            x0, x1 = new.get("left", x0), new.get("right", x1)
            y0, y1 = new.get("top", y0), new.get("bottom", y1)
            grew = True
        if not grew:
            break
    box = np.array([x0, y0, x1, y1], dtype=np.float64)
    return box, (x0, y0, x1, y1) != start


# -- Gaussian mask prompt --------------------------------------------------------------------
def gaussian_mask_prompt(mask: np.ndarray, centre_rc: tuple[int, int], *,
                         omega: float = OMEGA, gamma: float = GAMMA) -> np.ndarray:
    """Eq. 3 at the mask's resolution: ``omega * exp(-d^2 / (|M| gamma))`` inside the mask,
    ``-omega`` outside; ``d`` is the distance to ``centre_rc``."""
    out = np.full(mask.shape, -omega, dtype=np.float32)
    if not mask.any():
        return out
    x0, y0, x1, y1 = (int(v) for v in masks_to_boxes_xyxy(mask[None])[0])  # only it has mask
    yy, xx = np.mgrid[y0:y1, x0:x1]
    d2 = (yy - centre_rc[0]) ** 2 + (xx - centre_rc[1]) ** 2
    g = omega * np.exp(-d2 / (int(mask.sum()) * gamma))
    box = mask[y0:y1, x0:x1]
    out[y0:y1, x0:x1][box] = g[box]
    return out


def to_low_res(maps: np.ndarray, sam: PromptedSam, input_size: tuple[int, int],
               pad_value: float) -> torch.Tensor:
    """``(N, H, W)`` maps at the image's resolution -> ``(N, 1, L, L)`` in SAM's mask-prompt
    frame (resized like the image, padded to the square input, resized to ``L``)."""
    s = sam.sam.image_encoder.img_size
    x = torch.as_tensor(maps, dtype=torch.float32)[:, None]
    x = F.interpolate(x, input_size, mode="bilinear", align_corners=False)
    x = F.pad(x, (0, s - input_size[1], 0, s - input_size[0]), value=pad_value)
    return F.interpolate(x, (sam.low_res_size,) * 2, mode="bilinear", align_corners=False)


def to_low_res_crops(maps: np.ndarray, windows: np.ndarray, sam: PromptedSam,
                     pad_value: float) -> torch.Tensor:
    """``(N, H, W)`` maps at the image's resolution -> ``(N, 1, L, L)``, map ``i`` in the
    frame of its crop ``windows[i]`` (``x0, y0, x1, y1``), as ``decode_zoomed`` encodes it."""
    side = sam.sam.image_encoder.img_size
    out = []
    for m, (x0, y0, x1, y1) in zip(maps, windows, strict=True):
        size = ResizeLongestSide.get_preprocess_shape(int(y1 - y0), int(x1 - x0), side)
        out.append(to_low_res(m[None, y0:y1, x0:x1], sam, size, pad_value))
    return torch.cat(out)


def needs_embedding(prompts: tuple[str, ...], cebox: bool, zoom: ZoomSpec | None) -> bool:
    """Whether :func:`refine_masks` needs the whole image's embedding: it decodes there
    unless zoomed around box prompts, and CEBox's similarity maps come from it either way."""
    return zoom is None or not zoom.on or "box" not in prompts or cebox


# -- refinement ------------------------------------------------------------------------------
@dataclass
class Refined:
    """Refined masks of one image: ``masks`` ``(N, H, W)`` bool, ``scores`` (predicted IoU of
    the kept output), ``boxes`` (the box prompts used, ``[x0, y0, x1, y1]``) and whether each
    box was grown by CEBox."""

    masks: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    expanded: np.ndarray


def grid_size(sam: PromptedSam, input_size: tuple[int, int]) -> tuple[int, int]:
    """Cells of the image-embedding grid that cover the (unpadded) image."""
    gh, gw = sam.sam.prompt_encoder.image_embedding_size
    s = sam.sam.image_encoder.img_size
    return max(1, round(gh * input_size[0] / s)), max(1, round(gw * input_size[1] / s))


@torch.no_grad()
def refine_masks(sam: PromptedSam, embedding: ImageEmbeddings | None, coarse: np.ndarray, *,
                 prompts: tuple[str, ...] = PROMPTS, iters: int = 1, cebox: bool = True,
                 lam: float = LAMBDA, omega: float = OMEGA, gamma: float = GAMMA,
                 zoom: ZoomSpec | None = None, image: np.ndarray | None = None) -> Refined:
    """Refine ``coarse`` ``(N, H, W)`` masks of the image in ``embedding`` (one image).

    ``cebox=False`` prompts with the tight box of each mask instead of the elastic box.
    ``zoom`` (on, with ``box`` among the prompts) decodes each mask on its own crop of
    ``image`` (its ``(H, W, 3)`` pixels) around its box prompt; ``embedding`` may then be
    ``None`` unless CEBox needs it (:func:`needs_embedding`). Without a box prompt there is
    nothing to zoom around and the masks decode on the whole image, as P-SAM's points do.

    An empty coarse mask has no prompt; it stays empty with score 0. Where SAM returns an
    empty mask, the mask being refined is kept (score 0).
    """
    unknown = [p for p in prompts if p not in PROMPTS]
    if unknown or not prompts:
        raise ValueError(f"prompts {list(prompts)}: choose from {list(PROMPTS)}")
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    zoomed = zoom is not None and zoom.on and "box" in prompts
    if zoomed and image is None:
        raise ValueError("zoomed refinement decodes each mask on a crop of the image: pass "
                         "its pixels")
    if embedding is None and needs_embedding(prompts, cebox, zoom):
        raise ValueError("the whole image's embedding is needed (no zoom, or CEBox)")
    coarse = np.asarray(coarse, dtype=bool)
    n = len(coarse)
    h, w = embedding.original_sizes[0] if embedding is not None else image.shape[:2]
    if coarse.shape[1:] != (h, w) or (image is not None and image.shape[:2] != (h, w)):
        raise ValueError(f"coarse masks are {coarse.shape[1:]}, the image is {(h, w)}")
    masks = coarse.copy()
    scores = np.zeros(n, dtype=np.float32)
    boxes = np.zeros((n, 4))
    expanded = np.zeros(n, dtype=bool)
    live = np.flatnonzero(masks.reshape(n, -1).any(1))
    input_size = embedding.input_sizes[0] if embedding is not None else None
    if "box" in prompts and cebox:  # the image's features, shared by every mask and round
        grid = grid_size(sam, input_size)
        feats = embedding.embeddings[0]  # on SAM's device
        pixels = pixel_features(feats, grid, (h, w))
    for _ in range(iters):
        live = np.asarray([i for i in live if masks[i].any()], dtype=np.int64)
        if not len(live):
            break
        kwargs: dict = {}
        pts = [distance_points(masks[i]) for i in live] \
            if "point" in prompts or "mask" in prompts else []
        if "point" in prompts:
            xy = np.zeros((len(live), 2, 2))
            labels = np.full((len(live), 2), -1)  # -1: SAM's padding point
            for k, (pos, neg) in enumerate(pts):
                xy[k, 0], labels[k, 0] = (pos[1], pos[0]), 1
                if neg is not None:
                    xy[k, 1], labels[k, 1] = (neg[1], neg[0]), 0
            kwargs.update(points_xy=xy, point_labels=labels)
        if "box" in prompts and cebox:
            similar = similarity_maps(pixels, masks[live])
            for k, i in enumerate(live):
                boxes[i], expanded[i] = elastic_box(masks[i], similar[k], lam=lam)
        elif "box" in prompts:
            boxes[live] = masks_to_boxes_xyxy(masks[live])
        if "box" in prompts:
            kwargs["boxes_xyxy"] = boxes[live]
        if "mask" in prompts:
            gm = np.stack([gaussian_mask_prompt(masks[i], pts[k][0], omega=omega, gamma=gamma)
                           for k, i in enumerate(live)])
            kwargs["mask_logits"] = (
                to_low_res_crops(gm, zoom.windows(boxes[live], (h, w)), sam, -omega)
                if zoomed else to_low_res(gm, sam, input_size, pad_value=-omega))
        if zoomed:
            d = sam.decode_zoomed(image, zoom, multimask=True, best_only=True, **kwargs)
            best, iou = d.masks[:, 0], d.iou_predictions[:, 0]
        else:
            best, iou = sam.decode(embedding, multimask=True, **kwargs).best()
        best, iou = best.cpu().numpy(), iou.cpu().numpy()
        kept = best.reshape(len(live), -1).any(1)  # an empty output keeps the mask it refined
        masks[live[kept]] = best[kept]
        scores[live[kept]] = iou[kept]
    return Refined(masks, scores, boxes, expanded)


# -- semantic masks: split then merge (§3.2, Algorithm 1 of the appendix) ---------------------
MU = 0.5  # §4.1: merge threshold


def split_then_merge(mask: np.ndarray, *, mu: float = MU, min_area: int = 10
                     ) -> list[np.ndarray]:
    """Regions of one class's semantic mask: connected components (8-connected) of at least
    ``min_area`` px, merged pairwise (union-find) when, with ``B`` the box around both,

        area(box i) + area(box j) > mu * area(B)  and  |mask i| + |mask j| > mu * area(B),

    i.e. the merged box is not much larger than the two boxes and is well filled by the two
    masks. Each returned mask is one merged group, in order of its first component.
    """
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return []
    areas = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1))
    slices = ndimage.find_objects(labels)
    keep = [k for k in range(n) if areas[k] >= min_area]
    boxes = {k: (slices[k][1].start, slices[k][0].start, slices[k][1].stop, slices[k][0].stop)
             for k in keep}
    parent = {k: k for k in keep}

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    def box_area(b) -> int:
        return (b[2] - b[0]) * (b[3] - b[1])

    for a, i in enumerate(keep):
        for j in keep[a + 1:]:
            bi, bj = boxes[i], boxes[j]
            merged = (min(bi[0], bj[0]), min(bi[1], bj[1]), max(bi[2], bj[2]), max(bi[3], bj[3]))
            limit = mu * box_area(merged)
            if box_area(bi) + box_area(bj) > limit and areas[i] + areas[j] > limit:
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for k in keep:
        groups.setdefault(root(k), []).append(k)
    return [np.isin(labels, [k + 1 for k in members]) for members in groups.values()]
