"""Out-of-distribution image sets on the 29 x 29 grid, from near to far (Section 4.2).

Offline defaults, all real data shipped with the project's dependencies:

* ``mnistc-<kind>`` -- the rotated test digits with a non-geometric corruption in the style of
  MNIST-C (Mu and Gilmer 2019): gaussian_noise, impulse_noise, gaussian_blur, contrast, brightness.
  Geometric corruptions (rotation, shear, translation, scale) are left out: they overlap the group.
* ``sklearn-digits`` -- scikit-learn's 1,797 handwritten 8 x 8 digits (another source, another
  scanner), classes 0-8, upsampled to 20 x 20 and centred like MNIST.
* ``font-glyphs`` -- Greek and Cyrillic letters rendered from the fonts matplotlib ships (DejaVu
  Sans/Serif/Mono, STIX), white on black; a stand-in for Omniglot's characters of other alphabets.
* ``photo-patches`` -- random 29 x 29 grey-scale crops of the photographs, textures and microscopy
  images inside scikit-image (a different domain altogether).
* ``uniform-noise`` -- i.i.d. uniform pixel noise.

Where the files exist, real data sets in torchvision's on-disk formats are read instead of
downloaded (:func:`load_external`): ``omniglot``, ``cifar10``, ``kmnist``, ``fashion-mnist``.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from geed.data.digits import SIZE, rotated_digits

__all__ = ["CORRUPTIONS", "OFFLINE_SETS", "corrupt", "sklearn_digits", "font_glyphs", "photo_patches",
           "uniform_noise", "ood_set", "load_external", "EXTERNAL_SETS"]

CORRUPTIONS = ("gaussian_noise", "impulse_noise", "gaussian_blur", "contrast", "brightness")
OFFLINE_SETS = ("rotated-mnist",) + tuple(f"mnistc-{c}" for c in CORRUPTIONS) + (
    "sklearn-digits", "font-glyphs", "photo-patches", "uniform-noise")
EXTERNAL_SETS = ("omniglot", "cifar10", "kmnist", "fashion-mnist")


def corrupt(x: torch.Tensor, kind: str, seed: int = 0) -> torch.Tensor:
    """One MNIST-C-style corruption of images in [0, 1] (fixed severity), clipped to [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    if kind == "gaussian_noise":
        out = x + 0.3 * torch.randn(x.shape, generator=g)
    elif kind == "impulse_noise":
        u = torch.rand(x.shape, generator=g)
        out = torch.where(u < 0.05, torch.zeros_like(x), torch.where(u > 0.95, torch.ones_like(x), x))
    elif kind == "gaussian_blur":
        r = torch.arange(-3, 4, dtype=x.dtype)
        k1 = torch.exp(-(r**2) / (2 * 1.5**2))
        k = (k1[:, None] * k1[None, :]) / k1.sum() ** 2
        out = F.conv2d(x, k[None, None], padding=3)
    elif kind == "contrast":
        out = (x - x.mean(dim=(-2, -1), keepdim=True)) * 0.3 + x.mean(dim=(-2, -1), keepdim=True)
    elif kind == "brightness":
        out = x + 0.4
    else:
        raise ValueError(f"unknown corruption {kind!r}; known: {list(CORRUPTIONS)}")
    return out.clamp(0, 1)


def _centre(images: torch.Tensor, inner: int = 20) -> torch.Tensor:
    """Resize (n, 1, h, w) images to inner x inner and centre them on the 29 x 29 grid."""
    small = F.interpolate(images, size=(inner, inner), mode="bilinear", align_corners=False, antialias=True)
    pad = SIZE - inner
    return F.pad(small, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))


def sklearn_digits(n: int | None = None, seed: int = 0) -> torch.Tensor:
    from sklearn.datasets import load_digits

    d = load_digits()
    keep = d.target != 9
    x = torch.as_tensor(d.images[keep], dtype=torch.float32)[:, None] / 16.0
    return _subset(_centre(x), n, seed)


def font_glyphs(n: int | None = None, seed: int = 0) -> torch.Tensor:
    from matplotlib import font_manager
    from PIL import Image, ImageDraw, ImageFont

    letters = [chr(c) for c in range(0x03B1, 0x03CA) if c != 0x03C2] + [chr(c) for c in range(0x0410, 0x0450)]
    fonts = []
    for family in ("DejaVu Sans", "DejaVu Serif", "DejaVu Sans Mono", "STIXGeneral"):
        path = font_manager.findfont(font_manager.FontProperties(family=family), fallback_to_default=True)
        if path not in fonts:
            fonts.append(path)
    out = []
    for path in fonts:
        font = ImageFont.truetype(path, 20)
        for ch in letters:
            img = Image.new("L", (SIZE, SIZE), 0)
            draw = ImageDraw.Draw(img)
            box = draw.textbbox((0, 0), ch, font=font)
            w, h = box[2] - box[0], box[3] - box[1]
            draw.text(((SIZE - w) / 2 - box[0], (SIZE - h) / 2 - box[1]), ch, fill=255, font=font)
            out.append(np.asarray(img, dtype=np.float32) / 255.0)
    return _subset(torch.as_tensor(np.stack(out))[:, None], n, seed)


_PHOTOS = ("camera", "astronaut", "coffee", "chelsea", "rocket", "coins", "moon", "brick", "grass", "gravel",
           "cell", "immunohistochemistry", "retina", "hubble_deep_field", "horse", "page", "text", "clock")


def photo_patches(n: int = 200, seed: int = 0) -> torch.Tensor:
    import skimage.data as skd
    from skimage.color import rgb2gray
    from skimage.transform import rescale

    rng = np.random.default_rng(seed)
    images = []
    for name in _PHOTOS:
        try:
            img = getattr(skd, name)()
        except Exception:  # an image that would need the network: skip it
            continue
        img = np.asarray(img, dtype=np.float64)
        if img.ndim == 3:
            img = rgb2gray(img[..., :3] / (255.0 if img.max() > 1 else 1.0))
        elif img.max() > 1:
            img = img / 255.0
        img = rescale(img, 0.25, anti_aliasing=True) if min(img.shape) >= 4 * SIZE else img
        images.append(img)
    if not images:
        raise RuntimeError("no scikit-image sample image could be read")
    out = []
    for k in range(n):
        img = images[k % len(images)]
        i, j = rng.integers(0, img.shape[0] - SIZE + 1), rng.integers(0, img.shape[1] - SIZE + 1)
        out.append(img[i : i + SIZE, j : j + SIZE])
    return torch.as_tensor(np.stack(out), dtype=torch.float32)[:, None]


def uniform_noise(n: int = 200, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _subset(x: torch.Tensor, n: int | None, seed: int) -> torch.Tensor:
    if n is None or n >= x.shape[0]:
        return x
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx]


def ood_set(name: str, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` images (n, 1, 29, 29) in [0, 1] of the offline set ``name`` (see ``OFFLINE_SETS``)."""
    if name == "rotated-mnist":
        return rotated_digits("test").subset(n, seed).x
    if name.startswith("mnistc-"):
        kind = name[len("mnistc-"):]
        return corrupt(rotated_digits("test").subset(n, seed).x, kind, seed)
    if name == "sklearn-digits":
        return sklearn_digits(n, seed)
    if name == "font-glyphs":
        return font_glyphs(n, seed)
    if name == "photo-patches":
        return photo_patches(n, seed)
    if name == "uniform-noise":
        return uniform_noise(n, seed)
    if name in EXTERNAL_SETS:
        return load_external(name, n=n, seed=seed)
    raise ValueError(f"unknown data set {name!r}; offline: {list(OFFLINE_SETS)}; with local files: {list(EXTERNAL_SETS)}")


# ----------------------------------------------------------------------------- real data sets on disk
def _external_root(root) -> Path:
    root = root if root is not None else os.environ.get("GEED_DATA_ROOT")
    if root is None:
        raise FileNotFoundError("no data root: pass root= or set GEED_DATA_ROOT to a folder in torchvision's layout")
    return Path(root)


def load_external(name: str, root=None, n: int | None = None, seed: int = 0) -> torch.Tensor:
    """Read a real data set from ``root`` (or ``$GEED_DATA_ROOT``) in torchvision's on-disk layout,
    test split, as grey-scale 29 x 29 images in [0, 1]. Nothing is downloaded.

    * ``kmnist``, ``fashion-mnist``: ``KMNIST/raw`` / ``FashionMNIST/raw`` idx files (torchvision).
    * ``cifar10``: ``cifar-10-batches-py/test_batch`` (the python pickle format).
    * ``omniglot``: ``omniglot-py/images_evaluation/<alphabet>/<character>/*.png``.
    """
    base = _external_root(root)
    if name in ("kmnist", "fashion-mnist"):
        from torchvision.datasets import KMNIST, FashionMNIST

        cls = KMNIST if name == "kmnist" else FashionMNIST
        try:
            ds = cls(str(base), train=False, download=False)
        except RuntimeError as exc:
            raise FileNotFoundError(f"{name}: {exc} (looked in {base / cls.__name__ / 'raw'})") from None
        x = ds.data.float()[:, None] / 255.0
        x = F.pad(x, (0, SIZE - 28, 0, SIZE - 28))
    elif name == "cifar10":
        path = base / "cifar-10-batches-py" / "test_batch"
        if not path.exists():
            raise FileNotFoundError(f"cifar10: no file {path}")
        with open(path, "rb") as fh:
            batch = pickle.load(fh, encoding="latin1")
        rgb = torch.as_tensor(np.asarray(batch["data"], dtype=np.float32).reshape(-1, 3, 32, 32)) / 255.0
        grey = (0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2])[:, None]
        x = grey[:, :, 1 : 1 + SIZE, 1 : 1 + SIZE]
    elif name == "omniglot":
        from PIL import Image

        folder = base / "omniglot-py" / "images_evaluation"
        files = sorted(folder.glob("*/*/*.png"))
        if not files:
            raise FileNotFoundError(f"omniglot: no images under {folder}")
        imgs = [1.0 - np.asarray(Image.open(f).convert("L"), dtype=np.float32) / 255.0 for f in files]
        x = _centre(torch.as_tensor(np.stack(imgs))[:, None], inner=24)
    else:
        raise ValueError(f"unknown external data set {name!r}; known: {list(EXTERNAL_SETS)}")
    return _subset(x.contiguous(), n, seed)
