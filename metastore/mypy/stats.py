"""Counters of one process's use of the store during one build (``--metastore-stats``)."""

from __future__ import annotations

from typing import Any

from metastore.mypy import selection


class RunStats:
    """Counters of one process's use of the store during one build."""

    COUNTERS = ("offered", "missed", "rechecked", "published", "meta_writes",
                "read_bytes", "written_bytes", "store_seconds", "ambiguous", "search_steps",
                "mismatched", "select_seconds")

    def __init__(self) -> None:
        self.offered = 0
        self.missed = 0
        self.rechecked = 0
        self.published = 0
        self.meta_writes = 0
        self.read_bytes = 0
        self.written_bytes = 0
        self.store_seconds = 0.0
        # Selection (see metastore.mypy.selection): modules with several usable units left after
        # the obvious ones were settled, search steps, dependency edges left disagreeing
        # (each costs a re-check), and the time spent choosing (lookups included).
        self.ambiguous = 0
        self.search_steps = 0
        self.mismatched = 0
        self.select_seconds = 0.0
        self.layer_hits: list[int] = [0]  # metas offered per layer: top, then each base
        self.problems: list[str] = []

    def hit(self, layer: int, count: int = 1) -> None:
        """Count ``count`` metas offered from ``layer`` (0 the top, i + 1 base i)."""
        while len(self.layer_hits) <= layer:
            self.layer_hits.append(0)
        self.layer_hits[layer] += count

    def selected(self, outcome: selection.Outcome, seconds: float) -> None:
        """Count one selection's cost."""
        self.ambiguous += outcome.ambiguous
        self.search_steps += outcome.steps
        self.mismatched += outcome.mismatches
        self.select_seconds += seconds

    def add(self, other: dict[str, Any]) -> None:
        """Add another process's counters (as from :meth:`as_dict`)."""
        for name in self.COUNTERS:
            setattr(self, name, getattr(self, name) + other.get(name, 0))

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.COUNTERS}

    def line(self, store_path: str) -> str:
        """The per-run line printed with ``--metastore-stats``."""
        return (
            f"mypy-metastore: offered={self.offered} missed={self.missed} "
            f"rechecked={self.rechecked} published={self.published} "
            f"meta_writes={self.meta_writes} read_bytes={self.read_bytes} "
            f"written_bytes={self.written_bytes} store_seconds={self.store_seconds:.3f} "
            f"layer_hits={','.join(map(str, self.layer_hits))} ambiguous={self.ambiguous} "
            f"search_steps={self.search_steps} mismatched={self.mismatched} "
            f"select_seconds={self.select_seconds:.3f} store={store_path}"
        )
