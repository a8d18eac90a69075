"""Mask losses on sampled points (Mask2Former, Cheng et al. 2022), as seed 001 §4.1 uses them.

``L_mask = 5 * BCE + 5 * dice`` computed on 112 x 112 = 12,544 points per mask instead of
every pixel. Points come from importance sampling: draw ``oversample`` x K uniform points,
keep the ``importance_ratio`` x K where the prediction is least certain (logit closest to 0),
and fill the rest with uniform points.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NUM_POINTS = 112 * 112
OVERSAMPLE = 3.0
IMPORTANCE_RATIO = 0.75
WEIGHT_CE = 5.0
WEIGHT_DICE = 5.0


def rand_like_device(shape, generator: torch.Generator | None,
                     device: torch.device) -> torch.Tensor:
    """Uniform ``[0, 1)`` values drawn by ``generator`` (on its own device, so a CPU generator
    gives the same draws whatever device the model is on), then moved to ``device``."""
    source = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=source).to(device)


def point_sample(inputs: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear values of ``(N, C, H, W)`` maps at ``(N, P, 2)`` (x, y) in ``[0, 1]``.

    Returns ``(N, C, P)``.
    """
    grid = 2.0 * coords[:, :, None, :] - 1.0
    return F.grid_sample(inputs, grid, mode="bilinear", align_corners=False)[..., 0]


def _draw(n: int, k: int, generator, row_generators, device) -> torch.Tensor:
    """``(n, k, 2)`` uniform coordinates: from ``generator``, or row i from
    ``row_generators[i]`` (so a row's draws do not depend on the other rows)."""
    if row_generators is None:
        return rand_like_device((n, k, 2), generator, device)
    return torch.cat([rand_like_device((1, k, 2), g, device) for g in row_generators])


@torch.no_grad()
def importance_points(logits: torch.Tensor, num_points: int = NUM_POINTS,
                      oversample: float = OVERSAMPLE, importance_ratio: float = IMPORTANCE_RATIO,
                      generator: torch.Generator | None = None,
                      row_generators: list[torch.Generator] | None = None) -> torch.Tensor:
    """``(N, 1, H, W)`` logits -> ``(N, num_points, 2)`` sampling coordinates in ``[0, 1]``.

    ``row_generators`` (one per row) makes each row's points its own generator's."""
    n = logits.shape[0]
    num_sampled = int(num_points * oversample)
    coords = _draw(n, num_sampled, generator, row_generators, logits.device)
    uncertainty = -point_sample(logits, coords).abs()[:, 0]
    num_uncertain = int(importance_ratio * num_points)
    idx = uncertainty.topk(num_uncertain, dim=1).indices
    chosen = torch.gather(coords, 1, idx[..., None].expand(-1, -1, 2))
    rest = _draw(n, num_points - num_uncertain, generator, row_generators, logits.device)
    return torch.cat([chosen, rest], dim=1)


def point_mask_loss(logits: torch.Tensor, targets: torch.Tensor,
                    generator: torch.Generator | None = None,
                    num_points: int = NUM_POINTS,
                    prompt_generators: list[torch.Generator] | None = None) -> torch.Tensor:
    """Per-mask ``5 * BCE + 5 * dice`` on importance-sampled points.

    Args:
        logits: ``(N, M, h, w)`` mask logits (M outputs per prompt).
        targets: ``(N, 1, H, W)`` float {0, 1} GT masks in the same frame (any resolution).
        prompt_generators: one generator per prompt: its M outputs' points come from it
            alone (a prompt's loss then does not depend on the batch it is in).
    Returns:
        ``(N, M)`` losses; the caller takes the min over M for ambiguous prompts.
    """
    n, m = logits.shape[:2]
    flat = logits.reshape(n * m, 1, *logits.shape[2:])
    rows = None if prompt_generators is None else [g for g in prompt_generators
                                                   for _ in range(m)]
    coords = importance_points(flat, num_points, generator=generator, row_generators=rows)
    x = point_sample(flat, coords)[:, 0]
    # Each target is sampled at the points of all M outputs in one call (no M-fold copy).
    t = point_sample(targets, coords.reshape(n, -1, 2))[:, 0].reshape(n * m, -1)
    bce = F.binary_cross_entropy_with_logits(x, t, reduction="none").mean(1)
    p = x.sigmoid()
    dice = 1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)
    return (WEIGHT_CE * bce + WEIGHT_DICE * dice).reshape(n, m)
