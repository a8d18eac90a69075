"""One process at a time in a stage's folder.

Two ``teacher-finetune`` processes on one run directory both ran (each 30x slower, their
histories interleaved). A stage now holds a lock file (pid, host, start time, command) while it
works; a second process gets an error naming the holder. A lock whose process is gone (same
host, pid not running) is stale and taken over. On another host liveness cannot be checked:
the error says which file to delete if that process is gone.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path


class StageBusy(ValueError):
    """The stage's folder is locked by a live process."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class StageLock:
    """``with StageLock(folder, "train"):`` holds ``folder/.train.lock`` for the block."""

    def __init__(self, folder: str | Path, name: str) -> None:
        self.path = Path(folder) / f".{name}.lock"
        self.held = False

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:  # being written this instant, or garbage: look again
                    time.sleep(0.2)
                    holder = self._holder()
                if holder and holder.get("host") != me["host"]:
                    raise StageBusy(
                        f"{self.path.parent}: in use by pid {holder.get('pid')} on "
                        f"{holder.get('host')} since {holder.get('started')}; if that process "
                        f"is gone, delete {self.path}") from None
                if holder and holder.get("pid") != me["pid"] and _alive(int(holder["pid"])):
                    raise StageBusy(
                        f"{self.path.parent}: in use by pid {holder['pid']} (started "
                        f"{holder.get('started')}: {holder.get('command', '?')}); wait for it "
                        "to finish or stop it") from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return
        raise StageBusy(f"{self.path}: could not take the lock (another process keeps taking "
                        "it)")

    def release(self) -> None:
        if self.held:
            holder = self._holder()
            if holder and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> StageLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> bool:
        self.release()
        return False
