"""One registry for every model the project measures, named as in timm: ``architecture[-tiny][.tag]``.

* Digit models (Sections 3, 4.1, 4.2, beyond): ``cnn``, ``c8cnn`` and their ``-tiny`` variants
  (keyword arguments ``width``, ``n_classes``).
* ImageNet architectures (Sections 4.3, 4.4): ``resnet50``, ``alexnet``, ``densenet121``,
  ``levit_192``, ``efficientnet_lite0``-``2``; published weights are tags of an architecture
  (``resnet50.dino``, ``resnet50.simclr``, ``resnetv2_50x1.bit``; ``.imagenet`` names the
  architecture's own supervised weights and may be left out). Every architecture has a ``-tiny``
  variant with the same structure and parameter names, for tests.

``create_model(name, pretrained=True)`` loads the published weights from local files or pip
packages (never downloads; :class:`~geed.models.zoo.WeightsNotFound` says where it looked).
"""
from __future__ import annotations

import fnmatch
import os

from torch import nn

from geed._checks import is_whole
from geed.models import digits, zoo

__all__ = ["create_model", "list_models", "is_digit_model"]


def is_digit_model(name: str) -> bool:
    return name in digits.names()


def list_models(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """Registered names matching a shell-style ``pattern`` (``"*-tiny"``, ``"resnet50*"``);
    ``pretrained=True`` keeps the names that have published weights (not the test variants)."""
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a shell-style string such as 'resnet50*'; got {type(pattern).__name__}")
    names = digits.names() + zoo.zoo_models()
    if pretrained:
        names = [n for n in zoo.zoo_models() if not zoo.split_name(n)[1]]
    return sorted(fnmatch.filter(names, pattern))


def create_model(name: str, *, pretrained: bool = False, n_classes: int | None = None, seed: int | None = None,
                 weights_dir: str | os.PathLike | None = None, **kwargs) -> nn.Module:
    """Build a registered model by name; ``seed`` fixes its random initialisation. ``pretrained``
    loads an ImageNet model's published body weights (the classifier head stays new: ``n_classes``)."""
    if not isinstance(name, str):
        raise TypeError(f"a model name must be a string; got {type(name).__name__}")
    if seed is not None and (not is_whole(seed) or seed < 0):
        raise ValueError(f"seed must be None or a whole number >= 0; got {seed!r}")
    if n_classes is not None and (not is_whole(n_classes) or n_classes < 1):
        raise ValueError(f"n_classes must be a whole number >= 1; got {n_classes!r}")
    if is_digit_model(name):
        if pretrained:
            raise ValueError(f"{name} has no published weights: the digit models are trained by the chapters")
        if n_classes is not None:
            kwargs["n_classes"] = n_classes
        return digits.build(name, seed=seed, **kwargs)
    if kwargs:
        raise TypeError(f"unexpected arguments for {name}: {sorted(kwargs)}")
    model = zoo.build_zoo_model(name, n_classes=9 if n_classes is None else n_classes, seed=seed)
    if pretrained:
        zoo.load_pretrained(model, weights_dir=weights_dir)
    return model
