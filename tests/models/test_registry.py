"""The one registry: every name builds, every architecture has a tiny variant, tags select published weights."""
import pytest
import torch

from geed.models import create_model, is_digit_model, list_models, zoo
from tests.models.test_zoo import _same_body


def test_every_architecture_has_a_tiny_variant():
    names = list_models()
    full = [n for n in names if "-tiny" not in n]
    assert full and all(zoo.split_name(n)[1] or n.replace(".", "-tiny.", 1) in names or f"{n}-tiny" in names for n in full)
    assert set(list_models("*-tiny*")) == {n for n in names if "-tiny" in n}


def test_patterns_and_published_weights():
    assert list_models("resnet50*") == ["resnet50", "resnet50-tiny", "resnet50-tiny.dino", "resnet50-tiny.simclr",
                                        "resnet50.dino", "resnet50.simclr"]
    published = list_models(pretrained=True)
    assert "resnet50.dino" in published and "efficientnet_lite0" in published
    assert not any("-tiny" in n or is_digit_model(n) for n in published)


@pytest.mark.parametrize("name", list_models("*-tiny*"))
def test_every_tiny_model_builds_seeded_and_classifies(name):
    a, b = create_model(name, n_classes=5, seed=1).eval(), create_model(name, n_classes=5, seed=1).eval()
    x = torch.rand(2, 1, 29, 29) if is_digit_model(name) else torch.rand(2, 3, 33, 33)
    with torch.no_grad():
        ya, yb = a(x), b(x)
    assert ya.shape == (2, 5) and torch.equal(ya, yb)


def test_a_tag_is_the_architecture_with_other_weights():
    plain, tagged = create_model("resnet50-tiny", seed=0), create_model("resnet50-tiny.dino", seed=0)
    assert [k for k, _ in plain.named_parameters()] == [k for k, _ in tagged.named_parameters()]
    assert zoo._spec("resnet50.imagenet")[0] is zoo._spec("resnet50")[0]
    assert zoo._spec("resnet50.dino")[0].files != zoo._spec("resnet50")[0].files


def test_bad_names_and_arguments_are_named():
    with pytest.raises(ValueError, match="unknown model 'resnet51'"):
        create_model("resnet51")
    with pytest.raises(ValueError, match="unknown model 'resnet50.moco'"):
        create_model("resnet50.moco")
    with pytest.raises(TypeError, match="must be a string"):
        create_model(50)
    with pytest.raises(ValueError, match="no published weights"):
        create_model("cnn", pretrained=True)
    with pytest.raises(TypeError, match="unexpected arguments for resnet50-tiny"):
        create_model("resnet50-tiny", width=0.5)
    with pytest.raises(zoo.WeightsNotFound, match="test variant"):
        create_model("resnet50-tiny", pretrained=True)
    create_model("cnn-tiny", seed=0)  # 0 is a seed like any other
    with pytest.raises(ValueError, match="seed must be None or a whole number >= 0; got -1"):
        create_model("cnn-tiny", seed=-1)


def test_published_weights_are_read_from_the_weights_dir_it_is_given(tmp_path, monkeypatch):
    """``create_model(..., pretrained=True, weights_dir=...)`` loads the file in that folder (DenseNet121,
    the smallest published architecture: 8 M parameters), with every other place it could look empty."""
    for env in (zoo.WEIGHTS_ENV, "TORCH_HOME", "HF_HUB_CACHE"):
        monkeypatch.setenv(env, str(tmp_path / "empty"))
    src = create_model("densenet121", seed=1)
    torch.save(src.body.state_dict(), tmp_path / "densenet121-a639ec97.pth")
    dst = create_model("densenet121", pretrained=True, weights_dir=tmp_path, seed=2)
    assert _same_body(src, dst)
    with pytest.raises(zoo.WeightsNotFound):
        create_model("densenet121", pretrained=True, weights_dir=tmp_path / "empty")
