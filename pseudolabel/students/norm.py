"""BatchNorm for students trained on several ranks.

* A pre-trained (ImageNet) backbone's BatchNorm is frozen: statistics and affine parameters
  stay as loaded (torchvision's ``FrozenBatchNorm2d``), detectron2's default for the ResNet
  backbones of Mask2Former and CondInst, whose per-GPU batches are too small for BN.
* A backbone trained from scratch keeps learning BN; under ``torchrun`` its statistics are
  computed over the global batch (synchronised BN), so several ranks train what one process
  does: ``torch.nn.SyncBatchNorm`` on GPUs, and on CPUs (where PyTorch's version refuses to
  run) :class:`AllReduceBatchNorm2d`, the same arithmetic through a differentiable
  all-reduce.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d


class AllReduceBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics (mean, biased variance for normalising,
    unbiased for the running estimate) cover the batches of every rank."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not dist.is_initialized() or dist.get_world_size() == 1:
            return super().forward(x)
        c = x.shape[1]
        xf = x.float()
        # two passes (global mean, then the squared deviations from it), as BatchNorm's own
        # kernels: E[x^2] - mean^2 in fp32 cancels where |mean| >> std, and its error (~1e-3
        # of the gradient here) broke the equality of two ranks with one process
        local = torch.cat([xf.sum((0, 2, 3)), xf.new_tensor([x.numel() / c])])
        total = dist_nn.all_reduce(local)  # sums, and sums the gradients back
        n = total[-1]
        mean = total[:c] / n
        centred = xf - mean[None, :, None, None]
        var = dist_nn.all_reduce((centred * centred).sum((0, 2, 3))) / n
        with torch.no_grad():
            m = self.momentum if self.momentum is not None else 0.1
            self.running_mean.mul_(1 - m).add_(m * mean.detach())
            self.running_var.mul_(1 - m).add_(m * var.detach() * n / (n - 1).clamp_min(1))
            self.num_batches_tracked += 1
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def _swap(module: nn.Module, make) -> nn.Module:
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, AllReduceBatchNorm2d):
            setattr(module, name, make(child))
        else:
            _swap(child, make)
    return module


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """Every BatchNorm2d in ``module`` becomes a ``FrozenBatchNorm2d`` with its values."""
    def make(bn: nn.BatchNorm2d) -> FrozenBatchNorm2d:
        frozen = FrozenBatchNorm2d(bn.num_features, eps=bn.eps)
        frozen.weight.copy_(bn.weight.detach())
        frozen.bias.copy_(bn.bias.detach())
        frozen.running_mean.copy_(bn.running_mean)
        frozen.running_var.copy_(bn.running_var)
        return frozen.to(bn.weight.device)

    return _swap(module, make)


def sync_batch_norm(module: nn.Module, device: torch.device) -> nn.Module:
    """Synchronised BN for the rank's device: PyTorch's on CUDA, the all-reduce one else."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)

    def make(bn: nn.BatchNorm2d) -> AllReduceBatchNorm2d:
        out = AllReduceBatchNorm2d(bn.num_features, bn.eps, bn.momentum, bn.affine,
                                   bn.track_running_stats).to(bn.weight.device)
        out.load_state_dict(bn.state_dict())
        return out

    return _swap(module, make)
