"""Image-embedding cache: the frozen encoder runs once per image for every step and teacher.

Embeddings are stored as fp16 in one memory-mapped file per encoder; ``index.json`` maps an
image key (image id + sha256 of the file) to a row, with the image's original and input
sizes. The folder name carries the encoder's key (model name + checkpoint sha256), so a cache
made by another encoder, or for an image whose file changed, is never used.

Filling is shared by ranks: the images not cached yet get rows in the order given, after the
rows in use; rank r encodes the k-th of them for k mod world = r and writes its own rows.
Each rank journals what it wrote (``index.rank<r>.json``, after every batch), and rank 0
merges the journals into ``index.json`` once all ranks are done, so the files are the same
bytes whether one rank or several filled them, and a killed fill keeps every finished batch.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pseudolabel.data.images import load_image
from pseudolabel.models.predictor import ImageEmbeddings, PromptedSam


def file_key(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, sort_keys=True))
    os.replace(tmp, path)


class EmbeddingCache:
    def __init__(self, root: str | Path, encoder_key: str, capacity: int,
                 shape: tuple[int, int, int]) -> None:
        """``capacity``: rows to make room for now (one process); ``fill`` grows as needed."""
        self.dir = Path(root) / f"embeddings-{encoder_key[:24]}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.shape = tuple(shape)
        self.row_bytes = 2 * int(np.prod(shape))
        self._reload()
        if capacity > self._rows_in_file():
            self._grow(capacity)

    # -- storage ----------------------------------------------------------------------------
    def _reload(self) -> None:
        path = self.dir / "index.json"
        self.index = json.loads(path.read_text()) if path.is_file() else {
            "shape": list(self.shape), "rows": {}}
        if tuple(self.index["shape"]) != self.shape:
            raise ValueError(f"{self.dir}: cached shape {self.index['shape']} != "
                             f"{list(self.shape)}")
        self._open()

    def _rows_in_file(self) -> int:
        data = self.dir / "embeddings.f16"
        return data.stat().st_size // self.row_bytes if data.is_file() else 0

    def _open(self) -> None:
        n = self._rows_in_file()
        self.array = np.memmap(self.dir / "embeddings.f16", dtype=np.float16, mode="r+",
                               shape=(n, *self.shape)) if n else None

    def _grow(self, rows: int) -> None:
        """Make the file hold ``rows`` rows; rows already written keep their place."""
        with open(self.dir / "embeddings.f16", "ab") as f:
            f.truncate(rows * self.row_bytes)
        self._open()

    def _merge_journals(self) -> None:
        journals = sorted(self.dir.glob("index.rank*.json"))
        if not journals:
            return
        for j in journals:
            self.index["rows"].update(json.loads(j.read_text()))
        _write_json(self.dir / "index.json", self.index)
        for j in journals:
            j.unlink()

    # -- use --------------------------------------------------------------------------------
    def __contains__(self, key: str) -> bool:
        return key in self.index["rows"]

    def get(self, key: str) -> ImageEmbeddings:
        """The cached embedding (fp32, on the host) with its image's sizes."""
        row = self.index["rows"][key]
        emb = torch.from_numpy(np.asarray(self.array[row["row"]], dtype=np.float32))[None]
        return ImageEmbeddings(emb, [tuple(row["original"])], [tuple(row["input"])])

    @torch.no_grad()
    def fill(self, items: list[tuple[str, Path]], predictor: PromptedSam, batch_size: int = 8,
             progress: bool = True, rank: int = 0, world: int = 1,
             barrier: Callable[[], None] | None = None) -> int:
        """Encode the ``(key, image path)`` items not cached yet; returns how many were new.

        With ``world`` ranks, every rank calls this with the same items (``barrier``
        synchronises them); each encodes its share and rank 0 writes the index.
        """
        barrier = barrier or (lambda: None)
        if rank == 0:
            self._merge_journals()  # batches a killed fill finished
        barrier()
        self._reload()
        todo = [(k, p) for k, p in dict.fromkeys(items) if k not in self]
        base = max((r["row"] for r in self.index["rows"].values()), default=-1) + 1
        if rank == 0 and base + len(todo) > self._rows_in_file():
            self._grow(base + len(todo))
        barrier()
        self._open()
        mine = [(base + j, k, p) for j, (k, p) in enumerate(todo) if j % world == rank]
        journal_path = self.dir / f"index.rank{rank}.json"
        journal: dict = {}
        for s in tqdm(range(0, len(mine), batch_size), desc="encode images", unit="batch",
                      disable=not progress or not mine):
            batch = mine[s: s + batch_size]
            emb = predictor.encode([load_image(p) for _, _, p in batch])
            for i, (row, key, _) in enumerate(batch):
                self.array[row] = emb.embeddings[i].cpu().numpy().astype(np.float16)
                journal[key] = {"row": row, "original": list(emb.original_sizes[i]),
                                "input": list(emb.input_sizes[i])}
            self.array.flush()
            _write_json(journal_path, journal)  # a killed run keeps every finished batch
        barrier()
        if rank == 0:
            self._merge_journals()
        barrier()
        self._reload()
        return len(todo)
