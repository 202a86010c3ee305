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


def test_integrated_gradients_of_a_quadratic_are_exact():
    """For f(x) = sum x_i^2 the path integral from 0 gives x_i^2 for each pixel; the midpoint rule is
    exact on it (the integrand is linear along the path) and the attributions sum to f(x) - f(0)."""
    from geed.measures.saliency import integrated_gradients

    x = smooth_images(3)
    quadratic = lambda z: z.pow(2).flatten(1).sum(1, keepdim=True)  # noqa: E731
    ig = integrated_gradients(quadratic, x, torch.zeros(3, dtype=torch.long), steps=4)
    assert torch.allclose(ig, x.pow(2), rtol=1e-12, atol=1e-15)


def test_the_saliency_map_keeps_only_the_pixels_near_the_peak():
    """A linear model's integrated gradients are x * w. Of |x * w|, the pixels below 0.9 of the peak are
    dropped before the 3 x 3 smoothing, so the map is zero more than one pixel away from the kept ones."""
    from geed.measures.saliency import saliency_map

    w = torch.zeros(1, 1, 9, 9, dtype=torch.float64)
    w[0, 0, 2, 2], w[0, 0, 2, 3], w[0, 0, 7, 7] = 1.0, 0.95, 0.5  # the peak, one within 0.9 of it, one well below
    linear = lambda z: (z * w).flatten(1).sum(1, keepdim=True)  # noqa: E731
    m = saliency_map(linear, torch.ones(1, 1, 9, 9, dtype=torch.float64), torch.zeros(1, dtype=torch.long), steps=2)
    assert m[0, 0, 2, 2] > 0 and m[0, 0, 2, 3] > 0
    assert m[0, 0, 6:, 6:].abs().max() == 0.0  # the weak pixel and its neighbours


def test_the_random_perturbations_are_as_large_as_the_rotations():
    """For the identity map the response is the change of the input itself: the random perturbation,
    scaled to the size of each rotation's change, moves the output exactly as far (ratio 1)."""
    x = smooth_images(4)
    r = perturbation_control(torch.nn.Identity(), x, "C4", output=lambda z: z)
    assert np.allclose(r["random"], r["group"], rtol=1e-12) and np.allclose(r["ratio"], 1.0, rtol=1e-12)


def test_the_invariance_penalty_never_draws_the_identity():
    """The penalty compares f(x) with f(g x) for a non-identity g: with an input that every rotation
    changes it is positive for every draw (drawing the identity would give 0)."""
    x = smooth_images(1)
    flat = torch.nn.Flatten()
    g = geed.get_group("C4")
    assert all(float(logit_invariance_penalty(flat, x, flat(x), g, torch.Generator().manual_seed(s))) > 1e-6 for s in range(40))
