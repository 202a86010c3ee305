"""The CNN and the C8-CNN are measured on equal terms: known answers that pin the pooling grid, the
dead-channel convention and the latent dimension of both families."""
import numpy as np
import pytest
import torch

import geed
from geed.metrics import channelwise_eed
from geed.models import create_model, is_digit_model, list_models
from geed.models.digits import ConvNet, GaussianPool2d, SteerableCNN
from geed.testing import assert_equivariant, equivariance_error
from tests.helpers import smooth_images


def c4_symmetrised(model: torch.nn.Module) -> torch.nn.Module:
    """Every conv filter replaced by its average over the four 90-degree rotations: each channel map
    then rotates with the input, so the network is exactly C4-equivariant under the plain action."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1:
                w = m.weight
                m.weight.copy_(sum(torch.rot90(w, k, dims=(2, 3)) for k in range(4)) / 4)
    return model


def _randomise_batchnorm(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial eval-mode statistics, so batch normalisation is part of what is checked."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))


@pytest.mark.parametrize("name", [n for n in list_models() if is_digit_model(n)])
@pytest.mark.parametrize("mask", [True, False])
def test_every_registered_model_with_a_spatial_action_reads_minus_one_when_exactly_equivariant(name, mask):
    """A plain CNN with C4-symmetrised filters, and a C8-CNN at 90-degree steps, must read -1 after
    every block (float64, eval mode) under C4: any off-centre resampling would show here."""
    model = create_model(name, seed=0)
    if isinstance(model, ConvNet):
        c4_symmetrised(model)
        _randomise_batchnorm(model)
    else:
        assert isinstance(model, SteerableCNN)
    model = model.eval()  # measured in float64 on a copy (e2cnn models are not converted in place)
    g = geed.get_group("C4", mask=mask)
    assert_equivariant(model, smooth_images(6), g, model.layer_actions(g), invariant=[model.latent_layer], dtype=torch.float64, atol=1e-6)


def test_off_centre_pooling_breaks_the_known_answer():
    """The pooling the CNN had before (2x2 average, stride 2, padding 1) moves the grid centre: the
    symmetrised CNN then reads clearly above -1 after the pooled blocks (so the test above can fail)."""
    model = c4_symmetrised(create_model("cnn", seed=0))
    for name in ("block2", "block4"):
        block = getattr(model, name)
        block[-1] = torch.nn.AvgPool2d(2, stride=2, padding=1)
    model = model.double().eval()
    g = geed.get_group("C4", mask=True)
    rep = geed.evaluate(model, smooth_images(6), g, channelwise=model.layer_actions(g), logits=False, dtype=torch.float64)
    assert rep[("channelwise", "block1")].value == pytest.approx(-1.0, abs=1e-9)
    assert rep[("channelwise", "block2")].value > -0.999


def test_gaussian_pooling_is_e2cnns_antialiased_pooling():
    from e2cnn import gspaces
    from e2cnn import nn as enn

    gs = gspaces.Rot2dOnR2(N=8)
    ftype = enn.FieldType(gs, [gs.regular_repr] * 2)
    x = torch.randn(3, 16, 25, 25)
    ours = GaussianPool2d(0.66, stride=2)(x)
    theirs = enn.PointwiseAvgPoolAntialiased(ftype, sigma=0.66, stride=2)(enn.GeometricTensor(x, ftype)).tensor
    assert ours.shape == theirs.shape == (3, 16, 13, 13)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)


def test_both_families_have_the_same_latent_dimension():
    for width in (1 / 24, 0.0625, 0.125):
        assert ConvNet(width=width).latent_dim == SteerableCNN(width=width).latent_dim == max(1, round(64 * width))
    assert ConvNet(width=1.0).latent_dim == 64
    wide = geed.forward_outputs(ConvNet(width=0.0625).eval(), torch.rand(2, 1, 29, 29), ["latent", "latent_wide"])
    assert wide["latent"].shape == (2, 4) and wide["latent_wide"].shape == (2, 32)


def test_moving_one_steerable_model_leaves_the_others_where_they_are():
    """e2cnn hands one cached kernel basis to every layer of a type in the process: each C8-CNN owns
    a copy, so moving one (to float64 here, to a GPU alike) does not move the bases of the others."""
    a, b = create_model("c8cnn-tiny", seed=0).eval(), create_model("c8cnn-tiny", seed=0).eval()
    x = torch.rand(2, 1, 29, 29)
    with torch.no_grad():
        before = b(x)
        a.double()
        b.train().eval()  # e2cnn expands its filters from the bases when it enters evaluation mode
        assert all(t.dtype == torch.float32 for t in b.buffers() if t.is_floating_point())
        assert torch.equal(b(x), before)
        assert torch.allclose(a(x.double()), before.double(), atol=1e-5)
    assert set(a.state_dict()) == set(b.state_dict())  # the same checkpoint keys as before


# ----------------------------------------------------------------------------- dead channels
def _plain_loop_channelwise(Y: torch.Tensor, group, both_zero: float | None = None) -> tuple[float, float]:
    """Channelwise G-EED by explicit loops, for the plain spatial action with a trivial kernel:
    both-zero channels left out (or scored ``both_zero``), zero against non-zero scores 0,
    ordinary cosine otherwise. Returns the value and the share of comparisons left out."""
    G, N, C = Y.shape[:3]
    per_sample, left_out, total = [], 0, 0
    for n in range(N):
        pair_values = []
        for i in range(G):
            target = group.act(Y[0, n : n + 1], i)[0]
            cosines = []
            for c in range(C):
                a, b = Y[i, n, c].flatten(), target[c].flatten()
                na, nb = float(a.norm()), float(b.norm())
                total += 1
                if na == 0 and nb == 0:
                    left_out += 1
                    if both_zero is not None:
                        cosines.append(both_zero)
                    continue
                cosines.append(0.0 if na == 0 or nb == 0 else float(a @ b) / (na * nb))
            if cosines:
                pair_values.append(-np.mean(cosines))
        per_sample.append(np.mean(pair_values))
    return float(np.mean(per_sample)), left_out / total


def test_dead_channels_are_left_out_as_a_plain_loop_does():
    g = geed.get_group("C4")
    gen = torch.Generator().manual_seed(1)
    Y = torch.relu(torch.randn(4, 5, 6, 7, 7, generator=gen, dtype=torch.float64))
    Y[:, :, 0] = 0.0  # dead everywhere
    Y[:, 1, 1] = 0.0  # dead for one sample
    Y[2, 3, 2] = 0.0  # dead in one transformed input only: zero against non-zero
    Y[:, 4] = 0.0  # a sample whose every channel is dead: left out of the mean
    res = channelwise_eed(Y, geed.SpatialAction(g), reference="input")
    expected, frac = _plain_loop_channelwise(Y[:, :4], g)
    assert res.value == pytest.approx(expected, abs=1e-12)
    assert np.isnan(res.per_sample[4]) and res.undefined_fraction == pytest.approx(4 / 20)
    n_dead = 4 * 5 + 4 + 4 * 5  # channel 0 everywhere, (sample 1, channel 1), the other channels of sample 4
    assert res.meta["dead_fraction"] == pytest.approx(n_dead / (4 * 5 * 6))
    lo, hi = res.ci()
    assert lo <= res.value <= hi


def test_channelwise_on_a_resnet_agrees_with_a_plain_loop():
    """torchvision's ResNet18 (random weights, C4, 64 x 64): geed equals the plain loop, and differs
    from scoring dead channels as perfectly equivariant."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18().double().eval()
    x = smooth_images(4, 64).expand(-1, 3, -1, -1).contiguous()
    g = geed.get_group("C4")
    Y = geed.orbit_outputs(model, x, g, ["layer4"], dtype=torch.float64)["layer4"]
    ours = channelwise_eed(Y, geed.SpatialAction(g))
    expected, frac = _plain_loop_channelwise(Y, g)
    assert ours.value == pytest.approx(expected, abs=1e-9)
    assert ours.meta["dead_fraction"] == pytest.approx(frac)
    assert frac > 0.01  # the check is about something: this layer has dead channels
    # the previous convention (both-zero channels score a cosine of 1) reads more equivariant
    old, _ = _plain_loop_channelwise(Y, g, both_zero=1.0)
    assert old < ours.value - 1e-3


def test_assert_equivariant_names_every_layer_that_is_off():
    model = create_model("cnn-tiny", seed=0).eval()  # random filters: not equivariant
    g = geed.get_group("C4")
    errors = equivariance_error(model, smooth_images(3), g, model.layer_actions(g), dtype=torch.float64)
    assert all(e > 1e-3 for e in errors.values())
    with pytest.raises(AssertionError, match=r"not C4-equivariant to 1e-09 \(torch.float64\): block1: .*block6"):
        assert_equivariant(model, smooth_images(3), g, model.layer_actions(g), dtype=torch.float64)
    c4_symmetrised(model)
    assert max(assert_equivariant(model, smooth_images(3), g, model.layer_actions(g), dtype=torch.float64, atol=1e-6).values()) < 1e-6


def test_field_pooling_is_e2cnns_group_pooling():
    """The invariant pooling of both families is a max over each regular field, as e2cnn's GroupPooling."""
    from e2cnn import gspaces
    from e2cnn import nn as enn

    from geed.models.digits import RegularGroupPooling

    gs = gspaces.Rot2dOnR2(N=8)
    ftype = enn.FieldType(gs, [gs.regular_repr] * 3)
    x = torch.randn(2, 24, 5, 5)
    theirs = enn.GroupPooling(ftype)(enn.GeometricTensor(x, ftype)).tensor
    torch.testing.assert_close(RegularGroupPooling(8)(x), theirs)
    torch.testing.assert_close(RegularGroupPooling(8)(x), x.view(2, 3, 8, 5, 5).amax(dim=2))


@pytest.mark.parametrize("name", ["cnn-tiny", "c8cnn-tiny"])
def test_both_families_see_only_the_disc_inscribed_in_the_input(name):
    """What lies outside the disc (the corners that a rotation moves out of the frame) never reaches a model."""
    from geed.groups import disc_mask

    model = create_model(name, seed=0).eval()
    x = torch.rand(3, 1, 29, 29)
    outside = disc_mask(29, 29) == 0
    assert outside.any()
    y = x.clone()
    y[:, :, outside] = torch.rand(int(outside.sum()))
    with torch.no_grad():
        torch.testing.assert_close(model(y), model(x))


def test_both_families_convolve_without_a_bias():
    """Equal terms: neither family's convolutions have a bias (a batch normalisation follows each)."""
    from e2cnn import nn as enn

    cnn, c8 = create_model("cnn-tiny", seed=0), create_model("c8cnn-tiny", seed=0)
    convs = [m for m in cnn.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 6 and all(m.bias is None for m in convs)
    r2 = [m for m in c8.modules() if isinstance(m, enn.R2Conv)]
    assert len(r2) == 6 and all(m.bias is None for m in r2)


def test_the_cnns_wide_latent_is_the_spatial_mean_of_its_last_block():
    model = ConvNet(width=0.0625).eval()
    out = geed.forward_outputs(model, torch.rand(2, 1, 29, 29), ["block6", "latent_wide"])
    torch.testing.assert_close(out["latent_wide"], out["block6"].mean(dim=(2, 3)))


def test_the_averaged_feature_extractor_is_exactly_invariant():
    """Prop. 3.1(2)'s model: its latent vector (the feature extractor averaged over C4) is the same on
    every rotation of an input, to float64 round-off, though the plain CNN's is not."""
    from geed.models.digits import InvariantFeatures

    base = create_model("cnn-tiny", seed=0).double().eval()
    model = InvariantFeatures(base, "C4").eval()
    g = geed.get_group("C4")
    x = torch.rand(3, 1, 29, 29, dtype=torch.float64)
    z = torch.stack([geed.forward_outputs(model, g.act(x, i), ["latent"])["latent"] for i in range(4)])
    assert float((z - z[0]).abs().max()) < 1e-12 * float(z.abs().max())
    plain = torch.stack([base.features(g.act(x, i)) for i in range(4)]).detach()
    assert float((plain - plain[0]).abs().max()) > 1e-2 * float(plain.abs().max())


def test_the_invariance_error_of_a_layer_is_an_absolute_distance():
    """``equivariance_error`` reports an invariant layer's deviation as a distance in the layer's own
    units (latent G-EED in l2 without the normaliser M): outputs ten times larger are ten times as far
    from invariant, where the normalised G-EED would not change."""

    class Corner(torch.nn.Module):  # the top-left corner of the image, scaled: far from rotation invariant
        def __init__(self, scale: float) -> None:
            super().__init__()
            self.scale, self.latent = scale, torch.nn.Flatten()

        def forward(self, x):
            return self.latent(self.scale * x[:, :, :2, :3])

    x = smooth_images(4).double()
    small, large = (equivariance_error(Corner(k), x, "C4", invariant=["latent"])["latent"] for k in (1.0, 10.0))
    assert small > 1e-3 and large == pytest.approx(10 * small, rel=1e-9)
