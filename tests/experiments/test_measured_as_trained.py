"""Section 4.1 measured as training goes: pruning the recorded checkpoints changes no number, and a
measurement that needs them again trains the runs again, identically."""
import pandas as pd
import pytest

from geed.experiments import section41
from geed.report.cache import ResultCache

PARAMS = dict(width=0.0417, n_models=1, iterations=4, checkpoint_every=2, batch_size=8, lr=0.003, n_points=4, n_reference=6, seed=0, group="C8")


def _run(root, monkeypatch, **changes):
    monkeypatch.setenv("GEED_ROOT", str(root))
    monkeypatch.setenv("GEED_CACHE_DIR", str(root / "results"))
    return section41.run({**PARAMS, **changes}, cache=ResultCache(), progress=False)


@pytest.mark.slow
def test_pruned_runs_give_the_same_tables_and_are_retrained_when_measured_again(tmp_path, monkeypatch):
    kept = _run(tmp_path / "kept", monkeypatch)
    pruned = _run(tmp_path / "pruned", monkeypatch, keep_checkpoints=False)
    pd.testing.assert_frame_equal(kept["track"], pruned["track"])
    left = sorted(p.name for p in (tmp_path / "pruned").rglob("step*.pt"))
    assert left == ["step000004.pt", "step000004.pt"]  # one run per family, its last checkpoint only
    again = _run(tmp_path / "pruned", monkeypatch, keep_checkpoints=False, n_points=5)  # a new measurement: trained again
    assert sorted(again["track"]["step"].unique()) == [0, 2, 4]
    reference = _run(tmp_path / "kept", monkeypatch, n_points=5)
    pd.testing.assert_frame_equal(reference["track"], again["track"])
    assert sorted(p.name for p in (tmp_path / "pruned").rglob("step*.pt")) == left
