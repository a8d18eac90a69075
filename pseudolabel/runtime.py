"""Where and how models run: device, precision and rank, in one object built once per command.

Every stage and model wrapper receives a :class:`Runtime` (STYLE 13): nothing else reads
``LOCAL_RANK``, calls ``.cuda()`` or initialises the process group. :func:`setup_runtime`
builds it from ``--device``, ``--precision``, the config's ``runtime:`` block and the
environment ``torchrun`` sets (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``):

* ``auto`` is ``cuda:$LOCAL_RANK`` when CUDA is available, else ``cpu``; ``cuda`` is the same
  GPU explicitly; ``cuda:N`` a fixed one. Asking for CUDA where there is none is an error
  naming the flag.
* Under ``torchrun`` each rank sets its own GPU (``torch.cuda.set_device``) and joins the
  process group bound to it (``init_process_group(device_id=...)``: NCCL on GPUs, gloo on
  CPUs), so barriers and collectives run on each rank's own device.
* ``precision``: ``fp32``, ``bf16`` or ``fp16`` autocast around model forwards; thresholds,
  IoUs, loss reductions and RLE stay in fp32 (callers cast with ``.float()``); fp16 training
  uses a gradient scaler. bf16 autocast runs on the CPU too, so the same code path is tested
  without a GPU. On CUDA, fp32 matmuls may use TF32.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
DEVICE_HELP = ("Device: auto (cuda:$LOCAL_RANK when CUDA is available, else cpu), cpu, cuda "
               "or cuda:N.")
PRECISION_HELP = ("Precision of model forwards: fp32, bf16 or fp16 (autocast; thresholds, "
                  "IoUs and loss reductions stay fp32; fp16 training uses a gradient scaler).")


@dataclass(frozen=True)
class Runtime:
    """Device, precision and this process's place among ``world_size`` ranks."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: expected one of "
                             f"{', '.join(PRECISIONS)}")

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes shared files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return PRECISIONS[self.precision]

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast for model forwards at this precision (a no-op for fp32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler that is active only for fp16 (bf16 and fp32 need none)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def barrier(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.barrier()

    def describe(self) -> dict:
        return {"device": str(self.device), "precision": self.precision,
                "world_size": self.world_size}


CPU = Runtime()


def resolve_device(spec: str, local_rank: int = 0, *, flag: str = "--device") -> torch.device:
    """``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` -> a ``torch.device``; errors name ``flag``."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() \
            else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"{flag} {spec}: CUDA is not available on this machine "
                             f"(torch {torch.__version__}, built for CUDA "
                             f"{torch.version.cuda or 'none'}); use {flag} cpu or auto")
        index = local_rank if spec == "cuda" else _cuda_index(spec, flag)
        if index >= torch.cuda.device_count():
            raise ValueError(f"{flag} {spec}: this machine has {torch.cuda.device_count()} "
                             "CUDA device(s)")
        return torch.device("cuda", index)
    raise ValueError(f"{flag} {spec!r}: expected auto, cpu, cuda or cuda:N")


def _cuda_index(spec: str, flag: str) -> int:
    try:
        return int(spec.split(":", 1)[1])
    except ValueError:
        raise ValueError(f"{flag} {spec!r}: expected cuda:N with N a device number") from None


def setup_runtime(device: str | None = None, precision: str | None = None,
                  config: dict | None = None) -> Runtime:
    """The command's runtime: flags first, then the config's ``runtime:`` block, then defaults
    (``auto``, ``fp32``); joins the process group under ``torchrun``."""
    config = config or {}
    device = device or config.get("device") or "auto"
    precision = precision or config.get("precision") or "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if precision == "bf16" and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"--precision bf16: {torch.cuda.get_device_name(dev)} has no bf16 "
                         "support; use fp16 or fp32")
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            dist.init_process_group(backend="nccl", device_id=dev)
        else:
            dist.init_process_group(backend="gloo")
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return Runtime(dev, precision, rank, world)
