"""The image-patch tasks of Sections 4.3 and 4.4."""
import pytest
import torch

from geed.data.patches import SIZE, get_task
from geed.groups import disc_mask


@pytest.mark.parametrize("name", ["orientation-free", "upright-photos"])
def test_patch_tasks_are_masked_reproducible_and_labelled(name):
    task = get_task(name)
    x, y = task.fixed("test", 40, seed=3)
    assert x.shape == (40, 3, SIZE, SIZE) and y.min() >= 0 and y.max() < task.n_classes == 9
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert float((x * (1 - disc_mask(SIZE, SIZE))).abs().max()) == 0  # nothing outside the disc
    x2, _ = task.fixed("test", 40, seed=3)
    assert torch.equal(x, x2)
    xt, _ = task.fixed("train", 40, seed=3)
    assert not torch.equal(x, xt)


def test_patch_task_errors():
    with pytest.raises(ValueError, match="unknown patch task"):
        get_task("imagenet")
    with pytest.raises(ValueError, match="split"):
        get_task("upright-photos").sample("val", 3, torch.Generator())



def _row_coded_images(monkeypatch, h=192, w=256):
    """Every image of a task replaced by one whose pixel value is its row's index over ``h``: a patch
    then says which rows of its image it was cut from, and whether it was turned."""
    from geed.data import patches

    rows = (torch.arange(h, dtype=torch.float32) / h)[:, None].expand(h, w)
    monkeypatch.setattr(patches, "_images", lambda name, size=SIZE: tuple(rows.expand(3, h, w).clone() for _ in patches.TASKS[name]))
    return h


@pytest.mark.parametrize("name", ["orientation-free", "upright-photos"])
def test_training_and_test_patches_come_from_separate_rows(monkeypatch, name):
    """Training patches lie within the top 70% of the rows of their image, test patches below them, whether
    drawn at random or as a fixed set (the measured test points):
    the centre pixel of a patch is the centre of the window it was cut from (a turn about it leaves it)."""
    from geed.data.patches import TRAIN_FRACTION

    h = _row_coded_images(monkeypatch)
    task = get_task(name)
    half = (int(SIZE * 2 ** 0.5 + 0.999) + 2) // 2 if task.rotated else SIZE // 2  # half the window, as cut
    cut = int(h * TRAIN_FRACTION)
    for split, x in [(split, patches) for split in ("train", "test")
                     for patches in (task.sample(split, 200, torch.Generator().manual_seed(1))[0], task.fixed(split, 100, seed=4)[0])]:
        centre_rows = torch.round(x[:, 0, SIZE // 2, SIZE // 2] * h)
        if split == "train":
            assert centre_rows.min() >= half and centre_rows.max() <= cut - half - 1, (split, centre_rows.min(), centre_rows.max())
        else:
            assert centre_rows.min() >= cut + half, (split, centre_rows.min())


def test_orientation_free_patches_are_turned_and_upright_ones_are_not(monkeypatch):
    """On row-coded images an upright patch is constant along each row; a patch cut at a random angle is not."""
    _row_coded_images(monkeypatch)
    inside = disc_mask(SIZE, SIZE).bool()
    for name, turned in (("upright-photos", False), ("orientation-free", True)):
        x, _ = get_task(name).sample("train", 50, torch.Generator().manual_seed(2))
        # the spread of values along the centre row, inside the disc
        spread = x[:, 0, SIZE // 2][:, inside[SIZE // 2]].std(dim=1)
        if turned:
            assert float((spread > 1e-3).float().mean()) > 0.9, name
        else:
            assert float(spread.max()) == 0.0, name
