"""Image-patch classification tasks built from the real images that ship with scikit-image and scikit-learn.

Two tasks stand in for data that cannot be downloaded here (Sections 4.3 and 4.4):

* ``orientation-free`` (the target task of Section 4.3, in place of xView Maritime): nine
  overhead, microscopy, astronomy and texture images -- brick, grass, gravel, coins, moon, the Hubble
  deep field, cell, immunohistochemistry, retina -- where nothing has a preferred orientation.
  A patch is cut at a random place **and a random angle**; its class is the image it comes from.
  Like overhead imagery, the task's distribution is (close to) invariant under rotation.
* ``upright-photos`` (the pretraining source of Section 4.3, in place of ImageNet; the training
  and test images of Section 4.4): nine photographs and scans with a clear "up" -- astronaut,
  camera man, cat, coffee, rocket, the two scikit-learn sample photographs, a text page, a horse
  silhouette. Patches are cut upright, as ImageNet's photographs are taken.

Each image is scaled so that its shorter side is ``SHORT_SIDE`` pixels; its top ``TRAIN_FRACTION``
of rows gives training patches and the rest test patches, so train and test never overlap. Patches
are ``SIZE`` x ``SIZE`` RGB in [0, 1] (grey images repeated), zero outside the inscribed disc so that
rotations by any angle leave them whole.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from geed.groups import disc_mask, rotate_batch

__all__ = ["PatchTask", "get_task", "TASKS", "SIZE"]

SIZE = 33  # odd: rotations by multiples of 90 degrees are exact pixel permutations
SHORT_SIDE = 192
TRAIN_FRACTION = 0.7

TASKS = {
    "orientation-free": ("brick", "grass", "gravel", "coins", "moon", "hubble_deep_field", "cell", "immunohistochemistry", "retina"),
    "upright-photos": ("astronaut", "camera", "chelsea", "coffee", "rocket", "sklearn-china", "sklearn-flower", "text", "horse"),
}
ROTATED = {"orientation-free": True, "upright-photos": False}


def _read(name: str) -> np.ndarray:
    """One image as float (H, W, 3) in [0, 1]."""
    if name.startswith("sklearn-"):
        from sklearn.datasets import load_sample_images

        imgs = load_sample_images()
        names = [f.rsplit("/", 1)[-1].split(".")[0] for f in imgs.filenames]
        img = imgs.images[names.index(name[len("sklearn-"):])]
    else:
        import skimage.data as skd

        img = getattr(skd, name)()
    img = np.asarray(img, dtype=np.float64)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3]
    return img / 255.0 if img.max() > 1 else img


def short_side(size: int) -> int:
    """The short side images are rescaled to for ``size``-pixel patches: 192 at the default 33 pixels,
    in proportion above it, so that a patch covers the same share of its image at every size."""
    return max(SHORT_SIDE, int(math.ceil(SHORT_SIDE * size / SIZE)))


@lru_cache(maxsize=8)
def _images(task: str, size: int = SIZE) -> tuple[torch.Tensor, ...]:
    from skimage.transform import rescale

    out = []
    for name in TASKS[task]:
        img = _read(name)
        img = rescale(img, short_side(size) / min(img.shape[:2]), anti_aliasing=True, channel_axis=2)
        out.append(torch.as_tensor(np.clip(img, 0, 1), dtype=torch.float32).permute(2, 0, 1).contiguous())
    return tuple(out)


@dataclass(frozen=True)
class PatchTask:
    """Random patches of a fixed set of images, labelled by image; see the module docstring."""

    name: str
    rotated: bool
    size: int = SIZE

    @property
    def classes(self) -> tuple[str, ...]:
        return TASKS[self.name]

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def sample(self, split: str, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` patches ``(n, 3, size, size)`` and labels, classes balanced in expectation."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
        if n < 1:
            raise ValueError(f"n must be positive; got {n}")
        images = _images(self.name, self.size)
        size = self.size
        window = math.ceil(size * math.sqrt(2)) + 2 if self.rotated else size
        labels = torch.randint(0, len(images), (n,), generator=generator)
        crops = []
        for lab in labels.tolist():
            img = images[lab]
            h, w = img.shape[1:]
            cut = int(h * TRAIN_FRACTION)
            lo, hi = (0, cut - window) if split == "train" else (cut, h - window)
            if hi < lo:
                raise ValueError(f"image {self.classes[lab]} is too small for {window}-pixel windows")
            i = lo + int(torch.randint(0, hi - lo + 1, (1,), generator=generator))
            j = int(torch.randint(0, w - window + 1, (1,), generator=generator))
            crops.append(img[:, i : i + window, j : j + window])
        x = torch.stack(crops)
        if self.rotated:
            angles = torch.rand(n, generator=generator) * 360.0
            x = rotate_batch(x, angles)
            off = (window - size) // 2
            x = x[:, :, off : off + size, off : off + size]
        return x * disc_mask(size, size).to(x.dtype), labels

    def fixed(self, split: str, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """A reproducible set of ``n`` patches (e.g. the test points)."""
        return self.sample(split, n, torch.Generator().manual_seed(10_007 * (seed + 1) + (split == "test")))


def get_task(name: str, size: int = SIZE) -> PatchTask:
    """A patch task by name, with patches of ``size`` pixels (odd, so that quarter turns are exact)."""
    if name not in TASKS:
        raise ValueError(f"unknown patch task {name!r}; known: {sorted(TASKS)}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 9 or size > 225 or size % 2 == 0:
        raise ValueError(f"patch size must be an odd integer from 9 to 225; got {size!r}")
    return PatchTask(name, ROTATED[name], size)
