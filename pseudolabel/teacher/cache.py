"""Image-embedding cache: the frozen encoder runs once per image for every step and teacher.

Embeddings are stored as fp16 in one memory-mapped file per encoder; ``index.json`` maps an
image key (image id + sha256 of the file) to a row, with the image's original and input
sizes. The folder name carries the encoder's key (model name + checkpoint sha256), so a cache
made by another encoder, or for an image whose file changed, is never used.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pseudolabel.data.images import load_image
from pseudolabel.models.predictor import ImageEmbeddings, PromptedSam


def file_key(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


class EmbeddingCache:
    def __init__(self, root: str | Path, encoder_key: str, capacity: int,
                 shape: tuple[int, int, int]) -> None:
        self.dir = Path(root) / f"embeddings-{encoder_key[:24]}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.shape = tuple(shape)
        index_path = self.dir / "index.json"
        self.index = json.loads(index_path.read_text()) if index_path.is_file() else {
            "shape": list(shape), "rows": {}}
        if tuple(self.index["shape"]) != self.shape:
            raise ValueError(f"{self.dir}: cached shape {self.index['shape']} != {list(shape)}")
        capacity = max(capacity, len(self.index["rows"]))
        data = self.dir / "embeddings.f16"
        existing = data.stat().st_size // (2 * int(np.prod(shape))) if data.is_file() else 0
        if existing < capacity:  # grow the file; rows already written keep their place
            with open(data, "ab") as f:
                f.truncate(capacity * 2 * int(np.prod(shape)))
            existing = capacity
        self.array = np.memmap(data, dtype=np.float16, mode="r+", shape=(existing, *shape))

    def __contains__(self, key: str) -> bool:
        return key in self.index["rows"]

    def get(self, key: str) -> ImageEmbeddings:
        row = self.index["rows"][key]
        emb = torch.from_numpy(np.asarray(self.array[row["row"]], dtype=np.float32))[None]
        return ImageEmbeddings(emb, [tuple(row["original"])], [tuple(row["input"])])

    def _save_index(self) -> None:
        self.array.flush()
        tmp = self.dir / "index.json.tmp"
        tmp.write_text(json.dumps(self.index))
        os.replace(tmp, self.dir / "index.json")

    @torch.no_grad()
    def fill(self, items: list[tuple[str, Path]], predictor: PromptedSam, batch_size: int = 8,
             progress: bool = True) -> int:
        """Encode the ``(key, image path)`` items not cached yet; returns how many were new."""
        todo = [(k, p) for k, p in items if k not in self]
        for s in tqdm(range(0, len(todo), batch_size), desc="encode images", unit="batch",
                      disable=not progress or not todo):
            batch = todo[s: s + batch_size]
            emb = predictor.encode([load_image(p) for _, p in batch])
            for i, (key, _) in enumerate(batch):
                row = len(self.index["rows"])
                self.array[row] = emb.embeddings[i].cpu().numpy().astype(np.float16)
                self.index["rows"][key] = {"row": row, "original": list(emb.original_sizes[i]),
                                           "input": list(emb.input_sizes[i])}
            self._save_index()  # a killed run keeps every finished batch
        return len(todo)
