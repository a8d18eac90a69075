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
    """Path of the shipped weights of ``kind`` (``sam``, ``gdino`` or ``text``)."""
    if kind not in SHIPPED:
        raise ValueError(f"no shipped weights for {kind!r}; known: {list(SHIPPED)}")
    entry = manifest().get("clip" if kind == "text" else kind, {})
    path = ASSETS / entry.get("file", SHIPPED[kind])
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


def shipped_sam_model() -> str:
    """The SAM preset the shipped weights are for (``tiny`` or ``tiny_hr``)."""
    return manifest().get("sam", {}).get("sam_model", "tiny")


def resolve_sam(sam_model: str, checkpoint: str | Path | None) -> Path | None:
    """A SAM variant's weights: ``"default"`` is the shipped file for the shipped preset and
    ``None`` (the official file, fetched) for an official variant; a path is that file."""
    if checkpoint is not None and str(checkpoint) == "default":
        if sam_model == shipped_sam_model():
            return shipped_path("sam")
        if sam_model.startswith("tiny"):
            raise ValueError(f"no shipped weights for SAM preset {sam_model!r}: the shipped "
                             f"SAM is {shipped_sam_model()!r} (models.sam / --sam-model)")
        return None
    return resolve(checkpoint, "sam")


def manifest() -> dict:
    path = ASSETS / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}
