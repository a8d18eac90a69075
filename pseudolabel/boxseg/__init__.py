"""BoxSeg (seed 000): box-supervised instance segmentation with quality-aware pseudo-masks.

* ``quality``: the Quality-Aware Module (§3.3): Box-Quality Ranking, Quality-aware Masks
  Fusion (eq. 2, adaptive K of eq. 4) and Mask-Quality Scoring (eq. 5), and the
  quality-weighted mask loss (eq. 1).
* ``losses``: BoxInst's box-supervised losses (projection, pairwise colour affinity) and
  VarifocalNet's IoU-aware score, which seed 000 §3.1 builds on.
"""

from pseudolabel.boxseg.quality import (
    adaptive_k,
    box_quality_ranking,
    fuse_candidates,
    quality_weighted_dice,
)

__all__ = ["adaptive_k", "box_quality_ranking", "fuse_candidates", "quality_weighted_dice"]
