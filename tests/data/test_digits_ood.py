"""Digit loaders (embedded and on-disk formats) and the out-of-distribution sets."""
import pickle
import struct

import numpy as np
import pytest
import torch

from geed.data import digits as data
from geed.data import ood


def _write_idx(folder, prefix, images, labels):
    folder.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, n, h, w) + images.astype(np.uint8).tobytes())
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, n) + labels.astype(np.uint8).tobytes())

def _mnist_files(root, name="MNIST", n=20):
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        _write_idx(root / name / "raw", prefix, rng.integers(0, 256, (n, 28, 28)), np.arange(n) % 10)


def test_embedded_digits_split_is_fixed_and_disjoint():
    tr, te = data.load_digits("train"), data.load_digits("test")
    assert tr.x.shape[1:] == (1, 29, 29) and len(tr) == 3600 and len(te) == 900
    assert set(tr.y.tolist()) == set(range(9))
    flat_tr = {bytes(t.numpy().tobytes()) for t in tr.x[:, 0, :28, :28]}
    assert not any(bytes(t.numpy().tobytes()) in flat_tr for t in te.x[:50, 0, :28, :28])
    assert torch.equal(data.load_digits("test").x, te.x)
    with pytest.raises(ValueError, match="split"):
        data.load_digits("val")


def test_full_mnist_loader_reads_torchvision_files(tmp_path, monkeypatch):
    _mnist_files(tmp_path)
    d = data.load_digits("test", root=tmp_path)
    assert len(d) == 18 and d.x.shape[1:] == (1, 29, 29) and 9 not in d.y.tolist()  # digit 9 dropped
    monkeypatch.setenv(data.MNIST_ENV, str(tmp_path))
    assert "MNIST (" in data.load_digits("train").source
    monkeypatch.setenv(data.MNIST_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="no MNIST files"):
        data.load_digits("train")


def test_external_sets_read_from_written_files(tmp_path):
    _mnist_files(tmp_path, "KMNIST")
    _mnist_files(tmp_path, "FashionMNIST")
    assert ood.load_external("kmnist", tmp_path).shape == (20, 1, 29, 29)
    assert ood.load_external("fashion-mnist", tmp_path, n=5).shape == (5, 1, 29, 29)
    cifar = tmp_path / "cifar-10-batches-py"
    cifar.mkdir()
    with open(cifar / "test_batch", "wb") as fh:
        pickle.dump({"data": np.random.default_rng(0).integers(0, 256, (7, 3072), dtype=np.uint8), "labels": [0] * 7}, fh)
    x = ood.load_external("cifar10", tmp_path)
    assert x.shape == (7, 1, 29, 29) and 0 <= float(x.min()) and float(x.max()) <= 1
    from PIL import Image

    char = tmp_path / "omniglot-py" / "images_evaluation" / "Alphabet" / "character01"
    char.mkdir(parents=True)
    stroke = np.full((105, 105), 255, dtype=np.uint8)  # Omniglot's characters are black strokes on white
    stroke[30:75, 45:60] = 0
    for k in range(3):
        Image.fromarray(stroke).save(char / f"{k}.png")
    glyphs = ood.load_external("omniglot", tmp_path)
    assert glyphs.shape == (3, 1, 29, 29)
    # read as the digits are: a bright stroke on a dark ground (the background is 0, the stroke near 1)
    assert float(glyphs[:, 0, 0, 0].max()) == 0.0 and float(glyphs[:, 0, 14, 14].min()) > 0.9
    with pytest.raises(FileNotFoundError, match="cifar10"):
        ood.load_external("cifar10", tmp_path / "empty")
    with pytest.raises(ValueError, match="unknown data set"):
        ood.ood_set("imagenet", 5)


@pytest.mark.parametrize("name", ood.OFFLINE_SETS)
def test_offline_ood_sets(name):
    x = ood.ood_set(name, 12)
    assert x.shape == (12, 1, 29, 29) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.std()) > 0


def test_scikit_learns_digits_are_classes_0_to_8():
    """The 1,797 digits of scikit-learn hold 180 nines (a rotated 6, left out as from MNIST): 1,617 remain."""
    assert ood.sklearn_digits().shape == (1617, 1, 29, 29)


def test_the_in_distribution_set_of_section_42_is_the_set_section_41_measures():
    """4.2's "rotated-mnist" must be the rotated test digits that 4.1's models are measured on, not upright digits."""
    from geed.experiments.rotated_digits import evaluation_points

    x41, _ = evaluation_points(10, 2, seed=3)
    assert torch.equal(ood.ood_set("rotated-mnist", 10, seed=3), x41)
    assert not torch.equal(x41, data.load_digits("test").subset(10, 3).x)


def test_corruptions_change_images_but_keep_range():
    x = data.rotated_digits("test").subset(8).x
    for kind in ood.CORRUPTIONS:
        y = ood.corrupt(x, kind)
        assert not torch.equal(x, y)
    with pytest.raises(ValueError, match="unknown corruption"):
        ood.corrupt(x, "rotate")



def test_a_subset_is_a_whole_number_of_points_from_one_to_the_sets_size():
    test = data.rotated_digits("test")
    assert len(test.subset(5, seed=1)) == 5 and torch.equal(test.subset(5, seed=1).x, test.subset(5, seed=1).x)
    for n in (0, -3, 2.5, True):  # -3 would otherwise slice off the last three points
        with pytest.raises(ValueError, match=f"a subset needs a whole number of points >= 1; got {n!r}"):
            test.subset(n)
    with pytest.raises(ValueError, match=f"asked for {len(test) + 1} points but the set has {len(test)}"):
        test.subset(len(test) + 1)


def test_random_rotations_cover_the_whole_circle_uniformly():
    """Each image gets its own angle, uniform in [0, 360): read back the angle of 400 rotated copies of
    one digit by matching them against the digit turned by every whole degree."""
    from geed.groups import rotate_batch

    digit = data.load_digits("test").x[:1].double()
    turned = data.random_rotation(digit.expand(400, -1, -1, -1), torch.Generator().manual_seed(0))
    grid = rotate_batch(digit.expand(360, -1, -1, -1), torch.arange(360, dtype=torch.float64))
    angles = torch.cdist(turned.flatten(1), grid.flatten(1)).argmin(dim=1).double()
    counts = torch.histc(angles, bins=4, min=0, max=360)  # 100 per quadrant expected
    assert counts.min() >= 70 and counts.max() <= 130, counts
