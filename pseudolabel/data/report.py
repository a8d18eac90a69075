"""Skipped-item bookkeeping for batch work (STYLE 9): skip, report, count, go on."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

log = logging.getLogger("pseudolabel")


@dataclass(frozen=True)
class Problem:
    """One skipped item: the file it came from, which item, and why."""

    file: str
    item: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.item}: {self.reason}"


@dataclass
class Report:
    """Problems met while processing; each is logged as a warning when added."""

    problems: list[Problem] = field(default_factory=list)

    def add(self, file: str, item: str, reason: str) -> None:
        problem = Problem(str(file), item, reason)
        self.problems.append(problem)
        log.warning("skipped %s", problem)

    def extend(self, other: Report) -> None:
        self.problems.extend(other.problems)

    def __len__(self) -> int:
        return len(self.problems)

    def counts(self) -> Counter:
        """Number of skipped items per kind of item (the item's first word)."""
        return Counter(p.item.split(" ", 1)[0] for p in self.problems)

    def summary(self) -> str:
        if not self.problems:
            return "nothing skipped"
        parts = ", ".join(f"{n} {kind}(s)" for kind, n in sorted(self.counts().items()))
        return f"skipped {parts}; first: {self.problems[0]}"
