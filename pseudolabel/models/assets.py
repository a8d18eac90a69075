"""The synthetic foundation weights shipped in ``pseudolabel/assets`` (issue 4).

``"default"`` as a checkpoint names the shipped file of that model; anything else is a path.
"""

from __future__ import annotations

import json
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1] / "assets"
SHIPPED = {"sam": "sam_tiny.safetensors", "gdino": "gdino_tiny.safetensors",
           "text": "text_tiny.safetensors"}


def shipped_path(kind: str) -> Path:
    """Path of the shipped weights of ``kind`` (``sam`` or ``gdino``)."""
    if kind not in SHIPPED:
        raise ValueError(f"no shipped weights for {kind!r}; known: {list(SHIPPED)}")
    path = ASSETS / SHIPPED[kind]
    if not path.is_file():
        raise ValueError(f"{path}: shipped weights missing; re-create them with "
                         "scripts/pretrain_synthetic_foundation.py")
    return path


def resolve(checkpoint: str | Path | None, kind: str) -> Path | None:
    """``"default"`` -> the shipped file; a path -> that path (must exist); None -> None."""
    if checkpoint is None:
        return None
    if str(checkpoint) == "default":
        return shipped_path(kind)
    path = Path(checkpoint)
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint not found")
    return path


def manifest() -> dict:
    path = ASSETS / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}
