"""A resumable training loop: fixed-key checkpoints, progress bar, stop on non-finite loss."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from pseudolabel.lock import StageLock
from pseudolabel.models.checkpoints import safe_torch_load

STATE_KEYS = ("model", "optimizer", "step", "history", "seconds")


def save_state(path: Path, model: nn.Module, optimizer, step: int, history: list,
               seconds: float, scaler: torch.amp.GradScaler | None = None,
               extra: dict | None = None) -> None:
    """Atomically write ``{model, optimizer, step, history, seconds}`` (STYLE 10), plus the
    fp16 gradient scaler's state when one is active and ``extra`` (tensors, lists, dicts,
    numbers: what else a run must resume, e.g. a memory bank)."""
    tmp = path.with_name(path.name + ".tmp")
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
             "history": history, "seconds": seconds}
    if scaler is not None and scaler.is_enabled():
        state["scaler"] = scaler.state_dict()
    if extra is not None:
        state["extra"] = extra
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_state(path: Path, model: nn.Module, optimizer,
               scaler: torch.amp.GradScaler | None = None,
               load_extra: Callable[[dict], None] | None = None) -> tuple[int, list, float]:
    """Resume mirrors save: weights-only loading (onto the model's device), strict keys."""
    state = safe_torch_load(path)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: a training state must be a dict of {list(STATE_KEYS)}")
    missing = [k for k in STATE_KEYS if k not in state]
    if missing:
        raise ValueError(f"{path}: training state lacks {missing}")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scaler is not None and scaler.is_enabled() and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    if load_extra is not None and "extra" in state:
        load_extra(state["extra"])
    return int(state["step"]), list(state["history"]), float(state["seconds"])


def _rewrite_history(path: Path, history: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        for step, stats in enumerate(history):
            f.write(json.dumps({"step": step, **stats}) + "\n")
    os.replace(tmp, path)


def train(model: nn.Module, optimizer, step_fn: Callable[[int], dict], *, steps: int,
          state_path: str | Path, every: int = 100, desc: str = "train",
          stop_after: int | None = None, progress: bool = True, save: bool = True,
          scaler: torch.amp.GradScaler | None = None,
          extra: tuple[Callable[[], dict], Callable[[dict], None]] | None = None) -> list[dict]:
    """Run ``step_fn(step)`` for ``step`` in ``[resumed, steps)``, checkpointing every ``every``.

    ``step_fn`` must derive all randomness from ``step`` so a resumed run continues exactly.
    ``stop_after`` ends this call early (after that many steps) to split training across
    runs. Returns the history (one dict of figures per step). A ``history.jsonl`` beside the
    state file gets one line per step. ``save=False`` (every rank but the first under
    ``torchrun``) resumes but writes nothing. ``scaler`` (fp16) is saved and resumed too.
    A writing run holds ``.train.lock`` in the state's folder: a second process training
    into the same folder is refused with the holder's pid. ``extra``: a ``(get, set)`` pair of
    more state saved with each checkpoint and restored on resume.
    """
    state_path = Path(state_path)
    state_path.parent.mkdir(parents=True, exist_ok=True)
    with StageLock(state_path.parent, "train") if save else contextlib.nullcontext():
        return _train(model, optimizer, step_fn, steps, state_path, every, desc, stop_after,
                      progress, save, scaler, extra)


def _train(model, optimizer, step_fn, steps, state_path: Path, every, desc, stop_after,
           progress, save, scaler, extra) -> list[dict]:
    start, history, seconds = 0, [], 0.0
    if state_path.is_file():
        start, history, seconds = load_state(state_path, model, optimizer, scaler,
                                             extra[1] if extra else None)
    end = steps if stop_after is None else min(steps, start + stop_after)
    log_path = state_path.with_name("history.jsonl")
    if save:  # one line per step up to the checkpoint, whatever a killed run appended after it
        _rewrite_history(log_path, history)
    log = open(log_path if save else os.devnull, "a")
    bar = tqdm(range(start, end), desc=desc, initial=start, total=steps, disable=not progress)
    t0 = time.perf_counter()
    try:
        for step in bar:
            stats = step_fn(step)
            history.append(stats)
            log.write(json.dumps({"step": step, **stats}) + "\n")
            log.flush()
            bar.set_postfix(loss=f"{stats['loss']:.3f}")
            if save and ((step + 1) % every == 0 or step + 1 == end):
                save_state(state_path, model, optimizer, step + 1, history,
                           seconds + time.perf_counter() - t0, scaler,
                           extra[0]() if extra else None)
    finally:
        log.close()
    return history
