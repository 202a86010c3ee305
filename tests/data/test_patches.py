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

