"""A chapter's cached measurements are keyed by every parameter that changes them.

A parameter left out of a key would let a later run with another value of it reuse (and publish)
the measurements of the earlier one: another group's G-EED, another list of data sets. Each chapter
runs here on its notebook's defaults with the training and measuring replaced by stand-ins and a
cache that only records the keys it is asked for; changing any one of the listed parameters must
change a key.
"""
import json
from dataclasses import replace
from pathlib import Path

import pytest

from geed.report import book
from geed.training import TrainResult
from tests.helpers import RecordingCache

ROOT = Path(__file__).resolve().parents[2]


def _defaults(chapter: str) -> dict:
    params = book._notebook_defaults(ROOT / "notebooks" / f"{chapter}.ipynb")
    params.pop("profile", None)
    return {**params, **book.resolve_parameters(chapter, "smoke", root=ROOT)}


def _runs(params: dict, families=None, after=None, need_steps=False) -> dict:
    """Stand-in for ``section41.trained_models``: one finished run per family, with two recorded steps."""
    from geed.experiments import section41

    out = {}
    for label, fields in (families or {"CNN": {"family": "cnn"}, "C8-CNN": {"family": "c8cnn"}}).items():
        cfg = replace(section41._base(params), **fields)  # the configuration the chapter itself builds
        res = TrainResult(cfg, {0: Path("step0"), params["iterations"]: Path("last")})
        out[label] = [after(res) if after is not None else res]
    return out


def _keys(chapter: str, params: dict, monkeypatch) -> list[str]:
    from geed.experiments import section41, section42

    monkeypatch.setattr(section41, "trained_models", _runs)
    monkeypatch.setattr(section42, "trained_models", _runs)
    cache = RecordingCache(compute=False)
    {"section41": section41.run, "section42": section42.run}[chapter](params, cache=cache, progress=False)
    assert cache.asked, "the chapter asked its cache for nothing"
    return [name + json.dumps(key, sort_keys=True, default=str) for name, key in cache.asked]


CHANGES = {
    "section41": {"group": "C4", "n_points": 5, "n_reference": 7, "seed": 3, "width": 0.08, "iterations": 30, "lr": 0.01},
    "section42": {"group": "C4", "datasets": ["rotated-mnist", "uniform-noise"], "n_points": 5, "n_reference": 7, "seed": 3,
                  "width": 0.08, "n_models": 3},
}


@pytest.mark.parametrize("chapter, name", [(c, n) for c, changes in CHANGES.items() for n in changes])
def test_a_change_of_any_measured_parameter_changes_the_cache_key(chapter, name, monkeypatch):
    params = _defaults(chapter)
    assert name in params and params[name] != CHANGES[chapter][name]
    before = _keys(chapter, params, monkeypatch)
    after = _keys(chapter, {**params, name: CHANGES[chapter][name]}, monkeypatch)
    assert not set(before) & set(after), f"{chapter}: a run with another {name} would reuse the cached measurements"
