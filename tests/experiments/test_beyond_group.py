"""Beyond the paper under another group: the analyses measure under it, and its claims say so."""
import pytest

from geed.experiments import beyond as bx
from geed.models import create_model


@pytest.mark.slow
def test_the_analyses_and_claims_follow_the_chapters_group():
    models = {label: [(s, create_model(fam, seed=s).eval()) for s in (0, 1)]
              for label, fam in (("augmentation CNN", "cnn-tiny"), ("C8-CNN", "c8cnn-tiny"), ("regularised CNN", "cnn-tiny"))}
    with_untrained = {**models, "untrained CNN": models["augmentation CNN"]}
    lvg = bx.learned_vs_genuine(models, [0.0, 1.0], 4, groups=("C4",), si_points=2, si_steps=2, progress=False)
    ctl = bx.insensitivity_control(with_untrained, ["uniform-noise"], 4, progress=False, group="C4")
    perms = bx.hidden_permutations({k: models[k] for k in ("augmentation CNN", "C8-CNN")}, 6, 4, progress=False, group="C4")
    cont = bx.continuous_vs_discrete(with_untrained, 4, power_iterations=2, progress=False, group="C4")
    assert "softmax C4-EED" in ctl and "LI (C4)" in cont and set(perms.metric) >= {"channelwise C4-EED"}
    texts = {cid: text for cid, _, text, _ in bx.claims_beyond(lvg, ctl, perms, cont, group="C4")}
    assert "layerwise C4-equivariance" in texts["K-A.4"] and texts["K-A.4"].endswith("(measured under C4; the paper asks under C8)")
    assert "measured under" not in texts["M-1-C4"]  # Moskalev et al.'s claims are judged under each group of the shift table
