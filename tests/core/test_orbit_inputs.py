"""What `geed.evaluate` does with models and inputs a user brings: e2cnn modules as they are, unknown
layers named with suggestions, models left in training mode, inputs a group cannot act on."""
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
