"""Safe checkpoint files: safetensors or ``torch.load(weights_only=True)``, strict loading."""

from __future__ import annotations

import pickle
from pathlib import Path
from urllib.error import URLError

import torch
from safetensors.torch import load_file, save_file
from torch import nn


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a plain PyTorch state dict.

    Pickled files are read with ``weights_only=True``: a file whose pickle would import
    modules or call functions (code execution) is refused with ``ValueError`` before any
    of it runs.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint file not found")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise ValueError(f"{path}: not a readable safetensors file ({exc})") from None
    obj = safe_torch_load(path)
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]  # training checkpoints that wrap the weights
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a dict of tensors (a state dict)")
    return obj


def safe_torch_load(path: str | Path):
    """``torch.load(weights_only=True)`` onto the CPU, every failure a ``ValueError`` naming the
    file: a pickle that would run code or build objects other than tensors is refused (one
    message for every checkpoint the package reads: weights, teachers, training states)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        first = first.split(". ")[0] if "Weights only load failed" in first else first
        raise ValueError(
            f"{path}: refused: this checkpoint's pickle would run code or build objects other "
            f"than tensors ({_unsafe_global(str(exc)) or first}). Only plain state dicts or "
            "safetensors files are loaded; nothing of it was run."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({exc})") from None


def _unsafe_global(message: str) -> str:
    """What a refused pickle asked for (a global, an opcode), from torch's message."""
    for line in message.splitlines():
        line = line.strip().removeprefix("WeightsUnpickler error: ").strip()
        if line.startswith(("Unsupported global", "Unsupported operand", "Unsupported class")):
            return line.split(" was not")[0]
    return ""


def load_weights(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with an error listing missing and unexpected keys and
    shape mismatches, before anything is copied."""
    def show(keys):
        return ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "")

    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    # buffers a module may rebuild itself (FrozenBatchNorm drops num_batches_tracked)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    unexpected = [k for k in unexpected if not k.endswith("num_batches_tracked")]
    if missing or unexpected or shapes:
        raise ValueError(
            f"{source}: weights do not fit {type(module).__name__}: "
            f"missing keys [{show(missing)}], unexpected keys [{show(unexpected)}]"
            + (f", shape mismatches [{show(shapes)}]" if shapes else ""))
    module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


def save_safetensors(path: str | Path, state: dict[str, torch.Tensor],
                     metadata: dict | None = None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # clone: tied weights (Grounding DINO's shared box heads) would share storage, which
    # safetensors refuses; each name gets its own copy and strict loading fills every alias
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    save_file(tensors, str(path), metadata={k: str(v) for k, v in (metadata or {}).items()})


def fetch_to_cache(url: str, file_name: str, flag: str) -> Path:
    """The cached copy of ``url`` under the torch hub cache, downloading it if needed.

    Without network, raises ``ValueError`` naming the missing file, where it was looked for,
    and the command-line ``flag`` that takes a local copy.
    """
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    target = cache / file_name
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(target), progress=True)
    except (URLError, OSError) as exc:
        raise ValueError(
            f"checkpoint {file_name} is not in {cache} and could not be downloaded ({exc}). "
            f"Fetch {url} on a machine with network and pass {flag} PATH."
        ) from None
    return target
