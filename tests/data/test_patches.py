"""Patch tasks, resumable training with each objective, and the claim rules of Sections 4.3 and 4.4."""
import itertools

import numpy as np

import pandas as pd

import pytest

import torch


from geed.experiments.pretrained import claims_43

from geed.experiments.selfsup import LABELS, claims_44



from geed.groups import disc_mask

from geed.data.patches import SIZE, get_task

def _track43(scratch_better: bool, reverse: tuple[str, ...] = ()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A synthetic tracking table; the metrics in ``reverse`` order the initialisations the other way."""
    rng = np.random.default_rng(0)
    rows, acc = [], []
    for arch, init, seed, step in itertools.product(["a", "b"], ["from scratch", "pretrained"], range(4), [0, 10, 20]):
        trend = 1 + (0.002 if init == "from scratch" else -0.002) * step
        for metric, group in (("latent_l2", "C8"), ("latent_l2", "D8"), ("latent_cosine", "C8"), ("softmax", "C8")):
            low = ((init == "from scratch") == scratch_better) != (metric in reverse)
            v = (0.2 if low else 0.3) * trend + 1e-4 * rng.normal()
            rows.append({"arch": arch, "init": init, "seed": seed, "step": step, "metric": metric, "group": group, "value": v})
        if step == 20:
            acc.append({"arch": arch, "init": init, "seed": seed, "accuracy": (0.9 if init == "pretrained" else 0.8) + 1e-3 * rng.normal()})
    return pd.DataFrame(rows), pd.DataFrame(acc)

def _verdicts43(*args, **kw) -> dict[str, str]:
    return {cid: verdict.verdict for cid, _, _, verdict in claims_43(*args, **kw)}

def _table44(simclr_level: float, n_seeds: int = 1, dino_cosine: float = 0.4, rank: dict | None = None) -> pd.DataFrame:
    rank = rank or {}
    rng = np.random.default_rng(0)
    levels = {"supervised": 0.3, "simclr": simclr_level, "dino": 0.4}
    rows = []
    for (kind, lvl), seed, metric, i in itertools.product(levels.items(), range(n_seeds), ["latent_l2", "latent_cosine"], range(50)):
        if kind == "dino" and metric == "latent_cosine":
            lvl = dino_cosine
        rows.append({"model": LABELS[kind], "seed": seed, "metric": metric, "sample": i, "value": lvl + 0.01 * rng.normal(),
                     "M": 10.0 if metric == "latent_l2" else 0.7, "effective_rank": rank.get(kind, 5.0)})
    return pd.DataFrame(rows)

def _verdicts44(table: pd.DataFrame) -> dict[str, str]:
    return {cid: verdict.verdict for cid, _, _, verdict in claims_44(table)}



@pytest.mark.parametrize("name", ["orientation-free", "upright-photos"])
def test_patch_tasks_are_masked_reproducible_and_labelled(name):
    task = get_task(name)
    x, y = task.fixed("test", 40, seed=3)
    assert x.shape == (40, 3, SIZE, SIZE) and y.min() >= 0 and y.max() < task.n_classes == 9
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert float((x * (1 - disc_mask(SIZE, SIZE))).abs().max()) == 0  # nothing outside the disc
    x2, _ = task.fixed("test", 40, seed=3)
    assert torch.equal(x, x2)
    xt, _ = task.fixed("train", 40, seed=3)
    assert not torch.equal(x, xt)



def test_patch_task_errors():
    with pytest.raises(ValueError, match="unknown patch task"):
        get_task("imagenet")
    with pytest.raises(ValueError, match="split"):
        get_task("upright-photos").sample("val", 3, torch.Generator())

