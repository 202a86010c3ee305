"""How Sections 4.3 and 4.4 put their parts together, with stand-ins for training and measuring: which
runs are measured and pruned, which weights are stand-ins, what the cache keys hold, and how a pruned
run is trained again."""
from types import SimpleNamespace

import pandas as pd
import pytest

from geed.experiments import tracking
from tests.helpers import RecordingCache


def _run(steps, iterations=20, tag="r"):
    return SimpleNamespace(config=SimpleNamespace(iterations=iterations, name=lambda: tag), checkpoints={s: None for s in steps})


def test_a_pruned_run_is_trained_again_before_its_steps_are_measured(monkeypatch):
    monkeypatch.setattr(tracking, "prune", lambda run: pytest.fail("pruned although checkpoints are kept"))
    tracked = []
    tracker = tracking.RunTracker("t", keep_checkpoints=True, progress=False)
    full = _run([0, 10, 20])
    tracker.measure(_run([20]), {}, lambda run: tracked.append(run) or [{"step": s} for s in run.checkpoints], lambda: full)
    assert tracked == [full] and [r["step"] for r in tracker.rows] == [0, 10, 20]
    tracked.clear()
    whole = _run([0, 10, 20])
    tracker.measure(whole, {}, lambda run: tracked.append(run) or [], lambda: pytest.fail("retrained a run that has its steps"))
    assert tracked == [whole]


def test_without_kept_checkpoints_each_run_is_pruned_once_measured(monkeypatch):
    pruned = []
    monkeypatch.setattr(tracking, "prune", lambda run: pruned.append(run) or run)
    tracker = tracking.RunTracker("t", keep_checkpoints=False, progress=False)
    run = _run([0, 10, 20])
    assert tracker.measure(run, {}, lambda r: [], lambda: pytest.fail("retrained")) is run
    assert pruned == [run]
    retrained = _run([0, 10, 20])
    tracker.measure(_run([20]), {}, lambda r: [], lambda: retrained)
    assert pruned == [run, retrained]  # the run trained again to be measured is pruned again


def _section43_params(**kw):
    return {"seed": 3, "n_models": 1, "archs": ["genuine", "stand-in"], "imagenet_archs": ["lite"], "weights_source": "auto",
            "pretrain_iterations": 5, "batch_size": 2, "lr": 1e-3, "weights_dir": None, "imagenet_size": 33, "iterations": 20,
            "record_every": 10, "n_points": 4, "n_reference": 6, "keep_checkpoints": True, **kw}


def test_section_43_judges_stand_ins_as_stand_ins_and_keys_and_retrains_runs_as_measured(monkeypatch):
    """Architectures whose pretrained weights are not published are the stand-ins (and no others); the
    ImageNet architectures ask for published weights whatever the chapter's source; each run's cache
    key holds its configuration and the measured parameters; a pruned pretrained run is trained again
    from the pretrained weights, a pruned run from scratch from none."""
    from geed.experiments import pretrained as P
    from geed.experiments import section43

    asked, retrained = [], []

    def source(arch, how, *a, **k):
        asked.append((arch, how))
        published = arch != "stand-in"
        return ((f"published:{arch}.pth" if published else "offline-x"), f"load {arch}",
                {"weights": "published (file)" if published else "offline pretraining"})

    def train_architecture(arch, seeds, iterations, record_every, batch_size, lr, pretrained, after=None, **k):
        out = {}
        for init in P.INITS:
            res = SimpleNamespace(config=SimpleNamespace(name=lambda: f"{arch}-{init}", iterations=20, seed=seeds[0]), checkpoints={20: None},
                                  test_accuracy=0.5, seconds=1.0)
            out[init] = [after(init, res)]
        return out

    monkeypatch.setattr(P, "pretrained_source", source)
    monkeypatch.setattr(P, "train_architecture", train_architecture)
    monkeypatch.setattr(P, "track_run", lambda run, *a: [{"step": s} for s in run.checkpoints])
    monkeypatch.setattr(section43, "train", lambda config, d, init_body=None, **k: retrained.append((config.name(), init_body))
                        or SimpleNamespace(config=config, checkpoints={0: None, 10: None, 20: None}))
    cache = RecordingCache()
    tables = section43.run(_section43_params(), cache=cache, progress=False)
    assert tables["stand_in"] == {"stand-in": "offline pretraining"}
    assert ("lite", "published") in asked and ("genuine", "auto") in asked and ("stand-in", "auto") in asked
    assert ("lite", "auto") not in asked
    keys = [params for name, params in cache.asked if name == "section43-run"]
    assert len(keys) == 6 and all({"config", "n_points", "n_reference", "seed"} <= set(k) for k in keys)
    assert {k["n_points"] for k in keys} == {4} and {k["n_reference"] for k in keys} == {6}
    assert sorted(retrained) == sorted([(f"{a}-{P.INITS[0]}", None) for a in ("lite", "genuine", "stand-in")]
                                       + [(f"{a}-{P.INITS[1]}", f"load {a}") for a in ("lite", "genuine", "stand-in")])


def test_section_44_keys_its_measurement_by_what_it_measures_and_measures_the_starting_point(monkeypatch):
    from geed.experiments import section44
    from geed.experiments import selfsup as S

    run = SimpleNamespace(config=SimpleNamespace(name=lambda: "cfg"), model=lambda: "trained model")
    measured = {}
    monkeypatch.setattr(S, "train_models", lambda *a, **k: {"supervised": [run]})
    monkeypatch.setattr(S, "published_models", lambda d: ({}, {}))
    monkeypatch.setattr(S, "imagenet_model", lambda arch, d: ("the start", "start model"))
    monkeypatch.setattr(S, "measure", lambda models, *a: measured.update(models) or pd.DataFrame())
    cache = RecordingCache()
    params = {"seed": 0, "n_models": 1, "arch": "a", "iterations": 1, "batch_size": 2, "lr": 1e-3, "init": "imagenet", "size": 33,
              "weights_dir": None, "include_published": True, "n_points": 4, "n_reference": 6}
    tables = section44.run(params, cache=cache)
    (name, key), = cache.asked
    assert name == "section44-flip" and key["n_points"] == 4 and key["n_reference"] == 6 and key["seed"] == 0 and key["size"] == 33
    assert key["configs"] == ["cfg"] and measured == {"supervised": ["trained model"], "the start": ["start model"]}
    assert tables["published_status"] == {"the start": "the starting point of every objective"}
