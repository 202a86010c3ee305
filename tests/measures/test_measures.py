"""Sensitivity, Lie derivative, insensitivity control, channel-permutation matching, saliency invariance."""
import numpy as np
import pytest
import torch

import geed
from geed.groups import disc_mask
from geed.measures.permutations import (
    match_permutations,
    matched_action,
    permutation_agreement,
    similarity_matrix,
)
from geed.measures.saliency import logit_invariance_penalty, saliency_invariance
from geed.measures.sensitivity import (
    jacobian_spectral_norm,
    lie_derivative,
    perturbation_control,
    rotate_differentiable,
)
from geed.models import create_model
from geed.models.digits import GroupAveraged
from tests.helpers import smooth_images


def _toy(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(2 * 27 * 27, 3)).double().eval()


def test_spectral_norm_of_a_linear_map_is_its_largest_singular_value():
    W = torch.randn(5, 72, dtype=torch.float64)
    x = torch.randn(3, 2, 6, 6, dtype=torch.float64)
    sigma = jacobian_spectral_norm(lambda t: t.flatten(1) @ W.T, x, n_iter=500)
    assert np.allclose(sigma, torch.linalg.matrix_norm(W, ord=2).item(), rtol=1e-5)


def test_spectral_norm_works_on_an_e2cnn_model():
    model = create_model("c8cnn-tiny", seed=0).eval()
    sigma = jacobian_spectral_norm(model, smooth_images(2, dtype=torch.float32), n_iter=5)
    assert sigma.shape == (2,) and np.all(sigma > 0)


def test_lie_derivative_matches_finite_differences_and_vanishes_for_constant_model():
    model = _toy()
    x = smooth_images(3)
    xm = x * disc_mask(29, 29, like=x)
    h = 1e-5
    fd = (model(rotate_differentiable(xm, torch.tensor(h, dtype=torch.float64)))
          - model(rotate_differentiable(xm, torch.tensor(-h, dtype=torch.float64)))) / (2 * h)
    lie = lie_derivative(model, x)
    assert np.all(lie > 1e-3)  # a model that actually responds to the rotation
    assert np.allclose(lie, fd.norm(dim=1).detach().numpy(), rtol=1e-3)
    const = lambda t: t.flatten(1)[:, :1] * 0 + 1.0
    assert np.all(lie_derivative(const, x) == 0)


def test_perturbation_control_separates_invariance_from_insensitivity():
    x = smooth_images(6)
    sensitive = _toy()
    inv = GroupAveraged(sensitive, "C4").eval()
    r_inv = perturbation_control(inv, x, "C4")
    r_raw = perturbation_control(sensitive, x, "C4")
    assert r_inv["group"].max() < 1e-12 and r_inv["random"].min() > 1e-6  # invariant, not insensitive
    assert np.all(r_inv["ratio"] < 1e-6) and r_raw["ratio"].mean() > r_inv["ratio"].mean()


def test_permutation_matching_recovers_the_steerable_permutation():
    model = create_model("c8cnn-tiny", seed=0).eval()
    g = geed.get_group("C4", mask=True)
    x = smooth_images(8, dtype=torch.float32)
    Y = geed.orbit_outputs(model, x, g, model.blocks)
    truth = model.layer_actions(g)
    for b in ("block1", "block4"):
        perms = match_permutations(Y[b], g)
        assert permutation_agreement(perms, truth[b]) == 1.0
        assert geed.channelwise_eed(Y[b], matched_action(g, perms)).value == pytest.approx(-1.0, abs=1e-6)


def test_matching_never_worsens_the_fit_on_the_points_it_was_fit_on():
    model = create_model("cnn-tiny", seed=0).eval()
    g = geed.get_group("C8", mask=True)
    Y = geed.orbit_outputs(model, smooth_images(8, dtype=torch.float32), g, ["block2"])["block2"]
    plain = geed.channelwise_eed(Y, geed.SpatialAction(g)).value
    matched = geed.channelwise_eed(Y, matched_action(g, match_permutations(Y, g))).value
    assert matched <= plain + 1e-9
    with pytest.raises(ValueError, match="one shape"):
        similarity_matrix(Y[0], Y[0][:, :1])


def test_saliency_invariance_is_one_for_weight_tied_and_lower_for_plain():
    from geed.data.digits import rotated_digits

    d = rotated_digits("test").subset(4)
    cnn = create_model("cnn-tiny", seed=0).eval()
    tied = GroupAveraged(cnn, "C4").eval()
    assert saliency_invariance(tied, d.x, d.y, "C4", steps=4).value == pytest.approx(1.0, abs=1e-6)
    assert saliency_invariance(cnn, d.x, d.y, "C4", steps=4).value < 0.99


def test_invariance_penalty_is_zero_for_an_invariant_model():
    x = smooth_images(4)
    inv = GroupAveraged(_toy(), "C4").eval()
    pen = logit_invariance_penalty(inv, x, inv(x), geed.get_group("C4"), torch.Generator().manual_seed(0))
    assert float(pen) < 1e-20
    raw = _toy()
    assert float(logit_invariance_penalty(raw, x, raw(x), geed.get_group("C4"))) > 1e-8
