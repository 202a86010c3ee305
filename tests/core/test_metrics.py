import math

import numpy as np
import pytest
import torch

import geed
from geed.actions import InducedAction, SpatialAction, TrivialAction
from geed.examples import EquivariantMap, hand_example, proposition_31_example
from geed.metrics import geed as geed_metric
from geed.metrics import latent_eed, orbit_mean, softmax_eed
from geed.models import create_model
from geed.models.digits import GroupAveraged


@pytest.mark.parametrize("group", ["C4", "D4", "flip"])
def test_equivariant_map_has_zero_channelwise_deviation(group, images):
    model = EquivariantMap().double().eval()
    g = geed.get_group(group)
    acts = {"layer1": SpatialAction(g), "blur2": SpatialAction(g)}
    rep = geed.evaluate(model, images, g, channelwise=acts, logits=False, references=("orbit", "input"))
    for key, r in rep.results.items():
        assert r.value == pytest.approx(-1.0, abs=1e-12), key


@pytest.mark.parametrize("group", ["C4", "D4"])
def test_group_averaged_model_is_exactly_invariant(group, images):
    base = _sensitive_model()
    model = GroupAveraged(base, group).eval()
    rep = geed.evaluate(model, images, group, references=("orbit", "input"))
    for metric in ["softmax", "softmax@input", "DI", "LI"]:
        assert abs(rep[(metric, "output")].value) < 1e-12, metric
    # and the un-averaged model is measurably not invariant
    raw = geed.evaluate(base, images, group)
    assert raw[("LI", "output")].value > 1e-6


def _sensitive_model() -> torch.nn.Module:
    """A small random network without batch norm, clearly sensitive to its input."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 27 * 27, 5)
    ).double().eval()


@pytest.fixture(scope="module")
def digits():
    from geed.data.digits import rotated_digits

    return rotated_digits("test").subset(16).x


@pytest.mark.slow
def test_c8_steerable_exact_at_90_degrees_with_floor_at_45(digits):
    images = digits
    model = create_model("c8cnn", seed=0).eval()
    c4, c8 = geed.get_group("C4", mask=True), geed.get_group("C8", mask=True)
    r4 = geed.evaluate(model, images, c4, channelwise=model.layer_actions(c4), latent="latent", dtype=torch.float64)
    for b in model.blocks:
        assert r4[("channelwise", b)].value == pytest.approx(-1.0, abs=1e-9), b
    assert r4[("latent_l2", "latent")].value < 1e-9
    r8 = geed.evaluate(model, images, c8, channelwise=model.layer_actions(c8), latent="latent", dtype=torch.float64)
    floor = [1 + r8[("channelwise", b)].value for b in model.blocks]
    assert all(0 < f < 0.1 for f in floor), floor  # a small, non-zero interpolation floor
    # a conventional CNN of the same skeleton deviates clearly more at every block
    cnn = create_model("cnn", seed=0).eval()
    rc = geed.evaluate(cnn, images, c8, channelwise=cnn.layer_actions(c8), logits=False, dtype=torch.float64)
    cnn_dev = [1 + rc[("channelwise", b)].value for b in cnn.blocks]
    assert all(c > 2 * f for c, f in zip(cnn_dev, floor)), (cnn_dev, floor)


def test_without_channel_permutation_c8_model_looks_non_equivariant(images):
    model = create_model("c8cnn-tiny", seed=0).eval()
    c4 = geed.get_group("C4")
    plain = {b: SpatialAction(c4) for b in model.blocks}
    rep = geed.evaluate(model, images, c4, channelwise=plain, logits=False)
    assert rep[("channelwise", "block1")].value > -0.9


def test_latent_normalisation_is_scale_free():
    g = geed.get_group("C4")
    Z = torch.randn(4, 10, 6, dtype=torch.float64).abs()  # non-negative, like post-ReLU features
    for dist in ("l2", "cosine"):
        a = latent_eed(Z, g, dist, normalise=True)
        b = latent_eed(7.0 * Z, g, dist, normalise=True)
        assert b.value == pytest.approx(a.value, rel=1e-12)
    raw, scaled = latent_eed(Z, g, "l2", normalise=False), latent_eed(7.0 * Z, g, "l2", normalise=False)
    assert scaled.value == pytest.approx(7.0 * raw.value, rel=1e-12)


def test_kl_is_exactly_zero_for_identical_predictions():
    g = geed.get_group("C8")
    logits = torch.randn(1, 5, 9).expand(8, 5, 9).contiguous()
    assert softmax_eed(logits, g).value == 0.0
    assert geed.prediction_invariance_error(logits, g).value == 0.0


def test_output_metrics_on_an_example_worked_by_hand():
    """C2, one sample, two classes: logits (0, 0) for x and (ln 3, 0) for g x, so p(x) = (1/2, 1/2),
    p(g x) = (3/4, 1/4) and the orbit's mean prediction (5/8, 3/8). DI averages KL(p(x) || p(g x))
    over both elements (Moskalev et al.), LI half the squared logit distance to f(x), softmax G-EED
    KL(p(g x) || mean prediction)."""
    g = geed.get_group("C2")
    L = torch.tensor([[[0.0, 0.0]], [[math.log(3.0), 0.0]]], dtype=torch.float64)
    kl = lambda p, q: sum(a * math.log(a / b) for a, b in zip(p, q))  # noqa: E731
    assert geed.prediction_invariance_error(L, g).value == pytest.approx(kl((0.5, 0.5), (0.75, 0.25)) / 2, rel=1e-12)
    assert geed.logit_invariance_error(L, g).value == pytest.approx(0.5 * math.log(3.0) ** 2 / 2, rel=1e-12)
    want = (kl((0.5, 0.5), (0.625, 0.375)) + kl((0.75, 0.25), (0.625, 0.375))) / 2
    assert softmax_eed(L, g).value == pytest.approx(want, rel=1e-12)


def test_fhat_over_nontrivial_kernel():
    """C8 acting on the output through C4 (k -> k mod 4): the kernel is {0, 180} degrees."""
    c8, c4 = geed.get_group("C8"), geed.get_group("C4")
    action = InducedAction.by_angle(c8, SpatialAction(c4))
    assert action.kernel((1, 1, 5, 5)) == [0, 4]
    y0 = torch.randn(3, 2, 5, 5, dtype=torch.float64)
    # an exactly equivariant f for this action: f(g_k x) = rot90^(k mod 4) y0
    Y = torch.stack([c4.act(y0, k % 4) for k in range(8)])
    assert torch.equal(orbit_mean(Y, action), y0)
    assert geed_metric(Y, action, "l2").value == pytest.approx(0.0, abs=1e-12)
    # perturb f at the kernel element 4: fhat moves half-way, every pair is off by |d|/2 (eq. 2)
    d = torch.randn_like(y0)
    Y2 = Y.clone()
    Y2[4] = y0 + d
    assert torch.allclose(orbit_mean(Y2, action), y0 + d / 2)
    r = geed_metric(Y2, action, "l2")
    expected = (d.flatten(1).norm(dim=1) / 2).numpy()
    assert np.allclose(r.per_pair, expected[:, None])



def test_on_one_pixel_maps_every_rotation_is_in_the_kernel():
    """A 1 x 1 map does not move under a rotation or a flip, so every element acts as the identity there
    (fhat is the mean over the whole orbit), while on larger maps only the identity does; a shift is
    never in the kernel of a wider map."""
    for name in ("C4", "C8", "D4"):
        g = geed.get_group(name)
        action = SpatialAction(g)
        assert action.kernel((2, 3, 1, 1)) == list(range(len(g)))
        assert action.kernel((2, 3, 5, 5)) == [0]
        Y = torch.randn(len(g), 2, 3, 1, 1, dtype=torch.float64)
        torch.testing.assert_close(orbit_mean(Y, action), Y.mean(0), rtol=1e-12, atol=1e-12)
    # regular fields: on a 1 x 1 map a rotation still permutes the channels, so only the elements whose
    # channel map is the identity (here the identity alone) are in the kernel; identity channel maps change nothing
    g = geed.get_group("C4")
    shifts = [np.roll(np.eye(4), k, axis=0) for k in range(4)]  # C4's regular representation
    assert SpatialAction(g, channel_maps=shifts).kernel((2, 4, 1, 1)) == [0]
    assert SpatialAction(g, channel_maps=[np.eye(4)] * 4).kernel((2, 4, 1, 1)) == [0, 1, 2, 3]


def test_hand_computed_example():
    for key, (measured, by_hand) in hand_example().items():
        assert measured == pytest.approx(by_hand, rel=1e-12, abs=1e-12), key


def test_proposition_31_invariant_composite_of_non_invariant_parts():
    r = proposition_31_example()
    assert r.f == pytest.approx(0.0, abs=1e-12)
    assert r.f1 > 0.1 and r.f2 > 0.1


def test_orbit_reference_vs_input_reference_differ_for_non_invariant_model(images):
    model = create_model("cnn-tiny", seed=3).double().eval()
    rep = geed.evaluate(model, images, "C4", latent="latent", references=("orbit", "input"))
    a, b = rep[("latent_l2", "latent")].value, rep[("latent_l2@input", "latent")].value
    assert a > 0 and b > 0 and a != pytest.approx(b)


def test_larger_means_less_invariant_for_every_variant(images):
    """An exactly invariant model scores lower than a non-invariant one for every metric."""
    base = _sensitive_model()
    inv = GroupAveraged(base, "C4").eval()
    r_inv = geed.evaluate(inv, images, "C4").summary().set_index("metric")["value"]
    r_raw = geed.evaluate(base, images, "C4").summary().set_index("metric")["value"]
    assert (r_raw > r_inv + 1e-6).all()
    assert (r_inv <= r_raw + 1e-15).all()


def test_per_sample_values_and_bootstrap_interval(images):
    model = create_model("cnn-tiny", seed=0).eval()
    rep = geed.evaluate(model, images, "C8", latent="latent")
    tab = rep.table()
    assert set(tab.columns) == {"metric", "layer", "sample", "value"}
    assert (tab.groupby("metric").size() == images.shape[0]).all()
    s = rep.summary()
    assert (s["lo"] <= s["value"] + 1e-15).all() and (s["value"] <= s["hi"] + 1e-15).all()


def test_bad_input_errors(images):
    model = create_model("cnn-tiny", seed=0).eval()
    with pytest.raises(KeyError, match="no module named 'blockX'.*module names: .*block1"):
        geed.evaluate(model, images, "C4", channelwise={"blockX": None})
    with pytest.raises(ValueError, match="unknown group"):
        geed.evaluate(model, images, "Z9")
    with pytest.raises(ValueError, match="N = 0"):
        geed.evaluate(model, images[:0], "C4")
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        geed.evaluate(model, images[0], "C4")
    with pytest.raises(ValueError, match="shape \\(\\|G\\|, N"):
        softmax_eed(torch.randn(3, 4, 9), geed.get_group("C4"))
    with pytest.raises(ValueError, match="unknown distance"):
        geed_metric(torch.randn(4, 2, 3), TrivialAction(geed.get_group("C4")), "manhattan")
    with pytest.raises(ValueError, match="at least 2 reference points"):
        latent_eed(torch.randn(4, 1, 3), geed.get_group("C4"), "l2")
    with pytest.raises(ValueError, match="M .* <= 0"):
        Z = torch.stack([torch.tensor([[1.0, 0.0], [-1.0, 0.0]])] * 4)
        latent_eed(Z, geed.get_group("C4"), "cosine")
    with pytest.raises(ValueError, match="M .* is 0 <= 0"):  # a collapsed latent space: every point the same, M = 0
        latent_eed(torch.ones(4, 3, 2), geed.get_group("C4"), "l2")
    with pytest.raises(ValueError, match="layer has"):
        model8 = create_model("c8cnn-tiny", seed=0).eval()
        act = model8.layer_actions("C4")["block1"]
        act.act(torch.zeros(1, 3, 5, 5), 1)
    with pytest.raises(ValueError, match="does not"):
        create_model("c8cnn-tiny", seed=0).layer_actions("C16")


def _actions_of_every_kind():
    """(name, action) pairs covering every Action subclass and channel-map form."""
    c8, d4 = geed.get_group("C8", mask=True), geed.get_group("D4")
    model = create_model("c8cnn-tiny", seed=0)
    perms = model.layer_actions(c8)["block2"]  # regular fields: a permutation per element
    rng = np.random.default_rng(0)
    n_ch = perms.n_channels
    mats = SpatialAction(c8, channel_maps=[np.linalg.qr(rng.normal(size=(n_ch, n_ch)))[0] for _ in range(8)])
    induced = InducedAction.by_angle(geed.get_group("C8"), SpatialAction(geed.get_group("C4")))
    return [("spatial C8 masked", SpatialAction(c8), 3), ("spatial D4", SpatialAction(d4), 3),
            ("regular fields", perms, n_ch), ("matrices", mats, n_ch), ("induced C8 -> C4", induced, 3),
            ("trivial", TrivialAction(d4), 3)]


@pytest.mark.parametrize("case", range(6))
def test_act_all_is_every_elements_act(case):
    name, action, channels = _actions_of_every_kind()[case]
    y = torch.randn(4, channels, 13, 13, dtype=torch.float64, generator=torch.Generator().manual_seed(case))
    every = action.act_all(y)
    assert every.shape == (len(action.group), *y.shape), name
    for i in range(len(action.group)):
        assert torch.equal(every[i], action.act(y, i)), (name, i)


@pytest.mark.parametrize("group", ["C8", "D4", "C4"])
def test_group_orbit_is_every_elements_act_with_the_mask(group):
    g = geed.get_group(group, mask=True)
    x = torch.randn(3, 2, 17, 17, generator=torch.Generator().manual_seed(1))
    orbit = g.orbit(x)
    for i in range(len(g)):
        assert torch.equal(orbit[i], g.act(x, i)), i


def _channelwise_by_loops(Y: torch.Tensor, action) -> np.ndarray:
    """Eq. 5 written out pair by pair and channel by channel in float64 (the reference point is
    f(x) itself: every action here has the identity alone as its kernel on feature maps)."""
    Y = Y.double()
    n_el, n = Y.shape[:2]
    region = action.region(Y[0])
    out = np.empty((n, n_el))
    for s in range(n):
        for i in range(n_el):
            a = Y[i, s]
            b = action.act(Y[0, s : s + 1], i)[0]
            if region is not None:
                a, b = a * region, b * region
            cosines = []
            for c in range(a.shape[0]):
                va, vb = a[c].flatten().numpy(), b[c].flatten().numpy()
                na, nb = np.linalg.norm(va), np.linalg.norm(vb)
                scale = max(np.linalg.norm(a.flatten(1).numpy(), axis=1).max(), np.linalg.norm(b.flatten(1).numpy(), axis=1).max())
                za, zb = na <= 1e-10 * scale, nb <= 1e-10 * scale
                if za and zb:
                    continue  # dead in both: left out
                cosines.append(0.0 if (za or zb) else float(va @ vb / (na * nb)))
            out[s, i] = -np.mean(cosines) if cosines else np.nan
    return out


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "tensor"])
@pytest.mark.parametrize("case", range(5))
def test_channelwise_equals_a_loop_over_pairs_and_channels(case, fused, monkeypatch):
    monkeypatch.setattr(geed._fused, "enabled", fused)
    name, action, channels = _actions_of_every_kind()[case]
    g = action.group
    torch.manual_seed(case)
    x = torch.randn(3, channels, 11, 11, dtype=torch.float64)
    Y = torch.relu(g.orbit(x) + 0.3 * torch.randn(len(g), *x.shape, dtype=torch.float64))  # near-equivariant, dead pixels
    Y[:, 0, 0] = 0.0  # a channel dead everywhere for one sample
    # the compiled pass takes every kind but a mixing matrix; the tensor path takes everything
    assert geed._fused.supports(action, Y) == (fused and name != "matrices")
    got = geed.metrics.channelwise_eed(Y, action, reference="input")
    np.testing.assert_allclose(got.per_pair, _channelwise_by_loops(Y, action), rtol=1e-12, atol=1e-12, err_msg=name)
    if name != "matrices":  # a mixing matrix brings the dead channel back to life in the targets
        assert 0 < got.meta["dead_fraction"] < 1


def test_the_public_metrics_take_a_group_by_name_and_refuse_wrong_arguments_by_name():
    from geed.metrics import channelwise_eed, logit_invariance_error, mean_pairwise, prediction_invariance_error

    g = geed.get_group("C4")
    torch.manual_seed(0)
    Y, Z, L = torch.rand(4, 3, 2, 5, 5), torch.rand(4, 3, 6), torch.rand(4, 3, 10)
    for fn, arg in [(latent_eed, Z), (softmax_eed, L), (prediction_invariance_error, L), (logit_invariance_error, L)]:
        assert np.array_equal(fn(arg, "C4").per_pair, fn(arg, g).per_pair, equal_nan=True), fn.__name__
    with pytest.raises(TypeError, match="a group is given by name"):
        softmax_eed(L, 4)
    with pytest.raises(TypeError, match="an action .* is needed; got str"):
        channelwise_eed(Y, "rotate")
    with pytest.raises(TypeError, match="normalise must be True or False; got 'no'"):
        latent_eed(Z, g, normalise="no")
    # reference points from another space would give an M that has nothing to do with Z
    with pytest.raises(ValueError, match=r"same shape as Z's, \(n, 6\); got \(5, 7\)"):
        latent_eed(Z, g, reference_points=torch.rand(5, 7))
    with pytest.raises(ValueError, match="normalise=False does not use"):
        latent_eed(Z, g, normalise=False, reference_points=torch.rand(5, 6))
    ref = torch.rand(5, 6)
    assert latent_eed(Z, g, reference_points=ref).meta["M"] == pytest.approx(mean_pairwise(ref, "l2"))


@pytest.mark.parametrize("distance", ["l2", "cosine"])
@pytest.mark.parametrize("block", [3, 256])
def test_mean_pairwise_is_the_mean_over_every_pair_of_distinct_points(distance, block):
    """M worked pair by pair in float64, against mean_pairwise (cosine: from the sum of the unit vectors,
    l2: over tiles of pairs), in one block and in several; with a zero row (similarity 0 with every
    other), points on both sides of the origin (a mean similarity near 0), in float32 and float64."""
    from geed.metrics import mean_pairwise

    gen = torch.Generator().manual_seed(3)
    Z = torch.randn(11, 6, generator=gen)
    Z[4] = 0.0
    Z[7] = -Z[2]
    Zd = Z.double()
    total, pairs = 0.0, 0
    for i in range(len(Zd)):
        for j in range(len(Zd)):
            if i == j:
                continue
            a, b = Zd[i], Zd[j]
            if distance == "l2":
                total += float(torch.linalg.vector_norm(a - b))
            else:
                na, nb = float(torch.linalg.vector_norm(a)), float(torch.linalg.vector_norm(b))
                total += float(a @ b) / (na * nb) if na > 0 and nb > 0 else 0.0
            pairs += 1
    assert mean_pairwise(Z, distance, block=block) == pytest.approx(total / pairs, rel=1e-12, abs=1e-14)
    assert mean_pairwise(Zd, distance, block=block) == pytest.approx(total / pairs, rel=1e-12, abs=1e-14)
