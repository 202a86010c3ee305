"""What `geed.evaluate` does with models and inputs a user brings: e2cnn modules as they are, unknown
layers named with suggestions, models left in training mode, inputs a group cannot act on."""
import numpy as np
import pytest
import torch
from torch import nn

import geed
from geed.orbit import UnknownLayer


def test_an_e2cnn_module_is_measured_without_a_wrapper():
    from e2cnn import gspaces
    from e2cnn import nn as enn

    torch.manual_seed(0)
    space = gspaces.Rot2dOnR2(N=4)
    t_in = enn.FieldType(space, [space.trivial_repr])
    t_mid = enn.FieldType(space, 3 * [space.regular_repr])
    model = enn.SequentialModule(enn.R2Conv(t_in, t_mid, 3, padding=1), enn.ReLU(t_mid), enn.GroupPooling(t_mid)).to(torch.float64).eval()
    x = torch.randn(4, 1, 9, 9, dtype=torch.float64)
    report = geed.evaluate(model, x, "C4", channelwise={"2": None}, logits=False)
    assert report[("channelwise", "2")].value == pytest.approx(-1.0, abs=1e-6)  # invariant fields: exactly equivariant


@pytest.mark.slow
def test_an_unknown_layer_is_named_with_close_matches_and_every_name():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(weights=None).eval()
    with pytest.raises(UnknownLayer) as err:
        geed.evaluate(model, torch.rand(2, 3, 32, 32), "C4", latent="avgpol")
    text = str(err.value)
    assert "did you mean 'avgpool'" in text
    assert "avgpool" in text.split("module names:")[1] and "fc" in text.split("module names:")[1].split(", ")
    assert isinstance(err.value, KeyError)


def test_a_model_in_training_mode_is_measured_in_evaluation_mode_and_left_unchanged():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    model[1].running_mean.fill_(0.3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(5, 1, 9, 9)
    model.train()
    a = geed.evaluate(model, x, "C4", latent="5").summary()
    assert model.training  # its mode is restored
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BatchNorm statistics untouched
    b = geed.evaluate(model.eval(), x, "C4", latent="5").summary()
    assert a["value"].tolist() == b["value"].tolist()  # the same as measuring it in evaluation mode


def test_mixed_modes_are_restored_module_by_module_and_a_model_in_evaluation_mode_is_not_switched(monkeypatch):
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Flatten(), nn.Linear(4 * 81, 3))
    model.train()
    model[1].eval()  # a frozen BatchNorm inside a model in training
    seen = []
    monkeypatch.setattr(nn.Dropout, "forward", lambda self, x: (seen.append(self.training), x)[1])
    geed.evaluate(model, torch.rand(3, 1, 9, 9), "C4")
    assert seen and not any(seen)  # measured in evaluation mode
    assert [m.training for m in model] == [True, False, True, True, True]
    model.eval()
    calls = []
    monkeypatch.setattr(nn.Module, "train", lambda self, mode=True: calls.append(mode) or self)
    geed.evaluate(model, torch.rand(3, 1, 9, 9), "C4")
    assert calls == []  # already in evaluation mode: left alone


class _CountsHashes(nn.Module):
    """A module that counts how often it is hashed (e2cnn's basis expansions hash their whole bases,
    about 2.5 ms per walk of the C8-CNN's modules)."""

    hashed = 0

    def __hash__(self):
        type(self).hashed += 1
        return id(self)

    def forward(self, x):
        return x


def test_modules_are_found_by_identity_without_hashing_them_in_the_names_and_order_of_named_modules():
    from geed.orbit import _named_modules, layer_names

    shared = nn.ReLU()
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), shared, nn.Sequential(nn.Conv2d(4, 4, 1), shared), nn.Flatten())
    assert list(_named_modules(model).items()) == list(model.named_modules())  # a shared module under its first name
    assert layer_names(model) == ["0", "1", "2", "2.0", "3"]
    counted = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), _CountsHashes(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    dict(counted.named_modules())
    assert _CountsHashes.hashed > 0  # PyTorch's own walk hashes every module
    _CountsHashes.hashed = 0
    x = torch.rand(3, 1, 9, 9)
    report = geed.evaluate(counted, x, "C4", channelwise={"1": None}, latent="3")
    assert _CountsHashes.hashed == 0  # checking, capturing and the modes walk the model by identity
    assert report[("channelwise", "1")].value == pytest.approx(geed.evaluate(counted, x, "C4", channelwise={"0": None})[("channelwise", "0")].value)


def test_measuring_runs_in_full_float32_and_gives_the_callers_precision_back():
    """cuDNN computes float32 convolutions in TF32 unless told otherwise, and a caller may ask for
    reduced-precision matrix products: geed measures in full float32 on every device (a GPU then
    gives the CPU's values; tests/core/test_cuda.py), changes only the switches that are reduced,
    and hands them back, also when the model fails."""
    from geed.orbit import FULL_PRECISION, _precision_flags

    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    assert conv.fp32_precision == "tf32"  # PyTorch's default
    before = [(h, n, getattr(h, n)) for h, n in _precision_flags()]
    seen = []

    class Spy(nn.Module):
        def forward(self, x):
            seen.append({id(h): getattr(h, n) for h, n in _precision_flags()})
            return x.flatten(1)

    torch.set_float32_matmul_precision("high")  # a caller who allows TF32 matrix products
    untouched = {id(h): getattr(h, n) for h, n in _precision_flags() if getattr(h, n) in FULL_PRECISION}
    try:
        geed.evaluate(Spy(), torch.rand(2, 1, 5, 5), "C4")
        assert seen and all(set(v.values()) <= set(FULL_PRECISION) for v in seen)
        assert all(v[id(conv)] == "ieee" and v[id(matmul)] == "ieee" for v in seen)
        assert all(v[key] == value for v in seen for key, value in untouched.items())  # the rest left alone
        assert conv.fp32_precision == "tf32" and matmul.fp32_precision == "tf32"

        class Broken(nn.Module):
            def forward(self, x):
                raise RuntimeError("broken model")

        with pytest.raises(RuntimeError, match="broken model"):
            geed.evaluate(Broken(), torch.rand(2, 1, 5, 5), "C4")
        assert conv.fp32_precision == "tf32" and matmul.fp32_precision == "tf32"
    finally:
        for h, n, value in before:
            setattr(h, n, value)


def test_non_square_inputs_are_refused_under_quarter_turns_only():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    x = torch.rand(3, 1, 8, 12)
    with pytest.raises(ValueError, match="C4 rotates by 90 degrees.*8 x 12"):
        geed.evaluate(model, x, "C4")
    assert geed.evaluate(model, x, "flip")[("softmax", "output")].value >= 0  # the mirror acts on any grid


def _counted_model():
    """A small model and a list that grows by one for each forward pass it runs."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    passes: list[int] = []
    model.register_forward_pre_hook(lambda _m, _a: passes.append(1))
    return model, passes


_X = torch.rand(4, 1, 9, 9)
_WRONG = [  # (arguments beside model, x and group, the error, what its message names)
    (dict(chunk_size="8"), TypeError, "chunk_size must be a whole number.*got '8'"),
    (dict(chunk_size=8.5), TypeError, "chunk_size must be a whole number.*got 8.5"),
    (dict(chunk_size=True), TypeError, "chunk_size must be a whole number"),
    (dict(chunk_size=0), ValueError, "chunk_size must be positive; got 0"),
    (dict(dtype=torch.int32), TypeError, "dtype must be None.*torch.int32"),
    (dict(dtype="float64"), TypeError, "dtype must be None"),
    (dict(logits="no"), TypeError, "logits must be True or False; got 'no'"),
    (dict(references=()), ValueError, "at least one reference point"),
    (dict(references=("orbit", "fhat")), ValueError, "references must be 'orbit' and/or 'input'; got 'fhat'"),
    (dict(channelwise=["0"]), TypeError, "channelwise must map layer names to actions.*list"),
    (dict(channelwise={"0": "rotate"}), TypeError, r"channelwise\['0'\] must be an action.*str"),
    (dict(latent=3), TypeError, "latent must be a module name or a list of them; got 3"),
    (dict(latent=["3", 3]), TypeError, "got 3 among them"),
    (dict(reference_points=_X), ValueError, "no latent layer was requested"),
    (dict(latent="3", reference_points=[1, 2]), TypeError, "reference_points must be a tensor.*list"),
    (dict(latent="3", reference_points=torch.rand(4, 2, 9, 9)), ValueError, r"same shape.*\(n, 1, 9, 9\); got \(4, 2, 9, 9\)"),
    (dict(latent="3", reference_points=_X[:1]), ValueError, "at least 2 reference points; got 1"),
    (dict(latent="3", reference_points=torch.cat([_X, torch.full((1, 1, 9, 9), float("inf"))])), ValueError,
     r"reference_points hold NaN or infinite values in 1 of 5 samples \(indices 4\)"),
]


@pytest.mark.parametrize("path", ["evaluate", "evaluate_reference"])
@pytest.mark.parametrize("kwargs, error, match", _WRONG, ids=[str(i) for i in range(len(_WRONG))])
def test_a_wrong_argument_gets_one_error_naming_it_before_any_forward_pass(path, kwargs, error, match):
    from geed.orbit import evaluate_reference

    run = geed.evaluate if path == "evaluate" else evaluate_reference
    model, passes = _counted_model()
    with pytest.raises(error, match=match):
        run(model, _X, "C4", **kwargs)
    assert passes == []  # refused before any work


def test_the_inputs_finiteness_is_checked_a_block_of_samples_at_a_time(monkeypatch):
    """torch.isfinite's temporaries are several times what it checks: on all the inputs at once they made
    an evaluation's peak memory grow with N. The check takes about FINITE_BLOCK values at a time, and still
    names every bad sample, in the first block, a middle one and the last, shorter one."""
    import geed.orbit as orbit

    seen = []
    real = torch.isfinite
    monkeypatch.setattr(torch, "isfinite", lambda t: (seen.append(t.numel()), real(t))[1])
    x = torch.zeros(7, 3, 16, 16)
    orbit._check_finite(x, "inputs")
    assert seen == [x.numel()]  # 5,376 values: one block by default
    monkeypatch.setattr(orbit, "FINITE_BLOCK", 2 * 768 + 100)  # two samples of 768 values a block
    seen.clear()
    orbit._check_finite(x, "inputs")
    assert seen == [2 * 768] * 3 + [768]
    x[0, 2, 15, 15], x[3, 0, 0, 0], x[6, 1, 5, 5] = float("inf"), float("nan"), float("-inf")
    with pytest.raises(ValueError, match=r"inputs hold NaN or infinite values in 3 of 7 samples \(indices 0, 3, 6\)"):
        orbit._check_finite(x, "inputs")
    assert max(seen) == 2 * 768


def test_wrong_inputs_and_models_are_refused_before_any_forward_pass():
    model, passes = _counted_model()
    bad = _X.clone()
    bad[1, 0, 3, 3], bad[3, 0, 0, 0] = float("nan"), float("-inf")
    with pytest.raises(ValueError, match=r"inputs hold NaN or infinite values in 2 of 4 samples \(indices 1, 3\)"):
        geed.evaluate(model, bad, "C4", latent="3")
    with pytest.raises(ValueError, match="the normaliser M needs at least 2 reference points.*there is 1; give reference_points"):
        geed.evaluate(model, _X[:1], "C4", latent="3")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module.*function"):
        geed.evaluate(lambda t: t, _X, "C4")
    with pytest.raises(TypeError, match="chunk_size must be a whole number"):
        geed.orbit_outputs(model, _X, "C4", chunk_size=2.0)
    assert passes == []
    # one point is enough where the reference points give M; a single name of a reference point is one reference point
    one = geed.evaluate(model, _X[:1], "C4", latent="3", reference_points=_X, references="input")
    assert set(m for m, _ in one.results) == {"latent_l2@input", "latent_cosine@input", "latent_cosine_unnormalised@input",
                                              "softmax@input", "DI", "LI"}


def test_a_layer_that_is_not_a_feature_map_is_named_in_the_error_of_its_channelwise_metric():
    model, _ = _counted_model()
    with pytest.raises(ValueError, match="channelwise G-EED of layer '4':.*feature maps"):
        geed.evaluate(model, _X, "C4", channelwise={"4": None})


def test_a_result_the_report_does_not_hold_is_named_with_those_it_does():
    model, _ = _counted_model()
    report = geed.evaluate(model, _X, "C4", latent="3")
    with pytest.raises(KeyError, match=r"no result 'softmax'; a result is named \(metric, layer\).*\('softmax', 'output'\)"):
        report["softmax"]
    assert report[("softmax", "output")] is report.results[("softmax", "output")]


def test_a_collapsed_latent_space_has_no_l2_normaliser():
    """Every latent vector the same (a constant layer): the mean l2 distance M is exactly 0, so the
    normalised l2 metric is undefined (NaN, with the warning), not a division by zero."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(81, 5), nn.Linear(5, 3)).eval()
    with torch.no_grad():
        model[1].weight.zero_()
    x = torch.rand(3, 1, 9, 9, generator=torch.Generator().manual_seed(0))
    with pytest.warns(RuntimeWarning, match=r"latent l2 G-EED of '1' cannot be normalised: M.*is 0 <= 0"):
        report = geed.evaluate(model, x, "C4", latent="1")
    l2 = report[("latent_l2", "1")]
    assert np.isnan(l2.value) and np.all(l2.per_pair == 0)
    assert np.isfinite(report[("latent_cosine", "1")].value)


@pytest.mark.parametrize("reference_points", [False, True])
def test_a_normaliser_that_is_not_positive_gives_nan_with_a_warning_and_keeps_every_other_result(reference_points):
    """M <= 0 leaves the normalised latent metric undefined. The evaluation says so and returns its
    other results (on the reference path too), instead of failing after all its work."""
    from geed.orbit import evaluate_reference

    torch.manual_seed(0)
    # latent "1" is linear in the input, and the inputs come as +z and -z: every pair of latent vectors
    # has cosine similarity -1 or 1, and the mean over distinct pairs of {v, -v} is -1, so cosine M < 0
    model = nn.Sequential(nn.Flatten(), nn.Linear(81, 5, bias=False), nn.Linear(5, 3)).eval()
    z = torch.rand(1, 1, 9, 9)
    x = torch.cat([z, -z])
    kw = dict(latent="1", reference_points=x if reference_points else None)
    reports = []
    for run in (geed.evaluate, evaluate_reference):
        with pytest.warns(RuntimeWarning, match=r"latent cosine G-EED of '1' cannot be normalised: M.*is -1 <= 0"):
            reports.append(run(model, x, "C4", **kw))
    for report in reports:
        cosine = report[("latent_cosine", "1")]
        assert np.isnan(cosine.value) and np.isnan(cosine.meta["M"]) and np.all(np.isfinite(cosine.per_pair))
        for key, result in report.results.items():
            if key != ("latent_cosine", "1"):
                assert np.isfinite(result.value), key
    a, b = reports
    assert a.results.keys() == b.results.keys()
    for key in a.results:
        assert np.allclose(a[key].per_pair, b[key].per_pair, rtol=1e-6, atol=1e-9), key
        assert np.allclose(a[key].value, b[key].value, rtol=1e-6, atol=1e-9, equal_nan=True), key
