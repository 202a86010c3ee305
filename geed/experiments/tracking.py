"""Measuring runs as they are trained: each run's recorded checkpoints are measured as soon as the
run is trained (one cache entry per run), then, unless checkpoints are kept, the run is pruned to
its last checkpoint. A pruned run whose steps must be measured again is trained again (from its
seed, so identically) and pruned once more."""
from __future__ import annotations

import time
from typing import Callable

import pandas as pd

from geed.training import TrainResult, prune

__all__ = ["RunTracker"]


class RunTracker:
    """Collects the measurement rows of every run passed to :meth:`measure`, in order."""

    def __init__(self, name: str, cache=None, keep_checkpoints: bool = True, progress: bool = True) -> None:
        self.name, self.cache, self.keep, self.progress = name, cache, keep_checkpoints, progress
        self.rows: list[dict] = []
        self.hits: list[bool] = []
        self.t0 = time.time()

    def measure(self, res: TrainResult, key: dict, track: Callable[[TrainResult], list[dict]],
                retrain: Callable[[], TrainResult]) -> TrainResult:
        """``track(run)`` gives the rows of a run with every recorded checkpoint; ``retrain()`` trains
        a pruned run again with them. Returns the run, pruned unless checkpoints are kept."""
        def compute() -> list[dict]:
            if len(res.checkpoints) > 1 or res.config.iterations == 0:
                return track(res)
            full = retrain()
            out = track(full)
            if not self.keep:
                prune(full)
            return out

        rows, hit = self.cache.get_or_compute(self.name, key, compute) if self.cache is not None else (compute(), False)
        self.rows.extend(rows)
        self.hits.append(hit)
        if self.progress:
            print(f"[measure] {res.config.name()} {'reused' if hit else 'done'} ({time.time() - self.t0:.0f} s)", flush=True)
        return res if self.keep or len(res.checkpoints) == 1 else prune(res)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def all_cached(self) -> bool:
        return all(self.hits)
