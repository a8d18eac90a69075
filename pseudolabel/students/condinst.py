"""CondInst (Tian et al. 2020), the student of BoxInst / BoxTeacher / BoxSeg (seed 000).

Built from torchvision parts: a ResNet with an FPN (P3-P7, ``LastLevelP6P7``), an FCOS head
(classification with focal loss, ltrb box regression with GIoU loss, centerness), plus
CondInst's two additions:

* a **controller** on the box tower predicts, per location, the 169 parameters of a dynamic
  mask head (three 1x1 convolutions 10 -> 8 -> 8 -> 1 with ReLU; input: the mask branch's 8
  channels and 2 relative coordinates);
* a **mask branch** on P3 (stride 8) gives 8 shared channels; each instance's mask is its
  dynamic head applied there, upsampled 2x to stride 4, trained with dice loss against the
  GT mask sampled at stride 4.

FCOS assignment: a location is positive for a box when it lies inside the box, within
1.5 x stride of its centre (centre sampling), and the box's largest ltrb distance falls in
the level's range; among several, the smallest box wins. An image without instances has no
positive location and zero box and mask loss. Per-instance mask-loss weights (seed 000
eq. 1) scale each positive's dice loss.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18, resnet50, resnet101
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import batched_nms, generalized_box_iou_loss, sigmoid_focal_loss
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelP6P7

STRIDES = (8, 16, 32, 64, 128)
SIZE_RANGES = ((0, 64), (64, 128), (128, 256), (256, 512), (512, math.inf))
MASK_CHANNELS = 8
NUM_PARAMS = (MASK_CHANNELS + 2) * 8 + 8 + 8 * 8 + 8 + 8 * 1 + 1  # 169
CENTER_RADIUS = 1.5
MAX_MASK_INSTANCES = 500  # positives whose masks are trained per batch (CondInst's cap)


def _tower(channels: int, depth: int) -> nn.Sequential:
    layers = []
    for _ in range(depth):
        layers += [nn.Conv2d(channels, channels, 3, padding=1),
                   nn.GroupNorm(min(32, channels // 4), channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def _paired_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of ``a[i]`` with ``b[i]`` (``(N, 4)`` xyxy each)."""
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp_min(0).prod(1)
    area = (a[:, 2:] - a[:, :2]).clamp_min(0).prod(1) + (b[:, 2:] - b[:, :2]).clamp_min(0).prod(1)
    return inter / (area - inter).clamp_min(1e-6)


def _rank_mean(*values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each value summed over the ``torch.distributed`` ranks and divided by their number
    (the values unchanged in one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    stacked = torch.stack([v.detach().float() for v in values])
    dist.all_reduce(stacked)
    return tuple(stacked / dist.get_world_size())


class CondInst(nn.Module):
    """``forward(images)``: head outputs; ``losses(images, targets)`` in training,
    ``detect(images)`` in eval.

    ``images``: ``(B, 3, S, S)`` normalised; ``targets``: per image ``boxes`` (xyxy, input
    pixels), ``labels`` (class indices), ``masks`` ``(N, S, S)`` float, optional ``weights``.
    """

    def __init__(self, num_classes: int, preset: str = "tiny",
                 backbone: str | None = None) -> None:
        super().__init__()
        presets = {"tiny": (resnet18, (128, 256, 512), 64, 2),
                   "r50": (resnet50, (512, 1024, 2048), 256, 4),
                   "r101": (resnet101, (512, 1024, 2048), 256, 4)}
        if preset not in presets:
            raise ValueError(f"unknown CondInst preset {preset!r}; expected one of "
                             f"{', '.join(presets)}")
        make, chans, width, depth = presets[preset]
        resnet = make()
        self.num_classes = num_classes
        self.body = IntermediateLayerGetter(resnet, {"layer2": "c3", "layer3": "c4",
                                                     "layer4": "c5"})
        if backbone is not None:  # ImageNet weights, loaded strictly
            from pseudolabel.students.backbones import load_condinst_backbone

            load_condinst_backbone(self.body, backbone)
        self.fpn = FeaturePyramidNetwork(list(chans), width, LastLevelP6P7(width, width))
        self.cls_tower, self.box_tower = _tower(width, depth), _tower(width, depth)
        self.cls_logits = nn.Conv2d(width, num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(width, 4, 3, padding=1)
        self.ctrness = nn.Conv2d(width, 1, 3, padding=1)
        self.controller = nn.Conv2d(width, NUM_PARAMS, 3, padding=1)
        self.scales = nn.Parameter(torch.ones(len(STRIDES)))
        self.mask_branch = nn.Sequential(*[m for _ in range(3) for m in (
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True))],
            nn.Conv2d(width, MASK_CHANNELS, 1))
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - 0.01) / 0.01))
        nn.init.normal_(self.controller.weight, std=0.01)
        nn.init.zeros_(self.controller.bias)

    # -- network -------------------------------------------------------------------------
    def forward(self, images: torch.Tensor):
        """Head outputs: class logits, box distances, centerness, controller parameters (all
        ``(B, L, ...)`` over the L locations of P3-P7), location centres and levels, and the
        P3 mask-branch features. Run it under autocast; the losses cast to fp32."""
        dev = images.device
        feats = list(self.fpn(self.body(images)).values())  # P3..P7
        cls, box, ctr, par, locs = [], [], [], [], []
        for level, (f, stride) in enumerate(zip(feats, STRIDES, strict=True)):
            c, b = self.cls_tower(f), self.box_tower(f)
            cls.append(self.cls_logits(c).flatten(2).transpose(1, 2))
            ltrb = F.relu(self.bbox_pred(b) * self.scales[level]) * stride
            box.append(ltrb.flatten(2).transpose(1, 2))
            ctr.append(self.ctrness(b).flatten(2).transpose(1, 2))
            par.append(self.controller(b).flatten(2).transpose(1, 2))
            h, w = f.shape[-2:]
            ys, xs = torch.meshgrid(torch.arange(h, device=dev), torch.arange(w, device=dev),
                                    indexing="ij")
            xy = torch.stack([xs.flatten(), ys.flatten()], 1).float() * stride + stride // 2
            locs.append((xy, torch.full((h * w,), level, device=dev)))
        mask_feats = self.mask_branch(feats[0])
        xy = torch.cat([p[0] for p in locs])
        levels = torch.cat([p[1] for p in locs])
        return (torch.cat(cls, 1), torch.cat(box, 1), torch.cat(ctr, 1)[..., 0],
                torch.cat(par, 1), xy, levels, mask_feats)

    @staticmethod
    def dynamic_masks(params: torch.Tensor, locations: torch.Tensor,
                      mask_feats: torch.Tensor) -> torch.Tensor:
        """Mask logits ``(N, h, w)`` at stride 8 of N instances on one image's mask features
        ``(8, h, w)``: relative coordinates (/ 128 px, as CondInst's sizes of interest), then
        the instance's three 1x1 convolutions."""
        n = len(params)
        h, w = mask_feats.shape[-2:]
        ys, xs = torch.meshgrid(torch.arange(h, device=params.device),
                                torch.arange(w, device=params.device), indexing="ij")
        grid = torch.stack([xs, ys], 0).float() * 8 + 4  # pixel centres of stride-8 cells
        rel = (locations[:, :, None, None] - grid[None]) / 128.0  # (N, 2, h, w)
        x = torch.cat([rel, mask_feats[None].expand(n, -1, -1, -1)], 1).flatten(2)  # (N,10,hw)
        sizes = [((MASK_CHANNELS + 2), 8), (8, 8), (8, 1)]
        offset = 0
        for k, (cin, cout) in enumerate(sizes):
            weight = params[:, offset: offset + cin * cout].reshape(n, cout, cin)
            offset += cin * cout
            bias = params[:, offset: offset + cout].reshape(n, cout, 1)
            offset += cout
            x = torch.bmm(weight, x) + bias
            if k < len(sizes) - 1:
                x = F.relu(x)
        return x.reshape(n, h, w)

    # -- training ------------------------------------------------------------------------
    @staticmethod
    def assign(xy: torch.Tensor, levels: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """FCOS assignment: for each location, the index of its box, or -1."""
        if len(boxes) == 0:
            return torch.full((len(xy),), -1, dtype=torch.long, device=xy.device)
        x, y = xy[:, 0:1], xy[:, 1:2]
        ltrb = torch.stack([x - boxes[:, 0], y - boxes[:, 1], boxes[:, 2] - x,
                            boxes[:, 3] - y], -1)  # (L, G, 4)
        inside = ltrb.min(-1).values > 0
        strides = torch.tensor(STRIDES, device=xy.device, dtype=torch.float)[levels]
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        radius = CENTER_RADIUS * strides[:, None]
        near = ((x - centre[:, 0]).abs() < radius) & ((y - centre[:, 1]).abs() < radius)
        reach = ltrb.max(-1).values
        lo = torch.tensor([r[0] for r in SIZE_RANGES], device=xy.device)[levels][:, None]
        hi = torch.tensor([r[1] for r in SIZE_RANGES], device=xy.device)[levels][:, None]
        ok = inside & near & (reach >= lo) & (reach <= hi)
        area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[None].expand_as(ok)
        area = torch.where(ok, area, torch.full_like(area, math.inf))
        best, idx = area.min(1)
        idx[torch.isinf(best)] = -1
        return idx

    def losses(self, images: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        return self.losses_from_heads(self(images), targets)

    def losses_from_heads(self, heads, targets: list[dict], *, iou_scores: bool = False,
                          mask_loss=None) -> dict[str, torch.Tensor]:
        """Focal, GIoU, centerness and dice losses of ``forward``'s outputs, in fp32.

        ``iou_scores``: the class target of a positive is the IoU of its predicted box with
        its GT box (VarifocalNet), so the score ranks boxes by localisation (BoxSeg's ``s``).
        ``mask_loss(model, rows, par, xy, mask_feats, targets, zero) -> dict`` replaces the
        dice loss on GT masks (BoxSeg's box-supervised and quality-weighted losses);
        ``rows`` are the positives' ``(image, location, target index)``.
        """
        cls, box, ctr, par, xy, levels, mask_feats = (t.float() if t.is_floating_point() else t
                                                      for t in heads)
        cls_t = torch.zeros_like(cls)
        total_pos, box_l, ctr_l, ctr_sum = 0, [], [], []
        mask_rows = []  # (image, location, target) of positives
        for b, t in enumerate(targets):
            idx = self.assign(xy, levels, t["boxes"])
            pos = torch.nonzero(idx >= 0).squeeze(1)
            if len(pos) == 0:
                continue
            gt = idx[pos]
            g = t["boxes"][gt]
            p_xy = xy[pos]
            target_ltrb = torch.cat([p_xy - g[:, :2], g[:, 2:] - p_xy], 1)
            lr, tb = target_ltrb[:, 0::2], target_ltrb[:, 1::2]
            centerness = torch.sqrt((lr.min(1).values / lr.max(1).values)
                                    * (tb.min(1).values / tb.max(1).values))
            pred = box[b, pos]
            pred_xyxy = torch.cat([p_xy - pred[:, :2], p_xy + pred[:, 2:]], 1)
            cls_t[b, pos, t["labels"][gt]] = _paired_iou(pred_xyxy.detach(), g) \
                .clamp_min(1e-6) if iou_scores else 1.0
            box_l.append(generalized_box_iou_loss(pred_xyxy, g, reduction="none") * centerness)
            ctr_sum.append(centerness)
            ctr_l.append(F.binary_cross_entropy_with_logits(ctr[b, pos], centerness,
                                                            reduction="none"))
            total_pos += len(pos)
            mask_rows += [(b, int(p), int(k)) for p, k in zip(pos, gt, strict=True)]
        # normalisers averaged over ranks (FCOS/AdelaiDet's reduce_sum / world): each rank's
        # share of the global sum, so DDP's gradient average equals one process's gradient
        ctr_total = torch.cat(ctr_sum).sum().detach() if total_pos else cls.new_zeros(())
        num_pos, ctr_norm = _rank_mean(cls.new_tensor(float(total_pos)), ctr_total)
        num_pos = num_pos.clamp_min(1.0)
        if iou_scores:
            from pseudolabel.boxseg.losses import varifocal_loss

            out = {"loss_cls": varifocal_loss(cls, cls_t) / num_pos}
        else:
            out = {"loss_cls": sigmoid_focal_loss(cls, cls_t, reduction="sum") / num_pos}
        zero = cls.new_zeros(())
        if total_pos:
            out["loss_box"] = torch.cat(box_l).sum() / ctr_norm.clamp_min(1e-6)
            out["loss_ctr"] = torch.cat(ctr_l).sum() / num_pos
        else:
            out["loss_box"] = out["loss_ctr"] = zero
        if mask_loss is None:
            out["loss_mask"] = self._mask_loss(mask_rows, par, xy, mask_feats, targets, zero)
        else:
            out.update(mask_loss(self, mask_rows, par, xy, mask_feats, targets, zero))
        out["loss"] = sum(out.values())
        return out

    def stride4_masks(self, rows, par, xy, mask_feats):
        """Per image ``b`` of the positive ``rows`` ``(b, location, target)``: ``(b, target
        indices, (N, S/4, S/4) mask logits)``, the dynamic heads' outputs upsampled to
        stride 4."""
        for b in sorted({r[0] for r in rows}):
            mine = [r for r in rows if r[0] == b]
            loc = torch.tensor([r[1] for r in mine], device=par.device)
            tgt = torch.tensor([r[2] for r in mine], device=par.device)
            logits = self.dynamic_masks(par[b, loc], xy[loc], mask_feats[b])
            yield b, tgt, F.interpolate(logits[None], scale_factor=2, mode="bilinear",
                                        align_corners=False)[0]

    def _mask_loss(self, rows, par, xy, mask_feats, targets, zero) -> torch.Tensor:
        if not rows:
            _rank_mean(zero.detach())  # every rank joins the collective
            return zero
        if len(rows) > MAX_MASK_INSTANCES:
            keep = torch.randperm(len(rows), device="cpu")[:MAX_MASK_INSTANCES].tolist()
            rows = [rows[i] for i in keep]
        losses, weights = [], []
        for b, tgt, logits in self.stride4_masks(rows, par, xy, mask_feats):
            gt = targets[b]["masks"][tgt][:, 2::4, 2::4]  # GT sampled at stride-4 centres
            gt = gt[:, : logits.shape[-2], : logits.shape[-1]]
            p = logits.sigmoid().flatten(1)
            g = gt.flatten(1)
            dice = 1 - 2 * (p * g).sum(1) / ((p * p).sum(1) + (g * g).sum(1)).clamp_min(1e-5)
            losses.append(dice)
            w = targets[b].get("weights")
            weights.append(w[tgt] if w is not None else torch.ones_like(dice))
        losses, weights = torch.cat(losses), torch.cat(weights)
        (count,) = _rank_mean(losses.new_tensor(float(len(losses))))
        return (weights * losses).sum() / count.clamp_min(1.0)

    @torch.no_grad()
    def candidates(self, images: torch.Tensor, k: int = 100) -> list[dict]:
        """Per image, the ``k`` locations with the highest class score before NMS (BoxSeg's
        teacher candidates): ``boxes`` (xyxy), ``scores`` ``(k, C)`` (sigmoid of the class
        logits: with ``iou_scores`` training, an IoU-aware box score) and ``mask_logits``
        ``(k, S/4, S/4)``."""
        cls, box, ctr, par, xy, levels, mask_feats = (
            t.float() if t.is_floating_point() else t for t in self(images))
        out = []
        for b in range(len(images)):
            scores = cls[b].sigmoid()
            top = scores.max(1).values.topk(min(k, len(scores))).indices
            ltrb = box[b, top]
            boxes = torch.cat([xy[top] - ltrb[:, :2], xy[top] + ltrb[:, 2:]], 1)
            masks = self.dynamic_masks(par[b, top], xy[top], mask_feats[b])
            masks = F.interpolate(masks[None], scale_factor=2, mode="bilinear",
                                  align_corners=False)[0]  # stride 4
            out.append({"boxes": boxes, "scores": scores[top], "mask_logits": masks})
        return out

    # -- inference -----------------------------------------------------------------------
    @torch.no_grad()
    def detect(self, images: torch.Tensor, score_thresh: float = 0.05, nms_iou: float = 0.6,
               topk: int = 100, candidates: int = 1000) -> list[dict]:
        """Per image: ``boxes`` (xyxy), ``scores``, ``labels``, ``mask_logits`` at stride 4."""
        cls, box, ctr, par, xy, levels, mask_feats = (
            t.float() if t.is_floating_point() else t for t in self(images))
        results = []
        for b in range(len(images)):
            scores = torch.sqrt(cls[b].sigmoid() * ctr[b].sigmoid()[:, None])
            flat = scores.flatten()
            keep = torch.nonzero(flat > score_thresh).squeeze(1)
            keep = keep[flat[keep].topk(min(candidates, len(keep))).indices]
            loc, lab = keep // self.num_classes, keep % self.num_classes
            p_xy, ltrb = xy[loc], box[b, loc]
            boxes = torch.cat([p_xy - ltrb[:, :2], p_xy + ltrb[:, 2:]], 1)
            s = flat[keep]
            kept = batched_nms(boxes, s, lab, nms_iou)[:topk]
            loc, lab, boxes, s = loc[kept], lab[kept], boxes[kept], s[kept]
            masks = self.dynamic_masks(par[b, loc], xy[loc], mask_feats[b]) if len(loc) \
                else mask_feats.new_zeros((0,) + mask_feats.shape[-2:])
            masks = F.interpolate(masks[None], scale_factor=2, mode="bilinear",
                                  align_corners=False)[0]
            results.append({"boxes": boxes, "scores": s, "labels": lab, "mask_logits": masks})
        return results
