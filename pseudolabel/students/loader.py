"""Which images a training step sees, and a ``DataLoader`` that prepares them ahead.

A step's global batch is a deterministic function of ``(seed, step)``: a seeded permutation
per epoch, consecutive slices of it. Under ``torchrun`` rank r takes positions
``[r * b, (r + 1) * b)`` of it (``b = batch / world``), so the images of a global step are the
same for any number of ranks, and each image's LSJ draws come from ``(seed, step, position)``:
two ranks see exactly what one process with the same global batch sees (a copy-paste peer
too: it is drawn from the same generator after the LSJ). Items are built in
``DataLoader`` workers (decoding, RLE, LSJ) while the model trains on the previous step.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pseudolabel.students.copy_paste import PeerPool
from pseudolabel.students.data import InstanceData, large_scale_jitter


def global_batch(num_images: int, step: int, batch: int, seed: int) -> list[int]:
    """Image indices of the global batch of ``step``."""
    per_epoch = max(1, num_images // batch)
    perm = np.random.default_rng([seed, 1, step // per_epoch]).permutation(num_images)
    start = (step % per_epoch) * batch
    return [int(perm[(start + i) % num_images]) for i in range(batch)]


def image_seed(seed: int, step: int, position: int) -> int:
    """The seed of one image of one global batch (its LSJ and its loss's point draws)."""
    return int(np.random.SeedSequence([seed, step, position]).generate_state(1)[0])


class StepBatches(Dataset):
    """Item k: this rank's share of global step ``start + k`` as a list of ``Sample`` objects,
    with each image's global position (for its seed); ``peers``: paste one of them into each
    image (peer-assisted copy-paste, ``copy_paste.py``)."""

    def __init__(self, data: InstanceData, *, batch: int, rank: int, world: int, seed: int,
                 size: int, scale_range: tuple[float, float], start: int, end: int,
                 peers: PeerPool | None = None) -> None:
        if batch % world:
            raise ValueError(f"batch {batch} does not split over {world} ranks; use a "
                             "multiple of the number of processes")
        self.data, self.batch, self.rank, self.world = data, batch, rank, world
        self.seed, self.size, self.scale_range = seed, size, scale_range
        self.start, self.end = start, end
        self.peers = peers

    def __len__(self) -> int:
        return self.end - self.start

    def positions(self) -> range:
        per_rank = self.batch // self.world
        return range(self.rank * per_rank, (self.rank + 1) * per_rank)

    def __getitem__(self, k: int):
        step = self.start + k
        ids = global_batch(len(self.data), step, self.batch, self.seed)
        out = []
        for pos in self.positions():
            rng = np.random.default_rng(image_seed(self.seed, step, pos))
            sample = large_scale_jitter(*self.data.load(ids[pos]), rng, self.size,
                                        self.scale_range)
            if self.peers is not None:
                sample = self.peers.paste(sample, rng, self.scale_range)
            out.append(sample)
        return out, [image_seed(self.seed, step, pos) for pos in self.positions()]


def _as_is(item):
    return item


def step_loader(dataset: StepBatches, workers: int, pin_memory: bool = False) -> DataLoader:
    """Steps in order; ``workers`` processes build them ahead (0: in this process)."""
    return DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                      collate_fn=_as_is, pin_memory=pin_memory,
                      prefetch_factor=2 if workers else None,
                      persistent_workers=False,
                      worker_init_fn=_one_thread if workers else None)


def _one_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)
